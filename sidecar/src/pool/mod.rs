//! QueuePool: at most pool_size + max_overflow server connections, a FIFO queue of clients
//! that wait at most pool_timeout, overflow connections closed on return, pre-ping, recycle
//! by age, live resize. The bookkeeping is pure ([`state`]); this file adds the async
//! waiting and the calls to the [`Manager`] that opens, pings and closes connections.
//!
//! ```text
//!  checkout ─▶ State::begin_checkout ─┬─ Idle ─▶ recycle? pre-ping? ─▶ Checkout
//!                                     ├─ Open ─▶ Manager::connect ──▶ Checkout
//!                                     └─ Wait ─▶ (FIFO, ≤ pool_timeout) ─▶ Grant ─▶ …
//!  Checkout::release ─▶ State::check_in ─▶ next waiter | idle | close (overflow, recycle…)
//! ```

mod observer;
pub mod queue;
pub mod state;
#[cfg(test)]
mod tests;

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

pub use observer::{CloseReason, Counters, CountersSnapshot, PoolObserver};
pub use queue::{Answer, Refused, Ticket};
pub use state::{
    Entry, Grant, PRE_PING_FRESH, PRE_PING_TRUST, PoolSettings, PoolStats, State, Step,
    needs_round_trip,
};

/// Opens, checks and closes the pooled connections.
pub trait Manager: Send + Sync + 'static {
    /// The connection type.
    type Conn: Send + 'static;
    /// A failure to open one.
    type Error: std::fmt::Display + Send + 'static;
    /// Open a connection; `application_name` is the requesting client's.
    fn connect(
        &self,
        application_name: &str,
    ) -> impl Future<Output = Result<Self::Conn, Self::Error>> + Send;
    /// Whether a failed [`connect`](Self::connect) was a real attempt (counted in
    /// `connect_errors`); `false` for a refusal without any attempt (an open breaker).
    fn attempted(_error: &Self::Error) -> bool {
        true
    }
    /// Whether an idle connection is still alive (a round trip).
    fn ping(&self, conn: &mut Self::Conn) -> impl Future<Output = bool> + Send;
    /// Whether an idle connection's socket shows no sign of trouble without a round trip:
    /// nothing arrived on it and it is not closed ([`unread`](Self::unread) covers what was
    /// already read). The default, `false`, makes every pre-ping past [`PRE_PING_FRESH`] a
    /// round trip.
    fn quiet(&self, _conn: &mut Self::Conn) -> bool {
        false
    }
    /// Whether bytes from the server already sit unread in the connection's own buffer (no
    /// system call; looked at even for a connection that answered a moment ago, which
    /// [`quiet`](Self::quiet) is not asked about).
    fn unread(&self, _conn: &Self::Conn) -> bool {
        false
    }
    /// The data plane loop a connection's socket is registered with, if any (a checkout
    /// from that loop prefers it: [`Pool::begin_near`]).
    fn home(&self, _conn: &Self::Conn) -> Option<usize> {
        None
    }
    /// Close a connection (may spawn the goodbye).
    fn close(&self, conn: Self::Conn, reason: CloseReason);
}

/// Why a checkout failed.
#[derive(Debug, thiserror::Error)]
pub enum CheckoutError<E: std::fmt::Display> {
    /// Waited pool_timeout; the message is the exact QueuePool text.
    #[error("{0}")]
    Timeout(String),
    /// Opening a new connection failed.
    #[error("{0}")]
    Connect(E),
    /// The pool is shut down.
    #[error("the pool is shut down")]
    Closed,
}

struct Shared<M: Manager> {
    manager: M,
    state: Mutex<State<M::Conn>>,
    counters: Counters,
    observer: Option<Arc<dyn PoolObserver>>,
    /// Wakes the queue's timer ([`time_out_waiters`]) when the earliest deadline moved, or
    /// when the pool is gone.
    timer: Arc<Notify>,
    /// The queue's timer task was started (at the first wait).
    timer_started: AtomicBool,
}

