//! `DbPoolPolicy` spec and status, exactly as CONTRACT §3. Every doc comment here becomes
//! `kubectl explain dbpp.spec...` text, so it is written for the platform engineer.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::defaults as d;

/// A pooling and capacity policy for the PostgreSQL connections of one clinical backend.
///
/// Pods opt in with the label `poolwarden.dev/policy: <name>`; the operator injects a
/// `poolwarden-sidecar` into them, renders the sidecar configuration from this spec, and (when
/// `autoscaling.enabled`) adjusts `poolSize` from observed utilization within the database's
/// connection budget.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "poolwarden.dev",
    version = "v1alpha1",
    kind = "DbPoolPolicy",
    plural = "dbpoolpolicies",
    singular = "dbpoolpolicy",
    shortname = "dbpp",
    category = "poolwarden",
    namespaced,
    status = "DbPoolPolicyStatus",
    printcolumn = r#"{"name":"POOL","type":"integer","description":"Current pool_size per sidecar","jsonPath":".status.poolSize"}"#,
    printcolumn = r#"{"name":"OVERFLOW","type":"integer","description":"Current max_overflow per sidecar","jsonPath":".status.maxOverflow"}"#,
    printcolumn = r#"{"name":"UTIL","type":"number","description":"Current utilization (checked out / pool size)","jsonPath":".status.utilization.current"}"#,
    printcolumn = r#"{"name":"PODS","type":"integer","description":"Pods matched by the policy label","jsonPath":".status.pods.matched"}"#,
    printcolumn = r#"{"name":"READY","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"AGE","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct DbPoolPolicySpec {
    /// The databases the sidecar pools, one pool per entry. Clients pick a pool by the
    /// database name they connect to.
    #[schemars(length(min = 1, max = 16))]
    pub databases: Vec<DatabaseSpec>,
    /// Pool settings (SQLAlchemy QueuePool semantics), enforced for every client of the pod.
    #[serde(default)]
    pub pool: PoolSpec,
    /// Circuit breaker for database unavailability.
    #[serde(default)]
    pub breaker: BreakerSpec,
    /// Autoscaling of poolSize from observed utilization, within the connection budget.
    #[serde(default)]
    pub autoscaling: AutoscalingSpec,
    /// Utilization alert thresholds, evaluated by the operator into the PoolSaturated condition.
    #[serde(default)]
    pub alerting: AlertingSpec,
    /// How the sidecar container is injected.
    #[serde(default)]
    pub sidecar: SidecarSpec,
}

/// One upstream PostgreSQL database.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DatabaseSpec {
    /// The database name clients use when they connect to the sidecar.
    #[schemars(length(min = 1, max = 63))]
    pub name: String,
    /// Hostname or IP address of the PostgreSQL server.
    #[schemars(length(min = 1, max = 253))]
    pub host: String,
    /// TCP port of the PostgreSQL server. Default 5432.
    #[serde(default = "d::port")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: u16,
    /// Server-side database name. Default: `name`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63))]
    pub dbname: Option<String>,
    /// Secret in the policy's namespace holding the database user and password. The password
    /// reaches the sidecar as the environment variable POOLWARDEN_DB_PASSWORD, never through
    /// the ConfigMap.
    pub credentials_secret_ref: CredentialsSecretRef,
    /// TLS to the database: disable, prefer, require, verify-ca or verify-full. Default prefer.
    #[serde(default)]
    pub ssl_mode: SslMode,
}

/// A reference to the Secret with the database credentials.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CredentialsSecretRef {
    /// Name of the Secret in the policy's namespace.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key of the database user name in the Secret. Default `username`.
    #[serde(default = "d::username_key")]
    pub username_key: String,
    /// Key of the database password in the Secret. Default `password`.
    #[serde(default = "d::password_key")]
    pub password_key: String,
}

/// TLS mode towards the database, as libpq's `sslmode`.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum SslMode {
    /// Never use TLS.
    Disable,
    /// Use TLS when the server offers it.
    #[default]
    Prefer,
    /// Require TLS, without certificate verification.
    Require,
    /// Require TLS and a certificate signed by the configured CA.
    VerifyCa,
    /// Require TLS, a trusted certificate and a matching host name.
    VerifyFull,
}

