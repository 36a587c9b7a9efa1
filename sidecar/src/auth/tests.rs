use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};

use super::*;
use crate::config::Secret;

fn sasl_initial(mechanism: &str, data: &[u8]) -> Vec<u8> {
    let mut b = mechanism.as_bytes().to_vec();
    b.push(0);
    b.extend_from_slice(&(data.len() as i32).to_be_bytes());
    b.extend_from_slice(data);
    b
}

/// Drive a whole SCRAM exchange with postgres-protocol's client, as a driver would.
fn scram_login(
    method: ClientAuth,
    user: &str,
    stored: Option<&StoredPassword>,
    password: &str,
) -> Result<(), AuthError> {
    let (mut auth, first) = ClientAuthenticator::start(method, user, stored);
    assert_eq!(
        first,
        AuthRequest::Sasl {
            mechanisms: vec!["SCRAM-SHA-256"]
        }
    );
    let mut client = ScramSha256::new(password.as_bytes(), ChannelBinding::unsupported());
    let server_first = match auth.receive(&sasl_initial("SCRAM-SHA-256", client.message()))? {
        AuthRequest::SaslContinue(d) => d,
        other => panic!("expected SASLContinue, got {other:?}"),
    };
    client
        .update(&server_first)
        .expect("server-first is well formed");
    match auth.receive(client.message())? {
        AuthRequest::SaslFinal(d) => {
            client.finish(&d).expect("server signature verifies");
            assert!(auth.is_authenticated());
            Ok(())
        }
        other => panic!("expected SASLFinal, got {other:?}"),
    }
}

fn md5_login(
    method: ClientAuth,
    user: &str,
    stored: Option<&StoredPassword>,
    password: &str,
) -> Result<(), AuthError> {
    let (mut auth, first) = ClientAuthenticator::start(method, user, stored);
    let AuthRequest::Md5Password { salt } = first else {
        panic!("expected md5, got {first:?}")
    };
    // postgres-protocol's client computes the answer independently.
    let mut answer =
        postgres_protocol::authentication::md5_hash(user.as_bytes(), password.as_bytes(), salt)
            .into_bytes();
    answer.push(0);
    let reply = auth.receive(&answer)?;
    assert_eq!(reply, AuthRequest::Ok);
    assert!(auth.is_authenticated());
    Ok(())
}

/// (user, stored secret, password typed, outcome).
type Case<'a> = (
    &'a str,
    Option<&'a StoredPassword>,
    &'a str,
    Result<(), AuthError>,
);

fn failed(user: &str) -> Result<(), AuthError> {
    Err(AuthError::Failed { user: user.into() })
}

#[test]
fn scram_logins_table() {
    let verifier = StoredPassword::parse(&postgres_protocol::password::scram_sha_256(b"pw-a"));
    let plain = StoredPassword::Plain(Secret::new("pw-b"));
    let md5 = StoredPassword::parse(&md5_stored("pw-c", "carol"));
    let cases: [Case<'_>; 7] = [
        ("alice", Some(&verifier), "pw-a", Ok(())),
        ("alice", Some(&verifier), "pw-A", failed("alice")),
        ("bob", Some(&plain), "pw-b", Ok(())),
        ("bob", Some(&plain), "pw-b ", failed("bob")),
        ("carol", Some(&md5), "pw-c", failed("carol")),
        ("nobody", None, "anything", failed("nobody")),
        ("nobody", None, "", failed("nobody")),
    ];
    for (user, stored, pw, want) in cases {
        assert_eq!(
            scram_login(ClientAuth::ScramSha256, user, stored, pw),
            want,
            "{user} {pw:?}"
        );
    }
}

#[test]
fn md5_logins_table() {
    let plain = StoredPassword::Plain(Secret::new("pw-b"));
    let md5 = StoredPassword::parse(&md5_stored("pw-c", "carol"));
    let cases: [Case<'_>; 6] = [
        ("bob", Some(&plain), "pw-b", Ok(())),
        ("bob", Some(&plain), "pw-x", failed("bob")),
        ("carol", Some(&md5), "pw-c", Ok(())),
        // md5 salts with the user name: the same password under another name fails.
        ("carl", Some(&md5), "pw-c", failed("carl")),
        ("nobody", None, "pw", failed("nobody")),
        ("bob", Some(&plain), "", failed("bob")),
    ];
    for (user, stored, pw, want) in cases {
        assert_eq!(
            md5_login(ClientAuth::Md5, user, stored, pw),
            want,
            "{user} {pw:?}"
        );
    }
}

#[test]
fn md5_configured_with_a_scram_verifier_uses_scram() {
    let verifier = StoredPassword::parse(&postgres_protocol::password::scram_sha_256(b"pw"));
    assert_eq!(
        scram_login(ClientAuth::Md5, "alice", Some(&verifier), "pw"),
        Ok(())
    );
}

#[test]
fn trust_is_ok_at_once() {
    let (auth, first) = ClientAuthenticator::start(ClientAuth::Trust, "anyone", None);
    assert_eq!(first, AuthRequest::Ok);
    assert!(auth.is_authenticated());
}

#[test]
fn salts_and_nonces_differ_between_exchanges() {
    let plain = StoredPassword::Plain(Secret::new("pw"));
    let (_, a) = ClientAuthenticator::start(ClientAuth::Md5, "u", Some(&plain));
    let (_, b) = ClientAuthenticator::start(ClientAuth::Md5, "u", Some(&plain));
    let (_, c) = ClientAuthenticator::start(ClientAuth::Md5, "u", Some(&plain));
    assert!(a != b || b != c, "three identical random salts");
}

