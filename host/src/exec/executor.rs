//! One executor process as the worker holds it: the child, its socket and output pipe (both in
//! intake's poll), the phase it is in, the calls written to it, and the non-blocking frame IO.
//! What the frames mean for versions and clients is the pool's business.

use std::collections::VecDeque;
use std::io::{self, IoSlice, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::process::ExitStatusExt;
use std::process::{Child, ExitStatus};
use std::time::{Duration, Instant};

use mio::net::UnixStream;
use mio::unix::SourceFd;
use mio::{Interest, Registry, Token};

use crate::exec::fds::{self, MAX_FDS};
use crate::exec::frame::{self, FrameError, FrameReader, Message};
use crate::exec::job::Job;
use crate::exec::output::Output;
use crate::exec::spawn;
use crate::exec::stats::Death;
use crate::ids::{ConnId, Generation, HandlerKind};
use crate::observe::log::Level;
use crate::warn;

/// Where an executor is in its life. Named for what it waits for.
#[derive(Debug)]
pub enum Phase {
    /// Waiting for `Ready` until the init deadline.
    ExpectReady {
        /// The init deadline.
        until: Instant,
    },
    /// Serving calls.
    Serving,
    /// Retired: its socket is closed once it holds no call; killed if still there at `until`.
    Retiring {
        /// When it is killed if still there (`None` while it finishes its calls).
        until: Option<Instant>,
    },
    /// Gone or killed; waiting to be reaped, with what to log then.
    ExpectExit {
        /// Why, as far as the pool knew when it gave up on it.
        why: DeathContext,
        /// When to try reaping it next.
        look: Instant,
    },
}

/// What the pool knew when an executor was found dead (logged once it is reaped).
#[derive(Debug, Clone)]
pub enum DeathContext {
    /// It died on its own during a call.
    MidCall,
    /// It died on its own between calls.
    Idle,
    /// It died, or refused, before saying `Ready`.
    AtStart(Option<String>),
    /// The pool killed it (deadline, init timeout, retirement); already logged.
    Killed(Death),
}

/// One call written (or being written) to an executor.
pub struct Call {
    /// The job, kept until answered (it goes back to the queue if never started).
    pub job: Job,
    /// The frame's head and metadata; the body follows from `job.request.body`, unless it
    /// goes as its file.
    pub head: Vec<u8>,
    /// Its body goes as the body's file (sent with the write that starts the call), not as
    /// bytes after the head.
    pub by_file: bool,
    /// The body's file went out (with a write that began before the call's bytes, perhaps).
    pub file_sent: bool,
    /// Bytes of head + body written so far.
    pub sent: usize,
    /// When it became the call the executor runs (the front of `calls`).
    pub started: Option<Instant>,
    /// How long it may run.
    pub deadline: Duration,
    /// The status of its streamed answer, once the `Head` came.
    pub streaming: Option<u16>,
    /// In a batch of `n` calls: `n` for the first (its time is the batch's), 0 for the others;
    /// 1 for a call on its own.
    pub batch_lead: u32,
    /// Its number: its place in the count of calls sent to this executor (from 1).
    pub number: u64,
    /// A `Cancel` was sent for it (its client left).
    pub cancelled: bool,
}

impl Call {
    /// Its bytes in the stream: the head, and the body unless it goes as a file.
    fn len(&self) -> usize {
        self.head.len() + self.inline_body().len()
    }

    /// The body bytes written after the head.
    fn inline_body(&self) -> &[u8] {
        match self.by_file {
            true => &[],
            false => &self.job.request.body,
        }
    }

    /// The body's file, while it is still to be sent (`Err` if a body said to go as a file
    /// has none: the frame would take the next call's file).
    fn file_to_send(&self) -> Result<Option<BorrowedFd<'_>>, Broken> {
        match self.by_file && !self.file_sent {
            true => crate::bodies::file_of(&self.job.request.body)
                .map(Some)
                .ok_or(Broken),
            false => Ok(None),
        }
    }
}

