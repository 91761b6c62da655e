//! The request a plugin receives and the response it returns.
//!
//! Both cross the ABI boundary by value, so they are made only of `StableAbi` types (`RString`,
//! `RVec`, ...). The ergonomic accessors and builders here are ordinary Rust, compiled into each
//! side separately; they never cross the boundary themselves.

use abi_stable::std_types::{RString, RVec};
use abi_stable::StableAbi;

/// One header field. Names are stored as received (HTTP names are case-insensitive: compare with
/// [`str::eq_ignore_ascii_case`]); values are raw bytes because HTTP allows non-UTF-8 octets.
#[repr(C)]
#[derive(StableAbi, Clone, Debug, PartialEq, Eq)]
pub struct Header {
    /// The field name, e.g. `Content-Type`.
    pub name: RString,
    /// The field value, without surrounding whitespace.
    pub value: RVec<u8>,
}

impl Header {
    /// A header from a name and a text value.
    pub fn new(name: &str, value: &str) -> Header {
        Header {
            name: name.into(),
            value: value.as_bytes().to_vec().into(),
        }
    }

    /// The value as text, if it is UTF-8.
    pub fn value_str(&self) -> Option<&str> {
        std::str::from_utf8(&self.value).ok()
    }
}

/// The first header named `name` (case-insensitive) in `headers`, as text.
fn find_header<'a>(headers: &'a [Header], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|h| h.name.as_str().eq_ignore_ascii_case(name))
        .and_then(Header::value_str)
}

/// Anything that can be a body: `Vec<u8>`, `String`, `&str`, `&[u8]`, or an `RVec<u8>` (such as
/// a request's body, which is moved without a copy).
pub trait IntoBody {
    /// The bytes as an `RVec`, without copying when they already are one or a `Vec`.
    fn into_body(self) -> RVec<u8>;
}

impl IntoBody for RVec<u8> {
    fn into_body(self) -> RVec<u8> {
        self
    }
}

impl IntoBody for Vec<u8> {
    fn into_body(self) -> RVec<u8> {
        self.into()
    }
}

impl IntoBody for String {
    fn into_body(self) -> RVec<u8> {
        self.into_bytes().into()
    }
}

impl IntoBody for &str {
    fn into_body(self) -> RVec<u8> {
        self.as_bytes().to_vec().into()
    }
}

impl IntoBody for &[u8] {
    fn into_body(self) -> RVec<u8> {
        self.to_vec().into()
    }
}

/// A whole HTTP request, as routed to one plugin.
///
/// The host has already read the complete body (decoding `chunked`), checked every limit, and
/// stripped the route: `POST /echo/a/b?x=1` reaches plugin `echo` with `path` `/a/b` and `query`
/// `x=1`.
#[repr(C)]
#[derive(StableAbi, Clone, Debug, PartialEq, Eq)]
pub struct Request {
    /// The method, e.g. `POST`.
    pub method: RString,
    /// The path after `/<plugin-name>`, always starting with `/` (`/` when nothing follows).
    /// Not percent-decoded.
    pub path: RString,
    /// The query string without the `?`, empty when absent. Not percent-decoded.
    pub query: RString,
    /// The header fields in the order received.
    pub headers: RVec<Header>,
    /// The whole body (empty when there is none).
    pub body: RVec<u8>,
    /// The client's address, e.g. `127.0.0.1:51234`.
    pub client: RString,
    /// Whether the request arrived over TLS.
    pub tls: bool,
}

impl Request {
    /// A request with the given method and path and nothing else; handy in a plugin's own tests.
    pub fn new(method: &str, path: &str) -> Request {
        let (path, query) = match path.split_once('?') {
            Some((path, query)) => (path, query),
            None => (path, ""),
        };
        Request {
            method: method.into(),
            path: if path.is_empty() { "/" } else { path }.into(),
            query: query.into(),
            headers: RVec::new(),
            body: RVec::new(),
            client: RString::new(),
            tls: false,
        }
    }

    /// This request with one more header (builder style).
    pub fn with_header(mut self, name: &str, value: &str) -> Request {
        self.headers.push(Header::new(name, value));
        self
    }

