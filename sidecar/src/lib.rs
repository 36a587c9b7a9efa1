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

pub mod config;
pub mod pool;
pub mod protocol;
pub mod server;
