//! One pool per configured database, and the [`Manager`] that opens real server connections.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use crate::breaker::{BreakerError, SharedBreaker};
use crate::config::{Config, DatabaseConfig};
use crate::dataplane::DataPlane;
use crate::metrics::{Metrics, PoolMetrics};
use crate::pool::{CloseReason, Manager, Pool, PoolObserver, PoolSettings, PoolStats};
use crate::server::{ConnectError, Connector, ServerConn};

/// Opens server connections through a [`Connector`], every attempt guarded by the pool's
/// circuit breaker (first checkouts, pre-ping replacements and recycles alike).
#[derive(Debug)]
pub struct ServerManager {
    connector: Connector,
    ping_timeout: Duration,
    breaker: SharedBreaker,
    /// Plain TCP connections move onto the data plane's loop once logged in.
    plane: Option<DataPlane>,
}

impl ServerManager {
    /// A manager around `connector`; pings give up after `ping_timeout`; `breaker` guards
    /// every connection attempt.
    pub fn new(connector: Connector, ping_timeout: Duration, breaker: SharedBreaker) -> Self {
        Self {
            connector,
            ping_timeout,
            breaker,
            plane: None,
        }
    }

    /// Connections opened from now on move onto `plane`'s loop (plain TCP ones).
    pub fn on_data_plane(mut self, plane: Option<DataPlane>) -> Self {
        self.plane = plane;
        self
    }

    /// The connector.
    pub fn connector(&self) -> &Connector {
        &self.connector
    }

    /// This pool's circuit breaker.
    pub fn breaker(&self) -> &SharedBreaker {
        &self.breaker
    }
}

impl Manager for ServerManager {
    /// Boxed: the pool moves connections in and out of its queues at every checkout, and a
    /// pointer moves cheaper than the whole connection.
    type Conn = Box<ServerConn>;
    type Error = ConnectError;

    async fn connect(&self, application_name: &str) -> Result<Box<ServerConn>, ConnectError> {
        let r = self
            .breaker
            .guard_connect(|| self.connector.connect(application_name))
            .await;
        match r {
            Ok(conn) => match &self.plane {
                None => Ok(Box::new(conn)),
                Some(plane) => conn.adopt(plane).map(Box::new).map_err(|source| {
                    let db = self.connector.database();
                    ConnectError::Io {
                        addr: format!("{}:{}", db.host, db.port),
                        source,
                    }
                }),
            },
            Err(BreakerError::Open(rejection)) => {
                tracing::debug!(database = %self.connector.database().name, "circuit breaker open: no connection attempt");
                Err(ConnectError::BreakerOpen(rejection.message))
            }
            Err(BreakerError::Connect(e)) => {
                tracing::warn!(database = %self.connector.database().name, error = %e, "cannot open a server connection");
                Err(e)
            }
        }
    }

    fn attempted(error: &ConnectError) -> bool {
        !matches!(error, ConnectError::BreakerOpen(_))
    }

    async fn ping(&self, conn: &mut Box<ServerConn>) -> bool {
        let limit = self.ping_timeout.min(self.connector.connect_timeout());
        tokio::time::timeout(limit, conn.ping())
            .await
            .unwrap_or(false)
    }

    fn quiet(&self, conn: &mut Box<ServerConn>) -> bool {
        conn.quiet()
    }

    fn unread(&self, conn: &Box<ServerConn>) -> bool {
        conn.has_buffered()
    }

    fn home(&self, conn: &Box<ServerConn>) -> Option<usize> {
        conn.loop_socket().map(|s| s.plane_index())
    }

    fn close(&self, conn: Box<ServerConn>, reason: CloseReason) {
        tracing::debug!(database = %self.connector.database().name, reason = reason.as_str(), "closing a server connection");
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(conn.terminate());
        }
    }
}

/// Gives each new pool its observer, by database name (for metrics).
pub type ObserverFactory = Arc<dyn Fn(&str) -> Arc<dyn PoolObserver> + Send + Sync>;

/// The pool settings from a config.
pub fn pool_settings(config: &Config) -> PoolSettings {
    PoolSettings {
        pool_size: config.pool.pool_size,
        max_overflow: config.pool.max_overflow,
        pool_timeout: config.pool.pool_timeout.get(),
        pool_recycle: config.pool.pool_recycle.get(),
        pre_ping: config.pool.pool_pre_ping,
        round_robin: config.pool.server_round_robin,
    }
}

/// One database's pool and what clients of it share.
pub struct DbPool {
    /// The configured database.
    pub config: DatabaseConfig,
    /// The QueuePool.
    pub pool: Pool<ServerManager>,
    /// Server parameters (server_version ...) reported to clients at login, from the first
    /// server connection.
    pub server_params: Mutex<Option<Arc<super::startup::ReportedParams>>>,
    /// This database's metric handles, when the process exports metrics.
    pub metrics: Option<PoolMetrics>,
}

