//! Compact utilization history that survives operator restarts by living in the policy's
//! status.
//!
//! ```text
//!   sample every scrape ──▶ recent   (raw, last 10 min, ≤ 120)      scale-up, alerts, 5 m avg
//!                      ├──▶ minutes  (per UTC minute, last 3 h, ≤ 180) scale-down, 1 h avg
//!                      └──▶ days     (per UTC day, windowDays + 1)     monthly review
//! ```
//!
//! Every function takes the time it needs as an argument: nothing here reads a clock, so hours
//! and months of history are built in tests with injected time.
//!
//! *Sustained* means continuous coverage: consecutive samples no further apart than
//! [`History::max_gap`] (default [`DEFAULT_MAX_GAP_SECS`]) and, where only minute aggregates
//! are left, no missing minute. A gap (operator down, no pod reporting) breaks every run, so
//! a decision never rests on data that was not seen.
//!
//! Windows longer than the minute horizon ([`MINUTE_HORIZON_SECS`], 3 h) cannot be checked
//! sample by sample; [`History::sustained`] evaluates them over the whole horizon instead
//! (documented on the function).

use jiff::{Timestamp, civil::Date, tz::TimeZone};
use poolwarden_crds::{DailyUtilization, DbPoolPolicyStatus, MinuteUtilization, UtilizationSample};

/// Raw samples are kept for this long.
pub const RECENT_HORIZON_SECS: i64 = 10 * 60;
/// At most this many raw samples are kept (oldest dropped first).
pub const MAX_RECENT_SAMPLES: usize = 120;
/// Minute aggregates are kept for this long.
pub const MINUTE_HORIZON_SECS: i64 = 3 * 60 * 60;
/// At most this many minute aggregates are kept.
pub const MAX_MINUTE_BUCKETS: usize = 180;
/// Default largest distance between two samples of one continuous run.
pub const DEFAULT_MAX_GAP_SECS: i64 = 60;

/// One utilization sample of the whole policy.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sample {
    /// When it was taken.
    pub time: Timestamp,
    /// Utilization of the busiest pool (checked out / pool size).
    pub utilization: f64,
    /// Demand of the busiest pool (checked out + waiting).
    pub demand: u32,
}

/// One UTC minute of samples.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MinuteBucket {
    /// Start of the minute.
    pub start: Timestamp,
    /// Lowest utilization.
    pub min: f64,
    /// Highest utilization.
    pub max: f64,
    /// Mean utilization.
    pub average: f64,
    /// Highest demand.
    pub max_demand: u32,
    /// Samples in the minute.
    pub samples: u32,
}

/// One UTC day of samples.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DayBucket {
    /// The UTC day.
    pub day: Date,
    /// Mean utilization.
    pub average: f64,
    /// Samples in the day.
    pub samples: u32,
}

/// Which side of a threshold a run must stay on.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Threshold {
    /// Strictly above the value.
    Above(f64),
    /// Strictly below the value.
    Below(f64),
}

impl Threshold {
    fn holds_for(self, min: f64, max: f64) -> bool {
        match self {
            Threshold::Above(x) => min > x,
            Threshold::Below(x) => max < x,
        }
    }
}

/// The utilization history of one policy. Build it with [`History::from_status`], add a
/// sample per scrape with [`History::add`], store it back with [`History::write_status`].
#[derive(Clone, Debug, PartialEq)]
pub struct History {
    recent: Vec<Sample>,
    minutes: Vec<MinuteBucket>,
    days: Vec<DayBucket>,
    max_gap_secs: i64,
}

impl Default for History {
    fn default() -> Self {
        Self::new()
    }
}

impl History {
    /// An empty history with the default maximum gap.
    pub fn new() -> Self {
        Self {
            recent: Vec::new(),
            minutes: Vec::new(),
            days: Vec::new(),
            max_gap_secs: DEFAULT_MAX_GAP_SECS,
        }
    }

