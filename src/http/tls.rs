//! HTTPS without a proxy (`serve --tls-cert PATH --tls-key PATH`): rustls on aws-lc-rs,
//! HTTP/1.1 only (ALPN `http/1.1`), as git speaks it.
//!
//! The certificate chain and its key are PEM files, read at start and read again
//! whenever either file changes (looked at every [`CHECK_EVERY`]), so a renewed
//! certificate is served without a restart. Invariant: the pair in use is one that
//! loaded, with a key that matches its certificate; a pair that does not load, or whose
//! key belongs to another certificate, leaves the one in use in place (with a warning).
//! Key material is never logged, nor put in an error.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, SystemTime};

use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncWrite};

/// How often the certificate and key files are looked at for a change.
pub const CHECK_EVERY: Duration = Duration::from_secs(2);

/// Why a certificate and key cannot be served. Each names the file at fault.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{} holds no certificate: {reason}", path.display())]
    Certificate { path: PathBuf, reason: String },
    #[error(
        "{} holds no private key (PEM PKCS#8 `PRIVATE KEY`, PKCS#1 `RSA PRIVATE KEY` or \
         SEC1 `EC PRIVATE KEY`): {reason}",
        path.display()
    )]
    Key { path: PathBuf, reason: String },
    #[error("the private key in {} cannot be used: {source}", path.display())]
    UnusableKey {
        path: PathBuf,
        source: rustls::Error,
    },
    #[error(
        "the private key in {} does not belong to the certificate in {}",
        key.display(),
        cert.display()
    )]
    Mismatch { cert: PathBuf, key: PathBuf },
    #[error("the certificate in {} cannot be used: {source}", path.display())]
    UnusableCertificate {
        path: PathBuf,
        source: rustls::Error,
    },
    #[error("setting TLS up failed: {0}")]
    Setup(rustls::Error),
}

/// What a PEM parse failure says, without a byte of what was parsed (a key's).
fn describe(e: &pem::Error) -> String {
    match e {
        pem::Error::NoItemsFound => "no PEM block of that kind in it".into(),
        pem::Error::MissingSectionEnd { .. } => "a PEM block has no END line".into(),
        pem::Error::IllegalSectionStart { .. } => "a malformed BEGIN line".into(),
        pem::Error::Base64Decode(_) => "a PEM block that is not valid base64".into(),
        pem::Error::Io(e) => e.to_string(),
        _ => "not valid PEM".into(),
    }
}

/// HTTPS for the server: what accepts connections, and the files it reloads.
#[derive(Clone)]
pub struct Tls {
    acceptor: tokio_rustls::TlsAcceptor,
    pair: Arc<Pair>,
}

impl fmt::Debug for Tls {
    // The paths, never the key.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tls")
            .field("cert", &self.pair.cert)
            .field("key", &self.pair.key)
            .finish_non_exhaustive()
    }
}

impl Tls {
    /// Loads the certificate chain at `cert` and the private key at `key` (PEM both);
    /// an error names the file that cannot be served.
    pub fn load(cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Result<Tls, TlsError> {
        let (cert, key) = (cert.into(), key.into());
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let stamp = Stamp::of(&cert, &key);
        let certified = load_pair(&cert, &key, &provider)?;
        let pair = Arc::new(Pair {
            cert,
            key,
            provider: provider.clone(),
            current: RwLock::new(Arc::new(certified)),
            seen: Mutex::new(stamp),
        });
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(TlsError::Setup)?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(Resolver(pair.clone())));
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Tls {
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
            pair,
        })
    }

    /// The TLS handshake of a connection from `peer`, bounded by `within`; `None` when
    /// it fails (a client that does not trust the certificate, plain HTTP sent to
    /// this port) or takes too long: logged at debug level, as the client sees why.
    pub(super) async fn handshake<IO>(
        &self,
        io: IO,
        within: Duration,
        peer: SocketAddr,
    ) -> Option<tokio_rustls::server::TlsStream<IO>>
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        match tokio::time::timeout(within, self.acceptor.accept(io)).await {
            Ok(Ok(stream)) => Some(stream),
            Ok(Err(e)) => {
                tracing::debug!(peer = %peer, error = %e, "TLS handshake failed");
                None
            }
            Err(_) => {
                tracing::debug!(peer = %peer, secs = within.as_secs(), "TLS handshake timed out");
                None
            }
        }
    }

    /// Reloads the pair whenever its files change, until the answer is dropped.
    pub(super) fn watch(&self) -> Watching {
        Watching(tokio::spawn(self.clone().reload_on_change()))
    }

    async fn reload_on_change(self) {
        let mut every = tokio::time::interval(CHECK_EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        every.tick().await;
        loop {
            every.tick().await;
            let pair = self.pair.clone();
            // Reading files blocks; they are small, but not on a runtime thread.
            match tokio::task::spawn_blocking(move || pair.check()).await {
                Ok(Check::Unchanged) => {}
                Ok(Check::Reloaded) => tracing::info!(
                    cert = %self.pair.cert.display(),
                    "reloaded the TLS certificate"
                ),
                Ok(Check::Kept(e)) => tracing::warn!(
                    error = %e,
                    "the TLS certificate files changed but cannot be served; \
                     keeping the certificate in use"
                ),
                Err(e) => tracing::warn!(error = %e, "checking the TLS certificate failed"),
            }
        }
    }
}

