//! The sidecar's admin HTTP API from a test: find it, wait for `/readyz`, scrape and parse
//! `/api/metrics` with `prometheus-parse`, read and change `/api/pool`.

use std::time::{Duration, Instant};

use crate::sidecar::Sidecar;

/// One parsed scrape.
pub struct Scrape(pub prometheus_parse::Scrape);

impl Scrape {
    /// The value of `name` with `database="db"` (and every `labels` pair), if present.
    pub fn value(&self, name: &str, db: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.0
            .samples
            .iter()
            .find(|s| {
                s.metric == name
                    && s.labels.get("database") == Some(db)
                    && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v))
            })
            .map(|s| match s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => v,
                prometheus_parse::Value::Histogram(ref h) => {
                    h.iter().map(|b| b.count).fold(0.0, f64::max)
                }
                prometheus_parse::Value::Summary(_) => f64::NAN,
            })
    }

    /// Whether a series (or histogram family) `name` with `database="db"` is present.
    pub fn has(&self, name: &str, db: &str) -> bool {
        self.0
            .samples
            .iter()
            .any(|s| s.metric == name && s.labels.get("database") == Some(db))
    }
}

/// The admin API base URL of a sidecar, e.g. `http://127.0.0.1:9930`.
pub fn base(sidecar: &Sidecar) -> String {
    format!("http://{}", sidecar.admin_addr())
}

/// Wait (at most 20 s) until `/readyz` answers 200.
pub async fn wait_ready(http: &reqwest::Client, sidecar: &Sidecar) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(r) = http.get(format!("{}/readyz", base(sidecar))).send().await
            && r.status() == 200
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "admin /readyz not 200 within 20 s:\n{}",
            sidecar.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Scrape `/api/metrics` with `token` and parse it.
pub async fn scrape(http: &reqwest::Client, sidecar: &Sidecar, token: &str) -> Scrape {
    let r = http
        .get(format!("{}/api/metrics", base(sidecar)))
        .bearer_auth(token)
        .send()
        .await
        .expect("GET /api/metrics");
    assert_eq!(r.status(), 200, "GET /api/metrics");
    let text = r.text().await.expect("metrics body");
    let lines = text.lines().map(|l| Ok(l.to_string()));
    Scrape(prometheus_parse::Scrape::parse(lines).expect("parse the metrics"))
}

/// Scrape until `settled` holds for the scrape (at most 10 s), and answer that scrape. The
/// pooler returns a connection to the pool just after the transaction's last reply reaches
/// the client, so a scrape sent the moment a reply arrives may still count it checked out.
pub async fn scrape_until(
    http: &reqwest::Client,
    sidecar: &Sidecar,
    token: &str,
    what: &str,
    settled: impl Fn(&Scrape) -> bool,
) -> Scrape {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let m = scrape(http, sidecar, token).await;
        if settled(&m) {
            return m;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not so within 10 s:\n{}",
            sidecar.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `GET /api/pool` as JSON.
pub async fn get_pool(http: &reqwest::Client, sidecar: &Sidecar, token: &str) -> serde_json::Value {
    let r = http
        .get(format!("{}/api/pool", base(sidecar)))
        .bearer_auth(token)
        .send()
        .await
        .expect("GET /api/pool");
    assert_eq!(r.status(), 200, "GET /api/pool");
    r.json().await.expect("pool JSON")
}

/// `PUT /api/pool` with `body`; answers the status and the JSON body.
pub async fn put_pool(
    http: &reqwest::Client,
    sidecar: &Sidecar,
    token: &str,
    body: serde_json::Value,
) -> (u16, serde_json::Value) {
    let r = http
        .put(format!("{}/api/pool", base(sidecar)))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .expect("PUT /api/pool");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(serde_json::Value::Null))
}
