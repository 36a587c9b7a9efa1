//! The admin HTTP server (CONTRACT §2.5) on `admin_listen`.
//!
//! ```text
//!  GET /healthz      none            200 ok
//!  GET /readyz       none            200 ready | 503 not ready      ─┐
//!  GET /api/metrics  admin           text format 0.0.4               ├─▶ AdminBackend (pools)
//!  GET /api/pool     admin | viewer  {"pools": [PoolSnapshot...]}    │
//!  PUT /api/pool     admin           ResizeRequest → {"pools": ...} ─┘
//! ```
//!
//! `Authorization: Bearer <token>`; tokens from [`TokenStore`]. No or unknown token: 401 with
//! `WWW-Authenticate: Bearer`; a known token without the role: 403. Errors are JSON
//! `{"error": "..."}`. Tokens are never logged.

mod api;
mod tokens;

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

pub use api::{
    AdminBackend, PoolSettings, PoolSnapshot, PoolsResponse, ResizeError, ResizeRequest,
};
pub use tokens::{Role, TokenLineError, TokenStore, parse_tokens};

/// Shared state of the admin handlers.
#[derive(Clone)]
pub struct AdminState {
    backend: Arc<dyn AdminBackend>,
    tokens: Arc<TokenStore>,
}

impl AdminState {
    /// The backend (the pools) and the known tokens.
    pub fn new(backend: Arc<dyn AdminBackend>, tokens: Arc<TokenStore>) -> Self {
        Self { backend, tokens }
    }
}

/// The admin routes.
pub fn router(state: AdminState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/api/metrics", get(metrics))
        .route("/api/pool", get(get_pool).put(put_pool))
        .with_state(state)
}

/// Serve the admin API on `listener` until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AdminState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
}

async fn healthz() -> &'static str {
    "ok"
}

async fn readyz(State(s): State<AdminState>) -> Response {
    if s.backend.ready() {
        (StatusCode::OK, "ready").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready").into_response()
    }
}

fn json_error(status: StatusCode, message: impl Into<String>) -> Response {
    (
        status,
        axum::Json(serde_json::json!({ "error": message.into() })),
    )
        .into_response()
}

/// The bearer token of a request, if the header is well formed.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let token = token.trim();
    (!token.is_empty()).then_some(token)
}

/// Check the request's token for `needed`; `Some` is the refusal to send.
fn authorize(s: &AdminState, headers: &HeaderMap, needed: Role, what: &str) -> Option<Response> {
    let role = bearer(headers).and_then(|t| s.tokens.authenticate(t));
    match role {
        None => {
            tracing::info!(
                endpoint = what,
                "admin request refused: no valid bearer token"
            );
            let mut r = json_error(StatusCode::UNAUTHORIZED, "a valid bearer token is required");
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            Some(r)
        }
        Some(role) if !role.allows(needed) => {
            tracing::info!(
                endpoint = what,
                role = role.as_str(),
                "admin request refused: role not allowed"
            );
            Some(json_error(
                StatusCode::FORBIDDEN,
                format!(
                    "role {} may not do this; {} is required",
                    role.as_str(),
                    needed.as_str()
                ),
            ))
        }
        Some(_) => None,
    }
}

async fn metrics(State(s): State<AdminState>, headers: HeaderMap) -> Response {
    if let Some(r) = authorize(&s, &headers, Role::Admin, "GET /api/metrics") {
        return r;
    }
    let body = s.backend.metrics_text();
    ([(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], body).into_response()
}

async fn get_pool(State(s): State<AdminState>, headers: HeaderMap) -> Response {
    if let Some(r) = authorize(&s, &headers, Role::Viewer, "GET /api/pool") {
        return r;
    }
    axum::Json(PoolsResponse {
        pools: s.backend.snapshot(),
    })
    .into_response()
}

async fn put_pool(State(s): State<AdminState>, headers: HeaderMap, body: Bytes) -> Response {
    if let Some(r) = authorize(&s, &headers, Role::Admin, "PUT /api/pool") {
        return r;
    }
    let request = match parse_request(&body) {
        Ok(r) => r,
        Err(message) => return json_error(StatusCode::BAD_REQUEST, message),
    };
    let result = request.validate().and_then(|()| s.backend.resize(&request));
    match result {
        Ok(pools) => {
            tracing::info!(
                database = %request.database,
                pool_size = ?request.pool_size,
                max_overflow = ?request.max_overflow,
                "pool settings changed through the admin API"
            );
            axum::Json(PoolsResponse { pools }).into_response()
        }
        Err(e @ ResizeError::Invalid { .. }) => json_error(StatusCode::BAD_REQUEST, e.to_string()),
        Err(e @ ResizeError::UnknownDatabase(_)) => {
            json_error(StatusCode::NOT_FOUND, e.to_string())
        }
        Err(e @ ResizeError::Internal(_)) => {
            tracing::error!(database = %request.database, error = %e, "resize failed");
            json_error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
        }
    }
}

/// Parse a `PUT /api/pool` body; the error names the offending field.
fn parse_request(body: &[u8]) -> Result<ResizeRequest, String> {
    let de = &mut serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        if path == "." || path.is_empty() {
            format!("invalid request body: {}", e.inner())
        } else {
            format!("invalid request body: {path}: {}", e.inner())
        }
    })
}

#[cfg(test)]
mod tests;
