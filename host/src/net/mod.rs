//! Bytes on the network: the listening sockets (bound here or inherited), the plain | TLS byte
//! pipe of one connection, and the certificates TLS serves.

pub mod listener;
pub mod tls;
pub mod transport;
