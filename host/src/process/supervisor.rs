//! The supervisor: binds the listeners once, runs the worker (this same binary) on them, and
//! starts a new worker whenever the old one dies. Plugin code never runs in the worker (it runs
//! in executors), so a dying worker is a host bug or an outside kill; even then connections
//! waiting in the kernel's backlog survive: the sockets belong to the supervisor.
//!
//! Signals: SIGTERM/SIGINT are passed to the worker, which drains and exits; a second one kills
//! it. SIGHUP is a planned restart (a new binary, or a fresh process for any reason): a new
//! worker starts on the same sockets, and once it is ready the old one drains and exits.

use std::fs;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::DirBuilderExt;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command};
use std::thread;
use std::time::{Duration, Instant};

use crate::config::Config;
use crate::net::listener::{Scheme, FIRST_INHERITED_FD};
use crate::process::backoff::{crash_backoff, MAX_BACKOFF};
use crate::process::signals;
use crate::{info, warn, RunError};

/// How often the supervisor looks at its children and the signal flags.
const TICK: Duration = Duration::from_millis(20);
/// A worker that lived this long resets the restart backoff: the backoff is for workers that die
/// as they start (a crash loop), not for a plugin that crashes now and then on a request.
const HEALTHY_AFTER: Duration = Duration::from_secs(1);
/// How long a new worker may take to become ready in a planned restart.
const READY_DEADLINE: Duration = Duration::from_secs(120);

/// A worker process and the read end of its readiness pipe.
struct Worker {
    child: Child,
    started: Instant,
    /// Becomes readable (one byte, or end of file) when the worker is ready: every version it
    /// found at start is ready or refused. A first worker accepts before that; one taking over
    /// in a planned restart only then.
    ready: Option<OwnedFd>,
}

/// Runs the supervisor until it is told to stop; returns the exit code.
pub fn supervise(config: &Config) -> Result<i32, RunError> {
    signals::install();
    if config.https.is_some() {
        // Refuse a bad certificate here, once, rather than in a loop of dying workers.
        crate::net::tls::CertStore::load(&config.cert, &config.key).map_err(RunError::Tls)?;
    }
    let listeners = crate::bind_listeners(config)?;
    for (socket, scheme) in &listeners {
        let addr = socket.local_addr().map_err(RunError::EventLoop)?;
        info!("{}", scheme.describe(addr));
    }
    let state = StateDir::create().map_err(RunError::PrivateDir)?;
    let fds: Vec<(RawFd, Scheme)> = listeners
        .iter()
        .map(|(socket, scheme)| (socket.as_raw_fd(), *scheme))
        .collect();

    let mut started = 0u64;
    let mut current = spawn(&fds, &state.0, started, false).map_err(RunError::Worker)?;
    let mut retiring: Vec<Child> = Vec::new();
    let mut successor: Option<Worker> = None;
    let mut crashes: u32 = 0;
    let mut forwarded = 0;
    loop {
        thread::sleep(TICK);
        let terminations = signals::terminations();
        if terminations > forwarded {
            forwarded = terminations;
            let signal = if terminations == 1 {
                libc::SIGTERM
            } else {
                libc::SIGKILL
            };
            info!("stopping: passing {} to the worker", signals::name(signal));
            send(&current.child, signal);
            for child in retiring.iter().chain(successor.as_ref().map(|w| &w.child)) {
                send(child, signal);
            }
        }
        retiring.retain_mut(|child| !matches!(child.try_wait(), Ok(Some(_))));

        if let Some(next) = successor.as_mut() {
            if let Ok(Some(status)) = next.child.try_wait() {
                warn!(
                    "the new worker died before it was ready ({}); the old one stays",
                    signals::describe_exit(status)
                );
                successor = None;
            } else if next.is_ready() || next.started.elapsed() > READY_DEADLINE {
                let next = successor.take().expect("successor is Some in this branch");
                let old = std::mem::replace(&mut current, next);
                info!(
                    "planned restart: worker {} takes over, worker {} drains",
                    current.child.id(),
                    old.child.id()
                );
                send(&old.child, libc::SIGTERM);
                retiring.push(old.child);
            }
        } else if forwarded == 0 && signals::take_restart() {
            info!("planned restart: starting a new worker");
            started += 1;
            match spawn(&fds, &state.0, started, true) {
                Ok(worker) => successor = Some(worker),
                Err(e) => warn!("cannot start a new worker: {e}"),
            }
        }

        let Ok(Some(status)) = current.child.try_wait() else {
            continue;
        };
        if forwarded > 0 {
            if retiring.is_empty() {
                info!(
                    "worker exited ({}); stopped",
                    signals::describe_exit(status)
                );
                return Ok(if status.success() { 0 } else { 1 });
            }
            continue;
        }
        let lived = current.started.elapsed();
        crashes = if lived >= HEALTHY_AFTER {
            1
        } else {
            crashes + 1
        };
        let backoff = crash_backoff(crashes);
        warn!(
            "worker {} died ({}) after {:.1} s; starting another in {} ms",
            current.child.id(),
            signals::describe_exit(status),
            lived.as_secs_f64(),
            backoff.as_millis()
        );
        let until = Instant::now() + backoff;
        while Instant::now() < until && signals::terminations() == forwarded {
            thread::sleep(TICK);
        }
        if signals::terminations() > 0 && forwarded == 0 {
            return Ok(0);
        }
        started += 1;
        current = loop {
            match spawn(&fds, &state.0, started, false) {
                Ok(worker) => break worker,
                Err(e) => {
                    warn!(
                        "cannot start a worker: {e}; trying again in {} ms",
                        MAX_BACKOFF.as_millis()
                    );
                    thread::sleep(MAX_BACKOFF);
                }
            }
        };
    }
}

