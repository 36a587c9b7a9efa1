//! The data plane's sockets: a mio `Poll` whose thread (`proxy::event_loop`, one per loop)
//! relays transaction-mode sessions, and the sockets registered with it ([`LoopSocket`]). A
//! client's socket is registered once for its whole life; a server connection's stays with
//! one loop until a session on another loop checks it out, which moves it
//! ([`LoopSocket::move_to`], two `epoll_ctl`). See docs/data-plane.md.

mod socket;

use std::io;
use std::sync::{Arc, Mutex, Weak};

use mio::{Interest, Token};

pub(crate) use socket::Shared as SocketShared;
pub use socket::{LoopSocket, Peeked, peek};

/// The token of the loop's waker (sessions handed over, the proxy's phase changed).
pub const WAKER: Token = Token(usize::MAX);

/// Tokens in use, by socket: the loop wakes the tasks of a socket no session in the loop
/// owns through it.
#[derive(Default)]
struct Sockets {
    slots: Vec<Option<Weak<SocketShared>>>,
    free: Vec<usize>,
}

/// What the loop and the sockets share.
pub struct Plane {
    /// Which loop polls it (0, 1, …).
    index: usize,
    registry: mio::Registry,
    waker: mio::Waker,
    sockets: Mutex<Sockets>,
}

impl Plane {
    fn sockets(&self) -> std::sync::MutexGuard<'_, Sockets> {
        self.sockets.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A socket closed or moved away: its token is free.
    pub(crate) fn forget(&self, token: Token) {
        let mut s = self.sockets();
        if let Some(slot) = s.slots.get_mut(token.0) {
            *slot = None;
            s.free.push(token.0);
        }
    }

    /// Register `fd` for reads and writes under a free token, and note the socket `make`
    /// builds for that token as its holder.
    fn register(
        self: &Arc<Self>,
        fd: std::os::fd::RawFd,
        make: impl FnOnce(Token) -> Weak<SocketShared>,
    ) -> io::Result<Token> {
        let mut sockets = self.sockets();
        let index = match sockets.free.pop() {
            Some(i) => i,
            None => {
                sockets.slots.push(None);
                sockets.slots.len() - 1
            }
        };
        let token = Token(index);
        let interest = Interest::READABLE | Interest::WRITABLE;
        if let Err(e) = self
            .registry
            .register(&mut mio::unix::SourceFd(&fd), token, interest)
        {
            sockets.free.push(index);
            return Err(e);
        }
        sockets.slots[index] = Some(make(token));
        Ok(token)
    }
}

/// A handle on the data plane. Cheap to clone.
#[derive(Clone)]
pub struct DataPlane(Arc<Plane>);

impl std::fmt::Debug for DataPlane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DataPlane")
    }
}

impl DataPlane {
    /// A data plane (loop number `index`) and the `Poll` its loop waits on.
    pub fn new(index: usize) -> io::Result<(Self, mio::Poll)> {
        let poll = mio::Poll::new()?;
        let registry = poll.registry().try_clone()?;
        let waker = mio::Waker::new(poll.registry(), WAKER)?;
        let plane = Plane {
            index,
            registry,
            waker,
            sockets: Mutex::default(),
        };
        Ok((Self(Arc::new(plane)), poll))
    }

    /// Which loop polls it.
    pub fn index(&self) -> usize {
        self.0.index
    }

    /// Register a non-blocking socket with the loop.
    pub fn adopt_mio(&self, stream: mio::net::TcpStream) -> io::Result<LoopSocket> {
        use std::os::fd::AsRawFd;
        let fd = stream.as_raw_fd();
        let mut shared = None;
        self.0.register(fd, |token| {
            let s = LoopSocket::shared(stream, token, self.0.clone());
            let weak = Arc::downgrade(&s);
            shared = Some(s);
            weak
        })?;
        Ok(LoopSocket(shared.expect("made at registration")))
    }

    /// A tokio socket, taken out of tokio's reactor (which leaves it non-blocking) and
    /// registered with the loop.
    pub fn adopt_tokio(&self, stream: tokio::net::TcpStream) -> io::Result<LoopSocket> {
        self.adopt_mio(mio::net::TcpStream::from_std(stream.into_std()?))
    }

    /// Wake the loop.
    pub fn wake(&self) {
        if let Err(e) = self.0.waker.wake() {
            tracing::error!(error = %e, "cannot wake the data plane's loop");
        }
    }

    /// The socket with this token, if it is open.
    pub(crate) fn socket(&self, token: Token) -> Option<Arc<SocketShared>> {
        self.0
            .sockets()
            .slots
            .get(token.0)
            .and_then(|s| s.as_ref())
            .and_then(Weak::upgrade)
    }
}

#[cfg(test)]
mod tests;
