//! The pool's bookkeeping: pure, synchronous decisions over idle connections, the number
//! checked out and the FIFO of waiters. No I/O and no clock reads: callers pass `now`.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

use super::CloseReason;
use super::queue::{Answer, Refused, Ticket, WaitQueue};

/// The pool settings that can change at runtime.
#[derive(Clone, Debug, PartialEq)]
pub struct PoolSettings {
    /// Connections kept.
    pub pool_size: u32,
    /// Extra connections allowed beyond pool_size.
    pub max_overflow: u32,
    /// Longest wait for a connection.
    pub pool_timeout: Duration,
    /// Connections older than this are closed instead of reused.
    pub pool_recycle: Duration,
    /// Ping an idle connection before handing it out.
    pub pre_ping: bool,
    /// Hand out the idle connection idle longest (FIFO) instead of the one returned last.
    pub round_robin: bool,
}

impl PoolSettings {
    /// pool_size + max_overflow.
    pub fn capacity(&self) -> usize {
        self.pool_size as usize + self.max_overflow as usize
    }

    /// The QueuePool timeout message (CONTRACT §2.3), exactly.
    pub fn timeout_message(&self) -> String {
        format!(
            "QueuePool limit of size {} overflow {} reached, connection timed out, timeout {:.2}",
            self.pool_size,
            self.max_overflow,
            self.pool_timeout.as_secs_f64()
        )
    }
}

/// A pooled connection with its age.
#[derive(Debug)]
pub struct Entry<C> {
    /// The connection.
    pub conn: C,
    /// When it was opened.
    pub created: Instant,
    /// When it last came back healthy (after its last ReadyForQuery): the last moment the
    /// server is known to have answered on it.
    pub returned: Instant,
    /// The pool_recycle last asked about, and when the connection is due under it
    /// (`created` + pool_recycle; `None` past the clock's range): worked out again only when
    /// pool_recycle changes, so the check at every checkout and return compares two instants.
    recycle: (Duration, Option<Instant>),
}

impl<C> Entry<C> {
    /// A connection opened at `now`.
    pub fn new(conn: C, now: Instant) -> Self {
        Self {
            conn,
            created: now,
            returned: now,
            // `created` + Duration::MAX is past the clock's range.
            recycle: (Duration::MAX, None),
        }
    }

    /// Whether the connection has lived `pool_recycle` or longer at `now`.
    #[inline]
    pub fn recycle_due(&mut self, now: Instant, pool_recycle: Duration) -> bool {
        if self.recycle.0 != pool_recycle {
            self.recycle = (pool_recycle, self.created.checked_add(pool_recycle));
        }
        pool_recycle.is_zero() || self.recycle.1.is_some_and(|due| now >= due)
    }
}

/// For this long after a connection last answered, a pre-ping trusts a quiet socket (nothing
/// arrived, not closed: [`super::Manager::quiet`]) instead of a round trip to the server. A
/// backend that was terminated or a server that went away leaves bytes or an end of stream on
/// the socket, which sends the connection to a real ping. PgBouncer's `server_check_delay`
/// (30 s by default) is the same idea.
pub const PRE_PING_TRUST: Duration = Duration::from_secs(1);

/// A connection whose server answered less than this long ago is handed out without
/// looking at its socket. Under load nearly every checkout is one (a connection comes back
/// and the next transaction takes it microseconds later), and the quiet check is a system
/// call, which would make one more per transaction than PgBouncer's. A backend that dies
/// inside this window is the same race every check has (it can die just after the check):
/// the client sees the connection fail, as if it had died during its transaction. A server
/// that went away while connections sat idle for longer, as in a restart, is still found.
pub const PRE_PING_FRESH: Duration = Duration::from_millis(1);

/// Whether a pre-ping must do a round trip for a connection idle for `idle_for`. `unread`:
/// bytes from the server sit in the connection's own buffer. `quiet` looks at its socket and
/// is only called when the answer depends on it, never for a connection idle under
/// [`PRE_PING_FRESH`].
pub fn needs_round_trip(
    pre_ping: bool,
    idle_for: Duration,
    unread: bool,
    quiet: impl FnOnce() -> bool,
) -> bool {
    pre_ping && (idle_for >= PRE_PING_TRUST || unread || (idle_for >= PRE_PING_FRESH && !quiet()))
}

