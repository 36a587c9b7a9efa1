//! SCRAM-SHA-256 (RFC 5802 / RFC 7677), the server side, as PostgreSQL speaks it: no channel
//! binding offered (gs2 header `n,,` or `y,,`), the user name in the message ignored (the
//! startup packet's user counts), no authorization identity.
//!
//! ```text
//!  client-first  n,,n=,r=<cnonce>
//!  server-first  r=<cnonce><snonce>,s=<salt>,i=<iterations>
//!  client-final  c=biws,r=<cnonce><snonce>,p=<proof>
//!  server-final  v=<server signature>
//! ```

use std::fmt;
use std::str::FromStr;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The mechanism name.
pub const MECHANISM: &str = "SCRAM-SHA-256";
/// Iterations used for verifiers computed from plain passwords (PostgreSQL's default).
pub const DEFAULT_ITERATIONS: u32 = 4096;

type HmacSha256 = Hmac<Sha256>;

fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    // HMAC accepts keys of any length.
    let mut m = HmacSha256::new_from_slice(key).expect("HMAC takes any key length");
    m.update(data);
    m.finalize().into_bytes().into()
}

/// `Hi()` of RFC 5802: PBKDF2 with HMAC-SHA-256 and one 32-byte block.
fn hi(password: &[u8], salt: &[u8], iterations: u32) -> [u8; 32] {
    let mut block = salt.to_vec();
    block.extend_from_slice(&1u32.to_be_bytes());
    let mut u = hmac(password, &block);
    let mut out = u;
    for _ in 1..iterations {
        u = hmac(password, &u);
        for (o, x) in out.iter_mut().zip(u.iter()) {
            *o ^= x;
        }
    }
    out
}

/// Normalise a password as PostgreSQL does before SCRAM: SASLprep, or the raw bytes when the
/// password is not valid UTF-8 or SASLprep refuses it.
pub fn prepare_password(password: &str) -> Vec<u8> {
    match stringprep::saslprep(password) {
        Ok(p) => p.into_owned().into_bytes(),
        Err(_) => password.as_bytes().to_vec(),
    }
}

/// A stored SCRAM-SHA-256 verifier: `SCRAM-SHA-256$<iter>:<salt>$<StoredKey>:<ServerKey>`.
#[derive(Clone, PartialEq, Eq)]
pub struct ScramVerifier {
    iterations: u32,
    salt: Vec<u8>,
    stored_key: [u8; 32],
    server_key: [u8; 32],
}

impl fmt::Debug for ScramVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScramVerifier")
            .field("iterations", &self.iterations)
            .finish_non_exhaustive()
    }
}

/// A malformed verifier.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a SCRAM-SHA-256 verifier")]
pub struct BadVerifier;

impl FromStr for ScramVerifier {
    type Err = BadVerifier;
    fn from_str(s: &str) -> Result<Self, BadVerifier> {
        let rest = s.strip_prefix("SCRAM-SHA-256$").ok_or(BadVerifier)?;
        let (params, keys) = rest.split_once('$').ok_or(BadVerifier)?;
        let (iter, salt) = params.split_once(':').ok_or(BadVerifier)?;
        let (stored, server) = keys.split_once(':').ok_or(BadVerifier)?;
        let iterations: u32 = iter.parse().map_err(|_| BadVerifier)?;
        if iterations == 0 {
            return Err(BadVerifier);
        }
        let salt = B64.decode(salt).map_err(|_| BadVerifier)?;
        let key = |k: &str| -> Result<[u8; 32], BadVerifier> {
            B64.decode(k)
                .ok()
                .and_then(|v| v.try_into().ok())
                .ok_or(BadVerifier)
        };
        Ok(Self {
            iterations,
            salt,
            stored_key: key(stored)?,
            server_key: key(server)?,
        })
    }
}

