//! A socket registered once with the data plane's mio loop, usable both by the loop (plain
//! non-blocking reads and writes) and by tokio tasks ([`AsyncRead`] / [`AsyncWrite`]): while
//! no session in the loop owns it, the loop passes its readiness events on to the wakers the
//! tasks registered here.
//!
//! The rule that keeps wake-ups from being lost with edge-triggered readiness: a task
//! registers its waker first, then tries the system call; only a `WouldBlock` makes it wait,
//! and the next edge (new bytes, room to write) wakes it. The loop, when a session comes back
//! to it, tries its sockets once before it waits for an edge.

use std::io::{self, Read, Write};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use futures::task::AtomicWaker;
use mio::Token;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::{DataPlane, Plane};

/// What a loop socket's holders share.
pub(crate) struct Shared {
    pub(crate) stream: mio::net::TcpStream,
    /// Its token in the plane it is registered with (changes when it moves).
    token: AtomicUsize,
    /// Bytes may be waiting: set by the loop at a readable event and after a read that
    /// filled its buffer; cleared before each read (so an edge during the read sets it
    /// again). The loop reads a socket only while it is set.
    readable: AtomicBool,
    /// The peer's end of stream was seen by the loop: reads will not wait again (an edge
    /// that brought bytes and the end together leaves a short read that is not the end).
    read_closed: AtomicBool,
    read: AtomicWaker,
    write: AtomicWaker,
    /// The plane it is registered with (changes when it moves).
    plane: Mutex<Arc<Plane>>,
    /// That plane's index, read without the lock (once per transaction).
    plane_index: AtomicUsize,
}

impl Shared {
    /// Note a readiness event in the flags (see [`LoopSocket::maybe_readable`]):
    /// `read_closed`, the peer closed its end, is kept for good.
    fn note(&self, readable: bool, read_closed: bool) {
        if read_closed {
            self.read_closed.store(true, Ordering::Release);
        }
        if readable {
            self.readable.store(true, Ordering::Release);
        }
    }

    /// Wake whatever task waits on this socket (an event the loop does not handle itself).
    pub(crate) fn wake(&self, readable: bool, read_closed: bool, writable: bool) {
        self.note(readable, read_closed);
        if readable || read_closed {
            self.read.wake();
        }
        if writable {
            self.write.wake();
        }
    }
}

/// What one non-blocking peek of a socket found (nothing is taken from it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Peeked {
    /// Nothing arrived.
    Nothing,
    /// Bytes wait to be read.
    Bytes,
    /// The peer closed (or the socket failed).
    Closed,
}

/// Peek one byte of a socket without waiting: the one look the pre-ping's quiet check, the
/// loop's watch of a waiting client and tokio's wait on a loop socket share.
pub fn peek(socket: &impl std::os::fd::AsFd) -> Peeked {
    let mut probe = [std::mem::MaybeUninit::<u8>::uninit(); 1];
    match socket2::SockRef::from(socket).peek(&mut probe) {
        Ok(0) => Peeked::Closed,
        Ok(_) => Peeked::Bytes,
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Peeked::Nothing,
        Err(_) => Peeked::Closed,
    }
}

/// The token of a socket that a failed move left in no plane's table.
const NO_TOKEN: usize = usize::MAX - 2;

impl Drop for Shared {
    fn drop(&mut self) {
        // The socket closes with the stream (and leaves the epoll set with it); its token
        // may be given to the next socket.
        let token = *self.token.get_mut();
        if token != NO_TOKEN {
            let plane = self.plane.get_mut().unwrap_or_else(|p| p.into_inner());
            plane.forget(Token(token));
        }
    }
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoopSocket")
            .field("token", &self.token.load(Ordering::Relaxed))
            .finish()
    }
}

/// A TCP socket registered with the data plane (see the module's doc). Clones share the
/// socket: a session's read and write halves.
#[derive(Clone, Debug)]
pub struct LoopSocket(pub(crate) Arc<Shared>);

impl LoopSocket {
    pub(crate) fn shared(
        stream: mio::net::TcpStream,
        token: Token,
        plane: Arc<Plane>,
    ) -> Arc<Shared> {
        Arc::new(Shared {
            stream,
            token: AtomicUsize::new(token.0),
            readable: AtomicBool::new(true),
            read_closed: AtomicBool::new(false),
            read: AtomicWaker::new(),
            write: AtomicWaker::new(),
            plane_index: AtomicUsize::new(plane.index),
            plane: Mutex::new(plane),
        })
    }

    /// Its token in the loop it is registered with. Only that loop's thread moves a socket,
    /// while a session there holds it: the token that thread reads is current.
    pub fn token(&self) -> Token {
        Token(self.0.token.load(Ordering::Acquire))
    }

    /// Which loop it is registered with.
    pub fn plane_index(&self) -> usize {
        self.0.plane_index.load(Ordering::Acquire)
    }

