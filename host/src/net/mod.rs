//! Bytes on the network: the listening sockets (bound here or inherited), the plain | TLS byte
//! pipe of one connection, and the certificates TLS serves (`no_tls.rs` stands in for `tls.rs`
//! in a build without the `tls` feature).

pub mod listener;
#[cfg(feature = "tls")]
pub mod tls;
#[cfg(not(feature = "tls"))]
#[path = "no_tls.rs"]
pub mod tls;
pub mod transport;
