//! The ONE place where the pool size the sidecars should run with is decided.
//!
//! Today: the live size in `status` once there is one (so an autoscaler's choice sticks),
//! else the hazard-log formula when `autoscaling.concurrentUsers` seeds it, else
//! `spec.pool`. When autoscaling is off, `spec.pool` always wins, so a spec edit reaches the
//! sidecars. The autoscale engine plugs in here: it gets the same inputs and returns a
//! [`Sizing`] with its own reason.

use poolwarden_crds::conditions::reasons;
use poolwarden_crds::{DbPoolPolicySpec, DbPoolPolicyStatus, capacity};

/// The pool size decided for a policy, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sizing {
    /// pool_size for every sidecar of the policy.
    pub pool_size: u32,
    /// max_overflow for every sidecar of the policy.
    pub max_overflow: u32,
    /// A reason from `poolwarden_crds::conditions::reasons`, used for Events and history.
    pub reason: &'static str,
}

/// Decide the pool size from the spec and the current status.
///
/// | autoscaling | live size in status | result |
/// |---|---|---|
/// | on  | yes | the live size (the autoscaler owns it) |
/// | on or off | no, or off | the formula for `concurrentUsers` when set (clamped to min/max when on), else `spec.pool` |
pub fn desired(spec: &DbPoolPolicySpec, status: Option<&DbPoolPolicyStatus>) -> Sizing {
    let live = status.and_then(|s| Some((s.pool_size?, s.max_overflow?)));
    let a = &spec.autoscaling;
    if let (true, Some((pool_size, max_overflow))) = (a.enabled, live) {
        return Sizing {
            pool_size,
            max_overflow,
            reason: reasons::RECONCILED,
        };
    }
    let (pool_size, max_overflow) = match a.concurrent_users {
        Some(users) => {
            let (pool, overflow) = capacity::sizing_for_users(users);
            if a.enabled {
                let clamped = pool.clamp(a.min_pool_size.min(a.max_pool_size), a.max_pool_size);
                if clamped == pool {
                    (pool, overflow)
                } else {
                    (clamped, capacity::max_overflow_for_pool(clamped))
                }
            } else {
                (pool, overflow)
            }
        }
        None => (spec.pool.pool_size, spec.pool.max_overflow),
    };
    let reason = if live.is_none() {
        reasons::INITIAL_SIZING
    } else {
        reasons::SPEC_CHANGED
    };
    Sizing {
        pool_size,
        max_overflow,
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(enabled: bool, users: Option<u32>) -> DbPoolPolicySpec {
        let mut s: DbPoolPolicySpec = serde_json::from_value(serde_json::json!({
            "databases": [{"name": "clinical", "host": "db", "credentialsSecretRef": {"name": "s"}}],
            "pool": {"poolSize": 20, "maxOverflow": 10}
        }))
        .unwrap();
        s.autoscaling.enabled = enabled;
        s.autoscaling.concurrent_users = users;
        s
    }

    fn status(pool: u32, overflow: u32) -> DbPoolPolicyStatus {
        DbPoolPolicyStatus {
            pool_size: Some(pool),
            max_overflow: Some(overflow),
            ..Default::default()
        }
    }

    #[test]
    fn decision_table() {
        let table = [
            // (autoscaling, users, live status, want pool, want overflow, reason)
            (false, None, None, 20, 10, reasons::INITIAL_SIZING),
            (false, None, Some((25, 13)), 20, 10, reasons::SPEC_CHANGED),
            (false, Some(40), None, 60, 30, reasons::INITIAL_SIZING),
            (
                false,
                Some(40),
                Some((60, 30)),
                60,
                30,
                reasons::SPEC_CHANGED,
            ),
            (true, Some(40), None, 60, 30, reasons::INITIAL_SIZING),
            (true, Some(40), Some((35, 18)), 35, 18, reasons::RECONCILED),
            (true, Some(1000), None, 100, 50, reasons::INITIAL_SIZING),
            (true, Some(1), None, 5, 3, reasons::INITIAL_SIZING),
            (true, None, None, 20, 10, reasons::INITIAL_SIZING),
            (true, None, Some((7, 4)), 7, 4, reasons::RECONCILED),
        ];
        for (enabled, users, live, pool, overflow, reason) in table {
            let st = live.map(|(p, o)| status(p, o));
            let got = desired(&spec(enabled, users), st.as_ref());
            assert_eq!(
                got,
                Sizing {
                    pool_size: pool,
                    max_overflow: overflow,
                    reason
                },
                "enabled={enabled} users={users:?} live={live:?}"
            );
        }
    }
}