/// When a client holds a server connection.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum PoolMode {
    /// From the first message of a transaction to the ReadyForQuery that ends it.
    #[default]
    Transaction,
    /// From client login to client logout.
    Session,
}

/// Pool settings, SQLAlchemy QueuePool semantics. Defaults are the hazard log's production
/// values: 20/10, 30 s timeout, 1 h recycle, pre-ping on, 30 s statement timeout.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PoolSpec {
    /// transaction (default) or session pooling.
    #[serde(default)]
    pub mode: PoolMode,
    /// Server connections kept per sidecar (SQLAlchemy pool_size). Default 20. When
    /// autoscaling is enabled this is the starting size; status.poolSize is the live one.
    #[serde(default = "d::pool_size")]
    #[schemars(range(min = 1, max = 1000))]
    pub pool_size: u32,
    /// Extra connections allowed beyond poolSize during bursts (SQLAlchemy max_overflow).
    /// Default 10.
    #[serde(default = "d::max_overflow")]
    #[schemars(range(min = 0, max = 1000))]
    pub max_overflow: u32,
    /// Seconds a client waits for a connection before it gets the QueuePool error. Default 30.
    #[serde(default = "d::pool_timeout_seconds")]
    #[schemars(range(min = 1, max = 3600))]
    pub pool_timeout_seconds: u32,
    /// Server connections older than this many seconds are closed instead of reused.
    /// Default 3600.
    #[serde(default = "d::pool_recycle_seconds")]
    #[schemars(range(min = 1, max = 604800))]
    pub pool_recycle_seconds: u32,
    /// Check an idle pooled connection before handing it out. Default true.
    #[serde(default = "d::t")]
    pub pre_ping: bool,
    /// statement_timeout set on every server connection, in seconds. Default 30.
    #[serde(default = "d::statement_timeout_seconds")]
    #[schemars(range(min = 1, max = 86400))]
    pub statement_timeout_seconds: u32,
    /// Disconnect a client idle inside a transaction for longer than this many seconds.
    /// Default: poolRecycleSeconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 604800))]
    pub idle_in_transaction_timeout_seconds: Option<u32>,
}

impl Default for PoolSpec {
    fn default() -> Self {
        Self {
            mode: PoolMode::default(),
            pool_size: d::pool_size(),
            max_overflow: d::max_overflow(),
            pool_timeout_seconds: d::pool_timeout_seconds(),
            pool_recycle_seconds: d::pool_recycle_seconds(),
            pre_ping: true,
            statement_timeout_seconds: d::statement_timeout_seconds(),
            idle_in_transaction_timeout_seconds: None,
        }
    }
}

/// Circuit breaker: after failureThreshold consecutive failures to open a server connection,
/// refuse new connections for openSeconds with a clear message, then probe once.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BreakerSpec {
    /// Consecutive connect failures that open the breaker. Default 5.
    #[serde(default = "d::failure_threshold")]
    #[schemars(range(min = 1, max = 1000))]
    pub failure_threshold: u32,
    /// Seconds the breaker stays open before a probe. Default 30.
    #[serde(default = "d::open_seconds")]
    #[schemars(range(min = 1, max = 3600))]
    pub open_seconds: u32,
    /// The message clients receive while the breaker is open.
    #[serde(default = "d::breaker_message")]
    #[schemars(length(min = 1, max = 500))]
    pub message: String,
}

impl Default for BreakerSpec {
    fn default() -> Self {
        Self {
            failure_threshold: d::failure_threshold(),
            open_seconds: d::open_seconds(),
            message: d::breaker_message(),
        }
    }
}

