//! A program that stays up, inside its executor: its folder's `serve` started once, in the
//! folder, with a clean environment (`PATH`, `HOME`, `LANG`, `LC_ALL`, `TZ`, then `PORT`,
//! `TMPDIR` and `FIDDLER_SOCKET` in its executor's private folder,
//! `FIDDLER_ROUTE`, then the folder's `env` lines); watched until it listens on one of the two
//! (and its `GET /health` answers anything but 503, the "still loading" of model servers);
//! called through `proxy`; stopped with SIGTERM, then SIGKILL, when its executor is told to go.
//!
//! It shares its executor's process group (a kill past the deadline takes both and whatever it
//! started) and dies with its executor (`PR_SET_PDEATHSIG`). Its stdout goes where the
//! executor's goes (the worker logs it with the route); its stderr too, line by line, and the
//! last lines are kept to say why a program never became ready. A program that exits takes its
//! executor with it: the worker sees the death (502 for the call in flight, a restart with
//! backoff).

use std::collections::VecDeque;
use std::fs;
use std::io::{self, BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStderr, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crate::exec::port_owner::{self, Owner};
use crate::exec::proxy::{read_head, Upstream};
use crate::exec::sandbox::settings::SandboxSettings;
use crate::exec::sandbox::{self, Mode};
use crate::exec::spawn::INIT_TIMEOUT_ENV;
use crate::ids::PluginName;
use crate::plugins::program::{self, ProgramSettings};
use crate::plugins::version::HandlerMeta;
use crate::process::signals::describe_exit;

/// The executor's exit code when its program exited while serving.
pub const EXIT_PROGRAM_GONE: i32 = 67;
/// How many ports a start tries when another process takes the one it was given.
const PORT_TRIES: u32 = 3;
/// Stderr lines kept for a refusal.
const TAIL_LINES: usize = 8;
/// The longest stderr line kept (longer ones are cut).
const MAX_LINE: usize = 2048;
/// Between two looks at whether it listens.
const PROBE_EVERY: Duration = Duration::from_millis(50);
/// How long the `/health` probe waits for an answer.
const HEALTH_WAIT: Duration = Duration::from_secs(2);
/// How long a failed call waits to learn whether the program exited.
const GONE_WAIT: Duration = Duration::from_millis(500);
/// Between SIGTERM and SIGKILL when it is stopped.
const STOP_GRACE: Duration = Duration::from_millis(1500);
/// The environment variables passed on from the executor's own.
const PASSED_ON: &[&str] = &["PATH", "HOME", "LANG", "LC_ALL", "TZ"];
/// `PATH` when the executor has none.
const DEFAULT_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// Where the program's life is, as its waiter thread must know.
const STARTING: u8 = 0;
const SERVING: u8 = 1;
const STOPPING: u8 = 2;

/// Why a program could not be started or never became ready.
pub struct StartError {
    /// One or two sentences for the log.
    pub reason: String,
    /// Its last stderr lines.
    pub detail: String,
}

impl StartError {
    /// A reason with no stderr to show.
    fn plain(reason: String) -> StartError {
        StartError {
            reason,
            detail: String::new(),
        }
    }
}

/// What the waiter thread shares: the program's state and its exit.
struct Life {
    state: AtomicU8,
    exit: Mutex<Option<ExitStatus>>,
    exited: Condvar,
}

/// A started program.
pub struct RunningProgram {
    pid: u32,
    /// Where it listens.
    pub upstream: Upstream,
    /// Its `FIDDLER_SOCKET` (removed when it stops) and `PORT`.
    socket: PathBuf,
    port: u16,
    life: Arc<Life>,
}

/// What a handler's folder declares, read once by its executor: its settings, its `env`
/// lines, and what its sandbox opens.
#[derive(Debug, Default)]
pub struct Declared {
    /// `settings`: deadline, limits, lanes, pace, port owner.
    pub settings: ProgramSettings,
    /// `env`: `KEY=value` lines.
    pub env: Vec<(String, String)>,
    /// The sandbox keys of `settings`.
    pub opened: SandboxSettings,
}

impl Declared {
    /// Reads `dir`'s `settings` and `env`.
    pub fn read(dir: &Path) -> Result<Declared, String> {
        Ok(Declared {
            settings: program::read_settings(dir)?,
            env: program::read_env(dir)?,
            opened: sandbox::settings::read(dir)?,
        })
    }
}

/// Starts `dir/serve` for `route` and waits until it listens (within the start timeout its
/// executor was given); returns it and what it reports about itself. A program that exits
/// because another process took its port first is started again on another port.
pub fn start(
    route: &PluginName,
    dir: &Path,
    declared: &Declared,
    private: &Path,
    mode: Mode,
) -> Result<(RunningProgram, HandlerMeta), StartError> {
    let Declared {
        settings,
        env: extra_env,
        opened,
    } = declared;
    let until = start_deadline(settings);
    let mut tries = 0;
    let (mut running, upstream) = loop {
        tries += 1;
        let (running, tail) = launch(route, dir, extra_env, private, mode, opened)?;
        let failure = match wait_until_listening(&running, until, !settings.any_port_owner) {
            Ok(upstream) => break (running, upstream),
            Err(failure) => failure,
        };
        running.abandon();
        if failure.port_taken && tries < PORT_TRIES && Instant::now() < until {
            eprintln!("its $PORT was taken by another process; starting it again on another");
            kill_leftovers();
            continue;
        }
        let lines = tail.lock().map(|t| t.iter().cloned().collect::<Vec<_>>());
        let detail = lines.unwrap_or_default().join("\n");
        let reason = match detail.lines().last() {
            Some(last) => format!("{}; its last stderr line: {last}", failure.reason),
            None => format!("{} (it printed nothing on stderr)", failure.reason),
        };
        return Err(StartError { reason, detail });
    };
    running.upstream = upstream.clone();
    running.life.state.store(SERVING, Ordering::SeqCst);
    if running.exit_status().is_some() {
        // It exited between the last look and now: the waiter saw it still starting.
        running.remove_socket();
        std::process::exit(EXIT_PROGRAM_GONE);
    }
    let meta = HandlerMeta {
        crate_name: "program".to_owned(),
        version: String::new(),
        description: format!("{}/serve on {upstream}", dir.display()),
        deadline_ms: settings.deadline_ms,
        max_body: settings.max_body,
        max_lanes: settings.max_lanes,
        max_batch: 1,
        sandbox: String::new(),
    };
    Ok((running, meta))
}

/// Kills what a failed start left in the executor's process group (its program's children),
/// so none of it binds the next start's socket or counts as the next start's processes.
fn kill_leftovers() {
    let group = port_owner::own_group();
    let this = std::process::id();
    if group != this {
        // Not a group of the executor's own (spawn makes it one): nothing here is only its.
        return;
    }
    for pid in port_owner::group_members(group)
        .into_iter()
        .filter(|&pid| pid != this)
    {
        let Ok(pid) = libc::pid_t::try_from(pid) else {
            continue;
        };
        // SAFETY: kill on a process of the executor's own group, not itself.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
        }
    }
}

