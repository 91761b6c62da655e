//! One client connection: its socket, its buffers, and the phase of the exchange it is in.
//!
//! The connection reads and writes its own socket without blocking; what to do with a
//! complete head or request is intake's call. Each phase names what the connection waits for,
//! and each has its deadline (set by intake on entry).

use std::io::{self, IoSlice, Read};
use std::net::SocketAddr;
use std::os::fd::{AsFd, BorrowedFd};
use std::time::{Duration, Instant};

use plugin_api::RVec;

use crate::bodies::{BodyFile, SpliceError};
use crate::http::error::HttpError;
use crate::http::parse::{Framing, Head, HeadLimits};
use crate::http::reader::{Event, RequestReader};
use crate::ids::ConnId;
use crate::intake::queue::ByteBudget;
use crate::intake::stream::Stream;
use crate::net::listener::Scheme;
use crate::net::transport::Transport;

/// A client whose end of file arrives within this long of its complete request (or with it)
/// has half-closed and waits for its answer (`shutdown(SHUT_WR)`, `nc -N`); one whose end of
/// file comes later, while its request waits, has given up, and its request is not run.
///
/// Under pressure (its request was queued behind others) a half-close counts as a departure
/// too: after a flood, the connections taken from the backlog carry a whole request and an
/// end of file at once, from clients that left long ago, and running them made a fresh
/// request wait seconds behind work nobody would read.
pub const HALF_CLOSE_WINDOW: Duration = Duration::from_millis(200);
/// The most bytes discarded while lingering before the connection is closed anyway.
const LINGER_DISCARD: usize = 1 << 20;

/// How to answer the request a connection waits on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReplyShape {
    /// `HEAD`: send the headers of the response, not its body.
    pub head_only: bool,
    /// The client allows another request on this connection.
    pub keep_alive: bool,
    /// The request was HTTP/1.0.
    pub http10: bool,
    /// When its head was complete (for the latency histogram and the access log).
    pub started: Instant,
}

impl ReplyShape {
    /// The shape for a parsed head.
    pub fn of(head: &Head) -> ReplyShape {
        ReplyShape {
            head_only: head.method == "HEAD",
            keep_alive: head.keep_alive,
            http10: !head.http11,
            started: Instant::now(),
        }
    }
}

/// A response being written.
pub struct Outgoing {
    head: Vec<u8>,
    body: RVec<u8>,
    /// Bytes of `head` then `body` already written.
    sent: usize,
    /// Close the connection once it is written.
    pub close_after: bool,
}

impl Outgoing {
    /// A response to write: `body` is left out when empty (HEAD, 204).
    pub fn new(head: Vec<u8>, body: RVec<u8>, close_after: bool) -> Outgoing {
        Outgoing {
            head,
            body,
            sent: 0,
            close_after,
        }
    }
}

/// What a connection waits for.
pub enum Phase {
    /// A complete request head (deadline: the header deadline).
    ExpectHead,
    /// The rest of a body, its bytes reserved in the budget (deadline: idle).
    ExpectBody,
    /// Room in the byte budget for the body of this head, before a byte of it is read (no
    /// idle or rate deadline: it waits for the server; intake bounds it by `--queue-wait`).
    AwaitBudget(Head),
    /// Room in the queue before its next request is read: the request stays in the kernel's
    /// buffers meanwhile, costing nothing here (no deadline; intake resumes it in turn).
    AwaitRoom,
    /// Its request to be run: queued or on a lane. Nothing is read meanwhile (no deadline).
    AwaitAnswer(ReplyShape),
    /// The socket to take the rest of a response (deadline: idle, renewed by each write).
    Sending(Outgoing),
    /// A streamed response: its pieces are written as its executor sends them (deadline:
    /// idle, renewed by each write, and only while bytes wait for the client; waiting for the
    /// executor is the call's deadline, not the client's).
    Streaming(Stream),
    /// The peer to close its end after our last response (our end is shut for writing).
    /// Closing at once while request bytes are still arriving would reset the connection and
    /// could destroy the response before the client reads it (RFC 9112 section 9.6).
    /// Deadline: the linger time.
    Lingering {
        /// Bytes read and thrown away so far.
        discarded: usize,
    },
}

