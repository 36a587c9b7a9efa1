//! One logged-in client's session: the greeting, then the transaction-mode or session-mode
//! loop (the way in is [`super::login`]).

use std::future::{Future, poll_fn};
use std::pin::pin;
use std::sync::Arc;
use std::task::{Poll, ready};
use std::time::Duration;

use arc_swap::{ArcSwap, Cache};
use bytes::BytesMut;

use super::boundaries::{Boundaries, QueryTimer};
use super::cancel::{CancelHandle, CancelRegistry};
use super::counters::{ClientGuard, ProxyCounters};
use super::event_loop::Loops;
use super::login::Keep;
use super::phase::{Phase, PhaseSource, PhaseWatch};
use super::pools::{Pools, ServerManager};
use super::relay::{ClientIo, Outcome, Relaying, relay};
use super::startup::{self, Login, Refusal};
use crate::auth::SharedAuthFile;
use crate::config::{Config, PoolMode};
use crate::pool::{Checkout, CheckoutError, CloseReason};
use crate::prepared::Tracking;
use crate::protocol::build::{self, Severity};
use crate::protocol::frame::Frame;
use crate::protocol::io::ReadError;
use crate::protocol::sqlstate;
use crate::server::{ConnectError, ServerConn};

/// The live config, cached per session ([`Session::config`]).
pub(super) type LiveConfig = Cache<Arc<ArcSwap<Config>>, Arc<Config>>;

/// What every session shares.
pub struct Ctx {
    /// The live config.
    pub config: Arc<ArcSwap<Config>>,
    /// The pools.
    pub pools: Arc<Pools>,
    /// Cancel keys.
    pub cancels: CancelRegistry,
    /// Life cycle.
    pub phase: PhaseSource,
    /// Proxy-wide counters.
    pub counters: Arc<ProxyCounters>,
    /// The client users file (scram-sha-256 / md5), if configured.
    pub users: Option<Arc<SharedAuthFile>>,
    /// The data plane's loops (`data_path: event_loop`), which relay transaction-mode
    /// sessions between transactions' checkouts and releases.
    pub event_loop: Option<Arc<Loops>>,
}

const SHUTDOWN_MESSAGE: &str = "terminating connection due to administrator command";

/// A logged-in client: what its task, or the data plane's loop, holds between transactions.
pub struct Session {
    pub(super) client: ClientIo,
    pub(super) login: Login,
    pub(super) ctx: Arc<Ctx>,
    mode: PoolMode,
    pub(super) idle_in_transaction: Duration,
    /// The live config as of this session's last transaction: read again only when a reload
    /// replaced it (a pointer compare), where a full `load` cost about 100 instructions per
    /// transaction (2 % of a `-S` one). An idle session keeps the config it last read until
    /// its next transaction.
    config: LiveConfig,
    phase: PhaseWatch,
    /// Transaction mode with `max_prepared_statements` > 0: the client's named statements.
    pub(super) prepared: Option<Tracking>,
    /// Kept between transactions (see [`Boundaries::with_query_timer`]).
    query_timer: Option<Box<QueryTimer>>,
    /// The client's cancel key, and the backend it reaches.
    pub(super) cancel: CancelHandle,
    /// Counted as connected (proxy-wide and per database) from the greeting on.
    connected: Option<(ClientGuard, DbClient)>,
    _keep: Keep,
}

pub(super) enum Next {
    Continue,
    Stop,
}

