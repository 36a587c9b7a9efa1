//! The hazard log's load and exhaustion tests against the real sidecar and PostgreSQL. Both
//! open up to 30 server connections, hence `heavy_` (nextest runs them one at a time).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::{Duration, Instant};

use poolwarden_tests::sidecar::{Sidecar, backends, direct, through, unique};

/// Poll pg_stat_activity for backends with `app` until stopped; returns the maximum seen.
fn watch_backends(app: String) -> (Arc<AtomicBool>, tokio::task::JoinHandle<i64>) {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let handle = tokio::spawn(async move {
        let db = direct("postgres").await;
        let max = AtomicI64::new(0);
        while !flag.load(Ordering::SeqCst) {
            max.fetch_max(backends(&db, &app).await, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        max.load(Ordering::SeqCst)
    });
    (stop, handle)
}

/// Hazard log, load test: 50 concurrent clients, each a short transaction, through a 20/10
/// pool: all finish within 5 s, none gets a pool error, at most 30 backends.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn heavy_load() {
    let sidecar = Sidecar::start(
        "postgres",
        "transaction",
        "  pool_size: 20\n  max_overflow: 10\n  pool_timeout: 30s",
    );
    let app = unique("pw_load");
    let (stop, watcher) = watch_backends(app.clone());
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let (sc, app) = (sidecar.port, app.clone());
        let conninfo = format!(
            "host=127.0.0.1 port={sc} user=postgres dbname=postgres application_name={app}"
        );
        tasks.push(tokio::spawn(async move {
            let (client, conn) = tokio_postgres::connect(&conninfo, tokio_postgres::NoTls).await?;
            tokio::spawn(conn);
            client.batch_execute("BEGIN").await?;
            client
                .simple_query("SELECT pg_sleep(0.2), count(*) FROM pg_class")
                .await?;
            client.batch_execute("COMMIT").await?;
            Ok::<_, tokio_postgres::Error>(())
        }));
    }
    let mut errors = Vec::new();
    for t in tasks {
        if let Err(e) = t.await.unwrap() {
            errors.push(e.to_string());
        }
    }
    let elapsed = start.elapsed();
    stop.store(true, Ordering::SeqCst);
    let max = watcher.await.unwrap();
    assert!(errors.is_empty(), "clients failed: {errors:?}");
    assert!(
        elapsed < Duration::from_secs(5),
        "50 short transactions took {elapsed:?}"
    );
    assert!(
        max <= 30,
        "the database saw {max} backends from the sidecar (limit 30)"
    );
    assert!(max >= 1, "the watcher never saw a sidecar backend");
}

/// Hazard log, pool exhaustion test: 35 concurrent long transactions on a 20/10 pool with a
/// 2 s pool_timeout: 30 hold connections, 5 wait and then fail with the exact QueuePool error
/// (not before pool_timeout), and stay usable.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn heavy_exhaustion() {
    let sidecar = Sidecar::start(
        "postgres",
        "transaction",
        "  pool_size: 20\n  max_overflow: 10\n  pool_timeout: 2s\n  statement_timeout: 30s",
    );
    let app = unique("pw_exhaust");
    let (stop, watcher) = watch_backends(app.clone());
    // Log all 35 in first, so the race is only about transactions.
    let mut clients = Vec::new();
    for _ in 0..35 {
        let (c, _conn) = through(&sidecar, "postgres", &app).await.expect("login");
        clients.push(Arc::new(c));
    }
    let mut tasks = Vec::new();
    for c in clients.clone() {
        tasks.push(tokio::spawn(async move {
            let start = Instant::now();
            if let Err(e) = c.batch_execute("BEGIN").await {
                return (Err(e), start.elapsed());
            }
            let r = async {
                c.simple_query("SELECT pg_sleep(4)").await?;
                c.batch_execute("COMMIT").await
            }
            .await;
            (r, start.elapsed())
        }));
    }
    let mut ok = 0;
    let mut failed = Vec::new();
    for (i, t) in tasks.into_iter().enumerate() {
        match t.await.unwrap() {
            (Ok(()), _) => ok += 1,
            (Err(e), waited) => failed.push((i, e, waited)),
        }
    }
    stop.store(true, Ordering::SeqCst);
    let max = watcher.await.unwrap();
    assert_eq!(
        ok, 30,
        "30 transactions hold connections and finish; failures: {failed:?}"
    );
    assert_eq!(failed.len(), 5);
    for (_, e, waited) in &failed {
        let db = e
            .as_db_error()
            .unwrap_or_else(|| panic!("not a server error: {e}"));
        assert_eq!(db.code().code(), "53300");
        assert_eq!(db.severity(), "ERROR");
        assert_eq!(
            db.message(),
            "QueuePool limit of size 20 overflow 10 reached, connection timed out, timeout 2.00"
        );
        assert!(
            *waited >= Duration::from_secs(2),
            "failed before pool_timeout: {waited:?}"
        );
        assert!(
            *waited < Duration::from_secs(4),
            "failed long after pool_timeout: {waited:?}"
        );
    }
    // The clients that timed out are still connected and usable.
    for (i, _, _) in &failed {
        let v = clients[*i]
            .simple_query("SELECT 1")
            .await
            .expect("the connection stays usable");
        assert!(!v.is_empty());
    }
    assert!(
        max <= 30,
        "the database saw {max} backends from the sidecar (limit 30)"
    );
}
