//! Client authentication at the sidecar: scram-sha-256 and md5 against a PgBouncer-style
//! users file, with a real driver; the server side stays trust.

use poolwarden_tests::sidecar::{Sidecar, TempDir, config_yaml, scalar};

async fn login(sidecar: &Sidecar, user: &str, password: &str) -> Result<String, String> {
    let conninfo = format!(
        "host=127.0.0.1 port={} user={user} password={password} dbname=postgres",
        sidecar.port
    );
    match tokio_postgres::connect(&conninfo, tokio_postgres::NoTls).await {
        Ok((c, conn)) => {
            tokio::spawn(conn);
            scalar(&c, "SELECT current_user")
                .await
                .map_err(|e| e.to_string())
        }
        Err(e) => Err(e
            .as_db_error()
            .map(|d| d.code().code().to_string())
            .unwrap_or_else(|| e.to_string())),
    }
}

fn sidecar_with(method: &str, users: &str, dir: &TempDir) -> Sidecar {
    let file = dir.path().join(format!("users-{method}"));
    std::fs::write(&file, users).unwrap();
    Sidecar::start_with(|port| {
        config_yaml(
            port,
            "postgres",
            "transaction",
            "  pool_size: 1\n  max_overflow: 0",
            &format!(
                "clients:\n  auth: {method}\n  auth_file: {}",
                file.display()
            ),
        )
    })
}

#[tokio::test]
async fn scram_and_md5_clients_against_the_users_file() {
    let dir = TempDir::new("poolwarden-users");
    // md5 secret = "md5" + md5(password + user) for user "app", password "md5-pw".
    let md5 = format!("md5{:x}", md5_of(b"md5-pwapp"));
    let users = format!("\"postgres\" \"scram-pw\"\n\"app\" \"{md5}\"\n");

    let s = sidecar_with("scram-sha-256", &users, &dir);
    assert_eq!(
        login(&s, "postgres", "scram-pw").await.as_deref(),
        Ok("postgres")
    );
    assert_eq!(
        login(&s, "postgres", "wrong").await,
        Err("28P01".to_string())
    );
    assert_eq!(
        login(&s, "nobody", "scram-pw").await,
        Err("28P01".to_string())
    );
    drop(s);

    let s = sidecar_with("md5", &users, &dir);
    // The server side logs in as the configured user (postgres) whoever the client is.
    assert_eq!(login(&s, "app", "md5-pw").await.as_deref(), Ok("postgres"));
    assert_eq!(login(&s, "app", "nope").await, Err("28P01".to_string()));
    assert_eq!(
        login(&s, "postgres", "scram-pw").await.as_deref(),
        Ok("postgres")
    );
}

/// md5 of `data` (via the openssl command line, to keep this crate's dependencies small).
fn md5_of(data: &[u8]) -> u128 {
    use std::io::Write;
    let mut child = std::process::Command::new("openssl")
        .args(["dgst", "-md5", "-r"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("openssl");
    child.stdin.take().unwrap().write_all(data).unwrap();
    let out = child.wait_with_output().unwrap();
    let hex = String::from_utf8(out.stdout).unwrap();
    u128::from_str_radix(hex.split_whitespace().next().unwrap(), 16).unwrap()
}
