use super::*;

/// 2026-11-01T00:00:00Z plus `secs`.
fn t(secs: i64) -> Timestamp {
    Timestamp::from_second(1_793_491_200 + secs).unwrap()
}

fn s(secs: i64, utilization: f64, demand: u32) -> Sample {
    Sample {
        time: t(secs),
        utilization,
        demand,
    }
}

/// Samples every `every` seconds over [from, to] with a constant value.
fn fill(h: &mut History, from: i64, to: i64, every: i64, u: f64, d: u32) {
    let mut x = from;
    while x <= to {
        h.add(s(x, u, d), 30);
        x += every;
    }
}

#[test]
fn base_time_is_a_utc_midnight() {
    assert_eq!(t(0).to_string(), "2026-11-01T00:00:00Z");
}

#[test]
fn raw_samples_are_bounded_in_time_and_count() {
    let mut h = History::new();
    fill(&mut h, 0, 3600, 15, 0.5, 10);
    let recent = h.recent();
    assert!(recent.len() <= MAX_RECENT_SAMPLES);
    assert_eq!(recent.last().unwrap().time, t(3600));
    assert!(recent.first().unwrap().time >= t(3600 - RECENT_HORIZON_SECS));
    // 1 s samples: the count bound wins over the time bound.
    let mut h = History::new();
    fill(&mut h, 0, 600, 1, 0.5, 10);
    assert_eq!(h.recent().len(), MAX_RECENT_SAMPLES);
}

#[test]
fn minute_buckets_aggregate_and_are_bounded() {
    let mut h = History::new();
    h.add(s(0, 0.2, 2), 30);
    h.add(s(15, 0.6, 9), 30);
    h.add(s(30, 0.4, 4), 30);
    h.add(s(60, 0.9, 1), 30);
    let m = h.minutes();
    assert_eq!(m.len(), 2);
    assert_eq!(
        (m[0].min, m[0].max, m[0].max_demand, m[0].samples),
        (0.2, 0.6, 9, 3)
    );
    assert!((m[0].average - 0.4).abs() < 1e-12);
    assert_eq!(m[1].start, t(60));
    let mut h = History::new();
    fill(&mut h, 0, 6 * 3600, 30, 0.5, 1);
    assert!(h.minutes().len() <= MAX_MINUTE_BUCKETS);
    assert!(h.minutes()[0].start >= t(6 * 3600 - MINUTE_HORIZON_SECS - 60));
}

#[test]
fn time_never_runs_backwards() {
    let mut h = History::new();
    h.add(s(100, 0.5, 1), 30);
    h.add(s(50, 0.9, 9), 30);
    h.add(s(100, 0.9, 9), 30);
    assert_eq!(h.recent().len(), 1);
    assert_eq!(h.recent()[0].utilization, 0.5);
}

#[test]
fn averages_over_windows() {
    let mut h = History::new();
    // 55 minutes at 0.2, then 5 minutes at 0.8 (15 s samples).
    fill(&mut h, 15, 3300, 15, 0.2, 2);
    fill(&mut h, 3315, 3600, 15, 0.8, 8);
    let now = t(3600);
    let avg5 = h.average(300, now).unwrap();
    assert!((avg5 - 0.8).abs() < 1e-9, "{avg5}");
    let avg1h = h.average(3600, now).unwrap();
    // 220 samples at 0.2 and 20 at 0.8.
    assert!(
        (avg1h - (220.0 * 0.2 + 20.0 * 0.8) / 240.0).abs() < 1e-9,
        "{avg1h}"
    );
    assert_eq!(History::new().average(300, now), None);
    assert_eq!(
        h.average(300, t(10 * 3600)),
        None,
        "nothing in a window far ahead"
    );
    assert_eq!(h.peak_demand(300, now), Some(8));
    assert_eq!(h.peak_demand(3600, now), Some(8));
    assert_eq!(h.peak_demand(30, t(3300)), Some(2));
}

#[test]
fn sustained_needs_the_whole_duration() {
    let mut h = History::new();
    fill(&mut h, 0, 45, 15, 0.9, 9);
    let above = Threshold::Above(0.8);
    assert!(!h.sustained(above, 60, t(45), None), "45 s of 60");
    h.add(s(60, 0.9, 9), 30);
    assert!(h.sustained(above, 60, t(60), None), "0..60 covers 60 s");
    assert_eq!(h.run_start(above, t(60), None), Some(t(0)));
}

#[test]
fn sustained_is_strict_at_the_threshold() {
    let mut h = History::new();
    fill(&mut h, 0, 120, 15, 0.8, 8);
    assert!(!h.sustained(Threshold::Above(0.8), 60, t(120), None));
    assert!(!h.sustained(Threshold::Below(0.8), 60, t(120), None));
    assert!(h.sustained(Threshold::Above(0.79), 60, t(120), None));
    assert!(h.sustained(Threshold::Below(0.81), 60, t(120), None));
}

#[test]
fn one_dip_restarts_the_run() {
    let mut h = History::new();
    fill(&mut h, 0, 300, 15, 0.95, 10);
    h.add(s(315, 0.5, 5), 30);
    fill(&mut h, 330, 375, 15, 0.95, 10);
    let above = Threshold::Above(0.8);
    assert_eq!(h.run_start(above, t(375), None), Some(t(330)));
    assert!(!h.sustained(above, 60, t(375), None));
    h.add(s(390, 0.95, 10), 30);
    assert!(h.sustained(above, 60, t(390), None));
}

