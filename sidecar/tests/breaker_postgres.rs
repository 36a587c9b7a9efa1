//! The circuit breaker against a real PostgreSQL that goes away and comes back (CONTRACT §2.4):
//! a throwaway server started with initdb/pg_ctl on a free port, stopped under load.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use poolwarden_sidecar::breaker::{BreakerError, BreakerState, SharedBreaker};
use poolwarden_sidecar::config::{BreakerConfig, ConfigDuration};
use poolwarden_sidecar::metrics::Metrics;

/// A PostgreSQL cluster in a temp dir, run as the `postgres` user; stopped on drop.
struct ThrowawayPg {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
}

fn run(cmd: &mut Command) {
    let out = cmd.output().expect("run a PostgreSQL tool");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn as_postgres(bin: &Path, tool: &str) -> Command {
    let mut c = Command::new("runuser");
    c.args(["-u", "postgres", "--"]).arg(bin.join(tool));
    c
}

impl ThrowawayPg {
    fn start() -> Self {
        let out = Command::new("pg_config")
            .arg("--bindir")
            .output()
            .expect("pg_config");
        let bin = PathBuf::from(String::from_utf8(out.stdout).unwrap().trim());
        let dir = tempfile::tempdir().unwrap();
        run(Command::new("chown")
            .arg("postgres:postgres")
            .arg(dir.path()));
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let pg = Self { dir, bin, port };
        run(as_postgres(&pg.bin, "initdb")
            .args(["-A", "trust", "-U", "postgres", "--no-sync", "-D"])
            .arg(pg.data()));
        pg.pg_start();
        pg
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn pg_start(&self) {
        let opts = format!(
            "-c listen_addresses=127.0.0.1 -c port={} -k {} -c fsync=off",
            self.port,
            self.dir.path().display()
        );
        run(as_postgres(&self.bin, "pg_ctl")
            .arg("-D")
            .arg(self.data())
            .args(["-o", &opts, "-l"])
            .arg(self.dir.path().join("log"))
            .args(["-w", "start"]));
    }

    fn pg_stop(&self) {
        run(as_postgres(&self.bin, "pg_ctl")
            .arg("-D")
            .arg(self.data())
            .args(["-m", "fast", "-w", "stop"]));
    }
}

impl Drop for ThrowawayPg {
    fn drop(&mut self) {
        let _ = as_postgres(&self.bin, "pg_ctl")
            .arg("-D")
            .arg(self.data())
            .args(["-m", "immediate", "-w", "stop"])
            .output();
    }
}

/// One guarded connection attempt; `attempts` counts the attempts that reached the network.
async fn connect(
    breaker: &SharedBreaker,
    port: u16,
    attempts: &AtomicUsize,
) -> Result<tokio_postgres::Client, BreakerError<tokio_postgres::Error>> {
    let conninfo =
        format!("host=127.0.0.1 port={port} user=postgres dbname=postgres connect_timeout=5");
    breaker
        .guard_connect(|| async {
            attempts.fetch_add(1, Ordering::SeqCst);
            let (client, conn) = tokio_postgres::connect(&conninfo, tokio_postgres::NoTls).await?;
            tokio::spawn(conn);
            Ok(client)
        })
        .await
}

const MESSAGE: &str = "Database temporarily unavailable. Please try again shortly.";

#[tokio::test]
async fn breaker_opens_on_a_dead_database_fails_fast_and_recovers() {
    let pg = ThrowawayPg::start();
    let open_for = Duration::from_secs(2);
    let cfg = BreakerConfig {
        failure_threshold: 5,
        open_for: ConfigDuration(open_for),
        message: MESSAGE.into(),
    };
    let metrics = Metrics::new();
    let breaker = SharedBreaker::new(&cfg).with_metrics(metrics.pool("throwaway"));
    let attempts = AtomicUsize::new(0);

    // Up: connections work, and one held across the outage keeps its socket.
    let held = connect(&breaker, pg.port, &attempts)
        .await
        .expect("database up");
    held.simple_query("SELECT 1").await.unwrap();
    assert_eq!(breaker.state(), BreakerState::Closed);

    pg.pg_stop();
    // Five failed connects open the breaker.
    for i in 0..5 {
        assert_eq!(
            breaker.state(),
            BreakerState::Closed,
            "still closed before failure {i}"
        );
        match connect(&breaker, pg.port, &attempts).await {
            Err(BreakerError::Connect(_)) => {}
            other => panic!("attempt {i}: expected a connect failure, got {other:?}"),
        }
    }
    assert_eq!(breaker.state(), BreakerState::Open);
    assert_eq!(attempts.load(Ordering::SeqCst), 6);

    // Every new request now fails fast with the message and no network attempt.
    let clients = Arc::new(breaker.clone());
    let mut slowest = Duration::ZERO;
    for _ in 0..50 {
        let started = Instant::now();
        let outcome = connect(&clients, pg.port, &attempts).await;
        slowest = slowest.max(started.elapsed());
        match outcome {
            Err(BreakerError::Open(r)) => {
                assert_eq!(
                    (r.severity, r.sqlstate, r.message.as_str()),
                    ("ERROR", "57P03", MESSAGE)
                )
            }
            other => panic!("expected a fast rejection, got {other:?}"),
        }
    }
    assert_eq!(
        attempts.load(Ordering::SeqCst),
        6,
        "no network attempt while open"
    );
    assert!(
        slowest < Duration::from_millis(10),
        "slowest rejection took {slowest:?}"
    );
    let text = metrics.encode();
    assert!(
        text.contains(r#"poolwarden_breaker_rejections_total{database="throwaway"} 50"#),
        "{text}"
    );
    assert!(
        text.contains(r#"poolwarden_breaker_state{database="throwaway"} 2"#),
        "{text}"
    );

    // After open_for, still down: the one probe fails and the breaker reopens.
    tokio::time::sleep(open_for).await;
    assert_eq!(breaker.state(), BreakerState::HalfOpen);
    assert!(matches!(
        connect(&breaker, pg.port, &attempts).await,
        Err(BreakerError::Connect(_))
    ));
    assert_eq!(breaker.state(), BreakerState::Open);
    assert_eq!(attempts.load(Ordering::SeqCst), 7, "exactly one probe");

    // The database comes back; before open_for has passed, requests are still refused.
    pg.pg_start();
    let started = Instant::now();
    assert!(matches!(
        connect(&breaker, pg.port, &attempts).await,
        Err(BreakerError::Open(_))
    ));
    // After open_for the probe succeeds and the breaker closes by itself.
    tokio::time::sleep(open_for.saturating_sub(started.elapsed())).await;
    let client = tokio::time::timeout(
        Duration::from_secs(30),
        connect(&breaker, pg.port, &attempts),
    )
    .await
    .expect("the probe does not hang")
    .expect("the probe connects");
    client.simple_query("SELECT 1").await.unwrap();
    assert_eq!(breaker.state(), BreakerState::Closed);
    let again = connect(&breaker, pg.port, &attempts)
        .await
        .expect("closed again");
    again.simple_query("SELECT 1").await.unwrap();
    assert!(
        metrics
            .encode()
            .contains(r#"poolwarden_breaker_state{database="throwaway"} 0"#)
    );
    // The connection held before the restart died with the old server; that is the server's
    // doing, not the breaker's: it was never touched.
    drop(held);
}
