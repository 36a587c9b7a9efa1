//! The DbPoolPolicy CRD against a real kube-apiserver: server-side apply, Established, the
//! CONTRACT example, printer columns, and schema validation with 422s that name the field.

use std::process::Command;

use kube::api::{Api, PostParams};
use poolwarden_crds::DbPoolPolicy;
use poolwarden_tests::kube_env;

const EXAMPLE: &str = r#"
apiVersion: poolwarden.dev/v1alpha1
kind: DbPoolPolicy
metadata: {name: clinical-backend}
spec:
  databases:
    - name: clinical
      host: db.clinical.svc
      port: 5432
      dbname: clinical
      credentialsSecretRef: {name: clinical-db, usernameKey: username, passwordKey: password}
      sslMode: require
  pool: {mode: transaction, poolSize: 20, maxOverflow: 10, poolTimeoutSeconds: 30, poolRecycleSeconds: 3600, prePing: true, statementTimeoutSeconds: 30}
  breaker: {failureThreshold: 5, openSeconds: 30}
  autoscaling:
    enabled: true
    concurrentUsers: 40
    minPoolSize: 5
    maxPoolSize: 100
    scaleUp:   {utilizationAbove: 0.8, sustainedSeconds: 60}
    review:    {utilizationAbove: 0.6, windowDays: 30, step: 5}
    scaleDown: {utilizationBelow: 0.3, stabilizationSeconds: 3600, step: 5}
    connectionBudget: {reservedConnections: 10}
  alerting:
    warning:  {utilizationAbove: 0.8, forSeconds: 300}
    critical: {utilizationAbove: 0.9, forSeconds: 120}
  sidecar: {image: poolwarden-sidecar:0.1.0, listenPort: 6432, adminPort: 9930}
"#;

fn example() -> DbPoolPolicy {
    serde_yaml_ng::from_str(EXAMPLE).unwrap()
}

#[tokio::test]
async fn crd_installs_and_serves_the_contract_example() {
    let client = kube_env::client().await;
    kube_env::install_crd(&client).await;
    let ns = kube_env::namespace(&client, "crd").await;
    let api: Api<DbPoolPolicy> = Api::namespaced(client.clone(), &ns);

    let created = api
        .create(&PostParams::default(), &example())
        .await
        .unwrap();
    let read = api.get("clinical-backend").await.unwrap();
    assert_eq!(read.spec, example().spec);
    assert_eq!(created.metadata.uid, read.metadata.uid);

    // kubectl sees the short name, the category and the printer columns.
    let out = Command::new("kubectl")
        .args(["get", "dbpp", "-n", &ns])
        .env("KUBECONFIG", kube_env::kubeconfig_path())
        .output()
        .expect("run kubectl");
    assert!(
        out.status.success(),
        "kubectl failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let header: Vec<&str> = text.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        ["NAME", "POOL", "OVERFLOW", "UTIL", "PODS", "READY", "AGE"]
    );
    assert!(text.contains("clinical-backend"), "{text}");

    let out = Command::new("kubectl")
        .args(["get", "poolwarden", "-n", &ns, "-o", "name"])
        .env("KUBECONFIG", kube_env::kubeconfig_path())
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "dbpoolpolicy.poolwarden.dev/clinical-backend"
    );
}

#[tokio::test]
async fn defaults_are_applied_by_the_apiserver() {
    let client = kube_env::client().await;
    kube_env::install_crd(&client).await;
    let ns = kube_env::namespace(&client, "crd-defaults").await;
    let api: Api<DbPoolPolicy> = Api::namespaced(client, &ns);
    let minimal: DbPoolPolicy = serde_json::from_value(serde_json::json!({
        "apiVersion": "poolwarden.dev/v1alpha1", "kind": "DbPoolPolicy",
        "metadata": {"name": "minimal"},
        "spec": {"databases": [{"name": "clinical", "host": "db", "credentialsSecretRef": {"name": "s"}}]}
    }))
    .unwrap();
    api.create(&PostParams::default(), &minimal).await.unwrap();
    let raw: serde_json::Value = serde_json::to_value(api.get("minimal").await.unwrap()).unwrap();
    assert_eq!(raw["spec"]["pool"]["poolSize"], 20);
    assert_eq!(raw["spec"]["pool"]["maxOverflow"], 10);
}

#[tokio::test]
async fn invalid_specs_are_refused_with_a_422_naming_the_field() {
    let client = kube_env::client().await;
    kube_env::install_crd(&client).await;
    let ns = kube_env::namespace(&client, "crd-invalid").await;
    let api: Api<kube::api::DynamicObject> = Api::namespaced_with(
        client,
        &ns,
        &kube::api::ApiResource::erase::<DbPoolPolicy>(&()),
    );
    let cases = [
        (
            "/spec/pool/poolSize",
            serde_json::json!(0),
            "spec.pool.poolSize",
        ),
        (
            "/spec/pool/mode",
            serde_json::json!("bogus"),
            "spec.pool.mode",
        ),
        (
            "/spec/autoscaling/scaleUp/utilizationAbove",
            serde_json::json!(1.5),
            "spec.autoscaling.scaleUp.utilizationAbove",
        ),
        (
            "/spec/databases/0/sslMode",
            serde_json::json!("sometimes"),
            // v1.20 drops list indexes from the path; newer apiservers keep them.
            "spec.databases",
        ),
    ];
    for (i, (pointer, bad, field)) in cases.into_iter().enumerate() {
        let mut obj: serde_json::Value = serde_yaml_ng::from_str(EXAMPLE).unwrap();
        obj["metadata"]["name"] = format!("bad-{i}").into();
        *obj.pointer_mut(pointer).unwrap() = bad;
        let obj: kube::api::DynamicObject = serde_json::from_value(obj).unwrap();
        let err = api.create(&PostParams::default(), &obj).await.unwrap_err();
        match err {
            kube::Error::Api(status) => {
                assert_eq!(status.code, 422, "{status:?}");
                assert!(
                    status.message.contains(field)
                        && status.message.contains(pointer.rsplit('/').next().unwrap()),
                    "{field} not named in {:?}",
                    status.message
                );
            }
            other => panic!("expected a 422 for {field}, got {other:?}"),
        }
    }
}
