//! Client authentication over a real socket with a real driver (tokio-postgres): a minimal
//! server speaks the startup phase with `ClientAuthenticator` and the encoded `R` messages,
//! then sends ReadyForQuery, which is all a driver needs to finish connecting.

use poolwarden_sidecar::auth::{AuthError, AuthFile, AuthRequest, ClientAuthenticator};
use poolwarden_sidecar::config::ClientAuth;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

async fn read_startup(s: &mut TcpStream) -> Vec<(String, String)> {
    let len = s.read_i32().await.unwrap() as usize;
    let mut body = vec![0; len - 4];
    s.read_exact(&mut body).await.unwrap();
    assert_eq!(
        i32::from_be_bytes(body[..4].try_into().unwrap()),
        196_608,
        "protocol 3.0"
    );
    let mut fields = body[4..]
        .split(|&b| b == 0)
        .map(|f| String::from_utf8(f.to_vec()).unwrap());
    let mut params = Vec::new();
    while let (Some(k), Some(v)) = (fields.next(), fields.next()) {
        if k.is_empty() {
            break;
        }
        params.push((k, v));
    }
    params
}

async fn read_password_message(s: &mut TcpStream) -> Vec<u8> {
    let tag = s.read_u8().await.unwrap();
    assert_eq!(tag, b'p');
    let len = s.read_i32().await.unwrap() as usize;
    let mut body = vec![0; len - 4];
    s.read_exact(&mut body).await.unwrap();
    body
}

fn error_response(e: &AuthError) -> Vec<u8> {
    let mut fields = Vec::new();
    for (code, value) in [
        (b'S', e.severity().to_string()),
        (b'V', e.severity().to_string()),
        (b'C', e.sqlstate().to_string()),
        (b'M', e.to_string()),
    ] {
        fields.push(code);
        fields.extend_from_slice(value.as_bytes());
        fields.push(0);
    }
    fields.push(0);
    let mut out = vec![b'E'];
    out.extend_from_slice(&((fields.len() + 4) as i32).to_be_bytes());
    out.extend_from_slice(&fields);
    out
}

/// Serve one client's startup; returns whether it was let in.
async fn serve_one(listener: &TcpListener, method: ClientAuth, users: &AuthFile) -> bool {
    let (mut s, _) = listener.accept().await.unwrap();
    let params = read_startup(&mut s).await;
    let user = params
        .iter()
        .find(|(k, _)| k == "user")
        .map(|(_, v)| v.clone())
        .unwrap();
    let (mut auth, mut next) = ClientAuthenticator::start(method, &user, users.get(&user));
    loop {
        s.write_all(&next.encode()).await.unwrap();
        match next {
            AuthRequest::Ok => break,
            AuthRequest::SaslFinal(_) => {
                s.write_all(&AuthRequest::Ok.encode()).await.unwrap();
                break;
            }
            _ => {}
        }
        let body = read_password_message(&mut s).await;
        match auth.receive(&body) {
            Ok(reply) => next = reply,
            Err(e) => {
                s.write_all(&error_response(&e)).await.unwrap();
                return false;
            }
        }
    }
    assert!(auth.is_authenticated());
    // ReadyForQuery (idle), then wait for the client to go away.
    s.write_all(&[b'Z', 0, 0, 0, 5, b'I']).await.unwrap();
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest).await;
    true
}

async fn try_login(
    method: ClientAuth,
    users: &AuthFile,
    user: &str,
    password: &str,
) -> Result<(), String> {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let users = users.clone();
    let server = tokio::spawn(async move { serve_one(&listener, method, &users).await });
    let conninfo = format!(
        "host=127.0.0.1 port={port} user={user} password='{password}' dbname=clinical sslmode=disable"
    );
    let outcome = match tokio_postgres::connect(&conninfo, tokio_postgres::NoTls).await {
        Ok((client, conn)) => {
            drop(client);
            conn.await.map_err(|e| e.to_string())
        }
        Err(e) => Err(e
            .as_db_error()
            .map(|d| format!("{} {}", d.code().code(), d.message()))
            .unwrap_or_else(|| e.to_string())),
    };
    let admitted = server.await.unwrap();
    assert_eq!(admitted, outcome.is_ok(), "{outcome:?}");
    outcome
}

#[tokio::test]
async fn a_real_driver_logs_in_with_scram_and_md5() {
    let scram = postgres_protocol::password::scram_sha_256(b"scram pw");
    let users = AuthFile::parse(&format!(
        "\"alice\" \"{scram}\"\n\"bob\" \"plain pw\"\n\"carol\" \"{}\"\n",
        postgres_protocol::password::md5(b"md5 pw", "carol")
    ))
    .unwrap();
    let refused = |user: &str| {
        Err(format!(
            "28P01 password authentication failed for user \"{user}\""
        ))
    };
    let table: [(ClientAuth, &str, &str, Result<(), String>); 9] = [
        (ClientAuth::ScramSha256, "alice", "scram pw", Ok(())),
        (ClientAuth::ScramSha256, "alice", "wrong", refused("alice")),
        (ClientAuth::ScramSha256, "bob", "plain pw", Ok(())),
        (ClientAuth::ScramSha256, "nobody", "x", refused("nobody")),
        (ClientAuth::Md5, "carol", "md5 pw", Ok(())),
        (ClientAuth::Md5, "carol", "md5 PW", refused("carol")),
        (ClientAuth::Md5, "bob", "plain pw", Ok(())),
        (ClientAuth::Md5, "alice", "scram pw", Ok(())),
        (ClientAuth::Md5, "nobody", "x", refused("nobody")),
    ];
    for (method, user, password, want) in table {
        let got = try_login(method, &users, user, password).await;
        assert_eq!(got, want, "{method:?} {user} {password:?}");
    }
}
