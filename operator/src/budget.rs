//! The database connection budget: how many server connections each sidecar may hold so that
//! all replicas together stay within the database's `max_connections`.
//!
//! ```text
//!   per-pod limit = (max_connections − superuser_reserved_connections − reservedConnections)
//!                   ÷ (replicas × pools of the policy on that server)          (rounded down)
//!   replicas × (poolSize + maxOverflow) × pools ≤ max_connections − reserved
//! ```
//!
//! The database values come from `SHOW max_connections` / `SHOW superuser_reserved_connections`
//! ([`read_database_limits`]) unless the spec sets them (spec values override).

use poolwarden_crds::{ConnectionBudgetSpec, ConnectionBudgetStatus, DatabaseSpec, SslMode};
use sqlx::postgres::{PgConnectOptions, PgSslMode};
use sqlx::{Connection, PgConnection};

pub mod replicas;

/// The two server settings the budget depends on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DatabaseLimits {
    /// `max_connections`.
    pub max_connections: u32,
    /// `superuser_reserved_connections`.
    pub superuser_reserved_connections: u32,
}

/// The connection budget in force for one policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Budget {
    /// The database's max_connections.
    pub max_connections: u32,
    /// superuser_reserved_connections + reservedConnections.
    pub reserved: u32,
    /// Replicas the budget is divided by.
    pub replicas: u32,
    /// Pools of the policy on this server in every pod (databases of the policy that live on
    /// the same server share its max_connections).
    pub pools_per_pod: u32,
    /// The largest poolSize + maxOverflow each pool of each replica may have.
    pub per_pod_limit: u32,
}

impl Budget {
    /// Computes the budget. `replicas` and `pools_per_pod` of 0 count as 1.
    pub fn new(
        limits: DatabaseLimits,
        reserved_connections: u32,
        replicas: u32,
        pools: u32,
    ) -> Self {
        let reserved = limits
            .superuser_reserved_connections
            .saturating_add(reserved_connections);
        Self {
            max_connections: limits.max_connections,
            reserved,
            replicas: replicas.max(1),
            pools_per_pod: pools.max(1),
            per_pod_limit: per_pod_limit(
                limits.max_connections,
                limits.superuser_reserved_connections,
                reserved_connections,
                replicas.saturating_mul(pools.max(1)),
            ),
        }
    }

    /// The status shape (`status.connectionBudget`).
    pub fn to_status(&self) -> ConnectionBudgetStatus {
        ConnectionBudgetStatus {
            max_connections: self.max_connections,
            reserved: self.reserved,
            per_pod_limit: self.per_pod_limit,
            replicas: Some(self.replicas),
        }
    }
}

/// The tightest budget over the database servers of a policy: `(limits, pools of the policy
/// on that server)` per server. `None` for no server.
pub fn tightest_budget(
    servers: &[(DatabaseLimits, u32)],
    reserved_connections: u32,
    replicas: u32,
) -> Option<Budget> {
    servers
        .iter()
        .map(|&(limits, pools)| Budget::new(limits, reserved_connections, replicas, pools))
        .min_by_key(|b| b.per_pod_limit)
}

/// `(max_connections − superuser_reserved − reserved) ÷ replicas`, rounded down, never
/// negative. `replicas` of 0 counts as 1 (a policy with no pod yet budgets for the first).
pub fn per_pod_limit(
    max_connections: u32,
    superuser_reserved: u32,
    reserved: u32,
    replicas: u32,
) -> u32 {
    let available = max_connections
        .saturating_sub(superuser_reserved)
        .saturating_sub(reserved);
    available / replicas.max(1)
}

/// The replicas to budget for.
///
/// When a HorizontalPodAutoscaler targets the workload its `maxReplicas` wins: the HPA may add
/// pods at any moment, and each new pod opens its pool before the operator could shrink the
/// others, so the budget must already hold at the HPA's maximum. Otherwise the workload's
/// `spec.replicas`; without a target workload, the matched pods. The result is never below the
/// pods matched right now (a rolling update briefly runs more pods than `replicas`, and every
/// one of them holds connections) and never below 1.
pub fn budget_replicas(
    workload_replicas: Option<u32>,
    hpa_max_replicas: Option<u32>,
    matched_pods: u32,
) -> u32 {
    hpa_max_replicas
        .or(workload_replicas)
        .unwrap_or(matched_pods)
        .max(matched_pods)
        .max(1)
}

