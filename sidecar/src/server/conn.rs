//! An open, logged-in server connection.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::ops::Range;
use std::task::{Poll, ready};

use bytes::BytesMut;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::ServerStream;
use crate::prepared::{ServerAction, ServerStatements};
use crate::protocol::build::parse_error_fields;
use crate::protocol::frame::{Frame, is_backend_tag};
use crate::protocol::io::{FrameReader, ReadError};

/// Largest message accepted from a server (a sanity bound, not a policy).
pub const MAX_SERVER_MESSAGE: usize = 1 << 30;

/// A failure on an open server connection.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The socket or framing failed.
    #[error("server connection failed: {0}")]
    Read(#[from] ReadError),
    /// The socket failed while writing.
    #[error("server connection failed: {0}")]
    Io(#[from] std::io::Error),
    /// The server closed the connection.
    #[error("server closed the connection")]
    Closed,
    /// The server answered with an ErrorResponse.
    #[error("server error {code}: {message}")]
    Server {
        /// SQLSTATE.
        code: String,
        /// Message text (never contains query text we sent: we only send our own SQL).
        message: String,
    },
    /// The server sent something unexpected.
    #[error("unexpected server message {0:?}")]
    Unexpected(char),
}

/// Where and how to cancel what a server backend is running.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CancelTarget {
    /// The server's address.
    pub addr: SocketAddr,
    /// Backend process id.
    pub pid: i32,
    /// Backend secret key.
    pub key: i32,
}

impl CancelTarget {
    /// Send a CancelRequest to the server on a new plain TCP connection (PostgreSQL accepts
    /// cancel requests before any TLS or authentication).
    pub async fn cancel(&self) -> std::io::Result<()> {
        let mut s = TcpStream::connect(self.addr).await?;
        let mut buf = BytesMut::new();
        postgres_protocol::message::frontend::cancel_request(self.pid, self.key, &mut buf);
        s.write_all(&buf).await?;
        s.flush().await?;
        // PostgreSQL closes the socket once it has the request.
        let mut sink = [0u8; 16];
        let _ = tokio::io::AsyncReadExt::read(&mut s, &mut sink).await;
        Ok(())
    }
}

/// A logged-in server connection.
#[derive(Debug)]
pub struct ServerConn {
    pub(crate) stream: ServerStream,
    pub(crate) reader: FrameReader,
    /// Server parameters (ParameterStatus), kept current as the proxy forwards messages.
    pub params: BTreeMap<String, String>,
    /// Where cancel requests for this backend go.
    pub cancel: CancelTarget,
    /// When the connection was opened (for pool_recycle).
    pub created: Instant,
    /// The pooler-named prepared statements this backend holds (transaction mode).
    pub statements: crate::prepared::ServerStatements,
    /// `params`' application_name and client_encoding.
    pub(crate) client_facing: (String, String),
}

impl ServerConn {
    /// A connection over `stream` that skipped the login (for tests of the relay).
    #[cfg(test)]
    pub(crate) fn for_tests(stream: ServerStream, cancel: CancelTarget) -> Self {
        Self {
            stream,
            reader: server_reader(),
            params: BTreeMap::new(),
            cancel,
            created: Instant::now(),
            statements: crate::prepared::ServerStatements::new(),
            client_facing: Default::default(),
        }
    }

    /// The next message from the server.
    pub async fn read(&mut self) -> Result<Frame, ServerError> {
        match self.reader.read_frame(&mut self.stream).await? {
            Some(f) => {
                if f.tag == b'S' {
                    note_parameter(&mut self.params, &mut self.client_facing, &f.body);
                }
                Ok(f)
            }
            None => Err(ServerError::Closed),
        }
    }

    /// More bytes from the server, polled (cancel-safe, no future made); for
    /// [`relay_buffered`](Self::relay_buffered).
    #[inline]
    pub fn poll_fill(&mut self, cx: &mut std::task::Context<'_>) -> Poll<Result<(), ServerError>> {
        Poll::Ready(match ready!(self.reader.poll_fill(cx, &mut self.stream))? {
            true => Ok(()),
            false => Err(ServerError::Closed),
        })
    }

    /// Pass the complete buffered messages on without copying them: each goes through
    /// `decide` (type byte, body, the backend's statements) in order; ParameterStatus is noted
    /// first. What is forwarded unchanged stays in the buffer, so the answer is the range of
    /// [`buffered`](Self::buffered) still to send after whatever was put in `out` (a dropped
    /// or replaced message copies the bytes before it there), and a failure on a malformed
    /// message after the good ones. Call [`consume`](Self::consume) with the range's end once
    /// the bytes are sent.
    pub fn relay_buffered(
        &mut self,
        out: &mut BytesMut,
        mut decide: impl FnMut(u8, &[u8], &mut ServerStatements) -> ServerAction,
    ) -> (Range<usize>, Option<ServerError>) {
        let Self {
            reader,
            params,
            client_facing,
            statements,
            ..
        } = self;
        let (mut run, mut at) = (0, 0);
        let failure = loop {
            let (tag, total) = match reader.message_at(at) {
                Ok(Some(m)) => m,
                Ok(None) => break None,
                Err(e) => break Some(ServerError::Read(ReadError::Frame(e))),
            };
            let buf = reader.buffered();
            let body = &buf[at + 5..at + total];
            if tag == b'S' {
                note_parameter(params, client_facing, body);
            }
            match decide(tag, body, statements) {
                ServerAction::Forward => {}
                ServerAction::Swallow => {
                    out.extend_from_slice(&buf[run..at]);
                    run = at + total;
                }
                ServerAction::Replace(f) => {
                    out.extend_from_slice(&buf[run..at]);
                    f.encode(out);
                    run = at + total;
                }
            }
            at += total;
        };
        (run..at, failure)
    }

