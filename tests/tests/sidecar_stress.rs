//! The hazard log's stress test, shortened for CI: a steady 100 transactions per second for
//! 20 s through a 20/10 pool. The full 10-minute run is `scripts/soak` (outside CI, figures in
//! BENCHMARKS.md). Up to 20 server connections and 40 client sessions, hence `heavy_`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::{Duration, Instant};

use poolwarden_tests::sidecar::{Sidecar, backends, direct, through, unique};
use tokio::sync::mpsc;

/// Requests per second, as in the hazard log.
const RATE: u64 = 100;
/// Shortened from the hazard log's 10 minutes.
const SECONDS: u64 = 20;
/// Client sessions kept logged in (an application's own connections to its sidecar).
const CLIENTS: usize = 40;
/// 80 % of pool_size 20.
const BELOW: i64 = 16;

/// Every 100 ms: backends on the database from this test's sidecar (all and active);
/// returns (peak backends, peak active, samples).
fn sample_backends(app: String) -> (Arc<AtomicBool>, tokio::task::JoinHandle<(i64, i64, u32)>) {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let handle = tokio::spawn(async move {
        let db = direct("postgres").await;
        let (peak, peak_active) = (AtomicI64::new(0), AtomicI64::new(0));
        let mut samples = 0;
        while !flag.load(Ordering::SeqCst) {
            peak.fetch_max(backends(&db, &app).await, Ordering::SeqCst);
            let active: i64 = db
                .query_one(
                    "SELECT count(*) FROM pg_stat_activity \
                     WHERE application_name = $1 AND state = 'active'",
                    &[&app],
                )
                .await
                .expect("count active backends")
                .get(0);
            peak_active.fetch_max(active, Ordering::SeqCst);
            samples += 1;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        (
            peak.load(Ordering::SeqCst),
            peak_active.load(Ordering::SeqCst),
            samples,
        )
    });
    (stop, handle)
}

/// Hazard log, stress test (CI variant): 100 transactions per second for 20 s through a
/// 20/10 pool: every transaction succeeds (no 53300, no pool timeout), and the database never
/// sees 16 or more backends from the sidecar (pool usage below 80 %, max_overflow unused).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn heavy_stress_100_per_second_stays_below_80_percent() {
    let sidecar = Sidecar::start(
        "postgres",
        "transaction",
        "  pool_size: 20\n  max_overflow: 10\n  pool_timeout: 30s",
    );
    let app = unique("pw_stress");
    // Idle client sessions wait in a queue; each request takes one, runs its transaction and
    // puts it back.
    let (idle_tx, idle_rx) = mpsc::channel(CLIENTS);
    let idle_rx = Arc::new(tokio::sync::Mutex::new(idle_rx));
    for _ in 0..CLIENTS {
        let (client, _conn) = through(&sidecar, "postgres", &app).await.expect("login");
        idle_tx.send(client).await.expect("queue client");
    }
    let (stop, sampler) = sample_backends(app.clone());

    let start = Instant::now();
    let mut ticks = tokio::time::interval(Duration::from_millis(1000 / RATE));
    // A steady rate: a tick this generator missed (its own process stalled on a busy machine)
    // is not made up with a burst of requests at once, which would be a spike, not the
    // hazard log's steady 100 per second.
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut requests = Vec::new();
    for _ in 0..RATE * SECONDS {
        ticks.tick().await;
        let (idle_tx, idle_rx) = (idle_tx.clone(), idle_rx.clone());
        requests.push(tokio::spawn(async move {
            let begun = Instant::now();
            let client = idle_rx.lock().await.recv().await.expect("an idle client");
            let r = async {
                client.batch_execute("BEGIN").await?;
                client
                    .simple_query("SELECT pg_sleep(0.01), count(*) FROM pg_class")
                    .await?;
                client.batch_execute("COMMIT").await
            }
            .await;
            let took = begun.elapsed();
            let _ = idle_tx.send(client).await;
            (r, took)
        }));
    }
    let mut errors = Vec::new();
    let mut slowest = Duration::ZERO;
    for r in requests {
        let (result, took) = r.await.expect("request task");
        slowest = slowest.max(took);
        if let Err(e) = result {
            errors.push(e.to_string());
        }
    }
    let elapsed = start.elapsed();
    stop.store(true, Ordering::SeqCst);
    let (peak, peak_active, samples) = sampler.await.expect("sampler");
    eprintln!(
        "{} transactions in {elapsed:?}; slowest {slowest:?}; peak backends {peak}, \
         peak active {peak_active}, {samples} samples",
        RATE * SECONDS
    );

    assert!(
        errors.is_empty(),
        "{} of {} transactions failed (pool timeouts or errors): {:?}",
        errors.len(),
        RATE * SECONDS,
        &errors[..errors.len().min(5)]
    );
    assert!(
        slowest < Duration::from_secs(30),
        "a transaction waited {slowest:?}, as long as pool_timeout"
    );
    assert!(
        peak < BELOW,
        "the database saw {peak} backends from the sidecar: pool usage reached 80 % of 20"
    );
    assert!(
        peak >= 1 && samples >= 2 * SECONDS as u32,
        "the sampler saw {peak} backends in {samples} samples: it did not watch the run"
    );
    // The load really was ~100/s: 2000 ticks take at least 19.99 s (generous upper bound:
    // a stalled generator delays its later ticks).
    assert!(
        elapsed >= Duration::from_secs(SECONDS) - Duration::from_millis(20)
            && elapsed < Duration::from_secs(SECONDS * 4),
        "the run took {elapsed:?}"
    );
}
