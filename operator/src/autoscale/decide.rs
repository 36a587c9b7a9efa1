//! The decision engine: a pure function of (policy spec, current size, history, budget, now,
//! paused) → decision. No I/O, no clock: everything arrives in [`DecisionInput`].
//!
//! Rules, first match wins (CONTRACT §3, issue 8, the hazard log's capacity policy):
//!
//! | # | when | result | reason |
//! |---|---|---|---|
//! | 1 | `autoscaling.enabled` is false | `pool.poolSize`/`pool.maxOverflow` as written | `SpecChanged`/`Reconciled` |
//! | 2 | nothing decided yet (also while paused: sizing is not scaling) | `ceil(users × 1.5)` with `concurrentUsers`, else `pool.poolSize` | `InitialSizing` |
//! | 3 | annotation `poolwarden.dev/paused: "true"` | hold | `Paused` |
//! | 4 | no fresh sample (no pod reporting) | hold | `MetricsUnavailable` |
//! | 5 | busiest pool above `scaleUp.utilizationAbove` for `sustainedSeconds` | `max(size + review.step, ceil(peak demand × 1.5))` | `SustainedHighUtilization` |
//! | 6 | review due (none within `windowDays`; a scale-up while one is due counts as it) and the average of the `windowDays` complete days before today above `review.utilizationAbove` | `size + review.step` | `MonthlyReview` |
//! | 7 | below `scaleDown.utilizationBelow` for `stabilizationSeconds`, and no change for as long | `size − scaleDown.step` at most | `SustainedLowUtilization` |
//! | – | otherwise | hold | `Reconciled` |
//!
//! Then, with autoscaling enabled: clamp to `[minPoolSize, maxPoolSize]`, set
//! `maxOverflow = ceil(poolSize × 0.5)` and fit both into the per-pod budget. **Order when the
//! budget binds: maxOverflow shrinks first** (burst room is given up before steady capacity),
//! then poolSize. A budget smaller than minPoolSize wins over minPoolSize: exceeding the
//! database's max_connections fails *every* new connection of the database, which is worse
//! than a small pool; the decision says so in its message. A size changed only by the budget
//! has the reason `BudgetExceeded`. Whenever the budget binds, `budget_limited` is set (the
//! caller sets `BudgetLimited=True` and emits an Event: time to add database capacity).
//!
//! With autoscaling **disabled** the engine never overrides an explicit size: a platform team
//! that pinned 20/10 by hand expects exactly 20/10 in every sidecar, and a silent override
//! would hide the problem. When that size does not fit the budget, `budget_limited` and
//! `over_budget` are set with the reason `BudgetExceeded`, so `BudgetLimited=True` and the
//! Event tell them loudly. The same holds while paused: frozen means frozen.
//!
//! Hysteresis: samples taken before the last size change never count towards a sustained
//! run (so a decision re-applied with the same data is stable); a scale-down needs the whole
//! stabilization window since the last change of either direction; and a scale-down stops at
//! the size that keeps the window's peak demand at or below the midpoint between the
//! thresholds, so the shrink cannot trigger a scale-up under the same load.
//!
//! With an unknown budget (the database could not be asked and the spec sets no values) the
//! engine never grows the pool: it cannot prove that growth fits. Shrinks still apply.

use jiff::Timestamp;
use poolwarden_crds::capacity::{max_overflow_for_pool, pool_size_for_users};
use poolwarden_crds::conditions::reasons;
use poolwarden_crds::{AutoscalingSpec, DbPoolPolicy, PoolSpec};

use super::history::{History, Threshold};

/// The annotation that freezes scaling when set to `"true"`.
pub const PAUSED_ANNOTATION: &str = "poolwarden.dev/paused";

/// A pool size and overflow, per sidecar pool.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sizing {
    /// pool_size.
    pub pool_size: u32,
    /// max_overflow.
    pub max_overflow: u32,
}

impl Sizing {
    /// Connections one pool may open: pool_size + max_overflow.
    pub fn total(&self) -> u32 {
        self.pool_size.saturating_add(self.max_overflow)
    }
}

/// Everything a decision depends on.
#[derive(Clone, Copy, Debug)]
pub struct DecisionInput<'a> {
    /// `spec.autoscaling`.
    pub autoscaling: &'a AutoscalingSpec,
    /// `spec.pool` (the explicit or starting size).
    pub pool: &'a PoolSpec,
    /// The size the sidecars run with now (`status.poolSize`/`maxOverflow`); `None` when
    /// nothing was decided yet.
    pub current: Option<Sizing>,
    /// The utilization history.
    pub history: &'a History,
    /// The per-pod budget (largest poolSize + maxOverflow per pool); `None` when unknown.
    pub per_pod_limit: Option<u32>,
    /// The decision time.
    pub now: Timestamp,
    /// The paused annotation is set.
    pub paused: bool,
    /// When the size last changed (`status.lastScaleTime`).
    pub last_scale_time: Option<Timestamp>,
    /// When the review last added a step (`status.lastReviewTime`).
    pub last_review_time: Option<Timestamp>,
}

