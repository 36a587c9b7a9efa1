//! `ward-round`: the load generator of `scripts/demo`. Simulated clinicians run short
//! transactions through several sidecar "pods" in phases (quiet, ward round, emergency, database
//! restart, recovery) while every sidecar's `/api/metrics` is scraped once a second. Prints a
//! live progress line and writes `report.md`, `timeline.svg` and `timeline.csv`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Parser;
use poolwarden_tests::wardround::{phases, report, scrape};
use tokio::sync::Mutex;

#[derive(Parser, Debug)]
#[command(
    name = "ward-round",
    about = "Ward-round load through poolwarden sidecars"
)]
struct Args {
    /// A pod: `CLIENT_ADDR,ADMIN_ADDR`, e.g. `127.0.0.2:6432,127.0.0.2:9930`. Repeat per pod.
    #[arg(long = "pod", required = true)]
    pods: Vec<String>,
    /// File holding the sidecars' admin token.
    #[arg(long)]
    token_file: std::path::PathBuf,
    /// Database name clients connect to.
    #[arg(long, default_value = "clinical")]
    database: String,
    /// User clients connect as.
    #[arg(long, default_value = "clinician")]
    user: String,
    /// Phases `name:duration:clinicians`, comma separated.
    #[arg(
        long,
        default_value = "quiet:20s:4,ward-round:60s:40,emergency:40s:80,db-restart:30s:30,recovery:20s:6"
    )]
    phases: String,
    /// A command run (sh -c) when a phase starts: `PHASE=COMMAND`. Repeatable.
    #[arg(long = "on-phase")]
    on_phase: Vec<String>,
    /// Output directory for the report.
    #[arg(long)]
    out: std::path::PathBuf,
}

#[derive(Default)]
struct Counters {
    ok: AtomicU64,
    failed: AtomicU64,
}

struct Shared {
    phase: AtomicUsize,
    done: std::sync::atomic::AtomicBool,
    tick: Counters,
    summary: Mutex<report::Summary>,
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let phases = phases::parse_phases(&args.phases).map_err(anyhow::Error::msg)?;
    if phases.is_empty() {
        bail!("no phases given");
    }
    let token = std::fs::read_to_string(&args.token_file)
        .with_context(|| format!("reading {}", args.token_file.display()))?
        .trim()
        .to_string();
    let pods: Vec<(String, String)> = args
        .pods
        .iter()
        .map(|p| {
            p.split_once(',')
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .with_context(|| format!("--pod {p:?}: expected CLIENT_ADDR,ADMIN_ADDR"))
        })
        .collect::<Result<_>>()?;
    let hooks: Vec<(String, String)> = args
        .on_phase
        .iter()
        .filter_map(|h| {
            h.split_once('=')
                .map(|(a, b)| (a.to_string(), b.to_string()))
        })
        .collect();
    std::fs::create_dir_all(&args.out)?;

    setup(&pods[0].0, &args.database, &args.user).await?;

    let shared = Arc::new(Shared {
        phase: AtomicUsize::new(0),
        done: Default::default(),
        tick: Counters::default(),
        summary: Mutex::new(report::Summary::default()),
    });
    let max_clinicians = phases.iter().map(|p| p.clinicians).max().unwrap_or(0);
    let phase_sizes: Arc<Vec<usize>> = Arc::new(phases.iter().map(|p| p.clinicians).collect());
    let mut workers = Vec::new();
    for id in 0..max_clinicians {
        let addr = pods[id % pods.len()].0.clone();
        let (db, user) = (args.database.clone(), args.user.clone());
        let (shared, sizes) = (shared.clone(), phase_sizes.clone());
        workers.push(tokio::spawn(async move {
            clinician(id, addr, db, user, shared, sizes).await
        }));
    }

    let http = reqwest::Client::new();
    let start = Instant::now();
    let mut ticks = Vec::new();
    let mut notes = Vec::new();
    let mut current = usize::MAX;
    let mut interval = tokio::time::interval(Duration::from_secs(1));
    loop {
        interval.tick().await;
        let elapsed = start.elapsed();
        let Some((idx, phase)) = phases::phase_at(&phases, elapsed) else {
            break;
        };
        if idx != current {
            current = idx;
            shared.phase.store(idx, Ordering::SeqCst);
            println!(
                "── phase {} ({} clinicians, {}s)",
                phase.name,
                phase.clinicians,
                phase.duration.as_secs()
            );
            for (name, cmd) in hooks.iter().filter(|(n, _)| n == &phase.name) {
                let status = tokio::process::Command::new("sh")
                    .arg("-c")
                    .arg(cmd)
                    .status()
                    .await;
                notes.push(format!(
                    "{name}: ran hook at t={:.0}s ({status:?})",
                    elapsed.as_secs_f64()
                ));
            }
        }
        let mut samples = Vec::new();
        for (_, admin) in &pods {
            if let Some(s) = scrape::scrape(&http, admin, &token, &args.database).await {
                samples.push(s);
            }
        }
        let n = samples.len();
        let tick = report::Tick {
            t: elapsed.as_secs_f64().round(),
            phase: phase.name.clone(),
            utilization: if n > 0 {
                samples.iter().map(|s| s.utilization()).sum::<f64>() / n as f64
            } else {
                0.0
            },
            pool_size: samples.iter().map(|s| s.pool_size).fold(0.0, f64::max),
            waiting: samples.iter().map(|s| s.waiting).sum(),
            breaker: samples.iter().map(|s| s.breaker_state).fold(0.0, f64::max),
            pods_reporting: n,
            ok: shared.tick.ok.swap(0, Ordering::Relaxed),
            failed: shared.tick.failed.swap(0, Ordering::Relaxed),
        };
        let overflow = samples.iter().map(|s| s.max_overflow).fold(0.0, f64::max);
        let breaker = match tick.breaker as u8 {
            0 => "closed",
            1 => "half-open",
            _ => "OPEN",
        };
        println!(
            "[{:>4.0}s] {:<11} clinicians {:>3} | util {:>4.0}% | pool {:>3}+{:<3} | waiting {:>3} | breaker {:<9} | pods {}/{} | ok {:>4} failed {:>3}",
            tick.t,
            phase.name,
            phase.clinicians,
            tick.utilization * 100.0,
            tick.pool_size,
            overflow,
            tick.waiting,
            breaker,
            n,
            pods.len(),
            tick.ok,
            tick.failed
        );
        ticks.push(tick);
    }
    shared.done.store(true, Ordering::SeqCst);
    for w in workers {
        let _ = tokio::time::timeout(Duration::from_secs(10), w).await;
    }
    let summary = shared.summary.lock().await.clone();
    std::fs::write(args.out.join("timeline.csv"), report::csv(&ticks))?;
    std::fs::write(args.out.join("timeline.svg"), report::svg(&ticks))?;
    let md = report::markdown(&summary, &ticks, &notes);
    std::fs::write(args.out.join("report.md"), &md)?;
    println!("\n{md}");
    println!("report written to {}", args.out.join("report.md").display());
    Ok(())
}

