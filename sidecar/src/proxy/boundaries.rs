//! Where a server connection stands between the client's messages and the server's
//! ReadyForQuery: transactions begun and ended, what is in flight, whether session state was
//! touched, and each query's duration. Pure bookkeeping, no I/O: the relay feeds it the
//! messages it passes on.

use std::collections::VecDeque;
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;

use crate::metrics::PoolMetrics;
use crate::protocol::frame::Frame;
use crate::protocol::sql::{changes_session_state, query_sql};

/// Transaction-boundary tracking for one server connection.
#[derive(Debug, Default)]
pub struct Boundaries {
    /// Queries and Syncs sent whose ReadyForQuery has not arrived.
    pub pending: usize,
    /// Extended-protocol messages sent since the last Sync.
    pub open_extended: bool,
    /// Transaction status from the last ReadyForQuery (`I`, `T`, `E`).
    pub status: u8,
    /// Session state may have been changed (needs `DISCARD ALL` before reuse).
    pub dirty: bool,
    /// Named statements are tracked by the pooler ([`crate::prepared`]), so a named Parse
    /// does not make the connection dirty.
    pub tracked_statements: bool,
    /// ReadyForQuery `I` messages seen (transactions that ended).
    pub completed: u64,
    /// When the last ReadyForQuery arrived, if the clock was read for it (queries are
    /// timed): the server last answered then, which the pool notes on release.
    pub answered: Option<Instant>,
    /// Where finished queries are accounted (`poolwarden_query_duration_seconds`, slow
    /// queries), with slow_query_threshold.
    queries: Option<Box<QueryTimer>>,
}

/// Times queries: a simple Query until its ReadyForQuery, an extended batch from its first
/// message until the ReadyForQuery of its Sync. The SQL is kept as the client's bytes (a
/// reference count, no copy) and only read, as a fingerprint, when the query was slow. Bind
/// parameters are never kept.
#[derive(Debug)]
pub struct QueryTimer {
    metrics: PoolMetrics,
    threshold: Duration,
    /// Queries and Syncs in flight, oldest first: start time and SQL (a `Q` body or the
    /// batch's last Parse).
    in_flight: VecDeque<(Instant, Bytes, bool)>,
    /// The extended batch being built: when it started and its SQL, if a Parse named it.
    batch: Option<(Instant, Option<Bytes>)>,
}

impl QueryTimer {
    /// A timer recording into `metrics`; queries of at least `threshold` are slow.
    pub fn new(metrics: PoolMetrics, threshold: Duration) -> Self {
        Self {
            metrics,
            threshold,
            // Room for a few pipelined queries without growing from empty.
            in_flight: VecDeque::with_capacity(4),
            batch: None,
        }
    }

    /// A new slow_query_threshold (after a reload).
    pub fn set_threshold(&mut self, threshold: Duration) {
        self.threshold = threshold;
    }

    /// A client message; `at`: when it arrived, if the caller read the clock.
    fn client_sent(&mut self, f: &Frame, at: Option<Instant>) {
        let now = || at.unwrap_or_else(Instant::now);
        match f.tag {
            b'Q' => self.in_flight.push_back((now(), f.body.clone(), true)),
            b'P' => {
                let start = self.batch.take().map_or_else(now, |(t, _)| t);
                self.batch = Some((start, Some(f.body.clone())));
            }
            b'B' | b'D' | b'E' | b'C' | b'H' | b'F' if self.batch.is_none() => {
                self.batch = Some((now(), None));
            }
            b'S' => {
                let (start, sql) = self.batch.take().unwrap_or_else(|| (now(), None));
                match sql {
                    Some(sql) => self.in_flight.push_back((start, sql, false)),
                    None => self.in_flight.push_back((start, Bytes::new(), false)),
                }
            }
            _ => {}
        }
    }

    /// A ReadyForQuery that arrived at `now`.
    fn ready(&mut self, now: Instant) {
        let Some((start, body, simple)) = self.in_flight.pop_front() else {
            return;
        };
        let took = now.saturating_duration_since(start);
        if took < self.threshold {
            self.metrics.observe_query(took);
            return;
        }
        // Slow: only now read the text, and only to fingerprint it.
        let sql_bytes: &[u8] = if simple {
            query_sql(&body)
        } else {
            // Parse: statement name \0 query \0 ...
            body.split(|b| *b == 0).nth(1).unwrap_or(&[])
        };
        let sql = if sql_bytes.is_empty() {
            std::borrow::Cow::Borrowed("<prepared statement>")
        } else {
            String::from_utf8_lossy(sql_bytes)
        };
        crate::fingerprint::record_query(&self.metrics, self.threshold, took, &sql);
    }
}

