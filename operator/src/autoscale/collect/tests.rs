use super::*;

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;
use std::collections::HashMap;
use std::sync::Arc;

/// What a sidecar with two databases exposes (text format 0.0.4, as the `prometheus` crate
/// writes it: HELP/TYPE lines, histograms, counters with extra labels).
const EXPOSITION: &str = r#"# HELP poolwarden_breaker_state Circuit breaker state: 0 closed, 1 half-open, 2 open
# TYPE poolwarden_breaker_state gauge
poolwarden_breaker_state{database="clinical"} 0
poolwarden_breaker_state{database="audit"} 2
# HELP poolwarden_pool_checked_out_connections Server connections in use by clients
# TYPE poolwarden_pool_checked_out_connections gauge
poolwarden_pool_checked_out_connections{database="clinical"} 17
poolwarden_pool_checked_out_connections{database="audit"} 1
# HELP poolwarden_pool_checked_in_connections Idle server connections in the pool
# TYPE poolwarden_pool_checked_in_connections gauge
poolwarden_pool_checked_in_connections{database="clinical"} 3
poolwarden_pool_checked_in_connections{database="audit"} 4
# HELP poolwarden_pool_max_overflow Configured max_overflow
# TYPE poolwarden_pool_max_overflow gauge
poolwarden_pool_max_overflow{database="clinical"} 10
poolwarden_pool_max_overflow{database="audit"} 3
# HELP poolwarden_pool_size Configured pool_size
# TYPE poolwarden_pool_size gauge
poolwarden_pool_size{database="clinical"} 20
poolwarden_pool_size{database="audit"} 5
# HELP poolwarden_pool_timeouts_total Clients that hit pool_timeout
# TYPE poolwarden_pool_timeouts_total counter
poolwarden_pool_timeouts_total{database="clinical"} 3
poolwarden_pool_timeouts_total{database="audit"} 0
# HELP poolwarden_pool_utilization_ratio checked_out / pool_size
# TYPE poolwarden_pool_utilization_ratio gauge
poolwarden_pool_utilization_ratio{database="clinical"} 0.85
poolwarden_pool_utilization_ratio{database="audit"} 0.2
# HELP poolwarden_pool_wait_seconds Time clients waited for a connection
# TYPE poolwarden_pool_wait_seconds histogram
poolwarden_pool_wait_seconds_bucket{database="clinical",le="0.005"} 100
poolwarden_pool_wait_seconds_bucket{database="clinical",le="+Inf"} 120
poolwarden_pool_wait_seconds_sum{database="clinical"} 12.5
poolwarden_pool_wait_seconds_count{database="clinical"} 120
# HELP poolwarden_pool_waiting_clients Clients queued for a connection
# TYPE poolwarden_pool_waiting_clients gauge
poolwarden_pool_waiting_clients{database="clinical"} 4
poolwarden_pool_waiting_clients{database="audit"} 0
# HELP poolwarden_server_connections_closed_total Server connections closed
# TYPE poolwarden_server_connections_closed_total counter
poolwarden_server_connections_closed_total{database="clinical",reason="recycle"} 7
# HELP poolwarden_config_reloads_total Config reloads
# TYPE poolwarden_config_reloads_total counter
poolwarden_config_reloads_total{result="success"} 1
"#;

#[test]
fn parses_realistic_exposition_text() {
    let m = parse_metrics(EXPOSITION).unwrap();
    assert_eq!(m.pools.len(), 2);
    let audit = &m.pools[0];
    let clinical = &m.pools[1];
    assert_eq!(audit.database, "audit");
    assert_eq!(
        clinical,
        &PoolMetrics {
            database: "clinical".into(),
            pool_size: 20.0,
            max_overflow: Some(10.0),
            checked_out: 17.0,
            waiting: 4.0,
            timeouts_total: Some(3.0),
            breaker_state: Some(0.0),
        }
    );
    assert!((clinical.utilization() - 0.85).abs() < 1e-12);
    assert_eq!(clinical.demand(), 21);
    assert!(audit.breaker_open() && !clinical.breaker_open());
    // The pod is as busy as its busiest pool.
    assert!((m.utilization() - 0.85).abs() < 1e-12);
    assert_eq!(m.demand(), 21);
}

#[test]
fn a_missing_required_series_is_an_error_not_zero() {
    let without_waiting: String = EXPOSITION
        .lines()
        .filter(|l| !l.contains("waiting_clients"))
        .map(|l| format!("{l}\n"))
        .collect();
    let err = parse_metrics(&without_waiting).unwrap_err();
    assert!(
        matches!(
            err,
            CollectError::Missing {
                metric: WAITING,
                ..
            }
        ),
        "{err}"
    );
    let err = parse_metrics("# nothing here\nsome_other_metric 1\n").unwrap_err();
    assert!(
        matches!(
            err,
            CollectError::Missing {
                metric: POOL_SIZE,
                ..
            }
        ),
        "{err}"
    );
    assert!(parse_metrics("").is_err());
}

