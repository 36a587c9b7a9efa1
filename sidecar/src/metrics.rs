//! Prometheus metrics (CONTRACT §2.6): one [`Metrics`] registry per process and one cheap
//! [`PoolMetrics`] handle per database. Every handle is a set of atomics resolved once, so the
//! hot path (a query, a checkout) never takes a lock or looks up a label.
//!
//! ```text
//!  pool / proxy ──▶ PoolMetrics (atomics) ──┐
//!  reload       ──▶ Metrics::record_reload ─┼─▶ Registry ──▶ encode() ──▶ GET /api/metrics
//!  breaker      ──▶ PoolMetrics ────────────┘      (text format 0.0.4)
//! ```
//!
//! Every series carries `database="<name>"`. `poolwarden_config_reloads_total` counts a
//! process-wide event; to keep the contract's rule it is counted once under the label of every
//! pool registered at the time (`result="success"|"failure"`), so each pool's series shows every
//! reload. Aggregate it with `max by (result)`, not `sum`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus::{
    Encoder, Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec,
    IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::breaker::BreakerState;

/// The content type of [`Metrics::encode`]'s output.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Histogram buckets for waits and query durations, in seconds: 1 ms to 60 s.
pub const DURATION_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// Why a server connection was closed: the pool's own reasons, one enum for both.
pub use crate::pool::CloseReason;

/// The outcome of a config reload (`result` of `poolwarden_config_reloads_total`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReloadResult {
    /// Validated and handed to the running pools.
    Success,
    /// Refused; the running config stays.
    Failure,
}

impl ReloadResult {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            ReloadResult::Success => "success",
            ReloadResult::Failure => "failure",
        }
    }
}

/// The metric families, registered once.
struct Families {
    pool_size: IntGaugeVec,
    max_overflow: IntGaugeVec,
    checked_out: IntGaugeVec,
    checked_in: IntGaugeVec,
    overflow: IntGaugeVec,
    waiting: IntGaugeVec,
    utilization: GaugeVec,
    wait_seconds: HistogramVec,
    timeouts: IntCounterVec,
    opened: IntCounterVec,
    closed: IntCounterVec,
    connect_errors: IntCounterVec,
    breaker_state: IntGaugeVec,
    breaker_rejections: IntCounterVec,
    client_connections: IntGaugeVec,
    transactions: IntCounterVec,
    query_seconds: HistogramVec,
    slow_queries: IntCounterVec,
    reloads: IntCounterVec,
    prepared: IntCounterVec,
}

const DB: &[&str] = &["database"];
/// The `result` label values of `poolwarden_prepared_statements_total`.
const PREPARED_RESULTS: [&str; 3] = ["hit", "miss", "eviction"];

