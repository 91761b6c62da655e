//! Running another program safely from a plugin (or the server's CGI handlers): a command with
//! arguments (never a shell), bytes on its stdin, a deadline, and a cap on what it may print.
//!
//! The program runs in a process group of its own. Past the deadline the whole group gets
//! SIGTERM, then SIGKILL after a grace period; when the program ends, whatever it left running
//! in its group is killed too, so a call never leaves processes behind. Stdin is written while
//! stdout and stderr are read (one `poll` loop), so a program that reads nothing, or prints a
//! lot before reading, cannot deadlock the call.

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// A program to run. Build it, then [`run`](Program::run) it.
///
/// ```
/// use std::time::Duration;
/// use plugin_api::Program;
///
/// let output = Program::new("tr")
///     .args(["a-z", "A-Z"])
///     .stdin("shout")
///     .deadline(Duration::from_secs(5))
///     .run()
///     .expect("tr runs");
/// assert!(output.status.success());
/// assert_eq!(output.stdout, b"SHOUT");
/// ```
#[derive(Clone, Debug)]
pub struct Program {
    program: OsString,
    args: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    clear_env: bool,
    cwd: Option<PathBuf>,
    stdin: Vec<u8>,
    deadline: Duration,
    grace: Duration,
    max_stdout: usize,
    max_stderr: usize,
}

/// What a program that ran to its end produced.
#[derive(Debug)]
pub struct Output {
    /// How it exited.
    pub status: ExitStatus,
    /// Everything it printed on stdout.
    pub stdout: Vec<u8>,
    /// The first `max_stderr` bytes it printed on stderr.
    pub stderr: Vec<u8>,
    /// Whether stderr was longer than kept.
    pub stderr_truncated: bool,
}

/// Why a run did not produce an [`Output`].
#[derive(Debug)]
pub enum RunError {
    /// The program could not be started (not found, not executable...).
    Spawn(io::Error),
    /// The deadline passed; the process group was terminated. Carries the stderr seen so far.
    TimedOut {
        /// The first bytes of stderr, for the log.
        stderr: Vec<u8>,
    },
    /// Stdout passed `max_stdout`; the process group was killed.
    OutputTooLarge,
    /// Reading or writing its pipes failed.
    Io(io::Error),
}

impl fmt::Display for RunError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RunError::Spawn(e) => write!(f, "cannot start the program: {e}"),
            RunError::TimedOut { .. } => f.write_str("the program passed its deadline"),
            RunError::OutputTooLarge => f.write_str("the program printed more than allowed"),
            RunError::Io(e) => write!(f, "talking to the program failed: {e}"),
        }
    }
}

impl std::error::Error for RunError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            RunError::Spawn(e) | RunError::Io(e) => Some(e),
            _ => None,
        }
    }
}

impl Program {
    /// A program by path or by name (looked up in `PATH`). Defaults: no arguments, empty stdin,
    /// the parent's environment, a 30 s deadline, 2 s grace, 64 MiB stdout, 64 KiB stderr.
    pub fn new(program: impl AsRef<OsStr>) -> Program {
        Program {
            program: program.as_ref().to_owned(),
            args: Vec::new(),
            env: Vec::new(),
            clear_env: false,
            cwd: None,
            stdin: Vec::new(),
            deadline: Duration::from_secs(30),
            grace: Duration::from_secs(2),
            max_stdout: 64 << 20,
            max_stderr: 64 << 10,
        }
    }

    /// Adds one argument (passed as is: no shell, no globbing, no quoting).
    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Program {
        self.args.push(arg.as_ref().to_owned());
        self
    }

