//! The admin API's data: pool snapshots, the resize request and its validation, and the
//! [`AdminBackend`] trait through which the HTTP server reaches the pools.

use serde::{Deserialize, Serialize};

use crate::breaker::BreakerState;
use crate::config::{ConfigDuration, MAX_POOL, PoolConfig, PoolMode};

/// What the admin server needs from the running sidecar. Implemented by the pools; every
/// method is quick and must not block on I/O.
pub trait AdminBackend: Send + Sync + 'static {
    /// Listening with a valid config (`GET /readyz`); independent of the database.
    fn ready(&self) -> bool;
    /// One snapshot per pool, in config order.
    fn snapshot(&self) -> Vec<PoolSnapshot>;
    /// Apply a validated request live (`PUT /api/pool`) and answer the new snapshot of every
    /// pool. A grow takes effect at once for waiting clients; a shrink closes idle
    /// connections first and the rest as they come back.
    fn resize(&self, request: &ResizeRequest) -> Result<Vec<PoolSnapshot>, ResizeError>;
    /// The metrics in Prometheus text format 0.0.4 (usually [`crate::metrics::Metrics::encode`]).
    fn metrics_text(&self) -> String;
}

/// A pool's settings as the admin API shows them (durations as `30s`, `1h`, ...).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PoolSettings {
    pub pool_size: u32,
    pub max_overflow: u32,
    pub pool_timeout: ConfigDuration,
    pub pool_recycle: ConfigDuration,
    pub pool_pre_ping: bool,
    pub statement_timeout: ConfigDuration,
    pub idle_in_transaction_timeout: ConfigDuration,
    pub connect_timeout: ConfigDuration,
}

impl From<&PoolConfig> for PoolSettings {
    fn from(p: &PoolConfig) -> Self {
        Self {
            pool_size: p.pool_size,
            max_overflow: p.max_overflow,
            pool_timeout: p.pool_timeout,
            pool_recycle: p.pool_recycle,
            pool_pre_ping: p.pool_pre_ping,
            statement_timeout: p.statement_timeout,
            idle_in_transaction_timeout: p.idle_in_transaction(),
            connect_timeout: p.connect_timeout,
        }
    }
}

/// One pool at one moment (`GET /api/pool` answers `{"pools": [PoolSnapshot...]}`).
///
/// ```json
/// {"database": "clinical", "mode": "transaction", "pool_size": 20, "max_overflow": 10,
///  "pool_timeout": "30s", "pool_recycle": "1h", "pool_pre_ping": true,
///  "statement_timeout": "30s", "idle_in_transaction_timeout": "1h", "connect_timeout": "5s",
///  "checked_out": 3, "checked_in": 17, "waiting": 0, "overflow": 0, "breaker": "closed"}
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PoolSnapshot {
    /// The database name clients use.
    pub database: String,
    pub mode: PoolMode,
    #[serde(flatten)]
    pub settings: PoolSettings,
    /// Server connections in use by clients.
    pub checked_out: u32,
    /// Idle server connections in the pool.
    pub checked_in: u32,
    /// Clients queued for a connection.
    pub waiting: u32,
    /// Open server connections beyond pool_size.
    pub overflow: u32,
    /// `closed`, `half_open` or `open`.
    pub breaker: BreakerState,
}

/// The body of `GET /api/pool` and of a successful `PUT /api/pool`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PoolsResponse {
    pub pools: Vec<PoolSnapshot>,
}