/// Autoscaling of poolSize from observed utilization (checked out / pool size).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AutoscalingSpec {
    /// Turn autoscaling on. Default false: the pool stays at pool.poolSize.
    #[serde(default)]
    pub enabled: bool,
    /// Optional seed for the hazard log's formula: poolSize = ceil(users × 1.5),
    /// maxOverflow = ceil(poolSize × 0.5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100000))]
    pub concurrent_users: Option<u32>,
    /// The smallest poolSize autoscaling may choose. Default 5.
    #[serde(default = "d::min_pool_size")]
    #[schemars(range(min = 1, max = 1000))]
    pub min_pool_size: u32,
    /// The largest poolSize autoscaling may choose. Default 100.
    #[serde(default = "d::max_pool_size")]
    #[schemars(range(min = 1, max = 1000))]
    pub max_pool_size: u32,
    /// Increase at once when utilization stays high (the hazard log's 80 % rule).
    #[serde(default)]
    pub scale_up: ScaleUpSpec,
    /// The monthly capacity review (average above 60 % for the window adds step).
    #[serde(default)]
    pub review: ReviewSpec,
    /// Shrink slowly after a long quiet period.
    #[serde(default)]
    pub scale_down: ScaleDownSpec,
    /// Keep every replica's pool within the database's max_connections.
    #[serde(default)]
    pub connection_budget: ConnectionBudgetSpec,
    /// The workload whose replicas run the sidecar; its replica count (or its
    /// HorizontalPodAutoscaler's maxReplicas) sizes the connection budget. Default: the
    /// number of matched pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_ref: Option<TargetRef>,
}

impl Default for AutoscalingSpec {
    fn default() -> Self {
        Self {
            enabled: false,
            concurrent_users: None,
            min_pool_size: d::min_pool_size(),
            max_pool_size: d::max_pool_size(),
            scale_up: ScaleUpSpec::default(),
            review: ReviewSpec::default(),
            scale_down: ScaleDownSpec::default(),
            connection_budget: ConnectionBudgetSpec::default(),
            target_ref: None,
        }
    }
}

/// A workload in the policy's namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TargetRef {
    /// Deployment or StatefulSet.
    pub kind: WorkloadKind,
    /// Name of the workload.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// Workload kinds that can be a target.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum WorkloadKind {
    Deployment,
    StatefulSet,
}

/// Sustained high utilization: increase at once.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScaleUpSpec {
    /// Utilization above which the pool grows. Default 0.8.
    #[serde(default = "d::scale_up_above")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub utilization_above: f64,
    /// Seconds the utilization must stay above the threshold. Default 60.
    #[serde(default = "d::scale_up_sustained_seconds")]
    #[schemars(range(min = 0, max = 86400))]
    pub sustained_seconds: u32,
}

impl Default for ScaleUpSpec {
    fn default() -> Self {
        Self {
            utilization_above: d::scale_up_above(),
            sustained_seconds: d::scale_up_sustained_seconds(),
        }
    }
}

/// The monthly capacity review.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReviewSpec {
    /// Average utilization over the window above which the pool grows by step. Default 0.6.
    #[serde(default = "d::review_above")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub utilization_above: f64,
    /// Length of the review window in days. Default 30.
    #[serde(default = "d::review_window_days")]
    #[schemars(range(min = 1, max = 365))]
    pub window_days: u32,
    /// Connections added by a review. Default 5.
    #[serde(default = "d::step")]
    #[schemars(range(min = 1, max = 100))]
    pub step: u32,
}

impl Default for ReviewSpec {
    fn default() -> Self {
        Self {
            utilization_above: d::review_above(),
            window_days: d::review_window_days(),
            step: d::step(),
        }
    }
}

/// Scale down after a quiet period, one step at a time.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScaleDownSpec {
    /// Utilization below which the pool may shrink. Default 0.3.
    #[serde(default = "d::scale_down_below")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub utilization_below: f64,
    /// Seconds the utilization must stay below the threshold before a shrink. Default 3600.
    #[serde(default = "d::scale_down_stabilization_seconds")]
    #[schemars(range(min = 0, max = 2592000))]
    pub stabilization_seconds: u32,
    /// Connections removed by one shrink, at most. Default 5.
    #[serde(default = "d::step")]
    #[schemars(range(min = 1, max = 100))]
    pub step: u32,
}

