//! The frames the worker and an executor exchange over their socketpair: a small, versioned,
//! hand-written binary format, and a sans-IO reader for it (bytes in, frames out).
//!
//! Every frame is a fixed 9-byte head, then `meta_len` bytes of metadata, then `body_len` bytes
//! of body, all integers little-endian:
//!
//! ```text
//! kind: u8 | meta_len: u32 | body_len: u32 | meta | body
//! ```
//!
//! In the metadata a `str` is `u32 length + UTF-8 bytes`, `bytes` is `u32 length + bytes`, an
//! optional number is `u8 present + u64`. The kinds and their metadata:
//!
//! | kind | from | meta | body |
//! | --- | --- | --- | --- |
//! | 1 `Ready` | executor | `u16 PROTOCOL`, str crate, str version, str description, opt deadline_ms, opt max_body, opt max_lanes, opt max_batch, str sandbox | empty |
//! | 2 `Refused` | executor | str reason (one sentence), str detail (the loader's whole report) | empty |
//! | 3 `Request` | worker | str method, str path, str query, str client, u8 tls, u64 deadline_ms, u32 n, n x (str name, bytes value) | request body |
//! | 4 `Response` | executor | u16 status, u32 n, n x (str name, bytes value) | response body |
//! | 5 `Panicked` | executor | str message | empty |
//! | 6 `Head` | executor | u16 status, u32 n, n x (str name, bytes value), opt length | empty |
//! | 7 `Piece` | executor | empty | the next bytes of the body (at most [`MAX_PIECE`]) |
//! | 8 `End` | executor | u8 complete | empty |
//! | 9 `Batch` | worker | u32 count | empty |
//! | 10 `Cancel` | worker | u64 call | empty |
//!
//! An executor speaks first (`Ready` or `Refused`), then answers each `Request` in order with
//! one `Response` or `Panicked`, or with a streamed answer: one `Head`, any number of `Piece`s,
//! and one `End` (`complete` 0 when the body broke off: the client's connection is cut, since
//! nothing else can tell it). A `Batch` says that the next `count` `Request`s are one batch
//! (for a handler whose `max_batch` allows it): the executor runs them in one call and answers
//! each, in order, with its own `Response` or `Panicked`. A `Cancel` says the client of call
//! number `call` (the requests' count, from 1) left while it streamed: the executor stops it
//! (its next piece is refused) and ends it with `End(false)`. `PROTOCOL` changes whenever the layout does; both ends are
//! the same binary, so a mismatch means a stale executor binary and is refused.
//! Bounds: metadata at most [`MAX_META`], a body at most [`MAX_BODY`]; more is a
//! [`FrameError::TooLarge`].
//!
//! A `Request` or `Response` whose body is in a sealed memory file (`crate::bodies`) has the
//! [`BY_FILE`] bit set in its kind byte: its `body_len` is the file's length, no body bytes
//! follow, and the file travels beside the frame (`exec::fds`), sent with the write that
//! starts the frame. The reader takes the files that came, in order, one per such frame
//! ([`FrameReader::take_files`]), checks each ([`crate::bodies::map_received`]) and gives the
//! body as a `Vec` over its mapping.

use std::collections::VecDeque;
use std::fmt;
use std::io::{self, IoSlice, Write};
use std::os::fd::OwnedFd;

use plugin_api::{Header, RString, RVec, Request, Response};

use crate::plugins::version::HandlerMeta;

/// The version of this layout, sent in `Ready`.
pub const PROTOCOL: u16 = 4;
/// The largest metadata block (headers and names).
pub const MAX_META: usize = 1 << 20;
/// The largest body a frame carries.
pub const MAX_BODY: usize = 1 << 30;
/// The largest piece of a streamed body.
pub const MAX_PIECE: usize = 1 << 20;
/// Bytes in a frame head.
const HEAD: usize = 9;
/// The most metadata room a reader keeps between frames.
const KEPT_META: usize = 4096;
/// The kind byte's bit saying the body is in a file sent beside the frame.
pub const BY_FILE: u8 = 0x80;
/// Files received and not yet taken by their frames, from the worker (one per request frame;
/// a body that goes as a file is never written ahead, so one write carries at most one). A
/// peer sending more is broken.
const MAX_FILES_WAITING: usize = 64;
/// The same from an executor, which sends each big answer's file with that answer's own
/// write: one read takes at most one write's file, and the frame it belongs to is complete by
/// the time the next one's file can come, so two is the most that can wait.
pub const MAX_ANSWER_FILES_WAITING: usize = 2;
/// The most body room a reader prepares ahead of the bytes that arrived: a frame that declares
/// a large body commits memory only as the body really comes, and running out of memory for
/// it is an error value, not an abort.
const DIRECT_CHUNK: usize = 1 << 20;

