use super::*;
use crate::autoscale::history::Sample;
use poolwarden_crds::conditions::status;

fn t(secs: i64) -> Timestamp {
    Timestamp::from_second(1_793_491_200 + secs).unwrap()
}

fn spec() -> AutoscalingSpec {
    AutoscalingSpec {
        enabled: true,
        ..AutoscalingSpec::default()
    }
}

fn sz(pool_size: u32, max_overflow: u32) -> Sizing {
    Sizing {
        pool_size,
        max_overflow,
    }
}

/// A history with a constant (utilization, demand) every 15 s over [from, to].
fn constant(from: i64, to: i64, u: f64, d: u32) -> History {
    let mut h = History::new();
    extend(&mut h, from, to, u, d);
    h
}

fn extend(h: &mut History, from: i64, to: i64, u: f64, d: u32) {
    let mut x = from;
    while x <= to {
        h.add(
            Sample {
                time: t(x),
                utilization: u,
                demand: d,
            },
            30,
        );
        x += 15;
    }
}

struct Case<'a> {
    a: &'a AutoscalingSpec,
    pool: &'a PoolSpec,
    current: Option<Sizing>,
    h: &'a History,
    limit: Option<u32>,
    now: i64,
    paused: bool,
    last_scale: Option<i64>,
    last_review: Option<i64>,
}

impl<'a> Case<'a> {
    fn new(a: &'a AutoscalingSpec, pool: &'a PoolSpec, h: &'a History) -> Self {
        Self {
            a,
            pool,
            current: Some(sz(20, 10)),
            h,
            limit: Some(1000),
            now: 0,
            paused: false,
            last_scale: None,
            last_review: None,
        }
    }
    fn run(&self) -> Decision {
        decide(&DecisionInput {
            autoscaling: self.a,
            pool: self.pool,
            current: self.current,
            history: self.h,
            per_pod_limit: self.limit,
            now: t(self.now),
            paused: self.paused,
            last_scale_time: self.last_scale.map(t),
            last_review_time: self.last_review.map(t),
        })
    }
}

#[test]
fn initial_sizing_from_concurrent_users() {
    let a = AutoscalingSpec {
        concurrent_users: Some(40),
        ..spec()
    };
    let pool = PoolSpec::default();
    let h = History::new();
    let mut c = Case::new(&a, &pool, &h);
    c.current = None;
    let d = c.run();
    assert_eq!(
        (d.sizing, d.reason, d.changed),
        (sz(60, 30), reasons::INITIAL_SIZING, true)
    );
    // 13 users: the hazard log's 20/10.
    let a = AutoscalingSpec {
        concurrent_users: Some(13),
        ..spec()
    };
    let mut c = Case::new(&a, &pool, &h);
    c.current = None;
    assert_eq!(c.run().sizing, sz(20, 10));
    // Without users: spec.pool.poolSize, overflow by formula.
    let pool25 = PoolSpec {
        pool_size: 25,
        max_overflow: 2,
        ..PoolSpec::default()
    };
    let a = spec();
    let mut c = Case::new(&a, &pool25, &h);
    c.current = None;
    let d = c.run();
    assert_eq!((d.sizing, d.reason), (sz(25, 13), reasons::INITIAL_SIZING));
    // Initial sizing is clamped like everything else.
    let a = AutoscalingSpec {
        concurrent_users: Some(1000),
        ..spec()
    };
    let mut c = Case::new(&a, &pool, &h);
    c.current = None;
    let d = c.run();
    assert_eq!(d.sizing, sz(100, 50));
    assert!(d.at_max);
    c.limit = Some(87);
    let d = c.run();
    assert_eq!(d.sizing, sz(87, 0));
    assert!(d.budget_limited);
}

#[test]
fn sustained_high_utilization_scales_up_at_once() {
    let a = spec();
    let pool = PoolSpec::default();
    // 20-pool at 0.9 with 4 waiting: demand 22 -> ceil(22 × 1.5) = 33.
    let h = constant(0, 60, 0.9, 22);
    let mut c = Case::new(&a, &pool, &h);
    c.now = 60;
    let d = c.run();
    assert_eq!(
        (d.sizing, d.reason, d.changed),
        (sz(33, 17), reasons::SUSTAINED_HIGH_UTILIZATION, true)
    );
    // Low demand still grows by at least one step.
    let h = constant(0, 60, 0.85, 17);
    let c = Case {
        now: 60,
        ..Case::new(&a, &pool, &h)
    };
    assert_eq!(
        c.run().sizing,
        sz(26, 13),
        "max(20 + 5, ceil(17 × 1.5) = 26)"
    );
    let h = constant(0, 60, 0.81, 10);
    let c = Case {
        now: 60,
        ..Case::new(&a, &pool, &h)
    };
    assert_eq!(c.run().sizing, sz(25, 13));
}

