//! Starting an executor process: this same binary under a hidden subcommand, with one end of a
//! Unix socketpair as descriptor 3 (no path on disk), its stdout and stderr on a pipe the
//! worker reads, in a process group of its own, killed when the worker dies, optionally held
//! to an address-space limit. Unless the sandbox is off: `PR_SET_NO_NEW_PRIVS`, and a clean
//! environment (a few variables, the executor's own, nothing else of the server's). Every
//! descriptor but 0-3 is closed before exec, whatever its flags, so nothing the server
//! inherited (a readiness pipe, a shell's descriptors) reaches plugin code.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::exec::sandbox::{self, Mode};
use crate::ids::HandlerKind;
use crate::ids::PluginName;

/// The hidden subcommand an executor runs under.
pub const EXECUTOR_COMMAND: &str = "__executor";
/// The running binary as the kernel keeps it open (the original file, whatever its path holds
/// now).
const OWN_BINARY: &str = "/proc/self/exe";
/// The descriptor an executor finds its socket on.
pub const EXECUTOR_FD: RawFd = 3;

/// A started executor, as its starter holds it.
pub struct Spawned {
    /// The process (its pid is also its process group).
    pub child: Child,
    /// The worker's end of the socketpair (blocking; callers set what they need).
    pub socket: UnixStream,
    /// The read end of the pipe its stdout and stderr go to.
    pub output: OwnedFd,
}

/// The environment variable that tells an executor how long it has to be ready (a program
/// gives up a little before it, to say why).
pub const INIT_TIMEOUT_ENV: &str = "FIDDLER_EXECUTOR_INIT_MS";
/// The environment variable that names the worker's private directory (programs' sockets go
/// there, so they vanish with the worker).
pub const RUNTIME_DIR_ENV: &str = "FIDDLER_EXECUTOR_RUNTIME";

/// What an executor is started with.
pub struct Launch<'a> {
    /// Library, program or folder.
    pub kind: HandlerKind,
    /// The route it serves.
    pub route: &'a PluginName,
    /// Its file (a private copy for libraries, the folder for programs that stay up).
    pub file: &'a Path,
    /// A native plugin's own folder, when it has one (passed as the last argument: the
    /// executor runs there, with the folder's `env`).
    pub folder: Option<&'a Path>,
    /// Caps its address space (`RLIMIT_AS`), so a plugin that allocates without bound fails
    /// inside its own process.
    pub memory_limit: Option<u64>,
    /// How long it has to say `Ready`.
    pub init_timeout: Duration,
    /// The worker's private directory.
    pub runtime_dir: &'a Path,
    /// How much sandbox it gets.
    pub sandbox: Mode,
    /// Paths its sandbox must keep out of its reach whatever its settings open (the key, the
    /// plugins folder, the server's working and private folders).
    pub protected: &'a sandbox::paths::Protected,
}

/// The server's environment variables an executor keeps when it is sandboxed (the rest may be
/// secrets: a plugin gets what its folder's `env` gives it).
const KEPT_ENV: &[&str] = &["PATH", "HOME", "LANG", "LC_ALL", "TZ", "RUST_BACKTRACE"];

