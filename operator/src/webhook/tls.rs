//! The webhook's serving certificate: `tls.crt` and `tls.key` from a directory (a
//! `kubernetes.io/tls` Secret mounted as a volume), re-read when their content changes, so a
//! rotated certificate (cert-manager, a Helm upgrade) is served without a restart.
//!
//! Kubernetes updates a Secret volume by swapping a symlink, so the files are compared by
//! content, not by modification time. A half-written or mismatched pair is refused and the
//! previous certificate stays in use.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use super::{TLS_CERT_FILE, TLS_KEY_FILE};

/// How often the certificate files are checked for a change.
pub const RELOAD_INTERVAL: Duration = Duration::from_secs(10);

/// Why the serving certificate could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The certificate file holds no PEM certificate.
    #[error("{0}: no PEM certificate found")]
    NoCertificate(PathBuf),
    /// The key file holds no PEM private key.
    #[error("{path}: no PEM private key found ({reason})")]
    NoKey {
        /// The file.
        path: PathBuf,
        /// What the PEM parser said.
        reason: String,
    },
    /// rustls refused the pair (unsupported key type, key not matching the certificate).
    #[error("certificate and key in {dir} are not usable: {source}")]
    Rustls {
        /// The certificate directory.
        dir: PathBuf,
        /// The rustls error.
        source: rustls::Error,
    },
}

/// A certificate resolver that always answers with the newest valid pair from a directory.
#[derive(Debug)]
pub struct ReloadingCert {
    dir: PathBuf,
    provider: Arc<CryptoProvider>,
    current: ArcSwap<CertifiedKey>,
    /// The bytes of the files behind `current`, to notice a change.
    loaded: Mutex<(Vec<u8>, Vec<u8>)>,
}

impl ReloadingCert {
    /// Load `tls.crt` and `tls.key` from `dir`.
    pub fn load(dir: &Path) -> Result<Arc<Self>, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let (cert, key) = read_pair(dir)?;
        let certified = certified_key(dir, &cert, &key, &provider)?;
        Ok(Arc::new(Self {
            dir: dir.to_path_buf(),
            provider,
            current: ArcSwap::from_pointee(certified),
            loaded: Mutex::new((cert, key)),
        }))
    }

    /// Re-read the files; swap in the new pair when they changed and are valid. Returns
    /// whether the served certificate changed.
    pub fn reload_if_changed(&self) -> Result<bool, TlsError> {
        let (cert, key) = read_pair(&self.dir)?;
        {
            let loaded = self.loaded.lock().expect("cert state lock poisoned");
            if loaded.0 == cert && loaded.1 == key {
                return Ok(false);
            }
        }
        let certified = certified_key(&self.dir, &cert, &key, &self.provider)?;
        self.current.store(Arc::new(certified));
        *self.loaded.lock().expect("cert state lock poisoned") = (cert, key);
        Ok(true)
    }

    /// The DER of the certificate served now (the leaf).
    pub fn current_leaf(&self) -> CertificateDer<'static> {
        self.current.load().cert[0].clone()
    }

    /// A rustls server config (HTTP/1.1 only) that serves the current certificate.
    pub fn server_config(self: &Arc<Self>) -> Result<Arc<ServerConfig>, TlsError> {
        let mut config = ServerConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|source| TlsError::Rustls {
                dir: self.dir.clone(),
                source,
            })?
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }

    /// Check the files every `interval`, forever; failures are logged and the old pair stays.
    pub async fn watch(self: Arc<Self>, interval: Duration) {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            match self.reload_if_changed() {
                Ok(true) => {
                    tracing::info!(dir = %self.dir.display(), "webhook serving certificate reloaded")
                }
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "webhook serving certificate not reloaded; keeping the current one")
                }
            }
        }
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

fn read_pair(dir: &Path) -> Result<(Vec<u8>, Vec<u8>), TlsError> {
    let read = |name: &str| {
        let path = dir.join(name);
        std::fs::read(&path).map_err(|source| TlsError::Read { path, source })
    };
    Ok((read(TLS_CERT_FILE)?, read(TLS_KEY_FILE)?))
}