/// Every pool, by the database name clients use.
#[derive(Default)]
pub struct Pools {
    map: RwLock<HashMap<String, Arc<DbPool>>>,
    observer: Option<ObserverFactory>,
    metrics: Option<Metrics>,
    /// The data plane new server connections move onto (`data_path: event_loop`).
    plane: Option<DataPlane>,
}

impl std::fmt::Debug for Pools {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pools")
            .field("databases", &self.names())
            .finish()
    }
}

impl Pools {
    /// Pools for every database in `config`. `observer` (optional) gives each new pool an
    /// observer, by database name, for metrics.
    /// `plane`: the data plane new plain TCP server connections move onto.
    pub fn new(
        config: &Config,
        observer: Option<ObserverFactory>,
        plane: Option<DataPlane>,
    ) -> Result<Self, ConnectError> {
        Self::build(config, observer, None, plane)
    }

    /// Pools for every database in `config` that report to `metrics`: pool events (opened,
    /// closed, connect errors, waits, timeouts), breaker state and rejections, clients,
    /// transactions and queries.
    /// `plane`: the data plane new plain TCP server connections move onto.
    pub fn with_metrics(
        config: &Config,
        metrics: Metrics,
        plane: Option<DataPlane>,
    ) -> Result<Self, ConnectError> {
        let m = metrics.clone();
        let observer: ObserverFactory = Arc::new(move |db: &str| {
            Arc::new(MetricsObserver(m.pool(db))) as Arc<dyn PoolObserver>
        });
        Self::build(config, Some(observer), Some(metrics), plane)
    }

    fn build(
        config: &Config,
        observer: Option<ObserverFactory>,
        metrics: Option<Metrics>,
        plane: Option<DataPlane>,
    ) -> Result<Self, ConnectError> {
        let pools = Self {
            map: RwLock::default(),
            observer,
            metrics,
            plane,
        };
        pools.apply(config)?;
        Ok(pools)
    }

    /// The metrics registry, if the pools report to one.
    pub fn metrics(&self) -> Option<&Metrics> {
        self.metrics.as_ref()
    }

    fn make(&self, db: &DatabaseConfig, config: &Config) -> Result<Arc<DbPool>, ConnectError> {
        let connector = Connector::new(
            db.clone(),
            config.pool.connect_timeout.get(),
            config.pool.statement_timeout.get(),
        )?;
        let observer = self.observer.as_ref().map(|f| f(&db.name));
        let metrics = self.metrics.as_ref().map(|m| m.pool(&db.name));
        let mut breaker = SharedBreaker::new(&config.breaker);
        if let Some(m) = &metrics {
            breaker = breaker.with_metrics(m.clone());
            m.set_settings(config.pool.pool_size, config.pool.max_overflow);
        }
        Ok(Arc::new(DbPool {
            config: db.clone(),
            pool: Pool::new(
                ServerManager::new(connector, config.pool.connect_timeout.get(), breaker)
                    .on_data_plane(self.plane.clone()),
                pool_settings(config),
                observer,
            ),
            server_params: Mutex::new(None),
            metrics,
        }))
    }

    /// The pool clients reach with database name `name`.
    pub fn get(&self, name: &str) -> Option<Arc<DbPool>> {
        self.map
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .cloned()
    }

    /// Database names, sorted.
    pub fn names(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .map
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .cloned()
            .collect();
        v.sort();
        v
    }

