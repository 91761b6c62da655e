//! The `extern "C"` shims every export goes through, and the `export_plugin!` macro that
//! installs them.
//!
//! A panic that unwinds out of an `extern "C"` function aborts the whole server, and a panic
//! raised in one library cannot be caught in another. So the guard sits here, compiled into the
//! plugin: every shim runs the plugin's code under `catch_unwind` and turns a panic into an
//! `RErr` value the host can report. The host wraps each call again on its own side.

use std::any::Any;
use std::panic::{catch_unwind, AssertUnwindSafe};

use abi_stable::library::RootModuleResult;
use abi_stable::prefix_type::PrefixTypeTrait;
use abi_stable::std_types::{RErr, ROk, ROption, RResult, RString, RVec};

use crate::abi::{CallContext, Capacity, PluginInfo, PluginModule, PluginModuleRef, PluginState};
use crate::error::Error;
use crate::message::{Request, Response};
use crate::plugin::Plugin;
use crate::stream::CallScope;

/// The crate name and version of a plugin, recorded by `export_plugin!` where it is expanded.
#[doc(hidden)]
pub trait Exported: Plugin {
    const CRATE_NAME: &'static str;
    const CRATE_VERSION: &'static str;
}

/// The root module loader `export_plugin!` exports: builds the module table for `P`.
#[doc(hidden)]
pub extern "C" fn root_module_loader<P: Exported>() -> RootModuleResult {
    abi_stable::library::__call_root_module_loader(module::<P>)
}

fn module<P: Exported>() -> PluginModuleRef {
    PluginModule {
        info: info_shim::<P>,
        init: init_shim::<P>,
        handle: handle_shim::<P>,
        drop_state: drop_state_shim::<P>,
        call: call_shim::<P>,
        capacity: capacity_shim::<P>,
        call_batch: call_batch_shim::<P>,
    }
    .leak_into_prefix()
}

extern "C" fn info_shim<P: Exported>() -> PluginInfo {
    PluginInfo {
        name: P::CRATE_NAME.into(),
        version: P::CRATE_VERSION.into(),
        description: P::DESCRIPTION.into(),
        deadline_ms: ROption::from(P::DEADLINE_MS),
        max_body: ROption::from(P::MAX_BODY),
    }
}

extern "C" fn init_shim<P: Exported>() -> RResult<PluginState, RString> {
    match catch_unwind(P::init) {
        Ok(Ok(plugin)) => ROk(PluginState(Box::into_raw(Box::new(plugin)) as *const ())),
        Ok(Err(why)) => RErr(why.into()),
        Err(payload) => RErr(format!("init panicked: {}", panic_message(&*payload)).into()),
    }
}

/// The state `init_shim::<P>` made, as the plugin's type.
///
/// # Safety
///
/// `state` must come from `init_shim::<P>` of this same module (the host hands a state only
/// to the module that made it) and not be dropped while the reference is used
/// (`drop_state`'s contract). `P: Sync`, so a shared reference may be used from any thread.
unsafe fn plugin_of<'a, P>(state: PluginState) -> &'a P {
    // SAFETY: the caller's contract: `state.0` is a live `Box<P>`'s pointer.
    unsafe { &*(state.0 as *const P) }
}

/// The whole answer of a call that may fail: an `Err` is answered with its status.
fn answer<P: Plugin>(plugin: &P, request: Request) -> Response {
    plugin
        .try_handle(request)
        .unwrap_or_else(Error::into_response)
}

/// `handle`: one request, answered whole (what a server older than `call` uses).
extern "C" fn handle_shim<P: Exported>(
    state: PluginState,
    request: Request,
) -> RResult<Response, RString> {
    // SAFETY: `handle`'s contract is `plugin_of`'s.
    let plugin = unsafe { plugin_of::<P>(state) };
    match catch_unwind(AssertUnwindSafe(|| answer(plugin, request))) {
        Ok(response) => ROk(response),
        Err(payload) => RErr(panic_message(&*payload).into()),
    }
}

/// `call`: one request with its context; the handler may stream through it.
unsafe extern "C" fn call_shim<P: Exported>(
    state: PluginState,
    request: Request,
    context: CallContext,
) -> RResult<Response, RString> {
    // SAFETY: `call`'s contract is `plugin_of`'s (and keeps `context.sink` valid meanwhile).
    let plugin = unsafe { plugin_of::<P>(state) };
    let scope = CallScope::enter(context.deadline_ms, Some(context.sink));
    let result = catch_unwind(AssertUnwindSafe(|| plugin.try_handle(request)));
    match (result, scope.started()) {
        (Ok(Ok(response)), _) => ROk(response),
        (Ok(Err(error)), false) => ROk(error.into_response()),
        (Ok(Err(error)), true) => {
            RErr(format!("the handler failed after its answer started: {error}").into())
        }
        (Err(payload), _) => RErr(panic_message(&*payload).into()),
    }
}