/// What kind of frame it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// The executor loaded its handler and waits for requests.
    Ready = 1,
    /// The executor could not load its handler (and exits).
    Refused = 2,
    /// A request to run.
    Request = 3,
    /// The handler's answer.
    Response = 4,
    /// The handler panicked (caught); the executor goes on.
    Panicked = 5,
    /// The status and headers of a streamed answer.
    Head = 6,
    /// The next bytes of a streamed answer's body.
    Piece = 7,
    /// The end of a streamed answer.
    End = 8,
    /// The next requests are one batch.
    Batch = 9,
    /// The client of a streaming call left.
    Cancel = 10,
}

impl Kind {
    fn from_byte(byte: u8) -> Option<Kind> {
        Some(match byte {
            1 => Kind::Ready,
            2 => Kind::Refused,
            3 => Kind::Request,
            4 => Kind::Response,
            5 => Kind::Panicked,
            6 => Kind::Head,
            7 => Kind::Piece,
            8 => Kind::End,
            9 => Kind::Batch,
            10 => Kind::Cancel,
            _ => return None,
        })
    }
}

/// Why bytes are not a valid frame. Either end treats it as a broken peer.
#[derive(Debug, PartialEq, Eq)]
pub enum FrameError {
    /// The kind byte names no kind.
    UnknownKind(u8),
    /// A length is past its bound.
    TooLarge,
    /// The metadata ends early, has bytes left over, or holds text that is not UTF-8.
    Malformed(&'static str),
    /// `Ready` named another protocol version.
    Protocol(u16),
    /// A frame arrived that this end does not expect now.
    Unexpected(Kind),
    /// A body's file is missing, refused (not sealed, too short), or comes without a frame.
    BadFile(&'static str),
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::UnknownKind(k) => write!(f, "unknown frame kind {k}"),
            FrameError::TooLarge => f.write_str("a frame is larger than its bound"),
            FrameError::Malformed(what) => write!(f, "malformed frame: {what}"),
            FrameError::Protocol(v) => {
                write!(f, "executor speaks protocol {v}, this worker {PROTOCOL}")
            }
            FrameError::Unexpected(kind) => write!(f, "unexpected {kind:?} frame"),
            FrameError::BadFile(why) => write!(f, "bad body file: {why}"),
        }
    }
}

impl std::error::Error for FrameError {}

/// A decoded frame.
#[derive(Debug)]
pub enum Message {
    /// The handler is loaded.
    Ready(HandlerMeta),
    /// The handler could not be loaded.
    Refused {
        /// One or two plain sentences.
        reason: String,
        /// The loader's full report.
        detail: String,
    },
    /// A request, with the milliseconds the call may take.
    Request(Request, u64),
    /// An answer.
    Response(Response),
    /// The handler panicked; the message says why.
    Panicked(String),
    /// A streamed answer starts: its status and headers (the body is empty), and its length
    /// when known.
    Head(Response, Option<u64>),
    /// The next bytes of the streamed answer.
    Piece(Vec<u8>),
    /// The streamed answer ends; `false` when it broke off.
    End(bool),
    /// The next this many requests are one batch.
    Batch(u32),
    /// The client of this call (numbered from 1 in request order) left.
    Cancel(u64),
}

impl Message {
    /// The frame kind's name, for log lines.
    pub fn name(&self) -> &'static str {
        match self {
            Message::Ready(_) => "Ready",
            Message::Refused { .. } => "Refused",
            Message::Request(..) => "Request",
            Message::Response(_) => "Response",
            Message::Panicked(_) => "Panicked",
            Message::Head(..) => "Head",
            Message::Piece(_) => "Piece",
            Message::End(_) => "End",
            Message::Batch(_) => "Batch",
            Message::Cancel(_) => "Cancel",
        }
    }

    /// Whether it ends what an executor owes for one call (or for its start).
    pub fn settles(&self) -> bool {
        !matches!(
            self,
            Message::Head(..)
                | Message::Piece(_)
                | Message::Request(..)
                | Message::Batch(_)
                | Message::Cancel(_)
        )
    }
}

