//! The executor process: `fiddler-crab __executor KIND ROUTE FILE [FOLDER]`, started by the
//! worker (FOLDER: a native plugin's own folder, when it came as one).
//!
//! It raises its own `oom_score_adj` (so the kernel kills an executor before the worker), takes
//! its socket from descriptor 3, loads its handler (a native plugin: dlopen + `init`, once; a
//! CGI program: nothing to load; a program that stays up: started, and waited for until it
//! listens), says `Ready` or `Refused`, then serves one call at a time: read a `Request`
//! frame, call, write a `Response` (or `Panicked`) frame, or a streamed answer. The plugin's own
//! shim catches its panics; the call is wrapped again here. End of file on the socket (the
//! worker retired it, or died) ends it. Blocking IO is fine here: this process does one thing.

use std::io;
use std::os::fd::FromRawFd;
use std::os::unix::net::UnixStream;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::time::Duration;

use plugin_api::{Request, Response};

use crate::exec::frame::{self, Message};
use crate::exec::link::{Downstream, LinkEnd, WorkerLink};
use crate::exec::program::{self, RunningProgram};
use crate::exec::proxy::Proxy;
use crate::exec::sandbox;
use crate::exec::spawn::EXECUTOR_FD;
use crate::ids::HandlerKind;
use crate::ids::PluginName;
use crate::plugins::cgi::{self, CgiProgram};
use crate::plugins::loader::{self, LoadError, LoadedPlugin, PieceSink};
use crate::plugins::version::HandlerMeta;

/// What an executor process raises its OOM score by: the kernel's OOM killer picks the
/// executor (expendable, restarted) long before the worker (which holds every client).
const OOM_SCORE_ADJ: &[u8] = b"1000";
/// Exit codes.
const EXIT_USAGE: i32 = 64;
const EXIT_PROTOCOL: i32 = 65;
const EXIT_REFUSED: i32 = 66;

/// A handler as the executor holds it.
enum Handler {
    Native(LoadedPlugin),
    Cgi(CgiProgram),
    Program(RunningProgram, Proxy),
}

/// Runs the executor; returns its exit code.
pub fn main(args: &[String]) -> i32 {
    let (kind, route, file, folder) = match args {
        [kind, route, file] => (kind, route, file, None),
        [kind, route, file, folder] => (kind, route, file, Some(Path::new(folder))),
        _ => {
            eprintln!(
                "usage: fiddler-crab __executor native|cgi|program ROUTE FILE [FOLDER] (started \
                 by the worker)"
            );
            return EXIT_USAGE;
        }
    };
    let (Some(kind), Some(route)) = (HandlerKind::parse(kind), PluginName::parse(route)) else {
        eprintln!("executor: bad kind or route {kind:?} {route:?}");
        return EXIT_USAGE;
    };
    let _ = std::fs::write("/proc/self/oom_score_adj", OOM_SCORE_ADJ);
    // Close-on-exec from here on: a program the plugin starts must not inherit the socket, or
    // it would keep it open after this process died and the worker would never see the end.
    // SAFETY: F_SETFD only changes the flags of descriptor 3; it fails if 3 is not open.
    if unsafe { libc::fcntl(EXECUTOR_FD, libc::F_SETFD, libc::FD_CLOEXEC) } < 0 {
        eprintln!("executor: no socket on descriptor {EXECUTOR_FD} (it is started by the worker)");
        return EXIT_USAGE;
    }
    // SAFETY: the worker passed one end of a socketpair as descriptor 3 for this process
    // alone; nothing else here owns it.
    let socket = unsafe { UnixStream::from_raw_fd(EXECUTOR_FD) };
    let mut link = WorkerLink::new(socket);
    let mut handler = match start(kind, route, Path::new(file), folder) {
        Ok((handler, meta)) => {
            if frame::send(&mut link, &frame::ready(&meta), &[]).is_err() {
                return 0;
            }
            handler
        }
        Err((reason, detail)) => {
            let _ = frame::send(&mut link, &frame::refused(&reason, &detail), &[]);
            return EXIT_REFUSED;
        }
    };
    let code = serve(&mut link, &mut handler);
    if let Handler::Program(program, _) = &handler {
        program.stop();
    }
    code
}

