//! Decodes a request body, sans IO: `Content-Length` bytes, or `chunked` (RFC 9112 section 7.1).
//!
//! [`BodyReader::feed`] takes whatever bytes arrived, appends the decoded body to the caller's
//! buffer, and says how many input bytes it used, so bytes of a pipelined next request are left
//! for the head parser. The body limit is enforced while decoding: a chunked body cannot grow
//! past it, whatever its chunk sizes claim. Trailer lines are checked as field lines by the
//! head parser's rules (`parse::check_trailer_line`), then dropped.

use super::error::HttpError;
use super::parse::check_trailer_line;

/// Longest chunk-size line (size, extensions) and longest trailer section we accept.
const MAX_CHUNK_LINE: usize = 4096;
const MAX_TRAILERS: usize = 16 * 1024;

/// Where the chunked decoder is in the grammar; each state names what it waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Chunked {
    /// Hex digits of a chunk size (`digits` seen so far).
    Size { size: u64, digits: usize },
    /// Whitespace or extensions after the size, up to the CR.
    Extension { size: u64 },
    /// The LF ending a chunk-size line.
    SizeLf { size: u64 },
    /// Chunk data still to come.
    Data { remaining: u64 },
    /// The CR after chunk data.
    DataCr,
    /// The LF after chunk data.
    DataLf,
    /// The start of a trailer line, or the CR of the final empty line.
    TrailerStart,
    /// Inside a trailer field line, up to its CR.
    Trailer,
    /// The LF ending a trailer line.
    TrailerLf,
    /// The LF of the final empty line.
    FinalLf,
    /// The whole body has been read.
    Done,
}

/// Reads one request body.
#[derive(Debug)]
pub struct BodyReader {
    state: Framing,
    /// The largest decoded body allowed.
    limit: usize,
    /// Body bytes decoded so far: the limit counts these, not what the caller's buffer still
    /// holds (a big body's bytes are moved out to a file as they come).
    decoded: usize,
    /// Bytes of the current chunk line or trailer section, to bound them.
    line_bytes: usize,
    /// The trailer line being read, to check once its LF arrives (at most the trailer
    /// section's cap; empty outside a trailer line).
    trailer_line: Vec<u8>,
}

#[derive(Debug)]
enum Framing {
    Length { remaining: u64 },
    Chunked(Chunked),
}

impl BodyReader {
    /// A reader for exactly `length` bytes. The caller has already refused lengths over `limit`.
    pub fn length(length: u64, limit: usize) -> BodyReader {
        BodyReader {
            state: Framing::Length { remaining: length },
            limit,
            decoded: 0,
            line_bytes: 0,
            trailer_line: Vec::new(),
        }
    }

    /// A reader for a chunked body of at most `limit` decoded bytes.
    pub fn chunked(limit: usize) -> BodyReader {
        BodyReader {
            state: Framing::Chunked(Chunked::Size { size: 0, digits: 0 }),
            limit,
            decoded: 0,
            line_bytes: 0,
            trailer_line: Vec::new(),
        }
    }

    /// Whether the whole body has been read.
    pub fn is_done(&self) -> bool {
        matches!(
            self.state,
            Framing::Length { remaining: 0 } | Framing::Chunked(Chunked::Done)
        )
    }

    /// The bytes still to come of a `Content-Length` body (`None` for a chunked one, whose
    /// bytes must be decoded).
    pub fn length_left(&self) -> Option<u64> {
        match self.state {
            Framing::Length { remaining } => Some(remaining),
            Framing::Chunked(_) => None,
        }
    }

    /// Counts `n` bytes of a `Content-Length` body as read without passing through
    /// [`feed`](BodyReader::feed) (the caller read them into the body's place itself); at most
    /// [`length_left`](BodyReader::length_left) count.
    pub fn received_elsewhere(&mut self, n: usize) {
        if let Framing::Length { remaining } = &mut self.state {
            *remaining = remaining.saturating_sub(n as u64);
        }
    }

    /// Decodes from `input`, appending body bytes to `body`. Returns how many bytes of `input`
    /// were used (all of them unless the body ended inside `input`).
    pub fn feed(&mut self, input: &[u8], body: &mut Vec<u8>) -> Result<usize, HttpError> {
        match &mut self.state {
            Framing::Length { remaining } => {
                let take = input
                    .len()
                    .min(usize::try_from(*remaining).unwrap_or(usize::MAX));
                body.extend_from_slice(&input[..take]);
                *remaining -= take as u64;
                Ok(take)
            }
            Framing::Chunked(_) => self.feed_chunked(input, body),
        }
    }

