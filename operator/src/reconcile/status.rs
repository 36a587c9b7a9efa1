//! `DbPoolPolicy.status`: computed purely by [`next_status`], written with server-side apply
//! on the status subresource by [`apply`].
//!
//! The operator writes status under one field manager. With server-side apply a manager that
//! leaves out a field it set before removes it, so [`next_status`] starts from the current
//! status and changes only the fields this reconcile decides (the autoscaler's utilization and
//! budget fields pass through untouched).

use kube::Api;
use kube::api::{Patch, PatchParams};
use poolwarden_crds::conditions::{reasons, status as cs, types};
use poolwarden_crds::{
    Condition, DbPoolPolicy, DbPoolPolicyStatus, MAX_HISTORY, PodsStatus, ScaleEvent,
};

use super::sizing::Sizing;
use crate::FIELD_MANAGER;

/// Set (or add) a condition. `lastTransitionTime` changes only when `status` changes; reason,
/// message and observedGeneration are always updated. Returns true on a transition (including
/// the first time the condition appears).
pub fn set_condition(
    conditions: &mut Vec<Condition>,
    type_: &str,
    status: &str,
    reason: &str,
    message: &str,
    generation: Option<i64>,
    now: &str,
) -> bool {
    let fresh = Condition {
        type_: type_.to_string(),
        status: status.to_string(),
        observed_generation: generation,
        last_transition_time: now.to_string(),
        reason: reason.to_string(),
        message: message.to_string(),
    };
    match conditions.iter_mut().find(|c| c.type_ == type_) {
        Some(c) if c.status == status => {
            *c = Condition {
                last_transition_time: c.last_transition_time.clone(),
                ..fresh
            };
            false
        }
        Some(c) => {
            *c = fresh;
            true
        }
        None => {
            conditions.push(fresh);
            true
        }
    }
}

/// What one reconcile observed and decided.
#[derive(Clone, Debug, PartialEq)]
pub struct Observed {
    /// metadata.generation of the policy.
    pub generation: Option<i64>,
    /// `Err(message)` when the cross-field checks failed.
    pub spec: Result<(), String>,
    /// The decided size (only when the spec is valid).
    pub sizing: Option<Sizing>,
    /// Matched, reporting and unreachable pods.
    pub pods: PodsStatus,
}

/// What changed, for Events.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Transitions {
    /// `Some(valid)` when SpecValid changed (or appeared).
    pub spec_valid: Option<bool>,
    /// `Some((from, to, reason))` when the live pool size changed.
    pub pool_size: Option<(u32, u32, &'static str)>,
}

/// The next status from the current one and this reconcile's observations. Pure; `now` is
/// RFC 3339.
pub fn next_status(
    current: Option<&DbPoolPolicyStatus>,
    obs: &Observed,
    now: &str,
) -> (DbPoolPolicyStatus, Transitions) {
    let mut st = current.cloned().unwrap_or_default();
    let mut tr = Transitions::default();
    st.observed_generation = obs.generation;
    st.pods = Some(obs.pods.clone());
    let g = obs.generation;
    match &obs.spec {
        Err(message) => {
            if set_condition(
                &mut st.conditions,
                types::SPEC_VALID,
                cs::FALSE,
                reasons::INVALID_SPEC,
                message,
                g,
                now,
            ) {
                tr.spec_valid = Some(false);
            }
            set_condition(
                &mut st.conditions,
                types::READY,
                cs::FALSE,
                reasons::INVALID_SPEC,
                message,
                g,
                now,
            );
        }
        Ok(()) => {
            let msg = "the spec passed the cross-field checks";
            if set_condition(
                &mut st.conditions,
                types::SPEC_VALID,
                cs::TRUE,
                reasons::VALID,
                msg,
                g,
                now,
            ) {
                tr.spec_valid = Some(true);
            }
            let unreachable = &obs.pods.unreachable;
            if unreachable.is_empty() {
                let msg = "sidecar configuration rendered and pushed to every ready pod";
                set_condition(
                    &mut st.conditions,
                    types::READY,
                    cs::TRUE,
                    reasons::RECONCILED,
                    msg,
                    g,
                    now,
                );
            } else {
                let msg = format!("live push failed for pods: {}", unreachable.join(", "));
                set_condition(
                    &mut st.conditions,
                    types::READY,
                    cs::FALSE,
                    reasons::SIDECARS_UNREACHABLE,
                    &msg,
                    g,
                    now,
                );
            }
        }
    }
    if let (Ok(()), Some(sizing)) = (&obs.spec, &obs.sizing) {
        if let Some(from) = st.pool_size.filter(|from| *from != sizing.pool_size) {
            tr.pool_size = Some((from, sizing.pool_size, sizing.reason));
            st.history.push(ScaleEvent {
                time: now.to_string(),
                from_pool_size: from,
                to_pool_size: sizing.pool_size,
                reason: sizing.reason.to_string(),
            });
            let excess = st.history.len().saturating_sub(MAX_HISTORY);
            st.history.drain(..excess);
            st.last_scale_time = Some(now.to_string());
        }
        st.pool_size = Some(sizing.pool_size);
        st.max_overflow = Some(sizing.max_overflow);
    }
    (st, tr)
}