/// Starts an executor as `launch` says.
pub fn spawn(launch: &Launch<'_>) -> io::Result<Spawned> {
    let Launch {
        kind,
        route,
        file,
        folder,
        memory_limit,
        init_timeout,
        runtime_dir,
        sandbox: mode,
        protected,
    } = *launch;
    let (ours, theirs) = UnixStream::pair()?;
    let (output_read, output_write) = pipe()?;
    let output_err = output_write.try_clone()?;
    // The worker's own binary, even if the file was replaced or removed since it started
    // (an upgrade in place): an executor always speaks its worker's protocol. A planned
    // restart (SIGHUP) is how a new binary takes over.
    let mut command = Command::new(OWN_BINARY);
    command
        .arg0("fiddler-crab")
        .arg(EXECUTOR_COMMAND)
        .arg(kind.as_str())
        .arg(route.as_str())
        .arg(file)
        .args(folder)
        .stdin(Stdio::null())
        .stdout(Stdio::from(output_write))
        .stderr(Stdio::from(output_err));
    match mode {
        Mode::Off => {
            for name in [
                "LISTEN_FDS",
                "LISTEN_FDNAMES",
                "LISTEN_PID",
                "FIDDLER_READY_FD",
            ] {
                command.env_remove(name);
            }
        }
        _ => {
            command.env_clear();
            for name in KEPT_ENV {
                if let Some(value) = std::env::var_os(name) {
                    command.env(name, value);
                }
            }
        }
    }
    command
        .env(INIT_TIMEOUT_ENV, init_timeout.as_millis().to_string())
        .env(RUNTIME_DIR_ENV, runtime_dir)
        .env(sandbox::MODE_ENV, mode.as_str())
        .env(sandbox::PROTECT_ENV, sandbox::protected_to_env(protected));
    let no_new_privs = mode != Mode::Off;
    let socket_fd = theirs.as_raw_fd();
    let limit = memory_limit.map(|bytes| libc::rlimit {
        rlim_cur: bytes as libc::rlim_t,
        rlim_max: bytes as libc::rlim_t,
    });
    // SAFETY: between fork and exec only async-signal-safe calls are made (setpgid, prctl,
    // dup2, fcntl, setrlimit, close_range) on a descriptor the parent keeps open for the whole
    // call.
    unsafe {
        command.pre_exec(move || {
            // Its own group, so a kill past the deadline takes everything it started.
            if libc::setpgid(0, 0) != 0 {
                return Err(io::Error::last_os_error());
            }
            // Dies with the worker (the worker's main thread does all spawning).
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(io::Error::last_os_error());
            }
            if socket_fd == EXECUTOR_FD {
                // dup2 onto itself would keep close-on-exec set.
                if libc::fcntl(socket_fd, libc::F_SETFD, 0) != 0 {
                    return Err(io::Error::last_os_error());
                }
            } else if libc::dup2(socket_fd, EXECUTOR_FD) < 0 {
                return Err(io::Error::last_os_error());
            }
            if let Some(limit) = &limit {
                if libc::setrlimit(libc::RLIMIT_AS, limit) != 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            // Nothing above the socket survives exec (close_range: Linux 5.9; on an older
            // kernel only close-on-exec descriptors are closed, as before).
            libc::syscall(
                libc::SYS_close_range,
                EXECUTOR_FD as u32 + 1,
                u32::MAX,
                0u32,
            );
            if no_new_privs && libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = command.spawn()?;
    drop(theirs);
    Ok(Spawned {
        child,
        socket: ours,
        output: output_read,
    })
}

/// Starts an executor for a library outside any server (`check`, `replay`): its absolute
/// path, no memory limit, the system's temporary folder as its runtime folder, sandboxed as
/// `sandbox` says.
pub fn spawn_native(
    route: &PluginName,
    file: &Path,
    init_timeout: Duration,
    sandbox: Mode,
) -> io::Result<Spawned> {
    let absolute = std::path::absolute(file).unwrap_or_else(|_| file.to_owned());
    spawn(&Launch {
        kind: HandlerKind::Native,
        route,
        file: &absolute,
        folder: None,
        memory_limit: None,
        init_timeout,
        runtime_dir: &std::env::temp_dir(),
        sandbox,
        protected: &sandbox::paths::Protected::default(),
    })
}

/// A pipe, both ends close-on-exec (the child gets the write end through `Stdio`).
fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: pipe2 writes two new descriptors into the array on success.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both descriptors were just created and are owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Kills an executor's whole process group at once (past a deadline, or when it is retired),
/// and whatever is left in its pids cgroup (a child that made itself a group of its own).
pub fn kill_group(pid: u32) {
    if let Ok(pid) = libc::pid_t::try_from(pid) {
        // SAFETY: kill on the process group we created for our own child (its pid is the
        // group id); the child is not reaped yet, so the id cannot have been reused.
        unsafe {
            libc::kill(-pid, libc::SIGKILL);
        }
    }
    for member in sandbox::limits::cgroup_members(pid) {
        if let Ok(member) = libc::pid_t::try_from(member) {
            // SAFETY: kill on a process the executor's cgroup holds now; only its processes
            // (and what they started) are ever in it.
            unsafe {
                libc::kill(member, libc::SIGKILL);
            }
        }
    }
}
