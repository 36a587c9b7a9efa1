//! The data plane's loops (`data_path: event_loop`): `worker_threads` threads, each with
//! its own mio `Poll`, relaying the transaction-mode sessions it holds between a checkout
//! and its release, and taking the next transaction's first message, without a tokio task's
//! wake-up and poll per socket event. See docs/data-plane.md.
//!
//! Loop 0 accepts and hands the clients round the loops; a client stays with its loop for
//! its whole life. The pool is one pool across the loops: a checkout prefers an idle
//! connection already registered with its loop, and a connection registered with another
//! loop moves to the checking-out one ([`LoopSocket::move_to`]).
//!
//! ```text
//!  loop: accept ─▶ login, greeting (a future the loop polls) ─▶ first message ─▶ Pool::begin
//!    ─ idle, fresh ─▶ relay in the loop ─▶ ReadyForQuery 'I', clean ─▶ release ─▶ …
//!    ─ wait / open / pre-ping / recycle ─▶ Pool::finish, a future polled by the loop
//!  anything else (refusals, SETs, TLS, DISCARD ALL, FATALs, drain) ─▶ back to a tokio
//!    task (Session::transactions), which hands the session back between transactions
//! ```
//!
//! SCRAM's key derivation runs on tokio's blocking pool, as on the `tasks` path; tokio's
//! timers (startup_timeout, pool_timeout) and the sockets it opens (server connections being
//! logged in, cancel requests) wake the loop's futures from tokio's thread.
//!
//! A socket is registered with the loop once, at login or when its server connection is
//! opened. Events on a socket no session in the loop holds (a session away on tokio, an
//! idle pooled connection, a pre-ping) wake the tasks that wait on it
//! ([`crate::dataplane::LoopSocket`]).

mod live;
mod wake;

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use mio::{Events, Interest, Token};
use tokio::runtime::Handle;
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::task::TaskTracker;

use super::login::{Keep, serve_on_loop};
use super::phase::{Phase, PhaseSource, PhaseWatch};
use super::session::{Ctx, Session};
use crate::dataplane::{DataPlane, LoopSocket, WAKER};
use live::{Live, Turn};
use wake::Woken;

/// The listener's token.
const LISTENER: Token = Token(usize::MAX - 1);

/// What accepting clients needs; the loop accepts once it has it ([`EventLoop::listen`]).
pub struct Listening {
    /// The bound listener.
    pub listener: std::net::TcpListener,
    /// What sessions share.
    pub ctx: Arc<Ctx>,
    /// Places under `clients.max_connections`.
    pub limit: Arc<Semaphore>,
    /// Counts sessions for the drain.
    pub sessions: TaskTracker,
}

struct Accepting {
    listener: mio::net::TcpListener,
    ctx: Arc<Ctx>,
    limit: Arc<Semaphore>,
    sessions: TaskTracker,
}

type LoginFuture = Pin<Box<dyn Future<Output = Option<Box<Session>>> + Send>>;

/// A slot of the loop: a client logging in, or a logged-in session.
enum Slot {
    Login {
        login: LoginFuture,
        client: LoopSocket,
        waker: Waker,
    },
    Live(Live),
}

/// What another thread hands a loop.
enum Arrival {
    /// A session, between transactions (boxed: it moves between the loop and tokio tasks
    /// as one pointer).
    Session(Box<Session>),
    /// A client loop 0 accepted for this loop, registered with its plane, to log in.
    Login {
        login: LoginFuture,
        client: LoopSocket,
    },
}

/// A loop's handle: hands sessions over, stops it.
pub struct EventLoop {
    plane: DataPlane,
    listening: Mutex<Option<Listening>>,
    inbox: Mutex<Vec<Arrival>>,
    woken: Arc<Woken>,
    stop: AtomicBool,
}

impl std::fmt::Debug for EventLoop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EventLoop")
    }
}

