//! `fiddler-crab replay CRASHFILE PLUGIN.so [--in-process]`: runs the request a crash file kept
//! (see `exec::crashes`) against a plugin and says what happened. By default the plugin runs in
//! an executor process of its own, as the server runs it, so a crash is seen and named, not
//! suffered; `--in-process` calls it in this process instead, so a debugger can be attached
//! (`gdb --args fiddler-crab replay CRASHFILE PLUGIN.so --in-process`).

use std::fmt::Write as _;
use std::fs;
use std::io::{Read, Write};
use std::path::Path;
use std::time::Duration;

use crate::authoring::first_message;
use crate::exec::crashes::{self, header_text, Crash};
use crate::exec::frame::{self, Message};
use crate::exec::sandbox::Mode;
use crate::exec::spawn;
use crate::ids::PluginName;
use crate::plugins::loader::{self, PieceSink};
use crate::process::signals::describe_exit;

/// How long the plugin may take to load.
const LOAD_TIMEOUT: Duration = Duration::from_secs(60);
/// Time beyond the recorded deadline before the replay gives up on an answer.
const SLACK: Duration = Duration::from_secs(5);

/// How a replay ended.
pub enum Outcome {
    /// The plugin died on the request again.
    Reproduced,
    /// The plugin answered (or panicked, caught): the crash did not happen.
    NotReproduced,
    /// The replay itself could not run (the crash file, the plugin, a process).
    Failed,
}

/// Replays `crash_file` against `plugin`; returns the report to print and how it ended.
pub fn replay(crash_file: &Path, plugin: &Path, in_process: bool) -> (String, Outcome) {
    let crash = match crashes::read(crash_file) {
        Ok(crash) => crash,
        Err(why) => return (format!("replay: {why}\n"), Outcome::Failed),
    };
    let mut text = describe(&crash);
    if in_process {
        return run_here(crash, plugin, text);
    }
    let route = crash
        .field("route")
        .and_then(PluginName::parse)
        .or_else(|| PluginName::parse("replay"));
    let Some(route) = route else {
        return (text, Outcome::Failed);
    };
    let mut spawned = match spawn::spawn_native(&route, plugin, LOAD_TIMEOUT, Mode::from_env()) {
        Ok(spawned) => spawned,
        Err(e) => {
            let _ = writeln!(text, "cannot start an executor process: {e}");
            return (text, Outcome::Failed);
        }
    };
    let _ = spawned.socket.set_read_timeout(Some(LOAD_TIMEOUT));
    let ended = match first_message(&mut spawned.socket) {
        Some(Message::Ready(meta)) => {
            let _ = writeln!(text, "loaded: {} {}", meta.crate_name, meta.version);
            let wait = Duration::from_millis(crash.deadline_ms) + SLACK;
            let _ = spawned.socket.set_read_timeout(Some(wait));
            let head = frame::request(&crash.request, crash.deadline_ms);
            match frame::send(&mut spawned.socket, &head, &crash.request.body) {
                Ok(()) => answer_of(&mut spawned.socket),
                Err(_) => None,
            }
        }
        Some(Message::Refused { reason, .. }) => {
            let _ = writeln!(text, "the plugin did not load: {reason}");
            spawn::kill_group(spawned.child.id());
            let _ = spawned.child.wait();
            return (text, Outcome::Failed);
        }
        _ => None,
    };
    spawn::kill_group(spawned.child.id());
    let status = spawned.child.wait();
    let mut output = Vec::new();
    let _ = fs::File::from(spawned.output).read_to_end(&mut output);
    let outcome = match ended {
        Some(Message::Response(response)) => {
            let _ = writeln!(
                text,
                "result: not reproduced: the plugin answered {} ({} bytes)",
                response.status,
                response.body.len()
            );
            Outcome::NotReproduced
        }
        Some(Message::Panicked(why)) => {
            let _ = writeln!(
                text,
                "result: not reproduced: the plugin panicked (caught): {why}"
            );
            Outcome::NotReproduced
        }
        Some(Message::End(complete)) => {
            let how = if complete { "whole" } else { "cut midway" };
            let _ = writeln!(
                text,
                "result: not reproduced: the plugin streamed its answer ({how})"
            );
            Outcome::NotReproduced
        }
        _ => {
            let death = status.map_or_else(|e| e.to_string(), describe_exit);
            let recorded = crash.field("death").unwrap_or("unknown");
            let same = if death == recorded {
                "the same death as recorded"
            } else {
                "recorded was a different death"
            };
            let _ = writeln!(
                text,
                "result: reproduced: its executor died ({death}); {same} ({recorded})"
            );
            Outcome::Reproduced
        }
    };
    if !output.is_empty() {
        let _ = writeln!(
            text,
            "its output:\n{}",
            String::from_utf8_lossy(&output).trim_end()
        );
    }
    (text, outcome)
}

