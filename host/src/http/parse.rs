//! Parses a request head (request line and header fields) out of a byte buffer, sans IO.
//!
//! `parse_head` is called with everything received so far; it answers "need more", a complete
//! [`Head`] with the number of bytes it used, or the [`HttpError`] that refuses the request.
//! It enforces the head's size limits and the framing rules of RFC 9112 (section 6): a request
//! with both `Content-Length` and `Transfer-Encoding`, conflicting lengths, or `chunked` not
//! last is refused, because a proxy in front of us could read its body differently.
//! [`check_trailer_line`] holds a chunked body's trailer lines to the same field-line rules,
//! with the same parser.

use super::error::HttpError;

/// The most header fields in one request (431 beyond it).
pub const MAX_HEADERS: usize = 100;

/// The methods passed on to plugins; any other is answered 501.
const METHODS: &[&str] = &["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"];

/// Size limits of a request head.
#[derive(Clone, Copy, Debug)]
pub struct HeadLimits {
    /// The request line, without its line ending (414 beyond it).
    pub request_line: usize,
    /// The header fields after the request line, line endings included (431 beyond it).
    pub header_block: usize,
}

impl Default for HeadLimits {
    fn default() -> HeadLimits {
        HeadLimits {
            request_line: 8 * 1024,
            header_block: 16 * 1024,
        }
    }
}

impl HeadLimits {
    /// The most bytes a complete head can take; more buffered without one is an error.
    pub fn max_head(&self) -> usize {
        self.request_line + self.header_block + 4
    }
}

/// How the body that follows the head is framed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// No body.
    Empty,
    /// Exactly this many bytes (`Content-Length`).
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
}

/// A parsed, validated request head.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Head {
    /// One of the supported methods, e.g. `POST`.
    pub method: String,
    /// The path of the request target (origin form; an absolute-form target is reduced to it).
    pub path: String,
    /// The query without its `?`, empty when absent.
    pub query: String,
    /// Header fields in the order received.
    pub headers: Vec<(String, Vec<u8>)>,
    /// `HTTP/1.1` (else `HTTP/1.0`).
    pub http11: bool,
    /// Whether the client asked to keep the connection open after the response.
    pub keep_alive: bool,
    /// How the body is framed.
    pub framing: Framing,
    /// `Expect: 100-continue` on an HTTP/1.1 request with a body.
    pub expect_continue: bool,
}

/// Parses `buf` (everything received so far on the connection, starting at a request).
/// `Ok(None)` means the head is not complete yet; `Ok(Some((head, used)))` gives the head and
/// how many bytes of `buf` it took.
pub fn parse_head(buf: &[u8], limits: &HeadLimits) -> Result<Option<(Head, usize)>, HttpError> {
    // RFC 9112 section 2.2: a server should ignore empty lines before the request line.
    let start = buf
        .iter()
        .position(|&b| b != b'\r' && b != b'\n')
        .unwrap_or(buf.len());
    let line = match buf[start..].iter().position(|&b| b == b'\n') {
        Some(end) => &buf[start..start + end],
        None if buf.len() - start > limits.request_line => return Err(HttpError::UriTooLong),
        None => return Ok(None),
    };
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let line_len = line.len();
    if line_len > limits.request_line {
        return Err(HttpError::UriTooLong);
    }
    let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut fields);
    let used = match request.parse(buf) {
        Ok(httparse::Status::Complete(used)) => used,
        Ok(httparse::Status::Partial) if buf.len() > limits.max_head() => {
            return Err(HttpError::HeadersTooLarge)
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(HttpError::HeadersTooLarge),
        Err(httparse::Error::Version) => return Err(version_error(line)),
        Err(httparse::Error::Token) if line.split(|&b| b == b' ').count() > 3 => {
            return Err(TARGET_WITH_SPACE)
        }
        Err(error) => return Err(HttpError::BadRequest(describe(error))),
    };
    if used - start - line_len > limits.header_block + 4 {
        return Err(HttpError::HeadersTooLarge);
    }
    let head = validate(&request)?;
    Ok(Some((head, used)))
}

/// A request line with more than the two spaces between method, target and version.
const TARGET_WITH_SPACE: HttpError =
    HttpError::BadRequest("the request target contains a space (send it as %20)");

