//! HTTPS server for the admission webhook: `POST /mutate` (AdmissionReview v1) and
//! `GET /healthz`.
//!
//! Decisions, in order, for each request:
//! * not a Pod CREATE, or no `poolwarden.dev/policy` label → allowed, unchanged;
//! * the label names a policy that does not exist in the pod's namespace → refused, with a
//!   message naming policy and namespace;
//! * otherwise → allowed with the patch from [`mutate`](super::mutate()).
//!
//! The webhook reads `dbpoolpolicies` (verb `get`) and the apiserver's `/version` (to decide
//! on native sidecars, once per process). It has no side effects (`sideEffects: None`).

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::routing::{get, post};
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use k8s_openapi::api::core::v1::Pod;
use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation};
use kube::{Api, Client, ResourceExt};
use poolwarden_crds::DbPoolPolicy;
use tokio::net::TcpListener;
use tokio::sync::OnceCell;
use tokio_rustls::TlsAcceptor;

use super::tls::{RELOAD_INTERVAL, ReloadingCert, TlsError};
use super::{InjectOptions, MUTATE_PATH, POLICY_LABEL, mutate, supports_native_sidecars};

/// How long a client may take for its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long running requests may take to finish after shutdown was asked for.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the webhook server could not run.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The serving certificate could not be loaded.
    #[error("webhook TLS: {0}")]
    Tls(#[from] TlsError),
}

/// Where and how the webhook serves.
#[derive(Clone, Debug)]
pub struct WebhookConfig {
    /// Listen address.
    pub listen: SocketAddr,
    /// Directory with `tls.crt` and `tls.key`.
    pub cert_dir: PathBuf,
    /// The sidecar image the operator was installed with; replaces the CRD default image.
    pub sidecar_image: Option<String>,
}

/// Serve the webhook on `config.listen` with the certificate in `config.cert_dir` (`tls.crt`,
/// `tls.key`, re-read every 10 s when they change) until `shutdown` completes; then stop
/// accepting and give running requests up to 10 s to finish.
pub async fn serve(
    client: Client,
    config: WebhookConfig,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), WebhookError> {
    let WebhookConfig {
        listen: addr,
        cert_dir,
        sidecar_image,
    } = config;
    let certs = ReloadingCert::load(&cert_dir)?;
    let acceptor = TlsAcceptor::from(certs.server_config()?);
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| WebhookError::Bind { addr, source })?;
    tracing::info!(%addr, cert_dir = %cert_dir.display(), "admission webhook listening");
    let watcher = tokio::spawn(certs.watch(RELOAD_INTERVAL));
    let app = router(Arc::new(Webhook {
        client,
        native_sidecars: OnceCell::new(),
        sidecar_image,
    }));
    let graceful = GracefulShutdown::new();

    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    tracing::warn!(error = %e, "webhook accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let acceptor = acceptor.clone();
        let service = TowerToHyperService::new(app.clone());
        let watch = graceful.watcher();
        tokio::spawn(async move {
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    return tracing::debug!(%peer, error = %e, "webhook TLS handshake failed");
                }
                Err(_) => return tracing::debug!(%peer, "webhook TLS handshake timed out"),
            };
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(Duration::from_secs(30))
                .serve_connection(TokioIo::new(tls), service);
            if let Err(e) = watch.watch(conn).await {
                tracing::debug!(%peer, error = %e, "webhook connection ended with an error");
            }
        });
    }
    drop(listener);
    watcher.abort();
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("webhook connections still open after the drain timeout");
    }
    tracing::info!("admission webhook stopped");
    Ok(())
}

/// Shared state of the handlers.
struct Webhook {
    client: Client,
    /// Whether the apiserver supports native sidecars; asked once, kept for the process.
    native_sidecars: OnceCell<bool>,
    /// See [`WebhookConfig::sidecar_image`].
    sidecar_image: Option<String>,
}

