//! Metrics and live resize under load, against the shared PostgreSQL. Up to 20 server
//! connections each, hence `heavy_` (nextest runs them one at a time).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use poolwarden_tests::sidecar::{Sidecar, TempDir, backends, config_yaml, direct, unique};
use poolwarden_tests::sidecar_admin::{put_pool, scrape, wait_ready};

const ADMIN: &str = "load-admin-token-0123456789abcdef";

fn start(pool: &str) -> (Sidecar, TempDir) {
    let dir = TempDir::new("poolwarden-load");
    let tokens = dir.path().join("tokens");
    std::fs::write(&tokens, format!("admin {ADMIN}\n")).unwrap();
    let extra = format!("admin:\n  tokens_file: {}\n", tokens.display());
    let sidecar =
        Sidecar::start_with(|port| config_yaml(port, "postgres", "transaction", pool, &extra));
    (sidecar, dir)
}

/// `n` clients running short transactions until `stop`; counts successes and errors.
fn run_clients(
    sidecar: &Sidecar,
    app: &str,
    n: usize,
    sleep: &'static str,
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    errors: Arc<AtomicU64>,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..n)
        .map(|_| {
            let conninfo = sidecar.conninfo("postgres", app);
            let (stop, ok, errors) = (stop.clone(), ok.clone(), errors.clone());
            tokio::spawn(async move {
                let (c, conn) = tokio_postgres::connect(&conninfo, tokio_postgres::NoTls)
                    .await
                    .expect("connect through the sidecar");
                tokio::spawn(conn);
                while !stop.load(Ordering::SeqCst) {
                    let r = c
                        .batch_execute(&format!("BEGIN; SELECT pg_sleep({sleep}); COMMIT"))
                        .await;
                    match r {
                        Ok(()) => ok.fetch_add(1, Ordering::SeqCst),
                        Err(e) => {
                            eprintln!("client error: {e}");
                            errors.fetch_add(1, Ordering::SeqCst)
                        }
                    };
                }
            })
        })
        .collect()
}

/// 35 clients compete for a 10 + 5 pool: sampled all along, the checked-out gauge never
/// exceeds pool_size + max_overflow, and at every sample it is what the server shows.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn heavy_checked_out_never_exceeds_the_bound() {
    let (sidecar, _dir) = start("  pool_size: 10\n  max_overflow: 5\n  pool_timeout: 30s");
    let http = reqwest::Client::new();
    wait_ready(&http, &sidecar).await;
    let app = unique("pw_bound");
    let db = direct("postgres").await;
    let (stop, ok, errors) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
    );
    let clients = run_clients(
        &sidecar,
        &app,
        35,
        "0.05",
        stop.clone(),
        ok.clone(),
        errors.clone(),
    );
    let until = Instant::now() + Duration::from_secs(4);
    let (mut samples, mut max_out, mut max_waiting) = (0, 0.0f64, 0.0f64);
    while Instant::now() < until {
        let m = scrape(&http, &sidecar, ADMIN).await;
        let out = m
            .value("poolwarden_pool_checked_out_connections", "postgres", &[])
            .unwrap();
        let inn = m
            .value("poolwarden_pool_checked_in_connections", "postgres", &[])
            .unwrap();
        let waiting = m
            .value("poolwarden_pool_waiting_clients", "postgres", &[])
            .unwrap();
        assert!(out <= 15.0, "checked out {out} > pool_size + max_overflow");
        assert!(out + inn <= 15.0, "open connections {} > 15", out + inn);
        max_out = max_out.max(out);
        max_waiting = max_waiting.max(waiting);
        samples += 1;
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let server = backends(&db, &app).await;
    assert!(server <= 15, "{server} backends on the server");
    stop.store(true, Ordering::SeqCst);
    for c in clients {
        c.await.unwrap();
    }
    assert_eq!(errors.load(Ordering::SeqCst), 0, "client errors");
    assert!(max_out >= 10.0, "the pool was saturated (max {max_out})");
    assert!(
        max_waiting > 0.0,
        "clients queued (max waiting {max_waiting})"
    );
    eprintln!(
        "{samples} samples, max checked out {max_out}, max waiting {max_waiting}, {} transactions",
        ok.load(Ordering::SeqCst)
    );
    // At rest: nothing checked out, no overflow, and (once the server has seen the overflow
    // connections go) the idle ones are exactly the server's backends.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let m = scrape(&http, &sidecar, ADMIN).await;
        let out = m.value("poolwarden_pool_checked_out_connections", "postgres", &[]);
        let overflow = m.value("poolwarden_pool_overflow_connections", "postgres", &[]);
        let inn = m.value("poolwarden_pool_checked_in_connections", "postgres", &[]);
        let server = backends(&db, &app).await as f64;
        if out == Some(0.0) && overflow == Some(0.0) && inn == Some(server) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "at rest: checked out {out:?}, overflow {overflow:?}, checked in {inn:?}, server {server}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn wait_backends(
    db: &tokio_postgres::Client,
    app: &str,
    what: &str,
    ok: impl Fn(i64) -> bool,
) -> i64 {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let n = backends(db, app).await;
        if ok(n) {
            return n;
        }
        assert!(Instant::now() < deadline, "{what}: {n} backends after 15 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Grow 5 → 20 and shrink 20 → 5 through `PUT /api/pool` while 40 clients run transactions:
/// no client error, and the server-side connection count follows the new bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn heavy_resize_under_load() {
    let (sidecar, _dir) = start("  pool_size: 5\n  max_overflow: 0\n  pool_timeout: 30s");
    let http = reqwest::Client::new();
    wait_ready(&http, &sidecar).await;
    let app = unique("pw_resize");
    let db = direct("postgres").await;
    let (stop, ok, errors) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
    );
    let clients = run_clients(
        &sidecar,
        &app,
        40,
        "0.02",
        stop.clone(),
        ok.clone(),
        errors.clone(),
    );
    wait_backends(&db, &app, "warm-up at 5", |n| n == 5).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(backends(&db, &app).await <= 5);

    let (status, body) = put_pool(
        &http,
        &sidecar,
        ADMIN,
        serde_json::json!({"database": "postgres", "pool_size": 20}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["pools"][0]["pool_size"], 20);
    let grown = wait_backends(&db, &app, "grow to 20", |n| n > 15).await;
    assert!(grown <= 20);
    for _ in 0..10 {
        assert!(backends(&db, &app).await <= 20);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let (status, body) = put_pool(
        &http,
        &sidecar,
        ADMIN,
        serde_json::json!({"database": "postgres", "poolSize": 5}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["pools"][0]["pool_size"], 5);
    wait_backends(&db, &app, "shrink to 5", |n| n <= 5).await;
    for _ in 0..10 {
        assert!(
            backends(&db, &app).await <= 5,
            "above the new bound after the shrink"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let before = ok.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        ok.load(Ordering::SeqCst) > before,
        "clients keep working after the shrink"
    );
    stop.store(true, Ordering::SeqCst);
    for c in clients {
        c.await.unwrap();
    }
    assert_eq!(
        errors.load(Ordering::SeqCst),
        0,
        "client errors during the resizes"
    );
    let m = scrape(&http, &sidecar, ADMIN).await;
    assert!(
        m.value(
            "poolwarden_server_connections_closed_total",
            "postgres",
            &[("reason", "resize")]
        )
        .unwrap()
            + m.value(
                "poolwarden_server_connections_closed_total",
                "postgres",
                &[("reason", "overflow")]
            )
            .unwrap()
            >= 15.0,
        "the shrink closed the surplus"
    );
}