/// Where a session the data plane's loop hands back to tokio picks up.
pub(super) enum Resume {
    /// The first message of a transaction and the loop's checkout for it: refused, or a
    /// connection that needs SETs first or is not on the loop (TLS).
    Checkout {
        first: Frame,
        result: Result<Checkout<ServerManager>, CheckoutError<ConnectError>>,
    },
    /// A relay the loop ended (already counted): `pending` goes to the client first.
    Settle {
        c: Checkout<ServerManager>,
        b: Boundaries,
        outcome: Outcome,
        pending: BytesMut,
    },
    /// A message between transactions that ends the session with a FATAL.
    Fatal { code: &'static str, message: String },
    /// The proxy drains or is forced down, between transactions.
    Shutdown,
}

impl Session {
    #[inline]
    pub(super) fn new(
        client: ClientIo,
        login: Login,
        ctx: Arc<Ctx>,
        mut live: LiveConfig,
        keep: Keep,
    ) -> Self {
        let config = live.load();
        let mode = config.mode;
        let idle_in_transaction = config.pool.idle_in_transaction().get();
        let prepared = if mode == PoolMode::Transaction {
            Tracking::new(config.pool.max_prepared_statements)
        } else {
            None
        };
        Self {
            client,
            cancel: ctx.cancels.register(),
            connected: None,
            _keep: keep,
            login,
            phase: ctx.phase.watch(),
            mode,
            idle_in_transaction,
            prepared,
            query_timer: None,
            config: live,
            ctx,
        }
    }

    async fn fatal(&mut self, code: &str, message: &str) {
        let _ = self
            .client
            .send(&build::error(Severity::Fatal, code, message))
            .await;
    }

    pub(super) async fn run(mut self: Box<Self>) {
        match self.greet().await {
            Some(None) => self.transactions(None).await,
            Some(Some(held)) => self.hold_session(held).await,
            None => {}
        }
    }

    /// The greeting, after the server parameters are known (and, in session mode, the
    /// session's server connection is checked out: it comes back). `None` when the session
    /// ended (a FATAL was sent, or the client left).
    pub(super) async fn greet(&mut self) -> Option<Option<Checkout<ServerManager>>> {
        let params = match startup::server_params(&self.login).await {
            Ok(p) => p,
            Err(r) => {
                self.fatal(r.code, &r.message).await;
                return None;
            }
        };
        // Session mode: the server connection is held from login to logout.
        let held = if self.mode == PoolMode::Session {
            match self
                .login
                .db
                .pool
                .checkout(self.login.application_name())
                .await
            {
                Ok(c) => Some(c),
                Err(e) => {
                    let r = startup::checkout_refusal(e);
                    self.fatal(r.code, &r.message).await;
                    return None;
                }
            }
        } else {
            None
        };
        self.client
            .send(&startup::greeting(&self.login, &params, &self.cancel))
            .await
            .ok()?;
        tracing::debug!(database = %self.login.db.config.name, "client logged in");
        self.connected = Some((
            self.ctx.counters.client_connected(),
            DbClient::new(self.login.db.metrics.clone()),
        ));
        Some(held)
    }

    /// Session mode: relay with the session's connection until the client leaves.
    pub(super) async fn hold_session(mut self: Box<Self>, mut c: Checkout<ServerManager>) {
        if let Some(sql) = self.resync_sql(c.conn())
            && let Err(e) = c.conn().simple_query(&sql).await
        {
            tracing::warn!(error = %e, "cannot prepare a server connection");
            c.discard(CloseReason::Error);
            return self
                .fatal(sqlstate::CONNECTION_FAILURE, "server connection failed")
                .await;
        }
        self.cancel.set(Some(c.conn().cancel.clone()));
        self.hold(c, None).await;
        self.client.close();
    }