    /// Sets the largest distance between two samples that still counts as continuous. Use
    /// about two to four scrape intervals.
    pub fn with_max_gap(mut self, secs: i64) -> Self {
        self.max_gap_secs = secs.max(1);
        self
    }

    /// The largest distance between two samples of one continuous run, in seconds.
    pub fn max_gap(&self) -> i64 {
        self.max_gap_secs
    }

    /// Reads the history from the status fields `recentUtilization`, `minuteUtilization` and
    /// `dailyUtilization`. Entries that do not parse (hand-edited status) are dropped.
    pub fn from_status(status: &DbPoolPolicyStatus) -> Self {
        let mut h = Self::new();
        h.recent = status
            .recent_utilization
            .iter()
            .filter_map(|s| {
                Some(Sample {
                    time: s.time.parse().ok()?,
                    utilization: finite(s.utilization),
                    demand: s.demand,
                })
            })
            .collect();
        h.recent.sort_by_key(|s| s.time);
        h.minutes = status
            .minute_utilization
            .iter()
            .filter_map(|m| {
                Some(MinuteBucket {
                    start: m.minute.parse().ok()?,
                    min: finite(m.min),
                    max: finite(m.max),
                    average: finite(m.average),
                    max_demand: m.max_demand,
                    samples: m.samples,
                })
            })
            .collect();
        h.minutes.sort_by_key(|m| m.start);
        h.days = status
            .daily_utilization
            .iter()
            .filter_map(|d| {
                Some(DayBucket {
                    day: d.day.parse().ok()?,
                    average: finite(d.average),
                    samples: d.samples,
                })
            })
            .collect();
        h.days.sort_by_key(|d| d.day);
        h
    }

    /// Writes the history into the status fields it was read from.
    pub fn write_status(&self, status: &mut DbPoolPolicyStatus) {
        status.recent_utilization = self
            .recent
            .iter()
            .map(|s| UtilizationSample {
                time: s.time.to_string(),
                utilization: round4(s.utilization),
                demand: s.demand,
            })
            .collect();
        status.minute_utilization = self
            .minutes
            .iter()
            .map(|m| MinuteUtilization {
                minute: m.start.to_string(),
                min: round4(m.min),
                max: round4(m.max),
                average: round4(m.average),
                max_demand: m.max_demand,
                samples: m.samples,
            })
            .collect();
        status.daily_utilization = self
            .days
            .iter()
            .map(|d| DailyUtilization {
                day: d.day.to_string(),
                average: round6(d.average),
                samples: d.samples,
            })
            .collect();
    }

    /// Raw samples, oldest first.
    pub fn recent(&self) -> &[Sample] {
        &self.recent
    }

    /// Minute aggregates, oldest first.
    pub fn minutes(&self) -> &[MinuteBucket] {
        &self.minutes
    }

    /// Daily aggregates, oldest first.
    pub fn days(&self) -> &[DayBucket] {
        &self.days
    }

    /// The newest sample.
    pub fn latest(&self) -> Option<&Sample> {
        self.recent.last()
    }