fn send(child: &Child, signal: i32) {
    if let Ok(pid) = libc::pid_t::try_from(child.id()) {
        // SAFETY: kill on our own child's pid; at worst it has exited and the call fails.
        unsafe {
            libc::kill(pid, signal);
        }
    }
}

impl Worker {
    fn is_ready(&mut self) -> bool {
        let Some(fd) = &self.ready else {
            return true;
        };
        let mut byte = 0u8;
        // SAFETY: a one-byte read into a local from a descriptor we own (non-blocking).
        let n = unsafe { libc::read(fd.as_raw_fd(), (&mut byte as *mut u8).cast(), 1) };
        if n >= 0 {
            // A byte (ready) or end of file (it closed the pipe: ready or gone; try_wait tells).
            self.ready = None;
            return true;
        }
        false
    }
}

/// Starts a worker: this binary with the same arguments, the listeners as descriptors 3..,
/// the readiness pipe after them, killed if the supervisor dies. `earlier_workers` is reported
/// by the worker's metrics as restarts. A worker that `takes_over` (a planned restart) accepts
/// only once ready; any other accepts at once (nobody else serves).
fn spawn(
    listeners: &[(RawFd, Scheme)],
    state: &std::path::Path,
    earlier_workers: u64,
    takes_over: bool,
) -> io::Result<Worker> {
    let (ready_read, ready_write) = pipe()?;
    let sources: Vec<RawFd> = listeners
        .iter()
        .map(|(fd, _)| *fd)
        .chain([ready_write.as_raw_fd()])
        .collect();
    let names: Vec<&str> = listeners.iter().map(|(_, s)| s.as_str()).collect();
    let count = listeners.len() as RawFd;
    let exe = std::env::current_exe()?;
    let mut command = Command::new(exe);
    command
        .args(std::env::args_os().skip(1))
        .env("LISTEN_FDS", count.to_string())
        .env("LISTEN_FDNAMES", names.join(":"))
        .env("FIDDLER_SUPERVISOR_PID", std::process::id().to_string())
        .env("FIDDLER_STATE_DIR", state)
        .env("FIDDLER_WORKER_RESTARTS", earlier_workers.to_string())
        .env("FIDDLER_READY_FD", (FIRST_INHERITED_FD + count).to_string())
        .env_remove("LISTEN_PID");
    match takes_over {
        true => command.env(crate::TAKES_OVER, "1"),
        false => command.env_remove(crate::TAKES_OVER),
    };
    // SAFETY: between fork and exec only async-signal-safe calls are made (fcntl, dup2,
    // prctl), on descriptors that stay open in the parent for the whole call.
    unsafe {
        command.pre_exec(move || {
            // Copy every source above the targets first, so placing one cannot clobber another
            // (the base stays low: F_DUPFD refuses a base at or above the descriptor limit).
            let mut moved = [0 as RawFd; 8];
            let base = FIRST_INHERITED_FD + sources.len() as RawFd;
            for (i, fd) in sources.iter().enumerate().take(moved.len()) {
                let high = libc::fcntl(*fd, libc::F_DUPFD_CLOEXEC, base);
                if high < 0 {
                    return Err(io::Error::last_os_error());
                }
                moved[i] = high;
            }
            for (i, high) in moved.iter().enumerate().take(sources.len().min(8)) {
                if libc::dup2(*high, FIRST_INHERITED_FD + i as RawFd) < 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = command.spawn()?;
    drop(ready_write);
    info!("started worker {}", child.id());
    Ok(Worker {
        child,
        started: Instant::now(),
        ready: Some(ready_read),
    })
}

/// A pipe whose read end is non-blocking; both ends close on exec.
fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: pipe2 writes two new descriptors into the array on success.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both descriptors were just created and are owned by nobody else.
    let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // SAFETY: fcntl on a descriptor we own.
    if unsafe { libc::fcntl(read.as_raw_fd(), libc::F_SETFL, libc::O_NONBLOCK) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((read, write))
}

/// The supervisor's private directory, kept across worker restarts (workers keep their plugin
/// copies there, so a worker that dies leaves nothing behind); removed when the supervisor
/// ends.
struct StateDir(PathBuf);

impl StateDir {
    fn create() -> io::Result<StateDir> {
        let stale = crate::plugins::files::remove_stale(&std::env::temp_dir());
        if stale > 0 {
            crate::info!("removed {stale} private folder(s) left by servers that were killed");
        }
        let path = std::env::temp_dir().join(format!("fiddler-crab-state-{}", std::process::id()));
        let _ = fs::remove_dir_all(&path);
        fs::DirBuilder::new().mode(0o700).create(&path)?;
        Ok(StateDir(path))
    }
}

impl Drop for StateDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}
