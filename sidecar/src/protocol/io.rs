//! Reading whole frames from an async stream. Cancel-safe: all state lives in the buffer, so
//! a `read_frame` future may be dropped in a `select!` without losing bytes.

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};

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

/// Room made for a read when nothing bigger is awaited.
const READ_ROOM: usize = 4096;

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
    pub fn try_frame(&mut self) -> Result<Option<Frame>, FrameError> {
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

    /// Drop `n` bytes (messages handled in place) from the front.
    pub fn consume(&mut self, n: usize) {
        self.buf.advance(n);
    }

    /// Read what the stream has into the buffer, making room for the message at the end of
    /// the buffer if it is bigger; `Ok(false)` at end of stream. Returns at once, reading
    /// nothing, while a complete message is buffered. Cancel-safe.
    pub async fn fill<R: AsyncRead + Unpin>(&mut self, r: &mut R) -> Result<bool, ReadError> {
        if self.message_at(0)?.is_some() {
            return Ok(true);
        }
        // So the message at the front is incomplete: make room for the rest of it.
        let partial = header(&self.buf, self.max_len, self.valid_tag)?;
        let missing = partial.map_or(0, |(_, total)| total - self.buf.len());
        self.buf.reserve(missing.max(READ_ROOM));
        Ok(r.read_buf(&mut self.buf).await? > 0)
    }

    /// The next frame; `Ok(None)` on a clean end of stream between messages.
    pub async fn read_frame<R: AsyncRead + Unpin>(
        &mut self,
        r: &mut R,
    ) -> Result<Option<Frame>, ReadError> {
        loop {
            if let Some(f) = self.try_frame()? {
                return Ok(Some(f));
            }
            if r.read_buf(&mut self.buf).await? == 0 {
                return if self.buf.is_empty() {
                    Ok(None)
                } else {
                    Err(FrameError::Truncated.into())
                };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::frame::is_backend_tag;

    /// Table: bytes buffered → what `fill` says with a stream at its end, and what stays
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
            let got = r.fill(&mut tokio::io::empty()).await.map_err(|_| ());
            assert_eq!(got, want, "{buffered:?}");
            assert_eq!(r.buffered(), buffered);
        }
        // A malformed header is an error, not a read.
        let mut r =
            FrameReader::with_buffer(BytesMut::from(&b"?\0\0\0\x05"[..]), 64, is_backend_tag);
        assert!(r.fill(&mut tokio::io::empty()).await.is_err());
    }
}
