//! A server socket: plain TCP or TLS.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use crate::dataplane::LoopSocket;

/// Plain TCP or rustls over TCP.
#[derive(Debug)]
pub enum ServerStream {
    /// No TLS.
    Plain(TcpStream),
    /// TLS.
    Tls(Box<TlsStream<TcpStream>>),
    /// Plain TCP on the data plane's loop (`data_path: event_loop`).
    Loop(LoopSocket),
}

impl ServerStream {
    /// Whether nothing has arrived on the socket and the peer has not closed it, by one
    /// non-blocking peek (no round trip). A terminated backend leaves its FATAL and an end of
    /// stream; TLS records (a close_notify) count as something arrived. The kernel is asked,
    /// not the event loop's readiness: that lags until the loop next polls, and a connection
    /// whose server died in between would be handed out (tried in e69d87f, and
    /// `breaker_opens_fails_fast_and_recovers` caught a client losing its connection).
    pub fn quiet(&self) -> bool {
        let tcp = match self {
            ServerStream::Plain(s) => s,
            ServerStream::Tls(s) => s.get_ref().0,
            ServerStream::Loop(s) => return s.quiet(),
        };
        crate::dataplane::peek(tcp) == crate::dataplane::Peeked::Nothing
    }
}

impl crate::protocol::io::TryWrite for ServerStream {
    /// TLS is always written through its stream (`WouldBlock` here): its records are
    /// buffered and flushed there.
    #[inline]
    fn try_write(&self, buf: &[u8]) -> io::Result<usize> {
        match self {
            ServerStream::Plain(s) => s.try_write(buf),
            ServerStream::Tls(_) => Err(io::ErrorKind::WouldBlock.into()),
            ServerStream::Loop(s) => s.write_now(buf),
        }
    }
}

impl AsyncRead for ServerStream {
    #[inline]
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ServerStream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            ServerStream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            ServerStream::Loop(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for ServerStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            ServerStream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            ServerStream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            ServerStream::Loop(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ServerStream::Plain(s) => Pin::new(s).poll_flush(cx),
            ServerStream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            ServerStream::Loop(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ServerStream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            ServerStream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            ServerStream::Loop(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpListener;

    /// Quiet while nothing arrives; not quiet once the peer sent bytes or closed.
    #[tokio::test]
    async fn quiet_until_the_peer_sends_or_closes() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        for peer_does in ["nothing", "sends", "closes"] {
            let ours = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
            let (mut peer, _) = l.accept().await.unwrap();
            let ours = ServerStream::Plain(ours);
            match peer_does {
                "sends" => peer.write_all(b"E").await.unwrap(),
                "closes" => drop(peer),
                _ => {}
            }
            // Loopback delivers at once; give the kernel a moment anyway.
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            assert_eq!(ours.quiet(), peer_does == "nothing", "peer {peer_does}");
        }
    }
}
