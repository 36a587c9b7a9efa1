//! poolwarden-sidecar: a PostgreSQL wire-protocol (v3) pooling proxy that enforces the hazard
//! log's bounded pool for every client of the pod.
//!
//! ```text
//!  app driver ──▶ listen (127.0.0.1:6432) ──▶ proxy::session ──▶ pool (QueuePool) ──▶ PostgreSQL
//!                                                   │                 │
//!                         admin HTTP (:9930) ◀── metrics ◀────────────┘
//! ```
#![deny(warnings, rust_2018_idioms)]
#![forbid(unsafe_code)]

pub mod admin;
pub mod auth;
pub mod breaker;
pub mod config;
pub mod dataplane;
pub mod file_stamp;
pub mod fingerprint;
pub mod logging;
pub mod metrics;
pub mod ops;
pub mod pool;
pub mod prepared;
pub mod protocol;
pub mod proxy;
pub mod server;

pub use proxy::{Proxy, RunError};

/// Run the sidecar with `config` (just loaded from `source`: the `--config` file, the
/// environment and the flags) until SIGTERM (or SIGINT): the proxy, the admin API on
/// `admin_listen`, and live reload on SIGHUP and file changes. Then drain and stop.
pub async fn run(config: config::Config, source: config::ReloadSource) -> Result<(), RunError> {
    ops::run_until(
        config,
        source,
        config::ReloadOptions::default(),
        proxy::listener_signal(),
    )
    .await
}