/// Encodes a frame's head and metadata; the body (if any) is written after it as it is, so a
/// large body is never copied into the frame.
fn encode(kind: Kind, meta: &[u8], body_len: usize) -> Vec<u8> {
    let mut out = start(meta.len());
    out.extend_from_slice(meta);
    finish(out, kind, body_len)
}

/// A frame built in one buffer (one allocation): room for the head, then the metadata is
/// appended, then [`finish`] writes the head.
fn start(meta_hint: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEAD + meta_hint);
    out.resize(HEAD, 0);
    out
}

/// Writes the head of a frame [`start`] began, now that its metadata is in.
fn finish(mut out: Vec<u8>, kind: Kind, body_len: usize) -> Vec<u8> {
    let meta_len = out.len() - HEAD;
    out[0] = kind as u8;
    out[1..5].copy_from_slice(&len32(meta_len).to_le_bytes());
    out[5..9].copy_from_slice(&len32(body_len).to_le_bytes());
    out
}

/// A length as `u32`; callers keep lengths under the bounds, so this saturates only on a bug
/// (and the peer then refuses the frame).
fn len32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&len32(bytes.len()).to_le_bytes());
    out.extend_from_slice(bytes);
}

fn put_option(out: &mut Vec<u8>, value: Option<u64>) {
    out.push(u8::from(value.is_some()));
    out.extend_from_slice(&value.unwrap_or(0).to_le_bytes());
}

fn put_headers(out: &mut Vec<u8>, headers: &[Header]) {
    out.extend_from_slice(&len32(headers.len()).to_le_bytes());
    for header in headers {
        put_bytes(out, header.name.as_bytes());
        put_bytes(out, &header.value);
    }
}

/// Marks an encoded `Request` or `Response` head as carrying its body in a file (sent beside
/// it); no body bytes follow it then.
pub fn mark_by_file(head: &mut [u8]) {
    if let Some(kind) = head.first_mut() {
        *kind |= BY_FILE;
    }
}

/// The head and metadata of a `Ready` frame.
pub fn ready(meta: &HandlerMeta) -> Vec<u8> {
    let mut m = Vec::with_capacity(128);
    m.extend_from_slice(&PROTOCOL.to_le_bytes());
    put_bytes(&mut m, meta.crate_name.as_bytes());
    put_bytes(&mut m, meta.version.as_bytes());
    put_bytes(&mut m, meta.description.as_bytes());
    put_option(&mut m, meta.deadline_ms);
    put_option(&mut m, meta.max_body);
    put_option(&mut m, meta.max_lanes);
    put_option(&mut m, Some(meta.max_batch));
    put_bytes(&mut m, meta.sandbox.as_bytes());
    encode(Kind::Ready, &m, 0)
}

/// A `Cancel` frame for call number `call`.
pub fn cancel(call: u64) -> Vec<u8> {
    encode(Kind::Cancel, &call.to_le_bytes(), 0)
}

/// The head of a `Batch` frame: the next `count` requests are one batch.
pub fn batch(count: usize) -> Vec<u8> {
    encode(Kind::Batch, &len32(count).to_le_bytes(), 0)
}

/// The head and metadata of a `Refused` frame.
pub fn refused(reason: &str, detail: &str) -> Vec<u8> {
    let mut m = Vec::with_capacity(reason.len() + detail.len() + 8);
    put_bytes(&mut m, reason.as_bytes());
    put_bytes(&mut m, &detail.as_bytes()[..detail.len().min(MAX_META / 2)]);
    encode(Kind::Refused, &m, 0)
}

/// The head and metadata of a `Panicked` frame.
pub fn panicked(message: &str) -> Vec<u8> {
    let mut m = Vec::with_capacity(message.len() + 4);
    put_bytes(
        &mut m,
        &message.as_bytes()[..message.len().min(MAX_META / 2)],
    );
    encode(Kind::Panicked, &m, 0)
}

