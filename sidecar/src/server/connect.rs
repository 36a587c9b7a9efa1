//! [`Connector`]: the one place that opens a server connection. The circuit breaker wraps
//! [`Connector::connect`].

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use postgres_protocol::authentication::sasl::{self, ChannelBinding, ScramSha256};
use postgres_protocol::message::frontend;
use rustls::ClientConfig;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::conn::{CancelTarget, ServerConn, ServerError, server_reader};
use super::{ServerStream, tls};
use crate::config::{DatabaseConfig, SslMode};
use crate::protocol::build::parse_error_fields;

/// Why a server connection could not be opened. Messages never hold a password.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// Did not finish within connect_timeout.
    #[error("connecting to {0} timed out")]
    Timeout(String),
    /// TCP or TLS failure.
    #[error("cannot connect to {addr}: {source}")]
    Io {
        /// host:port
        addr: String,
        /// The cause.
        source: std::io::Error,
    },
    /// TLS set-up or a server refusing TLS when it is required.
    #[error("TLS to {addr}: {message}")]
    Tls {
        /// host:port
        addr: String,
        /// The cause.
        message: String,
    },
    /// The server refused the login or the session.
    #[error("server refused the connection: {code} {message}")]
    Refused {
        /// SQLSTATE.
        code: String,
        /// Server message.
        message: String,
    },
    /// No password available for a method that needs one, or it could not be read.
    #[error("password: {0}")]
    Password(String),
    /// The server asked for something we do not speak.
    #[error("unsupported server authentication: {0}")]
    UnsupportedAuth(String),
    /// Anything else that went wrong on the socket.
    #[error(transparent)]
    Server(#[from] ServerError),
    /// The pool's circuit breaker is open: no attempt was made. The text is the configured
    /// `breaker.message`, sent to the client as ERROR 57P03.
    #[error("{0}")]
    BreakerOpen(String),
}

/// Opens server connections for one database.
#[derive(Clone)]
pub struct Connector {
    db: DatabaseConfig,
    tls: Option<Arc<ClientConfig>>,
    timeouts: Arc<Timeouts>,
}

/// connect_timeout and statement_timeout in milliseconds, changeable on reload: new server
/// connections use the new values, open ones keep theirs until they are recycled.
#[derive(Debug)]
struct Timeouts {
    connect_ms: AtomicU64,
    statement_ms: AtomicU64,
}

impl std::fmt::Debug for Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connector")
            .field("database", &self.db.name)
            .finish_non_exhaustive()
    }
}

impl Connector {
    /// A connector for `db`; fails only on a TLS configuration problem (e.g. a bad
    /// sslrootcert).
    pub fn new(
        db: DatabaseConfig,
        connect_timeout: Duration,
        statement_timeout: Duration,
    ) -> Result<Self, ConnectError> {
        let tls = tls::client_config(db.sslmode, db.sslrootcert.as_deref()).map_err(|message| {
            ConnectError::Tls {
                addr: format!("{}:{}", db.host, db.port),
                message,
            }
        })?;
        let timeouts = Arc::new(Timeouts {
            connect_ms: AtomicU64::new(connect_timeout.as_millis() as u64),
            statement_ms: AtomicU64::new(statement_timeout.as_millis() as u64),
        });
        Ok(Self { db, tls, timeouts })
    }

    /// Use new timeouts for connections opened from now on.
    pub fn set_timeouts(&self, connect_timeout: Duration, statement_timeout: Duration) {
        self.timeouts
            .connect_ms
            .store(connect_timeout.as_millis() as u64, Ordering::Relaxed);
        self.timeouts
            .statement_ms
            .store(statement_timeout.as_millis() as u64, Ordering::Relaxed);
    }

