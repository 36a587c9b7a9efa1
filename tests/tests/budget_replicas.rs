//! The replicas the connection budget is divided by, read from a real kube-apiserver: the
//! target workload's replicas, and an HPA's maxReplicas when one targets it.

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::autoscaling::v1::HorizontalPodAutoscaler;
use kube::api::{Api, PostParams};
use poolwarden_crds::{TargetRef, WorkloadKind};
use poolwarden_operator::budget::budget_replicas;
use poolwarden_operator::budget::replicas::{TargetReplicas, target_replicas};
use poolwarden_tests::kube_env;

fn workload<T: serde::de::DeserializeOwned>(kind: &str, name: &str, replicas: i32) -> T {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "apps/v1", "kind": kind,
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "serviceName": name,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "app", "image": "clinical-backend:1"}]}
            }
        }
    }))
    .unwrap()
}

fn hpa(name: &str, kind: &str, target: &str, max: i32) -> HorizontalPodAutoscaler {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "autoscaling/v1", "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": name},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": kind, "name": target},
            "minReplicas": 2, "maxReplicas": max, "targetCPUUtilizationPercentage": 70
        }
    }))
    .unwrap()
}

#[tokio::test]
async fn replicas_from_workload_and_hpa() {
    let client = kube_env::client().await;
    let ns = kube_env::namespace(&client, "replicas").await;
    let pp = PostParams::default();
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    let statefulsets: Api<StatefulSet> = Api::namespaced(client.clone(), &ns);
    let hpas: Api<HorizontalPodAutoscaler> = Api::namespaced(client.clone(), &ns);
    let target = |kind, name: &str| TargetRef {
        kind,
        name: name.into(),
    };

    // No workload yet: nothing known, the budget falls back to matched pods.
    let web = target(WorkloadKind::Deployment, "web");
    let r = target_replicas(&client, &ns, &web).await.unwrap();
    assert_eq!(r, TargetReplicas::default());
    assert_eq!(budget_replicas(r.workload, r.hpa_max, 2), 2);

    deployments
        .create(&pp, &workload("Deployment", "web", 3))
        .await
        .unwrap();
    let r = target_replicas(&client, &ns, &web).await.unwrap();
    assert_eq!(
        r,
        TargetReplicas {
            workload: Some(3),
            hpa_max: None
        }
    );
    assert_eq!(budget_replicas(r.workload, r.hpa_max, 3), 3);

    // An HPA for another workload, and one of the wrong kind, do not count.
    hpas.create(&pp, &hpa("other", "Deployment", "reports", 50))
        .await
        .unwrap();
    hpas.create(&pp, &hpa("wrong-kind", "StatefulSet", "web", 40))
        .await
        .unwrap();
    let r = target_replicas(&client, &ns, &web).await.unwrap();
    assert_eq!(r.hpa_max, None);

    // The HPA that targets it: its maxReplicas wins.
    hpas.create(&pp, &hpa("web", "Deployment", "web", 10))
        .await
        .unwrap();
    let r = target_replicas(&client, &ns, &web).await.unwrap();
    assert_eq!(
        r,
        TargetReplicas {
            workload: Some(3),
            hpa_max: Some(10)
        }
    );
    assert_eq!(budget_replicas(r.workload, r.hpa_max, 3), 10);

    // StatefulSets too.
    statefulsets
        .create(&pp, &workload("StatefulSet", "web", 2))
        .await
        .unwrap();
    let r = target_replicas(&client, &ns, &target(WorkloadKind::StatefulSet, "web"))
        .await
        .unwrap();
    assert_eq!(
        r,
        TargetReplicas {
            workload: Some(2),
            hpa_max: Some(40)
        }
    );
}
