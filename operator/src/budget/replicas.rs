//! Reading the replica counts the budget is divided by: the target workload's
//! `spec.replicas` and the `maxReplicas` of any HorizontalPodAutoscaler that targets it.
//! Combine them with [`super::budget_replicas`].

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::autoscaling::v1::HorizontalPodAutoscaler;
use kube::api::{Api, ListParams};
use kube::{Client, ResourceExt};
use poolwarden_crds::{TargetRef, WorkloadKind};

/// What the cluster says about the target workload.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TargetReplicas {
    /// The workload's `spec.replicas` (Kubernetes' default 1 when unset); `None` when the
    /// workload does not exist.
    pub workload: Option<u32>,
    /// The largest `maxReplicas` among HorizontalPodAutoscalers targeting the workload.
    pub hpa_max: Option<u32>,
}

/// Reads the workload named by `target` in `namespace` and the HPAs that target it
/// (`autoscaling/v1`, served by every supported Kubernetes version). A missing workload is
/// not an error: the budget then falls back to the matched pods.
pub async fn target_replicas(
    client: &Client,
    namespace: &str,
    target: &TargetRef,
) -> Result<TargetReplicas, kube::Error> {
    let workload = match target.kind {
        WorkloadKind::Deployment => Api::<Deployment>::namespaced(client.clone(), namespace)
            .get_opt(&target.name)
            .await?
            .map(|d| d.spec.and_then(|s| s.replicas).unwrap_or(1)),
        WorkloadKind::StatefulSet => Api::<StatefulSet>::namespaced(client.clone(), namespace)
            .get_opt(&target.name)
            .await?
            .map(|s| s.spec.and_then(|s| s.replicas).unwrap_or(1)),
    };
    let kind = match target.kind {
        WorkloadKind::Deployment => "Deployment",
        WorkloadKind::StatefulSet => "StatefulSet",
    };
    let hpas = Api::<HorizontalPodAutoscaler>::namespaced(client.clone(), namespace)
        .list(&ListParams::default())
        .await?;
    let hpa_max = hpas
        .items
        .iter()
        .filter(|h| {
            h.spec.as_ref().is_some_and(|s| {
                s.scale_target_ref.kind == kind && s.scale_target_ref.name == target.name
            })
        })
        .inspect(|h| tracing::debug!(hpa = %h.name_any(), "HPA targets the workload"))
        .filter_map(|h| h.spec.as_ref().map(|s| s.max_replicas))
        .max();
    let to_u32 = |v: i32| u32::try_from(v).unwrap_or(0);
    Ok(TargetReplicas {
        workload: workload.map(to_u32),
        hpa_max: hpa_max.map(to_u32),
    })
}
