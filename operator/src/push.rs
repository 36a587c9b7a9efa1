//! Live push: `PUT /api/pool` (CONTRACT §2.5) on every ready pod of a policy, so a new pool
//! size is live within 10 s without a pod restart.
//!
//! ```text
//!  matched pods ──ready_targets()──▶ [pod, podIP:adminPort] ──push_all()──▶ PUT /api/pool × databases
//!                                                                  │ retry with backoff until the deadline
//!                                                                  ▼
//!                                                  pods not reached ──▶ status.pods.unreachable
//! ```

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use futures::future::join_all;
use http_body_util::Full;
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use k8s_openapi::api::core::v1::Pod;
use serde::Serialize;
use tokio::net::TcpStream;
use tokio::time::{Instant, sleep, timeout};

/// The whole push must finish within this, leaving room in the contract's 10 s.
pub const PUSH_DEADLINE: Duration = Duration::from_secs(8);
/// One request's timeout.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// A ready pod's sidecar admin endpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// Pod name, reported in `status.pods.unreachable` when it cannot be reached.
    pub pod: String,
    /// `status.podIP:adminPort`.
    pub addr: SocketAddr,
}

/// The body of `PUT /api/pool` for one database.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PoolUpdate {
    /// The database (pool) name.
    pub database: String,
    /// New pool_size.
    pub pool_size: u32,
    /// New max_overflow.
    pub max_overflow: u32,
}

/// Whether a pod counts as ready: not being deleted, with an IP and the Ready condition True.
pub fn is_ready(pod: &Pod) -> bool {
    let Some(status) = &pod.status else {
        return false;
    };
    pod.metadata.deletion_timestamp.is_none()
        && status.pod_ip.as_deref().is_some_and(|ip| !ip.is_empty())
        && status
            .conditions
            .iter()
            .flatten()
            .any(|c| c.type_ == "Ready" && c.status == "True")
}

/// The push targets among matched pods (ready ones with a parseable IP), sorted by name.
pub fn ready_targets(pods: &[Pod], admin_port: u16) -> Vec<Target> {
    let mut out: Vec<Target> = pods
        .iter()
        .filter(|p| is_ready(p))
        .filter_map(|p| {
            let ip: IpAddr = p.status.as_ref()?.pod_ip.as_deref()?.parse().ok()?;
            Some(Target {
                pod: p.metadata.name.clone()?,
                addr: SocketAddr::new(ip, admin_port),
            })
        })
        .collect();
    out.sort_by(|a, b| a.pod.cmp(&b.pod));
    out
}

/// Which targets get a push: all of them when the pool settings changed, otherwise only the
/// ones that were unreachable last time (a retry). Pure.
pub fn plan(
    targets: &[Target],
    settings_changed: bool,
    previously_unreachable: &[String],
) -> Vec<Target> {
    targets
        .iter()
        .filter(|t| settings_changed || previously_unreachable.contains(&t.pod))
        .cloned()
        .collect()
}

/// Push every update to every target concurrently; retry each with backoff until
/// [`PUSH_DEADLINE`]. Returns the names of the pods that were not reached, sorted.
pub async fn push_all(targets: &[Target], updates: &[PoolUpdate], token: &str) -> Vec<String> {
    let deadline = Instant::now() + PUSH_DEADLINE;
    let results = join_all(
        targets
            .iter()
            .map(|t| push_one(t, updates, token, deadline)),
    )
    .await;
    let mut failed: Vec<String> = targets
        .iter()
        .zip(results)
        .filter(|(_, ok)| !ok)
        .map(|(t, _)| t.pod.clone())
        .collect();
    failed.sort();
    failed
}

