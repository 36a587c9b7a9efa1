//! Autoscaling end to end: real sidecars (standing in for two pods, on 127.0.0.2 and
//! 127.0.0.3) in front of the real PostgreSQL, the real controller scraping their
//! `/api/metrics`, and a load that keeps utilization above 80 %. The pool size rises in every
//! sidecar with no restart and no client error, and status.history, an Event and the
//! ConfigMap record it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ListParams, PostParams};
use poolwarden_crds::DbPoolPolicy;
use poolwarden_crds::conditions::reasons;
use poolwarden_tests::kube_env;
use poolwarden_tests::operator::{create_db_secret, start_controller_with_interval, wait_for};
use poolwarden_tests::pod_sidecars::{
    Sidecar, create_ready_pod, free_port_pair, pool_settings, rendered_config,
};

/// Clinicians through one sidecar: short transactions that hold a server connection.
async fn clinicians(
    addr: String,
    n: usize,
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    errors: Arc<AtomicU64>,
) {
    let mut tasks = Vec::new();
    for _ in 0..n {
        let (addr, stop, ok, errors) = (addr.clone(), stop.clone(), ok.clone(), errors.clone());
        tasks.push(tokio::spawn(async move {
            let (host, port) = addr.rsplit_once(':').unwrap();
            let mut cfg = tokio_postgres::Config::new();
            cfg.host(host)
                .port(port.parse().unwrap())
                .user("postgres")
                .dbname("test")
                .application_name("autoscale-e2e");
            let (client, conn) = cfg.connect(tokio_postgres::NoTls).await.expect("connect");
            tokio::spawn(conn);
            while !stop.load(Ordering::Relaxed) {
                let r = client
                    .batch_execute("BEGIN; SELECT pg_sleep(0.2); COMMIT")
                    .await;
                match r {
                    Ok(()) => ok.fetch_add(1, Ordering::Relaxed),
                    Err(e) => {
                        eprintln!("client error: {e}");
                        errors.fetch_add(1, Ordering::Relaxed)
                    }
                };
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

#[tokio::test]
async fn heavy_autoscale_raises_pool_size_in_every_sidecar() {
    let client = kube_env::client().await;
    kube_env::install_crd(&client).await;
    let ns = kube_env::namespace(&client, "op-autoscale").await;
    let dir = std::env::temp_dir().join(format!("poolwarden-{ns}"));
    std::fs::create_dir_all(&dir).unwrap();
    let policies: Api<DbPoolPolicy> = Api::namespaced(client.clone(), &ns);
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    create_db_secret(&client, &ns, "test-db", "postgres").await;
    let _controller = start_controller_with_interval(&client, &ns, Duration::from_secs(1));

    let (admin_port, listen_port) = (free_port_pair(), free_port_pair());
    let policy: DbPoolPolicy = serde_json::from_value(serde_json::json!({
        "apiVersion": "poolwarden.dev/v1alpha1", "kind": "DbPoolPolicy",
        "metadata": {"name": "ward"},
        "spec": {
            "databases": [{"name": "test", "host": "127.0.0.1", "port": 5432, "dbname": "test",
                           "sslMode": "disable", "credentialsSecretRef": {"name": "test-db"}}],
            "pool": {"poolSize": 3, "maxOverflow": 2, "poolTimeoutSeconds": 30},
            "autoscaling": {
                "enabled": true, "minPoolSize": 3, "maxPoolSize": 12,
                "scaleUp": {"utilizationAbove": 0.8, "sustainedSeconds": 3},
                "connectionBudget": {"maxConnections": 100, "superuserReservedConnections": 3,
                                     "reservedConnections": 10}
            },
            "sidecar": {"adminPort": admin_port, "listenPort": listen_port}
        }
    }))
    .unwrap();
    policies
        .create(&PostParams::default(), &policy)
        .await
        .unwrap();

    let (config, token) = rendered_config(&client, &ns, "ward", "test", &dir).await;

    let ips = ["127.0.0.2", "127.0.0.3"];
    let sidecars: Vec<Sidecar> = ips
        .iter()
        .map(|ip| Sidecar::start(&dir, ip, &config, listen_port, admin_port))
        .collect();
    let http = reqwest::Client::new();
    for s in &sidecars {
        let settings = wait_for(
            "the sidecar's admin API",
            Duration::from_secs(30),
            || async { pool_settings(&http, s.admin, &token).await },
        )
        .await;
        assert_eq!(settings, (3, 2), "log:\n{}", s.log());
    }
    for (i, ip) in ips.iter().enumerate() {
        create_ready_pod(&pods, "ward", &format!("ward-{i}"), ip).await;
    }

    // 5 clinicians per pod on a 3 + 2 pool: utilization 5/3 while the pool is small.
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let load: Vec<_> = ips
        .iter()
        .map(|ip| {
            tokio::spawn(clinicians(
                format!("{ip}:{listen_port}"),
                5,
                stop.clone(),
                ok.clone(),
                errors.clone(),
            ))
        })
        .collect();

    let grown = wait_for("a scale-up in status", Duration::from_secs(60), || async {
        let p = policies.get("ward").await.unwrap();
        let size = p.status?.pool_size?;
        (size > 3).then_some(size)
    })
    .await;
    for s in &sidecars {
        wait_for(
            "the new size live in the sidecar",
            Duration::from_secs(10),
            || async {
                let (size, _) = pool_settings(&http, s.admin, &token).await?;
                (size >= grown as u64).then_some(())
            },
        )
        .await;
    }
    // The load keeps running across the resize; then it stops.
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    for l in load {
        l.await.unwrap();
    }
    assert_eq!(
        errors.load(Ordering::Relaxed),
        0,
        "no client error across the resize"
    );
    assert!(ok.load(Ordering::Relaxed) > 20, "the load ran");

    let status = policies.get("ward").await.unwrap().status.unwrap();
    let entry = status
        .history
        .iter()
        .find(|h| h.reason == reasons::SUSTAINED_HIGH_UTILIZATION)
        .unwrap_or_else(|| {
            panic!(
                "no SustainedHighUtilization in history: {:?}",
                status.history
            )
        });
    assert_eq!(entry.from_pool_size, 3);
    // Demand was up to 5 per pod: at least ceil(5 × 1.5) = 8, and one step (5) above 3.
    assert!(entry.to_pool_size >= 8, "{entry:?}");
    assert_eq!(status.pods.as_ref().unwrap().matched, 2);
    let budget = status.connection_budget.as_ref().unwrap();
    assert_eq!(budget.per_pod_limit, (100 - 3 - 10) / 2);

    let evs: Api<Event> = Api::namespaced(client.clone(), &ns);
    let events = evs.list(&ListParams::default()).await.unwrap().items;
    assert!(
        events
            .iter()
            .any(|e| e.reason.as_deref() == Some(reasons::SUSTAINED_HIGH_UTILIZATION)),
        "no SustainedHighUtilization Event: {:?}",
        events.iter().map(|e| &e.reason).collect::<Vec<_>>()
    );
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    let yaml = cms.get("ward-poolwarden").await.unwrap().data.unwrap()["poolwarden.yaml"].clone();
    assert!(
        yaml.contains(&format!("pool_size: {}", entry.to_pool_size)),
        "the ConfigMap carries the new size for restarted pods:\n{yaml}"
    );
    for s in &sidecars {
        assert!(
            !s.log().contains(&token),
            "the admin token leaked into a log"
        );
    }
}
