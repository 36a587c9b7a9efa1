//! The ConfigMap `<policy>-poolwarden` with the sidecar's `poolwarden.yaml`.
//!
//! The file is rendered from the sidecar crate's own [`Config`] type, so the operator can never
//! write a key the sidecar does not understand. It holds no secret: the database password
//! reaches the sidecar as `POOLWARDEN_DB_PASSWORD` and as the file the webhook mounts for each
//! database (`password_file`, a path from [`crate::webhook::mutate::db_password_file`]); the
//! admin token through the tokens file from the Secret `<policy>-poolwarden-admin`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::ObjectMeta;
use poolwarden_crds::{DbPoolPolicySpec, PoolMode, SslMode};
use poolwarden_sidecar::config::{
    AdminConfig, BreakerConfig, Config, ConfigDuration, DatabaseConfig, PoolConfig,
    PoolMode as SidecarMode, SslMode as SidecarSslMode,
};

use super::sizing::Sizing;

/// The key of the sidecar configuration file in the ConfigMap.
pub const CONFIG_KEY: &str = "poolwarden.yaml";
/// Where the admin Secret's `tokens` key is mounted in the sidecar.
pub const TOKENS_FILE: &str = "/var/run/poolwarden/admin/tokens";

/// The ConfigMap's name for a policy.
pub fn name(policy: &str) -> String {
    crate::webhook::config_map_name(policy)
}

/// Render the sidecar configuration. `users` maps each database `name` to the user name read
/// from its credentials Secret (a user name is not a secret).
pub fn render_config(
    spec: &DbPoolPolicySpec,
    users: &BTreeMap<String, String>,
    sizing: &Sizing,
) -> Config {
    let p = &spec.pool;
    let secs = |s: u32| ConfigDuration::from_secs(u64::from(s));
    Config {
        listen: SocketAddr::from(([127, 0, 0, 1], spec.sidecar.listen_port)),
        admin_listen: SocketAddr::from(([0, 0, 0, 0], spec.sidecar.admin_port)),
        mode: match p.mode {
            PoolMode::Transaction => SidecarMode::Transaction,
            PoolMode::Session => SidecarMode::Session,
        },
        databases: spec
            .databases
            .iter()
            .map(|db| DatabaseConfig {
                name: db.name.clone(),
                host: db.host.clone(),
                port: db.port,
                dbname: Some(db.server_dbname().to_string()),
                user: users.get(&db.name).cloned().unwrap_or_default(),
                password_file: crate::webhook::mutate::db_password_file(&db.name)
                    .map(PathBuf::from),
                password: None,
                sslmode: match db.ssl_mode {
                    SslMode::Disable => SidecarSslMode::Disable,
                    SslMode::Prefer => SidecarSslMode::Prefer,
                    SslMode::Require => SidecarSslMode::Require,
                    SslMode::VerifyCa => SidecarSslMode::VerifyCa,
                    SslMode::VerifyFull => SidecarSslMode::VerifyFull,
                },
                sslrootcert: None,
            })
            .collect(),
        pool: PoolConfig {
            pool_size: sizing.pool_size,
            max_overflow: sizing.max_overflow,
            pool_timeout: secs(p.pool_timeout_seconds),
            pool_recycle: secs(p.pool_recycle_seconds),
            pool_pre_ping: p.pre_ping,
            statement_timeout: secs(p.statement_timeout_seconds),
            idle_in_transaction_timeout: p.idle_in_transaction_timeout_seconds.map(secs),
            ..PoolConfig::default()
        },
        breaker: BreakerConfig {
            failure_threshold: spec.breaker.failure_threshold,
            open_for: secs(spec.breaker.open_seconds),
            message: spec.breaker.message.clone(),
        },
        admin: AdminConfig {
            tokens_file: Some(PathBuf::from(TOKENS_FILE)),
            token: None,
        },
        ..Config::default()
    }
}

/// The configuration as the YAML text of `poolwarden.yaml`.
pub fn render_yaml(config: &Config) -> String {
    serde_yaml_ng::to_string(config).expect("the sidecar Config always serialises")
}

