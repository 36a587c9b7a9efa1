//! Pool accounting with a paused clock. The manager hands out numbered connections; what is
//! under test is the pool's bookkeeping, not I/O.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::*;

#[derive(Default)]
struct Numbered {
    next: AtomicU64,
    dead: Mutex<HashSet<u64>>,
    closed: Mutex<Vec<(u64, CloseReason)>>,
    fail: AtomicBool,
    /// Whether live connections look quiet (nothing arrived) without a round trip; dead ones
    /// never do. Off: every pre-ping is a round trip.
    quiet: AtomicBool,
    pings: AtomicU64,
    /// Quiet checks made.
    looked: AtomicU64,
    /// Connections with server bytes left in their buffer.
    unread: Mutex<HashSet<u64>>,
}

#[derive(Clone, Default)]
struct M(Arc<Numbered>);

impl Manager for M {
    type Conn = u64;
    type Error = String;
    async fn connect(&self, _app: &str) -> Result<u64, String> {
        if self.0.fail.load(Ordering::SeqCst) {
            return Err("refused".into());
        }
        Ok(self.0.next.fetch_add(1, Ordering::SeqCst))
    }
    async fn ping(&self, conn: &mut u64) -> bool {
        self.0.pings.fetch_add(1, Ordering::SeqCst);
        !self.0.dead.lock().unwrap().contains(conn)
    }
    fn quiet(&self, conn: &mut u64) -> bool {
        self.0.looked.fetch_add(1, Ordering::SeqCst);
        self.0.quiet.load(Ordering::SeqCst) && !self.0.dead.lock().unwrap().contains(conn)
    }
    fn unread(&self, conn: &u64) -> bool {
        self.0.unread.lock().unwrap().contains(conn)
    }
    fn close(&self, conn: u64, reason: CloseReason) {
        self.0.closed.lock().unwrap().push((conn, reason));
    }
}

fn settings(pool_size: u32, max_overflow: u32, timeout_s: u64) -> PoolSettings {
    PoolSettings {
        pool_size,
        max_overflow,
        pool_timeout: Duration::from_secs(timeout_s),
        pool_recycle: Duration::from_secs(3600),
        pre_ping: true,
        round_robin: false,
    }
}

fn pool(s: PoolSettings) -> (Pool<M>, M) {
    let m = M::default();
    (Pool::new(m.clone(), s, None), m)
}

fn stats(p: &Pool<M>) -> (usize, usize, usize, usize) {
    let s = p.stats();
    (s.checked_out, s.checked_in, s.waiting, s.overflow)
}

#[tokio::test(start_paused = true)]
async fn limit_is_pool_size_plus_overflow_then_exact_timeout() {
    let (p, m) = pool(settings(20, 10, 30));
    let mut held = Vec::new();
    for _ in 0..30 {
        held.push(p.checkout("t").await.unwrap());
    }
    assert_eq!(stats(&p), (30, 0, 0, 10));
    let start = Instant::now();
    let err = p.checkout("t").await.err().unwrap();
    assert_eq!(start.elapsed(), Duration::from_secs(30));
    assert_eq!(
        err.to_string(),
        "QueuePool limit of size 20 overflow 10 reached, connection timed out, timeout 30.00"
    );
    assert!(matches!(err, CheckoutError::Timeout(_)));
    assert_eq!(p.counters().timeouts, 1);
    assert_eq!(m.0.next.load(Ordering::SeqCst), 30);
    assert_eq!(stats(&p), (30, 0, 0, 10));
}

#[tokio::test(start_paused = true)]
async fn overflow_connections_close_on_return_when_pool_size_idle() {
    let (p, m) = pool(settings(2, 2, 5));
    let held: Vec<_> = futures::future::join_all((0..4).map(|_| p.checkout("t"))).await;
    // (after releasing n connections) -> (checked_out, checked_in, overflow closes so far)
    let expected = [(3, 1, 0), (2, 2, 0), (1, 2, 1), (0, 2, 2)];
    for (c, want) in held.into_iter().zip(expected) {
        c.unwrap().release(true);
        let s = p.stats();
        let overflow_closed = p.counters().closed_for(CloseReason::Overflow) as usize;
        assert_eq!((s.checked_out, s.checked_in, overflow_closed), want);
    }
    assert_eq!(m.0.closed.lock().unwrap().len(), 2);
}

