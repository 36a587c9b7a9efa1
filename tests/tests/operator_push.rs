//! Live push against the real apiserver: Pod objects whose status carries loopback pod IPs
//! (127.0.0.2, 127.0.0.3 — all of 127/8 reaches this machine), each with a real HTTP listener
//! on the policy's admin port that records `PUT /api/pool`. A spec change must reach every one
//! within 10 s, with the admin token; a pod nobody listens for is reported unreachable.
//!
//! The listeners stand in for the sidecar's admin API, which is built in parallel; the
//! end-to-end check with real sidecar processes is added after the merge.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::put;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{Api, Patch, PatchParams, PostParams};
use poolwarden_crds::DbPoolPolicy;
use poolwarden_tests::kube_env;
use poolwarden_tests::operator::{create_db_secret, policy, start_controller, wait_for};

#[derive(Clone, Debug)]
struct Put {
    authorization: String,
    body: serde_json::Value,
}

type Log = Arc<Mutex<Vec<Put>>>;

async fn record(State(log): State<Log>, headers: HeaderMap, body: String) -> &'static str {
    let authorization = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let body = serde_json::from_str(&body).unwrap_or(serde_json::Value::Null);
    log.lock().unwrap().push(Put {
        authorization,
        body,
    });
    "{}"
}

/// Bind 127.0.0.2 and 127.0.0.3 on one free port; returns the port and a listener per address.
async fn bind_pair() -> (u16, Vec<tokio::net::TcpListener>) {
    for _ in 0..50 {
        let first = tokio::net::TcpListener::bind("127.0.0.2:0").await.unwrap();
        let port = first.local_addr().unwrap().port();
        if let Ok(second) =
            tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 3], port))).await
        {
            return (port, vec![first, second]);
        }
    }
    panic!("no port free on both 127.0.0.2 and 127.0.0.3");
}

fn serve(listener: tokio::net::TcpListener) -> Log {
    let log = Log::default();
    let app = Router::new()
        .route("/api/pool", put(record))
        .with_state(log.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    log
}

async fn create_ready_pod(pods: &Api<Pod>, name: &str, policy: &str, ip: &str) {
    let pod: Pod = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": {"poolwarden.dev/policy": policy, "app": "clinical"}},
        "spec": {"containers": [{"name": "app", "image": "app:1"}]}
    }))
    .unwrap();
    pods.create(&PostParams::default(), &pod).await.unwrap();
    let status = serde_json::json!({"status": {
        "phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}],
        "conditions": [{"type": "Ready", "status": "True"}]
    }});
    pods.patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .unwrap();
}

fn sizes(log: &Log) -> Vec<(u64, u64)> {
    log.lock()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p.body["pool_size"].as_u64().unwrap_or(0),
                p.body["max_overflow"].as_u64().unwrap_or(0),
            )
        })
        .collect()
}

#[tokio::test]
async fn operator_pushes_a_new_pool_size_to_every_ready_pod_within_10s() {
    let client = kube_env::client().await;
    kube_env::install_crd(&client).await;
    let ns = kube_env::namespace(&client, "op-push").await;
    let policies: Api<DbPoolPolicy> = Api::namespaced(client.clone(), &ns);
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    create_db_secret(&client, &ns, "clinical-db", "clinical_app").await;

    let (port, listeners) = bind_pair().await;
    let logs: Vec<Log> = listeners.into_iter().map(serve).collect();
    create_ready_pod(&pods, "app-a", "clinical", "127.0.0.2").await;
    create_ready_pod(&pods, "app-b", "clinical", "127.0.0.3").await;
    // A pod that is not ready is matched but not pushed to.
    let pending: Pod = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "app-pending", "labels": {"poolwarden.dev/policy": "clinical"}},
        "spec": {"containers": [{"name": "app", "image": "app:1"}]}
    }))
    .unwrap();
    pods.create(&PostParams::default(), &pending).await.unwrap();

    let _controller = start_controller(&client, &ns);
    let extra = serde_json::json!({"sidecar": {"adminPort": port}});
    policies
        .create(
            &PostParams::default(),
            &policy("clinical", "clinical-db", extra),
        )
        .await
        .unwrap();
    let p = wait_for("first status", Duration::from_secs(30), || async {
        let p = policies.get("clinical").await.unwrap();
        p.status.as_ref()?.pool_size.is_some().then_some(p)
    })
    .await;
    let pods_status = p.status.unwrap().pods.unwrap();
    assert_eq!((pods_status.matched, pods_status.reporting), (3, 2));
    assert!(pods_status.unreachable.is_empty());
    for log in &logs {
        assert_eq!(
            sizes(log),
            [(20, 10)],
            "the initial size reached each pod once"
        );
    }

    let token = {
        let s = Api::<Secret>::namespaced(client.clone(), &ns)
            .get("clinical-poolwarden-admin")
            .await
            .unwrap();
        String::from_utf8(s.data.unwrap()["token"].0.clone()).unwrap()
    };

    // The spec change must be live in every pod within 10 s.
    let started = Instant::now();
    let patch = serde_json::json!({"spec": {"pool": {"poolSize": 35, "maxOverflow": 18}}});
    policies
        .patch("clinical", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    wait_for(
        "PUT /api/pool with 35/18 on both pods",
        Duration::from_secs(10),
        || async {
            logs.iter()
                .all(|l| sizes(l).last() == Some(&(35, 18)))
                .then_some(())
        },
    )
    .await;
    let took = started.elapsed();
    assert!(took < Duration::from_secs(10), "push took {took:?}");
    for log in &logs {
        let last = log.lock().unwrap().last().cloned().unwrap();
        assert_eq!(last.authorization, format!("Bearer {token}"));
        assert_eq!(
            last.body,
            serde_json::json!({"database": "clinical", "pool_size": 35, "max_overflow": 18})
        );
    }

    // A ready pod that nobody answers for is listed as unreachable; the others still get it.
    create_ready_pod(&pods, "app-gone", "clinical", "127.0.0.4").await;
    let patch = serde_json::json!({"spec": {"pool": {"poolSize": 40, "maxOverflow": 20}}});
    policies
        .patch("clinical", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    let p = wait_for(
        "app-gone reported unreachable",
        Duration::from_secs(30),
        || async {
            let p = policies.get("clinical").await.unwrap();
            (p.status.as_ref()?.pods.as_ref()?.unreachable == ["app-gone"]).then_some(p)
        },
    )
    .await;
    let ready = p
        .status
        .unwrap()
        .conditions
        .into_iter()
        .find(|c| c.type_ == "Ready")
        .unwrap();
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("False", "SidecarsUnreachable")
    );
    assert!(ready.message.contains("app-gone"), "{}", ready.message);
    for log in &logs {
        assert_eq!(sizes(log).last(), Some(&(40, 20)));
    }
    // Pushes happen on a change, not on every loop: each pod got exactly initial + 2 changes.
    for log in &logs {
        assert_eq!(sizes(log), [(20, 10), (35, 18), (40, 20)]);
    }
}