    /// Adds a sample and drops what fell out of the horizons. `keep_days` is the review
    /// window: `keep_days + 1` daily buckets are kept (the window plus today). A sample
    /// older than the newest one already kept is ignored (time never runs backwards here).
    pub fn add(&mut self, sample: Sample, keep_days: u32) {
        if self.recent.last().is_some_and(|l| sample.time <= l.time) {
            return;
        }
        let sample = Sample {
            utilization: finite(sample.utilization),
            ..sample
        };
        self.recent.push(sample);
        let cutoff = sample.time.as_second() - RECENT_HORIZON_SECS;
        self.recent.retain(|s| s.time.as_second() >= cutoff);
        if self.recent.len() > MAX_RECENT_SAMPLES {
            let drop = self.recent.len() - MAX_RECENT_SAMPLES;
            self.recent.drain(..drop);
        }

        let minute = minute_start(sample.time);
        match self.minutes.last_mut() {
            Some(m) if m.start == minute => {
                let n = f64::from(m.samples);
                m.average = (m.average * n + sample.utilization) / (n + 1.0);
                m.min = m.min.min(sample.utilization);
                m.max = m.max.max(sample.utilization);
                m.max_demand = m.max_demand.max(sample.demand);
                m.samples += 1;
            }
            _ => self.minutes.push(MinuteBucket {
                start: minute,
                min: sample.utilization,
                max: sample.utilization,
                average: sample.utilization,
                max_demand: sample.demand,
                samples: 1,
            }),
        }
        let cutoff = minute.as_second() - MINUTE_HORIZON_SECS;
        self.minutes.retain(|m| m.start.as_second() >= cutoff);
        if self.minutes.len() > MAX_MINUTE_BUCKETS {
            let drop = self.minutes.len() - MAX_MINUTE_BUCKETS;
            self.minutes.drain(..drop);
        }

        let day = utc_day(sample.time);
        match self.days.last_mut() {
            Some(d) if d.day == day => {
                let n = f64::from(d.samples);
                d.average = (d.average * n + sample.utilization) / (n + 1.0);
                d.samples += 1;
            }
            _ => self.days.push(DayBucket {
                day,
                average: sample.utilization,
                samples: 1,
            }),
        }
        let keep = keep_days as usize + 1;
        if self.days.len() > keep {
            let drop = self.days.len() - keep;
            self.days.drain(..drop);
        }
    }

    /// Whether a sample at most [`History::max_gap`] old exists at `now`.
    pub fn is_fresh(&self, now: Timestamp) -> bool {
        self.latest().is_some_and(|l| {
            let age = now.as_second() - l.time.as_second();
            (0..=self.max_gap_secs).contains(&age)
        })
    }

    /// Mean utilization over `(now - window, now]`: raw samples for windows within
    /// [`RECENT_HORIZON_SECS`], minute aggregates (sample-weighted) for longer ones. `None`
    /// when no sample falls in the window.
    pub fn average(&self, window_secs: i64, now: Timestamp) -> Option<f64> {
        let from = now.as_second() - window_secs;
        let to = now.as_second();
        if window_secs <= RECENT_HORIZON_SECS {
            let (sum, n) = self
                .recent
                .iter()
                .filter(|s| (from + 1..=to).contains(&s.time.as_second()))
                .fold((0.0, 0u64), |(sum, n), s| (sum + s.utilization, n + 1));
            return (n > 0).then(|| sum / n as f64);
        }
        let (sum, n) = self
            .minutes
            .iter()
            .filter(|m| m.start.as_second() + 60 > from && m.start.as_second() <= to)
            .fold((0.0, 0u64), |(sum, n), m| {
                (
                    sum + m.average * f64::from(m.samples),
                    n + u64::from(m.samples),
                )
            });
        (n > 0).then(|| sum / n as f64)
    }

    /// The highest demand over `(now - window, now]` (raw samples, then minute aggregates).
    pub fn peak_demand(&self, window_secs: i64, now: Timestamp) -> Option<u32> {
        let from = now.as_second() - window_secs;
        let to = now.as_second();
        let raw = self
            .recent
            .iter()
            .filter(|s| (from + 1..=to).contains(&s.time.as_second()))
            .map(|s| s.demand)
            .max();
        let oldest_raw = self
            .recent
            .first()
            .map(|s| s.time.as_second())
            .unwrap_or(i64::MAX);
        let buckets = self
            .minutes
            .iter()
            .filter(|m| m.start.as_second() + 60 > from && m.start.as_second() <= to)
            .filter(|m| m.start.as_second() < oldest_raw)
            .map(|m| m.max_demand)
            .max();
        raw.max(buckets)
    }