impl fmt::Display for ScramVerifier {
    /// The verifier text, as stored in `pg_authid` (it is not the password, but keep it private).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "SCRAM-SHA-256${}:{}${}:{}",
            self.iterations,
            B64.encode(&self.salt),
            B64.encode(self.stored_key),
            B64.encode(self.server_key)
        )
    }
}

impl ScramVerifier {
    /// The verifier of `password` with this salt and iteration count.
    pub fn from_password(password: &str, salt: &[u8], iterations: u32) -> Self {
        let salted = hi(&prepare_password(password), salt, iterations.max(1));
        let client_key = hmac(&salted, b"Client Key");
        Self {
            iterations: iterations.max(1),
            salt: salt.to_vec(),
            stored_key: Sha256::digest(client_key).into(),
            server_key: hmac(&salted, b"Server Key"),
        }
    }

    /// The iteration count.
    pub fn iterations(&self) -> u32 {
        self.iterations
    }

    /// The salt.
    pub fn salt(&self) -> &[u8] {
        &self.salt
    }

    /// A verifier no proof matches (for unknown users, so the exchange looks the same).
    pub(crate) fn unmatchable(salt: Vec<u8>, random_key: [u8; 32]) -> Self {
        Self {
            iterations: DEFAULT_ITERATIONS,
            salt,
            stored_key: random_key,
            server_key: random_key,
        }
    }
}

/// A SCRAM protocol violation by the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed SCRAM message: {0}")]
pub struct ScramProtocolError(pub &'static str);

/// The client's first message, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientFirst {
    /// `n,,` or `y,,`.
    pub gs2_header: String,
    /// `n=...,r=...` (everything after the gs2 header).
    pub bare: String,
    /// The client nonce.
    pub nonce: String,
}

fn printable_nonce(n: &str) -> bool {
    !n.is_empty() && n.bytes().all(|b| (0x21..=0x7e).contains(&b) && b != b',')
}

/// Parse `client-first-message`.
pub fn parse_client_first(data: &[u8]) -> Result<ClientFirst, ScramProtocolError> {
    let text = std::str::from_utf8(data).map_err(|_| ScramProtocolError("not UTF-8"))?;
    let (cbind, rest) = text
        .split_once(',')
        .ok_or(ScramProtocolError("no gs2 header"))?;
    match cbind {
        "n" | "y" => {}
        c if c.starts_with("p=") => {
            return Err(ScramProtocolError("channel binding was not offered"));
        }
        _ => return Err(ScramProtocolError("bad channel binding flag")),
    }
    let (authzid, bare) = rest
        .split_once(',')
        .ok_or(ScramProtocolError("no gs2 header"))?;
    if !authzid.is_empty() {
        return Err(ScramProtocolError(
            "authorization identity is not supported",
        ));
    }
    let mut parts = bare.split(',');
    let user = parts
        .next()
        .ok_or(ScramProtocolError("no user attribute"))?;
    if user.starts_with("m=") {
        return Err(ScramProtocolError("mandatory extensions are not supported"));
    }
    if !user.starts_with("n=") {
        return Err(ScramProtocolError("no user attribute"));
    }
    let nonce = parts
        .next()
        .and_then(|r| r.strip_prefix("r="))
        .ok_or(ScramProtocolError("no nonce"))?;
    if !printable_nonce(nonce) {
        return Err(ScramProtocolError("bad nonce"));
    }
    Ok(ClientFirst {
        gs2_header: format!("{cbind},,"),
        bare: bare.to_string(),
        nonce: nonce.to_string(),
    })
}

/// The server side of one exchange after the client's first message.
#[derive(Clone)]
pub struct ScramServer {
    verifier: ScramVerifier,
    client_first: ClientFirst,
    server_first: String,
    nonce: String,
}

impl fmt::Debug for ScramServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScramServer").finish_non_exhaustive()
    }
}

/// The outcome of the client's final message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScramOutcome {
    /// The proof is right: send this `server-final-message`, then AuthenticationOk.
    Verified(Vec<u8>),
    /// Wrong password.
    Rejected,
}

