//! The autoscaler's history lives in `DbPoolPolicy.status` so that it survives an operator
//! restart. Against a real kube-apiserver: a full history (10 minutes of raw samples, 3 hours
//! of minutes, 31 days of daily buckets, built with injected time) is written through the
//! status subresource, survives the structural schema (unknown fields would be pruned) and
//! reads back into the same history; the object stays small.

use jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams, PostParams};
use poolwarden_crds::DbPoolPolicy;
use poolwarden_crds::conditions::reasons;
use poolwarden_operator::autoscale::{self, Decision, History, Sample, Sizing};
use poolwarden_tests::kube_env;

const POLICY: &str = r#"
apiVersion: poolwarden.dev/v1alpha1
kind: DbPoolPolicy
metadata: {name: clinical-backend}
spec:
  databases:
    - {name: clinical, host: db.clinical.svc, credentialsSecretRef: {name: clinical-db}}
  autoscaling: {enabled: true}
"#;

#[tokio::test]
async fn autoscaling_history_survives_the_apiserver() {
    let client = kube_env::client().await;
    kube_env::install_crd(&client).await;
    let ns = kube_env::namespace(&client, "autoscale").await;
    let api: Api<DbPoolPolicy> = Api::namespaced(client.clone(), &ns);
    let policy: DbPoolPolicy = serde_yaml_ng::from_str(POLICY).unwrap();
    api.create(&PostParams::default(), &policy).await.unwrap();

    // 31 days of a sample every 15 s, ending now-ish (injected, fixed).
    let end = Timestamp::from_second(1_796_083_200).unwrap(); // 2026-12-01T00:00:00Z
    let mut h = History::new();
    let start = end.as_second() - 31 * 86_400;
    let mut x = start;
    while x <= end.as_second() {
        let hour = (x / 3600) % 24;
        let u = if (8..10).contains(&hour) { 0.75 } else { 0.4 };
        h.add(
            Sample {
                time: Timestamp::from_second(x).unwrap(),
                utilization: u,
                demand: 12,
            },
            30,
        );
        x += 15;
    }
    let decision = Decision {
        sizing: Sizing {
            pool_size: 25,
            max_overflow: 13,
        },
        reason: reasons::MONTHLY_REVIEW,
        message: String::new(),
        changed: true,
        budget_limited: false,
        over_budget: false,
        at_max: false,
        at_min: false,
        held: false,
        reviewed: true,
        budget_unknown: false,
    };
    let mut status = policy.status.clone().unwrap_or_default();
    status.pool_size = Some(20);
    let entry = autoscale::record(&mut status, &decision, &h, None, 30, end).unwrap();
    assert_eq!((entry.from_pool_size, entry.to_pool_size), (20, 25));

    let patch = serde_json::json!({ "status": status });
    api.patch_status(
        "clinical-backend",
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await
    .unwrap();

    let read = api.get_status("clinical-backend").await.unwrap();
    let back = read.status.unwrap();
    assert_eq!(back.recent_utilization, status.recent_utilization);
    assert_eq!(back.minute_utilization, status.minute_utilization);
    assert_eq!(back.daily_utilization, status.daily_utilization);
    assert_eq!(back.last_review_time, status.last_review_time);
    assert_eq!(back.history, status.history);
    assert_eq!(back.daily_utilization.len(), 31);
    assert_eq!(back.minute_utilization.len(), 180);

    // After a restart the operator rebuilds the same history from what it reads.
    let restored = History::from_status(&back);
    assert_eq!(restored.recent().len(), h.recent().len());
    assert_eq!(restored.minutes().len(), h.minutes().len());
    assert_eq!(restored.days().len(), h.days().len());
    let a = restored.review_average(30, end).unwrap();
    let b = h.review_average(30, end).unwrap();
    assert!((a - b).abs() < 1e-5, "{a} vs {b}");

    // Well under etcd's 1.5 MiB object limit.
    let size = serde_json::to_vec(&back).unwrap().len();
    assert!(size < 40_000, "status is {size} bytes");
}
