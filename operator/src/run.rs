//! `poolwarden-operator run`: the metrics/health server, leader election, the controller, and
//! graceful shutdown on SIGTERM or Ctrl-C (in-flight reconciles finish, the lease is released).
//!
//! The admission webhook (`webhook::serve`) starts here too, next to the metrics server, and is
//! served by every replica regardless of the lease.
//!
//! RBAC the reconciler and the lease need (the webhook adds its own reads):
//!
//! | API group | resource | verbs | why |
//! |---|---|---|---|
//! | `poolwarden.dev` | `dbpoolpolicies` | get, list, watch | the controller's watch; a fresh read per reconcile |
//! | `poolwarden.dev` | `dbpoolpolicies/status` | get, patch | status by server-side apply |
//! | `""` | `configmaps` | list, watch, create, patch | owned `<policy>-poolwarden` (server-side apply) |
//! | `""` | `secrets` | get, list, watch, create, patch | database Secrets (read keys and user name); owned `<policy>-poolwarden-admin` |
//! | `""` | `pods` | list, watch | pods labelled `poolwarden.dev/policy` (counted, pushed to); never written |
//! | `events.k8s.io` | `events` | create, patch | one Event per transition (kube's `Recorder` patches a repeat into a series) |
//! | `coordination.k8s.io` | `leases` | get, create, patch | leader election (in the operator's namespace only) |

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use kube::Client;
use tokio::sync::watch;

use crate::autoscale::collect::{PrometheusSource, PrometheusSourceConfig};
use crate::controller::{self, Context, Scope};
use crate::leader::{self, LeaseConfig};
use crate::metrics::Metrics;
use crate::server::{self, ServerState};

/// Settings of `run`.
#[derive(Clone, Debug)]
pub struct RunConfig {
    /// Address of `/metrics`, `/healthz`, `/readyz`.
    pub metrics_listen: SocketAddr,
    /// Namespaces to reconcile.
    pub scope: Scope,
    /// Lease name; namespace `None` means the client's default namespace (in a pod: its own).
    pub lease_name: String,
    /// Lease namespace.
    pub lease_namespace: Option<String>,
    /// This replica's identity.
    pub identity: String,
    /// Lease duration and renew grace, seconds.
    pub lease_duration_seconds: u64,
    /// Seconds before expiry at which the holder renews.
    pub lease_grace_seconds: u64,
    /// The admission webhook; `None`: not served.
    pub webhook: Option<crate::webhook::WebhookConfig>,
    /// How often autoscaled policies are scraped and decided.
    pub scrape_interval: Duration,
    /// Read utilization from this Prometheus HTTP API instead of scraping each sidecar.
    pub prometheus_url: Option<String>,
}

/// A future that completes when the process gets SIGTERM or SIGINT.
async fn termination() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("install the SIGTERM handler");
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: shutting down"),
    }
}

/// Run the operator until SIGTERM.
pub async fn run(cfg: RunConfig) -> anyhow::Result<()> {
    let client = Client::try_default().await?;
    let metrics = Metrics::default();
    let ready = Arc::new(AtomicBool::new(false));
    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };

    let state = ServerState {
        metrics: metrics.clone(),
        ready: ready.clone(),
    };
    let (bound, server_task) =
        server::serve(cfg.metrics_listen, state, stopped(stop_rx.clone())).await?;
    tracing::info!(addr = %bound, "serving /metrics, /healthz, /readyz");
    // The admission webhook runs on every replica, beside the metrics server.
    let webhook_task = match cfg.webhook.clone() {
        Some(config) => {
            let addr = config.listen;
            let hook = crate::webhook::serve(client.clone(), config, stopped(stop_rx.clone()));
            tracing::info!(%addr, "serving the admission webhook");
            Some(tokio::spawn(hook))
        }
        None => {
            tracing::info!("admission webhook off (--webhook-listen \"\")");
            None
        }
    };

    tokio::spawn(async move {
        termination().await;
        let _ = stop_tx.send(true);
    });

    client.apiserver_version().await?;
    ready.store(true, Ordering::Release);

    let mut context = Context::new(client.clone(), metrics, cfg.identity.clone())
        .with_scrape_interval(cfg.scrape_interval);
    if let Some(url) = &cfg.prometheus_url {
        let source = PrometheusSource::new(PrometheusSourceConfig::new(url.clone()))?;
        tracing::info!(url = %url, "utilization from the Prometheus HTTP API");
        context = context.with_prometheus(source);
    }
    let ctx = Arc::new(context);
    let lease = LeaseConfig {
        name: cfg.lease_name.clone(),
        namespace: cfg
            .lease_namespace
            .clone()
            .unwrap_or_else(|| client.default_namespace().to_string()),
        identity: cfg.identity.clone(),
        duration_seconds: cfg.lease_duration_seconds,
        grace_seconds: cfg.lease_grace_seconds,
    };
    let scope = cfg.scope.clone();
    let rx = stop_rx.clone();
    let leader = leader::run_while_leader(client, lease, stop_rx.clone(), || {
        let ctx = ctx.clone();
        let work = controller::run(ctx.clone(), scope.clone(), stopped(rx.clone()));
        async move {
            work.await;
            // Only the leader exports per-policy sizes.
            ctx.metrics.autoscale.clear_gauges();
        }
    });
    tokio::pin!(leader);
    match webhook_task {
        // The webhook ends early only on an error (no certificate, port taken): fail loudly,
        // since pods labelled for a pool cannot start without it.
        Some(mut task) => tokio::select! {
            r = &mut leader => {
                r?;
                task.await??;
            }
            r = &mut task => {
                r?.map_err(|e| anyhow::anyhow!("admission webhook: {e}"))?;
                leader.await?;
            }
        },
        None => leader.await?,
    }
    server_task.await??;
    Ok(())
}
