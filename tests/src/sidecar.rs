//! Starting the real `poolwarden-sidecar` binary for end-to-end tests: a config file in a
//! temp dir, a free loopback port, wait until it accepts, kill it on drop.

use std::io::Read;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// The real PostgreSQL every test shares.
pub const PG_HOST: &str = "127.0.0.1";
/// Its port.
pub const PG_PORT: u16 = 5432;

/// Where `cargo build -p poolwarden-sidecar` puts the binary.
pub fn sidecar_binary() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let bin = target.join("debug/poolwarden-sidecar");
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build -p poolwarden-sidecar` first (scripts/test does)",
        bin.display()
    );
    bin
}

/// A free port on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind :0")
        .local_addr()
        .expect("addr")
        .port()
}

/// A fresh directory under the system temp dir, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    /// Create one.
    pub fn new(prefix: &str) -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "{prefix}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::create_dir_all(&dir).expect("create temp dir");
        Self(dir)
    }
    /// Its path.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A running sidecar.
pub struct Sidecar {
    child: Child,
    /// Its client port on 127.0.0.1.
    pub port: u16,
    dir: TempDir,
}

/// A config for one database `dbname` on the shared PostgreSQL; `pool` is the YAML body of
/// the `pool:` section (indented by two spaces), `extra` more top-level YAML.
pub fn config_yaml(port: u16, dbname: &str, mode: &str, pool: &str, extra: &str) -> String {
    format!(
        "listen: 127.0.0.1:{port}\nadmin_listen: 127.0.0.1:{admin}\nmode: {mode}\n\
         databases:\n  - name: {dbname}\n    host: {PG_HOST}\n    port: {PG_PORT}\n    user: postgres\n    sslmode: disable\n\
         pool:\n{pool}\n{extra}\n",
        admin = free_port(),
    )
}

impl Sidecar {
    /// Start with a full config (see [`config_yaml`]) and wait until it accepts clients.
    /// A port found free can be taken before the sidecar binds it (another test's outgoing
    /// connection gets it as its local port): the start is then tried again on new ports.
    pub fn start_with(yaml: impl Fn(u16) -> String) -> Self {
        const ATTEMPTS: usize = 5;
        for attempt in 1..=ATTEMPTS {
            let port = free_port();
            let dir = TempDir::new("poolwarden-sidecar");
            let file = dir.path().join("poolwarden.yaml");
            let text = yaml(port);
            std::fs::write(&file, &text).expect("write config");
            let mut command = Command::new(sidecar_binary());
            // A test that sets worker_threads itself gets them (the environment would win):
            // POOLWARDEN_WORKER_THREADS sets the loops for the rest, as the event-loop
            // passes of scripts/test do.
            if text.contains("\nworker_threads:") {
                command.env_remove("POOLWARDEN_WORKER_THREADS");
            }
            let child = command
                .arg("--config")
                .arg(&file)
                .env("RUST_LOG", "info")
                .env_remove("POOLWARDEN_DATABASE_URL")
                .env_remove("POOLWARDEN_POOL_SIZE")
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(dir.path().join("sidecar.log")).expect("log file"))
                .spawn()
                .expect("start poolwarden-sidecar");
            let mut s = Sidecar { child, port, dir };
            match s.wait_ready() {
                Ok(()) => return s,
                Err(log) if attempt < ATTEMPTS && log.contains("Address already in use") => {}
                Err(log) => {
                    // The message carries the log: stop the sidecar first, so its `Drop` does
                    // not print the log a second time during the panic.
                    drop(s);
                    panic!("{log}")
                }
            }
        }
        unreachable!("the last attempt returns or panics")
    }

    /// Start in `mode` for database `dbname` with the given `pool:` lines.
    pub fn start(dbname: &str, mode: &str, pool: &str) -> Self {
        Self::start_with(|port| config_yaml(port, dbname, mode, pool, ""))
    }

    // A synchronous helper (process start-up), used before a test's async work begins.
    #[allow(clippy::disallowed_methods)]
    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return Ok(());
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!(
                    "sidecar exited with {status} before accepting clients:\n{}",
                    self.log()
                ));
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "sidecar did not accept clients in 20 s:\n{}",
                    self.log()
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The sidecar's log so far.
    pub fn log(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = std::fs::File::open(self.dir.path().join("sidecar.log")) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }

    /// The config file it was started with.
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("poolwarden.yaml")
    }

    /// Its directory (config, log); files a test puts there go away with it.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// `host:port` of its admin API, from the `admin_listen:` line of its config.
    pub fn admin_addr(&self) -> String {
        let text = std::fs::read_to_string(self.config_path()).expect("read the config");
        text.lines()
            .find_map(|l| l.trim().strip_prefix("admin_listen:"))
            .map(|v| v.trim().to_string())
            .expect("admin_listen in the config")
    }

    /// Send `signal` (e.g. `HUP`) to the process.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("kill");
        assert!(status.success(), "kill -{signal} failed");
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A libpq-style connection string through the sidecar.
    pub fn conninfo(&self, dbname: &str, application_name: &str) -> String {
        format!(
            "host=127.0.0.1 port={} user=postgres dbname={dbname} application_name={application_name}",
            self.port
        )
    }

    /// Send SIGTERM and wait for the exit status (at most `limit`). Blocking: call it from
    /// `spawn_blocking` in async tests.
    #[allow(clippy::disallowed_methods)]
    pub fn terminate(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- sidecar log ---\n{}", self.log());
        }
    }
}

/// A tokio-postgres client straight to PostgreSQL (not through the sidecar), its connection
/// driven by a spawned task.
pub async fn direct(dbname: &str) -> tokio_postgres::Client {
    direct_at(PG_PORT, dbname).await
}

/// As [`direct`], to the PostgreSQL on `port` of this host (a throwaway cluster).
pub async fn direct_at(port: u16, dbname: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(
        &format!("host={PG_HOST} port={port} user=postgres dbname={dbname} application_name=poolwarden-tests-direct"),
        tokio_postgres::NoTls,
    )
    .await
    .expect("connect to PostgreSQL directly");
    tokio::spawn(conn);
    client
}

/// A tokio-postgres client through the sidecar. Its connection task's result is returned
/// too, so a test can see how the session ended (e.g. a FATAL from the sidecar).
pub async fn through(
    sidecar: &Sidecar,
    dbname: &str,
    application_name: &str,
) -> Result<
    (
        tokio_postgres::Client,
        tokio::task::JoinHandle<Result<(), tokio_postgres::Error>>,
    ),
    tokio_postgres::Error,
> {
    let (client, conn) = tokio_postgres::connect(
        &sidecar.conninfo(dbname, application_name),
        tokio_postgres::NoTls,
    )
    .await?;
    Ok((client, tokio::spawn(conn)))
}

/// The first column of the first row of a simple query, as text.
pub async fn scalar(
    client: &tokio_postgres::Client,
    sql: &str,
) -> Result<String, tokio_postgres::Error> {
    for m in client.simple_query(sql).await? {
        if let tokio_postgres::SimpleQueryMessage::Row(r) = m {
            return Ok(r.get(0).unwrap_or("").to_string());
        }
    }
    Ok(String::new())
}

/// Backends on the shared PostgreSQL with this application_name.
pub async fn backends(direct: &tokio_postgres::Client, application_name: &str) -> i64 {
    direct
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1",
            &[&application_name],
        )
        .await
        .expect("count backends")
        .get(0)
}

/// A name unique to this test process.
pub fn unique(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}_{}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    )
}
