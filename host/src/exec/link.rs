//! The executor's end of its socket to the worker: frames in (blocking, with a backlog of the
//! ones read while a call ran), frames out (small whole answers held while more requests are
//! already read, so several go in one write), and, while a call streams, a look without
//! blocking for the worker's `Cancel` of that call (its client left), so a plugin or a program
//! stops producing for nobody. A request's body file comes with its frame (read with
//! `exec::fds`); a big answer goes as a file, the request's own when the plugin gave back the
//! body it was given, untouched.

use std::collections::VecDeque;
use std::io::{self, IoSlice, Write};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use crate::exec::fds;
use crate::exec::frame::{self, FrameError, FrameReader, Message};

/// A streamed answer's downstream: the worker, and whether it wants the rest.
pub trait Downstream: Write {
    /// Whether the worker cancelled the call being answered (or is gone). Never blocks.
    fn cancelled(&mut self) -> bool;
}

/// How reading from the worker ended.
#[derive(Debug)]
pub enum LinkEnd {
    /// End of file, or the socket failed: the worker retired us, or died.
    Closed,
    /// It sent bytes that are not frames.
    Broken(FrameError),
}

/// The executor's socket and what was read from it but not handled yet.
pub struct WorkerLink {
    socket: UnixStream,
    reader: FrameReader,
    backlog: VecDeque<Message>,
    buffer: Vec<u8>,
    /// Requests read so far: a request's number is its place in this count (from 1), the
    /// number a `Cancel` names.
    requests: u64,
    /// The number of the call being answered now.
    current: u64,
    /// A `Cancel` for the current call came (or the worker went away).
    cancelled: bool,
    /// Whole answers held back while more requests wait in the backlog, written together
    /// before this end blocks or writes anything else (at most [`HELD_MAX`] bytes).
    held: Vec<u8>,
    /// When the current call was taken from the backlog.
    taken_at: Instant,
}

/// The most bytes of whole answers held back for one write.
const HELD_MAX: usize = 64 * 1024;
/// An answer is held only after a call this quick: the next call, expected as quick, is all
/// it waits for. A slower call's answer goes at once (it would wait a whole call otherwise).
const QUICK_CALL: Duration = Duration::from_micros(100);

impl WorkerLink {
    /// The link over `socket`.
    pub fn new(socket: UnixStream) -> WorkerLink {
        WorkerLink {
            socket,
            reader: FrameReader::default(),
            backlog: VecDeque::new(),
            buffer: vec![0u8; 64 * 1024],
            requests: 0,
            current: 0,
            cancelled: false,
            held: Vec::new(),
            taken_at: Instant::now(),
        }
    }

    /// Sends a whole answer's frame: after a quick call, held back with the ones before it
    /// while more requests are already read (they will be answered soon), written with them
    /// otherwise (copied only when there are answers held to join).
    pub fn send_whole(&mut self, head: &[u8], body: &[u8]) -> io::Result<()> {
        let fits = self.held.len() + head.len() + body.len() <= HELD_MAX;
        let hold = fits && self.taken_at.elapsed() < QUICK_CALL && self.more_requests_read();
        if hold || (fits && !self.held.is_empty()) {
            self.held.extend_from_slice(head);
            self.held.extend_from_slice(body);
            return match hold {
                true => Ok(()),
                false => self.flush_held(),
            };
        }
        self.flush_held()?;
        frame::send(&mut self.socket, head, body)
    }

