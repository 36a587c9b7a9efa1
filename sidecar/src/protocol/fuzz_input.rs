//! The fuzz harnesses' bodies, shared by the `cargo fuzz` targets in `fuzz/` and the stable
//! regression test that replays the committed seeds and reproducers
//! (`sidecar/tests/fuzz_regressions.rs`). Each one runs a parser over untrusted bytes exactly
//! as the proxy does and checks the invariants a caller relies on; a broken invariant panics,
//! which is what the fuzzer reports.

use bytes::BytesMut;

use super::frame::{self, FrameError};
use super::startup::{self, StartupError, StartupPacket};

/// The message size limit the harnesses use: small, so length checks are reached often.
pub const MAX_LEN: usize = 4096;

/// What a harness saw: how many items it decoded and how it stopped.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Frames or packets decoded.
    pub decoded: usize,
    /// The error that stopped decoding, as the client would read it; `None` if the input
    /// simply ran out (a partial message waits for more bytes).
    pub error: Option<String>,
}

/// Decode `data` as a stream of frontend (`frontend == true`) or backend messages, the way
/// `io::FrameReader` does, fed in chunks of `chunk` bytes (0: all at once).
pub fn frames(data: &[u8], frontend: bool, chunk: usize) -> Outcome {
    let valid: fn(u8) -> bool = if frontend {
        frame::is_frontend_tag
    } else {
        frame::is_backend_tag
    };
    let chunk = chunk_size(data, chunk);
    let mut buf = BytesMut::new();
    let mut out = Outcome::default();
    for part in data.chunks(chunk) {
        buf.extend_from_slice(part);
        loop {
            let before = buf.len();
            match frame::decode(&mut buf, MAX_LEN, valid) {
                Ok(Some(f)) => {
                    assert!(valid(f.tag), "decoded a frame with an invalid tag");
                    assert!(f.wire_len() <= MAX_LEN, "decoded a frame over the limit");
                    assert_eq!(before - buf.len(), f.wire_len(), "consumed != frame size");
                    let mut again = BytesMut::new();
                    f.encode(&mut again);
                    assert_eq!(again.len(), f.wire_len(), "re-encoding changed the size");
                    out.decoded += 1;
                }
                Ok(None) => {
                    assert_eq!(before, buf.len(), "a partial frame consumed bytes");
                    break;
                }
                Err(e) => {
                    check_frame_error(&e);
                    out.error = Some(e.to_string());
                    return out;
                }
            }
        }
    }
    out
}

/// Decode `data` as startup packets (the proxy reads one, or SSLRequest then one), fed in
/// chunks of `chunk` bytes (0: all at once).
pub fn startup_packets(data: &[u8], chunk: usize) -> Outcome {
    let chunk = chunk_size(data, chunk);
    let mut buf = BytesMut::new();
    let mut out = Outcome::default();
    for part in data.chunks(chunk) {
        buf.extend_from_slice(part);
        loop {
            let before = buf.len();
            match startup::decode(&mut buf) {
                Ok(Some(pkt)) => {
                    assert!(buf.len() < before, "a decoded packet consumed nothing");
                    if let StartupPacket::Startup(params) = &pkt {
                        for (k, _) in params.iter() {
                            assert!(!k.is_empty(), "empty parameter name accepted");
                        }
                    }
                    out.decoded += 1;
                }
                Ok(None) => {
                    assert_eq!(before, buf.len(), "a partial packet consumed bytes");
                    break;
                }
                Err(e) => {
                    if let StartupError::Frame(f) = &e {
                        check_frame_error(f);
                    }
                    out.error = Some(e.to_string());
                    return out;
                }
            }
        }
    }
    out
}

/// Run the session-state scan over `data` read as UTF-8 (lossily, as a fuzzer's bytes are
/// arbitrary). It must terminate without panicking; its answer is not checked here.
pub fn sql(data: &[u8]) -> bool {
    super::sql::changes_session_state(data)
}

/// The chunk size to feed `data` in: `chunk`, or all at once for 0.
fn chunk_size(data: &[u8], chunk: usize) -> usize {
    if chunk == 0 { data.len().max(1) } else { chunk }
}

fn check_frame_error(e: &FrameError) {
    let text = e.to_string();
    assert!(!text.is_empty(), "an error without text");
    if let FrameError::TooLarge { size, limit } = e {
        assert!(*size > *limit as u64, "TooLarge under the limit");
    }
}
