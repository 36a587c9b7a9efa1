//! Real sidecar processes standing in for pods (the test control plane has no kubelet):
//! each listens on its own loopback IP (127.0.0.2, 127.0.0.3, ...) with the operator-rendered
//! `poolwarden.yaml`, and a Pod object in the apiserver carries that IP as its `podIP`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret};
use kube::Client;
use kube::api::{Api, Patch, PatchParams, PostParams};

use crate::operator::wait_for;

/// What the kubelet would mount for a pod of `policy`: the operator-rendered
/// `poolwarden.yaml` with its mount paths pointed into `dir` (the admin Secret's tokens file,
/// the password file of database `database`). Returns the config path and the admin token.
pub async fn rendered_config(
    client: &Client,
    namespace: &str,
    policy: &str,
    database: &str,
    dir: &Path,
) -> (PathBuf, String) {
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    let cm_name = format!("{policy}-poolwarden");
    let yaml = wait_for(
        "the rendered ConfigMap",
        Duration::from_secs(30),
        || async {
            cms.get_opt(&cm_name)
                .await
                .unwrap()?
                .data?
                .get("poolwarden.yaml")
                .cloned()
        },
    )
    .await;
    let data = Api::<Secret>::namespaced(client.clone(), namespace)
        .get(&format!("{policy}-poolwarden-admin"))
        .await
        .unwrap()
        .data
        .unwrap();
    let token = String::from_utf8(data["token"].0.clone()).unwrap();
    std::fs::write(dir.join("tokens"), &data["tokens"].0).unwrap();
    std::fs::write(dir.join("password"), "unused-with-trust").unwrap();
    let yaml = yaml
        .replace(
            "/var/run/poolwarden/admin/tokens",
            dir.join("tokens").to_str().unwrap(),
        )
        .replace(
            &format!("/var/run/poolwarden/db/{database}/password"),
            dir.join("password").to_str().unwrap(),
        );
    let config = dir.join("poolwarden.yaml");
    std::fs::write(&config, yaml).unwrap();
    (config, token)
}

pub fn binary(name: &str) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let path = target.join("debug").join(name);
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --workspace --bins` first",
        path.display()
    );
    path
}

/// A port free on both 127.0.0.2 and 127.0.0.3 (checked by binding, then released).
pub fn free_port_pair() -> u16 {
    for _ in 0..50 {
        let a = std::net::TcpListener::bind("127.0.0.2:0").unwrap();
        let port = a.local_addr().unwrap().port();
        if std::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 3], port))).is_ok() {
            return port;
        }
    }
    panic!("no port free on both 127.0.0.2 and 127.0.0.3");
}

pub struct Sidecar {
    child: Child,
    log: PathBuf,
    /// The admin API address.
    pub admin: SocketAddr,
}

impl Sidecar {
    pub fn start(dir: &Path, ip: &str, config: &Path, listen_port: u16, admin_port: u16) -> Self {
        let log = dir.join(format!("sidecar-{ip}.log"));
        let file = std::fs::File::create(&log).unwrap();
        let child = Command::new(binary("poolwarden-sidecar"))
            .args(["--config", config.to_str().unwrap()])
            // A pod has its own network namespace; here the two stand-ins differ by loopback IP.
            .env("POOLWARDEN_LISTEN", format!("{ip}:{listen_port}"))
            .env("POOLWARDEN_ADMIN_LISTEN", format!("{ip}:{admin_port}"))
            .env("POOLWARDEN_DB_PASSWORD", "unused-with-trust")
            .env("NO_COLOR", "1")
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .stdin(Stdio::null())
            .spawn()
            .expect("start poolwarden-sidecar");
        Self {
            child,
            log,
            admin: format!("{ip}:{admin_port}").parse().unwrap(),
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub async fn pool_settings(
    http: &reqwest::Client,
    admin: SocketAddr,
    token: &str,
) -> Option<(u64, u64)> {
    let resp = http
        .get(format!("http://{admin}/api/pool"))
        .bearer_auth(token)
        .send()
        .await
        .ok()?;
    if !resp.status().is_success() {
        return None;
    }
    let body: serde_json::Value = resp.json().await.ok()?;
    let pool = &body["pools"][0];
    Some((pool["pool_size"].as_u64()?, pool["max_overflow"].as_u64()?))
}

pub async fn create_ready_pod(pods: &Api<Pod>, policy: &str, name: &str, ip: &str) {
    let pod: Pod = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": {"poolwarden.dev/policy": policy}},
        "spec": {"containers": [{"name": "app", "image": "app:1"}]}
    }))
    .unwrap();
    pods.create(&PostParams::default(), &pod).await.unwrap();
    let status = serde_json::json!({"status": {"phase": "Running", "podIP": ip,
        "conditions": [{"type": "Ready", "status": "True"}]}});
    pods.patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .unwrap();
}
