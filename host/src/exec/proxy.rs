//! One call to a program that stays up, over HTTP/1.1 on its Unix socket or loopback port: the
//! request as the client sent it (hop-by-hop fields dropped, `X-Forwarded-For` and
//! `X-Forwarded-Proto` added, the body with its length), and the answer back to the worker as
//! it arrives: one `Response` frame when it is small and already whole, else `Head`, `Piece`s
//! and `End`, so a streamed answer (server-sent events, a model's tokens) reaches the client in
//! pieces. The connection is kept between calls when the program allows it.
//!
//! Blocking IO: this runs in the executor, one call at a time; the worker's deadline kills it
//! (and the program) if the program does not answer.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::Duration;

use plugin_api::{Header, Request, Response};

use crate::exec::frame;
use crate::exec::link::Downstream;
use crate::http::body::BodyReader;
use crate::http::response::text;

/// The longest response head read.
const MAX_HEAD: usize = 64 * 1024;
/// The most response header fields.
const MAX_HEADERS: usize = 128;
/// Bodies up to this size are read whole and sent in one frame.
const WHOLE_UP_TO: u64 = 64 * 1024;
/// The most bytes read from the program at once (one piece at most).
const READ_CHUNK: usize = 64 * 1024;
/// Fields that belong to one hop (RFC 9110 section 7.6.1) or that the proxy sets itself.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "content-length",
    "expect",
];

/// Where a program listens.
#[derive(Clone, Debug)]
pub enum Upstream {
    /// The Unix socket at `FIDDLER_SOCKET`.
    Unix(PathBuf),
    /// The loopback port `PORT`.
    Tcp(SocketAddr),
}

impl fmt::Display for Upstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Upstream::Unix(path) => write!(f, "unix:{}", path.display()),
            Upstream::Tcp(addr) => write!(f, "{addr}"),
        }
    }
}

impl Upstream {
    /// Opens a connection to it.
    pub fn connect(&self) -> io::Result<Wire> {
        match self {
            Upstream::Unix(path) => UnixStream::connect(path).map(Wire::Unix),
            Upstream::Tcp(addr) => {
                let stream = TcpStream::connect_timeout(addr, Duration::from_millis(500))?;
                let _ = stream.set_nodelay(true);
                Ok(Wire::Tcp(stream))
            }
        }
    }
}

/// A connection to a program.
pub enum Wire {
    /// Over its Unix socket.
    Unix(UnixStream),
    /// Over its port.
    Tcp(TcpStream),
}

impl Read for Wire {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Wire::Unix(s) => s.read(buf),
            Wire::Tcp(s) => {
                quick_ack(s);
                s.read(buf)
            }
        }
    }
}