/// Loads or starts the handler (under `catch_unwind`: a host-side panic is a refusal, not a
/// crash) inside its sandbox, set up first; a refusal is its reason and its detail.
fn start(
    kind: HandlerKind,
    route: PluginName,
    file: &Path,
    folder: Option<&Path>,
) -> Result<(Handler, HandlerMeta), (String, String)> {
    let plain = |why: String| (why, String::new());
    let mode = sandbox::Mode::from_env();
    let private = sandbox::private::create()
        .map_err(|e| plain(format!("cannot make its private folder: {e}")))?;
    std::env::set_var("TMPDIR", &private);
    // Its home: its own folder when it has one, else its private folder (never the worker's).
    let home = folder.unwrap_or(match kind {
        HandlerKind::Program => file,
        _ => &private,
    });
    std::env::set_current_dir(home)
        .map_err(|e| plain(format!("cannot enter {}: {e}", home.display())))?;
    let settings_dir = folder.or((kind == HandlerKind::Program).then_some(file));
    let declared = match settings_dir {
        Some(dir) => program::Declared::read(dir).map_err(plain)?,
        None => program::Declared::default(),
    };
    if kind == HandlerKind::Native {
        if let Some(dir) = folder {
            // So `init` finds its model: the folder, and its `env` in the environment.
            std::env::set_var(plugin_api::PLUGIN_DIR_ENV, dir);
            for (key, value) in &declared.env {
                std::env::set_var(key, value);
            }
        }
    }
    let report = sandbox::enter(
        mode,
        &sandbox::Plan {
            kind,
            file,
            folder,
            env: &declared.env,
            settings: &declared.opened,
            private: &private,
        },
    );
    if mode == sandbox::Mode::Strict && !report.missing.is_empty() {
        return Err(plain(format!(
            "it cannot be fully sandboxed here (--sandbox strict): missing {}",
            report.missing.join("; ")
        )));
    }
    let (handler, mut meta) = match kind {
        HandlerKind::Native => {
            let loaded = catch_unwind(|| loader::load(file)).unwrap_or_else(|_| {
                Err(LoadError::Init(
                    "loading panicked on the host side".to_owned(),
                ))
            });
            let plugin = loaded.map_err(|e| match e {
                LoadError::Library { plain, detail } => (plain, detail),
                LoadError::Init(_) => (e.to_string(), String::new()),
            })?;
            let mut meta = plugin.meta.clone();
            if folder.is_some() {
                // The folder's settings are the operator's word: they win over the plugin's.
                let settings = &declared.settings;
                meta.deadline_ms = settings.deadline_ms.or(meta.deadline_ms);
                meta.max_body = settings.max_body.or(meta.max_body);
                meta.max_lanes = settings.max_lanes.or(meta.max_lanes);
            }
            (Handler::Native(plugin), meta)
        }
        HandlerKind::Program => {
            let (running, meta) = program::start(&route, file, &declared, &private, mode)
                .map_err(|e| (e.reason, e.detail))?;
            let proxy = Proxy::new(running.upstream.clone(), route.as_str());
            (Handler::Program(running, proxy), meta)
        }
        HandlerKind::Cgi => {
            let meta = HandlerMeta {
                crate_name: "cgi".to_owned(),
                description: format!("program {}", file.display()),
                max_batch: 1,
                ..HandlerMeta::default()
            };
            let program = CgiProgram {
                name: route,
                path: PathBuf::from(file),
                workdir: match (mode, file.parent()) {
                    (sandbox::Mode::Off, Some(own)) => own.to_owned(),
                    _ => private.clone(),
                },
                tmpdir: private.clone(),
            };
            (Handler::Cgi(program), meta)
        }
    };
    meta.sandbox = report.line();
    Ok((handler, meta))
}

/// Answers requests until the worker closes the socket.
fn serve(link: &mut WorkerLink, handler: &mut Handler) -> i32 {
    // A batch being read: how many requests it has, and those read so far.
    let mut batch: Option<(usize, Vec<Request>)> = None;
    loop {
        let message = match link.receive() {
            Ok(message) => message,
            Err(LinkEnd::Closed) => return 0,
            Err(LinkEnd::Broken(e)) => {
                eprintln!("executor: {e}; exiting");
                return EXIT_PROTOCOL;
            }
        };
        let (request, deadline_ms) = match message {
            Message::Request(request, deadline_ms) => (request, deadline_ms),
            Message::Batch(count) if batch.is_none() && count > 0 => {
                batch = Some((count as usize, Vec::with_capacity(count as usize)));
                continue;
            }
            other => {
                eprintln!(
                    "executor: the worker sent a {} frame out of order; exiting",
                    other.name()
                );
                return EXIT_PROTOCOL;
            }
        };
        let deadline = Duration::from_millis(deadline_ms);
        let written = match (&mut batch, &mut *handler) {
            (Some((count, requests)), handler) => {
                requests.push(request);
                if requests.len() < *count {
                    continue;
                }
                let requests = std::mem::take(requests);
                batch = None;
                call_batch(handler, requests, deadline, link)
            }
            (None, handler) => call_one(handler, request, deadline, link),
        };
        if written.is_err() {
            return 0;
        }
    }
}

