//! Named prepared statements through the sidecar in transaction mode, against the real
//! PostgreSQL: statements follow their client to whichever server connection serves the
//! next transaction, errors inside a pipeline leave nothing behind, Close and DEALLOCATE
//! work, and each server connection holds at most `max_prepared_statements`.

use std::time::Duration;

use poolwarden_tests::raw_client::RawClient;
use poolwarden_tests::sidecar::{
    Sidecar, TempDir, backends, config_yaml, direct, scalar, through, unique,
};
use poolwarden_tests::sidecar_admin::{scrape, wait_ready};

const STEP: Duration = Duration::from_secs(20);
const TOKEN: &str = "prepared-admin-token-0123456789";

/// A sidecar for the shared PostgreSQL with an admin token (kept in the returned dir).
fn start(mode: &str, pool: &str) -> (Sidecar, TempDir) {
    let dir = TempDir::new("poolwarden-prepared");
    let tokens = dir.path().join("tokens");
    std::fs::write(&tokens, format!("admin {TOKEN}\n")).unwrap();
    let extra = format!("admin:\n  tokens_file: {}", tokens.display());
    let sidecar = Sidecar::start_with(|port| config_yaml(port, "postgres", mode, pool, &extra));
    (sidecar, dir)
}

async fn within<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(STEP, f)
        .await
        .unwrap_or_else(|_| panic!("{what}: no answer within {STEP:?}"))
}

#[tokio::test]
async fn statements_follow_clients_across_server_connections() {
    let (sidecar, _dir) = start("transaction", "  pool_size: 2\n  max_overflow: 0");
    let app = unique("pw_prep_follow");
    let mut tasks = Vec::new();
    for c in 0..5i32 {
        let (mut client, _conn) = through(&sidecar, "postgres", &app).await.unwrap();
        tasks.push(tokio::spawn(async move {
            // Prepared once, used in 30 transactions on whichever connection is free.
            let add = client.prepare("SELECT $1::int4 + $2::int4").await.unwrap();
            let pid = client.prepare("SELECT pg_backend_pid()").await.unwrap();
            let mut pids = std::collections::BTreeSet::new();
            for i in 0..30i32 {
                let tx = client.transaction().await.unwrap();
                let row = tx.query_one(&add, &[&c, &i]).await.unwrap();
                assert_eq!(row.get::<_, i32>(0), c + i);
                pids.insert(tx.query_one(&pid, &[]).await.unwrap().get::<_, i32>(0));
                if i % 3 == 0 {
                    tx.rollback().await.unwrap();
                } else {
                    tx.commit().await.unwrap();
                }
                // Autocommit statements too: each its own transaction.
                let row = client.query_one(&add, &[&i, &i]).await.unwrap();
                assert_eq!(row.get::<_, i32>(0), 2 * i);
            }
            pids
        }));
    }
    let mut all = std::collections::BTreeSet::new();
    for t in tasks {
        all.extend(within("client", t).await.unwrap());
    }
    // Five clients shared two server connections, and statements moved between them.
    assert!(all.len() <= 2, "backends used: {all:?}");
    let db = direct("postgres").await;
    assert!(backends(&db, &app).await <= 2);
    let hits = prepared_total(&sidecar, "hit").await;
    let misses = prepared_total(&sidecar, "miss").await;
    assert!(
        misses >= 2.0,
        "each statement was prepared on some connection: {misses}"
    );
    assert!(
        hits > misses,
        "most uses found the statement held: {hits} hits, {misses} misses"
    );
}

#[tokio::test]
async fn close_and_deallocate_through_the_pool() {
    let (sidecar, _dir) = start("transaction", "  pool_size: 1\n  max_overflow: 0");
    let app = unique("pw_prep_close");
    let (client, _conn) = through(&sidecar, "postgres", &app).await.unwrap();
    let s = client.prepare("SELECT 41 + 1").await.unwrap();
    assert_eq!(
        client.query_one(&s, &[]).await.unwrap().get::<_, i32>(0),
        42
    );
    // Dropping a Statement sends Close; preparing again works.
    drop(s);
    let s = client.prepare("SELECT 41 + 1").await.unwrap();
    assert_eq!(
        client.query_one(&s, &[]).await.unwrap().get::<_, i32>(0),
        42
    );
    // DEALLOCATE ALL forgets the client's names: using the old statement is PostgreSQL's
    // own error, and the connection carries on.
    client.batch_execute("DEALLOCATE ALL").await.unwrap();
    let err = client.query_one(&s, &[]).await.unwrap_err();
    let db = err.as_db_error().unwrap_or_else(|| panic!("{err}"));
    assert_eq!(db.code().code(), "26000", "{db:?}");
    let s = client.prepare("SELECT 2 * 21").await.unwrap();
    assert_eq!(
        client.query_one(&s, &[]).await.unwrap().get::<_, i32>(0),
        42
    );
    // DEALLOCATE of one name, as psycopg sends it.
    let mut raw = RawClient::login(&sidecar, &app).await;
    raw.send_parse("my_stmt", "SELECT 7").await;
    raw.sync().await;
    assert_eq!(raw.replies().await, "1Z");
    raw.query("DEALLOCATE my_stmt").await;
    assert_eq!(raw.replies().await, "C(DEALLOCATE)Z");
    raw.query("DEALLOCATE my_stmt").await;
    assert_eq!(raw.replies().await, "E(26000)Z");
}

