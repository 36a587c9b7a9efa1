//! The CRD types against CONTRACT §3: the example round-trips, defaults are the hazard log's,
//! the schema carries ranges and enums, and the committed YAML has not drifted.

use kube::CustomResourceExt;
use poolwarden_crds::*;

const CONTRACT_EXAMPLE: &str = r#"
apiVersion: poolwarden.dev/v1alpha1
kind: DbPoolPolicy
metadata: {name: clinical-backend, namespace: clinical}
spec:
  databases:
    - name: clinical
      host: db.clinical.svc
      port: 5432
      dbname: clinical
      credentialsSecretRef: {name: clinical-db, usernameKey: username, passwordKey: password}
      sslMode: require
  pool:
    mode: transaction
    poolSize: 20
    maxOverflow: 10
    poolTimeoutSeconds: 30
    poolRecycleSeconds: 3600
    prePing: true
    statementTimeoutSeconds: 30
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
status:
  observedGeneration: 3
  poolSize: 25
  maxOverflow: 13
  pods: {matched: 4, reporting: 4}
  utilization: {current: 0.62, avg5m: 0.58, avg1h: 0.51, avg30d: 0.44}
  connectionBudget: {maxConnections: 200, reserved: 10, perPodLimit: 47}
  lastScaleTime: "2026-11-28T10:02:00Z"
  history: [{time: "2026-11-28T10:02:00Z", fromPoolSize: 20, toPoolSize: 25, reason: "SustainedHighUtilization"}]
  conditions:
    - {type: Ready, status: "True", lastTransitionTime: "2026-11-28T10:00:00Z", reason: Reconciled, message: ""}
"#;

#[test]
fn contract_example_round_trips() {
    let policy: DbPoolPolicy = serde_yaml_ng::from_str(CONTRACT_EXAMPLE).unwrap();
    assert_eq!(policy.spec.databases[0].ssl_mode, SslMode::Require);
    assert_eq!(policy.spec.pool.mode, PoolMode::Transaction);
    assert_eq!(policy.spec.autoscaling.concurrent_users, Some(40));
    assert_eq!(
        policy
            .spec
            .autoscaling
            .connection_budget
            .reserved_connections,
        10
    );
    let status = policy.status.as_ref().unwrap();
    assert_eq!(status.pool_size, Some(25));
    assert_eq!(status.connection_budget.as_ref().unwrap().per_pod_limit, 47);
    assert_eq!(
        status.history[0].reason,
        conditions::reasons::SUSTAINED_HIGH_UTILIZATION
    );

    let json = serde_json::to_value(&policy).unwrap();
    let again: DbPoolPolicy = serde_json::from_value(json.clone()).unwrap();
    assert_eq!(again.spec, policy.spec);
    assert_eq!(again.status, policy.status);
    assert_eq!(
        json["spec"]["databases"][0]["credentialsSecretRef"]["passwordKey"],
        "password"
    );
    assert_eq!(json["status"]["utilization"]["avg5m"], 0.58);
}

#[test]
fn defaults_are_the_hazard_logs_production_values() {
    let spec: DbPoolPolicySpec = serde_yaml_ng::from_str(
        "databases: [{name: clinical, host: db, credentialsSecretRef: {name: s}}]",
    )
    .unwrap();
    let p = &spec.pool;
    assert_eq!((p.pool_size, p.max_overflow), (20, 10));
    assert_eq!((p.pool_timeout_seconds, p.pool_recycle_seconds), (30, 3600));
    assert!(p.pre_ping);
    assert_eq!(p.statement_timeout_seconds, 30);
    assert_eq!(p.mode, PoolMode::Transaction);
    assert_eq!(
        (spec.breaker.failure_threshold, spec.breaker.open_seconds),
        (5, 30)
    );
    assert_eq!(
        spec.breaker.message,
        "Database temporarily unavailable. Please try again shortly."
    );
    let a = &spec.autoscaling;
    assert!(!a.enabled);
    assert_eq!(
        (a.scale_up.utilization_above, a.scale_up.sustained_seconds),
        (0.8, 60)
    );
    assert_eq!(
        (
            a.review.utilization_above,
            a.review.window_days,
            a.review.step
        ),
        (0.6, 30, 5)
    );
    assert_eq!(a.scale_down.utilization_below, 0.3);
    assert_eq!(
        (
            spec.alerting.warning.utilization_above,
            spec.alerting.warning.for_seconds
        ),
        (0.8, 300)
    );
    assert_eq!(
        (
            spec.alerting.critical.utilization_above,
            spec.alerting.critical.for_seconds
        ),
        (0.9, 120)
    );
    let db = &spec.databases[0];
    assert_eq!(
        (db.port, db.server_dbname(), db.ssl_mode),
        (5432, "clinical", SslMode::Prefer)
    );
    assert_eq!(db.credentials_secret_ref.username_key, "username");
    assert_eq!(
        (spec.sidecar.listen_port, spec.sidecar.admin_port),
        (6432, 9930)
    );
}