/// The head and metadata of a `Request` frame; `request.body` follows it.
pub fn request(request: &Request, deadline_ms: u64) -> Vec<u8> {
    let mut m = start(256);
    put_bytes(&mut m, request.method.as_bytes());
    put_bytes(&mut m, request.path.as_bytes());
    put_bytes(&mut m, request.query.as_bytes());
    put_bytes(&mut m, request.client.as_bytes());
    m.push(u8::from(request.tls));
    m.extend_from_slice(&deadline_ms.to_le_bytes());
    put_headers(&mut m, &request.headers);
    finish(m, Kind::Request, request.body.len())
}

/// The head and metadata of a `Response` frame; `response.body` follows it.
pub fn response(response: &Response) -> Vec<u8> {
    let mut m = start(128);
    m.extend_from_slice(&response.status.to_le_bytes());
    put_headers(&mut m, &response.headers);
    finish(m, Kind::Response, response.body.len())
}

/// The head and metadata of a `Head` frame (a streamed answer's status and headers; its body
/// is ignored).
pub fn stream_head(response: &Response, length: Option<u64>) -> Vec<u8> {
    let mut m = Vec::with_capacity(128);
    m.extend_from_slice(&response.status.to_le_bytes());
    put_headers(&mut m, &response.headers);
    put_option(&mut m, length);
    encode(Kind::Head, &m, 0)
}

/// The head of a `Piece` frame of `len` bytes (at most [`MAX_PIECE`]); the bytes follow it.
pub fn piece(len: usize) -> Vec<u8> {
    encode(Kind::Piece, &[], len.min(MAX_PIECE))
}

/// An `End` frame.
pub fn end(complete: bool) -> Vec<u8> {
    encode(Kind::End, &[u8::from(complete)], 0)
}

/// Writes a frame's head and its body to a blocking writer (the executor's side).
pub fn send(socket: &mut (impl Write + ?Sized), head: &[u8], body: &[u8]) -> io::Result<()> {
    let (mut head, mut body) = (head, body);
    while !head.is_empty() || !body.is_empty() {
        match socket.write_vectored(&[IoSlice::new(head), IoSlice::new(body)]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                let from_head = n.min(head.len());
                head = &head[from_head..];
                body = &body[n - from_head..];
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Reads metadata fields in order.
struct Fields<'a> {
    rest: &'a [u8],
}

impl<'a> Fields<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], FrameError> {
        if self.rest.len() < n {
            return Err(FrameError::Malformed("the metadata ends early"));
        }
        let (taken, rest) = self.rest.split_at(n);
        self.rest = rest;
        Ok(taken)
    }

    fn u8(&mut self) -> Result<u8, FrameError> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, FrameError> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> Result<u32, FrameError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self) -> Result<u64, FrameError> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }

    fn bytes(&mut self) -> Result<&'a [u8], FrameError> {
        let n = self.u32()? as usize;
        self.take(n)
    }

    fn text(&mut self) -> Result<&'a str, FrameError> {
        std::str::from_utf8(self.bytes()?).map_err(|_| FrameError::Malformed("text is not UTF-8"))
    }

    fn option(&mut self) -> Result<Option<u64>, FrameError> {
        let present = self.u8()?;
        let value = self.u64()?;
        Ok((present != 0).then_some(value))
    }

    fn headers(&mut self) -> Result<RVec<Header>, FrameError> {
        let n = self.u32()? as usize;
        // Each header takes at least 8 bytes, so a count past that is a lie.
        if n > self.rest.len() / 8 {
            return Err(FrameError::Malformed("more headers than bytes"));
        }
        let mut headers = RVec::with_capacity(n);
        for _ in 0..n {
            let name = RString::from(self.text()?);
            let value = RVec::from(self.bytes()?.to_vec());
            headers.push(Header { name, value });
        }
        Ok(headers)
    }

    fn end(self) -> Result<(), FrameError> {
        match self.rest.is_empty() {
            true => Ok(()),
            false => Err(FrameError::Malformed("bytes after the last field")),
        }
    }
}