/// Its last stderr lines, as its relay keeps them.
type Tail = Arc<Mutex<VecDeque<String>>>;

/// Runs `dir/serve` once, on a new free port, with its socket in the executor's private
/// folder, its own Landlock layer for that port, its stderr relayed and its exit watched.
fn launch(
    route: &PluginName,
    dir: &Path,
    extra_env: &[(String, String)],
    private: &Path,
    mode: Mode,
    opened: &SandboxSettings,
) -> Result<(RunningProgram, Tail), StartError> {
    let socket = private.join(sandbox::private::SOCKET);
    let _ = fs::remove_file(&socket);
    let port =
        free_port().map_err(|e| StartError::plain(format!("cannot find a free port: {e}")))?;
    let ports = sandbox::for_program(mode, port, opened);
    let mut command = Command::new(dir.join(program::SERVE));
    command
        .current_dir(dir)
        .env_clear()
        .stdin(Stdio::null())
        .stdout(Stdio::inherit())
        .stderr(Stdio::piped());
    for name in PASSED_ON {
        if let Some(value) = std::env::var_os(name) {
            command.env(name, value);
        }
    }
    if std::env::var_os("PATH").is_none() {
        command.env("PATH", DEFAULT_PATH);
    }
    command
        .env("PORT", port.to_string())
        .env("TMPDIR", private)
        .env("FIDDLER_SOCKET", &socket)
        .env("FIDDLER_ROUTE", route.as_str())
        .envs(extra_env.iter().map(|(k, v)| (k, v)));
    // SAFETY: between fork and exec only prctl and landlock_restrict_self, both
    // async-signal-safe system calls, are made.
    unsafe {
        command.pre_exec(move || {
            // Dies with its executor, even if the executor is killed outright.
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(io::Error::last_os_error());
            }
            match &ports {
                Some(ruleset) => ruleset.restrict(),
                None => Ok(()),
            }
        });
    }
    let mut child = command
        .spawn()
        .map_err(|e| StartError::plain(format!("cannot run its serve: {e}")))?;
    let tail = Arc::new(Mutex::new(VecDeque::new()));
    if let Some(stderr) = child.stderr.take() {
        relay_stderr(stderr, Arc::clone(&tail));
    }
    let life = Arc::new(Life {
        state: AtomicU8::new(STARTING),
        exit: Mutex::new(None),
        exited: Condvar::new(),
    });
    let running = RunningProgram {
        pid: child.id(),
        upstream: Upstream::Tcp(SocketAddr::from((Ipv4Addr::LOCALHOST, port))),
        socket: socket.clone(),
        port,
        life: Arc::clone(&life),
    };
    watch_exit(child, life, socket);
    Ok((running, tail))
}