impl<M: Manager> Drop for Shared<M> {
    fn drop(&mut self) {
        // The timer holds the pool weakly: wake it to see the pool gone and end.
        self.timer.notify_one();
    }
}

/// The queue's one timer: times out the waiters whose pool_timeout passed, then sleeps until
/// the earliest deadline left (or until a waiter with an earlier one arrives). Ends when the
/// pool is dropped.
async fn time_out_waiters<M: Manager>(shared: Weak<Shared<M>>, wake: Arc<Notify>) {
    loop {
        let next = match shared.upgrade() {
            Some(s) => s.lock().expire(Instant::now()),
            None => return,
        };
        match next {
            Some(at) => {
                tokio::select! {
                    () = tokio::time::sleep_until(at) => {}
                    () = wake.notified() => {}
                }
            }
            None => wake.notified().await,
        }
    }
}

/// A QueuePool. Cheap to clone.
pub struct Pool<M: Manager> {
    shared: Arc<Shared<M>>,
}

impl<M: Manager> Clone for Pool<M> {
    fn clone(&self) -> Self {
        Self {
            shared: self.shared.clone(),
        }
    }
}

impl<M: Manager> Shared<M> {
    fn lock(&self) -> MutexGuard<'_, State<M::Conn>> {
        // The lock is never held across an await or a panic-prone call; recover anyway.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn close_all(&self, list: Vec<(M::Conn, CloseReason)>) {
        for (conn, reason) in list {
            self.closed(reason);
            self.manager.close(conn, reason);
        }
    }

    fn closed(&self, reason: CloseReason) {
        self.counters.closed(reason);
        if let Some(o) = &self.observer {
            o.closed(reason);
        }
    }

    fn release_slot(&self) {
        self.lock().release_slot();
    }
}

impl<M: Manager> Pool<M> {
    /// A pool with no connections yet.
    pub fn new(
        manager: M,
        settings: PoolSettings,
        observer: Option<Arc<dyn PoolObserver>>,
    ) -> Self {
        Self {
            shared: Arc::new(Shared {
                manager,
                state: Mutex::new(State::new(settings)),
                counters: Counters::default(),
                observer,
                timer: Arc::new(Notify::new()),
                timer_started: AtomicBool::new(false),
            }),
        }
    }

    /// The manager.
    pub fn manager(&self) -> &M {
        &self.shared.manager
    }

    /// Snapshot of the accounting.
    pub fn stats(&self) -> PoolStats {
        self.shared.lock().stats()
    }

    /// Current settings.
    pub fn settings(&self) -> PoolSettings {
        self.shared.lock().settings().clone()
    }

    /// Running totals.
    pub fn counters(&self) -> CountersSnapshot {
        self.shared.counters.snapshot()
    }

    /// Apply new settings live (see [`State::resize`]).
    pub fn resize(&self, settings: PoolSettings) {
        let close = self.shared.lock().resize(settings);
        self.shared.close_all(close);
    }

    /// Refuse new checkouts and close the idle connections; checked-out ones close as they
    /// come back.
    pub fn shut_down(&self) {
        let close = self.shared.lock().shut_down();
        self.shared.close_all(close);
    }

    /// Get a connection: waits in FIFO order for at most pool_timeout.
    pub async fn checkout(
        &self,
        application_name: &str,
    ) -> Result<Checkout<M>, CheckoutError<M::Error>> {
        // An idle connection that needs no check goes out without the second part's future.
        match self.ready(self.begin()) {
            Ok(c) => Ok(c),
            Err(begun) => self.finish(begun, application_name).await,
        }
    }

    /// The first part of a checkout, without waiting: one lock, which gives an idle
    /// connection, a slot to open one in, or a place in the queue. [`Pool::ready`] takes an
    /// idle connection that needs no check; [`Pool::finish`] does the rest.
    pub fn begin(&self) -> Begun<M> {
        self.begin_preferring(None, Instant::now())
    }