#[test]
fn gaps_break_sustain() {
    let mut h = History::new();
    fill(&mut h, 0, 60, 15, 0.9, 9);
    // Operator down for two minutes, then back.
    fill(&mut h, 180, 210, 15, 0.9, 9);
    let above = Threshold::Above(0.8);
    assert_eq!(h.run_start(above, t(210), None), Some(t(180)));
    assert!(!h.sustained(above, 60, t(210), None));
    // Stale: the newest sample is older than the max gap.
    let mut h = History::new();
    fill(&mut h, 0, 120, 15, 0.9, 9);
    assert!(h.sustained(above, 60, t(180), None));
    assert!(!h.sustained(above, 60, t(181), None));
    assert!(!h.is_fresh(t(181)));
}

#[test]
fn samples_before_the_last_scale_do_not_count() {
    let mut h = History::new();
    fill(&mut h, 0, 300, 15, 0.9, 9);
    let above = Threshold::Above(0.8);
    assert!(h.sustained(above, 60, t(300), None));
    assert!(!h.sustained(above, 60, t(300), Some(t(255))));
    assert!(h.sustained(above, 60, t(300), Some(t(239))));
}

#[test]
fn long_runs_continue_through_minute_buckets() {
    let mut h = History::new();
    fill(&mut h, 0, 2 * 3600, 15, 0.1, 1);
    let below = Threshold::Below(0.3);
    // The raw samples hold 10 minutes; the hour comes from minute buckets.
    assert!(h.recent().first().unwrap().time > t(3600));
    assert!(h.sustained(below, 3600, t(2 * 3600), None));
    assert_eq!(h.run_start(below, t(2 * 3600), None), Some(t(0)));
    // One high sample 30 minutes ago (in the minute-aggregate region) breaks the run there.
    let mut h = History::new();
    fill(&mut h, 0, 5400, 15, 0.1, 1);
    h.add(s(5415, 0.5, 5), 30);
    fill(&mut h, 5430, 2 * 3600, 15, 0.1, 1);
    assert!(!h.sustained(below, 3600, t(2 * 3600), None));
    fill(&mut h, 2 * 3600 + 15, 5430 + 3600 + 60, 15, 0.1, 1);
    assert!(h.sustained(below, 3600, t(5430 + 3600 + 60), None));
    // A missing minute in the aggregate region breaks the run.
    let mut h = History::new();
    fill(&mut h, 0, 5400, 15, 0.1, 1);
    fill(&mut h, 5520, 2 * 3600, 15, 0.1, 1);
    assert!(!h.sustained(below, 3600, t(2 * 3600), None));
    assert!(h.sustained(below, 1500, t(2 * 3600), None));
}

#[test]
fn windows_beyond_the_horizon_use_the_whole_horizon() {
    let mut h = History::new();
    fill(&mut h, 0, 5 * 3600, 30, 0.1, 1);
    assert!(h.sustained(Threshold::Below(0.3), 86_400, t(5 * 3600), None));
    let mut h = History::new();
    fill(&mut h, 0, 3600, 30, 0.1, 1);
    assert!(!h.sustained(Threshold::Below(0.3), 86_400, t(3600), None));
}

#[test]
fn daily_buckets_keep_the_window_plus_today() {
    let mut h = History::new();
    for day in 0..40 {
        fill(&mut h, day * 86_400, day * 86_400 + 600, 300, 0.5, 5);
    }
    assert_eq!(h.days().len(), 31);
    assert_eq!(h.days().last().unwrap().day.to_string(), "2026-12-10");
    assert_eq!(h.days()[0].samples, 3);
}

/// Thirty days of synthetic history, built with injected time (a sample every 5 minutes).
#[test]
fn review_average_over_thirty_days() {
    let mut h = History::new();
    let day = 86_400;
    // Day 0..30: 0.7 during 12 busy hours, 0.5 in the other 12 -> daily mean 0.6.
    for d in 0..30 {
        for k in 0..288 {
            let u = if k < 144 { 0.7 } else { 0.5 };
            h.add(s(d * day + k * 300, u, 10), 30);
        }
    }
    // On day 30 the window is days 0..29.
    let now = t(30 * day + 60);
    h.add(s(30 * day + 60, 1.0, 10), 30);
    let avg = h.review_average(30, now).unwrap();
    assert!((avg - 0.6).abs() < 1e-9, "{avg}");
    // Today's sample is not part of the window.
    assert_eq!(h.days().last().unwrap().samples, 1);
    // Not a full window yet on day 29.
    let mut short = History::new();
    for d in 0..29 {
        short.add(s(d * day, 0.9, 10), 30);
    }
    assert_eq!(short.review_average(30, t(29 * day)), None);
    assert!(short.review_average(28, t(29 * day)).is_some());
}

#[test]
fn round_trips_through_the_status() {
    let mut h = History::new();
    fill(&mut h, 0, 4 * 3600, 15, 0.123456, 7);
    let mut status = DbPoolPolicyStatus::default();
    h.write_status(&mut status);
    assert_eq!(status.recent_utilization.len(), h.recent().len());
    assert_eq!(status.recent_utilization[0].utilization, 0.1235);
    let back = History::from_status(&status);
    assert_eq!(back.recent().len(), h.recent().len());
    assert_eq!(back.minutes().len(), h.minutes().len());
    assert_eq!(back.days().len(), h.days().len());
    assert!((back.days()[0].average - h.days()[0].average).abs() < 1e-6);
    assert_eq!(back.recent()[5].time, h.recent()[5].time);
    assert_eq!(back.minutes()[3].start, h.minutes()[3].start);
    // The whole autoscaling status stays small (well under etcd's 1.5 MiB object limit).
    let json = serde_json::to_string(&status).unwrap();
    assert!(json.len() < 40_000, "{} bytes", json.len());
    // Hand-edited garbage is dropped, not fatal.
    status.recent_utilization[0].time = "yesterday".into();
    let back = History::from_status(&status);
    assert_eq!(back.recent().len(), h.recent().len() - 1);
}