/// Server-side apply the whole status on the status subresource.
pub async fn apply(
    api: &Api<DbPoolPolicy>,
    name: &str,
    status: &DbPoolPolicyStatus,
) -> kube::Result<()> {
    let patch = serde_json::json!({
        "apiVersion": "poolwarden.dev/v1alpha1",
        "kind": "DbPoolPolicy",
        "status": status,
    });
    api.patch_status(
        name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: &str = "2026-11-28T10:00:00Z";
    const T1: &str = "2026-11-28T10:05:00Z";

    fn cond<'a>(st: &'a DbPoolPolicyStatus, t: &str) -> &'a Condition {
        st.conditions.iter().find(|c| c.type_ == t).unwrap()
    }

    #[test]
    fn transition_time_moves_only_on_a_status_change() {
        // (previous status or none, new status, reason, transition?, lastTransitionTime)
        let table = [
            (None, "True", "Valid", true, T1),
            (Some("True"), "True", "Valid", false, T0),
            (Some("True"), "True", "OtherReason", false, T0),
            (Some("True"), "False", "InvalidSpec", true, T1),
            (Some("Unknown"), "True", "Valid", true, T1),
        ];
        for (prev, status, reason, want_transition, want_time) in table {
            let mut conds = Vec::new();
            if let Some(p) = prev {
                set_condition(
                    &mut conds,
                    types::SPEC_VALID,
                    p,
                    "Before",
                    "before",
                    Some(1),
                    T0,
                );
            }
            let got = set_condition(
                &mut conds,
                types::SPEC_VALID,
                status,
                reason,
                "after",
                Some(2),
                T1,
            );
            assert_eq!(got, want_transition, "{prev:?} -> {status}");
            assert_eq!(conds.len(), 1);
            let c = &conds[0];
            assert_eq!(
                (c.status.as_str(), c.reason.as_str(), c.message.as_str()),
                (status, reason, "after")
            );
            assert_eq!(c.last_transition_time, want_time, "{prev:?} -> {status}");
            assert_eq!(c.observed_generation, Some(2));
        }
    }

    fn obs(spec: Result<(), String>, sizing: Option<(u32, u32)>, unreachable: &[&str]) -> Observed {
        Observed {
            generation: Some(3),
            spec,
            sizing: sizing.map(|(p, o)| Sizing {
                pool_size: p,
                max_overflow: o,
                reason: reasons::SPEC_CHANGED,
            }),
            pods: PodsStatus {
                matched: 2,
                reporting: 2 - unreachable.len() as u32,
                unreachable: unreachable.iter().map(|s| s.to_string()).collect(),
            },
        }
    }

    #[test]
    fn status_table() {
        let (first, tr) = next_status(None, &obs(Ok(()), Some((20, 10)), &[]), T0);
        assert_eq!(
            tr,
            Transitions {
                spec_valid: Some(true),
                pool_size: None
            }
        );
        assert_eq!(
            (
                first.pool_size,
                first.max_overflow,
                first.observed_generation
            ),
            (Some(20), Some(10), Some(3))
        );
        assert_eq!(cond(&first, types::READY).status, "True");
        assert!(first.history.is_empty());

        // Steady state: nothing transitions.
        let (same, tr) = next_status(Some(&first), &obs(Ok(()), Some((20, 10)), &[]), T1);
        assert_eq!(tr, Transitions::default());
        assert_eq!(cond(&same, types::SPEC_VALID).last_transition_time, T0);

        // Size change: history and lastScaleTime.
        let (grown, tr) = next_status(Some(&same), &obs(Ok(()), Some((30, 15)), &[]), T1);
        assert_eq!(tr.pool_size, Some((20, 30, reasons::SPEC_CHANGED)));
        assert_eq!(grown.history.len(), 1);
        assert_eq!(grown.last_scale_time.as_deref(), Some(T1));

        // Invalid: keeps the last good size, SpecValid and Ready False with the message.
        let msg = "spec.autoscaling.minPoolSize (50) must be <= spec.autoscaling.maxPoolSize (10)";
        let (bad, tr) = next_status(Some(&grown), &obs(Err(msg.into()), None, &[]), T1);
        assert_eq!(
            tr,
            Transitions {
                spec_valid: Some(false),
                pool_size: None
            }
        );
        assert_eq!(bad.pool_size, Some(30));
        for t in [types::SPEC_VALID, types::READY] {
            let c = cond(&bad, t);
            assert_eq!(
                (c.status.as_str(), c.reason.as_str(), c.message.as_str()),
                ("False", "InvalidSpec", msg)
            );
        }
        // Still invalid: no second transition.
        let (_, tr) = next_status(Some(&bad), &obs(Err(msg.into()), None, &[]), T1);
        assert_eq!(tr.spec_valid, None);

        // Unreachable pods: Ready False naming them, SpecValid stays True.
        let (part, _) = next_status(Some(&grown), &obs(Ok(()), Some((30, 15)), &["pod-b"]), T1);
        let ready = cond(&part, types::READY);
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("False", reasons::SIDECARS_UNREACHABLE)
        );
        assert!(ready.message.contains("pod-b"));
        assert_eq!(part.pods.as_ref().unwrap().unreachable, ["pod-b"]);
    }

    #[test]
    fn history_keeps_the_newest_twenty_and_other_fields_pass_through() {
        let mut st = DbPoolPolicyStatus {
            pool_size: Some(1),
            max_overflow: Some(1),
            ..Default::default()
        };
        st.last_scale_time = None;
        st.utilization = Some(Default::default());
        for size in 2..=30 {
            st = next_status(Some(&st), &obs(Ok(()), Some((size, 1)), &[]), T0).0;
        }
        assert_eq!(st.history.len(), MAX_HISTORY);
        assert_eq!(st.history.last().unwrap().to_pool_size, 30);
        assert_eq!(st.history.first().unwrap().to_pool_size, 11);
        assert!(
            st.utilization.is_some(),
            "fields this reconcile does not own pass through"
        );
    }
}
