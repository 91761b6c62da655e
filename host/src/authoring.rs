//! The plugin author's commands: `fiddler-crab new <name>` writes a ready plugin crate, and
//! `fiddler-crab check <file.so>` says what the server would do with a file, by starting the
//! very executor process the server would start for it and reporting what that said.

use std::fmt::Write as _;
use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::exec::frame::{FrameReader, Message};
use crate::exec::sandbox::Mode;
use crate::exec::spawn;
use crate::ids::PluginName;

/// The `plugin-api` this binary was built with, for `new`'s path dependency.
const BUILT_WITH_API: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../plugin-api");

/// How long `check` waits for the executor's verdict (the server's default `--init-timeout`).
const CHECK_TIMEOUT: Duration = Duration::from_secs(60);

/// Why `new` could not write the crate.
#[derive(Debug)]
pub enum NewError {
    /// The name is not usable as both a crate name and a route.
    BadName(String),
    /// The crate's folder exists already.
    Exists(PathBuf),
    /// No `plugin-api` folder at the given or built-in path.
    NoApi(PathBuf),
    /// Writing the files failed.
    Io(io::Error),
}

impl std::fmt::Display for NewError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NewError::BadName(name) => write!(
                f,
                "{name:?} cannot be a plugin name: use a lower-case letter, then letters, digits \
                 or _ (64 at most); it is both the crate's name and the route"
            ),
            NewError::Exists(path) => write!(f, "{} exists already", path.display()),
            NewError::NoApi(path) => write!(
                f,
                "no plugin-api at {}: pass --api PATH to this repository's plugin-api folder",
                path.display()
            ),
            NewError::Io(e) => write!(f, "cannot write the crate: {e}"),
        }
    }
}

impl std::error::Error for NewError {}

/// Writes a plugin crate `<dir>/<name>` depending on `plugin-api` at `api` (default: the one
/// this binary was built from). Returns the crate's folder.
pub fn new_plugin(name: &str, dir: &Path, api: Option<&Path>) -> Result<PathBuf, NewError> {
    let valid = name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if !valid {
        return Err(NewError::BadName(name.to_owned()));
    }
    let api = api
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(BUILT_WITH_API));
    let api = fs::canonicalize(&api).map_err(|_| NewError::NoApi(api.clone()))?;
    if !api.join("Cargo.toml").is_file() {
        return Err(NewError::NoApi(api));
    }
    let root = dir.join(name);
    if root.exists() {
        return Err(NewError::Exists(root));
    }
    fs::create_dir_all(root.join("src")).map_err(NewError::Io)?;
    // A relative path when both are on one tree, so the crate can move along with the
    // server's repository (or be committed beside it).
    let api_path = fs::canonicalize(dir)
        .ok()
        .and_then(|dir| relative(&api, &dir.join(name)))
        .unwrap_or_else(|| api.clone());
    let files = [
        ("Cargo.toml", cargo_toml(name, &api_path)),
        ("src/lib.rs", lib_rs(name)),
        ("README.md", readme(name)),
        (".gitignore", "/target\n".to_owned()),
    ];
    for (file, text) in files {
        fs::write(root.join(file), text).map_err(NewError::Io)?;
    }
    Ok(root)
}

/// `target` as a path relative to the folder `from` (both absolute): `..` for each of `from`'s
/// components past their common start, then the rest of `target`.
fn relative(target: &Path, from: &Path) -> Option<PathBuf> {
    let (target, from): (Vec<_>, Vec<_>) =
        (target.components().collect(), from.components().collect());
    if target.first() != from.first() {
        return None;
    }
    let common = target.iter().zip(&from).take_while(|(a, b)| a == b).count();
    let mut path = PathBuf::new();
    for _ in common..from.len() {
        path.push("..");
    }
    target[common..].iter().for_each(|c| path.push(c));
    Some(path)
}

fn cargo_toml(name: &str, api: &Path) -> String {
    format!(
        r#"[package]
name = "{name}"
version = "0.1.0"
edition = "2021"
description = "A fiddler-crab plugin: serves POST /{name}."

[lib]
# cdylib: the .so the server loads; rlib: so `cargo test` can call the handler directly.
crate-type = ["cdylib", "rlib"]

[dependencies]
# A path dependency on the plugin-api of the server you deploy to: a plugin built against an
# incompatible plugin-api is refused at load (`fiddler-crab check` says why).
plugin-api = {{ path = "{api}" }}

[profile.release]
# Required: a panic in the plugin is caught inside it and answered 500. With "abort" a panic
# would end its executor process (the request gets 502).
panic = "unwind"
# One optimised unit without symbols: about a quarter smaller (the template's .so: 617 KB ->
# 450 KB). `strip = false` keeps the symbols for a debugger or a profiler.
lto = true
codegen-units = 1
strip = true

# A crate of its own, even inside another workspace's folder.
[workspace]
"#,
        api = api.display()
    )
}