    /// Adds arguments.
    pub fn args<I, S>(mut self, args: I) -> Program
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        self
    }

    /// Sets an environment variable.
    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Program {
        self.env
            .push((key.as_ref().to_owned(), value.as_ref().to_owned()));
        self
    }

    /// Starts from an empty environment (only the variables set with [`env`](Program::env)).
    pub fn env_clear(mut self) -> Program {
        self.clear_env = true;
        self
    }

    /// Runs in this directory.
    pub fn current_dir(mut self, dir: impl AsRef<Path>) -> Program {
        self.cwd = Some(dir.as_ref().to_owned());
        self
    }

    /// The bytes written to its stdin (then closed).
    pub fn stdin(mut self, bytes: impl Into<Vec<u8>>) -> Program {
        self.stdin = bytes.into();
        self
    }

    /// How long it may run before its process group is terminated.
    pub fn deadline(mut self, deadline: Duration) -> Program {
        self.deadline = deadline;
        self
    }

    /// How long SIGTERM has to work before SIGKILL.
    pub fn grace(mut self, grace: Duration) -> Program {
        self.grace = grace;
        self
    }

    /// The most stdout bytes accepted; more kills it with [`RunError::OutputTooLarge`].
    pub fn max_stdout(mut self, bytes: usize) -> Program {
        self.max_stdout = bytes;
        self
    }

    /// The most stderr bytes kept (the rest is read and dropped).
    pub fn max_stderr(mut self, bytes: usize) -> Program {
        self.max_stderr = bytes;
        self
    }

    /// Runs it to its end, its deadline, or its output cap.
    pub fn run(&self) -> Result<Output, RunError> {
        let mut command = Command::new(&self.program);
        command
            .args(&self.args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        if self.clear_env {
            command.env_clear();
        }
        command.envs(self.env.iter().map(|(k, v)| (k, v)));
        if let Some(dir) = &self.cwd {
            command.current_dir(dir);
        }
        let mut child = command.spawn().map_err(RunError::Spawn)?;
        let until = Instant::now() + self.deadline;
        let result = self
            .pump(&mut child, until)
            .and_then(|output| wait_for_exit(&mut child, until, output));
        match result {
            Ok(output) => {
                // Whatever it left running in its group goes too.
                kill_group(child.id(), libc::SIGKILL);
                Ok(output)
            }
            Err(e) => {
                terminate(&mut child, self.grace);
                Err(e)
            }
        }
    }

    /// Writes stdin and reads stdout and stderr until both close and the child exits, or the
    /// deadline or the cap is reached.
    fn pump(&self, child: &mut Child, until: Instant) -> Result<Output, RunError> {
        let mut stdin = child.stdin.take();
        let mut stdout = child.stdout.take();
        let mut stderr = child.stderr.take();
        for fd in [
            stdin.as_ref().map(|s| s.as_raw_fd()),
            stdout.as_ref().map(|s| s.as_raw_fd()),
            stderr.as_ref().map(|s| s.as_raw_fd()),
        ]
        .into_iter()
        .flatten()
        {
            set_nonblocking(fd).map_err(RunError::Io)?;
        }
        let mut written = 0;
        let mut out = Vec::new();
        let mut err = Vec::new();
        let mut err_truncated = false;
        let mut chunk = vec![0u8; 64 * 1024];
        if self.stdin.is_empty() {
            stdin = None;
        }
        while stdout.is_some() || stderr.is_some() {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(RunError::TimedOut { stderr: err });
            }
            let mut fds = Vec::with_capacity(3);
            if let Some(s) = &stdin {
                fds.push(poll_fd(s.as_raw_fd(), libc::POLLOUT));
            }
            if let Some(s) = &stdout {
                fds.push(poll_fd(s.as_raw_fd(), libc::POLLIN));
            }
            if let Some(s) = &stderr {
                fds.push(poll_fd(s.as_raw_fd(), libc::POLLIN));
            }
            let timeout =
                libc::c_int::try_from(left.as_millis().max(1)).unwrap_or(libc::c_int::MAX);
            // SAFETY: `fds` is a live, correctly sized array of pollfd for the whole call.
            let ready = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout) };
            if ready < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(RunError::Io(e));
            }
            if let Some(s) = stdin.as_mut() {
                match s.write(&self.stdin[written..]) {
                    Ok(n) => written += n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    // It closed its stdin (it reads no more): not an error.
                    Err(_) => written = self.stdin.len(),
                }
                if written >= self.stdin.len() {
                    stdin = None; // closes the pipe: end of input
                }
            }
            if let Some(s) = stdout.as_mut() {
                match read_some(s, &mut chunk)? {
                    Some(0) => stdout = None,
                    Some(n) => {
                        if out.len() + n > self.max_stdout {
                            return Err(RunError::OutputTooLarge);
                        }
                        out.extend_from_slice(&chunk[..n]);
                    }
                    None => {}
                }
            }
            if let Some(s) = stderr.as_mut() {
                match read_some(s, &mut chunk)? {
                    Some(0) => stderr = None,
                    Some(n) => {
                        let keep = n.min(self.max_stderr.saturating_sub(err.len()));
                        err.extend_from_slice(&chunk[..keep]);
                        err_truncated |= keep < n;
                    }
                    None => {}
                }
            }
        }
        Ok(Output {
            status: ExitStatus::from_raw(0),
            stdout: out,
            stderr: err,
            stderr_truncated: err_truncated,
        })
    }
}