/// `PUT /api/pool`: change one pool's settings live. Only the fields given change. Durations
/// are strings with a unit or a number of seconds; the CRD's camelCase names are accepted too.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResizeRequest {
    /// The database name clients use.
    pub database: String,
    #[serde(default, alias = "poolSize", skip_serializing_if = "Option::is_none")]
    pub pool_size: Option<u32>,
    #[serde(
        default,
        alias = "maxOverflow",
        skip_serializing_if = "Option::is_none"
    )]
    pub max_overflow: Option<u32>,
    #[serde(
        default,
        alias = "pool_timeout_seconds",
        alias = "poolTimeoutSeconds",
        skip_serializing_if = "Option::is_none"
    )]
    pub pool_timeout: Option<ConfigDuration>,
    #[serde(
        default,
        alias = "pool_recycle_seconds",
        alias = "poolRecycleSeconds",
        skip_serializing_if = "Option::is_none"
    )]
    pub pool_recycle: Option<ConfigDuration>,
    #[serde(default, alias = "prePing", skip_serializing_if = "Option::is_none")]
    pub pool_pre_ping: Option<bool>,
    #[serde(
        default,
        alias = "statement_timeout_seconds",
        alias = "statementTimeoutSeconds",
        skip_serializing_if = "Option::is_none"
    )]
    pub statement_timeout: Option<ConfigDuration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_in_transaction_timeout: Option<ConfigDuration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect_timeout: Option<ConfigDuration>,
}

/// Why a resize was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ResizeError {
    /// The body is not a valid request (400).
    #[error("invalid {field}: {message}")]
    Invalid { field: String, message: String },
    /// No pool serves this database (404).
    #[error("unknown database {0:?}")]
    UnknownDatabase(String),
    /// The pool could not apply it (500).
    #[error("{0}")]
    Internal(String),
}