/// 505 for a well-formed `HTTP/x.y` we do not speak, 400 for anything else (a target with a
/// space in it makes httparse read its second half as the version).
fn version_error(line: &[u8]) -> HttpError {
    if line.split(|&b| b == b' ').count() > 3 {
        return TARGET_WITH_SPACE;
    }
    let version = line.rsplit(|&b| b == b' ').next().unwrap_or_default();
    match version {
        [b'H', b'T', b'T', b'P', b'/', major, b'.', minor]
            if major.is_ascii_digit() && minor.is_ascii_digit() =>
        {
            HttpError::VersionNotSupported
        }
        [b'H', b'T', b'T', b'P', b'/', major] if major.is_ascii_digit() => {
            HttpError::VersionNotSupported
        }
        _ => HttpError::BadRequest("malformed HTTP version"),
    }
}

/// Checks one trailer field line of a chunked body, its CRLF included (RFC 9112 section 7.1.2:
/// trailers are field lines, so whitespace before the colon, an obs-fold, a missing colon or a
/// non-token name byte is a 400, section 5). httparse's field-line parser does it, with the
/// defaults `parse_head` runs it with, so trailers and headers are held to one grammar.
pub(crate) fn check_trailer_line(line: &[u8]) -> Result<(), HttpError> {
    let mut field = [httparse::EMPTY_HEADER; 1];
    match httparse::parse_headers(line, &mut field) {
        // A valid field line: the parser waits for the next one or the empty line that ends the
        // section (which the body reader reads itself). An empty `line` ends it the same way.
        Ok(_) => Ok(()),
        Err(httparse::Error::HeaderName) => Err(HttpError::BadRequest(
            "invalid trailer field name (or space before the colon)",
        )),
        Err(httparse::Error::HeaderValue) => Err(HttpError::BadRequest(
            "invalid trailer field value (control character)",
        )),
        Err(error) => Err(HttpError::BadRequest(describe(error))),
    }
}

fn describe(error: httparse::Error) -> &'static str {
    match error {
        httparse::Error::HeaderName => "invalid header name (or space before the colon)",
        httparse::Error::HeaderValue => "invalid header value (control character or obs-fold)",
        httparse::Error::NewLine => "invalid line ending (bare CR)",
        httparse::Error::Status => "invalid status",
        httparse::Error::Token => "invalid method",
        httparse::Error::TooManyHeaders => "too many headers",
        httparse::Error::Version => "invalid version",
    }
}

fn validate(request: &httparse::Request<'_, '_>) -> Result<Head, HttpError> {
    let method = request.method.unwrap_or_default();
    if !METHODS.contains(&method) {
        return Err(HttpError::NotImplemented("method"));
    }
    let http11 = request.version == Some(1);
    let Target {
        path,
        query,
        authority,
    } = split_target(request.path.unwrap_or_default())?;
    // RFC 9112 section 3.2.2: an absolute-form target's authority replaces Host, and is held
    // to the same grammar.
    if authority
        .as_deref()
        .is_some_and(|a| a.is_empty() || !is_valid_host(a.as_bytes()))
    {
        return Err(HttpError::BadRequest(
            "the target's authority is not a host name or address with an optional port",
        ));
    }
    let absolute = authority.is_some();

    let mut hosts = 0;
    let mut transfer_encodings = 0;
    let mut length: Option<u64> = None;
    let mut codings: Vec<String> = Vec::new();
    // RFC 9112 section 9.6: a `close` anywhere in any Connection line wins over a keep-alive.
    let mut close = false;
    let mut keep_alive = http11;
    let mut expect_continue = false;
    let mut headers = Vec::with_capacity(request.headers.len());
    for field in request.headers.iter() {
        let name = field.name;
        let value = field.value;
        if name.eq_ignore_ascii_case("host") {
            hosts += 1;
            // RFC 9112 section 3.2.2: an absolute-form target's authority wins over Host.
            if !absolute && !is_valid_host(value) {
                return Err(HttpError::BadRequest(
                    "Host is not a host name or address with an optional port",
                ));
            }
        } else if name.eq_ignore_ascii_case("content-length") {
            let parsed = parse_length(value)?;
            if length.is_some_and(|known| known != parsed) {
                return Err(HttpError::BadRequest("conflicting Content-Length values"));
            }
            length = Some(parsed);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            transfer_encodings += 1;
            for token in tokens(value) {
                codings.push(token.to_ascii_lowercase());
            }
        } else if name.eq_ignore_ascii_case("connection") {
            for token in tokens(value) {
                if token.eq_ignore_ascii_case("close") {
                    close = true;
                } else if token.eq_ignore_ascii_case("keep-alive") {
                    keep_alive = true;
                }
            }
        } else if name.eq_ignore_ascii_case("expect") {
            if !value.eq_ignore_ascii_case(b"100-continue") {
                return Err(HttpError::ExpectationFailed);
            }
            expect_continue = http11;
        }
        match (&authority, name.eq_ignore_ascii_case("host")) {
            (Some(authority), true) => headers.push((name.to_owned(), authority.clone().into())),
            _ => headers.push((name.to_owned(), value.to_vec())),
        }
    }
    if hosts > 1 || (http11 && hosts == 0) {
        return Err(HttpError::BadRequest(
            "an HTTP/1.1 request needs exactly one Host",
        ));
    }
    if transfer_encodings > 0 && codings.is_empty() {
        return Err(HttpError::BadRequest("empty Transfer-Encoding"));
    }
    let framing = match (length, codings.is_empty()) {
        (Some(_), false) => {
            return Err(HttpError::BadRequest(
                "Content-Length together with Transfer-Encoding",
            ))
        }
        (Some(0), true) | (None, true) => Framing::Empty,
        (Some(n), true) => Framing::Length(n),
        (None, false) => chunked_framing(&codings, http11)?,
    };
    if framing == Framing::Empty {
        expect_continue = false;
    }
    Ok(Head {
        method: method.to_owned(),
        path,
        query,
        headers,
        http11,
        keep_alive: keep_alive && !close,
        framing,
        expect_continue,
    })
}