impl RunningProgram {
    /// Its exit status, once it has exited.
    fn exit_status(&self) -> Option<ExitStatus> {
        self.life.exit.lock().ok().and_then(|e| *e)
    }

    /// Ends the executor if its program has exited (waiting a moment for its waiter to see
    /// it): a failed connection is then the program's death, not a failed call.
    pub fn exit_if_gone(&self) {
        if let Some(status) = self.wait_exit(GONE_WAIT) {
            eprintln!(
                "its serve [{}] exited ({}); the executor exits with it",
                self.pid,
                describe_exit(status)
            );
            self.remove_socket();
            std::process::exit(EXIT_PROGRAM_GONE);
        }
    }

    fn remove_socket(&self) {
        let _ = fs::remove_file(&self.socket);
    }

    /// Stops it: SIGTERM, a grace to exit, then SIGKILL for its executor's whole group (this
    /// process included: stopping is the executor's last act; once the program has exited,
    /// its waiter ends the executor).
    pub fn stop(&self) {
        self.life.state.store(STOPPING, Ordering::SeqCst);
        if !self.terminate() {
            self.remove_socket();
            // SAFETY: our own process group; this process goes with it, as intended.
            unsafe {
                libc::kill(0, libc::SIGKILL);
            }
        }
    }

    /// Stops a program that never became ready, leaving the executor to say so.
    fn abandon(&self) {
        if !self.terminate() {
            self.signal(libc::SIGKILL);
        }
        self.remove_socket();
    }

    /// SIGTERM, then up to [`STOP_GRACE`] for it to exit; whether it did.
    fn terminate(&self) -> bool {
        self.signal(libc::SIGTERM);
        self.wait_exit(STOP_GRACE).is_some()
    }

    /// Its exit status, waiting up to `within` for its waiter to see it exit.
    fn wait_exit(&self, within: Duration) -> Option<ExitStatus> {
        let until = Instant::now() + within;
        let mut exit = self.life.exit.lock().ok()?;
        while exit.is_none() && Instant::now() < until {
            let left = until.saturating_duration_since(Instant::now());
            exit = self.life.exited.wait_timeout(exit, left).ok()?.0;
        }
        *exit
    }

    fn signal(&self, signal: libc::c_int) {
        if self.exit_status().is_some() {
            return;
        }
        if let Ok(pid) = libc::pid_t::try_from(self.pid) {
            // SAFETY: kill on our own child. Its waiter records the exit as soon as it reaps
            // it, and that was checked just above; only in the moment between the two could
            // the pid be a new process's.
            unsafe {
                libc::kill(pid, signal);
            }
        }
    }
}

