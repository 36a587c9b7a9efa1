//! Reading whole frames from an async stream, and writing bytes to a socket without waiting
//! when it takes them at once. Reading is cancel-safe: all state lives in the buffer, so a
//! `read_frame` future may be dropped in a `select!` (or a `poll_frame` left unfinished)
//! without losing bytes.

use std::future::poll_fn;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio_util::io::poll_read_buf;

use super::frame::{Frame, FrameError, decode, header};

/// Why reading a frame failed.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The bytes are not a valid message.
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// The socket failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Room made for a read by [`FrameReader::poll_fill`] when nothing bigger is awaited.
const READ_ROOM: usize = 4096;

/// Room kept for a read by [`FrameReader::read_frame`] (a client's messages, most of them
/// small): taken frames leave the buffer's front behind them, and without it the room at the
/// end shrinks until a message arrives in two reads. Space freed at the front is reused when
/// the taken frames are gone, so the buffer does not grow.
const MESSAGE_ROOM: usize = 512;

/// A frame reader: a buffer, a size limit and the set of valid type bytes.
#[derive(Debug)]
pub struct FrameReader {
    buf: BytesMut,
    max_len: usize,
    valid_tag: fn(u8) -> bool,
}

impl FrameReader {
    /// A reader that accepts messages up to `max_len` bytes whose type passes `valid_tag`.
    pub fn new(max_len: usize, valid_tag: fn(u8) -> bool) -> Self {
        Self {
            buf: BytesMut::with_capacity(8192),
            max_len,
            valid_tag,
        }
    }

    /// A reader that starts with bytes already read.
    pub fn with_buffer(buf: BytesMut, max_len: usize, valid_tag: fn(u8) -> bool) -> Self {
        Self {
            buf,
            max_len,
            valid_tag,
        }
    }

    /// A frame already buffered, without reading.
    #[inline]
    pub fn try_frame(&mut self) -> Result<Option<Frame>, FrameError> {
        // Most calls find the buffer empty (the relay asks before each read): no call then.
        if self.buf.is_empty() {
            return Ok(None);
        }
        decode(&mut self.buf, self.max_len, self.valid_tag)
    }

    /// The buffered bytes not yet taken as frames.
    pub fn into_buffer(self) -> BytesMut {
        self.buf
    }

    /// Whether bytes are buffered.
    pub fn has_buffered(&self) -> bool {
        !self.buf.is_empty()
    }

    /// The bytes read and not yet taken, for handling messages in place.
    pub fn buffered(&self) -> &[u8] {
        &self.buf
    }

    /// The complete message at `offset` in [`buffered`](Self::buffered): its type byte and
    /// wire size. `Ok(None)` when it is not all there yet.
    pub fn message_at(&self, offset: usize) -> Result<Option<(u8, usize)>, FrameError> {
        let rest = &self.buf[offset..];
        Ok(header(rest, self.max_len, self.valid_tag)?.filter(|(_, total)| rest.len() >= *total))
    }

    /// Append bytes read elsewhere (the data plane's loop reads into a buffer of its own).
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Drop `n` bytes (messages handled in place) from the front.
    pub fn consume(&mut self, n: usize) {
        self.buf.advance(n);
    }

    /// Read what the stream has into the buffer, making room for the message at the end of
    /// the buffer if it is bigger; `Ok(false)` at end of stream. Ready at once, reading
    /// nothing, while a complete message is buffered. A poll, for a caller polling by hand
    /// (no future made); cancel-safe.
    pub fn poll_fill<R: AsyncRead + Unpin>(
        &mut self,
        cx: &mut Context<'_>,
        r: &mut R,
    ) -> Poll<Result<bool, ReadError>> {
        if self.message_at(0)?.is_some() {
            return Poll::Ready(Ok(true));
        }
        // So the message at the front is incomplete: make room for the rest of it.
        let partial = header(&self.buf, self.max_len, self.valid_tag)?;
        let missing = partial.map_or(0, |(_, total)| total - self.buf.len());
        self.buf.reserve(missing.max(READ_ROOM));
        Poll::Ready(Ok(
            ready!(poll_read_buf(Pin::new(r), cx, &mut self.buf))? > 0
        ))
    }

