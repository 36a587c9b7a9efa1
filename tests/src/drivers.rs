//! The driver matrix (`tests/tests/driver_matrix.rs`): each real PostgreSQL driver, in its
//! default configuration, does the same work through a real sidecar in transaction mode and
//! in session mode; the result is checked from the driver's summary and, straight on
//! PostgreSQL, from the rows it left.
//!
//! ```text
//!  driver (python / node / java process, or Rust in-process) ──▶ sidecar ──▶ PostgreSQL
//!        │ JSON summary: backend pids, SQLSTATEs, prepared statements       ▲
//!        └──────────────────────────────▶ check() ◀── direct connection: rows
//! ```
//!
//! The work is described in `tests/drivers/python_driver.py`; the scripts live beside it.

pub mod rust_clients;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde::Deserialize;

use crate::sidecar::{Sidecar, direct, unique};

/// Concurrent connections of step 5.
pub const WORKERS: i32 = 6;
/// Transactions per worker in step 5.
pub const WORKER_TX: i32 = 8;
/// Runs of each statement in step 1 (past every prepare threshold, psycopg's and JDBC's 5).
pub const REPEAT: i32 = 10;

/// Transaction mode: 6 concurrent clients on 2 server connections, handed out round robin so
/// one client's consecutive transactions move between them even when nothing else runs (the
/// pool's default, last-in first-out, would keep handing it the one it just returned).
pub const TRANSACTION_POOL: &str = "  pool_size: 2\n  max_overflow: 0\n  server_round_robin: true";
/// Session mode: every client holds a server connection (main + 6 workers).
pub const SESSION_POOL: &str = "  pool_size: 7\n  max_overflow: 0";
const SESSION_POOL_SIZE: usize = 7;
const TRANSACTION_POOL_SIZE: usize = 2;

/// How long one driver process may take.
const DRIVER_LIMIT: Duration = Duration::from_secs(120);

/// What a driver reports.
#[derive(Debug, Deserialize)]
pub struct Summary {
    /// The driver's name.
    pub driver: String,
    /// Backend pids of the first connection's SELECTs (steps 1 and 2).
    pub main_backends: Vec<i32>,
    /// Backend pids of each worker's transactions (step 5).
    pub worker_backends: Vec<Vec<i32>>,
    /// Rows of pg_prepared_statements the first connection saw after step 1.
    pub prepared_statements: i64,
    /// SQLSTATE of the duplicate insert.
    pub unique_violation: String,
    /// SQLSTATE of 1 / 0.
    pub division_by_zero: String,
}

/// Pool mode of the sidecar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// A server connection per transaction.
    Transaction,
    /// A server connection per client session.
    Session,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Transaction => "transaction",
            Mode::Session => "session",
        }
    }
    fn pool(self) -> &'static str {
        match self {
            Mode::Transaction => TRANSACTION_POOL,
            Mode::Session => SESSION_POOL,
        }
    }
}

/// A driver of the matrix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Driver {
    /// psycopg 3, `psycopg.connect` (prepares after 5 runs).
    Psycopg3Sync,
    /// psycopg 3, `AsyncConnection`.
    Psycopg3Async,
    /// psycopg2 (client-side parameters, never prepares).
    Psycopg2,
    /// SQLAlchemy 2 ORM on psycopg 3.
    SqlalchemyPsycopg3,
    /// SQLAlchemy 2 ORM on psycopg2.
    SqlalchemyPsycopg2,
    /// asyncpg (prepares every statement, cached by name).
    Asyncpg,
    /// node-postgres with named queries.
    NodePostgres,
    /// PostgreSQL JDBC (prepareThreshold 5).
    Jdbc,
    /// tokio-postgres with `Client::prepare`.
    TokioPostgres,
    /// sqlx (`sqlx::query` prepares and caches by name).
    Sqlx,
}

impl Driver {
    /// Its name in the summary and in table names.
    pub fn name(self) -> &'static str {
        match self {
            Driver::Psycopg3Sync => "psycopg3_sync",
            Driver::Psycopg3Async => "psycopg3_async",
            Driver::Psycopg2 => "psycopg2",
            Driver::SqlalchemyPsycopg3 => "sqlalchemy_psycopg3",
            Driver::SqlalchemyPsycopg2 => "sqlalchemy_psycopg2",
            Driver::Asyncpg => "asyncpg",
            Driver::NodePostgres => "node_postgres",
            Driver::Jdbc => "jdbc",
            Driver::TokioPostgres => "tokio_postgres",
            Driver::Sqlx => "sqlx",
        }
    }

    /// Whether its default configuration creates named server-side prepared statements.
    fn prepares(self) -> bool {
        !matches!(self, Driver::Psycopg2 | Driver::SqlalchemyPsycopg2)
    }

    /// Whether it pools connections itself, so one "connection" of the work may be several.
    fn pools_itself(self) -> bool {
        matches!(
            self,
            Driver::SqlalchemyPsycopg3 | Driver::SqlalchemyPsycopg2
        )
    }
}

