//! A commit ledger for fault-injection tests: writers commit rows with unique ids through the
//! sidecar and record which commits were acknowledged; after the fault and the recovery,
//! [`Ledger::verify`] checks on the database itself that every acknowledged id is present
//! exactly once and every unacknowledged one at most once (nothing lost, nothing applied
//! twice: the sidecar never retried a statement that may have run).
//!
//! Every operation runs under a timeout, so a hang fails the test with a clear message.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The ledger table (no unique key, so a duplicate commit would show).
pub const TABLE: &str = "pw_ledger";

/// What the writers saw.
#[derive(Debug, Default)]
pub struct Ledger {
    /// Ids whose COMMIT was acknowledged.
    pub acked: BTreeSet<String>,
    /// Ids whose outcome the client cannot know (error, or the connection broke).
    pub unknown: BTreeSet<String>,
    /// The error texts clients got, for the clarity check.
    pub errors: Vec<String>,
}

/// Create the ledger table on a database (direct connection).
pub async fn create(db: &tokio_postgres::Client) {
    db.batch_execute(&format!(
        "CREATE TABLE IF NOT EXISTS {TABLE} (id text NOT NULL, at timestamptz DEFAULT now())"
    ))
    .await
    .expect("create the ledger table");
}

/// Writers: `n` tasks, each connecting to `conninfo` (and reconnecting after errors) and
/// committing `BEGIN; INSERT; INSERT; COMMIT` rows until `stop`. `limit` bounds every
/// connect and every transaction: past it the test fails as a hang.
pub fn spawn_writers(
    n: usize,
    conninfo: String,
    limit: Duration,
    stop: Arc<AtomicBool>,
    ledger: Arc<Mutex<Ledger>>,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..n)
        .map(|w| {
            let (conninfo, stop, ledger) = (conninfo.clone(), stop.clone(), ledger.clone());
            tokio::spawn(async move {
                let mut seq = 0u64;
                let mut client = None;
                while !stop.load(Ordering::SeqCst) {
                    if client.is_none() {
                        match tokio::time::timeout(
                            limit,
                            tokio_postgres::connect(&conninfo, tokio_postgres::NoTls),
                        )
                        .await
                        .unwrap_or_else(|_| panic!("writer {w}: connect hung past {limit:?}"))
                        {
                            Ok((c, conn)) => {
                                tokio::spawn(conn);
                                client = Some(c);
                            }
                            Err(e) => {
                                ledger.lock().unwrap().errors.push(error_text(&e));
                                tokio::time::sleep(Duration::from_millis(100)).await;
                                continue;
                            }
                        }
                    }
                    let c = client.as_ref().expect("connected");
                    seq += 1;
                    let id = format!("w{w}-{seq}");
                    let sql = format!(
                        "BEGIN; INSERT INTO {TABLE} (id) VALUES ('{id}'); \
                         INSERT INTO {TABLE} (id) VALUES ('{id}-b'); COMMIT"
                    );
                    let r = tokio::time::timeout(limit, c.batch_execute(&sql))
                        .await
                        .unwrap_or_else(|_| panic!("writer {w}: transaction hung past {limit:?}"));
                    let failed = {
                        let mut l = ledger.lock().unwrap();
                        match r {
                            Ok(()) => {
                                l.acked.insert(id);
                                false
                            }
                            Err(e) => {
                                l.errors.push(error_text(&e));
                                l.unknown.insert(id);
                                true
                            }
                        }
                    };
                    if failed {
                        if c.is_closed() {
                            client = None;
                        }
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            })
        })
        .collect()
}

/// An error as a client reads it: the server's (or sidecar's) message and SQLSTATE, or the
/// driver's text.
pub fn error_text(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(d) => format!("{} {}: {}", d.severity(), d.code().code(), d.message()),
        None => e.to_string(),
    }
}

impl Ledger {
    /// Check the database (direct connection) against what clients were told.
    pub async fn verify(&self, db: &tokio_postgres::Client) {
        let rows = db
            .query(
                &format!("SELECT id, count(*) FROM {TABLE} GROUP BY id"),
                &[],
            )
            .await
            .expect("read the ledger");
        let mut present = std::collections::BTreeMap::new();
        for r in rows {
            present.insert(r.get::<_, String>(0), r.get::<_, i64>(1));
        }
        for id in &self.acked {
            assert_eq!(
                present.get(id),
                Some(&1),
                "acknowledged commit {id} lost or doubled"
            );
            // Both rows of the transaction or none: never half-applied.
            assert_eq!(
                present.get(&format!("{id}-b")),
                Some(&1),
                "{id} half-applied"
            );
        }
        for id in &self.unknown {
            let a = present.get(id).copied().unwrap_or(0);
            let b = present.get(&format!("{id}-b")).copied().unwrap_or(0);
            assert!(a <= 1, "unacknowledged {id} applied {a} times");
            assert_eq!(a, b, "unacknowledged {id} half-applied");
        }
        let known: BTreeSet<&String> = self.acked.iter().chain(&self.unknown).collect();
        for id in present.keys().filter(|k| !k.ends_with("-b")) {
            assert!(known.contains(id), "{id} committed but never sent");
        }
    }

    /// Every error a client got names a cause (an SQLSTATE or the driver's reason).
    pub fn assert_errors_clear(&self) {
        for e in &self.errors {
            assert!(e.len() > 12, "unclear client error: {e:?}");
        }
    }
}
