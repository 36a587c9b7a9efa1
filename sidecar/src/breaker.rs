//! The circuit breaker (CONTRACT §2.4): a pure state machine with the clock passed in, plus a
//! thread-safe wrapper that guards every attempt to open a server connection.
//!
//! ```text
//!            failure_threshold consecutive            open_for elapsed,
//!            connect failures                         next admit() is the one probe
//!  Closed ───────────────────────────▶ Open ─────────────────────────────▶ HalfOpen
//!    ▲                                  ▲                                     │
//!    │                                  └──────── probe failed ───────────────┤
//!    └───────────────────────────── probe succeeded ──────────────────────────┘
//! ```
//!
//! While open, [`SharedBreaker::guard_connect`] refuses at once, without calling the connect
//! function (no network attempt); the client gets ErrorResponse `ERROR` / `57P03` with the
//! configured message ([`Rejection`]). Server connections already checked out are not touched.

use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::config::BreakerConfig;
use crate::metrics::PoolMetrics;

/// SQLSTATE sent to clients while the breaker is open (`cannot_connect_now`).
pub const SQLSTATE_CANNOT_CONNECT_NOW: &str = "57P03";
/// Severity of the rejection ErrorResponse.
pub const REJECTION_SEVERITY: &str = "ERROR";

/// The breaker state as the `poolwarden_breaker_state` gauge reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakerState {
    /// Connections are attempted normally.
    Closed = 0,
    /// `open_for` has passed: one probe is allowed (or in flight).
    HalfOpen = 1,
    /// Every new connection attempt is refused at once.
    Open = 2,
}

impl BreakerState {
    /// The gauge value: 0 closed, 1 half-open, 2 open.
    pub fn gauge_value(self) -> i64 {
        self as i64
    }
    /// `closed`, `half_open` or `open`.
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::HalfOpen => "half_open",
            BreakerState::Open => "open",
        }
    }
}

/// What [`Breaker::admit`] decides for one connection attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    /// Closed: go ahead.
    Allow,
    /// The single half-open probe: go ahead, and report the outcome.
    Probe,
    /// Open (or a probe is already in flight): refuse without any network attempt.
    Reject,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Closed,
    Open {
        until: Instant,
    },
    /// The one probe has been handed out and its outcome is pending.
    Probing,
}

/// The breaker state machine. Pure: every method takes the current time.
///
/// Outcome rules: any success closes the breaker and resets the failure count (the database
/// answered). A failure while closed counts towards the threshold; a failure while probing
/// reopens for another `open_for`; a failure while open (a late attempt admitted before the
/// breaker opened) changes nothing.
#[derive(Clone, Debug)]
pub struct Breaker {
    threshold: u32,
    open_for: Duration,
    failures: u32,
    phase: Phase,
}

impl Breaker {
    /// A closed breaker that opens after `threshold` consecutive failures (at least 1) for
    /// `open_for`.
    pub fn new(threshold: u32, open_for: Duration) -> Self {
        Self {
            threshold: threshold.max(1),
            open_for,
            failures: 0,
            phase: Phase::Closed,
        }
    }

    /// Built from the config's `breaker` section.
    pub fn from_config(cfg: &BreakerConfig) -> Self {
        Self::new(cfg.failure_threshold, cfg.open_for.get())
    }

    /// Change the settings live. The current state is kept: an open breaker stays open until
    /// the end of the window it was opened with; the new threshold applies to the next
    /// failure.
    pub fn set_settings(&mut self, threshold: u32, open_for: Duration) {
        self.threshold = threshold.max(1);
        self.open_for = open_for;
    }

    /// The configured threshold.
    pub fn threshold(&self) -> u32 {
        self.threshold
    }

    /// The configured open window.
    pub fn open_for(&self) -> Duration {
        self.open_for
    }

    /// Consecutive failures counted while closed.
    pub fn consecutive_failures(&self) -> u32 {
        self.failures
    }

    /// Decide about one connection attempt at `now`.
    pub fn admit(&mut self, now: Instant) -> Admission {
        match self.phase {
            Phase::Closed => Admission::Allow,
            Phase::Open { until } if now >= until => {
                self.phase = Phase::Probing;
                Admission::Probe
            }
            Phase::Open { .. } | Phase::Probing => Admission::Reject,
        }
    }

    /// A connection attempt succeeded.
    pub fn record_success(&mut self, _now: Instant) {
        self.failures = 0;
        self.phase = Phase::Closed;
    }

    /// A connection attempt failed.
    pub fn record_failure(&mut self, now: Instant) {
        match self.phase {
            Phase::Closed => {
                self.failures = self.failures.saturating_add(1);
                if self.failures >= self.threshold {
                    self.open(now);
                }
            }
            Phase::Probing => self.open(now),
            Phase::Open { .. } => {}
        }
    }

    /// The probe was abandoned without an outcome (its task was cancelled): allow the next
    /// attempt to probe at once instead of refusing forever.
    pub fn abandon_probe(&mut self, now: Instant) {
        if self.phase == Phase::Probing {
            self.phase = Phase::Open { until: now };
        }
    }

    /// The state at `now`, as the metric reports it. An open breaker whose window has passed
    /// reports half-open: the next attempt is the probe.
    pub fn state(&self, now: Instant) -> BreakerState {
        match self.phase {
            Phase::Closed => BreakerState::Closed,
            Phase::Open { until } if now >= until => BreakerState::HalfOpen,
            Phase::Open { .. } => BreakerState::Open,
            Phase::Probing => BreakerState::HalfOpen,
        }
    }

