//! Reads a sidecar's `/api/metrics` (Prometheus text format) for one database.

use std::time::Duration;

/// What one sidecar reported for one database at one moment.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PoolSample {
    pub pool_size: f64,
    pub max_overflow: f64,
    pub checked_out: f64,
    pub waiting: f64,
    pub breaker_state: f64,
    pub timeouts_total: f64,
}

impl PoolSample {
    /// checked_out / pool_size.
    pub fn utilization(&self) -> f64 {
        if self.pool_size > 0.0 {
            self.checked_out / self.pool_size
        } else {
            0.0
        }
    }
}

/// Parse the exposition text with a real Prometheus parser and pick `database`'s series.
pub fn parse_sample(text: &str, database: &str) -> Option<PoolSample> {
    let lines = text.lines().map(|l| Ok(l.to_string()));
    let scrape = prometheus_parse::Scrape::parse(lines).ok()?;
    let mut s = PoolSample::default();
    let mut seen = false;
    for sample in &scrape.samples {
        if sample.labels.get("database") != Some(database) {
            continue;
        }
        let value = match sample.value {
            prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => continue,
        };
        let slot = match sample.metric.as_str() {
            "poolwarden_pool_size" => &mut s.pool_size,
            "poolwarden_pool_max_overflow" => &mut s.max_overflow,
            "poolwarden_pool_checked_out_connections" => &mut s.checked_out,
            "poolwarden_pool_waiting_clients" => &mut s.waiting,
            "poolwarden_breaker_state" => &mut s.breaker_state,
            "poolwarden_pool_timeouts_total" => &mut s.timeouts_total,
            _ => continue,
        };
        *slot = value;
        seen = true;
    }
    seen.then_some(s)
}

/// Scrape one sidecar; `None` when it cannot be reached or reports nothing for `database`.
pub async fn scrape(
    http: &reqwest::Client,
    admin_addr: &str,
    token: &str,
    database: &str,
) -> Option<PoolSample> {
    let url = format!("http://{admin_addr}/api/metrics");
    let resp = http
        .get(url)
        .bearer_auth(token)
        .timeout(Duration::from_secs(2))
        .send()
        .await
        .ok()?;
    if !resp.status().is_success() {
        return None;
    }
    parse_sample(&resp.text().await.ok()?, database)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_the_databases_series() {
        let text = "\
# HELP poolwarden_pool_size configured pool_size
# TYPE poolwarden_pool_size gauge
poolwarden_pool_size{database=\"clinical\"} 20
poolwarden_pool_size{database=\"other\"} 5
# TYPE poolwarden_pool_checked_out_connections gauge
poolwarden_pool_checked_out_connections{database=\"clinical\"} 15
# TYPE poolwarden_pool_waiting_clients gauge
poolwarden_pool_waiting_clients{database=\"clinical\"} 2
";
        let s = parse_sample(text, "clinical").unwrap();
        assert_eq!((s.pool_size, s.checked_out, s.waiting), (20.0, 15.0, 2.0));
        assert_eq!(s.utilization(), 0.75);
        assert!(parse_sample(text, "absent").is_none());
    }
}