impl ScramServer {
    /// Start: the server nonce (printable, no commas) is appended to the client's.
    pub fn new(verifier: ScramVerifier, client_first: ClientFirst, server_nonce: &str) -> Self {
        let nonce = format!("{}{}", client_first.nonce, server_nonce);
        let server_first = format!(
            "r={nonce},s={},i={}",
            B64.encode(&verifier.salt),
            verifier.iterations
        );
        Self {
            verifier,
            client_first,
            server_first,
            nonce,
        }
    }

    /// `server-first-message`.
    pub fn server_first(&self) -> &[u8] {
        self.server_first.as_bytes()
    }

    /// Check `client-final-message`.
    pub fn finish(&self, data: &[u8]) -> Result<ScramOutcome, ScramProtocolError> {
        let text = std::str::from_utf8(data).map_err(|_| ScramProtocolError("not UTF-8"))?;
        let (without_proof, proof) = text
            .rsplit_once(",p=")
            .ok_or(ScramProtocolError("no proof"))?;
        let mut parts = without_proof.split(',');
        let binding = parts
            .next()
            .and_then(|c| c.strip_prefix("c="))
            .ok_or(ScramProtocolError("no channel binding attribute"))?;
        let binding = B64
            .decode(binding)
            .map_err(|_| ScramProtocolError("bad channel binding"))?;
        if binding != self.client_first.gs2_header.as_bytes() {
            return Err(ScramProtocolError("channel binding does not match"));
        }
        let nonce = parts
            .next()
            .and_then(|r| r.strip_prefix("r="))
            .ok_or(ScramProtocolError("no nonce"))?;
        if nonce.as_bytes().ct_eq(self.nonce.as_bytes()).unwrap_u8() != 1 {
            return Err(ScramProtocolError("nonce does not match"));
        }
        let proof: [u8; 32] = B64
            .decode(proof)
            .ok()
            .and_then(|p| p.try_into().ok())
            .ok_or(ScramProtocolError("bad proof"))?;

        let auth_message = format!(
            "{},{},{}",
            self.client_first.bare, self.server_first, without_proof
        );
        let client_signature = hmac(&self.verifier.stored_key, auth_message.as_bytes());
        let mut client_key = proof;
        for (k, s) in client_key.iter_mut().zip(client_signature.iter()) {
            *k ^= s;
        }
        let computed: [u8; 32] = Sha256::digest(client_key).into();
        if computed.ct_eq(&self.verifier.stored_key).unwrap_u8() != 1 {
            return Ok(ScramOutcome::Rejected);
        }
        let server_signature = hmac(&self.verifier.server_key, auth_message.as_bytes());
        Ok(ScramOutcome::Verified(
            format!("v={}", B64.encode(server_signature)).into_bytes(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};

    use super::*;

    #[test]
    fn verifier_round_trips_and_matches_postgres_protocol() {
        // postgres-protocol computes verifiers independently; ours must verify its output.
        let theirs: ScramVerifier = postgres_protocol::password::scram_sha_256(b"s3cret pw")
            .parse()
            .unwrap();
        let ours = ScramVerifier::from_password("s3cret pw", theirs.salt(), theirs.iterations());
        assert_eq!(ours, theirs);
        assert_eq!(ours.to_string().parse::<ScramVerifier>().unwrap(), ours);
        assert!(!format!("{ours:?}").contains(&B64.encode(ours.stored_key)));
    }

    #[test]
    fn rejects_malformed_verifiers() {
        for s in [
            "",
            "SCRAM-SHA-256$",
            "SCRAM-SHA-256$4096:c2FsdA==$",
            "SCRAM-SHA-256$x:c2FsdA==$AAAA:AAAA",
            "SCRAM-SHA-256$0:c2FsdA==$yY6Yv2ElDwoyOkbhRM4XOtPeHsS4ZT7sw8tYrQ4F1Mg=:0bNmz7PEVq/mFNaCGpaY7yGJKdAoj2tcf8LHRbQ8TNs=",
            "SCRAM-SHA-256$4096:c2FsdA==$c2hvcnQ=:0bNmz7PEVq/mFNaCGpaY7yGJKdAoj2tcf8LHRbQ8TNs=",
        ] {
            assert!(s.parse::<ScramVerifier>().is_err(), "{s:?}");
        }
    }

    fn exchange(verifier: ScramVerifier, password: &[u8], binding: ChannelBinding) -> bool {
        let mut client = ScramSha256::new(password, binding);
        let first = parse_client_first(client.message()).unwrap();
        let server = ScramServer::new(verifier, first, "c2VydmVyIG5vbmNlIDEyMzQ1");
        client.update(server.server_first()).unwrap();
        match server.finish(client.message()).unwrap() {
            ScramOutcome::Verified(final_msg) => {
                // The client checks our server signature.
                client.finish(&final_msg).unwrap();
                true
            }
            ScramOutcome::Rejected => false,
        }
    }

    #[test]
    fn exchange_against_the_postgres_protocol_client() {
        let v = ScramVerifier::from_password("correct horse", b"0123456789abcdef", 4096);
        assert!(exchange(
            v.clone(),
            b"correct horse",
            ChannelBinding::unsupported()
        ));
        assert!(exchange(
            v.clone(),
            b"correct horse",
            ChannelBinding::unrequested()
        ));
        assert!(!exchange(
            v.clone(),
            b"correct hors",
            ChannelBinding::unsupported()
        ));
        assert!(!exchange(v, b"", ChannelBinding::unsupported()));
    }

    #[test]
    fn client_first_table() {
        let ok = [
            ("n,,n=,r=abc", "n,,", "abc"),
            ("y,,n=user,r=x/y+z", "y,,", "x/y+z"),
            ("n,,n=*,r=abc,ext=1", "n,,", "abc"),
        ];
        for (msg, header, nonce) in ok {
            let f = parse_client_first(msg.as_bytes()).unwrap();
            assert_eq!(
                (f.gs2_header.as_str(), f.nonce.as_str()),
                (header, nonce),
                "{msg}"
            );
        }
        let bad = [
            "p=tls-server-end-point,,n=,r=abc",
            "x,,n=,r=abc",
            "n,a=admin,n=,r=abc",
            "n,,m=ext,n=,r=abc",
            "n,,r=abc",
            "n,,n=,r=",
            "n,,n=,r=a b",
            "n,,n=",
            "garbage",
            "",
        ];
        for msg in bad {
            assert!(parse_client_first(msg.as_bytes()).is_err(), "{msg:?}");
        }
        assert!(parse_client_first(&[0xff, 0xfe]).is_err());
    }

    #[test]
    fn client_final_violations_are_protocol_errors() {
        let v = ScramVerifier::from_password("pw", b"salt", 4096);
        let first = parse_client_first(b"n,,n=,r=cnonce").unwrap();
        let server = ScramServer::new(v, first, "snonce");
        let proof = B64.encode([0u8; 32]);
        let table = [
            "c=biws,r=cnoncesnonce".to_string(),
            format!("c=eSws,r=cnoncesnonce,p={proof}"),
            format!("c=biws,r=cnonceWRONG,p={proof}"),
            "c=biws,r=cnoncesnonce,p=short".to_string(),
            format!("r=cnoncesnonce,p={proof}"),
        ];
        for msg in &table {
            assert!(server.finish(msg.as_bytes()).is_err(), "{msg}");
        }
        // Well formed but wrong proof: a rejection, not a protocol error.
        let msg = format!("c=biws,r=cnoncesnonce,p={proof}");
        assert_eq!(
            server.finish(msg.as_bytes()).unwrap(),
            ScramOutcome::Rejected
        );
    }
}