/// The limits in force: spec values override what the database reports. `None` when a value
/// is neither set in the spec nor known from the database.
pub fn resolve_limits(
    spec: &ConnectionBudgetSpec,
    from_database: Option<DatabaseLimits>,
) -> Option<DatabaseLimits> {
    let max_connections = spec
        .max_connections
        .or(from_database.map(|d| d.max_connections))?;
    let superuser_reserved_connections = spec
        .superuser_reserved_connections
        .or(from_database.map(|d| d.superuser_reserved_connections))?;
    Some(DatabaseLimits {
        max_connections,
        superuser_reserved_connections,
    })
}

/// Why the database limits could not be read. Messages never contain the URL (it may hold a
/// password).
#[derive(Debug, thiserror::Error)]
pub enum BudgetError {
    /// Connecting or querying failed.
    #[error("reading the database's connection limits failed: {0}")]
    Database(#[source] sqlx::Error),
    /// The database did not answer within [`READ_TIMEOUT`].
    #[error("reading the database's connection limits timed out")]
    Timeout,
    /// A setting was not a number.
    #[error("the database reported {setting} = {value:?}, which is not a number")]
    NotANumber {
        /// The setting.
        setting: &'static str,
        /// What it said.
        value: String,
    },
}

/// How long reading the limits may take (connect + two SHOWs).
pub const READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Connects to `url` (a `postgres://` URL) and reads `max_connections` and
/// `superuser_reserved_connections`. One short-lived connection, closed before returning;
/// gives up after [`READ_TIMEOUT`].
pub async fn read_database_limits(url: &str) -> Result<DatabaseLimits, BudgetError> {
    let options: PgConnectOptions = url.parse().map_err(BudgetError::Database)?;
    read_database_limits_with(&options).await
}

/// As [`read_database_limits`], with connect options built by [`connect_options`].
pub async fn read_database_limits_with(
    options: &PgConnectOptions,
) -> Result<DatabaseLimits, BudgetError> {
    tokio::time::timeout(READ_TIMEOUT, async {
        let mut conn = PgConnection::connect_with(options)
            .await
            .map_err(BudgetError::Database)?;
        let max = show(&mut conn, "max_connections").await;
        let su = show(&mut conn, "superuser_reserved_connections").await;
        // Closing is best effort: the values are read either way.
        let _ = conn.close().await;
        Ok(DatabaseLimits {
            max_connections: max?,
            superuser_reserved_connections: su?,
        })
    })
    .await
    .map_err(|_| BudgetError::Timeout)?
}

/// Connect options for one database of a policy, with the credentials from its Secret. The
/// TLS mode follows `sslMode`; the session is named `poolwarden-operator` in
/// `pg_stat_activity`.
pub fn connect_options(db: &DatabaseSpec, user: &str, password: &str) -> PgConnectOptions {
    let ssl = match db.ssl_mode {
        SslMode::Disable => PgSslMode::Disable,
        SslMode::Prefer => PgSslMode::Prefer,
        SslMode::Require => PgSslMode::Require,
        SslMode::VerifyCa => PgSslMode::VerifyCa,
        SslMode::VerifyFull => PgSslMode::VerifyFull,
    };
    PgConnectOptions::new()
        .host(&db.host)
        .port(db.port)
        .database(db.server_dbname())
        .username(user)
        .password(password)
        .ssl_mode(ssl)
        .application_name("poolwarden-operator")
}

async fn show(conn: &mut PgConnection, setting: &'static str) -> Result<u32, BudgetError> {
    // `setting` is one of two constants above, never user input.
    let sql = format!("SHOW {setting}");
    let value: String = sqlx::query_scalar(&sql)
        .fetch_one(conn)
        .await
        .map_err(BudgetError::Database)?;
    value
        .trim()
        .parse()
        .map_err(|_| BudgetError::NotANumber { setting, value })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_pod_limit_table() {
        // (max, su, reserved, replicas) -> limit
        let table = [
            ((100, 3, 10, 1), 87),
            ((100, 3, 10, 3), 29),
            ((200, 3, 10, 4), 46),
            ((200, 0, 10, 4), 47), // CONTRACT example: 200, reserved 10, 4 pods -> 47
            ((100, 3, 10, 0), 87), // no pod yet: budget for one
            ((10, 3, 10, 2), 0),   // reserved eats everything
            ((100, 3, 10, 1000), 0),
        ];
        for ((max, su, res, reps), want) in table {
            assert_eq!(
                per_pod_limit(max, su, res, reps),
                want,
                "{max} {su} {res} {reps}"
            );
        }
    }

    #[test]
    fn budget_counts_pools_sharing_a_server() {
        let limits = DatabaseLimits {
            max_connections: 200,
            superuser_reserved_connections: 3,
        };
        let b = Budget::new(limits, 10, 4, 2);
        assert_eq!(b.per_pod_limit, 187 / 8);
        assert_eq!(b.reserved, 13);
        let s = b.to_status();
        assert_eq!(
            (s.max_connections, s.reserved, s.per_pod_limit),
            (200, 13, 23)
        );
        assert_eq!(s.replicas, Some(4));
    }

    #[test]
    fn the_tightest_server_wins() {
        let big = DatabaseLimits {
            max_connections: 500,
            superuser_reserved_connections: 3,
        };
        let small = DatabaseLimits {
            max_connections: 100,
            superuser_reserved_connections: 3,
        };
        // Two pools on the small server share it: 87 / (2 × 2) = 21.
        let b = tightest_budget(&[(big, 1), (small, 2)], 10, 2).unwrap();
        assert_eq!(
            (b.max_connections, b.per_pod_limit, b.pools_per_pod),
            (100, 21, 2)
        );
        assert_eq!(tightest_budget(&[], 10, 2), None);
    }

    #[test]
    fn replicas_table() {
        // (workload, hpa max, matched) -> replicas
        let table = [
            ((Some(3), None, 3), 3),
            ((Some(3), Some(10), 3), 10), // HPA max wins
            ((None, None, 4), 4),         // no target: matched pods
            ((Some(3), None, 5), 5),      // rolling update surge
            ((Some(0), None, 0), 1),      // scaled to zero: budget for one
            ((None, Some(6), 8), 8),
        ];
        for ((w, h, m), want) in table {
            assert_eq!(budget_replicas(w, h, m), want, "{w:?} {h:?} {m}");
        }
    }

    #[test]
    fn spec_values_override_database_values() {
        let db = DatabaseLimits {
            max_connections: 100,
            superuser_reserved_connections: 3,
        };
        let mut spec = ConnectionBudgetSpec::default();
        assert_eq!(resolve_limits(&spec, Some(db)), Some(db));
        assert_eq!(resolve_limits(&spec, None), None);
        spec.max_connections = Some(500);
        assert_eq!(
            resolve_limits(&spec, Some(db)),
            Some(DatabaseLimits {
                max_connections: 500,
                superuser_reserved_connections: 3
            })
        );
        assert_eq!(resolve_limits(&spec, None), None);
        spec.superuser_reserved_connections = Some(5);
        assert_eq!(
            resolve_limits(&spec, None),
            Some(DatabaseLimits {
                max_connections: 500,
                superuser_reserved_connections: 5
            })
        );
    }

    /// Against the real PostgreSQL on 127.0.0.1:5432: the values must be what the server
    /// itself reports through `current_setting`.
    #[tokio::test]
    async fn reads_limits_from_real_postgres() {
        let url = "postgres://postgres@127.0.0.1:5432/postgres";
        let limits = read_database_limits(url)
            .await
            .expect("PostgreSQL on 127.0.0.1:5432");
        let mut conn = PgConnection::connect(url).await.unwrap();
        let (max, su): (String, String) = sqlx::query_as(
            "SELECT current_setting('max_connections'), \
             current_setting('superuser_reserved_connections')",
        )
        .fetch_one(&mut conn)
        .await
        .unwrap();
        conn.close().await.unwrap();
        assert_eq!(limits.max_connections.to_string(), max);
        assert_eq!(limits.superuser_reserved_connections.to_string(), su);
        assert!(limits.max_connections > limits.superuser_reserved_connections);
    }

    #[tokio::test]
    async fn reads_limits_with_options_from_a_database_spec() {
        let db: DatabaseSpec = serde_json::from_value(serde_json::json!({
            "name": "clinical", "host": "127.0.0.1", "port": 5432, "dbname": "postgres",
            "credentialsSecretRef": {"name": "db"}, "sslMode": "disable"
        }))
        .unwrap();
        let opts = connect_options(&db, "postgres", "unused-with-trust");
        let by_spec = read_database_limits_with(&opts).await.unwrap();
        let by_url = read_database_limits("postgres://postgres@127.0.0.1:5432/postgres")
            .await
            .unwrap();
        assert_eq!(by_spec, by_url);
    }

    #[tokio::test]
    async fn unreachable_database_is_an_error_without_the_password() {
        // Port 1 on loopback: nothing listens there.
        let err = read_database_limits("postgres://postgres:s3cretpw@127.0.0.1:1/postgres")
            .await
            .unwrap_err();
        let text = format!("{err} {err:?}");
        assert!(matches!(err, BudgetError::Database(_)));
        assert!(!text.contains("s3cretpw"), "{text}");
    }
}
