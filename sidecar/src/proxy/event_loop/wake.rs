//! Wakers for what a loop polls: a session's checkout future, the proxy's phase. A wake-up
//! on the loop's own thread (a check-in in the loop granting a waiting session) is noted for
//! the loop's current turn; one from another thread (another loop's check-in, tokio's timers
//! and sockets) also wakes the loop's `Poll`.

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Wake, Waker};

use crate::dataplane::DataPlane;

thread_local! {
    /// The index of the loop this thread runs, if it runs one.
    static ON_LOOP: Cell<Option<usize>> = const { Cell::new(None) };
}

/// Mark the current thread as loop `index`'s.
pub(super) fn on_loop_thread(index: usize) {
    ON_LOOP.with(|c| c.set(Some(index)));
}

/// Sessions woken since the loop last looked: (slot, generation).
pub(super) struct Woken {
    list: Mutex<Vec<(usize, u64)>>,
    any: AtomicBool,
    plane: DataPlane,
}

impl Woken {
    pub(super) fn new(plane: DataPlane) -> Self {
        Self {
            list: Mutex::default(),
            any: AtomicBool::new(false),
            plane,
        }
    }

    fn push(&self, slot: usize, generation: u64) {
        self.list
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((slot, generation));
        self.any.store(true, Ordering::Release);
        if ON_LOOP.with(Cell::get) != Some(self.plane.index()) {
            self.plane.wake();
        }
    }

    /// Move the sessions woken since the last call into `into` (empty), which gives its
    /// buffer in exchange: no allocation per turn.
    pub(super) fn take_into(&self, into: &mut Vec<(usize, u64)>) {
        if self.any.swap(false, Ordering::AcqRel) {
            std::mem::swap(
                &mut *self.list.lock().unwrap_or_else(|p| p.into_inner()),
                into,
            );
        }
    }

    /// A waker for the session in `slot` at `generation`.
    pub(super) fn session_waker(self: &Arc<Self>, slot: usize, generation: u64) -> Waker {
        Waker::from(Arc::new(SessionWake {
            woken: self.clone(),
            slot,
            generation,
        }))
    }

    /// A waker that only wakes the loop (the phase's).
    pub(super) fn loop_waker(&self) -> Waker {
        Waker::from(Arc::new(LoopWake(self.plane.clone())))
    }
}

struct SessionWake {
    woken: Arc<Woken>,
    slot: usize,
    generation: u64,
}

impl Wake for SessionWake {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.push(self.slot, self.generation);
    }
}

struct LoopWake(DataPlane);

impl Wake for LoopWake {
    fn wake(self: Arc<Self>) {
        self.0.wake();
    }
}
