//! The controller: watches DbPoolPolicies, the ConfigMaps and Secrets they own, and the pods
//! that carry `poolwarden.dev/policy`; reconciles each policy; one `error_policy` with
//! per-object exponential backoff.
//!
//! No finalizer: everything the operator creates (ConfigMap, admin Secret) carries an
//! ownerReference with `controller: true`, so Kubernetes' garbage collector deletes it with the
//! policy; there is no external state to clean up. Pods are never edited, only read.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret};
use kube::api::{ListParams, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{PredicateConfig, WatchStreamExt, reflector, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use poolwarden_crds::{DbPoolPolicy, PodsStatus};

use crate::FIELD_MANAGER;
use crate::autoscale::step::{Autoscaler, Credentials, Step};
use crate::autoscale::{self, AlertLevel};
use crate::metrics::Metrics;
use crate::push::{self, PoolUpdate};
use crate::reconcile::validate::{self, SecretFacts, SecretLookup};
use crate::reconcile::{MANAGED_BY_LABEL, POLICY_LABEL, admin_secret, configmap, sizing, status};

/// Requeue after a successful reconcile.
pub const REQUEUE_OK: Duration = Duration::from_secs(300);
/// Requeue while the spec is invalid (a missing Secret may appear; Secrets of databases are
/// not watched).
pub const REQUEUE_INVALID: Duration = Duration::from_secs(30);
/// Requeue while some sidecars could not be reached, to retry the push.
pub const REQUEUE_UNREACHABLE: Duration = Duration::from_secs(15);
/// How often an autoscaled policy's pods are scraped by default.
pub const DEFAULT_SCRAPE_INTERVAL: Duration = Duration::from_secs(15);
const BACKOFF_FIRST: Duration = Duration::from_secs(5);
const BACKOFF_MAX: Duration = Duration::from_secs(300);

/// Everything a reconcile needs.
pub struct Context {
    /// Kubernetes client.
    pub client: Client,
    /// Event recorder (events.k8s.io/v1).
    pub recorder: Recorder,
    /// The operator's metrics.
    pub metrics: Metrics,
    /// Scraping, budget and the decision engine for autoscaled policies.
    pub autoscaler: Autoscaler,
    failures: Mutex<HashMap<ObjectRef<DbPoolPolicy>, u32>>,
}

impl Context {
    /// A context; `instance` identifies this replica in Events (the pod name).
    pub fn new(client: Client, metrics: Metrics, instance: String) -> Self {
        let reporter = Reporter {
            controller: FIELD_MANAGER.into(),
            instance: Some(instance),
        };
        let autoscaler = Autoscaler::new(DEFAULT_SCRAPE_INTERVAL, metrics.autoscale.clone())
            .expect("the HTTP client for scraping builds");
        Self {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            metrics,
            autoscaler,
            failures: Mutex::default(),
        }
    }

    /// Scrape autoscaled policies' pods (and reconcile them) every `interval`.
    pub fn with_scrape_interval(mut self, interval: Duration) -> Self {
        self.autoscaler.interval = interval;
        self
    }

    /// Read utilization from a Prometheus HTTP API instead of scraping the sidecars.
    pub fn with_prometheus(mut self, source: crate::autoscale::collect::PrometheusSource) -> Self {
        self.autoscaler = self.autoscaler.with_prometheus(source);
        self
    }
}

/// Reconcile failures.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An apiserver call failed.
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// The policy lacks a field the apiserver always sets.
    #[error("policy has no {0}")]
    MissingObjectKey(&'static str),
}

impl Error {
    /// A short label for the failures metric.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Kube(kube::Error::Api(s)) if s.code == 409 => "conflict",
            Error::Kube(kube::Error::Api(_)) => "api",
            Error::Kube(_) => "kube",
            Error::MissingObjectKey(_) => "object",
        }
    }
}

/// Which namespaces the controller watches.
#[derive(Clone, Debug, Default)]
pub enum Scope {
    /// Every namespace (the default for the operator).
    #[default]
    All,
    /// One namespace.
    Namespace(String),
}

impl Scope {
    fn api<K>(&self, client: &Client) -> Api<K>
    where
        K: Resource<DynamicType = ()>,
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
    {
        match self {
            Scope::All => Api::all(client.clone()),
            Scope::Namespace(ns) => Api::namespaced(client.clone(), ns),
        }
    }
}

