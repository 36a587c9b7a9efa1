//! Relaying one client's messages to its server connection and back, while reading
//! transaction boundaries from ReadyForQuery ([`Boundaries`]).

use std::future::{Future, poll_fn};
use std::pin::pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::BytesMut;
use tokio::time::{Instant, Sleep};

use super::boundaries::Boundaries;
pub use super::client::ClientIo;
use super::phase::{Phase, PhaseWatch};
use super::wakes::SideWakes;
use crate::prepared::{ServerAction, Tracking};
use crate::protocol::frame::{Frame, FrameError};
use crate::protocol::io::{ReadError, write_all};
use crate::server::{ServerConn, ServerError};

/// Write what is gathered for the server once this much is buffered.
const FLUSH_BYTES: usize = 64 * 1024;

/// Output buffers kept between transactions up to this size, so a transaction allocates none.
pub(super) const KEEP_BUFFER_BYTES: usize = 16 * 1024;

/// How a relay ended.
#[derive(Debug)]
pub enum Outcome {
    /// Transaction mode: the transaction ended (ReadyForQuery `I`, nothing in flight). The
    /// server connection is reusable; `dirty` if session state may have been touched.
    Released,
    /// The client left. `clean` when the server was idle with nothing in flight.
    ClientGone {
        /// Server idle, outside a transaction, nothing in flight.
        clean: bool,
    },
    /// The server connection broke.
    ServerFailed(ServerError),
    /// The client sat idle inside a transaction for too long.
    IdleInTransaction,
    /// The client broke the protocol.
    Protocol(FrameError),
    /// Shutdown: at a clean point while draining, or forced.
    Shutdown {
        /// As in `ClientGone`.
        clean: bool,
    },
}

/// What a relay's wait ended with.
enum Woke {
    /// Bytes from the server were read (or it failed).
    Server(Result<(), ServerError>),
    /// A message from the client (or its end).
    Client(Result<Option<Frame>, ReadError>),
    /// The idle-in-transaction timer.
    IdleTimer,
    /// The proxy's phase changed.
    Phase,
}

/// How a session relays.
#[derive(Clone, Copy, Debug)]
pub struct Relaying {
    /// Session mode: relay until the client leaves, not until the transaction ends.
    pub session_mode: bool,
    /// A client idle inside a transaction longer than this is cut off.
    pub idle_in_transaction: Duration,
}

