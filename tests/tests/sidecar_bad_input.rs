//! Bad input on the client side: malformed, oversized, truncated and garbage messages get a
//! FATAL 08P01 and a disconnect, without hurting other clients. Also the start-up limits:
//! SSL/GSS requests answered `N`, the startup timeout and clients.max_connections.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use poolwarden_tests::sidecar::{Sidecar, config_yaml, scalar, through, unique};

fn startup_packet(user: &str, database: &str) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&196_608i32.to_be_bytes());
    for (k, v) in [
        ("user", user),
        ("database", database),
        ("application_name", "pw_raw"),
    ] {
        body.extend_from_slice(k.as_bytes());
        body.push(0);
        body.extend_from_slice(v.as_bytes());
        body.push(0);
    }
    body.push(0);
    let mut p = ((body.len() + 4) as i32).to_be_bytes().to_vec();
    p.extend(body);
    p
}

/// Read one message: (tag, body). `None` at end of stream.
async fn read_msg(s: &mut TcpStream) -> Option<(u8, Vec<u8>)> {
    let tag = s.read_u8().await.ok()?;
    let len = s.read_i32().await.ok()?;
    let mut body = vec![0; (len - 4) as usize];
    s.read_exact(&mut body).await.ok()?;
    Some((tag, body))
}

/// SQLSTATE and severity of an ErrorResponse body.
fn fields(body: &[u8]) -> (String, String, String) {
    let (mut sev, mut code, mut msg) = (String::new(), String::new(), String::new());
    for field in body.split(|b| *b == 0).filter(|f| !f.is_empty()) {
        let v = String::from_utf8_lossy(&field[1..]).into_owned();
        match field[0] {
            b'V' => sev = v,
            b'C' => code = v,
            b'M' => msg = v,
            _ => {}
        }
    }
    (sev, code, msg)
}

async fn logged_in(sidecar: &Sidecar) -> TcpStream {
    let mut s = TcpStream::connect(("127.0.0.1", sidecar.port))
        .await
        .unwrap();
    s.write_all(&startup_packet("postgres", "postgres"))
        .await
        .unwrap();
    loop {
        let (tag, body) = read_msg(&mut s).await.expect("login answer");
        assert_ne!(tag, b'E', "login refused: {:?}", fields(&body));
        if tag == b'Z' {
            return s;
        }
    }
}

/// Expect a FATAL with `code`, then the end of the stream, within 5 s.
async fn expect_fatal_and_close(s: &mut TcpStream, code: &str) {
    let r = tokio::time::timeout(Duration::from_secs(5), async {
        let (tag, body) = read_msg(s).await.expect("an ErrorResponse");
        assert_eq!(tag, b'E');
        let (sev, got, _) = fields(&body);
        assert_eq!((sev.as_str(), got.as_str()), ("FATAL", code));
        let mut rest = Vec::new();
        let _ = s.read_to_end(&mut rest).await;
        assert!(rest.is_empty(), "data after the FATAL: {rest:?}");
    })
    .await;
    assert!(
        r.is_ok(),
        "no FATAL {code} and disconnect within 5 s (hang)"
    );
}

#[tokio::test]
async fn malformed_messages_get_08p01_and_a_disconnect() {
    let sidecar = Sidecar::start_with(|port| {
        config_yaml(
            port,
            "postgres",
            "transaction",
            "  pool_size: 2\n  max_overflow: 0",
            "clients:\n  max_message_size: 4096",
        )
    });
    let (healthy, _conn) = through(&sidecar, "postgres", &unique("pw_bystander"))
        .await
        .unwrap();
    assert_eq!(scalar(&healthy, "SELECT 1").await.unwrap(), "1");

    // (what, bytes after login, half-close afterwards)
    let cases: Vec<(&str, Vec<u8>, bool)> = vec![
        ("unknown type", b"Z\0\0\0\x05I".to_vec(), false),
        ("length below 4", b"Q\0\0\0\x02".to_vec(), false),
        ("negative length", b"Q\xff\xff\xff\xf0".to_vec(), false),
        ("oversized", b"Q\0\x01\0\0SELECT".to_vec(), false),
        ("truncated", b"Q\0\0\0\x64SELECT".to_vec(), true),
        (
            "garbage",
            b"\x00\x01\x02\x03\x04\x05\x06\x07".to_vec(),
            false,
        ),
        ("password outside auth", b"p\0\0\0\x08abc\0".to_vec(), false),
    ];
    for (what, bytes, half_close) in cases {
        let mut s = logged_in(&sidecar).await;
        s.write_all(&bytes).await.unwrap();
        if half_close {
            s.shutdown().await.unwrap();
        }
        println!("case: {what}");
        expect_fatal_and_close(&mut s, "08P01").await;
    }
    // Garbage instead of a startup packet (an HTTP request).
    let mut s = TcpStream::connect(("127.0.0.1", sidecar.port))
        .await
        .unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    expect_fatal_and_close(&mut s, "08P01").await;
    // A bystander is unaffected.
    assert_eq!(scalar(&healthy, "SELECT 2").await.unwrap(), "2");
}

