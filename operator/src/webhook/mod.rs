//! The mutating admission webhook that injects `poolwarden-sidecar` into opted-in pods.
//!
//! ```text
//!  kube-apiserver ──POST /mutate (AdmissionReview v1, TLS)──▶ server.rs
//!                                                              │ pod labelled poolwarden.dev/policy?
//!                                                              │   no  ─▶ allowed, unchanged
//!                                                              │   yes ─▶ GET DbPoolPolicy (pod's namespace)
//!                                                              │            missing ─▶ refused, names it
//!                                                              ▼
//!            mutate.rs: pod + policy + options ─▶ JSON patch (pure, table-tested)
//!  tls.rs: tls.crt / tls.key from the mounted Secret, re-read when they change
//! ```
//!
//! The names below are shared with the reconciler, which writes the ConfigMap and the Secret
//! these volumes point at.
//!
//! Deploying it (what the chart provides): a `kubernetes.io/tls` Secret mounted as the cert
//! directory (`tls.crt`, `tls.key`; rotated files are picked up within 10 s), a Service to
//! the listen port, and a `MutatingWebhookConfiguration` for Pod CREATE with path `/mutate`,
//! `objectSelector` `poolwarden.dev/policy` Exists, `sideEffects: None`,
//! `admissionReviewVersions: [v1]`, `failurePolicy: Fail`. RBAC: `get` on
//! `dbpoolpolicies.poolwarden.dev`, and the non-resource URL `/version` (granted to every
//! authenticated user by the default `system:public-info-viewer` role).

pub mod mutate;
pub mod server;
pub mod tls;

pub use mutate::{InjectOptions, MutateError, mutate, sidecar_image, supports_native_sidecars};
pub use server::{WebhookConfig, WebhookError, serve};

/// The pod label that opts a pod in; its value names a `DbPoolPolicy` in the pod's namespace.
pub const POLICY_LABEL: &str = "poolwarden.dev/policy";
/// Annotation set on every injected pod; its value is the policy name.
pub const INJECTED_ANNOTATION: &str = "poolwarden.dev/injected";
/// Name of the injected container.
pub const SIDECAR_CONTAINER: &str = "poolwarden-sidecar";
/// Volume with the ConfigMap `<policy>-poolwarden`.
pub const CONFIG_VOLUME: &str = "poolwarden-config";
/// Volume with the Secret `<policy>-poolwarden-admin`.
pub const ADMIN_VOLUME: &str = "poolwarden-admin";
/// Projected volume with one password file per database.
pub const DB_VOLUME: &str = "poolwarden-db";
/// Where the ConfigMap is mounted.
pub const CONFIG_DIR: &str = "/etc/poolwarden";
/// The sidecar's config file inside [`CONFIG_DIR`] (the ConfigMap key).
pub const CONFIG_FILE: &str = "/etc/poolwarden/poolwarden.yaml";
/// Where the admin Secret (keys `token`, `tokens`) is mounted.
pub const ADMIN_DIR: &str = "/var/run/poolwarden/admin";
/// Where the per-database password files are mounted: `<DB_DIR>/<database name>/password`.
pub const DB_DIR: &str = "/var/run/poolwarden/db";
/// The path of the URL the apiserver calls.
pub const MUTATE_PATH: &str = "/mutate";
/// File names of the serving certificate and key in the cert directory (a `kubernetes.io/tls`
/// Secret mounted as a volume).
pub const TLS_CERT_FILE: &str = "tls.crt";
/// See [`TLS_CERT_FILE`].
pub const TLS_KEY_FILE: &str = "tls.key";

/// The ConfigMap the reconciler writes for a policy.
pub fn config_map_name(policy: &str) -> String {
    format!("{policy}-poolwarden")
}

/// The admin-token Secret the reconciler writes for a policy.
pub fn admin_secret_name(policy: &str) -> String {
    format!("{policy}-poolwarden-admin")
}