    /// The data plane's socket, when the connection is on the loop.
    pub fn loop_socket(&self) -> Option<&crate::dataplane::LoopSocket> {
        match &self.stream {
            ServerStream::Loop(s) => Some(s),
            _ => None,
        }
    }

    /// Append bytes the loop read from the server to the read buffer.
    pub fn push_read(&mut self, bytes: &[u8]) {
        self.reader.push(bytes);
    }

    /// Move a plain TCP connection onto the data plane's loop (TLS stays on tokio).
    pub fn adopt(self, plane: &crate::dataplane::DataPlane) -> std::io::Result<Self> {
        let stream = match self.stream {
            ServerStream::Plain(tcp) => ServerStream::Loop(plane.adopt_tokio(tcp)?),
            other => other,
        };
        Ok(Self { stream, ..self })
    }

    /// The bytes read from the server and not yet consumed.
    pub fn buffered(&self) -> &[u8] {
        self.reader.buffered()
    }

    /// Drop `n` relayed bytes from the front of the buffer.
    pub fn consume(&mut self, n: usize) {
        self.reader.consume(n);
    }

    /// Write bytes to the server.
    pub async fn write(&mut self, bytes: &[u8]) -> Result<(), ServerError> {
        crate::protocol::io::write_all(&mut self.stream, bytes).await?;
        Ok(())
    }

    /// The server's application_name and client_encoding as last reported, compared at every
    /// checkout without a map lookup.
    pub fn application_name(&self) -> &str {
        &self.client_facing.0
    }

    /// See [`application_name`](Self::application_name).
    pub fn client_encoding(&self) -> &str {
        &self.client_facing.1
    }

    /// Whether bytes from the server are waiting unread (e.g. a FATAL from a killed backend).
    pub fn has_buffered(&self) -> bool {
        self.reader.has_buffered()
    }

    /// Whether the idle connection's socket shows no sign of trouble without a round trip:
    /// no bytes waiting on it and no end of stream (a terminated backend or a server that went
    /// away leaves one of them). One non-blocking peek, never waits. Bytes already read into
    /// the connection's buffer are [`has_buffered`](Self::has_buffered)'s, which the pool
    /// looks at first.
    pub fn quiet(&self) -> bool {
        self.stream.quiet()
    }

    /// Round trip a Sync: a healthy idle backend answers ReadyForQuery `I`.
    pub async fn ping(&mut self) -> bool {
        let mut buf = BytesMut::new();
        postgres_protocol::message::frontend::sync(&mut buf);
        if self.write(&buf).await.is_err() {
            return false;
        }
        loop {
            match self.read().await {
                Ok(f) if f.tag == b'Z' => return f.body.first() == Some(&b'I'),
                Ok(f) if matches!(f.tag, b'S' | b'N' | b'A') => continue,
                _ => return false,
            }
        }
    }

    /// Run our own SQL (never client SQL) with the simple protocol and wait for ReadyForQuery.
    pub async fn simple_query(&mut self, sql: &str) -> Result<(), ServerError> {
        let mut buf = BytesMut::new();
        postgres_protocol::message::frontend::query(sql, &mut buf)?;
        self.write(&buf).await?;
        let mut failure = None;
        loop {
            let f = self.read().await?;
            match f.tag {
                b'E' => {
                    let (_, code, message) = parse_error_fields(&f.body);
                    failure = Some(ServerError::Server {
                        code: code.unwrap_or_default(),
                        message: message.unwrap_or_default(),
                    });
                }
                b'Z' => {
                    return match failure {
                        Some(e) => Err(e),
                        None if f.body.first() == Some(&b'I') => Ok(()),
                        None => Err(ServerError::Unexpected('Z')),
                    };
                }
                b'C' | b'S' | b'N' | b'A' | b'I' | b'T' | b'D' => {}
                other => return Err(ServerError::Unexpected(other as char)),
            }
        }
    }

    /// Say goodbye (Terminate) and close.
    pub async fn terminate(mut self) {
        let mut buf = BytesMut::new();
        postgres_protocol::message::frontend::terminate(&mut buf);
        let _ = tokio::time::timeout(std::time::Duration::from_secs(1), async {
            let _ = self.stream.write_all(&buf).await;
            let _ = self.stream.shutdown().await;
        })
        .await;
    }
}