/// What reading or writing led to.
pub enum Step {
    /// Nothing more until the next readiness event.
    Blocked,
    /// A complete head arrived (the connection is left in `ExpectHead`; intake decides).
    Head(Head),
    /// A complete request arrived; the body's bytes are still charged to the budget.
    Request(Head, Vec<u8>),
    /// The bytes received break HTTP; answer with the error, then close.
    Refused(HttpError),
    /// The TLS layer failed (handshake or record): close.
    TlsFailed,
    /// A response was written completely.
    Sent {
        /// Close now rather than read the next request.
        close: bool,
    },
    /// The peer closed or the socket failed: close.
    Gone,
}

/// One client connection.
pub struct Conn {
    /// Its identity.
    pub id: ConnId,
    /// The socket, plain or TLS.
    pub transport: Transport,
    /// The client's address.
    pub peer: SocketAddr,
    /// `peer` as text, made at its first request and kept for the rest (every request hands
    /// it to its plugin).
    peer_text: Option<String>,
    /// The listener it came from (admin connections are counted apart).
    pub kind: Scheme,
    /// What it waits for.
    pub phase: Phase,
    /// When the current phase began (for minimum rates and shrinking deadlines).
    pub since: Instant,
    /// When the current phase's deadline passes.
    pub deadline: Instant,
    /// What has been received and not yet handed on: the request reader.
    reader: RequestReader,
    /// The file a big body goes into, so that it reaches its executor as a file, never
    /// copied through the socket: one of a declared length of `BY_FILE_FROM` bytes or more
    /// from its head on (its bytes go from the socket straight into the file), a chunked one
    /// from its `BY_FILE_FROM`th decoded byte on (moved from the reader as decoded).
    body_file: Option<BodyFile>,
    /// No file could be had for the body being read (descriptors spent, say): it stays on
    /// the heap, and making one is not tried again for it.
    body_file_refused: bool,
    /// Budget bytes reserved for the body being read (its length, or its limit if chunked),
    /// and how many of them have arrived (and are held).
    reserved: usize,
    arrived: usize,
    /// Bytes (or its end) may wait in the socket that no read has taken: a readiness event
    /// came since the last read that left it empty. Polling is edge-triggered, so bytes that
    /// come later raise a new event; without one, a read would only hear it would block (as
    /// after every answer on a keep-alive connection, before its client sends the next).
    may_have_bytes: bool,
    /// When its peer's end of file (or a reset) was seen in a poll event, if it was.
    fin_at: Option<Instant>,
    /// When its last request was complete.
    request_done: Instant,
    /// Its end of file came with or right after a complete request: the client waits for the
    /// answer, and the connection closes after it.
    pub half_closed: bool,
    /// Its last request was queued behind others (the server was under pressure): an end of
    /// file then means it has gone, half-close or not, and its request is not run.
    pub queued_behind: bool,
    /// Request bytes still to come that lingering may read and drop before closing (a body
    /// answered 503 before it was read: the client is still sending it, and closing on it
    /// would reset the connection and destroy the answer).
    pub unread_body: usize,
}

impl Conn {
    /// A new connection waiting for its first request head.
    pub fn new(
        id: ConnId,
        transport: Transport,
        peer: SocketAddr,
        kind: Scheme,
        timeout: Duration,
    ) -> Conn {
        let now = Instant::now();
        Conn {
            id,
            transport,
            peer,
            peer_text: None,
            kind,
            phase: Phase::ExpectHead,
            since: now,
            deadline: now + timeout,
            reader: RequestReader::default(),
            body_file: None,
            body_file_refused: false,
            reserved: 0,
            arrived: 0,
            may_have_bytes: true,
            fin_at: None,
            request_done: now,
            half_closed: false,
            queued_behind: false,
            unread_body: 0,
        }
    }

    /// The client's address as text, for its plugin.
    pub fn peer_text(&mut self) -> String {
        let peer = self.peer;
        self.peer_text
            .get_or_insert_with(|| peer.to_string())
            .clone()
    }

    /// Starts the current phase's clock: its deadline is `timeout` from now.
    pub fn set_deadline(&mut self, timeout: Duration) {
        self.since = Instant::now();
        self.deadline = self.since + timeout;
    }