    /// Transaction mode, from `resume` (where the data plane's loop handed the session
    /// back) or from the wait for a transaction's first message, until the session ends or
    /// the loop takes it again.
    pub(super) async fn transactions(mut self: Box<Self>, mut resume: Option<Resume>) {
        loop {
            let next = match resume.take() {
                Some(r) => self.resume(r).await,
                None => 'transaction: {
                    if let Some(loops) = &self.ctx.event_loop
                        && let Some(client) = self.client.loop_socket()
                    {
                        let home = loops.home(client).clone();
                        return home.enter(self);
                    }
                    // The common path, awaited here and not in a helper: the relay's future
                    // is polled at every socket event, through every future that awaits it.
                    let Some(first) = self.first_message().await else {
                        break 'transaction Next::Stop;
                    };
                    let Some(checkout) = self.checkout_while_connected().await else {
                        tracing::debug!("client left while waiting for a server connection");
                        break 'transaction Next::Stop;
                    };
                    let mut c = match checkout {
                        Ok(c) => c,
                        Err(e) => break 'transaction self.refused(first, e).await,
                    };
                    // No SETs needed (the usual case): no future built for them.
                    let at = match self.resync_sql(c.conn()) {
                        None => c.handed_out_at(),
                        Some(sql) => match self.prepare(c, &sql).await {
                            Some((prepared, at)) => {
                                c = prepared;
                                at
                            }
                            None => break 'transaction Next::Stop,
                        },
                    };
                    self.cancel.set(Some(c.conn().cancel.clone()));
                    let next = self.hold(c, Some((first, at))).await;
                    self.cancel.set(None);
                    next
                }
            };
            if let Next::Stop = next {
                break;
            }
            if self.phase.get() >= Phase::Draining {
                self.fatal(sqlstate::ADMIN_SHUTDOWN, SHUTDOWN_MESSAGE).await;
                break;
            }
        }
        self.client.close();
    }

    /// Pick up where the data plane's loop left the session.
    async fn resume(&mut self, r: Resume) -> Next {
        match r {
            Resume::Checkout { first, result } => self.after_checkout(first, result).await,
            Resume::Settle {
                c,
                b,
                outcome,
                pending,
            } => {
                if !pending.is_empty() && self.client.send(&pending).await.is_err() {
                    let clean = b.is_clean();
                    let next = self.settle(c, &b, Outcome::ClientGone { clean }).await;
                    self.cancel.set(None);
                    return next;
                }
                let next = self.settle(c, &b, outcome).await;
                self.cancel.set(None);
                next
            }
            Resume::Fatal { code, message } => {
                self.fatal(code, &message).await;
                Next::Stop
            }
            Resume::Shutdown => {
                self.fatal(sqlstate::ADMIN_SHUTDOWN, SHUTDOWN_MESSAGE).await;
                Next::Stop
            }
        }
    }

    /// The first message of the next transaction; `None` when the session ends (the client
    /// left or sent Terminate, a FATAL was sent).
    async fn first_message(&mut self) -> Option<Frame> {
        // The client first: the phase is only looked at while it waits. Polled by hand:
        // no select of two futures made at every transaction.
        let first = poll_fn(|cx| {
            if let Poll::Ready(r) = self.client.poll_next(cx) {
                return Poll::Ready(Some(r));
            }
            self.phase.poll_reached(cx, Phase::Draining).map(|()| None)
        })
        .await;
        let Some(first) = first else {
            self.fatal(sqlstate::ADMIN_SHUTDOWN, SHUTDOWN_MESSAGE).await;
            return None;
        };
        match first {
            Ok(Some(f)) if f.tag == b'X' => None,
            Ok(Some(f)) => match between_transactions(&f) {
                Some((code, message)) => {
                    self.fatal(code, &message).await;
                    None
                }
                None => Some(f),
            },
            Ok(None) | Err(ReadError::Io(_)) => None,
            Err(ReadError::Frame(e)) => {
                self.fatal(
                    sqlstate::PROTOCOL_VIOLATION,
                    &format!("invalid frontend message: {e}"),
                )
                .await;
                None
            }
        }
    }

    /// A transaction whose checkout ended: relay with the connection, or refuse.
    async fn after_checkout(
        &mut self,
        first: Frame,
        checkout: Result<Checkout<ServerManager>, CheckoutError<ConnectError>>,
    ) -> Next {
        match checkout {
            Ok(c) => self.checked(first, c).await,
            Err(e) => self.refused(first, e).await,
        }
    }

    /// No connection for this transaction: a FATAL if the pool is shut down, otherwise the
    /// refusal as an ERROR (the client connection stays usable).
    async fn refused(&mut self, first: Frame, e: CheckoutError<ConnectError>) -> Next {
        if let CheckoutError::Closed = e {
            self.fatal(sqlstate::ADMIN_SHUTDOWN, SHUTDOWN_MESSAGE).await;
            return Next::Stop;
        }
        let r = startup::checkout_refusal(e);
        if r.code == sqlstate::TOO_MANY_CONNECTIONS {
            tracing::warn!(database = %self.login.db.config.name, "a client hit pool_timeout");
        }
        self.reject_transaction(first, r).await
    }

