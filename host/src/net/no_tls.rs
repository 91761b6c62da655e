//! TLS in a build without the `tls` feature: there is none. Asking for a certificate store is
//! an error that says so; the store itself cannot exist, so nothing downstream can use one.

use std::fmt;
use std::path::Path;

use crate::net::transport::Transport;

/// Why TLS cannot be used: this build has none.
#[derive(Debug)]
pub enum TlsError {
    /// Built with `--no-default-features`.
    NotBuilt,
}

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(
            "this build has no TLS (it was built without the `tls` feature): serve plain HTTP \
             behind a TLS terminator with --https off, or build with the default features",
        )
    }
}

impl std::error::Error for TlsError {}

/// A certificate store that cannot exist in this build.
pub enum CertStore {}

impl CertStore {
    /// Always refuses: this build has no TLS.
    pub fn load(_cert: &Path, _key: &Path) -> Result<CertStore, TlsError> {
        Err(TlsError::NotBuilt)
    }

    /// Never called: no store exists.
    pub fn accept(&self, _socket: mio::net::TcpStream) -> Result<Transport, TlsError> {
        match *self {}
    }

    /// Never called: no store exists.
    pub fn refresh(&mut self) {
        match *self {}
    }
}
