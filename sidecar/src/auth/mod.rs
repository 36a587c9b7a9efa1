//! Client authentication: the users file, md5, and the server side of SCRAM-SHA-256, as a
//! state machine the proxy's client startup drives one message at a time.
//!
//! ```text
//!  ClientAuthenticator::start(method, user, users.get(user))
//!     │ md5:   ─▶ AuthenticationMD5Password(salt) ◀─ PasswordMessage        ─▶ AuthenticationOk
//!     │ scram: ─▶ AuthenticationSASL[SCRAM-SHA-256] ◀─ SASLInitialResponse ─▶ SASLContinue
//!     │                                              ◀─ SASLResponse        ─▶ SASLFinal + Ok
//!     └ every client reply is a 'p' message: hand its body to receive()
//! ```
//!
//! An unknown user goes through the same exchange and fails at the end, so the answer does not
//! reveal which users exist. With `md5` configured and a SCRAM verifier stored, SCRAM is used
//! (as PostgreSQL does). Every comparison of secrets is constant time.

mod file;
pub mod scram;

use std::sync::OnceLock;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use md5::{Digest, Md5};
use rand::RngCore;
use subtle::ConstantTimeEq;

pub use file::{AuthFile, AuthFileError, SharedAuthFile, StoredPassword};
use scram::{MECHANISM, ScramOutcome, ScramServer, ScramVerifier};

use crate::config::ClientAuth;

/// What the proxy sends to the client next (an `R` message).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AuthRequest {
    /// AuthenticationOk: the client is in.
    Ok,
    /// AuthenticationMD5Password with this salt.
    Md5Password { salt: [u8; 4] },
    /// AuthenticationSASL offering these mechanisms.
    Sasl { mechanisms: Vec<&'static str> },
    /// AuthenticationSASLContinue with the server-first message.
    SaslContinue(Vec<u8>),
    /// AuthenticationSASLFinal with the server-final message; send AuthenticationOk right
    /// after it (the client is in).
    SaslFinal(Vec<u8>),
}

impl AuthRequest {
    /// The whole wire message (`R`, length, code, payload).
    pub fn encode(&self) -> Vec<u8> {
        let (code, payload): (i32, Vec<u8>) = match self {
            AuthRequest::Ok => (0, Vec::new()),
            AuthRequest::Md5Password { salt } => (5, salt.to_vec()),
            AuthRequest::Sasl { mechanisms } => {
                let mut p = Vec::new();
                for m in mechanisms {
                    p.extend_from_slice(m.as_bytes());
                    p.push(0);
                }
                p.push(0);
                (10, p)
            }
            AuthRequest::SaslContinue(d) => (11, d.clone()),
            AuthRequest::SaslFinal(d) => (12, d.clone()),
        };
        let mut out = Vec::with_capacity(9 + payload.len());
        out.push(b'R');
        out.extend_from_slice(&((8 + payload.len()) as i32).to_be_bytes());
        out.extend_from_slice(&code.to_be_bytes());
        out.extend_from_slice(&payload);
        out
    }
}

/// Why a client was not let in. Send it as a FATAL ErrorResponse and close.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// Wrong password, unknown user, or no usable secret (`28P01`).
    #[error("password authentication failed for user \"{user}\"")]
    Failed { user: String },
    /// The client broke the protocol (`08P01`).
    #[error("{0}")]
    Protocol(String),
}

impl AuthError {
    /// Always `FATAL`.
    pub fn severity(&self) -> &'static str {
        "FATAL"
    }
    /// `28P01` or `08P01`.
    pub fn sqlstate(&self) -> &'static str {
        match self {
            AuthError::Failed { .. } => "28P01",
            AuthError::Protocol(_) => "08P01",
        }
    }
}

/// `md5` + hex(md5(password + user)): what PostgreSQL stores for md5.
pub fn md5_stored(password: &str, user: &str) -> String {
    let mut h = Md5::new();
    h.update(password.as_bytes());
    h.update(user.as_bytes());
    format!("md5{}", hex(&h.finalize()))
}

