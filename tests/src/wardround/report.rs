//! The demo report: a timeline (one row per second), a summary with p50/p99 latency, and an
//! SVG plot of utilization and pool size over time with scale events and phases marked.

use std::fmt::Write as _;
use std::time::Duration;

/// One second of the demo, summed over all pods.
#[derive(Clone, Debug, Default)]
pub struct Tick {
    pub t: f64,
    pub phase: String,
    /// Mean utilization over the pods that reported.
    pub utilization: f64,
    /// Pool size (the largest reported; all pods run the same size).
    pub pool_size: f64,
    pub waiting: f64,
    /// Highest breaker state over the pods (0 closed, 1 half-open, 2 open).
    pub breaker: f64,
    pub pods_reporting: usize,
    pub ok: u64,
    pub failed: u64,
}

/// The outcome of all transactions.
#[derive(Clone, Debug, Default)]
pub struct Summary {
    pub served: u64,
    pub failed: u64,
    pub failed_pool_timeout: u64,
    pub failed_breaker: u64,
    pub failed_other: u64,
    pub latencies: Vec<Duration>,
}

impl Summary {
    /// The q-quantile (0..1) of the successful transactions' latency.
    pub fn quantile(&self, q: f64) -> Duration {
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        let mut v = self.latencies.clone();
        v.sort_unstable();
        let idx = ((v.len() as f64 - 1.0) * q).round() as usize;
        v[idx.min(v.len() - 1)]
    }
}

/// Scale events: the ticks where the pool size changed.
pub fn scale_events(ticks: &[Tick]) -> Vec<(f64, f64, f64)> {
    let mut out = Vec::new();
    let mut last: Option<f64> = None;
    for t in ticks.iter().filter(|t| t.pool_size > 0.0) {
        if let Some(prev) = last
            && (t.pool_size - prev).abs() > f64::EPSILON
        {
            out.push((t.t, prev, t.pool_size));
        }
        last = Some(t.pool_size);
    }
    out
}

/// The timeline as CSV.
pub fn csv(ticks: &[Tick]) -> String {
    let mut s =
        String::from("t,phase,utilization,pool_size,waiting,breaker,pods_reporting,ok,failed\n");
    for t in ticks {
        let _ = writeln!(
            s,
            "{:.0},{},{:.3},{},{},{},{},{},{}",
            t.t,
            t.phase,
            t.utilization,
            t.pool_size,
            t.waiting,
            t.breaker,
            t.pods_reporting,
            t.ok,
            t.failed
        );
    }
    s
}