impl Default for ScaleDownSpec {
    fn default() -> Self {
        Self {
            utilization_below: d::scale_down_below(),
            stabilization_seconds: d::scale_down_stabilization_seconds(),
            step: d::step(),
        }
    }
}

/// The database's connection budget: replicas × (poolSize + maxOverflow) must stay within
/// max_connections − superuser_reserved_connections − reservedConnections.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConnectionBudgetSpec {
    /// Connections kept free for everything that is not this policy's sidecars
    /// (migrations, admin sessions, other services). Default 10.
    #[serde(default = "d::reserved_connections")]
    #[schemars(range(min = 0, max = 100000))]
    pub reserved_connections: u32,
    /// The database's max_connections. Default: read from the database.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 262143))]
    pub max_connections: Option<u32>,
    /// The database's superuser_reserved_connections. Default: read from the database.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 262143))]
    pub superuser_reserved_connections: Option<u32>,
}

impl Default for ConnectionBudgetSpec {
    fn default() -> Self {
        Self {
            reserved_connections: d::reserved_connections(),
            max_connections: None,
            superuser_reserved_connections: None,
        }
    }
}

/// Alert thresholds (the hazard log: warning above 80 % for 5 minutes, critical above 90 %
/// for 2 minutes).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AlertingSpec {
    /// Warning threshold.
    #[serde(default = "AlertThreshold::warning")]
    pub warning: AlertThreshold,
    /// Critical threshold.
    #[serde(default = "AlertThreshold::critical")]
    pub critical: AlertThreshold,
}

impl Default for AlertingSpec {
    fn default() -> Self {
        Self {
            warning: AlertThreshold::warning(),
            critical: AlertThreshold::critical(),
        }
    }
}

/// A utilization level held for a duration.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AlertThreshold {
    /// Utilization (checked out / pool size) above which the alert is pending.
    #[schemars(range(min = 0.0, max = 1.0))]
    pub utilization_above: f64,
    /// Seconds the utilization must stay above the threshold before the alert fires.
    #[schemars(range(min = 0, max = 86400))]
    pub for_seconds: u32,
}

impl AlertThreshold {
    fn warning() -> Self {
        Self {
            utilization_above: d::warning_above(),
            for_seconds: d::warning_for_seconds(),
        }
    }
    fn critical() -> Self {
        Self {
            utilization_above: d::critical_above(),
            for_seconds: d::critical_for_seconds(),
        }
    }
}

/// The injected sidecar container.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SidecarSpec {
    /// Container image of poolwarden-sidecar.
    #[serde(default = "d::sidecar_image")]
    #[schemars(length(min = 1, max = 512))]
    pub image: String,
    /// Port the application connects to on 127.0.0.1. Default 6432.
    #[serde(default = "d::listen_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub listen_port: u16,
    /// Port of the sidecar's admin HTTP (health, metrics, pool API). Default 9930.
    #[serde(default = "d::admin_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub admin_port: u16,
}

impl Default for SidecarSpec {
    fn default() -> Self {
        Self {
            image: d::sidecar_image(),
            listen_port: d::listen_port(),
            admin_port: d::admin_port(),
        }
    }
}

/// Observed state, written by the operator.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DbPoolPolicyStatus {
    /// The metadata.generation this status reflects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The pool_size every sidecar of the policy runs with now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool_size: Option<u32>,
    /// The max_overflow every sidecar of the policy runs with now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_overflow: Option<u32>,
    /// Pods carrying the policy label, and how many of them answered a metrics scrape.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pods: Option<PodsStatus>,
    /// Utilization (checked out / pool size) over several windows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub utilization: Option<UtilizationStatus>,
    /// The database connection budget the pool is held within.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_budget: Option<ConnectionBudgetStatus>,
    /// When the pool size last changed (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_scale_time: Option<String>,
    /// Pool size changes, newest last, at most 20: the capacity change log.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<ScaleEvent>,
    /// Daily utilization buckets (newest last) that keep the monthly review across operator
    /// restarts without an external database.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub daily_utilization: Vec<DailyUtilization>,
    /// Utilization samples of the last 10 minutes (at most 120, newest last): the short
    /// windows behind scale-up and the PoolSaturated alert, kept here so they survive an
    /// operator restart.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recent_utilization: Vec<UtilizationSample>,
    /// Per-minute utilization of the last 3 hours (at most 180, newest last): the windows
    /// behind scale-down stabilization and the 1-hour average.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub minute_utilization: Vec<MinuteUtilization>,
    /// When the monthly capacity review last added a step (RFC 3339). The review runs at
    /// most once per review window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_review_time: Option<String>,
    /// Standard conditions: Ready, SpecValid, Scaling, BudgetLimited, PoolSaturated,
    /// BreakerOpen.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}

