//! The configuration types: the YAML file's shape (CONTRACT §2.2) and the effective config.
//!
//! The operator renders the sidecar's `poolwarden.yaml` from these very types, so the two
//! can never disagree. Defaults are the hazard log's production values.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::duration::ConfigDuration;

/// The whole sidecar configuration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Where applications connect. Default `127.0.0.1:6432` (loopback only).
    pub listen: SocketAddr,
    /// Admin HTTP: health, metrics, pool API. Default `0.0.0.0:9930`.
    pub admin_listen: SocketAddr,
    /// `transaction` (default) or `session`.
    pub mode: PoolMode,
    /// One pool per entry; clients pick it by the database name they connect to.
    pub databases: Vec<DatabaseConfig>,
    /// Pool limits and timeouts, shared by every database's pool.
    pub pool: PoolConfig,
    /// Circuit breaker.
    pub breaker: BreakerConfig,
    /// Client-side limits and authentication.
    pub clients: ClientsConfig,
    /// Admin API authentication.
    pub admin: AdminConfig,
    /// Queries slower than this are logged (fingerprint only) and counted. Default 5s.
    pub slow_query_threshold: ConfigDuration,
    /// How long running transactions may take to finish after SIGTERM. Default 30s.
    pub shutdown_timeout: ConfigDuration,
    /// Threads that serve clients. Default 1: one event loop, as PgBouncer has, which costs
    /// the least CPU per transaction; more threads for a sidecar given several cores. Read at
    /// start only.
    pub worker_threads: u32,
    /// How transaction-mode sessions are relayed: `event_loop` (default: a thread running a
    /// mio loop, `worker_threads` of them, relays every session between checkout and
    /// release; waits for a connection, resets, TLS server connections and errors stay on
    /// tokio) or `tasks` (a tokio task per client, the data path before; kept as a
    /// fallback). Read at start only. See docs/data-plane.md.
    pub data_path: DataPath,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 6432)),
            admin_listen: SocketAddr::from(([0, 0, 0, 0], 9930)),
            mode: PoolMode::Transaction,
            databases: Vec::new(),
            pool: PoolConfig::default(),
            breaker: BreakerConfig::default(),
            clients: ClientsConfig::default(),
            admin: AdminConfig::default(),
            slow_query_threshold: ConfigDuration::from_secs(5),
            shutdown_timeout: ConfigDuration::from_secs(30),
            worker_threads: 1,
            data_path: DataPath::EventLoop,
        }
    }
}

/// The transaction-mode data path (see [`Config::data_path`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DataPath {
    /// A tokio task per client.
    Tasks,
    /// Mio event loop threads relay every session between checkout and release.
    #[default]
    EventLoop,
}

impl DataPath {
    pub const ACCEPTED: &'static str = "tasks | event_loop";
}

impl std::str::FromStr for DataPath {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "tasks" => Ok(DataPath::Tasks),
            "event_loop" => Ok(DataPath::EventLoop),
            other => Err(other.to_string()),
        }
    }
}

/// Pool mode.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PoolMode {
    /// A server connection is held from the first message of a transaction to the
    /// ReadyForQuery (`I`) that ends it.
    #[default]
    Transaction,
    /// A server connection is held from client login to client logout.
    Session,
}

impl PoolMode {
    pub const ACCEPTED: &'static str = "transaction | session";
    pub fn as_str(self) -> &'static str {
        match self {
            PoolMode::Transaction => "transaction",
            PoolMode::Session => "session",
        }
    }
}

impl std::str::FromStr for PoolMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "transaction" => Ok(PoolMode::Transaction),
            "session" => Ok(PoolMode::Session),
            other => Err(format!("{other:?}")),
        }
    }
}

/// One upstream database.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    /// The name clients use.
    pub name: String,
    pub host: String,
    #[serde(default = "default_port")]
    pub port: u16,
    /// Server-side database name (default: `name`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dbname: Option<String>,
    /// The database user every server connection logs in as.
    pub user: String,
    /// A file holding the password, re-read for every new server connection, so a rotated
    /// password is picked up without a restart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
    /// From `--database-url` or `POOLWARDEN_DB_PASSWORD`; never written to a file or log.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<Secret>,
    #[serde(default)]
    pub sslmode: SslMode,
    /// CA bundle for `verify-ca` / `verify-full` (default: the WebPKI roots).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sslrootcert: Option<PathBuf>,
}

fn default_port() -> u16 {
    5432
}

impl DatabaseConfig {
    pub fn server_dbname(&self) -> &str {
        self.dbname.as_deref().unwrap_or(&self.name)
    }
}

/// TLS towards the database, as libpq's `sslmode`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SslMode {
    Disable,
    #[default]
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    pub const ACCEPTED: &'static str = "disable | prefer | require | verify-ca | verify-full";
}

impl std::str::FromStr for SslMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "disable" => SslMode::Disable,
            "prefer" | "allow" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            other => return Err(format!("{other:?}")),
        })
    }
}

