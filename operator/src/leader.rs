//! Leader election on a `coordination.k8s.io/v1` Lease (kube-lease-manager): only the holder
//! runs the controller; losing the lease stops it; shutdown releases the lease.
//!
//! ```text
//!  LeaseManager::watch ──bool──▶ run_while_leader: false ─ wait ─▶ true ─▶ controller
//!                                         ▲                          │ lease lost
//!                                         └──────────────────────────┘
//! ```

use std::future::Future;

use kube::Client;
use kube_lease_manager::{LeaseManagerBuilder, LeaseParams};
use tokio::sync::watch;

/// Lease settings.
#[derive(Clone, Debug)]
pub struct LeaseConfig {
    /// Lease object name.
    pub name: String,
    /// Lease namespace.
    pub namespace: String,
    /// This replica's identity (holderIdentity).
    pub identity: String,
    /// Seconds the lease is valid after the last renewal.
    pub duration_seconds: u64,
    /// Seconds before expiry at which the holder renews.
    pub grace_seconds: u64,
}

/// The server-side-apply field manager for this replica's Lease writes (unique per identity,
/// at most 128 bytes as the apiserver requires).
pub fn lease_field_manager(identity: &str) -> String {
    let mut m = format!("{}-lease-{identity}", crate::FIELD_MANAGER);
    while m.len() > 128 {
        m.pop();
    }
    m
}

/// Run `work()` whenever this replica holds the lease, and stop it when the lease is lost,
/// until `shutdown` changes to true. Releases the lease on the way out.
pub async fn run_while_leader<F, Fut>(
    client: Client,
    cfg: LeaseConfig,
    mut shutdown: watch::Receiver<bool>,
    mut work: F,
) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    let manager = LeaseManagerBuilder::new(client, &cfg.name)
        .with_namespace(&cfg.namespace)
        .with_parameters(
            // The field manager must differ per replica: two replicas locking at once are told
            // apart by server-side apply's ownership conflict, so a shared manager would let
            // both "win".
            LeaseParams::new(&cfg.identity, cfg.duration_seconds, cfg.grace_seconds)
                .with_field_manager(lease_field_manager(&cfg.identity)),
        )
        .build()
        .await?;
    let (mut leader, task) = manager.watch().await;
    loop {
        if *shutdown.borrow() {
            break;
        }
        if !*leader.borrow_and_update() {
            tokio::select! {
                r = shutdown.changed() => { if r.is_err() { break } continue }
                r = leader.changed() => { if r.is_err() { break } continue }
            }
        }
        tracing::info!(identity = %cfg.identity, lease = %cfg.name, "acquired the lease; reconciling");
        let lost = async {
            loop {
                if leader.changed().await.is_err() || !*leader.borrow_and_update() {
                    return;
                }
            }
        };
        tokio::select! {
            _ = work() => { break }
            _ = lost => tracing::warn!(identity = %cfg.identity, "lost the lease; stopped reconciling"),
        }
    }
    drop(leader);
    match task.await {
        Ok(Ok(_)) => tracing::info!(identity = %cfg.identity, "released the lease"),
        Ok(Err(e)) => tracing::warn!(error = %e, "releasing the lease failed"),
        Err(e) => tracing::warn!(error = %e, "lease task failed"),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_managers_are_unique_per_identity_and_bounded() {
        assert_eq!(
            lease_field_manager("op-a"),
            "poolwarden-operator-lease-op-a"
        );
        assert_ne!(lease_field_manager("op-a"), lease_field_manager("op-b"));
        assert_eq!(lease_field_manager(&"x".repeat(300)).len(), 128);
    }
}