    /// [`begin`](Pool::begin) from the data plane loop `home`: of the idle connections, one
    /// registered with that loop ([`Manager::home`]) goes first, so that it need not move
    /// (unless `server_round_robin` asks for the one idle longest). `now`: the loop's clock
    /// reading for the events it handles (the checkout's start: its wait, and the
    /// connection's idle time and age, count from it).
    pub fn begin_near(&self, home: usize, now: Instant) -> Begun<M> {
        self.begin_preferring(Some(home), now)
    }

    fn begin_preferring(&self, home: Option<usize>, start: Instant) -> Begun<M> {
        // One lock: the step and the settings it is taken under. The clock is read again only
        // after a wait: `start` serves for the wait and the connection's idle time and age.
        let (step, pool_recycle, pre_ping) = {
            let mut state = self.shared.lock();
            let manager = &self.shared.manager;
            let step = match home {
                None => state.begin_checkout(start),
                Some(h) => state.begin_checkout_preferring(start, |c| manager.home(c) == Some(h)),
            };
            let s = state.settings();
            (step, s.pool_recycle, s.pre_ping)
        };
        let step = match step {
            Step::Closed => Begin::Closed,
            Step::Idle(e) => Begin::Granted(self.granted(Some(e), start, Duration::ZERO)),
            Step::Open => Begin::Granted(self.granted(None, start, Duration::ZERO)),
            Step::Wait {
                ticket,
                new_deadline,
            } => {
                if new_deadline {
                    self.start_timer();
                    self.shared.timer.notify_one();
                }
                Begin::Wait(Waiting {
                    pool: self.clone(),
                    ticket: Some(ticket),
                })
            }
        };
        Begun {
            step,
            start,
            pool_recycle,
            pre_ping,
            verdict: None,
        }
    }

    /// The checkout, if [`begin`](Pool::begin) gave an idle connection that can be handed
    /// out without any I/O: not due for recycling, and no pre-ping round trip needed (looked
    /// at as [`needs_round_trip`] says). Otherwise the begun checkout back, for
    /// [`finish`](Pool::finish).
    pub fn ready(&self, mut begun: Begun<M>) -> Result<Checkout<M>, Begun<M>> {
        let Begin::Granted(guard) = &mut begun.step else {
            return Err(begun);
        };
        let Some(e) = guard.entry.as_mut() else {
            return Err(begun);
        };
        let verdict = self.verdict(e, begun.start, begun.pool_recycle, begun.pre_ping);
        if verdict != Verdict::Fresh {
            // `finish` acts on it without looking at the connection again.
            begun.verdict = Some(verdict);
            return Err(begun);
        }
        match std::mem::replace(&mut begun.step, Begin::Closed) {
            Begin::Granted(guard) => Ok(guard),
            _ => unreachable!("matched above"),
        }
    }

    /// Whether an idle connection handed out at `now` can go as it is, is due for
    /// recycling, or needs a pre-ping round trip (looked at as [`needs_round_trip`] says:
    /// its socket only when that depends on it).
    fn verdict(
        &self,
        e: &mut Entry<M::Conn>,
        now: Instant,
        pool_recycle: Duration,
        pre_ping: bool,
    ) -> Verdict {
        if e.recycle_due(now, pool_recycle) {
            return Verdict::Recycle;
        }
        let manager = &self.shared.manager;
        let idle_for = now.saturating_duration_since(e.returned);
        if needs_round_trip(pre_ping, idle_for, manager.unread(&e.conn), || {
            manager.quiet(&mut e.conn)
        }) {
            Verdict::Ping
        } else {
            Verdict::Fresh
        }
    }

