//! Live push end to end with real sidecars: two `poolwarden-sidecar` processes run the
//! operator-rendered `poolwarden.yaml` (mount paths pointed at a temp dir, since there is no
//! kubelet) with their admin API on 127.0.0.2 and 127.0.0.3, standing in for two pods whose
//! status carries those IPs. A pool-size change in the policy is live in both within 10 s, as
//! their own `GET /api/pool` shows. The database is the shared test PostgreSQL; the pools are
//! lazy, so no server connection is opened.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, Patch, PatchParams, PostParams};
use poolwarden_crds::DbPoolPolicy;
use poolwarden_tests::kube_env;
use poolwarden_tests::operator::{create_db_secret, start_controller, wait_for};
use poolwarden_tests::pod_sidecars::{
    Sidecar, create_ready_pod, free_port_pair, pool_settings, rendered_config,
};

#[tokio::test]
async fn operator_push_reaches_real_sidecars_within_10s() {
    let client = kube_env::client().await;
    kube_env::install_crd(&client).await;
    let ns = kube_env::namespace(&client, "op-sidecar").await;
    let dir = std::env::temp_dir().join(format!("poolwarden-{ns}"));
    std::fs::create_dir_all(&dir).unwrap();
    let policies: Api<DbPoolPolicy> = Api::namespaced(client.clone(), &ns);
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    create_db_secret(&client, &ns, "test-db", "postgres").await;
    let _controller = start_controller(&client, &ns);

    let (admin_port, listen_port) = (free_port_pair(), free_port_pair());
    let policy: DbPoolPolicy = serde_json::from_value(serde_json::json!({
        "apiVersion": "poolwarden.dev/v1alpha1", "kind": "DbPoolPolicy",
        "metadata": {"name": "ward"},
        "spec": {
            "databases": [{"name": "test", "host": "127.0.0.1", "port": 5432, "dbname": "test",
                           "sslMode": "disable", "credentialsSecretRef": {"name": "test-db"}}],
            "pool": {"poolSize": 20, "maxOverflow": 10},
            "sidecar": {"adminPort": admin_port, "listenPort": listen_port}
        }
    }))
    .unwrap();
    policies
        .create(&PostParams::default(), &policy)
        .await
        .unwrap();

    let (config, token) = rendered_config(&client, &ns, "ward", "test", &dir).await;

    let sidecars = [
        Sidecar::start(&dir, "127.0.0.2", &config, listen_port, admin_port),
        Sidecar::start(&dir, "127.0.0.3", &config, listen_port, admin_port),
    ];
    let http = reqwest::Client::new();
    for s in &sidecars {
        let settings = wait_for(
            "the sidecar's admin API",
            Duration::from_secs(30),
            || async { pool_settings(&http, s.admin, &token).await },
        )
        .await;
        assert_eq!(
            settings,
            (20, 10),
            "started from the rendered file; log:\n{}",
            s.log()
        );
    }
    create_ready_pod(&pods, "ward", "ward-a", "127.0.0.2").await;
    create_ready_pod(&pods, "ward", "ward-b", "127.0.0.3").await;

    let started = Instant::now();
    let patch = serde_json::json!({"spec": {"pool": {"poolSize": 33, "maxOverflow": 17}}});
    policies
        .patch("ward", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    for s in &sidecars {
        let limit = Duration::from_secs(10).saturating_sub(started.elapsed());
        wait_for("the new pool size live in the sidecar", limit, || async {
            (pool_settings(&http, s.admin, &token).await == Some((33, 17))).then_some(())
        })
        .await;
    }
    let took = started.elapsed();
    assert!(took < Duration::from_secs(10), "took {took:?}");
    eprintln!("pool size live in both sidecars {took:?} after the spec change");
    let p = policies.get("ward").await.unwrap();
    let pods_status = p.status.unwrap().pods.unwrap();
    assert_eq!((pods_status.matched, pods_status.reporting), (2, 2));
    assert!(pods_status.unreachable.is_empty());
    for s in &sidecars {
        assert!(
            !s.log().contains(&token),
            "the admin token leaked into a sidecar log"
        );
    }
}
