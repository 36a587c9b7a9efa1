//! The admin API over real HTTP on a loopback port, with an in-test backend that keeps real
//! pool settings and applies every resize to them.

use std::sync::Mutex;

use reqwest::{Client, Method, StatusCode};

use super::*;
use crate::breaker::BreakerState;
use crate::config::{PoolConfig, PoolMode, Secret};
use crate::metrics::Metrics;

const ADMIN: &str = "adm-7f3c9a1e5b2d";
const VIEWER: &str = "view-0a1b2c3d4e";
const ENV_ADMIN: &str = "env-admin-5e6f7a";

/// Pools as plain settings plus metrics, the way the real pools report them.
struct TestPools {
    pools: Mutex<Vec<(String, PoolConfig)>>,
    metrics: Metrics,
}

impl TestPools {
    fn new(names: &[&str]) -> Self {
        let metrics = Metrics::new();
        let pools = names
            .iter()
            .map(|n| {
                let cfg = PoolConfig::default();
                metrics
                    .pool(n)
                    .set_settings(cfg.pool_size, cfg.max_overflow);
                (n.to_string(), cfg)
            })
            .collect();
        Self {
            pools: Mutex::new(pools),
            metrics,
        }
    }
}

impl AdminBackend for TestPools {
    fn ready(&self) -> bool {
        true
    }
    fn snapshot(&self) -> Vec<PoolSnapshot> {
        self.pools
            .lock()
            .unwrap()
            .iter()
            .map(|(name, cfg)| PoolSnapshot {
                database: name.clone(),
                mode: PoolMode::Transaction,
                settings: PoolSettings::from(cfg),
                checked_out: 0,
                checked_in: 0,
                waiting: 0,
                overflow: 0,
                breaker: BreakerState::Closed,
            })
            .collect()
    }
    fn resize(&self, request: &ResizeRequest) -> Result<Vec<PoolSnapshot>, ResizeError> {
        {
            let mut pools = self.pools.lock().unwrap();
            let (_, cfg) = pools
                .iter_mut()
                .find(|(n, _)| *n == request.database)
                .ok_or_else(|| ResizeError::UnknownDatabase(request.database.clone()))?;
            *cfg = request.apply_to(cfg)?;
            self.metrics
                .pool(&request.database)
                .set_settings(cfg.pool_size, cfg.max_overflow);
        }
        Ok(self.snapshot())
    }
    fn metrics_text(&self) -> String {
        self.metrics.encode()
    }
}