/// What a waiter is handed.
#[derive(Debug)]
pub enum Grant<C> {
    /// An idle or returned connection.
    Conn(Entry<C>),
    /// Permission to open a new connection (a slot under the limit is reserved for it).
    Slot,
}

/// The first step of a checkout.
#[derive(Debug)]
pub enum Step<C> {
    /// Use this idle connection (a slot is taken).
    Idle(Entry<C>),
    /// Open a new one (a slot is taken).
    Open,
    /// Wait in line until the answer is left at the ticket's place. `new_deadline`: the
    /// queue's earliest deadline is now this waiter's, so whoever times waiters out must look
    /// again.
    Wait {
        /// The place in line, where the grant or the refusal arrives
        /// ([`State::poll_answer`]).
        ticket: Ticket,
        /// The earliest deadline in the queue moved.
        new_deadline: bool,
    },
    /// The pool is shut down.
    Closed,
}

/// A point-in-time view of a pool.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct PoolStats {
    /// Configured pool_size.
    pub pool_size: u32,
    /// Configured max_overflow.
    pub max_overflow: u32,
    /// Server connections in use by clients (including ones being opened for them).
    pub checked_out: usize,
    /// Idle server connections.
    pub checked_in: usize,
    /// Clients queued for a connection.
    pub waiting: usize,
    /// Open connections beyond pool_size.
    pub overflow: usize,
}

/// The bookkeeping.
#[derive(Debug)]
pub struct State<C> {
    settings: PoolSettings,
    /// Idle connections, the one returned last at the back.
    idle: VecDeque<Entry<C>>,
    out: usize,
    waiters: WaitQueue<C>,
    /// The deadline the queue's timer is set for, if any: the earliest a waiter had when the
    /// timer last looked (served waiters leave it early, which only makes it look again).
    timer: Option<Instant>,
    closed: bool,
}

impl<C> State<C> {
    /// An empty pool.
    pub fn new(settings: PoolSettings) -> Self {
        Self {
            settings,
            idle: VecDeque::new(),
            out: 0,
            waiters: WaitQueue::default(),
            timer: None,
            closed: false,
        }
    }

    /// Current settings.
    pub fn settings(&self) -> &PoolSettings {
        &self.settings
    }

    fn total(&self) -> usize {
        self.idle.len() + self.out
    }

    /// Snapshot.
    pub fn stats(&self) -> PoolStats {
        PoolStats {
            pool_size: self.settings.pool_size,
            max_overflow: self.settings.max_overflow,
            checked_out: self.out,
            checked_in: self.idle.len(),
            waiting: self.waiters.len(),
            overflow: self
                .total()
                .saturating_sub(self.settings.pool_size as usize),
        }
    }

    /// Begin a checkout: the idle connection returned last (LIFO, as PgBouncer and QueuePool's
    /// `use_lifo`: a light load keeps reusing the same few backends, whose caches are warm,
    /// and the rest stay idle; with `round_robin`, the one idle longest), else a new one if
    /// under the limit and nobody is queued, else a place at the back of the queue (waiters
    /// are served FIFO) whose pool_timeout, counted from `now`, [`expire`](Self::expire) ends.
    pub fn begin_checkout(&mut self, now: Instant) -> Step<C> {
        self.begin(now, None::<fn(&C) -> bool>)
    }

    /// [`begin_checkout`](Self::begin_checkout), taking the idle connection returned last
    /// among those `preferred` says yes to, if there is one (a connection already
    /// registered with the caller's loop), else the one returned last. With `round_robin`
    /// the preference gives way: the connection idle longest goes, wherever it is, as that
    /// setting promises. The queue is the same FIFO for every caller.
    pub fn begin_checkout_preferring(
        &mut self,
        now: Instant,
        preferred: impl Fn(&C) -> bool,
    ) -> Step<C> {
        self.begin(now, Some(preferred))
    }

    fn begin(&mut self, now: Instant, preferred: Option<impl Fn(&C) -> bool>) -> Step<C> {
        if self.closed {
            return Step::Closed;
        }
        let idle = if self.settings.round_robin {
            self.idle.pop_front()
        } else {
            match preferred.and_then(|p| self.idle.iter().rposition(|e| p(&e.conn))) {
                Some(i) => self.idle.remove(i),
                None => self.idle.pop_back(),
            }
        };
        if let Some(e) = idle {
            self.out += 1;
            return Step::Idle(e);
        }
        if self.waiters.is_empty() && self.total() < self.settings.capacity() {
            self.out += 1;
            return Step::Open;
        }
        let deadline = now + self.settings.pool_timeout;
        let ticket = self.waiters.push(deadline);
        let new_deadline = self.timer.is_none_or(|t| deadline < t);
        if new_deadline {
            self.timer = Some(deadline);
        }
        Step::Wait {
            ticket,
            new_deadline,
        }
    }

