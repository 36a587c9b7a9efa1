//! The `poolwarden-operator` binary.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use poolwarden_operator::controller::Scope;
use poolwarden_operator::run::{RunConfig, run};

/// Kubernetes operator for DbPoolPolicy.
#[derive(Parser, Debug)]
#[command(name = "poolwarden-operator", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Print the DbPoolPolicy CustomResourceDefinition as YAML.
    Crd,
    /// Run the operator: reconcile DbPoolPolicies while holding the leader Lease.
    Run(Box<RunArgs>),
}

#[derive(Args, Debug)]
struct RunArgs {
    /// Address of the operator's /metrics, /healthz and /readyz.
    #[arg(
        long,
        default_value = "0.0.0.0:8080",
        env = "POOLWARDEN_METRICS_LISTEN"
    )]
    metrics_listen: SocketAddr,
    /// Reconcile only this namespace (default: all namespaces).
    #[arg(long, env = "POOLWARDEN_WATCH_NAMESPACE")]
    watch_namespace: Option<String>,
    /// Name of the coordination.k8s.io Lease that elects the reconciling replica.
    #[arg(
        long,
        default_value = "poolwarden-operator",
        env = "POOLWARDEN_LEASE_NAME"
    )]
    lease_name: String,
    /// Namespace of the Lease (default: the operator pod's namespace).
    #[arg(long, env = "POD_NAMESPACE")]
    lease_namespace: Option<String>,
    /// Seconds the Lease stays valid after its last renewal; a crashed leader is replaced
    /// after at most this long.
    #[arg(long, default_value_t = 15, env = "POOLWARDEN_LEASE_DURATION_SECONDS")]
    lease_duration_seconds: u64,
    /// This replica's identity in the Lease and in Events (default: the pod name, else
    /// hostname-pid).
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    /// HTTPS address of the mutating admission webhook (`POST /mutate`), served by every
    /// replica. An empty value turns the webhook off (local runs without certificates).
    #[arg(
        long,
        default_value = "0.0.0.0:8443",
        env = "POOLWARDEN_WEBHOOK_LISTEN"
    )]
    webhook_listen: String,
    /// Directory with the webhook's serving certificate (tls.crt, tls.key); rotated files are
    /// picked up without a restart.
    #[arg(
        long,
        default_value = "/var/run/poolwarden/webhook-certs",
        env = "POOLWARDEN_WEBHOOK_CERT_DIR"
    )]
    webhook_cert_dir: PathBuf,
    /// The sidecar image to inject when a policy keeps the CRD's default `spec.sidecar.image`
    /// (the chart passes the image it was installed with). An image named in the policy wins.
    #[arg(long, env = "POOLWARDEN_SIDECAR_IMAGE")]
    sidecar_image: Option<String>,
    /// How often autoscaled policies' sidecars are scraped and the pool size decided
    /// (e.g. 15s, 1m).
    #[arg(long, default_value = "15s", value_parser = parse_interval, env = "POOLWARDEN_SCRAPE_INTERVAL")]
    scrape_interval: Duration,
    /// Read utilization from this Prometheus HTTP API (e.g. http://prometheus:9090) instead of
    /// scraping each sidecar's /api/metrics; series need `namespace` and `pod` labels.
    #[arg(long, env = "POOLWARDEN_PROMETHEUS_URL")]
    prometheus_url: Option<String>,
}

fn parse_interval(text: &str) -> Result<Duration, String> {
    let d = poolwarden_sidecar::config::parse_duration(text)?;
    if d < Duration::from_millis(100) {
        return Err(format!("{text:?} is below 100ms"));
    }
    Ok(d)
}

fn default_identity() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    format!("{}-{}", host.trim(), std::process::id())
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Crd => {
            print!("{}", poolwarden_crds::crd_yaml());
            ExitCode::SUCCESS
        }
        Command::Run(args) => {
            // One logging set-up for both binaries: JSON with POOLWARDEN_LOG_FORMAT=json (the
            // chart's default), RUST_LOG filter, default info.
            if let Err(e) =
                poolwarden_sidecar::logging::init(&poolwarden_sidecar::config::env::ProcessEnv)
            {
                eprintln!("poolwarden-operator: cannot set up logging: {e}");
                return ExitCode::FAILURE;
            }
            let cfg = RunConfig {
                metrics_listen: args.metrics_listen,
                scope: args
                    .watch_namespace
                    .map(Scope::Namespace)
                    .unwrap_or_default(),
                lease_name: args.lease_name,
                lease_namespace: args.lease_namespace,
                identity: args.identity.unwrap_or_else(default_identity),
                lease_duration_seconds: args.lease_duration_seconds,
                lease_grace_seconds: (args.lease_duration_seconds / 3).max(1),
                webhook: if args.webhook_listen.trim().is_empty() {
                    None
                } else {
                    match args.webhook_listen.parse() {
                        Ok(listen) => Some(poolwarden_operator::webhook::WebhookConfig {
                            listen,
                            cert_dir: args.webhook_cert_dir,
                            sidecar_image: args.sidecar_image.filter(|i| !i.trim().is_empty()),
                        }),
                        Err(_) => {
                            eprintln!(
                                "poolwarden-operator: invalid --webhook-listen: {:?} (accepted: an address such as 0.0.0.0:8443, or \"\" to turn the webhook off)",
                                args.webhook_listen
                            );
                            return ExitCode::from(2);
                        }
                    }
                },
                scrape_interval: args.scrape_interval,
                prometheus_url: args.prometheus_url,
            };
            let rt = tokio::runtime::Runtime::new().expect("start the tokio runtime");
            match rt.block_on(run(cfg)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!(error = %format!("{e:#}"), "operator failed");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
