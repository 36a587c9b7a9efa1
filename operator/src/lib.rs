//! poolwarden-operator: reconciles `DbPoolPolicy` into sidecar configuration, injects the
//! sidecar, and autoscales pool_size within the database's connection budget.
//!
//! ```text
//!  DbPoolPolicy ──▶ reconcile ──▶ ConfigMap <policy>-poolwarden, Secret <policy>-poolwarden-admin
//!       ▲               │
//!       │ status        └──▶ live push: PUT /api/pool on every matched sidecar
//!  autoscale (scrape /api/metrics ──▶ pure decision engine ──▶ new pool size)
//!  webhook: Pod CREATE with poolwarden.dev/policy ──▶ + sidecar container
//!  leader (coordination.k8s.io Lease) gates the controller; server: /metrics /healthz /readyz
//! ```
#![deny(warnings, rust_2018_idioms)]
#![forbid(unsafe_code)]

pub mod autoscale;
pub mod budget;
pub mod controller;
pub mod leader;
pub mod metrics;
pub mod push;
pub mod reconcile;
pub mod run;
pub mod server;
pub mod webhook;

/// The one server-side-apply field manager (and Event reporting controller) of the operator.
pub const FIELD_MANAGER: &str = "poolwarden-operator";
