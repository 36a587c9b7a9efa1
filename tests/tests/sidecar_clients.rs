//! Real clients through the sidecar: psql, pgbench (simple, extended and prepared protocol),
//! SQLAlchemy 2 with psycopg 3 in its default configuration, and a session-mode check.

use std::path::Path;
use std::process::Command;

use poolwarden_tests::sidecar::{Sidecar, TempDir, config_yaml, direct, scalar, through, unique};
use poolwarden_tests::sidecar_admin::{scrape, wait_ready};

fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed:\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn psql_session() {
    let sidecar = Sidecar::start(
        "postgres",
        "transaction",
        "  pool_size: 2\n  max_overflow: 0",
    );
    let out = run(Command::new("psql")
        .arg(sidecar.conninfo("postgres", "pw_psql"))
        .args([
            "-X",
            "-v",
            "ON_ERROR_STOP=1",
            "-tA",
            "-c",
            "SELECT 1 + 1",
            "-c",
            "BEGIN; SELECT current_database(); COMMIT;",
            "-c",
            "SHOW application_name",
        ]));
    assert_eq!(out, "2\nBEGIN\npostgres\nCOMMIT\npw_psql\n");
}

#[tokio::test]
async fn pgbench_simple_extended_and_prepared() {
    let dbname = unique("pw_bench");
    let db = direct("postgres").await;
    db.batch_execute(&format!("CREATE DATABASE {dbname}"))
        .await
        .unwrap();
    struct Drop_(String);
    impl Drop for Drop_ {
        fn drop(&mut self) {
            let _ = Command::new("psql")
                .args(["-h", "127.0.0.1", "-U", "postgres", "-d", "postgres", "-c"])
                .arg(format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.0))
                .output();
        }
    }
    let _cleanup = Drop_(dbname.clone());
    let sidecar = Sidecar::start(&dbname, "transaction", "  pool_size: 3\n  max_overflow: 1");
    let port = sidecar.port.to_string();
    let base = ["-h", "127.0.0.1", "-p", &port, "-U", "postgres"];
    // Initialise through the sidecar: DDL, COPY and VACUUM go through it too.
    run(Command::new("pgbench")
        .args(base)
        .args(["-i", "-s", "1", "-q", &dbname]));
    for mode in ["simple", "extended", "prepared"] {
        let out = run(Command::new("pgbench")
            .args(base)
            .args(["-M", mode, "-c", "4", "-j", "2", "-t", "50", &dbname]));
        assert!(
            out.contains("number of transactions actually processed: 200/200"),
            "{mode}: {out}"
        );
        assert!(
            out.contains("number of failed transactions: 0"),
            "{mode}: {out}"
        );
    }
    drop(sidecar);
}

#[tokio::test]
async fn sqlalchemy_with_psycopg() {
    // psycopg's default prepare_threshold (5): its named statements must work across
    // transactions and server connections; the sidecar's counters show they were used.
    let dir = TempDir::new("poolwarden-sqla");
    let token = "sqla-admin-token-0123456789";
    std::fs::write(dir.path().join("tokens"), format!("admin {token}\n")).unwrap();
    let extra = format!(
        "admin:\n  tokens_file: {}",
        dir.path().join("tokens").display()
    );
    let sidecar = Sidecar::start_with(|port| {
        config_yaml(
            port,
            "postgres",
            "transaction",
            "  pool_size: 2\n  max_overflow: 1",
            &extra,
        )
    });
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("python/sqlalchemy_through_sidecar.py");
    let out = run(Command::new("python3")
        .arg(script)
        .arg(sidecar.port.to_string())
        .arg(unique("pw_sqla")));
    assert_eq!(out.trim(), "ok");
    let http = reqwest::Client::new();
    wait_ready(&http, &sidecar).await;
    let m = scrape(&http, &sidecar, token).await;
    let count = |result| {
        m.value(
            "poolwarden_prepared_statements_total",
            "postgres",
            &[("result", result)],
        )
        .unwrap_or(0.0)
    };
    assert!(count("miss") >= 2.0, "psycopg prepared its statements");
    assert!(count("hit") > count("miss"), "and reused them");
}

#[tokio::test]
async fn session_mode_holds_one_backend_per_client() {
    let sidecar = Sidecar::start(
        "postgres",
        "session",
        "  pool_size: 2\n  max_overflow: 0\n  pool_timeout: 1s",
    );
    let app = unique("pw_session");
    let (a, _ca) = through(&sidecar, "postgres", &app).await.unwrap();
    // Session state is the client's own in session mode.
    a.batch_execute("SET search_path = kept, public")
        .await
        .unwrap();
    let pid = scalar(&a, "SELECT pg_backend_pid()").await.unwrap();
    let (b, _cb) = through(&sidecar, "postgres", &app).await.unwrap();
    assert_ne!(scalar(&b, "SELECT pg_backend_pid()").await.unwrap(), pid);
    assert_eq!(scalar(&a, "SELECT pg_backend_pid()").await.unwrap(), pid);
    assert_eq!(
        scalar(&a, "SHOW search_path").await.unwrap(),
        "kept, public"
    );
    // Both connections are held: a third client cannot log in within pool_timeout.
    let err = match through(&sidecar, "postgres", &app).await {
        Ok(_) => panic!("pool full"),
        Err(e) => e,
    };
    let db = err.as_db_error().unwrap_or_else(|| panic!("{err}"));
    assert_eq!(db.code().code(), "53300");
    assert_eq!(
        db.message(),
        "QueuePool limit of size 2 overflow 0 reached, connection timed out, timeout 1.00"
    );
    // When a logs out its backend goes to the next client, reset.
    drop(a);
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let (c, _cc) = through(&sidecar, "postgres", &app).await.unwrap();
    assert_eq!(
        scalar(&c, "SHOW search_path").await.unwrap(),
        "\"$user\", public"
    );
}
