//! One session in the loop: between transactions, checking out, or relaying. A turn runs
//! the session as far as its sockets allow without waiting, by plain non-blocking reads and
//! writes; what it cannot do in the loop, it hands back to tokio ([`Turn::Leave`]).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use bytes::{Buf, BytesMut};
use mio::Token;
use tokio::time::Instant;

use super::super::boundaries::Boundaries;
use super::super::phase::Phase;
use super::super::pools::ServerManager;
use super::super::relay::{KEEP_BUFFER_BYTES, Outcome, to_server_frame};
use super::super::session::{Resume, Session, between_transactions};
use crate::dataplane::{DataPlane, LoopSocket, Peeked};
use crate::pool::{Checkout, CheckoutError};
use crate::prepared::ServerAction;
use crate::protocol::frame::{Frame, FrameError};
use crate::protocol::sqlstate;
use crate::server::{ConnectError, ServerError};

/// Gather this much for the server before writing it.
const FLUSH_BYTES: usize = 64 * 1024;

type CheckoutFuture = Pin<
    Box<dyn Future<Output = Result<Checkout<ServerManager>, CheckoutError<ConnectError>>> + Send>,
>;

/// How a turn ended.
pub(super) enum Turn {
    /// Waiting for a socket, a timer or a wake-up.
    Wait,
    /// Back to tokio, from here.
    Leave(Box<Resume>),
    /// The session ended (the client left or said Terminate between transactions).
    Close,
}

/// Back to tokio with `r`.
fn leave(r: Resume) -> Turn {
    Turn::Leave(Box::new(r))
}

enum State {
    /// Between transactions.
    Between,
    /// A checkout that waits (queue, connect, pre-ping), polled as a future.
    Checking {
        first: Frame,
        checkout: CheckoutFuture,
        /// Still looking at the client's socket for its end.
        watch: bool,
    },
    /// Relaying a transaction.
    Relaying(Held),
    /// Taken apart (only inside a turn).
    Moved,
}

/// A relay in the allocation the session keeps between transactions (a box moves a pointer
/// each turn, not the relay; reusing it saves an allocation and a free per transaction).
struct Held(Box<Option<Relay>>);

impl Held {
    /// The relay out of its box, and the box, empty, for the next transaction.
    fn take(mut self) -> (Relay, Box<Option<Relay>>) {
        let r = self.0.take().expect("a held relay");
        (r, self.0)
    }
}

impl std::ops::Deref for Held {
    type Target = Relay;
    fn deref(&self) -> &Relay {
        self.0.as_ref().as_ref().expect("a held relay")
    }
}

impl std::ops::DerefMut for Held {
    fn deref_mut(&mut self) -> &mut Relay {
        self.0.as_mut().as_mut().expect("a held relay")
    }
}

struct Relay {
    c: Checkout<ServerManager>,
    server: LoopSocket,
    b: Boundaries,
    /// When the client's turn inside the transaction began or it last sent (the
    /// idle-in-transaction deadline counts from here).
    last_activity: Option<Instant>,
}

/// What the client's socket gave.
enum In {
    Frame(Frame),
    Nothing,
    Eof,
    Bad(FrameError),
}

/// A session in the loop.
pub(super) struct Live {
    s: Box<Session>,
    client: LoopSocket,
    state: State,
    /// Bytes for the client that its socket has not taken yet.
    out_client: BytesMut,
    /// Bytes for the server, gathered or not taken yet.
    to_server: BytesMut,
    /// The server token the loop routes to this session.
    routed_server: Option<Token>,
    /// An idle-in-transaction deadline is in the loop's heap.
    timer_armed: bool,
    /// The armed deadline popped: look at the idle time at the next turn.
    timer_due: bool,
    waker: Waker,
    /// The loop's plane: a server connection registered with another loop moves here.
    plane: DataPlane,
    /// The last transaction's relay box, empty.
    spare: Option<Box<Option<Relay>>>,
}

