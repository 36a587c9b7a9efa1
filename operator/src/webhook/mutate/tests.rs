//! Table tests: every generated patch is applied to the pod's JSON, and the result must
//! deserialise as a Pod that re-serialises to the same JSON (so no field is misspelt or lost).

use k8s_openapi::api::core::v1::{Container, Pod};
use poolwarden_crds::DbPoolPolicy;
use serde_json::{Value, json};

use super::*;

const OLD: InjectOptions = InjectOptions {
    native_sidecars: false,
    sidecar_image: None,
};
const NEW: InjectOptions = InjectOptions {
    native_sidecars: true,
    sidecar_image: None,
};

fn policy(databases: Value) -> DbPoolPolicy {
    serde_json::from_value(json!({
        "apiVersion": "poolwarden.dev/v1alpha1", "kind": "DbPoolPolicy",
        "metadata": {"name": "clinical-backend", "namespace": "clinical"},
        "spec": {
            "databases": databases,
            "sidecar": {"image": "registry.local/poolwarden-sidecar:0.1.0", "listenPort": 6433, "adminPort": 9931}
        }
    }))
    .unwrap()
}

fn one_db() -> DbPoolPolicy {
    policy(
        json!([{"name": "clinical", "host": "db", "credentialsSecretRef": {"name": "clinical-db", "passwordKey": "pw"}}]),
    )
}

fn pod(spec: Value, annotations: Option<Value>) -> Pod {
    let mut meta = json!({"name": "app", "namespace": "clinical", "labels": {"poolwarden.dev/policy": "clinical-backend"}});
    if let Some(a) = annotations {
        meta["annotations"] = a;
    }
    serde_json::from_value(
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec}),
    )
    .unwrap()
}

fn app() -> Value {
    json!({"name": "web", "image": "clinical/web:1"})
}

/// Apply the patch to the pod's JSON; the result must be a Pod losing nothing in a round trip.
fn apply(pod: &Pod, patch: &Patch) -> Pod {
    let mut doc = serde_json::to_value(pod).unwrap();
    json_patch::patch(&mut doc, patch)
        .unwrap_or_else(|e| panic!("patch {patch:?} does not apply: {e}"));
    let patched: Pod = serde_json::from_value(doc.clone()).expect("patched JSON is a Pod");
    assert_eq!(
        serde_json::to_value(&patched).unwrap(),
        doc,
        "round trip lost or renamed a field"
    );
    patched
}

fn names(list: &[Container]) -> Vec<&str> {
    list.iter().map(|c| c.name.as_str()).collect()
}

fn volume_names(pod: &Pod) -> Vec<String> {
    pod.spec
        .as_ref()
        .unwrap()
        .volumes
        .iter()
        .flatten()
        .map(|v| v.name.clone())
        .collect()
}

fn sidecar(pod: &Pod, native: bool) -> Container {
    let spec = pod.spec.as_ref().unwrap();
    let c = if native {
        &spec.init_containers.as_ref().unwrap()[0]
    } else {
        &spec.containers[0]
    };
    assert_eq!(c.name, "poolwarden-sidecar");
    c.clone()
}

