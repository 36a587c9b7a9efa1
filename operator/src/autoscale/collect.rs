//! Metrics collection (the I/O half of autoscaling): scrape every matched pod's sidecar
//! `GET http://<podIP>:<adminPort>/api/metrics` with the admin token, or ask a Prometheus HTTP
//! API, and turn the answers into an [`Observation`].
//!
//! ```text
//!   pods ──scrape──▶ PodScrape::Reporting(PodMetrics) | PodScrape::Unreachable(error)
//!                         └──▶ Observation ──sample()──▶ history::Sample (busiest pool)
//! ```
//!
//! A pod that cannot be scraped, or whose answer lacks a required series, is *unreachable*:
//! it is reported by name and never counted as zero load. Utilization and demand of the
//! policy are those of the **busiest pool** (the largest checked_out / pool_size, and the
//! largest checked_out + waiting, over every database of every reporting pod): every sidecar
//! runs the same pool size, so the pool must be large enough for the busiest one, whose
//! clients are the ones waiting. The overall ratio (sum / sum) is kept for display.

use std::collections::BTreeMap;
use std::time::Duration;

use jiff::Timestamp;
use prometheus_parse::{Scrape, Value};

use super::history::Sample;

/// `poolwarden_pool_size` (CONTRACT §2.6).
pub const POOL_SIZE: &str = "poolwarden_pool_size";
/// `poolwarden_pool_max_overflow`.
pub const POOL_MAX_OVERFLOW: &str = "poolwarden_pool_max_overflow";
/// `poolwarden_pool_checked_out_connections`.
pub const CHECKED_OUT: &str = "poolwarden_pool_checked_out_connections";
/// `poolwarden_pool_waiting_clients`.
pub const WAITING: &str = "poolwarden_pool_waiting_clients";
/// `poolwarden_pool_timeouts_total`.
pub const TIMEOUTS_TOTAL: &str = "poolwarden_pool_timeouts_total";
/// `poolwarden_breaker_state` (0 closed, 1 half-open, 2 open).
pub const BREAKER_STATE: &str = "poolwarden_breaker_state";

/// The series of one pool (one `database` label) of one sidecar.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PoolMetrics {
    /// The `database` label.
    pub database: String,
    /// Configured pool_size.
    pub pool_size: f64,
    /// Configured max_overflow, when exposed.
    pub max_overflow: Option<f64>,
    /// Server connections checked out.
    pub checked_out: f64,
    /// Clients waiting for a connection.
    pub waiting: f64,
    /// Clients that hit pool_timeout so far, when exposed.
    pub timeouts_total: Option<f64>,
    /// Breaker state (0 closed, 1 half-open, 2 open), when exposed.
    pub breaker_state: Option<f64>,
}

impl PoolMetrics {
    /// checked_out / pool_size (0 for a pool of size 0 with nothing checked out; the
    /// checked out count itself for a pool of size 0 that somehow has some).
    pub fn utilization(&self) -> f64 {
        if self.pool_size > 0.0 {
            self.checked_out / self.pool_size
        } else {
            self.checked_out
        }
    }

    /// checked_out + waiting, in connections.
    pub fn demand(&self) -> u32 {
        (self.checked_out + self.waiting).max(0.0).ceil() as u32
    }

    /// The breaker is open.
    pub fn breaker_open(&self) -> bool {
        self.breaker_state.is_some_and(|s| s >= 2.0)
    }
}

/// Everything one sidecar reported, one entry per database.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PodMetrics {
    /// Pools by database name, sorted.
    pub pools: Vec<PoolMetrics>,
}

impl PodMetrics {
    /// The busiest pool's utilization.
    pub fn utilization(&self) -> f64 {
        self.pools
            .iter()
            .map(PoolMetrics::utilization)
            .fold(0.0, f64::max)
    }

    /// The busiest pool's demand.
    pub fn demand(&self) -> u32 {
        self.pools
            .iter()
            .map(PoolMetrics::demand)
            .max()
            .unwrap_or(0)
    }
}

