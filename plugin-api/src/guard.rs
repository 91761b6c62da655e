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
use abi_stable::std_types::{RErr, ROk, ROption, RResult, RString};

use crate::message::{Request, Response};
use crate::module::{PluginInfo, PluginModule, PluginModuleRef, PluginState};

/// A handler plugin. Implement it for your plugin's state type and call
/// [`export_plugin!`](crate::export_plugin) once with that type.
///
/// The state is built by [`init`](Plugin::init) once per loaded version of the library and
/// shared by every call to [`handle`](Plugin::handle) (calls run one at a time by default, but
/// the state must be `Sync` because the server may run a second lane).
pub trait Plugin: Send + Sync + Sized + 'static {
    /// One line saying what the plugin does (shown by `GET /-/plugins`).
    const DESCRIPTION: &'static str;
    /// How long one call may run, in milliseconds, if not the server's default.
    const DEADLINE_MS: Option<u64> = None;
    /// The largest request body accepted, in bytes, if lower than the server's `--max-body`.
    const MAX_BODY: Option<u64> = None;

    /// Builds the state once, when this version of the library is loaded (load a model here).
    /// An `Err` refuses the version with the message in the server's log.
    fn init() -> Result<Self, String>;

    /// Answers one request.
    fn handle(&self, request: Request) -> Response;
}

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

extern "C" fn handle_shim<P: Exported>(
    state: PluginState,
    request: Request,
) -> RResult<Response, RString> {
    // SAFETY: `state` was made by `init_shim::<P>` of this same module from a `Box<P>` (the
    // host hands a state only to the module that made it) and is not dropped while a call runs
    // (`drop_state`'s contract). `P: Sync`, so a shared reference may be used from any thread.
    let plugin = unsafe { &*(state.0 as *const P) };
    match catch_unwind(AssertUnwindSafe(|| plugin.handle(request))) {
        Ok(response) => ROk(response),
        Err(payload) => RErr(panic_message(&*payload).into()),
    }
}

extern "C" fn drop_state_shim<P: Exported>(state: PluginState) {
    // SAFETY: as in `handle_shim`, `state` came from `Box::into_raw(Box<P>)` in `init_shim::<P>`;
    // the host drops each state at most once and only when no call is using it.
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
                $crate::__private::LibHeader::from_constructor::<$crate::PluginModuleRef>(
                    $crate::__private::root_module_loader::<$plugin>,
                    $crate::__private::CheckTypeLayout::Yes,
                )
            };
    };
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
