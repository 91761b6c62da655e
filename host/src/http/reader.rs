//! The one request reader, sans IO: bytes in ([`RequestReader::push`]), events out
//! ([`RequestReader::next`]): need more, a complete head whose body the caller must decide on
//! (its limit, its room in the byte budget), a complete request, or the error that ends the
//! stream. A connection pumps its socket into one; the property tests and the fuzz target drive
//! the same type through [`read_stream`].
//!
//! Bytes of a pipelined next request stay buffered after a request ends; a head is never
//! searched for in more than its limit, and a body never grows past the limit it was given.

use super::body::BodyReader;
use super::error::HttpError;
use super::parse::{parse_head, Framing, Head, HeadLimits};

/// The buffer kept between requests (more is released after a big body passed through).
const IDLE_INBUF: usize = 4096;

/// What the reader has for its caller.
#[derive(Debug, PartialEq, Eq)]
pub enum Event {
    /// Nothing complete yet: push more bytes.
    Partial,
    /// A complete head with a body to come: call [`RequestReader::start_body`] (or refuse).
    Head(Head),
    /// A complete request (with its body, empty when it has none).
    Request(Head, Vec<u8>),
    /// The bytes break HTTP here; nothing after them can be trusted.
    Error(HttpError),
}

/// A body being read.
struct PendingBody {
    head: Head,
    decoder: BodyReader,
    /// The decoded bytes not yet moved out (all of them, unless the caller moves them).
    body: Vec<u8>,
    /// Decoded bytes the caller moved out ([`RequestReader::move_decoded`]).
    moved: usize,
}

/// Reads requests from one connection's bytes.
#[derive(Default)]
pub struct RequestReader {
    /// Received bytes not yet parsed: a partial head, body bytes, or a next request.
    inbuf: Vec<u8>,
    body: Option<PendingBody>,
    /// A head was returned and its body not started yet.
    awaiting_body: bool,
    /// The body's bytes broke its framing as they were pushed (returned by the next `next`).
    failed: Option<HttpError>,
}

impl RequestReader {
    /// How many more bytes are worth reading now: the room left under the head's limit while a
    /// head is read (one byte more, to see it is over), else `at_most`.
    pub fn room(&self, limits: &HeadLimits, at_most: usize) -> usize {
        match self.body {
            Some(_) => at_most,
            None => (limits.max_head() + 1)
                .saturating_sub(self.inbuf.len())
                .clamp(1, at_most),
        }
    }

    /// Adds received bytes. Bytes of a body being read, with nothing buffered before them, go
    /// straight to its decoder (a big upload is not copied into the buffer first); only what
    /// follows its end is buffered.
    pub fn push(&mut self, bytes: &[u8]) {
        let mut rest = bytes;
        if let Some(pending) = self.body.as_mut() {
            if self.inbuf.is_empty() && self.failed.is_none() && !pending.decoder.is_done() {
                match pending.decoder.feed(bytes, &mut pending.body) {
                    Ok(used) => rest = &bytes[used..],
                    Err(e) => {
                        self.failed = Some(e);
                        rest = &[];
                    }
                }
            }
        }
        self.inbuf.extend_from_slice(rest);
    }

    /// The next event from what was pushed.
    pub fn next(&mut self, limits: &HeadLimits) -> Event {
        if self.awaiting_body {
            return Event::Partial;
        }
        if let Some(e) = self.failed.take() {
            self.body = None;
            return Event::Error(e);
        }
        if let Some(pending) = self.body.as_mut() {
            return match pending.decoder.feed(&self.inbuf, &mut pending.body) {
                Err(e) => {
                    self.body = None;
                    Event::Error(e)
                }
                Ok(used) => {
                    self.inbuf.drain(..used);
                    if !pending.decoder.is_done() {
                        return Event::Partial;
                    }
                    let Some(done) = self.body.take() else {
                        return Event::Partial;
                    };
                    // A big body passed through `inbuf`; an idle connection keeps no such buffer.
                    self.inbuf.shrink_to(IDLE_INBUF);
                    Event::Request(done.head, done.body)
                }
            };
        }
        match parse_head(&self.inbuf, limits) {
            Err(e) => Event::Error(e),
            Ok(None) => Event::Partial,
            Ok(Some((head, used))) => {
                self.inbuf.drain(..used);
                if head.framing == Framing::Empty {
                    return Event::Request(head, Vec::new());
                }
                self.awaiting_body = true;
                Event::Head(head)
            }
        }
    }