    /// Sends a whole answer's frame (`head` made by `frame::response`): a body big enough goes
    /// as a file, the others as [`send_whole`](WorkerLink::send_whole) sends them.
    pub fn send_answer(&mut self, mut head: Vec<u8>, body: &[u8]) -> io::Result<()> {
        let Some(file) = crate::bodies::answer_file(body) else {
            return self.send_whole(&head, body);
        };
        frame::mark_by_file(&mut head);
        self.flush_held()?;
        // The file goes with the head's first write; whatever of the head is left, after it.
        let sent = loop {
            match fds::send(self.socket.as_fd(), &[IoSlice::new(&head)], &[file.fd()]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        };
        frame::send(&mut self.socket, &head[sent..], &[])
    }

    /// Whether a request (or a batch) already read waits to be taken.
    fn more_requests_read(&self) -> bool {
        self.backlog
            .iter()
            .any(|m| matches!(m, Message::Request(..) | Message::Batch(_)))
    }

    /// Writes the answers held back, if any.
    fn flush_held(&mut self) -> io::Result<()> {
        if self.held.is_empty() {
            return Ok(());
        }
        let result = frame::send(&mut self.socket, &self.held, &[]);
        self.held.clear();
        result
    }

    /// The next frame from the worker (blocking). A `Request` becomes the current call (a
    /// `Cancel` left over for an earlier call is dropped here).
    pub fn receive(&mut self) -> Result<Message, LinkEnd> {
        loop {
            while let Some(message) = self.backlog.pop_front() {
                match message {
                    Message::Cancel(_) => continue,
                    Message::Request(..) => {
                        self.requests += 1;
                        self.current = self.requests;
                        self.cancelled = false;
                        self.taken_at = Instant::now();
                        return Ok(message);
                    }
                    other => return Ok(other),
                }
            }
            // Nothing more to answer now: what was held goes before this end waits.
            self.flush_held().map_err(|_| LinkEnd::Closed)?;
            self.fill(true)?;
        }
    }

    /// Reads what the socket has (waiting for it when `block`) into the backlog.
    fn fill(&mut self, block: bool) -> Result<(), LinkEnd> {
        let mut messages = Vec::new();
        let mut files = Vec::new();
        let socket = self.socket.as_fd();
        // Never a blocking `recv`: a waiting end is woken by `wait_readable` only for bytes.
        let read = match (block, self.reader.direct()) {
            (_, Err(e)) => return Err(LinkEnd::Broken(e)),
            (true, Ok(Some(body))) => {
                fds::recv(socket, body, libc::MSG_DONTWAIT, &mut files).map(|n| (n, true))
            }
            (_, Ok(_)) => fds::recv(socket, &mut self.buffer, libc::MSG_DONTWAIT, &mut files)
                .map(|n| (n, false)),
        };
        self.reader
            .take_files(&mut files)
            .map_err(LinkEnd::Broken)?;
        let (n, direct) = match read {
            Ok((0, _)) => return Err(LinkEnd::Closed),
            Ok(read) => read,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock && block => {
                return match fds::wait_readable(socket) {
                    Err(e) if e.kind() != io::ErrorKind::Interrupted => Err(LinkEnd::Closed),
                    _ => Ok(()),
                };
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(_) => return Err(LinkEnd::Closed),
        };
        let result = if direct {
            self.reader.filled(n).map(|m| messages.extend(m))
        } else {
            self.reader.feed_all(&self.buffer[..n], &mut messages)
        };
        result.map_err(LinkEnd::Broken)?;
        self.backlog.extend(messages);
        Ok(())
    }
}

impl Downstream for WorkerLink {
    fn cancelled(&mut self) -> bool {
        if self.cancelled {
            return true;
        }
        // The worker's bytes between frames are bounded (up to 15 requests written ahead, of
        // 64 KiB at most each, and a `Cancel`); read what is there, keep the rest for later.
        if let Err(end) = self.fill(false) {
            if let LinkEnd::Broken(e) = end {
                eprintln!("executor: {e}");
            }
            self.cancelled = true;
            return true;
        }
        let current = self.current;
        let before = self.backlog.len();
        self.backlog
            .retain(|m| !matches!(m, Message::Cancel(n) if *n == current));
        self.cancelled = self.backlog.len() != before;
        self.cancelled
    }
}

/// Frames written through `Write` (a streamed answer's, a program's) go after the answers
/// held before them.
impl Write for WorkerLink {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.flush_held()?;
        self.socket.write(bytes)
    }

    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        self.flush_held()?;
        self.socket.write_vectored(bufs)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.flush_held()?;
        self.socket.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use plugin_api::{Request, Response};

    /// What the worker's end can read now, without waiting.
    fn readable(socket: &mut UnixStream) -> Vec<u8> {
        let mut all = Vec::new();
        let mut buffer = [0u8; 4096];
        let mut files = Vec::new();
        loop {
            match fds::recv(socket.as_fd(), &mut buffer, libc::MSG_DONTWAIT, &mut files) {
                Ok(0) | Err(_) => return all,
                Ok(n) => all.extend_from_slice(&buffer[..n]),
            }
        }
    }

    fn frames(bytes: &[u8]) -> Vec<Message> {
        let mut out = Vec::new();
        FrameReader::default()
            .feed_all(bytes, &mut out)
            .expect("whole frames");
        out
    }

    /// A link whose worker end has written two requests, and that worker end.
    fn link_with_two_requests() -> (WorkerLink, UnixStream) {
        let (executor_end, mut worker_end) = UnixStream::pair().expect("a socketpair");
        for path in ["/echo/1", "/echo/2"] {
            let request = Request::new("POST", path).with_body("x");
            frame::send(
                &mut worker_end,
                &frame::request(&request, 1000),
                &request.body,
            )
            .expect("written");
        }
        (WorkerLink::new(executor_end), worker_end)
    }

    #[test]
    fn a_quick_answer_waits_for_the_requests_already_read_then_all_go_together() {
        let (mut link, mut worker_end) = link_with_two_requests();
        let answer = Response::text("x");
        let head = frame::response(&answer);

        let since = Instant::now();
        assert!(matches!(link.receive(), Ok(Message::Request(..))));
        // Both requests came in one read: the second waits in the backlog.
        link.send_whole(&head, &answer.body).expect("sent");
        let quick = since.elapsed() < QUICK_CALL;
        let first = readable(&mut worker_end);
        match quick {
            // Held: nothing reaches the worker while the next request is already here.
            true => assert!(first.is_empty(), "a quick answer went alone"),
            // The call was not quick (a busy machine): its answer went at once.
            false => assert_eq!(frames(&first).len(), 1),
        }

        assert!(matches!(link.receive(), Ok(Message::Request(..))));
        link.send_whole(&head, &answer.body).expect("sent");
        let rest = readable(&mut worker_end);
        let expected = if quick { 2 } else { 1 };
        let answers = frames(&rest);
        assert_eq!(
            answers.len(),
            expected,
            "the backlog is empty: all held go now"
        );
        assert!(answers.iter().all(|m| matches!(m, Message::Response(_))));
    }

    #[test]
    fn a_streamed_frame_goes_after_the_held_answers_never_before() {
        let (mut link, mut worker_end) = link_with_two_requests();
        let answer = Response::text("x");
        assert!(matches!(link.receive(), Ok(Message::Request(..))));
        link.send_whole(&frame::response(&answer), &answer.body)
            .expect("sent");
        assert!(matches!(link.receive(), Ok(Message::Request(..))));
        frame::send(
            &mut link,
            &frame::stream_head(&Response::status(200), None),
            &[],
        )
        .expect("sent");
        let order: Vec<&'static str> = frames(&readable(&mut worker_end))
            .iter()
            .map(Message::name)
            .collect();
        // Held or not (a busy machine), the answer written first is read first.
        assert_eq!(order, ["Response", "Head"]);
    }
}
