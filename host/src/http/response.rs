//! Writes response heads. The host owns framing: it sets `Content-Length` and `Connection`
//! itself and drops any framing header, or any malformed header, a plugin returns.

use plugin_api::{Header, Response};

/// A plain-text response made by the host itself (refusals, admin answers, failed calls).
pub fn text(status: u16, body: &str) -> Response {
    Response::text(body).with_status(status)
}

/// Whether the connection stays open after this response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Persistence {
    /// Keep it open; `http10` adds the `Connection: keep-alive` an HTTP/1.0 client needs.
    KeepAlive {
        /// The request was HTTP/1.0.
        http10: bool,
    },
    /// Close it after the response (`Connection: close`).
    Close,
}

/// The reason phrase for a status code (empty for unknown codes, which HTTP allows).
pub fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        206 => "Partial Content",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        304 => "Not Modified",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        413 => "Content Too Large",
        414 => "URI Too Long",
        415 => "Unsupported Media Type",
        417 => "Expectation Failed",
        422 => "Unprocessable Content",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        _ => "",
    }
}

/// Whether a response with this status carries no body and no `Content-Length` (RFC 9110).
pub fn is_bodiless(status: u16) -> bool {
    status == 204 || status == 304
}

/// Fields the host sets itself; a plugin's are dropped.
fn is_framing(name: &str) -> bool {
    [
        "content-length",
        "transfer-encoding",
        "connection",
        "keep-alive",
        "upgrade",
    ]
    .iter()
    .any(|f| name.eq_ignore_ascii_case(f))
}

fn is_token(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

fn is_field_value(value: &[u8]) -> bool {
    value
        .iter()
        .all(|&b| b == b'\t' || (b >= 0x20 && b != 0x7f))
}

/// How a response's head says where its body ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyLength {
    /// `Content-Length: n`.
    Known(u64),
    /// `Transfer-Encoding: chunked` (a streamed body of unknown length, HTTP/1.1).
    Chunked,
    /// Neither: the connection's close ends the body (HTTP/1.0 clients of a stream).
    UntilClose,
}

/// Writes the status line and fields of a response whose body ends as `length` says. Returns
/// the head and how many of the plugin's headers were dropped as malformed (the caller logs it).
pub fn write_head(
    status: u16,
    headers: &[Header],
    length: BodyLength,
    persistence: Persistence,
) -> (Vec<u8>, usize) {
    let mut head = Vec::with_capacity(128 + headers.len() * 48);
    head.extend_from_slice(b"HTTP/1.1 ");
    push_decimal(&mut head, u64::from(status));
    head.push(b' ');
    head.extend_from_slice(reason(status).as_bytes());
    head.extend_from_slice(b"\r\n");
    let mut dropped = 0;
    for header in headers {
        if is_framing(&header.name) {
            continue;
        }
        if !is_token(&header.name) || !is_field_value(&header.value) {
            dropped += 1;
            continue;
        }
        head.extend_from_slice(header.name.as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(&header.value);
        head.extend_from_slice(b"\r\n");
    }
    match length {
        _ if is_bodiless(status) => {}
        BodyLength::Known(n) => {
            head.extend_from_slice(b"Content-Length: ");
            push_decimal(&mut head, n);
            head.extend_from_slice(b"\r\n");
        }
        BodyLength::Chunked => head.extend_from_slice(b"Transfer-Encoding: chunked\r\n"),
        BodyLength::UntilClose => {}
    }
    let persistence = match length {
        BodyLength::UntilClose => Persistence::Close,
        _ => persistence,
    };
    match persistence {
        Persistence::KeepAlive { http10: true } => {
            head.extend_from_slice(b"Connection: keep-alive\r\n")
        }
        Persistence::KeepAlive { http10: false } => {}
        Persistence::Close => head.extend_from_slice(b"Connection: close\r\n"),
    }
    head.extend_from_slice(b"\r\n");
    (head, dropped)
}

/// Appends `n` in decimal (every answer's status and length: no formatter on this path).
fn push_decimal(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_are_written_like_the_formatter_writes_them() {
        for n in [0, 7, 10, 99, 100, 200, 65_535, 1 << 40, u64::MAX] {
            let mut out = b"x".to_vec();
            push_decimal(&mut out, n);
            assert_eq!(out, format!("x{n}").into_bytes());
        }
    }

    #[test]
    fn framing_and_malformed_headers_are_dropped() {
        let headers = [
            Header::new("Content-Type", "text/plain"),
            Header::new("Content-Length", "999"),
            Header::new("Connection", "upgrade"),
            Header::new("Bad Name", "x"),
            Header::new("X-Split", "a\r\nInjected: 1"),
        ];
        let (head, dropped) = write_head(200, &headers, BodyLength::Known(5), Persistence::Close);
        assert_eq!(
            String::from_utf8_lossy(&head),
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\nConnection: close\r\n\r\n"
        );
        assert_eq!(dropped, 2);
    }

    #[test]
    fn no_content_has_no_length_and_http10_keeps_alive_explicitly() {
        let (head, _) = write_head(
            204,
            &[],
            BodyLength::Known(0),
            Persistence::KeepAlive { http10: true },
        );
        assert_eq!(
            String::from_utf8_lossy(&head),
            "HTTP/1.1 204 No Content\r\nConnection: keep-alive\r\n\r\n"
        );
    }

    #[test]
    fn streamed_heads_say_chunked_or_close() {
        let (head, _) = write_head(200, &[], BodyLength::Chunked, Persistence::Close);
        assert_eq!(
            String::from_utf8_lossy(&head),
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        );
        let keep = Persistence::KeepAlive { http10: true };
        let (head, _) = write_head(200, &[], BodyLength::UntilClose, keep);
        assert_eq!(
            String::from_utf8_lossy(&head),
            "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n"
        );
    }
}