impl<'a> DecisionInput<'a> {
    /// Reads spec, status and annotations of `policy`. Unparsable times count as absent.
    pub fn for_policy(
        policy: &'a DbPoolPolicy,
        history: &'a History,
        per_pod_limit: Option<u32>,
        now: Timestamp,
    ) -> Self {
        let status = policy.status.as_ref();
        let current = status.and_then(|s| {
            Some(Sizing {
                pool_size: s.pool_size?,
                max_overflow: s.max_overflow?,
            })
        });
        let time = |t: Option<&String>| t.and_then(|t| t.parse::<Timestamp>().ok());
        Self {
            autoscaling: &policy.spec.autoscaling,
            pool: &policy.spec.pool,
            current,
            history,
            per_pod_limit,
            now,
            paused: is_paused(policy),
            last_scale_time: time(status.and_then(|s| s.last_scale_time.as_ref())),
            last_review_time: time(status.and_then(|s| s.last_review_time.as_ref())),
        }
    }
}

/// Whether the policy carries `poolwarden.dev/paused: "true"`.
pub fn is_paused(policy: &DbPoolPolicy) -> bool {
    policy
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(PAUSED_ANNOTATION))
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
}

/// The outcome of one decision.
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    /// The size every sidecar should run with.
    pub sizing: Sizing,
    /// Why (a constant of `poolwarden_crds::conditions::reasons`): the Event and
    /// `status.history` reason when the size changed.
    pub reason: &'static str,
    /// A sentence for the Event / condition message.
    pub message: String,
    /// The size differs from the current one (or nothing was decided yet).
    pub changed: bool,
    /// The connection budget binds or is exceeded: set `BudgetLimited=True`, emit an Event.
    pub budget_limited: bool,
    /// The size exceeds the budget (explicit size with autoscaling off, or paused).
    pub over_budget: bool,
    /// poolSize is at maxPoolSize and a rule wanted more.
    pub at_max: bool,
    /// poolSize is at minPoolSize and a rule wanted less.
    pub at_min: bool,
    /// Scaling was held (paused or no metrics).
    pub held: bool,
    /// The monthly review ran: store `now` in `status.lastReviewTime`.
    pub reviewed: bool,
    /// The per-pod budget was unknown, so growth was held.
    pub budget_unknown: bool,
}

impl Decision {
    /// The BudgetLimited condition: (status, reason), `BudgetExceeded` when limited.
    pub fn budget_condition(&self) -> (&'static str, &'static str) {
        use poolwarden_crds::conditions::status;
        if self.budget_limited {
            (status::TRUE, reasons::BUDGET_EXCEEDED)
        } else if self.budget_unknown {
            (status::UNKNOWN, reasons::METRICS_UNAVAILABLE)
        } else {
            (status::FALSE, reasons::WITHIN_BUDGET)
        }
    }
}