/// Everything every injected sidecar must carry, native or not.
fn check_sidecar(c: &Container, native: bool) {
    let v = serde_json::to_value(c).unwrap();
    assert_eq!(v["image"], "registry.local/poolwarden-sidecar:0.1.0");
    assert_eq!(
        v["args"],
        json!(["--config", "/etc/poolwarden/poolwarden.yaml"])
    );
    assert_eq!(
        v["ports"],
        json!([
            {"name": "postgres", "containerPort": 6433, "protocol": "TCP"},
            {"name": "pw-admin", "containerPort": 9931, "protocol": "TCP"}
        ])
    );
    assert_eq!(v["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(v["readinessProbe"]["httpGet"]["port"], 9931);
    assert_eq!(v["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(v["livenessProbe"]["httpGet"]["port"], 9931);
    if native {
        assert_eq!(v["restartPolicy"], "Always");
        assert_eq!(v["startupProbe"]["httpGet"]["port"], 9931);
    } else {
        assert!(v.get("restartPolicy").is_none(), "{v}");
        assert!(v.get("startupProbe").is_none(), "{v}");
    }
    assert_eq!(
        v["securityContext"],
        json!({
            "runAsNonRoot": true, "runAsUser": 65532, "runAsGroup": 65532,
            "readOnlyRootFilesystem": true, "allowPrivilegeEscalation": false, "privileged": false,
            "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"}
        })
    );
    assert_eq!(
        v["resources"]["requests"],
        json!({"cpu": "50m", "memory": "32Mi"})
    );
    assert_eq!(
        v["resources"]["limits"],
        json!({"cpu": "500m", "memory": "128Mi"})
    );
    let env = &v["env"];
    assert_eq!(
        env[0],
        json!({"name": "POOLWARDEN_LISTEN", "value": "127.0.0.1:6433"})
    );
    assert_eq!(
        env[1],
        json!({"name": "POOLWARDEN_ADMIN_LISTEN", "value": "0.0.0.0:9931"})
    );
    assert_eq!(env[2]["name"], "POOLWARDEN_DB_PASSWORD");
    let mounts = &v["volumeMounts"];
    assert_eq!(
        mounts[0],
        json!({"name": "poolwarden-config", "mountPath": "/etc/poolwarden", "readOnly": true})
    );
    assert_eq!(
        mounts[1],
        json!({"name": "poolwarden-admin", "mountPath": "/var/run/poolwarden/admin", "readOnly": true})
    );
}

fn check_volumes(pod: &Pod) {
    let spec = serde_json::to_value(pod.spec.as_ref().unwrap()).unwrap();
    let vols = spec["volumes"].as_array().unwrap();
    let find = |n: &str| {
        vols.iter()
            .find(|v| v["name"] == n)
            .unwrap_or_else(|| panic!("no volume {n}"))
    };
    assert_eq!(
        find("poolwarden-config")["configMap"],
        json!({"name": "clinical-backend-poolwarden"})
    );
    assert_eq!(
        find("poolwarden-admin")["secret"],
        json!({"secretName": "clinical-backend-poolwarden-admin"})
    );
}

fn annotations(pod: &Pod) -> BTreeMap<String, String> {
    pod.metadata.annotations.clone().unwrap_or_default()
}

#[test]
fn labelled_pod_on_an_old_cluster_gets_a_regular_container_first() {
    let p = pod(json!({"containers": [app()]}), None);
    let out = apply(&p, &mutate(&p, &one_db(), &OLD).unwrap());
    let spec = out.spec.as_ref().unwrap();
    assert_eq!(names(&spec.containers), ["poolwarden-sidecar", "web"]);
    assert_eq!(spec.init_containers, None);
    check_sidecar(&sidecar(&out, false), false);
    check_volumes(&out);
    assert_eq!(
        volume_names(&out),
        ["poolwarden-config", "poolwarden-admin", "poolwarden-db"]
    );
    let a = annotations(&out);
    assert_eq!(a["poolwarden.dev/injected"], "clinical-backend");
    assert_eq!(a["kubectl.kubernetes.io/default-container"], "web");
}

#[test]
fn labelled_pod_on_a_new_cluster_gets_a_native_sidecar() {
    let p = pod(json!({"containers": [app()]}), None);
    let out = apply(&p, &mutate(&p, &one_db(), &NEW).unwrap());
    let spec = out.spec.as_ref().unwrap();
    assert_eq!(names(&spec.containers), ["web"]);
    assert_eq!(
        names(spec.init_containers.as_ref().unwrap()),
        ["poolwarden-sidecar"]
    );
    check_sidecar(&sidecar(&out, true), true);
    check_volumes(&out);
    let a = annotations(&out);
    assert_eq!(a["poolwarden.dev/injected"], "clinical-backend");
    assert!(
        !a.contains_key("kubectl.kubernetes.io/default-container"),
        "{a:?}"
    );
}

#[test]
fn an_injected_pod_is_not_patched_again() {
    for (first, second) in [(OLD, OLD), (NEW, NEW), (OLD, NEW), (NEW, OLD)] {
        let p = pod(json!({"containers": [app()]}), None);
        let once = apply(&p, &mutate(&p, &one_db(), &first).unwrap());
        let again = mutate(&once, &one_db(), &second).unwrap();
        assert!(again.0.is_empty(), "{first:?} then {second:?}: {again:?}");
    }
}

#[test]
fn existing_volumes_init_containers_and_annotations_are_kept() {
    let spec = json!({
        "initContainers": [{"name": "migrate", "image": "clinical/migrate:1"}],
        "containers": [app(), {"name": "worker", "image": "clinical/worker:1"}],
        "volumes": [{"name": "data", "emptyDir": {}}]
    });
    let given =
        Some(json!({"team": "clinical", "kubectl.kubernetes.io/default-container": "worker"}));
    for options in [OLD, NEW] {
        let p = pod(spec.clone(), given.clone());
        let out = apply(&p, &mutate(&p, &one_db(), &options).unwrap());
        let s = out.spec.as_ref().unwrap();
        if options.native_sidecars {
            assert_eq!(
                names(s.init_containers.as_ref().unwrap()),
                ["poolwarden-sidecar", "migrate"]
            );
            assert_eq!(names(&s.containers), ["web", "worker"]);
        } else {
            assert_eq!(names(s.init_containers.as_ref().unwrap()), ["migrate"]);
            assert_eq!(
                names(&s.containers),
                ["poolwarden-sidecar", "web", "worker"]
            );
        }
        check_sidecar(
            &sidecar(&out, options.native_sidecars),
            options.native_sidecars,
        );
        check_volumes(&out);
        assert_eq!(
            volume_names(&out),
            [
                "data",
                "poolwarden-config",
                "poolwarden-admin",
                "poolwarden-db"
            ]
        );
        let a = annotations(&out);
        assert_eq!(a["team"], "clinical");
        assert_eq!(a["poolwarden.dev/injected"], "clinical-backend");
        // A default container chosen by the user is left alone.
        assert_eq!(a["kubectl.kubernetes.io/default-container"], "worker");
    }
}

#[test]
fn empty_lists_and_a_stale_same_named_volume() {
    // Explicitly empty arrays and maps, and a leftover volume with one of our names.
    let spec = json!({
        "initContainers": [],
        "containers": [app()],
        "volumes": [{"name": "poolwarden-config", "emptyDir": {}}, {"name": "data", "emptyDir": {}}]
    });
    for options in [OLD, NEW] {
        let p = pod(spec.clone(), Some(json!({})));
        let out = apply(&p, &mutate(&p, &one_db(), &options).unwrap());
        check_sidecar(
            &sidecar(&out, options.native_sidecars),
            options.native_sidecars,
        );
        check_volumes(&out);
        assert_eq!(
            volume_names(&out),
            [
                "poolwarden-config",
                "data",
                "poolwarden-admin",
                "poolwarden-db"
            ]
        );
        assert_eq!(
            annotations(&out)["poolwarden.dev/injected"],
            "clinical-backend"
        );
    }
}

#[test]
fn a_pod_without_containers_gets_the_list_created() {
    for options in [OLD, NEW] {
        let p = pod(json!({}), None);
        let out = apply(&p, &mutate(&p, &one_db(), &options).unwrap());
        check_sidecar(
            &sidecar(&out, options.native_sidecars),
            options.native_sidecars,
        );
    }
}

#[test]
fn several_databases_get_the_first_password_as_env_and_every_password_as_a_file() {
    let policy = policy(json!([
        {"name": "clinical", "host": "db1", "credentialsSecretRef": {"name": "clinical-db"}},
        {"name": "audit", "host": "db2", "credentialsSecretRef": {"name": "audit-db", "passwordKey": "secret"}},
        {"name": "odd/name", "host": "db3", "credentialsSecretRef": {"name": "odd-db"}}
    ]));
    for options in [OLD, NEW] {
        let p = pod(json!({"containers": [app()]}), None);
        let out = apply(&p, &mutate(&p, &policy, &options).unwrap());
        let c = serde_json::to_value(sidecar(&out, options.native_sidecars)).unwrap();
        assert_eq!(
            c["env"][2],
            json!({"name": "POOLWARDEN_DB_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "clinical-db", "key": "password", "optional": false}}})
        );
        assert_eq!(
            c["volumeMounts"][2],
            json!({"name": "poolwarden-db", "mountPath": "/var/run/poolwarden/db", "readOnly": true})
        );
        let spec = serde_json::to_value(out.spec.as_ref().unwrap()).unwrap();
        let db = spec["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == "poolwarden-db")
            .unwrap();
        // A name that is no safe path segment gets no file (only the env variable).
        assert_eq!(
            db["projected"]["sources"],
            json!([
                {"secret": {"name": "clinical-db", "items": [{"key": "password", "path": "clinical/password"}], "optional": false}},
                {"secret": {"name": "audit-db", "items": [{"key": "secret", "path": "audit/password"}], "optional": false}}
            ])
        );
    }
    assert_eq!(
        db_password_file("audit").as_deref(),
        Some("/var/run/poolwarden/db/audit/password")
    );
    assert_eq!(db_password_file("odd/name"), None);
    assert_eq!(db_password_file(".."), None);
    assert_eq!(db_password_file(""), None);
}

#[test]
fn a_policy_without_databases_or_a_pod_without_spec_is_an_error() {
    let mut empty = one_db();
    empty.spec.databases.clear();
    let p = pod(json!({"containers": [app()]}), None);
    assert_eq!(
        mutate(&p, &empty, &OLD),
        Err(MutateError::NoDatabases("clinical-backend".into()))
    );
    let mut no_spec = p.clone();
    no_spec.spec = None;
    assert_eq!(mutate(&no_spec, &one_db(), &OLD), Err(MutateError::NoSpec));
}

#[test]
fn native_sidecars_from_the_apiserver_version() {
    let table = [
        ("1", "20", false),
        ("1", "28", false),
        ("1", "28+", false),
        ("1", "29", true),
        ("1", "29+", true),
        ("1", "33", true),
        ("2", "0", true),
        ("", "", false),
        ("1", "x", false),
    ];
    for (major, minor, want) in table {
        assert_eq!(
            supports_native_sidecars(major, minor),
            want,
            "{major}.{minor}"
        );
    }
}

#[test]
fn the_installed_image_replaces_only_the_crd_default() {
    let installed = InjectOptions {
        sidecar_image: Some("registry.local/poolwarden-sidecar@sha256:abc".into()),
        ..OLD
    };
    let cases = [
        // (policy image, options, injected)
        (
            poolwarden_crds::DEFAULT_SIDECAR_IMAGE,
            &installed,
            "registry.local/poolwarden-sidecar@sha256:abc",
        ),
        (
            poolwarden_crds::DEFAULT_SIDECAR_IMAGE,
            &OLD,
            poolwarden_crds::DEFAULT_SIDECAR_IMAGE,
        ),
        (
            "mirror.local/pw-sidecar:0.1.0",
            &installed,
            "mirror.local/pw-sidecar:0.1.0",
        ),
        (
            "mirror.local/pw-sidecar:0.1.0",
            &OLD,
            "mirror.local/pw-sidecar:0.1.0",
        ),
    ];
    for (policy_image, options, want) in cases {
        assert_eq!(sidecar_image(policy_image, options), want, "{policy_image}");
    }
    // And in the patch itself.
    let mut policy = one_db();
    policy.spec.sidecar.image = poolwarden_crds::DEFAULT_SIDECAR_IMAGE.into();
    let p = pod(json!({"containers": [app()]}), None);
    let out = apply(&p, &mutate(&p, &policy, &installed).unwrap());
    assert_eq!(
        sidecar(&out, false).image.as_deref(),
        Some("registry.local/poolwarden-sidecar@sha256:abc")
    );
}
