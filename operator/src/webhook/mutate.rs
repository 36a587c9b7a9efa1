//! Pod + policy + options → JSON patch. Pure: no I/O, no clock, table-tested below.
//!
//! What the patch adds to a pod labelled `poolwarden.dev/policy: <policy>`:
//!
//! * the container `poolwarden-sidecar` (image `spec.sidecar.image`, args
//!   `--config /etc/poolwarden/poolwarden.yaml`), placed **first**:
//!   - as a native sidecar (`initContainers[0]` with `restartPolicy: Always`, plus a
//!     startupProbe, so the application starts only once the pool answers) when the cluster
//!     supports it (Kubernetes ≥ 1.29, see [`supports_native_sidecars`]);
//!   - otherwise as `containers[0]` (kubelet starts containers in order), with the annotation
//!     `kubectl.kubernetes.io/default-container` pointing at the application container so
//!     `kubectl logs/exec` keep their old default;
//! * ports `postgres` (listenPort; the sidecar binds it on 127.0.0.1 only) and `pw-admin`
//!   (adminPort); readiness `GET /readyz` and liveness `GET /healthz` on adminPort;
//! * env `POOLWARDEN_LISTEN=127.0.0.1:<listenPort>` and
//!   `POOLWARDEN_ADMIN_LISTEN=0.0.0.0:<adminPort>`, which pin the ports the probes and the
//!   container ports name (environment beats the config file); `POOLWARDEN_DB_PASSWORD` from
//!   the FIRST database's `credentialsSecretRef` (name, passwordKey);
//! * volumes `poolwarden-config` (ConfigMap `<policy>-poolwarden` at `/etc/poolwarden`, mounted
//!   whole so ConfigMap updates reach the file), `poolwarden-admin` (Secret
//!   `<policy>-poolwarden-admin` at `/var/run/poolwarden/admin`) and `poolwarden-db`;
//! * the annotation `poolwarden.dev/injected: <policy>`.
//!
//! Several databases: `POOLWARDEN_DB_PASSWORD` is one variable, and the sidecar gives it to
//! every database without a password of its own, which is only right for the first database
//! (or when all share one password). So the patch also mounts every database's password as a
//! file, `/var/run/poolwarden/db/<database name>/password` (the projected volume
//! `poolwarden-db`, see [`db_password_file`]); the rendered config points each database's
//! `password_file` there. Files also pick up a rotated password without a restart.
//!
//! Resources: requests `cpu: 50m, memory: 32Mi`, limits `cpu: 500m, memory: 128Mi`. The
//! sidecar holds a few dozen connections and small buffers; the CPU limit leaves room for
//! TLS handshakes to the database at start-up. Security context: the `restricted` Pod
//! Security Standard (non-root UID/GID 65532, read-only root filesystem, no privilege
//! escalation, all capabilities dropped, RuntimeDefault seccomp).
//!
//! Idempotent: a pod that already has a container or init container named
//! `poolwarden-sidecar` gets an empty patch.

use std::collections::BTreeMap;

use json_patch::jsonptr::PointerBuf;
use json_patch::{AddOperation, Patch, PatchOperation, ReplaceOperation};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMapVolumeSource, Container, ContainerPort, EnvVar, EnvVarSource,
    HTTPGetAction, KeyToPath, Pod, Probe, ProjectedVolumeSource, ResourceRequirements,
    SeccompProfile, SecretKeySelector, SecretProjection, SecretVolumeSource, SecurityContext,
    Volume, VolumeMount, VolumeProjection,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;
use poolwarden_crds::DbPoolPolicy;
use serde_json::Value;

use super::{
    ADMIN_DIR, ADMIN_VOLUME, CONFIG_DIR, CONFIG_FILE, CONFIG_VOLUME, DB_DIR, DB_VOLUME,
    INJECTED_ANNOTATION, SIDECAR_CONTAINER, admin_secret_name, config_map_name,
};

/// The non-root UID and GID the sidecar runs as (distroless `nonroot`).
pub const SIDECAR_UID: i64 = 65532;
/// kubectl's annotation naming the default container for `logs`/`exec`.
pub const DEFAULT_CONTAINER_ANNOTATION: &str = "kubectl.kubernetes.io/default-container";

/// What the cluster can do, decided once per apiserver by the server.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct InjectOptions {
    /// Inject a native sidecar (an init container with `restartPolicy: Always`) instead of a
    /// regular container. True for Kubernetes ≥ 1.29.
    pub native_sidecars: bool,
    /// The sidecar image the operator was installed with (`--sidecar-image`). It replaces the
    /// CRD's default image ([`poolwarden_crds::DEFAULT_SIDECAR_IMAGE`]); an image the policy
    /// names itself is kept.
    pub sidecar_image: Option<String>,
}

/// The image to inject: the policy's own, unless it is the CRD default and the operator was
/// given its installed image.
pub fn sidecar_image<'a>(policy_image: &'a str, options: &'a InjectOptions) -> &'a str {
    match &options.sidecar_image {
        Some(installed) if policy_image == poolwarden_crds::DEFAULT_SIDECAR_IMAGE => installed,
        _ => policy_image,
    }
}