fn drivers_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("drivers")
}

/// node-postgres' install dir: `POOLWARDEN_NPM_DIR` as scripts/lib.sh sets it.
fn npm_dir() -> PathBuf {
    std::env::var_os("POOLWARDEN_NPM_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/poolwarden-npm"))
}

/// Debian's `libpostgresql-jdbc-java`.
const JDBC_JAR: &str = "/usr/share/java/postgresql.jar";

/// Drops the table with psql when the test ends, whatever happened.
struct DropTable(String);

impl Drop for DropTable {
    fn drop(&mut self) {
        let _ = std::process::Command::new("psql")
            .args(["-h", "127.0.0.1", "-U", "postgres", "-d", "postgres", "-qc"])
            .arg(format!("DROP TABLE IF EXISTS {}", self.0))
            .output();
    }
}

async fn create_table(db: &tokio_postgres::Client, prefix: &str) -> DropTable {
    let table = unique(prefix);
    db.batch_execute(&format!(
        "CREATE TABLE {table} (id int GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, note text NOT NULL)"
    ))
    .await
    .expect("create the table");
    DropTable(table)
}

/// Run a driver process to its end; its stdout, or a panic with everything it said.
async fn run_process(what: &str, cmd: &mut tokio::process::Command) -> String {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let child = cmd.spawn().unwrap_or_else(|e| {
        panic!("{what}: cannot start {cmd:?}: {e} (run ensure_driver_clients from scripts/lib.sh)")
    });
    let out = tokio::time::timeout(DRIVER_LIMIT, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("{what}: no result within {DRIVER_LIMIT:?}"))
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}\n{stdout}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

async fn run_external(driver: Driver, port: u16, table: &str) -> Summary {
    let port = port.to_string();
    let args = ["127.0.0.1", &port, "postgres", "postgres", table];
    let mut cmd;
    match driver {
        Driver::NodePostgres => {
            let modules = npm_dir().join("node_modules");
            assert!(
                modules.join("pg/package.json").exists(),
                "node-postgres is not installed in {}: run ensure_driver_clients from scripts/lib.sh",
                modules.display()
            );
            cmd = tokio::process::Command::new("node");
            cmd.env("NODE_PATH", modules)
                .arg(drivers_dir().join("node_driver.js"))
                .args(args);
        }
        Driver::Jdbc => {
            assert!(
                Path::new(JDBC_JAR).exists(),
                "{JDBC_JAR} is missing (libpostgresql-jdbc-java): run ensure_driver_clients from scripts/lib.sh"
            );
            cmd = tokio::process::Command::new("java");
            cmd.args(["-XX:TieredStopAtLevel=1", "-cp", JDBC_JAR])
                .arg(drivers_dir().join("Driver.java"))
                .args(args);
        }
        _ => {
            cmd = tokio::process::Command::new("python3");
            cmd.arg(drivers_dir().join("python_driver.py"))
                .args(["--driver", driver.name()])
                .args(["--host", "127.0.0.1", "--port", &port])
                .args(["--dbname", "postgres", "--user", "postgres"])
                .args(["--table", table]);
        }
    }
    let out = run_process(driver.name(), &mut cmd).await;
    let line = out.lines().last().unwrap_or_default();
    serde_json::from_str(line)
        .unwrap_or_else(|e| panic!("{}: not a summary ({e}): {out}", driver.name()))
}

fn distinct<'a>(pids: impl IntoIterator<Item = &'a i32>) -> HashSet<i32> {
    pids.into_iter().copied().collect()
}

/// One cell: a sidecar in `mode`, the driver's work through it, then the checks.
pub async fn run_cell(mode: Mode, driver: Driver) {
    let sidecar = Sidecar::start("postgres", mode.name(), mode.pool());
    let db = direct("postgres").await;
    let table = create_table(&db, &format!("pw_dm_{}", driver.name())).await;
    let t = &table.0;
    let summary = match driver {
        Driver::TokioPostgres => {
            rust_clients::tokio_postgres("127.0.0.1", sidecar.port, "postgres", t).await
        }
        Driver::Sqlx => rust_clients::sqlx("127.0.0.1", sidecar.port, "postgres", t).await,
        _ => Ok(run_external(driver, sidecar.port, t).await),
    }
    .unwrap_or_else(|e| panic!("{} ({} mode): {e:#}", driver.name(), mode.name()));
    check(mode, driver, &summary, &db, t).await;
}

