//! The client listener: accept, limit the number of clients, drain on shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::task::TaskTracker;

use super::cancel::CancelRegistry;
use super::counters::ProxyCounters;
use super::event_loop::{Listening, Loops};
use super::login::{self, Keep};
use super::phase::{Phase, PhaseControl};
use super::pools::{ObserverFactory, Pools};
use super::session::Ctx;
use super::startup::{self, Refusal, Startup};
use crate::auth::{AuthFileError, SharedAuthFile};
use crate::config::{ClientAuth, Config, DataPath, PoolMode};
use crate::dataplane::DataPlane;
use crate::protocol::sqlstate;
use crate::server::ConnectError;

/// How long the kernel holds a new client connection for its first bytes before handing it
/// to the proxy anyway (seconds; see [`defer_accept`]).
const DEFER_ACCEPT_SECS: u32 = 1;

/// Have the kernel hand a client over once its first bytes (the start-up packet or SSL
/// request: a PostgreSQL client speaks first) are there, rather than at the handshake: one
/// wake-up per login instead of two, and a client that connects and says nothing holds no
/// slot of `clients.max_connections` for that first second. PgBouncer does the same on
/// Linux. Best effort: where it cannot be set, clients are accepted at the handshake.
fn defer_accept(listener: &TcpListener) {
    match poolwarden_sockopt::set_tcp_defer_accept(listener, DEFER_ACCEPT_SECS) {
        Ok(()) => {}
        // Not Linux: nothing to tell.
        Err(e) if e.kind() == std::io::ErrorKind::Unsupported => {}
        Err(e) => tracing::warn!(
            error = %e,
            "TCP_DEFER_ACCEPT not set on the client listener; clients are accepted at the handshake"
        ),
    }
}

