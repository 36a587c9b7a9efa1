//! Simulation: synthetic load traces fed through history + engine with injected time, the
//! sidecars following each decision at the next interval. Demand is in connections; a pool
//! serves at most pool_size + max_overflow of it, the rest waits.

use super::*;

struct Sim {
    a: AutoscalingSpec,
    pool: PoolSpec,
    limit: Option<u32>,
    interval: i64,
    h: History,
    current: Option<Sizing>,
    last_scale: Option<i64>,
    last_review: Option<i64>,
    now: i64,
    /// (time, from, to, reason) for every pool size change.
    changes: Vec<(i64, u32, u32, &'static str)>,
    budget_limited_seen: bool,
}

impl Sim {
    fn new(a: AutoscalingSpec, limit: Option<u32>, interval: i64) -> Self {
        Self {
            a,
            pool: PoolSpec::default(),
            limit,
            interval,
            h: History::new().with_max_gap(interval * 3),
            current: None,
            last_scale: None,
            last_review: None,
            now: 0,
            changes: Vec::new(),
            budget_limited_seen: false,
        }
    }

    /// One interval with `demand` busy clients per pod.
    fn step(&mut self, demand: u32) {
        if let Some(cur) = self.current {
            let out = demand.min(cur.total());
            let u = f64::from(out) / f64::from(cur.pool_size.max(1));
            self.h.add(
                Sample {
                    time: t(self.now),
                    utilization: u,
                    demand,
                },
                self.a.review.window_days,
            );
        }
        let d = decide(&DecisionInput {
            autoscaling: &self.a,
            pool: &self.pool,
            current: self.current,
            history: &self.h,
            per_pod_limit: self.limit,
            now: t(self.now),
            paused: false,
            last_scale_time: self.last_scale.map(t),
            last_review_time: self.last_review.map(t),
        });
        if let Some(l) = self.limit {
            assert!(
                d.sizing.total() <= l,
                "t={} {d:?} exceeds budget {l}",
                self.now
            );
        }
        assert!(d.sizing.pool_size <= self.a.max_pool_size);
        self.budget_limited_seen |= d.budget_limited;
        if let Some(cur) = self.current
            && cur.pool_size != d.sizing.pool_size
        {
            self.changes
                .push((self.now, cur.pool_size, d.sizing.pool_size, d.reason));
        }
        if d.changed {
            self.last_scale = Some(self.now);
        }
        if d.reviewed {
            self.last_review = Some(self.now);
        }
        self.current = Some(d.sizing);
        self.now += self.interval;
    }

    fn run(&mut self, secs: i64, demand: impl Fn(i64) -> u32) {
        let end = self.now + secs;
        while self.now < end {
            let x = self.now;
            self.step(demand(x));
        }
    }

    fn pool_size(&self) -> u32 {
        self.current.unwrap().pool_size
    }