/// A batch: one call of a native plugin's `handle_batch`, answered with one frame per request
/// in order (every one `Panicked` if the batch failed). Other handlers never get batches (the
/// worker sends them only where `max_batch` allows); if one comes, its requests are answered
/// one by one.
fn call_batch(
    handler: &mut Handler,
    requests: Vec<Request>,
    deadline: Duration,
    link: &mut WorkerLink,
) -> io::Result<()> {
    let count = requests.len();
    let plugin = match handler {
        Handler::Native(plugin) if plugin.takes_batches() => plugin,
        _ => {
            for request in requests {
                call_one(handler, request, deadline, link)?;
            }
            return Ok(());
        }
    };
    let result = catch_unwind(AssertUnwindSafe(|| plugin.call_batch(requests, deadline)))
        .unwrap_or_else(|_| Err(HOST_PANIC.to_owned()));
    match result {
        Ok(answers) => {
            for answer in answers {
                send_whole(link, Ok(answer))?;
            }
            Ok(())
        }
        Err(why) => {
            eprintln!("a batch of {count} failed: {why}");
            for _ in 0..count {
                send_whole(link, Err(why.clone()))?;
            }
            Ok(())
        }
    }
}

/// One call, answered with its frames.
fn call_one(
    handler: &mut Handler,
    request: Request,
    deadline: Duration,
    link: &mut WorkerLink,
) -> io::Result<()> {
    match handler {
        Handler::Program(program, proxy) => proxy.call(&request, link, &|| program.exit_if_gone()),
        Handler::Native(plugin) => call_native(plugin, request, deadline, link),
        Handler::Cgi(program) => {
            let result = catch_unwind(AssertUnwindSafe(|| cgi::call(program, request, deadline)))
                .map_err(|_| HOST_PANIC.to_owned());
            send_whole(link, result)
        }
    }
}

/// What a call answers when the host's own side of it panicked.
const HOST_PANIC: &str = "the host side of the call panicked";

/// One call of a native plugin, with the host side's own `catch_unwind`: a whole answer is one
/// frame; a streamed one goes out as it is made (`Head`, `Piece`s) and ends with `End`, cut
/// (`End(false)`) if the handler failed midway.
fn call_native(
    plugin: &LoadedPlugin,
    request: Request,
    deadline: Duration,
    link: &mut WorkerLink,
) -> io::Result<()> {
    let mut sink = FrameSink {
        link,
        started: false,
        broken: false,
        cancelled: false,
    };
    let result = catch_unwind(AssertUnwindSafe(|| {
        plugin.call(request, deadline, &mut sink)
    }))
    .unwrap_or_else(|_| Err(HOST_PANIC.to_owned()));
    if sink.broken {
        return Err(io::ErrorKind::BrokenPipe.into());
    }
    if !sink.started {
        return send_whole(sink.link, result);
    }
    match &result {
        // The executor's stderr is the plugin's log: one line, with its route in front.
        Err(_) if sink.cancelled => eprintln!("the client left; its streamed answer was stopped"),
        Err(why) => eprintln!("{why}; its streamed answer was cut"),
        Ok(_) => {}
    }
    frame::send(
        sink.link,
        &frame::end(result.is_ok() && !sink.cancelled),
        &[],
    )
}

/// A whole answer, or the panic that stood in for it. An answer whose headers exceed the
/// protocol's bound is a panic too (the worker would refuse the frame and kill this process).
fn send_whole(link: &mut WorkerLink, result: Result<Response, String>) -> io::Result<()> {
    match result {
        Ok(response) => {
            let head = frame::response(&response);
            if head.len() > frame::MAX_META {
                let why = format!("its answer's headers exceed {} bytes", frame::MAX_META);
                return link.send_whole(&frame::panicked(&why), &[]);
            }
            link.send_answer(head, &response.body)
        }
        Err(why) => link.send_whole(&frame::panicked(&why), &[]),
    }
}

/// A native plugin's streamed answer, written to the worker as frames as it is made. The
/// write blocks while the worker holds back (its client is slow): that is the backpressure.
struct FrameSink<'a> {
    link: &'a mut WorkerLink,
    started: bool,
    /// A write to the worker failed: it is gone or retired us.
    broken: bool,
    /// The worker cancelled the call: its client left.
    cancelled: bool,
}

impl PieceSink for FrameSink<'_> {
    fn start(&mut self, head: &Response) -> bool {
        if !(200..=999).contains(&head.status) {
            eprintln!(
                "a streamed answer must start with a status in 200..=999, not {}",
                head.status
            );
            return false;
        }
        let head = frame::stream_head(head, None);
        if head.len() > frame::MAX_META {
            eprintln!(
                "a streamed answer's headers must fit in {} bytes",
                frame::MAX_META
            );
            return false;
        }
        self.started = true;
        let sent = frame::send(self.link, &head, &[]);
        self.sent(sent)
    }

    fn write(&mut self, piece: &[u8]) -> bool {
        if self.link.cancelled() {
            self.cancelled = true;
            return false;
        }
        piece.chunks(frame::MAX_PIECE).all(|part| {
            let sent = frame::send(self.link, &frame::piece(part.len()), part);
            self.sent(sent)
        })
    }
}

impl FrameSink<'_> {
    fn sent(&mut self, result: io::Result<()>) -> bool {
        self.broken |= result.is_err();
        !self.broken
    }
}
