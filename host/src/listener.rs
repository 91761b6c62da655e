//! Binds the listening sockets, with the accept backlog chosen explicitly.
//!
//! The backlog is what absorbs a flood once intake stops accepting: small, so excess
//! connections are dropped by the kernel rather than queued for long (mio's own `bind` fixes it
//! at 1024).

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::AsRawFd;

/// Binds `addr` (SO_REUSEADDR, as std does on Unix) and listens with `backlog`.
pub fn bind(addr: SocketAddr, backlog: u32) -> io::Result<TcpListener> {
    let listener = TcpListener::bind(addr)?;
    let backlog = libc::c_int::try_from(backlog).unwrap_or(libc::c_int::MAX);
    // SAFETY: the fd is a valid, open socket owned by `listener` for the whole call. On Linux,
    // `listen` on a socket that already listens only sets its backlog.
    if unsafe { libc::listen(listener.as_raw_fd(), backlog) } != 0 {
        return Err(io::Error::last_os_error());
    }
    listener.set_nonblocking(true)?;
    Ok(listener)
}