/// Run the controller until `shutdown` completes; in-flight reconciles finish first.
pub async fn run(
    ctx: Arc<Context>,
    scope: Scope,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let client = &ctx.client;
    let owned = watcher::Config::default().labels(&format!("{MANAGED_BY_LABEL}={FIELD_MANAGER}"));
    // Reconcile on spec (generation) and pause-annotation changes only: the operator's own
    // status writes (a fresh utilization sample every pass) must not trigger reconciles, or
    // the loop would spin. Requeues, owned objects and pods still trigger as usual.
    let (reader, writer) = reflector::store();
    let policies = reflector(
        writer,
        watcher(
            scope.api::<DbPoolPolicy>(client),
            watcher::Config::default(),
        ),
    )
    .applied_objects()
    .predicate_filter(spec_or_pause, PredicateConfig::default());
    Controller::for_stream(policies, reader)
        .owns(scope.api::<ConfigMap>(client), owned.clone())
        .owns(scope.api::<Secret>(client), owned)
        .watches(
            scope.api::<Pod>(client),
            watcher::Config::default().labels(POLICY_LABEL),
            |pod: Pod| {
                let ns = pod.namespace();
                pod.labels()
                    .get(POLICY_LABEL)
                    .cloned()
                    .into_iter()
                    .filter_map(move |name| {
                        Some(ObjectRef::<DbPoolPolicy>::new(&name).within(ns.as_deref()?))
                    })
            },
        )
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx.clone())
        .for_each(|res| async move {
            match res {
                Ok((obj, _)) => {
                    tracing::info!(policy = %obj.name, namespace = ?obj.namespace, "reconciled")
                }
                Err(e) => tracing::debug!(error = %e, "reconcile stream error"),
            }
        })
        .await;
}

/// The watch predicate: a policy is reconciled when its generation (spec) or its
/// `poolwarden.dev/paused` annotation changes.
fn spec_or_pause(policy: &DbPoolPolicy) -> Option<u64> {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    policy.metadata.generation.hash(&mut h);
    policy
        .annotations()
        .get(autoscale::decide::PAUSED_ANNOTATION)
        .hash(&mut h);
    Some(h.finish())
}

/// Requeue with per-object exponential backoff, log, and count by a short label.
pub fn error_policy(policy: Arc<DbPoolPolicy>, error: &Error, ctx: Arc<Context>) -> Action {
    let key = ObjectRef::from_obj(policy.as_ref());
    let n = {
        let mut failures = ctx.failures.lock().expect("failures lock");
        let n = failures.entry(key).or_insert(0);
        *n = n.saturating_add(1);
        *n
    };
    let delay = backoff(n);
    tracing::warn!(policy = %policy.name_any(), error = %error, attempt = n, retry_in = ?delay, "reconcile failed");
    ctx.metrics
        .failures
        .with_label_values(&[error.metric_label()])
        .inc();
    Action::requeue(delay)
}

/// The requeue delay after the `attempt`-th consecutive failure (1-based): 5 s doubling to at
/// most 5 minutes.
pub fn backoff(attempt: u32) -> Duration {
    BACKOFF_FIRST
        .saturating_mul(1 << attempt.saturating_sub(1).min(6))
        .min(BACKOFF_MAX)
}

fn now() -> String {
    jiff::Timestamp::now()
        .round(jiff::Unit::Second)
        .expect("rounding to seconds never overflows")
        .to_string()
}

