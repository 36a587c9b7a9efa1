//! The wired sidecar's admin API, metrics, slow-query log and live reload, end to end on the
//! real binary and the shared PostgreSQL (a few server connections each).

use std::path::Path;
use std::time::{Duration, Instant};

use poolwarden_tests::sidecar::{
    Sidecar, TempDir, backends, config_yaml, direct, scalar, through, unique,
};
use poolwarden_tests::sidecar_admin::{base, get_pool, put_pool, scrape, scrape_until, wait_ready};

const ADMIN: &str = "admin-token-0123456789abcdef";
const VIEWER: &str = "viewer-token-0123456789abcdef";

/// Every series name of CONTRACT §2.6 (histograms by their family name).
const SERIES: [&str; 19] = [
    "poolwarden_pool_size",
    "poolwarden_pool_max_overflow",
    "poolwarden_pool_checked_out_connections",
    "poolwarden_pool_checked_in_connections",
    "poolwarden_pool_overflow_connections",
    "poolwarden_pool_waiting_clients",
    "poolwarden_pool_utilization_ratio",
    "poolwarden_pool_wait_seconds",
    "poolwarden_pool_timeouts_total",
    "poolwarden_server_connections_opened_total",
    "poolwarden_server_connections_closed_total",
    "poolwarden_server_connect_errors_total",
    "poolwarden_breaker_state",
    "poolwarden_breaker_rejections_total",
    "poolwarden_client_connections",
    "poolwarden_transactions_total",
    "poolwarden_query_duration_seconds",
    "poolwarden_slow_queries_total",
    "poolwarden_config_reloads_total",
];

fn tokens_file(dir: &Path) -> String {
    let path = dir.join("tokens");
    std::fs::write(&path, format!("admin {ADMIN}\nviewer {VIEWER}\n")).unwrap();
    path.to_string_lossy().into_owned()
}

fn start(pool: &str, extra: &str) -> (Sidecar, TempDir) {
    let dir = TempDir::new("poolwarden-admin");
    let tokens = tokens_file(dir.path());
    let extra = format!("admin:\n  tokens_file: {tokens}\n{extra}");
    let sidecar =
        Sidecar::start_with(|port| config_yaml(port, "postgres", "transaction", pool, &extra));
    (sidecar, dir)
}

#[tokio::test]
async fn admin_auth_on_the_real_binary() {
    let (sidecar, _dir) = start("  pool_size: 2\n  max_overflow: 0", "");
    let http = reqwest::Client::new();
    wait_ready(&http, &sidecar).await;
    let b = base(&sidecar);
    for path in ["/healthz", "/readyz"] {
        let r = http.get(format!("{b}{path}")).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path} without auth");
    }
    let r = http.get(format!("{b}/api/metrics")).send().await.unwrap();
    assert_eq!(r.status(), 401, "no token");
    assert_eq!(
        r.headers()
            .get("www-authenticate")
            .map(|v| v.to_str().unwrap()),
        Some("Bearer")
    );
    let r = http
        .get(format!("{b}/api/metrics"))
        .bearer_auth("not-a-known-token")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "unknown token");
    let r = http
        .get(format!("{b}/api/metrics"))
        .bearer_auth(VIEWER)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403, "viewer on /api/metrics");
    let r = http
        .get(format!("{b}/api/metrics"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "admin on /api/metrics");
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    // A viewer may read the pools but not change them.
    let pools = get_pool(&http, &sidecar, VIEWER).await;
    assert_eq!(pools["pools"][0]["database"], "postgres");
    let (status, _) = put_pool(
        &http,
        &sidecar,
        VIEWER,
        serde_json::json!({"database": "postgres", "pool_size": 3}),
    )
    .await;
    assert_eq!(status, 403);
    // An admin's push is validated: unknown database 404, out of range 400, nothing applied.
    let (status, body) = put_pool(
        &http,
        &sidecar,
        ADMIN,
        serde_json::json!({"database": "nope", "pool_size": 3}),
    )
    .await;
    assert_eq!(status, 404, "{body}");
    let (status, body) = put_pool(
        &http,
        &sidecar,
        ADMIN,
        serde_json::json!({"database": "postgres", "pool_size": 0}),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("pool_size"),
        "{body}"
    );
    assert_eq!(
        get_pool(&http, &sidecar, ADMIN).await["pools"][0]["pool_size"],
        2
    );
    let log = sidecar.log();
    assert!(
        !log.contains(ADMIN) && !log.contains(VIEWER),
        "a token reached the log"
    );
}

