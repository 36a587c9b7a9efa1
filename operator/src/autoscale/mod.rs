//! Autoscaling of pool_size from observed utilization, within the connection budget.
//!
//! ```text
//!  collect (I/O: scrape sidecars or Prometheus) ──▶ Observation ──sample──▶ history (status)
//!                                                                              │
//!   budget (sqlx, spec) ──▶ per-pod limit ──▶ decide (pure) ◀──────────────────┘
//!                                               │
//!                                               ▼
//!                Decision ──record──▶ status (poolSize, history, lastScaleTime), metrics
//! ```
//!
//! One autoscaling pass of the reconcile loop, in order:
//! 1. `collect::Scraper::scrape_all` → [`collect::Observation`];
//! 2. `History::from_status`, `history.add(obs.sample(now)?, windowDays)`;
//! 3. [`decide::decide`] with [`decide::DecisionInput::for_policy`];
//! 4. [`record`] into the status, [`decide::evaluate_alerts`] for PoolSaturated, and
//!    [`metrics::AutoscaleMetrics::observe`].

pub mod collect;
pub mod decide;
pub mod history;
pub mod metrics;
pub mod step;

use jiff::Timestamp;
use poolwarden_crds::{DbPoolPolicyStatus, MAX_HISTORY, PodsStatus, ScaleEvent, UtilizationStatus};

pub use collect::{Observation, PodScrape, PodTarget, Scraper};
pub use decide::{Alert, AlertLevel, Decision, DecisionInput, Sizing, decide, evaluate_alerts};
pub use history::{History, Sample};

/// Writes a decision, the history and the observation into `status`:
/// `poolSize`/`maxOverflow`; when the size changed, `lastScaleTime` and a `history` entry
/// (at most [`MAX_HISTORY`], oldest dropped; only when the pool size itself moved, or
/// nothing was decided before); `lastReviewTime` when the review ran; the utilization
/// windows, pods and the history's own fields. Conditions and Events are the caller's.
/// Returns the new history entry, if any, for the Event.
pub fn record(
    status: &mut DbPoolPolicyStatus,
    decision: &Decision,
    history: &History,
    observation: Option<&Observation>,
    review_window_days: u32,
    now: Timestamp,
) -> Option<ScaleEvent> {
    let from = status.pool_size;
    let mut entry = None;
    if decision.changed {
        status.last_scale_time = Some(now.to_string());
        if from != Some(decision.sizing.pool_size) {
            let e = ScaleEvent {
                time: now.to_string(),
                from_pool_size: from.unwrap_or(0),
                to_pool_size: decision.sizing.pool_size,
                reason: decision.reason.to_string(),
            };
            status.history.push(e.clone());
            if status.history.len() > MAX_HISTORY {
                let drop = status.history.len() - MAX_HISTORY;
                status.history.drain(..drop);
            }
            entry = Some(e);
        }
    }
    status.pool_size = Some(decision.sizing.pool_size);
    status.max_overflow = Some(decision.sizing.max_overflow);
    if decision.reviewed {
        status.last_review_time = Some(now.to_string());
    }
    history.write_status(status);
    // Three decimals are plenty for people and printer columns (`kubectl get dbpp`).
    let round = |v: Option<f64>| v.map(|x| (x * 1000.0).round() / 1000.0);
    status.utilization = Some(UtilizationStatus {
        current: round(
            history
                .is_fresh(now)
                .then(|| history.latest().map(|s| s.utilization))
                .flatten(),
        ),
        avg5m: round(history.average(5 * 60, now)),
        avg1h: round(history.average(60 * 60, now)),
        avg30d: round(history.review_average(review_window_days, now)),
    });
    if let Some(obs) = observation {
        status.pods = Some(PodsStatus {
            matched: obs.matched(),
            reporting: obs.reporting(),
            unreachable: obs.unreachable(),
        });
    }
    entry
}

