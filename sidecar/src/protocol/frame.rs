//! Framing of regular (tagged) protocol messages: one type byte, an int32 length that counts
//! itself, then the body.

use bytes::{Buf, Bytes, BytesMut};
use thiserror::Error;

/// One protocol message: its type byte and its body (without the length).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    /// The message type byte, e.g. `b'Q'`.
    pub tag: u8,
    /// The body after the length field.
    pub body: Bytes,
}

impl Frame {
    /// The frame as it goes on the wire.
    pub fn encode(&self, out: &mut BytesMut) {
        out.reserve(5 + self.body.len());
        // The type byte and length as one fixed-size copy (no call to memcpy for them).
        let len = ((self.body.len() + 4) as u32).to_be_bytes();
        out.extend_from_slice(&[self.tag, len[0], len[1], len[2], len[3]]);
        out.extend_from_slice(&self.body);
    }

    /// The frame's wire size.
    pub fn wire_len(&self) -> usize {
        5 + self.body.len()
    }
}

/// Why a byte stream is not a valid message sequence.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum FrameError {
    /// Length field below 4.
    #[error("invalid message length {0}")]
    BadLength(i64),
    /// Message larger than the configured limit.
    #[error("message of {size} bytes is over the limit of {limit} bytes")]
    TooLarge {
        /// Announced size.
        size: u64,
        /// Configured limit.
        limit: usize,
    },
    /// A type byte this side of the protocol never sends.
    #[error("unknown message type {0:?}")]
    UnknownType(char),
    /// The peer closed the stream in the middle of a message.
    #[error("incomplete message at end of stream")]
    Truncated,
}

/// Message types a frontend (client) may send after startup.
#[inline]
pub fn is_frontend_tag(tag: u8) -> bool {
    FRONTEND_TAGS[tag as usize]
}

/// Message types a backend (server) may send.
#[inline]
pub fn is_backend_tag(tag: u8) -> bool {
    BACKEND_TAGS[tag as usize]
}

/// [`is_frontend_tag`] for every byte: the reader calls it through a pointer for each
/// message, so one load instead of a chain of compares.
const FRONTEND_TAGS: [bool; 256] = tag_table(true);
/// [`is_backend_tag`] for every byte.
const BACKEND_TAGS: [bool; 256] = tag_table(false);

const fn tag_table(frontend: bool) -> [bool; 256] {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        t[b] = if frontend {
            frontend_tag(b as u8)
        } else {
            backend_tag(b as u8)
        };
        b += 1;
    }
    t
}

const fn frontend_tag(tag: u8) -> bool {
    matches!(
        tag,
        b'B' | b'C'
            | b'c'
            | b'd'
            | b'D'
            | b'E'
            | b'f'
            | b'F'
            | b'H'
            | b'P'
            | b'p'
            | b'Q'
            | b'S'
            | b'X'
    )
}

const fn backend_tag(tag: u8) -> bool {
    matches!(
        tag,
        b'R' | b'K'
            | b'2'
            | b'3'
            | b'C'
            | b'd'
            | b'c'
            | b'G'
            | b'H'
            | b'W'
            | b'D'
            | b'I'
            | b'E'
            | b'V'
            | b'v'
            | b'n'
            | b'N'
            | b'A'
            | b't'
            | b'S'
            | b'1'
            | b's'
            | b'Z'
            | b'T'
    )
}

/// The type byte and wire size (type byte and length included) of the message at the front
/// of `buf`, once its header is complete: `Ok(None)` while fewer than five bytes are there.
/// The header is checked as soon as it is complete, so an oversized or malformed message is
/// refused before its body is buffered.
pub fn header(
    buf: &[u8],
    max_len: usize,
    valid_tag: fn(u8) -> bool,
) -> Result<Option<(u8, usize)>, FrameError> {
    let Some(&tag) = buf.first() else {
        return Ok(None);
    };
    if !valid_tag(tag) {
        return Err(FrameError::UnknownType(tag as char));
    }
    if buf.len() < 5 {
        return Ok(None);
    }
    let len = i32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]);
    if len < 4 {
        return Err(FrameError::BadLength(len.into()));
    }
    let total = len as u64 + 1;
    if total > max_len as u64 {
        return Err(FrameError::TooLarge {
            size: total,
            limit: max_len,
        });
    }
    Ok(Some((tag, total as usize)))
}