/// Why a metrics answer could not be used.
#[derive(Debug, thiserror::Error)]
pub enum CollectError {
    /// The request failed (connection refused, timeout, ...).
    #[error("request failed: {0}")]
    Http(#[source] reqwest::Error),
    /// A non-success HTTP status.
    #[error("HTTP status {0}")]
    Status(u16),
    /// The body is not Prometheus text format.
    #[error("not Prometheus text format: {0}")]
    Parse(String),
    /// A required series is missing.
    #[error("{metric} missing for database {database:?}")]
    Missing {
        /// The metric name.
        metric: &'static str,
        /// The database label ("" when no pool is reported at all).
        database: String,
    },
    /// A Prometheus HTTP API answer that is not a vector result.
    #[error("unexpected Prometheus API answer: {0}")]
    Api(String),
}

/// Parses a sidecar's `/api/metrics` body (Prometheus text format 0.0.4).
pub fn parse_metrics(text: &str) -> Result<PodMetrics, CollectError> {
    let scrape = Scrape::parse(text.lines().map(|l| Ok(l.to_owned())))
        .map_err(|e| CollectError::Parse(e.to_string()))?;
    let mut series: BTreeMap<String, BTreeMap<&str, f64>> = BTreeMap::new();
    for s in &scrape.samples {
        let name = match s.metric.as_str() {
            POOL_SIZE => POOL_SIZE,
            POOL_MAX_OVERFLOW => POOL_MAX_OVERFLOW,
            CHECKED_OUT => CHECKED_OUT,
            WAITING => WAITING,
            TIMEOUTS_TOTAL => TIMEOUTS_TOTAL,
            BREAKER_STATE => BREAKER_STATE,
            _ => continue,
        };
        let v = match s.value {
            Value::Gauge(v) | Value::Counter(v) | Value::Untyped(v) => v,
            _ => continue,
        };
        if !v.is_finite() {
            continue;
        }
        let db = s.labels.get("database").unwrap_or("").to_string();
        series.entry(db).or_default().insert(name, v);
    }
    build(series)
}

fn build(series: BTreeMap<String, BTreeMap<&str, f64>>) -> Result<PodMetrics, CollectError> {
    let mut pools = Vec::new();
    for (database, m) in series {
        if !m.contains_key(POOL_SIZE) && !m.contains_key(CHECKED_OUT) && !m.contains_key(WAITING) {
            continue; // only breaker/timeout series for this label: not a pool
        }
        let need = |metric: &'static str| {
            m.get(metric).copied().ok_or_else(|| CollectError::Missing {
                metric,
                database: database.clone(),
            })
        };
        pools.push(PoolMetrics {
            pool_size: need(POOL_SIZE)?,
            checked_out: need(CHECKED_OUT)?,
            waiting: need(WAITING)?,
            max_overflow: m.get(POOL_MAX_OVERFLOW).copied(),
            timeouts_total: m.get(TIMEOUTS_TOTAL).copied(),
            breaker_state: m.get(BREAKER_STATE).copied(),
            database,
        });
    }
    if pools.is_empty() {
        return Err(CollectError::Missing {
            metric: POOL_SIZE,
            database: String::new(),
        });
    }
    Ok(PodMetrics { pools })
}

/// One matched pod to scrape.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodTarget {
    /// Pod name (reported when unreachable).
    pub name: String,
    /// Pod IP; `None` while the pod has none yet (reported unreachable).
    pub ip: Option<String>,
    /// The sidecar's admin port (`spec.sidecar.adminPort`).
    pub admin_port: u16,
}

impl PodTarget {
    /// The target for a matched pod: its name, `status.podIP` and the policy's admin port.
    pub fn from_pod(pod: &k8s_openapi::api::core::v1::Pod, admin_port: u16) -> Self {
        Self {
            name: pod.metadata.name.clone().unwrap_or_default(),
            ip: pod
                .status
                .as_ref()
                .and_then(|s| s.pod_ip.clone())
                .filter(|ip| !ip.is_empty()),
            admin_port,
        }
    }
}

/// The result for one pod.
#[derive(Clone, Debug, PartialEq)]
pub enum PodScrape {
    /// The sidecar answered with usable metrics.
    Reporting(PodMetrics),
    /// It did not; the reason, without any token.
    Unreachable(String),
}

/// Every matched pod's result at one moment.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Observation {
    /// (pod name, result), in target order.
    pub pods: Vec<(String, PodScrape)>,
}

impl Observation {
    /// Pods matched.
    pub fn matched(&self) -> u32 {
        self.pods.len() as u32
    }

    /// Pods that reported.
    pub fn reporting(&self) -> u32 {
        self.reporting_pods().count() as u32
    }

    /// Names of the pods that could not be scraped.
    pub fn unreachable(&self) -> Vec<String> {
        self.pods
            .iter()
            .filter(|(_, r)| matches!(r, PodScrape::Unreachable(_)))
            .map(|(n, _)| n.clone())
            .collect()
    }

    fn reporting_pods(&self) -> impl Iterator<Item = &PodMetrics> {
        self.pods.iter().filter_map(|(_, r)| match r {
            PodScrape::Reporting(m) => Some(m),
            PodScrape::Unreachable(_) => None,
        })
    }