    /// This request with the given body (builder style).
    pub fn with_body(mut self, body: impl IntoBody) -> Request {
        self.body = body.into_body();
        self
    }

    /// The first header with this name (case-insensitive), as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }

    /// The body as text, if it is UTF-8.
    pub fn body_str(&self) -> Option<&str> {
        std::str::from_utf8(&self.body).ok()
    }

    /// The first query parameter with this name, not percent-decoded (`?a=1&b` gives `a` ->
    /// `1`, `b` -> ``).
    pub fn query_param(&self, name: &str) -> Option<&str> {
        self.query_pairs().find(|(k, _)| *k == name).map(|(_, v)| v)
    }

    /// The first query parameter with this name, percent-decoded (`+` as a space); `None`
    /// when it is absent or does not decode to UTF-8.
    pub fn query_decoded(&self, name: &str) -> Option<String> {
        self.query_pairs()
            .find(|(k, _)| crate::percent_decode(k).as_deref() == Some(name))
            .and_then(|(_, v)| crate::percent_decode(v))
    }

    /// Every header with this name (case-insensitive), as text, in order (`Accept` sent twice,
    /// a `Cookie` per line); values that are not UTF-8 are skipped.
    pub fn header_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.headers
            .iter()
            .filter(move |h| h.name.eq_ignore_ascii_case(name))
            .filter_map(Header::value_str)
    }

    /// How long the call serving this request may still run before the server gives up on it
    /// (answers 504 and stops the plugin): check it in long loops, or size work to fit. The
    /// server's clock started a little earlier (when it sent the request: the body's transfer
    /// is not counted here), so keep a margin of some milliseconds, more for large bodies.
    /// `None` outside the server (a plugin's own tests), on servers older than 0.1.1, and on
    /// any thread other than the one serving the call.
    pub fn deadline(&self) -> Option<std::time::Duration> {
        crate::stream::time_left()
    }

    /// Every `key=value` pair of the query string, in order, not percent-decoded.
    pub fn query_pairs(&self) -> impl Iterator<Item = (&str, &str)> {
        self.query
            .as_str()
            .split('&')
            .filter(|pair| !pair.is_empty())
            .map(|pair| pair.split_once('=').unwrap_or((pair, "")))
    }
}

/// The response a plugin returns. The host adds the framing headers (`Content-Length`,
/// `Connection`) itself and ignores any the plugin sets.
#[repr(C)]
#[derive(StableAbi, Clone, Debug, PartialEq, Eq)]
pub struct Response {
    /// The status code, 200..=999 (anything else, `1xx` included, is answered as 500 by the
    /// host: interim responses are the host's business).
    pub status: u16,
    /// Header fields to send. A field whose name or value holds a control byte (CR, LF, NUL,
    /// ...) is dropped by the host, whole.
    pub headers: RVec<Header>,
    /// The body (the host omits it for `HEAD` requests, keeping its length).
    pub body: RVec<u8>,
}

impl Response {
    /// A response with this status and no headers or body.
    pub fn status(status: u16) -> Response {
        Response {
            status,
            headers: RVec::new(),
            body: RVec::new(),
        }
    }

    /// `200 OK` with these bytes as `application/octet-stream`.
    pub fn ok(body: impl IntoBody) -> Response {
        Response::status(200)
            .with_header("Content-Type", "application/octet-stream")
            .with_body(body)
    }

    /// `200 OK` with this text as `text/plain; charset=utf-8`.
    pub fn text(body: impl Into<String>) -> Response {
        Response::status(200)
            .with_header("Content-Type", "text/plain; charset=utf-8")
            .with_body(body.into())
    }

    /// `200 OK` with this already-serialised JSON text as `application/json`.
    pub fn json(body: impl Into<String>) -> Response {
        Response::status(200)
            .with_header("Content-Type", "application/json")
            .with_body(body.into())
    }

    /// `400 Bad Request` with a plain-text explanation.
    pub fn bad_request(why: impl Into<String>) -> Response {
        Response::text(why).with_status(400)
    }

    /// `404 Not Found` with a plain-text explanation.
    pub fn not_found(why: impl Into<String>) -> Response {
        Response::text(why).with_status(404)
    }

