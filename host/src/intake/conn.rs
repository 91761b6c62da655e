//! One client connection: its socket, its buffers, and the phase of the exchange it is in.
//!
//! The connection reads and writes its own socket without blocking; what to do with a
//! complete head or request is intake's call. Each phase names what the connection waits for,
//! and each has its deadline (set by intake on entry).

use std::io::{self, IoSlice, Read};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use plugin_api::RVec;

use crate::http::body::BodyReader;
use crate::http::error::HttpError;
use crate::http::parse::{parse_head, Head, HeadLimits};
use crate::ids::ConnId;
use crate::intake::queue::ByteBudget;
use crate::intake::stream::Stream;
use crate::net::listener::Scheme;
use crate::net::transport::Transport;

/// The buffer a connection keeps between requests (more is released after a big body).
const IDLE_INBUF: usize = 4096;
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

/// A request whose head is complete and whose body is being read.
pub struct PendingBody {
    /// The head.
    pub head: Head,
    reader: BodyReader,
    /// The body so far. Invariant: its length is charged to the byte budget.
    pub body: Vec<u8>,
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
    /// The rest of a body (deadline: idle, renewed by each read).
    ExpectBody(PendingBody),
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
    /// A body would exceed the byte budget: shed the connection silently.
    OverBudget,
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
    /// The listener it came from (admin connections are counted apart).
    pub kind: Scheme,
    /// What it waits for.
    pub phase: Phase,
    /// When the current phase began (for minimum rates and shrinking deadlines).
    pub since: Instant,
    /// When the current phase's deadline passes.
    pub deadline: Instant,
    /// Received bytes not yet parsed: a partial head, or a pipelined next request.
    inbuf: Vec<u8>,
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
            kind,
            phase: Phase::ExpectHead,
            since: now,
            deadline: now + timeout,
            inbuf: Vec::new(),
        }
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
            Phase::ExpectBody(pending) => Some(pending.body.len()),
            Phase::Sending(out) => Some(out.sent),
            Phase::Streaming(stream) if !stream.waits_on_server() => Some(stream.moved),
            _ => None,
        }
    }

    /// Whether part of a request has arrived (so a deadline earns a 408, not a silent close).
    pub fn has_partial_request(&self) -> bool {
        matches!(self.phase, Phase::ExpectBody(_))
            || (matches!(self.phase, Phase::ExpectHead) && !self.inbuf.is_empty())
    }

    /// The body bytes this connection holds against the budget.
    pub fn charged_bytes(&self) -> usize {
        match &self.phase {
            Phase::ExpectBody(pending) => pending.body.len(),
            _ => 0,
        }
    }

    /// Starts reading a body for `head`.
    pub fn expect_body(&mut self, head: Head, reader: BodyReader) {
        self.phase = Phase::ExpectBody(PendingBody {
            head,
            reader,
            body: Vec::new(),
        });
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
            Phase::ExpectHead => self.advance_head(limits, scratch),
            Phase::ExpectBody(_) => self.advance_body(budget, scratch),
            Phase::AwaitRoom | Phase::AwaitAnswer(_) => Step::Blocked,
            Phase::Sending(_) => self.advance_send(),
            Phase::Streaming(_) => self.advance_stream(),
            Phase::Lingering { .. } => self.advance_linger(),
        }
    }

    /// Shuts our end for writing and waits for the peer to close its end.
    pub fn start_lingering(&mut self) {
        self.transport.close_write();
        self.inbuf = Vec::new();
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
                    if *discarded > LINGER_DISCARD {
                        return Step::Gone;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Step::Blocked,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return Step::Gone,
            }
        }
    }

    fn advance_head(&mut self, limits: &HeadLimits, scratch: &mut [u8]) -> Step {
        loop {
            match parse_head(&self.inbuf, limits) {
                Err(e) => return Step::Refused(e),
                Ok(Some((head, used))) => {
                    self.inbuf.drain(..used);
                    return Step::Head(head);
                }
                Ok(None) => {}
            }
            let room = limits.max_head() + 1 - self.inbuf.len().min(limits.max_head());
            let room = room.min(scratch.len());
            if let Some(step) = self.fill(&mut scratch[..room]) {
                return step;
            }
        }
    }

    fn advance_body(&mut self, budget: &mut ByteBudget, scratch: &mut [u8]) -> Step {
        loop {
            let Phase::ExpectBody(pending) = &mut self.phase else {
                return Step::Blocked;
            };
            if !self.inbuf.is_empty() {
                let before = pending.body.len();
                let used = match pending.reader.feed(&self.inbuf, &mut pending.body) {
                    Ok(used) => used,
                    Err(e) => {
                        // Keep the invariant: only charged bytes stay in the body.
                        pending.body.truncate(before);
                        return Step::Refused(e);
                    }
                };
                self.inbuf.drain(..used);
                let grown = pending.body.len() - before;
                if !budget.try_take(grown) {
                    pending.body.truncate(before);
                    return Step::OverBudget;
                }
                if pending.reader.is_done() {
                    let Phase::ExpectBody(pending) =
                        std::mem::replace(&mut self.phase, Phase::ExpectHead)
                    else {
                        unreachable!("the phase was matched as ExpectBody above");
                    };
                    // A big body passed through `inbuf`; an idle connection keeps no such buffer.
                    self.inbuf.shrink_to(IDLE_INBUF);
                    return Step::Request(pending.head, pending.body);
                }
            }
            if let Some(step) = self.fill(scratch) {
                return step;
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
            let slices = [IoSlice::new(head_rest), IoSlice::new(body_rest)];
            match self.transport.write_vectored(&slices) {
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
    /// was waiting on its executor starts the client's clocks now.
    pub fn stream_piece(&mut self, piece: &[u8], last: bool) {
        let Phase::Streaming(stream) = &mut self.phase else {
            return;
        };
        if stream.waits_on_server() {
            stream.moved = 0;
            self.since = Instant::now();
            self.deadline = self.since + stream.idle;
        }
        stream.push(piece);
        if last {
            stream.finish();
        }
    }

    /// Whether it takes more of a streamed response now (anything else takes nothing, and a
    /// gone connection's pieces are dropped: both say yes, so its executor is not held).
    pub fn takes_more(&self) -> bool {
        match &self.phase {
            Phase::Streaming(stream) => stream.has_room(),
            _ => true,
        }
    }

    /// Reads what fits in `scratch` and appends it to `inbuf`. `None` when bytes arrived;
    /// otherwise the step that ends the reading (blocked, end of stream, failure).
    fn fill(&mut self, scratch: &mut [u8]) -> Option<Step> {
        loop {
            match self.transport.read(scratch) {
                Ok(0) => return Some(Step::Gone),
                Ok(n) => {
                    self.inbuf.extend_from_slice(&scratch[..n]);
                    return None;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Some(Step::Blocked),
                Err(e) if e.kind() == io::ErrorKind::InvalidData && self.transport.is_tls() => {
                    return Some(Step::TlsFailed)
                }
                Err(_) => return Some(Step::Gone),
            }
        }
    }

    /// Whether the peer has closed its end while the connection waits for a lane (a zero-byte
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
        !self.inbuf.is_empty()
    }
}