/// Acknowledges what arrives at once instead of after the delayed-ACK timer (Linux resets the
/// mode, so it is set before every read). A program that writes its response head and body
/// in two small writes with Nagle's algorithm on (Python's `http.server` does) would otherwise
/// wait for our ACK of the head before sending the body: 40 ms a call.
fn quick_ack(stream: &TcpStream) {
    let on: libc::c_int = 1;
    // SAFETY: setsockopt on a socket this stream owns, with a pointer to a c_int that lives
    // for the call and its size.
    unsafe {
        libc::setsockopt(
            std::os::fd::AsRawFd::as_raw_fd(stream),
            libc::IPPROTO_TCP,
            libc::TCP_QUICKACK,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

impl Write for Wire {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Wire::Unix(s) => s.write(buf),
            Wire::Tcp(s) => s.write(buf),
        }
    }

    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        match self {
            Wire::Unix(s) => s.write_vectored(bufs),
            Wire::Tcp(s) => s.write_vectored(bufs),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Wire {
    /// Whether a kept connection is still open: nothing to read, not ended (a program that
    /// closed an idle connection reads as ended; one that sent bytes unasked is not trusted).
    fn is_open(&self) -> bool {
        use std::os::fd::AsRawFd;
        let fd = match self {
            Wire::Unix(s) => s.as_raw_fd(),
            Wire::Tcp(s) => s.as_raw_fd(),
        };
        let mut byte = 0u8;
        // SAFETY: a one-byte peek into a local on a socket this wire owns; MSG_DONTWAIT keeps it
        // from blocking whatever the socket's mode.
        let got = unsafe {
            libc::recv(
                fd,
                (&mut byte as *mut u8).cast(),
                1,
                libc::MSG_PEEK | libc::MSG_DONTWAIT,
            )
        };
        got < 0 && io::Error::last_os_error().kind() == io::ErrorKind::WouldBlock
    }

    /// Bounds how long a read may wait (the readiness probe's; calls have none).
    pub fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        match self {
            Wire::Unix(s) => s.set_read_timeout(timeout),
            Wire::Tcp(s) => s.set_read_timeout(timeout),
        }
    }
}

/// A response's status line and fields.
pub struct ResponseHead {
    /// Its status.
    pub status: u16,
    /// Its fields, in order.
    pub headers: Vec<(String, Vec<u8>)>,
    /// It was HTTP/1.0.
    http10: bool,
}

impl ResponseHead {
    fn values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.headers
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
    }

    /// The comma-separated tokens of every `name` field, lower case.
    fn tokens(&self, name: &str) -> Vec<String> {
        lower_tokens(self.values(name))
    }

    /// Whether the program keeps the connection open after this response: a `close` anywhere
    /// in its Connection lines wins (RFC 9112 section 9.6), else HTTP/1.0 needs a keep-alive.
    fn keeps_alive(&self) -> bool {
        let connection = self.tokens("connection");
        let says = |token: &str| connection.iter().any(|t| t == token);
        !says("close") && (!self.http10 || says("keep-alive"))
    }
}

/// The list tokens of these field values (`Connection: close, X-Hop`), lower case.
fn lower_tokens<'a>(values: impl Iterator<Item = &'a [u8]>) -> Vec<String> {
    values
        .flat_map(crate::http::parse::tokens)
        .map(str::to_ascii_lowercase)
        .collect()
}

/// Why no response head could be read.
#[derive(Debug)]
pub enum HeadError {
    /// The connection ended before a byte of it.
    Closed,
    /// Anything else, in a sentence.
    Broken(String),
}

impl fmt::Display for HeadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HeadError::Closed => f.write_str("it closed the connection without answering"),
            HeadError::Broken(why) => f.write_str(why),
        }
    }
}

/// Reads a response head from `wire` into `buf` (which keeps the bytes after it), skipping
/// interim `1xx` responses.
pub fn read_head(wire: &mut Wire, buf: &mut Vec<u8>) -> Result<ResponseHead, HeadError> {
    let mut chunk = [0u8; 8192];
    loop {
        let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut parsed = httparse::Response::new(&mut fields);
        match parsed.parse(buf) {
            Ok(httparse::Status::Complete(used)) => {
                let status = parsed.code.unwrap_or(0);
                let head = ResponseHead {
                    status,
                    http10: parsed.version == Some(0),
                    headers: parsed
                        .headers
                        .iter()
                        .map(|h| (h.name.to_owned(), h.value.to_vec()))
                        .collect(),
                };
                buf.drain(..used);
                match status {
                    101 => {
                        return Err(HeadError::Broken(
                            "it switched protocols (101), which is not forwarded".into(),
                        ))
                    }
                    100..=199 => continue,
                    200..=999 => return Ok(head),
                    _ => {
                        return Err(HeadError::Broken(format!(
                            "it answered with status {status}"
                        )))
                    }
                }
            }
            Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => {}
            Ok(httparse::Status::Partial) => {
                return Err(HeadError::Broken(format!(
                    "its response head is over {MAX_HEAD} bytes"
                )))
            }
            Err(e) => return Err(HeadError::Broken(format!("its response is not HTTP ({e})"))),
        }
        match wire.read(&mut chunk) {
            Ok(0) if buf.is_empty() => return Err(HeadError::Closed),
            Ok(0) => {
                return Err(HeadError::Broken(
                    "it closed the connection inside its response head".into(),
                ))
            }
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if buf.is_empty() && is_reset(&e) => return Err(HeadError::Closed),
            Err(e) => {
                return Err(HeadError::Broken(format!(
                    "reading its response failed: {e}"
                )))
            }
        }
    }
}

