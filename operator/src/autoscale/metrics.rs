//! The operator's autoscaling metrics (CONTRACT §4: scale decisions by reason, current size
//! and budget per policy). The lead's metrics endpoint registers them in its registry.
//!
//! | name | type | labels |
//! |---|---|---|
//! | `poolwarden_operator_scale_decisions_total` | counter | namespace, policy, reason |
//! | `poolwarden_operator_pool_size` | gauge | namespace, policy |
//! | `poolwarden_operator_max_overflow` | gauge | namespace, policy |
//! | `poolwarden_operator_budget_per_pod_limit` | gauge | namespace, policy |
//! | `poolwarden_operator_budget_limited` | gauge (0/1) | namespace, policy |
//! | `poolwarden_operator_pool_utilization_ratio` | gauge | namespace, policy |
//! | `poolwarden_operator_pods_unreachable` | gauge | namespace, policy |
//! | `poolwarden_operator_at_max_pool_size` | gauge (0/1) | namespace, policy |
//!
//! A scale decision is counted when it changes the size (one per Event), by its reason.

use prometheus::{GaugeVec, IntCounterVec, IntGaugeVec, Opts, Registry};

use super::decide::Decision;

/// The autoscaler's metric families.
#[derive(Clone, Debug)]
pub struct AutoscaleMetrics {
    /// Size changes by reason.
    pub scale_decisions: IntCounterVec,
    /// Current pool_size.
    pub pool_size: IntGaugeVec,
    /// Current max_overflow.
    pub max_overflow: IntGaugeVec,
    /// Per-pod budget (poolSize + maxOverflow per pool).
    pub budget_per_pod: IntGaugeVec,
    /// 1 while the budget binds.
    pub budget_limited: IntGaugeVec,
    /// The busiest pool's utilization at the last scrape.
    pub utilization: GaugeVec,
    /// Matched pods that could not be scraped.
    pub pods_unreachable: IntGaugeVec,
    /// 1 while the pool cannot grow by itself: at maxPoolSize, or autoscaling disabled.
    pub at_max_pool_size: IntGaugeVec,
}

const POLICY: [&str; 2] = ["namespace", "policy"];

/// Every reason a pool size changes for; each policy exports all of them from its first
/// reconcile (at 0), so rates and alerts work before the first change.
pub const SCALE_REASONS: [&str; 6] = [
    poolwarden_crds::conditions::reasons::INITIAL_SIZING,
    poolwarden_crds::conditions::reasons::SPEC_CHANGED,
    poolwarden_crds::conditions::reasons::SUSTAINED_HIGH_UTILIZATION,
    poolwarden_crds::conditions::reasons::MONTHLY_REVIEW,
    poolwarden_crds::conditions::reasons::SUSTAINED_LOW_UTILIZATION,
    poolwarden_crds::conditions::reasons::BUDGET_EXCEEDED,
];

impl AutoscaleMetrics {
    /// Creates the families (not registered yet).
    pub fn new() -> Result<Self, prometheus::Error> {
        let gauge = |name: &str, help: &str| IntGaugeVec::new(Opts::new(name, help), &POLICY);
        Ok(Self {
            scale_decisions: IntCounterVec::new(
                Opts::new(
                    "poolwarden_operator_scale_decisions_total",
                    "Pool size changes decided by the autoscaler, by reason",
                ),
                &["namespace", "policy", "reason"],
            )?,
            pool_size: gauge(
                "poolwarden_operator_pool_size",
                "Current pool_size per sidecar",
            )?,
            max_overflow: gauge(
                "poolwarden_operator_max_overflow",
                "Current max_overflow per sidecar",
            )?,
            budget_per_pod: gauge(
                "poolwarden_operator_budget_per_pod_limit",
                "Largest pool_size + max_overflow each pod pool may have",
            )?,
            budget_limited: gauge(
                "poolwarden_operator_budget_limited",
                "1 while the database connection budget limits the pool",
            )?,
            utilization: GaugeVec::new(
                Opts::new(
                    "poolwarden_operator_pool_utilization_ratio",
                    "Busiest pool's checked_out / pool_size at the last scrape",
                ),
                &POLICY,
            )?,
            pods_unreachable: gauge(
                "poolwarden_operator_pods_unreachable",
                "Matched pods whose sidecar could not be scraped",
            )?,
            at_max_pool_size: gauge(
                "poolwarden_operator_at_max_pool_size",
                "1 while the pool cannot grow by itself (at maxPoolSize, or autoscaling disabled)",
            )?,
        })
    }

    /// Registers every family in `registry`.
    pub fn register(&self, registry: &Registry) -> Result<(), prometheus::Error> {
        registry.register(Box::new(self.scale_decisions.clone()))?;
        registry.register(Box::new(self.pool_size.clone()))?;
        registry.register(Box::new(self.max_overflow.clone()))?;
        registry.register(Box::new(self.budget_per_pod.clone()))?;
        registry.register(Box::new(self.budget_limited.clone()))?;
        registry.register(Box::new(self.utilization.clone()))?;
        registry.register(Box::new(self.pods_unreachable.clone()))?;
        registry.register(Box::new(self.at_max_pool_size.clone()))?;
        Ok(())
    }

