use prometheus_parse::{Scrape, Value};

use super::*;

fn scrape(m: &Metrics) -> Scrape {
    let text = m.encode();
    Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).expect("valid text format")
}

fn find<'a>(s: &'a Scrape, name: &str, labels: &[(&str, &str)]) -> Option<&'a Value> {
    s.samples
        .iter()
        .find(|x| {
            x.metric == name
                && x.labels.len() == labels.len()
                && labels.iter().all(|(k, v)| x.labels.get(k) == Some(*v))
        })
        .map(|x| &x.value)
}

fn number(v: Option<&Value>) -> f64 {
    match v {
        Some(Value::Counter(n) | Value::Gauge(n) | Value::Untyped(n)) => *n,
        other => panic!("expected a number, got {other:?}"),
    }
}

/// Series beyond CONTRACT §2.6, documented in docs/metrics.md.
const ADDITIONS: &[(&str, &str)] = &[("poolwarden_prepared_statements_total", "counter")];

/// (name, type) of every series in CONTRACT §2.6.
const CONTRACT: &[(&str, &str)] = &[
    ("poolwarden_pool_size", "gauge"),
    ("poolwarden_pool_max_overflow", "gauge"),
    ("poolwarden_pool_checked_out_connections", "gauge"),
    ("poolwarden_pool_checked_in_connections", "gauge"),
    ("poolwarden_pool_overflow_connections", "gauge"),
    ("poolwarden_pool_waiting_clients", "gauge"),
    ("poolwarden_pool_utilization_ratio", "gauge"),
    ("poolwarden_pool_wait_seconds", "histogram"),
    ("poolwarden_pool_timeouts_total", "counter"),
    ("poolwarden_server_connections_opened_total", "counter"),
    ("poolwarden_server_connections_closed_total", "counter"),
    ("poolwarden_server_connect_errors_total", "counter"),
    ("poolwarden_breaker_state", "gauge"),
    ("poolwarden_breaker_rejections_total", "counter"),
    ("poolwarden_client_connections", "gauge"),
    ("poolwarden_transactions_total", "counter"),
    ("poolwarden_query_duration_seconds", "histogram"),
    ("poolwarden_slow_queries_total", "counter"),
    ("poolwarden_config_reloads_total", "counter"),
];

#[test]
fn every_contract_series_is_present_with_its_type_and_database_label() {
    let m = Metrics::new();
    let _ = m.pool("clinical");
    let s = scrape(&m);
    for (name, kind) in CONTRACT {
        let samples: Vec<_> = s.samples.iter().filter(|x| x.metric == *name).collect();
        assert!(!samples.is_empty(), "{name} missing");
        for x in &samples {
            assert_eq!(
                x.labels.get("database"),
                Some("clinical"),
                "{name} database label"
            );
            let got = match x.value {
                Value::Counter(_) => "counter",
                Value::Gauge(_) => "gauge",
                Value::Histogram(_) => "histogram",
                Value::Summary(_) => "summary",
                Value::Untyped(_) => "untyped",
            };
            assert_eq!(got, *kind, "{name} type");
        }
        assert!(s.docs.contains_key(*name), "{name} has HELP");
    }
    // The names in the output are the contract's, and the documented additions
    // (docs/metrics.md, "beyond CONTRACT §2.6"): nothing else.
    let text = m.encode();
    for line in text.lines().filter(|l| l.starts_with("# TYPE ")) {
        let name = line.split_whitespace().nth(2).unwrap();
        assert!(
            CONTRACT.iter().chain(ADDITIONS).any(|(n, _)| *n == name),
            "unexpected family {name}"
        );
    }
    for result in ["hit", "miss", "eviction"] {
        let v = find(
            &s,
            "poolwarden_prepared_statements_total",
            &[("database", "clinical"), ("result", result)],
        );
        assert_eq!(number(v), 0.0, "{result}");
    }
    // Every close reason and both reload results exist from the start, at zero.
    for r in CloseReason::ALL {
        let v = find(
            &s,
            "poolwarden_server_connections_closed_total",
            &[("database", "clinical"), ("reason", r.as_str())],
        );
        assert_eq!(number(v), 0.0, "{}", r.as_str());
    }
    for r in ["success", "failure"] {
        let v = find(
            &s,
            "poolwarden_config_reloads_total",
            &[("database", "clinical"), ("result", r)],
        );
        assert_eq!(number(v), 0.0);
    }
}