#[cfg(test)]
mod tests {
    use super::*;
    use poolwarden_crds::conditions::reasons;

    fn t(secs: i64) -> Timestamp {
        Timestamp::from_second(1_793_491_200 + secs).unwrap()
    }

    fn decision(pool: u32, changed: bool, reason: &'static str) -> Decision {
        Decision {
            sizing: Sizing {
                pool_size: pool,
                max_overflow: pool.div_ceil(2),
            },
            reason,
            message: String::new(),
            changed,
            budget_limited: false,
            over_budget: false,
            at_max: false,
            at_min: false,
            held: false,
            reviewed: reason == reasons::MONTHLY_REVIEW,
            budget_unknown: false,
        }
    }

    #[test]
    fn record_writes_the_capacity_change_log() {
        let mut status = DbPoolPolicyStatus::default();
        let mut h = History::new();
        for k in 0..=20 {
            h.add(
                Sample {
                    time: t(k * 15),
                    utilization: 0.9,
                    demand: 18,
                },
                30,
            );
        }
        let obs = Observation {
            pods: vec![
                ("a".into(), PodScrape::Unreachable("refused".into())),
                (
                    "b".into(),
                    PodScrape::Reporting(collect::PodMetrics::default()),
                ),
            ],
        };
        let e = record(
            &mut status,
            &decision(20, true, reasons::INITIAL_SIZING),
            &h,
            None,
            30,
            t(0),
        );
        assert_eq!(e.unwrap().from_pool_size, 0);
        let e = record(
            &mut status,
            &decision(27, true, reasons::SUSTAINED_HIGH_UTILIZATION),
            &h,
            Some(&obs),
            30,
            t(300),
        )
        .unwrap();
        assert_eq!((e.from_pool_size, e.to_pool_size), (20, 27));
        assert_eq!(e.reason, "SustainedHighUtilization");
        assert_eq!(e.time, "2026-11-01T00:05:00Z");
        assert_eq!(
            (status.pool_size, status.max_overflow),
            (Some(27), Some(14))
        );
        assert_eq!(
            status.last_scale_time.as_deref(),
            Some("2026-11-01T00:05:00Z")
        );
        assert_eq!(status.last_review_time, None);
        let pods = status.pods.clone().unwrap();
        assert_eq!(
            (pods.matched, pods.reporting, pods.unreachable),
            (2, 1, vec!["a".into()])
        );
        let u = status.utilization.clone().unwrap();
        assert_eq!(u.current, Some(0.9));
        assert!((u.avg5m.unwrap() - 0.9).abs() < 1e-9);
        assert_eq!(u.avg30d, None, "no full review window yet");
        assert_eq!(status.recent_utilization.len(), 21);
        // A hold writes no entry and keeps lastScaleTime.
        assert!(
            record(
                &mut status,
                &decision(27, false, reasons::RECONCILED),
                &h,
                None,
                30,
                t(315)
            )
            .is_none()
        );
        assert_eq!(status.history.len(), 2);
        assert_eq!(
            status.last_scale_time.as_deref(),
            Some("2026-11-01T00:05:00Z")
        );
        // The review stamps its time; the log keeps the newest MAX_HISTORY entries.
        record(
            &mut status,
            &decision(32, true, reasons::MONTHLY_REVIEW),
            &h,
            None,
            30,
            t(330),
        );
        assert_eq!(
            status.last_review_time.as_deref(),
            Some("2026-11-01T00:05:30Z")
        );
        for k in 0..30 {
            record(
                &mut status,
                &decision(33 + k, true, reasons::SPEC_CHANGED),
                &h,
                None,
                30,
                t(400 + i64::from(k)),
            );
        }
        assert_eq!(status.history.len(), MAX_HISTORY);
        assert_eq!(status.history.last().unwrap().to_pool_size, 62);
        // It all survives a restart: the history reads back from the status.
        let back = History::from_status(&status);
        assert_eq!(back.recent().len(), h.recent().len());
    }
}
