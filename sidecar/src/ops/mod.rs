//! The running sidecar: the proxy, the admin HTTP server beside it, and the reload loop,
//! wired together (CONTRACT §2.2 live reload, §2.4, §2.5, §2.6).
//!
//! ```text
//!  SIGHUP / file change ──▶ Reloader ──▶ push::merge_pool ──▶ Pools::apply ──▶ live config
//!  PUT /api/pool ──────────▶ SidecarBackend::resize ────────▶ Pools::apply ──▶ live config
//!  GET /api/metrics ───────▶ Pools::refresh_gauges + Metrics::encode
//! ```
//!
//! Pushed settings and reloads: a `PUT /api/pool` holds until the file's own `pool` section
//! changes. A reload whose `pool` section (file + environment + flags) equals the previous
//! load's keeps the live, possibly pushed, pool settings; a changed `pool` section wins.

mod backend;
pub mod push;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio_util::sync::CancellationToken;

pub use backend::SidecarBackend;

use crate::admin::{self, AdminState, TokenStore};
use crate::config::{Config, ReloadOptions, ReloadSource, ReloadTrigger, Reloader};
use crate::metrics::Metrics;
use crate::proxy::{Proxy, RunError};

/// Run everything until `shutdown` completes: bind the proxy and `admin_listen`, start the
/// reload loop on `source` (the file, environment and flags this process started with),
/// serve, then drain and stop.
pub async fn run_until(
    config: Config,
    source: ReloadSource,
    reload: ReloadOptions,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), RunError> {
    let metrics = Metrics::new();
    let proxy = Proxy::bind_with_metrics(config.clone(), metrics.clone()).await?;
    let admin_addr: SocketAddr = config.admin_listen;
    let admin_listener = tokio::net::TcpListener::bind(admin_addr)
        .await
        .map_err(|source| RunError::Bind {
            addr: admin_addr,
            source,
        })?;
    let backend = Arc::new(SidecarBackend::new(
        proxy.pools(),
        proxy.config(),
        metrics.clone(),
    ));
    let tokens = Arc::new(TokenStore::from_config(&config.admin));

    // The reload loop.
    let file_pool = Mutex::new(config.pool.clone());
    let apply_backend = backend.clone();
    let reloader = Reloader::new(
        source,
        Arc::new(config),
        move |cfg: Arc<Config>, trigger: ReloadTrigger| {
            let mut file_pool = file_pool.lock().unwrap_or_else(|p| p.into_inner());
            apply_backend.apply_reload(&cfg, &file_pool, trigger);
            *file_pool = cfg.pool.clone();
        },
    )
    .with_metrics(metrics)
    .with_options(reload);
    let (reload_handle, reload_task) = reloader.spawn().map_err(RunError::Signal)?;

    // The admin server.
    let stop_admin = CancellationToken::new();
    let admin_task = tokio::spawn(admin::serve(
        admin_listener,
        AdminState::new(backend.clone(), tokens),
        stop_admin.clone().cancelled_owned(),
    ));
    tracing::info!(admin_listen = %admin_addr, "admin API listening");
    backend.set_ready(true);

    let ready = backend.clone();
    let result = proxy
        .serve(async move {
            shutdown.await;
            ready.set_ready(false);
        })
        .await;
    stop_admin.cancel();
    drop(reload_handle);
    reload_task.abort();
    match admin_task.await {
        Ok(Err(e)) => tracing::warn!(error = %e, "admin API stopped with an error"),
        Err(e) if e.is_panic() => tracing::error!("admin API task panicked"),
        _ => {}
    }
    result
}