/// An executor process.
pub struct Executor {
    /// The version it serves.
    pub generation: Generation,
    child: Child,
    /// Its pid (also its process group).
    pub pid: u32,
    socket: UnixStream,
    /// Its stdout and stderr; `None` once closed.
    output: Option<Output>,
    /// Where it is in its life.
    pub phase: Phase,
    reader: FrameReader,
    /// Calls in order; the front is the one running. Invariant: empty unless `Serving` or
    /// `Retiring`.
    pub calls: VecDeque<Call>,
    /// When it was started.
    pub started_at: Instant,
    /// Calls it answered.
    pub answered: u64,
    /// Since when it holds no call (a replica idle long enough is retired).
    pub idle_since: Instant,
    /// Its lane's pause after its last call (its route's pace): it takes no call before this.
    /// A deadline the loop wakes for, not a sleep.
    pub resting_until: Option<Instant>,
    /// Calls sent to it so far (what numbers them).
    pub sent_calls: u64,
    /// A `Cancel` frame waiting for the end of the frames being written, and how much of it
    /// is written.
    cancel: Option<(Vec<u8>, usize)>,
    /// Frames may wait on its socket that were left unread (a streamed answer's pieces beyond
    /// one turn's share, or held back while the client's connection was full). Edge-triggered
    /// polling will not say so again: the pool reads it on a later turn.
    pub unread: bool,
    /// It has calls to write at the end of the loop's turn (the pool's `write_due`).
    pub write_due: bool,
    /// Its socket's poll token.
    token: Token,
    /// Its socket is watched for room to write: only while a write is left unfinished. (Were
    /// it always, every read the executor makes would wake the loop to say there is room.)
    watching_writes: bool,
    /// The request it died running, with its deadline, kept for a crash file until its exit
    /// status is known.
    pub crash: Option<(plugin_api::Request, Duration)>,
}

/// The executor's socket is broken: the process is gone or going.
#[derive(Debug)]
pub struct Broken;

/// How reading an executor's socket ended.
pub enum Received {
    /// Nothing more to read now.
    WouldBlock,
    /// End of file or a socket error: the process is gone or going.
    Gone,
    /// It sent bytes that are not a frame.
    Bad(FrameError),
    /// It sent more frames than it could owe (one per call, plus `Ready`): the first ones
    /// are in `out`, the rest were not read.
    TooMany,
    /// It sent a turn's share of streamed pieces; the rest waits (`unread` is set).
    Paused,
}

/// How far [`Executor::receive`] reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Drain {
    /// After a readiness event that did not say the executor's end closed: a read shorter
    /// than asked (and without files, which end a read early) left the socket empty, so no
    /// read is made only to hear it would block. Bytes that come later raise a new event.
    UntilShort,
    /// Until the socket says it would block: there was no event to go by (frames left unread
    /// earlier), or the end of the stream may be waiting behind the bytes.
    UntilBlocked,
}

/// The most parts (a head and a body per call) of one write of calls to an executor: every
/// call it may hold.
const WRITE_SLICES: usize = 2 * crate::exec::pool::PIPELINE_DEPTH;
/// The most bytes of streamed pieces read from one executor in one turn: a fast stream cannot
/// hold the loop, and a slow client holds at most about this much beyond its own buffer.
pub const PIECES_PER_TURN: usize = 256 * 1024;
/// What a streamed answer's frame counts against [`PIECES_PER_TURN`] at least (so at most
/// 4096 frames a turn).
const FRAME_COST: usize = 64;

