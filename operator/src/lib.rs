//! poolwarden-operator: reconciles `DbPoolPolicy` into sidecar configuration, injects the
//! sidecar, and autoscales pool_size within the database's connection budget.
//!
//! ```text
//!  DbPoolPolicy ──▶ reconcile ──▶ ConfigMap <policy>-poolwarden, Secret <policy>-poolwarden-admin
//!       ▲               │
//!       │ status        └──▶ live push: PUT /api/pool on every matched sidecar
//!  autoscale (scrape /api/metrics ──▶ pure decision engine ──▶ new pool size)
//!  webhook: Pod CREATE with poolwarden.dev/policy ──▶ + sidecar container
//! ```
#![deny(warnings, rust_2018_idioms)]
#![forbid(unsafe_code)]

pub mod autoscale;
pub mod budget;
pub mod webhook;