#[test]
fn values_follow_the_handles() {
    let m = Metrics::new();
    let p = m.pool("clinical");
    let other = m.pool("billing");
    p.set_settings(20, 10);
    p.set_checked_out(15);
    p.set_checked_in(5);
    p.set_overflow(0);
    p.set_waiting(3);
    p.observe_wait(Duration::from_millis(3));
    p.observe_wait(Duration::from_secs(2));
    p.pool_timeout();
    p.connection_opened();
    p.connection_opened();
    p.connection_closed(CloseReason::Recycle);
    p.connection_closed(CloseReason::IdleInTransaction);
    p.connection_closed(CloseReason::IdleInTransaction);
    p.connect_error();
    p.set_breaker_state(BreakerState::Open);
    p.breaker_rejected();
    p.client_connected();
    p.client_connected();
    p.client_disconnected();
    p.transaction_served();
    p.observe_query(Duration::from_millis(20));
    p.slow_query();
    m.record_reload(ReloadResult::Success);
    m.record_reload(ReloadResult::Failure);
    m.record_reload(ReloadResult::Failure);
    other.set_settings(5, 0);

    let s = scrape(&m);
    let db = [("database", "clinical")];
    let table = [
        ("poolwarden_pool_size", 20.0),
        ("poolwarden_pool_max_overflow", 10.0),
        ("poolwarden_pool_checked_out_connections", 15.0),
        ("poolwarden_pool_checked_in_connections", 5.0),
        ("poolwarden_pool_overflow_connections", 0.0),
        ("poolwarden_pool_waiting_clients", 3.0),
        ("poolwarden_pool_utilization_ratio", 0.75),
        ("poolwarden_pool_timeouts_total", 1.0),
        ("poolwarden_server_connections_opened_total", 2.0),
        ("poolwarden_server_connect_errors_total", 1.0),
        ("poolwarden_breaker_state", 2.0),
        ("poolwarden_breaker_rejections_total", 1.0),
        ("poolwarden_client_connections", 1.0),
        ("poolwarden_transactions_total", 1.0),
        ("poolwarden_slow_queries_total", 1.0),
    ];
    for (name, want) in table {
        assert_eq!(number(find(&s, name, &db)), want, "{name}");
    }
    let closed = |reason| {
        number(find(
            &s,
            "poolwarden_server_connections_closed_total",
            &[("database", "clinical"), ("reason", reason)],
        ))
    };
    assert_eq!(closed("recycle"), 1.0);
    assert_eq!(closed("idle_in_transaction"), 2.0);
    assert_eq!(closed("shutdown"), 0.0);
    for (db, result, want) in [
        ("clinical", "success", 1.0),
        ("clinical", "failure", 2.0),
        ("billing", "failure", 2.0),
    ] {
        let v = find(
            &s,
            "poolwarden_config_reloads_total",
            &[("database", db), ("result", result)],
        );
        assert_eq!(number(v), want, "{db} {result}");
    }
    // The other pool is separate.
    assert_eq!(
        number(find(&s, "poolwarden_pool_size", &[("database", "billing")])),
        5.0
    );
    assert_eq!(
        number(find(
            &s,
            "poolwarden_pool_checked_out_connections",
            &[("database", "billing")]
        )),
        0.0
    );

    // Histogram buckets: 1 ms .. 60 s, cumulative counts.
    match find(&s, "poolwarden_pool_wait_seconds", &db) {
        Some(Value::Histogram(buckets)) => {
            let le: Vec<f64> = buckets.iter().map(|b| b.less_than).collect();
            assert_eq!(le.first(), Some(&0.001));
            assert!(le.contains(&60.0));
            let count_at = |x: f64| buckets.iter().find(|b| b.less_than == x).unwrap().count;
            assert_eq!(count_at(0.001), 0.0);
            assert_eq!(count_at(0.005), 1.0);
            assert_eq!(count_at(2.5), 2.0);
            assert_eq!(count_at(f64::INFINITY), 2.0);
        }
        other => panic!("wait histogram: {other:?}"),
    }
    match find(&s, "poolwarden_query_duration_seconds", &db) {
        Some(Value::Histogram(buckets)) => {
            let count_at = |x: f64| buckets.iter().find(|b| b.less_than == x).unwrap().count;
            assert_eq!(count_at(0.01), 0.0);
            assert_eq!(count_at(0.025), 1.0);
        }
        other => panic!("query histogram: {other:?}"),
    }
}

#[test]
fn utilization_is_checked_out_over_pool_size_after_a_resize() {
    let m = Metrics::new();
    let p = m.pool("db");
    p.set_settings(20, 10);
    p.set_checked_out(25);
    let s = scrape(&m);
    assert_eq!(
        number(find(
            &s,
            "poolwarden_pool_utilization_ratio",
            &[("database", "db")]
        )),
        1.25
    );
    p.set_settings(50, 10);
    let s = scrape(&m);
    assert_eq!(
        number(find(
            &s,
            "poolwarden_pool_utilization_ratio",
            &[("database", "db")]
        )),
        0.5
    );
}

#[test]
fn pool_returns_the_same_series_and_remove_drops_them() {
    let m = Metrics::new();
    m.pool("a").connection_opened();
    m.pool("a").connection_opened();
    let s = scrape(&m);
    assert_eq!(
        number(find(
            &s,
            "poolwarden_server_connections_opened_total",
            &[("database", "a")]
        )),
        2.0
    );
    m.remove_pool("a");
    let s = scrape(&m);
    assert!(
        s.samples
            .iter()
            .all(|x| x.labels.get("database") != Some("a"))
    );
    assert!(m.databases().is_empty());
}

#[test]
fn content_type_is_text_format_0_0_4() {
    assert!(CONTENT_TYPE.starts_with(prometheus::TEXT_FORMAT));
}

#[test]
fn close_reasons_round_trip_through_their_labels() {
    for r in CloseReason::ALL {
        assert_eq!(CloseReason::from_label(r.as_str()), Some(r));
    }
    assert_eq!(CloseReason::from_label("bored"), None);
}