/// The task of [`Tls::watch`], stopped when this is dropped.
#[derive(Debug)]
pub(super) struct Watching(tokio::task::JoinHandle<()>);

impl Drop for Watching {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// What a look at the files found.
#[derive(Debug)]
enum Check {
    /// Neither file changed.
    Unchanged,
    /// They changed and the new pair is served from now on.
    Reloaded,
    /// They changed, but the new pair cannot be served: the old one stays.
    Kept(TlsError),
}

/// The files, and the pair loaded from them.
#[derive(Debug)]
struct Pair {
    cert: PathBuf,
    key: PathBuf,
    provider: Arc<CryptoProvider>,
    current: RwLock<Arc<CertifiedKey>>,
    /// The files as they were when last loaded (or tried).
    seen: Mutex<Stamp>,
}

impl Pair {
    fn current(&self) -> Arc<CertifiedKey> {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn check(&self) -> Check {
        // Taken before reading: a change while reading is seen at the next check.
        let stamp = Stamp::of(&self.cert, &self.key);
        {
            let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
            if *seen == stamp {
                return Check::Unchanged;
            }
            // A pair that failed is tried again once either file changes again.
            *seen = stamp;
        }
        match load_pair(&self.cert, &self.key, &self.provider) {
            Ok(certified) => {
                *self.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(certified);
                Check::Reloaded
            }
            Err(e) => Check::Kept(e),
        }
    }
}

/// Answers every handshake with the pair in use.
#[derive(Debug)]
struct Resolver(Arc<Pair>);

impl ResolvesServerCert for Resolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.current())
    }
}

/// What tells that a file changed: modification time, length and (on Unix) inode, so
/// that a file replaced by a rename counts as changed too. `None`: not readable now.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp {
    cert: Option<(SystemTime, u64, u64)>,
    key: Option<(SystemTime, u64, u64)>,
}

impl Stamp {
    fn of(cert: &Path, key: &Path) -> Stamp {
        fn file(path: &Path) -> Option<(SystemTime, u64, u64)> {
            let meta = std::fs::metadata(path).ok()?;
            #[cfg(unix)]
            let inode = std::os::unix::fs::MetadataExt::ino(&meta);
            #[cfg(not(unix))]
            let inode = 0;
            Some((meta.modified().ok()?, meta.len(), inode))
        }
        Stamp {
            cert: file(cert),
            key: file(key),
        }
    }
}

