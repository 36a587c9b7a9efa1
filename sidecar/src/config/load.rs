//! file + environment + flags → validated [`Config`]. Precedence: flag > environment > file >
//! default.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;

use super::duration::{ACCEPTED as DURATION, ConfigDuration};
use super::env::{self, Env};
use super::error::ConfigError;
use super::model::*;

/// Settings given on the command line; `None` means "not given".
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    pub database_url: Option<String>,
    pub listen: Option<String>,
    pub admin_listen: Option<String>,
    pub pool_size: Option<String>,
    pub max_overflow: Option<String>,
    pub pool_timeout: Option<String>,
    pub pool_recycle: Option<String>,
    pub statement_timeout: Option<String>,
    pub mode: Option<String>,
}

/// Largest pool_size and max_overflow accepted.
pub const MAX_POOL: u32 = 10_000;

/// Parse a YAML config document (no environment or flags applied, not validated).
pub fn parse_file(path: &str, text: &str) -> Result<Config, ConfigError> {
    if text.trim().is_empty() {
        return Ok(Config::default());
    }
    serde_yaml_ng::from_str(text).map_err(|e| ConfigError::Parse {
        path: path.to_string(),
        message: e.to_string(),
    })
}

/// Read and parse the config file.
pub fn read_file(path: &Path) -> Result<Config, ConfigError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: shown.clone(),
        source,
    })?;
    parse_file(&shown, &text)
}

/// Build the effective config: defaults, then the file, then the environment, then flags;
/// then validate.
pub fn load(file: Option<&Path>, env: &dyn Env, flags: &Overrides) -> Result<Config, ConfigError> {
    let base = match file {
        Some(path) => read_file(path)?,
        None => Config::default(),
    };
    resolve(base, env, flags)
}

/// Apply environment and flags to a parsed file config, then validate.
pub fn resolve(mut cfg: Config, env: &dyn Env, flags: &Overrides) -> Result<Config, ConfigError> {
    // Environment.
    let from_env = Overrides {
        database_url: env.var(env::DATABASE_URL),
        listen: env.var(env::LISTEN),
        admin_listen: env.var(env::ADMIN_LISTEN),
        pool_size: env.var(env::POOL_SIZE),
        max_overflow: env.var(env::MAX_OVERFLOW),
        pool_timeout: env.var(env::POOL_TIMEOUT),
        pool_recycle: env.var(env::POOL_RECYCLE),
        statement_timeout: env.var(env::STATEMENT_TIMEOUT),
        mode: env.var(env::MODE),
    };
    apply(&mut cfg, &from_env, &EnvNames)?;
    if let Some(v) = env.var(env::DATA_PATH) {
        cfg.data_path = v
            .parse()
            .map_err(|bad| ConfigError::invalid(env::DATA_PATH, bad, DataPath::ACCEPTED))?;
    }
    if let Some(v) = env.var(env::WORKER_THREADS) {
        cfg.worker_threads = v
            .trim()
            .parse()
            .ok()
            .filter(|n| (1..=MAX_WORKER_THREADS).contains(n))
            .ok_or_else(|| {
                ConfigError::invalid(
                    env::WORKER_THREADS,
                    format!("{v:?}"),
                    format!("an integer 1..={MAX_WORKER_THREADS}"),
                )
            })?;
    }
    if let Some(token) = env.var(env::ADMIN_TOKEN) {
        cfg.admin.token = Some(Secret::new(token));
    }
    // Flags.
    apply(&mut cfg, flags, &FlagNames)?;
    // POOLWARDEN_DB_PASSWORD is the default password: it fills every database that has no
    // password of its own (from a URL) and no per-database password_file. A per-database
    // setting beats a pod-wide default, so several databases with several Secrets work.
    if let Some(pw) = env.var(env::DB_PASSWORD) {
        for db in &mut cfg.databases {
            if db.password.is_none() && db.password_file.is_none() {
                db.password = Some(Secret::new(pw.clone()));
            }
        }
    }
    validate(&cfg)?;
    Ok(cfg)
}