impl ResizeError {
    fn invalid(field: &str, message: impl Into<String>) -> Self {
        ResizeError::Invalid {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl ResizeRequest {
    /// Field-level checks that need no pool: a database, at least one setting, ranges.
    pub fn validate(&self) -> Result<(), ResizeError> {
        if self.database.trim().is_empty() {
            return Err(ResizeError::invalid(
                "database",
                "a database name is required",
            ));
        }
        if self
            == &(ResizeRequest {
                database: self.database.clone(),
                ..Default::default()
            })
        {
            return Err(ResizeError::invalid(
                "pool_size",
                "give at least one setting to change (pool_size, max_overflow, pool_timeout, ...)",
            ));
        }
        if let Some(n) = self.pool_size
            && !(1..=MAX_POOL).contains(&n)
        {
            return Err(ResizeError::invalid(
                "pool_size",
                format!("{n} (accepted: 1..={MAX_POOL})"),
            ));
        }
        if let Some(n) = self.max_overflow
            && n > MAX_POOL
        {
            return Err(ResizeError::invalid(
                "max_overflow",
                format!("{n} (accepted: 0..={MAX_POOL})"),
            ));
        }
        for (field, d) in [
            ("pool_timeout", self.pool_timeout),
            ("pool_recycle", self.pool_recycle),
            (
                "idle_in_transaction_timeout",
                self.idle_in_transaction_timeout,
            ),
            ("connect_timeout", self.connect_timeout),
        ] {
            if let Some(d) = d
                && d.get().is_zero()
            {
                return Err(ResizeError::invalid(field, "a duration above zero"));
            }
        }
        if let Some(d) = self.statement_timeout
            && d.get().as_millis() > i32::MAX as u128
        {
            return Err(ResizeError::invalid("statement_timeout", "at most 24d"));
        }
        Ok(())
    }

    /// The new settings: `current` with the given fields replaced, after [`validate`](Self::validate).
    pub fn apply_to(&self, current: &PoolConfig) -> Result<PoolConfig, ResizeError> {
        self.validate()?;
        let mut p = current.clone();
        if let Some(v) = self.pool_size {
            p.pool_size = v;
        }
        if let Some(v) = self.max_overflow {
            p.max_overflow = v;
        }
        if let Some(v) = self.pool_timeout {
            p.pool_timeout = v;
        }
        if let Some(v) = self.pool_recycle {
            p.pool_recycle = v;
        }
        if let Some(v) = self.pool_pre_ping {
            p.pool_pre_ping = v;
        }
        if let Some(v) = self.statement_timeout {
            p.statement_timeout = v;
        }
        if let Some(v) = self.idle_in_transaction_timeout {
            p.idle_in_transaction_timeout = Some(v);
        }
        if let Some(v) = self.connect_timeout {
            p.connect_timeout = v;
        }
        Ok(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(json: &str) -> Result<ResizeRequest, String> {
        serde_json::from_str(json).map_err(|e| e.to_string())
    }

    #[test]
    fn parses_names_aliases_and_durations() {
        let r = req(r#"{"database":"db","pool_size":25,"maxOverflow":13,"pool_timeout":"2s","poolRecycleSeconds":600}"#)
            .unwrap();
        assert_eq!(r.pool_size, Some(25));
        assert_eq!(r.max_overflow, Some(13));
        assert_eq!(r.pool_timeout, Some(ConfigDuration::from_secs(2)));
        assert_eq!(r.pool_recycle, Some(ConfigDuration::from_secs(600)));
        assert!(
            req(r#"{"database":"db","pool_sise":5}"#).is_err(),
            "unknown field refused"
        );
        assert!(req(r#"{"pool_size":5}"#).is_err(), "database required");
        assert!(req(r#"{"database":"db","pool_size":-1}"#).is_err());
        assert!(req(r#"{"database":"db","pool_timeout":"soon"}"#).is_err());
    }

    #[test]
    fn validation_table() {
        let base = ResizeRequest {
            database: "db".into(),
            ..Default::default()
        };
        let cases: Vec<(ResizeRequest, Option<&str>)> = vec![
            (
                ResizeRequest {
                    pool_size: Some(5),
                    ..base.clone()
                },
                None,
            ),
            (
                ResizeRequest {
                    max_overflow: Some(0),
                    ..base.clone()
                },
                None,
            ),
            (base.clone(), Some("pool_size")),
            (
                ResizeRequest {
                    pool_size: Some(0),
                    ..base.clone()
                },
                Some("pool_size"),
            ),
            (
                ResizeRequest {
                    pool_size: Some(MAX_POOL + 1),
                    ..base.clone()
                },
                Some("pool_size"),
            ),
            (
                ResizeRequest {
                    max_overflow: Some(MAX_POOL + 1),
                    ..base.clone()
                },
                Some("max_overflow"),
            ),
            (
                ResizeRequest {
                    pool_timeout: Some(ConfigDuration::from_secs(0)),
                    ..base.clone()
                },
                Some("pool_timeout"),
            ),
            (
                ResizeRequest {
                    database: " ".into(),
                    pool_size: Some(3),
                    ..Default::default()
                },
                Some("database"),
            ),
        ];
        for (r, want) in cases {
            let got = match r.validate() {
                Ok(()) => None,
                Err(ResizeError::Invalid { field, .. }) => Some(field),
                Err(other) => panic!("{other:?}"),
            };
            assert_eq!(got.as_deref(), want, "{r:?}");
        }
    }

    #[test]
    fn apply_to_changes_only_given_fields() {
        let cur = PoolConfig::default();
        let r = ResizeRequest {
            database: "db".into(),
            pool_size: Some(5),
            idle_in_transaction_timeout: Some(ConfigDuration::from_secs(60)),
            ..Default::default()
        };
        let new = r.apply_to(&cur).unwrap();
        assert_eq!(new.pool_size, 5);
        assert_eq!(new.max_overflow, cur.max_overflow);
        assert_eq!(new.idle_in_transaction(), ConfigDuration::from_secs(60));
        assert_eq!(new.pool_timeout, cur.pool_timeout);
    }

    #[test]
    fn snapshot_json_is_flat() {
        let s = PoolSnapshot {
            database: "clinical".into(),
            mode: PoolMode::Transaction,
            settings: PoolSettings::from(&PoolConfig::default()),
            checked_out: 3,
            checked_in: 17,
            waiting: 0,
            overflow: 0,
            breaker: BreakerState::HalfOpen,
        };
        let v = serde_json::to_value(&s).unwrap();
        assert_eq!(v["pool_size"], 20);
        assert_eq!(v["pool_timeout"], "30s");
        assert_eq!(v["breaker"], "half_open");
        assert_eq!(v["mode"], "transaction");
        let back: PoolSnapshot = serde_json::from_value(v).unwrap();
        assert_eq!(back, s);
    }
}