impl Families {
    fn register(r: &Registry) -> prometheus::Result<Self> {
        fn gauge(r: &Registry, name: &str, help: &str) -> prometheus::Result<IntGaugeVec> {
            let v = IntGaugeVec::new(Opts::new(name, help), DB)?;
            r.register(Box::new(v.clone()))?;
            Ok(v)
        }
        fn counter(
            r: &Registry,
            name: &str,
            help: &str,
            labels: &[&str],
        ) -> prometheus::Result<IntCounterVec> {
            let v = IntCounterVec::new(Opts::new(name, help), labels)?;
            r.register(Box::new(v.clone()))?;
            Ok(v)
        }
        fn histogram(r: &Registry, name: &str, help: &str) -> prometheus::Result<HistogramVec> {
            let opts = HistogramOpts::new(name, help).buckets(DURATION_BUCKETS.to_vec());
            let v = HistogramVec::new(opts, DB)?;
            r.register(Box::new(v.clone()))?;
            Ok(v)
        }
        let utilization = GaugeVec::new(
            Opts::new(
                "poolwarden_pool_utilization_ratio",
                "Checked-out connections / pool_size.",
            ),
            DB,
        )?;
        r.register(Box::new(utilization.clone()))?;
        Ok(Self {
            pool_size: gauge(r, "poolwarden_pool_size", "Configured pool_size.")?,
            max_overflow: gauge(
                r,
                "poolwarden_pool_max_overflow",
                "Configured max_overflow.",
            )?,
            checked_out: gauge(
                r,
                "poolwarden_pool_checked_out_connections",
                "Server connections in use by clients.",
            )?,
            checked_in: gauge(
                r,
                "poolwarden_pool_checked_in_connections",
                "Idle server connections in the pool.",
            )?,
            overflow: gauge(
                r,
                "poolwarden_pool_overflow_connections",
                "Open server connections beyond pool_size.",
            )?,
            waiting: gauge(
                r,
                "poolwarden_pool_waiting_clients",
                "Clients queued for a connection.",
            )?,
            utilization,
            wait_seconds: histogram(
                r,
                "poolwarden_pool_wait_seconds",
                "Time clients waited for a connection.",
            )?,
            timeouts: counter(
                r,
                "poolwarden_pool_timeouts_total",
                "Clients that hit pool_timeout.",
                DB,
            )?,
            opened: counter(
                r,
                "poolwarden_server_connections_opened_total",
                "Server connections opened.",
                DB,
            )?,
            closed: counter(
                r,
                "poolwarden_server_connections_closed_total",
                "Server connections closed, by reason.",
                &["database", "reason"],
            )?,
            connect_errors: counter(
                r,
                "poolwarden_server_connect_errors_total",
                "Failed attempts to open a server connection.",
                DB,
            )?,
            breaker_state: gauge(
                r,
                "poolwarden_breaker_state",
                "Circuit breaker: 0 closed, 1 half-open, 2 open.",
            )?,
            breaker_rejections: counter(
                r,
                "poolwarden_breaker_rejections_total",
                "Requests refused while the breaker was open.",
                DB,
            )?,
            client_connections: gauge(r, "poolwarden_client_connections", "Connected clients.")?,
            transactions: counter(
                r,
                "poolwarden_transactions_total",
                "Transactions served.",
                DB,
            )?,
            query_seconds: histogram(r, "poolwarden_query_duration_seconds", "Query duration.")?,
            slow_queries: counter(
                r,
                "poolwarden_slow_queries_total",
                "Queries over slow_query_threshold.",
                DB,
            )?,
            reloads: counter(
                r,
                "poolwarden_config_reloads_total",
                "Config reloads, by result (counted under every pool's label).",
                &["database", "result"],
            )?,
            prepared: counter(
                r,
                "poolwarden_prepared_statements_total",
                "Named prepared statements in transaction mode: hit (the server connection held it), miss (prepared there), eviction (closed to stay within max_prepared_statements).",
                &["database", "result"],
            )?,
        })
    }
}

struct Shared {
    registry: Registry,
    families: Families,
    pools: Mutex<BTreeMap<String, PoolMetrics>>,
}

/// The process's metrics registry. Cheap to clone.
#[derive(Clone)]
pub struct Metrics {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A fresh registry holding every family of CONTRACT §2.6.
    pub fn new() -> Self {
        let registry = Registry::new();
        // The names and label sets are constants; registering them cannot fail.
        let families = Families::register(&registry).expect("metric definitions are valid");
        Self {
            shared: Arc::new(Shared {
                registry,
                families,
                pools: Mutex::new(BTreeMap::new()),
            }),
        }
    }

