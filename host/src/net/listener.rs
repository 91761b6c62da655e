//! The listening sockets: bound here with an explicit backlog, or inherited from a supervisor or
//! systemd (the `LISTEN_FDS` convention: descriptors 3, 4, ... named by `LISTEN_FDNAMES`).
//!
//! The backlog is what absorbs a flood once intake stops accepting: small, so excess
//! connections are dropped by the kernel rather than queued for long (mio's own `bind` fixes it
//! at 1024).

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::{AsRawFd, FromRawFd, RawFd};

/// The first inherited descriptor (`SD_LISTEN_FDS_START`).
pub const FIRST_INHERITED_FD: RawFd = 3;

/// The protocol a listener speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scheme {
    /// Plain HTTP/1.1.
    Http,
    /// HTTP/1.1 over TLS.
    Https,
    /// Plain HTTP for the admin routes only (`--admin`).
    Admin,
    /// The load-balancer agent (`--agent`): one line, then closed (see `intake::agent`).
    Agent,
}

impl Scheme {
    /// `http`, `https`, `admin` or `agent` (also the `LISTEN_FDNAMES` name).
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
            Scheme::Admin => "admin",
            Scheme::Agent => "agent",
        }
    }

    /// How the start-up log names a listener at `addr`.
    pub fn describe(self, addr: std::net::SocketAddr) -> String {
        match self {
            Scheme::Http => format!("listening on http://{addr}"),
            Scheme::Https => format!("listening on https://{addr}"),
            Scheme::Admin => format!("admin routes on http://{addr}/-/"),
            Scheme::Agent => format!("load-balancer agent on tcp://{addr}"),
        }
    }
}

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

/// The listeners passed by a supervisor or systemd, if any: `LISTEN_FDS` descriptors from 3,
/// for this process (`LISTEN_PID`, or `FIDDLER_SUPERVISOR_PID` naming our parent). Unnamed
/// descriptors are plain HTTP. The variables are removed so child processes do not see them.
pub fn inherited() -> Option<io::Result<Vec<(TcpListener, Scheme)>>> {
    let count: RawFd = std::env::var("LISTEN_FDS").ok()?.parse().ok()?;
    // SAFETY: getpid and getppid cannot fail and have no preconditions.
    let (pid, parent) = unsafe { (libc::getpid(), libc::getppid()) };
    let for_us = std::env::var("LISTEN_PID")
        .ok()
        .and_then(|p| p.parse().ok())
        == Some(pid)
        || std::env::var("FIDDLER_SUPERVISOR_PID")
            .ok()
            .and_then(|p| p.parse().ok())
            == Some(parent);
    if !for_us {
        return None;
    }
    let names = std::env::var("LISTEN_FDNAMES").unwrap_or_default();
    let mut names = names.split(':');
    for variable in [
        "LISTEN_FDS",
        "LISTEN_PID",
        "LISTEN_FDNAMES",
        "FIDDLER_SUPERVISOR_PID",
    ] {
        std::env::remove_var(variable);
    }
    let mut listeners = Vec::new();
    for fd in FIRST_INHERITED_FD..FIRST_INHERITED_FD + count {
        let scheme = match names.next() {
            Some("https") => Scheme::Https,
            Some("admin") => Scheme::Admin,
            Some("agent") => Scheme::Agent,
            _ => Scheme::Http,
        };
        // SAFETY: `LISTEN_FDS` hands these descriptors to this process, open, one owner each.
        let listener = unsafe { TcpListener::from_raw_fd(fd) };
        if let Err(e) = set_cloexec(fd).and_then(|()| listener.set_nonblocking(true)) {
            return Some(Err(e));
        }
        listeners.push((listener, scheme));
    }
    Some(Ok(listeners))
}

fn set_cloexec(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl on a descriptor we own; F_SETFD only changes its close-on-exec flag.
    if unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