fn chunked_framing(codings: &[String], http11: bool) -> Result<Framing, HttpError> {
    if !http11 {
        return Err(HttpError::BadRequest(
            "Transfer-Encoding in an HTTP/1.0 request",
        ));
    }
    if codings.last().map(String::as_str) != Some("chunked") {
        return Err(HttpError::BadRequest(
            "chunked must be the final transfer coding",
        ));
    }
    if codings[..codings.len() - 1].iter().any(|c| c == "chunked") {
        return Err(HttpError::BadRequest("chunked applied more than once"));
    }
    if codings.len() > 1 {
        return Err(HttpError::NotImplemented(
            "transfer codings other than chunked",
        ));
    }
    Ok(Framing::Chunked)
}

/// `Content-Length = 1*DIGIT`, small enough for a u64.
fn parse_length(value: &[u8]) -> Result<u64, HttpError> {
    const BAD: HttpError = HttpError::BadRequest("invalid Content-Length");
    if value.is_empty() || value.len() > 18 || !value.iter().all(u8::is_ascii_digit) {
        return Err(BAD);
    }
    std::str::from_utf8(value)
        .ok()
        .and_then(|text| text.parse().ok())
        .ok_or(BAD)
}

/// The comma-separated tokens of a list-valued field, trimmed, empty ones skipped.
pub(crate) fn tokens(value: &[u8]) -> impl Iterator<Item = &str> {
    value
        .split(|&b| b == b',')
        .filter_map(|token| std::str::from_utf8(token).ok())
        .map(|token| token.trim_matches([' ', '\t']))
        .filter(|token| !token.is_empty())
}

/// `Host = uri-host [ ":" port ]` (RFC 9110 section 7.2, RFC 3986 section 3.2.2): a reg-name
/// (unreserved characters, percent-encodings and sub-delims, which covers IPv4 addresses) or a
/// bracketed IPv6 literal, then an optional port of digits. An empty value is allowed (a
/// target without an authority).
pub fn is_valid_host(value: &[u8]) -> bool {
    let (host, port) = match value.first() {
        Some(b'[') => match value.iter().position(|&b| b == b']') {
            Some(end) => {
                let literal = std::str::from_utf8(&value[1..end]).unwrap_or("");
                if literal.parse::<std::net::Ipv6Addr>().is_err() {
                    return false;
                }
                (&value[..0], &value[end + 1..])
            }
            None => return false,
        },
        _ => match value.iter().rposition(|&b| b == b':') {
            Some(colon) => (&value[..colon], &value[colon..]),
            None => (value, &value[value.len()..]),
        },
    };
    let port_ok = match port.split_first() {
        None => true,
        Some((b':', digits)) => digits.iter().all(u8::is_ascii_digit),
        Some(_) => false,
    };
    port_ok && is_reg_name(host)
}

fn is_reg_name(name: &[u8]) -> bool {
    let mut at = 0;
    while at < name.len() {
        match name[at] {
            b'%' => {
                let hex = name.get(at + 1..at + 3);
                if !hex.is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit)) {
                    return false;
                }
                at += 3;
                continue;
            }
            b if b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=".contains(&b) => {}
            _ => return false,
        }
        at += 1;
    }
    true
}