impl Live {
    /// A session handed over between transactions; `waker` queues it for a turn on the
    /// loop of `plane`.
    pub(super) fn new(s: Box<Session>, waker: Waker, plane: DataPlane) -> Self {
        let client = s
            .client
            .loop_socket()
            .expect("only sessions on the data plane enter the loop")
            .clone();
        // The socket's flag says whether anything arrived while the session was away (or
        // logging in): the loop's events and tokio's reads keep it.
        Self {
            s,
            client,
            state: State::Between,
            out_client: BytesMut::new(),
            to_server: BytesMut::new(),
            routed_server: None,
            timer_armed: false,
            timer_due: false,
            waker,
            plane,
            spare: None,
        }
    }

    pub(super) fn client_token(&self) -> Token {
        self.client.token()
    }

    /// The server token the loop routes here.
    pub(super) fn server_token(&self) -> Option<Token> {
        self.routed_server
    }

    /// The session, for a tokio task.
    pub(super) fn into_session(self) -> Box<Session> {
        self.s
    }

    /// An event on one of the session's sockets: bytes, or the peer's end of stream.
    pub(super) fn mark_readable(&self, token: Token, readable: bool, read_closed: bool) {
        if token == self.client.token() {
            self.client.mark(readable, read_closed);
        } else if let State::Relaying(r) = &self.state {
            r.server.mark(readable, read_closed);
        }
    }

    /// The change in the server socket the loop should route here since the last call:
    /// (the token to route away, the token to route here).
    pub(super) fn take_server_change(&mut self) -> (Option<Token>, Option<Token>) {
        let now = match &self.state {
            State::Relaying(r) => Some(r.server.token()),
            _ => None,
        };
        if now == self.routed_server {
            return (None, None);
        }
        let before = std::mem::replace(&mut self.routed_server, now);
        (before, now)
    }

    /// The deadline to put in the loop's heap, if the client is idle inside a transaction
    /// and none is there.
    pub(super) fn arm_timer(&mut self) -> Option<Instant> {
        if self.timer_armed {
            return None;
        }
        let State::Relaying(r) = &mut self.state else {
            return None;
        };
        if !r.b.idle_in_transaction() {
            return None;
        }
        self.timer_armed = true;
        Some(*r.last_activity.get_or_insert_with(Instant::now) + self.s.idle_in_transaction)
    }

    /// The armed deadline passed.
    pub(super) fn timer_due(&mut self) {
        self.timer_armed = false;
        self.timer_due = true;
    }

    /// Run until the session waits, leaves or ends; `now`: when the loop's poll returned
    /// (what this turn handles arrived by then; one clock read serves every session of it).
    pub(super) fn turn(&mut self, scratch: &mut [u8], phase: Phase, now: Instant) -> Turn {
        loop {
            let step = match std::mem::replace(&mut self.state, State::Moved) {
                State::Between => self.between(scratch, phase, now),
                State::Checking {
                    first,
                    checkout,
                    watch,
                } => self.checking(first, checkout, watch),
                State::Relaying(r) => self.relaying(r, scratch, phase, now),
                State::Moved => unreachable!("a turn puts the state back"),
            };
            match step {
                Some(t) => return t,
                None => continue,
            }
        }
    }

    /// Between transactions: the next transaction's first message, and its checkout.
    fn between(&mut self, scratch: &mut [u8], phase: Phase, now: Instant) -> Option<Turn> {
        self.state = State::Between;
        if !self.out_client.is_empty() {
            match flush(&self.client, &mut self.out_client) {
                Err(_) => return Some(Turn::Close),
                Ok(false) => return Some(Turn::Wait),
                Ok(true) => {}
            }
        }
        if phase >= Phase::Draining {
            return Some(leave(Resume::Shutdown));
        }
        let first = match self.client_frame(scratch) {
            In::Nothing => return Some(Turn::Wait),
            In::Eof => return Some(Turn::Close),
            In::Bad(e) => {
                return Some(leave(Resume::Fatal {
                    code: sqlstate::PROTOCOL_VIOLATION,
                    message: format!("invalid frontend message: {e}"),
                }));
            }
            In::Frame(f) => f,
        };
        if first.tag == b'X' {
            return Some(Turn::Close);
        }
        if let Some((code, message)) = between_transactions(&first) {
            return Some(leave(Resume::Fatal { code, message }));
        }
        let pool = &self.s.login.db.pool;
        match pool.ready(pool.begin_near(self.plane.index(), now)) {
            Ok(c) => self.start_relay(first, c),
            Err(begun) => {
                let pool = pool.clone();
                let application_name = self.s.login.application_name().to_owned();
                self.state = State::Checking {
                    first,
                    checkout: Box::pin(async move { pool.finish(begun, &application_name).await }),
                    watch: true,
                };
                None
            }
        }
    }

