//! Fault injection (issue 11): the database killed, restarted, slow to accept, behind a lossy
//! network (latency, stalls, resets), its backends terminated, while writers commit through
//! the sidecar. For each case: no client hangs past its bound (every operation runs under a
//! timeout), every error is clear, no acknowledged commit is lost or doubled and no
//! transaction is half-applied ([`Ledger::verify`]), and the pool recovers without a restart.
//!
//! Covered elsewhere and referenced from the README's "What happens when…": the breaker under
//! an outage (sidecar_ops_breaker.rs), garbage / oversize / slow startup / too many clients
//! (sidecar_bad_input.rs), SIGTERM drain (sidecar_shutdown.rs).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use poolwarden_tests::fault_proxy::FaultProxy;
use poolwarden_tests::ledger::{self, Ledger};
use poolwarden_tests::pg_instance::PgInstance;
use poolwarden_tests::raw_client::{RawClient, query_message};
use poolwarden_tests::sidecar::{Sidecar, direct_at, free_port, scalar};

/// pool_timeout 3 s + statement_timeout 5 s + connect_timeout 1 s, and a wide margin for a
/// loaded 2-core machine: past this a client is hung.
const LIMIT: Duration = Duration::from_secs(25);
const WRITERS: usize = 3;

fn cluster() -> PgInstance {
    PgInstance::start(
        "local all all trust\nhost all all 127.0.0.1/32 trust\n",
        "",
        |_| {},
    )
}

fn sidecar_to(db_port: u16) -> Sidecar {
    Sidecar::start_with(|port| {
        format!(
            "listen: 127.0.0.1:{port}\nadmin_listen: 127.0.0.1:{admin}\nmode: transaction\n\
             databases:\n  - name: postgres\n    host: 127.0.0.1\n    port: {db_port}\n    user: postgres\n    sslmode: disable\n\
             pool:\n  pool_size: 3\n  max_overflow: 0\n  pool_timeout: 3s\n  statement_timeout: 5s\n  connect_timeout: 1s\n  pool_pre_ping: true\n\
             breaker:\n  failure_threshold: 3\n  open_for: 1s\n",
            admin = free_port(),
        )
    })
}

/// The throwaway cluster on `port`, directly.
async fn direct(port: u16) -> tokio_postgres::Client {
    direct_at(port, "postgres").await
}