    /// Starts reading the body of the head [`next`](RequestReader::next) returned, at most
    /// `limit` bytes; a declared length over it is refused before a byte of it is read.
    pub fn start_body(&mut self, head: Head, limit: usize) -> Result<(), HttpError> {
        self.awaiting_body = false;
        let decoder = match head.framing {
            Framing::Length(n) if n > limit as u64 => {
                return Err(HttpError::BodyTooLarge { limit })
            }
            Framing::Length(n) => BodyReader::length(n, limit),
            Framing::Chunked => BodyReader::chunked(limit),
            Framing::Empty => BodyReader::length(0, limit),
        };
        self.body = Some(PendingBody {
            head,
            decoder,
            body: Vec::new(),
            moved: 0,
        });
        Ok(())
    }

    /// Body bytes read so far of the body being read (its progress, for the minimum rate).
    pub fn body_read(&self) -> Option<usize> {
        self.body
            .as_ref()
            .map(|pending| pending.moved + pending.body.len())
    }

    /// How many bytes of a `Content-Length` body the caller may read into the body's place
    /// itself ([`received_elsewhere`](RequestReader::received_elsewhere)), bypassing the
    /// reader: all that is still to come, once nothing of it waits here (nothing buffered, no
    /// decoded bytes left to move). `None` when bytes must go through [`push`](Self::push).
    pub fn length_left(&self) -> Option<usize> {
        let pending = self.body.as_ref()?;
        if !self.inbuf.is_empty() || self.failed.is_some() || !pending.body.is_empty() {
            return None;
        }
        let left = pending.decoder.length_left()?;
        usize::try_from(left).ok().filter(|&left| left > 0)
    }

    /// Counts `n` body bytes the caller read into the body's place itself (at most
    /// [`length_left`](RequestReader::length_left)): they are moved, as if pushed and then
    /// [`move_decoded`](RequestReader::move_decoded).
    pub fn received_elsewhere(&mut self, n: usize) {
        if let Some(pending) = self.body.as_mut() {
            pending.decoder.received_elsewhere(n);
            pending.moved += n;
        }
    }

    /// Hands the body bytes decoded so far to `to` (a big body's file) and forgets them; the
    /// complete request then carries only the bytes decoded after the last move.
    pub fn move_decoded<E>(&mut self, to: &mut dyn FnMut(&[u8]) -> Result<(), E>) -> Result<(), E> {
        let Some(pending) = self.body.as_mut() else {
            return Ok(());
        };
        to(&pending.body)?;
        pending.moved += pending.body.len();
        pending.body.clear();
        Ok(())
    }

    /// Whether part of a request has arrived (a deadline then earns a 408, not a silent close).
    pub fn is_mid_request(&self) -> bool {
        self.body.is_some() || self.awaiting_body || !self.inbuf.is_empty()
    }

    /// Whether bytes beyond the current request are already buffered (a pipelined request,
    /// or body bytes sent without waiting for `100 Continue`).
    pub fn has_buffered(&self) -> bool {
        !self.inbuf.is_empty()
    }

    /// Forgets everything (after an error, or when the connection stops reading).
    pub fn clear(&mut self) {
        *self = RequestReader::default();
    }
}

/// One request read from a stream, or the error that ended it.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    /// A whole request.
    Request(Head, Vec<u8>),
    /// The stream broke HTTP here; nothing after it is read.
    Error(HttpError),
}

