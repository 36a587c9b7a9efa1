//! PostgreSQL v3 wire protocol: message framing, the startup packet and the messages the
//! proxy writes itself. No pool logic and no I/O here except the small read helpers in
//! [`io`]; the parsers are pure functions over bytes so they can be fuzzed.
//!
//! ```text
//!  bytes ─▶ frame::decode (tag, length, limit) ─▶ Frame { tag, body }
//!  bytes ─▶ startup::decode ─▶ StartupPacket (Startup | SslRequest | GssEncRequest | Cancel)
//!  build::* ─▶ ErrorResponse, ParameterStatus, ReadyForQuery, ... as bytes
//! ```

pub mod build;
pub mod frame;
#[doc(hidden)]
pub mod fuzz_input;
pub mod io;
pub mod sql;
pub mod startup;

pub use frame::{Frame, FrameError};
pub use startup::StartupPacket;

/// SQLSTATE codes the proxy itself answers with.
pub mod sqlstate {
    /// protocol_violation
    pub const PROTOCOL_VIOLATION: &str = "08P01";
    /// too_many_connections (also the QueuePool timeout)
    pub const TOO_MANY_CONNECTIONS: &str = "53300";
    /// idle_in_transaction_session_timeout
    pub const IDLE_IN_TRANSACTION_TIMEOUT: &str = "25P03";
    /// admin_shutdown
    pub const ADMIN_SHUTDOWN: &str = "57P01";
    /// cannot_connect_now
    pub const CANNOT_CONNECT_NOW: &str = "57P03";
    /// invalid_catalog_name (unknown database)
    pub const INVALID_CATALOG_NAME: &str = "3D000";
    /// invalid_authorization_specification
    pub const INVALID_AUTHORIZATION: &str = "28000";
    /// feature_not_supported
    pub const FEATURE_NOT_SUPPORTED: &str = "0A000";
    /// connection_failure
    pub const CONNECTION_FAILURE: &str = "08006";
    /// query_canceled
    pub const QUERY_CANCELED: &str = "57014";
    /// internal_error
    pub const INTERNAL_ERROR: &str = "XX000";
}
