//! Example plugin `echo`: answers with the request body, byte for byte.
//!
//! Shows the smallest useful plugin: a stateless handler that moves the request body into the
//! response without copying. Corners cut: it ignores the method and the path.

use plugin_api::{export_plugin, Plugin, Request, Response};

/// No state: `init` has nothing to build.
pub struct Echo;

impl Plugin for Echo {
    const DESCRIPTION: &'static str = "answers with the request body, byte for byte";
    // Stateless: as many at once as the server allows.
    const MAX_LANES: usize = 64;

    fn init() -> Result<Self, String> {
        Ok(Echo)
    }

    fn handle(&self, request: Request) -> Response {
        let content_type = request
            .header("content-type")
            .unwrap_or("application/octet-stream")
            .to_owned();
        Response::ok(request.body).with_content_type(&content_type)
    }
}

export_plugin!(Echo);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echoes_binary_bodies() {
        let body: Vec<u8> = (0..=255).collect();
        let response = Echo.handle(Request::new("POST", "/").with_body(body.clone()));
        assert_eq!(response.status, 200);
        assert_eq!(response.body.as_slice(), body.as_slice());
        assert_eq!(
            response.header("content-type"),
            Some("application/octet-stream")
        );
    }

    #[test]
    fn the_content_type_is_sent_once() {
        let request = Request::new("POST", "/")
            .with_header("Content-Type", "text/csv")
            .with_body("a,b");
        let response = Echo.handle(request);
        let types: Vec<_> = response
            .headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case("content-type"))
            .collect();
        assert_eq!(types.len(), 1, "{:?}", response.headers);
        assert_eq!(response.header("content-type"), Some("text/csv"));
    }
}