/// What a client must answer to an md5 challenge: `md5` + hex(md5(hex-part-of-stored + salt)).
pub fn md5_response(stored: &str, salt: [u8; 4]) -> String {
    let inner = stored.strip_prefix("md5").unwrap_or(stored);
    let mut h = Md5::new();
    h.update(inner.as_bytes());
    h.update(salt);
    format!("md5{}", hex(&h.finalize()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn random<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    rand::rng().fill_bytes(&mut b);
    b
}

/// A per-process secret, so an unknown user's fake salt is stable but unpredictable.
fn mock_secret() -> &'static [u8; 32] {
    static SECRET: OnceLock<[u8; 32]> = OnceLock::new();
    SECRET.get_or_init(random::<32>)
}

fn mock_verifier(user: &str) -> ScramVerifier {
    let mut h = sha2::Sha256::new();
    sha2::Digest::update(&mut h, mock_secret());
    sha2::Digest::update(&mut h, user.as_bytes());
    let salt = sha2::Digest::finalize(h)[..16].to_vec();
    ScramVerifier::unmatchable(salt, random::<32>())
}

enum State {
    Md5 {
        expected: String,
        genuine: bool,
    },
    SaslInitial {
        verifier: ScramVerifier,
        genuine: bool,
    },
    SaslFinal {
        server: Box<ScramServer>,
        genuine: bool,
    },
    Done,
    Failed,
}

/// One client's authentication, driven message by message.
pub struct ClientAuthenticator {
    user: String,
    state: State,
}

impl std::fmt::Debug for ClientAuthenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientAuthenticator")
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

impl ClientAuthenticator {
    /// Begin for `user` (from the StartupMessage) with the configured method and the user's
    /// stored password (`None`: not in the users file). Returns the first message to send.
    pub fn start(
        method: ClientAuth,
        user: &str,
        stored: Option<&StoredPassword>,
    ) -> (Self, AuthRequest) {
        let user_s = user.to_string();
        let scram = |verifier: ScramVerifier, genuine: bool| {
            (
                State::SaslInitial { verifier, genuine },
                AuthRequest::Sasl {
                    mechanisms: vec![MECHANISM],
                },
            )
        };
        let (state, first) = match (method, stored) {
            (ClientAuth::Trust, _) => (State::Done, AuthRequest::Ok),
            // A SCRAM verifier cannot answer an md5 challenge: use SCRAM, as PostgreSQL does.
            (ClientAuth::Md5 | ClientAuth::ScramSha256, Some(StoredPassword::Scram(v))) => {
                scram(v.clone(), true)
            }
            (ClientAuth::ScramSha256, Some(StoredPassword::Plain(pw))) => scram(
                ScramVerifier::from_password(
                    pw.expose(),
                    &random::<16>(),
                    scram::DEFAULT_ITERATIONS,
                ),
                true,
            ),
            (ClientAuth::ScramSha256, Some(StoredPassword::Md5(_))) => {
                tracing::warn!(
                    user,
                    "user has an md5 secret, which cannot do scram-sha-256"
                );
                scram(mock_verifier(user), false)
            }
            (ClientAuth::ScramSha256, None) => scram(mock_verifier(user), false),
            (ClientAuth::Md5, stored) => {
                let salt = random::<4>();
                let (stored, genuine) = match stored {
                    Some(StoredPassword::Plain(pw)) => (md5_stored(pw.expose(), user), true),
                    Some(StoredPassword::Md5(s)) => (s.expose().to_string(), true),
                    _ => (hex(&random::<16>()), false),
                };
                (
                    State::Md5 {
                        expected: md5_response(&stored, salt),
                        genuine,
                    },
                    AuthRequest::Md5Password { salt },
                )
            }
        };
        (
            Self {
                user: user_s,
                state,
            },
            first,
        )
    }

    /// The client is authenticated.
    pub fn is_authenticated(&self) -> bool {
        matches!(self.state, State::Done)
    }

    fn failed(&mut self) -> AuthError {
        self.state = State::Failed;
        AuthError::Failed {
            user: self.user.clone(),
        }
    }

    fn protocol(&mut self, what: impl Into<String>) -> AuthError {
        self.state = State::Failed;
        AuthError::Protocol(what.into())
    }

    /// Handle the body of the client's next `p` message (PasswordMessage, SASLInitialResponse
    /// or SASLResponse, by state). Returns what to send next, or the error to send before
    /// closing.
    pub fn receive(&mut self, body: &[u8]) -> Result<AuthRequest, AuthError> {
        match std::mem::replace(&mut self.state, State::Failed) {
            State::Md5 { expected, genuine } => {
                let answer = body.strip_suffix(&[0]).unwrap_or(body);
                let same = answer.ct_eq(expected.as_bytes()).unwrap_u8() == 1;
                if same && genuine {
                    self.state = State::Done;
                    Ok(AuthRequest::Ok)
                } else {
                    Err(self.failed())
                }
            }
            State::SaslInitial { verifier, genuine } => {
                let (mechanism, data) = match parse_sasl_initial(body) {
                    Some(x) => x,
                    None => return Err(self.protocol("malformed SASLInitialResponse")),
                };
                if mechanism != MECHANISM {
                    return Err(
                        self.protocol("client selected an invalid SASL authentication mechanism")
                    );
                }
                let first = match scram::parse_client_first(data) {
                    Ok(f) => f,
                    Err(e) => return Err(self.protocol(e.to_string())),
                };
                let server = ScramServer::new(verifier, first, &B64.encode(random::<18>()));
                let reply = AuthRequest::SaslContinue(server.server_first().to_vec());
                self.state = State::SaslFinal {
                    server: Box::new(server),
                    genuine,
                };
                Ok(reply)
            }
            State::SaslFinal { server, genuine } => match server.finish(body) {
                Ok(ScramOutcome::Verified(final_message)) if genuine => {
                    self.state = State::Done;
                    Ok(AuthRequest::SaslFinal(final_message))
                }
                Ok(_) => Err(self.failed()),
                Err(e) => Err(self.protocol(e.to_string())),
            },
            State::Done => {
                self.state = State::Done;
                Err(AuthError::Protocol(
                    "unexpected password message after authentication".into(),
                ))
            }
            State::Failed => Err(self.protocol("authentication already failed")),
        }
    }
}

/// SASLInitialResponse body: mechanism (C string), Int32 length (-1: none), data.
fn parse_sasl_initial(body: &[u8]) -> Option<(&str, &[u8])> {
    let nul = body.iter().position(|&b| b == 0)?;
    let mechanism = std::str::from_utf8(&body[..nul]).ok()?;
    let rest = &body[nul + 1..];
    let len = i32::from_be_bytes(rest.get(..4)?.try_into().ok()?);
    let data = &rest[4..];
    match len {
        -1 if data.is_empty() => Some((mechanism, &[])),
        n if n >= 0 && n as usize == data.len() => Some((mechanism, data)),
        _ => None,
    }
}

#[cfg(test)]
mod tests;