/// A request target split into its path and query, with the authority of an absolute-form
/// target (`http://host/path?q`, reduced to its path).
struct Target {
    path: String,
    query: String,
    authority: Option<String>,
}

fn split_target(target: &str) -> Result<Target, HttpError> {
    let (origin, authority) = if target.starts_with('/') {
        (target, None)
    } else {
        let lower = target.get(..8).unwrap_or(target).to_ascii_lowercase();
        let rest = if lower.starts_with("http://") {
            &target[7..]
        } else if lower.starts_with("https://") {
            &target[8..]
        } else {
            return Err(HttpError::BadRequest("request target must start with /"));
        };
        match rest.find(['/', '?']) {
            Some(at) if rest.as_bytes()[at] == b'/' => (&rest[at..], Some(&rest[..at])),
            Some(at) => {
                return Ok(Target {
                    path: "/".to_owned(),
                    query: rest[at + 1..].to_owned(),
                    authority: Some(rest[..at].to_owned()),
                })
            }
            None => ("/", Some(rest)),
        }
    };
    let (path, query) = origin.split_once('?').unwrap_or((origin, ""));
    Ok(Target {
        path: path.to_owned(),
        query: query.to_owned(),
        authority: authority.map(str::to_owned),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(raw: &str) -> Result<Option<(Head, usize)>, HttpError> {
        parse_head(raw.as_bytes(), &HeadLimits::default())
    }

    /// Raw head in, the refusal out: one row per rule.
    #[test]
    fn refusals() {
        let long_line = format!("GET /{} HTTP/1.1\r\nHost: a\r\n\r\n", "a".repeat(9000));
        let long_header = format!(
            "GET / HTTP/1.1\r\nHost: a\r\nX: {}\r\n\r\n",
            "a".repeat(17000)
        );
        let many: String = (0..101).map(|i| format!("X-{i}: 1\r\n")).collect();
        let many = format!("GET / HTTP/1.1\r\nHost: a\r\n{many}\r\n");
        let table: &[(&str, HttpError)] = &[
            (&long_line, HttpError::UriTooLong),
            (&long_header, HttpError::HeadersTooLarge),
            (&many, HttpError::HeadersTooLarge),
            ("GET / HTTP/1.1\r\n\r\n", HttpError::BadRequest("an HTTP/1.1 request needs exactly one Host")),
            ("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", HttpError::BadRequest("an HTTP/1.1 request needs exactly one Host")),
            ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", HttpError::BadRequest("Content-Length together with Transfer-Encoding")),
            ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n", HttpError::BadRequest("conflicting Content-Length values")),
            ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +3\r\n\r\n", HttpError::BadRequest("invalid Content-Length")),
            ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3, 3\r\n\r\n", HttpError::BadRequest("invalid Content-Length")),
            ("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", HttpError::BadRequest("chunked must be the final transfer coding")),
            ("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", HttpError::NotImplemented("transfer codings other than chunked")),
            ("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", HttpError::BadRequest("Transfer-Encoding in an HTTP/1.0 request")),
            ("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, chunked\r\n\r\n", HttpError::BadRequest("chunked applied more than once")),
            ("GET / HTTP/1.1\r\nHost : a\r\n\r\n", HttpError::BadRequest("invalid header name (or space before the colon)")),
            ("GET / HTTP/1.1\r\nHost: a\r\nX: 1\r\n  folded\r\n\r\n", HttpError::BadRequest("invalid header name (or space before the colon)")),
            ("GET / HTTP/1.1\r\nHost: a\rX: 1\r\n\r\n", HttpError::BadRequest("invalid header value (control character or obs-fold)")),
            ("GET / HTTP/1.1\r\nHost: a\0b\r\n\r\n", HttpError::BadRequest("invalid header value (control character or obs-fold)")),
            ("BREW / HTTP/1.1\r\nHost: a\r\n\r\n", HttpError::NotImplemented("method")),
            ("GET / HTTP/2.0\r\nHost: a\r\n\r\n", HttpError::VersionNotSupported),
            ("GET / FTP/1.1\r\nHost: a\r\n\r\n", HttpError::BadRequest("malformed HTTP version")),
            ("GET nope HTTP/1.1\r\nHost: a\r\n\r\n", HttpError::BadRequest("request target must start with /")),
            ("POST / HTTP/1.1\r\nHost: a\r\nExpect: tea\r\n\r\n", HttpError::ExpectationFailed),
            ("GET /a b HTTP/1.1\r\nHost: a\r\n\r\n", TARGET_WITH_SPACE),
            ("GET /a b c HTTP/1.1\r\nHost: a\r\n\r\n", TARGET_WITH_SPACE),
            ("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: \r\n\r\n", HttpError::BadRequest("empty Transfer-Encoding")),
            ("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: ,\r\n\r\n", HttpError::BadRequest("empty Transfer-Encoding")),
        ];
        for (raw, expected) in table {
            assert_eq!(parse(raw).err(), Some(*expected), "{raw:?}");
        }
    }

    #[test]
    fn hosts_follow_the_uri_host_grammar() {
        for good in [
            "a",
            "example.com",
            "example.com:8080",
            "127.0.0.1",
            "127.0.0.1:80",
            "[::1]",
            "[2001:db8::1]:443",
            "xn--fiddler-9ya.example",
            "a%2Db",
            "a,b",
            "",
            "a:",
        ] {
            assert!(is_valid_host(good.as_bytes()), "{good:?} is valid");
        }
        for bad in [
            "a/b", "u@a", "a, b", "a b", "a:b", "a:1:2", "[::1", "[nope]", "[::1]x", "a%2", "a%zz",
            "a\\b", "a?b", "a#b", "<a>",
        ] {
            assert!(!is_valid_host(bad.as_bytes()), "{bad:?} is refused");
        }
        let absolute = "GET http://a:81/x HTTP/1.1\r\nHost: u@a\r\n\r\n";
        let (head, _) = parse(absolute).expect("valid").expect("complete");
        assert_eq!(
            head.headers,
            vec![("Host".to_owned(), b"a:81".to_vec())],
            "an absolute-form target's authority replaces Host"
        );
        let bad = "GET http://evil.example%/x HTTP/1.1\r\nHost: a\r\n\r\n";
        assert!(parse(bad).is_err(), "and is held to the same grammar");
        let origin = "GET /x HTTP/1.1\r\nHost: u@a\r\n\r\n";
        assert!(parse(origin).is_err());
    }

    #[test]
    fn partial_heads_ask_for_more() {
        for raw in [
            "",
            "\r\n",
            "GET",
            "GET / HTTP/1.1\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\n",
        ] {
            assert_eq!(parse(raw), Ok(None), "{raw:?}");
        }
    }

    #[test]
    fn a_complete_head_is_split_into_its_parts() {
        let raw = "\r\nPOST http://example.com/echo/x?a=1 HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\nhello";
        let (head, used) = parse(raw).expect("valid").expect("complete");
        assert_eq!(&raw[used..], "hello");
        assert_eq!(head.method, "POST");
        assert_eq!(head.path, "/echo/x");
        assert_eq!(head.query, "a=1");
        assert_eq!(head.framing, Framing::Length(5));
        assert!(head.keep_alive && head.http11 && head.expect_continue);
    }

    #[test]
    fn keep_alive_follows_version_and_connection() {
        let table: &[(&str, bool)] = &[
            ("GET / HTTP/1.1\r\nHost: a\r\n\r\n", true),
            (
                "GET / HTTP/1.1\r\nHost: a\r\nConnection: Close\r\n\r\n",
                false,
            ),
            ("GET / HTTP/1.0\r\n\r\n", false),
            ("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", true),
            // A close anywhere in any Connection line wins (RFC 9112 section 9.6).
            (
                "GET / HTTP/1.0\r\nConnection: close, keep-alive\r\n\r\n",
                false,
            ),
            (
                "GET / HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n",
                false,
            ),
            (
                "GET / HTTP/1.0\r\nConnection: close\r\nConnection: keep-alive\r\n\r\n",
                false,
            ),
            (
                "GET / HTTP/1.0\r\nConnection: keep-alive\r\nConnection: CLOSE\r\n\r\n",
                false,
            ),
            (
                "GET / HTTP/1.1\r\nHost: a\r\nConnection: close, keep-alive\r\n\r\n",
                false,
            ),
            (
                "GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\nConnection: keep-alive\r\n\r\n",
                false,
            ),
            (
                "GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, Upgrade\r\n\r\n",
                true,
            ),
        ];
        for (raw, keep_alive) in table {
            let (head, _) = parse(raw).expect("valid").expect("complete");
            assert_eq!(head.keep_alive, *keep_alive, "{raw:?}");
        }
    }

    #[test]
    fn chunked_framing_is_recognised() {
        let (head, _) = parse("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked\r\n\r\n")
            .expect("valid")
            .expect("complete");
        assert_eq!(head.framing, Framing::Chunked);
    }
}
