//! The call a handler is serving, as the plugin's side sees it (its deadline and where a
//! streamed answer goes), and [`Stream`], the writer that sends an answer in pieces.
//!
//! The context lives in a thread-local set by the `call` shim for the length of one call, so
//! [`Request::deadline`](crate::Request::deadline) and [`Stream::start`] need no argument.
//! Outside a call (a plugin's own tests, or a server older than streaming) there is no context:
//! there is no deadline to report, and a [`Stream`] collects its pieces into one whole
//! [`Response`], so the same handler works everywhere.

use std::cell::Cell;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use abi_stable::std_types::RSlice;

use crate::abi::StreamSink;
use crate::error::Error;
use crate::message::Response;

/// The call this thread is serving.
#[derive(Clone, Copy)]
struct Current {
    /// Tells one call from the next, so a [`Stream`] kept past its call is refused.
    id: u64,
    deadline: Instant,
    /// `None` in a batch: its answers are whole.
    sink: Option<StreamSink>,
    /// A `Stream` was started in this call.
    claimed: bool,
    /// Its head went to the host: from here on the answer is the stream.
    started: bool,
}

thread_local! {
    static CURRENT: Cell<Option<Current>> = const { Cell::new(None) };
}

/// While alive, this thread is serving one call (the `call` shim holds it).
pub(crate) struct CallScope {
    outer: Option<Current>,
}

impl CallScope {
    /// Enters a call that may run for `deadline_ms` from now and streams through `sink`.
    pub(crate) fn enter(deadline_ms: u64, sink: Option<StreamSink>) -> CallScope {
        static CALLS: AtomicU64 = AtomicU64::new(0);
        let current = Current {
            id: CALLS.fetch_add(1, Ordering::Relaxed),
            deadline: Instant::now() + Duration::from_millis(deadline_ms),
            sink,
            claimed: false,
            started: false,
        };
        CallScope {
            outer: CURRENT.with(|c| c.replace(Some(current))),
        }
    }

    /// Whether the handler started a streamed answer in this call.
    pub(crate) fn started(&self) -> bool {
        CURRENT.with(|c| c.get().is_some_and(|current| current.started))
    }
}

impl Drop for CallScope {
    fn drop(&mut self) {
        CURRENT.with(|c| c.set(self.outer));
    }
}

/// How long the call this thread is serving may still run; `None` outside a call.
pub(crate) fn time_left() -> Option<Duration> {
    CURRENT
        .with(|c| c.get())
        .map(|current| current.deadline.saturating_duration_since(Instant::now()))
}

/// An answer sent in pieces: the client gets each [`write`](Stream::write) as it is made
/// (HTTP/1.1 chunked), not the whole body at the end. For a model that generates tokens, a
/// long report, server-sent events.
///
/// ```
/// use plugin_api::{Error, Request, Response, Stream};
///
/// fn count(request: &Request) -> Result<Response, Error> {
///     let mut out = Stream::start(Response::status(200).with_content_type("text/plain"))?;
///     for n in 1..=3 {
///         out.write(format!("{n}\n"))?; // Err once the answer cannot go on: stop
///     }
///     out.finish()
/// }
///
/// // Outside the server (here, a test) the pieces are collected into one response.
/// let whole = count(&Request::new("GET", "/")).unwrap();
/// assert_eq!(whole.body_str(), Some("1\n2\n3\n"));
/// ```
///
/// Return what [`finish`](Stream::finish) gives. The head goes out with the first piece (or
/// at `finish`): an `Err` returned before the first `write` is answered as usual, with its
/// status; an `Err` or a panic after it cuts the answer (the client sees it end early, never a
/// whole-looking answer). The call's deadline covers the whole stream: past it the server ends
/// the answer and stops the plugin. A `Stream` belongs to the call and thread that started it.
pub struct Stream {
    to: Destination,
    /// Not `Send`: the pieces go through this thread's call.
    _call_thread: PhantomData<*const ()>,
}

