//! SIGTERM: stop accepting, let running transactions finish within shutdown_timeout, then
//! close everyone with FATAL 57P01.

use std::time::{Duration, Instant};

use poolwarden_tests::sidecar::{Sidecar, config_yaml, direct, scalar, through, unique};

fn code_of(r: Result<(), tokio_postgres::Error>) -> Option<String> {
    r.err()
        .and_then(|e| e.as_db_error().map(|d| d.code().code().to_string()))
}

#[tokio::test]
async fn sigterm_drains_running_transactions_then_closes() {
    let mut sidecar = Sidecar::start_with(|port| {
        config_yaml(
            port,
            "postgres",
            "transaction",
            "  pool_size: 3\n  max_overflow: 0",
            "shutdown_timeout: 2s",
        )
    });
    let app = unique("pw_drain");
    let db = direct("postgres").await;
    let table = unique("pw_drain_t");
    db.batch_execute(&format!("CREATE TABLE {table} (id int)"))
        .await
        .unwrap();

    let (idle, idle_conn) = through(&sidecar, "postgres", &app).await.unwrap();
    let (busy, busy_conn) = through(&sidecar, "postgres", &app).await.unwrap();
    let (stuck, stuck_conn) = through(&sidecar, "postgres", &app).await.unwrap();
    busy.batch_execute(&format!("BEGIN; INSERT INTO {table} VALUES (1)"))
        .await
        .unwrap();
    stuck.batch_execute("BEGIN").await.unwrap();
    assert_eq!(scalar(&idle, "SELECT 1").await.unwrap(), "1");

    let pid = sidecar.pid();
    let start = Instant::now();
    let status = tokio::task::spawn_blocking(move || {
        let _ = std::process::Command::new("kill")
            .arg("-TERM")
            .arg(pid.to_string())
            .status();
    });
    status.await.unwrap();
    // The idle client is told at once.
    let idle_end = tokio::time::timeout(Duration::from_secs(3), idle_conn)
        .await
        .expect("idle client closed")
        .unwrap();
    assert_eq!(code_of(idle_end).as_deref(), Some("57P01"));
    // The running transaction may finish and commit.
    busy.batch_execute(&format!("INSERT INTO {table} VALUES (2); COMMIT"))
        .await
        .expect("commit during drain");
    let busy_end = tokio::time::timeout(Duration::from_secs(3), busy_conn)
        .await
        .expect("busy client closed")
        .unwrap();
    assert_eq!(code_of(busy_end).as_deref(), Some("57P01"));
    let n: i64 = db
        .query_one(&format!("SELECT count(*) FROM {table}"), &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 2);
    // No new clients.
    assert!(through(&sidecar, "postgres", &app).await.is_err());
    // The one that never finishes is closed when the grace period is over.
    let stuck_end = tokio::time::timeout(Duration::from_secs(10), stuck_conn)
        .await
        .expect("stuck client closed")
        .unwrap();
    assert_eq!(code_of(stuck_end).as_deref(), Some("57P01"));
    assert!(
        start.elapsed() >= Duration::from_millis(1900),
        "closed before the grace period: {:?}",
        start.elapsed()
    );
    drop(stuck);
    let exit = tokio::task::spawn_blocking(move || {
        let s = sidecar.terminate(Duration::from_secs(10));
        (s, sidecar)
    })
    .await
    .unwrap();
    assert!(
        exit.0.is_some_and(|s| s.success()),
        "sidecar exit: {:?}",
        exit.0
    );
    db.batch_execute(&format!("DROP TABLE {table}"))
        .await
        .unwrap();
}
