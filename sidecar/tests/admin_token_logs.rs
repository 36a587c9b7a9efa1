//! No admin token ever reaches a log line, at any level, whatever the request. A test binary of
//! its own, so it can install the process-wide subscriber at TRACE and see everything.

use std::io::Write;
use std::sync::{Arc, Mutex};

use poolwarden_sidecar::admin::{
    AdminBackend, AdminState, PoolSnapshot, ResizeError, ResizeRequest, TokenStore, serve,
};
use poolwarden_sidecar::config::Secret;

const ADMIN: &str = "adm-7f3c9a1e5b2d";
const VIEWER: &str = "view-0a1b2c3d4e";
const ENV_ADMIN: &str = "env-admin-5e6f7a";

#[derive(Clone, Default)]
struct LogBuf(Arc<Mutex<Vec<u8>>>);

impl Write for LogBuf {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(data);
        Ok(data.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// No pools: every resize names an unknown database.
struct NoPools;

impl AdminBackend for NoPools {
    fn ready(&self) -> bool {
        true
    }
    fn snapshot(&self) -> Vec<PoolSnapshot> {
        Vec::new()
    }
    fn resize(&self, request: &ResizeRequest) -> Result<Vec<PoolSnapshot>, ResizeError> {
        Err(ResizeError::UnknownDatabase(request.database.clone()))
    }
    fn metrics_text(&self) -> String {
        String::new()
    }
}

#[tokio::test]
async fn no_token_reaches_a_log_line() {
    let logs = LogBuf::default();
    let writer = logs.clone();
    tracing::subscriber::set_global_default(
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_writer(move || writer.clone())
            .finish(),
    )
    .unwrap();

    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens");
    std::fs::write(
        &tokens,
        format!("admin {ADMIN}\nviewer {VIEWER}\nbogus line {ADMIN}x\n"),
    )
    .unwrap();
    let store = TokenStore::new(Some(tokens), Some(&Secret::new(ENV_ADMIN)));
    let state = AdminState::new(Arc::new(NoPools), Arc::new(store));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve(listener, state, async {
        let _ = stopped.await;
    }));

    let off = format!("{}X", &ADMIN[..ADMIN.len() - 1]);
    let headers = [
        None,
        Some(format!("Bearer {ADMIN}")),
        Some(format!("Bearer {VIEWER}")),
        Some(format!("Bearer {ENV_ADMIN}")),
        Some(format!("Bearer {off}")),
        Some(format!("Basic {ADMIN}")),
    ];
    let client = reqwest::Client::new();
    for path in ["/healthz", "/readyz", "/api/metrics", "/api/pool"] {
        for h in &headers {
            for method in [reqwest::Method::GET, reqwest::Method::PUT] {
                let mut rb = client.request(method, format!("{base}{path}"));
                if let Some(h) = h {
                    rb = rb.header("Authorization", h);
                }
                let body = format!(r#"{{"database":"{ADMIN}","pool_size":3}}"#);
                rb.body(body).send().await.unwrap();
            }
        }
    }
    let _ = stop.send(());
    server.await.unwrap().unwrap();

    let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(
        text.contains("admin request refused"),
        "refusals are logged: {text}"
    );
    assert!(
        text.contains("tokens file line 3"),
        "the bad line is reported: {text}"
    );
    for secret in [ADMIN, VIEWER, ENV_ADMIN, off.as_str(), &ADMIN[4..]] {
        assert!(!text.contains(secret), "a token reached the log:\n{text}");
    }
}
