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
pub mod file_stamp;
pub mod fingerprint;
pub mod logging;
pub mod metrics;
pub mod pool;
pub mod protocol;
pub mod proxy;
pub mod server;

pub use proxy::{Proxy, RunError};

/// Run the proxy with `config` until SIGTERM (or SIGINT), then drain and stop. An admin
/// server or a reload loop runs beside it by using [`Proxy::bind`], [`Proxy::pools`] and
/// [`Proxy::config`] directly instead.
pub async fn run(config: config::Config) -> Result<(), RunError> {
    let proxy = Proxy::bind(config).await?;
    proxy.serve(proxy::listener_signal()).await
}
