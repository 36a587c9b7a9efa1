//! A client's way in: the start-up packet, a cancel request's forwarding, the login and
//! its authentication, or a refusal; then the session ([`Session`]) on a tokio task or, for
//! a client the data plane's loop accepted, back to the loop.

use std::sync::Arc;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use super::client::ClientIo;
use super::session::{Ctx, LiveConfig, Session};
use super::startup::{self, Login, Refusal, Startup};
use crate::config::Config;
use crate::dataplane::LoopSocket;

/// What a session holds for the listener while it lives: its place under
/// `clients.max_connections` and in the drain's count.
pub struct Keep {
    /// The place under `clients.max_connections`.
    _permit: tokio::sync::OwnedSemaphorePermit,
    /// Counted by the drain.
    _token: tokio_util::task::task_tracker::TaskTrackerToken,
}

impl Keep {
    /// Hold `permit` and `token` for the session's life.
    pub fn new(
        permit: tokio::sync::OwnedSemaphorePermit,
        token: tokio_util::task::task_tracker::TaskTrackerToken,
    ) -> Self {
        Self {
            _permit: permit,
            _token: token,
        }
    }
}

/// Serve one client connection to its end.
pub(super) async fn serve(mut sock: TcpStream, ctx: Arc<Ctx>, keep: Keep) {
    let _ = sock.set_nodelay(true);
    let mut live = LiveConfig::new(ctx.config.clone());
    let Some((login, rest)) = log_in(&mut sock, &ctx, live.load()).await else {
        return;
    };
    let (rd, wr) = sock.into_split();
    let max_message = live.load().clients.max_message_size as usize;
    let client = ClientIo::new(rd, wr, rest, max_message);
    let session = Box::new(Session::new(client, login, ctx, live, keep));
    session.run().await;
}

/// Serve a client the data plane's loop accepted, polled by the loop: its login and
/// greeting, then the session for the loop (transaction mode), or to its end (session mode,
/// after a reload changed the mode).
pub(super) async fn serve_on_loop(
    mut sock: LoopSocket,
    ctx: Arc<Ctx>,
    keep: Keep,
) -> Option<Box<Session>> {
    let mut live = LiveConfig::new(ctx.config.clone());
    let (login, rest) = log_in(&mut sock, &ctx, live.load()).await?;
    let max_message = live.load().clients.max_message_size as usize;
    let client = ClientIo::on_loop(sock, rest, max_message);
    let mut session = Box::new(Session::new(client, login, ctx, live, keep));
    match session.greet().await? {
        None => Some(session),
        Some(held) => {
            session.hold_session(held).await;
            None
        }
    }
}

/// The start-up, a cancel request's forwarding, or a refusal; the login and the bytes read
/// past it when the client logged in.
async fn log_in<S: AsyncRead + AsyncWrite + Unpin>(
    sock: &mut S,
    ctx: &Ctx,
    config: &Config,
) -> Option<(Login, BytesMut)> {
    let startup_timeout = config.clients.startup_timeout.get();
    let started = match tokio::time::timeout(startup_timeout, startup::read_startup(sock)).await {
        Err(_) => {
            tracing::debug!("client sent no startup packet in time");
            return None;
        }
        Ok(Err(r)) => return refuse(sock, &r).await,
        Ok(Ok(s)) => s,
    };
    let (params, rest) = match started {
        Startup::Gone => return None,
        Startup::Cancel { pid, key } => {
            startup::forward_cancel(&ctx.cancels, pid, key).await;
            return None;
        }
        Startup::Login { params, rest } => (params, rest),
    };
    let login = match startup::login(params, &ctx.pools) {
        Ok(l) => l,
        Err(r) => return refuse(sock, &r).await,
    };
    let rest = match startup::authenticate(
        &config.clients,
        ctx.users.as_deref(),
        login.user(),
        sock,
        rest,
    )
    .await
    {
        Ok(rest) => rest,
        Err(r) => return refuse(sock, &r).await,
    };
    Some((login, rest))
}

/// Send the refusal as a FATAL and close; `None`, for [`log_in`].
async fn refuse<S: AsyncWrite + Unpin, T>(sock: &mut S, r: &Refusal) -> Option<T> {
    use tokio::io::AsyncWriteExt;
    tracing::info!(code = r.code, message = %r.message, "refusing a client");
    let _ = sock.write_all(&startup::fatal(r)).await;
    let _ = sock.shutdown().await;
    None
}