/// One reconcile of a policy.
pub async fn reconcile(policy: Arc<DbPoolPolicy>, ctx: Arc<Context>) -> Result<Action, Error> {
    ctx.metrics.reconciles.inc();
    let _timer = ctx.metrics.reconcile_duration.start_timer();
    let ns = policy
        .namespace()
        .ok_or(Error::MissingObjectKey("metadata.namespace"))?;
    let name = policy.name_any();
    let policies: Api<DbPoolPolicy> = Api::namespaced(ctx.client.clone(), &ns);
    // Read the policy fresh: the watch cache may not have seen the status this controller wrote
    // a moment ago, and deciding on a stale status would push or record a change twice.
    let Some(policy) = policies.get_opt(&name).await? else {
        return Ok(Action::await_change());
    };
    let spec = &policy.spec;
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &ns);
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);

    // Fetch what validation needs: the referenced database Secrets.
    let mut lookup = SecretLookup::new();
    let mut fetched: BTreeMap<String, Secret> = BTreeMap::new();
    for db in &spec.databases {
        let r = &db.credentials_secret_ref;
        if lookup.contains_key(&r.name) {
            continue;
        }
        let secret = secrets.get_opt(&r.name).await?;
        let facts = secret.as_ref().map(|s| SecretFacts {
            keys: s
                .data
                .iter()
                .flatten()
                .map(|(k, _)| k.clone())
                .chain(s.string_data.iter().flatten().map(|(k, _)| k.clone()))
                .collect(),
        });
        lookup.insert(r.name.clone(), facts);
        if let Some(s) = secret {
            fetched.insert(r.name.clone(), s);
        }
    }
    let violations = validate::validate(spec, &lookup);

    let matched = pods
        .list(&ListParams::default().labels(&format!("{POLICY_LABEL}={name}")))
        .await?
        .items;
    let targets = push::ready_targets(&matched, spec.sidecar.admin_port);
    let current = policy.status.as_ref();

    let mut step: Option<Step> = None;
    let (spec_result, decided, unreachable) = if violations.is_empty() {
        let owner = policy
            .controller_owner_ref(&())
            .ok_or(Error::MissingObjectKey("metadata.uid"))?;
        let apply = PatchParams::apply(FIELD_MANAGER).force();

        let admin_name = admin_secret::name(&name);
        let existing = secrets.get_opt(&admin_name).await?;
        let token = admin_secret::token_to_keep(existing.as_ref());
        let mut admin = admin_secret::build(&name, &ns, &token);
        admin.metadata.owner_references = Some(vec![owner.clone()]);
        secrets
            .patch(&admin_name, &apply, &Patch::Apply(&admin))
            .await?;

        // Autoscaling: scrape, remember, read the budget, decide. Otherwise the spec decides.
        let decided = if spec.autoscaling.enabled {
            let credentials = database_credentials(spec, &fetched);
            let now = jiff::Timestamp::now();
            let mut pass = ctx
                .autoscaler
                .step(&ctx.client, &policy, &matched, &token, &credentials, now)
                .await;
            if pass.decision.sizing.pool_size == 0 {
                // A budget with no room at all: hold what runs rather than push a pool of 0
                // (BudgetLimited says why).
                let held = sizing::desired(spec, current);
                pass.decision.sizing = autoscale::Sizing {
                    pool_size: held.pool_size,
                    max_overflow: held.max_overflow,
                };
                pass.decision.changed = false;
            }
            let d = sizing::Sizing {
                pool_size: pass.decision.sizing.pool_size,
                max_overflow: pass.decision.sizing.max_overflow,
                reason: pass.decision.reason,
            };
            step = Some(pass);
            d
        } else {
            sizing::desired(spec, current)
        };

        let users: BTreeMap<String, String> = spec
            .databases
            .iter()
            .filter_map(|db| {
                let r = &db.credentials_secret_ref;
                let raw = fetched.get(&r.name)?.data.as_ref()?.get(&r.username_key)?;
                Some((
                    db.name.clone(),
                    String::from_utf8_lossy(&raw.0).into_owned(),
                ))
            })
            .collect();
        let yaml = configmap::render_yaml(&configmap::render_config(spec, &users, &decided));
        let mut cm = configmap::build(&name, &ns, yaml);
        cm.metadata.owner_references = Some(vec![owner]);
        let cms: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &ns);
        cms.patch(&configmap::name(&name), &apply, &Patch::Apply(&cm))
            .await?;

        let live = current.map(|s| (s.pool_size, s.max_overflow));
        let changed = live != Some((Some(decided.pool_size), Some(decided.max_overflow)));
        let previously = current
            .and_then(|s| s.pods.as_ref())
            .map(|p| p.unreachable.as_slice())
            .unwrap_or_default();
        let to_push = push::plan(&targets, changed, previously);
        let updates: Vec<PoolUpdate> = spec
            .databases
            .iter()
            .map(|db| PoolUpdate {
                database: db.name.clone(),
                pool_size: decided.pool_size,
                max_overflow: decided.max_overflow,
            })
            .collect();
        let unreachable = if to_push.is_empty() {
            Vec::new()
        } else {
            push::push_all(&to_push, &updates, &token).await
        };
        if !to_push.is_empty() {
            tracing::info!(policy = %name, pods = to_push.len(), unreachable = unreachable.len(), pool_size = decided.pool_size, "live push");
        }
        (Ok(()), Some(decided), unreachable)
    } else {
        (Err(validate::summary(&violations)), None, Vec::new())
    };

    let obs = status::Observed {
        generation: policy.metadata.generation,
        spec: spec_result,
        // An autoscaled policy's size and history are written by `autoscale::record` below.
        sizing: if step.is_some() {
            None
        } else {
            decided.clone()
        },
        pods: PodsStatus {
            matched: u32::try_from(matched.len()).unwrap_or(u32::MAX),
            reporting: u32::try_from(targets.len().saturating_sub(unreachable.len()))
                .unwrap_or(u32::MAX),
            unreachable,
        },
    };
    let stamp = now();
    let (mut next, transitions) = status::next_status(current, &obs, &stamp);
    let autoscaled = step
        .as_ref()
        .map(|pass| autoscaled_status(&mut next, pass, &obs.pods.unreachable, spec, &stamp));
    status::apply(&policies, &name, &next).await?;

    let reference = policy.object_ref(&());
    if let Some(valid) = transitions.spec_valid {
        // The first reconcile of a valid policy is not a transition worth an Event.
        if !valid || current.is_some_and(|s| !s.conditions.is_empty()) {
            let (type_, reason, note) = match (&obs.spec, valid) {
                (Err(msg), false) => (
                    EventType::Warning,
                    poolwarden_crds::conditions::reasons::INVALID_SPEC,
                    msg.clone(),
                ),
                _ => (
                    EventType::Normal,
                    poolwarden_crds::conditions::reasons::VALID,
                    "the spec is valid again".to_string(),
                ),
            };
            publish(&ctx, &reference, type_, reason, "ValidateSpec", note).await;
        }
    }
    if let Some((from, to, reason)) = transitions.pool_size {
        ctx.metrics
            .autoscale
            .scale_decisions
            .with_label_values(&[&ns, &name, reason])
            .inc();
        let note = format!("pool size {from} -> {to}");
        publish(&ctx, &reference, EventType::Normal, reason, "Resize", note).await;
    }
    match (&step, autoscaled) {
        (Some(pass), Some(outcome)) => {
            let d = &pass.decision;
            ctx.metrics.autoscale.observe(
                &ns,
                &name,
                d,
                pass.budget.as_ref().map(|b| b.per_pod_limit),
                pass.observation.utilization(),
                u32::try_from(pass.observation.unreachable().len()).unwrap_or(u32::MAX),
            );
            if let Some(entry) = outcome.scale_event {
                let note = format!(
                    "pool size {} -> {} (max_overflow {}): {}",
                    entry.from_pool_size, entry.to_pool_size, d.sizing.max_overflow, d.message
                );
                publish(
                    &ctx,
                    &reference,
                    EventType::Normal,
                    d.reason,
                    "Resize",
                    note,
                )
                .await;
            }
            if outcome.budget_became_limited {
                let note = format!(
                    "{} - the database connection budget binds: add database capacity \
                     (max_connections) or reduce replicas",
                    d.message
                );
                let reason = poolwarden_crds::conditions::reasons::BUDGET_EXCEEDED;
                publish(&ctx, &reference, EventType::Warning, reason, "Budget", note).await;
            }
            if let Some(level) = outcome.saturation_raised {
                let note = format!("{level:?}: {}", pass.alert.message);
                publish(
                    &ctx,
                    &reference,
                    EventType::Warning,
                    "PoolSaturated",
                    "Alert",
                    note,
                )
                .await;
            }
        }
        _ => {
            if let Some(d) = &decided {
                ctx.metrics
                    .autoscale
                    .observe_fixed(&ns, &name, d.pool_size, d.max_overflow);
            }
        }
    }

    ctx.failures
        .lock()
        .expect("failures lock")
        .remove(&ObjectRef::from_obj(&policy));
    let action = match (&obs.spec, obs.pods.unreachable.is_empty()) {
        (Err(_), _) => REQUEUE_INVALID,
        (Ok(()), false) => REQUEUE_UNREACHABLE,
        (Ok(()), true) => REQUEUE_OK,
    };
    // Autoscaled policies come back every scrape interval.
    Ok(Action::requeue(if step.is_some() {
        action.min(ctx.autoscaler.interval)
    } else {
        action
    }))
}

