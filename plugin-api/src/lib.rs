//! The contract between the `fiddler-crab` server and its handler plugins.
//!
//! A plugin is a `cdylib` crate that implements [`Plugin`] for its state type and calls
//! [`export_plugin!`] once. Build it, drop the `.so` into the server's `plugins/` folder, and
//! `POST /<file-stem>` reaches it (`libecho.so` and `echo.so` both serve `/echo`).
//!
//! # A complete plugin
//!
//! `Cargo.toml`:
//!
//! ```toml
//! [package]
//! name = "shout"
//! version = "0.1.0"
//! edition = "2021"
//!
//! [lib]
//! crate-type = ["cdylib", "rlib"]
//!
//! [dependencies]
//! plugin-api = { path = "../fiddler_crab/plugin-api" }
//!
//! [profile.release]
//! panic = "unwind"   # required: panics are caught inside the plugin
//! lto = true         # these three: about a quarter smaller
//! codegen-units = 1
//! strip = true
//! ```
//!
//! `src/lib.rs`:
//!
//! ```
//! use plugin_api::{export_plugin, Error, OrStatus, Plugin, Request, Response};
//!
//! /// The state, built once per loaded version by `init`.
//! pub struct Shout {
//!     calls: std::sync::atomic::AtomicU64,
//! }
//!
//! impl Plugin for Shout {
//!     const DESCRIPTION: &'static str = "returns the body in upper case";
//!     const DEADLINE_MS: Option<u64> = Some(2_000);
//!
//!     fn init() -> Result<Self, String> {
//!         Ok(Shout { calls: 0.into() })
//!     }
//!
//!     fn try_handle(&self, request: Request) -> Result<Response, Error> {
//!         self.calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
//!         let text = request.body_str().or_status(400, "send UTF-8 text")?;
//!         Ok(Response::text(text.to_uppercase()))
//!     }
//! }
//!
//! export_plugin!(Shout);
//!
//! // A plugin's own tests call the handler directly: no server, no .so.
//! let shout = plugin_api::testing::init::<Shout>().unwrap();
//! let response = plugin_api::testing::call(&shout, Request::new("POST", "/").with_body("hi"));
//! assert_eq!(response.body_str(), Some("HI"));
//! let refused = plugin_api::testing::call(&shout, Request::new("POST", "/").with_body(vec![0xff]));
//! assert_eq!((refused.status, refused.body_str()), (400, Some("send UTF-8 text\n")));
//! ```
//!
//! Then `cargo build --release`, copy `target/release/libshout.so` into `plugins/`, and
//! `curl --data 'hi' http://127.0.0.1:8080/shout`.
//!
//! # Start a plugin
//!
//! `fiddler-crab new my_plugin` writes a ready crate (the `Cargo.toml` above with a path
//! dependency on the `plugin-api` the server was built from, a handler, two tests, a README).
//! `cargo test` calls the handler directly through [`testing`]; `cargo build --release` makes
//! `target/release/libmy_plugin.so`; `fiddler-crab check target/release/libmy_plugin.so` says
//! what the server will do with it (route, version, limits, or why it would be refused) and
//! exits 0 only if it would load, so it fits a plugin's CI.
//!
//! # Lifecycle
//!
//! Every version of a plugin runs in a process of its own (an *executor*), never in the process
//! that holds the server's clients.
//!
//! - **Load.** When a `.so` lands in the plugins folder (and has stopped changing), the server
//!   copies it privately and starts an executor for it, which loads it, checks its interface,
//!   and calls [`Plugin::init`] once. The state `init` returns is that version's: load models,
//!   open files, build tables there. An `Err`, a panic, a crash, or an `init` slower than the
//!   server's `--init-timeout` refuses the version (one log line; the previous version keeps
//!   serving).
//! - **Calls.** [`Plugin::try_handle`] (or, in plugins written before it, [`Plugin::handle`])
//!   gets `&self` and one [`Request`] at a time: an executor runs
//!   one call at a time. With `--lanes N` the server may start up to N executors of the same
//!   version, each with its own `init` and state (so state is per process, not shared).
//!   `Sync` is still required: the bound keeps the contract open for in-process lanes.
//! - **Swap.** A changed `.so` is a new version: a new executor, a fresh `init`. Once it is
//!   ready, new calls go to it; calls already running finish on the old one, which then drops
//!   its state and exits, taking its library, statics and threads with it.
//! - **Removal.** Deleting the file stops routing to it; its executor exits once idle.
//!
//! # Deadlines and threads
//!
//! A call has `DEADLINE_MS` (else the server's `--deadline`). Past it the client gets 504 and
//! the executor's whole process group is killed (your code stops at once, whatever it was
//! doing); a fresh executor starts and runs `init` again before the next call. Keep `init`
//! cheap to repeat, or keep calls well inside their deadline: [`Request::deadline`] says how
//! long the call has left, so a long loop can stop in time and answer what it has. Threads you
//! spawn live as long as the executor process.
//!
//! # Errors and `?`
//!
//! [`Plugin::try_handle`] returns `Result<Response, Error>`. `?` on any standard error answers
//! 500 with its message; [`Error::new`] and [`OrStatus::or_status`] (on an `Option` or a
//! `Result`) choose the status: `request.body_str().or_status(400, "send UTF-8 text")?`.
//!
//! # Streamed answers
//!
//! [`Stream::start`] takes the head; it goes out with the first [`Stream::write`], and each
//! write reaches the client as it is made (chunked for HTTP/1.1, close-delimited for HTTP/1.0),
//! held back while the client is slower than the plugin (the write waits: that is the
//! backpressure). Return what [`Stream::finish`] gives. An `Err` before the first write is an
//! ordinary answer with its status; an `Err` or a panic after it cuts the answer: the client
//! sees it end early (no last chunk), never a whole-looking one. When the client leaves, the
//! next write is refused (`Err`): return, and the lane is free for the next request. The call's deadline
//! covers the whole stream; past it the answer is cut and the executor stopped.
//! `plugins/tokens` in the repository generates text token by token this way. In a plugin's
//! own tests (and on a server older than 0.1.1) the pieces are collected into one response.
//!
//! # Crashes and output
//!
//! Panics are caught (500 for that request; the executor goes on). A segfault, `abort`, stack
//! overflow, `std::process::exit` or running out of memory ends the executor: that request gets
//! 502, every other request is served, and a fresh executor starts at once (with a growing
//! pause if they keep dying young). Whatever you print on stdout or stderr goes to the server's
//! log with your route in front, at most 20 lines a second.
//!
//! To reproduce a crash, run the server with `--crash-dir DIR` (`./serve` does, with
//! `crashes/`): the request an executor died on is written there, one file per crash (the
//! signal, your route, crate, version and content hash, the request's head and up to 1 MiB of
//! its body; `Authorization`, `Proxy-Authorization` and `Cookie` values redacted unless
//! `--crash-keep-secrets`; at most `--crash-keep` files, 20 by default, the oldest removed).
//! `fiddler-crab replay DIR/crash-….req target/release/libyours.so` sends that request to your
//! plugin in an executor of its own and says whether it dies again, and how (exit code 0 when
//! it does); add `--in-process` to run the call in the foreground, under a debugger:
//! `gdb --args fiddler-crab replay FILE libyours.so --in-process`.