enum Destination {
    /// The server, piece by piece; the head until it is sent.
    Host {
        call: u64,
        sink: StreamSink,
        head: Option<Response>,
    },
    /// No server streaming here: the head, with the pieces appended to its body.
    Collect(Response),
}

impl Stream {
    /// Starts the answer with `head`'s status (200..=999) and headers; its body, if any, is
    /// the first piece. `Err` for another status, or if this call already has a `Stream`.
    pub fn start(head: Response) -> Result<Stream, Error> {
        if !(200..=999).contains(&head.status) {
            return Err(Error::new(
                500,
                format!(
                    "a streamed answer's status must be 200..=999, not {}",
                    head.status
                ),
            ));
        }
        let Some(mut current) = CURRENT.with(|c| c.get()) else {
            return Ok(Stream::collecting(head));
        };
        let Some(sink) = current.sink else {
            return Ok(Stream::collecting(head));
        };
        if current.claimed {
            return Err(Error::new(500, "this call's answer has already started"));
        }
        current.claimed = true;
        CURRENT.with(|c| c.set(Some(current)));
        let body = head.body.to_vec();
        let mut stream = Stream {
            to: Destination::Host {
                call: current.id,
                sink,
                head: Some(head.with_body(Vec::new())),
            },
            _call_thread: PhantomData,
        };
        if !body.is_empty() {
            stream.write(body)?;
        }
        Ok(stream)
    }

    fn collecting(head: Response) -> Stream {
        Stream {
            to: Destination::Collect(head),
            _call_thread: PhantomData,
        }
    }

    /// Sends `piece` now. `Err` when the answer cannot go on (the client left, the server is
    /// gone, or this `Stream` outlived its call): stop producing and return.
    pub fn write(&mut self, piece: impl AsRef<[u8]>) -> Result<(), Error> {
        let piece = piece.as_ref();
        match &mut self.to {
            Destination::Collect(response) => {
                response.body.extend_from_slice(piece);
                Ok(())
            }
            Destination::Host { call, sink, head } => {
                send_head(*call, sink, head)?;
                for part in piece.chunks(PIECE) {
                    // SAFETY: as in `send_head`, which checked that its call is running.
                    if !unsafe { (sink.host.write())(sink.this, RSlice::from_slice(part)) } {
                        return Err(gone());
                    }
                }
                Ok(())
            }
        }
    }

    /// Ends the answer; return what it gives from the handler. (Outside the server, that is
    /// the whole collected response.)
    pub fn finish(self) -> Result<Response, Error> {
        match self.to {
            Destination::Collect(response) => Ok(response),
            Destination::Host {
                call,
                sink,
                mut head,
            } => {
                send_head(call, &sink, &mut head)?;
                // The server ignores it: what was streamed is the answer.
                Ok(Response::status(200))
            }
        }
    }
}

/// Sends the head of call `call` through `sink` unless it went already.
fn send_head(call: u64, sink: &StreamSink, head: &mut Option<Response>) -> Result<(), Error> {
    let Some(mut current) = CURRENT.with(|c| c.get()).filter(|c| c.id == call) else {
        return Err(Error::new(500, "a Stream was used after its call ended"));
    };
    let Some(first) = head.take() else {
        return Ok(());
    };
    // SAFETY: `sink` is the current call's (the `call` shim set it, and the host keeps it
    // valid until that call returns; we are inside it, on its thread, as checked above).
    if !unsafe { (sink.host.start())(sink.this, &first) } {
        return Err(gone());
    }
    current.started = true;
    CURRENT.with(|c| c.set(Some(current)));
    Ok(())
}

/// The largest piece handed to the server at once (the executor protocol's bound is 1 MiB).
const PIECE: usize = 256 * 1024;

fn gone() -> Error {
    Error::new(
        503,
        "the answer cannot go on: the client left, or the server stopped taking it",
    )
}