    /// A checkout that waits: polled; the client's end is watched meanwhile, so a client
    /// that went away neither keeps its place in the queue nor takes a connection.
    fn checking(
        &mut self,
        first: Frame,
        mut checkout: CheckoutFuture,
        mut watch: bool,
    ) -> Option<Turn> {
        match checkout
            .as_mut()
            .poll(&mut Context::from_waker(&self.waker))
        {
            Poll::Ready(Ok(c)) => return self.start_relay(first, c),
            Poll::Ready(Err(e)) => {
                return Some(leave(Resume::Checkout {
                    first,
                    result: Err(e),
                }));
            }
            Poll::Pending => {}
        }
        if watch && self.client.maybe_readable() {
            match self.client.peek_now() {
                Peeked::Closed => {
                    tracing::debug!("client left while waiting for a server connection");
                    return Some(Turn::Close);
                }
                // More messages: the client is there; stop watching.
                Peeked::Bytes => watch = false,
                Peeked::Nothing => {}
            }
        }
        self.state = State::Checking {
            first,
            checkout,
            watch,
        };
        Some(Turn::Wait)
    }

    /// A connection for the transaction: relay in the loop, or hand the session back to
    /// tokio when the connection needs SETs first or is not on the loop (TLS).
    fn start_relay(&mut self, first: Frame, mut c: Checkout<ServerManager>) -> Option<Turn> {
        let server = match c.conn().loop_socket().cloned() {
            Some(s) if self.s.resync_sql(c.conn()).is_none() => s,
            _ => {
                return Some(leave(Resume::Checkout {
                    first,
                    result: Ok(c),
                }));
            }
        };
        // Registered with another loop (it was idle there, or opened for it): it moves here.
        // Nothing was sent on it for this transaction yet, so a failure sends nothing either.
        if server.plane_index() != self.plane.index()
            && let Err(e) = server.move_to(&self.plane)
        {
            tracing::warn!(error = %e, "cannot move a server connection to this loop; closing it");
            c.discard(crate::pool::CloseReason::Error);
            return Some(leave(Resume::Checkout {
                first,
                result: Err(CheckoutError::Connect(ConnectError::Server(
                    ServerError::Io(e),
                ))),
            }));
        }
        self.s.cancel.set(Some(c.conn().cancel.clone()));
        let mut b = self.s.boundaries();
        b.client_sent_at(&first, Some(c.handed_out_at()));
        keep_small(&mut self.to_server);
        keep_small(&mut self.out_client);
        to_server_frame(
            first,
            self.s.prepared.as_mut(),
            c.conn(),
            &mut self.to_server,
        );
        let relay = Relay {
            c,
            server,
            b,
            last_activity: None,
        };
        let held = match self.spare.take() {
            Some(mut slot) => {
                *slot = Some(relay);
                Held(slot)
            }
            None => Held(Box::new(Some(relay))),
        };
        self.state = State::Relaying(held);
        None
    }

