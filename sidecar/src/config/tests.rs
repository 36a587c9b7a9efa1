use std::time::Duration;

use super::*;

const FILE: &str = r#"
listen: 127.0.0.1:6432
admin_listen: 0.0.0.0:9930
mode: transaction
databases:
  - name: clinical
    host: db.clinical.svc
    port: 5432
    dbname: clinical
    user: clinical_app
    password_file: /var/run/poolwarden/db/password
    sslmode: prefer
pool:
  pool_size: 20
  max_overflow: 10
  pool_timeout: 30s
  pool_recycle: 1h
  pool_pre_ping: true
  statement_timeout: 30s
  idle_in_transaction_timeout: 1h
  connect_timeout: 5s
breaker:
  failure_threshold: 5
  open_for: 30s
  message: "Database temporarily unavailable. Please try again shortly."
clients:
  max_connections: 2000
  auth: trust
admin:
  tokens_file: /var/run/poolwarden/admin/tokens
slow_query_threshold: 5s
"#;

/// (environment, flags, expected error prefix)
type ErrorCase = (Vec<(&'static str, &'static str)>, Overrides, &'static str);
/// A change to a valid config that must make it invalid.
type Mutation = Box<dyn Fn(&mut Config)>;

fn no_env() -> std::collections::HashMap<String, String> {
    env::from_pairs(&[])
}

#[test]
fn contract_example_file_parses_to_the_defaults() {
    let cfg = resolve(
        parse_file("f", FILE).unwrap(),
        &no_env(),
        &Overrides::default(),
    )
    .unwrap();
    assert_eq!(
        cfg.pool,
        PoolConfig {
            idle_in_transaction_timeout: Some(ConfigDuration::from_secs(3600)),
            ..PoolConfig::default()
        }
    );
    assert_eq!(cfg.breaker, BreakerConfig::default());
    assert_eq!(
        (cfg.data_path, cfg.worker_threads),
        (DataPath::EventLoop, 1),
        "one event loop by default"
    );
    assert_eq!(cfg.databases[0].server_dbname(), "clinical");
    assert_eq!(cfg.pool.pool_timeout.secs_2dp(), "30.00");
}

#[test]
fn precedence_is_flag_over_env_over_file_over_default() {
    let file = parse_file("f", FILE).unwrap();
    let env = [
        ("POOLWARDEN_POOL_SIZE", "25"),
        ("POOLWARDEN_MAX_OVERFLOW", "12"),
        ("POOLWARDEN_MODE", "session"),
        ("POOLWARDEN_DATA_PATH", "tasks"),
        ("POOLWARDEN_WORKER_THREADS", "3"),
    ];
    let flags = Overrides {
        pool_size: Some("40".into()),
        ..Default::default()
    };
    let cfg = resolve(file.clone(), &env::from_pairs(&env), &flags).unwrap();
    assert_eq!(cfg.pool.pool_size, 40, "flag wins");
    assert_eq!(
        (cfg.data_path, cfg.worker_threads),
        (DataPath::Tasks, 3),
        "env beats default"
    );
    assert_eq!(cfg.pool.max_overflow, 12, "env beats file");
    assert_eq!(cfg.mode, PoolMode::Session);
    assert_eq!(
        cfg.pool.pool_timeout.get(),
        Duration::from_secs(30),
        "file value kept"
    );
    let cfg = resolve(
        Config {
            databases: file.databases,
            ..Config::default()
        },
        &no_env(),
        &Overrides::default(),
    )
    .unwrap();
    assert_eq!(
        cfg.pool.pool_recycle.get(),
        Duration::from_secs(3600),
        "default"
    );
}

#[test]
fn database_url_is_a_single_database_named_after_dbname() {
    let flags = Overrides {
        database_url: Some(
            "postgres://app:s%40cret@db.example:6543/clinical?sslmode=require".into(),
        ),
        ..Default::default()
    };
    let cfg = resolve(Config::default(), &no_env(), &flags).unwrap();
    let db = &cfg.databases[0];
    assert_eq!(
        (
            db.name.as_str(),
            db.host.as_str(),
            db.port,
            db.user.as_str()
        ),
        ("clinical", "db.example", 6543, "app")
    );
    assert_eq!(db.password.as_ref().unwrap().expose(), "s@cret");
    assert_eq!(db.sslmode, SslMode::Require);
    assert!(
        !format!("{cfg:?}").contains("s@cret"),
        "secrets are redacted in Debug"
    );
    assert!(
        !serde_yaml_ng::to_string(&cfg).unwrap().contains("s@cret"),
        "and in YAML"
    );
}

#[test]
fn db_password_env_fills_databases_without_a_password_of_their_own() {
    let env = [("POOLWARDEN_DB_PASSWORD", "pw")];
    let cfg = resolve(
        parse_file("f", FILE).unwrap(),
        &env::from_pairs(&env),
        &Overrides::default(),
    )
    .unwrap();
    // The example's database has a password_file: the per-database file wins.
    assert!(cfg.databases[0].password.is_none());
    let mut file = parse_file("f", FILE).unwrap();
    let mut second = file.databases[0].clone();
    second.name = "second".into();
    second.password_file = None;
    file.databases.push(second);
    let cfg = resolve(file, &env::from_pairs(&env), &Overrides::default()).unwrap();
    assert!(cfg.databases[0].password.is_none());
    assert_eq!(cfg.databases[1].password.as_ref().unwrap().expose(), "pw");
}

#[test]
fn errors_name_the_key_the_value_and_what_is_accepted() {
    let file = parse_file("f", FILE).unwrap();
    let table: Vec<ErrorCase> = vec![
        (
            vec![("POOLWARDEN_POOL_SIZE", "lots")],
            Overrides::default(),
            "invalid POOLWARDEN_POOL_SIZE: \"lots\" (accepted: an integer 1..=10000)",
        ),
        (
            vec![],
            Overrides {
                pool_size: Some("0".into()),
                ..Default::default()
            },
            "invalid --pool-size: \"0\" (accepted: an integer 1..=10000)",
        ),
        (
            vec![],
            Overrides {
                pool_timeout: Some("soon".into()),
                ..Default::default()
            },
            "invalid --pool-timeout: \"soon\"",
        ),
        (
            vec![("POOLWARDEN_WORKER_THREADS", "two")],
            Overrides::default(),
            "invalid POOLWARDEN_WORKER_THREADS: \"two\" (accepted: an integer 1..=64)",
        ),
        (
            vec![("POOLWARDEN_WORKER_THREADS", "0")],
            Overrides::default(),
            "invalid POOLWARDEN_WORKER_THREADS: \"0\" (accepted: an integer 1..=64)",
        ),
        (
            vec![("POOLWARDEN_MODE", "statement")],
            Overrides::default(),
            "invalid POOLWARDEN_MODE: \"statement\" (accepted: transaction | session)",
        ),
        (
            vec![],
            Overrides {
                listen: Some("nowhere".into()),
                ..Default::default()
            },
            "invalid --listen: nowhere",
        ),
        (
            vec![],
            Overrides {
                database_url: Some("mysql://a:secretpw@b/c".into()),
                ..Default::default()
            },
            "invalid --database-url: mysql://a:%3Credacted%3E@b/c",
        ),
    ];
    for (env, flags, want) in table {
        let err = resolve(file.clone(), &env::from_pairs(&env), &flags)
            .unwrap_err()
            .to_string();
        assert!(err.starts_with(want), "got {err:?}, want prefix {want:?}");
        assert!(!err.contains("secretpw"));
    }
}

#[test]
fn file_errors_point_at_the_key() {
    let err = parse_file("f", "pool:\n  pool_size: many\n")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("pool.pool_size") || err.contains("pool_size"),
        "{err}"
    );
    let err = parse_file("f", "pool:\n  pool_sise: 3\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("pool_sise"), "{err}");
    let err = parse_file("f", "pool:\n  pool_timeout: forever\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("250ms"), "{err}");
}

#[test]
fn validation_rules() {
    let base = resolve(
        parse_file("f", FILE).unwrap(),
        &no_env(),
        &Overrides::default(),
    )
    .unwrap();
    let cases: Vec<(Mutation, &str)> = vec![
        (Box::new(|c| c.databases.clear()), "missing databases"),
        (
            Box::new(|c| c.listen = "0.0.0.0:6432".parse().unwrap()),
            "invalid clients.auth",
        ),
        (
            Box::new(|c| c.clients.auth = ClientAuth::Md5),
            "missing clients.auth_file",
        ),
        (
            Box::new(|c| c.breaker.failure_threshold = 0),
            "invalid breaker.failure_threshold",
        ),
        (
            Box::new(|c| c.pool.pool_timeout = ConfigDuration::from_secs(0)),
            "invalid pool.pool_timeout",
        ),
        (
            Box::new(|c| {
                let d = c.databases[0].clone();
                c.databases.push(d)
            }),
            "invalid databases[1].name",
        ),
        (
            Box::new(|c| c.databases[0].sslmode = SslMode::VerifyCa),
            "missing databases[0].sslrootcert",
        ),
        (Box::new(|c| c.worker_threads = 0), "invalid worker_threads"),
        (
            Box::new(|c| c.worker_threads = 65),
            "invalid worker_threads",
        ),
    ];
    for (mutate, want) in cases {
        let mut c = base.clone();
        mutate(&mut c);
        let err = validate(&c).unwrap_err().to_string();
        assert!(err.starts_with(want), "got {err:?}, want {want:?}");
    }
    validate(&base).unwrap();
}

#[test]
fn rendered_yaml_parses_back_to_the_same_config() {
    let cfg = resolve(
        parse_file("f", FILE).unwrap(),
        &no_env(),
        &Overrides::default(),
    )
    .unwrap();
    let text = serde_yaml_ng::to_string(&cfg).unwrap();
    let again = resolve(
        parse_file("f", &text).unwrap(),
        &no_env(),
        &Overrides::default(),
    )
    .unwrap();
    assert_eq!(again, cfg);
}
