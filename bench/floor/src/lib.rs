//! What the two floor relays share: the start-up messages, message framing and a read
//! buffer. A floor relay is a measuring instrument (`scripts/profile` with PROFILE_FLOOR=1,
//! BENCHMARKS.md "The floor"): it does the least a transaction pooler must do for pgbench
//! (answer a trust login, lend one of its server connections for each transaction, release it
//! at ReadyForQuery `I`) and nothing a production pooler must also do, so its instructions per
//! transaction are the cost of its event loop and of moving the bytes.

use std::io::{Read, Write};

/// The protocol 3.0 start-up packet for `user` and `database`.
pub fn startup_packet(user: &str, database: &str) -> Vec<u8> {
    let mut body = 196_608u32.to_be_bytes().to_vec();
    for (k, v) in [("user", user), ("database", database)] {
        body.extend_from_slice(k.as_bytes());
        body.push(0);
        body.extend_from_slice(v.as_bytes());
        body.push(0);
    }
    body.push(0);
    let mut out = u32::try_from(body.len() + 4)
        .expect("a short packet")
        .to_be_bytes()
        .to_vec();
    out.extend_from_slice(&body);
    out
}

/// The SSLRequest code: answered `N`.
const SSL_REQUEST: u32 = 80_877_103;

/// What a client gets after its start-up packet: AuthenticationOk, the ParameterStatus
/// messages libpq and pgbench look at, BackendKeyData and ReadyForQuery.
fn greeting() -> Vec<u8> {
    let mut out = vec![b'R', 0, 0, 0, 8, 0, 0, 0, 0];
    for (k, v) in [
        ("server_version", "15.0"),
        ("client_encoding", "UTF8"),
        ("standard_conforming_strings", "on"),
        ("integer_datetimes", "on"),
        ("DateStyle", "ISO, MDY"),
    ] {
        let len = u32::try_from(4 + k.len() + 1 + v.len() + 1).expect("a short message");
        out.push(b'S');
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(k.as_bytes());
        out.push(0);
        out.extend_from_slice(v.as_bytes());
        out.push(0);
    }
    out.extend_from_slice(&[b'K', 0, 0, 0, 12, 0, 0, 0, 1, 0, 0, 0, 2]);
    out.extend_from_slice(&[b'Z', 0, 0, 0, 5, b'I']);
    out
}

/// A blocking trust login to PostgreSQL at `addr` as postgres to database bench (the
/// benchmark database), returning the connection once it is ready for queries.
pub fn server_login(addr: &str) -> std::io::Result<std::net::TcpStream> {
    let mut s = std::net::TcpStream::connect(addr)?;
    s.set_nodelay(true)?;
    s.write_all(&startup_packet("postgres", "bench"))?;
    let mut buf = Vec::new();
    let mut tmp = [0u8; 4096];
    loop {
        let n = s.read(&mut tmp)?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&tmp[..n]);
        if buf.first() == Some(&b'E') {
            return Err(std::io::Error::other("the server refused the login"));
        }
        let (_, last_ready) = complete(&buf);
        if last_ready == Some(b'I') {
            return Ok(s);
        }
    }
}

/// The complete messages at the front of `buf`: how many bytes they take, and the status
/// byte of the last one if it is a ReadyForQuery.
pub fn complete(buf: &[u8]) -> (usize, Option<u8>) {
    let mut i = 0;
    let mut ready = None;
    while buf.len() - i >= 5 {
        let len = u32::from_be_bytes([buf[i + 1], buf[i + 2], buf[i + 3], buf[i + 4]]) as usize;
        if len < 4 || buf.len() - i < 1 + len {
            break;
        }
        ready = (buf[i] == b'Z' && len == 5).then(|| buf[i + 5]);
        i += 1 + len;
    }
    (i, ready)
}

/// The length of a complete start-up packet at the front of `buf`, if there is one.
fn startup_len(buf: &[u8]) -> Option<usize> {
    let len = u32::from_be_bytes(buf.get(..4)?.try_into().ok()?) as usize;
    (len >= 8 && buf.len() >= len).then_some(len)
}

/// The answer to a client's start-up packet.
pub enum Startup {
    /// An SSLRequest: answer `N`, then read the next packet.
    Ssl,
    /// A login: answer with [`greeting`]; messages follow.
    Login,
}

impl Startup {
    /// The bytes to send back.
    pub fn reply(&self) -> Vec<u8> {
        match self {
            Self::Ssl => b"N".to_vec(),
            Self::Login => greeting(),
        }
    }
}

/// Take the start-up packet at the front of `buf`, if it is complete.
pub fn take_startup(buf: &mut Buf) -> Option<Startup> {
    let bytes = buf.bytes();
    let len = startup_len(bytes)?;
    let code = u32::from_be_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]);
    buf.consume(len);
    Some(if code == SSL_REQUEST {
        Startup::Ssl
    } else {
        Startup::Login
    })
}

/// A read buffer zeroed once: reads go into its free tail, so no read clears memory.
pub struct Buf {
    data: Box<[u8]>,
    len: usize,
}

impl Default for Buf {
    fn default() -> Self {
        Self {
            data: vec![0u8; 64 * 1024].into_boxed_slice(),
            len: 0,
        }
    }
}

impl Buf {
    /// What is buffered.
    pub fn bytes(&self) -> &[u8] {
        &self.data[..self.len]
    }

    /// Nothing buffered.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The free tail, for a read.
    pub fn tail(&mut self) -> &mut [u8] {
        &mut self.data[self.len..]
    }

    /// `n` bytes were read into the tail.
    pub fn filled(&mut self, n: usize) {
        self.len += n;
    }

    /// Drop the first `n` bytes.
    pub fn consume(&mut self, n: usize) {
        self.data.copy_within(n..self.len, 0);
        self.len -= n;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn complete_stops_at_a_partial_message_and_reports_the_last_ready() {
        // CommandComplete "SEL", then ReadyForQuery I, then half a message.
        let mut b = vec![b'C', 0, 0, 0, 8, b'S', b'E', b'L', 0];
        b.extend_from_slice(&[b'Z', 0, 0, 0, 5, b'I', b'D', 0, 0]);
        assert_eq!(complete(&b), (15, Some(b'I')));
        assert_eq!(complete(&b[..14]), (9, None));
        assert_eq!(complete(&b[..9]), (9, None));
        let p = startup_packet("u", "d");
        assert_eq!(startup_len(&p), Some(p.len()));
        assert_eq!(startup_len(&p[..p.len() - 1]), None);
    }

    #[test]
    fn take_startup_answers_an_ssl_request_then_the_login() {
        let mut buf = Buf::default();
        let mut sent = vec![0, 0, 0, 8];
        sent.extend_from_slice(&SSL_REQUEST.to_be_bytes());
        sent.extend_from_slice(&startup_packet("postgres", "bench"));
        buf.tail()[..sent.len() - 1].copy_from_slice(&sent[..sent.len() - 1]);
        buf.filled(sent.len() - 1);
        assert!(matches!(take_startup(&mut buf), Some(Startup::Ssl)));
        assert!(
            take_startup(&mut buf).is_none(),
            "the login is one byte short"
        );
        buf.tail()[0] = *sent.last().unwrap();
        buf.filled(1);
        let login = take_startup(&mut buf).expect("a complete login");
        assert!(matches!(login, Startup::Login));
        assert!(buf.is_empty());
        assert_eq!(login.reply().last(), Some(&b'I'), "ends in ReadyForQuery I");
        assert_eq!(Startup::Ssl.reply(), b"N");
    }
}
