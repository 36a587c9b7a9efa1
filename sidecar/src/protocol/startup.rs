//! The untagged first packet a client sends: StartupMessage, SSLRequest, GSSENCRequest or
//! CancelRequest.

use std::ops::Range;

use bytes::{Buf, BytesMut};

use super::FrameError;

/// Protocol version 3.0.
pub const PROTOCOL_3_0: i32 = 196_608;
/// SSLRequest code.
pub const SSL_REQUEST: i32 = 80_877_103;
/// GSSENCRequest code.
pub const GSSENC_REQUEST: i32 = 80_877_104;
/// CancelRequest code.
pub const CANCEL_REQUEST: i32 = 80_877_102;
/// Largest startup packet accepted (PostgreSQL's own limit).
pub const MAX_STARTUP_LEN: usize = 10_000;

/// A decoded startup-phase packet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StartupPacket {
    /// StartupMessage with its parameters in order.
    Startup(Params),
    /// SSLRequest: answer `N`, then read another packet.
    SslRequest,
    /// GSSENCRequest: answer `N`, then read another packet.
    GssEncRequest,
    /// CancelRequest for the backend with this process id and secret key.
    Cancel {
        /// The process id the client was given.
        pid: i32,
        /// The secret key the client was given.
        key: i32,
    },
}

/// A StartupMessage's parameters: the packet's text, checked as UTF-8 once, and where each
/// name and value lies in it (one allocation for the text and one for the places, however many
/// parameters the client sent).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Params {
    text: String,
    /// Each parameter's name and value, as byte ranges of `text`, in the client's order.
    spans: Vec<(Range<usize>, Range<usize>)>,
}

impl Params {
    /// Where the parameter `name` is (its index), if the client sent it.
    pub fn position(&self, name: &str) -> Option<usize> {
        self.spans
            .iter()
            .position(|(k, _)| &self.text[k.clone()] == name)
    }

    /// The value of the parameter at `index` (from [`Params::position`]).
    pub fn value(&self, index: usize) -> &str {
        &self.text[self.spans[index].1.clone()]
    }

    /// A parameter's value by name.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.position(name).map(|i| self.value(i))
    }

    /// Names and values in the client's order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.spans
            .iter()
            .map(|(k, v)| (&self.text[k.clone()], &self.text[v.clone()]))
    }
}

/// Why a startup packet is refused.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum StartupError {
    /// Framing problem (length).
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// A protocol version other than 3.0.
    #[error("unsupported frontend protocol {}.{}", .0 >> 16, .0 & 0xffff)]
    UnsupportedProtocol(i32),
    /// The parameter list is not NUL-terminated pairs.
    #[error("invalid startup packet layout")]
    Malformed,
}

/// Take one startup packet off the front of `buf`, if complete.
pub fn decode(buf: &mut BytesMut) -> Result<Option<StartupPacket>, StartupError> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let len = i32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
    if len < 8 {
        return Err(FrameError::BadLength(len.into()).into());
    }
    if len as usize > MAX_STARTUP_LEN {
        return Err(FrameError::TooLarge {
            size: len as u64,
            limit: MAX_STARTUP_LEN,
        }
        .into());
    }
    let len = len as usize;
    if buf.len() < len {
        return Ok(None);
    }
    let mut pkt = buf.split_to(len);
    pkt.advance(4);
    let code = pkt.get_i32();
    match code {
        SSL_REQUEST | GSSENC_REQUEST if len != 8 => Err(StartupError::Malformed),
        SSL_REQUEST => Ok(Some(StartupPacket::SslRequest)),
        GSSENC_REQUEST => Ok(Some(StartupPacket::GssEncRequest)),
        CANCEL_REQUEST => {
            if len != 16 {
                return Err(StartupError::Malformed);
            }
            Ok(Some(StartupPacket::Cancel {
                pid: pkt.get_i32(),
                key: pkt.get_i32(),
            }))
        }
        PROTOCOL_3_0 => parse_params(&pkt).map(|p| Some(StartupPacket::Startup(p))),
        other => Err(StartupError::UnsupportedProtocol(other)),
    }
}

