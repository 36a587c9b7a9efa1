//! Live reload (CONTRACT §2.2): on SIGHUP, when the config file's content changes (a Kubernetes
//! ConfigMap volume swaps its `..data` symlink, so the resolved content is polled rather than
//! watched), and on an explicit request. Each new config is read and resolved with the same
//! environment and flags as at start-up and validated first; an invalid one is refused,
//! logged and counted (`poolwarden_config_reloads_total{result="failure"}`) and the running
//! config stays. A valid one goes to the `apply` callback and is counted as a success.
//!
//! ```text
//!  SIGHUP ─────────────┐
//!  file hash changed ──┼─▶ ReloadSource::load() ─▶ valid? ─yes─▶ apply(Arc<Config>) + success
//!  ReloadHandle ───────┘                                   └no──▶ log + failure, keep running
//! ```

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, oneshot};

use super::env::Env;
use super::{Config, ConfigError, Overrides, read_file, resolve};
use crate::metrics::{Metrics, ReloadResult};

/// How often the config file's content is checked by default.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(1);

/// Where configs come from: the file given at start-up, the environment and the flags.
#[derive(Clone)]
pub struct ReloadSource {
    /// The `--config` file (none: only the environment and flags, nothing to poll).
    pub file: Option<PathBuf>,
    /// The environment, read again at every reload.
    pub env: Arc<dyn Env + Send + Sync>,
    /// The command-line flags of this process.
    pub flags: Overrides,
}

impl std::fmt::Debug for ReloadSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReloadSource")
            .field("file", &self.file)
            .finish_non_exhaustive()
    }
}

impl ReloadSource {
    /// Read, resolve and validate the config as at start-up.
    pub fn load(&self) -> Result<Config, ConfigError> {
        let base = match &self.file {
            Some(path) => read_file(path)?,
            None => Config::default(),
        };
        resolve(base, self.env.as_ref(), &self.flags)
    }

    /// A digest of the file's current content (through any symlinks), `None` if unreadable.
    fn content_hash(&self) -> Option<[u8; 32]> {
        let path = self.file.as_ref()?;
        std::fs::read(path)
            .ok()
            .map(|bytes| Sha256::digest(bytes).into())
    }
}

/// What started a reload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReloadTrigger {
    /// SIGHUP.
    Signal,
    /// The config file's content changed.
    FileChanged,
    /// [`ReloadHandle::reload`] (for example from the admin API).
    Request,
}

impl ReloadTrigger {
    fn as_str(self) -> &'static str {
        match self {
            ReloadTrigger::Signal => "SIGHUP",
            ReloadTrigger::FileChanged => "config file changed",
            ReloadTrigger::Request => "request",
        }
    }
}

/// Why a requested reload did not apply.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The new config is invalid; the running one stays.
    #[error("config refused: {0}")]
    Invalid(#[from] ConfigError),
    /// The reload task has stopped.
    #[error("the reload task is not running")]
    Stopped,
}

impl ReloadError {
    /// The error for a log line or an API answer: values the YAML parser quoted from the file
    /// are masked.
    pub fn redacted(&self) -> String {
        match self {
            ReloadError::Invalid(e) => format!("config refused: {}", loggable(e)),
            ReloadError::Stopped => self.to_string(),
        }
    }
}

/// Settings of the reload task.
#[derive(Clone, Copy, Debug)]
pub struct ReloadOptions {
    /// How often the file's content is compared (default 1 s; short in tests).
    pub poll_interval: Duration,
    /// Reload on SIGHUP (default true).
    pub sighup: bool,
}

impl Default for ReloadOptions {
    fn default() -> Self {
        Self {
            poll_interval: DEFAULT_POLL_INTERVAL,
            sighup: true,
        }
    }
}

type Apply = Box<dyn FnMut(Arc<Config>, ReloadTrigger) + Send>;
type Reply = oneshot::Sender<Result<Arc<Config>, ReloadError>>;

/// Ask the reload task for a reload. Cheap to clone; the task stops when every handle is gone.
#[derive(Clone, Debug)]
pub struct ReloadHandle {
    tx: mpsc::Sender<Reply>,
}