fn is_reset(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionReset
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::ConnectionAborted
    )
}

/// How a response's body ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum BodyEnd {
    /// It has none.
    Empty,
    /// After this many bytes.
    Length(u64),
    /// At the last chunk.
    Chunked,
    /// When the connection closes.
    Close,
}

/// RFC 9112 section 6.3, for a response to a request with `method`.
fn body_end(head: &ResponseHead, method: &str) -> Result<BodyEnd, String> {
    if method == "HEAD" || matches!(head.status, 204 | 304) {
        return Ok(BodyEnd::Empty);
    }
    let codings = head.tokens("transfer-encoding");
    if !codings.is_empty() {
        return Ok(match codings.last().map(String::as_str) {
            Some("chunked") => BodyEnd::Chunked,
            _ => BodyEnd::Close,
        });
    }
    let mut length = None;
    for value in head.values("content-length") {
        let n = std::str::from_utf8(value)
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
            .ok_or("its Content-Length is not a number")?;
        if length.is_some_and(|l| l != n) {
            return Err("it sent two different Content-Length values".into());
        }
        length = Some(n);
    }
    Ok(length.map_or(BodyEnd::Close, BodyEnd::Length))
}

/// The request as the program receives it.
pub fn encode_request(request: &Request) -> Vec<u8> {
    let mut out = Vec::with_capacity(256 + request.headers.len() * 48);
    out.extend_from_slice(request.method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(request.path.as_bytes());
    if !request.query.is_empty() {
        out.push(b'?');
        out.extend_from_slice(request.query.as_bytes());
    }
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let named = lower_tokens(
        request
            .headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case("connection"))
            .map(|h| &h.value[..]),
    );
    let mut host = false;
    let mut forwarded_for = Vec::new();
    for header in request.headers.iter() {
        let name = header.name.to_ascii_lowercase();
        if HOP_BY_HOP.contains(&name.as_str())
            || named.contains(&name)
            || name == "x-forwarded-proto"
        {
            continue;
        }
        if name == "x-forwarded-for" {
            forwarded_for.extend_from_slice(&header.value);
            forwarded_for.extend_from_slice(b", ");
            continue;
        }
        host |= name == "host";
        put_field(&mut out, header.name.as_bytes(), &header.value);
    }
    if !host {
        put_field(&mut out, b"Host", b"localhost");
    }
    let client = request
        .client
        .parse::<SocketAddr>()
        .map(|a| a.ip())
        .or_else(|_| request.client.parse::<IpAddr>());
    if let Ok(ip) = client {
        forwarded_for.extend_from_slice(ip.to_string().as_bytes());
        put_field(&mut out, b"X-Forwarded-For", &forwarded_for);
    }
    let proto: &[u8] = if request.tls { b"https" } else { b"http" };
    put_field(&mut out, b"X-Forwarded-Proto", proto);
    if !request.body.is_empty() || matches!(request.method.as_str(), "POST" | "PUT" | "PATCH") {
        put_field(
            &mut out,
            b"Content-Length",
            request.body.len().to_string().as_bytes(),
        );
    }
    out.extend_from_slice(b"\r\n");
    out
}

fn put_field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// The client-facing response for a head: its status and its end-to-end fields.
fn response_for(head: &ResponseHead) -> Response {
    let named = head.tokens("connection");
    let mut response = Response::status(head.status);
    for (name, value) in &head.headers {
        let lower = name.to_ascii_lowercase();
        if HOP_BY_HOP.contains(&lower.as_str()) || named.contains(&lower) {
            continue;
        }
        response.headers.push(Header {
            name: name.as_str().into(),
            value: value.clone().into(),
        });
    }
    response
}

/// Calls a program, keeping its connection between calls.
pub struct Proxy {
    upstream: Upstream,
    kept: Option<Wire>,
    route: String,
}

impl Proxy {
    /// A proxy to `upstream` for `route` (for messages).
    pub fn new(upstream: Upstream, route: &str) -> Proxy {
        Proxy {
            upstream,
            kept: None,
            route: route.to_owned(),
        }
    }

