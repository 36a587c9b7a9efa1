//! Counters and events other code (metrics, admin) hooks on.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Why a server connection was closed (the `reason` label of
/// `poolwarden_server_connections_closed_total`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CloseReason {
    /// Older than pool_recycle.
    Recycle,
    /// Failed the pre-ping.
    PrePing,
    /// Broken, or left in an unknown state by its client.
    Error,
    /// Came back while pool_size connections were already idle.
    Overflow,
    /// Over the limit after a shrink.
    Resize,
    /// Its client sat idle in a transaction for too long.
    IdleInTransaction,
    /// The sidecar is stopping.
    Shutdown,
}

impl CloseReason {
    /// Every reason, in label order.
    pub const ALL: [CloseReason; 7] = [
        CloseReason::Recycle,
        CloseReason::PrePing,
        CloseReason::Error,
        CloseReason::Overflow,
        CloseReason::Resize,
        CloseReason::IdleInTransaction,
        CloseReason::Shutdown,
    ];

    /// The metric label value.
    pub fn as_str(self) -> &'static str {
        match self {
            CloseReason::Recycle => "recycle",
            CloseReason::PrePing => "pre_ping",
            CloseReason::Error => "error",
            CloseReason::Overflow => "overflow",
            CloseReason::Resize => "resize",
            CloseReason::IdleInTransaction => "idle_in_transaction",
            CloseReason::Shutdown => "shutdown",
        }
    }

    /// The reason for a label value (`recycle`, `pre_ping`, ...).
    pub fn from_label(label: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == label)
    }

    /// Position in [`Self::ALL`] (the declaration order).
    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

/// Events a pool reports as they happen. Every method has an empty default, so an observer
/// implements only what it needs. Called outside the pool's lock; keep them cheap.
pub trait PoolObserver: Send + Sync + 'static {
    /// A server connection was opened.
    fn opened(&self) {}
    /// A server connection was closed.
    fn closed(&self, _reason: CloseReason) {}
    /// Opening a server connection failed.
    fn connect_error(&self) {}
    /// A client got a server connection after waiting this long (zero when none was
    /// needed).
    fn waited(&self, _wait: Duration) {}
    /// A client hit pool_timeout.
    fn timed_out(&self) {}
}

/// The pool's own running totals.
#[derive(Debug, Default)]
pub struct Counters {
    opened: AtomicU64,
    closed: [AtomicU64; 7],
    connect_errors: AtomicU64,
    timeouts: AtomicU64,
    checkouts: AtomicU64,
    wait_micros: AtomicU64,
}

/// A copy of [`Counters`].
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct CountersSnapshot {
    /// Server connections opened.
    pub opened: u64,
    /// Server connections closed, by reason label.
    pub closed: Vec<(&'static str, u64)>,
    /// Failed attempts to open a server connection.
    pub connect_errors: u64,
    /// Clients that hit pool_timeout.
    pub timeouts: u64,
    /// Successful checkouts.
    pub checkouts: u64,
    /// Total time clients waited, in microseconds.
    pub wait_micros: u64,
}

impl CountersSnapshot {
    /// Closed count for one reason.
    pub fn closed_for(&self, reason: CloseReason) -> u64 {
        self.closed
            .iter()
            .find(|(r, _)| *r == reason.as_str())
            .map(|(_, n)| *n)
            .unwrap_or(0)
    }
}

impl Counters {
    pub(crate) fn opened(&self) {
        self.opened.fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn closed(&self, reason: CloseReason) {
        self.closed[reason.index()].fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn connect_error(&self) {
        self.connect_errors.fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn timed_out(&self) {
        self.timeouts.fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn waited(&self, d: Duration) {
        self.checkouts.fetch_add(1, Ordering::Relaxed);
        self.wait_micros
            .fetch_add(d.as_micros() as u64, Ordering::Relaxed);
    }

    /// A copy of the totals.
    pub fn snapshot(&self) -> CountersSnapshot {
        CountersSnapshot {
            opened: self.opened.load(Ordering::Relaxed),
            closed: CloseReason::ALL
                .iter()
                .map(|r| (r.as_str(), self.closed[r.index()].load(Ordering::Relaxed)))
                .collect(),
            connect_errors: self.connect_errors.load(Ordering::Relaxed),
            timeouts: self.timeouts.load(Ordering::Relaxed),
            checkouts: self.checkouts.load(Ordering::Relaxed),
            wait_micros: self.wait_micros.load(Ordering::Relaxed),
        }
    }
}