/// The checks every cell shares.
async fn check(mode: Mode, driver: Driver, s: &Summary, db: &tokio_postgres::Client, table: &str) {
    let cell = format!("{} in {} mode", driver.name(), mode.name());
    assert_eq!(s.driver, driver.name());
    assert_eq!(s.unique_violation, "23505", "{cell}: the duplicate insert");
    assert_eq!(s.division_by_zero, "22012", "{cell}: 1 / 0");
    let row = db
        .query_one(
            &format!(
                "SELECT count(*) FILTER (WHERE note = 'c' AND id BETWEEN 1 AND 10), \
                 count(*) FILTER (WHERE note = 'after-error' AND id = 202), \
                 count(*) FILTER (WHERE note = 'w' AND id BETWEEN 1001 AND 1508), \
                 count(*) FILTER (WHERE id IN (101, 102, 103, 201) OR note IN ('r', 'e', 'dup')), \
                 count(*) FROM {table}"
            ),
            &[],
        )
        .await
        .expect("count the rows");
    let counts: [i64; 5] = [row.get(0), row.get(1), row.get(2), row.get(3), row.get(4)];
    assert_eq!(
        counts,
        [10, 1, 48, 0, 59],
        "{cell}: committed (c, after-error, w), rolled back or failed (must be 0), total"
    );
    assert_eq!(s.worker_backends.len(), WORKERS as usize, "{cell}");
    for w in &s.worker_backends {
        assert_eq!(w.len(), WORKER_TX as usize, "{cell}");
    }
    let main = distinct(&s.main_backends);
    let all = distinct(
        s.main_backends
            .iter()
            .chain(s.worker_backends.iter().flatten()),
    );
    match mode {
        Mode::Transaction => {
            assert!(
                main.len() >= 2,
                "{cell}: the first connection's statements all ran on one server connection \
                 ({main:?}), so the matrix did not cross server connections"
            );
            assert!(
                all.len() <= TRANSACTION_POOL_SIZE,
                "{cell}: {} server connections for pool_size {TRANSACTION_POOL_SIZE}",
                all.len()
            );
        }
        Mode::Session => {
            assert!(all.len() <= SESSION_POOL_SIZE, "{cell}: {all:?}");
            if !driver.pools_itself() {
                assert_eq!(main.len(), 1, "{cell}: one client, one server connection");
                let per_worker: Vec<HashSet<i32>> =
                    s.worker_backends.iter().map(distinct).collect();
                assert!(
                    per_worker.iter().all(|p| p.len() == 1),
                    "{cell}: {per_worker:?}"
                );
                let workers = distinct(s.worker_backends.iter().flatten());
                assert_eq!(workers.len(), WORKERS as usize, "{cell}: {per_worker:?}");
            }
            if driver.prepares() {
                assert!(
                    s.prepared_statements > 0,
                    "{cell}: the driver created no named prepared statement, so its cell \
                     does not test prepared statements"
                );
            }
        }
    }
}

/// pgbench `-M prepared`: 6 clients × 10 runs of a script that commits one transaction and
/// rolls one back. (pgbench aborts a client on an error, so there is no error step.)
pub async fn run_pgbench(mode: Mode) {
    let sidecar = Sidecar::start("postgres", mode.name(), mode.pool());
    let db = direct("postgres").await;
    let table = create_table(&db, "pw_dm_pgbench").await;
    let t = &table.0;
    let script = sidecar.dir().join("work.sql");
    std::fs::write(
        &script,
        format!(
            "\\set n random(1, 10)\n\
             BEGIN;\n\
             INSERT INTO {t} (note) VALUES ('p');\n\
             SELECT count(*) FROM {t} WHERE note = 'p' AND id > :n;\n\
             END;\n\
             BEGIN;\n\
             INSERT INTO {t} (note) VALUES ('r');\n\
             ROLLBACK;\n"
        ),
    )
    .expect("write the pgbench script");
    let port = sidecar.port.to_string();
    // One thread per client (-j 6): pgbench prepares a client's statements with blocking
    // calls, so with several clients per thread one client waiting for a pooled connection
    // would stall the others on its thread, which hold the connections inside BEGIN ... END:
    // pgbench's own deadlock against any transaction pool of 2 (PgBouncer's too).
    let out = run_process(
        "pgbench",
        tokio::process::Command::new("pgbench")
            .args(["-h", "127.0.0.1", "-p", &port, "-U", "postgres"])
            .args([
                "-n", "-M", "prepared", "-c", "6", "-j", "6", "-t", "10", "-f",
            ])
            .arg(&script)
            .arg("postgres"),
    )
    .await;
    assert!(
        out.contains("number of transactions actually processed: 60/60"),
        "{out}"
    );
    assert!(out.contains("number of failed transactions: 0"), "{out}");
    let row = db
        .query_one(
            &format!(
                "SELECT count(*) FILTER (WHERE note = 'p'), count(*) FILTER (WHERE note <> 'p') FROM {t}"
            ),
            &[],
        )
        .await
        .expect("count the rows");
    let (committed, rolled_back): (i64, i64) = (row.get(0), row.get(1));
    assert_eq!((committed, rolled_back), (60, 0), "{out}");
}