/// (user, password) per database, from the fetched credential Secrets.
fn database_credentials(
    spec: &poolwarden_crds::DbPoolPolicySpec,
    fetched: &BTreeMap<String, Secret>,
) -> Credentials {
    spec.databases
        .iter()
        .filter_map(|db| {
            let r = &db.credentials_secret_ref;
            let data = fetched.get(&r.name)?.data.as_ref()?;
            let text = |k: &str| Some(String::from_utf8_lossy(&data.get(k)?.0).into_owned());
            Some((
                db.name.clone(),
                (text(&r.username_key)?, text(&r.password_key)?),
            ))
        })
        .collect()
}

/// What an autoscaling pass changed in the status, for Events.
struct AutoscaledOutcome {
    scale_event: Option<poolwarden_crds::ScaleEvent>,
    budget_became_limited: bool,
    saturation_raised: Option<AlertLevel>,
}

/// Writes an autoscaling pass into the status: size and history (`autoscale::record`), the
/// budget, pods (scrape and push failures together), and the Scaling, BudgetLimited,
/// PoolSaturated and BreakerOpen conditions.
fn autoscaled_status(
    next: &mut poolwarden_crds::DbPoolPolicyStatus,
    pass: &Step,
    push_unreachable: &[String],
    spec: &poolwarden_crds::DbPoolPolicySpec,
    stamp: &str,
) -> AutoscaledOutcome {
    use poolwarden_crds::conditions::{reasons, status as cs, types};
    let now: jiff::Timestamp = stamp.parse().unwrap_or_else(|_| jiff::Timestamp::now());
    let d = &pass.decision;
    let window = spec.autoscaling.review.window_days;
    let scale_event =
        autoscale::record(next, d, &pass.history, Some(&pass.observation), window, now);
    if let Some(pods) = next.pods.as_mut() {
        for name in push_unreachable {
            if !pods.unreachable.contains(name) {
                pods.unreachable.push(name.clone());
            }
        }
    }
    next.connection_budget = pass.budget.as_ref().map(|b| b.to_status());
    let g = next.observed_generation;
    let c = &mut next.conditions;
    let (scaling, scaling_reason) = if d.changed {
        (cs::TRUE, d.reason)
    } else {
        (cs::FALSE, reasons::RECONCILED)
    };
    status::set_condition(
        c,
        types::SCALING,
        scaling,
        scaling_reason,
        &d.message,
        g,
        stamp,
    );
    let (budget_status, budget_reason) = d.budget_condition();
    let budget_transition = status::set_condition(
        c,
        types::BUDGET_LIMITED,
        budget_status,
        budget_reason,
        &d.message,
        g,
        stamp,
    );
    let (saturated, saturated_reason) = match pass.alert.level {
        AlertLevel::Critical => (cs::TRUE, "UtilizationCritical"),
        AlertLevel::Warning => (cs::TRUE, "UtilizationWarning"),
        AlertLevel::None => (cs::FALSE, "BelowThresholds"),
    };
    let saturation_transition = status::set_condition(
        c,
        types::POOL_SATURATED,
        saturated,
        saturated_reason,
        &pass.alert.message,
        g,
        stamp,
    );
    let open = pass.observation.breaker_open();
    let (breaker, breaker_reason, breaker_msg) = if open {
        (
            cs::TRUE,
            "BreakerOpen",
            "a sidecar reports its circuit breaker open: the database refuses or drops connections",
        )
    } else {
        (
            cs::FALSE,
            "BreakerClosed",
            "no sidecar reports an open circuit breaker",
        )
    };
    status::set_condition(
        c,
        types::BREAKER_OPEN,
        breaker,
        breaker_reason,
        breaker_msg,
        g,
        stamp,
    );
    AutoscaledOutcome {
        scale_event,
        budget_became_limited: budget_transition && budget_status == cs::TRUE,
        saturation_raised: (saturation_transition && saturated == cs::TRUE)
            .then_some(pass.alert.level),
    }
}