impl Boundaries {
    /// A connection that is idle and synced.
    pub fn new() -> Self {
        Self {
            pending: 0,
            open_extended: false,
            status: b'I',
            dirty: false,
            tracked_statements: false,
            completed: 0,
            answered: None,
            queries: None,
        }
    }

    /// Named statements are tracked by the pooler.
    pub fn with_tracked_statements(mut self, tracked: bool) -> Self {
        self.tracked_statements = tracked;
        self
    }

    /// Time every query with `timer` (a session keeps one across its transactions, so its
    /// queue is not allocated anew for each).
    pub fn with_query_timer(mut self, timer: Option<Box<QueryTimer>>) -> Self {
        self.queries = timer;
        self
    }

    /// Take the query timer back, with nothing in flight.
    #[inline]
    pub fn take_query_timer(&mut self) -> Option<Box<QueryTimer>> {
        let mut timer = self.queries.take()?;
        timer.in_flight.clear();
        timer.batch = None;
        Some(timer)
    }

    /// Idle, outside a transaction, nothing in flight.
    pub fn is_clean(&self) -> bool {
        self.pending == 0 && !self.open_extended && self.status == b'I'
    }

    /// Inside a transaction with nothing in flight (the client's turn).
    pub fn idle_in_transaction(&self) -> bool {
        self.pending == 0 && !self.open_extended && self.status != b'I'
    }

    /// Note a message the client sends.
    pub fn client_sent(&mut self, f: &Frame) {
        self.client_sent_at(f, None);
    }

    /// [`client_sent`](Self::client_sent) for a message that arrived at `at` (the caller
    /// read the clock), so the query timer does not read it again.
    pub fn client_sent_at(&mut self, f: &Frame, at: Option<Instant>) {
        if let Some(q) = &mut self.queries {
            q.client_sent(f, at);
        }
        match f.tag {
            b'Q' => {
                self.pending += 1;
                let sql = query_sql(&f.body);
                self.dirty |= changes_session_state(sql);
            }
            b'S' => {
                self.pending += 1;
                self.open_extended = false;
            }
            b'P' => {
                self.open_extended = true;
                let mut parts = f.body.split(|b| *b == 0);
                let name = parts.next().unwrap_or(&[]);
                let sql = parts.next().unwrap_or(&[]);
                self.dirty |=
                    (!name.is_empty() && !self.tracked_statements) || changes_session_state(sql);
            }
            b'B' | b'D' | b'E' | b'C' | b'H' | b'F' => self.open_extended = true,
            _ => {}
        }
    }

    /// Note a message (type byte and body) the server sends. Inlined into the relay's loop
    /// over a read's messages, so the rows and command tags that are not ReadyForQuery cost
    /// a comparison, not a call.
    #[inline]
    pub fn server_sent(&mut self, tag: u8, body: &[u8]) {
        self.server_sent_at(tag, body, None);
    }

    /// [`server_sent`](Self::server_sent) for a message that arrived at `at` (the event
    /// loop passes the time its poll returned, read once for every socket it reports), so the
    /// query timer does not read the clock for it.
    #[inline]
    pub fn server_sent_at(&mut self, tag: u8, body: &[u8], at: Option<Instant>) {
        if tag == b'Z' {
            self.ready_for_query(body, at);
        }
    }