async fn push_one(target: &Target, updates: &[PoolUpdate], token: &str, deadline: Instant) -> bool {
    for update in updates {
        let mut backoff = FIRST_BACKOFF;
        loop {
            match put_pool(target.addr, update, token).await {
                Ok(()) => break,
                Err(e) => {
                    tracing::debug!(pod = %target.pod, database = %update.database, error = %e, "live push attempt failed");
                    if Instant::now() + backoff >= deadline {
                        tracing::warn!(pod = %target.pod, error = %e, "live push gave up");
                        return false;
                    }
                    sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }
    true
}

/// Why one PUT failed (never carries the token).
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    /// TCP connect, HTTP exchange or timeout.
    #[error("request failed: {0}")]
    Transport(String),
    /// The sidecar answered with a non-2xx status.
    #[error("sidecar answered {0}")]
    Status(u16),
}

async fn put_pool(addr: SocketAddr, update: &PoolUpdate, token: &str) -> Result<(), PushError> {
    let t = |e: &dyn std::fmt::Display| PushError::Transport(e.to_string());
    let exchange = async {
        let stream = TcpStream::connect(addr).await.map_err(|e| t(&e))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| t(&e))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let body = serde_json::to_vec(update).expect("a PoolUpdate always serialises");
        let req = http::Request::put("/api/pool")
            .header(http::header::HOST, addr.to_string())
            .header(http::header::AUTHORIZATION, format!("Bearer {token}"))
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| t(&e))?;
        let resp = sender.send_request(req).await.map_err(|e| t(&e))?;
        if resp.status().is_success() {
            Ok(())
        } else {
            Err(PushError::Status(resp.status().as_u16()))
        }
    };
    timeout(REQUEST_TIMEOUT, exchange)
        .await
        .map_err(|e| t(&e))?
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, ip: Option<&str>, ready: Option<&str>, deleting: bool) -> Pod {
        let mut v = serde_json::json!({"metadata": {"name": name}, "status": {}});
        if let Some(ip) = ip {
            v["status"]["podIP"] = ip.into();
        }
        if let Some(r) = ready {
            v["status"]["conditions"] = serde_json::json!([{"type": "Ready", "status": r}]);
        }
        if deleting {
            v["metadata"]["deletionTimestamp"] = "2026-11-28T10:00:00Z".into();
        }
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn only_ready_pods_with_an_ip_are_targets() {
        let pods = [
            pod("c", Some("127.0.0.3"), Some("True"), false),
            pod("a", Some("127.0.0.2"), Some("True"), false),
            pod("no-ip", None, Some("True"), false),
            pod("not-ready", Some("127.0.0.4"), Some("False"), false),
            pod("no-cond", Some("127.0.0.5"), None, false),
            pod("deleting", Some("127.0.0.6"), Some("True"), true),
            pod("bad-ip", Some("nope"), Some("True"), false),
            pod("v6", Some("::1"), Some("True"), false),
        ];
        let got: Vec<String> = ready_targets(&pods, 9930)
            .iter()
            .map(|t| format!("{} {}", t.pod, t.addr))
            .collect();
        assert_eq!(
            got,
            ["a 127.0.0.2:9930", "c 127.0.0.3:9930", "v6 [::1]:9930"]
        );
    }

    /// A real HTTP endpoint that answers 503 `fail_first` times, then 200; records bodies.
    async fn flaky_sidecar(
        fail_first: usize,
    ) -> (SocketAddr, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
        use axum::extract::State;
        use axum::http::{HeaderMap, StatusCode};
        type Log = std::sync::Arc<std::sync::Mutex<Vec<String>>>;
        async fn put(
            State((log, fail)): State<(Log, usize)>,
            h: HeaderMap,
            body: String,
        ) -> StatusCode {
            let auth = h
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string();
            let mut log = log.lock().unwrap();
            log.push(format!("{auth} {body}"));
            if log.len() <= fail {
                StatusCode::SERVICE_UNAVAILABLE
            } else {
                StatusCode::OK
            }
        }
        let log = Log::default();
        let app = axum::Router::new()
            .route("/api/pool", axum::routing::put(put))
            .with_state((log.clone(), fail_first));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (addr, log)
    }

    fn update(db: &str) -> PoolUpdate {
        PoolUpdate {
            database: db.into(),
            pool_size: 25,
            max_overflow: 13,
        }
    }

    #[tokio::test]
    async fn a_failing_sidecar_is_retried_until_it_accepts() {
        let (addr, log) = flaky_sidecar(2).await;
        let targets = [Target {
            pod: "a".into(),
            addr,
        }];
        let failed = push_all(&targets, &[update("clinical"), update("audit")], "tok").await;
        assert!(failed.is_empty(), "{failed:?}");
        let log = log.lock().unwrap().clone();
        let want = |db: &str| {
            format!("Bearer tok {{\"database\":\"{db}\",\"pool_size\":25,\"max_overflow\":13}}")
        };
        assert_eq!(
            log,
            [
                want("clinical"),
                want("clinical"),
                want("clinical"),
                want("audit")
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_unreachable_pod_is_retried_to_the_deadline_then_reported() {
        // Port 1 on loopback refuses at once; paused time runs the backoff to the deadline.
        let dead = Target {
            pod: "dead".into(),
            addr: "127.0.0.1:1".parse().unwrap(),
        };
        let started = Instant::now();
        let failed = push_all(&[dead], &[update("clinical")], "tok").await;
        assert_eq!(failed, ["dead"]);
        let waited = started.elapsed();
        assert!(waited <= PUSH_DEADLINE, "gave up after {waited:?}");
        assert!(
            waited >= PUSH_DEADLINE - MAX_BACKOFF,
            "retried until near the deadline: {waited:?}"
        );
    }

    #[test]
    fn plan_pushes_all_on_a_change_and_retries_only_the_unreachable_otherwise() {
        let t = |pod: &str, last: u8| Target {
            pod: pod.into(),
            addr: SocketAddr::from(([127, 0, 0, last], 9930)),
        };
        let targets = [t("a", 2), t("b", 3), t("c", 4)];
        let names = |v: Vec<Target>| v.into_iter().map(|t| t.pod).collect::<Vec<_>>();
        let table: [(bool, &[&str], &[&str]); 5] = [
            (true, &[], &["a", "b", "c"]),
            (true, &["b"], &["a", "b", "c"]),
            (false, &[], &[]),
            (false, &["b"], &["b"]),
            (false, &["gone", "c"], &["c"]),
        ];
        for (changed, unreachable, want) in table {
            let prev: Vec<String> = unreachable.iter().map(|s| s.to_string()).collect();
            assert_eq!(
                names(plan(&targets, changed, &prev)),
                want,
                "changed={changed} prev={prev:?}"
            );
        }
    }

    #[test]
    fn update_body_is_the_contract_json() {
        let u = PoolUpdate {
            database: "clinical".into(),
            pool_size: 25,
            max_overflow: 13,
        };
        assert_eq!(
            serde_json::to_value(&u).unwrap(),
            serde_json::json!({"database": "clinical", "pool_size": 25, "max_overflow": 13})
        );
    }
}