/// Decodes a complete frame.
fn decode(kind: Kind, meta: &[u8], body: Vec<u8>) -> Result<Message, FrameError> {
    let mut f = Fields { rest: meta };
    let message = match kind {
        Kind::Ready => {
            let version = f.u16()?;
            if version != PROTOCOL {
                return Err(FrameError::Protocol(version));
            }
            Message::Ready(HandlerMeta {
                crate_name: f.text()?.to_owned(),
                version: f.text()?.to_owned(),
                description: f.text()?.to_owned(),
                deadline_ms: f.option()?,
                max_body: f.option()?,
                max_lanes: f.option()?,
                max_batch: f.option()?.unwrap_or(1).max(1),
                sandbox: f.text()?.to_owned(),
            })
        }
        Kind::Refused => Message::Refused {
            reason: f.text()?.to_owned(),
            detail: String::from_utf8_lossy(f.bytes()?).into_owned(),
        },
        Kind::Panicked => Message::Panicked(String::from_utf8_lossy(f.bytes()?).into_owned()),
        Kind::Request => {
            let method = f.text()?.into();
            let path = f.text()?.into();
            let query = f.text()?.into();
            let client = f.text()?.into();
            let tls = f.u8()? != 0;
            let deadline_ms = f.u64()?;
            let headers = f.headers()?;
            let request = Request {
                method,
                path,
                query,
                headers,
                body: body.into(),
                client,
                tls,
            };
            f.end()?;
            return Ok(Message::Request(request, deadline_ms));
        }
        Kind::Response => {
            let status = f.u16()?;
            let headers = f.headers()?;
            let mut response = Response::status(status).with_body(body);
            response.headers = headers;
            f.end()?;
            return Ok(Message::Response(response));
        }
        Kind::Head => {
            let status = f.u16()?;
            let mut response = Response::status(status);
            response.headers = f.headers()?;
            Message::Head(response, f.option()?)
        }
        Kind::Piece => Message::Piece(body),
        Kind::End => Message::End(f.u8()? != 0),
        Kind::Batch => Message::Batch(f.u32()?),
        Kind::Cancel => Message::Cancel(f.u64()?),
    };
    f.end()?;
    Ok(message)
}

/// Where a [`FrameReader`] is in the current frame.
enum Stage {
    /// Reading the 9-byte head (`got` bytes so far).
    ExpectHead { got: usize },
    /// Reading the metadata, then the body.
    ExpectRest {
        kind: Kind,
        meta_len: usize,
        /// Body bytes in the stream (0 when the body is a file).
        body_len: usize,
        /// The length of the body's file, when it comes as one.
        file_len: Option<usize>,
    },
}

/// Turns a byte stream into frames without doing IO: feed it what a socket gave, take out
/// whole frames. A large body can be read straight into its final buffer ([`direct`]).
///
/// Invariant: `meta.len() <= MAX_META`; in `ExpectRest`, `meta.len() <= meta_len` and
/// `body_got <= body.len() <= body_len <= MAX_BODY` (bytes past `body_got` are room prepared
/// by `direct`, not yet filled).
///
/// [`direct`]: FrameReader::direct
pub struct FrameReader {
    head: [u8; HEAD],
    stage: Stage,
    meta: Vec<u8>,
    body: Vec<u8>,
    /// Bytes of `body` filled so far (the body buffer is sized up front for direct reads).
    body_got: usize,
    /// Body files received, for the frames that say they have one (at most `files_cap`).
    files: VecDeque<OwnedFd>,
    /// How many files may wait ([`MAX_FILES_WAITING`], or less for a peer that never needs
    /// as many: each one a hostile executor parks holds a descriptor of the worker's).
    files_cap: usize,
}

impl Default for FrameReader {
    fn default() -> Self {
        FrameReader {
            head: [0; HEAD],
            stage: Stage::ExpectHead { got: 0 },
            meta: Vec::new(),
            body: Vec::new(),
            body_got: 0,
            files: VecDeque::new(),
            files_cap: MAX_FILES_WAITING,
        }
    }
}

impl FrameReader {
    /// A reader that lets at most `cap` received files wait for their frames.
    pub fn with_files_cap(cap: usize) -> FrameReader {
        FrameReader {
            files_cap: cap,
            ..FrameReader::default()
        }
    }

    /// Whether no frame is partly read (a clean place for the stream to end).
    pub fn is_between_frames(&self) -> bool {
        matches!(self.stage, Stage::ExpectHead { got: 0 })
    }