/// Remember a ParameterStatus body in `params` (and `client_facing`, see
/// [`ServerConn::application_name`]).
fn note_parameter(
    params: &mut BTreeMap<String, String>,
    client_facing: &mut (String, String),
    body: &[u8],
) {
    let mut parts = body.split(|b| *b == 0);
    if let (Some(k), Some(v)) = (parts.next(), parts.next()) {
        let (k, v) = (
            String::from_utf8_lossy(k).into_owned(),
            String::from_utf8_lossy(v).into_owned(),
        );
        match k.as_str() {
            "application_name" => client_facing.0.clone_from(&v),
            "client_encoding" => client_facing.1.clone_from(&v),
            _ => {}
        }
        params.insert(k, v);
    }
}

/// A frame reader for server messages.
pub(crate) fn server_reader() -> FrameReader {
    FrameReader::new(MAX_SERVER_MESSAGE, is_backend_tag)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::frame::Frame;
    use bytes::Bytes;
    use tokio::net::TcpListener;

    fn msg(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut m = vec![tag];
        m.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
        m.extend_from_slice(body);
        m
    }

    /// A server connection whose peer has sent `bytes`, all of them read into its buffer.
    async fn conn_with(bytes: &[u8]) -> ServerConn {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let ours = TcpStream::connect(addr).await.unwrap();
        let (mut peer, _) = l.accept().await.unwrap();
        peer.write_all(bytes).await.unwrap();
        peer.shutdown().await.unwrap();
        let mut c = ServerConn::for_tests(
            super::super::ServerStream::Plain(ours),
            CancelTarget {
                addr,
                pid: 1,
                key: 1,
            },
        );
        while c.buffered().len() < bytes.len() {
            std::future::poll_fn(|cx| c.poll_fill(cx)).await.unwrap();
        }
        c
    }

    /// Table: what the server sent and what is decided per message type → the bytes the
    /// client gets (what was put aside, then the range left in the buffer), what stays
    /// buffered, and whether it failed. Forwarded messages are not copied; a dropped or
    /// replaced one copies only the bytes before it; an incomplete message waits; a
    /// malformed one fails after the good ones before it.
    #[tokio::test]
    async fn relays_in_place_and_copies_only_around_changes() {
        let t = msg(b'T', b"row description");
        let d = msg(b'D', b"data");
        let c = msg(b'C', b"SELECT 1\0");
        let z = msg(b'Z', b"I");
        let one = msg(b'1', b"");
        let s = msg(b'S', b"TimeZone\0UTC\0");
        let partial = &msg(b'D', b"more data")[..7];
        let cat = |parts: &[&[u8]]| parts.concat();
        let replaced = msg(b'C', b"DEALLOCATE\0");
        /// (sent, per-tag decision, client gets, left buffered, failed)
        type Case = (Vec<u8>, fn(u8) -> ServerAction, Vec<u8>, usize, bool);
        let forward: fn(u8) -> ServerAction = |_| ServerAction::Forward;
        let swallow_parse_complete: fn(u8) -> ServerAction = |tag| match tag {
            b'1' => ServerAction::Swallow,
            _ => ServerAction::Forward,
        };
        let replace_data: fn(u8) -> ServerAction = |tag| match tag {
            b'D' => ServerAction::Replace(Frame {
                tag: b'C',
                body: Bytes::from_static(b"DEALLOCATE\0"),
            }),
            _ => ServerAction::Forward,
        };
        let cases: Vec<Case> = vec![
            (
                cat(&[&t, &d, &c, &z]),
                forward,
                cat(&[&t, &d, &c, &z]),
                0,
                false,
            ),
            (
                cat(&[&t, &d, partial]),
                forward,
                cat(&[&t, &d]),
                partial.len(),
                false,
            ),
            (
                cat(&[&one, &t, &one, &z]),
                swallow_parse_complete,
                cat(&[&t, &z]),
                0,
                false,
            ),
            (
                cat(&[&t, &d, &z]),
                replace_data,
                cat(&[&t, &replaced, &z]),
                0,
                false,
            ),
            (cat(&[&s, &z]), forward, cat(&[&s, &z]), 0, false),
            (cat(&[&t, b"?\0\0\0\x04"]), forward, t.clone(), 5, true),
        ];
        for (i, (sent, decide, want, left, failed)) in cases.into_iter().enumerate() {
            let mut conn = conn_with(&sent).await;
            let mut out = BytesMut::new();
            let (tail, failure) = conn.relay_buffered(&mut out, |tag, _, _| decide(tag));
            out.extend_from_slice(&conn.buffered()[tail.clone()]);
            conn.consume(tail.end);
            assert_eq!(out.to_vec(), want, "case {i}: client bytes");
            assert_eq!(conn.buffered().len(), left, "case {i}: left buffered");
            assert_eq!(failure.is_some(), failed, "case {i}: {failure:?}");
        }
        // ParameterStatus is noted on the way.
        let mut conn = conn_with(&cat(&[&s, &msg(b'S', b"application_name\0app\0")])).await;
        let _ = conn.relay_buffered(&mut BytesMut::new(), |_, _, _| ServerAction::Forward);
        assert_eq!(conn.params.get("TimeZone").map(String::as_str), Some("UTC"));
        assert_eq!(conn.application_name(), "app");
    }
}
