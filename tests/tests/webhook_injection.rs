//! The sidecar-injection webhook, served in-process over loopback TLS and registered with the
//! real kube-apiserver (v1.20, so no native sidecars: a regular container is injected).
//!
//! Each test makes its own namespace, CA, serving certificate, server and
//! MutatingWebhookConfiguration; the configuration only matches that namespace (a
//! namespaceSelector on a label put on it) and is deleted at the end, even on failure.

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::PathBuf;
use std::time::Duration;

use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use poolwarden_crds::DbPoolPolicy;
use poolwarden_tests::kube_env;
use serde_json::{Value, json};
use tokio::sync::oneshot;

const NS_LABEL: &str = "poolwarden.dev/webhook-test";

/// A running webhook registered for one namespace.
struct Harness {
    client: Client,
    ns: String,
    url: String,
    ca_pem: String,
    stop: Option<oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<Result<(), poolwarden_operator::webhook::WebhookError>>>,
    config: ConfigGuard,
    _dir: DirGuard,
}

/// Deletes the cluster-scoped webhook configuration, also when a test panics.
struct ConfigGuard(String);

impl Drop for ConfigGuard {
    fn drop(&mut self) {
        let _ = std::process::Command::new("kubectl")
            .args([
                "delete",
                "mutatingwebhookconfiguration",
                &self.0,
                "--ignore-not-found",
                "--wait=false",
            ])
            .env("KUBECONFIG", kube_env::kubeconfig_path())
            .output();
    }
}

struct DirGuard(PathBuf);

impl Drop for DirGuard {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A CA and a serving certificate for 127.0.0.1 signed by it, written as tls.crt/tls.key.
fn write_certs(dir: &std::path::Path) -> String {
    use rcgen::{
        BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair,
        KeyUsagePurpose, SanType,
    };
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "poolwarden webhook test CA");
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    params
        .subject_alt_names
        .push(SanType::IpAddress(Ipv4Addr::LOCALHOST.into()));
    params
        .distinguished_name
        .push(DnType::CommonName, "127.0.0.1");
    let cert = params.signed_by(&key, &ca).unwrap();
    std::fs::write(dir.join("tls.crt"), cert.pem()).unwrap();
    std::fs::write(dir.join("tls.key"), key.serialize_pem()).unwrap();
    ca.pem()
}

impl Harness {
    async fn start(prefix: &str) -> Self {
        let client = kube_env::client().await;
        kube_env::install_crd(&client).await;
        let ns = kube_env::namespace(&client, prefix).await;
        Api::<Namespace>::all(client.clone())
            .patch(
                &ns,
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"labels": {NS_LABEL: ns}}})),
            )
            .await
            .unwrap();

        let dir = std::env::temp_dir().join(format!("pw-webhook-{ns}"));
        std::fs::create_dir_all(&dir).unwrap();
        let dir_guard = DirGuard(dir.clone());
        let ca_pem = write_certs(&dir);

        let port = free_port();
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(poolwarden_operator::webhook::serve(
            client.clone(),
            poolwarden_operator::webhook::WebhookConfig {
                listen: addr,
                cert_dir: dir,
                sidecar_image: None,
            },
            async {
                let _ = stopped.await;
            },
        ));
        let url = format!("https://127.0.0.1:{port}");
        let http = https_client(&ca_pem);
        let mut up = false;
        for _ in 0..100 {
            if let Ok(r) = http.get(format!("{url}/healthz")).send().await {
                assert_eq!(r.text().await.unwrap(), "ok");
                up = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(up, "webhook did not answer /healthz within 10 s");

        let name = format!("poolwarden-test-{ns}");
        let config_guard = ConfigGuard(name.clone());
        let config: MutatingWebhookConfiguration = serde_json::from_value(json!({
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "MutatingWebhookConfiguration",
            "metadata": {"name": name},
            "webhooks": [{
                "name": "inject.poolwarden.dev",
                "clientConfig": {
                    "url": format!("{url}/mutate"),
                    "caBundle": base64(ca_pem.as_bytes()),
                },
                "rules": [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"], "scope": "Namespaced"}],
                "namespaceSelector": {"matchLabels": {NS_LABEL: ns}},
                "objectSelector": {"matchExpressions": [{"key": "poolwarden.dev/policy", "operator": "Exists"}]},
                "failurePolicy": "Fail",
                "sideEffects": "None",
                "admissionReviewVersions": ["v1"],
                "timeoutSeconds": 10,
                "reinvocationPolicy": "Never"
            }]
        }))
        .unwrap();
        Api::<MutatingWebhookConfiguration>::all(client.clone())
            .create(&PostParams::default(), &config)
            .await
            .unwrap();

        Self {
            client,
            ns,
            url,
            ca_pem,
            stop: Some(stop),
            server: Some(server),
            config: config_guard,
            _dir: dir_guard,
        }
    }

    fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    async fn create_policy(&self) {
        let policy: DbPoolPolicy = serde_json::from_value(json!({
            "apiVersion": "poolwarden.dev/v1alpha1", "kind": "DbPoolPolicy",
            "metadata": {"name": "clinical-backend"},
            "spec": {
                "databases": [{"name": "clinical", "host": "db.clinical.svc",
                               "credentialsSecretRef": {"name": "clinical-db", "passwordKey": "pw"}}],
                "sidecar": {"image": "poolwarden-sidecar:0.1.0", "listenPort": 6432, "adminPort": 9930}
            }
        }))
        .unwrap();
        Api::<DbPoolPolicy>::namespaced(self.client.clone(), &self.ns)
            .create(&PostParams::default(), &policy)
            .await
            .unwrap();
    }

    /// The apiserver picks up a new webhook configuration asynchronously: wait (dry-run
    /// creates, which a `sideEffects: None` webhook is called for) until it is in force.
    async fn wait_until_active(&self) {
        let dry = PostParams {
            dry_run: true,
            ..Default::default()
        };
        for _ in 0..150 {
            let probe = pod("probe", Some("clinical-backend"));
            match self.pods().create(&dry, &probe).await {
                Ok(p) if has_sidecar(&p) => return,
                Ok(_) => {}
                Err(e) => panic!("dry-run create failed: {e}"),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("the webhook configuration did not take effect within 15 s");
    }

    async fn stop(mut self) {
        self.stop.take().unwrap().send(()).unwrap();
        let result = tokio::time::timeout(Duration::from_secs(20), self.server.take().unwrap())
            .await
            .expect("serve returns after shutdown")
            .unwrap();
        result.expect("serve ends cleanly");
        Api::<MutatingWebhookConfiguration>::all(self.client.clone())
            .delete(&self.config.0, &Default::default())
            .await
            .unwrap();
        Api::<Namespace>::all(self.client.clone())
            .delete(&self.ns, &Default::default())
            .await
            .unwrap();
    }
}

fn base64(bytes: &[u8]) -> String {
    // k8s-openapi's ByteString serialises as base64.
    serde_json::to_value(k8s_openapi::ByteString(bytes.to_vec()))
        .unwrap()
        .as_str()
        .unwrap()
        .to_string()
}

fn https_client(ca_pem: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(ca_pem.as_bytes()).unwrap())
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap()
}

fn pod(name: &str, policy: Option<&str>) -> Pod {
    let mut meta = json!({"name": name, "labels": {"app": "clinical-web"}});
    if let Some(p) = policy {
        meta["labels"]["poolwarden.dev/policy"] = p.into();
    }
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": meta,
        "spec": {"containers": [{"name": "web", "image": "clinical/web:1"}]}
    }))
    .unwrap()
}