/// Take one complete frame off the front of `buf`, if there is one.
///
/// `Ok(None)` means more bytes are needed (room for them is reserved); see [`header`].
pub fn decode(
    buf: &mut BytesMut,
    max_len: usize,
    valid_tag: fn(u8) -> bool,
) -> Result<Option<Frame>, FrameError> {
    let Some((tag, total)) = header(buf, max_len, valid_tag)? else {
        return Ok(None);
    };
    if buf.len() < total {
        buf.reserve(total - buf.len());
        return Ok(None);
    }
    let mut msg = buf.split_to(total);
    msg.advance(5);
    Ok(Some(Frame {
        tag,
        body: msg.freeze(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(b: &[u8]) -> BytesMut {
        BytesMut::from(b)
    }

    /// The tables hold exactly the protocol's message types for each side.
    #[test]
    fn tag_tables_are_the_protocol_message_types() {
        let frontend = b"BCcdDEfFHPpQSX";
        let backend = b"RK23CdcGHWDIEVvnNAtS1sZT";
        for b in 0..=255u8 {
            assert_eq!(is_frontend_tag(b), frontend.contains(&b), "{b}");
            assert_eq!(is_backend_tag(b), backend.contains(&b), "{b}");
        }
    }

    #[test]
    fn decodes_complete_and_partial_frames() {
        let mut buf = bytes(b"Q\0\0\0\x09abcd\0S\0\0\0\x04");
        let f = decode(&mut buf, 1024, is_frontend_tag).unwrap().unwrap();
        assert_eq!(f.tag, b'Q');
        assert_eq!(&f.body[..], b"abcd\0");
        let f = decode(&mut buf, 1024, is_frontend_tag).unwrap().unwrap();
        assert_eq!((f.tag, f.body.len()), (b'S', 0));
        assert_eq!(decode(&mut buf, 1024, is_frontend_tag).unwrap(), None);
    }

    #[test]
    fn framing_edge_cases() {
        // (input, limit, expected)
        type Case = (&'static [u8], usize, Result<Option<u8>, FrameError>);
        let table: &[Case] = &[
            (b"", 100, Ok(None)),
            (b"Q", 100, Ok(None)),
            (b"Q\0\0\0", 100, Ok(None)),
            (b"Q\0\0\0\x05", 100, Ok(None)),
            (b"Q\0\0\0\x05x", 100, Ok(Some(b'Q'))),
            (b"Q\0\0\0\x03", 100, Err(FrameError::BadLength(3))),
            (b"Q\xff\xff\xff\xff", 100, Err(FrameError::BadLength(-1))),
            (
                b"Q\0\0\0\x64",
                100,
                Err(FrameError::TooLarge {
                    size: 101,
                    limit: 100,
                }),
            ),
            (b"Q\0\0\0\x63", 100, Ok(None)),
            (b"Z\0\0\0\x05I", 100, Err(FrameError::UnknownType('Z'))),
            (b"\0\0\0\x08", 100, Err(FrameError::UnknownType('\0'))),
        ];
        for (input, limit, expected) in table {
            let mut buf = bytes(input);
            let got = decode(&mut buf, *limit, is_frontend_tag).map(|o| o.map(|f| f.tag));
            assert_eq!(&got, expected, "input {input:?}");
        }
    }

    #[test]
    fn encode_round_trips() {
        let f = Frame {
            tag: b'd',
            body: Bytes::from_static(b"row"),
        };
        let mut out = BytesMut::new();
        f.encode(&mut out);
        assert_eq!(out.len(), f.wire_len());
        assert_eq!(decode(&mut out, 100, is_frontend_tag).unwrap(), Some(f));
    }

    proptest::proptest! {
        #[test]
        fn never_panics_on_garbage(data in proptest::collection::vec(proptest::num::u8::ANY, 0..64)) {
            let mut buf = BytesMut::from(&data[..]);
            for _ in 0..64 {
                match decode(&mut buf, 32, is_frontend_tag) {
                    Ok(Some(_)) => continue,
                    _ => break,
                }
            }
        }
    }
}