/// The plot: utilization (left axis, 0..max) and pool size (right axis), phases shaded,
/// scale events as dashed vertical lines.
pub fn svg(ticks: &[Tick]) -> String {
    let (w, h, left, right, top, bottom) = (900.0, 420.0, 60.0, 60.0, 40.0, 50.0);
    let pw = w - left - right;
    let ph = h - top - bottom;
    let t_max = ticks.last().map(|t| t.t).unwrap_or(1.0).max(1.0);
    let u_max = ticks.iter().map(|t| t.utilization).fold(1.0_f64, f64::max) * 1.1;
    let p_max = ticks.iter().map(|t| t.pool_size).fold(1.0_f64, f64::max) * 1.2;
    let x = |t: f64| left + pw * t / t_max;
    let yu = |u: f64| top + ph * (1.0 - u / u_max);
    let yp = |p: f64| top + ph * (1.0 - p / p_max);

    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="{w}" height="{h}" fill="white"/>"#);
    // Phase bands.
    let palette = ["#f2f2f2", "#e3eefc", "#fde8e8", "#fff4d6", "#e6f6e6"];
    let mut start = 0.0;
    let mut i = 0;
    for (n, t) in ticks.iter().enumerate() {
        let next = ticks.get(n + 1);
        if next.is_none_or(|nx| nx.phase != t.phase) {
            let end = t.t + 1.0;
            let _ = writeln!(
                s,
                r##"<rect x="{:.1}" y="{top}" width="{:.1}" height="{ph}" fill="{}"/><text x="{:.1}" y="{}" fill="#555">{}</text>"##,
                x(start),
                (x(end.min(t_max)) - x(start)).max(0.0),
                palette[i % palette.len()],
                x(start) + 4.0,
                top - 6.0,
                xml(&t.phase)
            );
            start = end;
            i += 1;
        }
    }
    // 80 % line.
    let _ = writeln!(
        s,
        r##"<line x1="{left}" x2="{:.1}" y1="{y:.1}" y2="{y:.1}" stroke="#c00" stroke-dasharray="4 3"/><text x="{:.1}" y="{:.1}" fill="#c00">80 %</text>"##,
        left + pw,
        left + pw - 36.0,
        yu(0.8) - 4.0,
        y = yu(0.8)
    );
    // Scale events.
    for (t, from, to) in scale_events(ticks) {
        let xx = x(t);
        let _ = writeln!(
            s,
            r##"<line x1="{xx:.1}" x2="{xx:.1}" y1="{top}" y2="{:.1}" stroke="#333" stroke-dasharray="2 2"/><text x="{:.1}" y="{:.1}" fill="#333">{from:.0}→{to:.0}</text>"##,
            top + ph,
            xx + 3.0,
            yp(to) - 6.0,
        );
    }
    let line = |f: &dyn Fn(&Tick) -> f64| -> String {
        ticks
            .iter()
            .map(|t| format!("{:.1},{:.1}", x(t.t), f(t)))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let _ = writeln!(
        s,
        r##"<polyline fill="none" stroke="#1f77b4" stroke-width="2" points="{}"/>"##,
        line(&|t| yu(t.utilization))
    );
    let _ = writeln!(
        s,
        r##"<polyline fill="none" stroke="#2ca02c" stroke-width="2" points="{}"/>"##,
        line(&|t| yp(t.pool_size))
    );
    // Axes and legend.
    let _ = writeln!(
        s,
        r##"<line x1="{left}" y1="{b}" x2="{r}" y2="{b}" stroke="black"/><line x1="{left}" y1="{top}" x2="{left}" y2="{b}" stroke="black"/><line x1="{r}" y1="{top}" x2="{r}" y2="{b}" stroke="black"/>"##,
        b = top + ph,
        r = left + pw
    );
    for k in 0..=4 {
        let u = u_max * k as f64 / 4.0;
        let p = p_max * k as f64 / 4.0;
        let _ = writeln!(
            s,
            r##"<text x="{:.1}" y="{:.1}" text-anchor="end">{:.0}%</text><text x="{:.1}" y="{:.1}">{p:.0}</text>"##,
            left - 6.0,
            yu(u) + 4.0,
            u * 100.0,
            left + pw + 6.0,
            yp(p) + 4.0
        );
    }
    let _ = writeln!(
        s,
        r##"<text x="{:.1}" y="{:.1}" text-anchor="middle">seconds (0–{t_max:.0})</text>"##,
        left + pw / 2.0,
        h - 15.0
    );
    let _ = writeln!(
        s,
        r##"<text x="{left}" y="{:.1}" fill="#1f77b4">— utilization (checked out / pool size)</text><text x="{:.1}" y="{:.1}" fill="#2ca02c">— pool size</text>"##,
        h - 2.0,
        left + 330.0,
        h - 2.0
    );
    s.push_str("</svg>\n");
    s
}

fn xml(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The markdown summary.
pub fn markdown(summary: &Summary, ticks: &[Tick], notes: &[String]) -> String {
    let mut s = String::from(
        "# poolwarden ward-round demo\n\n![utilization and pool size](timeline.svg)\n\n",
    );
    let total = summary.served + summary.failed;
    let _ = writeln!(s, "| | |\n|---|---|");
    let _ = writeln!(s, "| transactions | {total} |");
    let _ = writeln!(s, "| served | {} |", summary.served);
    let _ = writeln!(
        s,
        "| failed | {} (pool timeout {}, breaker open {}, other {}) |",
        summary.failed, summary.failed_pool_timeout, summary.failed_breaker, summary.failed_other
    );
    let _ = writeln!(
        s,
        "| latency p50 | {:.1} ms |",
        summary.quantile(0.5).as_secs_f64() * 1000.0
    );
    let _ = writeln!(
        s,
        "| latency p99 | {:.1} ms |",
        summary.quantile(0.99).as_secs_f64() * 1000.0
    );
    let peak = ticks.iter().map(|t| t.utilization).fold(0.0_f64, f64::max);
    let _ = writeln!(s, "| peak utilization | {:.0} % |", peak * 100.0);
    s.push_str("\n## Pool size changes\n\n");
    let events = scale_events(ticks);
    if events.is_empty() {
        s.push_str("none\n");
    }
    for (t, from, to) in events {
        let _ = writeln!(s, "- t={t:.0}s: {from:.0} → {to:.0}");
    }
    if !notes.is_empty() {
        s.push_str("\n## Notes\n\n");
        for n in notes {
            let _ = writeln!(s, "- {n}");
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_and_scale_events() {
        let summary = Summary {
            latencies: (1..=100).map(Duration::from_millis).collect(),
            ..Default::default()
        };
        assert_eq!(summary.quantile(0.5), Duration::from_millis(51));
        assert_eq!(summary.quantile(0.99), Duration::from_millis(99));
        let ticks: Vec<Tick> = [5.0, 5.0, 10.0, 10.0, 15.0]
            .iter()
            .enumerate()
            .map(|(i, p)| Tick {
                t: i as f64,
                pool_size: *p,
                phase: "x".into(),
                ..Default::default()
            })
            .collect();
        assert_eq!(
            scale_events(&ticks),
            vec![(2.0, 5.0, 10.0), (4.0, 10.0, 15.0)]
        );
        let svg = svg(&ticks);
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains("5→10"));
    }
}