/// How the executor ended the call: its answer, or for a streamed one its `End`; `None` if it
/// died first (or sent nonsense).
fn answer_of(socket: &mut std::os::unix::net::UnixStream) -> Option<Message> {
    match first_message(socket)? {
        Message::Head(..) => loop {
            match first_message(socket)? {
                Message::Piece(_) => {}
                end @ Message::End(_) => return Some(end),
                _ => return None,
            }
        },
        message => Some(message),
    }
}

/// What the crash file says, as the report's first lines.
fn describe(crash: &Crash) -> String {
    let mut text = String::new();
    for key in [
        "time", "route", "crate", "version", "hash", "death", "redacted", "body",
    ] {
        if let Some(value) = crash.field(key) {
            let _ = writeln!(text, "{key}: {value}");
        }
    }
    let request = &crash.request;
    let query = match request.query.is_empty() {
        true => String::new(),
        false => format!("?{}", request.query),
    };
    let _ = writeln!(
        text,
        "request: {} {}{query} with {} header(s)",
        request.method,
        request.path,
        request.headers.len()
    );
    for header in request.headers.iter() {
        let _ = writeln!(text, "  {}: {}", header.name, header_text(header));
    }
    text
}

/// `--in-process`: the plugin is loaded and called here; if it crashes, this process does.
fn run_here(crash: Crash, plugin: &Path, mut text: String) -> (String, Outcome) {
    let loaded = match loader::load(plugin) {
        Ok(loaded) => loaded,
        Err(e) => {
            let _ = writeln!(text, "the plugin did not load: {e}");
            return (text, Outcome::Failed);
        }
    };
    // Said before the call: a crash ends the process right there.
    let mut stdout = std::io::stdout();
    let _ = writeln!(stdout, "{text}calling it in this process (--in-process)...");
    let _ = stdout.flush();
    text.clear();
    let deadline = Duration::from_millis(crash.deadline_ms);
    let mut tally = Tally::default();
    match loaded.call(crash.request, deadline, &mut tally) {
        Ok(_) if tally.started => {
            let _ = writeln!(
                text,
                "result: not reproduced: the plugin streamed its answer ({} bytes)",
                tally.bytes
            );
        }
        Ok(response) => {
            let _ = writeln!(
                text,
                "result: not reproduced: the plugin answered {} ({} bytes)",
                response.status,
                response.body.len()
            );
        }
        Err(why) => {
            let _ = writeln!(
                text,
                "result: not reproduced: the plugin panicked (caught): {why}"
            );
        }
    }
    (text, Outcome::NotReproduced)
}

/// `--in-process`: what a streamed answer came to.
#[derive(Default)]
struct Tally {
    started: bool,
    bytes: usize,
}

impl PieceSink for Tally {
    fn start(&mut self, _head: &plugin_api::Response) -> bool {
        self.started = true;
        true
    }

    fn write(&mut self, piece: &[u8]) -> bool {
        self.bytes += piece.len();
        true
    }
}