    /// A transaction with its connection: make the connection match this client, relay,
    /// give it back.
    async fn checked(&mut self, first: Frame, mut c: Checkout<ServerManager>) -> Next {
        let at = match self.resync_sql(c.conn()) {
            None => c.handed_out_at(),
            Some(sql) => match self.prepare(c, &sql).await {
                Some((prepared, at)) => {
                    c = prepared;
                    at
                }
                None => return Next::Stop,
            },
        };
        self.cancel.set(Some(c.conn().cancel.clone()));
        let next = self.hold(c, Some((first, at))).await;
        self.cancel.set(None);
        next
    }

    /// Make the connection match this client: run `sql`, the `SET`s of
    /// [`resync_sql`](Self::resync_sql). The connection and when the first query's timing
    /// starts (after the SETs), or `None` after a failure (the connection closed, the client
    /// sent a FATAL).
    async fn prepare(
        &mut self,
        mut c: Checkout<ServerManager>,
        sql: &str,
    ) -> Option<(Checkout<ServerManager>, tokio::time::Instant)> {
        if let Err(e) = c.conn().simple_query(sql).await {
            tracing::warn!(error = %e, "cannot prepare a server connection");
            c.discard(CloseReason::Error);
            self.fatal(sqlstate::CONNECTION_FAILURE, "server connection failed")
                .await;
            return None;
        }
        Some((c, tokio::time::Instant::now()))
    }

    /// Check out a server connection, giving up (`None`) if the client closes its socket
    /// while it waits, so a client that went away neither keeps its place in the queue nor
    /// takes a connection from the next one.
    async fn checkout_while_connected(
        &mut self,
    ) -> Option<Result<Checkout<ServerManager>, CheckoutError<ConnectError>>> {
        let Self { login, client, .. } = self;
        let mut checkout = pin!(login.db.pool.checkout(login.application_name()));
        let mut watch_eof = true;
        poll_fn(|cx| {
            // The checkout first: an idle connection is taken without looking at the client.
            if let Poll::Ready(r) = checkout.as_mut().poll(cx) {
                return Poll::Ready(Some(r));
            }
            if watch_eof {
                if ready!(client.poll_closed(cx)) {
                    return Poll::Ready(None);
                }
                // More messages are waiting: the client is there; stop watching.
                watch_eof = false;
            }
            Poll::Pending
        })
        .await
    }

    /// The `SET`s that make `server` match this client's application_name and
    /// client_encoding, `None` when it already does (the usual case: two comparisons, nothing
    /// built, and no async call made: callers run the SETs with `simple_query` only when
    /// there are some).
    #[inline]
    pub(super) fn resync_sql(&self, server: &ServerConn) -> Option<String> {
        let params = self.resync_params(server);
        if params.iter().all(|p| to_set(p).is_none()) {
            return None;
        }
        Some(resync_sets(&params))
    }

