//! Example plugin `hello`: greets, and shows the query and headers it received.
//!
//! Shows reading the query string, the headers, the method, the path and the client address.
//! Corners cut: the query is not percent-decoded (`?name=J%C3%BCrgen` greets `J%C3%BCrgen`).

use std::fmt::Write;

use plugin_api::{export_plugin, Plugin, Request, Response};

/// No state.
pub struct Hello;

impl Plugin for Hello {
    const DESCRIPTION: &'static str = "greets ?name=..., and shows the query and headers";
    // Stateless: as many at once as the server allows.
    const MAX_LANES: usize = 64;

    fn init() -> Result<Self, String> {
        Ok(Hello)
    }

    fn handle(&self, request: Request) -> Response {
        let name = request.query_param("name").unwrap_or("world");
        let mut text = format!("Hello, {name}!\n\n");
        let _ = writeln!(text, "method: {}", request.method);
        let _ = writeln!(text, "path: {}", request.path);
        let _ = writeln!(text, "client: {}", request.client);
        let _ = writeln!(text, "tls: {}", request.tls);
        for (key, value) in request.query_pairs() {
            let _ = writeln!(text, "query {key}: {value}");
        }
        for header in request.headers.iter() {
            let value = String::from_utf8_lossy(&header.value);
            let _ = writeln!(text, "header {}: {value}", header.name);
        }
        Response::text(text)
    }
}

export_plugin!(Hello);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greets_by_name_and_lists_headers() {
        let request = Request::new("GET", "/x?name=crab&mood=good").with_header("X-Test", "1");
        let response = Hello.handle(request);
        let text = response.body_str().unwrap_or_default();
        assert!(text.starts_with("Hello, crab!\n"), "{text}");
        assert!(text.contains("path: /x\n"), "{text}");
        assert!(text.contains("query mood: good\n"), "{text}");
        assert!(text.contains("header X-Test: 1\n"), "{text}");
    }

    #[test]
    fn greets_the_world_by_default() {
        let response = Hello.handle(Request::new("POST", "/"));
        assert!(response
            .body_str()
            .unwrap_or_default()
            .starts_with("Hello, world!"));
    }
}
