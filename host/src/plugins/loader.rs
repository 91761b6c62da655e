//! Loads a plugin library inside an executor process. All the host's dynamic-loading `unsafe`
//! lives here.
//!
//! The file loaded is the worker's private copy of a watched file (see `files`), never the
//! watched file itself: a library overwritten in place while mapped crashes the process that
//! maps it. Each executor maps one library once and exits when its version is retired, so
//! libraries really go away with their process.

use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::sync::OnceLock;
use std::time::Duration;

use abi_stable::library::{lib_header_from_path, LibraryError, RootModuleError};
use abi_stable::prefix_type::PrefixTypeTrait;
use abi_stable::std_types::RSlice;
use plugin_api::abi::{
    baseline, CallContext, PluginModuleRef, PluginState, StreamSink, StreamSinkFns,
    StreamSinkFnsRef,
};
use plugin_api::{Request, Response};

use crate::plugins::version::HandlerMeta;

/// One loaded plugin: its module and the state its `init` built.
pub struct LoadedPlugin {
    /// What it says about itself.
    pub meta: HandlerMeta,
    /// The functions every plugin has.
    module: baseline::PluginModuleRef,
    /// The same module with the later fields, when it was built with plugin-api 0.1.1 or
    /// later (`None` for 0.1.0).
    extended: Option<PluginModuleRef>,
    /// Invariant: made by this `module`'s `init`, dropped only by `Drop` below.
    state: PluginState,
}

/// Where the pieces of a call's streamed answer go, on the host's side.
pub trait PieceSink {
    /// The answer starts with this head; `false` if it cannot be taken (the plugin stops).
    fn start(&mut self, head: &Response) -> bool;
    /// One piece of its body; `false` as for `start`.
    fn write(&mut self, piece: &[u8]) -> bool;
}

impl LoadedPlugin {
    /// Calls the plugin's handler with `deadline` to run in; a streamed answer goes to `sink`
    /// (a plugin built before 0.1.1 answers whole). `Ok` is the answer (meaningless once the
    /// sink was started: what was streamed is the answer); `Err` carries the message of a
    /// panic caught in the plugin or, after a start, of a handler that failed midway.
    pub fn call(
        &self,
        request: Request,
        deadline: Duration,
        sink: &mut dyn PieceSink,
    ) -> Result<Response, String> {
        let result = match self.extended {
            Some(module) => {
                let mut sink = sink;
                let this = &mut sink as *mut &mut dyn PieceSink as *mut ();
                // SAFETY: `self.state` was made by this module's `init` and is dropped only in
                // `Drop` (never while `&self` is borrowed for a call); the context's sink
                // points at `sink`, which lives on this frame until `call` returns.
                unsafe { module.call_with(self.state, request, context(deadline, this)) }
            }
            // SAFETY: as above.
            None => unsafe { self.module.handle_whole(self.state, request) },
        };
        result.into_result().map_err(|why| why.into_string())
    }

    /// Whether it takes batches (built with plugin-api 0.1.1 or later, `MAX_BATCH` above 1).
    pub fn takes_batches(&self) -> bool {
        self.extended.is_some() && self.meta.max_batch > 1
    }

    /// Calls the plugin's `handle_batch` with `requests` (only when it
    /// [`takes_batches`](LoadedPlugin::takes_batches)); one answer per request, in order.
    /// `Err` (a panic, the wrong number of answers, or a plugin without batches) stands for
    /// every request of the batch.
    pub fn call_batch(
        &self,
        requests: Vec<Request>,
        deadline: Duration,
    ) -> Result<Vec<Response>, String> {
        let Some(module) = self.extended.filter(|_| self.takes_batches()) else {
            return Err("the plugin takes no batches".to_owned());
        };
        // A batch's answers are whole: the sink is never called (and its functions treat a
        // null `this` as a sink that takes nothing).
        let context = context(deadline, std::ptr::null_mut());
        // SAFETY: as in `call`.
        let result = unsafe { module.call_batch_with(self.state, requests.into(), context) };
        result
            .into_result()
            .map(|answers| answers.into_vec())
            .map_err(|why| why.into_string())
    }
}

/// A call's context: its deadline, and the host's sink behind `this`.
fn context(deadline: Duration, this: *mut ()) -> CallContext {
    CallContext {
        deadline_ms: u64::try_from(deadline.as_millis()).unwrap_or(u64::MAX),
        sink: StreamSink {
            this,
            host: sink_fns(),
        },
    }
}

impl Drop for LoadedPlugin {
    fn drop(&mut self) {
        // SAFETY: the state is this module's, and this is its only drop; the executor calls
        // one request at a time through `&self`, so no call is using it now.
        unsafe { self.module.drop_state_of(self.state) };
    }
}

/// The functions of every [`StreamSink`] the host hands out (made once).
fn sink_fns() -> StreamSinkFnsRef {
    static FNS: OnceLock<StreamSinkFnsRef> = OnceLock::new();
    *FNS.get_or_init(|| {
        StreamSinkFns {
            start: sink_start,
            write: sink_write,
        }
        .leak_into_prefix()
    })
}

/// The host's `PieceSink` behind a sink's `this`.
///
/// # Safety
///
/// `this` must be the `&mut &mut dyn PieceSink` that `LoadedPlugin::call` made, during that
/// call (the plugin calls back only from inside it).
unsafe fn piece_sink<'a>(this: *mut ()) -> &'a mut dyn PieceSink {
    // SAFETY: the caller's contract.
    unsafe { &mut **(this as *mut &mut dyn PieceSink) }
}

unsafe extern "C" fn sink_start(this: *mut (), head: &Response) -> bool {
    if this.is_null() {
        return false;
    }
    // SAFETY: the plugin passes back the `this` of the sink it was given, during its call.
    let sink = unsafe { piece_sink(this) };
    catch_unwind(AssertUnwindSafe(|| sink.start(head))).unwrap_or(false)
}

unsafe extern "C" fn sink_write(this: *mut (), piece: RSlice<'_, u8>) -> bool {
    if this.is_null() {
        return false;
    }
    // SAFETY: as in `sink_start`.
    let sink = unsafe { piece_sink(this) };
    catch_unwind(AssertUnwindSafe(|| sink.write(piece.as_slice()))).unwrap_or(false)
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
///
/// The layout is checked twice (abi_stable admits a library with more fields than the host
/// expects, never fewer): against the 0.1.0 fields every plugin must have, then against the
/// full module, which only plugins built with 0.1.1 or later pass.
pub fn load(path: &Path) -> Result<LoadedPlugin, LoadError> {
    let refused = |e: LibraryError| LoadError::Library {
        plain: explain(&e),
        detail: e.to_string(),
    };
    let header = lib_header_from_path(path).map_err(refused)?;
    let module = header
        .init_root_module::<baseline::PluginModuleRef>()
        .map_err(refused)?;
    let extended = header.check_layout::<PluginModuleRef>().ok();
    let info = module.plugin_info();
    let meta = HandlerMeta {
        crate_name: info.name.into_string(),
        version: info.version.into_string(),
        description: info.description.into_string(),
        deadline_ms: info.deadline_ms.into_option(),
        max_body: info.max_body.into_option(),
        max_lanes: extended.map(|m| u64::from(m.plugin_capacity().max_lanes)),
        max_batch: extended.map_or(1, |m| u64::from(m.plugin_capacity().max_batch)),
        sandbox: String::new(),
    };
    let state = module
        .new_state()
        .into_result()
        .map_err(|why| LoadError::Init(why.into_string()))?;
    Ok(LoadedPlugin {
        meta,
        module,
        extended,
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