    /// A snapshot of every pool, by database name.
    pub fn stats(&self) -> Vec<(String, PoolStats)> {
        let map = self.map.read().unwrap_or_else(|p| p.into_inner());
        let mut v: Vec<_> = map
            .iter()
            .map(|(k, p)| (k.clone(), p.pool.stats()))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    /// Resize one pool live; `false` if there is no such database.
    pub fn resize(&self, name: &str, pool_size: u32, max_overflow: u32) -> bool {
        let Some(db) = self.get(name) else {
            return false;
        };
        let settings = PoolSettings {
            pool_size,
            max_overflow,
            ..db.pool.settings()
        };
        db.pool.resize(settings);
        if let Some(m) = &db.metrics {
            m.set_settings(pool_size, max_overflow);
        }
        true
    }

    /// Apply a (validated) config: new pool settings everywhere; pools for new databases;
    /// pools of removed databases shut down (their clients finish on the old pool). A
    /// changed connection setting (host, user, TLS ...) gives the database a new pool.
    pub fn apply(&self, config: &Config) -> Result<(), ConnectError> {
        let settings = pool_settings(config);
        let mut fresh = HashMap::new();
        for db in &config.databases {
            match self.get(&db.name) {
                Some(existing) if existing.config == *db => {
                    existing.pool.resize(settings.clone());
                    existing.pool.manager().connector().set_timeouts(
                        config.pool.connect_timeout.get(),
                        config.pool.statement_timeout.get(),
                    );
                    existing
                        .pool
                        .manager()
                        .breaker()
                        .apply_config(&config.breaker);
                    if let Some(m) = &existing.metrics {
                        m.set_settings(config.pool.pool_size, config.pool.max_overflow);
                    }
                    fresh.insert(db.name.clone(), existing);
                }
                other => {
                    if let Some(old) = other {
                        old.pool.shut_down();
                    }
                    fresh.insert(db.name.clone(), self.make(db, config)?);
                }
            }
        }
        let mut map = self.map.write().unwrap_or_else(|p| p.into_inner());
        for (name, old) in map.iter() {
            if !fresh.contains_key(name) {
                old.pool.shut_down();
                if let Some(m) = &self.metrics {
                    m.remove_pool(name);
                }
            }
        }
        *map = fresh;
        Ok(())
    }

    /// Shut every pool down (idle connections close now, the rest as they come back).
    pub fn shut_down(&self) {
        for db in self.map.read().unwrap_or_else(|p| p.into_inner()).values() {
            db.pool.shut_down();
        }
    }
}

/// Feeds one pool's events into its [`PoolMetrics`]. The gauges (checked out, checked in,
/// overflow, waiting) are set from [`Pools::stats`] when metrics are scraped
/// ([`Pools::refresh_gauges`]), so they always come from one consistent snapshot.
struct MetricsObserver(PoolMetrics);

impl PoolObserver for MetricsObserver {
    fn opened(&self) {
        self.0.connection_opened();
    }
    fn closed(&self, reason: CloseReason) {
        self.0.connection_closed(reason);
    }
    fn connect_error(&self) {
        self.0.connect_error();
    }
    fn waited(&self, wait: Duration) {
        self.0.observe_wait(wait);
    }
    fn timed_out(&self) {
        self.0.pool_timeout();
    }
}

impl Pools {
    /// Set every pool's gauges (settings, checked out/in, overflow, waiting, breaker state)
    /// from one snapshot of each pool, just before the metrics are encoded.
    pub fn refresh_gauges(&self) {
        let map = self.map.read().unwrap_or_else(|p| p.into_inner());
        for db in map.values() {
            let Some(m) = &db.metrics else { continue };
            let s = db.pool.stats();
            m.set_settings(s.pool_size, s.max_overflow);
            m.set_checked_out(s.checked_out);
            m.set_checked_in(s.checked_in);
            m.set_overflow(s.overflow);
            m.set_waiting(s.waiting);
            m.set_breaker_state(db.pool.manager().breaker().state());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::breaker::BreakerState;
    use crate::config::parse_file;
    use crate::pool::CheckoutError;

    /// A config with one database on a loopback port nobody listens on (connects are refused
    /// at once), with `threshold` and `message` for the breaker.
    fn config(threshold: u32, message: &str) -> Config {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let yaml = format!(
            "databases:\n  - name: db\n    host: 127.0.0.1\n    port: {port}\n    user: u\n    password: p\n    sslmode: disable\n\
             pool:\n  pool_size: 2\n  max_overflow: 0\n  connect_timeout: 2s\n\
             breaker:\n  failure_threshold: {threshold}\n  open_for: 1h\n  message: \"{message}\"\n"
        );
        let mut cfg = parse_file("test.yaml", &yaml).unwrap();
        cfg.listen = "127.0.0.1:0".parse().unwrap();
        cfg
    }

    async fn checkout_error(pools: &Pools) -> ConnectError {
        match pools.get("db").unwrap().pool.checkout("t").await {
            Err(CheckoutError::Connect(e)) => e,
            Err(e) => panic!("unexpected checkout error {e}"),
            Ok(_) => panic!("connected to a closed port"),
        }
    }

    /// A reload's breaker section reaches the existing pool's breaker: the new threshold
    /// counts the next failures and the new message is what clients get; the counters and
    /// the breaker gauge follow.
    #[tokio::test]
    async fn apply_changes_breaker_settings_of_existing_pools() {
        let first = config(5, "old message");
        let metrics = Metrics::new();
        let pools = Pools::with_metrics(&first, metrics.clone(), None).unwrap();
        // One failure under threshold 5: still closed.
        assert!(!matches!(
            checkout_error(&pools).await,
            ConnectError::BreakerOpen(_)
        ));
        let breaker = || pools.get("db").unwrap().pool.manager().breaker().state();
        assert_eq!(breaker(), BreakerState::Closed);
        // Reload: threshold 2 (one more failure opens it), a new message, same database.
        let mut second = config(2, "new message");
        second.databases = first.databases.clone();
        pools.apply(&second).unwrap();
        assert!(!matches!(
            checkout_error(&pools).await,
            ConnectError::BreakerOpen(_)
        ));
        assert_eq!(breaker(), BreakerState::Open);
        match checkout_error(&pools).await {
            ConnectError::BreakerOpen(m) => assert_eq!(m, "new message"),
            e => panic!("expected the breaker's refusal, got {e}"),
        }
        let counters = pools.get("db").unwrap().pool.counters();
        assert_eq!(
            counters.connect_errors, 2,
            "a refusal is no connection attempt"
        );
        pools.refresh_gauges();
        let text = metrics.encode();
        assert!(
            text.contains("poolwarden_breaker_state{database=\"db\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("poolwarden_breaker_rejections_total{database=\"db\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("poolwarden_server_connect_errors_total{database=\"db\"} 2"),
            "{text}"
        );
    }
}