/// Matched and reporting pods.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodsStatus {
    /// Pods carrying the label `poolwarden.dev/policy: <this policy>`.
    pub matched: u32,
    /// Matched pods whose sidecar answered the last metrics scrape.
    pub reporting: u32,
    /// Pods whose sidecar could not be reached (scrape or live push), by name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unreachable: Vec<String>,
}

/// Utilization over several windows, 0..1 (can exceed 1 while overflow is in use).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UtilizationStatus {
    /// At the last scrape.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current: Option<f64>,
    /// Average over the last 5 minutes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub avg5m: Option<f64>,
    /// Average over the last hour.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub avg1h: Option<f64>,
    /// Average over the review window (30 days by default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub avg30d: Option<f64>,
}

/// The connection budget in force.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConnectionBudgetStatus {
    /// The database's max_connections.
    pub max_connections: u32,
    /// Connections kept free: superuser_reserved_connections + reservedConnections.
    pub reserved: u32,
    /// The largest poolSize + maxOverflow each replica may have.
    pub per_pod_limit: u32,
    /// Replicas the budget was divided by.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<u32>,
}

/// One change of pool size.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScaleEvent {
    /// When (RFC 3339).
    pub time: String,
    /// poolSize before.
    pub from_pool_size: u32,
    /// poolSize after.
    pub to_pool_size: u32,
    /// Why, for example SustainedHighUtilization or MonthlyReview.
    pub reason: String,
}

/// One day's average utilization.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DailyUtilization {
    /// The UTC day, YYYY-MM-DD.
    pub day: String,
    /// Mean utilization over the day's samples.
    pub average: f64,
    /// Number of samples behind the average.
    pub samples: u32,
}

/// One utilization sample of the whole policy, taken from a metrics scrape.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UtilizationSample {
    /// When the sample was taken (RFC 3339).
    pub time: String,
    /// Utilization of the busiest pool (checked out / pool size) across the reporting pods.
    pub utilization: f64,
    /// Demand of the busiest pool: checked out connections plus waiting clients.
    pub demand: u32,
}

/// Utilization aggregated over one UTC minute.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MinuteUtilization {
    /// Start of the minute (RFC 3339).
    pub minute: String,
    /// Lowest sampled utilization in the minute.
    pub min: f64,
    /// Highest sampled utilization in the minute.
    pub max: f64,
    /// Mean sampled utilization in the minute.
    pub average: f64,
    /// Highest sampled demand (checked out + waiting) in the minute.
    pub max_demand: u32,
    /// Number of samples behind the aggregates.
    pub samples: u32,
}

/// A condition in the shape of metav1.Condition.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// Type of condition in CamelCase, for example Ready.
    #[serde(rename = "type")]
    pub type_: String,
    /// True, False or Unknown.
    pub status: String,
    /// The metadata.generation the condition was set for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// When the status last changed (RFC 3339).
    pub last_transition_time: String,
    /// A CamelCase reason for the last transition.
    pub reason: String,
    /// A human-readable message about the transition.
    pub message: String,
}

/// Maximum number of entries kept in `status.history`.
pub const MAX_HISTORY: usize = 20;

impl DatabaseSpec {
    /// The server-side database name (`dbname`, defaulting to `name`).
    pub fn server_dbname(&self) -> &str {
        self.dbname.as_deref().unwrap_or(&self.name)
    }
}