impl ReloadHandle {
    /// Reload now; answers the config in force afterwards, or why the new one was refused.
    pub async fn reload(&self) -> Result<Arc<Config>, ReloadError> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(reply)
            .await
            .map_err(|_| ReloadError::Stopped)?;
        answer.await.map_err(|_| ReloadError::Stopped)?
    }
}

/// The reload task.
pub struct Reloader {
    source: ReloadSource,
    /// The file content's digest when the running config was read from it.
    last_hash: Option<[u8; 32]>,
    current: Arc<Config>,
    metrics: Option<Metrics>,
    options: ReloadOptions,
    apply: Apply,
}

impl std::fmt::Debug for Reloader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reloader")
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

impl Reloader {
    /// A reloader for the config `current`, just loaded from `source` (the file's content is
    /// taken as the running one's now). `apply` gets every accepted new config that differs
    /// from the running one.
    pub fn new(
        source: ReloadSource,
        current: Arc<Config>,
        apply: impl FnMut(Arc<Config>, ReloadTrigger) + Send + 'static,
    ) -> Self {
        Self {
            last_hash: source.content_hash(),
            source,
            current,
            metrics: None,
            options: ReloadOptions::default(),
            apply: Box::new(apply),
        }
    }

    /// Count outcomes in `poolwarden_config_reloads_total`.
    pub fn with_metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Change the poll interval or SIGHUP handling.
    pub fn with_options(mut self, options: ReloadOptions) -> Self {
        self.options = options;
        self
    }

    /// Start the task on the current tokio runtime. The SIGHUP handler is installed before
    /// this returns. The task ends when every [`ReloadHandle`] is dropped.
    pub fn spawn(self) -> std::io::Result<(ReloadHandle, tokio::task::JoinHandle<()>)> {
        use tokio::signal::unix::{SignalKind, signal};
        let hup = if self.options.sighup {
            Some(signal(SignalKind::hangup())?)
        } else {
            None
        };
        let (tx, rx) = mpsc::channel(8);
        let task = tokio::spawn(self.run(rx, hup));
        Ok((ReloadHandle { tx }, task))
    }

    async fn run(
        mut self,
        mut requests: mpsc::Receiver<Reply>,
        mut hup: Option<tokio::signal::unix::Signal>,
    ) {
        let mut last_hash = self.last_hash;
        let period = self.options.poll_interval;
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                request = requests.recv() => {
                    let Some(reply) = request else { return };
                    last_hash = self.source.content_hash();
                    let outcome = self.reload(ReloadTrigger::Request);
                    let _ = reply.send(outcome);
                }
                Some(()) = async { match hup.as_mut() { Some(h) => h.recv().await, None => None } } => {
                    last_hash = self.source.content_hash();
                    let _ = self.reload(ReloadTrigger::Signal);
                }
                _ = tick.tick(), if self.source.file.is_some() => {
                    let hash = self.source.content_hash();
                    if hash != last_hash {
                        last_hash = hash;
                        let _ = self.reload(ReloadTrigger::FileChanged);
                    }
                }
            }
        }
    }

    /// One reload attempt: load, validate, apply or refuse, count.
    fn reload(&mut self, trigger: ReloadTrigger) -> Result<Arc<Config>, ReloadError> {
        match self.source.load() {
            Ok(cfg) => {
                self.count(ReloadResult::Success);
                if cfg != *self.current {
                    let cfg = Arc::new(cfg);
                    self.current = cfg.clone();
                    tracing::info!(trigger = trigger.as_str(), "config reloaded");
                    (self.apply)(cfg, trigger);
                } else {
                    tracing::info!(
                        trigger = trigger.as_str(),
                        "config reloaded, nothing changed"
                    );
                }
                Ok(self.current.clone())
            }
            Err(e) => {
                self.count(ReloadResult::Failure);
                // ConfigError names the key and the bad value (secrets are redacted in it); a
                // YAML parse message may quote a value from the file, so those are masked.
                tracing::error!(
                    trigger = trigger.as_str(),
                    error = %loggable(&e),
                    "new config refused; the running config stays"
                );
                Err(ReloadError::Invalid(e))
            }
        }
    }

    fn count(&self, result: ReloadResult) {
        if let Some(m) = &self.metrics {
            m.record_reload(result);
        }
    }
}

