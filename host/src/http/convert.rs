//! The one place a parsed request head becomes the plugin's [`Request`]: its method, the path
//! after the route, the query, every header field in order, the body, the client's address and
//! whether it came over TLS. Intake calls it for every request; the conversion fuzz target too.

use plugin_api::{Header, Request};

use super::parse::Head;

/// The plugin's view of `head` and `body`, where `path` is the part of the target after the
/// route (`/echo/a/b` gives `/a/b`). The head's strings are moved, not copied.
pub fn plugin_request(
    head: Head,
    path: String,
    body: Vec<u8>,
    client: String,
    tls: bool,
) -> Request {
    Request {
        method: head.method.into(),
        path: path.into(),
        query: head.query.into(),
        headers: head
            .headers
            .into_iter()
            .map(|(name, value)| Header {
                name: name.into(),
                value: value.into(),
            })
            .collect(),
        body: body.into(),
        client: client.into(),
        tls,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::parse::{parse_head, HeadLimits};

    #[test]
    fn a_head_becomes_the_plugins_request() {
        let raw = b"POST /echo/a?x=1&y HTTP/1.1\r\nHost: h\r\nX-A: 1\r\nX-A: 2\r\n\r\n";
        let (head, _) = parse_head(raw, &HeadLimits::default())
            .expect("valid")
            .expect("complete");
        let request = plugin_request(
            head,
            "/a".into(),
            b"hi".to_vec(),
            "127.0.0.1:9".into(),
            true,
        );
        assert_eq!(
            (request.method.as_str(), request.path.as_str()),
            ("POST", "/a")
        );
        assert_eq!(request.query_param("x"), Some("1"));
        assert_eq!(request.headers.len(), 3, "every field, in order");
        assert_eq!(request.body_str(), Some("hi"));
        assert!(request.tls);
    }
}