#[test]
fn scale_up_threshold_and_duration_at_exact_boundaries() {
    let a = spec();
    let pool = PoolSpec::default();
    let table = [
        // (utilization, history end / now, expected pool)
        (0.8, 60, 20),    // exactly at the threshold: not above
        (0.8001, 60, 25), // just above, for exactly 60 s
        (0.9, 45, 20),    // 45 s of 60
        (0.9, 59, 20),    // samples 0..45 and now 59: 45 s of run
    ];
    for (u, end, want) in table {
        let h = constant(0, end, u, 16);
        let c = Case {
            now: end,
            ..Case::new(&a, &pool, &h)
        };
        assert_eq!(c.run().sizing.pool_size, want, "u={u} end={end}");
    }
}

#[test]
fn scale_up_is_stable_when_reapplied_and_counts_only_new_samples() {
    let a = spec();
    let pool = PoolSpec::default();
    let mut h = constant(0, 60, 0.9, 20);
    let first = Case {
        now: 60,
        ..Case::new(&a, &pool, &h)
    }
    .run();
    assert_eq!(first.sizing, sz(30, 15));
    // Re-applied with the same data: nothing more.
    let again = Case {
        now: 60,
        current: Some(first.sizing),
        last_scale: Some(60),
        ..Case::new(&a, &pool, &h)
    }
    .run();
    assert_eq!((again.sizing, again.changed), (first.sizing, false));
    // Still above 80 % at the new size for another 60 s: up again.
    extend(&mut h, 75, 135, 0.9, 30);
    let c = Case {
        now: 120,
        current: Some(first.sizing),
        last_scale: Some(60),
        ..Case::new(&a, &pool, &h)
    };
    assert_eq!(c.run().sizing, first.sizing, "75..120 is 45 s");
    let c = Case {
        now: 135,
        current: Some(first.sizing),
        last_scale: Some(60),
        ..Case::new(&a, &pool, &h)
    };
    assert_eq!(c.run().sizing, sz(45, 23));
}

#[test]
fn zero_traffic_shrinks_step_by_step_to_min() {
    let a = spec();
    let pool = PoolSpec::default();
    let h = constant(0, 3600, 0.0, 0);
    let d = Case {
        now: 3600,
        ..Case::new(&a, &pool, &h)
    }
    .run();
    assert_eq!(
        (d.sizing, d.reason),
        (sz(15, 8), reasons::SUSTAINED_LOW_UTILIZATION)
    );
    // Not again within the stabilization window after that change.
    let d = Case {
        now: 3600,
        current: Some(d.sizing),
        last_scale: Some(3600),
        ..Case::new(&a, &pool, &h)
    }
    .run();
    assert!(!d.changed);
    // At minPoolSize: stays, and says so.
    let h = constant(0, 3600, 0.0, 0);
    let d = Case {
        now: 3600,
        current: Some(sz(5, 3)),
        ..Case::new(&a, &pool, &h)
    }
    .run();
    assert_eq!((d.sizing, d.changed), (sz(5, 3), false));
    let d = Case {
        now: 3600,
        current: Some(sz(7, 4)),
        ..Case::new(&a, &pool, &h)
    }
    .run();
    assert_eq!(d.sizing, sz(5, 3));
    assert!(d.at_min);
}

#[test]
fn scale_down_needs_the_full_stabilization_and_the_threshold() {
    let a = spec();
    let pool = PoolSpec::default();
    let table = [
        // (utilization, end, last scale, expected pool)
        (0.1, 3585, None, 20), // 59 min 45 s
        (0.1, 3600, None, 15), // exactly one hour
        (0.3, 3600, None, 20), // exactly at the threshold: not below
        (0.2999, 3600, None, 15),
        (0.1, 3600, Some(1), 20), // changed 1 s in: the window restarts
        (0.1, 7200, Some(1), 15),
    ];
    for (u, end, last, want) in table {
        let h = constant(0, end, u, 2);
        let c = Case {
            now: end,
            last_scale: last,
            ..Case::new(&a, &pool, &h)
        };
        assert_eq!(
            c.run().sizing.pool_size,
            want,
            "u={u} end={end} last={last:?}"
        );
    }
}

