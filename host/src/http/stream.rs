//! The parsing half of a connection without the socket: bytes arriving in any pieces go through
//! the head parser and the body decoder exactly as `conn` drives them. The property tests and
//! the fuzz target use it to check the two parsers together (any split gives the same result,
//! nothing panics, nothing grows without bound).

use super::body::BodyReader;
use super::error::HttpError;
use super::parse::{parse_head, Framing, Head, HeadLimits};

/// One request read from a stream, or the error that ended it.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    /// A whole request.
    Request(Head, Vec<u8>),
    /// The stream broke HTTP here; nothing after it is read.
    Error(HttpError),
}

/// Feeds `pieces` (the stream as it arrived) and returns every request read, in order. The
/// buffer of unparsed bytes never holds more than one head's limit plus one piece.
pub fn parse_stream<'a>(
    pieces: impl IntoIterator<Item = &'a [u8]>,
    limits: &HeadLimits,
    max_body: usize,
) -> Vec<Parsed> {
    let mut parsed = Vec::new();
    let mut buffer: Vec<u8> = Vec::new();
    let mut body: Option<(Head, BodyReader, Vec<u8>)> = None;
    for piece in pieces {
        buffer.extend_from_slice(piece);
        loop {
            if let Some((_, reader, content)) = body.as_mut() {
                match reader.feed(&buffer, content) {
                    Ok(used) => {
                        buffer.drain(..used);
                    }
                    Err(e) => {
                        parsed.push(Parsed::Error(e));
                        return parsed;
                    }
                }
                if !reader.is_done() {
                    break;
                }
                if let Some((head, _, content)) = body.take() {
                    parsed.push(Parsed::Request(head, content));
                }
                continue;
            }
            match parse_head(&buffer, limits) {
                Err(e) => {
                    parsed.push(Parsed::Error(e));
                    return parsed;
                }
                Ok(None) => break,
                Ok(Some((head, used))) => {
                    buffer.drain(..used);
                    let reader = match head.framing {
                        Framing::Empty => {
                            parsed.push(Parsed::Request(head, Vec::new()));
                            continue;
                        }
                        Framing::Length(n) if n > max_body as u64 => {
                            parsed.push(Parsed::Error(HttpError::BodyTooLarge));
                            return parsed;
                        }
                        Framing::Length(n) => BodyReader::length(n, max_body),
                        Framing::Chunked => BodyReader::chunked(max_body),
                    };
                    body = Some((head, reader, Vec::new()));
                }
            }
        }
        debug_assert!(buffer.len() <= limits.max_head() + piece.len());
    }
    parsed
}