    /// Relay between the client and the server until the transaction ends or no socket is
    /// ready.
    fn relaying(
        &mut self,
        mut r: Held,
        scratch: &mut [u8],
        phase: Phase,
        now: Instant,
    ) -> Option<Turn> {
        if phase == Phase::Forced {
            let clean = r.b.is_clean();
            return Some(self.end(r, Outcome::Shutdown { clean }));
        }
        // What the client has not taken yet goes first.
        if !self.out_client.is_empty() && flush(&self.client, &mut self.out_client).is_err() {
            return Some(self.end(r, Outcome::ClientGone { clean: false }));
        }
        // Client → server: what the client sent, gathered up to FLUSH_BYTES (more waits in
        // the client's socket while the server's does not take it).
        let mut sent = false;
        while self.to_server.len() < FLUSH_BYTES {
            let f = match self.client_frame(scratch) {
                In::Nothing => break,
                In::Eof => {
                    let clean = r.b.is_clean();
                    return Some(self.end(r, Outcome::ClientGone { clean }));
                }
                In::Bad(e) => return Some(self.end(r, Outcome::Protocol(e))),
                In::Frame(f) => f,
            };
            match f.tag {
                b'X' => {
                    let delivered = self.to_server.is_empty()
                        || matches!(flush(&r.server, &mut self.to_server), Ok(true));
                    let clean = delivered && r.b.is_clean();
                    return Some(self.end(r, Outcome::ClientGone { clean }));
                }
                b'p' => {
                    return Some(self.end(r, Outcome::Protocol(FrameError::UnknownType('p'))));
                }
                _ => {}
            }
            r.b.client_sent_at(&f, Some(now));
            to_server_frame(f, self.s.prepared.as_mut(), r.c.conn(), &mut self.to_server);
            sent = true;
        }
        if sent && r.b.idle_in_transaction() {
            r.last_activity = Some(now);
        }
        // Another pass when the gathering stopped at FLUSH_BYTES and the server took it all.
        let mut again = false;
        if !self.to_server.is_empty() {
            let full = self.to_server.len() >= FLUSH_BYTES;
            match flush(&r.server, &mut self.to_server) {
                Err(e) => return Some(self.end(r, Outcome::ServerFailed(ServerError::Io(e)))),
                Ok(done) => again |= done && full,
            }
        }
        // Server → client, while the client's socket takes what was relayed.
        if self.out_client.is_empty() && r.server.maybe_readable() {
            match r.server.read_now(scratch) {
                Ok(0) => return Some(self.end(r, Outcome::ServerFailed(ServerError::Closed))),
                Ok(n) => {
                    if let Some(outcome) = self.relay_to_client(&mut r, &scratch[..n], now) {
                        return Some(self.end(r, outcome));
                    }
                    // A read that filled the buffer: more may wait, if the client took this.
                    again |= r.server.maybe_readable() && self.out_client.is_empty();
                }
                Err(e) if would_block(&e) => {}
                Err(e) => return Some(self.end(r, Outcome::ServerFailed(ServerError::Io(e)))),
            }
        }
        if r.b.is_clean() {
            return self.release(r, now);
        }
        if std::mem::take(&mut self.timer_due)
            && r.b.idle_in_transaction()
            && let Some(since) = r.last_activity
            && now >= since + self.s.idle_in_transaction
        {
            return Some(self.end(r, Outcome::IdleInTransaction));
        }
        self.state = State::Relaying(r);
        if again { None } else { Some(Turn::Wait) }
    }

    /// Pass the server's complete messages on to the client (from the server connection's
    /// buffer; only a reply the pooler drops or replaces is copied); an outcome that ends
    /// the relay, if any.
    fn relay_to_client(&mut self, r: &mut Relay, read: &[u8], now: Instant) -> Option<Outcome> {
        let Relay { c, b, .. } = r;
        let conn = c.conn();
        conn.push_read(read);
        let was_idle_tx = b.idle_in_transaction();
        let prepared = &mut self.s.prepared;
        let (tail, failure) = conn.relay_buffered(&mut self.out_client, |tag, body, statements| {
            b.server_sent_at(tag, body, Some(now));
            match prepared.as_mut() {
                Some(t) => t.rewriter.server_message(tag, &mut t.client, statements),
                None => ServerAction::Forward,
            }
        });
        let rest = &conn.buffered()[tail.clone()];
        let sent = if self.out_client.is_empty() {
            write_or_keep(&self.client, rest, &mut self.out_client)
        } else {
            self.out_client.extend_from_slice(rest);
            flush(&self.client, &mut self.out_client).map(|_| ())
        };
        conn.consume(tail.end);
        if let Some(e) = failure {
            return Some(Outcome::ServerFailed(e));
        }
        if sent.is_err() {
            return Some(Outcome::ClientGone { clean: false });
        }
        // The client's turn inside a transaction began with a ReadyForQuery in this read.
        if b.idle_in_transaction() && !was_idle_tx {
            r.last_activity = Some(b.answered.unwrap_or(now));
        }
        None
    }