struct Server {
    base: String,
    _dir: tempfile::TempDir,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Server {
    async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let tokens = dir.path().join("tokens");
        std::fs::write(
            &tokens,
            format!("# admin API tokens\nadmin {ADMIN}\n\nviewer {VIEWER}\n"),
        )
        .unwrap();
        let store = TokenStore::new(Some(tokens), Some(&Secret::new(ENV_ADMIN)));
        let state = AdminState::new(
            Arc::new(TestPools::new(&["clinical", "billing"])),
            Arc::new(store),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(serve(listener, state, async {
            let _ = stopped.await;
        }));
        Self {
            base,
            _dir: dir,
            stop: Some(stop),
            task,
        }
    }

    async fn shutdown(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.task.await.unwrap().unwrap();
    }
}

#[derive(Clone, Copy, Debug)]
enum Cred {
    None,
    Viewer,
    Admin,
    EnvAdmin,
    AdminOneByteOff,
    AdminOneByteShort,
    WrongScheme,
    LowercaseScheme,
    EmptyBearer,
}

impl Cred {
    fn header(self) -> Option<String> {
        let mut off = ADMIN.as_bytes().to_vec();
        *off.last_mut().unwrap() ^= 0x01;
        let off = String::from_utf8(off).unwrap();
        match self {
            Cred::None => None,
            Cred::Viewer => Some(format!("Bearer {VIEWER}")),
            Cred::Admin => Some(format!("Bearer {ADMIN}")),
            Cred::EnvAdmin => Some(format!("Bearer {ENV_ADMIN}")),
            Cred::AdminOneByteOff => Some(format!("Bearer {off}")),
            Cred::AdminOneByteShort => Some(format!("Bearer {}", &ADMIN[..ADMIN.len() - 1])),
            Cred::WrongScheme => Some(format!("Basic {ADMIN}")),
            Cred::LowercaseScheme => Some(format!("bearer {ADMIN}")),
            Cred::EmptyBearer => Some("Bearer ".into()),
        }
    }
    /// The role the server should see.
    fn role(self) -> Option<Role> {
        match self {
            Cred::Viewer => Some(Role::Viewer),
            Cred::Admin | Cred::EnvAdmin | Cred::LowercaseScheme => Some(Role::Admin),
            _ => None,
        }
    }
}

const CREDS: [Cred; 9] = [
    Cred::None,
    Cred::Viewer,
    Cred::Admin,
    Cred::EnvAdmin,
    Cred::AdminOneByteOff,
    Cred::AdminOneByteShort,
    Cred::WrongScheme,
    Cred::LowercaseScheme,
    Cred::EmptyBearer,
];

async fn call(
    client: &Client,
    base: &str,
    method: Method,
    path: &str,
    cred: Cred,
    body: Option<&str>,
) -> reqwest::Response {
    let mut rb = client.request(method, format!("{base}{path}"));
    if let Some(h) = cred.header() {
        rb = rb.header("Authorization", h);
    }
    if let Some(b) = body {
        rb = rb
            .header("Content-Type", "application/json")
            .body(b.to_string());
    }
    rb.send().await.unwrap()
}

#[tokio::test]
async fn auth_matrix_for_every_endpoint() {
    let server = Server::start().await;
    let client = Client::new();
    // (method, path, body, role needed: None = open)
    let endpoints: [(Method, &str, Option<&str>, Option<Role>); 5] = [
        (Method::GET, "/healthz", None, None),
        (Method::GET, "/readyz", None, None),
        (Method::GET, "/api/metrics", None, Some(Role::Admin)),
        (Method::GET, "/api/pool", None, Some(Role::Viewer)),
        (
            Method::PUT,
            "/api/pool",
            Some(r#"{"database":"clinical","pool_size":21}"#),
            Some(Role::Admin),
        ),
    ];
    for (method, path, body, needed) in &endpoints {
        for cred in CREDS {
            let resp = call(&client, &server.base, method.clone(), path, cred, *body).await;
            let status = resp.status();
            let want = match (needed, cred.role()) {
                (None, _) => StatusCode::OK,
                (Some(_), None) => StatusCode::UNAUTHORIZED,
                (Some(need), Some(have)) if have.allows(*need) => StatusCode::OK,
                (Some(_), Some(_)) => StatusCode::FORBIDDEN,
            };
            assert_eq!(status, want, "{method} {path} with {cred:?}");
            let challenge = resp
                .headers()
                .get("www-authenticate")
                .map(|v| v.to_str().unwrap().to_string());
            if status == StatusCode::UNAUTHORIZED {
                assert_eq!(
                    challenge.as_deref(),
                    Some("Bearer"),
                    "{method} {path} with {cred:?}"
                );
                let v: serde_json::Value = resp.json().await.unwrap();
                assert!(v["error"].is_string());
            } else {
                assert_eq!(challenge, None, "{method} {path} with {cred:?}");
            }
        }
    }
    server.shutdown().await;
}

#[tokio::test]
async fn health_metrics_and_pool_bodies() {
    let server = Server::start().await;
    let client = Client::new();
    let base = &server.base;

    let r = call(&client, base, Method::GET, "/healthz", Cred::None, None).await;
    assert_eq!(r.text().await.unwrap(), "ok");

    let r = call(
        &client,
        base,
        Method::GET,
        "/api/metrics",
        Cred::Admin,
        None,
    )
    .await;
    assert_eq!(
        r.headers()["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    let text = r.text().await.unwrap();
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).unwrap();
    let size = scrape
        .samples
        .iter()
        .find(|s| s.metric == "poolwarden_pool_size" && s.labels.get("database") == Some("billing"))
        .expect("pool_size for billing");
    assert_eq!(size.value, prometheus_parse::Value::Gauge(20.0));

    let r = call(&client, base, Method::GET, "/api/pool", Cred::Viewer, None).await;
    let pools: PoolsResponse = r.json().await.unwrap();
    let names: Vec<_> = pools.pools.iter().map(|p| p.database.as_str()).collect();
    assert_eq!(names, ["clinical", "billing"]);
    assert_eq!(pools.pools[0].settings.pool_size, 20);
    assert_eq!(pools.pools[0].breaker, BreakerState::Closed);
    server.shutdown().await;
}

#[tokio::test]
async fn put_pool_applies_live_and_refuses_bad_input() {
    let server = Server::start().await;
    let client = Client::new();
    let base = &server.base;
    let put = |body: &'static str| {
        call(
            &client,
            base,
            Method::PUT,
            "/api/pool",
            Cred::Admin,
            Some(body),
        )
    };

    // Grow one pool: the answer is the new snapshot, and GET and the metrics agree.
    let r = put(r#"{"database":"clinical","pool_size":25,"max_overflow":13,"pool_timeout":"2s"}"#)
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let pools: PoolsResponse = r.json().await.unwrap();
    let clinical = &pools.pools[0];
    assert_eq!(
        (clinical.settings.pool_size, clinical.settings.max_overflow),
        (25, 13)
    );
    assert_eq!(clinical.settings.pool_timeout.to_string(), "2s");
    assert_eq!(
        pools.pools[1].settings.pool_size, 20,
        "the other pool is untouched"
    );
    let r = call(&client, base, Method::GET, "/api/pool", Cred::Viewer, None).await;
    let again: PoolsResponse = r.json().await.unwrap();
    assert_eq!(again, pools);
    let text = call(
        &client,
        base,
        Method::GET,
        "/api/metrics",
        Cred::Admin,
        None,
    )
    .await
    .text()
    .await
    .unwrap();
    assert!(
        text.lines()
            .any(|l| l == r#"poolwarden_pool_size{database="clinical"} 25"#),
        "{text}"
    );

    // Bad input: 400 with a JSON error naming the problem; nothing changes.
    let bad: [(&str, StatusCode, &str); 7] = [
        ("not json", StatusCode::BAD_REQUEST, "invalid request body"),
        (
            r#"{"database":"clinical","pool_size":0}"#,
            StatusCode::BAD_REQUEST,
            "pool_size",
        ),
        (
            r#"{"database":"clinical","pool_size":"many"}"#,
            StatusCode::BAD_REQUEST,
            "pool_size",
        ),
        (
            r#"{"database":"clinical","pool_sizes":3}"#,
            StatusCode::BAD_REQUEST,
            "pool_sizes",
        ),
        (
            r#"{"database":"clinical"}"#,
            StatusCode::BAD_REQUEST,
            "at least one setting",
        ),
        (r#"{"pool_size":3}"#, StatusCode::BAD_REQUEST, "database"),
        (
            r#"{"database":"nosuch","pool_size":3}"#,
            StatusCode::NOT_FOUND,
            "nosuch",
        ),
    ];
    for (body, status, mention) in bad {
        let r = put(body).await;
        assert_eq!(r.status(), status, "{body}");
        let v: serde_json::Value = r.json().await.unwrap();
        let msg = v["error"].as_str().unwrap();
        assert!(msg.contains(mention), "{body}: {msg}");
    }
    let r = call(&client, base, Method::GET, "/api/pool", Cred::Admin, None).await;
    let after: PoolsResponse = r.json().await.unwrap();
    assert_eq!(after, pools);

    // Shrink.
    let r = put(r#"{"database":"clinical","pool_size":5,"max_overflow":0}"#).await;
    let pools: PoolsResponse = r.json().await.unwrap();
    assert_eq!(
        (
            pools.pools[0].settings.pool_size,
            pools.pools[0].settings.max_overflow
        ),
        (5, 0)
    );
    server.shutdown().await;
}

#[tokio::test]
async fn an_unauthenticated_put_is_refused_before_the_body_is_read() {
    let server = Server::start().await;
    let client = Client::new();
    let r = call(
        &client,
        &server.base,
        Method::PUT,
        "/api/pool",
        Cred::None,
        Some("not json"),
    )
    .await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = call(
        &client,
        &server.base,
        Method::PUT,
        "/api/pool",
        Cred::Viewer,
        Some("not json"),
    )
    .await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    server.shutdown().await;
}