fn lib_rs(name: &str) -> String {
    let type_name: String = name
        .split('_')
        .filter(|part| !part.is_empty())
        .map(|part| {
            let mut chars = part.chars();
            chars.next().map_or_else(String::new, |first| {
                first.to_ascii_uppercase().to_string() + chars.as_str()
            })
        })
        .collect();
    format!(
        r#"//! The `{name}` plugin: answers POST /{name}.
//!
//! Build with `cargo build --release`, copy `target/release/lib{name}.so` into the server's
//! plugins folder, and call it: `curl --data 'hi' http://127.0.0.1:8080/{name}`.

use plugin_api::{{export_plugin, Error, JsonObject, OrStatus, Plugin, Request, Response}};

/// The plugin's state: built once per loaded version by `init` (load a model here) and shared
/// by every call.
pub struct {type_name} {{
    greeting: String,
}}

impl Plugin for {type_name} {{
    const DESCRIPTION: &'static str = "greets the posted name, in JSON";
    /// How long one call may run (the server answers 504 after it).
    const DEADLINE_MS: Option<u64> = Some(5_000);

    fn init() -> Result<Self, String> {{
        Ok({type_name} {{
            greeting: "Hello".to_owned(),
        }})
    }}

    /// `?` works here: an `Err` is answered with its status and message (any standard error
    /// is a 500); `Stream::start` would send the answer in pieces instead.
    fn try_handle(&self, request: Request) -> Result<Response, Error> {{
        let name = request.body_str().or_status(400, "post a name as UTF-8 text")?.trim();
        if name.is_empty() {{
            return Err(Error::new(400, "post a name"));
        }}
        let json = JsonObject::new()
            .string("greeting", &format!("{{}}, {{name}}!", self.greeting))
            .number("length", name.chars().count() as f64);
        Ok(Response::json(json.finish()))
    }}
}}

export_plugin!({type_name});

#[cfg(test)]
mod tests {{
    use super::*;
    use plugin_api::testing;

    #[test]
    fn greets_the_posted_name_in_json() {{
        let plugin = testing::init::<{type_name}>().expect("init succeeds");
        let response = testing::call(&plugin, Request::new("POST", "/").with_body("crab"));
        assert_eq!(response.status, 200);
        assert_eq!(
            response.body_str(),
            Some("{{\"greeting\":\"Hello, crab!\",\"length\":4}}")
        );
    }}

    #[test]
    fn refuses_an_empty_or_binary_body() {{
        let plugin = testing::init::<{type_name}>().expect("init succeeds");
        assert_eq!(testing::call(&plugin, Request::new("POST", "/")).status, 400);
        let binary = Request::new("POST", "/").with_body(vec![0xff]);
        assert_eq!(testing::call(&plugin, binary).status, 400);
    }}
}}
"#
    )
}

fn readme(name: &str) -> String {
    format!(
        "# {name}\n\nA fiddler-crab plugin serving `POST /{name}`.\n\n\
         ```sh\ncargo test                 # calls the handler directly, no server needed\n\
         cargo build --release\n\
         path/to/fiddler-crab check target/release/lib{name}.so   # what the server will do with it\n\
         cp target/release/lib{name}.so /path/to/fiddler_crab/plugins/\n\
         curl --data 'crab' http://127.0.0.1:8080/{name}\n```\n"
    )
}

/// What `check` found.
pub struct Verdict {
    /// The report to print.
    pub text: String,
    /// Whether the server would load the file.
    pub loads: bool,
}

/// Checks `file` by starting an executor for it, as the server would.
pub fn check(file: &Path, verbose: bool) -> Verdict {
    let mut text = String::new();
    let route = match PluginName::for_library(file) {
        Some(Ok(name)) => Some(name),
        Some(Err(stem)) => {
            let _ = writeln!(
                text,
                "route: none: the name {stem:?} is not [a-z0-9_-]{{1,64}}, so the server \
                 would ignore the file. Rename it."
            );
            None
        }
        None => {
            let _ = writeln!(
                text,
                "route: none: the file does not end in .so, so the server would treat it as a \
                 program (if executable), not as a plugin."
            );
            None
        }
    };
    let loads = match fs::File::open(file) {
        Err(e) => {
            let _ = writeln!(text, "verdict: refused: cannot read the file: {e}.");
            false
        }
        Ok(_) => {
            let name = route
                .clone()
                .unwrap_or_else(|| PluginName::parse("check").expect("a valid route name"));
            // Sandboxed as the server would (FIDDLER_SANDBOX=off|strict as for the server).
            match spawn::spawn_native(&name, file, CHECK_TIMEOUT, Mode::from_env()) {
                Ok(spawned) => report(spawned, verbose, &mut text),
                Err(e) => {
                    let _ = writeln!(
                        text,
                        "verdict: unknown: cannot start an executor process: {e}"
                    );
                    false
                }
            }
        }
    };
    if let Some(route) = &route {
        text.insert_str(0, &format!("route: /{route}\n"));
    }
    Verdict {
        text,
        loads: loads && route.is_some(),
    }
}

