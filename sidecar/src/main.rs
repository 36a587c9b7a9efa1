//! The `poolwarden-sidecar` binary: argument parsing and start-up; everything else is in the
//! library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use poolwarden_sidecar::config::{self, Overrides};

/// mimalloc instead of the C library's allocator: the release image links musl, whose
/// allocator is slow, and even glibc's spent a fifth of the sidecar's instructions per new
/// client connection (a task, an I/O registration, buffers; BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// PostgreSQL pooling proxy with SQLAlchemy QueuePool limits, timeouts and a circuit breaker.
#[derive(Parser, Debug)]
#[command(
    name = "poolwarden-sidecar",
    version,
    about,
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Validate a config file; print the effective config with secrets redacted; exit 0 or 1.
    CheckConfig {
        /// The YAML config file.
        file: PathBuf,
    },
}

#[derive(Args, Debug, Default)]
struct RunArgs {
    /// YAML config file (reloaded on SIGHUP and when it changes).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Shorthand for one database: postgres://user:pass@host:port/dbname?sslmode=require
    #[arg(long, value_name = "URL")]
    database_url: Option<String>,
    /// Client listener [default: 127.0.0.1:6432]
    #[arg(long, value_name = "ADDR")]
    listen: Option<String>,
    /// Admin HTTP listener [default: 0.0.0.0:9930]
    #[arg(long, value_name = "ADDR")]
    admin_listen: Option<String>,
    /// Server connections kept per pool [default: 20]
    #[arg(long, value_name = "N")]
    pool_size: Option<String>,
    /// Extra connections beyond pool_size [default: 10]
    #[arg(long, value_name = "N")]
    max_overflow: Option<String>,
    /// How long a client waits for a connection [default: 30s]
    #[arg(long, value_name = "DUR")]
    pool_timeout: Option<String>,
    /// Close server connections older than this [default: 1h]
    #[arg(long, value_name = "DUR")]
    pool_recycle: Option<String>,
    /// statement_timeout on every server connection [default: 30s]
    #[arg(long, value_name = "DUR")]
    statement_timeout: Option<String>,
    /// transaction | session [default: transaction]
    #[arg(long, value_name = "MODE")]
    mode: Option<String>,
}

impl RunArgs {
    fn overrides(&self) -> Overrides {
        Overrides {
            database_url: self.database_url.clone(),
            listen: self.listen.clone(),
            admin_listen: self.admin_listen.clone(),
            pool_size: self.pool_size.clone(),
            max_overflow: self.max_overflow.clone(),
            pool_timeout: self.pool_timeout.clone(),
            pool_recycle: self.pool_recycle.clone(),
            statement_timeout: self.statement_timeout.clone(),
            mode: self.mode.clone(),
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::CheckConfig { file }) => check_config(&file),
        None => {
            let flags = cli.run.overrides();
            match config::load(cli.run.config.as_deref(), &config::env::ProcessEnv, &flags) {
                Ok(cfg) => serve(
                    cfg,
                    config::ReloadSource {
                        file: cli.run.config.clone(),
                        env: std::sync::Arc::new(config::env::ProcessEnv),
                        flags,
                    },
                ),
                Err(e) => {
                    eprintln!("poolwarden-sidecar: {e}");
                    ExitCode::from(2)
                }
            }
        }
    }
}

fn serve(cfg: config::Config, source: config::ReloadSource) -> ExitCode {
    if let Err(e) = poolwarden_sidecar::logging::init(&config::env::ProcessEnv) {
        eprintln!("poolwarden-sidecar: cannot set up logging: {e}");
    }
    // With `data_path: event_loop` (the default) in transaction mode, `worker_threads` (default
    // 1) is the number of data plane loops, and tokio, which only waits, resets and the like
    // for them, keeps one thread. On `tasks` (or in session mode) tokio's threads serve the
    // clients: one (the default) is one event loop, no wake-ups handed between threads, the
    // least CPU per transaction (BENCHMARKS.md). Password hashing runs on tokio's blocking
    // threads either way.
    let loops =
        cfg.data_path == config::DataPath::EventLoop && cfg.mode == config::PoolMode::Transaction;
    let mut builder = if cfg.worker_threads <= 1 || loops {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(cfg.worker_threads as usize);
        b
    };
    tracing::info!(
        worker_threads = cfg.worker_threads,
        data_path = ?cfg.data_path,
        "serving clients on {} thread(s)",
        cfg.worker_threads
    );
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("poolwarden-sidecar: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(poolwarden_sidecar::run(cfg, source)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("poolwarden-sidecar: {e}");
            ExitCode::from(1)
        }
    }
}

fn check_config(file: &std::path::Path) -> ExitCode {
    match config::load(Some(file), &config::env::ProcessEnv, &Overrides::default()) {
        Ok(cfg) => {
            match serde_yaml_ng::to_string(&cfg) {
                Ok(text) => print!("{text}"),
                Err(e) => {
                    eprintln!("poolwarden-sidecar: cannot print the config: {e}");
                    return ExitCode::from(1);
                }
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("poolwarden-sidecar: {e}");
            ExitCode::from(1)
        }
    }
}
