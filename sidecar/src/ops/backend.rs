//! The admin API's view of the running sidecar.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;

use super::push::merge_pool;
use crate::admin::{AdminBackend, PoolSettings, PoolSnapshot, ResizeError, ResizeRequest};
use crate::config::{Config, PoolConfig, ReloadTrigger, validate};
use crate::metrics::Metrics;
use crate::proxy::Pools;

/// [`AdminBackend`] over the live pools, their breakers and the live config.
pub struct SidecarBackend {
    pools: Arc<Pools>,
    live: Arc<ArcSwap<Config>>,
    metrics: Metrics,
    ready: AtomicBool,
    /// Serialises pushes and reloads, so neither overwrites the other's live config.
    changes: Mutex<()>,
}

impl SidecarBackend {
    /// A backend over the proxy's pools and live config, exporting `metrics`.
    pub fn new(pools: Arc<Pools>, live: Arc<ArcSwap<Config>>, metrics: Metrics) -> Self {
        Self {
            pools,
            live,
            metrics,
            ready: AtomicBool::new(false),
            changes: Mutex::new(()),
        }
    }

    /// Mark the sidecar ready (listening with a valid config) or not (stopping).
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::SeqCst);
    }

    /// Apply a reloaded, validated config: the pool section per [`merge_pool`], then pools,
    /// breakers, metric settings and the live config.
    pub fn apply_reload(&self, cfg: &Config, file_before: &PoolConfig, trigger: ReloadTrigger) {
        let _g = self.changes.lock().unwrap_or_else(|p| p.into_inner());
        let live = self.live.load_full();
        let mut next = cfg.clone();
        next.pool = merge_pool(file_before, &cfg.pool, &live.pool);
        if next.listen != live.listen || next.admin_listen != live.admin_listen {
            tracing::warn!("listen and admin_listen changes take effect at the next restart");
        }
        if next.worker_threads != live.worker_threads {
            tracing::warn!(
                running = live.worker_threads,
                configured = next.worker_threads,
                "worker_threads changes take effect at the next restart"
            );
            next.worker_threads = live.worker_threads;
        }
        if next.data_path != live.data_path {
            tracing::warn!(
                running = ?live.data_path,
                configured = ?next.data_path,
                "data_path changes take effect at the next restart"
            );
            next.data_path = live.data_path;
        }
        match self.pools.apply(&next) {
            Ok(()) => {
                tracing::info!(
                    trigger = ?trigger,
                    pool_size = next.pool.pool_size,
                    max_overflow = next.pool.max_overflow,
                    "config reloaded"
                );
                self.live.store(Arc::new(next));
            }
            Err(e) => {
                tracing::error!(error = %e, "reloaded config cannot be applied; the old one keeps serving");
            }
        }
    }
}

impl AdminBackend for SidecarBackend {
    fn ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }

    fn snapshot(&self) -> Vec<PoolSnapshot> {
        let live = self.live.load();
        live.databases
            .iter()
            .filter_map(|db| {
                let pool = self.pools.get(&db.name)?;
                let stats = pool.pool.stats();
                let mut settings = PoolSettings::from(&live.pool);
                settings.pool_size = stats.pool_size;
                settings.max_overflow = stats.max_overflow;
                Some(PoolSnapshot {
                    database: db.name.clone(),
                    mode: live.mode,
                    settings,
                    checked_out: stats.checked_out as u32,
                    checked_in: stats.checked_in as u32,
                    waiting: stats.waiting as u32,
                    overflow: stats.overflow as u32,
                    breaker: pool.pool.manager().breaker().state(),
                })
            })
            .collect()
    }

    fn resize(&self, request: &ResizeRequest) -> Result<Vec<PoolSnapshot>, ResizeError> {
        request.validate()?;
        {
            let _g = self.changes.lock().unwrap_or_else(|p| p.into_inner());
            let live = self.live.load_full();
            if self.pools.get(&request.database).is_none() {
                return Err(ResizeError::UnknownDatabase(request.database.clone()));
            }
            let mut next = (*live).clone();
            next.pool = request.apply_to(&live.pool)?;
            validate(&next).map_err(|e| ResizeError::Invalid {
                field: "pool".into(),
                message: e.to_string(),
            })?;
            self.pools
                .apply(&next)
                .map_err(|e| ResizeError::Internal(e.to_string()))?;
            self.live.store(Arc::new(next));
        }
        Ok(self.snapshot())
    }

    fn metrics_text(&self) -> String {
        self.pools.refresh_gauges();
        self.metrics.encode()
    }
}
