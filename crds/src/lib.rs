//! The `DbPoolPolicy` custom resource (`poolwarden.dev/v1alpha1`) and the hazard log's
//! capacity formulas.
//!
//! ```text
//!   Rust types (this crate) ──schemars──▶ CRD YAML (dbpoolpolicies.poolwarden.dev.yaml)
//!          │                                   ▲ drift test
//!          ▼                                   │
//!   operator reconcile ──▶ ConfigMap (sidecar poolwarden.yaml) ──▶ sidecars
//! ```
//!
//! Everything here is plain data and pure functions: no I/O, no Kubernetes client.
#![deny(warnings, rust_2018_idioms)]
#![forbid(unsafe_code)]

pub mod capacity;
pub mod conditions;
mod defaults;
pub mod policy;

pub use policy::*;

use kube::CustomResourceExt;

/// `spec.sidecar.image` when a policy does not name one. The operator may replace it with the
/// image it was installed with (`--sidecar-image`); an image named in the policy always wins.
pub const DEFAULT_SIDECAR_IMAGE: &str = "poolwarden-sidecar:0.1.0";

/// The path of the committed, generated CRD manifest, relative to the workspace root.
pub const CRD_FILE: &str = "crds/dbpoolpolicies.poolwarden.dev.yaml";

/// The CRD manifest as YAML, exactly as committed in [`CRD_FILE`].
pub fn crd_yaml() -> String {
    let crd = DbPoolPolicy::crd();
    let body = serde_yaml_ng::to_string(&crd).expect("a CRD always serialises to YAML");
    format!(
        "# Generated from the Rust types in crds/src by `poolwarden-operator crd`. Do not edit.\n{body}"
    )
}