    fn feed_chunked(&mut self, input: &[u8], body: &mut Vec<u8>) -> Result<usize, HttpError> {
        const BAD: HttpError = HttpError::BadRequest("malformed chunked body");
        let Framing::Chunked(state) = &mut self.state else {
            return Ok(0);
        };
        let mut at = 0;
        while at < input.len() {
            let byte = input[at];
            *state = match *state {
                Chunked::Done => return Ok(at),
                Chunked::Data { remaining } => {
                    let take =
                        (input.len() - at).min(usize::try_from(remaining).unwrap_or(usize::MAX));
                    body.extend_from_slice(&input[at..at + take]);
                    at += take;
                    self.decoded += take;
                    let remaining = remaining - take as u64;
                    *state = if remaining == 0 {
                        Chunked::DataCr
                    } else {
                        Chunked::Data { remaining }
                    };
                    continue;
                }
                Chunked::Size { size, digits } => match (byte as char).to_digit(16) {
                    Some(digit) if digits < 16 => Chunked::Size {
                        size: size << 4 | u64::from(digit),
                        digits: digits + 1,
                    },
                    Some(_) => return Err(HttpError::BodyTooLarge { limit: self.limit }),
                    None if digits == 0 => return Err(BAD),
                    None if byte == b'\r' => Chunked::SizeLf { size },
                    None if matches!(byte, b';' | b' ' | b'\t') => Chunked::Extension { size },
                    None => return Err(BAD),
                },
                Chunked::Extension { size } => match byte {
                    b'\r' => Chunked::SizeLf { size },
                    b'\n' | 0 => return Err(BAD),
                    _ => Chunked::Extension { size },
                },
                Chunked::SizeLf { size } if byte == b'\n' => {
                    self.line_bytes = 0;
                    if size == 0 {
                        Chunked::TrailerStart
                    } else if size > self.limit.saturating_sub(self.decoded) as u64 {
                        return Err(HttpError::BodyTooLarge { limit: self.limit });
                    } else {
                        Chunked::Data { remaining: size }
                    }
                }
                Chunked::DataCr if byte == b'\r' => Chunked::DataLf,
                Chunked::DataLf if byte == b'\n' => Chunked::Size { size: 0, digits: 0 },
                Chunked::TrailerStart if byte == b'\r' => Chunked::FinalLf,
                Chunked::TrailerStart | Chunked::Trailer if byte == b'\r' => {
                    self.trailer_line.push(byte);
                    Chunked::TrailerLf
                }
                Chunked::TrailerStart | Chunked::Trailer if byte != b'\n' && byte != 0 => {
                    self.trailer_line.push(byte);
                    Chunked::Trailer
                }
                Chunked::TrailerLf if byte == b'\n' => {
                    self.trailer_line.push(byte);
                    check_trailer_line(&self.trailer_line)?;
                    self.trailer_line.clear();
                    Chunked::TrailerStart
                }
                Chunked::FinalLf if byte == b'\n' => {
                    at += 1;
                    *state = Chunked::Done;
                    return Ok(at);
                }
                _ => return Err(BAD),
            };
            at += 1;
            self.line_bytes += 1;
            let cap = if matches!(
                state,
                Chunked::Trailer | Chunked::TrailerLf | Chunked::TrailerStart
            ) {
                MAX_TRAILERS
            } else {
                MAX_CHUNK_LINE
            };
            if self.line_bytes > cap {
                return Err(HttpError::BadRequest("chunk line or trailers too long"));
            }
        }
        Ok(at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `input` split into pieces of `step` bytes; returns the body and the unused rest.
    fn decode(input: &[u8], step: usize, limit: usize) -> Result<(Vec<u8>, Vec<u8>), HttpError> {
        let mut reader = BodyReader::chunked(limit);
        let mut body = Vec::new();
        let mut at = 0;
        while at < input.len() && !reader.is_done() {
            let end = (at + step).min(input.len());
            at += reader.feed(&input[at..end], &mut body)?;
        }
        if !reader.is_done() {
            return Err(HttpError::BadRequest("incomplete"));
        }
        Ok((body, input[at..].to_vec()))
    }

    #[test]
    fn chunked_bodies_decode_at_any_split() {
        let table: &[(&str, &str, &str)] = &[
            ("0\r\n\r\n", "", ""),
            ("5\r\nhello\r\n0\r\n\r\nNEXT", "hello", "NEXT"),
            (
                "3;ext=1\r\nabc\r\nA \r\n0123456789\r\n0\r\n\r\n",
                "abc0123456789",
                "",
            ),
            (
                "2\r\nhi\r\n0\r\nX-Trailer: 1\r\nY: 2\r\n\r\nGET",
                "hi",
                "GET",
            ),
            ("000002\r\nhi\r\n0\r\n\r\n", "hi", ""),
        ];
        for (raw, body, rest) in table {
            for step in [1, 2, 3, 7, 1000] {
                let (got, left) = decode(raw.as_bytes(), step, 1024).expect(raw);
                assert_eq!(
                    (got.as_slice(), left.as_slice()),
                    (body.as_bytes(), rest.as_bytes()),
                    "{raw:?} step {step}"
                );
            }
        }
    }

    /// Regression: the limit once counted what the caller's buffer held, so a chunked body
    /// whose bytes were moved out to a file as they came (a big body) could grow past it.
    #[test]
    fn the_limit_counts_bytes_moved_out_of_the_buffer() {
        let mut reader = BodyReader::chunked(1000);
        let mut body = Vec::new();
        let chunk = format!("190\r\n{}\r\n", "x".repeat(400));
        for round in 0..3 {
            let fed = reader.feed(chunk.as_bytes(), &mut body);
            body.clear();
            match round {
                0 | 1 => assert_eq!(fed, Ok(chunk.len()), "800 bytes fit"),
                _ => assert_eq!(fed, Err(HttpError::BodyTooLarge { limit: 1000 })),
            }
        }
    }

    #[test]
    fn malformed_or_oversized_chunked_bodies_are_refused() {
        let bad = HttpError::BadRequest("malformed chunked body");
        let too_large = HttpError::BodyTooLarge { limit: 1024 };
        let table: &[(&str, HttpError)] = &[
            ("x\r\n", bad),
            ("\r\n", bad),
            ("5\nhello\r\n0\r\n\r\n", bad),
            ("5\r\nhelloXX0\r\n\r\n", bad),
            ("5\r\nhello\r\n0\r\n\n", bad),
            ("ffffffffffffffffff\r\n", too_large),
            ("401\r\n", too_large),
            ("400\r\n", HttpError::BadRequest("incomplete")),
        ];
        for (raw, expected) in table {
            assert_eq!(
                decode(raw.as_bytes(), 1, 1024).err(),
                Some(*expected),
                "{raw:?}"
            );
        }
        let long_ext = format!("1;{}\r\n", "e".repeat(5000));
        assert_eq!(
            decode(long_ext.as_bytes(), 100, 1024).err(),
            Some(HttpError::BadRequest("chunk line or trailers too long"))
        );
    }

    /// Issue 26: trailer lines were not checked, so `X : a`, a line with no colon, an obs-fold
    /// or a request line were taken as trailers. They are field lines, refused as a head's are,
    /// at the line (the rows without the final empty line are refused before it).
    #[test]
    fn trailer_lines_are_held_to_the_field_line_rules() {
        let name = HttpError::BadRequest("invalid trailer field name (or space before the colon)");
        let value = HttpError::BadRequest("invalid trailer field value (control character)");
        let table: &[(&str, HttpError)] = &[
            ("0\r\nX : a\r\n\r\n", name),
            ("0\r\nX\t: a\r\n", name),
            ("0\r\nX\r\n\r\n", name),
            ("0\r\n: a\r\n", name),
            ("0\r\n folded\r\n", name),
            ("0\r\nX: 1\r\n\t2\r\n\r\n", name),
            ("0\r\nX(y): 1\r\n", name),
            ("0\r\nTraileGET /echo HTTP/1.1\r\nHost: a\r\n\r\n", name),
            ("0\r\nX: a\x7fb\r\n", value),
            ("0\r\nX: a\x01\r\n", value),
        ];
        for (raw, expected) in table {
            for step in [1, 3, 1000] {
                assert_eq!(
                    decode(raw.as_bytes(), step, 1024).err(),
                    Some(*expected),
                    "{raw:?} step {step}"
                );
            }
        }
        for good in ["X:\r\n", "X: a b\t\r\n", "x-y_z.1~!: \u{e9}\r\nY:2\r\n"] {
            let raw = format!("1\r\na\r\n0\r\n{good}\r\nNEXT");
            let (body, rest) = decode(raw.as_bytes(), 1, 1024).expect(&raw);
            assert_eq!(
                (body.as_slice(), rest.as_slice()),
                (&b"a"[..], &b"NEXT"[..])
            );
        }
    }

    #[test]
    fn length_bodies_stop_at_their_length() {
        let mut reader = BodyReader::length(5, 10);
        let mut body = Vec::new();
        assert_eq!(reader.feed(b"hel", &mut body), Ok(3));
        assert!(!reader.is_done());
        assert_eq!(reader.feed(b"loGET", &mut body), Ok(2));
        assert!(reader.is_done());
        assert_eq!(body, b"hello");
    }
}
