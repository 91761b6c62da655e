//! TLS settings: the certificate chain and key from PEM files, the rustls server configuration
//! (ring provider, TLS 1.3 and 1.2 only, ALPN `http/1.1`), and reloading both when the files
//! change, keeping the ones in use when the new files do not parse.

use std::fmt;
use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::ServerConfig;

use crate::net::transport::Transport;
use crate::{info, warn};

/// Why a certificate or key could not be used.
#[derive(Debug)]
pub enum TlsError {
    /// A file could not be read.
    Read(PathBuf, io::Error),
    /// A file is not the PEM expected (no certificate, no private key, or bad encoding).
    Pem(PathBuf, String),
    /// rustls refused the pair (the key does not match, an unsupported key type...).
    Config(rustls::Error),
}

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TlsError::Read(path, e) => write!(f, "cannot read {}: {e}", path.display()),
            TlsError::Pem(path, why) => write!(f, "{}: {why}", path.display()),
            TlsError::Config(e) => write!(f, "the certificate and key cannot be used: {e}"),
        }
    }
}

impl std::error::Error for TlsError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            TlsError::Read(_, e) => Some(e),
            TlsError::Config(e) => Some(e),
            TlsError::Pem(..) => None,
        }
    }
}

/// Builds the server configuration from a PEM certificate chain and a PEM private key.
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    let cert_pem = fs::read(cert).map_err(|e| TlsError::Read(cert.to_owned(), e))?;
    let key_pem = fs::read(key).map_err(|e| TlsError::Read(key.to_owned(), e))?;
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem(cert.to_owned(), e.to_string()))?;
    if chain.is_empty() {
        return Err(TlsError::Pem(
            cert.to_owned(),
            "no certificate in it".to_owned(),
        ));
    }
    let private_key = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|e| TlsError::Pem(key.to_owned(), format!("no usable private key: {e}")))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(TlsError::Config)?
        .with_no_client_auth()
        .with_single_cert(chain, private_key)
        .map_err(TlsError::Config)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// What identifies a version of a file without reading it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stamp {
    modified: i64,
    modified_nanos: i64,
    len: u64,
    inode: u64,
}

fn stamp(path: &Path) -> Option<Stamp> {
    let meta = fs::metadata(path).ok()?;
    Some(Stamp {
        modified: meta.mtime(),
        modified_nanos: meta.mtime_nsec(),
        len: meta.len(),
        inode: meta.ino(),
    })
}

/// The configuration in use, and the files it came from, re-read when they change.
pub struct CertStore {
    cert: PathBuf,
    key: PathBuf,
    stamps: (Option<Stamp>, Option<Stamp>),
    current: Arc<ServerConfig>,
}

impl CertStore {
    /// Loads the pair; fails if it cannot be used (the server does not start without it).
    pub fn load(cert: &Path, key: &Path) -> Result<CertStore, TlsError> {
        let stamps = (stamp(cert), stamp(key));
        let current = server_config(cert, key)?;
        Ok(CertStore {
            cert: cert.to_owned(),
            key: key.to_owned(),
            stamps,
            current,
        })
    }

    /// A TLS transport over a newly accepted socket (its handshake runs as it reads).
    pub fn accept(&self, socket: mio::net::TcpStream) -> Result<Transport, rustls::Error> {
        let session = rustls::ServerConnection::new(Arc::clone(self.config()))?;
        Ok(Transport::tls(socket, session))
    }

    /// The configuration for new connections.
    pub fn config(&self) -> &Arc<ServerConfig> {
        &self.current
    }

    /// Re-reads the files if either changed since the last look. A pair that does not load
    /// is logged once per change, and the configuration in use stays.
    pub fn refresh(&mut self) {
        let now = (stamp(&self.cert), stamp(&self.key));
        if now == self.stamps {
            return;
        }
        self.stamps = now;
        match server_config(&self.cert, &self.key) {
            Ok(config) => {
                self.current = config;
                info!("reloaded the TLS certificate from {}", self.cert.display());
            }
            // Renewal tools write the two files one after the other: the mismatch in between
            // is logged, and the next change (the second file) is tried again.
            Err(e) => warn!("kept the TLS certificate in use: {e}"),
        }
    }
}