    /// Bytes moved so far in a phase that has a minimum rate (reading a body, sending a
    /// response); `None` in the others.
    pub fn progress(&self) -> Option<usize> {
        match &self.phase {
            Phase::ExpectBody => self.reader.body_read(),
            Phase::Sending(out) => Some(out.sent),
            Phase::Streaming(stream) if !stream.waits_on_server() => Some(stream.moved),
            _ => None,
        }
    }

    /// Whether part of a request has arrived (so a deadline earns a 408, not a silent close).
    pub fn has_partial_request(&self) -> bool {
        matches!(self.phase, Phase::ExpectBody | Phase::AwaitBudget(_))
            || (matches!(self.phase, Phase::ExpectHead) && self.reader.is_mid_request())
    }

    /// Gives the budget back what this connection's body holds and reserves (it closes, or
    /// its request was refused).
    pub fn give_back(&mut self, budget: &mut ByteBudget) {
        let arrived = std::mem::take(&mut self.arrived);
        let reserved = std::mem::take(&mut self.reserved);
        budget.release(arrived);
        budget.unreserve(reserved.saturating_sub(arrived));
    }

    /// Starts reading `head`'s body, at most `limit` bytes, with `reserved` budget bytes
    /// already taken for it.
    pub fn expect_body(
        &mut self,
        head: Head,
        limit: usize,
        reserved: usize,
    ) -> Result<(), HttpError> {
        // A big body of known length goes straight into its file, made for it now.
        let known = match head.framing {
            Framing::Length(n) => usize::try_from(n).ok(),
            _ => None,
        };
        self.reader.start_body(head, limit)?;
        self.body_file = None;
        self.body_file_refused = false;
        if known.is_some_and(|n| n >= crate::bodies::BY_FILE_FROM) {
            self.body_file = BodyFile::create().ok();
            self.body_file_refused = self.body_file.is_none();
        }
        self.reserved = reserved;
        self.arrived = 0;
        self.phase = Phase::ExpectBody;
        Ok(())
    }

    /// Reads and parses until a step worth reporting (reading phases) or writes what is
    /// pending (sending phase).
    /// `scratch` is intake's one read buffer: bytes are read there, and only what arrived is
    /// kept, so an idle connection holds no read-sized buffer.
    pub fn advance(
        &mut self,
        limits: &HeadLimits,
        budget: &mut ByteBudget,
        scratch: &mut [u8],
    ) -> Step {
        if !matches!(self.phase, Phase::Sending(_) | Phase::Streaming(_)) {
            // TLS records still owed to the peer (handshake messages) go out first.
            let _ = self.transport.flush();
        }
        match self.phase {
            Phase::ExpectHead | Phase::ExpectBody => self.advance_read(limits, budget, scratch),
            Phase::AwaitRoom | Phase::AwaitAnswer(_) | Phase::AwaitBudget(_) => Step::Blocked,
            Phase::Sending(_) => self.advance_send(),
            Phase::Streaming(_) => self.advance_stream(),
            Phase::Lingering { .. } => self.advance_linger(),
        }
    }

    /// Shuts our end for writing and waits for the peer to close its end.
    pub fn start_lingering(&mut self) {
        self.transport.close_write();
        self.reader.clear();
        self.body_file = None;
        self.phase = Phase::Lingering { discarded: 0 };
    }

