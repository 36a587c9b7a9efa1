//! `bookkeeping [TRANSACTIONS]`: the sidecar's per-message bookkeeping on pgbench's TPC-B
//! transaction, with no I/O and no event loop: the relay's work for each client message
//! (transaction boundaries, the session-state scan, the query timer's clock read, the
//! prepared-statement rewriter, the frame's encoding for the server) and for each server
//! message (ReadyForQuery with the query timer's clock read and histogram, the rewriter's
//! reply matching). A measuring instrument for docs/data-plane.md: run it under callgrind at
//! two counts and divide the difference, so start-up drops out:
//!
//! ```text
//! cargo build --profile profiling --example bookkeeping
//! for n in 1000 11000; do valgrind --tool=callgrind --callgrind-out-file=/tmp/bk.$n \
//!     target/profiling/examples/bookkeeping $n; done
//! ```
//!
//! (instructions at 11,000 − at 1,000) / 10,000 / 7 is the bookkeeping per statement.

use bytes::{Bytes, BytesMut};
use poolwarden_sidecar::metrics::Metrics;
use poolwarden_sidecar::prepared::{ServerAction, ServerStatements, Tracking};
use poolwarden_sidecar::protocol::frame::Frame;
use poolwarden_sidecar::proxy::{Boundaries, QueryTimer};

/// pgbench's TPC-B statements, as it sends them (the simple protocol), and the status of the
/// ReadyForQuery each gets.
const STATEMENTS: [(&str, u8); 7] = [
    ("BEGIN;", b'T'),
    (
        "UPDATE pgbench_accounts SET abalance = abalance + -4178 WHERE aid = 612345;",
        b'T',
    ),
    (
        "SELECT abalance FROM pgbench_accounts WHERE aid = 612345;",
        b'T',
    ),
    (
        "UPDATE pgbench_tellers SET tbalance = tbalance + -4178 WHERE tid = 45;",
        b'T',
    ),
    (
        "UPDATE pgbench_branches SET bbalance = bbalance + -4178 WHERE bid = 4;",
        b'T',
    ),
    (
        "INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) \
         VALUES (45, 4, 612345, -4178, CURRENT_TIMESTAMP);",
        b'T',
    ),
    ("END;", b'I'),
];

fn main() {
    let transactions: u64 = std::env::args()
        .nth(1)
        .map(|n| n.parse().expect("TRANSACTIONS: a count"))
        .unwrap_or(10_000);
    let metrics = Metrics::new();
    let mut timer = Some(Box::new(QueryTimer::new(
        metrics.pool("bench"),
        std::time::Duration::from_secs(5),
    )));
    let mut tracking = Tracking::new(200).expect("a limit above 0");
    let mut server_statements = ServerStatements::new();
    // Each message as the client's frame reader hands it over: a body split off the read
    // buffer (shared, reference-counted), not a copy.
    let mut wire = BytesMut::new();
    for (sql, _) in STATEMENTS {
        wire.extend_from_slice(sql.as_bytes());
        wire.extend_from_slice(b"\0");
    }
    let bodies: Vec<Bytes> = {
        let all = wire.freeze();
        let mut at = 0;
        STATEMENTS
            .iter()
            .map(|(sql, _)| {
                let body = all.slice(at..at + sql.len() + 1);
                at += sql.len() + 1;
                body
            })
            .collect()
    };
    let mut to_server = BytesMut::with_capacity(4096);
    let mut completed = 0;
    for _ in 0..transactions {
        let mut b = Boundaries::new()
            .with_query_timer(timer.take())
            .with_tracked_statements(true);
        for (body, (_, status)) in bodies.iter().zip(STATEMENTS) {
            let f = Frame {
                tag: b'Q',
                body: body.clone(),
            };
            b.client_sent(&f);
            tracking.rewriter.client_message(
                f,
                &mut tracking.client,
                &mut server_statements,
                &mut to_server,
            );
            to_server.clear();
            for (tag, reply) in [(b'C', &b"UPDATE 1\0"[..]), (b'Z', &[status][..])] {
                b.server_sent(tag, reply);
                let action = tracking.rewriter.server_message(
                    tag,
                    &mut tracking.client,
                    &mut server_statements,
                );
                assert!(matches!(action, ServerAction::Forward));
            }
        }
        assert!(b.is_clean() && !b.dirty, "TPC-B leaves no session state");
        completed += b.completed;
        timer = b.take_query_timer();
    }
    println!("{completed} transactions");
}