/// Drives a [`RequestReader`] over `pieces` (the stream as it arrived) as a connection does,
/// giving every body `max_body`; returns every request read, in order.
pub fn read_stream<'a>(
    pieces: impl IntoIterator<Item = &'a [u8]>,
    limits: &HeadLimits,
    max_body: usize,
) -> Vec<Parsed> {
    let mut reader = RequestReader::default();
    let mut parsed = Vec::new();
    for piece in pieces {
        reader.push(piece);
        loop {
            match reader.next(limits) {
                Event::Partial => break,
                Event::Head(head) => {
                    if let Err(e) = reader.start_body(head, max_body) {
                        parsed.push(Parsed::Error(e));
                        return parsed;
                    }
                }
                Event::Request(head, body) => parsed.push(Parsed::Request(head, body)),
                Event::Error(e) => {
                    parsed.push(Parsed::Error(e));
                    return parsed;
                }
            }
        }
    }
    parsed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_head_waits_for_its_body_decision_and_pipelined_bytes_stay() {
        let limits = HeadLimits::default();
        let mut reader = RequestReader::default();
        reader.push(b"POST /a HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nab");
        let Event::Head(head) = reader.next(&limits) else {
            panic!("a head");
        };
        assert_eq!(
            reader.next(&limits),
            Event::Partial,
            "nothing until the body starts"
        );
        assert!(reader.is_mid_request());
        reader.start_body(head, 10).expect("fits");
        assert_eq!(reader.next(&limits), Event::Partial);
        assert_eq!(reader.body_read(), Some(2));
        reader.push(b"cGET / HTTP/1.1\r\nHost: h\r\n\r\n");
        let Event::Request(_, body) = reader.next(&limits) else {
            panic!("a request");
        };
        assert_eq!(body, b"abc");
        assert!(reader.has_buffered());
        assert!(
            matches!(reader.next(&limits), Event::Request(head, body) if head.method == "GET" && body.is_empty())
        );
        assert!(!reader.is_mid_request());
    }

    #[test]
    fn a_length_body_read_elsewhere_counts_and_ends_the_request() {
        let limits = HeadLimits::default();
        let mut reader = RequestReader::default();
        reader.push(b"POST /a HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\nab");
        let Event::Head(head) = reader.next(&limits) else {
            panic!("a head");
        };
        reader.start_body(head, 10).expect("fits");
        assert_eq!(reader.length_left(), None, "decoded bytes wait to be moved");
        assert_eq!(reader.next(&limits), Event::Partial);
        reader
            .move_decoded(&mut |_| Ok::<(), ()>(()))
            .expect("moved");
        assert_eq!(reader.length_left(), Some(8));
        reader.received_elsewhere(5);
        assert_eq!(
            (reader.length_left(), reader.body_read()),
            (Some(3), Some(7))
        );
        reader.received_elsewhere(3);
        assert_eq!(reader.length_left(), None, "nothing left");
        assert!(
            matches!(reader.next(&limits), Event::Request(_, body) if body.is_empty()),
            "complete, its bytes all elsewhere"
        );
        // A chunked body's bytes must be decoded: never read elsewhere.
        reader.push(b"POST /a HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n");
        let Event::Head(head) = reader.next(&limits) else {
            panic!("a head");
        };
        reader.start_body(head, 10).expect("fits");
        assert_eq!(reader.length_left(), None);
    }

    #[test]
    fn a_declared_length_over_the_limit_is_refused_before_its_body() {
        let mut reader = RequestReader::default();
        reader.push(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 11\r\n\r\n");
        let Event::Head(head) = reader.next(&HeadLimits::default()) else {
            panic!("a head");
        };
        assert_eq!(
            reader.start_body(head, 10),
            Err(HttpError::BodyTooLarge { limit: 10 })
        );
    }

    #[test]
    fn the_room_to_read_stops_past_the_head_limit() {
        let limits = HeadLimits {
            request_line: 10,
            header_block: 10,
        };
        let mut reader = RequestReader::default();
        assert_eq!(reader.room(&limits, 65536), limits.max_head() + 1);
        reader.push(&[b'G'; 30]);
        assert_eq!(reader.room(&limits, 65536), 1);
    }
}