fn parse_params(body: &[u8]) -> Result<Params, StartupError> {
    // name\0value\0 ... \0
    let Some((&0, pairs)) = body.split_last() else {
        return Err(StartupError::Malformed);
    };
    if pairs.is_empty() {
        return Ok(Params::default());
    }
    let Some((&0, pairs)) = pairs.split_last() else {
        return Err(StartupError::Malformed);
    };
    // NUL is ASCII: the text is UTF-8 exactly when every name and value is.
    let text = std::str::from_utf8(pairs).map_err(|_| StartupError::Malformed)?;
    let mut parts = pairs.split(|b| *b == 0);
    let mut spans = Vec::with_capacity(4);
    let mut at = 0;
    while let Some(k) = parts.next() {
        let v = parts.next().ok_or(StartupError::Malformed)?;
        if k.is_empty() {
            return Err(StartupError::Malformed);
        }
        let name = at..at + k.len();
        let value = name.end + 1..name.end + 1 + v.len();
        at = value.end + 1;
        spans.push((name, value));
    }
    Ok(Params {
        text: text.to_owned(),
        spans,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(code: i32, body: &[u8]) -> BytesMut {
        let mut b = BytesMut::new();
        b.extend_from_slice(&((8 + body.len()) as i32).to_be_bytes());
        b.extend_from_slice(&code.to_be_bytes());
        b.extend_from_slice(body);
        b
    }

    #[test]
    fn startup_message_parameters() {
        let mut b = packet(PROTOCOL_3_0, b"user\0alice\0database\0clinical\0\0");
        let p = decode(&mut b).unwrap().unwrap();
        let StartupPacket::Startup(params) = p else {
            panic!("{p:?}")
        };
        assert_eq!(params.get("user"), Some("alice"));
        assert_eq!(params.get("database"), Some("clinical"));
        assert!(b.is_empty());
    }

    /// Table: a StartupMessage body → its parameters in order (names and values found in the
    /// one text), or refused.
    #[test]
    fn parameters_in_order_from_one_text() {
        type Want<'a> = Option<&'a [(&'a str, &'a str)]>;
        let cases: [(&[u8], Want<'_>); 8] = [
            (b"\0", Some(&[])),
            (b"user\0alice\0\0", Some(&[("user", "alice")])),
            (
                b"user\0alice\0application_name\0\0client_encoding\0UTF8\0\0",
                Some(&[
                    ("user", "alice"),
                    ("application_name", ""),
                    ("client_encoding", "UTF8"),
                ]),
            ),
            (
                "user\0\u{e9}l\u{e8}ve\0database\0d\0\0".as_bytes(),
                Some(&[("user", "\u{e9}l\u{e8}ve"), ("database", "d")]),
            ),
            (b"user\0\xff\0\0", None),
            (
                b"user\0alice\0database\0\0\0",
                Some(&[("user", "alice"), ("database", "")]),
            ),
            // A name without a value, a list without its final NUL.
            (b"user\0alice\0database\0\0", None),
            (b"user\0alice\0database\0", None),
        ];
        for (body, want) in cases {
            let got = parse_params(body);
            match want {
                Some(want) => {
                    let got = got.unwrap_or_else(|e| panic!("{body:?}: {e}"));
                    assert_eq!(got.iter().collect::<Vec<_>>(), want, "{body:?}");
                    for (i, (k, v)) in want.iter().enumerate() {
                        assert_eq!(got.position(k), Some(i), "{body:?} {k}");
                        assert_eq!(got.get(k), Some(*v), "{body:?} {k}");
                    }
                    assert_eq!(got.get("options"), None);
                }
                None => assert_eq!(got, Err(StartupError::Malformed), "{body:?}"),
            }
        }
    }

    #[test]
    fn special_requests() {
        assert_eq!(
            decode(&mut packet(SSL_REQUEST, b"")).unwrap(),
            Some(StartupPacket::SslRequest)
        );
        assert_eq!(
            decode(&mut packet(GSSENC_REQUEST, b"")).unwrap(),
            Some(StartupPacket::GssEncRequest)
        );
        let mut cancel = packet(CANCEL_REQUEST, &[0, 0, 0, 7, 0, 0, 0, 9]);
        assert_eq!(
            decode(&mut cancel).unwrap(),
            Some(StartupPacket::Cancel { pid: 7, key: 9 })
        );
    }

    #[test]
    fn refusals() {
        let table: Vec<(BytesMut, StartupError)> = vec![
            (
                BytesMut::from(&[0u8, 0, 0, 3][..]),
                FrameError::BadLength(3).into(),
            ),
            (
                BytesMut::from(&[0u8, 1, 0, 0][..]),
                FrameError::TooLarge {
                    size: 65536,
                    limit: MAX_STARTUP_LEN,
                }
                .into(),
            ),
            (packet(1234, b""), StartupError::UnsupportedProtocol(1234)),
            (
                packet(PROTOCOL_3_0, b"user\0alice\0"),
                StartupError::Malformed,
            ),
            (packet(PROTOCOL_3_0, b"user\0\0"), StartupError::Malformed),
            (packet(PROTOCOL_3_0, b"\0x\0\0"), StartupError::Malformed),
            (packet(CANCEL_REQUEST, b"1234"), StartupError::Malformed),
        ];
        for (mut input, want) in table {
            assert_eq!(decode(&mut input), Err(want.clone()), "{want:?}");
        }
        assert_eq!(decode(&mut BytesMut::from(&[0u8, 0][..])), Ok(None));
        assert_eq!(
            decode(&mut BytesMut::from(&[0u8, 0, 0, 9, 0][..])),
            Ok(None)
        );
    }
}
