//! Helpers for the operator's end-to-end tests: an in-process controller scoped to a test's
//! namespace, database Secrets, policies, and polling with a deadline.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::Client;
use kube::api::{Api, PostParams};
use poolwarden_crds::DbPoolPolicy;
use poolwarden_operator::controller::{self, Context, Scope};
use poolwarden_operator::metrics::Metrics;
use tokio::sync::oneshot;

/// A controller running in this process for one namespace; stopped on drop.
pub struct ControllerGuard {
    stop: Option<oneshot::Sender<()>>,
    /// The controller's metrics.
    pub metrics: Metrics,
}

impl Drop for ControllerGuard {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Start the real controller (the same `controller::run` the binary runs) for `namespace`.
pub fn start_controller(client: &Client, namespace: &str) -> ControllerGuard {
    start_controller_with_interval(client, namespace, controller::DEFAULT_SCRAPE_INTERVAL)
}

/// As [`start_controller`], scraping autoscaled policies every `interval`.
pub fn start_controller_with_interval(
    client: &Client,
    namespace: &str,
    interval: Duration,
) -> ControllerGuard {
    let metrics = Metrics::default();
    let ctx = Arc::new(
        Context::new(client.clone(), metrics.clone(), "poolwarden-tests".into())
            .with_scrape_interval(interval),
    );
    let (tx, rx) = oneshot::channel::<()>();
    tokio::spawn(controller::run(
        ctx,
        Scope::Namespace(namespace.into()),
        async move {
            let _ = rx.await;
        },
    ));
    ControllerGuard {
        stop: Some(tx),
        metrics,
    }
}

/// Create a database credentials Secret with `username` and `password`.
pub async fn create_db_secret(client: &Client, namespace: &str, name: &str, user: &str) {
    let s: Secret = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": name},
        "stringData": {"username": user, "password": "s3cret-pw"}
    }))
    .unwrap();
    Api::<Secret>::namespaced(client.clone(), namespace)
        .create(&PostParams::default(), &s)
        .await
        .unwrap();
}

/// A policy with one database `clinical` whose credentials are in `secret`.
pub fn policy(name: &str, secret: &str, extra_spec: serde_json::Value) -> DbPoolPolicy {
    let mut v = serde_json::json!({
        "apiVersion": "poolwarden.dev/v1alpha1", "kind": "DbPoolPolicy",
        "metadata": {"name": name},
        "spec": {
            "databases": [{"name": "clinical", "host": "db.clinical.svc", "dbname": "clinical",
                           "credentialsSecretRef": {"name": secret}, "sslMode": "require"}],
            "pool": {"poolSize": 20, "maxOverflow": 10}
        }
    });
    if let serde_json::Value::Object(extra) = extra_spec {
        for (k, val) in extra {
            v["spec"][k] = val;
        }
    }
    serde_json::from_value(v).unwrap()
}

/// Poll `probe` every 200 ms until it returns `Some`, or panic naming `what` after `limit`.
pub async fn wait_for<T, F, Fut>(what: &str, limit: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out after {limit:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
