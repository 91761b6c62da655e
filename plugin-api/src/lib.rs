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
//! ```
//!
//! `src/lib.rs`:
//!
//! ```
//! use plugin_api::{export_plugin, Plugin, Request, Response};
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
//!     fn handle(&self, request: Request) -> Response {
//!         self.calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
//!         match request.body_str() {
//!             Some(text) => Response::text(text.to_uppercase()),
//!             None => Response::bad_request("send UTF-8 text\n"),
//!         }
//!     }
//! }
//!
//! export_plugin!(Shout);
//!
//! // A plugin's own tests call the handler directly: no server, no .so.
//! let shout = Shout::init().unwrap();
//! let response = shout.handle(Request::new("POST", "/").with_body("hi"));
//! assert_eq!(response.body_str(), Some("HI"));
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
//! - **Calls.** [`Plugin::handle`] gets `&self` and one [`Request`] at a time: an executor runs
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
//! cheap to repeat, or keep calls well inside their deadline. Threads you spawn live as long as
//! the executor process.
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
//!   [`Response::with_content_type`] replace one.
//! - Text: [`percent_decode`], [`json_string`] (a JSON string literal, escaped) and
//!   [`JsonObject`] (one object, field by field) write JSON without a serializer crate.
//!
//! All of these are plain Rust on your side of the boundary, added without changing a type
//! that crosses it: a plugin built before them loads as it did, and one written for them
//! builds against this crate as it is.
//!
//! # Calling programs
//!
//! Use [`Program`]: arguments without a shell, stdin bytes, a deadline that kills the program's
//! whole process group, a cap on its output. Never build a shell command line from request data.
//!
//! # The rules of the boundary
//!
//! - Only `StableAbi` types cross: [`Request`], [`Response`], [`PluginInfo`] and the
//!   `abi_stable` `R*` types they are made of. Use the accessors and builders
//!   ([`Request::header`], [`Response::text`], ...) rather than the fields' `R*` types.
//! - Panics never cross. Every exported function runs your code under `catch_unwind`; a panic in
//!   `handle` becomes a 500 that names the plugin, a panic in `init` refuses that version. Build
//!   with `panic = "unwind"` (with `abort`, a panic kills the whole server process).
//! - A loaded library is never unloaded: a replaced version stays mapped, and its state is
//!   dropped only once no call uses it. Do not rely on being unloaded.
//! - A call that passes its deadline is answered 504 by the server, but its thread cannot be
//!   stopped: your code keeps running to its end. Check the time in long loops if that matters.
//! - Do not link a global allocator that uses initial-exec TLS (jemalloc, mimalloc): after a few
//!   dozen loads the process runs out of static TLS.
//! - Do not rely on being unloaded (`Drop` of statics never runs), on global state shared with
//!   other plugins, or on the current directory.
//!
//! # Versioning: which changes to this crate are compatible
//!
//! The server refuses a plugin whose `plugin-api` is incompatible with its own: abi_stable
//! compares the root module's type layout and this crate's version (for `0.x`, a minor bump is
//! breaking; for `1.x` and later, only a major bump).
//!
//! - Compatible: adding a field to [`PluginModule`] *after* the field marked
//!   `#[sabi(last_prefix_field)]` (`drop_state`). An older plugin lacks it; the host must check
//!   for it (its accessor returns `Option` for such fields) before calling it.
//!   Move the marker to the new last field only in a breaking release.
//! - Compatible: new builder or accessor methods (they do not cross the boundary).
//! - Breaking: any change to [`Request`], [`Response`], [`Header`] or [`PluginInfo`] (they are
//!   passed by value), or to a prefix field's type. Bump the version accordingly.

#![deny(missing_docs)]

mod guard;
mod message;
mod module;
mod runner;
pub mod testing;
mod text;

pub use guard::Plugin;
pub use message::{Header, IntoBody, Request, Response};
pub use module::{PluginInfo, PluginModule, PluginModuleRef, PluginState};
pub use runner::{Output, Program, RunError};
pub use text::{json_string, percent_decode, JsonObject};

/// The abi_stable types that appear in [`Request`] and [`Response`].
pub use abi_stable::std_types::{ROption, RResult, RString, RVec};

/// What [`export_plugin!`] expands to; not part of the interface.
#[doc(hidden)]
pub mod __private {
    pub use crate::guard::{root_module_loader, Exported};
    pub use abi_stable::library::{CheckTypeLayout, LibHeader};
}