    /// The next frame; `Ok(None)` on a clean end of stream between messages.
    pub async fn read_frame<R: AsyncRead + Unpin>(
        &mut self,
        r: &mut R,
    ) -> Result<Option<Frame>, ReadError> {
        poll_fn(|cx| self.poll_frame(cx, r)).await
    }

    /// [`read_frame`](Self::read_frame) as a poll, for a caller polling by hand (no future
    /// made).
    pub fn poll_frame<R: AsyncRead + Unpin>(
        &mut self,
        cx: &mut Context<'_>,
        r: &mut R,
    ) -> Poll<Result<Option<Frame>, ReadError>> {
        loop {
            if let Some(f) = self.try_frame()? {
                return Poll::Ready(Ok(Some(f)));
            }
            // Room for the rest of an incomplete message is made by `try_frame`.
            self.buf.reserve(MESSAGE_ROOM);
            if ready!(poll_read_buf(Pin::new(&mut *r), cx, &mut self.buf))? == 0 {
                return Poll::Ready(if self.buf.is_empty() {
                    Ok(None)
                } else {
                    Err(FrameError::Truncated.into())
                });
            }
        }
    }
}

/// A socket that can be written without waiting: what the kernel takes now, or `WouldBlock`.
pub trait TryWrite {
    /// Write some of `buf` now.
    fn try_write(&self, buf: &[u8]) -> std::io::Result<usize>;
}

impl TryWrite for tokio::net::tcp::OwnedWriteHalf {
    fn try_write(&self, buf: &[u8]) -> std::io::Result<usize> {
        tokio::net::tcp::OwnedWriteHalf::try_write(self, buf)
    }
}