//! # Helpers for handlers
//!
//! - Requests: [`Request::header`] (the first value) and [`Request::header_all`] (every
//!   value, in order); [`Request::query_param`] (raw) and [`Request::query_decoded`]
//!   (percent-decoded, `+` as a space); [`Request::body_str`].
//! - Responses: [`Response::text`], [`Response::json`], [`Response::ok`] (bytes),
//!   [`Response::error`] (any status with a text explanation) and the named ones;
//!   [`Response::with_header`] adds a field, [`Response::set_header`] and
//!   [`Response::with_content_type`] replace one (`*_bytes` variants take a raw value).
//! - Text: [`percent_decode`], [`json_string`] (a JSON string literal, escaped) and
//!   [`JsonObject`] (one object, field by field) write JSON without a serializer crate.
//!
//! All of these are plain Rust on your side of the boundary, added without changing a type
//! that crosses it: a plugin built before them loads as it did, and one written for them
//! builds against this crate as it is.
//!
//! # A plugin with files
//!
//! A plugin that needs files of its own (a model's weights, a tokenizer, a word list) comes as
//! a folder: `plugins/<name>/` holding exactly one `.so` beside its data and two optional
//! files. The folder is one version: a change to any file in it (the `.so`, the weights, the
//! settings) starts a new version, swapped like a bare `.so`.
//!
//! - `settings`: `key=value` lines for the server: `deadline` (ms), `max_body` (bytes, with
//!   K, M or G), `start_timeout` (ms for `init`), `max_lanes`, `keys` (a file of API keys a
//!   caller must send as `Authorization: Bearer KEY`, or `none`; the server checks them and
//!   takes the field off the request, so the plugin never sees a key). They win over the
//!   plugin's own constants, so an operator tunes a route without rebuilding it. An unknown
//!   key refuses the version with a line naming it.
//! - `env`: `KEY=value` lines added to the executor's environment before the library is
//!   loaded: the plugin's own configuration (`MODEL=model/weights.onnx`), read in `init` with
//!   `std::env::var`.
//! - Everything else is the plugin's data. [`plugin_dir`] says where the folder is (the
//!   executor also runs in it), and [`plugin_path`] resolves a relative path against it. The
//!   data is read in place, never copied: memory-map large files, so replicas share pages.
//!
//! `plugins/minilm` in the repository is such a plugin: a sentence-embedding model.
//!
//! # Calling programs
//!
//! Use [`Program`]: arguments without a shell, stdin bytes, a deadline that kills the program's
//! whole process group, a cap on its output. Never build a shell command line from request data.
//!
//! # The rules of the boundary
//!
//! - Only `StableAbi` types cross: [`Request`], [`Response`], the plugin's metadata and the
//!   `abi_stable` `R*` types they are made of (the module itself is in the doc-hidden `abi`
//!   module: only `export_plugin!` and the server's loader name it). Use the accessors and builders
//!   ([`Request::header`], [`Response::text`], ...) rather than the fields' `R*` types.
//! - Panics never cross. Every exported function runs your code under `catch_unwind`; a panic in
//!   `try_handle` becomes a 500 that names the plugin, a panic in `init` refuses that version. Build
//!   with `panic = "unwind"` (with `abort`, a panic kills the whole server process).
//! - A library lives as long as its executor process: a replaced or removed version's
//!   executor drops its state and exits, and the library, its statics and threads go with it
//!   (`Drop` of statics still never runs: do not rely on it).
//! - A call past its deadline is answered 504 and its executor's process group is killed at
//!   once (see "Deadlines and threads"): work that must not be cut halfway belongs in a size
//!   that fits the deadline.
//! - Do not rely on global state shared with other plugins (each runs in its own process), on
//!   other calls' state (with `MAX_LANES` above 1, replicas each have their own), or on the
//!   current directory.
//! - A big body (256 KiB or more) is not copied to you: it
//!   comes as a private, copy-on-write mapping of a sealed memory file the server filled as it
//!   arrived, behind the same `request.body` (nothing to change in a plugin, built or not).
//!   Reading it costs no copy; writing into it copies only the pages written (the file never
//!   changes); growing or shrinking it moves it to the heap first. An answer with that body,
//!   untouched (an echo, a filter that lets it through), goes back as the same file; another
//!   big answer goes in a new one.
//!
//! # Versioning: which servers load which plugins
//!
//! This crate's version is the plugin interface's, not the server's (it moves on its own).
//! The rule a plugin author can rely on:
//!
//! - **A server loads every plugin built against a `plugin-api` of the same `0.minor` line**,
//!   older or newer than its own: today, any 0.1.x in any server built with 0.1.x. A plugin
//!   built against a newer 0.1.x than the server's gets only what that server knows (an
//!   0.1.0 server answers a [`Stream`]ed answer whole and has no [`Request::deadline`]); a
//!   plugin built against an older one gets what it was built for (0.1.0 plugins answer
//!   whole, as they always did).
//! - **A different `0.minor` (0.2) or major is refused at load** with a message saying to
//!   rebuild: abi_stable compares this crate's version in the layout of every type that
//!   crosses. `fiddler-crab check` gives the verdict before you deploy.
//!
//! What each version added: 0.1.0 the interface; 0.1.1 `try_handle` and [`Error`], streamed
//! answers, `Request::deadline`, and the author helpers (none of which changed a type that
//! crosses the boundary; the module grew a `call` function after its last prefix field);
//! 0.1.2 [`plugin_dir`] and [`plugin_path`] for plugins with files (nothing that crosses).
//!
//! For whoever changes this crate:
//!
//! - Compatible (a patch release): a function added to the module after `call`, with a view
//!   of the module for the versions in between (abi_stable refuses a host that expects more
//!   fields than a library has, so the loader checks each view in turn; see the `abi` module),
//!   and any method or type that does not cross.
//! - Breaking (the next `0.minor`): any change to [`Request`], [`Response`], [`Header`], the
//!   plugin metadata or an existing function's type, `unsafe` qualifier included.
//!
//! # Migrating from 0.1.0
//!
//! Nothing is required: a plugin that implements `handle` builds and runs as before. To use
//! `?`, rename `handle` to `try_handle` and return `Ok(response)`. The module types
//! (`PluginModule`, `PluginState`, `PluginInfo`) moved from the crate root to the doc-hidden
//! `abi` module; only a host names them.

#![deny(missing_docs)]

#[doc(hidden)]
pub mod abi;
mod error;
mod folder;
mod guard;
mod message;
mod plugin;
mod runner;
mod stream;
pub mod testing;
mod text;

pub use error::{Error, OrStatus};
pub use folder::{plugin_dir, plugin_path, PLUGIN_DIR_ENV};
pub use message::{Header, IntoBody, Request, Response};
pub use plugin::Plugin;
pub use runner::{Output, Program, RunError};
pub use stream::Stream;
pub use text::{json_string, percent_decode, JsonObject};

/// The abi_stable types that appear in [`Request`] and [`Response`].
pub use abi_stable::std_types::{ROption, RResult, RString, RVec};

/// What [`export_plugin!`] expands to; not part of the interface.
#[doc(hidden)]
pub mod __private {
    pub use crate::guard::{root_module_loader, Exported};
    pub use abi_stable::library::{CheckTypeLayout, LibHeader};
}