    /// Time out every waiter whose deadline is `now` or earlier (each hears
    /// [`Refused::TimedOut`]) and answer when to look next: the earliest deadline left, `None`
    /// with nobody waiting. One timer for the whole queue instead of one per waiter: under load
    /// nearly every checkout waits, and a timer of its own costs a timer-wheel insert and
    /// removal each.
    pub fn expire(&mut self, now: Instant) -> Option<Instant> {
        self.timer = self.waiters.expire(now);
        self.timer
    }

    /// The answer for a waiter's `ticket` if it has come (the place is given up); else
    /// `waker` is woken when it does.
    pub fn poll_answer(&mut self, ticket: Ticket, waker: &std::task::Waker) -> Option<Answer<C>> {
        self.waiters.poll_answer(ticket, waker)
    }

    /// A waiter gives up (its client went away). A grant that already came is taken back:
    /// a connection is checked in again, a slot released.
    pub fn leave(&mut self, ticket: Ticket, now: Instant) -> Vec<(C, CloseReason)> {
        match self.waiters.leave(ticket) {
            Some(Grant::Conn(e)) => self.check_in(e, true, now),
            Some(Grant::Slot) => {
                self.release_slot();
                Vec::new()
            }
            None => Vec::new(),
        }
    }

    /// A checked-out slot ends without a connection to give back (connect failed, or the
    /// connection was closed). Hands the freed room to the next waiter.
    pub fn release_slot(&mut self) {
        self.out = self.out.saturating_sub(1);
        self.grant_slots();
    }

    /// Give waiters permission to open while there is room.
    fn grant_slots(&mut self) {
        while self.total() < self.settings.capacity() && !self.waiters.is_empty() {
            self.out += 1;
            self.waiters.serve_front(Grant::Slot);
        }
    }

    /// A connection comes back. Returns the connections to close, with reasons.
    pub fn check_in(
        &mut self,
        entry: Entry<C>,
        healthy: bool,
        now: Instant,
    ) -> Vec<(C, CloseReason)> {
        self.out = self.out.saturating_sub(1);
        let mut entry = entry;
        if healthy {
            entry.returned = now;
        }
        let mut close = Vec::new();
        let reason = if self.closed {
            Some(CloseReason::Shutdown)
        } else if !healthy {
            Some(CloseReason::Error)
        } else if entry.recycle_due(now, self.settings.pool_recycle) {
            Some(CloseReason::Recycle)
        } else if self.total() >= self.settings.capacity() {
            Some(CloseReason::Resize)
        } else {
            None
        };
        if let Some(reason) = reason {
            close.push((entry.conn, reason));
            self.grant_slots();
            return close;
        }
        if !self.waiters.is_empty() {
            self.out += 1;
            self.waiters.serve_front(Grant::Conn(entry));
            return close;
        }
        if self.idle.len() >= self.settings.pool_size as usize {
            close.push((entry.conn, CloseReason::Overflow));
        } else {
            self.idle.push_back(entry);
        }
        close
    }

    /// Change the limits live. A grow serves waiters at once; a shrink closes idle
    /// connections over the new limits now and the rest as they come back.
    pub fn resize(&mut self, settings: PoolSettings) -> Vec<(C, CloseReason)> {
        self.settings = settings;
        let mut close = Vec::new();
        while !self.idle.is_empty()
            && (self.total() > self.settings.capacity()
                || self.idle.len() > self.settings.pool_size as usize)
        {
            if let Some(e) = self.idle.pop_front() {
                close.push((e.conn, CloseReason::Resize));
            }
        }
        self.grant_slots();
        close
    }

    /// Stop: refuse new checkouts, drop the queue (waiters see the pool closed) and hand back
    /// the idle connections to close.
    pub fn shut_down(&mut self) -> Vec<(C, CloseReason)> {
        self.closed = true;
        self.waiters.refuse_all(Refused::Closed);
        self.timer = None;
        self.idle
            .drain(..)
            .map(|e| (e.conn, CloseReason::Shutdown))
            .collect()
    }
}