trait KeyNames {
    fn key(&self, file_key: &'static str) -> String;
}
struct EnvNames;
struct FlagNames;

impl KeyNames for EnvNames {
    fn key(&self, file_key: &'static str) -> String {
        match file_key {
            "database_url" => env::DATABASE_URL,
            "listen" => env::LISTEN,
            "admin_listen" => env::ADMIN_LISTEN,
            "pool.pool_size" => env::POOL_SIZE,
            "pool.max_overflow" => env::MAX_OVERFLOW,
            "pool.pool_timeout" => env::POOL_TIMEOUT,
            "pool.pool_recycle" => env::POOL_RECYCLE,
            "pool.statement_timeout" => env::STATEMENT_TIMEOUT,
            "mode" => env::MODE,
            other => other,
        }
        .to_string()
    }
}

impl KeyNames for FlagNames {
    fn key(&self, file_key: &'static str) -> String {
        let bare = file_key.rsplit('.').next().unwrap_or(file_key);
        format!("--{}", bare.replace('_', "-"))
    }
}

fn apply(cfg: &mut Config, o: &Overrides, names: &dyn KeyNames) -> Result<(), ConfigError> {
    if let Some(url) = &o.database_url {
        let db = parse_database_url(url)
            .map_err(|why| ConfigError::invalid(names.key("database_url"), redact_url(url), why))?;
        cfg.databases = vec![db];
    }
    if let Some(v) = &o.listen {
        cfg.listen = parse_addr(v).ok_or_else(|| {
            ConfigError::invalid(names.key("listen"), v, "an address such as 127.0.0.1:6432")
        })?;
    }
    if let Some(v) = &o.admin_listen {
        cfg.admin_listen = parse_addr(v).ok_or_else(|| {
            ConfigError::invalid(
                names.key("admin_listen"),
                v,
                "an address such as 0.0.0.0:9930",
            )
        })?;
    }
    if let Some(v) = &o.pool_size {
        cfg.pool.pool_size = parse_count(v, 1, names.key("pool.pool_size"))?;
    }
    if let Some(v) = &o.max_overflow {
        cfg.pool.max_overflow = parse_count(v, 0, names.key("pool.max_overflow"))?;
    }
    for (value, key, slot) in [
        (
            &o.pool_timeout,
            "pool.pool_timeout",
            &mut cfg.pool.pool_timeout,
        ),
        (
            &o.pool_recycle,
            "pool.pool_recycle",
            &mut cfg.pool.pool_recycle,
        ),
        (
            &o.statement_timeout,
            "pool.statement_timeout",
            &mut cfg.pool.statement_timeout,
        ),
    ] {
        if let Some(v) = value {
            *slot = v
                .parse::<ConfigDuration>()
                .map_err(|_| ConfigError::invalid(names.key(key), format!("{v:?}"), DURATION))?;
        }
    }
    if let Some(v) = &o.mode {
        cfg.mode = v
            .parse()
            .map_err(|bad| ConfigError::invalid(names.key("mode"), bad, PoolMode::ACCEPTED))?;
    }
    Ok(())
}

fn parse_addr(v: &str) -> Option<SocketAddr> {
    v.trim().parse().ok()
}

fn parse_count(v: &str, min: u32, key: String) -> Result<u32, ConfigError> {
    v.trim()
        .parse::<u32>()
        .ok()
        .filter(|n| (min..=MAX_POOL).contains(n))
        .ok_or_else(|| {
            ConfigError::invalid(
                key,
                format!("{v:?}"),
                format!("an integer {min}..={MAX_POOL}"),
            )
        })
}

/// Validate cross-field rules and ranges. Returns the first problem found.
pub fn validate(cfg: &Config) -> Result<(), ConfigError> {
    if cfg.databases.is_empty() {
        return Err(ConfigError::Missing {
            key: "databases".into(),
            hint: "give at least one database in the config file, --database-url or POOLWARDEN_DATABASE_URL".into(),
        });
    }
    let mut seen = std::collections::HashSet::new();
    for (i, db) in cfg.databases.iter().enumerate() {
        let key = |f: &str| format!("databases[{i}].{f}");
        if db.name.is_empty() || db.name.len() > 63 {
            return Err(ConfigError::invalid(
                key("name"),
                format!("{:?}", db.name),
                "1 to 63 characters",
            ));
        }
        if !seen.insert(db.name.as_str()) {
            return Err(ConfigError::invalid(
                key("name"),
                format!("{:?}", db.name),
                "a name used by no other database",
            ));
        }
        if db.host.is_empty() {
            return Err(ConfigError::invalid(
                key("host"),
                "\"\"",
                "a host name or IP address",
            ));
        }
        if db.port == 0 {
            return Err(ConfigError::invalid(key("port"), 0, "1..=65535"));
        }
        if db.user.is_empty() {
            return Err(ConfigError::invalid(
                key("user"),
                "\"\"",
                "a database user name",
            ));
        }
        if matches!(db.sslmode, SslMode::VerifyCa) && db.sslrootcert.is_none() {
            return Err(ConfigError::Missing {
                key: key("sslrootcert"),
                hint: "sslmode verify-ca needs the CA bundle that signed the server certificate"
                    .into(),
            });
        }
    }
    let p = &cfg.pool;
    if !(1..=MAX_POOL).contains(&p.pool_size) {
        return Err(ConfigError::invalid(
            "pool.pool_size",
            p.pool_size,
            format!("an integer 1..={MAX_POOL}"),
        ));
    }
    if p.max_overflow > MAX_POOL {
        return Err(ConfigError::invalid(
            "pool.max_overflow",
            p.max_overflow,
            format!("an integer 0..={MAX_POOL}"),
        ));
    }
    for (key, d) in [
        ("pool.pool_timeout", p.pool_timeout),
        ("pool.pool_recycle", p.pool_recycle),
        ("pool.connect_timeout", p.connect_timeout),
        ("pool.idle_in_transaction_timeout", p.idle_in_transaction()),
        ("breaker.open_for", cfg.breaker.open_for),
        ("clients.startup_timeout", cfg.clients.startup_timeout),
    ] {
        if d.get().is_zero() {
            return Err(ConfigError::invalid(key, d, "a duration above zero"));
        }
    }
    if p.statement_timeout.get().as_millis() > i32::MAX as u128 {
        return Err(ConfigError::invalid(
            "pool.statement_timeout",
            p.statement_timeout,
            "at most 24d",
        ));
    }
    if cfg.breaker.failure_threshold == 0 {
        return Err(ConfigError::invalid(
            "breaker.failure_threshold",
            0,
            "an integer of at least 1",
        ));
    }
    if cfg.breaker.message.trim().is_empty() {
        return Err(ConfigError::invalid(
            "breaker.message",
            "\"\"",
            "a message for clinicians",
        ));
    }
    if cfg.clients.max_connections == 0 {
        return Err(ConfigError::invalid(
            "clients.max_connections",
            0,
            "an integer of at least 1",
        ));
    }
    if cfg.clients.max_message_size < 1024 {
        return Err(ConfigError::invalid(
            "clients.max_message_size",
            cfg.clients.max_message_size,
            "at least 1024 bytes",
        ));
    }
    match cfg.clients.auth {
        ClientAuth::Trust if !is_loopback(cfg.listen.ip()) => {
            return Err(ConfigError::invalid(
                "clients.auth",
                format!("trust with listen {}", cfg.listen),
                "trust only on a loopback listener; use scram-sha-256 or md5 with clients.auth_file",
            ));
        }
        ClientAuth::ScramSha256 | ClientAuth::Md5 if cfg.clients.auth_file.is_none() => {
            return Err(ConfigError::Missing {
                key: "clients.auth_file".into(),
                hint: "scram-sha-256 and md5 need a PgBouncer-format users file".into(),
            });
        }
        _ => {}
    }
    if cfg.slow_query_threshold.get().is_zero() {
        return Err(ConfigError::invalid(
            "slow_query_threshold",
            cfg.slow_query_threshold,
            "a duration above zero",
        ));
    }
    if !(1..=MAX_WORKER_THREADS).contains(&cfg.worker_threads) {
        return Err(ConfigError::invalid(
            "worker_threads",
            cfg.worker_threads,
            format!("1..={MAX_WORKER_THREADS}"),
        ));
    }
    Ok(())
}

/// The most client-serving threads a sidecar may run.
pub const MAX_WORKER_THREADS: u32 = 64;

fn is_loopback(ip: IpAddr) -> bool {
    ip.is_loopback()
}

/// `postgres://user:pass@host:port/dbname?sslmode=require` → one database entry named after
/// `dbname`.
pub fn parse_database_url(text: &str) -> Result<DatabaseConfig, String> {
    const ACCEPTED: &str = "postgres://user[:password]@host[:port]/dbname[?sslmode=...]";
    let url = url::Url::parse(text.trim()).map_err(|_| ACCEPTED.to_string())?;
    if !matches!(url.scheme(), "postgres" | "postgresql") {
        return Err(ACCEPTED.into());
    }
    let host = url
        .host_str()
        .filter(|h| !h.is_empty())
        .ok_or_else(|| ACCEPTED.to_string())?;
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let dbname = url.path().trim_start_matches('/');
    if dbname.is_empty() {
        return Err(format!("{ACCEPTED} (the dbname is missing)"));
    }
    let dbname = decode(dbname)?;
    let user = decode(url.username())?;
    if user.is_empty() {
        return Err(format!("{ACCEPTED} (the user is missing)"));
    }
    let password = url.password().map(decode).transpose()?.map(Secret::new);
    let mut sslmode = SslMode::default();
    let mut sslrootcert = None;
    for (k, v) in url.query_pairs() {
        match k.as_ref() {
            "sslmode" => {
                sslmode = v
                    .parse()
                    .map_err(|_| format!("sslmode: {}", SslMode::ACCEPTED))?
            }
            "sslrootcert" => sslrootcert = Some(v.into_owned().into()),
            _ => {}
        }
    }
    Ok(DatabaseConfig {
        name: dbname.clone(),
        host,
        port: url.port().unwrap_or(5432),
        dbname: Some(dbname),
        user,
        password_file: None,
        password,
        sslmode,
        sslrootcert,
    })
}

fn decode(s: &str) -> Result<String, String> {
    url::form_urlencoded::parse(format!("x={}", s.replace('+', "%2B")).as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .ok_or_else(|| "bad percent-encoding".to_string())
}

/// A database URL with its password replaced, for error messages.
pub fn redact_url(text: &str) -> String {
    match url::Url::parse(text) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some(REDACTED));
            u.to_string()
        }
        Ok(u) => u.to_string(),
        Err(_) => "<unparseable URL>".into(),
    }
}