/// Relay until the transaction ends (transaction mode) or the client leaves (session mode).
/// `first`: a client message already read, with when the caller last read the clock (the
/// query's timing starts there).
pub async fn relay(
    client: &mut ClientIo,
    server: &mut ServerConn,
    first: Option<(Frame, Instant)>,
    b: &mut Boundaries,
    how: Relaying,
    phase: &PhaseWatch,
    mut prepared: Option<&mut Tracking>,
) -> Outcome {
    // The client's own fields, borrowed apart, so the output buffers it keeps between
    // transactions can be written while its socket is read.
    let ClientIo {
        rd,
        wr,
        reader,
        spare: (to_server, to_client),
        wakes,
    } = client;
    let wakes = wakes.get_or_insert_with(SideWakes::new);
    wakes.reset();
    for buf in [&mut *to_server, &mut *to_client] {
        buf.clear();
        if buf.capacity() > KEEP_BUFFER_BYTES {
            *buf = BytesMut::new();
        }
    }
    let Relaying {
        session_mode,
        idle_in_transaction,
    } = how;
    if let Some((f, at)) = first {
        b.client_sent_at(&f, Some(at));
        to_server_frame(f, prepared.as_deref_mut(), server, to_server);
        if let Err(e) = server.write(to_server).await {
            return Outcome::ServerFailed(e);
        }
        to_server.clear();
    }
    // One idle-in-transaction timer per relay, made when the client's turn inside a
    // transaction first comes and moved on lazily from the last message: a fresh timer per
    // message would register and cancel a timer-wheel entry for every message. The clock is
    // read only when the client's turn inside a transaction begins: the timer is off while a
    // query runs or the connection is outside a transaction (a relay that is never idle in a
    // transaction, as most are, makes no timer).
    let mut last_activity: Option<Instant> = None;
    let mut idle_timer = pin!(None::<Sleep>);
    // The phase wakes the relay through its own waker, given once here and again after each
    // change the relay sees (a wake-up takes it), not at every turn: the loop reads the
    // phase at its top, and the wait ends when the phase's waker woke the task.
    wakes.phase.take();
    let mut current = phase.get_and_wake(wakes.phase.waker());
    loop {
        if phase.get() != current {
            current = phase.get_and_wake(wakes.phase.waker());
        }
        if current == Phase::Forced {
            return Outcome::Shutdown {
                clean: b.is_clean(),
            };
        }
        if b.is_clean() {
            if !session_mode {
                return Outcome::Released;
            }
            if current == Phase::Draining {
                return Outcome::Shutdown { clean: true };
            }
        }
        let idle_tx = b.idle_in_transaction();
        if idle_tx && idle_timer.is_none() {
            let since = *last_activity.get_or_insert_with(Instant::now);
            idle_timer.set(Some(tokio::time::sleep_until(since + idle_in_transaction)));
            wakes.timer.set();
        }
        // The server first, then the client, the timer, the phase (as a biased select), each
        // socket and the timer polled only when its waker woke the task, it was ready last
        // time or (the timer) it was made or moved (`wakes`): one that already waits is not
        // polled again.
        let woke = poll_fn(|cx| {
            wakes.register(cx.waker());
            if wakes.server.take() {
                let mut side = Context::from_waker(wakes.server.waker());
                if let Poll::Ready(r) = server.poll_fill(&mut side) {
                    wakes.server.set();
                    return Poll::Ready(Woke::Server(r));
                }
            }
            if wakes.client.take() {
                let mut side = Context::from_waker(wakes.client.waker());
                if let Poll::Ready(r) = reader.poll_frame(&mut side, rd) {
                    wakes.client.set();
                    return Poll::Ready(Woke::Client(r));
                }
            }
            if idle_tx
                && let Some(timer) = idle_timer.as_mut().as_pin_mut()
                && wakes.timer.take()
                && timer
                    .poll(&mut Context::from_waker(wakes.timer.waker()))
                    .is_ready()
            {
                return Poll::Ready(Woke::IdleTimer);
            }
            if wakes.phase.take() {
                return Poll::Ready(Woke::Phase);
            }
            Poll::Pending
        })
        .await;
        match woke {
            Woke::Server(r) => {
                if let Err(e) = r {
                    return Outcome::ServerFailed(e);
                }
                let was_idle_tx = b.idle_in_transaction();
                // The server's messages go on from its read buffer; only a reply the pooler
                // drops or replaces makes a copy.
                let (tail, failure) = server.relay_buffered(to_client, |tag, body, statements| {
                    b.server_sent(tag, body);
                    match prepared.as_deref_mut() {
                        Some(t) => t.rewriter.server_message(tag, &mut t.client, statements),
                        None => ServerAction::Forward,
                    }
                });
                let rest = &server.buffered()[tail.clone()];
                let sent = if to_client.is_empty() {
                    write_all(wr, rest).await
                } else {
                    to_client.extend_from_slice(rest);
                    write_all(wr, to_client).await
                };
                server.consume(tail.end);
                to_client.clear();
                if let Some(e) = failure {
                    return Outcome::ServerFailed(e);
                }
                if sent.is_err() {
                    return Outcome::ClientGone { clean: false };
                }
                // The client's turn inside a transaction began with a ReadyForQuery in this
                // read (its time, if the query timer read the clock for it); a message the
                // server sends while the client's turn goes on does not move it.
                if b.idle_in_transaction() && !was_idle_tx {
                    last_activity = Some(b.answered.unwrap_or_else(Instant::now));
                }
            }
            Woke::Client(r) => {
                let f = match r {
                    Ok(Some(f)) => f,
                    Ok(None) | Err(ReadError::Io(_)) => {
                        return Outcome::ClientGone {
                            clean: b.is_clean(),
                        };
                    }
                    Err(ReadError::Frame(e)) => return Outcome::Protocol(e),
                };
                let mut next = Some(f);
                while let Some(f) = next.take() {
                    match f.tag {
                        b'X' => {
                            if !to_server.is_empty() && server.write(to_server).await.is_err() {
                                return Outcome::ClientGone { clean: false };
                            }
                            return Outcome::ClientGone {
                                clean: b.is_clean(),
                            };
                        }
                        b'p' => return Outcome::Protocol(FrameError::UnknownType('p')),
                        _ => {}
                    }
                    b.client_sent(&f);
                    to_server_frame(f, prepared.as_deref_mut(), server, to_server);
                    if to_server.len() < FLUSH_BYTES {
                        match reader.try_frame() {
                            Ok(n) => next = n,
                            Err(e) => return Outcome::Protocol(e),
                        }
                    }
                }
                if let Err(e) = server.write(to_server).await {
                    return Outcome::ServerFailed(e);
                }
                to_server.clear();
                if b.idle_in_transaction() {
                    last_activity = Some(Instant::now());
                }
            }
            Woke::IdleTimer => {
                let due = last_activity.unwrap_or_else(Instant::now) + idle_in_transaction;
                if Instant::now() >= due {
                    return Outcome::IdleInTransaction;
                }
                if let Some(timer) = idle_timer.as_mut().as_pin_mut() {
                    timer.reset(due);
                    wakes.timer.set();
                }
            }
            // Looked at again at the top of the loop.
            Woke::Phase => {}
        }
    }
}

