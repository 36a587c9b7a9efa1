use std::sync::atomic::{AtomicUsize, Ordering};

use super::*;
use crate::config::ConfigDuration;

/// One step of a scripted scenario: at `t` ms after the start, do `op`, then the state is
/// `state`.
#[derive(Clone, Copy, Debug)]
enum Op {
    Admit(Admission),
    Success,
    Failure,
    Abandon,
    Look,
}
use Admission::{Allow, Probe, Reject};
use BreakerState::{Closed, HalfOpen, Open};
use Op::*;

/// (name, threshold, steps).
type Case<'a> = (&'a str, u32, &'a [(u64, Op, BreakerState)]);

fn run(name: &str, threshold: u32, open_for_ms: u64, steps: &[(u64, Op, BreakerState)]) {
    let t0 = Instant::now();
    let mut b = Breaker::new(threshold, Duration::from_millis(open_for_ms));
    for (i, &(t, op, want)) in steps.iter().enumerate() {
        let now = t0 + Duration::from_millis(t);
        match op {
            Admit(expected) => {
                assert_eq!(b.admit(now), expected, "{name}: step {i} admit at {t}ms")
            }
            Success => b.record_success(now),
            Failure => b.record_failure(now),
            Abandon => b.abandon_probe(now),
            Look => {}
        }
        assert_eq!(b.state(now), want, "{name}: step {i} ({op:?} at {t}ms)");
    }
}

#[test]
fn transitions_table() {
    let open = 1000;
    let cases: &[Case<'_>] = &[
        (
            "closed allows",
            3,
            &[(0, Admit(Allow), Closed), (0, Success, Closed)],
        ),
        (
            "opens after exactly threshold consecutive failures",
            3,
            &[
                (0, Failure, Closed),
                (1, Failure, Closed),
                (2, Admit(Allow), Closed),
                (2, Failure, Open),
                (3, Admit(Reject), Open),
            ],
        ),
        (
            "a success resets the count",
            3,
            &[
                (0, Failure, Closed),
                (1, Failure, Closed),
                (2, Success, Closed),
                (3, Failure, Closed),
                (4, Failure, Closed),
                (5, Failure, Open),
            ],
        ),
        (
            "threshold 1 opens on the first failure",
            1,
            &[(0, Failure, Open), (1, Admit(Reject), Open)],
        ),
        (
            "rejects until open_for has passed, then one probe",
            1,
            &[
                (0, Failure, Open),
                (999, Admit(Reject), Open),
                (1000, Look, HalfOpen),
                (1000, Admit(Probe), HalfOpen),
                (1001, Admit(Reject), HalfOpen),
                (5000, Admit(Reject), HalfOpen),
            ],
        ),
        (
            "probe success closes",
            2,
            &[
                (0, Failure, Closed),
                (0, Failure, Open),
                (1000, Admit(Probe), HalfOpen),
                (1010, Success, Closed),
                (1011, Admit(Allow), Closed),
                // The count starts again from zero.
                (1012, Failure, Closed),
                (1013, Failure, Open),
            ],
        ),
        (
            "probe failure reopens for another open_for",
            2,
            &[
                (0, Failure, Closed),
                (0, Failure, Open),
                (1000, Admit(Probe), HalfOpen),
                (1500, Failure, Open),
                (2499, Admit(Reject), Open),
                (2500, Admit(Probe), HalfOpen),
                (2600, Success, Closed),
            ],
        ),
        (
            "late failures while open do not extend the window",
            1,
            &[
                (0, Failure, Open),
                (900, Failure, Open),
                (1000, Admit(Probe), HalfOpen),
            ],
        ),
        (
            "a late success while open closes (the database answered)",
            1,
            &[
                (0, Failure, Open),
                (10, Success, Closed),
                (11, Admit(Allow), Closed),
            ],
        ),
        (
            "an abandoned probe lets the next attempt probe at once",
            1,
            &[
                (0, Failure, Open),
                (1000, Admit(Probe), HalfOpen),
                (1100, Abandon, HalfOpen),
                (1100, Admit(Probe), HalfOpen),
                (1200, Failure, Open),
            ],
        ),
        (
            "abandon outside a probe changes nothing",
            1,
            &[
                (0, Abandon, Closed),
                (1, Failure, Open),
                (2, Abandon, Open),
                (3, Admit(Reject), Open),
            ],
        ),
    ];
    for (name, threshold, steps) in cases {
        run(name, *threshold, open, steps);
    }
}

#[test]
fn gauge_values_match_the_contract() {
    assert_eq!(Closed.gauge_value(), 0);
    assert_eq!(HalfOpen.gauge_value(), 1);
    assert_eq!(Open.gauge_value(), 2);
}

#[test]
fn threshold_zero_is_treated_as_one() {
    let t0 = Instant::now();
    let mut b = Breaker::new(0, Duration::from_secs(1));
    b.record_failure(t0);
    assert_eq!(b.state(t0), Open);
}