    /// The parameters a server connection must match: name, this client's value (if it
    /// set one), the server's.
    #[inline]
    fn resync_params<'a>(&'a self, server: &'a ServerConn) -> [ResyncParam<'a>; 2] {
        [
            (
                "application_name",
                Some(self.login.application_name()),
                server.application_name(),
            ),
            (
                "client_encoding",
                self.login.client_encoding(),
                server.client_encoding(),
            ),
        ]
    }

    /// Relay with a checked-out connection until the transaction (or session) ends, then
    /// give the connection back or close it.
    async fn hold(
        &mut self,
        mut c: Checkout<ServerManager>,
        first: Option<(Frame, tokio::time::Instant)>,
    ) -> Next {
        let mut b = self.boundaries();
        let outcome = relay(
            &mut self.client,
            c.conn(),
            first,
            &mut b,
            Relaying {
                session_mode: self.mode == PoolMode::Session,
                idle_in_transaction: self.idle_in_transaction,
            },
            &self.phase,
            self.prepared.as_mut(),
        )
        .await;
        self.account(&mut b);
        // A clean connection goes back without an async call (no future built).
        if let Outcome::Released = outcome
            && !b.dirty
        {
            c.release_at(true, b.answered.unwrap_or_else(tokio::time::Instant::now));
            return Next::Continue;
        }
        self.settle(c, &b, outcome).await
    }

    /// The boundaries of a relay about to start, with the session's query timer and the
    /// live config's slow-query threshold and prepared-statement limit.
    #[inline]
    pub(super) fn boundaries(&mut self) -> Boundaries {
        let (threshold, limit) = {
            let config = self.config.load();
            (
                config.slow_query_threshold.get(),
                config.pool.max_prepared_statements,
            )
        };
        if let Some(t) = &mut self.prepared {
            t.set_limit(limit);
        }
        let mut timer = self.query_timer.take().or_else(|| {
            let metrics = self.login.db.metrics.clone();
            metrics.map(|m| Box::new(QueryTimer::new(m, threshold)))
        });
        if let Some(t) = &mut timer {
            t.set_threshold(threshold);
        }
        Boundaries::new()
            .with_query_timer(timer)
            .with_tracked_statements(self.prepared.is_some())
    }

    /// Count what a relay served (transactions, prepared statements) and keep its query
    /// timer for the next one.
    #[inline]
    pub(super) fn account(&mut self, b: &mut Boundaries) {
        self.query_timer = b.take_query_timer();
        self.ctx.counters.add_transactions(b.completed);
        if let Some(m) = &self.login.db.metrics {
            for _ in 0..b.completed {
                m.transaction_served();
            }
            if let Some(t) = &mut self.prepared {
                m.prepared_statements(t.rewriter.take_stats());
            }
        }
    }

    /// Give the connection back, or close it, as a relay's outcome says.
    async fn settle(
        &mut self,
        mut c: Checkout<ServerManager>,
        b: &Boundaries,
        outcome: Outcome,
    ) -> Next {
        let session_mode = self.mode == PoolMode::Session;
        match outcome {
            // A clean connection goes back without an async call (no future built).
            Outcome::Released if !b.dirty => {
                c.release_at(true, b.answered.unwrap_or_else(tokio::time::Instant::now));
                Next::Continue
            }
            Outcome::Released => {
                give_back(c, b.dirty, b.answered).await;
                Next::Continue
            }
            Outcome::ClientGone { clean } => {
                if clean {
                    give_back(c, b.dirty || session_mode, b.answered).await;
                } else {
                    // Closing the server connection rolls the transaction back. A query still
                    // running is cancelled first: PostgreSQL would otherwise run it to the end
                    // (or to statement_timeout) before it noticed nobody listens.
                    if b.pending > 0 || b.open_extended {
                        let target = c.conn().cancel.clone();
                        tokio::spawn(async move {
                            let _ =
                                tokio::time::timeout(Duration::from_secs(5), target.cancel()).await;
                        });
                    }
                    tracing::info!(
                        "client left in the middle of a transaction; closing its server connection"
                    );
                    c.discard(CloseReason::Error);
                }
                Next::Stop
            }
            Outcome::ServerFailed(e) => {
                tracing::warn!(error = %e, "server connection failed during a transaction");
                c.discard(CloseReason::Error);
                self.fatal(sqlstate::CONNECTION_FAILURE, "server connection failed")
                    .await;
                Next::Stop
            }
            Outcome::IdleInTransaction => {
                tracing::info!("closing a client idle in a transaction for too long");
                c.discard(CloseReason::IdleInTransaction);
                self.fatal(
                    sqlstate::IDLE_IN_TRANSACTION_TIMEOUT,
                    "terminating connection due to idle-in-transaction timeout",
                )
                .await;
                Next::Stop
            }
            Outcome::Protocol(e) => {
                c.discard(CloseReason::Error);
                self.fatal(
                    sqlstate::PROTOCOL_VIOLATION,
                    &format!("invalid frontend message: {e}"),
                )
                .await;
                Next::Stop
            }
            Outcome::Shutdown { clean } => {
                if clean {
                    give_back(c, true, None).await;
                } else {
                    c.discard(CloseReason::Shutdown);
                }
                self.fatal(sqlstate::ADMIN_SHUTDOWN, SHUTDOWN_MESSAGE).await;
                Next::Stop
            }
        }
    }

    /// No server connection for this transaction: answer its first message with the error,
    /// skip to the end of the client's extended-protocol batch, and say ReadyForQuery. The
    /// client connection stays usable.
    async fn reject_transaction(&mut self, first: Frame, r: Refusal) -> Next {
        let mut out = build::error(Severity::Error, r.code, &r.message);
        let mut tag = first.tag;
        while tag != b'Q' && tag != b'S' {
            if self.client.send(&out).await.is_err() {
                return Next::Stop;
            }
            out.clear();
            match self.client.read().await {
                Ok(Some(f)) if f.tag == b'X' => return Next::Stop,
                Ok(Some(f)) => tag = f.tag,
                Ok(None) | Err(ReadError::Io(_)) => return Next::Stop,
                Err(ReadError::Frame(e)) => {
                    self.fatal(
                        sqlstate::PROTOCOL_VIOLATION,
                        &format!("invalid frontend message: {e}"),
                    )
                    .await;
                    return Next::Stop;
                }
            }
        }
        build::ready_for_query(&mut out, b'I');
        if self.client.send(&out).await.is_err() {
            Next::Stop
        } else {
            Next::Continue
        }
    }
}