#[test]
fn protocol_violations() {
    let plain = StoredPassword::Plain(Secret::new("pw"));
    let start = || ClientAuthenticator::start(ClientAuth::ScramSha256, "u", Some(&plain)).0;
    let bad_initial: [Vec<u8>; 5] = [
        b"SCRAM-SHA-256".to_vec(),
        sasl_initial("SCRAM-SHA-256-PLUS", b"p=tls-server-end-point,,n=,r=abc"),
        sasl_initial("SCRAM-SHA-256", b"p=tls-server-end-point,,n=,r=abc"),
        sasl_initial("SCRAM-SHA-256", b"n,,n=,r="),
        {
            let mut b = sasl_initial("SCRAM-SHA-256", b"n,,n=,r=abc");
            b.truncate(b.len() - 1);
            b
        },
    ];
    for body in bad_initial {
        let mut a = start();
        let e = a.receive(&body).unwrap_err();
        assert_eq!(e.sqlstate(), "08P01", "{body:?}");
        assert_eq!(e.severity(), "FATAL");
        // Nothing more is accepted.
        assert!(a.receive(&body).is_err());
        assert!(!a.is_authenticated());
    }
    // A wrong final message.
    let mut a = start();
    a.receive(&sasl_initial("SCRAM-SHA-256", b"n,,n=,r=abc"))
        .unwrap();
    assert_eq!(
        a.receive(b"c=biws,r=abc,p=AAAA").unwrap_err().sqlstate(),
        "08P01"
    );
}

#[test]
fn error_messages() {
    let e = AuthError::Failed {
        user: "alice".into(),
    };
    assert_eq!(
        e.to_string(),
        "password authentication failed for user \"alice\""
    );
    assert_eq!(e.sqlstate(), "28P01");
}

#[test]
fn encodes_authentication_messages() {
    assert_eq!(AuthRequest::Ok.encode(), [b'R', 0, 0, 0, 8, 0, 0, 0, 0]);
    assert_eq!(
        AuthRequest::Md5Password { salt: [1, 2, 3, 4] }.encode(),
        [b'R', 0, 0, 0, 12, 0, 0, 0, 5, 1, 2, 3, 4]
    );
    let sasl = AuthRequest::Sasl {
        mechanisms: vec!["SCRAM-SHA-256"],
    }
    .encode();
    assert_eq!(&sasl[..9], &[b'R', 0, 0, 0, 23, 0, 0, 0, 10]);
    assert_eq!(&sasl[9..], b"SCRAM-SHA-256\0\0");
    let cont = AuthRequest::SaslContinue(b"r=x".to_vec()).encode();
    assert_eq!(cont, [b'R', 0, 0, 0, 11, 0, 0, 0, 11, b'r', b'=', b'x']);
    let fin = AuthRequest::SaslFinal(b"v=y".to_vec()).encode();
    assert_eq!(&fin[5..9], &[0, 0, 0, 12]);
}

/// Secrets made by the real PostgreSQL on 127.0.0.1:5432 must verify here.
#[tokio::test]
async fn verifiers_made_by_postgresql_verify() {
    let (client, conn) = tokio_postgres::connect(
        "host=127.0.0.1 port=5432 user=postgres dbname=postgres",
        tokio_postgres::NoTls,
    )
    .await
    .expect("the test PostgreSQL on 127.0.0.1:5432");
    tokio::spawn(conn);
    let role = format!("pw_auth_test_{}", std::process::id());
    let mut secrets = Vec::new();
    for (encryption, password) in [("scram-sha-256", "Sup3r s3cret!"), ("md5", "md5 pw")] {
        client
            .batch_execute(&format!(
                "SET password_encryption = '{encryption}'; DROP ROLE IF EXISTS {role}; CREATE ROLE {role} PASSWORD '{password}'"
            ))
            .await
            .unwrap();
        let row = client
            .query_one(
                "SELECT rolpassword FROM pg_authid WHERE rolname = $1",
                &[&role],
            )
            .await
            .unwrap();
        let stored: String = row.get(0);
        secrets.push((encryption, password, stored));
    }
    client
        .batch_execute(&format!("DROP ROLE IF EXISTS {role}"))
        .await
        .unwrap();

    let (_, scram_pw, scram_secret) = &secrets[0];
    assert!(
        scram_secret.starts_with("SCRAM-SHA-256$4096:"),
        "{scram_secret}"
    );
    let stored = StoredPassword::parse(scram_secret);
    assert!(matches!(stored, StoredPassword::Scram(_)));
    assert_eq!(
        scram_login(ClientAuth::ScramSha256, &role, Some(&stored), scram_pw),
        Ok(())
    );
    assert_eq!(
        scram_login(ClientAuth::ScramSha256, &role, Some(&stored), "wrong"),
        failed(&role)
    );
    // Our own verifier from the password and PostgreSQL's salt is byte-identical.
    let StoredPassword::Scram(v) = &stored else {
        unreachable!()
    };
    let ours = scram::ScramVerifier::from_password(scram_pw, v.salt(), v.iterations());
    assert_eq!(&ours.to_string(), scram_secret);

    let (_, md5_pw, md5_secret) = &secrets[1];
    assert_eq!(md5_secret, &md5_stored(md5_pw, &role));
    let stored = StoredPassword::parse(md5_secret);
    assert_eq!(
        md5_login(ClientAuth::Md5, &role, Some(&stored), md5_pw),
        Ok(())
    );
}
