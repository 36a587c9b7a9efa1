//! Logging in to the server: SCRAM-SHA-256, md5 and cleartext passwords (from the config
//! or a password file re-read at every connect), and TLS per sslmode with rustls, against a
//! private PostgreSQL cluster with its own pg_hba.conf and certificates.

use std::path::Path;

use poolwarden_tests::pg_instance::{PgInstance, make_certs};
use poolwarden_tests::sidecar::{Sidecar, scalar, through};

const HBA: &str = "\
local all all trust
hostssl all scram_user 127.0.0.1/32 scram-sha-256
hostnossl all md5_user 127.0.0.1/32 md5
host all clear_user 127.0.0.1/32 password
";

fn cluster() -> PgInstance {
    let pg = PgInstance::start(
        HBA,
        "ssl = on\nssl_cert_file = '{dir}/server.crt'\nssl_key_file = '{dir}/server.key'\n",
        make_certs,
    );
    pg.psql("SET password_encryption = 'scram-sha-256'; CREATE ROLE scram_user LOGIN PASSWORD 's3cret-scram'");
    pg.psql("SET password_encryption = 'md5'; CREATE ROLE md5_user LOGIN PASSWORD 's3cret-md5'");
    pg.psql("CREATE ROLE clear_user LOGIN PASSWORD 's3cret-clear'");
    pg
}

/// A sidecar for one database entry (`db` is its YAML body lines after `name`).
fn sidecar(db: &str) -> Sidecar {
    Sidecar::start_with(|port| {
        format!(
            "listen: 127.0.0.1:{port}\nadmin_listen: 127.0.0.1:{}\ndatabases:\n  - name: postgres\n{db}\npool:\n  pool_size: 1\n  max_overflow: 0\n  connect_timeout: 3s\n",
            poolwarden_tests::sidecar::free_port()
        )
    })
}

fn entry(host: &str, port: u16, user: &str, sslmode: &str, extra: &str) -> String {
    format!("    host: {host}\n    port: {port}\n    user: {user}\n    sslmode: {sslmode}\n{extra}")
}

async fn login_code(s: &Sidecar) -> Result<String, String> {
    match through(s, "postgres", "pw_auth").await {
        Ok((c, _conn)) => Ok(scalar(&c, "SELECT current_user || ' ' || coalesce((SELECT ssl::text FROM pg_stat_ssl WHERE pid = pg_backend_pid()), '?')")
            .await
            .map_err(|e| e.to_string())?),
        Err(e) => Err(e.as_db_error().map(|d| d.code().code().to_string()).unwrap_or_else(|| e.to_string())),
    }
}

#[tokio::test]
async fn scram_md5_cleartext_and_tls_modes() {
    let pg = cluster();
    let dir = pg.dir().to_path_buf();
    let ca = dir.join("ca.crt");
    let other_ca = dir.join("other-ca.crt");
    let pwfile = dir.join("scram.pw");
    std::fs::write(&pwfile, "s3cret-scram\n").unwrap();
    let root = |p: &Path| format!("    sslrootcert: {}\n", p.display());
    let pw = |p: &str| format!("    password: {p}\n");
    let pwf = format!("    password_file: {}\n", pwfile.display());

    // SCRAM over verify-full (host name matches the certificate), password from a file.
    let s = sidecar(&entry(
        "localhost",
        pg.port,
        "scram_user",
        "verify-full",
        &(root(&ca) + &pwf),
    ));
    assert_eq!(login_code(&s).await.as_deref(), Ok("scram_user true"));
    // The file is re-read for each new server connection: rotate the password. Until the
    // file has the new one, new server connections are refused with a clear error naming the
    // server's 28P01; then the sidecar uses the new file without a restart.
    pg.psql("ALTER ROLE scram_user PASSWORD 'rotated-scram'");
    // pg_terminate_backend only signals the backend unless given a timeout: wait for it to
    // exit, so its FATAL is in the pooled connection's socket before the next checkout (whose
    // pre-ping then finds it) rather than racing it.
    pg.psql(
        "DO $$ DECLARE p int; BEGIN \
           FOR p IN SELECT pid FROM pg_stat_activity WHERE usename = 'scram_user' LOOP \
             IF NOT pg_terminate_backend(p, 10000) \
                AND EXISTS (SELECT 1 FROM pg_stat_activity WHERE pid = p) THEN \
               RAISE EXCEPTION 'backend % outlived pg_terminate_backend', p; \
             END IF; \
           END LOOP; \
         END $$",
    );
    let refused = match through(&s, "postgres", "pw_auth").await {
        Ok((c, _conn)) => scalar(&c, "SELECT 1")
            .await
            .expect_err("the old password still worked"),
        Err(e) => e,
    };
    let text = refused
        .as_db_error()
        .map(|d| format!("{} {}", d.code().code(), d.message()));
    assert!(
        text.as_deref()
            .is_some_and(|t| t.starts_with("08006") && t.contains("28P01")),
        "unclear error for a rotated password: {refused:?}"
    );
    std::fs::write(&pwfile, "rotated-scram\n").unwrap();
    assert_eq!(login_code(&s).await.as_deref(), Ok("scram_user true"));
    drop(s);

    // Table: (host, user, sslmode, extra) -> expected.
    type Case = (
        &'static str,
        &'static str,
        &'static str,
        String,
        Result<&'static str, &'static str>,
    );
    let cases: Vec<Case> = vec![
        // verify-full with a host name the certificate does not hold.
        (
            "127.0.0.1",
            "scram_user",
            "verify-full",
            root(&ca) + &pwf,
            Err("08006"),
        ),
        // verify-ca checks the chain only.
        (
            "127.0.0.1",
            "scram_user",
            "verify-ca",
            root(&ca) + &pwf,
            Ok("scram_user true"),
        ),
        // A chain from another CA is refused.
        (
            "localhost",
            "scram_user",
            "verify-ca",
            root(&other_ca) + &pwf,
            Err("08006"),
        ),
        // require: encrypted, not verified.
        (
            "127.0.0.1",
            "scram_user",
            "require",
            pwf.clone(),
            Ok("scram_user true"),
        ),
        // disable against a hostssl-only user: refused by the server.
        (
            "127.0.0.1",
            "scram_user",
            "disable",
            pwf.clone(),
            Err("08006"),
        ),
        // wrong password.
        (
            "127.0.0.1",
            "scram_user",
            "require",
            pw("nope"),
            Err("08006"),
        ),
        // md5 without TLS, password from the config.
        (
            "127.0.0.1",
            "md5_user",
            "disable",
            pw("s3cret-md5"),
            Ok("md5_user false"),
        ),
        // cleartext password over TLS (prefer upgrades).
        (
            "127.0.0.1",
            "clear_user",
            "prefer",
            pw("s3cret-clear"),
            Ok("clear_user true"),
        ),
    ];
    for (host, user, mode, extra, want) in cases {
        let s = sidecar(&entry(host, pg.port, user, mode, &extra));
        let got = login_code(&s).await;
        assert_eq!(
            got.as_deref().map_err(|e| e.as_ref()),
            want,
            "{host} {user} {mode}\n{}",
            s.log()
        );
    }
}