    /// A ReadyForQuery, with its body (the transaction status).
    #[inline]
    fn ready_for_query(&mut self, body: &[u8], at: Option<Instant>) {
        if let Some(q) = &mut self.queries {
            let now = at.unwrap_or_else(Instant::now);
            q.ready(now);
            self.answered = Some(now);
        }
        self.pending = self.pending.saturating_sub(1);
        self.status = body.first().copied().unwrap_or(b'I');
        if self.status == b'I' {
            self.completed += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(tag: u8, body: &[u8]) -> Frame {
        Frame {
            tag,
            body: Bytes::copy_from_slice(body),
        }
    }

    fn counts(m: &crate::metrics::Metrics) -> (f64, f64) {
        let text = m.encode();
        let scrape =
            prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).unwrap();
        let get = |name: &str| {
            scrape
                .samples
                .iter()
                .find(|s| s.metric == name && s.labels.get("database") == Some("db"))
                .map(|s| match &s.value {
                    prometheus_parse::Value::Counter(v) => *v,
                    prometheus_parse::Value::Histogram(h) => {
                        h.iter().map(|b| b.count).fold(0.0, f64::max)
                    }
                    _ => f64::NAN,
                })
                .unwrap()
        };
        (
            get("poolwarden_query_duration_seconds"),
            get("poolwarden_slow_queries_total"),
        )
    }

    /// Table: client messages then ReadyForQuerys → queries timed and slow ones counted. A
    /// simple Query is one query; an extended batch up to its Sync is one; pipelined ones
    /// are matched to their ReadyForQuery in order.
    #[test]
    fn queries_are_timed_per_ready_for_query() {
        /// (client messages, ReadyForQuerys, threshold, (queries timed, slow queries))
        type Case<'a> = (&'a [Frame], usize, Duration, (f64, f64));
        let cases: [Case<'_>; 4] = [
            (
                &[frame(b'Q', b"SELECT 1\0")],
                1,
                Duration::from_secs(60),
                (1.0, 0.0),
            ),
            (
                &[
                    frame(b'P', b"\0SELECT $1\0\0\0"),
                    frame(b'B', b"\0\0\0\0\0\0"),
                    frame(b'E', b"\0\0\0\0\0"),
                    frame(b'S', b""),
                ],
                1,
                Duration::from_secs(60),
                (1.0, 0.0),
            ),
            (
                &[frame(b'Q', b"SELECT 1\0"), frame(b'Q', b"SELECT 2\0")],
                2,
                Duration::ZERO,
                (2.0, 2.0),
            ),
            // A Sync without a batch, and no ReadyForQuery yet: nothing recorded.
            (&[frame(b'S', b"")], 0, Duration::ZERO, (0.0, 0.0)),
        ];
        for (i, (sent, readies, threshold, want)) in cases.into_iter().enumerate() {
            let m = crate::metrics::Metrics::new();
            let mut b = Boundaries::new()
                .with_query_timer(Some(Box::new(QueryTimer::new(m.pool("db"), threshold))));
            for f in sent {
                b.client_sent(f);
            }
            for _ in 0..readies {
                b.server_sent(b'Z', b"I");
            }
            assert_eq!(counts(&m), want, "case {i}");
        }
    }

    #[test]
    fn boundaries_follow_ready_for_query() {
        let mut b = Boundaries::new();
        assert!(b.is_clean());
        b.client_sent(&frame(b'Q', b"BEGIN\0"));
        assert!(!b.is_clean());
        b.server_sent(b'Z', b"T");
        assert!(b.idle_in_transaction());
        b.client_sent(&frame(b'P', b"\0SELECT 1\0\0\0"));
        b.client_sent(&frame(b'B', b"\0\0\0\0\0\0\0\0"));
        assert!(!b.idle_in_transaction());
        b.client_sent(&frame(b'S', b""));
        b.server_sent(b'Z', b"T");
        assert!(b.idle_in_transaction());
        b.client_sent(&frame(b'Q', b"COMMIT\0"));
        b.server_sent(b'Z', b"I");
        assert!(b.is_clean());
        assert!(!b.dirty);
        assert_eq!(b.completed, 1, "one transaction ended");
    }

    #[test]
    fn pipelined_syncs_hold_until_the_last_ready_for_query() {
        let mut b = Boundaries::new();
        for _ in 0..2 {
            b.client_sent(&frame(b'P', b"\0SELECT 1\0\0\0"));
            b.client_sent(&frame(b'S', b""));
        }
        b.server_sent(b'Z', b"I");
        assert!(!b.is_clean());
        b.server_sent(b'Z', b"I");
        assert!(b.is_clean());
    }

    #[test]
    fn a_flush_without_sync_keeps_the_connection() {
        let mut b = Boundaries::new();
        b.client_sent(&frame(b'P', b"\0SELECT 1\0\0\0"));
        b.client_sent(&frame(b'H', b""));
        assert!(!b.is_clean());
    }

    #[test]
    fn session_state_marks_dirty() {
        let table: [(Frame, bool); 4] = [
            (frame(b'Q', b"SET search_path = x\0"), true),
            (frame(b'Q', b"SELECT 1\0"), false),
            (frame(b'P', b"stmt1\0SELECT 1\0\0\0"), true),
            (frame(b'P', b"\0LISTEN x\0\0\0"), true),
        ];
        for (frame, want) in table {
            let mut b = Boundaries::new();
            b.client_sent(&frame);
            assert_eq!(b.dirty, want, "{frame:?}");
        }
    }
}