/// Why the proxy could not start or run.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// The client users file cannot be read.
    #[error(transparent)]
    AuthFile(#[from] AuthFileError),
    /// A database's connection settings are unusable (e.g. its sslrootcert).
    #[error(transparent)]
    Database(#[from] ConnectError),
    /// The SIGHUP handler of the reload loop could not be installed.
    #[error("cannot install the SIGHUP handler: {0}")]
    Signal(std::io::Error),
    /// The data plane's loop (`data_path: event_loop`) could not be set up.
    #[error("cannot start the data plane's loop: {0}")]
    DataPlane(std::io::Error),
}

/// A bound proxy, ready to serve. Admin and reload code get what they need from
/// [`Proxy::pools`] and [`Proxy::config`] before calling [`Proxy::serve`].
pub struct Proxy {
    listener: TcpListener,
    config: Arc<ArcSwap<Config>>,
    pools: Arc<Pools>,
    cancels: CancelRegistry,
    phase: PhaseControl,
    counters: Arc<ProxyCounters>,
    users: Option<Arc<SharedAuthFile>>,
    /// The data planes and the `Poll`s their loops will wait on (`data_path: event_loop`).
    planes: Option<Vec<(DataPlane, mio::Poll)>>,
}

/// The data planes a config asks for: transaction mode with `data_path: event_loop`, one
/// per `worker_threads`.
fn data_planes(config: &Config) -> Result<Option<Vec<(DataPlane, mio::Poll)>>, RunError> {
    if config.data_path != DataPath::EventLoop || config.mode != PoolMode::Transaction {
        return Ok(None);
    }
    (0..config.worker_threads.max(1) as usize)
        .map(DataPlane::new)
        .collect::<std::io::Result<Vec<_>>>()
        .map(Some)
        .map_err(RunError::DataPlane)
}

/// The plane new server connections are registered with (loop 0's; a checkout on another
/// loop moves its connection there).
fn handle(planes: &Option<Vec<(DataPlane, mio::Poll)>>) -> Option<DataPlane> {
    planes.as_ref().map(|p| p[0].0.clone())
}

impl Proxy {
    /// Build the pools and bind `config.listen`.
    pub async fn bind(config: Config) -> Result<Self, RunError> {
        Self::bind_with_observer(config, None).await
    }

    /// As [`Proxy::bind`], with a metrics observer factory (by database name).
    pub async fn bind_with_observer(
        config: Config,
        observer: Option<ObserverFactory>,
    ) -> Result<Self, RunError> {
        let planes = data_planes(&config)?;
        let pools = Arc::new(Pools::new(&config, observer, handle(&planes))?);
        Self::bind_pools(config, pools, planes).await
    }

    /// As [`Proxy::bind`], with pools that report to `metrics` (see [`Pools::with_metrics`]).
    pub async fn bind_with_metrics(
        config: Config,
        metrics: crate::metrics::Metrics,
    ) -> Result<Self, RunError> {
        let planes = data_planes(&config)?;
        let pools = Arc::new(Pools::with_metrics(&config, metrics, handle(&planes))?);
        Self::bind_pools(config, pools, planes).await
    }

    async fn bind_pools(
        config: Config,
        pools: Arc<Pools>,
        planes: Option<Vec<(DataPlane, mio::Poll)>>,
    ) -> Result<Self, RunError> {
        let users = match (&config.clients.auth, &config.clients.auth_file) {
            (ClientAuth::Trust, _) | (_, None) => None,
            (_, Some(path)) => Some(Arc::new(SharedAuthFile::load(path)?)),
        };
        let listener = TcpListener::bind(config.listen)
            .await
            .map_err(|source| RunError::Bind {
                addr: config.listen,
                source,
            })?;
        defer_accept(&listener);
        Ok(Self {
            listener,
            config: Arc::new(ArcSwap::from_pointee(config)),
            pools,
            cancels: CancelRegistry::default(),
            phase: PhaseControl::new(),
            counters: Arc::default(),
            users,
            planes,
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Connected clients and transactions served (for metrics).
    pub fn counters(&self) -> Arc<ProxyCounters> {
        self.counters.clone()
    }

    /// The pools (for the admin API and reloads).
    pub fn pools(&self) -> Arc<Pools> {
        self.pools.clone()
    }

    /// The live config; a reload validates, calls `pools().apply(&new)`, then stores it here.
    pub fn config(&self) -> Arc<ArcSwap<Config>> {
        self.config.clone()
    }

    /// Serve clients until `shutdown` completes; then stop accepting, let running
    /// transactions finish for up to `shutdown_timeout`, close everyone with FATAL 57P01 and
    /// close the pools.
    pub async fn serve(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), RunError> {
        let Proxy {
            listener,
            config,
            pools,
            cancels,
            phase,
            counters,
            users,
            planes,
        } = self;
        let event_loop = match planes {
            Some(planes) => Some(Arc::new(
                Loops::start(planes, phase.source()).map_err(RunError::DataPlane)?,
            )),
            None => None,
        };
        let max_clients = config.load().clients.max_connections as usize;
        let limit = Arc::new(Semaphore::new(max_clients));
        let ctx = Arc::new(Ctx {
            config: config.clone(),
            pools: pools.clone(),
            cancels,
            phase: phase.source(),
            counters,
            users,
            event_loop: event_loop.clone(),
        });
        // Sessions are counted, not joined one by one: a tracker costs an atomic per session
        // where a JoinSet kept a list and was polled at every accept.
        let sessions = TaskTracker::new();
        tracing::info!(listen = %listener.local_addr().map(|a| a.to_string()).unwrap_or_default(), "accepting clients");
        // The shutdown future (signal streams) is awaited by a task of its own; the accept
        // loop only looks at a oneshot, so an accept does not poll the signal handlers.
        let (stop_tx, mut stop_rx) = tokio::sync::oneshot::channel::<()>();
        let stop_task = tokio::spawn(async move {
            shutdown.await;
            let _ = stop_tx.send(());
        });
        let listener = match &event_loop {
            // The loops accept, and log clients in, themselves.
            Some(l) => {
                l.listen(Listening {
                    listener: listener.into_std().map_err(RunError::DataPlane)?,
                    ctx: ctx.clone(),
                    limit: limit.clone(),
                    sessions: sessions.clone(),
                });
                let _ = (&mut stop_rx).await;
                None
            }
            None => Some(listener),
        };
        if let Some(listener) = &listener {
            loop {
                tokio::select! {
                    biased;
                    _ = &mut stop_rx => break,
                    accepted = listener.accept() => {
                        let (sock, _peer) = match accepted {
                            Ok(a) => a,
                            Err(e) => {
                                tracing::warn!(error = %e, "accept failed");
                                tokio::time::sleep(Duration::from_millis(50)).await;
                                continue;
                            }
                        };
                        match limit.clone().try_acquire_owned() {
                            Ok(permit) => {
                                let keep = Keep::new(permit, sessions.token());
                                // The session's future is large (every state of a login and
                                // a relay); boxed, the task the runtime moves about is small.
                                sessions.spawn(Box::pin(login::serve(sock, ctx.clone(), keep)));
                            }
                            Err(_) => {
                                let timeout = config.load().clients.startup_timeout.get();
                                tokio::spawn(too_many_clients(sock, timeout));
                            }
                        }
                    }
                }
            }
        }
        stop_task.abort();
        sessions.close();
        drop(listener);
        let grace = config.load().shutdown_timeout.get();
        tracing::info!(
            clients = sessions.len(),
            grace_secs = grace.as_secs_f64(),
            "shutting down: draining"
        );
        phase.set(Phase::Draining);
        let drained = tokio::time::timeout(grace, sessions.wait()).await;
        if drained.is_err() {
            tracing::warn!(
                clients = sessions.len(),
                "grace period over: closing the remaining clients"
            );
            phase.set(Phase::Forced);
            // Forced sessions close at once; one stuck past this is dropped with the runtime
            // when the process exits.
            if tokio::time::timeout(Duration::from_secs(5), sessions.wait())
                .await
                .is_err()
            {
                tracing::warn!(
                    clients = sessions.len(),
                    "sessions still open after the forced close; stopping anyway"
                );
            }
        }
        if let Some(l) = &event_loop {
            l.stop();
        }
        pools.shut_down();
        // Let the goodbyes to the server go out.
        tokio::time::sleep(Duration::from_millis(100)).await;
        tracing::info!("stopped");
        Ok(())
    }
}

/// Over `clients.max_connections`: read the startup packet, answer 53300, close.
pub(super) async fn too_many_clients<S: AsyncRead + AsyncWrite + Unpin>(
    mut sock: S,
    timeout: Duration,
) {
    tracing::warn!("refusing a client: too many clients");
    if let Ok(Ok(Startup::Login { .. })) =
        tokio::time::timeout(timeout, startup::read_startup(&mut sock)).await
    {
        let r = Refusal {
            code: sqlstate::TOO_MANY_CONNECTIONS,
            message: "sorry, too many clients already".into(),
        };
        let _ = sock.write_all(&startup::fatal(&r)).await;
    }
    let _ = sock.shutdown().await;
}

/// Wait for SIGTERM or SIGINT.
pub async fn termination_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_client_listener_waits_for_a_clients_first_bytes() {
        let config = Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            data_path: DataPath::Tasks,
            ..Config::default()
        };
        let proxy = Proxy::bind(config).await.unwrap();
        assert_eq!(
            poolwarden_sockopt::tcp_defer_accept(&proxy.listener).unwrap(),
            DEFER_ACCEPT_SECS
        );
    }
}