/// The ConfigMap object (without owner references; the caller adds them).
pub fn build(policy: &str, namespace: &str, yaml: String) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(name(policy)),
            namespace: Some(namespace.to_string()),
            labels: Some(super::labels(policy)),
            ..ObjectMeta::default()
        },
        data: Some(BTreeMap::from([(CONFIG_KEY.to_string(), yaml)])),
        ..ConfigMap::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use poolwarden_crds::conditions::reasons;

    fn spec() -> DbPoolPolicySpec {
        serde_yaml_ng::from_str(
            r#"
databases:
  - {name: clinical, host: db.clinical.svc, port: 5433, dbname: clinical_prod, sslMode: require,
     credentialsSecretRef: {name: clinical-db}}
  - {name: audit, host: db.audit.svc, credentialsSecretRef: {name: audit-db}}
pool: {mode: session, poolSize: 20, maxOverflow: 10, poolTimeoutSeconds: 45, poolRecycleSeconds: 1800,
       prePing: false, statementTimeoutSeconds: 15, idleInTransactionTimeoutSeconds: 600}
breaker: {failureThreshold: 7, openSeconds: 12, message: "Try later"}
sidecar: {listenPort: 7432, adminPort: 9931}
"#,
        )
        .unwrap()
    }

    fn users() -> BTreeMap<String, String> {
        BTreeMap::from([
            ("clinical".into(), "clinical_app".into()),
            ("audit".into(), "auditor".into()),
        ])
    }

    fn sizing(pool_size: u32, max_overflow: u32) -> Sizing {
        Sizing {
            pool_size,
            max_overflow,
            reason: reasons::SPEC_CHANGED,
        }
    }

    #[test]
    fn spec_maps_onto_the_sidecar_config() {
        let c = render_config(&spec(), &users(), &sizing(25, 13));
        let table: Vec<(&str, String, &str)> = vec![
            ("listen", c.listen.to_string(), "127.0.0.1:7432"),
            ("admin_listen", c.admin_listen.to_string(), "0.0.0.0:9931"),
            ("mode", c.mode.as_str().into(), "session"),
            ("db0.host", c.databases[0].host.clone(), "db.clinical.svc"),
            ("db0.port", c.databases[0].port.to_string(), "5433"),
            (
                "db0.dbname",
                c.databases[0].server_dbname().into(),
                "clinical_prod",
            ),
            ("db0.user", c.databases[0].user.clone(), "clinical_app"),
            ("db1.dbname", c.databases[1].server_dbname().into(), "audit"),
            ("db1.port", c.databases[1].port.to_string(), "5432"),
            ("db1.user", c.databases[1].user.clone(), "auditor"),
            ("pool_size", c.pool.pool_size.to_string(), "25"),
            ("max_overflow", c.pool.max_overflow.to_string(), "13"),
            ("pool_timeout", c.pool.pool_timeout.to_string(), "45s"),
            ("pool_recycle", c.pool.pool_recycle.to_string(), "30m"),
            ("pre_ping", c.pool.pool_pre_ping.to_string(), "false"),
            (
                "statement_timeout",
                c.pool.statement_timeout.to_string(),
                "15s",
            ),
            (
                "idle_in_tx",
                c.pool.idle_in_transaction().to_string(),
                "10m",
            ),
            (
                "breaker.failure_threshold",
                c.breaker.failure_threshold.to_string(),
                "7",
            ),
            ("breaker.open_for", c.breaker.open_for.to_string(), "12s"),
            ("breaker.message", c.breaker.message.clone(), "Try later"),
            (
                "tokens_file",
                c.admin.tokens_file.as_ref().unwrap().display().to_string(),
                TOKENS_FILE,
            ),
        ];
        for (what, got, want) in table {
            assert_eq!(got, want, "{what}");
        }
        assert_eq!(c.databases[0].sslmode, SidecarSslMode::Require);
        assert_eq!(c.databases[1].sslmode, SidecarSslMode::Prefer);
    }

    #[test]
    fn the_sidecar_accepts_the_rendered_file_and_it_holds_no_secret() {
        let yaml = render_yaml(&render_config(&spec(), &users(), &sizing(25, 13)));
        let parsed: Config =
            serde_yaml_ng::from_str(&yaml).expect("the sidecar parses the rendered file");
        poolwarden_sidecar::config::validate(&parsed)
            .expect("the sidecar validates the rendered file");
        assert_eq!(
            parsed,
            render_config(&spec(), &users(), &sizing(25, 13)),
            "round trip"
        );
        for forbidden in ["password:", "token:", "<redacted>"] {
            assert!(!yaml.contains(forbidden), "{forbidden:?} in\n{yaml}");
        }
        // The password files the webhook mounts, one per database.
        assert!(
            yaml.contains("password_file: /var/run/poolwarden/db/clinical/password"),
            "{yaml}"
        );
        assert!(
            yaml.contains("password_file: /var/run/poolwarden/db/audit/password"),
            "{yaml}"
        );
        assert!(
            yaml.contains("tokens_file: /var/run/poolwarden/admin/tokens"),
            "{yaml}"
        );
    }

    #[test]
    fn only_the_size_changes_when_the_size_changes() {
        let a = render_yaml(&render_config(&spec(), &users(), &sizing(20, 10)));
        let b = render_yaml(&render_config(&spec(), &users(), &sizing(30, 15)));
        let diff: Vec<_> = a.lines().zip(b.lines()).filter(|(x, y)| x != y).collect();
        assert_eq!(
            diff,
            [
                ("  pool_size: 20", "  pool_size: 30"),
                ("  max_overflow: 10", "  max_overflow: 15")
            ]
        );
    }

    #[test]
    fn paths_agree_with_what_the_webhook_mounts() {
        use crate::reconcile::admin_secret::TOKENS_KEY;
        use crate::webhook::{ADMIN_DIR, CONFIG_DIR, CONFIG_FILE};
        assert_eq!(TOKENS_FILE, format!("{ADMIN_DIR}/{TOKENS_KEY}"));
        assert_eq!(CONFIG_FILE, format!("{CONFIG_DIR}/{CONFIG_KEY}"));
    }

    #[test]
    fn configmap_is_named_and_labelled_for_the_policy() {
        let cm = build("clinical-backend", "ns", "x".into());
        assert_eq!(
            cm.metadata.name.as_deref(),
            Some("clinical-backend-poolwarden")
        );
        assert_eq!(
            cm.metadata.labels.unwrap()["poolwarden.dev/policy"],
            "clinical-backend"
        );
        assert_eq!(cm.data.unwrap()[CONFIG_KEY], "x");
    }
}
