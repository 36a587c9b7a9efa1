//! The Kubernetes test control plane (etcd + kube-apiserver + kube-controller-manager v1.20,
//! started by `scripts/kube-testenv`). `scripts/test` starts one and exports its kubeconfig as
//! `POOLWARDEN_TEST_KUBECONFIG`; tests share it and each works in a namespace of its own.

use std::path::PathBuf;
use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config, CustomResourceExt};

/// The environment variable naming the test control plane's kubeconfig.
pub const KUBECONFIG_VAR: &str = "POOLWARDEN_TEST_KUBECONFIG";

/// Path of the test control plane's kubeconfig. Panics with instructions when it is not set:
/// these tests never skip silently.
pub fn kubeconfig_path() -> PathBuf {
    match std::env::var_os(KUBECONFIG_VAR) {
        Some(p) => PathBuf::from(p),
        None => panic!(
            "{KUBECONFIG_VAR} is not set: run the tests with scripts/test, which starts the \
             Kubernetes test control plane (scripts/kube-testenv start DIR prints a kubeconfig)"
        ),
    }
}

/// A client for the test control plane.
pub async fn client() -> Client {
    let path = kubeconfig_path();
    let kubeconfig = Kubeconfig::read_from(&path).expect("read the test kubeconfig");
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("load the test kubeconfig");
    Client::try_from(config).expect("build a kube client")
}

/// Create a fresh namespace named `<prefix>-<random>` and return its name.
pub async fn namespace(client: &Client, prefix: &str) -> String {
    let name = format!("{prefix}-{:08x}", rand_u32());
    let ns: Namespace = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}
    }))
    .unwrap();
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .unwrap();
    name
}

/// Install (server-side apply) the DbPoolPolicy CRD and wait until it is Established.
pub async fn install_crd(client: &Client) {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let crd = poolwarden_crds::DbPoolPolicy::crd();
    let name = crd.metadata.name.clone().unwrap();
    crds.patch(
        &name,
        &PatchParams::apply("poolwarden-tests").force(),
        &Patch::Apply(&crd),
    )
    .await
    .expect("apply the CRD");
    for _ in 0..100 {
        let got = crds.get(&name).await.unwrap();
        let established = got
            .status
            .and_then(|s| s.conditions)
            .unwrap_or_default()
            .iter()
            .any(|c| c.type_ == "Established" && c.status == "True");
        if established {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("CRD {name} not Established after 10 s");
}

fn rand_u32() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos(),
    );
    h.finish() as u32
}
