//! HTTP/1.1 conformance (RFC 9110/9112) as a table: raw bytes in, the exact status out, and
//! whether the connection is closed afterwards. Run over HTTP and HTTPS.

use std::io::Write;

use crate::support::{read_response, Scheme, Server};

/// What the server must do with one input.
struct Row {
    what: &'static str,
    raw: &'static [u8],
    status: u16,
    /// The server closes the connection after its answer (framing errors, Connection: close).
    closes: bool,
}

const ROWS: &[Row] = &[
    Row { what: "origin form", raw: b"GET /hello HTTP/1.1\r\nHost: a\r\n\r\n", status: 200, closes: false },
    Row { what: "absolute form", raw: b"GET http://a/hello?name=x HTTP/1.1\r\nHost: a\r\n\r\n", status: 200, closes: false },
    Row { what: "leading empty line", raw: b"\r\nGET /hello HTTP/1.1\r\nHost: a\r\n\r\n", status: 200, closes: false },
    Row { what: "OPTIONS reaches the plugin", raw: b"OPTIONS /hello HTTP/1.1\r\nHost: a\r\n\r\n", status: 200, closes: false },
    Row { what: "HTTP/1.0 without Host", raw: b"GET /hello HTTP/1.0\r\n\r\n", status: 200, closes: true },
    Row { what: "identical duplicate Content-Length", raw: b"POST /hello HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nhi", status: 200, closes: false },
    Row { what: "Content-Length with leading zeros", raw: b"POST /hello HTTP/1.1\r\nHost: a\r\nContent-Length: 002\r\n\r\nhi", status: 200, closes: false },
    Row { what: "no Host in HTTP/1.1", raw: b"GET /hello HTTP/1.1\r\n\r\n", status: 400, closes: true },
    Row { what: "two Hosts", raw: b"GET /hello HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", status: 400, closes: true },
    Row { what: "Content-Length and Transfer-Encoding", raw: b"POST /hello HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", status: 400, closes: true },
    Row { what: "differing Content-Lengths", raw: b"POST /hello HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nhi", status: 400, closes: true },
    Row { what: "Content-Length list", raw: b"POST /hello HTTP/1.1\r\nHost: a\r\nContent-Length: 2, 2\r\n\r\nhi", status: 400, closes: true },
    Row { what: "Content-Length too large to parse", raw: b"POST /hello HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999\r\n\r\n", status: 400, closes: true },
    Row { what: "chunked not last", raw: b"POST /hello HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, identity\r\n\r\n", status: 400, closes: true },
    Row { what: "chunked twice", raw: b"POST /hello HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, chunked\r\n\r\n", status: 400, closes: true },
    Row { what: "unknown transfer coding", raw: b"POST /hello HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", status: 501, closes: true },
    Row { what: "obs-fold", raw: b"GET /hello HTTP/1.1\r\nHost: a\r\nX: 1\r\n 2\r\n\r\n", status: 400, closes: true },
    Row { what: "space before colon", raw: b"GET /hello HTTP/1.1\r\nHost : a\r\n\r\n", status: 400, closes: true },
    Row { what: "bare CR", raw: b"GET /hello HTTP/1.1\r\nHost: a\rX: 1\r\n\r\n", status: 400, closes: true },
    Row { what: "NUL in a value", raw: b"GET /hello HTTP/1.1\r\nHost: a\0\r\n\r\n", status: 400, closes: true },
    Row { what: "lower-case method", raw: b"get /hello HTTP/1.1\r\nHost: a\r\n\r\n", status: 501, closes: true },
    Row { what: "unknown method", raw: b"PURGE /hello HTTP/1.1\r\nHost: a\r\n\r\n", status: 501, closes: true },
    Row { what: "CONNECT", raw: b"CONNECT a:443 HTTP/1.1\r\nHost: a\r\n\r\n", status: 501, closes: true },
    Row { what: "HTTP/2.0 request line", raw: b"GET /hello HTTP/2.0\r\nHost: a\r\n\r\n", status: 505, closes: true },
    Row { what: "HTTP/0.9 style line", raw: b"GET /hello\r\n\r\n", status: 400, closes: true },
    Row { what: "target without a slash", raw: b"GET hello HTTP/1.1\r\nHost: a\r\n\r\n", status: 400, closes: true },
    Row { what: "malformed chunk size", raw: b"POST /hello HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", status: 400, closes: true },
    // Findings of the raw-socket probe (nginx answers each of these 400).
    Row { what: "a space in the request target", raw: b"GET /hello b HTTP/1.1\r\nHost: a\r\n\r\n", status: 400, closes: true },
    Row { what: "Host with an invalid character", raw: b"GET /hello HTTP/1.1\r\nHost: a<b\r\n\r\n", status: 400, closes: true },
    Row { what: "Host with a path", raw: b"GET /hello HTTP/1.1\r\nHost: a/b\r\n\r\n", status: 400, closes: true },
    Row { what: "Host with userinfo", raw: b"GET /hello HTTP/1.1\r\nHost: u@a\r\n\r\n", status: 400, closes: true },
    Row { what: "Host as a list", raw: b"GET /hello HTTP/1.1\r\nHost: a, b\r\n\r\n", status: 400, closes: true },
    Row { what: "empty Transfer-Encoding", raw: b"POST /hello HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\r\n\r\n", status: 400, closes: true },
    Row { what: "Host with a port and an IPv6 literal", raw: b"GET /hello HTTP/1.1\r\nHost: [::1]:8080\r\n\r\n", status: 200, closes: false },
    Row { what: "absolute form with an invalid authority", raw: b"GET http://u@a/hello HTTP/1.1\r\nHost: a\r\n\r\n", status: 400, closes: true },
    Row { what: "absolute form wins over an invalid Host", raw: b"GET http://a/hello HTTP/1.1\r\nHost: u@a\r\n\r\n", status: 200, closes: false },
    Row { what: "Connection: close honoured", raw: b"GET /hello HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", status: 200, closes: true },
    // Issue 26: a close anywhere in any Connection line wins (RFC 9112 section 9.6); the last
    // token used to, so an HTTP/1.0 connection stayed open.
    Row { what: "HTTP/1.0 Connection: close, keep-alive", raw: b"POST /hello HTTP/1.0\r\nHost: a\r\nConnection: close, keep-alive\r\nContent-Length: 2\r\n\r\nhi", status: 200, closes: true },
    Row { what: "HTTP/1.0 Connection lines close then keep-alive", raw: b"POST /hello HTTP/1.0\r\nHost: a\r\nConnection: close\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nhi", status: 200, closes: true },
    Row { what: "HTTP/1.1 Connection: close, keep-alive", raw: b"POST /hello HTTP/1.1\r\nHost: a\r\nConnection: close, keep-alive\r\nContent-Length: 2\r\n\r\nhi", status: 200, closes: true },
    Row { what: "HTTP/1.1 Connection lines close then keep-alive", raw: b"POST /hello HTTP/1.1\r\nHost: a\r\nConnection: close\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nhi", status: 200, closes: true },
    Row { what: "HTTP/1.0 Connection: keep-alive keeps it open", raw: b"POST /hello HTTP/1.0\r\nHost: a\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nhi", status: 200, closes: false },
    // Issue 26: trailer lines are field lines (RFC 9112 section 7.1.2), held to the head's rules.
    Row { what: "a valid trailer", raw: b"POST /hello HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\nX-Sum: 1\r\n\r\n", status: 200, closes: false },
    Row { what: "space before the colon in a trailer", raw: b"POST /hello HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\nX : a\r\n\r\n", status: 400, closes: true },
    Row { what: "a trailer without a colon", raw: b"POST /hello HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\nX\r\n\r\n", status: 400, closes: true },
    Row { what: "obs-fold in trailers", raw: b"POST /hello HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\nX: 1\r\n 2\r\n\r\n", status: 400, closes: true },
    Row { what: "a non-token byte in a trailer name", raw: b"POST /hello HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\nX(y): 1\r\n\r\n", status: 400, closes: true },
    Row { what: "a request swallowed as trailers", raw: b"POST /hello HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\nTraileGET /hello HTTP/1.1\r\nHost: a\r\n\r\n", status: 400, closes: true },
];

fn conformance_table(scheme: Scheme) {
    let server = Server::start_over(scheme, &["hello"], &[]);
    for row in ROWS {
        let mut stream = server.connect();
        let _ = stream.write_all(row.raw);
        // A probe behind it: answered only if the connection stays open.
        let _ = stream.write_all(b"GET /-/health HTTP/1.1\r\nHost: a\r\n\r\n");
        let response =
            read_response(&mut stream).unwrap_or_else(|| panic!("{}: no answer", row.what));
        assert_eq!(
            response.status,
            row.status,
            "{}: {}",
            row.what,
            response.text()
        );
        let next = read_response(&mut stream);
        if row.closes {
            assert!(next.is_none(), "{}: the connection stayed open", row.what);
        } else {
            assert_eq!(
                next.map(|r| r.text()),
                Some("ok\n".to_owned()),
                "{}: the next request",
                row.what
            );
        }
    }
}

crate::over_both_schemes!(conformance_table);
