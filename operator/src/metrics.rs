//! The operator's own Prometheus metrics, served on `--metrics-listen` at `/metrics`.

use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, Opts, Registry, TextEncoder,
};

use crate::autoscale::metrics::AutoscaleMetrics;

/// The failure labels `controller::Error::metric_label` returns.
pub const FAILURE_LABELS: [&str; 4] = ["api", "conflict", "kube", "object"];

/// Every metric the operator exports: its own reconcile metrics and the autoscaler's
/// per-policy families (scale decisions by reason, pool size, budget), one registry.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    /// Reconciles run (successful or not).
    pub reconciles: IntCounter,
    /// Failed reconciles, by a short error label (see `Error::metric_label`).
    pub failures: IntCounterVec,
    /// Reconcile duration.
    pub reconcile_duration: Histogram,
    /// Per-policy families: scale decisions by reason, pool size, max overflow, budget.
    pub autoscale: AutoscaleMetrics,
}

impl Default for Metrics {
    fn default() -> Self {
        let registry = Registry::new();
        let reconciles = IntCounter::new(
            "poolwarden_operator_reconciles_total",
            "DbPoolPolicy reconciles run",
        )
        .unwrap();
        let failures = IntCounterVec::new(
            Opts::new(
                "poolwarden_operator_reconcile_failures_total",
                "Failed reconciles by reason",
            ),
            &["reason"],
        )
        .unwrap();
        let reconcile_duration = Histogram::with_opts(
            HistogramOpts::new(
                "poolwarden_operator_reconcile_duration_seconds",
                "Duration of one reconcile",
            )
            .buckets(vec![0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]),
        )
        .unwrap();
        // Export every known label at 0, so rates and alerts work before the first event.
        for reason in FAILURE_LABELS {
            failures.with_label_values(&[reason]);
        }
        let autoscale = AutoscaleMetrics::new().expect("static metric definitions are valid");
        registry.register(Box::new(reconciles.clone())).unwrap();
        registry.register(Box::new(failures.clone())).unwrap();
        registry
            .register(Box::new(reconcile_duration.clone()))
            .unwrap();
        autoscale
            .register(&registry)
            .expect("autoscale metric names are unique");
        Self {
            registry,
            reconciles,
            failures,
            reconcile_duration,
            autoscale,
        }
    }
}

impl Metrics {
    /// The text exposition format 0.0.4.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buf)
            .expect("text encoding never fails");
        String::from_utf8(buf).expect("prometheus text is UTF-8")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_metric_is_exported_with_its_labels() {
        let m = Metrics::default();
        m.reconciles.inc();
        m.failures.with_label_values(&["kube"]).inc();
        m.reconcile_duration.observe(0.2);
        m.autoscale
            .scale_decisions
            .with_label_values(&["clinical", "backend", "SpecChanged"])
            .inc();
        let text = m.render();
        for want in [
            "poolwarden_operator_reconciles_total 1",
            "poolwarden_operator_reconcile_failures_total{reason=\"kube\"} 1",
            "poolwarden_operator_reconcile_duration_seconds_count 1",
            "poolwarden_operator_scale_decisions_total{namespace=\"clinical\",policy=\"backend\",reason=\"SpecChanged\"} 1",
            "poolwarden_operator_reconcile_failures_total{reason=\"conflict\"} 0",
        ] {
            assert!(text.contains(want), "{want} missing in\n{text}");
        }
    }
}