/// Decides the size. Pure; see the module documentation for the rules.
pub fn decide(input: &DecisionInput<'_>) -> Decision {
    let a = input.autoscaling;
    if !a.enabled {
        let sizing = Sizing {
            pool_size: input.pool.pool_size,
            max_overflow: input.pool.max_overflow,
        };
        let changed = input.current != Some(sizing);
        let reason = if changed {
            reasons::SPEC_CHANGED
        } else {
            reasons::RECONCILED
        };
        return explicit(
            input,
            sizing,
            reason,
            "autoscaling is disabled: pool as in the spec",
        );
    }
    let Some(current) = input.current else {
        let (pool, why) = match a.concurrent_users {
            Some(users) => (
                pool_size_for_users(users),
                format!("initial size from {users} concurrent users (× 1.5)"),
            ),
            None => (
                input.pool.pool_size,
                "initial size from spec.pool.poolSize".to_string(),
            ),
        };
        let mut d = finish(input, pool, reasons::INITIAL_SIZING, why, false);
        d.changed = true;
        return d;
    };
    if input.paused {
        let mut d = explicit(
            input,
            current,
            reasons::PAUSED,
            "scaling is paused by annotation",
        );
        d.held = true;
        return d;
    }
    if !input.history.is_fresh(input.now) {
        let mut d = finish(
            input,
            current.pool_size,
            reasons::METRICS_UNAVAILABLE,
            "no pod reported metrics recently: holding the current size".into(),
            false,
        );
        d.held = true;
        return d;
    }

    let h = input.history;
    let now = input.now;
    let cur = current.pool_size;
    let since = input.last_scale_time;
    let up = &a.scale_up;
    let down = &a.scale_down;
    let up_secs = i64::from(up.sustained_seconds);
    let review_due = input.last_review_time.is_none_or(|t| {
        now.as_second() - t.as_second() >= i64::from(a.review.window_days) * 86_400
    });
    let review_avg = h
        .review_average(a.review.window_days, now)
        .filter(|avg| review_due && *avg > a.review.utilization_above);
    if h.sustained(Threshold::Above(up.utilization_above), up_secs, now, since) {
        // The window reaches back at least one sample interval before the sustain started.
        let window = up_secs.max(h.max_gap());
        let demand = h.peak_demand(window, now).unwrap_or(0);
        let for_demand = pool_size_for_users(demand);
        let target = cur.saturating_add(a.review.step).max(for_demand);
        let why = format!(
            "utilization above {:.0} % for {}s (peak demand {demand}): pool {cur} -> {target}",
            up.utilization_above * 100.0,
            up.sustained_seconds
        );
        // A scale-up adds at least one review step: it counts as a due review too, so the
        // review does not add another step right after it.
        let reviewed = review_avg.is_some();
        return finish(
            input,
            target,
            reasons::SUSTAINED_HIGH_UTILIZATION,
            why,
            reviewed,
        );
    }

    if let Some(avg) = review_avg {
        let target = cur.saturating_add(a.review.step);
        let why = format!(
            "{}-day average utilization {:.0} % above {:.0} %: pool {cur} -> {target}",
            a.review.window_days,
            avg * 100.0,
            a.review.utilization_above * 100.0
        );
        return finish(input, target, reasons::MONTHLY_REVIEW, why, true);
    }

    let stab = i64::from(down.stabilization_seconds);
    let quiet_since_change = since.is_none_or(|t| now.as_second() - t.as_second() >= stab);
    if quiet_since_change && h.sustained(Threshold::Below(down.utilization_below), stab, now, since)
    {
        let window = stab.max(h.max_gap());
        let peak = h.peak_demand(window, now).unwrap_or(0);
        // Keep the peak demand at or below the midpoint between the thresholds.
        let mid = (up.utilization_above + down.utilization_below) / 2.0;
        let keep = if mid > 0.0 {
            (f64::from(peak) / mid).ceil() as u32
        } else {
            cur
        };
        let target = cur.saturating_sub(down.step).max(keep).max(1);
        if target < cur {
            let why = format!(
                "utilization below {:.0} % for {}s (peak demand {peak}): pool {cur} -> {target}",
                down.utilization_below * 100.0,
                down.stabilization_seconds
            );
            return finish(
                input,
                target,
                reasons::SUSTAINED_LOW_UTILIZATION,
                why,
                false,
            );
        }
    }
    finish(
        input,
        cur,
        reasons::RECONCILED,
        format!("pool stays at {cur}"),
        false,
    )
}

/// Autoscaled result: clamp to [min, max], overflow by formula, fit into the budget.
fn finish(
    input: &DecisionInput<'_>,
    wanted: u32,
    reason: &'static str,
    why: String,
    reviewed: bool,
) -> Decision {
    let a = input.autoscaling;
    let lo = a.min_pool_size.max(1);
    let hi = a.max_pool_size.max(lo);
    let pool = wanted.clamp(lo, hi);
    let at_max = wanted > hi && pool == hi;
    let at_min = wanted < lo && pool == lo;
    let mut notes = Vec::new();
    if at_max {
        notes.push(format!("held at maxPoolSize {hi}"));
    }
    if at_min {
        notes.push(format!("held at minPoolSize {lo}"));
    }

    let mut budget_unknown = false;
    let (sizing, budget_limited) = match (input.per_pod_limit, input.current) {
        (Some(limit), _) => fit(pool, limit),
        // Unknown budget: never more connections than now (the current total acts as the
        // limit, without claiming that the budget binds).
        (None, Some(c)) => {
            budget_unknown = true;
            if pool > c.pool_size {
                notes.push("the connection budget is unknown: not growing".into());
            }
            (fit(pool.min(c.pool_size), c.total()).0, false)
        }
        (None, None) => {
            budget_unknown = true;
            (
                Sizing {
                    pool_size: pool,
                    max_overflow: max_overflow_for_pool(pool),
                },
                false,
            )
        }
    };
    if budget_limited {
        let limit = input.per_pod_limit.unwrap_or(0);
        notes.push(format!(
            "connection budget binds: at most {limit} connections per pod pool, \
             pool {} + overflow {}",
            sizing.pool_size, sizing.max_overflow
        ));
        if limit < lo {
            notes.push(format!(
                "the budget ({limit}) is smaller than minPoolSize ({lo}): staying within \
                 the budget; add database capacity or lower the replicas"
            ));
        }
    }
    let changed = input.current != Some(sizing);
    // A hold that still moved the size was moved by the budget or by a changed spec
    // (minPoolSize/maxPoolSize, or an overflow that did not follow the formula).
    let hold = reason == reasons::RECONCILED || reason == reasons::METRICS_UNAVAILABLE;
    let reason = match (hold && changed, budget_limited) {
        (true, true) => reasons::BUDGET_EXCEEDED,
        (true, false) => reasons::SPEC_CHANGED,
        (false, _) => reason,
    };
    let mut message = why;
    for n in notes {
        message.push_str("; ");
        message.push_str(&n);
    }
    Decision {
        sizing,
        reason,
        message,
        changed,
        budget_limited,
        over_budget: false,
        at_max,
        at_min,
        held: false,
        // A review that could not change anything still counts as done for this window.
        reviewed,
        budget_unknown,
    }
}