#[tokio::test]
async fn ssl_and_gss_requests_are_answered_n_and_unknown_cancels_ignored() {
    let sidecar = Sidecar::start(
        "postgres",
        "transaction",
        "  pool_size: 1\n  max_overflow: 0",
    );
    let mut s = TcpStream::connect(("127.0.0.1", sidecar.port))
        .await
        .unwrap();
    for code in [80_877_103i32, 80_877_104] {
        let mut p = 8i32.to_be_bytes().to_vec();
        p.extend(code.to_be_bytes());
        s.write_all(&p).await.unwrap();
        assert_eq!(s.read_u8().await.unwrap(), b'N');
    }
    s.write_all(&startup_packet("postgres", "postgres"))
        .await
        .unwrap();
    let mut tags = Vec::new();
    while let Some((tag, _)) = read_msg(&mut s).await {
        tags.push(tag);
        if tag == b'Z' {
            break;
        }
    }
    assert_eq!(tags.first(), Some(&b'R'));
    assert!(tags.contains(&b'K') && tags.contains(&b'S'), "{tags:?}");
    // A cancel request with a key nobody has: the connection just closes.
    let mut c = TcpStream::connect(("127.0.0.1", sidecar.port))
        .await
        .unwrap();
    let mut p = 16i32.to_be_bytes().to_vec();
    p.extend(80_877_102i32.to_be_bytes());
    p.extend(1i32.to_be_bytes());
    p.extend(2i32.to_be_bytes());
    c.write_all(&p).await.unwrap();
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), c.read_to_end(&mut rest))
        .await
        .unwrap()
        .unwrap();
    assert!(rest.is_empty());
    // Unknown database: FATAL 3D000.
    let mut u = TcpStream::connect(("127.0.0.1", sidecar.port))
        .await
        .unwrap();
    u.write_all(&startup_packet("postgres", "no_such_db"))
        .await
        .unwrap();
    expect_fatal_and_close(&mut u, "3D000").await;
}

#[tokio::test]
async fn silent_clients_are_dropped_after_the_startup_timeout() {
    let sidecar = Sidecar::start_with(|port| {
        config_yaml(
            port,
            "postgres",
            "transaction",
            "  pool_size: 1\n  max_overflow: 0",
            "clients:\n  startup_timeout: 1s",
        )
    });
    let mut s = TcpStream::connect(("127.0.0.1", sidecar.port))
        .await
        .unwrap();
    let start = Instant::now();
    let mut buf = Vec::new();
    // The kernel holds a client that has sent nothing for about a second first (the
    // listener's TCP_DEFER_ACCEPT); then the sidecar's startup timeout runs.
    let r = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf)).await;
    assert!(r.is_ok(), "a silent client was not dropped within 10 s");
    assert!(
        start.elapsed() >= Duration::from_millis(900),
        "dropped too early: {:?}",
        start.elapsed()
    );
}

#[tokio::test]
async fn clients_over_max_connections_get_53300() {
    let sidecar = Sidecar::start_with(|port| {
        config_yaml(
            port,
            "postgres",
            "transaction",
            "  pool_size: 1\n  max_overflow: 0",
            "clients:\n  max_connections: 2",
        )
    });
    let app = unique("pw_maxconn");
    let (a, _ca) = through(&sidecar, "postgres", &app).await.unwrap();
    let (_b, _cb) = through(&sidecar, "postgres", &app).await.unwrap();
    let err = match through(&sidecar, "postgres", &app).await {
        Ok(_) => panic!("third client refused"),
        Err(e) => e,
    };
    let db = err.as_db_error().unwrap_or_else(|| panic!("{err}"));
    assert_eq!(db.code().code(), "53300");
    assert!(
        db.message().contains("too many clients"),
        "{}",
        db.message()
    );
    assert_eq!(scalar(&a, "SELECT 1").await.unwrap(), "1");
}

#[tokio::test]
async fn garbage_inside_a_transaction_rolls_it_back() {
    let sidecar = Sidecar::start(
        "postgres",
        "transaction",
        "  pool_size: 1\n  max_overflow: 0",
    );
    let db = poolwarden_tests::sidecar::direct("postgres").await;
    let table = unique("pw_garbage_tx");
    db.batch_execute(&format!("CREATE TABLE {table} (id int)"))
        .await
        .unwrap();
    let mut s = logged_in(&sidecar).await;
    let sql = format!("BEGIN; INSERT INTO {table} VALUES (1)\0");
    let mut q = vec![b'Q'];
    q.extend(((sql.len() + 4) as i32).to_be_bytes());
    q.extend(sql.as_bytes());
    s.write_all(&q).await.unwrap();
    loop {
        let (tag, body) = read_msg(&mut s).await.expect("answer");
        if tag == b'Z' {
            assert_eq!(body, b"T");
            break;
        }
    }
    s.write_all(b"\x01\x02\x03\x04\x05").await.unwrap();
    expect_fatal_and_close(&mut s, "08P01").await;
    // The transaction was rolled back and the single pool slot serves the next client.
    let (c, _conn) = through(&sidecar, "postgres", &unique("pw_after"))
        .await
        .unwrap();
    assert_eq!(
        scalar(&c, &format!("SELECT count(*) FROM {table}"))
            .await
            .unwrap(),
        "0"
    );
    db.batch_execute(&format!("DROP TABLE {table}"))
        .await
        .unwrap();
}
