//! Loads a plugin library inside an executor process. All the host's dynamic-loading `unsafe`
//! lives here.
//!
//! The file loaded is the worker's private copy of a watched file (see `files`), never the
//! watched file itself: a library overwritten in place while mapped crashes the process that
//! maps it. Each executor maps one library once and exits when its version is retired, so
//! libraries really go away with their process.

use std::fmt;
use std::path::Path;

use abi_stable::library::{lib_header_from_path, LibraryError, RootModuleError};
use plugin_api::{PluginModuleRef, PluginState, Request, Response};

use crate::plugins::version::HandlerMeta;

/// One loaded plugin: its module and the state its `init` built.
pub struct LoadedPlugin {
    /// What it says about itself.
    pub meta: HandlerMeta,
    module: PluginModuleRef,
    /// Invariant: made by this `module`'s `init`, dropped only by `Drop` below.
    state: PluginState,
}

impl LoadedPlugin {
    /// Calls the plugin's handler. `Err` carries the message of a panic caught in the plugin.
    pub fn call(&self, request: Request) -> Result<Response, String> {
        (self.module.handle())(self.state, request)
            .into_result()
            .map_err(|why| why.into_string())
    }
}

impl Drop for LoadedPlugin {
    fn drop(&mut self) {
        // The executor calls one request at a time, so no call is using the state now.
        (self.module.drop_state())(self.state);
    }
}

impl fmt::Debug for LoadedPlugin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoadedPlugin")
            .field("meta", &self.meta)
            .finish_non_exhaustive()
    }
}

/// Why a library was not loaded. Each variant makes one readable log line.
#[derive(Debug)]
pub enum LoadError {
    /// The dynamic loader or the layout check refused it.
    Library {
        /// One or two plain sentences (what the log and `check` print).
        plain: String,
        /// abi_stable's own report (for a layout mismatch, the whole type diff).
        detail: String,
    },
    /// The plugin's `init` returned an error or panicked.
    Init(String),
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoadError::Library { plain, .. } => f.write_str(plain),
            LoadError::Init(why) => write!(f, "its init failed: {why}"),
        }
    }
}

impl std::error::Error for LoadError {}

/// Loads the library at `path`: dlopen, layout check, metadata, `init`.
pub fn load(path: &Path) -> Result<LoadedPlugin, LoadError> {
    let module = lib_header_from_path(path)
        .and_then(|header| header.init_root_module::<PluginModuleRef>())
        .map_err(|e| LoadError::Library {
            plain: explain(&e),
            detail: e.to_string(),
        })?;
    let info = (module.info())();
    let meta = HandlerMeta {
        crate_name: info.name.into_string(),
        version: info.version.into_string(),
        description: info.description.into_string(),
        deadline_ms: info.deadline_ms.into_option(),
        max_body: info.max_body.into_option(),
    };
    let state = (module.init())()
        .into_result()
        .map_err(|why| LoadError::Init(why.into_string()))?;
    Ok(LoadedPlugin {
        meta,
        module,
        state,
    })
}

/// One or two plain sentences for a load failure, instead of abi_stable's layout dump.
fn explain(error: &LibraryError) -> String {
    match error {
        LibraryError::OpenError { err, .. } => {
            let detail = err.to_string();
            let detail = detail.rsplit(": ").next().unwrap_or(&detail).to_owned();
            format!("not a loadable library ({detail})")
        }
        LibraryError::GetSymbolError { .. } => {
            "no plugin root module in it (a plugin crate must call plugin_api::export_plugin!)"
                .to_owned()
        }
        LibraryError::ParseVersionError(e) => format!("its plugin-api version is unreadable: {e}"),
        LibraryError::IncompatibleVersionNumber {
            expected_version,
            actual_version,
            ..
        } => format!(
            "built against plugin-api {actual_version}, which is incompatible with this server's \
             {expected_version}; rebuild it against this server's plugin-api"
        ),
        LibraryError::RootModule {
            err: RootModuleError::Unwound,
            ..
        } => "its module constructor panicked".to_owned(),
        LibraryError::RootModule { err, .. } => format!("its module constructor failed: {err}"),
        LibraryError::AbiInstability(_) => "built against an incompatible plugin-api (the \
             interface's type layout differs); rebuild it against this server's plugin-api"
            .to_owned(),
        LibraryError::InvalidAbiHeader(_) => {
            "built with an incompatible abi_stable version".to_owned()
        }
        LibraryError::InvalidCAbi { .. } => {
            "built by a compiler with another C ABI layout".to_owned()
        }
        LibraryError::Many(errors) => errors.iter().map(explain).collect::<Vec<_>>().join("; "),
    }
}
