//! The Secret `<policy>-poolwarden-admin`: the admin token the operator uses for
//! `PUT /api/pool` and `GET /api/metrics`, and the sidecar's tokens file.
//!
//! The token is generated once and kept: every reconcile reads the current Secret and writes
//! the same token back, so the server-side apply never rotates it by accident.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::ObjectMeta;
use rand::RngCore;

/// Key of the bare admin token.
pub const TOKEN_KEY: &str = "token";
/// Key of the sidecar's tokens file (`admin <token>\n`).
pub const TOKENS_KEY: &str = "tokens";

/// The admin Secret's name for a policy.
pub fn name(policy: &str) -> String {
    crate::webhook::admin_secret_name(policy)
}

/// A fresh admin token: 32 random bytes, hex encoded (64 characters).
pub fn generate_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The token stored in an existing admin Secret, when it is well formed.
pub fn existing_token(secret: &Secret) -> Option<String> {
    let raw = secret.data.as_ref()?.get(TOKEN_KEY)?;
    let token = String::from_utf8(raw.0.clone()).ok()?;
    let ok = token.len() >= 32
        && token
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    ok.then_some(token)
}

/// The existing token when there is one, else a new one.
pub fn token_to_keep(existing: Option<&Secret>) -> String {
    existing
        .and_then(existing_token)
        .unwrap_or_else(generate_token)
}

/// The tokens file content for the sidecar.
pub fn tokens_file(token: &str) -> String {
    format!("admin {token}\n")
}

/// The Secret object (without owner references; the caller adds them).
pub fn build(policy: &str, namespace: &str, token: &str) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(name(policy)),
            namespace: Some(namespace.to_string()),
            labels: Some(super::labels(policy)),
            ..ObjectMeta::default()
        },
        type_: Some("Opaque".into()),
        data: Some(BTreeMap::from([
            (TOKEN_KEY.to_string(), ByteString(token.as_bytes().to_vec())),
            (
                TOKENS_KEY.to_string(),
                ByteString(tokens_file(token).into_bytes()),
            ),
        ])),
        ..Secret::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_tokens_are_64_hex_and_differ() {
        let (a, b) = (generate_token(), generate_token());
        assert_eq!(a.len(), 64);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }

    #[test]
    fn an_existing_token_is_kept_and_a_broken_one_replaced() {
        let good = build("p", "ns", &"ab".repeat(32));
        assert_eq!(token_to_keep(Some(&good)), "ab".repeat(32));
        let table: Vec<(&str, Option<Vec<u8>>)> = vec![
            ("no data", None),
            ("too short", Some(b"abc".to_vec())),
            ("not utf-8", Some(vec![0xff; 40])),
            ("spaces", Some(format!("{} x", "a".repeat(40)).into_bytes())),
        ];
        for (what, raw) in table {
            let mut s = Secret::default();
            if let Some(raw) = raw {
                s.data = Some(BTreeMap::from([(TOKEN_KEY.to_string(), ByteString(raw))]));
            }
            let t = token_to_keep(Some(&s));
            assert_eq!(t.len(), 64, "{what}");
            assert_ne!(t, "ab".repeat(32), "{what}");
        }
    }

    #[test]
    fn secret_has_token_and_tokens_file() {
        let s = build("clinical", "ns", "tok");
        assert_eq!(
            s.metadata.name.as_deref(),
            Some("clinical-poolwarden-admin")
        );
        let data = s.data.unwrap();
        assert_eq!(data[TOKEN_KEY].0, b"tok");
        assert_eq!(data[TOKENS_KEY].0, b"admin tok\n");
    }
}