extern "C" fn capacity_shim<P: Exported>() -> Capacity {
    let clamp = |n: usize| u32::try_from(n.max(1)).unwrap_or(u32::MAX);
    Capacity {
        max_lanes: clamp(P::MAX_LANES),
        max_batch: clamp(P::MAX_BATCH),
    }
}

/// `call_batch`: several requests in one call of `handle_batch`, answered whole.
unsafe extern "C" fn call_batch_shim<P: Exported>(
    state: PluginState,
    requests: RVec<Request>,
    context: CallContext,
) -> RResult<RVec<Response>, RString> {
    // SAFETY: `call_batch`'s contract is `plugin_of`'s.
    let plugin = unsafe { plugin_of::<P>(state) };
    let count = requests.len();
    // No sink: a `Stream` in a batch collects its pieces into that request's answer.
    let _scope = CallScope::enter(context.deadline_ms, None);
    match catch_unwind(AssertUnwindSafe(|| {
        plugin.handle_batch(requests.into_vec())
    })) {
        Ok(responses) if responses.len() == count => ROk(responses.into()),
        Ok(responses) => RErr(
            format!(
                "handle_batch returned {} answers for {count} requests",
                responses.len()
            )
            .into(),
        ),
        Err(payload) => RErr(panic_message(&*payload).into()),
    }
}

extern "C" fn drop_state_shim<P: Exported>(state: PluginState) {
    // SAFETY: `drop_state`'s contract: `state` came from `Box::into_raw(Box<P>)` in
    // `init_shim::<P>`, is dropped at most once, and only when no call is using it.
    let plugin = unsafe { Box::from_raw(state.0 as *mut P) };
    // A panicking destructor must not cross the boundary; there is nothing to report it to.
    let _ = catch_unwind(AssertUnwindSafe(move || drop(plugin)));
}

/// The text of a panic payload (`panic!("...")` gives a `&str` or a `String`).
pub(crate) fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(text) = payload.downcast_ref::<&str>() {
        (*text).to_owned()
    } else if let Some(text) = payload.downcast_ref::<String>() {
        text.clone()
    } else {
        "panic with a non-text payload".to_owned()
    }
}