    /// The busiest pool's utilization over the reporting pods; `None` when none reports.
    pub fn utilization(&self) -> Option<f64> {
        self.reporting_pods()
            .map(PodMetrics::utilization)
            .reduce(f64::max)
    }

    /// The busiest pool's demand over the reporting pods; `None` when none reports.
    pub fn demand(&self) -> Option<u32> {
        self.reporting_pods().map(PodMetrics::demand).max()
    }

    /// Σ checked_out / Σ pool_size over every reporting pool (for display).
    pub fn overall_utilization(&self) -> Option<f64> {
        let (out, size) = self
            .reporting_pods()
            .flat_map(|p| p.pools.iter())
            .fold((0.0, 0.0), |(o, s), p| (o + p.checked_out, s + p.pool_size));
        (size > 0.0).then(|| out / size)
    }

    /// Some reporting pool has its breaker open.
    pub fn breaker_open(&self) -> bool {
        self.reporting_pods()
            .flat_map(|p| p.pools.iter())
            .any(PoolMetrics::breaker_open)
    }

    /// The history sample for this observation taken at `time`; `None` when no pod reports
    /// (missing metrics are never a zero sample).
    pub fn sample(&self, time: Timestamp) -> Option<Sample> {
        Some(Sample {
            time,
            utilization: self.utilization()?,
            demand: self.demand()?,
        })
    }
}

/// Scrapes sidecars directly.
#[derive(Clone, Debug)]
pub struct Scraper {
    client: reqwest::Client,
}

impl Scraper {
    /// A scraper whose every request gives up after `timeout`.
    pub fn new(timeout: Duration) -> Result<Self, CollectError> {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .build()
            .map_err(CollectError::Http)?;
        Ok(Self { client })
    }

    /// `GET <base>/api/metrics` with the bearer token; `base` is `http://host:port`.
    pub async fn scrape_url(&self, base: &str, token: &str) -> Result<PodMetrics, CollectError> {
        let resp = self
            .client
            .get(format!("{}/api/metrics", base.trim_end_matches('/')))
            .bearer_auth(token)
            .send()
            .await
            .map_err(|e| CollectError::Http(e.without_url()))?;
        if !resp.status().is_success() {
            return Err(CollectError::Status(resp.status().as_u16()));
        }
        let body = resp
            .text()
            .await
            .map_err(|e| CollectError::Http(e.without_url()))?;
        parse_metrics(&body)
    }

    /// Scrapes one pod.
    pub async fn scrape_pod(&self, pod: &PodTarget, token: &str) -> PodScrape {
        let Some(ip) = pod.ip.as_deref() else {
            return PodScrape::Unreachable("pod has no IP yet".into());
        };
        let host = if ip.contains(':') {
            format!("[{ip}]")
        } else {
            ip.to_string()
        };
        match self
            .scrape_url(&format!("http://{host}:{}", pod.admin_port), token)
            .await
        {
            Ok(m) => PodScrape::Reporting(m),
            Err(e) => {
                tracing::debug!(pod = %pod.name, error = %e, "metrics scrape failed");
                PodScrape::Unreachable(e.to_string())
            }
        }
    }

    /// Scrapes every pod concurrently.
    pub async fn scrape_all(&self, pods: &[PodTarget], token: &str) -> Observation {
        let results =
            futures::future::join_all(pods.iter().map(|p| self.scrape_pod(p, token))).await;
        Observation {
            pods: pods.iter().map(|p| p.name.clone()).zip(results).collect(),
        }
    }
}

/// The optional Prometheus HTTP API source (`GET <url>/api/v1/query`).
///
/// Asks `max by (<pod label>, database) (<metric>{<namespace label>="<ns>",<pod label>=~"<pods>"})`
/// for each required series. A pod with no series in Prometheus is unreachable. Prometheus
/// answers with the last value within its lookback (5 minutes by default), so this source
/// lags the direct scrape by up to one Prometheus scrape interval.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PrometheusSourceConfig {
    /// Base URL of the Prometheus server, e.g. `http://prometheus.monitoring:9090`.
    pub url: String,
    /// The label holding the pod name. Default `pod`.
    pub pod_label: String,
    /// The label holding the namespace. Default `namespace`.
    pub namespace_label: String,
    /// Per-request timeout.
    pub timeout: Duration,
}

impl PrometheusSourceConfig {
    /// A config with the usual kubernetes_sd label names and a 5 s timeout.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            pod_label: "pod".into(),
            namespace_label: "namespace".into(),
            timeout: Duration::from_secs(5),
        }
    }
}