/// Waits (until the deadline) for the child to exit after closing its output, and records how.
fn wait_for_exit(
    child: &mut Child,
    until: Instant,
    mut output: Output,
) -> Result<Output, RunError> {
    let mut pause = Duration::from_micros(200);
    loop {
        if let Some(status) = child.try_wait().map_err(RunError::Io)? {
            output.status = status;
            return Ok(output);
        }
        if Instant::now() >= until {
            return Err(RunError::TimedOut {
                stderr: output.stderr,
            });
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(10));
    }
}

fn poll_fd(fd: i32, events: libc::c_short) -> libc::pollfd {
    libc::pollfd {
        fd,
        events,
        revents: 0,
    }
}

/// `Some(0)` at end of file, `Some(n)` for bytes, `None` when nothing is there yet.
fn read_some(source: &mut impl Read, chunk: &mut [u8]) -> Result<Option<usize>, RunError> {
    match source.read(chunk) {
        Ok(n) => Ok(Some(n)),
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
            ) =>
        {
            Ok(None)
        }
        Err(e) => Err(RunError::Io(e)),
    }
}

fn set_nonblocking(fd: i32) -> io::Result<()> {
    // SAFETY: fcntl on a pipe descriptor owned by the `Child` handles for the whole call.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        if flags < 0 || libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

fn kill_group(group: u32, signal: libc::c_int) {
    if let Ok(group) = libc::pid_t::try_from(group) {
        // SAFETY: kill on the process group this module created for the child
        // (`process_group(0)` makes the child's pid its group id).
        unsafe {
            libc::kill(-group, signal);
        }
    }
}

/// SIGTERM to the group, SIGKILL after `grace` if the child still runs, then reaps it.
fn terminate(child: &mut Child, grace: Duration) {
    let group = child.id();
    kill_group(group, libc::SIGTERM);
    let until = Instant::now() + grace;
    while Instant::now() < until {
        if let Ok(Some(_)) = child.try_wait() {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    kill_group(group, libc::SIGKILL);
    let _ = child.wait();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_program_that_reads_nothing_does_not_deadlock() {
        let big = vec![b'x'; 4 << 20];
        let output = Program::new("sh")
            .args(["-c", "echo done"])
            .stdin(big)
            .run()
            .expect("runs");
        assert_eq!(output.stdout, b"done\n");
    }

    #[test]
    fn a_program_that_prints_a_lot_before_reading_does_not_deadlock() {
        let output = Program::new("sh")
            .args(["-c", "head -c 3000000 /dev/zero; wc -c"])
            .stdin(vec![b'y'; 1 << 20])
            .run()
            .expect("runs");
        assert_eq!(output.stdout.len(), 3_000_000 + "1048576\n".len());
    }

    #[test]
    fn the_deadline_kills_the_whole_group() {
        let started = Instant::now();
        let result = Program::new("sh")
            .args(["-c", "sleep 30 & sleep 30"])
            .deadline(Duration::from_millis(200))
            .grace(Duration::from_millis(100))
            .run();
        assert!(
            matches!(result, Err(RunError::TimedOut { .. })),
            "{result:?}"
        );
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn output_over_the_cap_is_refused_and_stderr_is_capped() {
        let result = Program::new("head")
            .args(["-c", "5000", "/dev/zero"])
            .max_stdout(4096)
            .run();
        assert!(
            matches!(result, Err(RunError::OutputTooLarge)),
            "{result:?}"
        );
        let output = Program::new("sh")
            .args(["-c", "head -c 100 /dev/zero >&2; exit 3"])
            .max_stderr(10)
            .run()
            .expect("runs");
        assert_eq!(output.status.code(), Some(3));
        assert_eq!((output.stderr.len(), output.stderr_truncated), (10, true));
    }

    /// Regression: the group was killed as soon as the output closed, so a program that closed
    /// its output and then exited normally was reported as killed by SIGKILL.
    #[test]
    fn the_exit_status_is_the_programs_own_after_it_closes_its_output() {
        let output = Program::new("sh")
            .args(["-c", "exec 1>&- 2>&-; sleep 0.1; exit 4"])
            .run()
            .expect("runs");
        assert_eq!(output.status.code(), Some(4));
    }

    #[test]
    fn a_missing_program_is_a_spawn_error() {
        let result = Program::new("/nonexistent/program").run();
        assert!(matches!(result, Err(RunError::Spawn(_))), "{result:?}");
    }
}