    /// The transaction ended: count it, give the connection back (reset first on tokio if
    /// session state was touched).
    fn release(&mut self, mut r: Held, now: Instant) -> Option<Turn> {
        self.s.account(&mut r.b);
        let (Relay { c, b, .. }, slot) = r.take();
        self.spare = Some(slot);
        if b.dirty {
            return Some(leave(Resume::Settle {
                c,
                b,
                outcome: Outcome::Released,
                pending: std::mem::take(&mut self.out_client),
            }));
        }
        c.release_at(true, b.answered.unwrap_or(now));
        self.s.cancel.set(None);
        self.state = State::Between;
        None
    }

    /// The relay ended otherwise: count it, and hand the session to tokio to settle.
    fn end(&mut self, mut r: Held, outcome: Outcome) -> Turn {
        self.s.account(&mut r.b);
        let (Relay { c, b, .. }, _) = r.take();
        let pending = match outcome {
            Outcome::ClientGone { .. } => BytesMut::new(),
            _ => std::mem::take(&mut self.out_client),
        };
        leave(Resume::Settle {
            c,
            b,
            outcome,
            pending,
        })
    }

    /// The client's next message, read from its socket if none is buffered and it may have
    /// more.
    fn client_frame(&mut self, scratch: &mut [u8]) -> In {
        let reader = &mut self.s.client.reader;
        loop {
            match reader.try_frame() {
                Ok(Some(f)) => return In::Frame(f),
                Err(e) => return In::Bad(e),
                Ok(None) => {}
            }
            if !self.client.maybe_readable() {
                return In::Nothing;
            }
            match self.client.read_now(scratch) {
                Ok(0) if reader.has_buffered() => return In::Bad(FrameError::Truncated),
                Ok(0) => return In::Eof,
                Ok(n) => reader.push(&scratch[..n]),
                Err(e) if would_block(&e) => return In::Nothing,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return In::Eof,
            }
        }
    }
}

fn would_block(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::WouldBlock
}

/// Write what `sock` takes of `buf` now; `Ok(true)` when all of it went.
fn flush(sock: &LoopSocket, buf: &mut BytesMut) -> io::Result<bool> {
    while !buf.is_empty() {
        match sock.write_now(buf) {
            // All of it: emptied in place, so the buffer keeps its room from the start and
            // the next message needs no `reserve` to reclaim it.
            Ok(n) if n == buf.len() => buf.clear(),
            Ok(n) => {
                // A short write: the socket's buffer is full.
                buf.advance(n);
                return Ok(false);
            }
            Err(e) if would_block(&e) => return Ok(false),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

/// Write `bytes` to `sock`; what it does not take now is kept in `keep`.
fn write_or_keep(sock: &LoopSocket, bytes: &[u8], keep: &mut BytesMut) -> io::Result<()> {
    if bytes.is_empty() {
        return Ok(());
    }
    let n = match sock.write_now(bytes) {
        Ok(n) => n,
        Err(e) if would_block(&e) || e.kind() == io::ErrorKind::Interrupted => 0,
        Err(e) => return Err(e),
    };
    keep.extend_from_slice(&bytes[n..]);
    Ok(())
}

/// An empty buffer that grew past [`KEEP_BUFFER_BYTES`] is dropped.
fn keep_small(buf: &mut BytesMut) {
    if buf.is_empty() && buf.capacity() > KEEP_BUFFER_BYTES {
        *buf = BytesMut::new();
    }
}