/// `/readyz` is about the sidecar, not the database: 200 with the database unreachable,
/// while a client's query gets the connection error.
#[tokio::test]
async fn readyz_does_not_depend_on_the_database() {
    let dir = TempDir::new("poolwarden-admin");
    let tokens = tokens_file(dir.path());
    let dead = poolwarden_tests::sidecar::free_port();
    let sidecar = Sidecar::start_with(|port| {
        config_yaml(
            port,
            "postgres",
            "transaction",
            "  pool_size: 2\n  connect_timeout: 1s",
            &format!("admin:\n  tokens_file: {tokens}\n"),
        )
        .replace("port: 5432", &format!("port: {dead}"))
    });
    let http = reqwest::Client::new();
    wait_ready(&http, &sidecar).await;
    let pools = get_pool(&http, &sidecar, ADMIN).await;
    assert_eq!(pools["pools"][0]["breaker"], "closed");
    let r = tokio_postgres::connect(
        &sidecar.conninfo("postgres", "pw_dead"),
        tokio_postgres::NoTls,
    )
    .await;
    assert!(r.is_err(), "no server to log in against");
    let r = http
        .get(format!("{}/readyz", base(&sidecar)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn metrics_match_pg_stat_activity_and_name_every_series() {
    let (sidecar, _dir) = start("  pool_size: 3\n  max_overflow: 1", "");
    let http = reqwest::Client::new();
    wait_ready(&http, &sidecar).await;
    let app = unique("pw_metrics");
    let db = direct("postgres").await;

    // A known load: two clients inside open transactions, one that finished some work.
    let mut holders = Vec::new();
    for _ in 0..2 {
        let (c, _conn) = through(&sidecar, "postgres", &app).await.unwrap();
        c.batch_execute("BEGIN").await.unwrap();
        assert_eq!(scalar(&c, "SELECT 1").await.unwrap(), "1");
        holders.push(c);
    }
    let (idle, _conn) = through(&sidecar, "postgres", &app).await.unwrap();
    for _ in 0..5 {
        scalar(&idle, "SELECT 1").await.unwrap();
    }

    let out_is = |n: f64| {
        move |m: &poolwarden_tests::sidecar_admin::Scrape| {
            m.value("poolwarden_pool_checked_out_connections", "postgres", &[]) == Some(n)
        }
    };
    let m = scrape_until(
        &http,
        &sidecar,
        ADMIN,
        "two clients hold a connection",
        out_is(2.0),
    )
    .await;
    let out = m
        .value("poolwarden_pool_checked_out_connections", "postgres", &[])
        .unwrap();
    let inn = m
        .value("poolwarden_pool_checked_in_connections", "postgres", &[])
        .unwrap();
    let server_side = backends(&db, &app).await as f64;
    assert_eq!(out, 2.0, "two clients hold a connection");
    assert_eq!(
        out + inn,
        server_side,
        "checked out + checked in = backends of the sidecar"
    );
    assert_eq!(m.value("poolwarden_pool_size", "postgres", &[]), Some(3.0));
    assert_eq!(
        m.value("poolwarden_pool_max_overflow", "postgres", &[]),
        Some(1.0)
    );
    let util = m
        .value("poolwarden_pool_utilization_ratio", "postgres", &[])
        .unwrap();
    assert!((util - 2.0 / 3.0).abs() < 1e-9, "utilization {util}");
    assert_eq!(
        m.value("poolwarden_client_connections", "postgres", &[]),
        Some(3.0)
    );
    assert!(
        m.value("poolwarden_transactions_total", "postgres", &[])
            .unwrap()
            >= 5.0
    );
    assert!(
        m.value(
            "poolwarden_server_connections_opened_total",
            "postgres",
            &[]
        )
        .unwrap()
            >= server_side
    );
    assert_eq!(
        m.value("poolwarden_breaker_state", "postgres", &[]),
        Some(0.0)
    );
    for name in SERIES {
        assert!(
            m.has(name, "postgres"),
            "{name} with database=\"postgres\" is missing"
        );
    }
    let queries = m
        .value("poolwarden_query_duration_seconds", "postgres", &[])
        .unwrap();
    assert!(queries >= 7.0, "every query is timed: {queries}");

    for c in &holders {
        c.batch_execute("COMMIT").await.unwrap();
    }
    let m = scrape_until(&http, &sidecar, ADMIN, "every connection back", out_is(0.0)).await;
    assert_eq!(
        m.value("poolwarden_pool_checked_in_connections", "postgres", &[]),
        Some(backends(&db, &app).await as f64)
    );
}

#[tokio::test]
async fn slow_query_logs_a_fingerprint_only() {
    let (sidecar, _dir) = start(
        "  pool_size: 2\n  max_overflow: 0",
        "slow_query_threshold: 150ms\n",
    );
    let http = reqwest::Client::new();
    wait_ready(&http, &sidecar).await;
    let app = unique("pw_slow");
    let (c, _conn) = through(&sidecar, "postgres", &app).await.unwrap();
    let before = scrape(&http, &sidecar, ADMIN)
        .await
        .value("poolwarden_slow_queries_total", "postgres", &[])
        .unwrap();
    // Simple protocol, with a literal that must never reach the log.
    c.simple_query("SELECT pg_sleep(0.3), 'literal-secret-4711' AS x")
        .await
        .unwrap();
    // Extended protocol (unnamed statement, one batch) with a bind parameter.
    c.query_typed(
        "SELECT pg_sleep(0.3), $1::text AS y",
        &[(&"bind-secret-0815", tokio_postgres::types::Type::TEXT)],
    )
    .await
    .unwrap();
    // A fast one is not slow.
    c.simple_query("SELECT 'fast-literal-1'").await.unwrap();
    let after = scrape(&http, &sidecar, ADMIN)
        .await
        .value("poolwarden_slow_queries_total", "postgres", &[])
        .unwrap();
    assert_eq!(after - before, 2.0, "two slow queries counted");
    let log = sidecar.log();
    let slow: Vec<&str> = log.lines().filter(|l| l.contains("slow query")).collect();
    assert_eq!(slow.len(), 2, "one line per slow query:\n{log}");
    assert!(
        slow[0].contains("SELECT pg_sleep(?), ?"),
        "fingerprint: {}",
        slow[0]
    );
    assert!(
        slow[1].contains("SELECT pg_sleep(?), $1::text"),
        "fingerprint: {}",
        slow[1]
    );
    for secret in ["literal-secret-4711", "bind-secret-0815", "fast-literal-1"] {
        assert!(!log.contains(secret), "{secret} reached the log:\n{log}");
    }
}

/// Send SIGHUP and wait (10 s at most) for the sidecar to log the reload it made. The first
/// SIGHUP of a test only: an earlier one's line would satisfy the wait.
async fn sighup_and_wait(sidecar: &Sidecar) {
    sidecar.signal("HUP");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !sidecar
        .log()
        .lines()
        .any(|l| l.contains("config reloaded") && l.contains("SIGHUP"))
    {
        assert!(
            Instant::now() < deadline,
            "no SIGHUP reload:\n{}",
            sidecar.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A client logged in before a reload gets the new slow_query_threshold from its next
/// transaction on: each session keeps the live config it last read and looks again only when
/// a reload replaced it.
#[tokio::test]
async fn a_reloaded_threshold_reaches_a_client_logged_in_before() {
    let (sidecar, _dir) = start(
        "  pool_size: 2\n  max_overflow: 0",
        "slow_query_threshold: 1h\n",
    );
    let http = reqwest::Client::new();
    wait_ready(&http, &sidecar).await;
    let slow = |m: &poolwarden_tests::sidecar_admin::Scrape| {
        m.value("poolwarden_slow_queries_total", "postgres", &[])
            .unwrap()
    };
    let app = unique("pw_slow_reload");
    let (c, _conn) = through(&sidecar, "postgres", &app).await.unwrap();
    let before = slow(&scrape(&http, &sidecar, ADMIN).await);
    c.simple_query("SELECT pg_sleep(0.2)").await.unwrap();
    assert_eq!(
        slow(&scrape(&http, &sidecar, ADMIN).await),
        before,
        "0.2 s is not slow under a 1 h threshold"
    );

    let yaml = std::fs::read_to_string(sidecar.config_path()).unwrap();
    let reloaded = yaml.replace("slow_query_threshold: 1h", "slow_query_threshold: 50ms");
    assert_ne!(yaml, reloaded, "the threshold is in the file:\n{yaml}");
    std::fs::write(sidecar.config_path(), reloaded).unwrap();
    sighup_and_wait(&sidecar).await;

    // The same client, the same session: its next transaction is timed against 50 ms.
    c.simple_query("SELECT pg_sleep(0.2)").await.unwrap();
    assert_eq!(
        slow(&scrape(&http, &sidecar, ADMIN).await),
        before + 1.0,
        "the reloaded threshold counted the session's next slow query:\n{}",
        sidecar.log()
    );
}

/// Write `yaml` as a new ConfigMap revision in `dir` and swap `..data` to it atomically, as
/// the kubelet does.
fn configmap_revision(dir: &Path, rev: &str, yaml: &str) {
    let data = dir.join(format!("..{rev}"));
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("poolwarden.yaml"), yaml).unwrap();
    let tmp = dir.join("..data_tmp");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(format!("..{rev}"), &tmp).unwrap();
    std::fs::rename(&tmp, dir.join("..data")).unwrap();
}

async fn pool_size(http: &reqwest::Client, sidecar: &Sidecar) -> u64 {
    get_pool(http, sidecar, ADMIN).await["pools"][0]["pool_size"]
        .as_u64()
        .unwrap()
}

async fn wait_pool_size(http: &reqwest::Client, sidecar: &Sidecar, want: u64, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while pool_size(http, sidecar).await != want {
        assert!(
            Instant::now() < deadline,
            "{what}: pool_size not {want} in 10 s:\n{}",
            sidecar.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn reload_configmap_swap_invalid_file_sighup_and_push() {
    let (sidecar, _dir) = start("  pool_size: 4\n  max_overflow: 0", "");
    let http = reqwest::Client::new();
    wait_ready(&http, &sidecar).await;
    let original = std::fs::read_to_string(sidecar.config_path()).unwrap();
    // Turn the config file into a ConfigMap volume layout with the same content.
    let cm = sidecar.dir().join("cm");
    std::fs::create_dir_all(&cm).unwrap();
    configmap_revision(&cm, "rev1", &original);
    std::os::unix::fs::symlink("..data/poolwarden.yaml", cm.join("poolwarden.yaml")).unwrap();
    let link = sidecar.dir().join("link.tmp");
    std::os::unix::fs::symlink(cm.join("poolwarden.yaml"), &link).unwrap();
    std::fs::rename(&link, sidecar.config_path()).unwrap();

    // A ConfigMap update: pool_size 4 → 6.
    configmap_revision(
        &cm,
        "rev2",
        &original.replace("pool_size: 4", "pool_size: 6"),
    );
    wait_pool_size(&http, &sidecar, 6, "after the ..data swap").await;

    // An invalid revision is refused; the old config keeps serving.
    let failures = |m: &poolwarden_tests::sidecar_admin::Scrape| {
        m.value(
            "poolwarden_config_reloads_total",
            "postgres",
            &[("result", "failure")],
        )
        .unwrap()
    };
    let before = failures(&scrape(&http, &sidecar, ADMIN).await);
    configmap_revision(
        &cm,
        "rev3",
        &original.replace("pool_size: 4", "pool_size: -3"),
    );
    scrape_until(&http, &sidecar, ADMIN, "the invalid file counted", |m| {
        failures(m) > before
    })
    .await;
    assert_eq!(
        pool_size(&http, &sidecar).await,
        6,
        "old config keeps serving"
    );
    let app = unique("pw_reload");
    let (c, _conn) = through(&sidecar, "postgres", &app).await.unwrap();
    assert_eq!(scalar(&c, "SELECT 41 + 1").await.unwrap(), "42");

    // A push holds while the file's pool section is unchanged ...
    let (status, body) = put_pool(
        &http,
        &sidecar,
        ADMIN,
        serde_json::json!({"database": "postgres", "pool_size": 9}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["pools"][0]["pool_size"], 9);
    // ... a file edit elsewhere keeps it (rev4 = rev2 + a new slow threshold).
    let successes = |m: &poolwarden_tests::sidecar_admin::Scrape| {
        m.value(
            "poolwarden_config_reloads_total",
            "postgres",
            &[("result", "success")],
        )
        .unwrap()
    };
    let before = successes(&scrape(&http, &sidecar, ADMIN).await);
    configmap_revision(
        &cm,
        "rev4",
        &format!(
            "{}slow_query_threshold: 7s\n",
            original.replace("pool_size: 4", "pool_size: 6")
        ),
    );
    scrape_until(&http, &sidecar, ADMIN, "rev4 reloaded", |m| {
        successes(m) > before
    })
    .await;
    assert_eq!(
        pool_size(&http, &sidecar).await,
        9,
        "an unrelated reload kept the push"
    );
    // SIGHUP reloads (here with nothing changed: the push still holds).
    sighup_and_wait(&sidecar).await;
    assert_eq!(pool_size(&http, &sidecar).await, 9);
    // A changed pool section in the file wins over the push.
    configmap_revision(
        &cm,
        "rev5",
        &original.replace("pool_size: 4", "pool_size: 5"),
    );
    sidecar.signal("HUP");
    wait_pool_size(&http, &sidecar, 5, "after the file's pool section changed").await;
    let successes = scrape(&http, &sidecar, ADMIN)
        .await
        .value(
            "poolwarden_config_reloads_total",
            "postgres",
            &[("result", "success")],
        )
        .unwrap();
    assert!(successes >= 3.0, "reload successes counted: {successes}");
}