/// A client message on its way to the server, rewritten when statements are tracked.
pub(super) fn to_server_frame(
    f: Frame,
    prepared: Option<&mut Tracking>,
    server: &mut ServerConn,
    out: &mut BytesMut,
) {
    match prepared {
        Some(t) => t
            .rewriter
            .client_message(f, &mut t.client, &mut server.statements, out),
        None => f.encode(out),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A relay over real loopback sockets for a client inside a transaction with nothing in
    /// flight (the client's turn), idle-in-transaction timeout 1 h; answers the application's
    /// and PostgreSQL's ends, the relay's task (its outcome and when it ended) and its start.
    async fn relay_in_transaction() -> (
        tokio::net::TcpStream,
        tokio::net::TcpStream,
        tokio::task::JoinHandle<(Outcome, Duration)>,
        tokio::time::Instant,
    ) {
        use crate::server::{CancelTarget, ServerStream};

        let (app, proxy_client) = pair().await;
        let (proxy_server, postgres) = pair().await;
        let (rd, wr) = proxy_client.into_split();
        let mut client = ClientIo::new(rd, wr, BytesMut::new(), 1 << 20);
        let mut server = ServerConn::for_tests(
            ServerStream::Plain(proxy_server),
            CancelTarget {
                addr: "127.0.0.1:1".parse().unwrap(),
                pid: 1,
                key: 1,
            },
        );
        let start = tokio::time::Instant::now();
        let task = tokio::spawn(async move {
            let control = super::super::phase::PhaseControl::new();
            let phase = control.source().watch();
            // Inside a transaction (ReadyForQuery `T`), nothing in flight.
            let mut b = Boundaries::new();
            b.server_sent(b'Z', b"T");
            let how = Relaying {
                session_mode: false,
                idle_in_transaction: Duration::from_secs(3600),
            };
            let out = relay(&mut client, &mut server, None, &mut b, how, &phase, None).await;
            (out, start.elapsed())
        });
        (app, postgres, task, start)
    }

    /// Two ends of a loopback connection: the connecting one, then the accepted one.
    async fn pair() -> (tokio::net::TcpStream, tokio::net::TcpStream) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let a = tokio::net::TcpStream::connect(l.local_addr().unwrap())
            .await
            .unwrap();
        let (b, _) = l.accept().await.unwrap();
        (a, b)
    }

    /// A loopback pair: the application's end and the proxy's `ClientIo`.
    async fn client_pair() -> (tokio::net::TcpStream, ClientIo) {
        let (app, sock) = pair().await;
        let (rd, wr) = sock.into_split();
        (app, ClientIo::new(rd, wr, BytesMut::new(), 1 << 20))
    }

    fn query_bytes(sql: &str) -> BytesMut {
        let mut q = BytesMut::new();
        postgres_protocol::message::frontend::query(sql, &mut q).unwrap();
        q
    }

    /// The wait between transactions skips the socket while the client side's waker is
    /// registered and has not woken; a read that registered the task's waker instead (as
    /// `read` does) makes it look again, and finds what that read left buffered.
    #[tokio::test]
    async fn poll_next_looks_again_after_a_read_elsewhere() {
        use tokio::io::AsyncWriteExt;
        let (mut app, mut client) = client_pair().await;
        let noop = futures::task::noop_waker();
        let mut cx = Context::from_waker(&noop);
        assert!(client.poll_next(&mut cx).is_pending(), "nothing sent yet");
        assert!(
            client.poll_next(&mut cx).is_pending(),
            "not woken: not read"
        );
        // Two messages in one write; `read` waits with the task's waker and takes the first.
        let mut two = query_bytes("SELECT 1");
        two.extend_from_slice(&query_bytes("SELECT 2"));
        let (first, sent) = tokio::join!(client.read(), app.write_all(&two));
        sent.unwrap();
        let first = first.unwrap().unwrap();
        assert_eq!(&first.body[..], b"SELECT 1\0");
        // The second is buffered: the next poll must return it at once.
        match client.poll_next(&mut cx) {
            Poll::Ready(Ok(Some(f))) => assert_eq!(&f.body[..], b"SELECT 2\0"),
            other => panic!("the buffered message was missed: {other:?}"),
        }
    }

    /// The peek of the wait for a server connection registers the task's waker on the
    /// socket; the wait between transactions then looks at the socket again. The peek
    /// takes no byte, and sees the client leave.
    #[tokio::test]
    async fn poll_next_looks_again_after_a_peek() {
        use tokio::io::AsyncWriteExt;
        let (mut app, mut client) = client_pair().await;
        let noop = futures::task::noop_waker();
        let mut cx = Context::from_waker(&noop);
        assert!(client.poll_next(&mut cx).is_pending());
        assert!(client.poll_closed(&mut cx).is_pending(), "nothing sent yet");
        app.write_all(&query_bytes("SELECT 3")).await.unwrap();
        assert!(
            !poll_fn(|cx| client.poll_closed(cx)).await,
            "bytes waiting, not closed"
        );
        match client.poll_next(&mut cx) {
            Poll::Ready(Ok(Some(f))) => assert_eq!(&f.body[..], b"SELECT 3\0"),
            other => panic!("the peeked message was missed: {other:?}"),
        }
        drop(app);
        assert!(
            poll_fn(|cx| client.poll_closed(cx)).await,
            "the client left"
        );
    }

    /// The application sends a simple query; PostgreSQL's end reads it as sent.
    async fn query_reaches_postgres(
        app: &mut tokio::net::TcpStream,
        postgres: &mut tokio::net::TcpStream,
        sql: &str,
    ) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let q = query_bytes(sql);
        app.write_all(&q).await.unwrap();
        let mut got = vec![0u8; q.len()];
        postgres.read_exact(&mut got).await.unwrap();
        assert_eq!(got, q.to_vec());
    }

    /// PostgreSQL's end sends `bytes`; the application reads them as sent.
    async fn server_bytes_reach_app(
        app: &mut tokio::net::TcpStream,
        postgres: &mut tokio::net::TcpStream,
        bytes: &[u8],
    ) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        postgres.write_all(bytes).await.unwrap();
        let mut got = vec![0u8; bytes.len()];
        app.read_exact(&mut got).await.unwrap();
        assert_eq!(got, bytes, "relayed to the client");
    }

    /// ReadyForQuery `T`: the statement ended, the transaction goes on.
    const READY_IN_TRANSACTION: &[u8] = b"Z\0\0\0\x05T";

    /// The relay ends by cutting its client off as idle in a transaction, `want` after it
    /// started (paused time: a relay that would never end fails after a virtual day).
    async fn cut_off_at(task: tokio::task::JoinHandle<(Outcome, Duration)>, want: Duration) {
        let (out, after) = tokio::time::timeout(Duration::from_secs(86_400), task)
            .await
            .expect("the idle-in-transaction timer fired")
            .unwrap();
        assert!(matches!(out, Outcome::IdleInTransaction), "{out:?}");
        assert_eq!(after, want);
    }

    /// The idle-in-transaction timeout at its production value (1 h, the pool_recycle
    /// default), in paused time, over real loopback sockets: a client inside a transaction
    /// that sends nothing is cut off after the hour, not before.
    #[tokio::test(start_paused = true)]
    async fn idle_in_transaction_fires_after_one_hour_of_paused_time() {
        let (_app, _postgres, task, _start) = relay_in_transaction().await;
        tokio::time::sleep(Duration::from_secs(3599)).await;
        assert!(!task.is_finished(), "cut off before the hour");
        cut_off_at(task, Duration::from_secs(3600)).await;
    }

    /// Activity moves the idle-in-transaction deadline on: a statement at 3000 s inside the
    /// transaction puts the cut-off at 3000 s + 1 h, not at 1 h.
    #[tokio::test(start_paused = true)]
    async fn idle_in_transaction_counts_from_the_last_message() {
        let (mut app, mut postgres, task, start) = relay_in_transaction().await;
        tokio::time::sleep(Duration::from_secs(3000)).await;
        query_reaches_postgres(&mut app, &mut postgres, "SELECT 1").await;
        server_bytes_reach_app(&mut app, &mut postgres, READY_IN_TRANSACTION).await;
        let answered = start.elapsed();
        tokio::time::sleep(Duration::from_secs(3599)).await;
        assert!(
            !task.is_finished(),
            "cut off counting from before the statement"
        );
        cut_off_at(task, answered + Duration::from_secs(3600)).await;
    }

    /// The first deadline passes while a statement runs (the timer fires, but the client's
    /// turn has not come): when the answer comes the timer is looked at again and moved to
    /// an hour after the answer, and fires then, not at the answer nor never.
    #[tokio::test(start_paused = true)]
    async fn a_deadline_passed_during_a_statement_moves_to_after_its_answer() {
        let (mut app, mut postgres, task, start) = relay_in_transaction().await;
        tokio::time::sleep(Duration::from_secs(3000)).await;
        query_reaches_postgres(&mut app, &mut postgres, "SELECT pg_sleep(700)").await;
        tokio::time::sleep(Duration::from_secs(700)).await;
        assert!(!task.is_finished(), "cut off while its statement ran");
        server_bytes_reach_app(&mut app, &mut postgres, READY_IN_TRANSACTION).await;
        let answered = start.elapsed();
        cut_off_at(task, answered + Duration::from_secs(3600)).await;
    }

    /// A message the server sends while the client's turn goes on (a NoticeResponse) is
    /// relayed but does not move the idle-in-transaction deadline: the client's messages and
    /// the ReadyForQuery that begins its turn do.
    #[tokio::test(start_paused = true)]
    async fn a_server_notice_does_not_move_the_idle_deadline() {
        let (mut app, mut postgres, task, _start) = relay_in_transaction().await;
        tokio::time::sleep(Duration::from_secs(3000)).await;
        server_bytes_reach_app(&mut app, &mut postgres, b"N\0\0\0\x0dSNOTICE\0\0").await;
        cut_off_at(task, Duration::from_secs(3600)).await;
    }
}