/// Reads pool metrics from a Prometheus HTTP API.
#[derive(Clone, Debug)]
pub struct PrometheusSource {
    config: PrometheusSourceConfig,
    client: reqwest::Client,
}

#[derive(serde::Deserialize)]
struct ApiAnswer {
    status: String,
    #[serde(default)]
    data: Option<ApiData>,
    #[serde(default)]
    error: Option<String>,
}

#[derive(serde::Deserialize)]
struct ApiData {
    #[serde(rename = "resultType")]
    result_type: String,
    result: Vec<ApiSeries>,
}

#[derive(serde::Deserialize)]
struct ApiSeries {
    metric: BTreeMap<String, String>,
    value: (f64, String),
}

impl PrometheusSource {
    /// A source for `config`.
    pub fn new(config: PrometheusSourceConfig) -> Result<Self, CollectError> {
        let client = reqwest::Client::builder()
            .timeout(config.timeout)
            .build()
            .map_err(CollectError::Http)?;
        Ok(Self { config, client })
    }

    /// The PromQL asked for `metric`.
    pub fn query_for(&self, metric: &str, namespace: &str, pods: &[String]) -> String {
        let c = &self.config;
        let alternatives: Vec<String> = pods.iter().map(|p| regex_escape(p)).collect();
        format!(
            "max by ({pod}, database) ({metric}{{{ns}=\"{namespace}\",{pod}=~\"{re}\"}})",
            pod = c.pod_label,
            ns = c.namespace_label,
            re = alternatives.join("|"),
        )
    }

    async fn query(&self, promql: &str) -> Result<Vec<ApiSeries>, CollectError> {
        let resp = self
            .client
            .get(format!(
                "{}/api/v1/query",
                self.config.url.trim_end_matches('/')
            ))
            .query(&[("query", promql)])
            .send()
            .await
            .map_err(|e| CollectError::Http(e.without_url()))?;
        if !resp.status().is_success() {
            return Err(CollectError::Status(resp.status().as_u16()));
        }
        let answer: ApiAnswer = resp
            .json()
            .await
            .map_err(|e| CollectError::Http(e.without_url()))?;
        if answer.status != "success" {
            return Err(CollectError::Api(answer.error.unwrap_or(answer.status)));
        }
        let data = answer
            .data
            .ok_or_else(|| CollectError::Api("no data".into()))?;
        if data.result_type != "vector" {
            return Err(CollectError::Api(format!(
                "result type {}",
                data.result_type
            )));
        }
        Ok(data.result)
    }

    /// Observes `pods` of `namespace`. A failing query makes every pod unreachable.
    pub async fn observe(&self, namespace: &str, pods: &[String]) -> Observation {
        let metrics = [
            POOL_SIZE,
            CHECKED_OUT,
            WAITING,
            POOL_MAX_OVERFLOW,
            TIMEOUTS_TOTAL,
            BREAKER_STATE,
        ];
        let mut per_pod: BTreeMap<String, BTreeMap<String, BTreeMap<&str, f64>>> = BTreeMap::new();
        for metric in metrics {
            let result = match self.query(&self.query_for(metric, namespace, pods)).await {
                Ok(r) => r,
                Err(e) => {
                    let why = format!("Prometheus query failed: {e}");
                    return Observation {
                        pods: pods
                            .iter()
                            .map(|p| (p.clone(), PodScrape::Unreachable(why.clone())))
                            .collect(),
                    };
                }
            };
            for s in result {
                let Some(pod) = s.metric.get(&self.config.pod_label) else {
                    continue;
                };
                let Ok(v) = s.value.1.parse::<f64>() else {
                    continue;
                };
                if !v.is_finite() {
                    continue;
                }
                let db = s.metric.get("database").cloned().unwrap_or_default();
                per_pod
                    .entry(pod.clone())
                    .or_default()
                    .entry(db)
                    .or_default()
                    .insert(metric, v);
            }
        }
        let pods = pods
            .iter()
            .map(|p| {
                let r = match per_pod.remove(p) {
                    None => PodScrape::Unreachable("no series in Prometheus".into()),
                    Some(series) => {
                        let series = series.into_iter().collect();
                        match build(series) {
                            Ok(m) => PodScrape::Reporting(m),
                            Err(e) => PodScrape::Unreachable(e.to_string()),
                        }
                    }
                };
                (p.clone(), r)
            })
            .collect();
        Observation { pods }
    }
}

fn regex_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if !c.is_ascii_alphanumeric() && c != '-' && c != '_' {
            out.push('\\');
            out.push('\\'); // PromQL string escaping of the regex backslash
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests;
