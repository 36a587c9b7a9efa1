//! A throwaway PostgreSQL cluster (initdb + pg_ctl, as the `postgres` user) on a free port,
//! for tests that need their own authentication or TLS set-up. Stopped and removed on drop.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::sidecar::{TempDir, free_port};

/// A running private cluster.
pub struct PgInstance {
    dir: TempDir,
    /// Its port on 127.0.0.1.
    pub port: u16,
}

fn pg_bin(name: &str) -> PathBuf {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.path().join("bin"))
                .collect()
        })
        .unwrap_or_default();
    dirs.sort();
    dirs.pop()
        .map(|d| d.join(name))
        .unwrap_or_else(|| PathBuf::from(name))
}

fn as_postgres(args: &[&str]) -> std::process::Output {
    let out = Command::new("runuser")
        .args(["-u", "postgres", "--"])
        .args(args)
        .output()
        .expect("runuser");
    assert!(
        out.status.success(),
        "{args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Run a shell-free command, asserting success.
pub fn run(cmd: &str, args: &[&str]) {
    let out = Command::new(cmd).args(args).output().expect(cmd);
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl PgInstance {
    /// initdb, write `pg_hba.conf` and extra `postgresql.conf` lines (paths may use `{dir}`
    /// for the cluster's parent directory), start. `prepare` runs before the start with the
    /// parent directory (to write certificates, for instance).
    pub fn start(hba: &str, conf: &str, prepare: impl FnOnce(&Path)) -> Self {
        let dir = TempDir::new("poolwarden-pg");
        let data = dir.path().join("data");
        prepare(dir.path());
        run(
            "chown",
            &["-R", "postgres:postgres", &dir.path().to_string_lossy()],
        );
        as_postgres(&[
            &pg_bin("initdb").to_string_lossy(),
            "-D",
            &data.to_string_lossy(),
            "-U",
            "postgres",
            "--auth=trust",
            "-N",
        ]);
        let port = free_port();
        let d = dir.path().to_string_lossy().into_owned();
        std::fs::write(data.join("pg_hba.conf"), hba.replace("{dir}", &d)).unwrap();
        let mut extra = std::fs::read_to_string(data.join("postgresql.conf")).unwrap();
        extra.push_str(&format!(
            "\nlisten_addresses = '127.0.0.1'\nport = {port}\nunix_socket_directories = '{d}'\nmax_connections = 20\nfsync = off\n{}\n",
            conf.replace("{dir}", &d)
        ));
        std::fs::write(data.join("postgresql.conf"), extra).unwrap();
        run("chown", &["-R", "postgres:postgres", &d]);
        as_postgres(&[
            &pg_bin("pg_ctl").to_string_lossy(),
            "-D",
            &data.to_string_lossy(),
            "-l",
            &dir.path().join("pg.log").to_string_lossy(),
            "-w",
            "start",
        ]);
        Self { dir, port }
    }

    /// Stop it the hard way (`pg_ctl stop -m immediate`): the database goes away.
    pub fn stop_immediate(&self) {
        as_postgres(&[
            &pg_bin("pg_ctl").to_string_lossy(),
            "-D",
            &self.dir.path().join("data").to_string_lossy(),
            "-m",
            "immediate",
            "-w",
            "stop",
        ]);
    }

    /// Start it again after [`stop_immediate`](Self::stop_immediate), on the same port.
    pub fn restart(&self) {
        as_postgres(&[
            &pg_bin("pg_ctl").to_string_lossy(),
            "-D",
            &self.dir.path().join("data").to_string_lossy(),
            "-l",
            &self.dir.path().join("pg.log").to_string_lossy(),
            "-w",
            "start",
        ]);
    }

    /// The parent directory (certificates, logs).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Run SQL as the superuser over the Unix socket (not subject to the TCP pg_hba lines).
    pub fn psql(&self, sql: &str) {
        as_postgres(&[
            "psql",
            "-X",
            "-v",
            "ON_ERROR_STOP=1",
            "-h",
            &self.dir.path().to_string_lossy(),
            "-p",
            &self.port.to_string(),
            "-U",
            "postgres",
            "-d",
            "postgres",
            "-c",
            sql,
        ]);
    }
}

impl Drop for PgInstance {
    fn drop(&mut self) {
        let _ = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(pg_bin("pg_ctl"))
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .args(["-m", "immediate", "-w", "stop"])
            .output();
    }
}

/// A CA and a server certificate for `localhost` (DNS name only) in `dir`: `ca.crt`,
/// `server.crt`, `server.key`; and an unrelated CA `other-ca.crt`.
pub fn make_certs(dir: &Path) {
    let p = |f: &str| dir.join(f).to_string_lossy().into_owned();
    for ca in ["ca", "other-ca"] {
        run(
            "openssl",
            &[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                &p(&format!("{ca}.key")),
                "-out",
                &p(&format!("{ca}.crt")),
                "-days",
                "2",
                "-subj",
                &format!("/CN=poolwarden test {ca}"),
            ],
        );
    }
    run(
        "openssl",
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            &p("server.key"),
            "-out",
            &p("server.csr"),
            "-subj",
            "/CN=localhost",
        ],
    );
    std::fs::write(dir.join("ext.cnf"), "subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n").unwrap();
    run(
        "openssl",
        &[
            "x509",
            "-req",
            "-in",
            &p("server.csr"),
            "-CA",
            &p("ca.crt"),
            "-CAkey",
            &p("ca.key"),
            "-CAcreateserial",
            "-out",
            &p("server.crt"),
            "-days",
            "2",
            "-extfile",
            &p("ext.cnf"),
        ],
    );
    run("chmod", &["600", &p("server.key")]);
}
