//! `fiddler-crab`: a slim, load-impervious HTTP server that hosts handler plugins.
//!
//! Three kinds of process (DESIGN.md, "The shape"): the supervisor binds the listeners and
//! restarts the worker; the worker is one event loop (intake) plus the watcher thread and never
//! runs plugin code; executors (this binary under a hidden subcommand) each serve one handler
//! version, one call at a time. [`run`] wires a worker together; `main.rs` parses flags and
//! picks the process kind.
//!
//! A request's way: socket -> intake (TLS, parse, limits) -> queue -> dispatch -> executor
//! (frame out) -> plugin -> executor (frame back) -> intake -> socket.
//!
//! What each failure costs (DESIGN.md's first promise, kept by the process boundary):
//!
//! | what happens in plugin code | that request | everything else |
//! | --- | --- | --- |
//! | panic | 500 naming the plugin | served; the executor stays |
//! | segfault, abort, stack overflow, `exit`, OOM kill, `SIGKILL` | 502 | served; a fresh executor starts at once, then with a crash-loop backoff |
//! | past its deadline | 504 at once | served; the executor's process group is killed, a fresh one starts |
//! | `init` fails, crashes or passes `--init-timeout` | (no request yet) | that version is refused; the previous one serves |
//! | prints | | its lines go to the log with the route, 20 a second at most |
//!
//! The stages, in the order a request meets them: `net` (listeners, TLS), `http` (sans-IO
//! parsing), `access` (a route's keys, checked as soon as its head is parsed; which admin
//! routes are private), `intake` (the loop, admission, connections, queue, dispatch), `exec`
//! (frames, executors, the pool), `plugins` (the watcher, handler files, key files, the
//! loader, CGI). `process` is the supervisor around the worker, `observe` the counters and the
//! log, `ids` the identities they share.

#![deny(clippy::undocumented_unsafe_blocks)]

pub mod access;
pub mod authoring;
pub mod bodies;
pub mod config;
pub mod exec;
pub mod http;
pub mod ids;
pub mod intake;
pub mod jellyfish;
pub mod lookup;
pub mod net;
pub mod observe;
pub mod plugins;
pub mod process;
pub mod replay;

use std::fmt;
use std::io;
use std::sync::mpsc;
use std::sync::Arc;

/// Big bodies are mapped files handed out as `Vec`s; this allocator frees and grows them.
#[global_allocator]
static ALLOCATOR: bodies::MappingAware = bodies::MappingAware;

use config::Config;
use exec::pool::{Pool, PoolSettings};
use intake::{Intake, IntakeSettings, WAKER};
use net::listener::{self, Scheme};
use net::tls;
use plugins::files;
use plugins::watcher::{LoopLink, Watcher};
use process::signals;

/// Why the server could not start or stopped.
#[derive(Debug)]
pub enum RunError {
    /// The listener could not be bound.
    Bind(std::net::SocketAddr, io::Error),
    /// The private directory for plugin copies could not be made.
    PrivateDir(io::Error),
    /// The HTTPS certificate or key could not be used.
    Tls(tls::TlsError),
    /// The event loop or a thread could not be set up, or polling failed.
    EventLoop(io::Error),
    /// The supervisor could not start a worker process.
    Worker(io::Error),
}

impl fmt::Display for RunError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RunError::Bind(addr, e) => write!(f, "cannot listen on {addr}: {e}"),
            RunError::PrivateDir(e) => write!(f, "cannot make the private plugin directory: {e}"),
            RunError::Tls(e) if cfg!(feature = "tls") => write!(
                f,
                "HTTPS: {e} (make a development certificate with certs/make-dev-cert, or pass \
                 --https off)"
            ),
            RunError::Tls(e) => write!(f, "HTTPS: {e}"),
            RunError::EventLoop(e) => write!(f, "event loop failed: {e}"),
            RunError::Worker(e) => write!(f, "cannot start a worker process: {e}"),
        }
    }
}

impl std::error::Error for RunError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            RunError::Bind(_, e)
            | RunError::PrivateDir(e)
            | RunError::EventLoop(e)
            | RunError::Worker(e) => Some(e),
            RunError::Tls(e) => Some(e),
        }
    }
}