fn certified_key(
    dir: &Path,
    cert: &[u8],
    key: &[u8],
    provider: &CryptoProvider,
) -> Result<CertifiedKey, TlsError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert)
        .filter_map(Result::ok)
        .collect();
    if chain.is_empty() {
        return Err(TlsError::NoCertificate(dir.join(TLS_CERT_FILE)));
    }
    let key = PrivateKeyDer::from_pem_slice(key).map_err(|e| TlsError::NoKey {
        path: dir.join(TLS_KEY_FILE),
        reason: e.to_string(),
    })?;
    CertifiedKey::from_der(chain, key, provider).map_err(|source| TlsError::Rustls {
        dir: dir.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_pair(dir: &Path, name: &str) -> Vec<u8> {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec![name.to_string()]).unwrap();
        params
            .subject_alt_names
            .push(rcgen::SanType::IpAddress("127.0.0.1".parse().unwrap()));
        let cert = params.self_signed(&key).unwrap();
        std::fs::write(dir.join(TLS_CERT_FILE), cert.pem()).unwrap();
        std::fs::write(dir.join(TLS_KEY_FILE), key.serialize_pem()).unwrap();
        cert.der().to_vec()
    }

    fn temp_dir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("pw-tls-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn a_rotated_pair_is_served_and_a_broken_one_is_refused() {
        let dir = temp_dir("rotate");
        let first = write_pair(&dir, "one.example");
        let certs = ReloadingCert::load(&dir).unwrap();
        assert_eq!(certs.current_leaf().as_ref(), first.as_slice());
        assert!(!certs.reload_if_changed().unwrap(), "nothing changed");

        let second = write_pair(&dir, "two.example");
        assert!(certs.reload_if_changed().unwrap());
        assert_eq!(certs.current_leaf().as_ref(), second.as_slice());

        // A new certificate with the old key (a half-finished rotation) is refused.
        let other_key = rcgen::KeyPair::generate().unwrap();
        let stray = rcgen::CertificateParams::new(vec!["three.example".into()])
            .unwrap()
            .self_signed(&other_key)
            .unwrap();
        std::fs::write(dir.join(TLS_CERT_FILE), stray.pem()).unwrap();
        let err = certs.reload_if_changed().unwrap_err();
        assert!(matches!(err, TlsError::Rustls { .. }), "{err}");
        assert_eq!(
            certs.current_leaf().as_ref(),
            second.as_slice(),
            "the old pair stays"
        );

        // Garbage in the key file names the file.
        std::fs::write(dir.join(TLS_KEY_FILE), "not a key").unwrap();
        let err = certs.reload_if_changed().unwrap_err();
        assert!(err.to_string().contains("tls.key"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A leaf for 127.0.0.1 signed by `ca`, written as the pair; returns its DER.
    fn write_signed(dir: &Path, ca: &rcgen::Issuer<'_, rcgen::KeyPair>) -> Vec<u8> {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        params
            .subject_alt_names
            .push(rcgen::SanType::IpAddress("127.0.0.1".parse().unwrap()));
        let cert = params.signed_by(&key, ca).unwrap();
        std::fs::write(dir.join(TLS_CERT_FILE), cert.pem()).unwrap();
        std::fs::write(dir.join(TLS_KEY_FILE), key.serialize_pem()).unwrap();
        cert.der().to_vec()
    }

    /// The leaf a TLS client sees from `addr`.
    async fn served_leaf(addr: std::net::SocketAddr, roots: &rustls::RootCertStore) -> Vec<u8> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots.clone())
            .with_no_client_auth();
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let name = rustls::pki_types::ServerName::IpAddress(addr.ip().into());
        let tls = connector
            .connect(name, tcp)
            .await
            .expect("handshake verifies against the CA");
        tls.get_ref().1.peer_certificates().unwrap()[0].to_vec()
    }

    #[tokio::test]
    async fn a_running_acceptor_serves_the_rotated_certificate_without_a_restart() {
        let dir = temp_dir("live");
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca =
            rcgen::CertifiedIssuer::self_signed(ca_params, rcgen::KeyPair::generate().unwrap())
                .unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca.der().clone()).unwrap();

        let first = write_signed(&dir, &ca);
        let certs = ReloadingCert::load(&dir).unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(certs.server_config().unwrap());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            loop {
                let (tcp, _) = listener.accept().await.unwrap();
                let _ = acceptor.accept(tcp).await;
            }
        });

        assert_eq!(served_leaf(addr, &roots).await, first);
        let second = write_signed(&dir, &ca);
        assert!(certs.reload_if_changed().unwrap());
        assert_eq!(
            served_leaf(addr, &roots).await,
            second,
            "same acceptor, new certificate"
        );
        server.abort();
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn missing_files_are_named() {
        let dir = temp_dir("missing");
        let err = ReloadingCert::load(&dir).unwrap_err();
        assert!(err.to_string().contains("tls.crt"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
