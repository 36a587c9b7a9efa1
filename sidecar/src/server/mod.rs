//! Server connections: opening one ([`Connector`], the single place that does it), TLS per
//! `sslmode`, login (SCRAM-SHA-256, md5, cleartext), and what the pool needs from an open
//! connection (ping, reset, cancel, terminate).
//!
//! ```text
//!  Connector::connect ─▶ TCP (connect_timeout) ─▶ TLS? (sslmode) ─▶ StartupMessage
//!        ─▶ auth (SCRAM / md5 / cleartext) ─▶ ParameterStatus*, BackendKeyData ─▶ ServerConn
//! ```

mod conn;
mod connect;
mod stream;
mod tls;

pub use conn::{CancelTarget, ServerConn, ServerError};
pub use connect::{ConnectError, Connector};
pub use stream::ServerStream;