/// The error as it may be logged: values quoted from the file by the YAML parser (which could
/// be a password written in the wrong place) are masked.
fn loggable(e: &ConfigError) -> String {
    match e {
        ConfigError::Parse { path, message } => {
            format!("invalid config file {path}: {}", mask_quoted(message))
        }
        other => other.to_string(),
    }
}

/// Replace every `...`, "..." or '...' span with `<value>`.
fn mask_quoted(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut chars = message.chars();
    while let Some(c) = chars.next() {
        if matches!(c, '`' | '"' | '\'') {
            out.push_str("<value>");
            for d in chars.by_ref() {
                if d == c {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;
    use std::path::Path;

    use super::*;
    use crate::config::env::from_pairs;

    /// A ConfigMap volume: `poolwarden.yaml -> ..data/poolwarden.yaml`, `..data -> ..<version>`.
    struct ConfigMapDir {
        dir: tempfile::TempDir,
        version: u32,
    }

    impl ConfigMapDir {
        fn new(content: &str) -> Self {
            let dir = tempfile::tempdir().unwrap();
            let mut me = Self { dir, version: 0 };
            me.swap(content);
            symlink("..data/poolwarden.yaml", me.file()).unwrap();
            me
        }
        fn file(&self) -> PathBuf {
            self.dir.path().join("poolwarden.yaml")
        }
        /// Publish new content the way the kubelet does: a new timestamped directory, a new
        /// `..data_tmp` symlink renamed over `..data`, the old directory removed.
        fn swap(&mut self, content: &str) {
            let root = self.dir.path();
            let old = format!("..v{}", self.version);
            self.version += 1;
            let new = format!("..v{}", self.version);
            std::fs::create_dir(root.join(&new)).unwrap();
            std::fs::write(root.join(&new).join("poolwarden.yaml"), content).unwrap();
            symlink(&new, root.join("..data_tmp")).unwrap();
            std::fs::rename(root.join("..data_tmp"), root.join("..data")).unwrap();
            if Path::new(&root.join(&old)).exists() {
                std::fs::remove_dir_all(root.join(&old)).unwrap();
            }
        }
    }

    fn yaml(pool_size: u32) -> String {
        format!(
            "databases:\n  - name: clinical\n    host: 127.0.0.1\n    user: app\npool:\n  pool_size: {pool_size}\n"
        )
    }

    fn reloads(m: &Metrics, result: &str) -> f64 {
        let text = m.encode();
        let scrape =
            prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).unwrap();
        scrape
            .samples
            .iter()
            .find(|s| {
                s.metric == "poolwarden_config_reloads_total"
                    && s.labels.get("result") == Some(result)
                    && s.labels.get("database") == Some("clinical")
            })
            .map(|s| match s.value {
                prometheus_parse::Value::Counter(v) => v,
                ref other => panic!("{other:?}"),
            })
            .unwrap()
    }

    fn setup(
        dir: &ConfigMapDir,
        env: &[(&str, &str)],
    ) -> (
        Reloader,
        mpsc::UnboundedReceiver<(Arc<Config>, ReloadTrigger)>,
        Metrics,
    ) {
        let source = ReloadSource {
            file: Some(dir.file()),
            env: Arc::new(from_pairs(env)),
            flags: Overrides::default(),
        };
        let initial = Arc::new(source.load().unwrap());
        let metrics = Metrics::new();
        metrics.pool("clinical");
        let (tx, rx) = mpsc::unbounded_channel();
        let reloader = Reloader::new(source, initial, move |cfg, trigger| {
            let _ = tx.send((cfg, trigger));
        })
        .with_metrics(metrics.clone())
        .with_options(ReloadOptions {
            poll_interval: Duration::from_millis(20),
            sighup: false,
        });
        (reloader, rx, metrics)
    }

    #[test]
    fn parse_errors_are_logged_without_quoted_values() {
        let yaml = "pool:\n  pool_size: hunter2\n";
        let err = crate::config::parse_file("poolwarden.yaml", yaml).unwrap_err();
        let shown = loggable(&err);
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(
            err.to_string().contains("hunter2"),
            "the raw message did quote it: {err}"
        );
        assert!(shown.contains("poolwarden.yaml"), "{shown}");
        assert_eq!(
            mask_quoted(r#"a `x` b "y" c 'z'"#),
            "a <value> b <value> c <value>"
        );
        let invalid = ConfigError::invalid("pool.pool_size", 0, "1..=10000");
        assert_eq!(loggable(&invalid), invalid.to_string());
    }

    /// Generous bound for the poller to notice a change.
    const WITHIN: Duration = Duration::from_secs(10);

    #[tokio::test]
    async fn a_configmap_symlink_swap_reloads_and_an_invalid_file_is_refused() {
        let mut dir = ConfigMapDir::new(&yaml(20));
        let (reloader, mut applied, metrics) = setup(&dir, &[]);
        let (handle, task) = reloader.spawn().unwrap();

        dir.swap(&yaml(25));
        let (cfg, trigger) = tokio::time::timeout(WITHIN, applied.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(cfg.pool.pool_size, 25);
        assert_eq!(trigger, ReloadTrigger::FileChanged);
        assert_eq!(reloads(&metrics, "success"), 1.0);

        // An invalid file (pool_size 0): refused, counted, the running config stays.
        dir.swap(&yaml(0));
        let deadline = tokio::time::Instant::now() + WITHIN;
        while reloads(&metrics, "failure") < 1.0 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the invalid file was not noticed"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(
            applied.try_recv().is_err(),
            "an invalid config must not be applied"
        );
        // Not retried on every poll while unchanged.
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(reloads(&metrics, "failure"), 1.0);
        // An explicit request reads the same invalid file: refused again, with the reason.
        match handle.reload().await {
            Err(ReloadError::Invalid(e)) => {
                assert!(e.to_string().contains("pool.pool_size"), "{e}")
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(reloads(&metrics, "failure"), 2.0);

        // Garbage YAML is refused too.
        dir.swap("databases: [unclosed\n");
        let deadline = tokio::time::Instant::now() + WITHIN;
        while reloads(&metrics, "failure") < 3.0 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the broken file was not noticed"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }

        // Fixed: applied again.
        dir.swap(&yaml(5));
        let (cfg, _) = tokio::time::timeout(WITHIN, applied.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(cfg.pool.pool_size, 5);
        assert_eq!(reloads(&metrics, "success"), 2.0);

        drop(handle);
        tokio::time::timeout(WITHIN, task).await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn a_request_reloads_with_the_same_environment() {
        let dir = ConfigMapDir::new(&yaml(20));
        // The environment overrides the file, at start and at every reload.
        let (reloader, mut applied, metrics) = setup(
            &dir,
            &[
                ("POOLWARDEN_MAX_OVERFLOW", "3"),
                ("POOLWARDEN_DB_PASSWORD", "pw"),
            ],
        );
        let (handle, _task) = reloader.spawn().unwrap();
        // Unchanged: a success, nothing applied.
        let cfg = handle.reload().await.unwrap();
        assert_eq!(cfg.pool.max_overflow, 3);
        assert!(applied.try_recv().is_err());
        assert_eq!(reloads(&metrics, "success"), 1.0);
        // Change the file in place (not a swap) and ask.
        std::fs::write(dir.dir.path().join("..data/poolwarden.yaml"), yaml(7)).unwrap();
        let cfg = handle.reload().await.unwrap();
        assert_eq!((cfg.pool.pool_size, cfg.pool.max_overflow), (7, 3));
        assert_eq!(cfg.databases[0].password.as_ref().unwrap().expose(), "pw");
        let (got, trigger) = applied.recv().await.unwrap();
        assert_eq!(got.pool.pool_size, 7);
        assert!(matches!(
            trigger,
            ReloadTrigger::Request | ReloadTrigger::FileChanged
        ));
    }
}