#[tokio::test]
async fn an_error_inside_a_pipeline_loses_nothing() {
    let (sidecar, _dir) = start("transaction", "  pool_size: 1\n  max_overflow: 0");
    let app = unique("pw_prep_pipeline");
    let mut raw = RawClient::login(&sidecar, &app).await;
    // Parse, Bind, Execute of a good statement; a Parse that fails; then a Bind/Execute and a
    // Parse the server skips; one Sync.
    raw.send_parse("good", "SELECT 1").await;
    raw.send_bind_execute("good").await;
    raw.send_parse("broken", "SELEC 1").await;
    raw.send_bind_execute("good").await;
    raw.send_parse("skipped", "SELECT 3").await;
    raw.sync().await;
    assert_eq!(raw.replies().await, "12DC(SELECT 1)E(42601)Z");
    // "good" works; "broken" and "skipped" never existed.
    raw.send_bind_execute("good").await;
    raw.sync().await;
    assert_eq!(raw.replies().await, "2DC(SELECT 1)Z");
    for name in ["broken", "skipped"] {
        raw.send_bind_execute(name).await;
        raw.sync().await;
        assert_eq!(raw.replies().await, "E(26000)Z", "{name}");
    }
    // Another client's statements on the same single server connection still work.
    let (other, _c) = through(&sidecar, "postgres", &app).await.unwrap();
    let s = other.prepare("SELECT 1").await.unwrap();
    assert_eq!(other.query_one(&s, &[]).await.unwrap().get::<_, i32>(0), 1);
}

#[tokio::test]
async fn each_server_connection_holds_at_most_the_limit() {
    let (sidecar, _dir) = start(
        "transaction",
        "  pool_size: 1\n  max_overflow: 0\n  max_prepared_statements: 3",
    );
    let app = unique("pw_prep_lru");
    let (client, _conn) = through(&sidecar, "postgres", &app).await.unwrap();
    let mut statements = Vec::new();
    for i in 0..10i32 {
        statements.push(
            client
                .prepare(&format!("SELECT {i} + $1::int4"))
                .await
                .unwrap(),
        );
    }
    for round in 0..3 {
        for (i, s) in statements.iter().enumerate() {
            let got: i32 = client.query_one(s, &[&round]).await.unwrap().get(0);
            assert_eq!(got, i as i32 + round);
        }
        let held: i64 = scalar(
            &client,
            "SELECT count(*) FROM pg_prepared_statements WHERE name LIKE 'pw\\_%'",
        )
        .await
        .unwrap()
        .parse()
        .unwrap();
        assert!(
            held <= 3,
            "round {round}: {held} statements held on the server"
        );
    }
    assert!(prepared_total(&sidecar, "eviction").await >= 7.0);
}

#[tokio::test]
async fn session_mode_passes_statements_through() {
    let (sidecar, _dir) = start("session", "  pool_size: 1\n  max_overflow: 0");
    let app = unique("pw_prep_session");
    let (client, _conn) = through(&sidecar, "postgres", &app).await.unwrap();
    let s = client.prepare("SELECT 5").await.unwrap();
    for _ in 0..3 {
        assert_eq!(client.query_one(&s, &[]).await.unwrap().get::<_, i32>(0), 5);
    }
    // The client's own name is on its server connection.
    let names = scalar(
        &client,
        "SELECT string_agg(name, ',') FROM pg_prepared_statements",
    )
    .await
    .unwrap();
    assert!(!names.contains("pw_"), "{names}");
}

// --- helpers -------------------------------------------------------------------------------

/// `poolwarden_prepared_statements_total{database="postgres", result}` from the admin API.
async fn prepared_total(sidecar: &Sidecar, result: &str) -> f64 {
    let http = reqwest::Client::new();
    wait_ready(&http, sidecar).await;
    scrape(&http, sidecar, TOKEN)
        .await
        .value(
            "poolwarden_prepared_statements_total",
            "postgres",
            &[("result", result)],
        )
        .unwrap_or_else(|| panic!("no poolwarden_prepared_statements_total result={result}"))
}