    fn open(&mut self, now: Instant) {
        self.failures = 0;
        self.phase = Phase::Open {
            until: now + self.open_for,
        };
    }
}

/// A source of the current time, injected so tests control it.
pub trait Clock: Send + Sync + 'static {
    /// The current instant.
    fn now(&self) -> Instant;
}

/// The real clock: tokio's, so tests with a paused runtime clock also control the breaker.
#[derive(Clone, Copy, Debug, Default)]
pub struct TokioClock;

impl Clock for TokioClock {
    fn now(&self) -> Instant {
        tokio::time::Instant::now().into_std()
    }
}

/// The ErrorResponse a client gets while the breaker is open.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejection {
    /// Always `ERROR`.
    pub severity: &'static str,
    /// Always `57P03`.
    pub sqlstate: &'static str,
    /// The configured `breaker.message`.
    pub message: String,
}

/// Why a guarded connection attempt did not produce a connection.
#[derive(Debug, thiserror::Error)]
pub enum BreakerError<E> {
    /// Refused without a network attempt; send the [`Rejection`] to the client.
    #[error("circuit breaker open: {}", .0.message)]
    Open(Rejection),
    /// The attempt was made and failed; the failure has been recorded.
    #[error("server connection failed: {0}")]
    Connect(E),
}

struct Inner {
    breaker: Breaker,
    message: String,
}

/// A breaker shared by every task of one pool. The lock is held only for a few instructions
/// and never across an await.
#[derive(Clone)]
pub struct SharedBreaker {
    inner: Arc<Mutex<Inner>>,
    clock: Arc<dyn Clock>,
    metrics: Option<PoolMetrics>,
}

impl std::fmt::Debug for SharedBreaker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedBreaker")
            .field("state", &self.state())
            .finish()
    }
}

impl SharedBreaker {
    /// A breaker from the config, on the real clock.
    pub fn new(cfg: &BreakerConfig) -> Self {
        Self::with_clock(cfg, Arc::new(TokioClock))
    }

    /// A breaker from the config on the given clock.
    pub fn with_clock(cfg: &BreakerConfig, clock: Arc<dyn Clock>) -> Self {
        let inner = Inner {
            breaker: Breaker::from_config(cfg),
            message: cfg.message.clone(),
        };
        Self {
            inner: Arc::new(Mutex::new(inner)),
            clock,
            metrics: None,
        }
    }

    /// Report to this pool's metrics: `poolwarden_breaker_state` on every change and
    /// `poolwarden_breaker_rejections_total` per refusal. Failed attempts are not counted
    /// here: `poolwarden_server_connect_errors_total` belongs to the code that opens server
    /// connections (the pool), so it is counted once.
    pub fn with_metrics(mut self, metrics: PoolMetrics) -> Self {
        metrics.set_breaker_state(self.state());
        self.metrics = Some(metrics);
        self
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding this lock cannot leave the plain-data state inconsistent.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Apply a reloaded `breaker` section (threshold, window, message).
    pub fn apply_config(&self, cfg: &BreakerConfig) {
        let mut g = self.lock();
        g.breaker
            .set_settings(cfg.failure_threshold, cfg.open_for.get());
        g.message = cfg.message.clone();
    }

    /// The state now.
    pub fn state(&self) -> BreakerState {
        let now = self.clock.now();
        self.lock().breaker.state(now)
    }

    /// The rejection clients get while open.
    pub fn rejection(&self) -> Rejection {
        Rejection {
            severity: REJECTION_SEVERITY,
            sqlstate: SQLSTATE_CANNOT_CONNECT_NOW,
            message: self.lock().message.clone(),
        }
    }

    /// Decide about one attempt (for callers that do not use `guard_connect`; they must then
    /// call [`record`](Self::record) with the outcome).
    pub fn admit(&self) -> Admission {
        let now = self.clock.now();
        let (admission, state) = {
            let mut g = self.lock();
            let a = g.breaker.admit(now);
            (a, g.breaker.state(now))
        };
        if let Some(m) = &self.metrics {
            m.set_breaker_state(state);
            if admission == Admission::Reject {
                m.breaker_rejected();
            }
        }
        admission
    }

    /// Record the outcome of an admitted attempt.
    pub fn record(&self, ok: bool) {
        let now = self.clock.now();
        let state = {
            let mut g = self.lock();
            if ok {
                g.breaker.record_success(now);
            } else {
                g.breaker.record_failure(now);
            }
            g.breaker.state(now)
        };
        if let Some(m) = &self.metrics {
            m.set_breaker_state(state);
        }
    }

    /// Run `connect` through the breaker: refused at once (without calling `connect`) while
    /// open or while the probe is in flight; otherwise the outcome is recorded. If the
    /// returned future is dropped while it is the probe, the probe is released so the next
    /// attempt probes.
    pub async fn guard_connect<F, Fut, T, E>(&self, connect: F) -> Result<T, BreakerError<E>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let admission = self.admit();
        if admission == Admission::Reject {
            return Err(BreakerError::Open(self.rejection()));
        }
        let mut pending = PendingProbe {
            breaker: self,
            armed: admission == Admission::Probe,
        };
        let outcome = connect().await;
        pending.armed = false;
        self.record(outcome.is_ok());
        outcome.map_err(BreakerError::Connect)
    }
}

/// Releases an abandoned probe on drop.
struct PendingProbe<'a> {
    breaker: &'a SharedBreaker,
    armed: bool,
}

impl Drop for PendingProbe<'_> {
    fn drop(&mut self) {
        if self.armed {
            let now = self.breaker.clock.now();
            self.breaker.lock().breaker.abandon_probe(now);
        }
    }
}

#[cfg(test)]
mod tests;