/// A message that may not open a transaction: the FATAL that ends the session instead.
pub(super) fn between_transactions(f: &Frame) -> Option<(&'static str, String)> {
    (f.tag == b'p').then(|| {
        (
            sqlstate::PROTOCOL_VIOLATION,
            "unexpected password message".to_string(),
        )
    })
}

/// Return a connection to the pool, reset first if session state may have changed (`dirty`).
/// `DISCARD ALL` keeps statement_timeout: it was set as a startup option, which is what
/// `RESET` returns to. `answered`: when its server last answered, if the relay read the
/// clock then.
async fn give_back(
    mut c: Checkout<ServerManager>,
    dirty: bool,
    answered: Option<tokio::time::Instant>,
) {
    if dirty {
        let reset =
            tokio::time::timeout(Duration::from_secs(5), c.conn().simple_query("DISCARD ALL"))
                .await;
        if !matches!(reset, Ok(Ok(()))) {
            tracing::warn!("cannot reset a server connection; closing it");
            c.discard(CloseReason::Error);
            return;
        }
        // DISCARD ALL deallocated every prepared statement.
        c.conn().statements.clear();
        return c.release(true);
    }
    c.release_at(true, answered.unwrap_or_else(tokio::time::Instant::now));
}

/// Counts a client in its database's `poolwarden_client_connections` while it lives.
pub(super) struct DbClient(Option<crate::metrics::PoolMetrics>);

impl DbClient {
    fn new(metrics: Option<crate::metrics::PoolMetrics>) -> Self {
        if let Some(m) = &metrics {
            m.client_connected();
        }
        Self(metrics)
    }
}

impl Drop for DbClient {
    fn drop(&mut self) {
        if let Some(m) = &self.0 {
            m.client_disconnected();
        }
    }
}

/// A parameter of [`Session::resync_params`]: name, the client's value, the server's.
type ResyncParam<'a> = (&'static str, Option<&'a str>, &'a str);

/// The value to `SET`: the client's, when it set one and the server's differs.
#[inline]
fn to_set<'a>((_, want, current): &ResyncParam<'a>) -> Option<&'a str> {
    want.filter(|v| v != current)
}

/// The `SET`s for the parameters [`to_set`] gives a value for (built only when it gives one).
#[cold]
#[inline(never)]
fn resync_sets(params: &[ResyncParam<'_>]) -> String {
    let mut sets = String::new();
    for p in params {
        if let Some(v) = to_set(p) {
            sets.push_str(&format!("SET {} = '{}';", p.0, v.replace('\'', "''")));
        }
    }
    sets
}