/// The start deadline: the executor's init timeout, less a margin to report why.
fn start_deadline(settings: &ProgramSettings) -> Instant {
    let timeout = std::env::var(INIT_TIMEOUT_ENV)
        .ok()
        .and_then(|ms| ms.parse().ok())
        .map(Duration::from_millis)
        .or(settings.start_timeout)
        .unwrap_or(Duration::from_secs(60));
    // The executor started after the worker's clock did, and stopping a program that never
    // listened takes a moment: a quarter (at most 1 s) is kept so the reason reaches the
    // worker before its own init timeout ends the executor without one.
    let margin = (timeout / 4).min(Duration::from_secs(1));
    Instant::now() + timeout - margin
}

/// Why a program never became ready.
struct NotReady {
    reason: String,
    /// Another process listens on its port (a program that exits then most likely could not
    /// bind it).
    port_taken: bool,
}

/// Looks until it accepts a connection on its socket or port and its `/health` answers
/// anything but 503 (see [`health_says`]), it exits, or `until` passes. With `own_port`, a
/// connection to a port that another process listens on is left unprobed.
fn wait_until_listening(
    running: &RunningProgram,
    until: Instant,
    own_port: bool,
) -> Result<Upstream, NotReady> {
    let port = running.port;
    let tcp = Upstream::Tcp(SocketAddr::from((Ipv4Addr::LOCALHOST, port)));
    let unix = Upstream::Unix(running.socket.clone());
    let mut owner = PortOwner::new(running, own_port);
    let mut loading = false;
    loop {
        if let Some(status) = running.exit_status() {
            let port_taken = owner.look() == Owner::Other;
            let taken = match port_taken {
                true => format!(" (its $PORT {port} was taken by another process)"),
                false => String::new(),
            };
            return Err(NotReady {
                reason: format!(
                    "its serve exited ({}) before it listened{taken}",
                    describe_exit(status)
                ),
                port_taken,
            });
        }
        let candidates = match running.socket.exists() {
            true => [&unix, &tcp],
            false => [&tcp, &tcp],
        };
        for upstream in candidates {
            match probe(upstream, &mut owner) {
                Probe::Ready => return Ok(upstream.clone()),
                Probe::Loading => loading = true,
                Probe::NotListening => {}
            }
        }
        if Instant::now() >= until {
            let port_taken = owner.look() == Owner::Other;
            let reason = match (loading, port_taken) {
                (true, _) => "its GET /health still answered 503 (not ready yet) when its start \
                              timeout passed"
                    .to_owned(),
                (false, true) => format!(
                    "it did not listen on $FIDDLER_SOCKET before its start timeout, and its \
                     $PORT {port} was taken by another process (port_owner=any in its settings \
                     if that process listens for it)"
                ),
                (false, false) => {
                    "it did not listen on $PORT or $FIDDLER_SOCKET before its start timeout \
                     (--init-timeout, or start_timeout in its settings)"
                        .to_owned()
                }
            };
            return Err(NotReady { reason, port_taken });
        }
        thread::sleep(PROBE_EVERY);
    }
}

/// Whose the program's `$PORT` is, looked up in /proc as seldom as will do: once a listener
/// there is the program's it stays so (nobody else can bind it while it holds it), and another
/// process's is looked at again at most every [`RECHECK_OTHER`].
struct PortOwner {
    port: u16,
    pid: u32,
    group: u32,
    /// Off (`port_owner=any`): every listener counts as the program's.
    check: bool,
    known: Option<(Owner, Instant)>,
}

/// How long a port found another process's is left before it is looked at again.
const RECHECK_OTHER: Duration = Duration::from_secs(1);

impl PortOwner {
    fn new(running: &RunningProgram, check: bool) -> PortOwner {
        PortOwner {
            port: running.port,
            pid: running.pid,
            group: port_owner::own_group(),
            check,
            known: None,
        }
    }

    /// Whether another process listens there, as far as is known.
    fn taken(&mut self) -> bool {
        if !self.check {
            return false;
        }
        match self.known {
            Some((Owner::Program | Owner::Unknown, _)) => false,
            Some((Owner::Other, at)) if at.elapsed() < RECHECK_OTHER => true,
            _ => self.look() == Owner::Other,
        }
    }

    /// Looks now (the program's exit, the timeout: what holds the port at this moment).
    fn look(&mut self) -> Owner {
        if !self.check {
            return Owner::Unknown;
        }
        let owner = port_owner::owner(self.port, self.pid, self.group);
        if owner != Owner::Nobody {
            self.known = Some((owner, Instant::now()));
        }
        owner
    }
}