/// Why a pod cannot be mutated.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MutateError {
    /// The pod object has no `spec`.
    #[error("pod has no spec")]
    NoSpec,
    /// The policy lists no database, so there is no password to give the sidecar.
    #[error("DbPoolPolicy {0:?} has no databases")]
    NoDatabases(String),
}

/// True when a Kubernetes version (`major`, `minor` as the apiserver's `/version` reports
/// them; providers append `+` and the like) has native sidecars enabled by default (≥ 1.29).
pub fn supports_native_sidecars(major: &str, minor: &str) -> bool {
    fn leading_number(s: &str) -> Option<u32> {
        let digits: String = s.chars().take_while(char::is_ascii_digit).collect();
        digits.parse().ok()
    }
    match (leading_number(major), leading_number(minor)) {
        (Some(major), Some(minor)) => major > 1 || (major == 1 && minor >= 29),
        _ => false,
    }
}

/// The password file of a database inside the sidecar, or `None` when the database name is
/// not usable as a single path segment (then only `POOLWARDEN_DB_PASSWORD` carries it).
pub fn db_password_file(database: &str) -> Option<String> {
    safe_path_segment(database).then(|| format!("{DB_DIR}/{database}/password"))
}

fn safe_path_segment(s: &str) -> bool {
    !s.is_empty()
        && !s.starts_with('.')
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// The JSON patch that injects the sidecar of `policy` into `pod`; empty when the pod already
/// has it.
pub fn mutate(
    pod: &Pod,
    policy: &DbPoolPolicy,
    options: &InjectOptions,
) -> Result<Patch, MutateError> {
    let spec = pod.spec.as_ref().ok_or(MutateError::NoSpec)?;
    let already = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .any(|c| c.name == SIDECAR_CONTAINER);
    if already {
        return Ok(Patch(Vec::new()));
    }
    let policy_name = policy.name_any();
    if policy.spec.databases.is_empty() {
        return Err(MutateError::NoDatabases(policy_name));
    }

    let mut ops = Vec::new();
    let container = to_value(&sidecar_container(policy, options));

    // The container, first in its list. An absent or empty list is (re)created whole, which
    // works whether or not the apiserver's JSON carries the empty array.
    let (list, existing) = if options.native_sidecars {
        (
            "initContainers",
            spec.init_containers.as_ref().is_some_and(|l| !l.is_empty()),
        )
    } else {
        ("containers", !spec.containers.is_empty())
    };
    if existing {
        ops.push(add(&["spec", list, "0"], container));
    } else {
        ops.push(add(&["spec", list], Value::Array(vec![container])));
    }

    // Volumes: a same-named volume is replaced in place, the rest appended.
    let current = spec.volumes.as_deref().unwrap_or_default();
    let new_volumes = volumes(policy);
    if current.is_empty() {
        ops.push(add(
            &["spec", "volumes"],
            Value::Array(new_volumes.iter().map(to_value).collect()),
        ));
    } else {
        for v in &new_volumes {
            match current.iter().position(|c| c.name == v.name) {
                Some(i) => ops.push(PatchOperation::Replace(ReplaceOperation {
                    path: PointerBuf::from_tokens(["spec", "volumes", &i.to_string()]),
                    value: to_value(v),
                })),
                None => ops.push(add(&["spec", "volumes", "-"], to_value(v))),
            }
        }
    }

    // Annotations.
    let mut annotations = BTreeMap::new();
    annotations.insert(INJECTED_ANNOTATION.to_string(), policy_name);
    if !options.native_sidecars {
        let has_default = pod.annotations().contains_key(DEFAULT_CONTAINER_ANNOTATION);
        if let (false, Some(app)) = (has_default, spec.containers.first()) {
            annotations.insert(DEFAULT_CONTAINER_ANNOTATION.to_string(), app.name.clone());
        }
    }
    if pod.annotations().is_empty() {
        ops.push(add(&["metadata", "annotations"], to_value(&annotations)));
    } else {
        for (k, v) in annotations {
            ops.push(add(&["metadata", "annotations", &k], Value::String(v)));
        }
    }
    Ok(Patch(ops))
}

fn add(path: &[&str], value: Value) -> PatchOperation {
    PatchOperation::Add(AddOperation {
        path: PointerBuf::from_tokens(path.iter().copied()),
        value,
    })
}

fn to_value<T: serde::Serialize>(v: &T) -> Value {
    serde_json::to_value(v).expect("Kubernetes API types always serialise to JSON")
}

fn sidecar_container(policy: &DbPoolPolicy, options: &InjectOptions) -> Container {
    let sidecar = &policy.spec.sidecar;
    let first_db = &policy.spec.databases[0];
    let admin_probe = |path: &str, period: i32, failures: i32| Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_string()),
            port: IntOrString::Int(i32::from(sidecar.admin_port)),
            scheme: Some("HTTP".to_string()),
            ..Default::default()
        }),
        period_seconds: Some(period),
        timeout_seconds: Some(2),
        failure_threshold: Some(failures),
        ..Default::default()
    };
    let env = |name: &str, value: String| EnvVar {
        name: name.to_string(),
        value: Some(value),
        value_from: None,
    };
    let quantity = |s: &str| Quantity(s.to_string());
    let mut mounts = vec![
        VolumeMount {
            name: CONFIG_VOLUME.into(),
            mount_path: CONFIG_DIR.into(),
            read_only: Some(true),
            ..Default::default()
        },
        VolumeMount {
            name: ADMIN_VOLUME.into(),
            mount_path: ADMIN_DIR.into(),
            read_only: Some(true),
            ..Default::default()
        },
    ];
    if has_db_files(policy) {
        mounts.push(VolumeMount {
            name: DB_VOLUME.into(),
            mount_path: DB_DIR.into(),
            read_only: Some(true),
            ..Default::default()
        });
    }
    Container {
        name: SIDECAR_CONTAINER.to_string(),
        image: Some(sidecar_image(&sidecar.image, options).to_string()),
        args: Some(vec!["--config".to_string(), CONFIG_FILE.to_string()]),
        restart_policy: options.native_sidecars.then(|| "Always".to_string()),
        ports: Some(vec![
            ContainerPort {
                name: Some("postgres".into()),
                container_port: i32::from(sidecar.listen_port),
                protocol: Some("TCP".into()),
                ..Default::default()
            },
            ContainerPort {
                name: Some("pw-admin".into()),
                container_port: i32::from(sidecar.admin_port),
                protocol: Some("TCP".into()),
                ..Default::default()
            },
        ]),
        env: Some(vec![
            env(
                "POOLWARDEN_LISTEN",
                format!("127.0.0.1:{}", sidecar.listen_port),
            ),
            env(
                "POOLWARDEN_ADMIN_LISTEN",
                format!("0.0.0.0:{}", sidecar.admin_port),
            ),
            EnvVar {
                name: "POOLWARDEN_DB_PASSWORD".into(),
                value: None,
                value_from: Some(EnvVarSource {
                    secret_key_ref: Some(SecretKeySelector {
                        name: first_db.credentials_secret_ref.name.clone(),
                        key: first_db.credentials_secret_ref.password_key.clone(),
                        optional: Some(false),
                    }),
                    ..Default::default()
                }),
            },
        ]),
        volume_mounts: Some(mounts),
        readiness_probe: Some(admin_probe("/readyz", 5, 3)),
        liveness_probe: Some(admin_probe("/healthz", 10, 3)),
        // Up to 60 s to start before the application containers (native sidecar) start.
        startup_probe: options
            .native_sidecars
            .then(|| admin_probe("/readyz", 1, 60)),
        resources: Some(ResourceRequirements {
            requests: Some(BTreeMap::from([
                ("cpu".into(), quantity("50m")),
                ("memory".into(), quantity("32Mi")),
            ])),
            limits: Some(BTreeMap::from([
                ("cpu".into(), quantity("500m")),
                ("memory".into(), quantity("128Mi")),
            ])),
            ..Default::default()
        }),
        security_context: Some(SecurityContext {
            run_as_non_root: Some(true),
            run_as_user: Some(SIDECAR_UID),
            run_as_group: Some(SIDECAR_UID),
            read_only_root_filesystem: Some(true),
            allow_privilege_escalation: Some(false),
            privileged: Some(false),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                add: None,
            }),
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".into(),
                localhost_profile: None,
            }),
            ..Default::default()
        }),
        termination_message_policy: Some("FallbackToLogsOnError".into()),
        ..Default::default()
    }
}

