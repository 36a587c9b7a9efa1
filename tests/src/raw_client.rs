//! A PostgreSQL client on a raw socket, for what drivers never send: pipelines without a Sync
//! between messages, a message in pieces, a client that vanishes mid-query.

use std::time::Duration;

use bytes::BytesMut;
use fallible_iterator::FallibleIterator;
use postgres_protocol::message::{backend, frontend};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::sidecar::Sidecar;

/// Past this without a reply the test fails (a hang), on a loaded 2-core machine too.
const REPLY_LIMIT: Duration = Duration::from_secs(25);

/// A logged-in (trust) client of a sidecar.
pub struct RawClient {
    sock: TcpStream,
    buf: BytesMut,
    /// DataRow bodies of the last [`RawClient::replies`].
    pub rows: Vec<Vec<u8>>,
}

/// A simple Query message as bytes.
pub fn query_message(sql: &str) -> Vec<u8> {
    let mut out = BytesMut::new();
    frontend::query(sql, &mut out).expect("encode a Query");
    out.to_vec()
}

impl RawClient {
    /// Connect to `sidecar` as postgres/postgres with `app` as application_name and wait for
    /// the first ReadyForQuery.
    pub async fn login(sidecar: &Sidecar, app: &str) -> Self {
        let mut sock = TcpStream::connect(("127.0.0.1", sidecar.port))
            .await
            .expect("connect to the sidecar");
        let mut out = BytesMut::new();
        frontend::startup_message(
            [
                ("user", "postgres"),
                ("database", "postgres"),
                ("application_name", app),
            ],
            &mut out,
        )
        .expect("encode the startup message");
        sock.write_all(&out)
            .await
            .expect("send the startup message");
        let mut c = Self {
            sock,
            buf: BytesMut::new(),
            rows: Vec::new(),
        };
        let hello = c.replies().await;
        assert!(hello.ends_with('Z'), "login: {hello}");
        c
    }

    /// Send raw bytes (a whole message, part of one, or several).
    pub async fn send(&mut self, bytes: &[u8]) {
        self.sock
            .write_all(bytes)
            .await
            .expect("send to the sidecar");
    }

    /// Parse `sql` as statement `name` (no parameter types).
    pub async fn send_parse(&mut self, name: &str, sql: &str) {
        let mut out = BytesMut::new();
        frontend::parse(name, sql, std::iter::empty(), &mut out).expect("encode Parse");
        self.send(&out).await;
    }

    /// Bind statement `statement` (no parameters) to the unnamed portal and Execute it.
    pub async fn send_bind_execute(&mut self, statement: &str) {
        let mut out = BytesMut::new();
        let no_params = |_: (),
                         _: &mut BytesMut|
         -> Result<
            postgres_protocol::IsNull,
            Box<dyn std::error::Error + Sync + Send>,
        > { unreachable!("no parameters") };
        frontend::bind(
            "",
            statement,
            std::iter::empty::<i16>(),
            std::iter::empty::<()>(),
            no_params,
            Some(0),
            &mut out,
        )
        .map_err(|_| ())
        .expect("encode Bind");
        frontend::execute("", 0, &mut out).expect("encode Execute");
        self.send(&out).await;
    }

    /// Sync.
    pub async fn sync(&mut self) {
        let mut out = BytesMut::new();
        frontend::sync(&mut out);
        self.send(&out).await;
    }

    /// A simple Query.
    pub async fn query(&mut self, sql: &str) {
        self.send(&query_message(sql)).await;
    }

    /// Replies up to ReadyForQuery as tags: `1` ParseComplete, `2` BindComplete, `3`
    /// CloseComplete, `D` DataRow (bodies kept in [`RawClient::rows`]), `C(tag)`,
    /// `E(sqlstate)`, `Z`; ParameterStatus, BackendKeyData, notices and authentication are
    /// left out.
    pub async fn replies(&mut self) -> String {
        self.rows.clear();
        let mut seen = String::new();
        loop {
            let msg = tokio::time::timeout(REPLY_LIMIT, async {
                loop {
                    if let Some(m) = backend::Message::parse(&mut self.buf).expect("a reply") {
                        return m;
                    }
                    let n = self.sock.read_buf(&mut self.buf).await.expect("read");
                    assert!(n > 0, "connection closed after {seen}");
                }
            })
            .await
            .unwrap_or_else(|_| panic!("no reply within {REPLY_LIMIT:?} after {seen}"));
            match msg {
                backend::Message::ParseComplete => seen.push('1'),
                backend::Message::BindComplete => seen.push('2'),
                backend::Message::CloseComplete => seen.push('3'),
                backend::Message::DataRow(r) => {
                    self.rows.push(r.buffer().to_vec());
                    seen.push('D');
                }
                backend::Message::CommandComplete(c) => {
                    seen.push_str(&format!("C({})", c.tag().unwrap_or("?")));
                }
                backend::Message::ErrorResponse(e) => {
                    let mut fields = e.fields();
                    let mut code = String::new();
                    while let Ok(Some(f)) = fields.next() {
                        if f.type_() == b'C' {
                            code = String::from_utf8_lossy(f.value_bytes()).into_owned();
                        }
                    }
                    seen.push_str(&format!("E({code})"));
                }
                backend::Message::ReadyForQuery(_) => {
                    seen.push('Z');
                    return seen;
                }
                _ => {}
            }
        }
    }
}