impl Executor {
    /// Starts an executor for a version and registers its socket as `token` and its output
    /// as `token + 1`; it is expected to say `Ready` within `launch.init_timeout`.
    pub fn start(
        generation: Generation,
        launch: &spawn::Launch<'_>,
        token: usize,
        registry: &Registry,
    ) -> io::Result<Executor> {
        let init_until = Instant::now() + launch.init_timeout;
        let spawn::Spawned {
            mut child,
            socket,
            output,
        } = spawn::spawn(launch)?;
        let pid = child.id();
        let registered = socket
            .set_nonblocking(true)
            .and_then(|()| {
                let level = match launch.kind {
                    HandlerKind::Program => Level::Info,
                    HandlerKind::Native | HandlerKind::Cgi => Level::Warn,
                };
                Output::new(output, level)
            })
            .and_then(|output| {
                let mut socket = UnixStream::from_std(socket);
                registry.register(&mut socket, Token(token), Interest::READABLE)?;
                let watched = registry.register(
                    &mut SourceFd(&output.raw_fd()),
                    Token(token + 1),
                    Interest::READABLE,
                );
                if let Err(e) = watched {
                    let _ = registry.deregister(&mut socket);
                    return Err(e);
                }
                Ok((socket, output))
            });
        let (socket, output) = match registered {
            Ok(parts) => parts,
            Err(e) => {
                spawn::kill_group(pid);
                let _ = child.wait();
                return Err(e);
            }
        };
        Ok(Executor {
            generation,
            child,
            pid,
            socket,
            output: Some(output),
            phase: Phase::ExpectReady { until: init_until },
            reader: FrameReader::with_files_cap(frame::MAX_ANSWER_FILES_WAITING),
            calls: VecDeque::new(),
            started_at: Instant::now(),
            answered: 0,
            idle_since: Instant::now(),
            resting_until: None,
            sent_calls: 0,
            cancel: None,
            unread: false,
            write_due: false,
            token: Token(token),
            watching_writes: false,
            crash: None,
        })
    }

    /// Whether it serves `generation` and takes calls.
    pub fn is_ready_for(&self, generation: Generation) -> bool {
        self.generation == generation && matches!(self.phase, Phase::Serving)
    }

    /// Whether it is in its pace's pause at `now` (it holds its lane, and takes no call).
    pub fn is_resting(&self, now: Instant) -> bool {
        matches!(self.phase, Phase::Serving) && self.resting_until.is_some_and(|until| now < until)
    }

    /// Writes what is pending ([`Executor::write_pending`]), then watches the socket for room
    /// to write while some of it is left, and only then. A broken socket (the process is gone)
    /// or one already taken off the poll (an executor waited out to its exit) is not watched:
    /// its end is handled where it is read.
    pub fn write_and_watch(&mut self, registry: &Registry) {
        if self.write_pending().is_err() || matches!(self.phase, Phase::ExpectExit { .. }) {
            return;
        }
        let left = self.cancel.is_some() || self.calls.iter().any(|c| c.sent < c.len());
        if left == self.watching_writes {
            return;
        }
        let interest = match left {
            true => Interest::READABLE | Interest::WRITABLE,
            false => Interest::READABLE,
        };
        match registry.reregister(&mut self.socket, self.token, interest) {
            Ok(()) => self.watching_writes = left,
            Err(e) => warn!("cannot watch executor [{}]'s socket: {e}", self.pid),
        }
    }