    /// The connect_timeout in force.
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.timeouts.connect_ms.load(Ordering::Relaxed))
    }

    /// The database this connector serves.
    pub fn database(&self) -> &DatabaseConfig {
        &self.db
    }

    /// Open and log in one server connection, with `statement_timeout` set for the session
    /// (as a startup option, so `DISCARD ALL`/`RESET ALL` keep it). The whole attempt is
    /// bounded by connect_timeout.
    pub async fn connect(&self, application_name: &str) -> Result<ServerConn, ConnectError> {
        let addr = format!("{}:{}", self.db.host, self.db.port);
        match tokio::time::timeout(
            self.connect_timeout(),
            self.connect_inner(&addr, application_name),
        )
        .await
        {
            Ok(r) => r,
            Err(_) => Err(ConnectError::Timeout(addr)),
        }
    }

    async fn connect_inner(
        &self,
        addr: &str,
        application_name: &str,
    ) -> Result<ServerConn, ConnectError> {
        let io = |source| ConnectError::Io {
            addr: addr.to_string(),
            source,
        };
        let mut tcp = TcpStream::connect(addr).await.map_err(io)?;
        let _ = tcp.set_nodelay(true);
        let peer: SocketAddr = tcp.peer_addr().map_err(io)?;
        let stream = match (&self.tls, self.db.sslmode) {
            (Some(cfg), mode) => {
                let mut buf = BytesMut::new();
                frontend::ssl_request(&mut buf);
                tcp.write_all(&buf).await.map_err(io)?;
                let answer = tcp.read_u8().await.map_err(io)?;
                match answer {
                    b'S' => {
                        let name = ServerName::try_from(self.db.host.clone()).map_err(|e| {
                            ConnectError::Tls {
                                addr: addr.to_string(),
                                message: e.to_string(),
                            }
                        })?;
                        let tls = tokio_rustls::TlsConnector::from(cfg.clone())
                            .connect(name, tcp)
                            .await
                            .map_err(|e| ConnectError::Tls {
                                addr: addr.to_string(),
                                message: e.to_string(),
                            })?;
                        ServerStream::Tls(Box::new(tls))
                    }
                    b'N' if mode == SslMode::Prefer => ServerStream::Plain(tcp),
                    _ => {
                        return Err(ConnectError::Tls {
                            addr: addr.to_string(),
                            message: format!("server does not accept TLS (sslmode {mode:?})"),
                        });
                    }
                }
            }
            (None, _) => ServerStream::Plain(tcp),
        };
        let mut conn = ServerConn {
            stream,
            reader: server_reader(),
            params: BTreeMap::new(),
            cancel: CancelTarget {
                addr: peer,
                pid: 0,
                key: 0,
            },
            created: Instant::now(),
            statements: crate::prepared::ServerStatements::new(),
            client_facing: Default::default(),
        };
        let options = format!(
            "-c statement_timeout={}",
            self.timeouts.statement_ms.load(Ordering::Relaxed)
        );
        let mut buf = BytesMut::new();
        let mut params = vec![
            ("user", self.db.user.as_str()),
            ("database", self.db.server_dbname()),
            ("options", options.as_str()),
            ("client_encoding", "UTF8"),
        ];
        if !application_name.is_empty() {
            params.push(("application_name", application_name));
        }
        frontend::startup_message(params, &mut buf).map_err(io)?;
        conn.write(&buf).await?;
        self.login(&mut conn).await?;
        Ok(conn)
    }

    fn password(&self) -> Result<Vec<u8>, ConnectError> {
        if let Some(path) = &self.db.password_file {
            let text = std::fs::read_to_string(path).map_err(|e| {
                ConnectError::Password(format!("cannot read {}: {e}", path.display()))
            })?;
            return Ok(text.trim_end_matches(['\r', '\n']).as_bytes().to_vec());
        }
        match &self.db.password {
            Some(p) => Ok(p.expose().as_bytes().to_vec()),
            None => Err(ConnectError::Password(
                "the server asks for a password but none is configured".into(),
            )),
        }
    }

    async fn login(&self, conn: &mut ServerConn) -> Result<(), ConnectError> {
        let mut scram: Option<ScramSha256> = None;
        loop {
            let f = conn.read().await?;
            let mut body = f.body.clone();
            match f.tag {
                b'R' => {
                    if body.len() < 4 {
                        return Err(ServerError::Unexpected('R').into());
                    }
                    let code = body.get_i32();
                    let mut out = BytesMut::new();
                    match code {
                        0 => continue,
                        3 => frontend::password_message(&self.password()?, &mut out)
                            .map_err(ServerError::Io)?,
                        5 => {
                            if body.len() < 4 {
                                return Err(ServerError::Unexpected('R').into());
                            }
                            let salt = [body[0], body[1], body[2], body[3]];
                            let hash = postgres_protocol::authentication::md5_hash(
                                self.db.user.as_bytes(),
                                &self.password()?,
                                salt,
                            );
                            frontend::password_message(hash.as_bytes(), &mut out)
                                .map_err(ServerError::Io)?;
                        }
                        10 => {
                            let mechanisms: Vec<&[u8]> = body.split(|b| *b == 0).collect();
                            if !mechanisms.contains(&sasl::SCRAM_SHA_256.as_bytes()) {
                                return Err(ConnectError::UnsupportedAuth(
                                    "SASL without SCRAM-SHA-256".into(),
                                ));
                            }
                            let s =
                                ScramSha256::new(&self.password()?, ChannelBinding::unsupported());
                            frontend::sasl_initial_response(
                                sasl::SCRAM_SHA_256,
                                s.message(),
                                &mut out,
                            )
                            .map_err(ServerError::Io)?;
                            scram = Some(s);
                        }
                        11 => {
                            let mut s = scram.take().ok_or(ServerError::Unexpected('R'))?;
                            // PBKDF2 (thousands of HMACs): off the event loop.
                            let (s, updated) = tokio::task::spawn_blocking(move || {
                                let r = s.update(&body);
                                (s, r)
                            })
                            .await
                            .map_err(|e| ServerError::Io(std::io::Error::other(e)))?;
                            updated.map_err(ServerError::Io)?;
                            frontend::sasl_response(s.message(), &mut out)
                                .map_err(ServerError::Io)?;
                            scram = Some(s);
                        }
                        12 => {
                            let s = scram.as_mut().ok_or(ServerError::Unexpected('R'))?;
                            s.finish(&body).map_err(ServerError::Io)?;
                            continue;
                        }
                        other => {
                            return Err(ConnectError::UnsupportedAuth(format!("method {other}")));
                        }
                    }
                    conn.write(&out).await?;
                }
                b'E' => {
                    let (_, code, message) = parse_error_fields(&body);
                    return Err(ConnectError::Refused {
                        code: code.unwrap_or_default(),
                        message: message.unwrap_or_default(),
                    });
                }
                b'K' if body.len() >= 8 => {
                    conn.cancel.pid = body.get_i32();
                    conn.cancel.key = body.get_i32();
                }
                b'S' | b'N' => {}
                b'Z' => return Ok(()),
                other => return Err(ServerError::Unexpected(other as char).into()),
            }
        }
    }
}