    fn advance_linger(&mut self) -> Step {
        let mut scratch = [0u8; 16 * 1024];
        loop {
            let Phase::Lingering { discarded } = &mut self.phase else {
                return Step::Blocked;
            };
            // Raw socket bytes: for TLS these are records nobody will decrypt.
            match self.transport.socket_mut().read(&mut scratch) {
                Ok(0) => return Step::Gone,
                Ok(n) => {
                    *discarded += n;
                    if *discarded > LINGER_DISCARD.max(self.unread_body) {
                        return Step::Gone;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Step::Blocked,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return Step::Gone,
            }
        }
    }

    /// Reads until the reader has a head (left in `ExpectHead` for intake to decide on), a
    /// complete request, or an error, or the socket blocks. A completed body keeps exactly its
    /// own bytes charged to the budget (a chunked body's reservation was its limit).
    fn advance_read(
        &mut self,
        limits: &HeadLimits,
        budget: &mut ByteBudget,
        scratch: &mut [u8],
    ) -> Step {
        loop {
            let event = self.reader.next(limits);
            let event = self.keep_big_body(event);
            // Body bytes decoded since the last look were reserved and are held now.
            let decoded = match &event {
                Event::Request(_, body) if self.reserved > 0 => body.len(),
                _ => self.reader.body_read().unwrap_or(self.arrived),
            };
            if decoded > self.arrived {
                budget.arrived(decoded - self.arrived);
                self.arrived = decoded;
            }
            match event {
                Event::Partial => {}
                Event::Head(head) => return Step::Head(head),
                Event::Request(head, body) => {
                    // The job holds its body's bytes from here; what was reserved beyond them
                    // (a chunked body's limit) goes back.
                    let reserved = std::mem::take(&mut self.reserved);
                    budget.unreserve(reserved.saturating_sub(std::mem::take(&mut self.arrived)));
                    self.request_done = Instant::now();
                    self.half_closed |= self.fin_at.is_some();
                    self.phase = Phase::ExpectHead;
                    return Step::Request(head, body);
                }
                Event::Error(e) => return Step::Refused(e),
            }
            if !self.may_have_bytes {
                return Step::Blocked;
            }
            let step = match self.fill_body_file(scratch) {
                Some(step) => step,
                None => {
                    let room = self.reader.room(limits, scratch.len());
                    self.fill(&mut scratch[..room])
                }
            };
            if let Some(step) = step {
                return step;
            }
        }
    }

    /// Moves the rest of a big body of known length from the socket straight into its file:
    /// by `splice` on plain TCP (the bytes never enter this process), else read into
    /// `scratch` and written to the file (not through the reader). `None` when this body is
    /// not read so; otherwise what [`fill`](Conn::fill) would say.
    fn fill_body_file(&mut self, scratch: &mut [u8]) -> Option<Option<Step>> {
        let left = self.reader.length_left()?;
        let file = self.body_file.as_mut()?;
        let moved = if self.transport.is_tls() {
            let fin_seen = self.fin_at.is_some();
            let take = left.min(scratch.len());
            let into = &mut scratch[..take];
            receive(
                &mut self.transport,
                &mut self.may_have_bytes,
                fin_seen,
                into,
            )
            .and_then(|n| {
                file.append(&into[..n])
                    .map(|()| n)
                    .map_err(|_| ReadEnd::NoRoom)
            })
        } else {
            let socket = self.transport.socket().as_fd();
            splice_into(file, socket, left, &mut self.may_have_bytes)
        };
        Some(match moved {
            Ok(n) => {
                self.reader.received_elsewhere(n);
                None
            }
            Err(end) => Some(end.into()),
        })
    }

    /// Moves a big body's decoded bytes into its file as they come; the complete request's
    /// body is then that file, sealed and mapped. No file to be had (descriptors or the
    /// registry of mappings spent) keeps the body on the heap; a file that cannot take the
    /// bytes refuses the request (503).
    fn keep_big_body(&mut self, event: Event) -> Event {
        let big = |n: usize| n >= crate::bodies::BY_FILE_FROM;
        match event {
            Event::Partial => {
                if self.body_file.is_none()
                    && !self.body_file_refused
                    && self.reader.body_read().is_some_and(big)
                {
                    self.body_file = BodyFile::create().ok();
                    self.body_file_refused = self.body_file.is_none();
                }
                let Some(file) = self.body_file.as_mut() else {
                    return Event::Partial;
                };
                match self.reader.move_decoded(&mut |bytes| file.append(bytes)) {
                    Ok(()) => Event::Partial,
                    Err(_) => Event::Error(HttpError::NoRoom),
                }
            }
            Event::Request(head, body) => {
                let file = match self.body_file.take() {
                    Some(file) => Some(file),
                    None if big(body.len()) && !self.body_file_refused => BodyFile::create().ok(),
                    None => None,
                };
                let Some(mut file) = file else {
                    return Event::Request(head, body);
                };
                match file.append(&body).and_then(|()| file.seal()) {
                    Ok(mapped) => Event::Request(head, mapped),
                    Err(_) => Event::Error(HttpError::NoRoom),
                }
            }
            other => {
                self.body_file = None;
                other
            }
        }
    }

    fn advance_send(&mut self) -> Step {
        let Phase::Sending(out) = &mut self.phase else {
            return Step::Blocked;
        };
        loop {
            let total = out.head.len() + out.body.len();
            if out.sent >= total {
                return match self.transport.flush() {
                    Ok(()) => Step::Sent {
                        close: out.close_after,
                    },
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => Step::Blocked,
                    Err(_) => Step::Gone,
                };
            }
            let (head_rest, body_rest) = if out.sent < out.head.len() {
                (&out.head[out.sent..], &out.body[..])
            } else {
                (&[][..], &out.body[out.sent - out.head.len()..])
            };
            // A body in a file goes by `sendfile` where the transport can (plain TCP), after
            // the head: its pages are never touched here.
            let file = match self.transport.is_tls() {
                true => None,
                false => crate::bodies::file_of(&out.body),
            };
            let written = match (file, head_rest.is_empty()) {
                (Some(fd), true) => {
                    let at = out.sent - out.head.len();
                    self.transport.send_file(fd, at, body_rest.len())
                }
                (Some(_), false) => self.transport.write_vectored(&[IoSlice::new(head_rest)]),
                (None, _) => self
                    .transport
                    .write_vectored(&[IoSlice::new(head_rest), IoSlice::new(body_rest)]),
            };
            match written {
                Ok(0) => return Step::Gone,
                Ok(n) => out.sent += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Step::Blocked,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return Step::Gone,
            }
        }
    }

    fn advance_stream(&mut self) -> Step {
        loop {
            let Phase::Streaming(stream) = &mut self.phase else {
                return Step::Blocked;
            };
            if stream.unwritten().is_empty() {
                let close = stream.close_after;
                let done = stream.is_done();
                return match self.transport.flush() {
                    Ok(()) if done => Step::Sent { close },
                    Ok(()) => Step::Blocked,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => Step::Blocked,
                    Err(_) => Step::Gone,
                };
            }
            match self
                .transport
                .write_vectored(&[IoSlice::new(stream.unwritten())])
            {
                Ok(0) => return Step::Gone,
                Ok(n) => {
                    stream.wrote(n);
                    self.deadline = Instant::now() + stream.idle;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Step::Blocked,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return Step::Gone,
            }
        }
    }

    /// Adds a piece to a streamed response (and `finish`es it when `last`); a stream that
    /// was waiting on its executor starts the client's clocks now. `false` when the pieces
    /// break the length the head declared (the connection must be cut).
    pub fn stream_piece(&mut self, piece: &[u8], last: bool) -> bool {
        let Phase::Streaming(stream) = &mut self.phase else {
            return true;
        };
        if stream.waits_on_server() {
            stream.moved = 0;
            self.since = Instant::now();
            self.deadline = self.since + stream.idle;
        }
        stream.push(piece) && (!last || stream.finish())
    }

    /// Whether it takes more of a streamed response now (anything else takes nothing, and a
    /// gone connection's pieces are dropped: both say yes, so its executor is not held).
    pub fn takes_more(&self) -> bool {
        match &self.phase {
            Phase::Streaming(stream) => stream.has_room(),
            _ => true,
        }
    }

    /// Reads what fits in `scratch` and hands it to the reader. `None` when bytes arrived;
    /// otherwise the step that ends the reading (blocked, end of stream, failure).
    fn fill(&mut self, scratch: &mut [u8]) -> Option<Step> {
        let fin_seen = self.fin_at.is_some();
        match receive(
            &mut self.transport,
            &mut self.may_have_bytes,
            fin_seen,
            scratch,
        ) {
            Ok(n) => {
                self.reader.push(&scratch[..n]);
                None
            }
            Err(end) => Some(end.into()),
        }
    }

    /// A poll event said the socket has bytes to read, or its end.
    pub fn saw_readable(&mut self) {
        self.may_have_bytes = true;
    }

    /// A poll event said the peer shut its end (or reset it), at `now`: within
    /// [`HALF_CLOSE_WINDOW`] of a complete request that is a half-close, not a departure.
    pub fn saw_end_of_file(&mut self, now: Instant) {
        if self.fin_at.is_some() {
            return;
        }
        self.fin_at = Some(now);
        let answering = matches!(
            self.phase,
            Phase::AwaitAnswer(_) | Phase::Sending(_) | Phase::Streaming(_)
        );
        if answering && now.duration_since(self.request_done) <= HALF_CLOSE_WINDOW {
            self.half_closed = true;
        }
    }

    /// Whether the client has gone while its request waits: its end of file came, and not as
    /// a half-close, or its request was queued behind others (under pressure a half-closed
    /// request is dropped: see [`HALF_CLOSE_WINDOW`]). Known from poll events, without a
    /// system call.
    pub fn has_left(&self) -> bool {
        self.fin_at.is_some() && (!self.half_closed || self.queued_behind)
    }

    /// Whether the peer has closed its end while the connection waits for room (a zero-byte
    /// peek); pipelined bytes or nothing to read mean it is still there.
    pub fn peer_has_closed(&self) -> bool {
        let mut byte = [0u8; 1];
        matches!(self.transport.socket().peek(&mut byte), Ok(0))
    }

    /// Best-effort immediate write of a tiny message (`100 Continue`, a 408 before closing).
    /// Whatever does not fit the socket buffer now is dropped.
    pub fn write_now(&mut self, bytes: &[u8]) {
        let _ = self.transport.write_vectored(&[IoSlice::new(bytes)]);
        let _ = self.transport.flush();
    }

    /// Whether bytes of a next request are already buffered.
    pub fn has_buffered_input(&self) -> bool {
        self.reader.has_buffered()
    }
}

/// Splices up to `max` bytes from a plain socket into a body's file: how many came, or the
/// reason the reading ends.
fn splice_into(
    file: &mut BodyFile,
    socket: BorrowedFd<'_>,
    max: usize,
    may_have_bytes: &mut bool,
) -> Result<usize, ReadEnd> {
    loop {
        match file.splice_from(socket, max) {
            Ok(0) => return Err(ReadEnd::Gone),
            // A short splice does not say the socket is empty (the pipe may have run out of
            // slots): only a would-block does.
            Ok(n) => return Ok(n),
            Err(SpliceError::Socket(e)) => match e.kind() {
                io::ErrorKind::Interrupted => {}
                io::ErrorKind::WouldBlock => {
                    *may_have_bytes = false;
                    return Err(ReadEnd::Blocked);
                }
                _ => return Err(ReadEnd::Gone),
            },
            Err(SpliceError::File(_)) => return Err(ReadEnd::NoRoom),
        }
    }
}

/// Why reading a connection's socket stopped without bytes.
#[derive(Clone, Copy, Debug)]
enum ReadEnd {
    /// Nothing more until the next readiness event.
    Blocked,
    /// The peer closed, or the socket failed.
    Gone,
    /// The TLS layer failed.
    TlsFailed,
    /// A big body's file cannot take the bytes.
    NoRoom,
}

impl From<ReadEnd> for Step {
    fn from(end: ReadEnd) -> Step {
        match end {
            ReadEnd::Blocked => Step::Blocked,
            ReadEnd::Gone => Step::Gone,
            ReadEnd::TlsFailed => Step::TlsFailed,
            ReadEnd::NoRoom => Step::Refused(HttpError::NoRoom),
        }
    }
}

/// Reads what fits in `into` from a connection's transport: how many bytes came, or why the
/// reading stops. Clears `may_have_bytes` when the socket is known empty after it.
fn receive(
    transport: &mut Transport,
    may_have_bytes: &mut bool,
    fin_seen: bool,
    into: &mut [u8],
) -> Result<usize, ReadEnd> {
    loop {
        match transport.read(into) {
            Ok(0) => return Err(ReadEnd::Gone),
            Ok(n) => {
                // A plain socket that gave less than asked is empty now. (TLS may hold more
                // plaintext than it gave: only its would-block says so. An end of file seen
                // in an event is still to be read: no event will say it again.)
                if n < into.len() && !transport.is_tls() && !fin_seen {
                    *may_have_bytes = false;
                }
                return Ok(n);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                *may_have_bytes = false;
                return Err(ReadEnd::Blocked);
            }
            Err(e) if e.kind() == io::ErrorKind::InvalidData && transport.is_tls() => {
                return Err(ReadEnd::TlsFailed)
            }
            Err(_) => return Err(ReadEnd::Gone),
        }
    }
}
