//! A session's client socket: a tokio socket's halves (the `tasks` data path, session mode),
//! or a socket registered with the data plane's loop (`event_loop`), which tokio tasks use
//! too while the session is away from the loop.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

use super::wakes::SideWakes;
use crate::dataplane::LoopSocket;
use crate::protocol::frame::{Frame, is_frontend_tag};
use crate::protocol::io::{FrameReader, ReadError, TryWrite, write_all};

/// The read side of a client socket.
#[derive(Debug)]
pub enum ClientRead {
    /// A tokio socket's read half.
    Tcp(OwnedReadHalf),
    /// A socket of the data plane.
    Loop(LoopSocket),
}

/// The write side of a client socket.
#[derive(Debug)]
pub enum ClientWrite {
    /// A tokio socket's write half.
    Tcp(OwnedWriteHalf),
    /// A socket of the data plane.
    Loop(LoopSocket),
}

impl ClientRead {
    /// Whether the client closed (`true`) or sent more (`false`), without taking a byte.
    fn poll_closed(&mut self, cx: &mut Context<'_>) -> Poll<bool> {
        match self {
            ClientRead::Tcp(rd) => {
                let mut probe = [0u8; 1];
                let mut buf = ReadBuf::new(&mut probe);
                match ready!(rd.poll_peek(cx, &mut buf)) {
                    Ok(0) | Err(_) => Poll::Ready(true),
                    Ok(_) => Poll::Ready(false),
                }
            }
            ClientRead::Loop(s) => s.poll_closed(cx),
        }
    }
}

impl AsyncRead for ClientRead {
    #[inline]
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ClientRead::Tcp(rd) => Pin::new(rd).poll_read(cx, buf),
            ClientRead::Loop(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for ClientWrite {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            ClientWrite::Tcp(wr) => Pin::new(wr).poll_write(cx, buf),
            ClientWrite::Loop(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ClientWrite::Tcp(wr) => Pin::new(wr).poll_flush(cx),
            ClientWrite::Loop(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ClientWrite::Tcp(wr) => Pin::new(wr).poll_shutdown(cx),
            ClientWrite::Loop(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

impl TryWrite for ClientWrite {
    #[inline]
    fn try_write(&self, buf: &[u8]) -> io::Result<usize> {
        match self {
            ClientWrite::Tcp(wr) => wr.try_write(buf),
            ClientWrite::Loop(s) => s.write_now(buf),
        }
    }
}

/// The client side of a session. Its socket is read only through its methods and the relay,
/// which keep the client side's flag ([`SideWakes`]) true whenever the socket's registration
/// may hold a waker other than the client side's.
pub struct ClientIo {
    /// Read side.
    pub(super) rd: ClientRead,
    /// Write side.
    pub(super) wr: ClientWrite,
    /// Frames from the client.
    pub(super) reader: FrameReader,
    /// Buffers for what goes to the server and to the client, kept between relays (each relay
    /// empties them first, and drops one grown past `KEEP_BUFFER_BYTES`).
    pub(super) spare: (BytesMut, BytesMut),
    /// Which socket woke a relay: made at first use (a relay or a wait on tokio), with every
    /// flag set, as each read would set its own. A session that only the data plane's loop
    /// relays never makes them (five allocations fewer per login).
    pub(super) wakes: Option<SideWakes>,
}

impl ClientIo {
    /// Split a socket; `buffered` holds bytes read during startup.
    pub fn new(
        rd: OwnedReadHalf,
        wr: OwnedWriteHalf,
        buffered: BytesMut,
        max_message: usize,
    ) -> Self {
        Self::with(
            ClientRead::Tcp(rd),
            ClientWrite::Tcp(wr),
            buffered,
            max_message,
        )
    }

    /// A socket of the data plane; `buffered` holds bytes read during startup.
    pub fn on_loop(sock: LoopSocket, buffered: BytesMut, max_message: usize) -> Self {
        Self::with(
            ClientRead::Loop(sock.clone()),
            ClientWrite::Loop(sock),
            buffered,
            max_message,
        )
    }

    fn with(rd: ClientRead, wr: ClientWrite, buffered: BytesMut, max_message: usize) -> Self {
        Self {
            rd,
            wr,
            reader: FrameReader::with_buffer(buffered, max_message, is_frontend_tag),
            spare: (BytesMut::new(), BytesMut::new()),
            wakes: None,
        }
    }

    /// The data plane's socket, when the client is on one.
    pub fn loop_socket(&self) -> Option<&LoopSocket> {
        match &self.rd {
            ClientRead::Loop(s) => Some(s),
            ClientRead::Tcp(_) => None,
        }
    }

    /// Close the connection: the socket is closed whole (its FIN goes with the close), not
    /// shut down for writing first as a dropped write half would be, a system call saved.
    pub fn close(self) {
        if let (ClientRead::Tcp(rd), ClientWrite::Tcp(wr)) = (self.rd, self.wr)
            && let Ok(sock) = rd.reunite(wr)
        {
            drop(sock);
        }
    }

    /// Write bytes to the client.
    pub async fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        write_all(&mut self.wr, bytes).await
    }

    /// The next client message.
    pub async fn read(&mut self) -> Result<Option<Frame>, ReadError> {
        // Marked first, so that it holds even if this read is dropped before it ends: the
        // socket's registration may come to hold this task's waker, not the client side's,
        // and the next poll_next must look at the socket (and at what the read left buffered).
        self.mark_client();
        self.reader.read_frame(&mut self.rd).await
    }

    /// Whether the client closed its socket (`true`) or sent more (`false`), as a poll that
    /// never takes a byte (a one-byte peek), for a wait that does not read messages.
    pub fn poll_closed(&mut self, cx: &mut Context<'_>) -> Poll<bool> {
        // The peek registers the task's waker on the socket: the next poll_next looks again.
        self.mark_client();
        self.rd.poll_closed(cx)
    }

    /// The next [`poll_next`](Self::poll_next) must look at the client's socket: its flag is
    /// set, on wakers already made (ones made later start with every flag set).
    fn mark_client(&self) {
        if let Some(w) = &self.wakes {
            w.client.set();
        }
    }

    /// The next client message between transactions, as a poll, by the relay's rule
    /// ([`SideWakes`]): the socket is read only when the client's side woke (or was ready last
    /// time, or a relay or [`read`](Self::read) began since); otherwise its side's waker is
    /// still registered from the relay's last poll, and the poll returns at once. So the wait
    /// after a transaction neither reads the socket again nor swaps the registration's waker
    /// for the task's, and a relay's next poll finds its own waker there.
    pub fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Result<Option<Frame>, ReadError>> {
        let wakes = self.wakes.get_or_insert_with(SideWakes::new);
        wakes.register(cx.waker());
        if !wakes.client.take() {
            return Poll::Pending;
        }
        let mut side = Context::from_waker(wakes.client.waker());
        let r = ready!(self.reader.poll_frame(&mut side, &mut self.rd));
        // Ready: more may be buffered, so the next poll looks again.
        wakes.client.set();
        Poll::Ready(r)
    }
}