/// The data plane's loops, by index: a session goes back to the loop its client's socket
/// is registered with.
pub struct Loops(Vec<Arc<EventLoop>>);

impl std::fmt::Debug for Loops {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Loops({})", self.0.len())
    }
}

impl Loops {
    /// Start a loop's thread on each plane and its `poll` (at least one). Called inside the
    /// tokio runtime, which the threads enter (tokio's timers and sockets that the loops'
    /// futures use, spawns).
    pub fn start(planes: Vec<(DataPlane, mio::Poll)>, phase: PhaseSource) -> std::io::Result<Self> {
        let rt = Handle::current();
        let (planes, polls): (Vec<_>, Vec<_>) = planes.into_iter().unzip();
        let loops: Vec<Arc<EventLoop>> = planes
            .into_iter()
            .map(|plane| {
                Arc::new(EventLoop {
                    woken: Arc::new(Woken::new(plane.clone())),
                    plane,
                    listening: Mutex::default(),
                    inbox: Mutex::default(),
                    stop: AtomicBool::new(false),
                })
            })
            .collect();
        for (i, poll) in polls.into_iter().enumerate() {
            let peers = loops.clone();
            let rt = rt.clone();
            let watch = phase.watch();
            std::thread::Builder::new()
                .name(format!("poolwarden-loop-{i}"))
                .spawn(move || {
                    let _rt = rt.enter();
                    wake::on_loop_thread(i);
                    let run = std::panic::AssertUnwindSafe(|| {
                        Loop::new(peers, i, poll, watch, rt.clone()).run();
                    });
                    if std::panic::catch_unwind(run).is_err() {
                        // Transaction-mode clients are on this thread: a sidecar without it
                        // would look alive and serve some of them no more. Exit, so the pod
                        // restarts.
                        tracing::error!("a data plane loop panicked; exiting");
                        std::process::exit(70);
                    }
                })?;
        }
        Ok(Self(loops))
    }

    /// The loop `client` (a session's socket) is registered with.
    pub fn home(&self, client: &LoopSocket) -> &Arc<EventLoop> {
        &self.0[client.plane_index()]
    }

    /// Accept clients from now on (until the proxy drains): loop 0 accepts and hands them
    /// round the loops.
    pub fn listen(&self, l: Listening) {
        self.0[0].listen(l);
    }

    /// Stop every loop (the sessions still in them are dropped: their clients' sockets
    /// close).
    pub fn stop(&self) {
        for l in &self.0 {
            l.stop();
        }
    }
}

impl EventLoop {
    /// Hand a session over, between transactions.
    pub fn enter(&self, s: Box<Session>) {
        self.arrive(Arrival::Session(s));
    }

    fn arrive(&self, a: Arrival) {
        self.inbox.lock().unwrap_or_else(|p| p.into_inner()).push(a);
        self.plane.wake();
    }

    /// Accept clients on the loop from now on (until the proxy drains).
    fn listen(&self, l: Listening) {
        *self.listening.lock().unwrap_or_else(|p| p.into_inner()) = Some(l);
        self.plane.wake();
    }

    /// Stop the loop.
    fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
        self.plane.wake();
    }
}

/// Which session holds a socket, by token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Route {
    /// None in the loop: its events wake the tasks waiting on it.
    Away,
    /// A session's client.
    Client(usize),
    /// The server connection a session relays with.
    Server(usize),
}