    /// Wait for a begun checkout's turn (at most pool_timeout), recycle or pre-ping an idle
    /// connection, open a new one when needed.
    pub async fn finish(
        &self,
        begun: Begun<M>,
        application_name: &str,
    ) -> Result<Checkout<M>, CheckoutError<M::Error>> {
        let Begun {
            step,
            start,
            pool_recycle,
            pre_ping,
            verdict,
        } = begun;
        // From here a slot is ours; the guard gives it back if we fail or are dropped.
        let (mut guard, verdict) = match step {
            Begin::Closed => return Err(CheckoutError::Closed),
            Begin::Granted(guard) => (guard, verdict),
            Begin::Wait(waiting) => {
                let grant = self.wait(waiting).await?;
                let now = Instant::now();
                let entry = match grant {
                    Grant::Conn(e) => Some(e),
                    Grant::Slot => None,
                };
                let guard = self.granted(entry, now, now.saturating_duration_since(start));
                (guard, None)
            }
        };
        if let Some(mut e) = guard.entry.take() {
            let verdict =
                verdict.unwrap_or_else(|| self.verdict(&mut e, guard.at, pool_recycle, pre_ping));
            match verdict {
                Verdict::Recycle => {
                    self.shared.closed(CloseReason::Recycle);
                    self.shared.manager.close(e.conn, CloseReason::Recycle);
                }
                Verdict::Ping if !self.shared.manager.ping(&mut e.conn).await => {
                    tracing::info!("pre-ping found a dead server connection; replacing it");
                    self.shared.closed(CloseReason::PrePing);
                    self.shared.manager.close(e.conn, CloseReason::PrePing);
                }
                Verdict::Ping | Verdict::Fresh => {
                    guard.entry = Some(e);
                    return Ok(guard);
                }
            }
        }
        match self.shared.manager.connect(application_name).await {
            Ok(conn) => {
                self.shared.counters.opened();
                if let Some(o) = &self.shared.observer {
                    o.opened();
                }
                guard.at = Instant::now();
                guard.entry = Some(Entry::new(conn, guard.at));
                Ok(guard)
            }
            Err(e) => {
                if M::attempted(&e) {
                    self.shared.counters.connect_error();
                    if let Some(o) = &self.shared.observer {
                        o.connect_error();
                    }
                }
                Err(CheckoutError::Connect(e))
            }
        }
    }

    /// A slot (and maybe a connection) granted at `at` after waiting `wait`: counted, and
    /// held by the guard that gives it back.
    fn granted(&self, entry: Option<Entry<M::Conn>>, at: Instant, wait: Duration) -> Checkout<M> {
        self.shared.counters.waited(wait);
        if let Some(o) = &self.shared.observer {
            o.waited(wait);
        }
        Checkout {
            pool: self.clone(),
            entry,
            settled: false,
            at,
        }
    }

    async fn wait(
        &self,
        mut waiting: Waiting<M>,
    ) -> Result<Grant<M::Conn>, CheckoutError<M::Error>> {
        let ticket = waiting.ticket.expect("a new place in the queue");
        let answer =
            std::future::poll_fn(
                |cx| match self.shared.lock().poll_answer(ticket, cx.waker()) {
                    Some(a) => std::task::Poll::Ready(a),
                    None => std::task::Poll::Pending,
                },
            )
            .await;
        // The place is given up with the answer: nothing to leave any more.
        waiting.ticket = None;
        match answer {
            Ok(grant) => Ok(grant),
            Err(Refused::TimedOut) => {
                self.shared.counters.timed_out();
                if let Some(o) = &self.shared.observer {
                    o.timed_out();
                }
                Err(CheckoutError::Timeout(self.settings().timeout_message()))
            }
            Err(Refused::Closed) => Err(CheckoutError::Closed),
        }
    }