#[test]
fn set_settings_keeps_state_and_applies_to_next_failure() {
    let t0 = Instant::now();
    let mut b = Breaker::new(5, Duration::from_secs(30));
    b.record_failure(t0);
    b.record_failure(t0);
    b.set_settings(3, Duration::from_secs(2));
    assert_eq!(b.state(t0), Closed);
    assert_eq!(b.consecutive_failures(), 2);
    b.record_failure(t0);
    assert_eq!(b.state(t0), Open);
    // The new window applies.
    assert_eq!(b.admit(t0 + Duration::from_secs(2)), Probe);
}

/// A clock the test moves by hand.
#[derive(Debug)]
struct ManualClock {
    now: Mutex<Instant>,
}

impl ManualClock {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            now: Mutex::new(Instant::now()),
        })
    }
    fn advance(&self, d: Duration) {
        *self.now.lock().unwrap() += d;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Instant {
        *self.now.lock().unwrap()
    }
}

fn config(threshold: u32, open_for_ms: u64) -> BreakerConfig {
    BreakerConfig {
        failure_threshold: threshold,
        open_for: ConfigDuration::from_millis(open_for_ms),
        message: "Database temporarily unavailable. Please try again shortly.".into(),
    }
}

#[tokio::test]
async fn guard_connect_rejects_without_calling_connect_while_open() {
    let clock = ManualClock::new();
    let b = SharedBreaker::with_clock(&config(2, 30_000), clock.clone());
    let calls = AtomicUsize::new(0);
    let attempt = || async {
        calls.fetch_add(1, Ordering::SeqCst);
        Err::<(), &str>("refused")
    };
    for _ in 0..2 {
        assert!(matches!(
            b.guard_connect(attempt).await,
            Err(BreakerError::Connect("refused"))
        ));
    }
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert_eq!(b.state(), Open);
    for _ in 0..10 {
        match b.guard_connect(attempt).await {
            Err(BreakerError::Open(r)) => {
                assert_eq!(r.severity, "ERROR");
                assert_eq!(r.sqlstate, "57P03");
                assert_eq!(
                    r.message,
                    "Database temporarily unavailable. Please try again shortly."
                );
            }
            other => panic!("expected a rejection, got {other:?}"),
        }
    }
    assert_eq!(
        calls.load(Ordering::SeqCst),
        2,
        "no connect attempt while open"
    );

    clock.advance(Duration::from_secs(30));
    assert_eq!(b.state(), HalfOpen);
    let ok = b.guard_connect(|| async { Ok::<_, &str>(7) }).await;
    assert_eq!(ok.unwrap(), 7);
    assert_eq!(b.state(), Closed);
}

#[tokio::test]
async fn only_one_concurrent_probe() {
    let clock = ManualClock::new();
    let b = SharedBreaker::with_clock(&config(1, 1000), clock.clone());
    let _ = b.guard_connect(|| async { Err::<(), _>("down") }).await;
    clock.advance(Duration::from_secs(1));

    let (release, wait) = tokio::sync::oneshot::channel::<()>();
    let probe_calls = Arc::new(AtomicUsize::new(0));
    let probe = {
        let b = b.clone();
        let calls = probe_calls.clone();
        tokio::spawn(async move {
            b.guard_connect(|| async move {
                calls.fetch_add(1, Ordering::SeqCst);
                wait.await.unwrap();
                Ok::<_, &str>("probe")
            })
            .await
        })
    };
    // Let the probe start and block.
    while probe_calls.load(Ordering::SeqCst) == 0 {
        tokio::task::yield_now().await;
    }
    // Ten concurrent attempts while the probe is in flight: all refused, none connects.
    let others = AtomicUsize::new(0);
    let results = futures::future::join_all((0..10).map(|_| {
        b.guard_connect(|| async {
            others.fetch_add(1, Ordering::SeqCst);
            Ok::<_, &str>("other")
        })
    }))
    .await;
    assert!(
        results
            .iter()
            .all(|r| matches!(r, Err(BreakerError::Open(_))))
    );
    assert_eq!(others.load(Ordering::SeqCst), 0);
    assert_eq!(b.state(), HalfOpen);

    release.send(()).unwrap();
    assert_eq!(probe.await.unwrap().unwrap(), "probe");
    assert_eq!(b.state(), Closed);
}

#[tokio::test]
async fn a_cancelled_probe_does_not_wedge_the_breaker() {
    let clock = ManualClock::new();
    let b = SharedBreaker::with_clock(&config(1, 1000), clock.clone());
    let _ = b.guard_connect(|| async { Err::<(), _>("down") }).await;
    clock.advance(Duration::from_secs(1));
    let pending = b.guard_connect(futures::future::pending::<Result<(), &str>>);
    // Poll it once so it takes the probe, then drop it.
    assert!(futures::FutureExt::now_or_never(pending).is_none());
    assert_eq!(b.state(), HalfOpen);
    assert_eq!(b.admit(), Admission::Probe, "the next attempt probes");
}

#[test]
fn apply_config_changes_message_and_threshold() {
    let clock = ManualClock::new();
    let b = SharedBreaker::with_clock(&config(5, 1000), clock);
    let mut cfg = config(1, 1000);
    cfg.message = "Try later".into();
    b.apply_config(&cfg);
    assert_eq!(b.admit(), Admission::Allow);
    b.record(false);
    assert_eq!(b.state(), Open);
    assert_eq!(b.rejection().message, "Try later");
}