    /// Any status with a plain-text explanation (`Response::error(422, "no such column\n")`).
    pub fn error(status: u16, why: impl Into<String>) -> Response {
        Response::text(why).with_status(status)
    }

    /// `500 Internal Server Error` with a plain-text explanation.
    pub fn internal_error(why: impl Into<String>) -> Response {
        Response::text(why).with_status(500)
    }

    /// This response with another status (builder style).
    pub fn with_status(mut self, status: u16) -> Response {
        self.status = status;
        self
    }

    /// This response with one more header (builder style).
    pub fn with_header(mut self, name: &str, value: &str) -> Response {
        self.headers.push(Header::new(name, value));
        self
    }

    /// This response with one more header whose value is raw bytes (HTTP allows octets that
    /// are not UTF-8 in a value; a field with a control byte is still dropped by the host).
    pub fn with_header_bytes(mut self, name: &str, value: &[u8]) -> Response {
        self.headers.push(Header {
            name: name.into(),
            value: value.to_vec().into(),
        });
        self
    }

    /// Sets a header, replacing every field of that name (case-insensitive) the response had.
    pub fn set_header(&mut self, name: &str, value: &str) {
        self.set_header_bytes(name, value.as_bytes());
    }

    /// Sets a header to raw bytes, replacing every field of that name the response had.
    pub fn set_header_bytes(&mut self, name: &str, value: &[u8]) {
        self.headers.retain(|h| !h.name.eq_ignore_ascii_case(name));
        self.headers.push(Header {
            name: name.into(),
            value: value.to_vec().into(),
        });
    }

    /// This response with its `Content-Type` set to `value`, replacing any it had (builder
    /// style).
    pub fn with_content_type(mut self, value: &str) -> Response {
        self.set_header("Content-Type", value);
        self
    }

    /// This response with the given body (builder style).
    pub fn with_body(mut self, body: impl IntoBody) -> Response {
        self.body = body.into_body();
        self
    }

    /// The first header with this name (case-insensitive), as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }

    /// The body as text, if it is UTF-8.
    pub fn body_str(&self) -> Option<&str> {
        std::str::from_utf8(&self.body).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decoded_query_parameters_and_every_value_of_a_header() {
        let req = Request::new("GET", "/?q=fiddler+crab%21&caf%C3%A9=1")
            .with_header("Accept", "text/html")
            .with_header("accept", "application/json");
        assert_eq!(req.query_decoded("q").as_deref(), Some("fiddler crab!"));
        assert_eq!(req.query_decoded("café").as_deref(), Some("1"));
        assert_eq!(req.query_decoded("nope"), None);
        let accepts: Vec<&str> = req.header_all("ACCEPT").collect();
        assert_eq!(accepts, ["text/html", "application/json"]);
        assert_eq!(Response::error(422, "bad\n").status, 422);
    }

    #[test]
    fn binary_header_values_are_kept_byte_for_byte() {
        let mut response = Response::text("x").with_header_bytes("X-Raw", &[0x80, b'a', 0xff]);
        assert_eq!(response.headers[1].value.as_slice(), &[0x80, b'a', 0xff]);
        assert_eq!(response.header("x-raw"), None, "not UTF-8, so not as text");
        response.set_header_bytes("x-raw", b"plain");
        assert_eq!(response.header("X-Raw"), Some("plain"));
        assert_eq!(response.headers.len(), 2);
    }

    #[test]
    fn request_new_splits_query_and_defaults_path() {
        let req = Request::new("GET", "?a=1&b&&c=x=y");
        assert_eq!(req.path.as_str(), "/");
        assert_eq!(req.query_param("a"), Some("1"));
        assert_eq!(req.query_param("b"), Some(""));
        assert_eq!(req.query_param("c"), Some("x=y"));
        assert_eq!(req.query_param("d"), None);
    }

    #[test]
    fn header_lookup_ignores_case() {
        let req = Request::new("POST", "/").with_header("Content-Type", "text/plain");
        assert_eq!(req.header("content-type"), Some("text/plain"));
        let resp = Response::text("hi");
        assert_eq!(
            resp.header("CONTENT-TYPE"),
            Some("text/plain; charset=utf-8")
        );
        assert_eq!(resp.body_str(), Some("hi"));
    }
}