/// Write all of `bytes`: first one write of what the socket takes now (the usual case for a
/// message or an answer, which fits in the socket's buffer), without a future's poll and its
/// waker; what is left, by waiting until the socket takes it.
pub async fn write_all<W: AsyncWrite + TryWrite + Unpin>(
    w: &mut W,
    bytes: &[u8],
) -> std::io::Result<()> {
    let done = match w.try_write(bytes) {
        Ok(n) => n,
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => 0,
        Err(e) => return Err(e),
    };
    if done < bytes.len() {
        w.write_all(&bytes[done..]).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use tokio::io::{AsyncReadExt, ReadBuf};

    use super::*;
    use crate::protocol::frame::{is_backend_tag, is_frontend_tag};

    /// A stream that hands out its chunks, as much of each as the reader has room for, and
    /// notes the room it was offered at each read.
    struct Chunks {
        chunks: VecDeque<Vec<u8>>,
        offered: Vec<usize>,
    }

    impl AsyncRead for Chunks {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<std::io::Result<()>> {
            self.offered.push(buf.remaining());
            if let Some(mut chunk) = self.chunks.pop_front() {
                let n = chunk.len().min(buf.remaining());
                buf.put_slice(&chunk[..n]);
                if n < chunk.len() {
                    self.chunks.push_front(chunk.split_off(n));
                }
            }
            Poll::Ready(Ok(()))
        }
    }

    /// A simple Query message.
    fn query(sql: &str) -> Vec<u8> {
        let mut out = BytesMut::new();
        postgres_protocol::message::frontend::query(sql, &mut out).unwrap();
        out.to_vec()
    }

    /// A client's messages taken one by one (the frames dropped, as the relay drops them once
    /// sent): every one arrives in one read, and the buffer reuses its room instead of
    /// growing.
    #[tokio::test]
    async fn read_frame_keeps_room_for_the_next_message() {
        let query = query("SELECT abalance FROM pgbench_accounts");
        let mut stream = Chunks {
            chunks: std::iter::repeat_n(query, 1000).collect(),
            offered: Vec::new(),
        };
        let mut r =
            FrameReader::with_buffer(BytesMut::with_capacity(1024), 1 << 20, is_frontend_tag);
        for _ in 0..1000 {
            let f = r.read_frame(&mut stream).await.unwrap().unwrap();
            assert_eq!(f.tag, b'Q');
        }
        assert_eq!(stream.offered.len(), 1000, "one read per message");
        assert!(stream.offered.iter().all(|room| *room >= MESSAGE_ROOM));
        assert!(r.buf.capacity() <= 2 * 1024, "grew to {}", r.buf.capacity());
    }

    /// The rest of a big message is read into room made for all of it at once.
    #[tokio::test]
    async fn read_frame_makes_room_for_a_big_message() {
        let big = query(&"x".repeat(200_000));
        let (head, rest) = big.split_at(5);
        let mut stream = Chunks {
            chunks: [head.to_vec(), rest.to_vec()].into(),
            offered: Vec::new(),
        };
        let mut r = FrameReader::new(1 << 20, is_frontend_tag);
        let f = r.read_frame(&mut stream).await.unwrap().unwrap();
        assert_eq!(f.body.len(), 200_000 + 1);
        assert_eq!(stream.offered.len(), 2, "{:?}", stream.offered);
        assert!(stream.offered[1] >= rest.len(), "{:?}", stream.offered);
    }

    /// Everything written arrives in order, whether the socket takes it at once or only
    /// part of it (8 MiB to a peer that reads it slowly).
    #[tokio::test]
    async fn write_all_writes_everything_when_the_socket_takes_part() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let ours = tokio::net::TcpStream::connect(l.local_addr().unwrap())
            .await
            .unwrap();
        let (mut peer, _) = l.accept().await.unwrap();
        let (_rd, mut wr) = ours.into_split();
        let sent: Vec<u8> = (0..8 << 20).map(|i: u32| (i % 251) as u8).collect();
        let reading = tokio::spawn(async move {
            let mut got = Vec::new();
            let mut chunk = vec![0u8; 4096];
            loop {
                let n = peer.read(&mut chunk).await.unwrap();
                if n == 0 {
                    return got;
                }
                got.extend_from_slice(&chunk[..n]);
                tokio::task::yield_now().await;
            }
        });
        write_all(&mut wr, b"small").await.unwrap();
        write_all(&mut wr, &sent).await.unwrap();
        write_all(&mut wr, b"").await.unwrap();
        drop((_rd, wr));
        let got = reading.await.unwrap();
        assert_eq!(&got[..5], b"small");
        assert!(got[5..] == sent[..], "{} bytes arrived", got.len());
    }

    /// Table: bytes buffered → what `poll_fill` says with a stream at its end, and what stays
    /// buffered. A complete message is handed back without reading; a partial one reads.
    #[tokio::test]
    async fn fill_reads_only_without_a_complete_message() {
        let cases: [(&[u8], Result<bool, ()>); 4] = [
            (b"Z\0\0\0\x05I", Ok(true)),
            (b"Z\0\0\0\x05IZ\0", Ok(true)),
            (b"Z\0\0\0\x05", Ok(false)),
            (b"", Ok(false)),
        ];
        for (buffered, want) in cases {
            let mut r = FrameReader::with_buffer(BytesMut::from(buffered), 1 << 20, is_backend_tag);
            let got = poll_fn(|cx| r.poll_fill(cx, &mut tokio::io::empty()))
                .await
                .map_err(|_| ());
            assert_eq!(got, want, "{buffered:?}");
            assert_eq!(r.buffered(), buffered);
        }
        // A malformed header is an error, not a read.
        let mut r =
            FrameReader::with_buffer(BytesMut::from(&b"?\0\0\0\x05"[..]), 64, is_backend_tag);
        assert!(
            poll_fn(|cx| r.poll_fill(cx, &mut tokio::io::empty()))
                .await
                .is_err()
        );
    }
}