    /// No reversal faster than the stabilization window, and no down-then-up.
    fn assert_no_oscillation(&self) {
        let stab = i64::from(self.a.scale_down.stabilization_seconds);
        for w in self.changes.windows(2) {
            let (t0, f0, to0, _) = w[0];
            let (t1, f1, to1, _) = w[1];
            let up0 = to0 > f0;
            let up1 = to1 > f1;
            if up0 != up1 {
                assert!(t1 - t0 >= stab, "flap: {:?}", self.changes);
            }
        }
    }
}

fn hospital() -> AutoscalingSpec {
    AutoscalingSpec {
        enabled: true,
        ..AutoscalingSpec::default()
    }
}

const H: i64 = 3600;

#[test]
fn quiet_night_shrinks_one_step_per_hour_to_min() {
    let mut sim = Sim::new(hospital(), Some(87), 15);
    sim.run(10 * H, |_| 2);
    assert_eq!(sim.pool_size(), 5);
    assert!(
        sim.changes
            .iter()
            .all(|c| c.2 < c.1 && c.3 == reasons::SUSTAINED_LOW_UTILIZATION)
    );
    assert_eq!(
        sim.changes.iter().map(|c| c.2).collect::<Vec<_>>(),
        vec![15, 10, 5]
    );
    for w in sim.changes.windows(2) {
        assert!(w[1].0 - w[0].0 >= H, "{:?}", sim.changes);
    }
    // The first shrink after one hour of quiet since the initial sizing at t=0, late by at
    // most a minute: beyond the raw 10 minutes the history is per minute, and the minute in
    // which the size last changed never counts.
    assert!(
        (H..=H + 60).contains(&sim.changes[0].0),
        "{:?}",
        sim.changes
    );
    sim.assert_no_oscillation();
}

#[test]
fn ward_round_spike_is_met_within_one_interval_after_the_sustain_window() {
    let mut sim = Sim::new(hospital(), Some(87), 15);
    // Two steady hours at 50 %.
    sim.run(2 * H, |_| 10);
    assert_eq!((sim.pool_size(), sim.changes.len()), (20, 0));
    // 08:00 ward round: 28 clinicians' requests at once for 45 minutes.
    let spike = sim.now;
    sim.run(45 * 60, |_| 28);
    let first_up = sim.changes[0];
    assert_eq!(first_up.3, reasons::SUSTAINED_HIGH_UTILIZATION);
    assert!(
        first_up.0 <= spike + 60 + 15,
        "met at {} (spike at {spike})",
        first_up.0
    );
    assert!(first_up.2 >= 42, "to at least demand × 1.5: {first_up:?}");
    assert_eq!(
        sim.changes.len(),
        1,
        "one decisive step, no staircase: {:?}",
        sim.changes
    );
    // Back to normal: shrinks only after an hour of quiet, one step at a time.
    sim.run(6 * H, |_| 10);
    let downs: Vec<_> = sim.changes[1..].to_vec();
    assert!(!downs.is_empty());
    assert!(downs.iter().all(|c| c.2 < c.1 && c.1 - c.2 <= 5));
    assert!(downs[0].0 - first_up.0 >= H);
    // Never below what the normal load needs without alarms.
    assert!(sim.pool_size() >= 19, "{:?}", sim.changes);
    sim.assert_no_oscillation();
}

#[test]
fn emergency_surge_is_held_within_the_budget() {
    // 4 replicas on a 200-connection database: 187 / 4 = 46 per pod.
    let limit = crate::budget::per_pod_limit(200, 3, 10, 4);
    assert_eq!(limit, 46);
    let mut sim = Sim::new(hospital(), Some(limit), 15);
    sim.run(H, |_| 12);
    let surge = sim.now;
    sim.run(2 * H, |_| 120);
    assert!(sim.budget_limited_seen);
    let c = sim.current.unwrap();
    assert_eq!(c.total(), 46, "the whole budget in use: {c:?}");
    assert_eq!(c.pool_size, 46, "overflow gave way first: {c:?}");
    assert!(sim.changes[0].0 <= surge + 60 + 15);
    // Every step stayed within the budget (asserted in step) and went up only.
    assert!(sim.changes.iter().all(|c| c.2 > c.1), "{:?}", sim.changes);
    sim.assert_no_oscillation();
}

#[test]
fn slow_month_long_growth_triggers_exactly_one_review() {
    // A sample a minute for 31 days. Load grows from 10 to 15.5 busy connections: never
    // above 80 % or below 30 % of a 20-pool, but above 60 % on average over the month.
    let mut sim = Sim::new(hospital(), Some(87), 60);
    let month = 30 * 86_400;
    sim.run(31 * 86_400, |x| {
        10 + (55 * x.min(month) / month / 10) as u32
    });
    let reviews: Vec<_> = sim
        .changes
        .iter()
        .filter(|c| c.3 == reasons::MONTHLY_REVIEW)
        .collect();
    assert_eq!(reviews.len(), 1, "{:?}", sim.changes);
    let (when, from, to, _) = *reviews[0];
    assert_eq!((from, to), (20, 25));
    // The first day with a complete 30-day window, right at its start.
    assert!((month..month + 120).contains(&when), "{when}");
    assert!(
        sim.changes.iter().all(|c| c.3 == reasons::MONTHLY_REVIEW),
        "{:?}",
        sim.changes
    );
    assert_eq!(sim.last_review, Some(when));
}

#[test]
fn scrape_outage_holds_then_resumes() {
    let mut sim = Sim::new(hospital(), Some(87), 15);
    sim.run(H, |_| 10);
    // No pod reports for 20 minutes while load would be high: the size holds.
    let before = sim.current;
    let resume = sim.now + 20 * 60;
    let mut d = None;
    while sim.now < resume {
        d = Some(decide(&DecisionInput {
            autoscaling: &sim.a,
            pool: &sim.pool,
            current: sim.current,
            history: &sim.h,
            per_pod_limit: sim.limit,
            now: t(sim.now),
            paused: false,
            last_scale_time: sim.last_scale.map(t),
            last_review_time: None,
        }));
        assert_eq!(d.as_ref().unwrap().sizing, before.unwrap());
        sim.now += 15;
    }
    assert_eq!(d.unwrap().reason, reasons::METRICS_UNAVAILABLE);
    // Back with high load: the gap does not count, a fresh 60 s run is needed.
    let back = sim.now;
    sim.run(5 * 60, |_| 25);
    assert!(
        sim.changes[0].0 >= back + 60 && sim.changes[0].0 <= back + 75,
        "{:?}",
        sim.changes
    );
}
