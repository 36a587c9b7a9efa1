//! Messages the proxy writes itself, as wire bytes.

use bytes::{BufMut, BytesMut};

/// Severity of an ErrorResponse or NoticeResponse.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Severity {
    /// The statement failed; the session continues.
    Error,
    /// The session ends.
    Fatal,
    /// A NoticeResponse.
    Notice,
}

impl Severity {
    fn as_str(self) -> &'static str {
        match self {
            Severity::Error => "ERROR",
            Severity::Fatal => "FATAL",
            Severity::Notice => "NOTICE",
        }
    }
}

fn put_message(out: &mut BytesMut, tag: u8, body: &[u8]) {
    out.put_u8(tag);
    out.put_i32((body.len() + 4) as i32);
    out.put_slice(body);
}

/// `s` as a C string: NUL bytes (which would end it early) left out, then the NUL.
fn cstr<B: BufMut>(body: &mut B, s: &str) {
    let s = s.as_bytes();
    if !s.contains(&0) {
        body.put_slice(s);
    } else {
        for part in s.split(|b| *b == 0) {
            body.put_slice(part);
        }
    }
    body.put_u8(0);
}

/// An ErrorResponse (or NoticeResponse for [`Severity::Notice`]).
pub fn error_response(out: &mut BytesMut, severity: Severity, code: &str, message: &str) {
    let mut body = Vec::with_capacity(32 + message.len());
    for field in [b'S', b'V'] {
        body.push(field);
        cstr(&mut body, severity.as_str());
    }
    body.push(b'C');
    cstr(&mut body, code);
    body.push(b'M');
    cstr(&mut body, message);
    body.push(0);
    let tag = if severity == Severity::Notice {
        b'N'
    } else {
        b'E'
    };
    put_message(out, tag, &body);
}

/// An ErrorResponse as a fresh buffer.
pub fn error(severity: Severity, code: &str, message: &str) -> BytesMut {
    let mut out = BytesMut::new();
    error_response(&mut out, severity, code, message);
    out
}

/// ReadyForQuery with the given transaction status (`I`, `T` or `E`).
pub fn ready_for_query(out: &mut BytesMut, status: u8) {
    put_message(out, b'Z', &[status]);
}

/// AuthenticationOk.
pub fn auth_ok(out: &mut BytesMut) {
    put_message(out, b'R', &0i32.to_be_bytes());
}

/// ParameterStatus.
pub fn parameter_status(out: &mut BytesMut, name: &str, value: &str) {
    // Written in place: the length is patched in once the body is there.
    out.reserve(7 + name.len() + value.len());
    let start = out.len();
    out.put_u8(b'S');
    out.put_i32(0);
    cstr(out, name);
    cstr(out, value);
    let len = (out.len() - start - 1) as i32;
    out[start + 1..start + 5].copy_from_slice(&len.to_be_bytes());
}

/// BackendKeyData.
pub fn backend_key_data(out: &mut BytesMut, pid: i32, key: i32) {
    let mut body = [0u8; 8];
    body[..4].copy_from_slice(&pid.to_be_bytes());
    body[4..].copy_from_slice(&key.to_be_bytes());
    put_message(out, b'K', &body);
}

/// Parse the fields of an ErrorResponse/NoticeResponse body: (code, message).
pub fn parse_error_fields(body: &[u8]) -> (Option<String>, Option<String>, Option<String>) {
    let (mut severity, mut code, mut message) = (None, None, None);
    let mut rest = body;
    while let Some((&field, tail)) = rest.split_first() {
        if field == 0 {
            break;
        }
        let end = tail.iter().position(|b| *b == 0).unwrap_or(tail.len());
        let value = String::from_utf8_lossy(&tail[..end]).into_owned();
        match field {
            b'V' => severity = Some(value),
            b'C' => code = Some(value),
            b'M' => message = Some(value),
            _ => {}
        }
        rest = tail.get(end + 1..).unwrap_or(&[]);
    }
    (severity, code, message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::frame::{decode, is_backend_tag};

    #[test]
    fn error_response_round_trips() {
        let mut out = error(Severity::Error, "53300", "QueuePool limit");
        let f = decode(&mut out, 1 << 20, is_backend_tag).unwrap().unwrap();
        assert_eq!(f.tag, b'E');
        let (sev, code, msg) = parse_error_fields(&f.body);
        assert_eq!(sev.as_deref(), Some("ERROR"));
        assert_eq!(code.as_deref(), Some("53300"));
        assert_eq!(msg.as_deref(), Some("QueuePool limit"));
    }

    #[test]
    fn simple_messages() {
        let mut out = BytesMut::new();
        ready_for_query(&mut out, b'I');
        auth_ok(&mut out);
        backend_key_data(&mut out, 1, 2);
        parameter_status(&mut out, "a", "b");
        let tags: Vec<u8> = std::iter::from_fn(|| decode(&mut out, 100, is_backend_tag).unwrap())
            .map(|f| f.tag)
            .collect();
        assert_eq!(tags, b"ZRKS");
    }

    /// ParameterStatus is written in place, its length patched in; a NUL inside a name or
    /// value (which would end the C string early) is left out.
    #[test]
    fn parameter_status_bodies() {
        let table: [(&str, &str, &[u8]); 3] = [
            ("a", "b", b"a\0b\0"),
            ("application_name", "", b"application_name\0\0"),
            ("x\0y", "v\0", b"xy\0v\0"),
        ];
        for (name, value, body) in table {
            let mut out = BytesMut::from(&b"prefix"[..]);
            parameter_status(&mut out, name, value);
            let mut rest = out.split_off(6);
            let f = decode(&mut rest, 100, is_backend_tag).unwrap().unwrap();
            assert_eq!((f.tag, &f.body[..]), (b'S', body), "{name:?}");
            assert!(rest.is_empty());
        }
    }
}