#[test]
fn scale_down_keeps_peak_demand_below_the_scale_up_threshold() {
    // min 1 makes the danger real: 6 -> 1 would put 1 busy connection at 100 %.
    let a = AutoscalingSpec {
        min_pool_size: 1,
        ..spec()
    };
    let pool = PoolSpec::default();
    let h = constant(0, 3600, 0.1667, 1);
    let d = Case {
        now: 3600,
        current: Some(sz(6, 3)),
        ..Case::new(&a, &pool, &h)
    }
    .run();
    // mid = (0.8 + 0.3) / 2 = 0.55: keep >= ceil(1 / 0.55) = 2.
    assert_eq!(d.sizing, sz(2, 1));
    // A shrink that cannot keep the peak low does not happen.
    let h = constant(0, 3600, 0.29, 11);
    let d = Case {
        now: 3600,
        current: Some(sz(20, 10)),
        ..Case::new(&a, &pool, &h)
    }
    .run();
    assert_eq!((d.sizing, d.changed), (sz(20, 10), false));
}

#[test]
fn monthly_review_adds_a_step_once_per_window() {
    let a = spec();
    let pool = PoolSpec::default();
    let day = 86_400;
    let mut h = History::new().with_max_gap(900);
    // 30 days at 0.65 on average (never above 80 %, never below 30 %), a sample every 10 min.
    for k in 0..(30 * 144 + 1) {
        let u = if k % 2 == 0 { 0.6 } else { 0.7 };
        h.add(
            Sample {
                time: t(k * 600),
                utilization: u,
                demand: 13,
            },
            30,
        );
    }
    let now = 30 * day;
    let d = Case {
        now,
        ..Case::new(&a, &pool, &h)
    }
    .run();
    assert_eq!(
        (d.sizing, d.reason, d.reviewed),
        (sz(25, 13), reasons::MONTHLY_REVIEW, true)
    );
    // Once per window: re-applied, nothing more.
    let again = Case {
        now,
        last_review: Some(now),
        current: Some(d.sizing),
        last_scale: Some(now),
        ..Case::new(&a, &pool, &h)
    };
    assert_eq!(
        (again.run().reason, again.run().changed),
        (reasons::RECONCILED, false)
    );
    // A review 29 days ago blocks it; 30 days ago does not.
    let c = Case {
        now,
        last_review: Some(now - 29 * day),
        ..Case::new(&a, &pool, &h)
    };
    assert_eq!(c.run().reason, reasons::RECONCILED);
    let c = Case {
        now,
        last_review: Some(now - 30 * day),
        ..Case::new(&a, &pool, &h)
    };
    assert_eq!(c.run().reason, reasons::MONTHLY_REVIEW);
    // Exactly at the threshold: no review.
    let mut flat = History::new().with_max_gap(900);
    for k in 0..(30 * 144 + 1) {
        flat.add(
            Sample {
                time: t(k * 600),
                utilization: 0.6,
                demand: 12,
            },
            30,
        );
    }
    let d = Case {
        now,
        ..Case::new(&a, &pool, &flat)
    }
    .run();
    assert_eq!((d.reason, d.changed), (reasons::RECONCILED, false));
    // Not before a whole window of data.
    let mut young = History::new().with_max_gap(900);
    for k in 0..(20 * 144) {
        young.add(
            Sample {
                time: t(k * 600),
                utilization: 0.7,
                demand: 14,
            },
            30,
        );
    }
    let d = Case {
        now: 20 * day - 600,
        ..Case::new(&a, &pool, &young)
    }
    .run();
    assert_eq!(d.reason, reasons::RECONCILED);
}

#[test]
fn budget_binds_overflow_first_then_pool() {
    let table = [
        // (pool, limit) -> (sizing, limited)
        ((20, 30), (sz(20, 10), false)),
        ((20, 29), (sz(20, 9), true)),
        ((20, 20), (sz(20, 0), true)),
        ((20, 19), (sz(19, 0), true)),
        ((20, 0), (sz(0, 0), true)),
        ((1, 2), (sz(1, 1), false)),
    ];
    for ((pool, limit), want) in table {
        assert_eq!(fit(pool, limit), want, "pool={pool} limit={limit}");
    }
}