    /// Keeps the files that came with the bytes about to be fed, for the frames that say they
    /// have one. More than can be waiting is an error: the peer is broken.
    pub fn take_files(&mut self, files: &mut Vec<OwnedFd>) -> Result<(), FrameError> {
        if self.files.len() + files.len() > self.files_cap {
            files.clear();
            return Err(FrameError::BadFile("more files than frames"));
        }
        self.files.extend(files.drain(..));
        Ok(())
    }

    /// Takes bytes from `input`; returns how many it used and the frame they completed, if
    /// any. Call again with the rest while bytes remain.
    pub fn feed(&mut self, input: &[u8]) -> Result<(usize, Option<Message>), FrameError> {
        let mut used = 0;
        loop {
            match self.stage {
                Stage::ExpectHead { got } => {
                    let n = (HEAD - got).min(input.len() - used);
                    self.head[got..got + n].copy_from_slice(&input[used..used + n]);
                    used += n;
                    if got + n < HEAD {
                        self.stage = Stage::ExpectHead { got: got + n };
                        return Ok((used, None));
                    }
                    self.start_rest()?;
                }
                Stage::ExpectRest {
                    kind,
                    meta_len,
                    body_len,
                    ..
                } => {
                    let want_meta = meta_len - self.meta.len();
                    let n = want_meta.min(input.len() - used);
                    self.meta.extend_from_slice(&input[used..used + n]);
                    used += n;
                    let n = (body_len - self.body_got).min(input.len() - used);
                    self.put_body(&input[used..used + n])?;
                    used += n;
                    if self.meta.len() == meta_len && self.body_got == body_len {
                        return Ok((used, Some(self.finish(kind)?)));
                    }
                    return Ok((used, None));
                }
            }
        }
    }

    /// Feeds all of `input`, appending every frame it completes to `out`.
    pub fn feed_all(&mut self, mut input: &[u8], out: &mut Vec<Message>) -> Result<(), FrameError> {
        while !input.is_empty() {
            let (used, message) = self.feed(input)?;
            input = &input[used..];
            out.extend(message);
        }
        Ok(())
    }

    /// Room for the next body bytes (at most [`DIRECT_CHUNK`]), when the metadata is complete
    /// and body bytes are still missing: read into it directly, then call
    /// [`filled`](FrameReader::filled). `Err` when memory for it cannot be had.
    pub fn direct(&mut self) -> Result<Option<&mut [u8]>, FrameError> {
        let Stage::ExpectRest {
            meta_len, body_len, ..
        } = self.stage
        else {
            return Ok(None);
        };
        if self.meta.len() < meta_len || self.body_got == body_len {
            return Ok(None);
        }
        if self.body.len() == self.body_got {
            let room = (body_len - self.body_got).min(DIRECT_CHUNK);
            // Within the capacity reserved at the head: no reallocation, no abort.
            self.body.resize(self.body_got + room, 0);
        }
        Ok(Some(&mut self.body[self.body_got..]))
    }

    /// Appends body bytes: into room `direct` prepared, then past it.
    fn put_body(&mut self, bytes: &[u8]) -> Result<(), FrameError> {
        let prepared = (self.body.len() - self.body_got).min(bytes.len());
        self.body[self.body_got..self.body_got + prepared].copy_from_slice(&bytes[..prepared]);
        let rest = &bytes[prepared..];
        self.body
            .try_reserve(rest.len())
            .map_err(|_| FrameError::TooLarge)?;
        self.body.extend_from_slice(rest);
        self.body_got += bytes.len();
        Ok(())
    }

    /// Counts `n` bytes read into [`direct`](FrameReader::direct)'s slice; returns the frame
    /// if that completed it.
    pub fn filled(&mut self, n: usize) -> Result<Option<Message>, FrameError> {
        let Stage::ExpectRest { kind, body_len, .. } = self.stage else {
            return Ok(None);
        };
        self.body_got = (self.body_got + n).min(self.body.len());
        if self.body_got == body_len {
            return Ok(Some(self.finish(kind)?));
        }
        Ok(None)
    }