    /// Forwards `request` and writes the answer's frames to `worker` (a streamed answer stops
    /// when the worker cancels it: its client left; the program's connection is dropped). `Err` only when the
    /// worker's socket failed (the executor then exits); a program that fails is a `502` (or a
    /// stream cut off), with a line on stderr saying why. Before a failure is answered,
    /// `if_gone` is called: when the program itself has exited, it ends the executor, so the
    /// worker counts one death (and puts the calls written ahead back in the queue) instead
    /// of a 502 for every call the dead program would be given.
    pub fn call(
        &mut self,
        request: &Request,
        worker: &mut impl Downstream,
        if_gone: &dyn Fn(),
    ) -> io::Result<()> {
        let route = self.route.clone();
        let failed = |worker: &mut dyn Write, why: &str| {
            if_gone();
            eprintln!("program /{route}: {why}; answered 502");
            send_whole(
                worker,
                text(502, &format!("program {route} failed: {why}\n")),
            )
        };
        // The head and the body go apart: a big body is the request's own mapping, never
        // copied here.
        let head_bytes = encode_request(request);
        let idempotent = matches!(
            request.method.as_str(),
            "GET" | "HEAD" | "OPTIONS" | "PUT" | "DELETE"
        );
        let (mut wire, mut buf, head) = match self.exchange(&head_bytes, &request.body, idempotent)
        {
            Ok(exchanged) => exchanged,
            Err(why) => return failed(worker, &why),
        };
        let end = match body_end(&head, &request.method) {
            Ok(end) => end,
            Err(why) => return failed(worker, &why),
        };
        let keep = head.keeps_alive() && end != BodyEnd::Close;
        let response = response_for(&head);
        match end {
            BodyEnd::Empty if request.method == "HEAD" => {
                // The length a GET would have, as the program said it (RFC 9110 section 8.6);
                // the connection is not kept: a program that wrongly sends a body after a
                // HEAD answer would otherwise feed it to the next call.
                let length = head
                    .values("content-length")
                    .next()
                    .and_then(|v| std::str::from_utf8(v).ok()?.trim().parse().ok());
                match length {
                    Some(n) => {
                        frame::send(worker, &frame::stream_head(&response, Some(n)), &[])?;
                        frame::send(worker, &frame::end(true), &[])
                    }
                    None => send_whole(worker, response),
                }
            }
            BodyEnd::Empty => {
                self.keep(wire, keep && buf.is_empty());
                send_whole(worker, response)
            }
            BodyEnd::Length(n) if n <= WHOLE_UP_TO => {
                let n = n as usize;
                let mut chunk = [0u8; 8192];
                while buf.len() < n {
                    match wire.read(&mut chunk) {
                        Ok(0) => {
                            return failed(worker, "its answer ended before its Content-Length")
                        }
                        Ok(got) => buf.extend_from_slice(&chunk[..got]),
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => {
                            return failed(worker, &format!("reading its answer failed: {e}"))
                        }
                    }
                }
                self.keep(wire, keep && buf.len() == n);
                buf.truncate(n);
                send_whole(worker, response.with_body(buf))
            }
            BodyEnd::Chunked => {
                let mut decoder = BodyReader::chunked(usize::MAX);
                let mut body = Vec::new();
                let used = match decoder.feed(&buf, &mut body) {
                    Ok(used) => used,
                    Err(_) => return failed(worker, "its chunked answer is malformed"),
                };
                if decoder.is_done() {
                    self.keep(wire, keep && used == buf.len());
                    return send_whole(worker, response.with_body(body));
                }
                frame::send(worker, &frame::stream_head(&response, None), &[])?;
                send_piece(worker, &body)?;
                let (complete, clean) = self.stream_chunked(&mut wire, &mut decoder, worker)?;
                self.keep(wire, keep && complete && clean);
                frame::send(worker, &frame::end(complete), &[])
            }
            BodyEnd::Length(n) => {
                frame::send(worker, &frame::stream_head(&response, Some(n)), &[])?;
                let first = buf.len().min(n as usize);
                send_piece(worker, &buf[..first])?;
                let complete = self.stream_raw(&mut wire, Some(n - first as u64), worker)?;
                self.keep(wire, keep && complete && buf.len() == first);
                frame::send(worker, &frame::end(complete), &[])
            }
            BodyEnd::Close => {
                frame::send(worker, &frame::stream_head(&response, None), &[])?;
                send_piece(worker, &buf)?;
                let complete = self.stream_raw(&mut wire, None, worker)?;
                frame::send(worker, &frame::end(complete), &[])
            }
        }
    }