/// What one look at a program found.
enum Probe {
    /// It accepts and its `/health` answers anything but 503.
    Ready,
    /// It accepts but its `/health` says 503 (a model still loading).
    Loading,
    /// Nothing accepts there (yet).
    NotListening,
}

/// Connects and asks for `/health`; a port another process listens on is left before a byte
/// is sent (what answers there is not the program).
fn probe(upstream: &Upstream, owner: &mut PortOwner) -> Probe {
    let Ok(mut wire) = upstream.connect() else {
        return Probe::NotListening;
    };
    if matches!(upstream, Upstream::Tcp(_)) && owner.taken() {
        return Probe::NotListening;
    }
    let _ = wire.set_read_timeout(Some(HEALTH_WAIT));
    let ask = b"GET /health HTTP/1.1\r\nHost: localhost\r\nUser-Agent: fiddler-crab\r\n\
                Connection: close\r\n\r\n";
    if wire.write_all(ask).is_err() {
        return Probe::NotListening;
    }
    let mut buf = Vec::new();
    match read_head(&mut wire, &mut buf) {
        Ok(head) => health_says(head.status),
        Err(_) => Probe::NotListening,
    }
}

/// What a `/health` answer with `status` says. Any HTTP answer proves it listens; only 503
/// means "not yet" (model servers, llama-server among them, answer it while they load). A 404
/// (no such route), a 501 (a server with only `do_POST`), a redirect, a 401 (every path behind
/// a login) or a 500 (a health route that breaks) is a program that is up.
fn health_says(status: u16) -> Probe {
    match status {
        503 => Probe::Loading,
        _ => Probe::Ready,
    }
}

/// A free loopback port, found by binding port 0 and letting it go (the program binds it a
/// moment later; another process that takes it in between is seen by `port_owner`, never
/// taken for the program, and the start fails and is retried on another port).
fn free_port() -> io::Result<u16> {
    Ok(TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
        .local_addr()?
        .port())
}

/// Copies the program's stderr to the executor's, line by line, keeping the last lines.
fn relay_stderr(stderr: ChildStderr, tail: Arc<Mutex<VecDeque<String>>>) {
    let relay = move || {
        let mut reader = BufReader::new(stderr);
        let mut line = Vec::new();
        loop {
            line.clear();
            match reader.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            let text = String::from_utf8_lossy(&line[..line.len().min(MAX_LINE)]);
            let text = text.trim_end();
            let _ = writeln!(io::stderr(), "{text}");
            if let Ok(mut tail) = tail.lock() {
                if tail.len() == TAIL_LINES {
                    tail.pop_front();
                }
                tail.push_back(text.to_owned());
            }
        }
    };
    if thread::Builder::new()
        .name("stderr".to_owned())
        .spawn(relay)
        .is_err()
    {
        eprintln!("executor: cannot start the thread that relays its program's stderr");
    }
}

/// Waits for the program to exit on a thread of its own. While it serves, its exit ends the
/// executor; while it starts, the exit is reported to the start (which says why).
fn watch_exit(mut child: Child, life: Arc<Life>, socket: PathBuf) {
    let pid = child.id();
    let watch = move || {
        let status = child.wait().unwrap_or_else(|_| ExitStatus::from_raw(0));
        if let Ok(mut exit) = life.exit.lock() {
            *exit = Some(status);
        }
        life.exited.notify_all();
        match life.state.load(Ordering::SeqCst) {
            SERVING => {
                eprintln!(
                    "its serve [{pid}] exited ({}); the executor exits with it",
                    describe_exit(status)
                );
                let _ = fs::remove_file(&socket);
                std::process::exit(EXIT_PROGRAM_GONE);
            }
            STOPPING => {
                let _ = fs::remove_file(&socket);
                std::process::exit(0);
            }
            _ => {}
        }
    };
    if thread::Builder::new()
        .name("waiter".to_owned())
        .spawn(watch)
        .is_err()
    {
        eprintln!("executor: cannot start the thread that watches its program");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_503_from_health_means_not_yet() {
        for status in [200, 204, 301, 401, 404, 405, 500, 501, 502, 504] {
            assert!(
                matches!(health_says(status), Probe::Ready),
                "{status} is an answer"
            );
        }
        assert!(matches!(health_says(503), Probe::Loading));
    }
}