    fn start_rest(&mut self) -> Result<(), FrameError> {
        let by_file = self.head[0] & BY_FILE != 0;
        let byte = self.head[0] & !BY_FILE;
        let kind = Kind::from_byte(byte).ok_or(FrameError::UnknownKind(self.head[0]))?;
        if by_file && !matches!(kind, Kind::Request | Kind::Response) {
            return Err(FrameError::BadFile("only a request or an answer has one"));
        }
        let word = |at: usize| {
            u32::from_le_bytes([
                self.head[at],
                self.head[at + 1],
                self.head[at + 2],
                self.head[at + 3],
            ]) as usize
        };
        let (meta_len, declared) = (word(1), word(5));
        let (body_len, file_len) = match by_file {
            true => (0, Some(declared)),
            false => (declared, None),
        };
        if meta_len > MAX_META
            || declared > MAX_BODY
            || (kind == Kind::Piece && body_len > MAX_PIECE)
        {
            return Err(FrameError::TooLarge);
        }
        // The buffer of the frame before is reused (cleared; see `finish`).
        self.meta.clear();
        self.meta.reserve(meta_len);
        // Address space for the whole body at once (no reallocation while it arrives; a length
        // that cannot be had is an error, not an abort), but memory is only touched as the
        // body comes: a declared length is only a claim.
        self.body = Vec::new();
        self.body
            .try_reserve_exact(body_len)
            .map_err(|_| FrameError::TooLarge)?;
        self.body_got = 0;
        self.stage = Stage::ExpectRest {
            kind,
            meta_len,
            body_len,
            file_len,
        };
        Ok(())
    }