    /// Sends the request and reads the answer's head, on the kept connection or a new one. A
    /// kept connection the program has closed since is seen before it is used (it reads as
    /// ended) and replaced. One that closes after taking the request without a byte of answer
    /// is retried on a new connection only for an idempotent method (RFC 9110 section 9.2.2):
    /// the program may have acted on a `POST` before it closed.
    fn exchange(
        &mut self,
        head: &[u8],
        body: &[u8],
        idempotent: bool,
    ) -> Result<(Wire, Vec<u8>, ResponseHead), String> {
        loop {
            let kept = self.kept.take().filter(Wire::is_open);
            let (mut wire, reused) = match kept {
                Some(wire) => (wire, true),
                None => match self.upstream.connect() {
                    Ok(wire) => (wire, false),
                    Err(e) => return Err(format!("cannot connect to {}: {e}", self.upstream)),
                },
            };
            // One `writev` for both where the socket takes them (`frame::send`'s loop).
            if let Err(e) = frame::send(&mut wire, head, body) {
                if reused {
                    continue;
                }
                return Err(format!("sending it the request failed: {e}"));
            }
            let mut buf = Vec::new();
            match read_head(&mut wire, &mut buf) {
                Ok(head) => return Ok((wire, buf, head)),
                Err(HeadError::Closed) if reused && idempotent => continue,
                Err(e) => return Err(e.to_string()),
            }
        }
    }

    fn keep(&mut self, wire: Wire, keep: bool) {
        self.kept = keep.then_some(wire);
    }

    /// Passes body bytes on as they come, up to `left` (or the close); whether it ended whole.
    fn stream_raw(
        &self,
        wire: &mut Wire,
        mut left: Option<u64>,
        worker: &mut impl Downstream,
    ) -> io::Result<bool> {
        let mut chunk = vec![0u8; READ_CHUNK];
        loop {
            if left == Some(0) {
                return Ok(true);
            }
            let room = left.map_or(READ_CHUNK, |l| l.min(READ_CHUNK as u64) as usize);
            match wire.read(&mut chunk[..room]) {
                Ok(0) => return Ok(left.is_none()),
                // Its client left: stop, and drop the connection (the program sees it close).
                Ok(_) if worker.cancelled() => return Ok(false),
                Ok(n) => {
                    send_piece(worker, &chunk[..n])?;
                    left = left.map(|l| l - n as u64);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    eprintln!("program /{}: reading its answer failed: {e}", self.route);
                    return Ok(false);
                }
            }
        }
    }

    /// Decodes a chunked body as it comes, passing each decoded piece on; whether it ended
    /// whole, and whether nothing came after its end (else the connection is not reused).
    fn stream_chunked(
        &self,
        wire: &mut Wire,
        decoder: &mut BodyReader,
        worker: &mut impl Downstream,
    ) -> io::Result<(bool, bool)> {
        let mut chunk = vec![0u8; READ_CHUNK];
        let mut body = Vec::with_capacity(READ_CHUNK);
        while !decoder.is_done() {
            let n = match wire.read(&mut chunk) {
                Ok(0) => {
                    eprintln!("program /{}: its chunked answer ended early", self.route);
                    return Ok((false, false));
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    eprintln!("program /{}: reading its answer failed: {e}", self.route);
                    return Ok((false, false));
                }
            };
            body.clear();
            let used = match decoder.feed(&chunk[..n], &mut body) {
                Ok(used) => used,
                Err(_) => {
                    eprintln!("program /{}: its chunked answer is malformed", self.route);
                    return Ok((false, false));
                }
            };
            if worker.cancelled() {
                return Ok((false, false));
            }
            send_piece(worker, &body)?;
            if decoder.is_done() {
                return Ok((true, used == n));
            }
        }
        Ok((true, true))
    }
}

/// Sends a whole answer as one `Response` frame.
fn send_whole(worker: &mut (impl Write + ?Sized), response: Response) -> io::Result<()> {
    frame::send(worker, &frame::response(&response), &response.body)
}