    /// Writes what is pending of its calls (a `Cancel` first) until the socket would block.
    /// `Err` when the socket is broken (the process is gone).
    fn write_pending(&mut self) -> Result<(), Broken> {
        // A `Cancel` begun is finished before anything else goes (frames never interleave).
        if self.cancel.as_ref().is_some_and(|(_, sent)| *sent > 0) {
            self.write_cancel()?;
            if self.cancel.is_some() {
                return Ok(());
            }
        }
        // Every call not yet written whole goes in one `sendmsg` (up to `WRITE_SLICES` parts,
        // with the files of the bodies that go as files): several small requests cost one
        // system call, and one wakeup of the executor.
        loop {
            let mut slices: [IoSlice<'_>; WRITE_SLICES] = [IoSlice::new(&[]); WRITE_SLICES];
            let socket = self.socket.as_fd();
            // Only the first `with_files` count; the rest is filler.
            let mut files: [BorrowedFd<'_>; MAX_FDS] = [socket; MAX_FDS];
            let (mut used, mut with_files) = (0, 0);
            for call in self.calls.iter().filter(|c| c.sent < c.len()) {
                if used + 2 > WRITE_SLICES {
                    break;
                }
                let body = call.inline_body();
                let (head, body) = match call.sent < call.head.len() {
                    true => (&call.head[call.sent..], body),
                    false => (&[][..], &body[call.sent - call.head.len()..]),
                };
                slices[used] = IoSlice::new(head);
                slices[used + 1] = IoSlice::new(body);
                used += 2;
                if let Some(fd) = call.file_to_send()? {
                    files[with_files] = fd;
                    with_files += 1;
                }
            }
            if used == 0 {
                break;
            }
            let sent = fds::send(socket, &slices[..used], &files[..with_files]);
            let mut written = match sent {
                Ok(0) => return Err(Broken),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(_) => return Err(Broken),
            };
            // The calls of this write, in order: their files went with its first byte,
            // whatever of their bytes it took.
            for call in self
                .calls
                .iter_mut()
                .filter(|c| c.sent < c.len())
                .take(used / 2)
            {
                call.file_sent |= call.by_file;
                let taken = written.min(call.len() - call.sent);
                call.sent += taken;
                written -= taken;
            }
        }
        // Every call is written whole: a frame boundary, where a `Cancel` may go.
        self.write_cancel()
    }

    /// Writes what is left of the pending `Cancel`, until the socket would block.
    fn write_cancel(&mut self) -> Result<(), Broken> {
        let Some((bytes, sent)) = &mut self.cancel else {
            return Ok(());
        };
        while *sent < bytes.len() {
            match self.socket.write(&bytes[*sent..]) {
                Ok(0) => return Err(Broken),
                Ok(n) => *sent += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(_) => return Err(Broken),
            }
        }
        self.cancel = None;
        Ok(())
    }

    /// Asks it to stop the streamed answer it is sending for `conn` (the client left); the
    /// frame goes out with the next writes. Whether it was streaming to `conn`.
    pub fn cancel_stream_to(&mut self, conn: ConnId) -> bool {
        let Some(call) = self.calls.front_mut() else {
            return false;
        };
        if call.job.conn != conn || call.streaming.is_none() {
            return false;
        }
        // Once per call: the pieces already on their way for it are dropped as they come.
        if !std::mem::replace(&mut call.cancelled, true) {
            self.cancel = Some((frame::cancel(call.number), 0));
        }
        self.write_due = true;
        true
    }

    /// Reads until the socket would block, appending whole frames to `out`; a large body is
    /// read straight into its buffer. Stops with `TooMany` once it has more frames than the
    /// executor can owe (a streamed answer's `Head` and `Piece`s owe nothing), and with
    /// `Paused` after [`PIECES_PER_TURN`] bytes of pieces, so a plugin writing frames in a loop
    /// cannot hold the worker's loop or grow `out` without bound.
    pub fn receive(
        &mut self,
        scratch: &mut [u8],
        out: &mut Vec<Message>,
        drain: Drain,
    ) -> Received {
        let owed = self.calls.len() + usize::from(matches!(self.phase, Phase::ExpectReady { .. }));
        let (mut scanned, mut settled, mut pieces) = (out.len(), 0, 0);
        let mut emptied = false;
        loop {
            let mut over = None;
            for (at, message) in out.iter().enumerate().skip(scanned) {
                settled += usize::from(message.settles());
                if settled > owed {
                    over = Some(at);
                    break;
                }
                // Every frame of a streamed answer counts at least `FRAME_COST`, so a flood of
                // empty ones is cut as surely as a flood of big ones.
                if !message.settles() {
                    let bytes = match message {
                        Message::Piece(bytes) => bytes.len(),
                        _ => 0,
                    };
                    pieces += bytes.max(FRAME_COST);
                }
            }
            if let Some(at) = over {
                out.truncate(at);
                return Received::TooMany;
            }
            scanned = out.len();
            if pieces >= PIECES_PER_TURN {
                self.unread = true;
                return Received::Paused;
            }
            if emptied {
                self.unread = false;
                return Received::WouldBlock;
            }
            let mut files = Vec::new();
            let socket = self.socket.as_fd();
            let (read, asked) = match self.reader.direct() {
                Ok(Some(body)) => {
                    let asked = body.len();
                    let read = fds::recv(socket, body, 0, &mut files).map(|n| (n, true));
                    (read, asked)
                }
                Ok(None) => {
                    let read = fds::recv(socket, scratch, 0, &mut files).map(|n| (n, false));
                    (read, scratch.len())
                }
                Err(e) => return Received::Bad(e),
            };
            let with_files = !files.is_empty();
            if let Err(e) = self.reader.take_files(&mut files) {
                return Received::Bad(e);
            }
            emptied = drain == Drain::UntilShort
                && !with_files
                && matches!(read, Ok((n, _)) if n > 0 && n < asked);
            let parsed = match read {
                Ok((0, _)) => return Received::Gone,
                Ok((n, true)) => self.reader.filled(n).map(|m| out.extend(m)),
                Ok((n, false)) => self.reader.feed_all(&scratch[..n], out),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(()),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.unread = false;
                    return Received::WouldBlock;
                }
                Err(_) => return Received::Gone,
            };
            if let Err(e) = parsed {
                return Received::Bad(e);
            }
        }
    }

    /// The connection its running call answers, when that call is streaming.
    pub fn streaming_to(&self) -> Option<crate::ids::ConnId> {
        self.calls
            .front()
            .filter(|c| c.streaming.is_some())
            .map(|c| c.job.conn)
    }

    /// Logs what it printed as `label: line`; once the pipe closes, a retired executor is
    /// taken to have exited.
    pub fn drain_output(&mut self, label: &str, registry: &Registry, scratch: &mut [u8]) {
        let Some(output) = self.output.as_mut() else {
            return;
        };
        if output.drain(label, scratch) {
            return;
        }
        let _ = registry.deregister(&mut SourceFd(&output.raw_fd()));
        self.output = None;
        if matches!(self.phase, Phase::Retiring { until: Some(_) }) {
            // Closing its output is the end of its exit; make sure it does end.
            self.kill();
            self.phase = Phase::ExpectExit {
                look: Instant::now(),
                why: DeathContext::Killed(Death::Retired),
            };
        }
    }

    /// Stops watching its socket (its output stays watched until it closes).
    pub fn deregister(&mut self, registry: &Registry) {
        let _ = registry.deregister(&mut self.socket);
    }

    /// Closes its socket: it exits on end of file, after its plugin's `drop_state`.
    pub fn close(&mut self, registry: &Registry) {
        self.deregister(registry);
        self.shut();
    }

    /// Shuts its socket without deregistering (the worker is exiting).
    pub fn shut(&self) {
        let _ = self.socket.shutdown(std::net::Shutdown::Both);
    }

    /// Kills its whole process group.
    pub fn kill(&self) {
        spawn::kill_group(self.pid);
    }

    /// Kills it and waits for it, unless it was reaped already (only when the worker itself
    /// is going).
    pub fn kill_and_wait(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.kill();
            let _ = self.child.wait();
        }
    }

    /// Its exit status, if it has exited (reaping it).
    pub fn try_reap(&mut self) -> Option<ExitStatus> {
        match self.child.try_wait() {
            Ok(status) => status,
            // Already reaped or not our child: nothing more will come of it.
            Err(_) => Some(ExitStatus::from_raw(0)),
        }
    }

    /// Its state in one word, for `/-/plugins`.
    pub fn phase_name(&self) -> &'static str {
        match self.phase {
            Phase::ExpectReady { .. } => "starting",
            Phase::Serving if self.calls.is_empty() && self.is_resting(Instant::now()) => "resting",
            Phase::Serving if self.calls.is_empty() => "idle",
            Phase::Serving => "busy",
            Phase::Retiring { .. } => "retiring",
            Phase::ExpectExit { .. } => "exiting",
        }
    }
}