    fn finish(&mut self, kind: Kind) -> Result<Message, FrameError> {
        let file_len = match self.stage {
            Stage::ExpectRest { file_len, .. } => file_len,
            Stage::ExpectHead { .. } => None,
        };
        self.stage = Stage::ExpectHead { got: 0 };
        let mut meta = std::mem::take(&mut self.meta);
        let mut body = std::mem::take(&mut self.body);
        body.truncate(self.body_got);
        if let Some(len) = file_len {
            let file = self
                .files
                .pop_front()
                .ok_or(FrameError::BadFile("a frame's file did not come with it"))?;
            body = crate::bodies::map_received(file, len)
                .map_err(|_| FrameError::BadFile("not a sealed memory file of its length"))?;
        }
        let message = decode(kind, &meta, body);
        // Kept for the next frame's metadata (no allocation per frame), unless a big one
        // grew it.
        if meta.capacity() <= KEPT_META {
            meta.clear();
            self.meta = meta;
        }
        message
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_body(head: Vec<u8>, body: &[u8]) -> Vec<u8> {
        let mut all = head;
        all.extend_from_slice(body);
        all
    }

    /// Feeds `bytes` in pieces of `step` and collects the frames.
    fn read_all(bytes: &[u8], step: usize) -> Vec<Message> {
        let mut reader = FrameReader::default();
        let mut out = Vec::new();
        for piece in bytes.chunks(step) {
            let mut at = 0;
            while at < piece.len() {
                let (used, frame) = reader.feed(&piece[at..]).expect("a valid stream");
                at += used;
                out.extend(frame);
            }
        }
        assert!(reader.is_between_frames());
        out
    }

    #[test]
    fn every_kind_round_trips_in_any_split() {
        let meta = HandlerMeta {
            crate_name: "echo".into(),
            version: "0.1.0".into(),
            description: "echoes".into(),
            deadline_ms: Some(1000),
            max_body: None,
            max_lanes: Some(4),
            max_batch: 16,
            sandbox: "landlock 7 (files)".into(),
        };
        let request = Request::new("POST", "/a/b?x=1")
            .with_header("Host", "h")
            .with_body("hello");
        let answer = Response::text("hi").with_header("X-A", "1");
        let mut stream = ready(&meta);
        stream.extend(with_body(request_frame(&request), &request.body));
        stream.extend(with_body(response(&answer), &answer.body));
        stream.extend(panicked("boom"));
        stream.extend(refused("not a library", "detail"));
        let head = Response::status(201).with_header("X-S", "1");
        stream.extend(stream_head(&head, None));
        stream.extend(with_body(piece(3), b"abc"));
        stream.extend(end(true));
        stream.extend(batch(3));
        stream.extend(cancel(7));
        for step in [1, 2, 7, 64, stream.len()] {
            let frames = read_all(&stream, step);
            assert_eq!(frames.len(), 10, "step {step}");
            match &frames[0] {
                Message::Ready(m) => assert_eq!(m, &meta),
                other => panic!("{other:?}"),
            }
            match &frames[1] {
                Message::Request(r, deadline) => {
                    assert_eq!((r.method.as_str(), r.path.as_str()), ("POST", "/a/b"));
                    assert_eq!((r.query.as_str(), r.body_str()), ("x=1", Some("hello")));
                    assert_eq!((r.header("host"), *deadline), (Some("h"), 250));
                }
                other => panic!("{other:?}"),
            }
            match &frames[2] {
                Message::Response(r) => {
                    assert_eq!(
                        (r.status, r.body_str(), r.header("x-a")),
                        (200, Some("hi"), Some("1"))
                    )
                }
                other => panic!("{other:?}"),
            }
            assert!(matches!(&frames[3], Message::Panicked(m) if m == "boom"));
            assert!(
                matches!(&frames[4], Message::Refused { reason, .. } if reason == "not a library")
            );
            assert!(
                matches!(&frames[5], Message::Head(r, None) if r.status == 201 && r.header("x-s") == Some("1"))
            );
            assert!(matches!(&frames[6], Message::Piece(b) if b == b"abc"));
            assert!(matches!(&frames[7], Message::End(true)));
            assert!(matches!(&frames[8], Message::Batch(3)));
            assert!(matches!(&frames[9], Message::Cancel(7)));
            assert!(frames
                .iter()
                .map(Message::settles)
                .eq([true, false, true, true, true, false, false, true, false, false]));
        }
    }

    fn request_frame(r: &Request) -> Vec<u8> {
        request(r, 250)
    }

    #[test]
    fn a_body_can_be_read_directly_into_its_buffer() {
        let body = vec![7u8; 100_000];
        let answer = Response::ok(body.clone());
        let head = response(&answer);
        let mut reader = FrameReader::default();
        let (used, frame) = reader.feed(&head).expect("a valid head");
        assert_eq!((used, frame.is_none()), (head.len(), true));
        let rest = reader
            .direct()
            .expect("memory for it")
            .expect("the body is next");
        assert_eq!(rest.len(), body.len());
        rest.copy_from_slice(&body);
        match reader.filled(body.len()).expect("valid") {
            Some(Message::Response(r)) => assert_eq!(r.body.as_slice(), &body[..]),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_declared_body_costs_memory_only_as_it_arrives() {
        let mut head = response(&Response::status(200));
        // Claim a 1 GiB body, then send 3 bytes of it.
        head[5..9].copy_from_slice(&(MAX_BODY as u32).to_le_bytes());
        let mut reader = FrameReader::default();
        let (used, frame) = reader.feed(&head).expect("a valid head");
        assert_eq!((used, frame.is_none()), (head.len(), true));
        let room = reader.direct().expect("memory").expect("the body is next");
        assert_eq!(
            room.len(),
            DIRECT_CHUNK,
            "room is prepared a chunk at a time"
        );
        room[..3].copy_from_slice(b"abc");
        assert!(reader.filled(3).expect("valid").is_none());
        let (used, frame) = reader.feed(b"de").expect("valid");
        assert_eq!((used, frame.is_none()), (2, true));
        assert!(
            reader.body.len() <= DIRECT_CHUNK,
            "only the prepared room is touched, not the declared gigabyte"
        );
    }

    #[test]
    fn bad_frames_are_errors_not_panics() {
        let table: &[(&[u8], FrameError)] = &[
            (&[11, 0, 0, 0, 0, 0, 0, 0, 0], FrameError::UnknownKind(11)),
            (&[4, 0, 0, 0, 1, 0, 0, 0, 0], FrameError::TooLarge),
            (
                &[4, 1, 0, 0, 0, 0, 0, 0, 0, 1],
                FrameError::Malformed("the metadata ends early"),
            ),
            (
                &[5, 5, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9],
                FrameError::Malformed("bytes after the last field"),
            ),
            (&[1, 2, 0, 0, 0, 0, 0, 0, 0, 9, 0], FrameError::Protocol(9)),
        ];
        for (bytes, expected) in table {
            let mut reader = FrameReader::default();
            let got = reader.feed(bytes).err();
            assert_eq!(got.as_ref(), Some(expected), "{bytes:?}");
        }
    }
}