    /// Records one pass: the decision, the per-pod budget (if known), the busiest pool's
    /// utilization (if any pod reported) and the unreachable pod count.
    pub fn observe(
        &self,
        namespace: &str,
        policy: &str,
        decision: &Decision,
        per_pod_limit: Option<u32>,
        utilization: Option<f64>,
        pods_unreachable: u32,
    ) {
        let l = [namespace, policy];
        self.touch_reasons(namespace, policy);
        if decision.changed {
            self.scale_decisions
                .with_label_values(&[namespace, policy, decision.reason])
                .inc();
        }
        self.pool_size
            .with_label_values(&l)
            .set(i64::from(decision.sizing.pool_size));
        self.max_overflow
            .with_label_values(&l)
            .set(i64::from(decision.sizing.max_overflow));
        self.budget_limited
            .with_label_values(&l)
            .set(i64::from(decision.budget_limited));
        match per_pod_limit {
            Some(b) => self.budget_per_pod.with_label_values(&l).set(i64::from(b)),
            None => {
                let _ = self.budget_per_pod.remove_label_values(&l);
            }
        }
        match utilization {
            Some(u) => self.utilization.with_label_values(&l).set(u),
            None => {
                let _ = self.utilization.remove_label_values(&l);
            }
        }
        self.pods_unreachable
            .with_label_values(&l)
            .set(i64::from(pods_unreachable));
        self.at_max_pool_size
            .with_label_values(&l)
            .set(i64::from(decision.at_max));
    }

    /// Records a policy whose size is set by hand (autoscaling disabled): it cannot grow by
    /// itself, so `at_max_pool_size` is 1 and the high-utilization warning can fire.
    pub fn observe_fixed(&self, namespace: &str, policy: &str, pool_size: u32, max_overflow: u32) {
        let l = [namespace, policy];
        self.touch_reasons(namespace, policy);
        self.pool_size
            .with_label_values(&l)
            .set(i64::from(pool_size));
        self.max_overflow
            .with_label_values(&l)
            .set(i64::from(max_overflow));
        self.budget_limited.with_label_values(&l).set(0);
        self.at_max_pool_size.with_label_values(&l).set(1);
    }

    fn touch_reasons(&self, namespace: &str, policy: &str) {
        for reason in SCALE_REASONS {
            self.scale_decisions
                .with_label_values(&[namespace, policy, reason]);
        }
    }

    /// Drops every per-policy gauge: a replica that stops reconciling (lost the Lease, or
    /// shutting down) must not keep exporting sizes the new leader may change.
    pub fn clear_gauges(&self) {
        self.pool_size.reset();
        self.max_overflow.reset();
        self.budget_per_pod.reset();
        self.budget_limited.reset();
        self.utilization.reset();
        self.pods_unreachable.reset();
        self.at_max_pool_size.reset();
    }

    /// Drops every series of a deleted policy (the decision counter keeps its history).
    pub fn forget(&self, namespace: &str, policy: &str) {
        let l = [namespace, policy];
        let _ = self.pool_size.remove_label_values(&l);
        let _ = self.max_overflow.remove_label_values(&l);
        let _ = self.budget_per_pod.remove_label_values(&l);
        let _ = self.budget_limited.remove_label_values(&l);
        let _ = self.utilization.remove_label_values(&l);
        let _ = self.pods_unreachable.remove_label_values(&l);
        let _ = self.at_max_pool_size.remove_label_values(&l);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::autoscale::decide::Sizing;
    use prometheus::{Encoder, TextEncoder};

    fn decision(changed: bool, reason: &'static str, pool: u32) -> Decision {
        Decision {
            sizing: Sizing {
                pool_size: pool,
                max_overflow: pool.div_ceil(2),
            },
            reason,
            message: String::new(),
            changed,
            budget_limited: false,
            over_budget: false,
            at_max: false,
            at_min: false,
            held: false,
            reviewed: false,
            budget_unknown: false,
        }
    }

    #[test]
    fn decisions_are_counted_by_reason_and_sizes_exposed() {
        let m = AutoscaleMetrics::new().unwrap();
        let registry = Registry::new();
        m.register(&registry).unwrap();
        m.observe(
            "clinical",
            "backend",
            &decision(true, "SustainedHighUtilization", 30),
            Some(47),
            Some(0.7),
            1,
        );
        m.observe(
            "clinical",
            "backend",
            &decision(false, "Reconciled", 30),
            Some(47),
            None,
            0,
        );
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&registry.gather(), &mut out)
            .unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains(
            "poolwarden_operator_scale_decisions_total{namespace=\"clinical\",policy=\"backend\",reason=\"SustainedHighUtilization\"} 1"
        ), "{text}");
        assert!(!text.contains("reason=\"Reconciled\""), "{text}");
        assert!(text.contains(
            "poolwarden_operator_pool_size{namespace=\"clinical\",policy=\"backend\"} 30"
        ));
        assert!(text.contains(
            "poolwarden_operator_max_overflow{namespace=\"clinical\",policy=\"backend\"} 15"
        ));
        assert!(text.contains(
            "poolwarden_operator_budget_per_pod_limit{namespace=\"clinical\",policy=\"backend\"} 47"
        ));
        assert!(text.contains(
            "poolwarden_operator_pods_unreachable{namespace=\"clinical\",policy=\"backend\"} 0"
        ));
        // No pod reported on the last pass: no stale utilization.
        assert!(
            !text.contains("poolwarden_operator_pool_utilization_ratio{"),
            "{text}"
        );
        m.forget("clinical", "backend");
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&registry.gather(), &mut out)
            .unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(!text.contains("poolwarden_operator_pool_size{"), "{text}");
    }
}