#[test]
fn schema_carries_names_ranges_enums_and_columns() {
    let crd = DbPoolPolicy::crd();
    assert_eq!(
        crd.metadata.name.as_deref(),
        Some("dbpoolpolicies.poolwarden.dev")
    );
    assert_eq!(crd.spec.scope, "Namespaced");
    assert_eq!(crd.spec.names.short_names, Some(vec!["dbpp".to_string()]));
    assert_eq!(
        crd.spec.names.categories,
        Some(vec!["poolwarden".to_string()])
    );
    assert_eq!(crd.spec.names.singular.as_deref(), Some("dbpoolpolicy"));
    let version = &crd.spec.versions[0];
    assert_eq!(version.name, "v1alpha1");
    assert!(version.subresources.as_ref().unwrap().status.is_some());
    let columns: Vec<_> = version
        .additional_printer_columns
        .as_ref()
        .unwrap()
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(
        columns,
        ["POOL", "OVERFLOW", "UTIL", "PODS", "READY", "AGE"]
    );

    let schema = serde_json::to_value(version.schema.as_ref().unwrap()).unwrap();
    let spec = &schema["openAPIV3Schema"]["properties"]["spec"]["properties"];
    let pool = &spec["pool"]["properties"];
    assert_eq!(pool["poolSize"]["minimum"], 1.0);
    assert_eq!(pool["poolSize"]["maximum"], 1000.0);
    assert_eq!(
        pool["mode"]["enum"],
        serde_json::json!(["transaction", "session"])
    );
    let ssl = &spec["databases"]["items"]["properties"]["sslMode"]["enum"];
    assert_eq!(
        *ssl,
        serde_json::json!(["disable", "prefer", "require", "verify-ca", "verify-full"])
    );
    let up = &spec["autoscaling"]["properties"]["scaleUp"]["properties"]["utilizationAbove"];
    assert_eq!(
        (up["minimum"].as_f64(), up["maximum"].as_f64()),
        (Some(0.0), Some(1.0))
    );
}

#[test]
fn every_field_is_documented() {
    fn walk(path: &str, v: &serde_json::Value, missing: &mut Vec<String>) {
        if let Some(props) = v.get("properties").and_then(|p| p.as_object()) {
            for (name, sub) in props {
                let p = format!("{path}.{name}");
                if name != "metadata"
                    && name != "apiVersion"
                    && name != "kind"
                    && sub.get("description").is_none()
                {
                    missing.push(p.clone());
                }
                walk(&p, sub, missing);
            }
        }
        if let Some(items) = v.get("items") {
            walk(&format!("{path}[]"), items, missing);
        }
    }
    let crd = DbPoolPolicy::crd();
    let schema = serde_json::to_value(crd.spec.versions[0].schema.as_ref().unwrap()).unwrap();
    let mut missing = Vec::new();
    walk("", &schema["openAPIV3Schema"], &mut missing);
    assert!(
        missing.is_empty(),
        "fields without a description: {missing:?}"
    );
}

#[test]
fn committed_crd_yaml_matches_the_types() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/dbpoolpolicies.poolwarden.dev.yaml"
    );
    let committed = std::fs::read_to_string(path).unwrap_or_default();
    let generated = crd_yaml();
    assert!(
        committed == generated,
        "{CRD_FILE} drifted from the Rust types; regenerate it with \
         `cargo run -p poolwarden-operator -- crd > {CRD_FILE}`"
    );
}
