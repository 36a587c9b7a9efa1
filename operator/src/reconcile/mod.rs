//! Policy → owned objects and status, one file per output. Everything here except
//! `status::apply` is pure; `crate::controller` does the I/O and calls these in order:
//!
//! ```text
//!  spec + fetched Secrets ──validate──▶ violations ──▶ SpecValid / Ready (status.rs)
//!        │ valid
//!        ▼
//!  sizing::desired ──▶ configmap::render_config ──▶ ConfigMap <policy>-poolwarden
//!                      admin_secret::build      ──▶ Secret <policy>-poolwarden-admin
//!                      crate::push              ──▶ PUT /api/pool on ready pods
//! ```

use std::collections::BTreeMap;

pub mod admin_secret;
pub mod configmap;
pub mod sizing;
pub mod status;
pub mod validate;

/// The pod label that opts a pod in; its value is the policy name in the pod's namespace.
pub const POLICY_LABEL: &str = "poolwarden.dev/policy";
/// The label key marking objects the operator writes.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";

/// Labels on every object the operator writes for a policy.
pub fn labels(policy: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (
            MANAGED_BY_LABEL.to_string(),
            crate::FIELD_MANAGER.to_string(),
        ),
        (POLICY_LABEL.to_string(), policy.to_string()),
    ])
}