#[test]
fn scale_up_stops_at_the_budget_and_reports_it() {
    let a = spec();
    let pool = PoolSpec::default();
    let h = constant(0, 60, 0.95, 25);
    // 3 replicas on max_connections 100, 3 superuser, 10 reserved: 29 per pod.
    let d = Case {
        now: 60,
        limit: Some(29),
        ..Case::new(&a, &pool, &h)
    }
    .run();
    assert_eq!(
        d.sizing,
        sz(29, 0),
        "wants 38: overflow gives way first, the pool fills 29"
    );
    assert!(d.budget_limited);
    assert_eq!(
        d.budget_condition(),
        (status::TRUE, reasons::BUDGET_EXCEEDED)
    );
    assert_eq!(d.reason, reasons::SUSTAINED_HIGH_UTILIZATION);
    let d = Case {
        now: 60,
        limit: Some(45),
        ..Case::new(&a, &pool, &h)
    }
    .run();
    assert_eq!(d.sizing, sz(38, 7));
    assert!(d.budget_limited && d.message.contains("budget"));
    let d = Case {
        now: 60,
        limit: Some(1000),
        ..Case::new(&a, &pool, &h)
    }
    .run();
    assert_eq!(
        d.budget_condition(),
        (status::FALSE, reasons::WITHIN_BUDGET)
    );
}

#[test]
fn budget_smaller_than_min_pool_size_wins_and_says_so() {
    let a = AutoscalingSpec {
        min_pool_size: 10,
        ..spec()
    };
    let pool = PoolSpec::default();
    let h = constant(0, 60, 0.5, 5);
    let d = Case {
        now: 60,
        limit: Some(6),
        ..Case::new(&a, &pool, &h)
    }
    .run();
    assert_eq!((d.sizing, d.reason), (sz(6, 0), reasons::BUDGET_EXCEEDED));
    assert!(d.budget_limited && d.changed);
    assert!(
        d.message.contains("smaller than minPoolSize"),
        "{}",
        d.message
    );
}

#[test]
fn missing_metrics_hold_the_current_size() {
    let a = spec();
    let pool = PoolSpec::default();
    // All pods unscrapable: no sample at all, or the last one is stale.
    let empty = History::new();
    let d = Case {
        now: 3600,
        current: Some(sz(30, 15)),
        ..Case::new(&a, &pool, &empty)
    }
    .run();
    assert_eq!(
        (d.sizing, d.reason, d.held, d.changed),
        (sz(30, 15), reasons::METRICS_UNAVAILABLE, true, false)
    );
    let h = constant(0, 3600, 0.95, 40);
    let d = Case {
        now: 3661,
        current: Some(sz(30, 15)),
        ..Case::new(&a, &pool, &h)
    }
    .run();
    assert_eq!(
        (d.sizing, d.reason),
        (sz(30, 15), reasons::METRICS_UNAVAILABLE)
    );
    // ...but the budget still applies.
    let d = Case {
        now: 3661,
        current: Some(sz(30, 15)),
        limit: Some(40),
        ..Case::new(&a, &pool, &h)
    }
    .run();
    assert_eq!((d.sizing, d.reason), (sz(30, 10), reasons::BUDGET_EXCEEDED));
}

#[test]
fn paused_freezes_even_under_load_and_over_budget() {
    let a = spec();
    let pool = PoolSpec::default();
    let h = constant(0, 600, 0.99, 40);
    let d = Case {
        now: 600,
        paused: true,
        ..Case::new(&a, &pool, &h)
    }
    .run();
    assert_eq!(
        (d.sizing, d.reason, d.held, d.changed),
        (sz(20, 10), reasons::PAUSED, true, false)
    );
    let d = Case {
        now: 600,
        paused: true,
        limit: Some(25),
        ..Case::new(&a, &pool, &h)
    }
    .run();
    assert_eq!(d.sizing, sz(20, 10));
    assert!(d.budget_limited && d.over_budget);
    assert_eq!(d.reason, reasons::PAUSED);
}