/// The loop's state: its sessions in a slab (index = session), the routes by token, the
/// idle-in-transaction timers.
struct Loop {
    shared: Arc<EventLoop>,
    /// Every loop, this one at `index`: where accepted clients go.
    peers: Vec<Arc<EventLoop>>,
    index: usize,
    /// The loop the next accepted client goes to.
    next_peer: usize,
    poll: mio::Poll,
    rt: Handle,
    phase: PhaseWatch,
    accepting: Option<Accepting>,
    sessions: Vec<Option<Slot>>,
    free: Vec<usize>,
    /// Bumped when a slot is emptied: a timer or wake-up for an earlier session is stale.
    generations: Vec<u64>,
    routes: Vec<Route>,
    /// (deadline, session, generation).
    timers: BinaryHeap<Reverse<(Instant, usize, u64)>>,
    /// When the last poll returned: the time of everything it reported, for the sessions'
    /// turns and the deadlines (one clock read per poll, not one per message).
    now: Instant,
    /// Where the loop's reads land before they are appended to a session's buffers.
    scratch: Box<[u8]>,
    /// Sessions to drive this turn, in the order their events came.
    queue: Vec<usize>,
    /// The sessions being driven (swapped with `queue`, so both keep their capacity).
    batch: Vec<usize>,
    /// Sessions their wakers woke, taken from [`Woken`] (its buffer and this one swap).
    woken: Vec<(usize, u64)>,
}

/// Reads of this size at most.
const SCRATCH_BYTES: usize = 64 * 1024;

impl Loop {
    fn new(
        peers: Vec<Arc<EventLoop>>,
        index: usize,
        poll: mio::Poll,
        phase: PhaseWatch,
        rt: Handle,
    ) -> Self {
        Self {
            shared: peers[index].clone(),
            peers,
            index,
            next_peer: index,
            poll,
            rt,
            phase,
            accepting: None,
            sessions: Vec::new(),
            free: Vec::new(),
            generations: Vec::new(),
            routes: Vec::new(),
            timers: BinaryHeap::new(),
            now: Instant::now(),
            scratch: vec![0; SCRATCH_BYTES].into_boxed_slice(),
            queue: Vec::new(),
            batch: Vec::new(),
            woken: Vec::new(),
        }
    }

    fn run(mut self) {
        let mut events = Events::with_capacity(1024);
        let phase_waker = self.shared.woken.loop_waker();
        let mut phase = self.phase.get_and_wake(&phase_waker);
        loop {
            let timeout = self.timers.peek().map(|Reverse((at, _, _))| {
                at.saturating_duration_since(Instant::now()) + Duration::from_micros(50)
            });
            if let Err(e) = self.poll.poll(&mut events, timeout)
                && e.kind() != std::io::ErrorKind::Interrupted
            {
                // As a panic: no transaction-mode client could be served any more.
                tracing::error!(error = %e, "the data plane's loop cannot poll; exiting");
                std::process::exit(70);
            }
            self.now = Instant::now();
            let mut woke = false;
            for ev in events.iter() {
                if ev.token() == WAKER {
                    woke = true;
                    continue;
                }
                if ev.token() == LISTENER {
                    self.accept(phase);
                    continue;
                }
                let readable = ev.is_readable() || ev.is_error();
                let writable = ev.is_writable() || ev.is_write_closed() || ev.is_error();
                self.dispatch(ev.token(), readable, ev.is_read_closed(), writable);
            }
            if woke {
                if self.shared.stop.load(Ordering::SeqCst) {
                    return;
                }
                let seen = self.phase.get_and_wake(&phase_waker);
                if seen != phase {
                    phase = seen;
                    // Every session looks at the phase at its next turn.
                    self.queue
                        .extend((0..self.sessions.len()).filter(|i| self.sessions[*i].is_some()));
                }
                if phase >= Phase::Draining {
                    self.stop_accepting();
                } else {
                    self.start_accepting(phase);
                }
                self.arrivals(phase);
            }
            self.expire_timers();
            // Turns can wake other sessions (a check-in grants a waiting checkout): until
            // none is left.
            loop {
                self.shared.woken.take_into(&mut self.woken);
                for (i, generation) in self.woken.drain(..) {
                    if self.generations.get(i) == Some(&generation) {
                        self.queue.push(i);
                    }
                }
                if self.queue.is_empty() {
                    break;
                }
                // Oldest first: when the thread loses its CPU in the middle of a batch, the
                // clients that have waited longest were served already.
                let mut batch = std::mem::take(&mut self.batch);
                std::mem::swap(&mut self.queue, &mut batch);
                for i in batch.drain(..) {
                    self.drive(i, phase);
                }
                self.batch = batch;
            }
        }
    }