/// What no executor's sandbox may open, whatever a plugin's settings say. Sealed: the TLS key
/// and the folder it is in (a renewal's older keys sit beside it; unless that folder is `/`,
/// a system folder or the home folder: then the key alone), the server-wide API keys, the
/// plugins folder (a plugin must not drop code into it), the server's private and state folders
/// (every plugin's private copy) and the crash folder (requests). Never opened whole: the
/// server's working folder.
fn protected_paths(
    config: &Config,
    runtime_dir: &std::path::Path,
    state_dir: Option<&std::path::Path>,
) -> exec::sandbox::paths::Protected {
    use std::path::{Path, PathBuf};
    let absolute = |p: &Path| std::path::absolute(p).unwrap_or_else(|_| p.to_owned());
    let mut sealed: Vec<PathBuf> = Vec::new();
    let key = absolute(&config.key);
    let real_key = std::fs::canonicalize(&key).unwrap_or_else(|_| key.clone());
    for key in [key, real_key] {
        if let Some(folder) = key.parent() {
            if !exec::sandbox::paths::too_wide_to_seal(folder) {
                sealed.push(folder.to_owned());
            }
        }
        sealed.push(key);
    }
    sealed.push(absolute(&config.plugins));
    sealed.push(runtime_dir.to_owned());
    sealed.extend(state_dir.map(absolute));
    sealed.extend(config.crash_dir.as_deref().map(absolute));
    sealed.extend(config.keys.as_deref().map(absolute));
    exec::sandbox::paths::Protected {
        sealed,
        never_whole: std::env::current_dir().into_iter().collect(),
    }
}

/// The crash writer for `--crash-dir`, if one is asked for and can be started (else a log line
/// says why and crashes are not kept).
fn crash_sink(config: &Config) -> Option<exec::crashes::CrashSink> {
    let dir = config.crash_dir.clone()?;
    match exec::crashes::CrashSink::start(dir.clone(), config.crash_keep, config.crash_secrets) {
        Ok(sink) => Some(sink),
        Err(e) => {
            warn!(
                "crash files are not kept: cannot use {}: {e}",
                dir.display()
            );
            None
        }
    }
}

/// Binds the listeners the configuration asks for.
pub fn bind_listeners(config: &Config) -> Result<Vec<(std::net::TcpListener, Scheme)>, RunError> {
    let mut listeners = Vec::new();
    for (addr, scheme) in [
        (config.http, Scheme::Http),
        (config.https, Scheme::Https),
        (config.admin, Scheme::Admin),
        (config.agent, Scheme::Agent),
    ] {
        if let Some(addr) = addr {
            let socket =
                listener::bind(addr, config.backlog).map_err(|e| RunError::Bind(addr, e))?;
            listeners.push((socket, scheme));
        }
    }
    Ok(listeners)
}