/// Create the synthetic ward table (no real patient data) through the first pod.
async fn setup(addr: &str, db: &str, user: &str) -> Result<()> {
    let client = connect(addr, db, user)
        .await
        .context("connecting through the first sidecar")?;
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS ward_observations (
                 bed int NOT NULL, recorded_at timestamptz NOT NULL DEFAULT now(), news2 int NOT NULL);
             INSERT INTO ward_observations (bed, news2)
                 SELECT b, (b * 7) % 10 FROM generate_series(1, 200) b
                 WHERE NOT EXISTS (SELECT 1 FROM ward_observations);",
        )
        .await
        .context("creating the ward table")?;
    Ok(())
}

async fn connect(addr: &str, db: &str, user: &str) -> Result<tokio_postgres::Client> {
    let (host, port) = addr.rsplit_once(':').context("address without port")?;
    let mut cfg = tokio_postgres::Config::new();
    cfg.host(host)
        .port(port.parse()?)
        .dbname(db)
        .user(user)
        .application_name("ward-round")
        .connect_timeout(Duration::from_secs(5));
    let (client, conn) = cfg.connect(tokio_postgres::NoTls).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

/// One clinician: while the current phase needs them, open a chart (a short transaction),
/// then think for a moment. Simple-protocol statements, like a driver with server-side
/// prepared statements turned off.
async fn clinician(
    id: usize,
    addr: String,
    db: String,
    user: String,
    shared: Arc<Shared>,
    sizes: Arc<Vec<usize>>,
) {
    let mut client: Option<tokio_postgres::Client> = None;
    let mut n: u64 = 0;
    while !shared.done.load(Ordering::SeqCst) {
        let active = sizes
            .get(shared.phase.load(Ordering::SeqCst))
            .copied()
            .unwrap_or(0);
        if id >= active {
            client = None;
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        }
        if client.as_ref().is_none_or(|c| c.is_closed()) {
            match connect(&addr, &db, &user).await {
                Ok(c) => client = Some(c),
                Err(_) => {
                    record(&shared, Err(Failure::Other)).await;
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
            }
        }
        let c = client.as_ref().expect("connected above");
        n += 1;
        let bed = (id as u64 * 31 + n) % 200 + 1;
        let started = Instant::now();
        let result = async {
            c.simple_query("BEGIN").await?;
            c.simple_query(&format!(
                "SELECT bed, news2, recorded_at FROM ward_observations WHERE bed = {bed}"
            ))
            .await?;
            c.simple_query("SELECT pg_sleep(0.15)").await?;
            c.simple_query("COMMIT").await?;
            Ok::<_, tokio_postgres::Error>(())
        }
        .await;
        match result {
            Ok(()) => record(&shared, Ok(started.elapsed())).await,
            Err(e) => {
                let failure = match e.as_db_error().map(|d| d.code().code()) {
                    Some("53300") => Failure::PoolTimeout,
                    Some("57P03") => Failure::Breaker,
                    _ => Failure::Other,
                };
                record(&shared, Err(failure)).await;
                if c.is_closed() {
                    client = None;
                } else {
                    let _ = c.simple_query("ROLLBACK").await;
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
        tokio::time::sleep(Duration::from_millis(100 + (bed % 5) * 40)).await;
    }
}

#[derive(Clone, Copy)]
enum Failure {
    PoolTimeout,
    Breaker,
    Other,
}

async fn record(shared: &Shared, outcome: Result<Duration, Failure>) {
    let mut s = shared.summary.lock().await;
    match outcome {
        Ok(latency) => {
            shared.tick.ok.fetch_add(1, Ordering::Relaxed);
            s.served += 1;
            s.latencies.push(latency);
        }
        Err(f) => {
            shared.tick.failed.fetch_add(1, Ordering::Relaxed);
            s.failed += 1;
            match f {
                Failure::PoolTimeout => s.failed_pool_timeout += 1,
                Failure::Breaker => s.failed_breaker += 1,
                Failure::Other => s.failed_other += 1,
            }
        }
    }
}