/// Sends `bytes` as one `Piece` (nothing when empty).
fn send_piece(worker: &mut impl Write, bytes: &[u8]) -> io::Result<()> {
    if bytes.is_empty() {
        return Ok(());
    }
    frame::send(worker, &frame::piece(bytes.len()), bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_lose_hop_by_hop_fields_and_gain_forwarding() {
        let request = Request::new("POST", "/v1/x?stream=1")
            .with_header("Host", "api.example")
            .with_header("Connection", "keep-alive, X-Secret")
            .with_header("X-Secret", "hop")
            .with_header("Transfer-Encoding", "chunked")
            .with_header("X-Forwarded-For", "10.0.0.1")
            .with_header("X-Forwarded-Proto", "gopher")
            .with_header("Accept", "text/event-stream")
            .with_body("hi");
        let mut request = request;
        request.path = "/v1/x".into();
        request.query = "stream=1".into();
        request.client = "127.0.0.1:5555".into();
        let text = String::from_utf8(encode_request(&request)).expect("utf-8");
        assert_eq!(
            text,
            "POST /v1/x?stream=1 HTTP/1.1\r\nHost: api.example\r\nAccept: text/event-stream\r\n\
             X-Forwarded-For: 10.0.0.1, 127.0.0.1\r\nX-Forwarded-Proto: http\r\n\
             Content-Length: 2\r\n\r\n"
        );
    }

    fn head(status: u16, fields: &[(&str, &str)]) -> ResponseHead {
        ResponseHead {
            status,
            http10: false,
            headers: fields
                .iter()
                .map(|(n, v)| (n.to_string(), v.as_bytes().to_vec()))
                .collect(),
        }
    }

    #[test]
    fn body_ends_follow_rfc_9112() {
        let cases = [
            (
                head(200, &[("Content-Length", "5")]),
                "GET",
                Ok(BodyEnd::Length(5)),
            ),
            (
                head(200, &[("Transfer-Encoding", "gzip, chunked")]),
                "GET",
                Ok(BodyEnd::Chunked),
            ),
            (
                head(200, &[("Transfer-Encoding", "gzip")]),
                "GET",
                Ok(BodyEnd::Close),
            ),
            (head(200, &[]), "GET", Ok(BodyEnd::Close)),
            (
                head(200, &[("Content-Length", "5")]),
                "HEAD",
                Ok(BodyEnd::Empty),
            ),
            (
                head(304, &[("Content-Length", "5")]),
                "GET",
                Ok(BodyEnd::Empty),
            ),
            (
                head(200, &[("Content-Length", "5"), ("Content-Length", "6")]),
                "GET",
                Err(()),
            ),
            (head(200, &[("Content-Length", "x")]), "GET", Err(())),
        ];
        for (head, method, want) in cases {
            assert_eq!(body_end(&head, method).map_err(|_| ()), want);
        }
        let answer = response_for(&head(
            200,
            &[
                ("Connection", "close, X-Hop"),
                ("X-Hop", "1"),
                ("Content-Type", "text/plain"),
                ("Content-Length", "1"),
            ],
        ));
        assert_eq!(answer.headers.len(), 1);
        assert_eq!(answer.header("content-type"), Some("text/plain"));
        assert!(!head(200, &[("Connection", "close")]).keeps_alive());
    }

    #[test]
    fn a_close_anywhere_in_a_programs_connection_lines_ends_it() {
        let http10 = |fields: &[(&str, &str)]| ResponseHead {
            http10: true,
            ..head(200, fields)
        };
        let table = [
            (head(200, &[]), true),
            (http10(&[]), false),
            (http10(&[("Connection", "keep-alive")]), true),
            (http10(&[("Connection", "close, keep-alive")]), false),
            (
                http10(&[("Connection", "close"), ("Connection", "keep-alive")]),
                false,
            ),
            (head(200, &[("Connection", "keep-alive, Close")]), false),
        ];
        for (answer, keeps) in table {
            let what = (answer.http10, &answer.headers);
            assert_eq!(answer.keeps_alive(), keeps, "{what:?}");
        }
    }
}