    fn pools(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, PoolMetrics>> {
        self.shared.pools.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The handle for `database`, created (with every series at zero) on first use.
    pub fn pool(&self, database: &str) -> PoolMetrics {
        let mut pools = self.pools();
        if let Some(p) = pools.get(database) {
            return p.clone();
        }
        let p = PoolMetrics::new(&self.shared.families, database);
        pools.insert(database.to_string(), p.clone());
        p
    }

    /// Forget a database that a reload removed: its series disappear from the output.
    pub fn remove_pool(&self, database: &str) {
        if self.pools().remove(database).is_none() {
            return;
        }
        let f = &self.shared.families;
        let l = &[database];
        for v in [
            &f.pool_size,
            &f.max_overflow,
            &f.checked_out,
            &f.checked_in,
            &f.overflow,
            &f.waiting,
            &f.breaker_state,
            &f.client_connections,
        ] {
            let _ = v.remove_label_values(l);
        }
        let _ = f.utilization.remove_label_values(l);
        for v in [&f.wait_seconds, &f.query_seconds] {
            let _ = v.remove_label_values(l);
        }
        for v in [
            &f.timeouts,
            &f.opened,
            &f.connect_errors,
            &f.breaker_rejections,
            &f.transactions,
            &f.slow_queries,
        ] {
            let _ = v.remove_label_values(l);
        }
        for r in CloseReason::ALL {
            let _ = f.closed.remove_label_values(&[database, r.as_str()]);
        }
        for r in [ReloadResult::Success, ReloadResult::Failure] {
            let _ = f.reloads.remove_label_values(&[database, r.as_str()]);
        }
        for r in PREPARED_RESULTS {
            let _ = f.prepared.remove_label_values(&[database, r]);
        }
    }

    /// The databases that have a handle.
    pub fn databases(&self) -> Vec<String> {
        self.pools().keys().cloned().collect()
    }

    /// Count one config reload under every registered pool's label.
    pub fn record_reload(&self, result: ReloadResult) {
        for p in self.pools().values() {
            match result {
                ReloadResult::Success => p.reload_success.inc(),
                ReloadResult::Failure => p.reload_failure.inc(),
            }
        }
    }

    /// Everything in Prometheus text format 0.0.4 (see [`CONTENT_TYPE`]).
    pub fn encode(&self) -> String {
        for p in self.pools().values() {
            p.refresh_utilization();
        }
        let families = self.shared.registry.gather();
        let mut buf = Vec::new();
        // Encoding plain numbers and valid names into memory does not fail.
        if let Err(e) = TextEncoder::new().encode(&families, &mut buf) {
            tracing::error!(error = %e, "cannot encode metrics");
        }
        String::from_utf8(buf).unwrap_or_default()
    }
}

/// One database's metric handles. Cheap to clone (one reference count: a session clones them
/// for every transaction); every method is a few atomic operations.
#[derive(Clone)]
pub struct PoolMetrics(Arc<Handles>);

impl std::ops::Deref for PoolMetrics {
    type Target = Handles;
    fn deref(&self) -> &Handles {
        &self.0
    }
}

/// The handles behind [`PoolMetrics`], resolved by label once.
pub struct Handles {
    database: Arc<str>,
    pool_size: IntGauge,
    max_overflow: IntGauge,
    checked_out: IntGauge,
    checked_in: IntGauge,
    overflow: IntGauge,
    waiting: IntGauge,
    utilization: Gauge,
    wait_seconds: Histogram,
    timeouts: IntCounter,
    opened: IntCounter,
    closed: [IntCounter; 7],
    connect_errors: IntCounter,
    breaker_state: IntGauge,
    breaker_rejections: IntCounter,
    client_connections: IntGauge,
    transactions: IntCounter,
    query_seconds: Histogram,
    slow_queries: IntCounter,
    reload_success: IntCounter,
    reload_failure: IntCounter,
    /// hit, miss, eviction.
    prepared: [IntCounter; 3],
}

impl std::fmt::Debug for PoolMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PoolMetrics")
            .field("database", &self.database)
            .finish_non_exhaustive()
    }
}