    /// The start of the continuous run, ending at the newest sample, during which
    /// `threshold` held; only samples strictly after `not_before` count (pass the last scale
    /// time: data seen at another pool size does not count). Walks the raw samples, then the
    /// minute aggregates older than them (a minute counts when its min/max satisfies the
    /// threshold, so the aggregate view is conservative). `None` when the newest sample does
    /// not satisfy it, or is older than [`History::max_gap`] at `now`.
    pub fn run_start(
        &self,
        threshold: Threshold,
        now: Timestamp,
        not_before: Option<Timestamp>,
    ) -> Option<Timestamp> {
        if !self.is_fresh(now) {
            return None;
        }
        let after = |t: Timestamp| not_before.is_none_or(|nb| t > nb);
        let mut start: Option<Timestamp> = None;
        let mut prev: Option<Timestamp> = None;
        for s in self.recent.iter().rev() {
            if !after(s.time) || !threshold.holds_for(s.utilization, s.utilization) {
                return start;
            }
            if let Some(p) = prev
                && p.as_second() - s.time.as_second() > self.max_gap_secs
            {
                return start;
            }
            start = Some(s.time);
            prev = Some(s.time);
        }
        // Older than every raw sample: minute aggregates, consecutive minutes only.
        let oldest = prev?;
        let mut expect_minute = minute_start(oldest).as_second();
        for m in self.minutes.iter().rev() {
            let ms = m.start.as_second();
            if ms > expect_minute {
                continue; // minutes already covered by raw samples
            }
            if ms < expect_minute - 60 {
                break; // a missing minute is a gap
            }
            if !after(m.start) || !threshold.holds_for(m.min, m.max) {
                break;
            }
            if ms < minute_start(oldest).as_second() {
                start = Some(m.start);
            }
            expect_minute = ms;
        }
        start
    }

    /// Whether `threshold` held continuously for at least `for_secs` up to `now`, counting
    /// only samples after `not_before`. A window longer than the minute horizon
    /// ([`MINUTE_HORIZON_SECS`] − 1 minute) is evaluated as the whole horizon: the history
    /// cannot see further back.
    pub fn sustained(
        &self,
        threshold: Threshold,
        for_secs: i64,
        now: Timestamp,
        not_before: Option<Timestamp>,
    ) -> bool {
        let for_secs = for_secs.clamp(0, MINUTE_HORIZON_SECS - 60);
        self.run_start(threshold, now, not_before)
            .is_some_and(|start| now.as_second() - start.as_second() >= for_secs)
    }

    /// The sample-weighted mean of the `window_days` complete UTC days before the day of
    /// `now`. `None` unless the history reaches back to the first day of that window (the
    /// review needs a whole window of data; days with no sample inside it simply do not
    /// count).
    pub fn review_average(&self, window_days: u32, now: Timestamp) -> Option<f64> {
        let today = utc_day(now);
        let first = today
            .checked_sub(jiff::Span::new().days(i64::from(window_days)))
            .ok()?;
        let oldest = self.days.first()?.day;
        if oldest > first {
            return None;
        }
        let (sum, n) = self
            .days
            .iter()
            .filter(|d| d.day >= first && d.day < today)
            .fold((0.0, 0u64), |(sum, n), d| {
                (
                    sum + d.average * f64::from(d.samples),
                    n + u64::from(d.samples),
                )
            });
        (n > 0).then(|| sum / n as f64)
    }
}

/// The start of the UTC minute of `t`.
pub fn minute_start(t: Timestamp) -> Timestamp {
    let s = t.as_second();
    Timestamp::from_second(s - s.rem_euclid(60)).unwrap_or(t)
}

/// The UTC calendar day of `t`.
pub fn utc_day(t: Timestamp) -> Date {
    t.to_zoned(TimeZone::UTC).date()
}

fn finite(x: f64) -> f64 {
    if x.is_finite() { x.max(0.0) } else { 0.0 }
}

fn round4(x: f64) -> f64 {
    (x * 1e4).round() / 1e4
}

fn round6(x: f64) -> f64 {
    (x * 1e6).round() / 1e6
}

#[cfg(test)]
mod tests;