    /// Register the socket with `to`'s loop instead of the one it is with (nothing to do if
    /// it is there already): out of the old loop's epoll set and token table, into the new
    /// one's. Called by the loop a session holding the socket runs on, so no other loop's
    /// session uses it meanwhile; the old loop may still pass on an event it read before
    /// the move, which at worst wakes a task for nothing. Readiness is not lost: an
    /// `epoll_ctl` ADD reports what is ready already, and the loop tries the socket once
    /// after the move. On an error the socket may be in no loop and must be closed.
    pub fn move_to(&self, to: &DataPlane) -> io::Result<()> {
        use std::os::fd::AsRawFd;
        let mut plane = self.0.plane.lock().unwrap_or_else(|p| p.into_inner());
        if Arc::ptr_eq(&plane, &to.0) {
            return Ok(());
        }
        let fd = self.0.stream.as_raw_fd();
        let old = self.token();
        plane.registry.deregister(&mut mio::unix::SourceFd(&fd))?;
        plane.forget(old);
        let weak = Arc::downgrade(&self.0);
        let token = match to.0.register(fd, |_| weak) {
            Ok(t) => t,
            Err(e) => {
                // In no table now: the old token may go to another socket, which this
                // one's close must not free.
                self.0.token.store(NO_TOKEN, Ordering::Release);
                return Err(e);
            }
        };
        self.0.token.store(token.0, Ordering::Release);
        self.0.plane_index.store(to.0.index, Ordering::Release);
        *plane = to.0.clone();
        self.mark(true, false);
        Ok(())
    }

    /// Read what the socket has now (the loop's read; never waits).
    pub fn read_now(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.readable.store(false, Ordering::Release);
        let r = (&self.0.stream).read(buf);
        if matches!(&r, Ok(n) if *n == buf.len())
            || matches!(&r, Err(e) if e.kind() == io::ErrorKind::Interrupted)
        {
            self.mark(true, false);
        }
        r
    }

    /// Whether bytes (or the end of stream) may be waiting (see the loop's rule in the
    /// module's doc).
    pub fn maybe_readable(&self) -> bool {
        self.0.readable.load(Ordering::Acquire) || self.0.read_closed.load(Ordering::Acquire)
    }

    /// Note a readiness event: bytes may be waiting (`readable`), or the peer closed its end
    /// (`read_closed`), after which the socket stays readable, to its end of stream.
    pub fn mark(&self, readable: bool, read_closed: bool) {
        self.0.note(readable, read_closed);
    }

    /// Write what the socket takes now (never waits).
    pub fn write_now(&self, buf: &[u8]) -> io::Result<usize> {
        (&self.0.stream).write(buf)
    }

    /// Whether nothing has arrived and the peer has not closed (one non-blocking peek).
    pub fn quiet(&self) -> bool {
        peek(&self.0.stream) == Peeked::Nothing
    }

    /// Whether the peer closed (`true`) or sent bytes (`false`), polled without taking a
    /// byte.
    pub fn poll_closed(&self, cx: &mut Context<'_>) -> Poll<bool> {
        self.0.read.register(cx.waker());
        match peek(&self.0.stream) {
            Peeked::Nothing => Poll::Pending,
            found => Poll::Ready(found == Peeked::Closed),
        }
    }

    /// The loop's look at a client waiting for a connection: one peek, whose bytes stay to
    /// be read (the socket is marked readable for them).
    pub fn peek_now(&self) -> Peeked {
        self.0.readable.store(false, Ordering::Release);
        let found = peek(&self.0.stream);
        if found == Peeked::Bytes {
            self.mark(true, false);
        }
        found
    }
}

impl AsyncRead for LoopSocket {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        // The loop's rule ([`read_now`](Self::read_now)): the socket is read only while an
        // event or a read that filled its buffer said bytes may wait. After a short read the
        // next poll waits for the loop's event instead of asking the kernel for nothing (one
        // system call per login saved: the StartupMessage is not there yet when the answer
        // to the SSLRequest has just gone out). The waker is registered first, so an event
        // noted after the look wakes this task.
        self.0.read.register(cx.waker());
        if !self.maybe_readable() {
            return Poll::Pending;
        }
        match self.read_now(buf.initialize_unfilled()) {
            Ok(n) => {
                buf.advance(n);
                Poll::Ready(Ok(()))
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Poll::Pending,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {
                cx.waker().wake_by_ref();
                Poll::Pending
            }
            Err(e) => Poll::Ready(Err(e)),
        }
    }
}

impl AsyncWrite for LoopSocket {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.0.write.register(cx.waker());
        match (&self.0.stream).write(buf) {
            Ok(n) => Poll::Ready(Ok(n)),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Poll::Pending,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {
                cx.waker().wake_by_ref();
                Poll::Pending
            }
            Err(e) => Poll::Ready(Err(e)),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(match self.0.stream.shutdown(std::net::Shutdown::Write) {
            Err(e) if e.kind() != io::ErrorKind::NotConnected => Err(e),
            _ => Ok(()),
        })
    }
}

impl crate::protocol::io::TryWrite for LoopSocket {
    fn try_write(&self, buf: &[u8]) -> io::Result<usize> {
        self.write_now(buf)
    }
}