/// Writers committing through the sidecar until [`Load::finish`].
struct Load {
    stop: Arc<AtomicBool>,
    ledger: Arc<Mutex<Ledger>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(sidecar: &Sidecar) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let ledger = Arc::new(Mutex::new(Ledger::default()));
        let tasks = ledger::spawn_writers(
            WRITERS,
            sidecar.conninfo("postgres", "pw_faults"),
            LIMIT,
            stop.clone(),
            ledger.clone(),
        );
        Self {
            stop,
            ledger,
            tasks,
        }
    }

    fn acked(&self) -> usize {
        self.ledger.lock().unwrap().acked.len()
    }

    /// Wait until `more` further commits are acknowledged: the pool serves again.
    async fn wait_progress(&self, more: usize, what: &str, sidecar: &Sidecar) {
        let start = self.acked();
        let t = Instant::now();
        while self.acked() < start + more {
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "no recovery after {what} in 30 s:\n{}",
                sidecar.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn finish(self) -> Ledger {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.tasks {
            t.await.expect("a writer failed (hung past its bound?)");
        }
        Arc::try_unwrap(self.ledger)
            .expect("writers done")
            .into_inner()
            .unwrap()
    }
}

/// Log in through the sidecar and run one query: a fresh client's whole path.
async fn attempt(conninfo: &str) -> Result<String, tokio_postgres::Error> {
    let (c, conn) = tokio_postgres::connect(conninfo, tokio_postgres::NoTls).await?;
    tokio::spawn(conn);
    scalar(&c, "SELECT 'answered'").await
}

/// Retry [`attempt`] until it answers (the pool recovered by itself), each try bounded.
async fn wait_answered(conninfo: &str, what: &str, sidecar: &Sidecar) {
    let t = Instant::now();
    loop {
        let r = tokio::time::timeout(LIMIT, attempt(conninfo))
            .await
            .unwrap_or_else(|_| panic!("a client hung {what}"));
        if r.as_deref().ok() == Some("answered") {
            return;
        }
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "no recovery {what} in 30 s:\n{}",
            sidecar.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn check(ledger: &Ledger, db_port: u16, want_errors: bool) {
    ledger.verify(&direct(db_port).await).await;
    ledger.assert_errors_clear();
    assert!(!ledger.acked.is_empty(), "nothing committed");
    if want_errors {
        assert!(
            !ledger.errors.is_empty(),
            "the fault never reached a client"
        );
    }
    eprintln!(
        "acked {} unknown {} errors {} e.g. {:?}",
        ledger.acked.len(),
        ledger.unknown.len(),
        ledger.errors.len(),
        ledger.errors.iter().take(3).collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn db_killed_mid_transaction_and_restarted_loses_nothing() {
    let pg = cluster();
    ledger::create(&direct(pg.port).await).await;
    let sidecar = sidecar_to(pg.port);
    let load = Load::start(&sidecar);
    load.wait_progress(20, "start", &sidecar).await;
    pg.stop_immediate();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    pg.restart();
    load.wait_progress(20, "the restart", &sidecar).await;
    let ledger = load.finish().await;
    check(&ledger, pg.port, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn terminated_backends_are_replaced_and_nothing_is_lost() {
    let pg = cluster();
    ledger::create(&direct(pg.port).await).await;
    let sidecar = sidecar_to(pg.port);
    let load = Load::start(&sidecar);
    for round in 0..3 {
        load.wait_progress(10, "pg_terminate_backend", &sidecar)
            .await;
        pg.psql(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()",
        );
        eprintln!("terminate round {round}");
    }
    load.wait_progress(10, "pg_terminate_backend", &sidecar)
        .await;
    let ledger = load.finish().await;
    check(&ledger, pg.port, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn connections_reset_by_peer_and_stalls_lose_nothing() {
    let pg = cluster();
    ledger::create(&direct(pg.port).await).await;
    let proxy = FaultProxy::start(SocketAddr::from(([127, 0, 0, 1], pg.port)))
        .await
        .unwrap();
    let sidecar = sidecar_to(proxy.port());
    let load = Load::start(&sidecar);
    for _ in 0..3 {
        load.wait_progress(10, "a reset", &sidecar).await;
        proxy.reset_all();
    }
    load.wait_progress(10, "the resets", &sidecar).await;
    // Latency: slower, never wrong.
    proxy.set_latency(Duration::from_millis(30));
    load.wait_progress(5, "latency", &sidecar).await;
    proxy.set_latency(Duration::ZERO);
    // A stall shorter than the bounds: clients wait, then finish.
    proxy.stall();
    tokio::time::sleep(Duration::from_secs(2)).await;
    proxy.resume();
    load.wait_progress(10, "a stall", &sidecar).await;
    let ledger = load.finish().await;
    check(&ledger, pg.port, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn database_slow_to_accept_gives_a_clear_error_then_recovers() {
    let pg = cluster();
    let proxy = FaultProxy::start(SocketAddr::from(([127, 0, 0, 1], pg.port)))
        .await
        .unwrap();
    let sidecar = sidecar_to(proxy.port());
    proxy.hold_new();
    let conninfo = sidecar.conninfo("postgres", "pw_slow_accept");
    // Login (the first login opens a server connection) or the first query fails, clearly,
    // within the bound.
    let t = Instant::now();
    let err = tokio::time::timeout(LIMIT, attempt(&conninfo))
        .await
        .expect("a client hung while the database was slow to accept")
        .expect_err("no database connection, yet an answer");
    let text = ledger::error_text(&err);
    eprintln!("slow accept: {text} after {:?}", t.elapsed());
    assert!(
        err.as_db_error().is_some(),
        "not an error from the sidecar: {text}"
    );
    proxy.release_new();
    wait_answered(&conninfo, "after the release", &sidecar).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn server_max_connections_reached_gives_a_clear_error_then_recovers() {
    let pg = PgInstance::start(
        "local all all trust\nhost all all 127.0.0.1/32 trust\n",
        "max_connections = 4\nsuperuser_reserved_connections = 0\n",
        |_| {},
    );
    // Someone else takes every server slot.
    let mut hogs = Vec::new();
    for _ in 0..4 {
        hogs.push(direct(pg.port).await);
    }
    let sidecar = sidecar_to(pg.port);
    let conninfo = sidecar.conninfo("postgres", "pw_max_conn");
    let err = tokio::time::timeout(LIMIT, attempt(&conninfo))
        .await
        .expect("a client hung while the server was full")
        .expect_err("the server is full, yet an answer");
    let text = ledger::error_text(&err);
    eprintln!("server full: {text}");
    assert!(text.contains("08006") || text.contains("57P03"), "{text}");
    assert!(text.contains("53300") || text.contains("57P03"), "{text}");
    drop(hogs);
    wait_answered(&conninfo, "after slots freed up", &sidecar).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_under_load_never_half_applies() {
    let pg = cluster();
    ledger::create(&direct(pg.port).await).await;
    let mut sidecar = sidecar_to(pg.port);
    let load = Load::start(&sidecar);
    load.wait_progress(30, "start", &sidecar).await;
    let status = tokio::task::block_in_place(|| sidecar.terminate(Duration::from_secs(20)));
    assert!(status.is_some(), "the sidecar did not exit after SIGTERM");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let ledger = load.finish().await;
    check(&ledger, pg.port, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn db_killed_mid_copy_commits_nothing_and_recovers() {
    use futures::SinkExt;
    let pg = cluster();
    direct(pg.port)
        .await
        .batch_execute("CREATE TABLE copied (n int)")
        .await
        .unwrap();
    let sidecar = sidecar_to(pg.port);
    let (client, conn) = tokio_postgres::connect(
        &sidecar.conninfo("postgres", "pw_copy"),
        tokio_postgres::NoTls,
    )
    .await
    .unwrap();
    let conn = tokio::spawn(conn);
    let sink = client
        .copy_in::<_, bytes::Bytes>("COPY copied FROM STDIN")
        .await
        .unwrap();
    futures::pin_mut!(sink);
    let rows: String = (0..1000).map(|i| format!("{i}\n")).collect();
    let mut sent = 0usize;
    let failed = tokio::time::timeout(LIMIT, async {
        loop {
            if let Err(e) = sink.send(bytes::Bytes::from(rows.clone())).await {
                return e;
            }
            sent += 1;
            if sent == 20 {
                // Mid-COPY: the server has taken rows, nothing is committed.
                pg.stop_immediate();
            }
            if sent > 20 {
                // Data may sit in buffers; finishing the COPY must report the failure.
                return match sink.as_mut().finish().await {
                    Err(e) => e,
                    Ok(n) => panic!("COPY reported success ({n} rows) from a killed database"),
                };
            }
        }
    })
    .await
    .expect("the COPY hung after the database was killed");
    let text = ledger::error_text(&failed);
    assert!(
        text.contains("08006")
            || text.contains("connection closed")
            || text.contains("server connection failed"),
        "unclear error: {text}"
    );
    let _ = conn.await;
    pg.restart();
    wait_answered(
        &sidecar.conninfo("postgres", "pw_copy"),
        "after the restart",
        &sidecar,
    )
    .await;
    let n = scalar(&direct(pg.port).await, "SELECT count(*) FROM copied")
        .await
        .unwrap();
    assert_eq!(
        n, "0",
        "a COPY cut off by the kill must leave nothing behind"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_client_gone_mid_query_is_cancelled_and_frees_its_connection() {
    let pg = cluster();
    // statement_timeout well past the 30 s wait below: only a cancel stops the queries in time.
    let sidecar = sidecar_with(
        pg.port,
        "  pool_size: 3\n  max_overflow: 0\n  pool_timeout: 3s\n  statement_timeout: 5m",
    );
    let db = direct(pg.port).await;
    // Three clients start a long query each (the whole pool of 3) and vanish mid-query.
    let mut socks = Vec::new();
    for _ in 0..3 {
        let mut raw = RawClient::login(&sidecar, "pw_gone").await;
        raw.send(&query_message("SELECT pg_sleep(50)")).await;
        socks.push(raw);
    }
    wait_for(&db, "SELECT count(*) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(50)' AND state = 'active'", "3", "the queries to run").await;
    drop(socks);
    // The queries are cancelled on the server, not left to run for a minute ...
    wait_for(&db, "SELECT count(*) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(50)' AND state = 'active'", "0", "the abandoned queries to stop").await;
    // ... and the pool serves the next client at once.
    let answered = tokio::time::timeout(LIMIT, attempt(&sidecar.conninfo("postgres", "pw_next")))
        .await
        .expect("the next client hung")
        .expect("the next client failed");
    assert_eq!(answered, "answered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_client_sending_slowly_holds_no_server_connection() {
    let pg = cluster();
    let sidecar = sidecar_with(
        pg.port,
        "  pool_size: 1\n  max_overflow: 0\n  pool_timeout: 3s",
    );
    // A logged-in client sends the first bytes of a query, then nothing for a while.
    let mut slow = RawClient::login(&sidecar, "pw_slow").await;
    let msg = query_message("SELECT 'slow answered'");
    slow.send(&msg[..3]).await;
    // Meanwhile the single pooled connection serves others: a half-received message holds none.
    for _ in 0..5 {
        let answered =
            tokio::time::timeout(LIMIT, attempt(&sidecar.conninfo("postgres", "pw_fast")))
                .await
                .expect("a client hung behind a slow one")
                .expect("a client failed behind a slow one");
        assert_eq!(answered, "answered");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The rest arrives byte by byte; the slow client is answered too.
    for b in &msg[3..] {
        slow.send(std::slice::from_ref(b)).await;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let reply = slow.replies().await;
    assert_eq!(reply, "DC(SELECT 1)Z");
    assert!(
        slow.rows[0].windows(13).any(|w| w == b"slow answered"),
        "{:?}",
        slow.rows
    );
}

/// A transaction-mode sidecar for the cluster on `db_port` with these `pool:` lines.
fn sidecar_with(db_port: u16, pool: &str) -> Sidecar {
    Sidecar::start_with(|port| {
        format!(
            "listen: 127.0.0.1:{port}\nadmin_listen: 127.0.0.1:{admin}\nmode: transaction\n\
             databases:\n  - name: postgres\n    host: 127.0.0.1\n    port: {db_port}\n    user: postgres\n    sslmode: disable\n\
             pool:\n{pool}\n",
            admin = free_port(),
        )
    })
}

/// Wait (at most 30 s) until `sql` on `db` answers `want`.
async fn wait_for(db: &tokio_postgres::Client, sql: &str, want: &str, what: &str) {
    let t = Instant::now();
    loop {
        let got = scalar(db, sql).await.unwrap();
        if got == want {
            return;
        }
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "waited 30 s for {what}: {got}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