fn has_sidecar(p: &Pod) -> bool {
    p.spec
        .as_ref()
        .unwrap()
        .containers
        .iter()
        .any(|c| c.name == "poolwarden-sidecar")
}

#[tokio::test]
async fn webhook_injects_the_sidecar_into_a_labelled_pod() {
    let h = Harness::start("webhook-inject").await;
    h.create_policy().await;
    h.wait_until_active().await;

    let created = h
        .pods()
        .create(
            &PostParams::default(),
            &pod("web-0", Some("clinical-backend")),
        )
        .await
        .unwrap();
    // What the apiserver stored is what it answered.
    let stored = h.pods().get("web-0").await.unwrap();
    assert_eq!(stored.spec, created.spec);

    let spec = serde_json::to_value(stored.spec.as_ref().unwrap()).unwrap();
    let containers = spec["containers"].as_array().unwrap();
    let names: Vec<&str> = containers
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    // Kubernetes 1.20 has no native sidecars: a regular container, first.
    assert_eq!(names, ["poolwarden-sidecar", "web"]);
    assert!(spec.get("initContainers").is_none(), "{spec}");
    let sc = &containers[0];
    assert_eq!(sc["image"], "poolwarden-sidecar:0.1.0");
    assert_eq!(
        sc["args"],
        json!(["--config", "/etc/poolwarden/poolwarden.yaml"])
    );
    assert!(sc.get("restartPolicy").is_none());
    let ports: Vec<(&str, i64)> = sc["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap(),
                p["containerPort"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(ports, [("postgres", 6432), ("pw-admin", 9930)]);
    assert_eq!(sc["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(sc["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(sc["livenessProbe"]["httpGet"]["port"], 9930);
    let env = sc["env"].as_array().unwrap();
    let password = env
        .iter()
        .find(|e| e["name"] == "POOLWARDEN_DB_PASSWORD")
        .expect("password env");
    assert_eq!(
        password["valueFrom"]["secretKeyRef"],
        json!({"name": "clinical-db", "key": "pw", "optional": false})
    );
    let sec = &sc["securityContext"];
    assert_eq!(sec["runAsNonRoot"], true);
    assert_eq!(sec["runAsUser"], 65532);
    assert_eq!(sec["readOnlyRootFilesystem"], true);
    assert_eq!(sec["allowPrivilegeEscalation"], false);
    assert_eq!(sec["capabilities"]["drop"], json!(["ALL"]));
    assert_eq!(sec["seccompProfile"]["type"], "RuntimeDefault");
    let mounts: Vec<(&str, &str, bool)> = sc["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["name"].as_str().unwrap(),
                m["mountPath"].as_str().unwrap(),
                m["readOnly"] == true,
            )
        })
        .collect();
    assert_eq!(
        mounts,
        [
            ("poolwarden-config", "/etc/poolwarden", true),
            ("poolwarden-admin", "/var/run/poolwarden/admin", true),
            ("poolwarden-db", "/var/run/poolwarden/db", true)
        ]
    );

    let volumes = spec["volumes"].as_array().unwrap();
    let volume = |n: &str| {
        volumes
            .iter()
            .find(|v| v["name"] == n)
            .unwrap_or_else(|| panic!("no volume {n}: {spec}"))
    };
    assert_eq!(
        volume("poolwarden-config")["configMap"]["name"],
        "clinical-backend-poolwarden"
    );
    assert_eq!(
        volume("poolwarden-admin")["secret"]["secretName"],
        "clinical-backend-poolwarden-admin"
    );
    assert_eq!(
        volume("poolwarden-db")["projected"]["sources"][0]["secret"]["items"],
        json!([{"key": "pw", "path": "clinical/password"}])
    );
    assert_eq!(
        stored.annotations()["poolwarden.dev/injected"],
        "clinical-backend"
    );
    assert_eq!(
        stored.annotations()["kubectl.kubernetes.io/default-container"],
        "web"
    );
    h.stop().await;
}

#[tokio::test]
async fn webhook_leaves_an_unlabelled_pod_unchanged() {
    let h = Harness::start("webhook-unlabelled").await;
    h.create_policy().await;
    h.wait_until_active().await;

    let created = h
        .pods()
        .create(&PostParams::default(), &pod("plain", None))
        .await
        .unwrap();
    let spec = created.spec.as_ref().unwrap();
    let names: Vec<&str> = spec.containers.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["web"]);
    assert_eq!(spec.volumes, None);
    assert_eq!(spec.init_containers, None);
    assert!(
        !created
            .annotations()
            .contains_key("poolwarden.dev/injected")
    );

    // The server itself, asked directly (the objectSelector keeps the apiserver from asking):
    // an unlabelled pod and an UPDATE of a labelled one are allowed without a patch.
    let http = https_client(&h.ca_pem);
    let review = |operation: &str, pod: Value| {
        json!({
            "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {
                "uid": "0b5b3c3e-1111-4222-8333-444455556666",
                "kind": {"group": "", "version": "v1", "kind": "Pod"},
                "resource": {"group": "", "version": "v1", "resource": "pods"},
                "name": "direct", "namespace": h.ns, "operation": operation,
                "userInfo": {"username": "tester"},
                "object": pod, "oldObject": null, "dryRun": false
            }
        })
    };
    let plain = serde_json::to_value(pod("direct", None)).unwrap();
    let labelled = serde_json::to_value(pod("direct", Some("clinical-backend"))).unwrap();
    for (op, object, want_patch) in [
        ("CREATE", plain, false),
        ("UPDATE", labelled.clone(), false),
        ("CREATE", labelled, true),
    ] {
        let answer: Value = http
            .post(format!("{}/mutate", h.url))
            .json(&review(op, object))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let response = &answer["response"];
        assert_eq!(answer["kind"], "AdmissionReview", "{answer}");
        assert_eq!(
            response["uid"], "0b5b3c3e-1111-4222-8333-444455556666",
            "{answer}"
        );
        assert_eq!(response["allowed"], true, "{answer}");
        assert_eq!(
            response.get("patch").is_some(),
            want_patch,
            "{op}: {answer}"
        );
    }

    // Not an AdmissionReview: refused as invalid, not a crash.
    let answer: Value = http
        .post(format!("{}/mutate", h.url))
        .body("{}")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(answer["response"]["allowed"], false, "{answer}");
    h.stop().await;
}

#[tokio::test]
async fn webhook_refuses_a_pod_naming_a_missing_policy() {
    let h = Harness::start("webhook-missing").await;
    h.create_policy().await;
    h.wait_until_active().await;

    let err = h
        .pods()
        .create(
            &PostParams::default(),
            &pod("orphan", Some("no-such-policy")),
        )
        .await
        .expect_err("a pod naming a missing policy must be refused");
    let kube::Error::Api(status) = err else {
        panic!("expected an API error, got {err:?}")
    };
    let want = format!(
        "DbPoolPolicy \"no-such-policy\" not found in namespace \"{}\": pods labelled poolwarden.dev/policy must name an existing policy",
        h.ns
    );
    assert!(
        status.message.contains(&want),
        "{:?} does not contain {want:?}",
        status.message
    );
    assert!(
        h.pods().get_opt("orphan").await.unwrap().is_none(),
        "the refused pod was stored"
    );
    h.stop().await;
}