/// Exports a [`Plugin`] type as this library's root module. Call it once, at the crate root of a
/// `cdylib` crate:
///
/// ```ignore
/// plugin_api::export_plugin!(MyPlugin);
/// ```
///
/// It records the crate's name and version from `Cargo.toml` and exports the symbol the server
/// looks for. Every function it exports catches panics, so a panic in `init` or `handle` is
/// reported to the server instead of aborting it.
#[macro_export]
macro_rules! export_plugin {
    ($plugin:ty) => {
        impl $crate::__private::Exported for $plugin {
            const CRATE_NAME: &'static str = env!("CARGO_PKG_NAME");
            const CRATE_VERSION: &'static str = env!("CARGO_PKG_VERSION");
        }

        /// The root module loader the server looks up (abi_stable's fixed symbol name, checked
        /// against `abi_stable::library::ROOT_MODULE_LOADER_NAME` in plugin-api's tests).
        #[no_mangle]
        #[allow(non_upper_case_globals)]
        pub static _1as_0lib_1header_0root_bmodule_bloader: $crate::__private::LibHeader =
            // SAFETY: the constructor returns the `PluginModuleRef` it names, as required.
            unsafe {
                $crate::__private::LibHeader::from_constructor::<$crate::abi::PluginModuleRef>(
                    $crate::__private::root_module_loader::<$plugin>,
                    $crate::__private::CheckTypeLayout::Yes,
                )
            };
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::abi::{StreamSink, StreamSinkFns};
    use abi_stable::std_types::RSlice;

    #[test]
    fn exported_symbol_matches_abi_stable() {
        assert_eq!(
            abi_stable::library::ROOT_MODULE_LOADER_NAME,
            "_1as_0lib_1header_0root_bmodule_bloader"
        );
    }

    struct Boom;
    impl Plugin for Boom {
        const DESCRIPTION: &'static str = "panics everywhere";
        fn init() -> Result<Self, String> {
            Ok(Boom)
        }
        fn handle(&self, _request: Request) -> Response {
            panic!("boom {}", 42)
        }
    }
    impl Exported for Boom {
        const CRATE_NAME: &'static str = "boom";
        const CRATE_VERSION: &'static str = "1.2.3";
    }

    #[test]
    fn shims_turn_panics_into_errors() {
        let module = module::<Boom>();
        let info = module.info()();
        assert_eq!(info.name.as_str(), "boom");
        assert_eq!(info.version.as_str(), "1.2.3");
        let state = match module.init()() {
            ROk(state) => state,
            RErr(why) => panic!("init failed: {why}"),
        };
        let result = module.handle()(state, Request::new("GET", "/"));
        assert_eq!(
            result.into_result().err().map(|e| e.into_string()),
            Some("boom 42".to_owned())
        );
        module.drop_state()(state);
    }

    /// Streams "a", "b", then fails when asked to.
    struct Counter;
    impl Plugin for Counter {
        const DESCRIPTION: &'static str = "streams two pieces";
        fn init() -> Result<Self, String> {
            Ok(Counter)
        }
        fn try_handle(&self, request: Request) -> Result<Response, Error> {
            assert!(request
                .deadline()
                .is_none_or(|left| left.as_millis() <= 5_000));
            if request.query_param("bad_status").is_some() {
                crate::Stream::start(Response::status(101))?;
            }
            let mut out = crate::Stream::start(Response::status(201))?;
            if request.query_param("early").is_some() {
                return Err(Error::new(409, "before any piece"));
            }
            out.write("a")?;
            out.write("")?;
            out.write("b")?;
            if request.query_param("fail").is_some() {
                return Err(Error::new(500, "midway"));
            }
            out.finish()
        }
    }
    impl Exported for Counter {
        const CRATE_NAME: &'static str = "counter";
        const CRATE_VERSION: &'static str = "0.0.1";
    }

    /// A host's sink that records what it is given.
    #[derive(Default)]
    struct Recorder {
        head: Option<u16>,
        pieces: Vec<Vec<u8>>,
    }

    unsafe extern "C" fn record_start(this: *mut (), head: &Response) -> bool {
        // SAFETY: `this` is the test's `Recorder`, alive for the call.
        let recorder = unsafe { &mut *(this as *mut Recorder) };
        recorder.head = Some(head.status);
        true
    }

    unsafe extern "C" fn record_write(this: *mut (), piece: RSlice<'_, u8>) -> bool {
        // SAFETY: as in `record_start`.
        let recorder = unsafe { &mut *(this as *mut Recorder) };
        recorder.pieces.push(piece.to_vec());
        true
    }

    fn call_counter(query: &str) -> (RResult<Response, RString>, Recorder) {
        let module = module::<Counter>();
        let ROk(state) = module.init()() else {
            panic!("init failed")
        };
        let mut recorder = Recorder::default();
        let fns = StreamSinkFns {
            start: record_start,
            write: record_write,
        }
        .leak_into_prefix();
        let context = CallContext {
            deadline_ms: 5_000,
            sink: StreamSink {
                this: &mut recorder as *mut Recorder as *mut (),
                host: fns,
            },
        };
        // SAFETY: `state` is this module's; `recorder` outlives the call.
        let result = unsafe { module.call_with(state, Request::new("GET", query), context) };
        module.drop_state()(state);
        (result, recorder)
    }

    #[test]
    fn a_streamed_answer_reaches_the_sink_piece_by_piece() {
        let (result, recorder) = call_counter("/");
        assert!(result.is_ok());
        assert_eq!(recorder.head, Some(201));
        assert_eq!(
            recorder.pieces,
            [b"a".to_vec(), b"b".to_vec()],
            "no empty piece"
        );
        let (result, recorder) = call_counter("/?fail");
        let why = result.into_result().err().map(RString::into_string);
        assert_eq!(
            why.as_deref(),
            Some("the handler failed after its answer started: 500 midway")
        );
        assert_eq!(recorder.pieces.len(), 2);
        // An `Err` before the first piece is an ordinary answer: nothing went out yet.
        let (result, recorder) = call_counter("/?early");
        let answer = result.into_result().ok();
        assert_eq!(answer.map(|r| r.status), Some(409));
        assert_eq!((recorder.head, recorder.pieces.len()), (None, 0));
        let (result, recorder) = call_counter("/?bad_status");
        assert_eq!(result.into_result().ok().map(|r| r.status), Some(500));
        assert_eq!(recorder.head, None);
        // Outside a call, the same handler answers whole.
        let whole = Counter.handle(Request::new("GET", "/"));
        assert_eq!((whole.status, whole.body_str()), (201, Some("ab")));
    }
}
