//! What a handler version is, as it passes from the watcher (which finds it) to the executor
//! pool (which starts it) and from the executor (which loads it) back: its file and identity,
//! and what the handler says about itself.

use std::path::PathBuf;

use crate::ids::{ContentHash, Generation, HandlerKind, PluginName};

/// A version the watcher found, for the pool to start.
#[derive(Debug)]
pub struct NewVersion {
    /// Its route.
    pub name: PluginName,
    /// Which version.
    pub generation: Generation,
    /// Library or program.
    pub kind: HandlerKind,
    /// The file its executors get (a private copy for libraries).
    pub file: PathBuf,
    /// Whether `file` is the pool's to delete once the version is gone (a private copy).
    pub owns_file: bool,
    /// A native plugin's own folder, when it came as one (`plugins/<name>/` with its `.so`,
    /// `settings`, `env` and data): its executors run there, with its `env`.
    pub folder: Option<PathBuf>,
    /// The file in the plugins folder (for log lines).
    pub source: PathBuf,
    /// Its contents' hash.
    pub hash: ContentHash,
    /// How long its executor may take to be ready, when it sets its own (a program's
    /// `start_timeout`); else `--init-timeout`.
    pub init_timeout: Option<std::time::Duration>,
    /// The pause after each of its calls, when its folder's settings set one (`pace=`); else
    /// `--pace`.
    pub pace: Option<std::time::Duration>,
}

impl NewVersion {
    /// Deletes its private copy, if it has one (the version is gone or was never needed).
    pub fn remove_copy(&self) {
        if self.owns_file {
            let _ = std::fs::remove_file(&self.file);
        }
    }
}

/// What a handler says about itself, as the executor reports it in `Ready`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HandlerMeta {
    /// The plugin crate's name (`cgi` for programs).
    pub crate_name: String,
    /// The plugin crate's version (a content hash for programs).
    pub version: String,
    /// One line on what it does.
    pub description: String,
    /// Its own call deadline in milliseconds, if any.
    pub deadline_ms: Option<u64>,
    /// Its own body limit, if any.
    pub max_body: Option<u64>,
    /// Executors of one version that may run calls at once, when the handler says (a plugin's
    /// `MAX_LANES`, a program's `max_lanes`); `None` when it cannot (plugins built before
    /// plugin-api 0.1.1, CGI programs).
    pub max_lanes: Option<u64>,
    /// Requests it takes in one batch call (1: no batches).
    pub max_batch: u64,
    /// Its executor's sandbox, in one line: what is in force, what is missing.
    pub sandbox: String,
}