/// An explicit size (autoscaling off, or paused): never overridden, only reported.
fn explicit(
    input: &DecisionInput<'_>,
    sizing: Sizing,
    reason: &'static str,
    why: &str,
) -> Decision {
    let over = input.per_pod_limit.is_some_and(|l| sizing.total() > l);
    let mut message = why.to_string();
    let mut reason = reason;
    if over {
        let limit = input.per_pod_limit.unwrap_or(0);
        message.push_str(&format!(
            "; pool {} + overflow {} exceeds the connection budget of {limit} per pod pool",
            sizing.pool_size, sizing.max_overflow
        ));
        if reason != reasons::PAUSED {
            reason = reasons::BUDGET_EXCEEDED;
        }
    }
    Decision {
        sizing,
        reason,
        message,
        changed: input.current != Some(sizing),
        budget_limited: over,
        over_budget: over,
        at_max: false,
        at_min: false,
        held: false,
        reviewed: false,
        budget_unknown: input.per_pod_limit.is_none(),
    }
}

/// Fits `pool` and its formula overflow into `limit` connections: overflow shrinks first,
/// then the pool. Returns the sizing and whether the budget bound.
pub fn fit(pool: u32, limit: u32) -> (Sizing, bool) {
    let overflow = max_overflow_for_pool(pool);
    if pool.saturating_add(overflow) <= limit {
        (
            Sizing {
                pool_size: pool,
                max_overflow: overflow,
            },
            false,
        )
    } else if pool <= limit {
        (
            Sizing {
                pool_size: pool,
                max_overflow: limit - pool,
            },
            true,
        )
    } else {
        (
            Sizing {
                pool_size: limit,
                max_overflow: 0,
            },
            true,
        )
    }
}

/// The PoolSaturated alert level.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum AlertLevel {
    /// Below both thresholds (or not for long enough).
    None,
    /// Above the warning threshold for its duration.
    Warning,
    /// Above the critical threshold for its duration.
    Critical,
}

/// The PoolSaturated evaluation.
#[derive(Clone, Debug, PartialEq)]
pub struct Alert {
    /// The level.
    pub level: AlertLevel,
    /// A sentence for the condition message.
    pub message: String,
}

/// Evaluates PoolSaturated from the history (busiest pool), independent of scaling: critical
/// above `critical.utilizationAbove` for `critical.forSeconds`, else warning above
/// `warning.utilizationAbove` for `warning.forSeconds`. Gaps break the run (no alert fires on
/// data that was not seen).
pub fn evaluate_alerts(
    history: &History,
    alerting: &poolwarden_crds::AlertingSpec,
    now: Timestamp,
) -> Alert {
    let check = |t: &poolwarden_crds::AlertThreshold| {
        history.sustained(
            Threshold::Above(t.utilization_above),
            i64::from(t.for_seconds),
            now,
            None,
        )
    };
    let (level, t) = if check(&alerting.critical) {
        (AlertLevel::Critical, &alerting.critical)
    } else if check(&alerting.warning) {
        (AlertLevel::Warning, &alerting.warning)
    } else {
        return Alert {
            level: AlertLevel::None,
            message: "pool utilization normal".into(),
        };
    };
    Alert {
        level,
        message: format!(
            "pool utilization above {:.0} % for more than {}s",
            t.utilization_above * 100.0,
            t.for_seconds
        ),
    }
}

#[cfg(test)]
mod tests;
