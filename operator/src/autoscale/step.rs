//! One autoscaling pass of a reconcile, the I/O around the pure engine: scrape the matched
//! pods, add the sample to the history kept in the status, work out the connection budget
//! (spec values, else the database's own, read with sqlx and cached), then [`decide`].

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Pod;
use kube::{Client, ResourceExt};
use poolwarden_crds::DbPoolPolicy;

use super::collect::{Observation, PodTarget, PrometheusSource, Scraper};
use super::decide::{Alert, Decision, DecisionInput, decide, evaluate_alerts};
use super::history::History;
use super::metrics::AutoscaleMetrics;
use crate::budget::{self, Budget, DatabaseLimits};

/// How long the database's max_connections is trusted before it is read again.
const LIMITS_TTL: Duration = Duration::from_secs(300);
/// Per-request timeout of one scrape.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(3);

/// What one pass saw and decided.
pub struct Step {
    /// The decision of the pure engine.
    pub decision: Decision,
    /// The history with this pass's sample added.
    pub history: History,
    /// What the scrape found, per pod.
    pub observation: Observation,
    /// The connection budget in force, when known.
    pub budget: Option<Budget>,
    /// PoolSaturated, from the history.
    pub alert: Alert,
}

/// Database credentials of a policy: database name → (user, password).
pub type Credentials = BTreeMap<String, (String, String)>;

/// The autoscaler's long-lived parts: the HTTP scraper, the cache of database limits and
/// the metrics.
pub struct Autoscaler {
    scraper: Scraper,
    prometheus: Option<PrometheusSource>,
    limits: Mutex<HashMap<(String, u16), (Instant, DatabaseLimits)>>,
    /// Per-policy autoscaling metrics.
    pub metrics: AutoscaleMetrics,
    /// How often an autoscaled policy is reconciled (and its pods scraped).
    pub interval: Duration,
}

impl Autoscaler {
    /// An autoscaler that scrapes every `interval`.
    pub fn new(
        interval: Duration,
        metrics: AutoscaleMetrics,
    ) -> Result<Self, super::collect::CollectError> {
        Ok(Self {
            scraper: Scraper::new(SCRAPE_TIMEOUT)?,
            prometheus: None,
            limits: Mutex::default(),
            metrics,
            interval,
        })
    }

    /// Read utilization from a Prometheus HTTP API instead of scraping each pod.
    pub fn with_prometheus(mut self, source: PrometheusSource) -> Self {
        self.prometheus = Some(source);
        self
    }

    /// One pass for `policy` (read fresh, with its status) and its `matched` pods.
    pub async fn step(
        &self,
        client: &Client,
        policy: &DbPoolPolicy,
        matched: &[Pod],
        token: &str,
        credentials: &Credentials,
        now: Timestamp,
    ) -> Step {
        let spec = &policy.spec;
        let live: Vec<&Pod> = matched
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .collect();
        let observation = match (&self.prometheus, policy.namespace()) {
            (Some(source), Some(ns)) => {
                let names: Vec<String> = live.iter().map(|p| p.name_any()).collect();
                source.observe(&ns, &names).await
            }
            _ => {
                let targets: Vec<PodTarget> = live
                    .iter()
                    .map(|p| PodTarget::from_pod(p, spec.sidecar.admin_port))
                    .collect();
                self.scraper.scrape_all(&targets, token).await
            }
        };
        let status = policy.status.clone().unwrap_or_default();
        // A gap longer than three scrape intervals breaks "sustained".
        let max_gap =
            i64::try_from(self.interval.as_secs().saturating_mul(3).max(30)).unwrap_or(i64::MAX);
        let mut history = History::from_status(&status).with_max_gap(max_gap);
        if let Some(sample) = observation.sample(now) {
            history.add(sample, spec.autoscaling.review.window_days);
        }
        let budget = self
            .budget(client, policy, matched.len(), credentials)
            .await;
        let per_pod_limit = budget.as_ref().map(|b| b.per_pod_limit);
        let decision = decide(&DecisionInput::for_policy(
            policy,
            &history,
            per_pod_limit,
            now,
        ));
        let alert = evaluate_alerts(&history, &spec.alerting, now);
        Step {
            decision,
            history,
            observation,
            budget,
            alert,
        }
    }

    async fn budget(
        &self,
        client: &Client,
        policy: &DbPoolPolicy,
        matched: usize,
        credentials: &Credentials,
    ) -> Option<Budget> {
        let spec = &policy.spec;
        let cb = &spec.autoscaling.connection_budget;
        let matched = u32::try_from(matched).unwrap_or(u32::MAX);
        let (workload, hpa) = match (&spec.autoscaling.target_ref, policy.namespace()) {
            (Some(target), Some(ns)) => {
                match budget::replicas::target_replicas(client, &ns, target).await {
                    Ok(t) => (t.workload, t.hpa_max),
                    Err(e) => {
                        tracing::warn!(policy = %policy.name_any(), error = %e, "reading the target workload failed; budgeting for the matched pods");
                        (None, None)
                    }
                }
            }
            _ => (None, None),
        };
        let replicas = budget::budget_replicas(workload, hpa, matched);
        // Pools per database server: every database of the policy is one pool per pod.
        let mut servers: BTreeMap<(String, u16), (Option<DatabaseLimits>, u32)> = BTreeMap::new();
        for db in &spec.databases {
            let key = (db.host.clone(), db.port);
            let entry = servers.entry(key.clone()).or_insert((None, 0));
            entry.1 += 1;
            if entry.0.is_none() {
                entry.0 = self.database_limits(&key, db, credentials).await;
            }
        }
        let resolved: Vec<(DatabaseLimits, u32)> = servers
            .into_values()
            .filter_map(|(limits, pools)| Some((budget::resolve_limits(cb, limits)?, pools)))
            .collect();
        if resolved.is_empty() {
            return None;
        }
        budget::tightest_budget(&resolved, cb.reserved_connections, replicas)
    }

    async fn database_limits(
        &self,
        key: &(String, u16),
        db: &poolwarden_crds::DatabaseSpec,
        credentials: &Credentials,
    ) -> Option<DatabaseLimits> {
        if let Some((at, limits)) = self.limits.lock().expect("limits cache").get(key)
            && at.elapsed() < LIMITS_TTL
        {
            return Some(*limits);
        }
        let (user, password) = credentials.get(&db.name)?;
        match budget::read_database_limits_with(&budget::connect_options(db, user, password)).await
        {
            Ok(limits) => {
                self.limits
                    .lock()
                    .expect("limits cache")
                    .insert(key.clone(), (Instant::now(), limits));
                Some(limits)
            }
            Err(e) => {
                tracing::warn!(database = %db.name, error = %e, "reading max_connections failed; the pool will not grow until the budget is known");
                None
            }
        }
    }
}
