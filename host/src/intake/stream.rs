//! A streamed response as a connection writes it: the head, then the body's pieces as its
//! executor sends them (chunked when no length is known and the client speaks HTTP/1.1, else as
//! they are), bounded by a high-water mark that holds the executor back while the client reads
//! slowly.

use std::time::Duration;

/// Unwritten bytes a stream may hold before its executor is read no further.
pub const HIGH_WATER: usize = 256 * 1024;
/// Written bytes kept at the front of the buffer before it is compacted.
const COMPACT_AFTER: usize = 64 * 1024;

/// How the body's end is told to the client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Delimit {
    /// `Content-Length` was sent: pieces go as they are.
    Length,
    /// `Transfer-Encoding: chunked`: each piece is a chunk, then the last chunk.
    Chunked,
    /// Neither (an HTTP/1.0 client): the close ends the body.
    Close,
    /// No body is sent (`HEAD`, 204, 304): pieces are dropped.
    Nothing,
}

/// A streamed response being written.
pub struct Stream {
    /// Bytes to write; `written` of them are written.
    pending: Vec<u8>,
    written: usize,
    /// Bytes written since the client last had nothing to take (its minimum-rate progress).
    pub moved: usize,
    delimit: Delimit,
    /// The executor sent `End`.
    ended: bool,
    /// Close the connection once it is written.
    pub close_after: bool,
    /// The longest the client may leave pending bytes untaken.
    pub idle: Duration,
    /// Body bytes passed on.
    pub body_bytes: u64,
    /// The length its head declared, if it did: more, or less by the end, breaks the stream.
    declared: Option<u64>,
}

impl Stream {
    /// A stream whose `head` is already written out; `declared` is the length its head sent.
    pub fn new(
        head: Vec<u8>,
        delimit: Delimit,
        declared: Option<u64>,
        close_after: bool,
        idle: Duration,
    ) -> Stream {
        Stream {
            declared: declared.filter(|_| delimit == Delimit::Length),
            pending: head,
            written: 0,
            moved: 0,
            delimit,
            ended: false,
            close_after: close_after || delimit == Delimit::Close,
            idle,
            body_bytes: 0,
        }
    }

    /// Adds the next piece of the body; `false` when it goes past the declared length (the
    /// stream is broken: the client would read the excess as its next response).
    pub fn push(&mut self, piece: &[u8]) -> bool {
        if piece.is_empty() || self.delimit == Delimit::Nothing || self.ended {
            return true;
        }
        self.body_bytes += piece.len() as u64;
        if self.declared.is_some_and(|n| self.body_bytes > n) {
            return false;
        }
        self.compact();
        if self.delimit == Delimit::Chunked {
            self.pending
                .extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
            self.pending.extend_from_slice(piece);
            self.pending.extend_from_slice(b"\r\n");
        } else {
            self.pending.extend_from_slice(piece);
        }
        true
    }

    /// The body is complete: the last chunk, if chunked. `false` when it is shorter than its
    /// declared length (broken: only closing the connection can tell the client).
    pub fn finish(&mut self) -> bool {
        if self.ended {
            return true;
        }
        self.ended = true;
        if self.delimit == Delimit::Chunked {
            self.compact();
            self.pending.extend_from_slice(b"0\r\n\r\n");
        }
        self.declared.is_none_or(|n| self.body_bytes == n)
    }

    /// What is left to write.
    pub fn unwritten(&self) -> &[u8] {
        &self.pending[self.written..]
    }

    /// `n` more bytes were written.
    pub fn wrote(&mut self, n: usize) {
        self.written += n;
        self.moved += n;
        if self.written == self.pending.len() {
            self.pending.clear();
            self.written = 0;
        }
    }

    /// Whether the executor may be read for more.
    pub fn has_room(&self) -> bool {
        self.pending.len() - self.written < HIGH_WATER
    }

    /// Whether everything the client was given is written and more is to come: the stream
    /// waits on its executor, not on the client.
    pub fn waits_on_server(&self) -> bool {
        self.unwritten().is_empty() && !self.ended
    }

    /// Whether it ended and is all written.
    pub fn is_done(&self) -> bool {
        self.ended && self.unwritten().is_empty()
    }

    fn compact(&mut self) {
        if self.written >= COMPACT_AFTER {
            self.pending.drain(..self.written);
            self.written = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(stream: &mut Stream) -> Vec<u8> {
        let out = stream.unwritten().to_vec();
        stream.wrote(out.len());
        out
    }

    #[test]
    fn chunked_pieces_and_the_last_chunk() {
        let mut s = Stream::new(
            b"H\r\n\r\n".to_vec(),
            Delimit::Chunked,
            None,
            false,
            Duration::ZERO,
        );
        s.push(b"hello");
        s.push(b"");
        assert_eq!(drain(&mut s), b"H\r\n\r\n5\r\nhello\r\n");
        assert!(s.waits_on_server() && !s.is_done());
        s.push(&[b'x'; 17]);
        s.finish();
        let mut tail = b"11\r\n".to_vec();
        tail.extend([b'x'; 17]);
        tail.extend(b"\r\n0\r\n\r\n");
        assert_eq!(drain(&mut s), tail);
        assert!(s.is_done() && !s.close_after);
    }

    #[test]
    fn head_only_drops_pieces_and_close_delimited_closes() {
        let mut s = Stream::new(b"H".to_vec(), Delimit::Nothing, None, false, Duration::ZERO);
        s.push(b"body");
        s.finish();
        assert_eq!(drain(&mut s), b"H");
        let s = Stream::new(Vec::new(), Delimit::Close, None, false, Duration::ZERO);
        assert!(s.close_after);
    }

    #[test]
    fn a_declared_length_is_held_to() {
        let mut s = Stream::new(Vec::new(), Delimit::Length, Some(4), false, Duration::ZERO);
        assert!(s.push(b"abc"));
        assert!(!s.finish(), "one byte short");
        let mut s = Stream::new(Vec::new(), Delimit::Length, Some(4), false, Duration::ZERO);
        assert!(s.push(b"abcd"));
        assert!(!s.push(b"e"), "one byte over");
        let mut s = Stream::new(Vec::new(), Delimit::Length, Some(4), false, Duration::ZERO);
        assert!(s.push(b"ab") && s.push(b"cd") && s.finish());
    }

    #[test]
    fn the_high_water_mark_counts_unwritten_bytes_only() {
        let mut s = Stream::new(Vec::new(), Delimit::Length, None, false, Duration::ZERO);
        let piece = vec![0u8; HIGH_WATER / 4];
        for _ in 0..4 {
            assert!(s.has_room());
            s.push(&piece);
        }
        assert!(!s.has_room());
        s.wrote(HIGH_WATER / 2);
        assert!(s.has_room());
        // Writing and pushing forever keeps the buffer near the mark, not growing.
        for _ in 0..64 {
            s.push(&piece);
            s.wrote(piece.len());
        }
        assert!(s.pending.len() <= HIGH_WATER + COMPACT_AFTER + piece.len());
    }
}
