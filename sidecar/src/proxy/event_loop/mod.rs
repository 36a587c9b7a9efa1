//! The data plane's loop (`data_path: event_loop`): one thread, one mio `Poll`, relaying
//! every transaction-mode session that is between a checkout and its release, and taking
//! the next transaction's first message, without a tokio task's wake-up and poll per
//! socket event. See docs/data-plane.md.
//!
//! ```text
//!  tokio: accept, login, greeting ─▶ enter() ─▶ loop: first message ─▶ Pool::begin
//!    ─ idle, fresh ─▶ relay in the loop ─▶ ReadyForQuery 'I', clean ─▶ release ─▶ …
//!    ─ wait / open / pre-ping / recycle ─▶ Pool::finish, a future polled by the loop
//!  anything else (refusals, SETs, TLS, DISCARD ALL, FATALs, drain) ─▶ back to a tokio
//!    task (Session::transactions), which hands the session back between transactions
//! ```
//!
//! A socket is registered with the loop once, at login or when its server connection is
//! opened. Events on a socket no session in the loop holds (a session away on tokio, an
//! idle pooled connection, a pre-ping) wake the tasks that wait on it
//! ([`crate::dataplane::LoopSocket`]).

mod live;
mod wake;

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mio::{Events, Token};
use tokio::runtime::Handle;
use tokio::time::Instant;

use super::phase::{Phase, PhaseSource, PhaseWatch};
use super::session::Session;
use crate::dataplane::{DataPlane, WAKER};
use live::{Live, Turn};
use wake::Woken;

/// The loop's handle: hands sessions over, stops it.
pub struct EventLoop {
    plane: DataPlane,
    // Boxed: a session moves between the loop and tokio tasks as one pointer.
    #[allow(clippy::vec_box)]
    inbox: Mutex<Vec<Box<Session>>>,
    woken: Arc<Woken>,
    stop: AtomicBool,
}

impl std::fmt::Debug for EventLoop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EventLoop")
    }
}

impl EventLoop {
    /// Start the loop's thread on `plane`'s `poll`. Called inside the tokio runtime, which
    /// the thread enters (tokio's timers and sockets that the loop's futures use, spawns).
    pub fn start(
        plane: DataPlane,
        poll: mio::Poll,
        phase: PhaseSource,
    ) -> std::io::Result<Arc<Self>> {
        let rt = Handle::current();
        let l = Arc::new(Self {
            woken: Arc::new(Woken::new(plane.clone())),
            plane,
            inbox: Mutex::default(),
            stop: AtomicBool::new(false),
        });
        let shared = l.clone();
        std::thread::Builder::new()
            .name("poolwarden-loop".into())
            .spawn(move || {
                let _rt = rt.enter();
                wake::on_loop_thread();
                Loop::new(shared, poll, phase.watch(), rt.clone()).run();
            })?;
        Ok(l)
    }

    /// The data plane the loop polls.
    pub fn plane(&self) -> &DataPlane {
        &self.plane
    }

    /// Hand a session over, between transactions.
    pub fn enter(self: Arc<Self>, s: Box<Session>) {
        self.inbox.lock().unwrap_or_else(|p| p.into_inner()).push(s);
        self.plane.wake();
    }

    /// Stop the loop (the sessions still in it are dropped: their clients' sockets close).
    pub fn stop(&self) {
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
    poll: mio::Poll,
    rt: Handle,
    phase: PhaseWatch,
    sessions: Vec<Option<Live>>,
    free: Vec<usize>,
    /// Bumped when a slot is emptied: a timer or wake-up for an earlier session is stale.
    generations: Vec<u64>,
    routes: Vec<Route>,
    /// (deadline, session, generation).
    timers: BinaryHeap<Reverse<(Instant, usize, u64)>>,
    /// Where the loop's reads land before they are appended to a session's buffers.
    scratch: Box<[u8]>,
    /// Sessions to drive this turn.
    queue: Vec<usize>,
}

/// Reads of this size at most.
const SCRATCH_BYTES: usize = 64 * 1024;

impl Loop {
    fn new(shared: Arc<EventLoop>, poll: mio::Poll, phase: PhaseWatch, rt: Handle) -> Self {
        Self {
            shared,
            poll,
            rt,
            phase,
            sessions: Vec::new(),
            free: Vec::new(),
            generations: Vec::new(),
            routes: Vec::new(),
            timers: BinaryHeap::new(),
            scratch: vec![0; SCRATCH_BYTES].into_boxed_slice(),
            queue: Vec::new(),
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
                tracing::error!(error = %e, "the data plane's loop cannot poll; stopping it");
                return;
            }
            let mut woke = false;
            for ev in events.iter() {
                if ev.token() == WAKER {
                    woke = true;
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
                self.arrivals(phase);
            }
            self.expire_timers();
            // Turns can wake other sessions (a check-in grants a waiting checkout): until
            // none is left.
            loop {
                for (i, generation) in self.shared.woken.take() {
                    if self.generations.get(i) == Some(&generation) {
                        self.queue.push(i);
                    }
                }
                if self.queue.is_empty() {
                    break;
                }
                while let Some(i) = self.queue.pop() {
                    self.drive(i, phase);
                }
            }
        }
    }

    /// A socket event: to the session that holds the socket, or to the tasks waiting on it.
    fn dispatch(&mut self, token: Token, readable: bool, read_closed: bool, writable: bool) {
        match self.routes.get(token.0).copied().unwrap_or(Route::Away) {
            Route::Client(i) | Route::Server(i) => {
                if let Some(live) = self.sessions[i].as_mut() {
                    live.mark_readable(token, readable, read_closed);
                    self.queue.push(i);
                }
            }
            Route::Away => {
                if let Some(sock) = self.shared.plane.socket(token) {
                    sock.wake(readable, read_closed, writable);
                }
            }
        }
    }

    /// Take the sessions handed over.
    fn arrivals(&mut self, phase: Phase) {
        let arrived =
            std::mem::take(&mut *self.shared.inbox.lock().unwrap_or_else(|p| p.into_inner()));
        for s in arrived {
            let i = match self.free.pop() {
                Some(i) => i,
                None => {
                    self.sessions.push(None);
                    self.generations.push(0);
                    self.sessions.len() - 1
                }
            };
            let waker = self.shared.woken.session_waker(i, self.generations[i]);
            let live = Live::new(s, waker);
            self.route(live.client_token(), Route::Client(i));
            self.sessions[i] = Some(live);
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
        let now = Instant::now();
        while let Some(Reverse((at, i, generation))) = self.timers.peek().copied() {
            if at > now {
                break;
            }
            self.timers.pop();
            if self.generations.get(i) != Some(&generation) {
                continue;
            }
            if let Some(live) = self.sessions[i].as_mut() {
                live.timer_due();
                self.queue.push(i);
            }
        }
    }

    /// Run a session until it waits, leaves or ends.
    fn drive(&mut self, i: usize, phase: Phase) {
        let Some(live) = self.sessions[i].as_mut() else {
            return;
        };
        let generation = self.generations[i];
        let turn = live.turn(&mut self.scratch, phase);
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
        let live = self.sessions[i].take().expect("a live session");
        self.route(live.client_token(), Route::Away);
        if let Some(t) = live.server_token() {
            self.route(t, Route::Away);
        }
        self.generations[i] += 1;
        self.free.push(i);
        live
    }
}