fn has_db_files(policy: &DbPoolPolicy) -> bool {
    policy
        .spec
        .databases
        .iter()
        .any(|db| db_password_file(&db.name).is_some())
}

fn volumes(policy: &DbPoolPolicy) -> Vec<Volume> {
    let name = policy.name_any();
    let mut out = vec![
        Volume {
            name: CONFIG_VOLUME.into(),
            config_map: Some(ConfigMapVolumeSource {
                name: config_map_name(&name),
                ..Default::default()
            }),
            ..Default::default()
        },
        Volume {
            name: ADMIN_VOLUME.into(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(admin_secret_name(&name)),
                ..Default::default()
            }),
            ..Default::default()
        },
    ];
    let sources: Vec<VolumeProjection> = policy
        .spec
        .databases
        .iter()
        .filter(|db| db_password_file(&db.name).is_some())
        .map(|db| VolumeProjection {
            secret: Some(SecretProjection {
                name: db.credentials_secret_ref.name.clone(),
                items: Some(vec![KeyToPath {
                    key: db.credentials_secret_ref.password_key.clone(),
                    path: format!("{}/password", db.name),
                    mode: None,
                }]),
                optional: Some(false),
            }),
            ..Default::default()
        })
        .collect();
    if !sources.is_empty() {
        out.push(Volume {
            name: DB_VOLUME.into(),
            projected: Some(ProjectedVolumeSource {
                sources: Some(sources),
                default_mode: None,
            }),
            ..Default::default()
        });
    }
    out
}

#[cfg(test)]
mod tests;
