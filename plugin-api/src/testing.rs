//! Calling a plugin from its own `cargo test`: no server, no `.so`, the same panic handling as
//! the server (a panic in `init` is an `Err`, a panic in `handle` a 500).

use std::panic::{catch_unwind, AssertUnwindSafe};

use crate::guard::panic_message;
use crate::{Plugin, Request, Response};

/// Builds the plugin's state as the server does at load. A panic becomes `Err`.
pub fn init<P: Plugin>() -> Result<P, String> {
    match catch_unwind(P::init) {
        Ok(result) => result,
        Err(payload) => Err(format!("init panicked: {}", panic_message(&*payload))),
    }
}

/// Calls the handler as the server does: an `Err` is answered with its status, a panic with
/// 500, and a streamed answer arrives whole.
pub fn call<P: Plugin>(plugin: &P, request: Request) -> Response {
    match catch_unwind(AssertUnwindSafe(|| plugin.try_handle(request))) {
        Ok(Ok(response)) => response,
        Ok(Err(error)) => error.into_response(),
        Err(payload) => {
            Response::internal_error(format!("plugin panicked: {}\n", panic_message(&*payload)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fussy;
    impl Plugin for Fussy {
        const DESCRIPTION: &'static str = "panics on an empty body";
        fn init() -> Result<Self, String> {
            Ok(Fussy)
        }
        fn handle(&self, request: Request) -> Response {
            assert!(!request.body.is_empty(), "empty body");
            Response::text("ok")
        }
    }

    #[test]
    fn panics_answer_500_as_in_the_server() {
        let plugin = init::<Fussy>().expect("init");
        assert_eq!(
            call(&plugin, Request::new("POST", "/").with_body("x")).status,
            200
        );
        let response = call(&plugin, Request::new("POST", "/"));
        assert_eq!(response.status, 500);
        assert!(response
            .body_str()
            .unwrap_or_default()
            .contains("empty body"));
    }
}
