//! The proxy's life cycle (running, draining, forced) as sessions see it. Every session reads
//! the phase with one atomic load and waits for a change without taking a lock per wait: each
//! session registers one waker slot at login, and a change of phase wakes every slot. (A
//! `watch` channel locks its waiter list whenever a waiting future is polled or dropped, which
//! a session did twice per transaction.)

use std::collections::HashMap;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use futures::task::AtomicWaker;

/// The proxy's life cycle, as sessions see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub enum Phase {
    /// Serving.
    Running = 0,
    /// SIGTERM: no new transactions; running ones may finish.
    Draining = 1,
    /// The grace period is over: everyone is closed now.
    Forced = 2,
}

impl Phase {
    fn from_u8(v: u8) -> Self {
        match v {
            0 => Self::Running,
            1 => Self::Draining,
            _ => Self::Forced,
        }
    }
}

#[derive(Debug, Default)]
struct Shared {
    phase: AtomicU8,
    next_id: AtomicU64,
    /// One waker slot per session, by a counter's id: foldhash, not SipHash (the ids are
    /// ours, no client chooses them), one insert and one removal per client.
    sessions: Mutex<HashMap<u64, Arc<AtomicWaker>, foldhash::fast::RandomState>>,
}

/// The proxy's side: sets the phase. Dropping it forces every session closed, as a phase
/// nobody can move on any more.
#[derive(Debug)]
pub struct PhaseControl(PhaseSource);

impl PhaseControl {
    /// Running, with no session yet.
    pub fn new() -> Self {
        Self(PhaseSource(Arc::default()))
    }

    /// Where sessions get their [`PhaseWatch`].
    pub fn source(&self) -> PhaseSource {
        self.0.clone()
    }

    /// Move to `phase` and wake every session.
    pub fn set(&self, phase: Phase) {
        let shared = &self.0.0;
        shared.phase.store(phase as u8, Ordering::SeqCst);
        let sessions = shared.sessions.lock().unwrap_or_else(|p| p.into_inner());
        for waker in sessions.values() {
            waker.wake();
        }
    }
}

impl Default for PhaseControl {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for PhaseControl {
    fn drop(&mut self) {
        self.set(Phase::Forced);
    }
}

/// Shared by sessions: hands out [`PhaseWatch`]es.
#[derive(Clone, Debug)]
pub struct PhaseSource(Arc<Shared>);

impl PhaseSource {
    /// A session's view of the phase (its waker slot is registered until it is dropped).
    pub fn watch(&self) -> PhaseWatch {
        let id = self.0.next_id.fetch_add(1, Ordering::Relaxed);
        let waker = Arc::new(AtomicWaker::new());
        self.0
            .sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, waker.clone());
        PhaseWatch {
            shared: self.0.clone(),
            waker,
            id,
        }
    }
}

/// One session's view of the phase: read it, or wait for it to change. Every wait of one
/// session shares one waker slot, so they must be polled by the session's own task.
#[derive(Debug)]
pub struct PhaseWatch {
    shared: Arc<Shared>,
    waker: Arc<AtomicWaker>,
    id: u64,
}

impl PhaseWatch {
    /// The phase now.
    pub fn get(&self) -> Phase {
        Phase::from_u8(self.shared.phase.load(Ordering::SeqCst))
    }

    /// The phase now, read after giving the session's waker slot to `waker`: a change from
    /// here on wakes it. Once: a wake-up takes the waker, so a caller that saw a change and
    /// waits on calls this again (or polls [`poll_reached`](Self::poll_reached)).
    pub fn get_and_wake(&self, waker: &Waker) -> Phase {
        self.waker.register(waker);
        self.get()
    }

    /// Whether the phase is at least `phase`, polled: if not, the next change wakes the task
    /// of `cx`.
    pub fn poll_reached(&self, cx: &mut Context<'_>, phase: Phase) -> Poll<()> {
        // Register first, then look: a change after the look wakes the registered task.
        self.waker.register(cx.waker());
        if self.get() >= phase {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}

impl Drop for PhaseWatch {
    fn drop(&mut self) {
        self.shared
            .sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::poll_fn;
    use std::time::Duration;

    impl PhaseWatch {
        /// Wait until the phase is at least `phase`.
        async fn reached(&self, phase: Phase) {
            poll_fn(|cx| self.poll_reached(cx, phase)).await;
        }
    }

    /// Sessions waiting in different ways all wake on a change; a dropped session leaves no
    /// slot behind; dropping the control forces everyone.
    #[tokio::test]
    async fn changes_wake_every_session_and_slots_are_freed() {
        let control = PhaseControl::new();
        let source = control.source();
        let a = source.watch();
        let b = source.watch();
        assert_eq!((a.get(), b.get()), (Phase::Running, Phase::Running));
        let draining = tokio::spawn(async move {
            a.reached(Phase::Draining).await;
            a.get()
        });
        let changed = tokio::spawn(async move {
            std::future::poll_fn(|cx| match b.get_and_wake(cx.waker()) {
                Phase::Running => Poll::Pending,
                other => Poll::Ready(other),
            })
            .await
        });
        tokio::task::yield_now().await;
        assert!(!draining.is_finished() && !changed.is_finished());
        control.set(Phase::Draining);
        let limit = Duration::from_secs(5);
        assert_eq!(
            tokio::time::timeout(limit, draining)
                .await
                .unwrap()
                .unwrap(),
            Phase::Draining
        );
        assert_eq!(
            tokio::time::timeout(limit, changed).await.unwrap().unwrap(),
            Phase::Draining
        );
        assert!(source.0.sessions.lock().unwrap().is_empty());

        let c = source.watch();
        let forced = tokio::spawn(async move { c.reached(Phase::Forced).await });
        tokio::task::yield_now().await;
        drop(control);
        tokio::time::timeout(limit, forced).await.unwrap().unwrap();
        assert_eq!(source.watch().get(), Phase::Forced);
    }

    /// A waker given the slot is woken by the next change, once; read before the change, the
    /// phase is the old one.
    #[test]
    fn get_and_wake_wakes_on_the_next_change_once() {
        struct Count(std::sync::atomic::AtomicUsize);
        impl std::task::Wake for Count {
            fn wake(self: Arc<Self>) {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
        let count = Arc::new(Count(Default::default()));
        let waker = Waker::from(count.clone());
        let control = PhaseControl::new();
        let w = control.source().watch();
        assert_eq!(w.get_and_wake(&waker), Phase::Running);
        assert_eq!(count.0.load(Ordering::SeqCst), 0);
        control.set(Phase::Draining);
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
        control.set(Phase::Forced);
        assert_eq!(
            count.0.load(Ordering::SeqCst),
            1,
            "taken by the first wake-up"
        );
        assert_eq!(w.get_and_wake(&waker), Phase::Forced);
    }

    /// A change made before anyone waits is seen at once.
    #[tokio::test]
    async fn a_change_before_the_wait_is_not_missed() {
        let control = PhaseControl::new();
        let w = control.source().watch();
        control.set(Phase::Forced);
        tokio::time::timeout(Duration::from_secs(5), w.reached(Phase::Draining))
            .await
            .unwrap();
    }
}
