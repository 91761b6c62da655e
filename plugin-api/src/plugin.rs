//! The trait a plugin implements: its metadata, its `init`, and its handler (fallible or not).

use std::any::TypeId;
use std::cell::RefCell;

use crate::error::Error;
use crate::message::{Request, Response};

/// A handler plugin. Implement it for your plugin's state type and call
/// [`export_plugin!`](crate::export_plugin) once with that type.
///
/// The state is built by [`init`](Plugin::init) once per loaded version of the library and
/// shared by every call (calls run one at a time by default, but the state must be `Sync`
/// because the server may run a second lane).
///
/// Implement **one** of [`try_handle`](Plugin::try_handle) (fallible: `?` works, an `Err` is
/// answered with its status) or [`handle`](Plugin::handle) (plugins written before
/// `try_handle` existed). Each one's default calls the other; with neither, every call
/// answers 500 naming the mistake.
pub trait Plugin: Send + Sync + Sized + 'static {
    /// One line saying what the plugin does (shown by `GET /-/plugins`).
    const DESCRIPTION: &'static str;
    /// How long one call may run, in milliseconds, if not the server's default.
    const DEADLINE_MS: Option<u64> = None;
    /// The largest request body accepted, in bytes, if lower than the server's `--max-body`.
    const MAX_BODY: Option<u64> = None;
    /// How many executors of this version may run calls at the same time (each has its own
    /// `init` and state). 1, the default, means never two calls of this version at once: what
    /// a GPU model or a program like llama.cpp needs. (During a swap the old version finishes
    /// the calls it holds while the new one starts, each in its own process: size memory for
    /// two versions for that moment.) Say more for a handler that is safe and useful to run in
    /// parallel; the server never exceeds it (in jellyfish mode, nor with `--lanes`).
    const MAX_LANES: usize = 1;
    /// How many queued requests [`handle_batch`](Plugin::handle_batch) may take in one call
    /// (1, the default: no batches). The server batches only in jellyfish mode, when its
    /// light is yellow (the machine is busy), up to the lesser of this and `--batch-max`.
    const MAX_BATCH: usize = 1;

    /// Builds the state once, when this version of the library is loaded (load a model here).
    /// An `Err` refuses the version with the message in the server's log.
    fn init() -> Result<Self, String>;

    /// Answers one request; an `Err` is answered with its status and message (see
    /// [`Error`]). This is what the server calls.
    fn try_handle(&self, request: Request) -> Result<Response, Error> {
        Ok(self.handle(request))
    }

    /// Answers one request, infallibly. Implement it instead of `try_handle` if you prefer;
    /// calling it on a plugin that implements `try_handle` answers that `Err` as a response.
    fn handle(&self, request: Request) -> Response {
        let Some(_guard) = DefaultHandle::enter(TypeId::of::<Self>()) else {
            panic!("{NEITHER}");
        };
        self.try_handle(request)
            .unwrap_or_else(Error::into_response)
    }

    /// Answers several requests at once (at most `MAX_BATCH`), one response per request, in
    /// their order: where one pass over many inputs costs less than many passes (one matrix
    /// product for a batch of embeddings). The default answers them one by one. Only called
    /// when `MAX_BATCH` is above 1; returning another number of responses than requests
    /// answers every request of the batch 500.
    fn handle_batch(&self, requests: Vec<Request>) -> Vec<Response> {
        requests
            .into_iter()
            .map(|request| {
                self.try_handle(request)
                    .unwrap_or_else(Error::into_response)
            })
            .collect()
    }
}

const NEITHER: &str =
    "the plugin implements neither `try_handle` nor `handle` (implement one of them)";

thread_local! {
    /// The plugin types whose default `handle` runs on this thread: reaching it again for the
    /// same type means that type implements neither method. (Per type: one plugin's handler
    /// may call another's.)
    static IN_DEFAULT_HANDLE: RefCell<Vec<TypeId>> = const { RefCell::new(Vec::new()) };
}

/// Marks the default `handle` of one plugin type as running on this thread.
struct DefaultHandle(TypeId);

impl DefaultHandle {
    /// `None` if it already runs for `plugin`.
    fn enter(plugin: TypeId) -> Option<DefaultHandle> {
        IN_DEFAULT_HANDLE.with(|running| {
            let mut running = running.borrow_mut();
            (!running.contains(&plugin)).then(|| {
                running.push(plugin);
                DefaultHandle(plugin)
            })
        })
    }
}

impl Drop for DefaultHandle {
    fn drop(&mut self) {
        IN_DEFAULT_HANDLE.with(|running| {
            let mut running = running.borrow_mut();
            if let Some(at) = running.iter().rposition(|t| *t == self.0) {
                running.remove(at);
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::OrStatus;

    struct Fallible;
    impl Plugin for Fallible {
        const DESCRIPTION: &'static str = "parses a number";
        fn init() -> Result<Self, String> {
            Ok(Fallible)
        }
        fn try_handle(&self, request: Request) -> Result<Response, Error> {
            let text = request.body_str().or_status(400, "send UTF-8 text")?;
            let n: u64 = text.parse()?;
            Ok(Response::text(format!("{}", n * 2)))
        }
    }

    struct Neither;
    impl Plugin for Neither {
        const DESCRIPTION: &'static str = "forgot its handler";
        fn init() -> Result<Self, String> {
            Ok(Neither)
        }
    }

    #[test]
    fn handle_answers_what_try_handle_returns() {
        let answer = Fallible.handle(Request::new("POST", "/").with_body("21"));
        assert_eq!(answer.body_str(), Some("42"));
        let refused = Fallible.handle(Request::new("POST", "/").with_body(vec![0xff]));
        assert_eq!(
            (refused.status, refused.body_str()),
            (400, Some("send UTF-8 text\n"))
        );
        assert_eq!(
            Fallible
                .handle(Request::new("POST", "/").with_body("x"))
                .status,
            500
        );
    }

    #[test]
    fn a_plugin_with_neither_handler_panics_with_the_reason() {
        let panic = std::panic::catch_unwind(|| Neither.handle(Request::new("GET", "/")))
            .expect_err("it must not recurse forever");
        assert_eq!(crate::guard::panic_message(&*panic), NEITHER);
        // The guard was released by the unwinding: the next call reports the same.
        assert!(std::panic::catch_unwind(|| Neither.try_handle(Request::new("GET", "/"))).is_err());
    }

    /// Calls another plugin type's default `handle` from inside its own.
    struct Outer;
    impl Plugin for Outer {
        const DESCRIPTION: &'static str = "calls Fallible through its default handle";
        fn init() -> Result<Self, String> {
            Ok(Outer)
        }
        fn try_handle(&self, request: Request) -> Result<Response, Error> {
            Ok(Fallible.handle(request))
        }
    }

    #[test]
    fn one_plugin_may_call_another_through_its_default_handle() {
        let answer = Outer.handle(Request::new("POST", "/").with_body("2"));
        assert_eq!(answer.body_str(), Some("4"));
    }
}