    /// Start the queue's timer task, once.
    fn start_timer(&self) {
        let started = &self.shared.timer_started;
        if !started.load(Ordering::Acquire) && !started.swap(true, Ordering::AcqRel) {
            tokio::spawn(time_out_waiters(
                Arc::downgrade(&self.shared),
                self.shared.timer.clone(),
            ));
        }
    }
}

/// A checkout begun ([`Pool::begin`]): what the pool gave, held so that dropping it gives
/// back the slot, the connection or the place in the queue.
pub struct Begun<M: Manager> {
    step: Begin<M>,
    /// When the checkout began (the clock read under the lock).
    start: Instant,
    pool_recycle: Duration,
    pre_ping: bool,
    /// What [`Pool::ready`] found about the idle connection, if it looked.
    verdict: Option<Verdict>,
}

/// What an idle connection needs before it is handed out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Verdict {
    Fresh,
    Recycle,
    Ping,
}

enum Begin<M: Manager> {
    Closed,
    /// A slot, with the idle connection given if there was one.
    Granted(Checkout<M>),
    /// A place in the queue.
    Wait(Waiting<M>),
}

/// A place in the queue; leaving it early (the client went away) gives back anything that
/// was already granted.
struct Waiting<M: Manager> {
    pool: Pool<M>,
    /// Until the answer is taken.
    ticket: Option<Ticket>,
}

impl<M: Manager> Drop for Waiting<M> {
    fn drop(&mut self) {
        let Some(ticket) = self.ticket.take() else {
            return;
        };
        let close = self.pool.shared.lock().leave(ticket, Instant::now());
        self.pool.shared.close_all(close);
    }
}

/// A checked-out connection. Give it back with [`Checkout::release`]; dropping it closes
/// the connection (its state is unknown).
pub struct Checkout<M: Manager> {
    pool: Pool<M>,
    entry: Option<Entry<M::Conn>>,
    settled: bool,
    /// When the connection was handed out (the clock the checkout read last).
    at: Instant,
}

impl<M: Manager> Checkout<M> {
    /// The connection.
    pub fn conn(&mut self) -> &mut M::Conn {
        &mut self
            .entry
            .as_mut()
            .expect("a checkout holds a connection")
            .conn
    }

    /// When the connection was opened.
    pub fn created(&self) -> Instant {
        self.entry
            .as_ref()
            .map(|e| e.created)
            .unwrap_or_else(Instant::now)
    }

    /// When the connection was handed out, as the checkout read the clock (a caller that
    /// times what it does next starts from here instead of reading the clock again).
    pub fn handed_out_at(&self) -> Instant {
        self.at
    }

    /// Give the connection back: reused if `healthy`, closed otherwise.
    pub fn release(self, healthy: bool) {
        self.release_at(healthy, Instant::now());
    }

    /// [`release`](Self::release) with the time the server last answered on the connection
    /// (`answered`, at most now; the caller read the clock then), so the pool does not read
    /// the clock again. The connection's idle time, which decides its pre-ping, counts from
    /// then.
    pub fn release_at(mut self, healthy: bool, answered: Instant) {
        self.settled = true;
        if let Some(e) = self.entry.take() {
            let close = self.pool.shared.lock().check_in(e, healthy, answered);
            self.pool.shared.close_all(close);
        }
    }

    /// Close the connection for `reason` and free its slot.
    pub fn discard(mut self, reason: CloseReason) {
        self.settled = true;
        if let Some(e) = self.entry.take() {
            self.pool.shared.closed(reason);
            self.pool.shared.manager.close(e.conn, reason);
            self.pool.shared.release_slot();
        }
    }
}

impl<M: Manager> Drop for Checkout<M> {
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        match self.entry.take() {
            Some(e) => {
                self.pool.shared.closed(CloseReason::Error);
                self.pool.shared.manager.close(e.conn, CloseReason::Error);
                self.pool.shared.release_slot();
            }
            // A slot taken for a connection that never came (connect failed or dropped).
            None => self.pool.shared.release_slot(),
        }
    }
}