/// Reads the executor's first frame (or its death) and writes the findings.
fn report(mut spawned: spawn::Spawned, verbose: bool, text: &mut String) -> bool {
    let _ = spawned.socket.set_read_timeout(Some(CHECK_TIMEOUT));
    let first = first_message(&mut spawned.socket);
    spawn::kill_group(spawned.child.id());
    let status = spawned.child.wait();
    let mut output = Vec::new();
    let _ = fs::File::from(spawned.output).read_to_end(&mut output);
    let loads = match first {
        Some(Message::Ready(meta)) => {
            let _ = writeln!(text, "crate: {} {}", meta.crate_name, meta.version);
            let _ = writeln!(text, "description: {}", meta.description);
            let _ = writeln!(text, "sandbox: {}", meta.sandbox);
            let _ = match meta.deadline_ms {
                Some(ms) => writeln!(text, "deadline: {ms} ms (its own)"),
                None => writeln!(text, "deadline: the server's --deadline"),
            };
            let _ = match meta.max_body {
                Some(n) => writeln!(text, "max body: {n} bytes (its own, capped by --max-body)"),
                None => writeln!(text, "max body: the server's --max-body"),
            };
            let _ = match meta.max_lanes {
                Some(lanes) => writeln!(
                    text,
                    "lanes: at most {lanes} at once (its MAX_LANES); batches: {}",
                    match meta.max_batch {
                        0 | 1 => "none".to_owned(),
                        n => format!("up to {n} requests (its MAX_BATCH)"),
                    }
                ),
                None => writeln!(
                    text,
                    "interface: built against plugin-api 0.1.0: it answers whole, has no \
                     deadline() and gets one lane in jellyfish mode (rebuild it for streamed \
                     answers, deadlines, lanes and batches)"
                ),
            };
            let _ = writeln!(text, "verdict: loads: the server would serve it.");
            true
        }
        Some(Message::Refused { reason, detail }) => {
            let _ = writeln!(text, "verdict: refused: {reason}.");
            if verbose && !detail.is_empty() {
                let _ = writeln!(text, "detail:\n{detail}");
            } else if !detail.is_empty() {
                let _ = writeln!(text, "(--verbose shows the loader's full report)");
            }
            false
        }
        _ => {
            let how = status.map_or_else(|e| e.to_string(), |s| s.to_string());
            let _ = writeln!(
                text,
                "verdict: refused: loading it killed its executor process ({how}). The server \
                 would refuse this version and keep serving the previous one."
            );
            false
        }
    };
    if verbose && !output.is_empty() {
        let _ = writeln!(
            text,
            "output:\n{}",
            String::from_utf8_lossy(&output).trim_end()
        );
    }
    loads
}

/// The next frame an executor sends (with nothing left unread before it), or `None` if it
/// died or stayed silent past the socket's read timeout.
pub(crate) fn first_message(socket: &mut std::os::unix::net::UnixStream) -> Option<Message> {
    let mut reader = FrameReader::default();
    let mut buffer = [0u8; 4096];
    loop {
        let n = match socket.read(&mut buffer) {
            Ok(0) | Err(_) => return None,
            Ok(n) => n,
        };
        let mut messages = Vec::new();
        reader.feed_all(&buffer[..n], &mut messages).ok()?;
        if let Some(first) = messages.into_iter().next() {
            return Some(first);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_plugin_api_path_is_relative_to_the_new_crate() {
        let rel = |t: &str, f: &str| {
            relative(Path::new(t), Path::new(f)).map(|p| p.display().to_string())
        };
        assert_eq!(
            rel("/w/fiddler_crab/plugin-api", "/w/shout").as_deref(),
            Some("../fiddler_crab/plugin-api")
        );
        assert_eq!(
            rel("/w/fiddler_crab/plugin-api", "/w/fiddler_crab/x/y").as_deref(),
            Some("../../plugin-api")
        );
    }
}