    /// A socket event: to the session that holds the socket, or to the tasks waiting on it.
    fn dispatch(&mut self, token: Token, readable: bool, read_closed: bool, writable: bool) {
        match self.routes.get(token.0).copied().unwrap_or(Route::Away) {
            Route::Client(i) | Route::Server(i) => match self.sessions[i].as_mut() {
                Some(Slot::Live(live)) => {
                    live.mark_readable(token, readable, read_closed);
                    self.queue.push(i);
                }
                // A login's future reads and writes until the socket would block: it is
                // polled again. The flags are kept for the session it becomes.
                Some(Slot::Login { client, .. }) => {
                    client.mark(readable, read_closed);
                    self.queue.push(i);
                }
                None => {}
            },
            Route::Away => {
                if let Some(sock) = self.shared.plane.socket(token) {
                    sock.wake(readable, read_closed, writable);
                }
            }
        }
    }

    /// Take the sessions and clients handed over.
    fn arrivals(&mut self, phase: Phase) {
        let arrived =
            std::mem::take(&mut *self.shared.inbox.lock().unwrap_or_else(|p| p.into_inner()));
        for a in arrived {
            let i = self.slot();
            let waker = self.shared.woken.session_waker(i, self.generations[i]);
            match a {
                Arrival::Session(s) => {
                    let live = Live::new(s, waker, self.shared.plane.clone());
                    self.route(live.client_token(), Route::Client(i));
                    self.sessions[i] = Some(Slot::Live(live));
                }
                Arrival::Login { login, client } => {
                    self.route(client.token(), Route::Client(i));
                    self.sessions[i] = Some(Slot::Login {
                        login,
                        client,
                        waker,
                    });
                }
            }
            self.drive(i, phase);
        }
    }

    /// A free slot's index.
    fn slot(&mut self) -> usize {
        match self.free.pop() {
            Some(i) => i,
            None => {
                self.sessions.push(None);
                self.generations.push(0);
                self.sessions.len() - 1
            }
        }
    }

    /// Register the listener handed over, if one was.
    fn start_accepting(&mut self, phase: Phase) {
        let Some(l) = self
            .shared
            .listening
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        else {
            return;
        };
        let mut listener = mio::net::TcpListener::from_std(l.listener);
        if let Err(e) = self
            .poll
            .registry()
            .register(&mut listener, LISTENER, Interest::READABLE)
        {
            tracing::error!(error = %e, "the data plane's loop cannot accept clients");
            return;
        }
        self.accepting = Some(Accepting {
            listener,
            ctx: l.ctx,
            limit: l.limit,
            sessions: l.sessions,
        });
        // Clients that connected before the registration.
        self.accept(phase);
    }

    /// Stop accepting (the drain): the listener closes.
    fn stop_accepting(&mut self) {
        if let Some(mut a) = self.accepting.take() {
            let _ = self.poll.registry().deregister(&mut a.listener);
        }
    }

