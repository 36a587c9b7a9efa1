//! Leader election with the real binary: two `poolwarden-operator run` processes share one
//! Lease; only the holder reconciles; after the holder is killed (SIGKILL, no release) the other
//! takes over within the lease time; SIGTERM releases the lease and exits cleanly. Also the
//! operator's own `/healthz`, `/readyz` and `/metrics`.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, Patch, PatchParams, PostParams};
use poolwarden_crds::DbPoolPolicy;
use poolwarden_operator::leader::{self, LeaseConfig};
use poolwarden_tests::kube_env;
use poolwarden_tests::operator::{create_db_secret, policy, wait_for};

const LEASE_SECONDS: u64 = 6;

fn operator_binary() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let path = target.join("debug/poolwarden-operator");
    assert!(
        path.exists(),
        "{} is missing: run `cargo build -p poolwarden-operator` first",
        path.display()
    );
    path
}

struct Operator {
    identity: String,
    child: Child,
    log: PathBuf,
    metrics: u16,
}

impl Operator {
    fn start(dir: &std::path::Path, identity: &str, ns: &str) -> Self {
        let metrics = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let log = dir.join(format!("{identity}.log"));
        let file = std::fs::File::create(&log).unwrap();
        let child = Command::new(operator_binary())
            .args(["run", "--metrics-listen", &format!("127.0.0.1:{metrics}")])
            .args([
                "--watch-namespace",
                ns,
                "--lease-namespace",
                ns,
                "--identity",
                identity,
            ])
            .args(["--lease-duration-seconds", &LEASE_SECONDS.to_string()])
            // No webhook certificates here: the webhook has its own tests.
            .args(["--webhook-listen", ""])
            .env("KUBECONFIG", kube_env::kubeconfig_path())
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .stdin(Stdio::null())
            .spawn()
            .expect("start poolwarden-operator");
        Self {
            identity: identity.into(),
            child,
            log,
            metrics,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn reconciled(&self) -> bool {
        self.log()
            .lines()
            .any(|l| l.contains("reconciled") && l.contains("clinical"))
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill {sig} {}", self.child.id());
    }

    async fn http_get(&self, path: &str) -> (u16, String) {
        let resp = reqwest::get(format!("http://127.0.0.1:{}{path}", self.metrics))
            .await
            .unwrap();
        (resp.status().as_u16(), resp.text().await.unwrap())
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn holder(leases: &Api<Lease>) -> Option<String> {
    leases
        .get_opt("poolwarden-operator")
        .await
        .unwrap()?
        .spec?
        .holder_identity
}

async fn pool_size_in_configmap(cms: &Api<ConfigMap>) -> Option<u64> {
    let cm = cms.get_opt("clinical-poolwarden").await.unwrap()?;
    let cfg: serde_yaml_ng::Value = serde_yaml_ng::from_str(&cm.data?["poolwarden.yaml"]).unwrap();
    cfg["pool"]["pool_size"].as_u64()
}

#[tokio::test]
async fn operator_leader_election_one_reconciles_and_the_other_takes_over() {
    let client = kube_env::client().await;
    kube_env::install_crd(&client).await;
    let ns = kube_env::namespace(&client, "op-leader").await;
    let dir = std::env::temp_dir().join(format!("poolwarden-{ns}"));
    std::fs::create_dir_all(&dir).unwrap();
    let policies: Api<DbPoolPolicy> = Api::namespaced(client.clone(), &ns);
    let leases: Api<Lease> = Api::namespaced(client.clone(), &ns);
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    create_db_secret(&client, &ns, "clinical-db", "clinical_app").await;

    let mut ops = vec![
        Operator::start(&dir, "op-a", &ns),
        Operator::start(&dir, "op-b", &ns),
    ];
    let first = wait_for("a Lease holder", Duration::from_secs(30), || async {
        holder(&leases).await
    })
    .await;
    assert!(first == "op-a" || first == "op-b", "holder {first}");
    let leader_ix = ops.iter().position(|o| o.identity == first).unwrap();

    policies
        .create(
            &PostParams::default(),
            &policy("clinical", "clinical-db", serde_json::json!({})),
        )
        .await
        .unwrap();
    wait_for(
        "the ConfigMap from the leader",
        Duration::from_secs(30),
        || async { (pool_size_in_configmap(&cms).await == Some(20)).then_some(()) },
    )
    .await;
    wait_for(
        "the leader logs its reconcile",
        Duration::from_secs(10),
        || async { ops[leader_ix].reconciled().then_some(()) },
    )
    .await;
    // Give the follower every chance to (wrongly) reconcile too.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let follower_ix = 1 - leader_ix;
    assert!(
        !ops[follower_ix].reconciled(),
        "the follower reconciled:\n{}",
        ops[follower_ix].log()
    );
    assert!(
        !ops[follower_ix].log().contains("acquired the lease"),
        "{}",
        ops[follower_ix].log()
    );

    // The operator's own endpoints, on both replicas.
    for op in &ops {
        assert_eq!(op.http_get("/healthz").await, (200, "ok".to_string()));
        assert_eq!(op.http_get("/readyz").await.0, 200);
    }
    let (code, text) = ops[leader_ix].http_get("/metrics").await;
    assert_eq!(code, 200);
    let reconciles = text
        .lines()
        .find_map(|l| l.strip_prefix("poolwarden_operator_reconciles_total "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .unwrap_or_else(|| panic!("no reconciles_total in\n{text}"));
    assert!(reconciles >= 1.0, "{text}");
    for name in [
        "poolwarden_operator_reconcile_duration_seconds_bucket",
        "poolwarden_operator_reconcile_failures_total",
        "poolwarden_operator_scale_decisions_total",
    ] {
        assert!(
            text.contains(&format!("# TYPE {}", name.trim_end_matches("_bucket"))),
            "{name} missing in\n{text}"
        );
    }

    // Kill the leader without a chance to release; the follower takes over within the lease
    // time (plus its polling and a generous margin for a loaded machine).
    ops[leader_ix].child.kill().unwrap();
    ops[leader_ix].child.wait().unwrap();
    let killed = Instant::now();
    let patch = serde_json::json!({"spec": {"pool": {"poolSize": 40}}});
    policies
        .patch("clinical", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    let second = ops[follower_ix].identity.clone();
    wait_for(
        "the follower holds the Lease",
        Duration::from_secs(LEASE_SECONDS + 20),
        || async { (holder(&leases).await.as_deref() == Some(second.as_str())).then_some(()) },
    )
    .await;
    wait_for(
        "the new leader reconciles the change",
        Duration::from_secs(20),
        || async { (pool_size_in_configmap(&cms).await == Some(40)).then_some(()) },
    )
    .await;
    let took = killed.elapsed();
    assert!(
        took < Duration::from_secs(LEASE_SECONDS + 20),
        "takeover took {took:?}"
    );
    assert!(
        ops[follower_ix].log().contains("acquired the lease"),
        "{}",
        ops[follower_ix].log()
    );
    eprintln!(
        "takeover and reconcile {took:?} after the leader was killed (lease {LEASE_SECONDS}s)"
    );

    // SIGTERM: graceful shutdown releases the Lease and exits 0.
    let survivor = ops.remove(follower_ix);
    survivor.signal("-TERM");
    let mut survivor = survivor;
    let status = wait_for(
        "the operator exits after SIGTERM",
        Duration::from_secs(20),
        || {
            let s = survivor.child.try_wait().unwrap();
            async move { s }
        },
    )
    .await;
    assert!(status.success(), "exit {status:?}\n{}", survivor.log());
    assert_eq!(
        holder(&leases).await,
        None,
        "the Lease was released:\n{}",
        survivor.log()
    );
    assert!(
        survivor.log().contains("released the lease"),
        "{}",
        survivor.log()
    );
}

/// Sets the flag to false when the work future is dropped (the controller stopped).
struct Running(std::sync::Arc<std::sync::atomic::AtomicBool>);
impl Drop for Running {
    fn drop(&mut self) {
        self.0.store(false, std::sync::atomic::Ordering::SeqCst);
    }
}

#[tokio::test]
async fn operator_leader_stops_reconciling_when_another_replica_holds_the_lease() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

    let client = kube_env::client().await;
    let ns = kube_env::namespace(&client, "op-lease").await;
    let leases: Api<Lease> = Api::namespaced(client.clone(), &ns);
    let running = Arc::new(AtomicBool::new(false));
    let starts = Arc::new(AtomicU32::new(0));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let cfg = LeaseConfig {
        name: "poolwarden-operator".into(),
        namespace: ns.clone(),
        identity: "me".into(),
        duration_seconds: 4,
        grace_seconds: 1,
    };
    let (r, n) = (running.clone(), starts.clone());
    let task = tokio::spawn(leader::run_while_leader(
        client.clone(),
        cfg,
        stop_rx,
        move || {
            n.fetch_add(1, Ordering::SeqCst);
            r.store(true, Ordering::SeqCst);
            let guard = Running(r.clone());
            async move {
                let _guard = guard;
                std::future::pending::<()>().await
            }
        },
    ));
    wait_for("work runs as leader", Duration::from_secs(20), || async {
        running.load(Ordering::SeqCst).then_some(())
    })
    .await;
    assert_eq!(holder(&leases).await.as_deref(), Some("me"));

    // Another replica takes the Lease (as one whose clock says ours expired would).
    // MicroTime: exactly six fractional digits.
    let now = k8s_openapi::jiff::Timestamp::now()
        .round(k8s_openapi::jiff::Unit::Second)
        .unwrap()
        .to_string()
        .replace('Z', ".000000Z");
    let steal = serde_json::json!({"spec": {
        "holderIdentity": "intruder", "leaseDurationSeconds": 60,
        "acquireTime": now, "renewTime": now
    }});
    leases
        .patch(
            "poolwarden-operator",
            &PatchParams::default(),
            &Patch::Merge(&steal),
        )
        .await
        .unwrap();
    wait_for(
        "work stops after the lease is lost",
        Duration::from_secs(15),
        || async { (!running.load(Ordering::SeqCst)).then_some(()) },
    )
    .await;
    assert_eq!(starts.load(Ordering::SeqCst), 1);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        !running.load(Ordering::SeqCst),
        "work must not restart while the intruder holds the lease"
    );

    stop_tx.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(15), task)
        .await
        .expect("shutdown in time")
        .unwrap()
        .unwrap();
    assert_eq!(
        holder(&leases).await.as_deref(),
        Some("intruder"),
        "a non-holder does not release another's lease"
    );
}
