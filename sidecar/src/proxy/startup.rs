//! A client's start-up: SSLRequest/GSSENCRequest (answered `N`), CancelRequest, the
//! StartupMessage, client authentication, and the greeting (AuthenticationOk,
//! ParameterStatus, BackendKeyData, ReadyForQuery).

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::cancel::{CancelHandle, CancelRegistry};
use super::pools::{DbPool, Pools};
use crate::auth::{AuthRequest, ClientAuthenticator, SharedAuthFile, StoredPassword};
use crate::config::{ClientAuth, ClientsConfig};
use crate::pool::CheckoutError;
use crate::protocol::build::{self, Severity};
use crate::protocol::frame::is_frontend_tag;
use crate::protocol::io::{FrameReader, ReadError};
use crate::protocol::sqlstate;
use crate::protocol::startup::{self, Params, StartupError, StartupPacket};
use crate::server::ConnectError;

/// A refusal sent to the client as a FATAL ErrorResponse before closing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// SQLSTATE.
    pub code: &'static str,
    /// Message.
    pub message: String,
}

impl Refusal {
    fn new(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

/// What the start-up produced.
pub enum Startup {
    /// A client wants a session.
    Login {
        /// StartupMessage parameters.
        params: Params,
        /// Bytes read past the startup packet.
        rest: BytesMut,
    },
    /// A cancel request (the connection is done after it).
    Cancel {
        /// pid from the client's BackendKeyData.
        pid: i32,
        /// key from the client's BackendKeyData.
        key: i32,
    },
    /// The client went away.
    Gone,
}

/// Read start-up packets until a StartupMessage or CancelRequest. Answers `N` to SSL and
/// GSS encryption requests.
pub async fn read_startup<S: AsyncRead + AsyncWrite + Unpin>(
    sock: &mut S,
) -> Result<Startup, Refusal> {
    let mut buf = BytesMut::with_capacity(1024);
    // Reads land in an initialized buffer: a read into the BytesMut's spare capacity would
    // zero it (1 KiB) at every call first.
    let mut chunk = [0u8; 512];
    loop {
        match startup::decode(&mut buf) {
            Ok(Some(StartupPacket::SslRequest | StartupPacket::GssEncRequest)) => {
                if !buf.is_empty() {
                    // Bytes after an encryption request before our answer: a protocol
                    // violation (and the CVE-2021-23222 pattern).
                    return Err(Refusal::new(
                        sqlstate::PROTOCOL_VIOLATION,
                        "unexpected data after encryption request",
                    ));
                }
                if sock.write_all(b"N").await.is_err() {
                    return Ok(Startup::Gone);
                }
                continue;
            }
            Ok(Some(StartupPacket::Cancel { pid, key })) => {
                return Ok(Startup::Cancel { pid, key });
            }
            Ok(Some(StartupPacket::Startup(params))) => {
                return Ok(Startup::Login { params, rest: buf });
            }
            Ok(None) => {}
            Err(e @ StartupError::UnsupportedProtocol(_)) => {
                return Err(Refusal::new(sqlstate::FEATURE_NOT_SUPPORTED, e.to_string()));
            }
            Err(e) => {
                return Err(Refusal::new(
                    sqlstate::PROTOCOL_VIOLATION,
                    format!("invalid startup packet: {e}"),
                ));
            }
        }
        match sock.read(&mut chunk).await {
            Ok(0) if buf.is_empty() => return Ok(Startup::Gone),
            Ok(0) => {
                return Err(Refusal::new(
                    sqlstate::PROTOCOL_VIOLATION,
                    "incomplete startup packet",
                ));
            }
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(_) => return Ok(Startup::Gone),
        }
    }
}

/// Forward a cancel request to the backend the client is using, if any.
pub async fn forward_cancel(cancels: &CancelRegistry, pid: i32, key: i32) {
    match cancels.lookup(pid, key) {
        Some(target) => {
            if let Err(e) = target.cancel().await {
                tracing::warn!(error = %e, "cannot forward a cancel request");
            } else {
                tracing::info!("forwarded a cancel request");
            }
        }
        None => tracing::debug!("cancel request for no running query"),
    }
}

/// Client authentication: the one place it happens. `trust` accepts (config validation only
/// allows it on a loopback listener); `scram-sha-256` and `md5` run the [`ClientAuthenticator`]
/// against the users file. `rest` holds bytes already read past the startup packet and comes
/// back with whatever follows the last authentication message. AuthenticationOk itself is
/// sent with the greeting.
pub async fn authenticate<S: AsyncRead + AsyncWrite + Unpin>(
    clients: &ClientsConfig,
    users: Option<&SharedAuthFile>,
    user: &str,
    sock: &mut S,
    rest: BytesMut,
) -> Result<BytesMut, Refusal> {
    if clients.auth == ClientAuth::Trust {
        return Ok(rest);
    }
    let stored = users.and_then(|u| u.get(user));
    // SCRAM with a plain password in the users file derives a verifier (PBKDF2, thousands of
    // HMACs): that runs off the event loop. Every other start is cheap and runs here.
    let derives =
        clients.auth == ClientAuth::ScramSha256 && matches!(stored, Some(StoredPassword::Plain(_)));
    let (mut auth, mut request) = if derives {
        let (method, who) = (clients.auth, user.to_string());
        tokio::task::spawn_blocking(move || {
            ClientAuthenticator::start(method, &who, stored.as_ref())
        })
        .await
        .map_err(|_| Refusal::new(sqlstate::INTERNAL_ERROR, "authentication failed"))?
    } else {
        ClientAuthenticator::start(clients.auth, user, stored.as_ref())
    };
    let mut reader = FrameReader::with_buffer(rest, MAX_AUTH_MESSAGE, is_frontend_tag);
    let gone = || {
        Refusal::new(
            sqlstate::PROTOCOL_VIOLATION,
            "client left during authentication",
        )
    };
    loop {
        if request != AuthRequest::Ok {
            sock.write_all(&request.encode())
                .await
                .map_err(|_| gone())?;
        }
        if auth.is_authenticated() {
            return Ok(reader.into_buffer());
        }
        let frame = match reader.read_frame(sock).await {
            Ok(Some(f)) => f,
            Ok(None) | Err(ReadError::Io(_)) => return Err(gone()),
            Err(ReadError::Frame(e)) => {
                return Err(Refusal::new(
                    sqlstate::PROTOCOL_VIOLATION,
                    format!("invalid authentication message: {e}"),
                ));
            }
        };
        if frame.tag != b'p' {
            return Err(Refusal::new(
                sqlstate::PROTOCOL_VIOLATION,
                "expected a password message",
            ));
        }
        request = auth.receive(&frame.body).map_err(|e| Refusal {
            code: e.sqlstate(),
            message: e.to_string(),
        })?;
    }
}

/// Largest authentication message accepted from a client.
const MAX_AUTH_MESSAGE: usize = 16 * 1024;

/// Who logged in, with what: the StartupMessage's parameters, and where the ones the sidecar
/// uses are among them (no copy of each).
#[derive(Clone)]
pub struct Login {
    /// The pool of the database the client named.
    pub db: Arc<DbPool>,
    params: Params,
    user: usize,
    application_name: Option<usize>,
    client_encoding: Option<usize>,
}

impl Login {
    /// User name the client gave.
    pub fn user(&self) -> &str {
        self.params.value(self.user)
    }

    /// application_name the client gave (empty if none).
    pub fn application_name(&self) -> &str {
        self.application_name.map_or("", |i| self.params.value(i))
    }

    /// client_encoding the client asked for, if any.
    pub fn client_encoding(&self) -> Option<&str> {
        self.client_encoding.map(|i| self.params.value(i))
    }
}

/// Validate the StartupMessage parameters and find the pool.
pub fn login(params: Params, pools: &Pools) -> Result<Login, Refusal> {
    let user = params
        .position("user")
        .filter(|&i| !params.value(i).is_empty())
        .ok_or_else(|| {
            Refusal::new(
                sqlstate::INVALID_AUTHORIZATION,
                "no PostgreSQL user name specified in startup packet",
            )
        })?;
    let database = params
        .get("database")
        .filter(|d| !d.is_empty())
        .unwrap_or(params.value(user));
    let db = pools.get(database).ok_or_else(|| {
        Refusal::new(
            sqlstate::INVALID_CATALOG_NAME,
            format!("database \"{database}\" does not exist"),
        )
    })?;
    for (k, _) in params.iter() {
        if !matches!(
            k,
            "user" | "database" | "application_name" | "client_encoding"
        ) {
            // As PgBouncer with ignore_startup_parameters: other parameters (options,
            // DateStyle, replication ...) are not carried to shared server connections.
            tracing::debug!(parameter = %k, "ignoring a startup parameter");
        }
    }
    Ok(Login {
        db,
        user,
        application_name: params.position("application_name"),
        client_encoding: params.position("client_encoding"),
        params,
    })
}

/// Parameters each client is told its own value of, not the server connection's.
const PER_CLIENT: [&str; 2] = ["application_name", "client_encoding"];

/// The server parameters reported to clients at login, and the ParameterStatus messages for
/// those every client is told alike, encoded once for all logins.
#[derive(Debug)]
pub struct ReportedParams {
    /// The server's parameters by name.
    pub map: BTreeMap<String, String>,
    /// ParameterStatus for each parameter but the [`PER_CLIENT`] ones, in name order.
    shared: BytesMut,
    /// The [`PER_CLIENT`] parameters the server reported, with its values, in that order
    /// (looked up once, not at every login).
    per_client: Vec<(&'static str, String)>,
}

impl ReportedParams {
    /// Encode `map`'s shared messages.
    pub fn new(map: BTreeMap<String, String>) -> Self {
        let mut shared = BytesMut::new();
        for (k, v) in map
            .iter()
            .filter(|(k, _)| !PER_CLIENT.contains(&k.as_str()))
        {
            build::parameter_status(&mut shared, k, v);
        }
        let per_client = PER_CLIENT
            .iter()
            .filter_map(|name| map.get(*name).map(|v| (*name, v.clone())))
            .collect();
        Self {
            map,
            shared,
            per_client,
        }
    }
}

/// The server parameters to report at login: cached from an earlier server connection, or
/// fetched by checking one out.
pub async fn server_params(login: &Login) -> Result<Arc<ReportedParams>, Refusal> {
    if let Some(p) = login
        .db
        .server_params
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone()
    {
        return Ok(p);
    }
    let mut c = login
        .db
        .pool
        .checkout(login.application_name())
        .await
        .map_err(checkout_refusal)?;
    let params = Arc::new(ReportedParams::new(c.conn().params.clone()));
    c.release(true);
    *login
        .db
        .server_params
        .lock()
        .unwrap_or_else(|p| p.into_inner()) = Some(params.clone());
    Ok(params)
}

/// The FATAL sent when no server connection can be had at login.
pub fn checkout_refusal(e: CheckoutError<ConnectError>) -> Refusal {
    match e {
        CheckoutError::Timeout(m) => Refusal::new(sqlstate::TOO_MANY_CONNECTIONS, m),
        CheckoutError::Connect(ConnectError::BreakerOpen(message)) => {
            Refusal::new(crate::breaker::SQLSTATE_CANNOT_CONNECT_NOW, message)
        }
        CheckoutError::Connect(e) => Refusal::new(
            sqlstate::CONNECTION_FAILURE,
            format!("could not connect to the database server: {e}"),
        ),
        CheckoutError::Closed => Refusal::new(
            sqlstate::ADMIN_SHUTDOWN,
            "terminating connection due to administrator command",
        ),
    }
}

/// The greeting after a successful login: AuthenticationOk, the server's parameters (with the
/// client's own application_name and client_encoding), BackendKeyData, ReadyForQuery.
pub fn greeting(login: &Login, server: &ReportedParams, cancel: &CancelHandle) -> BytesMut {
    let mut out = BytesMut::with_capacity(server.shared.len() + 128);
    build::auth_ok(&mut out);
    out.extend_from_slice(&server.shared);
    for (name, v) in &server.per_client {
        let v = match *name {
            "application_name" => login.application_name(),
            _ => login.client_encoding().unwrap_or(v),
        };
        build::parameter_status(&mut out, name, v);
    }
    build::backend_key_data(&mut out, cancel.key.0, cancel.key.1);
    build::ready_for_query(&mut out, b'I');
    out
}

/// A FATAL ErrorResponse for a refusal.
pub fn fatal(r: &Refusal) -> BytesMut {
    build::error(Severity::Fatal, r.code, &r.message)
}