#[test]
fn observation_aggregates_and_never_counts_unreachable_pods_as_zero() {
    let busy = parse_metrics(EXPOSITION).unwrap();
    let idle = PodMetrics {
        pools: vec![PoolMetrics {
            database: "clinical".into(),
            pool_size: 20.0,
            checked_out: 1.0,
            ..PoolMetrics::default()
        }],
    };
    let obs = Observation {
        pods: vec![
            ("a".into(), PodScrape::Reporting(busy)),
            (
                "b".into(),
                PodScrape::Unreachable("connection refused".into()),
            ),
            ("c".into(), PodScrape::Reporting(idle)),
        ],
    };
    assert_eq!((obs.matched(), obs.reporting()), (3, 2));
    assert_eq!(obs.unreachable(), vec!["b".to_string()]);
    assert!((obs.utilization().unwrap() - 0.85).abs() < 1e-12);
    assert_eq!(obs.demand(), Some(21));
    // (17 + 1 + 1) / (20 + 5 + 20)
    assert!((obs.overall_utilization().unwrap() - 19.0 / 45.0).abs() < 1e-12);
    assert!(obs.breaker_open());
    let s = obs.sample(jiff::Timestamp::UNIX_EPOCH).unwrap();
    assert_eq!(s.demand, 21);

    let none = Observation {
        pods: vec![
            ("a".into(), PodScrape::Unreachable("timeout".into())),
            ("b".into(), PodScrape::Unreachable("timeout".into())),
        ],
    };
    assert_eq!(none.reporting(), 0);
    assert_eq!(none.utilization(), None);
    assert_eq!(
        none.sample(jiff::Timestamp::UNIX_EPOCH),
        None,
        "no pod: no sample, never zero"
    );
}

const TOKEN: &str = "test-admin-token-7f3a";

/// A real HTTP server on loopback standing in for the sidecar's admin endpoint until the
/// sidecar lands: bearer auth as CONTRACT §2.5, the exposition text above.
async fn serve(body: &'static str) -> (String, tokio::task::JoinHandle<()>) {
    async fn metrics(State(body): State<&'static str>, headers: HeaderMap) -> (StatusCode, String) {
        let auth = headers.get("authorization").and_then(|v| v.to_str().ok());
        if auth != Some(&format!("Bearer {TOKEN}")) {
            return (StatusCode::UNAUTHORIZED, String::new());
        }
        (StatusCode::OK, body.to_string())
    }
    let app = Router::new()
        .route("/api/metrics", get(metrics))
        .with_state(body);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    (format!("http://{addr}"), task)
}

/// A port on loopback with nothing listening.
async fn closed_port() -> u16 {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap().port()
}

#[tokio::test]
async fn scrapes_a_live_http_endpoint_with_the_token() {
    let (base, server) = serve(EXPOSITION).await;
    let scraper = Scraper::new(Duration::from_secs(5)).unwrap();
    let m = scraper.scrape_url(&base, TOKEN).await.unwrap();
    assert_eq!(m.demand(), 21);
    let err = scraper.scrape_url(&base, "wrong").await.unwrap_err();
    assert!(matches!(err, CollectError::Status(401)), "{err}");
    assert!(!err.to_string().contains("wrong"));
    server.abort();
}

#[tokio::test]
async fn scrape_all_reports_unreachable_pods_by_name() {
    let (base, server) = serve(EXPOSITION).await;
    let port: u16 = base.rsplit(':').next().unwrap().parse().unwrap();
    let dead = closed_port().await;
    let (bad_base, bad_server) = serve("not prometheus at all {{{\n").await;
    let bad_port: u16 = bad_base.rsplit(':').next().unwrap().parse().unwrap();
    let pods = vec![
        PodTarget {
            name: "web-1".into(),
            ip: Some("127.0.0.1".into()),
            admin_port: port,
        },
        PodTarget {
            name: "web-2".into(),
            ip: Some("127.0.0.1".into()),
            admin_port: dead,
        },
        PodTarget {
            name: "web-3".into(),
            ip: None,
            admin_port: port,
        },
        PodTarget {
            name: "web-4".into(),
            ip: Some("127.0.0.1".into()),
            admin_port: bad_port,
        },
    ];
    let scraper = Scraper::new(Duration::from_secs(5)).unwrap();
    let obs = scraper.scrape_all(&pods, TOKEN).await;
    assert_eq!(obs.matched(), 4);
    assert_eq!(obs.reporting(), 1);
    assert_eq!(obs.unreachable(), vec!["web-2", "web-3", "web-4"]);
    for (_, r) in &obs.pods {
        if let PodScrape::Unreachable(why) = r {
            assert!(!why.contains(TOKEN), "{why}");
        }
    }
    assert_eq!(obs.demand(), Some(21));
    server.abort();
    bad_server.abort();
}

