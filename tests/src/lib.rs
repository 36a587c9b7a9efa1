//! Shared helpers for poolwarden's end-to-end tests: the Kubernetes test control plane,
//! throwaway PostgreSQL instances and the project's binaries.
#![forbid(unsafe_code)]

pub mod drivers;
pub mod fault_proxy;
pub mod hazard;
pub mod kube_env;
pub mod ledger;
pub mod operator;
pub mod pg_instance;
pub mod pod_sidecars;
pub mod raw_client;
pub mod sidecar;
pub mod sidecar_admin;
pub mod wardround;
