//! The circuit breaker against a real database that goes away (`pg_ctl stop -m immediate`)
//! under load, and comes back: fail fast with 57P03 and the configured message while open, no
//! client hangs, the pool recovers by itself after `open_for`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use poolwarden_tests::pg_instance::PgInstance;
use poolwarden_tests::sidecar::{Sidecar, TempDir, scalar, unique};
use poolwarden_tests::sidecar_admin::{get_pool, scrape, wait_ready};

const ADMIN: &str = "breaker-admin-token-0123456789";
const MESSAGE: &str = "Ward database resting; try again shortly.";

async fn connect(port: u16, app: &str) -> tokio_postgres::Client {
    let (c, conn) = tokio_postgres::connect(
        &format!("host=127.0.0.1 port={port} user=postgres dbname=postgres application_name={app}"),
        tokio_postgres::NoTls,
    )
    .await
    .expect("connect through the sidecar");
    tokio::spawn(conn);
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn breaker_opens_fails_fast_and_recovers() {
    let pg = PgInstance::start(
        "local all all trust\nhost all all 127.0.0.1/32 trust\n",
        "",
        |_| {},
    );
    let dir = TempDir::new("poolwarden-breaker");
    let tokens = dir.path().join("tokens");
    std::fs::write(&tokens, format!("admin {ADMIN}\n")).unwrap();
    let pg_port = pg.port;
    let sidecar = Sidecar::start_with(|port| {
        format!(
            "listen: 127.0.0.1:{port}\nadmin_listen: 127.0.0.1:{admin}\n\
             databases:\n  - name: postgres\n    host: 127.0.0.1\n    port: {pg_port}\n    user: postgres\n    sslmode: disable\n\
             pool:\n  pool_size: 3\n  max_overflow: 0\n  pool_timeout: 5s\n  connect_timeout: 1s\n  pool_pre_ping: true\n\
             breaker:\n  failure_threshold: 3\n  open_for: 3s\n  message: \"{MESSAGE}\"\n\
             admin:\n  tokens_file: {tokens}\n",
            admin = poolwarden_tests::sidecar::free_port(),
            tokens = tokens.display(),
        )
    });
    let http = reqwest::Client::new();
    wait_ready(&http, &sidecar).await;
    let app = unique("pw_breaker");

    // Load: 3 clients running short transactions until told to stop. Each query holds the
    // gate's read side; the outage takes the write side, so PostgreSQL stops between queries.
    // A query in flight at the moment the database dies cannot be saved by any pooler (its
    // client gets FATAL 08006 and loses the connection, as with PgBouncer); what is tested is
    // that every query sent after the outage began meets no dead pooled connection.
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let gate = Arc::new(tokio::sync::RwLock::new(()));
    let mut load = Vec::new();
    for _ in 0..3 {
        let (stop, ok, port, app) = (stop.clone(), ok.clone(), sidecar.port, app.clone());
        let gate = gate.clone();
        load.push(tokio::spawn(async move {
            let c = connect(port, &app).await;
            let mut slowest = Duration::ZERO;
            while !stop.load(Ordering::SeqCst) {
                let in_flight = gate.read().await;
                let t = Instant::now();
                let r =
                    tokio::time::timeout(Duration::from_secs(10), c.simple_query("SELECT 1")).await;
                drop(in_flight);
                let r = r.expect("a client hung for 10 s");
                slowest = slowest.max(t.elapsed());
                if r.is_ok() {
                    ok.fetch_add(1, Ordering::SeqCst);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            // The same client connection still works after the outage.
            scalar(&c, "SELECT 'still here'")
                .await
                .expect("client kept its connection");
            slowest
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        ok.load(Ordering::SeqCst) > 0,
        "the load runs before the outage"
    );

    // A client connected before the outage, for the fail-fast measurements.
    let probe = connect(sidecar.port, &app).await;
    scalar(&probe, "SELECT 1").await.unwrap();

    {
        let _between_queries = gate.write().await;
        pg.stop_immediate();
    }
    let stopped = Instant::now();
    // After failure_threshold failed connects the breaker opens.
    let deadline = Instant::now() + Duration::from_secs(15);
    let err = loop {
        let e = probe.simple_query("SELECT 1").await.err();
        if let Some(e) = e.as_ref().and_then(|e| e.as_db_error())
            && e.code().code() == "57P03"
        {
            break e.clone();
        }
        assert!(
            Instant::now() < deadline,
            "breaker did not open in 15 s:\n{}",
            sidecar.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(err.message(), MESSAGE);
    assert_eq!(err.severity(), "ERROR");
    eprintln!("breaker open {:?} after the stop", stopped.elapsed());
    // Every new request now fails fast, without a network attempt.
    for _ in 0..10 {
        let t = Instant::now();
        let e = probe.simple_query("SELECT 1").await.unwrap_err();
        let took = t.elapsed();
        assert_eq!(e.as_db_error().map(|d| d.code().code()), Some("57P03"));
        assert!(took < Duration::from_millis(200), "rejection took {took:?}");
    }
    // A brand-new client logs in (server parameters are cached) and gets the same answer.
    let fresh = connect(sidecar.port, &app).await;
    let e = fresh.simple_query("SELECT 1").await.unwrap_err();
    assert_eq!(e.as_db_error().map(|d| d.code().code()), Some("57P03"));
    let m = scrape(&http, &sidecar, ADMIN).await;
    assert_eq!(
        m.value("poolwarden_breaker_state", "postgres", &[]),
        Some(2.0)
    );
    assert!(
        m.value("poolwarden_breaker_rejections_total", "postgres", &[])
            .unwrap()
            >= 11.0
    );
    assert!(
        m.value("poolwarden_server_connect_errors_total", "postgres", &[])
            .unwrap()
            >= 3.0
    );
    assert_eq!(
        get_pool(&http, &sidecar, ADMIN).await["pools"][0]["breaker"],
        "open"
    );

    // The database comes back; after open_for the half-open probe succeeds by itself.
    pg.restart();
    let back = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(v) = scalar(&probe, "SELECT 'recovered'").await {
            assert_eq!(v, "recovered");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "pool did not recover in 20 s:\n{}",
            sidecar.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!("recovered {:?} after the restart", back.elapsed());
    assert_eq!(scalar(&fresh, "SELECT 2").await.unwrap(), "2");
    let before = ok.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(ok.load(Ordering::SeqCst) > before, "the load runs again");
    stop.store(true, Ordering::SeqCst);
    for t in load {
        let slowest = t.await.expect("load task");
        assert!(slowest < Duration::from_secs(10));
    }
    let m = scrape(&http, &sidecar, ADMIN).await;
    assert_eq!(
        m.value("poolwarden_breaker_state", "postgres", &[]),
        Some(0.0)
    );
}