/// A real HTTP server answering `/api/v1/query` like Prometheus, from a table of
/// (metric, pod, database, value).
async fn serve_prometheus(
    rows: Vec<(&'static str, &'static str, &'static str, f64)>,
) -> (String, tokio::task::JoinHandle<()>) {
    type Rows = Arc<Vec<(&'static str, &'static str, &'static str, f64)>>;
    async fn query(
        State(rows): State<Rows>,
        Query(q): Query<HashMap<String, String>>,
    ) -> axum::Json<serde_json::Value> {
        // Pod names arrive regex-escaped (`web-4\\.x`); compare them unescaped.
        let promql = q
            .get("query")
            .cloned()
            .unwrap_or_default()
            .replace('\\', "");
        let result: Vec<_> = rows
            .iter()
            .filter(|(m, pod, _, _)| {
                promql.contains(&format!("({m}{{")) && promql.contains(pod)
            })
            .map(|(_, pod, db, v)| {
                serde_json::json!({"metric": {"pod": pod, "database": db}, "value": [1.7e9, v.to_string()]})
            })
            .collect();
        axum::Json(serde_json::json!({
            "status": "success",
            "data": {"resultType": "vector", "result": result}
        }))
    }
    let app = Router::new()
        .route("/api/v1/query", get(query))
        .with_state(Arc::new(rows) as Rows);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    (format!("http://{addr}"), task)
}

#[tokio::test]
async fn prometheus_api_source() {
    let rows = vec![
        (POOL_SIZE, "web-1", "clinical", 20.0),
        (CHECKED_OUT, "web-1", "clinical", 18.0),
        (WAITING, "web-1", "clinical", 2.0),
        (POOL_SIZE, "web-2", "clinical", 20.0),
        (CHECKED_OUT, "web-2", "clinical", 4.0),
        // web-2 lacks the waiting series: unusable, not zero.
        (POOL_SIZE, "web-4.x", "clinical", 20.0),
        (CHECKED_OUT, "web-4.x", "clinical", 5.0),
        (WAITING, "web-4.x", "clinical", 0.0),
    ];
    let (url, server) = serve_prometheus(rows).await;
    let source = PrometheusSource::new(PrometheusSourceConfig::new(url)).unwrap();
    let pods: Vec<String> = ["web-1", "web-2", "web-3", "web-4.x"]
        .map(String::from)
        .into();
    let q = source.query_for(POOL_SIZE, "clinical", &pods);
    assert_eq!(
        q,
        r#"max by (pod, database) (poolwarden_pool_size{namespace="clinical",pod=~"web-1|web-2|web-3|web-4\\.x"})"#
    );
    let obs = source.observe("clinical", &pods).await;
    assert_eq!(obs.reporting(), 2);
    assert_eq!(obs.unreachable(), vec!["web-2", "web-3"]);
    assert!((obs.utilization().unwrap() - 0.9).abs() < 1e-12);
    assert_eq!(obs.demand(), Some(20));
    server.abort();

    // Prometheus down: every pod unreachable.
    let dead = closed_port().await;
    let source = PrometheusSource::new(PrometheusSourceConfig::new(format!(
        "http://127.0.0.1:{dead}"
    )))
    .unwrap();
    let obs = source.observe("clinical", &pods).await;
    assert_eq!(obs.reporting(), 0);
    assert_eq!(obs.unreachable().len(), 4);
}

#[test]
fn targets_come_from_pod_name_and_ip() {
    let pod: k8s_openapi::api::core::v1::Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "web-1"}, "status": {"podIP": "10.0.0.7"}
    }))
    .unwrap();
    assert_eq!(
        PodTarget::from_pod(&pod, 9930),
        PodTarget {
            name: "web-1".into(),
            ip: Some("10.0.0.7".into()),
            admin_port: 9930
        }
    );
    let pending: k8s_openapi::api::core::v1::Pod =
        serde_json::from_value(serde_json::json!({"metadata": {"name": "web-2"}})).unwrap();
    assert_eq!(PodTarget::from_pod(&pending, 9930).ip, None);
}