#[tokio::test(start_paused = true)]
async fn waiters_are_served_in_fifo_order() {
    let (p, _m) = pool(settings(1, 0, 60));
    let first = p.checkout("t").await.unwrap();
    let order = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for i in 0..3 {
        let (p, order) = (p.clone(), order.clone());
        tasks.push(tokio::spawn(async move {
            let c = p.checkout("t").await.unwrap();
            order.lock().unwrap().push(i);
            tokio::time::sleep(Duration::from_secs(1)).await;
            c.release(true);
        }));
        // Make the queue order deterministic.
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(p.stats().waiting, 3);
    first.release(true);
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(*order.lock().unwrap(), vec![0, 1, 2]);
    assert_eq!(stats(&p), (0, 1, 0, 0));
}

#[tokio::test(start_paused = true)]
async fn a_returned_connection_goes_to_a_waiter_before_timeout() {
    let (p, _m) = pool(settings(1, 0, 10));
    let c = p.checkout("t").await.unwrap();
    let p2 = p.clone();
    let waiter = tokio::spawn(async move { p2.checkout("t").await.map(|c| c.release(true)) });
    tokio::time::sleep(Duration::from_secs(9)).await;
    c.release(true);
    assert!(waiter.await.unwrap().is_ok());
    assert_eq!(p.counters().opened, 1);
}

#[tokio::test(start_paused = true)]
async fn recycle_after_one_hour_and_idle_connection_replaced() {
    let (p, m) = pool(settings(5, 0, 30));
    let c = p.checkout("t").await.unwrap();
    c.release(true);
    // Just under an hour: reused.
    tokio::time::advance(Duration::from_secs(3599)).await;
    let mut c = p.checkout("t").await.unwrap();
    assert_eq!(*c.conn(), 0);
    c.release(true);
    // Over an hour since it was opened: closed for recycle and replaced.
    tokio::time::advance(Duration::from_secs(2)).await;
    let mut c = p.checkout("t").await.unwrap();
    assert_eq!(*c.conn(), 1);
    assert_eq!(*m.0.closed.lock().unwrap(), vec![(0, CloseReason::Recycle)]);
    // A connection held past the hour is closed when it comes back.
    tokio::time::advance(Duration::from_secs(3600)).await;
    c.release(true);
    assert_eq!(
        m.0.closed.lock().unwrap().last(),
        Some(&(1, CloseReason::Recycle))
    );
    assert_eq!(stats(&p), (0, 0, 0, 0));
    assert_eq!(p.counters().closed_for(CloseReason::Recycle), 2);
}

/// The moment a connection falls due is worked out once per pool_recycle: the answers are
/// those of its age against pool_recycle, including after pool_recycle changes (a reload) and
/// at the edges (exactly due, zero, beyond the clock's range).
#[test]
fn recycle_due_is_age_against_pool_recycle() {
    let opened = Instant::now();
    let hour = Duration::from_secs(3600);
    let second = Duration::from_secs(1);
    let mut e = Entry::new(0u8, opened);
    // (age, pool_recycle, due): in order, on the same entry.
    let table = [
        (Duration::ZERO, hour, false),
        (hour - second, hour, false),
        (hour, hour, true),
        (hour * 2, hour, true),
        // pool_recycle raised by a reload: no longer due.
        (hour + second, hour * 2, false),
        (hour * 2, hour * 2, true),
        // Lowered again.
        (hour - second, hour / 2, true),
        (Duration::ZERO, Duration::ZERO, true),
        (Duration::ZERO, Duration::MAX, false),
        (hour * 24 * 365, Duration::MAX, false),
        (second, hour, false),
    ];
    for (age, pool_recycle, want) in table {
        assert_eq!(
            e.recycle_due(opened + age, pool_recycle),
            want,
            "age {age:?}, pool_recycle {pool_recycle:?}"
        );
        assert_eq!(want, age >= pool_recycle, "the table itself");
    }
}

#[tokio::test(start_paused = true)]
async fn pre_ping_replaces_a_dead_idle_connection() {
    let (p, m) = pool(settings(2, 0, 30));
    p.checkout("t").await.unwrap().release(true);
    m.0.dead.lock().unwrap().insert(0);
    tokio::time::advance(PRE_PING_FRESH).await;
    let mut c = p.checkout("t").await.unwrap();
    assert_eq!(*c.conn(), 1);
    assert_eq!(p.counters().closed_for(CloseReason::PrePing), 1);
    c.release(true);
    assert_eq!(stats(&p), (0, 1, 0, 0));
}

#[test]
fn pre_ping_round_trip_decision() {
    let fresh = PRE_PING_FRESH;
    let just = fresh * 2;
    let trust = PRE_PING_TRUST;
    let zero = Duration::ZERO;
    // (pre_ping, idle for, bytes unread in the buffer, socket quiet, round trip)
    let table = [
        (false, just, true, false, false),
        (false, trust * 10, false, false, false),
        // Answered under a millisecond ago: the socket is not looked at, the buffer is.
        (true, zero, false, false, false),
        (true, fresh - Duration::from_micros(1), false, false, false),
        (true, zero, true, true, true),
        (true, fresh, false, true, false),
        (true, fresh, false, false, true),
        (true, just, false, true, false),
        (true, just, false, false, true),
        (true, just, true, true, true),
        (true, trust - just, false, true, false),
        (true, trust, false, true, true),
        (true, trust * 10, false, true, true),
    ];
    for (pre_ping, idle, unread, quiet, want) in table {
        assert_eq!(
            needs_round_trip(pre_ping, idle, unread, || quiet),
            want,
            "pre_ping {pre_ping}, idle {idle:?}, unread {unread}, quiet {quiet}"
        );
    }
    // The socket is not looked at when the answer does not depend on it.
    let look = || -> bool { panic!("looked at the socket") };
    assert!(needs_round_trip(true, trust, false, look));
    assert!(!needs_round_trip(false, just, true, look));
    assert!(!needs_round_trip(true, zero, false, look));
    assert!(needs_round_trip(true, just, true, look));
}

/// A connection's idle time counts from when its server last answered (`release_at`, given
/// the relay's ReadyForQuery time), not from when it was given back; a checkout hands out the
/// time it read the clock.
#[tokio::test(start_paused = true)]
async fn idle_time_counts_from_the_last_answer() {
    let (p, m) = pool(settings(2, 0, 30));
    m.0.quiet.store(true, Ordering::SeqCst);
    let c = p.checkout("t").await.unwrap();
    let answered = Instant::now();
    assert_eq!(c.handed_out_at(), answered);
    tokio::time::advance(PRE_PING_TRUST).await;
    c.release_at(true, answered);
    // Given back just now, but its server last answered a trust window ago: a round trip.
    p.checkout("t").await.unwrap().release(true);
    assert_eq!(m.0.pings.load(Ordering::SeqCst), 1);
    // Given back just now by `release`: idle from now, the socket not even looked at.
    let c = p.checkout("t").await.unwrap();
    assert_eq!(c.handed_out_at(), Instant::now());
    c.release(true);
    assert_eq!(m.0.pings.load(Ordering::SeqCst), 1);
    assert_eq!(m.0.looked.load(Ordering::SeqCst), 0);
    assert_eq!(stats(&p), (0, 1, 0, 0));
}

#[tokio::test(start_paused = true)]
async fn pre_ping_trusts_a_quiet_recently_used_connection() {
    let (p, m) = pool(settings(2, 0, 30));
    m.0.quiet.store(true, Ordering::SeqCst);
    p.checkout("t").await.unwrap().release(true);
    // Back a moment ago and quiet: no round trip.
    tokio::time::advance(PRE_PING_FRESH).await;
    p.checkout("t").await.unwrap().release(true);
    assert_eq!(m.0.pings.load(Ordering::SeqCst), 0);
    assert_eq!(
        m.0.looked.load(Ordering::SeqCst),
        1,
        "the socket was looked at"
    );
    // Back under a millisecond ago: not even the socket is looked at.
    p.checkout("t").await.unwrap().release(true);
    assert_eq!(m.0.looked.load(Ordering::SeqCst), 1);
    // Under a millisecond, but server bytes sit in its buffer: a round trip.
    m.0.unread.lock().unwrap().insert(0);
    p.checkout("t").await.unwrap().release(true);
    assert_eq!(m.0.pings.load(Ordering::SeqCst), 1);
    m.0.unread.lock().unwrap().clear();
    // Idle for longer than the trust window: a round trip.
    tokio::time::advance(PRE_PING_TRUST).await;
    p.checkout("t").await.unwrap().release(true);
    assert_eq!(m.0.pings.load(Ordering::SeqCst), 2);
    // Just back but not quiet (its backend died): a round trip finds it dead.
    m.0.dead.lock().unwrap().insert(0);
    tokio::time::advance(PRE_PING_FRESH).await;
    let mut c = p.checkout("t").await.unwrap();
    assert_eq!(*c.conn(), 1);
    assert_eq!(m.0.pings.load(Ordering::SeqCst), 3);
    assert_eq!(p.counters().closed_for(CloseReason::PrePing), 1);
    c.release(true);
}

#[tokio::test(start_paused = true)]
async fn grow_serves_waiters_at_once_and_shrink_drops_nobody() {
    let (p, m) = pool(settings(2, 0, 30));
    let a = p.checkout("t").await.unwrap();
    let b = p.checkout("t").await.unwrap();
    let p2 = p.clone();
    let waiter = tokio::spawn(async move { p2.checkout("t").await.map(|c| c.release(true)) });
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(p.stats().waiting, 1);
    p.resize(settings(3, 0, 30));
    waiter.await.unwrap().unwrap();
    assert_eq!(stats(&p), (2, 1, 0, 0));
    // Shrink to 1: the idle one closes now, the checked-out ones keep working and one of
    // them closes when it comes back.
    p.resize(settings(1, 0, 30));
    assert_eq!(stats(&p), (2, 0, 0, 1));
    a.release(true);
    b.release(true);
    assert_eq!(stats(&p), (0, 1, 0, 0));
    assert_eq!(p.counters().closed_for(CloseReason::Resize), 2);
    assert_eq!(m.0.closed.lock().unwrap().len(), 2);
}

#[tokio::test(start_paused = true)]
async fn failed_connect_and_abandoned_waits_free_their_slots() {
    let (p, m) = pool(settings(1, 0, 5));
    m.0.fail.store(true, Ordering::SeqCst);
    assert!(matches!(
        p.checkout("t").await,
        Err(CheckoutError::Connect(_))
    ));
    assert_eq!(stats(&p), (0, 0, 0, 0));
    assert_eq!(p.counters().connect_errors, 1);
    m.0.fail.store(false, Ordering::SeqCst);
    let c = p.checkout("t").await.unwrap();
    // A waiter that gives up early (client gone) leaves the queue.
    let p2 = p.clone();
    let w = tokio::spawn(async move { p2.checkout("t").await.map(|c| c.release(true)) });
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(p.stats().waiting, 1);
    w.abort();
    let _ = w.await;
    assert_eq!(p.stats().waiting, 0);
    // Dropping a checkout without release closes the connection and frees the slot.
    drop(c);
    assert_eq!(stats(&p), (0, 0, 0, 0));
    assert_eq!(p.counters().closed_for(CloseReason::Error), 1);
    p.checkout("t").await.unwrap().release(true);
    assert_eq!(stats(&p), (0, 1, 0, 0));
}

#[tokio::test(start_paused = true)]
async fn shut_down_closes_idle_and_refuses_new() {
    let (p, _m) = pool(settings(2, 0, 5));
    let c = p.checkout("t").await.unwrap();
    p.checkout("t").await.unwrap().release(true);
    p.shut_down();
    assert!(matches!(p.checkout("t").await, Err(CheckoutError::Closed)));
    c.release(true);
    assert_eq!(stats(&p), (0, 0, 0, 0));
    assert_eq!(p.counters().closed_for(CloseReason::Shutdown), 2);
}

#[test]
fn timeout_message_formats_two_decimals() {
    let table = [
        (
            (20, 10, 30_000),
            "size 20 overflow 10 reached, connection timed out, timeout 30.00",
        ),
        (
            (5, 0, 1500),
            "size 5 overflow 0 reached, connection timed out, timeout 1.50",
        ),
    ];
    for ((size, overflow, ms), tail) in table {
        let s = PoolSettings {
            pool_timeout: Duration::from_millis(ms),
            ..settings(size, overflow, 0)
        };
        assert_eq!(s.timeout_message(), format!("QueuePool limit of {tail}"));
    }
}

/// Idle connections are reused last-returned first (LIFO), or idle-longest first with
/// round_robin; a shrink closes the ones idle longest.
#[test]
fn idle_connections_are_reused_lifo_and_shrunk_oldest_first() {
    let now = Instant::now();
    let mut s: State<u64> = State::new(settings(3, 0, 30));
    for _ in 0..3 {
        assert!(matches!(s.begin_checkout(now), Step::Open));
    }
    // Returned in the order 0, 1, 2.
    for conn in 0..3 {
        assert!(s.check_in(Entry::new(conn, now), true, now).is_empty());
    }
    let took = |s: &mut State<u64>| match s.begin_checkout(now) {
        Step::Idle(e) => e.conn,
        _ => panic!("an idle connection"),
    };
    assert_eq!(took(&mut s), 2);
    assert_eq!(took(&mut s), 1);
    assert!(s.check_in(Entry::new(1, now), true, now).is_empty());
    assert!(s.check_in(Entry::new(2, now), true, now).is_empty());
    // Idle: 0 (longest), 1, 2. Shrinking to one closes 0 and 1.
    let closed: Vec<u64> = s
        .resize(settings(1, 0, 30))
        .into_iter()
        .map(|(c, _)| c)
        .collect();
    assert_eq!(closed, vec![0, 1]);
    assert_eq!(took(&mut s), 2);
    // server_round_robin: the one idle longest instead.
    let mut s: State<u64> = State::new(PoolSettings {
        round_robin: true,
        ..settings(3, 0, 30)
    });
    for _ in 0..3 {
        assert!(matches!(s.begin_checkout(now), Step::Open));
    }
    for conn in 0..3 {
        assert!(s.check_in(Entry::new(conn, now), true, now).is_empty());
    }
    assert_eq!(took(&mut s), 0);
    assert_eq!(took(&mut s), 1);
}

/// Table: idle connections (returned in this order; even ones registered with loop 0, odd
/// ones with loop 1), the order setting and the checking-out loop → the connection taken:
/// the one returned last among the loop's own, else the one returned last; with
/// round_robin, the one idle longest wherever it is (the setting's promise to spread the
/// load over the server connections).
#[test]
fn a_loop_takes_its_own_idle_connection_first() {
    /// (idle, in return order; round_robin; the loop checking out; the connection taken)
    type Case = (&'static [u64], bool, u64, u64);
    let cases: [Case; 6] = [
        (&[0, 1, 2, 3], false, 0, 2),
        (&[0, 1, 2, 3], false, 1, 3),
        (&[0, 1, 2, 3], true, 0, 0),
        (&[0, 1, 2, 3], true, 1, 0),
        (&[0, 2, 4], false, 1, 4),
        (&[1, 2, 4], false, 0, 4),
    ];
    let now = Instant::now();
    for (i, (idle, round_robin, home, want)) in cases.into_iter().enumerate() {
        let mut s: State<u64> = State::new(PoolSettings {
            round_robin,
            ..settings(8, 0, 30)
        });
        for _ in idle {
            assert!(matches!(s.begin_checkout(now), Step::Open));
        }
        for conn in idle {
            assert!(s.check_in(Entry::new(*conn, now), true, now).is_empty());
        }
        let took = match s.begin_checkout_preferring(now, |c| c % 2 == home) {
            Step::Idle(e) => e.conn,
            _ => panic!("case {i}: an idle connection"),
        };
        assert_eq!(took, want, "case {i}");
        assert_eq!(s.stats().checked_in, idle.len() - 1, "case {i}: one taken");
    }
    // No idle connection: the same open and queue as for anyone.
    let mut s: State<u64> = State::new(settings(1, 0, 30));
    assert!(matches!(
        s.begin_checkout_preferring(now, |_| true),
        Step::Open
    ));
    assert!(matches!(
        s.begin_checkout_preferring(now, |_| true),
        Step::Wait { .. }
    ));
}

/// Table: waiters' pool_timeouts (seconds, in arrival order) and the moment the queue's timer
/// looks → the waiters timed out (by arrival) and when to look next.
#[test]
fn expire_times_out_due_waiters_and_answers_the_next_deadline() {
    type Case<'a> = (&'a [u64], u64, &'a [usize], Option<u64>);
    let cases: [Case<'_>; 5] = [
        (&[], 10, &[], None),
        (&[30, 30, 30], 29, &[], Some(30)),
        (&[30, 30, 30], 30, &[0, 1, 2], None),
        // A shorter pool_timeout after a resize: the later waiter is due first.
        (&[60, 5, 60], 5, &[1], Some(60)),
        (&[60, 5, 20], 10, &[1], Some(20)),
    ];
    for (i, (timeouts, look, want_out, want_next)) in cases.into_iter().enumerate() {
        let t0 = Instant::now();
        let mut s: State<u64> = State::new(settings(0, 0, 1));
        let mut tickets = Vec::new();
        for t in timeouts {
            s.resize(settings(0, 0, *t));
            match s.begin_checkout(t0) {
                Step::Wait { ticket, .. } => tickets.push(ticket),
                other => panic!("case {i}: {other:?}"),
            }
        }
        let next = s.expire(t0 + Duration::from_secs(look));
        assert_eq!(
            next,
            want_next.map(|n| t0 + Duration::from_secs(n)),
            "case {i}"
        );
        let out: Vec<usize> = (0..tickets.len())
            .filter(|n| {
                matches!(
                    s.poll_answer(tickets[*n], std::task::Waker::noop()),
                    Some(Err(Refused::TimedOut))
                )
            })
            .collect();
        assert_eq!(out, want_out, "case {i}");
        assert_eq!(
            s.stats().waiting,
            timeouts.len() - want_out.len(),
            "case {i}"
        );
    }
}

/// Only a waiter that moves the queue's earliest deadline wakes the timer: under load the
/// next waiter's deadline is later than the first one's and costs no timer work.
#[test]
fn only_an_earlier_deadline_wakes_the_queue_timer() {
    let t0 = Instant::now();
    let mut s: State<u64> = State::new(settings(0, 0, 30));
    let new_deadline =
        |s: &mut State<u64>, after: u64| match s.begin_checkout(t0 + Duration::from_secs(after)) {
            Step::Wait { new_deadline, .. } => new_deadline,
            other => panic!("{other:?}"),
        };
    assert!(new_deadline(&mut s, 0), "the first waiter sets the timer");
    assert!(!new_deadline(&mut s, 1), "a later deadline does not");
    s.resize(settings(0, 0, 5));
    assert!(
        new_deadline(&mut s, 2),
        "an earlier deadline (a shorter timeout) does"
    );
}

/// A waiter that arrives with a shorter pool_timeout (after a resize) than the one ahead of
/// it times out at its own deadline, not at the earlier waiter's; and the queue's timer ends
/// with the pool.
#[tokio::test(start_paused = true)]
async fn a_shorter_timeout_after_a_resize_is_kept_and_the_timer_ends_with_the_pool() {
    let (p, _m) = pool(settings(1, 0, 60));
    let held = p.checkout("t").await.unwrap();
    let p2 = p.clone();
    let long = tokio::spawn(async move { p2.checkout("t").await.err() });
    tokio::time::sleep(Duration::from_secs(1)).await;
    p.resize(settings(1, 0, 5));
    let start = Instant::now();
    let err = p.checkout("t").await.err().unwrap();
    assert_eq!(start.elapsed(), Duration::from_secs(5));
    assert!(matches!(err, CheckoutError::Timeout(_)), "{err}");
    assert_eq!(p.stats().waiting, 1, "the first waiter still waits");
    let err = long.await.unwrap().unwrap();
    assert_eq!(start.elapsed(), Duration::from_secs(59));
    assert!(matches!(err, CheckoutError::Timeout(_)), "{err}");
    assert_eq!(p.counters().timeouts, 2);
    drop(held);
    let tasks = tokio::runtime::Handle::current().metrics();
    assert_eq!(tasks.num_alive_tasks(), 1, "the queue's timer runs");
    drop(p);
    tokio::task::yield_now().await;
    tokio::task::yield_now().await;
    assert_eq!(tasks.num_alive_tasks(), 0, "the timer ended with the pool");
}

/// The queue's places: an answer is found by its own ticket only (a place reused by a later
/// waiter does not answer an old ticket), a waiter that leaves before its answer leaves the
/// line, and one that leaves after a grant hands the grant back.
#[test]
fn waiters_find_their_own_answers_and_leaving_returns_grants() {
    let t0 = Instant::now();
    let later = t0 + Duration::from_secs(30);
    let noop = std::task::Waker::noop();
    let mut q: queue::WaitQueue<u64> = queue::WaitQueue::default();
    let a = q.push(later);
    let b = q.push(later);
    assert_eq!(q.len(), 2);
    assert!(q.poll_answer(a, noop).is_none(), "nothing yet");
    // b leaves before any answer: out of line, so a grant goes to a.
    assert!(q.leave(b).is_none());
    assert_eq!(q.len(), 1);
    assert!(q.serve_front(Grant::Conn(Entry::new(7, t0))).is_none());
    assert!(q.is_empty());
    // b's place is reused by c; b's old ticket finds nothing there (refused, not left to
    // wait for ever), and leaving with it does not touch c.
    let c = q.push(later);
    assert!(matches!(q.poll_answer(b, noop), Some(Err(Refused::Closed))));
    assert!(q.leave(b).is_none());
    assert_eq!(q.len(), 1, "c still waits");
    assert!(matches!(
        q.poll_answer(a, noop),
        Some(Ok(Grant::Conn(Entry { conn: 7, .. })))
    ));
    assert!(
        matches!(q.poll_answer(a, noop), Some(Err(Refused::Closed))),
        "an answer is taken once"
    );
    // c is granted a slot, then leaves: the grant comes back to be released.
    assert!(q.serve_front(Grant::Slot).is_none());
    assert!(matches!(q.leave(c), Some(Grant::Slot)));
    // Nobody waiting: a grant is handed back.
    assert!(matches!(
        q.serve_front(Grant::Conn(Entry::new(8, t0))),
        Some(Grant::Conn(Entry { conn: 8, .. }))
    ));
    // Refusal reaches everyone still in line.
    let d = q.push(later);
    q.refuse_all(Refused::Closed);
    assert!(matches!(q.poll_answer(d, noop), Some(Err(Refused::Closed))));
}

/// An answer wakes the waker its waiter left.
#[test]
fn an_answer_wakes_the_waiter() {
    use std::task::Wake;
    struct Flag(AtomicBool);
    impl Wake for Flag {
        fn wake(self: Arc<Self>) {
            self.0.store(true, Ordering::SeqCst);
        }
    }
    let flag = Arc::new(Flag(AtomicBool::new(false)));
    let waker = std::task::Waker::from(flag.clone());
    let mut q: queue::WaitQueue<u64> = queue::WaitQueue::default();
    let a = q.push(Instant::now());
    assert!(q.poll_answer(a, &waker).is_none());
    assert!(!flag.0.load(Ordering::SeqCst));
    q.serve_front(Grant::Slot);
    assert!(flag.0.load(Ordering::SeqCst), "woken");
    assert!(matches!(q.poll_answer(a, &waker), Some(Ok(Grant::Slot))));
}

/// Table: what `ready` (the event loop's checkout without I/O) hands out at once and what it
/// leaves to `finish`. (case, idle for, age, pre-ping, quiet, unread) → ready now; then
/// `finish` completes every case left to it with a connection (recycled or pinged), and a
/// queue place or an empty pool is never ready.
#[tokio::test(start_paused = true)]
async fn ready_hands_out_only_connections_that_need_no_io() {
    type Case = (&'static str, u64, u64, bool, bool, bool, bool);
    let cases: [Case; 7] = [
        ("used a moment ago", 0, 10, true, false, false, true),
        ("quiet after 100 ms", 100, 10, true, true, false, true),
        ("not quiet: a ping", 100, 10, true, false, false, false),
        ("idle 2 s: a ping", 2_000, 10, true, true, false, false),
        ("bytes left unread: a ping", 0, 10, true, true, true, false),
        ("no pre-ping, 2 s", 2_000, 10, false, false, false, true),
        // Back before pool_recycle (so not closed at its return), older than it now.
        ("past recycle", 200_000, 3_700, false, true, false, false),
    ];
    for (what, idle_ms, age_s, pre_ping, quiet, unread, want) in cases {
        let mut s = settings(1, 0, 30);
        s.pre_ping = pre_ping;
        let (p, m) = pool(s);
        m.0.quiet.store(quiet, Ordering::SeqCst);
        // One connection, opened `age_s` ago and back `idle_ms` ago.
        let c = p.checkout("").await.unwrap();
        tokio::time::advance(Duration::from_millis(age_s * 1000 - idle_ms)).await;
        c.release(true);
        tokio::time::advance(Duration::from_millis(idle_ms)).await;
        if unread {
            m.0.unread.lock().unwrap().insert(0);
        }
        let pings = m.0.pings.load(Ordering::SeqCst);
        let looked = m.0.looked.load(Ordering::SeqCst);
        match p.ready(p.begin()) {
            Ok(c) => {
                assert!(want, "{what}: handed out without a check");
                assert_eq!(m.0.pings.load(Ordering::SeqCst), pings, "{what}: no ping");
                c.release(true);
            }
            Err(begun) => {
                assert!(!want, "{what}: left to finish");
                let c = p.finish(begun, "").await.unwrap();
                c.release(true);
            }
        }
        assert!(
            m.0.looked.load(Ordering::SeqCst) - looked <= 1,
            "{what}: finish looked at the socket again"
        );
        assert_eq!(stats(&p).0, 0, "{what}: nothing left checked out");
    }
    // A place in the queue is never ready; finishing it waits for the holder's release.
    let (p, _m) = pool(settings(1, 0, 30));
    let held = p.checkout("").await.unwrap();
    let begun = match p.ready(p.begin()) {
        Ok(_) => panic!("a full pool handed out a connection"),
        Err(b) => b,
    };
    assert_eq!(stats(&p).2, 1, "waiting in the queue");
    held.release(true);
    let c = p.finish(begun, "").await.unwrap();
    c.release(true);
    // Dropping a begun wait leaves the queue.
    let held = p.checkout("").await.unwrap();
    drop(p.ready(p.begin()));
    assert_eq!(stats(&p).2, 0, "the dropped wait left");
    held.release(true);
}