/// Runs a worker until it is told to stop (SIGTERM: drain, then return) or fails. Uses the
/// listeners a supervisor or systemd passed (`LISTEN_FDS`), else binds its own and logs
/// `listening on http://ADDR` (and `https://`).
pub fn run(config: Config) -> Result<(), RunError> {
    signals::install();
    let (listeners, supervised) = match listener::inherited() {
        Some(inherited) => (inherited.map_err(RunError::EventLoop)?, true),
        None => (bind_listeners(&config)?, false),
    };
    let wants_tls = listeners.iter().any(|(_, scheme)| *scheme == Scheme::Https);
    let certs = match wants_tls {
        true => Some(tls::CertStore::load(&config.cert, &config.key).map_err(RunError::Tls)?),
        false => None,
    };
    let state_dir = std::env::var_os("FIDDLER_STATE_DIR").map(std::path::PathBuf::from);
    if state_dir.is_none() {
        // No supervisor keeps a folder for this worker: clean up after killed ones here.
        let stale = files::remove_stale(&std::env::temp_dir());
        if stale > 0 {
            info!("removed {stale} private folder(s) left by servers that were killed");
        }
    }
    let private = files::PrivateDir::create(state_dir.as_deref()).map_err(RunError::PrivateDir)?;
    let runtime_dir = private.path().to_owned();
    // Absolute, so the log lines name the very file read.
    let server_keys = config
        .keys
        .as_ref()
        .map(|k| std::path::absolute(k).unwrap_or_else(|_| k.clone()));
    let mut watcher = Watcher::new(
        &config.plugins,
        private,
        config.watch_interval,
        config.insecure_plugins_dir,
        plugins::keyfiles::KeyFiles::new(server_keys, config.insecure_plugins_dir),
    );
    if config.insecure_plugins_dir {
        warn!(
            "--insecure-plugins-dir: plugins are loaded whoever owns or can write them; anyone \
             who can write {} can run code as this server",
            config.plugins.display()
        );
    }
    let versions = watcher.scan_now();
    let access = watcher.take_access();
    let found = versions.len();

    let poll = mio::Poll::new().map_err(RunError::EventLoop)?;
    let waker = Arc::new(mio::Waker::new(poll.registry(), WAKER).map_err(RunError::EventLoop)?);
    let (changes, incoming) = mpsc::channel();
    watcher
        .spawn(LoopLink { changes, waker })
        .map_err(RunError::EventLoop)?;
    let jellyfish = match config.mode {
        jellyfish::Mode::Jellyfish => Some(jellyfish::Jellyfish::new(config.jellyfish)),
        jellyfish::Mode::Crab => None,
    };
    if let Some(jellyfish) = &jellyfish {
        info!(
            "mode jellyfish: up to {} lane(s) on green, batches of up to {} on yellow; light \
             every {} ms from {}",
            config.jellyfish.lanes_max,
            config.jellyfish.batch_max,
            config.jellyfish.interval.as_millis(),
            jellyfish.source()
        );
    }
    let pool = Pool::new(
        PoolSettings {
            lanes: jellyfish.as_ref().map_or(config.lanes, |j| j.lanes()),
            mode: config.mode,
            batch_max: jellyfish.as_ref().map_or(1, |j| j.batch_max()),
            capped_batch_max: jellyfish.as_ref().map_or(1, |j| j.capped_batch_max()),
            deadline: config.deadline,
            init_timeout: config.init_timeout,
            memory_limit: config.executor_memory,
            pace: config.pace,
            sandbox: config.sandbox,
            protected: protected_paths(&config, &runtime_dir, state_dir.as_deref()),
        },
        runtime_dir,
        crash_sink(&config),
    );

    let mut intake = Intake::new(
        poll,
        listeners,
        certs,
        pool,
        incoming,
        intake::admission::Admission::new(config.max_conns, config.max_conns_per_ip, config.busy),
        config.queue,
        config.queue_bytes,
        IntakeSettings {
            head_limits: http::parse::HeadLimits::default(),
            max_body: config.max_body,
            header_timeout: config.header_timeout,
            idle_timeout: config.idle_timeout,
            queue_wait: config.queue_wait,
            min_rate: config.min_rate,
            pressure_timeout: config.pressure_timeout,
            drain_timeout: config.drain_timeout,
        },
        jellyfish,
    )
    .map_err(RunError::EventLoop)?;
    // The rules before the versions: no route is served a moment without its keys.
    for update in access {
        intake.apply_access(update);
    }
    intake.install(versions);
    let addrs = intake.local_addrs().map_err(RunError::EventLoop)?;
    info!(
        "limits: queue {} requests / {} bytes, body {} bytes, {} connections, {} lane(s), \
         deadline {} ms, init {} ms",
        config.queue,
        config.queue_bytes,
        config.max_body,
        config.max_conns,
        config.lanes,
        config.deadline.as_millis(),
        config.init_timeout.as_millis()
    );
    let plugins = config.plugins.clone();
    // A worker taking over in a planned restart accepts only once ready (the old one serves
    // until then); any other answers from its first moment, while its versions start.
    let takes_over = std::env::var_os(TAKES_OVER).is_some();
    std::env::remove_var(TAKES_OVER);
    if !takes_over {
        if !supervised {
            for (scheme, addr) in &addrs {
                info!("{}", scheme.describe(*addr));
            }
        }
        if found > 0 {
            info!(
                "worker [{}] accepting; starting {found} handler(s) found in {}",
                std::process::id(),
                plugins.display()
            );
        }
    }
    intake
        .run(!takes_over, move || {
            info!(
                "serving {found} handler(s) found in {} (each in its own executor process)",
                plugins.display()
            );
            if takes_over && !supervised {
                for (scheme, addr) in addrs {
                    info!("{}", scheme.describe(addr));
                }
            }
            // Every version found at start is ready or refused (tests wait for this line).
            info!("worker [{}] ready", std::process::id());
            signal_ready();
        })
        .map_err(RunError::EventLoop)
}

/// Set by the supervisor on a worker it starts for a planned restart: that worker accepts only
/// once its first versions are ready or refused.
pub const TAKES_OVER: &str = "FIDDLER_TAKES_OVER";

/// Tells the supervisor this worker is ready: every version found at start is ready or refused
/// (one byte on `FIDDLER_READY_FD`, then closed).
fn signal_ready() {
    let Some(fd) = std::env::var("FIDDLER_READY_FD")
        .ok()
        .and_then(|fd| fd.parse::<std::os::fd::RawFd>().ok())
    else {
        return;
    };
    std::env::remove_var("FIDDLER_READY_FD");
    // SAFETY: the supervisor passed this descriptor for this purpose; we write one byte from a
    // local and close it, and never use the number again.
    unsafe {
        libc::write(fd, b"1".as_ptr().cast(), 1);
        libc::close(fd);
    }
}