/// QueuePool settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PoolConfig {
    /// Server connections kept open per pool. Default 20. Can change at runtime.
    pub pool_size: u32,
    /// Extra connections beyond pool_size, closed when they come back while pool_size
    /// connections are idle. Default 10. Can change at runtime.
    pub max_overflow: u32,
    /// How long a client waits in the FIFO queue before the QueuePool error. Default 30s.
    pub pool_timeout: ConfigDuration,
    /// Server connections older than this are closed instead of reused. Default 1h.
    pub pool_recycle: ConfigDuration,
    /// Check a pooled connection that has been idle before handing it out. Default true.
    pub pool_pre_ping: bool,
    /// `statement_timeout` set on every server connection. Default 30s.
    pub statement_timeout: ConfigDuration,
    /// A client idle inside a transaction for longer is disconnected (FATAL 25P03).
    /// Default: pool_recycle.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idle_in_transaction_timeout: Option<ConfigDuration>,
    /// Timeout for opening one server connection (TCP, TLS and login). Default 5s.
    pub connect_timeout: ConfigDuration,
    /// Transaction mode: named prepared statements kept per server connection (least
    /// recently used closed beyond it), so a client's statements work on whichever
    /// connection serves its next transaction. 0 turns the tracking off (named statements
    /// then last one transaction). Default 200, as PgBouncer's `max_prepared_statements`.
    pub max_prepared_statements: u32,
    /// Hand out idle server connections in turn (the one idle longest first) instead of the
    /// one returned last. Default false: last-in, first-out keeps a light load on a few warm
    /// backends. As PgBouncer's `server_round_robin`. Can change at runtime.
    pub server_round_robin: bool,
}

impl Default for PoolConfig {
    fn default() -> Self {
        Self {
            pool_size: 20,
            max_overflow: 10,
            pool_timeout: ConfigDuration::from_secs(30),
            pool_recycle: ConfigDuration::from_secs(3600),
            pool_pre_ping: true,
            statement_timeout: ConfigDuration::from_secs(30),
            idle_in_transaction_timeout: None,
            connect_timeout: ConfigDuration::from_secs(5),
            max_prepared_statements: 200,
            server_round_robin: false,
        }
    }
}

impl PoolConfig {
    /// The effective idle-in-transaction timeout (default: pool_recycle).
    pub fn idle_in_transaction(&self) -> ConfigDuration {
        self.idle_in_transaction_timeout
            .unwrap_or(self.pool_recycle)
    }
}

/// Circuit breaker settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BreakerConfig {
    /// Consecutive connect failures that open the breaker. Default 5.
    pub failure_threshold: u32,
    /// How long the breaker stays open before one probe. Default 30s.
    pub open_for: ConfigDuration,
    /// The message clients get while it is open (SQLSTATE 57P03).
    pub message: String,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            failure_threshold: 5,
            open_for: ConfigDuration::from_secs(30),
            message: "Database temporarily unavailable. Please try again shortly.".into(),
        }
    }
}

/// Client authentication method.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ClientAuth {
    /// No password; allowed only when `listen` is a loopback address.
    #[default]
    Trust,
    #[serde(rename = "scram-sha-256")]
    ScramSha256,
    Md5,
}

impl ClientAuth {
    pub const ACCEPTED: &'static str = "trust | scram-sha-256 | md5";
}

/// Client-side settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClientsConfig {
    /// Connected clients allowed at once; more are refused with 53300. Default 2000.
    pub max_connections: u32,
    /// trust (loopback only) | scram-sha-256 | md5.
    pub auth: ClientAuth,
    /// PgBouncer-format `"user" "secret"` lines for scram-sha-256 and md5.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth_file: Option<PathBuf>,
    /// A client that has not completed its startup within this is dropped. Default 10s.
    pub startup_timeout: ConfigDuration,
    /// Largest protocol message accepted from a client, in bytes. Default 64 MiB.
    pub max_message_size: u32,
}

impl Default for ClientsConfig {
    fn default() -> Self {
        Self {
            max_connections: 2000,
            auth: ClientAuth::Trust,
            auth_file: None,
            startup_timeout: ConfigDuration::from_secs(10),
            max_message_size: 64 * 1024 * 1024,
        }
    }
}

/// Admin API settings.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdminConfig {
    /// Lines `<role> <token>`, role `admin` or `viewer`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tokens_file: Option<PathBuf>,
    /// From `POOLWARDEN_ADMIN_TOKEN`: one admin token beside the tokens file. Never
    /// serialised.
    #[serde(skip)]
    pub token: Option<Secret>,
}

/// A secret string: redacted in Debug, Display and serialisation.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

/// What a redacted secret prints as.
pub const REDACTED: &str = "<redacted>";

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }
    /// The secret itself; call only where it is used.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(REDACTED)
    }
}