fn router(state: Arc<Webhook>) -> Router {
    Router::new()
        .route(MUTATE_PATH, post(mutate_handler))
        .route("/healthz", get(|| async { "ok" }))
        .with_state(state)
}

async fn mutate_handler(
    State(hook): State<Arc<Webhook>>,
    body: Bytes,
) -> axum::Json<AdmissionReview<DynamicObject>> {
    let review: AdmissionReview<Pod> = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return axum::Json(
                AdmissionResponse::invalid(format!("not an AdmissionReview: {e}")).into_review(),
            );
        }
    };
    let request: AdmissionRequest<Pod> = match review.try_into() {
        Ok(r) => r,
        Err(_) => {
            return axum::Json(
                AdmissionResponse::invalid("AdmissionReview without a request").into_review(),
            );
        }
    };
    axum::Json(hook.review(&request).await.into_review())
}

impl Webhook {
    async fn review(&self, req: &AdmissionRequest<Pod>) -> AdmissionResponse {
        let allowed = AdmissionResponse::from(req);
        let Some(pod) = req
            .object
            .as_ref()
            .filter(|_| req.operation == Operation::Create)
        else {
            return allowed;
        };
        let Some(policy_name) = pod.labels().get(POLICY_LABEL) else {
            return allowed;
        };
        let namespace = req
            .namespace
            .clone()
            .or_else(|| pod.namespace())
            .unwrap_or_else(|| "default".into());
        let pod_name = if req.name.is_empty() {
            pod.metadata.generate_name.clone().unwrap_or_default()
        } else {
            req.name.clone()
        };
        let not_found = || {
            format!(
                "DbPoolPolicy {policy_name:?} not found in namespace {namespace:?}: pods labelled \
                 {POLICY_LABEL} must name an existing policy"
            )
        };
        if policy_name.is_empty() {
            return allowed.deny(not_found());
        }
        let policies: Api<DbPoolPolicy> = Api::namespaced(self.client.clone(), &namespace);
        let policy = match policies.get_opt(policy_name).await {
            Ok(Some(p)) => p,
            Ok(None) => {
                tracing::info!(%namespace, pod = %pod_name, policy = %policy_name, "pod refused: policy not found");
                return allowed.deny(not_found());
            }
            Err(e) => {
                tracing::warn!(%namespace, pod = %pod_name, policy = %policy_name, error = %e, "cannot read the policy");
                return allowed.deny(format!(
                    "cannot read DbPoolPolicy {policy_name:?} in namespace {namespace:?}: {e}"
                ));
            }
        };
        let options = InjectOptions {
            native_sidecars: self.native_sidecars().await,
            sidecar_image: self.sidecar_image.clone(),
        };
        let patch = match mutate(pod, &policy, &options) {
            Ok(p) => p,
            Err(e) => return allowed.deny(format!("cannot inject poolwarden-sidecar: {e}")),
        };
        if patch.0.is_empty() {
            tracing::debug!(%namespace, pod = %pod_name, "sidecar already present");
            return allowed;
        }
        tracing::info!(%namespace, pod = %pod_name, policy = %policy_name, native = options.native_sidecars, "injecting poolwarden-sidecar");
        match allowed.clone().with_patch(patch) {
            Ok(r) => r,
            Err(e) => allowed.deny(format!("cannot serialise the patch: {e}")),
        }
    }

    /// Native sidecars from the apiserver version, asked once. When the version cannot be read
    /// this request gets a regular container (which works everywhere) and the next one asks again.
    async fn native_sidecars(&self) -> bool {
        let ask = || async {
            let v = self.client.apiserver_version().await?;
            let native = supports_native_sidecars(&v.major, &v.minor);
            tracing::info!(version = %v.git_version, native_sidecars = native, "apiserver version");
            Ok::<_, kube::Error>(native)
        };
        match self.native_sidecars.get_or_try_init(ask).await {
            Ok(native) => *native,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the apiserver version; injecting a regular container");
                false
            }
        }
    }
}