async fn publish(
    ctx: &Context,
    reference: &k8s_openapi::api::core::v1::ObjectReference,
    type_: EventType,
    reason: &str,
    action: &str,
    note: String,
) {
    let ev = Event {
        type_,
        reason: reason.into(),
        note: Some(note),
        action: action.into(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&ev, reference).await {
        // An Event is a courtesy; its failure must not fail the reconcile.
        tracing::warn!(error = %e, reason, "publishing an Event failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_five_minutes() {
        let table = [
            (0, 5),
            (1, 5),
            (2, 10),
            (3, 20),
            (4, 40),
            (5, 80),
            (6, 160),
            (7, 300),
            (100, 300),
        ];
        for (attempt, secs) in table {
            assert_eq!(
                backoff(attempt),
                Duration::from_secs(secs),
                "attempt {attempt}"
            );
        }
    }

    #[test]
    fn failures_have_short_metric_labels() {
        let api = |code| {
            Error::Kube(kube::Error::Api(
                kube::core::Status::failure("x", "y")
                    .with_code(code)
                    .boxed(),
            ))
        };
        let table = [
            (api(409), "conflict"),
            (api(403), "api"),
            (Error::MissingObjectKey("metadata.uid"), "object"),
        ];
        for (err, label) in table {
            assert_eq!(err.metric_label(), label, "{err}");
            assert!(crate::metrics::FAILURE_LABELS.contains(&label));
        }
    }
}