#[test]
fn disabled_keeps_the_explicit_size_and_reports_the_budget() {
    let a = AutoscalingSpec::default();
    let pool = PoolSpec {
        pool_size: 40,
        max_overflow: 20,
        ..PoolSpec::default()
    };
    let h = constant(0, 3600, 0.99, 80);
    let d = Case {
        now: 3600,
        ..Case::new(&a, &pool, &h)
    }
    .run();
    assert_eq!(
        (d.sizing, d.reason, d.changed),
        (sz(40, 20), reasons::SPEC_CHANGED, true)
    );
    assert!(!d.budget_limited);
    let d = Case {
        now: 3600,
        current: Some(sz(40, 20)),
        ..Case::new(&a, &pool, &h)
    }
    .run();
    assert_eq!((d.reason, d.changed), (reasons::RECONCILED, false));
    let d = Case {
        now: 3600,
        current: Some(sz(40, 20)),
        limit: Some(50),
        ..Case::new(&a, &pool, &h)
    }
    .run();
    assert_eq!(d.sizing, sz(40, 20), "an explicit size is never overridden");
    assert!(d.budget_limited && d.over_budget);
    assert_eq!(d.reason, reasons::BUDGET_EXCEEDED);
    assert!(
        d.message.contains("exceeds the connection budget"),
        "{}",
        d.message
    );
}

#[test]
fn unknown_budget_never_grows() {
    let a = spec();
    let pool = PoolSpec::default();
    let h = constant(0, 60, 0.95, 30);
    let d = Case {
        now: 60,
        limit: None,
        ..Case::new(&a, &pool, &h)
    }
    .run();
    assert_eq!((d.sizing, d.changed), (sz(20, 10), false));
    assert!(d.budget_unknown);
    assert_eq!(d.budget_condition().0, status::UNKNOWN);
    let h = constant(0, 3600, 0.05, 1);
    let d = Case {
        now: 3600,
        limit: None,
        ..Case::new(&a, &pool, &h)
    }
    .run();
    assert_eq!(d.sizing, sz(15, 8), "shrinks still apply");
}

#[test]
fn spec_bounds_changed_under_a_running_pool() {
    let a = AutoscalingSpec {
        max_pool_size: 25,
        ..spec()
    };
    let pool = PoolSpec::default();
    let h = constant(0, 60, 0.5, 10);
    let d = Case {
        now: 60,
        current: Some(sz(40, 20)),
        ..Case::new(&a, &pool, &h)
    }
    .run();
    assert_eq!((d.sizing, d.reason), (sz(25, 13), reasons::SPEC_CHANGED));
}

#[test]
fn paused_annotation_is_read_from_the_policy() {
    let yaml = |ann: &str| {
        format!(
            "apiVersion: poolwarden.dev/v1alpha1\nkind: DbPoolPolicy\nmetadata: {{name: p, namespace: n{ann}}}\n\
             spec: {{databases: [{{name: c, host: h, credentialsSecretRef: {{name: s}}}}]}}\n\
             status: {{poolSize: 25, maxOverflow: 13, lastScaleTime: '2026-11-01T00:01:00Z'}}\n"
        )
    };
    let p: DbPoolPolicy = serde_yaml_ng::from_str(&yaml("")).unwrap();
    assert!(!is_paused(&p));
    let h = History::new();
    let input = DecisionInput::for_policy(&p, &h, Some(50), t(120));
    assert_eq!(input.current, Some(sz(25, 13)));
    assert_eq!(input.last_scale_time, Some(t(60)));
    assert!(!input.paused);
    let p: DbPoolPolicy =
        serde_yaml_ng::from_str(&yaml(", annotations: {poolwarden.dev/paused: 'true'}")).unwrap();
    assert!(is_paused(&p));
    let p: DbPoolPolicy =
        serde_yaml_ng::from_str(&yaml(", annotations: {poolwarden.dev/paused: 'false'}")).unwrap();
    assert!(!is_paused(&p));
}

#[test]
fn alerts_follow_the_hazard_log_thresholds() {
    let alerting = poolwarden_crds::AlertingSpec::default();
    let table = [
        // (utilization, seconds held, level)
        (0.85, 285, AlertLevel::None),
        (0.85, 300, AlertLevel::Warning),
        (0.8, 600, AlertLevel::None), // exactly 80 %: not above
        (0.95, 105, AlertLevel::None),
        (0.95, 120, AlertLevel::Critical),
        (0.9, 600, AlertLevel::Warning), // exactly 90 %: warning only
        (0.5, 600, AlertLevel::None),
    ];
    for (u, held, want) in table {
        let h = constant(0, held, u, 10);
        let a = evaluate_alerts(&h, &alerting, t(held));
        assert_eq!(a.level, want, "u={u} held={held}");
    }
    // No data: no alert (and no zero-load claim either: the caller reports MetricsUnavailable).
    assert_eq!(
        evaluate_alerts(&History::new(), &alerting, t(0)).level,
        AlertLevel::None
    );
}

mod props;
mod simulation;
