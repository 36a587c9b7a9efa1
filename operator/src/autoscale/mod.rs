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
    status.utilization = Some(UtilizationStatus {
        current: history
            .is_fresh(now)
            .then(|| history.latest().map(|s| s.utilization))
            .flatten(),
        avg5m: history.average(5 * 60, now),
        avg1h: history.average(60 * 60, now),
        avg30d: history.review_average(review_window_days, now),
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