    /// Accept every client waiting: each logs in as a future the loop polls.
    fn accept(&mut self, phase: Phase) {
        loop {
            let Some(a) = &self.accepting else {
                return;
            };
            let stream = match a.listener.accept() {
                Ok((stream, _peer)) => stream,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // Out of descriptors, most likely: the next client's event tries again.
                    tracing::warn!(error = %e, "accept failed");
                    return;
                }
            };
            let _ = stream.set_nodelay(true);
            // Round the loops: this client's loop, for its whole life.
            let peer = self.next_peer;
            self.next_peer = (self.next_peer + 1) % self.peers.len();
            let sock = match self.peers[peer].plane.adopt_mio(stream) {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot register a client with the data plane");
                    continue;
                }
            };
            let permit = match a.limit.clone().try_acquire_owned() {
                Ok(p) => p,
                Err(_) => {
                    let timeout = a.ctx.config.load().clients.startup_timeout.get();
                    self.rt
                        .spawn(super::listener::too_many_clients(sock, timeout));
                    continue;
                }
            };
            let keep = Keep::new(permit, a.sessions.token());
            let login: LoginFuture = Box::pin(serve_on_loop(sock.clone(), a.ctx.clone(), keep));
            if peer != self.index {
                self.peers[peer].arrive(Arrival::Login {
                    login,
                    client: sock,
                });
                continue;
            }
            let i = self.slot();
            let waker = self.shared.woken.session_waker(i, self.generations[i]);
            self.route(sock.token(), Route::Client(i));
            self.sessions[i] = Some(Slot::Login {
                login,
                client: sock,
                waker,
            });
            self.drive(i, phase);
        }
    }

    fn route(&mut self, token: Token, route: Route) {
        if self.routes.len() <= token.0 {
            self.routes.resize(token.0 + 1, Route::Away);
        }
        self.routes[token.0] = route;
    }

    /// Idle-in-transaction deadlines due now.
    fn expire_timers(&mut self) {
        let now = self.now;
        while let Some(Reverse((at, i, generation))) = self.timers.peek().copied() {
            if at > now {
                break;
            }
            self.timers.pop();
            if self.generations.get(i) != Some(&generation) {
                continue;
            }
            if let Some(Slot::Live(live)) = self.sessions[i].as_mut() {
                live.timer_due();
                self.queue.push(i);
            }
        }
    }

    /// Run a session until it waits, leaves or ends.
    fn drive(&mut self, i: usize, phase: Phase) {
        let live = match self.sessions[i].as_mut() {
            None => return,
            Some(Slot::Live(live)) => live,
            Some(Slot::Login { login, waker, .. }) => {
                match login.as_mut().poll(&mut Context::from_waker(waker)) {
                    Poll::Pending => return,
                    Poll::Ready(session) => {
                        let Some(Slot::Login { client, waker, .. }) = self.sessions[i].take()
                        else {
                            unreachable!("matched above")
                        };
                        match session {
                            Some(s) => {
                                let live = Live::new(s, waker, self.shared.plane.clone());
                                self.sessions[i] = Some(Slot::Live(live));
                            }
                            None => {
                                self.sessions[i] = None;
                                self.route(client.token(), Route::Away);
                                self.generations[i] += 1;
                                self.free.push(i);
                                return;
                            }
                        }
                        match self.sessions[i].as_mut() {
                            Some(Slot::Live(live)) => live,
                            _ => unreachable!("put there above"),
                        }
                    }
                }
            }
        };
        let generation = self.generations[i];
        let turn = live.turn(&mut self.scratch, phase, self.now);
        // Routes follow the session's server connection.
        let (server_before, server_now) = live.take_server_change();
        let deadline = match turn {
            Turn::Wait => live.arm_timer(),
            _ => None,
        };
        if let Some(t) = server_before {
            self.route(t, Route::Away);
        }
        if let Some(t) = server_now {
            self.route(t, Route::Server(i));
        }
        match turn {
            Turn::Wait => {
                if let Some(at) = deadline {
                    self.timers.push(Reverse((at, i, generation)));
                }
            }
            Turn::Leave(resume) => {
                let live = self.remove(i);
                let session = live.into_session();
                self.rt.spawn(session.transactions(Some(*resume)));
            }
            Turn::Close => {
                drop(self.remove(i));
            }
        }
    }

    /// Take a session out of the loop: its sockets' events go to tasks from now on.
    fn remove(&mut self, i: usize) -> Live {
        let Some(Slot::Live(live)) = self.sessions[i].take() else {
            unreachable!("only live sessions are removed");
        };
        self.route(live.client_token(), Route::Away);
        if let Some(t) = live.server_token() {
            self.route(t, Route::Away);
        }
        self.generations[i] += 1;
        self.free.push(i);
        live
    }
}
