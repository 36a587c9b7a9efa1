//! Property tests: whatever the spec, load and budget, the decision stays within the budget
//! and the bounds, is stable when re-applied, and does not oscillate under constant load.

use super::*;
use poolwarden_crds::{ReviewSpec, ScaleDownSpec, ScaleUpSpec};
use proptest::prelude::*;

fn arb_spec() -> impl Strategy<Value = AutoscalingSpec> {
    (
        (
            1u32..20,
            0u32..80,
            any::<bool>(),
            proptest::option::of(1u32..200),
        ),
        (0.5f64..0.95, 0u32..180, 1u32..10),
        (0.05f64..0.45, 0u32..5400, 1u32..10),
        (1u32..40, 0.3f64..0.9),
    )
        .prop_map(
            |(
                (min, span, enabled, users),
                (up, up_secs, rstep),
                (down, stab, dstep),
                (days, rabove),
            )| {
                AutoscalingSpec {
                    enabled,
                    concurrent_users: users,
                    min_pool_size: min,
                    max_pool_size: min + span,
                    scale_up: ScaleUpSpec {
                        utilization_above: up,
                        sustained_seconds: up_secs,
                    },
                    review: ReviewSpec {
                        utilization_above: rabove,
                        window_days: days,
                        step: rstep,
                    },
                    scale_down: ScaleDownSpec {
                        utilization_below: down,
                        stabilization_seconds: stab,
                        step: dstep,
                    },
                    ..AutoscalingSpec::default()
                }
            },
        )
}

/// (utilization, demand, seconds since the previous sample) samples.
fn arb_trace() -> impl Strategy<Value = Vec<(f64, u32, i64)>> {
    proptest::collection::vec(
        (
            0.0f64..1.6,
            0u32..150,
            prop_oneof![8 => Just(15i64), 1 => 1i64..400, 1 => Just(86_400i64)],
        ),
        0..400,
    )
}

fn build(trace: &[(f64, u32, i64)]) -> (History, i64) {
    let mut h = History::new();
    let mut x = 0;
    for &(u, d, gap) in trace {
        x += gap;
        h.add(
            Sample {
                time: t(x),
                utilization: u,
                demand: d,
            },
            30,
        );
    }
    (h, x)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn within_budget_and_bounds_and_stable_when_reapplied(
        a in arb_spec(),
        trace in arb_trace(),
        current in proptest::option::of((1u32..300, 0u32..150)),
        limit in proptest::option::of(0u32..400),
        paused in any::<bool>(),
        lag in 0i64..120,
        last_scale in proptest::option::of(0i64..100_000),
        last_review in proptest::option::of(0i64..3_000_000),
    ) {
        let pool = PoolSpec::default();
        let (h, end) = build(&trace);
        let now = end + lag;
        let mut c = Case::new(&a, &pool, &h);
        c.current = current.map(|(p, o)| sz(p, o));
        c.limit = limit;
        c.now = now;
        c.paused = paused;
        c.last_scale = last_scale.map(|s| s.min(now));
        c.last_review = last_review.map(|s| s.min(now));
        let d = c.run();
        let explicit = !a.enabled || (paused && c.current.is_some());
        if !explicit {
            if let Some(l) = limit {
                prop_assert!(d.sizing.total() <= l, "{d:?} limit {l}");
                // Limited exactly when the budget took something: then it is used to the
                // last connection; otherwise maxOverflow follows the formula.
                if d.budget_limited {
                    prop_assert_eq!(d.sizing.total(), l, "{:?}", d);
                } else {
                    prop_assert_eq!(d.sizing.max_overflow, max_overflow_for_pool(d.sizing.pool_size));
                }
            } else if let Some(cur) = c.current {
                prop_assert!(d.sizing.total() <= cur.total(), "unknown budget grew: {d:?}");
                prop_assert!(d.sizing.pool_size <= cur.pool_size.max(a.max_pool_size));
            }
            prop_assert!(d.sizing.pool_size <= a.max_pool_size.max(a.min_pool_size));
            let below_min_allowed = limit.is_some_and(|l| l < a.min_pool_size)
                || (limit.is_none() && c.current.is_some_and(|cur| cur.pool_size < a.min_pool_size));
            prop_assert!(d.sizing.pool_size >= a.min_pool_size || below_min_allowed, "{d:?}");
        } else {
            // Explicit sizes are never overridden; an excess is reported.
            if let Some(l) = limit {
                prop_assert_eq!(d.over_budget, d.sizing.total() > l);
                prop_assert_eq!(d.budget_limited, d.over_budget);
            }
        }
        // Re-applied, as the reconcile loop would: stable. (Initial sizing is the one-off
        // before any rule: the next pass applies the rules to whatever history exists.)
        if d.reason == reasons::INITIAL_SIZING {
            return Ok(());
        }
        let mut again = Case::new(&a, &pool, &h);
        again.current = Some(d.sizing);
        again.limit = limit;
        again.now = now;
        again.paused = paused;
        again.last_scale = if d.changed { Some(now) } else { c.last_scale };
        again.last_review = if d.reviewed { Some(now) } else { c.last_review };
        let d2 = again.run();
        prop_assert_eq!(d2.sizing, d.sizing, "first {:?}\nthen {:?}", d, d2);
        prop_assert!(!d2.changed, "first {:?}\nthen {:?}", d, d2);
    }

    /// Constant demand for 8 hours at 15 s intervals, with the sidecars following every
    /// decision at once: the size never goes up after it went down, and opposite moves are
    /// at least a stabilization window apart.
    #[test]
    fn no_oscillation_under_constant_load(
        a in arb_spec(),
        demand in 0u32..120,
        start in 1u32..120,
        limit in proptest::option::of(10u32..300),
    ) {
        let a = AutoscalingSpec { enabled: true, ..a };
        let pool = PoolSpec { pool_size: start, max_overflow: start.div_ceil(2), ..PoolSpec::default() };
        let mut h = History::new();
        let mut current: Option<Sizing> = None;
        let mut last_scale: Option<i64> = None;
        let mut last_review: Option<i64> = None;
        let mut moves: Vec<(i64, i32)> = Vec::new();
        for k in 0..(8 * 240) {
            let now = k * 15;
            if let Some(cur) = current {
                let out = f64::from(demand.min(cur.total()));
                let u = if cur.pool_size > 0 { out / f64::from(cur.pool_size) } else { out };
                h.add(Sample { time: t(now), utilization: u, demand }, a.review.window_days);
            }
            let mut c = Case::new(&a, &pool, &h);
            c.current = current;
            c.limit = limit;
            c.now = now;
            c.last_scale = last_scale;
            c.last_review = last_review;
            let d = c.run();
            if let Some(l) = limit {
                prop_assert!(d.sizing.total() <= l);
            }
            if let Some(cur) = current
                && d.sizing.pool_size != cur.pool_size
            {
                let dir = if d.sizing.pool_size > cur.pool_size { 1 } else { -1 };
                moves.push((now, dir));
            }
            if d.changed {
                last_scale = Some(now);
            }
            if d.reviewed {
                last_review = Some(now);
            }
            current = Some(d.sizing);
        }
        let downs_then_up = moves.windows(2).any(|w| w[0].1 < 0 && w[1].1 > 0);
        prop_assert!(!downs_then_up, "{moves:?}");
        for w in moves.windows(2) {
            if w[0].1 != w[1].1 {
                prop_assert!(w[1].0 - w[0].0 >= i64::from(a.scale_down.stabilization_seconds), "{moves:?}");
            }
        }
    }
}