impl PoolMetrics {
    fn new(f: &Families, database: &str) -> Self {
        let l = &[database];
        Self(Arc::new(Handles {
            database: database.into(),
            pool_size: f.pool_size.with_label_values(l),
            max_overflow: f.max_overflow.with_label_values(l),
            checked_out: f.checked_out.with_label_values(l),
            checked_in: f.checked_in.with_label_values(l),
            overflow: f.overflow.with_label_values(l),
            waiting: f.waiting.with_label_values(l),
            utilization: f.utilization.with_label_values(l),
            wait_seconds: f.wait_seconds.with_label_values(l),
            timeouts: f.timeouts.with_label_values(l),
            opened: f.opened.with_label_values(l),
            closed: CloseReason::ALL.map(|r| f.closed.with_label_values(&[database, r.as_str()])),
            connect_errors: f.connect_errors.with_label_values(l),
            breaker_state: f.breaker_state.with_label_values(l),
            breaker_rejections: f.breaker_rejections.with_label_values(l),
            client_connections: f.client_connections.with_label_values(l),
            transactions: f.transactions.with_label_values(l),
            query_seconds: f.query_seconds.with_label_values(l),
            slow_queries: f.slow_queries.with_label_values(l),
            reload_success: f.reloads.with_label_values(&[database, "success"]),
            reload_failure: f.reloads.with_label_values(&[database, "failure"]),
            prepared: PREPARED_RESULTS.map(|r| f.prepared.with_label_values(&[database, r])),
        }))
    }

    /// The database label.
    pub fn database(&self) -> &str {
        &self.database
    }

    /// Configured pool_size and max_overflow (at start and after every resize).
    pub fn set_settings(&self, pool_size: u32, max_overflow: u32) {
        self.pool_size.set(i64::from(pool_size));
        self.max_overflow.set(i64::from(max_overflow));
        self.refresh_utilization();
    }

    /// Server connections in use by clients.
    pub fn set_checked_out(&self, n: usize) {
        self.checked_out.set(n as i64);
        self.refresh_utilization();
    }

    /// Idle server connections in the pool.
    pub fn set_checked_in(&self, n: usize) {
        self.checked_in.set(n as i64);
    }

    /// Open server connections beyond pool_size.
    pub fn set_overflow(&self, n: usize) {
        self.overflow.set(n as i64);
    }

    /// Clients queued for a connection.
    pub fn set_waiting(&self, n: usize) {
        self.waiting.set(n as i64);
    }

    /// A client got a connection after waiting this long (zero when none was queued).
    pub fn observe_wait(&self, waited: Duration) {
        self.wait_seconds.observe(waited.as_secs_f64());
    }

    /// A client hit pool_timeout.
    pub fn pool_timeout(&self) {
        self.timeouts.inc();
    }

    /// A server connection was opened.
    pub fn connection_opened(&self) {
        self.opened.inc();
    }

    /// A server connection was closed.
    pub fn connection_closed(&self, reason: CloseReason) {
        self.closed[reason.index()].inc();
    }

    /// An attempt to open a server connection failed.
    pub fn connect_error(&self) {
        self.connect_errors.inc();
    }

    /// The breaker changed state.
    pub fn set_breaker_state(&self, state: BreakerState) {
        self.breaker_state.set(state.gauge_value());
    }

    /// The breaker refused a request.
    pub fn breaker_rejected(&self) {
        self.breaker_rejections.inc();
    }

    /// A client connected to this database.
    pub fn client_connected(&self) {
        self.client_connections.inc();
    }

    /// A client of this database disconnected.
    pub fn client_disconnected(&self) {
        self.client_connections.dec();
    }

    /// A transaction ended (ReadyForQuery `I` after a transaction).
    pub fn transaction_served(&self) {
        self.transactions.inc();
    }

    /// A query took this long.
    pub fn observe_query(&self, took: Duration) {
        self.query_seconds.observe(took.as_secs_f64());
    }

    /// A query exceeded slow_query_threshold.
    pub fn slow_query(&self) {
        self.slow_queries.inc();
    }

    /// Prepared-statement counts of one transaction.
    pub fn prepared_statements(&self, stats: crate::prepared::Stats) {
        for (counter, n) in self
            .prepared
            .iter()
            .zip([stats.hits, stats.misses, stats.evictions])
        {
            if n > 0 {
                counter.inc_by(n);
            }
        }
    }

    fn refresh_utilization(&self) {
        let size = self.pool_size.get();
        let ratio = if size > 0 {
            self.checked_out.get() as f64 / size as f64
        } else {
            0.0
        };
        self.utilization.set(ratio);
    }
}

#[cfg(test)]
mod tests;
