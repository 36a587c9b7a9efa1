//! The sidecar's pool semantics against the real PostgreSQL: idle-in-transaction cleanup,
//! statement_timeout, pre-ping, recycle, cancel, COPY, no session-state leaks, and clients
//! that disconnect mid-transaction. Each test uses a pool of at most 2 connections.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use poolwarden_tests::sidecar::{Sidecar, backends, direct, scalar, through, unique};

async fn wait_until_gone(db: &tokio_postgres::Client, pid: i32) -> bool {
    for _ in 0..100 {
        let n: i64 = db
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE pid = $1",
                &[&pid],
            )
            .await
            .unwrap()
            .get(0);
        if n == 0 {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

#[tokio::test]
async fn idle_in_transaction_client_is_cut_off_with_25p03_and_replaced() {
    let sidecar = Sidecar::start(
        "postgres",
        "transaction",
        "  pool_size: 1\n  max_overflow: 0\n  idle_in_transaction_timeout: 1s",
    );
    let app = unique("pw_idle");
    let db = direct("postgres").await;
    let (a, a_conn) = through(&sidecar, "postgres", &app).await.unwrap();
    a.batch_execute("BEGIN").await.unwrap();
    let pid: i32 = scalar(&a, "SELECT pg_backend_pid()")
        .await
        .unwrap()
        .parse()
        .unwrap();
    let start = Instant::now();
    // The sidecar ends the session; the connection task reports why.
    let ended = tokio::time::timeout(Duration::from_secs(10), a_conn)
        .await
        .expect("cut off within 10 s")
        .unwrap();
    let waited = start.elapsed();
    let err = ended.expect_err("the session ends with an error");
    let dberr = err
        .as_db_error()
        .unwrap_or_else(|| panic!("not a server error: {err}"));
    assert_eq!(dberr.code().code(), "25P03");
    assert_eq!(dberr.severity(), "FATAL");
    assert!(
        waited >= Duration::from_millis(900),
        "cut off too early: {waited:?}"
    );
    assert!(
        wait_until_gone(&db, pid).await,
        "its backend {pid} is still in pg_stat_activity"
    );
    // The next client gets a fresh server connection.
    let (b, _b_conn) = through(&sidecar, "postgres", &app).await.unwrap();
    let pid2: i32 = scalar(&b, "SELECT pg_backend_pid()")
        .await
        .unwrap()
        .parse()
        .unwrap();
    assert_ne!(pid, pid2);
    assert!(
        a.simple_query("SELECT 1").await.is_err(),
        "the cut-off client is disconnected"
    );
}

#[tokio::test]
async fn statement_timeout_gives_postgres_57014() {
    let sidecar = Sidecar::start(
        "postgres",
        "transaction",
        "  pool_size: 1\n  max_overflow: 0\n  statement_timeout: 500ms",
    );
    let (c, _conn) = through(&sidecar, "postgres", &unique("pw_stmt"))
        .await
        .unwrap();
    assert_eq!(scalar(&c, "SHOW statement_timeout").await.unwrap(), "500ms");
    let start = Instant::now();
    let err = c
        .simple_query("SELECT pg_sleep(5)")
        .await
        .expect_err("times out");
    assert_eq!(
        err.as_db_error().map(|e| e.code().code()),
        Some("57014"),
        "{err}"
    );
    assert!(start.elapsed() < Duration::from_secs(4));
    // The client and the pool carry on.
    assert_eq!(scalar(&c, "SELECT 41 + 1").await.unwrap(), "42");
}

#[tokio::test]
async fn pre_ping_replaces_a_terminated_backend_without_a_client_error() {
    let sidecar = Sidecar::start(
        "postgres",
        "transaction",
        "  pool_size: 1\n  max_overflow: 0\n  pool_pre_ping: true",
    );
    let db = direct("postgres").await;
    let (c, _conn) = through(&sidecar, "postgres", &unique("pw_ping"))
        .await
        .unwrap();
    let pid: i32 = scalar(&c, "SELECT pg_backend_pid()")
        .await
        .unwrap()
        .parse()
        .unwrap();
    db.simple_query(&format!("SELECT pg_terminate_backend({pid})"))
        .await
        .unwrap();
    assert!(wait_until_gone(&db, pid).await);
    let pid2: i32 = scalar(&c, "SELECT pg_backend_pid()")
        .await
        .expect("no client error")
        .parse()
        .unwrap();
    assert_ne!(pid, pid2);
}

#[tokio::test]
async fn recycle_closes_connections_older_than_pool_recycle() {
    let sidecar = Sidecar::start(
        "postgres",
        "transaction",
        "  pool_size: 1\n  max_overflow: 0\n  pool_recycle: 1s",
    );
    let db = direct("postgres").await;
    let (c, _conn) = through(&sidecar, "postgres", &unique("pw_recycle"))
        .await
        .unwrap();
    let pid: i32 = scalar(&c, "SELECT pg_backend_pid()")
        .await
        .unwrap()
        .parse()
        .unwrap();
    // Young: reused.
    let again: i32 = scalar(&c, "SELECT pg_backend_pid()")
        .await
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(pid, again);
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let pid2: i32 = scalar(&c, "SELECT pg_backend_pid()")
        .await
        .unwrap()
        .parse()
        .unwrap();
    assert_ne!(pid, pid2, "a connection older than pool_recycle was reused");
    assert!(
        wait_until_gone(&db, pid).await,
        "the recycled backend is still there"
    );
}

#[tokio::test]
async fn cancel_request_reaches_the_right_backend() {
    let sidecar = Sidecar::start(
        "postgres",
        "transaction",
        "  pool_size: 2\n  max_overflow: 0",
    );
    let app = unique("pw_cancel");
    let (busy, _c1) = through(&sidecar, "postgres", &app).await.unwrap();
    let (other, _c2) = through(&sidecar, "postgres", &app).await.unwrap();
    let token = busy.cancel_token();
    let other_task = tokio::spawn(async move {
        let r = other.simple_query("SELECT pg_sleep(1.5)").await.map(|_| ());
        (r, other)
    });
    let start = Instant::now();
    let query =
        tokio::spawn(async move { busy.simple_query("SELECT pg_sleep(20)").await.map(|_| ()) });
    tokio::time::sleep(Duration::from_millis(300)).await;
    token
        .cancel_query(tokio_postgres::NoTls)
        .await
        .expect("send cancel");
    let err = query.await.unwrap().expect_err("canceled");
    assert_eq!(
        err.as_db_error().map(|e| e.code().code()),
        Some("57014"),
        "{err}"
    );
    assert!(start.elapsed() < Duration::from_secs(10));
    // The other client's query, on another backend, was not touched.
    let (r, _other) = other_task.await.unwrap();
    r.expect("the other backend's query is not canceled");
}

fn psql(sidecar: &Sidecar, app: &str, args: &[&str], stdin: Option<&str>) -> String {
    let mut cmd = Command::new("psql");
    cmd.arg(sidecar.conninfo("postgres", app))
        .args(["-X", "-v", "ON_ERROR_STOP=1", "-tA"])
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("psql");
    if let Some(text) = stdin {
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "psql {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test]
async fn copy_in_and_out_through_psql() {
    let sidecar = Sidecar::start(
        "postgres",
        "transaction",
        "  pool_size: 2\n  max_overflow: 0",
    );
    let table = unique("pw_copy");
    let app = unique("pw_copy_app");
    psql(
        &sidecar,
        &app,
        &["-c", &format!("CREATE TABLE {table} (id int, name text)")],
        None,
    );
    let rows: String = (1..=500).map(|i| format!("{i}\tname {i}\n")).collect();
    psql(
        &sidecar,
        &app,
        &["-c", &format!("COPY {table} FROM STDIN")],
        Some(&rows),
    );
    let out = psql(
        &sidecar,
        &app,
        &[
            "-c",
            &format!("COPY (SELECT * FROM {table} ORDER BY id) TO STDOUT"),
        ],
        None,
    );
    psql(
        &sidecar,
        &app,
        &["-c", &format!("DROP TABLE {table}")],
        None,
    );
    assert_eq!(out, rows);
}

#[tokio::test]
async fn session_set_does_not_leak_to_another_client_in_transaction_mode() {
    let sidecar = Sidecar::start(
        "postgres",
        "transaction",
        "  pool_size: 1\n  max_overflow: 0\n  statement_timeout: 30s",
    );
    let app = unique("pw_leak");
    let (a, _ca) = through(&sidecar, "postgres", &app).await.unwrap();
    let (b, _cb) = through(&sidecar, "postgres", &app).await.unwrap();
    let pid_a = scalar(&a, "SELECT pg_backend_pid()").await.unwrap();
    a.batch_execute("SET statement_timeout = '123s'; SET search_path = leaked, public")
        .await
        .unwrap();
    a.batch_execute("SELECT set_config('work_mem', '7MB', false)")
        .await
        .unwrap();
    // One server connection: b gets the very backend a used, reset.
    assert_eq!(scalar(&b, "SELECT pg_backend_pid()").await.unwrap(), pid_a);
    assert_eq!(scalar(&b, "SHOW statement_timeout").await.unwrap(), "30s");
    assert_eq!(
        scalar(&b, "SHOW search_path").await.unwrap(),
        "\"$user\", public"
    );
    assert_ne!(scalar(&b, "SHOW work_mem").await.unwrap(), "7MB");
}

#[tokio::test]
async fn client_gone_mid_transaction_rolls_back_and_pool_stays_healthy() {
    let sidecar = Sidecar::start(
        "postgres",
        "transaction",
        "  pool_size: 1\n  max_overflow: 0\n  pool_timeout: 5s",
    );
    let db = direct("postgres").await;
    let table = unique("pw_gone");
    let app = unique("pw_gone_app");
    db.batch_execute(&format!("CREATE TABLE {table} (id int)"))
        .await
        .unwrap();
    let (a, a_conn) = through(&sidecar, "postgres", &app).await.unwrap();
    a.batch_execute(&format!("BEGIN; INSERT INTO {table} VALUES (1)"))
        .await
        .unwrap();
    let pid: i32 = scalar(&a, "SELECT pg_backend_pid()")
        .await
        .unwrap()
        .parse()
        .unwrap();
    // Vanish without a Terminate: drop the socket.
    a_conn.abort();
    let _ = a_conn.await;
    drop(a);
    assert!(
        wait_until_gone(&db, pid).await,
        "the abandoned backend lingers"
    );
    let n: i64 = db
        .query_one(&format!("SELECT count(*) FROM {table}"), &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 0, "the abandoned transaction was not rolled back");
    // The single pool slot is free again.
    let (b, _cb) = through(&sidecar, "postgres", &app).await.unwrap();
    assert_eq!(scalar(&b, "SELECT 1").await.unwrap(), "1");
    assert!(backends(&db, &app).await <= 1);
    db.batch_execute(&format!("DROP TABLE {table}"))
        .await
        .unwrap();
}

#[tokio::test]
async fn a_client_that_leaves_the_queue_does_not_take_a_connection() {
    let sidecar = Sidecar::start(
        "postgres",
        "transaction",
        "  pool_size: 1\n  max_overflow: 0\n  pool_timeout: 10s",
    );
    let app = unique("pw_leaver");
    let (holder, _ch) = through(&sidecar, "postgres", &app).await.unwrap();
    let (leaver, leaver_conn) = through(&sidecar, "postgres", &app).await.unwrap();
    holder.batch_execute("BEGIN").await.unwrap();
    let pid = scalar(&holder, "SELECT pg_backend_pid()").await.unwrap();
    // The leaver queues for the only connection, then goes away.
    let waiting = tokio::spawn(async move { leaver.simple_query("SELECT 1").await.map(|_| ()) });
    tokio::time::sleep(Duration::from_millis(300)).await;
    leaver_conn.abort();
    let _ = leaver_conn.await;
    let _ = waiting.await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    holder.batch_execute("COMMIT").await.unwrap();
    // The connection went back to the pool, not to the departed client: same backend.
    let (next, _cn) = through(&sidecar, "postgres", &app).await.unwrap();
    let start = Instant::now();
    assert_eq!(scalar(&next, "SELECT pg_backend_pid()").await.unwrap(), pid);
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "the next client waited"
    );
}
