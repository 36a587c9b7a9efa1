//! `worker_threads` (addition): the sidecar serves the same transactions on its default single
//! event loop and on a multi-threaded runtime, says which at start, and a reload that changes
//! the count keeps the running threads (it needs a restart), against the shared PostgreSQL.

use std::time::Duration;

use poolwarden_tests::sidecar::{Sidecar, config_yaml, direct, through, unique};

fn start(worker_threads: &str) -> Sidecar {
    let extra = if worker_threads.is_empty() {
        String::new()
    } else {
        format!("worker_threads: {worker_threads}\n")
    };
    Sidecar::start_with(|port| {
        config_yaml(
            port,
            "postgres",
            "transaction",
            "  pool_size: 4\n  max_overflow: 0",
            &extra,
        )
    })
}

/// Waits (up to 10 s) for `needle` in the sidecar's log.
async fn log_shows(sidecar: &Sidecar, needle: &str) -> bool {
    for _ in 0..200 {
        if sidecar.log().contains(needle) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// 12 clients × 40 transactions over a pool of 4, on the default loop and on 4 threads: every
/// committed row is there exactly once, nothing else is. (The default is 1, unless
/// POOLWARDEN_WORKER_THREADS, as in scripts/test's event-loop passes, says otherwise; with
/// `data_path: event_loop`, 4 threads are 4 loops sharing the one pool.)
#[tokio::test]
async fn one_loop_and_four_threads_serve_the_same_transactions() {
    let default = std::env::var("POOLWARDEN_WORKER_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    for (setting, threads) in [("", default), ("4", 4)] {
        let sidecar = start(setting);
        assert!(
            log_shows(&sidecar, &format!("serving clients on {threads} thread(s)")).await,
            "no start-up line for {threads} thread(s):\n{}",
            sidecar.log()
        );
        let table = unique("pw_runtime");
        let db = direct("postgres").await;
        db.batch_execute(&format!(
            "CREATE TABLE {table} (client int, n int, UNIQUE (client, n))"
        ))
        .await
        .unwrap();
        let mut clients = Vec::new();
        for client in 0..12 {
            let (c, _conn) = through(&sidecar, "postgres", "pw-runtime").await.unwrap();
            let table = table.clone();
            clients.push(tokio::spawn(async move {
                for n in 0..40 {
                    c.batch_execute(&format!(
                        "BEGIN; INSERT INTO {table} VALUES ({client}, {n}); COMMIT"
                    ))
                    .await
                    .expect("a transaction through the sidecar");
                }
            }));
        }
        for c in clients {
            c.await.unwrap();
        }
        let row = db
            .query_one(
                &format!("SELECT count(*), count(DISTINCT (client, n)) FROM {table}"),
                &[],
            )
            .await
            .unwrap();
        let (rows, distinct): (i64, i64) = (row.get(0), row.get(1));
        db.batch_execute(&format!("DROP TABLE {table}"))
            .await
            .unwrap();
        assert_eq!((rows, distinct), (480, 480), "worker_threads {threads}");
    }
}

/// A reload that changes worker_threads says it needs a restart and keeps serving.
#[tokio::test]
async fn a_reload_keeps_the_running_worker_threads() {
    // Set in the file, so that POOLWARDEN_WORKER_THREADS (which a reload applies again)
    // is not set for this sidecar.
    let sidecar = start("1");
    let file = sidecar.config_path();
    let text = std::fs::read_to_string(&file).unwrap();
    let changed = text.replace("worker_threads: 1\n", "worker_threads: 2\n");
    assert_ne!(changed, text);
    std::fs::write(&file, changed).unwrap();
    sidecar.signal("HUP");
    assert!(
        log_shows(
            &sidecar,
            "worker_threads changes take effect at the next restart"
        )
        .await,
        "no restart warning:\n{}",
        sidecar.log()
    );
    let (c, _conn) = through(&sidecar, "postgres", "pw-runtime").await.unwrap();
    c.batch_execute("SELECT 1").await.unwrap();
}