/// Reads and checks a certificate chain and its key.
fn load_pair(cert: &Path, key: &Path, provider: &CryptoProvider) -> Result<CertifiedKey, TlsError> {
    let read = |path: &Path| {
        std::fs::read(path).map_err(|source| TlsError::Read {
            path: path.to_owned(),
            source,
        })
    };
    let cert_pem = read(cert)?;
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Certificate {
            path: cert.to_owned(),
            reason: describe(&e),
        })?;
    if chain.is_empty() {
        return Err(TlsError::Certificate {
            path: cert.to_owned(),
            reason: "no PEM `CERTIFICATE` block in it".into(),
        });
    }
    let key_pem = read(key)?;
    let private = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| TlsError::Key {
        path: key.to_owned(),
        reason: describe(&e),
    })?;
    let signing = provider
        .key_provider
        .load_private_key(private)
        .map_err(|source| TlsError::UnusableKey {
            path: key.to_owned(),
            source,
        })?;
    let certified = CertifiedKey::new(chain, signing);
    match certified.keys_match() {
        // A key type whose public half rustls cannot derive: the handshake will tell.
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {
            Ok(certified)
        }
        Err(rustls::Error::InconsistentKeys(_)) => Err(TlsError::Mismatch {
            cert: cert.to_owned(),
            key: key.to_owned(),
        }),
        Err(source) => Err(TlsError::UnusableCertificate {
            path: cert.to_owned(),
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A certificate for `localhost` signed by a new CA: (cert PEM, key PEM).
    fn issue(name: &str) -> (String, String) {
        let ca_key = rcgen::KeyPair::generate().expect("CA key");
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(rcgen::DnType::CommonName, format!("{name} CA"));
        let ca = rcgen::CertifiedIssuer::self_signed(ca, ca_key).expect("CA");
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
            .expect("params")
            .signed_by(&key, &ca)
            .expect("cert");
        (cert.pem(), key.serialize_pem())
    }

    fn write(dir: &Path, (cert, key): &(String, String)) -> (PathBuf, PathBuf) {
        let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
        // Replaced by a rename, as certificate tools do.
        for (path, text) in [(&cert_path, cert), (&key_path, key)] {
            let tmp = path.with_extension("tmp");
            std::fs::write(&tmp, text).expect("write");
            std::fs::rename(&tmp, path).expect("rename");
        }
        (cert_path, key_path)
    }

    fn der(pem: &str) -> CertificateDer<'static> {
        CertificateDer::from_pem_slice(pem.as_bytes()).expect("PEM")
    }

    #[test]
    fn errors_name_the_file_and_show_no_key() {
        let dir = tempfile::tempdir().expect("dir");
        let first = issue("first");
        let (cert, key) = write(dir.path(), &first);
        Tls::load(&cert, &key).expect("a good pair loads");

        let missing = dir.path().join("missing.pem");
        let e = Tls::load(&missing, &key).expect_err("no file");
        assert!(e.to_string().contains("missing.pem"), "{e}");

        // The two files swapped: each holds the wrong kind of block.
        let e = Tls::load(&key, &cert).expect_err("swapped");
        assert!(
            e.to_string().contains("key.pem holds no certificate"),
            "{e}"
        );
        let e = Tls::load(&cert, &cert).expect_err("a certificate as the key");
        assert!(
            e.to_string().contains("cert.pem holds no private key"),
            "{e}"
        );

        // A key whose base64 is damaged: the message shows none of it.
        let damaged = dir.path().join("damaged.pem");
        let broken = first.1.replacen('\n', "\n!!", 1);
        std::fs::write(&damaged, &broken).expect("write");
        let e = Tls::load(&cert, &damaged).expect_err("damaged key");
        let body: Vec<&str> = first
            .1
            .lines()
            .filter(|l| !l.starts_with("-----"))
            .collect();
        for line in body {
            assert!(!e.to_string().contains(line), "{e}");
        }
        assert!(e.to_string().contains("damaged.pem"), "{e}");

        // Another certificate's key.
        let other = issue("other");
        let other_key = dir.path().join("other-key.pem");
        std::fs::write(&other_key, &other.1).expect("write");
        let e = Tls::load(&cert, &other_key).expect_err("mismatch");
        assert!(
            e.to_string()
                .contains("other-key.pem does not belong to the certificate in"),
            "{e}"
        );
    }

    #[test]
    fn a_changed_pair_is_reloaded_and_a_bad_one_kept_out() {
        let dir = tempfile::tempdir().expect("dir");
        let first = issue("first");
        let (cert, key) = write(dir.path(), &first);
        let tls = Tls::load(&cert, &key).expect("loads");
        assert!(matches!(tls.pair.check(), Check::Unchanged));
        assert_eq!(tls.pair.current().cert, vec![der(&first.0)]);

        let second = issue("second");
        write(dir.path(), &second);
        assert!(matches!(tls.pair.check(), Check::Reloaded));
        assert_eq!(tls.pair.current().cert, vec![der(&second.0)]);
        assert!(matches!(tls.pair.check(), Check::Unchanged));

        // A renewal caught half done: the new certificate, the old key.
        let third = issue("third");
        write(dir.path(), &(third.0.clone(), second.1.clone()));
        assert!(matches!(
            tls.pair.check(),
            Check::Kept(TlsError::Mismatch { .. })
        ));
        assert_eq!(tls.pair.current().cert, vec![der(&second.0)]);
        // Not tried again until a file changes; then the whole pair loads.
        assert!(matches!(tls.pair.check(), Check::Unchanged));
        write(dir.path(), &third);
        assert!(matches!(tls.pair.check(), Check::Reloaded));
        assert_eq!(tls.pair.current().cert, vec![der(&third.0)]);

        // Garbage, or a file gone: the pair in use stays.
        std::fs::write(&cert, "not a certificate\n").expect("write");
        assert!(matches!(
            tls.pair.check(),
            Check::Kept(TlsError::Certificate { .. })
        ));
        std::fs::remove_file(&key).expect("remove");
        assert!(matches!(tls.pair.check(), Check::Kept(_)));
        assert_eq!(tls.pair.current().cert, vec![der(&third.0)]);
    }
}
