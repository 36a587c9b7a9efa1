//! Which of a relay's two sockets (or its idle-in-transaction timer) woke it. A relay waits on
//! the server and the client at once; polled with the task's own waker, every wake-up would
//! poll both sockets (and each poll of a socket with nothing to read takes its registration's
//! lock) and the timer. Each is instead polled with a waker of its own that notes the wake-up
//! before waking the task, so a wake-up polls the side that has something, and a side already
//! waiting (its waker registered, not woken since) is left alone. Under pgbench's TPC-B
//! transaction that is 4.2 socket polls per statement instead of 6.8, and one poll of the
//! timer per transaction instead of one per statement.
//!
//! The rule a relay follows: a side is polled when its flag is set; the flag is set at the
//! start of a relay (registrations from before are with other wakers), by its waker, and by
//! the relay after the side was ready (what is left must be looked at again) or, for the
//! timer, made or moved (a new deadline is not registered until polled). The proxy's phase
//! has a side too, polled by nobody: its waker only ends the relay's wait, so the relay reads
//! the phase again. A session's wait for the client's next message between transactions
//! follows the same rule for the client's side (`ClientIo::poll_next`), so it finds the
//! relay's registration in place instead of reading the socket again; the other reads of the
//! client's socket (`ClientIo::read`, the checkout wait's peek) set the client's flag.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Wake, Waker};

use futures::task::AtomicWaker;

/// The task both sides wake (one registration per poll of the relay, not one per side).
#[derive(Debug, Default)]
struct Task(AtomicWaker);

/// One side's waker: notes that it woke, then wakes the task.
#[derive(Debug)]
struct Side {
    woken: AtomicBool,
    task: Arc<Task>,
}

impl Wake for Side {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        self.task.0.wake();
    }
}

/// One side's flag and waker.
#[derive(Debug)]
pub struct SideWake {
    side: Arc<Side>,
    waker: Waker,
}

impl SideWake {
    fn new(task: Arc<Task>) -> Self {
        let side = Arc::new(Side {
            woken: AtomicBool::new(true),
            task,
        });
        let waker = Waker::from(side.clone());
        Self { side, waker }
    }

    /// Whether the side must be polled; clears the flag (taken before the poll, so a wake-up
    /// during the poll sets it again).
    pub fn take(&self) -> bool {
        self.side.woken.load(Ordering::Acquire) && self.side.woken.swap(false, Ordering::AcqRel)
    }

    /// The side must be polled next time.
    pub fn set(&self) {
        self.side.woken.store(true, Ordering::Release);
    }

    /// The waker to poll the side with.
    pub fn waker(&self) -> &Waker {
        &self.waker
    }
}

/// The server's and the client's wakers of one session.
#[derive(Debug)]
pub struct SideWakes {
    task: Arc<Task>,
    /// The server connection's side.
    pub server: SideWake,
    /// The client's side.
    pub client: SideWake,
    /// The idle-in-transaction timer's side.
    pub timer: SideWake,
    /// The proxy's phase ([`super::phase::PhaseWatch::get_and_wake`]): its flag says a change
    /// woke the task; the relay reads the phase itself, so a relay's start does not set it.
    pub phase: SideWake,
}

impl SideWakes {
    /// Both sides to be polled.
    pub fn new() -> Self {
        let task = Arc::new(Task::default());
        Self {
            server: SideWake::new(task.clone()),
            client: SideWake::new(task.clone()),
            timer: SideWake::new(task.clone()),
            phase: SideWake::new(task.clone()),
            task,
        }
    }

    /// A relay begins: poll every side (their registrations are with other wakers or gone).
    pub fn reset(&self) {
        self.server.set();
        self.client.set();
        self.timer.set();
    }

    /// The task to wake for either side (at every poll of the task, before the sides).
    pub fn register(&self, task: &Waker) {
        self.task.0.register(task);
    }
}

impl Default for SideWakes {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Table of events → whether each side must be polled next.
    #[test]
    fn flags_follow_wakes_takes_and_resets() {
        let w = SideWakes::new();
        assert!(
            w.server.take() && w.client.take() && w.timer.take(),
            "a new relay polls every side"
        );
        assert!(
            !w.server.take() && !w.client.take() && !w.timer.take(),
            "taken once"
        );
        w.client.waker().wake_by_ref();
        assert!(!w.server.take());
        assert!(w.client.take(), "the client's waker marks the client only");
        // By value, as tokio wakes a waker it took out of a registration.
        #[allow(clippy::waker_clone_wake)]
        w.server.waker().clone().wake();
        assert!(w.server.take() && !w.client.take());
        w.server.set();
        assert!(w.server.take(), "set by the relay after a ready poll");
        w.timer.waker().wake_by_ref();
        assert!(
            !w.server.take() && !w.client.take(),
            "the timer marks itself only"
        );
        assert!(w.timer.take() && !w.timer.take());
        w.reset();
        assert!(w.server.take() && w.client.take() && w.timer.take());
    }

    /// A side's wake-up wakes the task registered last.
    #[test]
    fn a_side_wakes_the_task() {
        struct Count(std::sync::atomic::AtomicUsize);
        impl Wake for Count {
            fn wake(self: Arc<Self>) {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
        let count = Arc::new(Count(Default::default()));
        let task = Waker::from(count.clone());
        let w = SideWakes::new();
        w.register(&task);
        w.server.waker().wake_by_ref();
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
        w.register(&task);
        w.client.waker().wake_by_ref();
        assert_eq!(count.0.load(Ordering::SeqCst), 2);
    }
}
