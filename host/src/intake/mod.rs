//! Intake: the worker's one `mio` event loop. It accepts, reads whole requests under their
//! limits and deadlines, queues them, hands them to executors, reads their answers and writes
//! them back. Client sockets, executor sockets and executor output pipes are all in its poll;
//! nothing it calls blocks.
//!
//! Admission is decided at accept time: while the connection table, the queue or the body
//! budget is full, intake does not accept, and the kernel's (small) backlog absorbs and then
//! drops the excess. Nothing is allocated, logged or written for what is not accepted.
//! Intake owns the connections, the queue, the budget and the executor pool.
//!
//! This file owns the loop, the listeners and the connection table; `requests` turns complete
//! heads and requests into queued jobs or answers, `dispatch` is the stage from the queue to the
//! executors (its own struct), `deadlines` closes what is late and drains on shutdown,
//! `access` turns away a request without its route's key as soon as its head is read.

mod access;
pub mod admin;
pub mod admission;
pub mod agent;
pub mod conn;
mod deadlines;
pub mod dispatch;
pub mod queue;
mod requests;
pub mod status;
pub mod stream;

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use mio::net::TcpListener;
use mio::{Events, Interest, Poll, Token};
use plugin_api::{RVec, Response};

use crate::access::gate::Gates;
use crate::exec::job::{Job, Reply};
use crate::exec::pool::Pool;
use crate::http::error::HttpError;
use crate::http::parse::{Framing, Head, HeadLimits};
use crate::http::response::{is_bodiless, reason, text, write_head, Persistence};
use crate::ids::ConnId;
use crate::jellyfish::{Jellyfish, RED_SHARE};
use crate::net::listener::Scheme;
use crate::net::tls::CertStore;
use crate::net::transport::Transport;
use crate::observe::metrics::{Counters, Reason};
use crate::plugins::watcher::Change;
use crate::process::signals;
use crate::warn;
use admin::AdminView;
use admission::{answer_busy, Admission, BusyMode};
use conn::{Conn, Outgoing, Phase, ReplyShape, Step};
use dispatch::{Answer, Dispatch, Placed};
use queue::{ByteBudget, Queue};

/// The token of the waker the watcher uses. Listener `i` has `Token(usize::MAX - 1 - i)`;
/// connection tokens are their slot numbers; executors' tokens start at
/// `exec::pool::FIRST_TOKEN`.
pub const WAKER: Token = Token(usize::MAX);

/// How often deadlines are checked (their precision).
const SWEEP_EVERY: Duration = Duration::from_millis(100);
/// How long a connection may linger after its last response for the peer to close.
const LINGER: Duration = Duration::from_secs(2);
/// A body or response is held to the minimum rate only after this long (slow starts are fine).
const RATE_GRACE: Duration = Duration::from_secs(1);
/// The one read buffer all connections share (intake is one thread).
const SCRATCH: usize = 64 * 1024;
/// While draining, how long an idle keep-alive connection may still send one last request.
const DRAIN_IDLE: Duration = Duration::from_millis(500);
/// Connections the admin listener takes at most (apart from `--max-conns`, so a flood on the
/// public ports does not lock the operator out).
const ADMIN_CONNS: usize = 16;
/// How many sweeps between two looks at the certificate files (about a second).
const CERT_CHECK_EVERY: u32 = 10;
/// How long accepting pauses after the process ran out of file descriptors or memory.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// The limits and deadlines intake enforces.
#[derive(Clone, Copy, Debug)]
pub struct IntakeSettings {
    /// Request line and header block limits.
    pub head_limits: HeadLimits,
    /// The server-wide body limit.
    pub max_body: usize,
    /// From accept (or the previous response) to a complete head.
    pub header_timeout: Duration,
    /// The longest pause while reading a body or writing a response.
    pub idle_timeout: Duration,
    /// The longest wait in the queue.
    pub queue_wait: Duration,
    /// The slowest a body may arrive or a response be taken, in bytes per second (0: off).
    pub min_rate: usize,
    /// What the header and idle deadlines shrink to when connections are above the high-water
    /// mark.
    pub pressure_timeout: Duration,
    /// How long a stopping worker may take to finish what it admitted.
    pub drain_timeout: Duration,
}

/// A listening socket and whether connections wait on it.
struct Listener {
    socket: TcpListener,
    scheme: Scheme,
    /// Connections may wait that we have not accepted (edge-triggered: set by its event,
    /// cleared only when `accept` says `WouldBlock`).
    pending: bool,
}

/// The event loop's state.
pub struct Intake {
    poll: Poll,
    listeners: Vec<Listener>,
    /// The TLS configuration; present when a listener is HTTPS.
    certs: Option<CertStore>,
    /// Connection table; the index is the mio token. Invariant: `free` lists the `None` slots.
    conns: Vec<Option<Conn>>,
    free: Vec<usize>,
    admission: Admission,
    next_serial: u64,
    budget: ByteBudget,
    /// The queue and the executors behind it.
    dispatch: Dispatch,
    /// Reused buffers for what dispatch hands back (empty between turns).
    answers: Vec<Answer>,
    placed: Vec<(Placed, usize)>,
    /// New and removed versions from the watcher.
    changes: Receiver<Change>,
    /// Whether the worker accepts yet. A first worker accepts from its first moment (promise
    /// 8: a model loading for minutes makes its own route wait, never the server); a worker
    /// taking over in a planned restart only once its first versions are settled, so the old
    /// one serves until then.
    accepting: bool,
    /// Whether every version found at start is ready or refused (`/-/ready` says 503 until
    /// then, naming the routes still starting).
    settled: bool,
    settings: IntakeSettings,
    /// No accepting before this (after EMFILE and the like).
    accept_paused_until: Instant,
    /// Open connections from the admin listener (not counted by `admission`).
    admin_open: usize,
    /// Whether an admin listener exists (then the public ones do not answer `/-/`).
    listeners_have_admin: bool,
    /// Accepting failed for lack of descriptors or memory, and has not succeeded since.
    exhausted: bool,
    sweeps: u32,
    counters: Counters,
    scratch: Box<[u8]>,
    /// Connections waiting for room in the queue before reading their next request, in the
    /// order they came to wait (entries may be stale: the connection may have gone since).
    stalled: VecDeque<ConnId>,
    /// When a stopping worker gives up finishing what it admitted (`Some` while draining).
    drain_until: Option<Instant>,
    /// Connections whose head is read and whose body waits for room in the byte budget, in
    /// the order they came to wait (entries may be stale).
    awaiting_budget: VecDeque<ConnId>,
    /// Queue depth once a second, the last [`status::HISTORY`] seconds (the status page's chart).
    queue_history: VecDeque<u16>,
    /// When this worker started.
    started: std::time::SystemTime,
    /// The light, in jellyfish mode.
    jellyfish: Option<Jellyfish>,
    /// Who may call each route (the watcher keeps it current).
    gates: Gates,
}

impl Intake {
    /// Intake over bound listeners, with its executor pool and the channel the watcher sends
    /// changes on. `certs` is required when a listener is HTTPS.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        poll: Poll,
        listeners: Vec<(std::net::TcpListener, Scheme)>,
        certs: Option<CertStore>,
        pool: Pool,
        changes: Receiver<Change>,
        admission: Admission,
        queue: usize,
        queue_bytes: usize,
        settings: IntakeSettings,
        jellyfish: Option<Jellyfish>,
    ) -> io::Result<Intake> {
        let mut bound = Vec::with_capacity(listeners.len());
        for (i, (socket, scheme)) in listeners.into_iter().enumerate() {
            let mut socket = TcpListener::from_std(socket);
            poll.registry()
                .register(&mut socket, listener_token(i), Interest::READABLE)?;
            bound.push(Listener {
                socket,
                scheme,
                pending: true,
            });
        }
        let listeners_have_admin = bound.iter().any(|l| l.scheme == Scheme::Admin);
        Ok(Intake {
            poll,
            listeners_have_admin,
            admin_open: 0,
            listeners: bound,
            certs,
            conns: Vec::new(),
            free: Vec::new(),
            admission,
            next_serial: 0,
            budget: ByteBudget::new(queue_bytes),
            dispatch: Dispatch::new(Queue::new(queue), pool),
            answers: Vec::new(),
            placed: Vec::new(),
            changes,
            accepting: false,
            settled: false,
            settings,
            accept_paused_until: Instant::now(),
            exhausted: false,
            sweeps: 0,
            counters: Counters::with_worker_restarts(
                std::env::var("FIDDLER_WORKER_RESTARTS")
                    .ok()
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(0),
            ),
            scratch: vec![0; SCRATCH].into_boxed_slice(),
            stalled: VecDeque::new(),
            drain_until: None,
            awaiting_budget: VecDeque::new(),
            queue_history: VecDeque::with_capacity(status::HISTORY),
            started: std::time::SystemTime::now(),
            jellyfish,
            gates: Gates::default(),
        })
    }

    /// The scheme and address of each listener.
    pub fn local_addrs(&self) -> io::Result<Vec<(Scheme, SocketAddr)>> {
        self.listeners
            .iter()
            .map(|l| Ok((l.scheme, l.socket.local_addr()?)))
            .collect()
    }

    /// Starts `versions` (the folder's contents at start-up).
    pub fn install(&mut self, versions: Vec<crate::plugins::version::NewVersion>) {
        self.dispatch.install(versions, self.poll.registry());
    }

    /// Runs the loop until it has drained after SIGTERM (or a second signal, or the drain
    /// deadline), or polling itself fails. With `at_once` (a first worker), accepting starts
    /// now and a request for a route still starting waits for it in the queue; else (a worker
    /// taking over) once the first versions are settled. `on_ready` is called when every
    /// version found at start is ready or refused.
    pub fn run(mut self, at_once: bool, on_ready: impl FnOnce()) -> io::Result<()> {
        let mut events = Events::with_capacity(1024);
        let mut next_sweep = Instant::now() + SWEEP_EVERY;
        let mut on_ready = Some(on_ready);
        // An executor stopped at its turn's share of a stream with more to read at once.
        let mut more_to_read = false;
        if at_once {
            self.accepting = true;
            self.accept();
        }
        loop {
            if !self.settled && !self.dispatch.pool().is_starting() {
                self.settled = true;
                if let Some(ready) = on_ready.take() {
                    ready();
                }
                if !self.accepting {
                    self.accepting = true;
                    self.accept();
                }
            }
            // Calls given to executors this turn go now, several in one write each.
            self.dispatch.write_due(self.poll.registry());
            let wake_at = match self.dispatch.next_deadline() {
                Some(at) => at.min(next_sweep),
                None => next_sweep,
            };
            let timeout = match more_to_read {
                true => Duration::ZERO,
                false => wake_at.saturating_duration_since(Instant::now()),
            };
            match self.poll.poll(&mut events, Some(timeout)) {
                Ok(()) => {}
                // A signal: look at the flags below.
                Err(e) if e.kind() == io::ErrorKind::Interrupted => events.clear(),
                Err(e) => return Err(e),
            }
            if self.drain_until.is_none() && signals::terminations() > 0 {
                self.start_drain();
            }
            if let Some(until) = self.drain_until {
                if self.drained() {
                    crate::info!("drained: every admitted request is answered; exiting");
                    return Ok(());
                }
                if signals::terminations() > 1 || Instant::now() >= until {
                    warn!(
                        "exiting with {} queued and {} connection(s) unfinished",
                        self.dispatch.waiting(),
                        self.admission.open()
                    );
                    return Ok(());
                }
            }
            for event in events.iter() {
                let token = event.token();
                if token == WAKER {
                    continue;
                }
                if Pool::owns(token) {
                    let conns = &self.conns;
                    self.dispatch.on_executor_event(
                        token,
                        event.is_read_closed() || event.is_error(),
                        self.poll.registry(),
                        &mut self.scratch,
                        |id| takes_more(conns, id),
                    );
                    continue;
                }
                match self.listener_index(token) {
                    Some(i) => {
                        self.listeners[i].pending = true;
                        self.accept();
                    }
                    None => self.on_socket_event(
                        token,
                        event.is_readable(),
                        event.is_read_closed() || event.is_error(),
                    ),
                }
            }
            while let Ok(change) = self.changes.try_recv() {
                match change {
                    Change::Access(update) => self.gates.apply(update),
                    change => self.dispatch.apply(change, self.poll.registry()),
                }
            }
            let conns = &self.conns;
            more_to_read = self
                .dispatch
                .pump(self.poll.registry(), &mut self.scratch, |id| {
                    takes_more(conns, id)
                });
            let now = Instant::now();
            self.dispatch.sweep(now, self.poll.registry());
            self.dispatch.wake();
            self.settle();
            self.resume_awaiting_budget();
            self.resume_stalled();
            self.settle();
            if now >= next_sweep {
                self.sweep(now);
                self.tick_light(now);
                next_sweep = now + SWEEP_EVERY;
            }
        }
    }

    fn has_room(&self) -> bool {
        self.admission.has_room() && self.queue_has_room()
    }

    /// Recomputes the jellyfish's light when due; a change sets the lanes and batches and is
    /// logged once.
    fn tick_light(&mut self, now: Instant) {
        let queued = self.dispatch.waiting();
        let Some(jellyfish) = self.jellyfish.as_mut() else {
            return;
        };
        let Some(color) = jellyfish.tick(now, queued) else {
            return;
        };
        let s = jellyfish.signals();
        let headroom = s
            .headroom
            .map_or_else(|| "unknown".to_owned(), |h| format!("{:.0}%", h * 100.0));
        let admission = if jellyfish.is_red() {
            format!(", admission at 1/{RED_SHARE} of its limits, not ready")
        } else {
            String::new()
        };
        crate::info!(
            "light {}: CPU pressure {:.0}%, memory pressure {:.0}%, memory headroom {headroom}, \
             {queued} queued: {} lane(s), batches of up to {}{admission}",
            color.name(),
            s.cpu_pressure * 100.0,
            s.memory_pressure * 100.0,
            jellyfish.lanes(),
            jellyfish.batch_max(),
        );
        self.dispatch.set_light(
            jellyfish.lanes(),
            jellyfish.batch_max(),
            jellyfish.capped_batch_max(),
        );
        // Red admits a share of the connection and queue limits.
        let share = if jellyfish.is_red() { RED_SHARE } else { 1 };
        self.admission.set_share(share);
        self.dispatch.set_share(share);
        self.dispatch.wake();
    }

    /// Whether another request may be queued: the queue's count and byte bounds, and under
    /// them the time bound (a request queued now must be expected to start within
    /// `--queue-wait`).
    fn queue_has_room(&self) -> bool {
        !self.dispatch.is_full()
            && !self.budget.is_spent()
            && self.dispatch.predicted_wait() <= self.settings.queue_wait
    }

    /// Whether to call `accept` now: for a slot, or to answer `503` in busy mode.
    fn may_accept(&self) -> bool {
        self.accepting
            && (self.has_room() || self.admission.busy == BusyMode::Answer503)
            && Instant::now() >= self.accept_paused_until
    }

    /// The queue is above its high-water mark (three quarters): answers close their
    /// connections instead of keeping them.
    fn queue_under_pressure(&self) -> bool {
        self.dispatch.waiting() * 4 >= self.dispatch.capacity() * 3
    }

    /// `base`, or the pressure timeout if it is shorter and connections are above the mark.
    fn timeout(&self, base: Duration) -> Duration {
        if self.admission.under_pressure() {
            base.min(self.settings.pressure_timeout)
        } else {
            base
        }
    }

    fn listener_index(&self, token: Token) -> Option<usize> {
        let i = (usize::MAX - 1).checked_sub(token.0)?;
        (i < self.listeners.len()).then_some(i)
    }

    /// Whether listener `i` may accept now: the admin listener has its own small budget; the
    /// others need room (or busy mode) and no pause.
    fn may_accept_on(&self, i: usize) -> bool {
        match self.listeners[i].scheme {
            Scheme::Admin => self.accepting && self.admin_open < ADMIN_CONNS,
            // Answered and closed at once: no slot, no budget.
            Scheme::Agent => self.accepting,
            _ => self.may_accept(),
        }
    }

    /// Accepts while there is room and connections wait, taking the listeners in turn.
    fn accept(&mut self) {
        let mut start = 0;
        let mut agent_answers = 0;
        loop {
            let count = self.listeners.len();
            let Some(i) = (0..count).map(|k| (start + k) % count).find(|&i| {
                self.listeners[i].pending
                    && self.may_accept_on(i)
                    && (self.listeners[i].scheme != Scheme::Agent || agent_answers < agent::BURST)
            }) else {
                return;
            };
            start = i + 1;
            let scheme = self.listeners[i].scheme;
            match self.listeners[i].socket.accept() {
                Ok((stream, _)) if scheme == Scheme::Agent => {
                    agent_answers += 1;
                    agent::answer(stream, self.agent_answer());
                }
                Ok((stream, peer)) => {
                    if self.exhausted {
                        self.exhausted = false;
                        crate::info!("accepting again: descriptors or memory are available");
                    }
                    if scheme == Scheme::Admin || self.has_room() {
                        self.admit(stream, peer, scheme);
                    } else {
                        // Busy mode: answer 503 (plain HTTP) or close (HTTPS), no slot taken.
                        self.counters.busy_answers += 1;
                        if scheme == Scheme::Http {
                            let wait = self.dispatch.predicted_wait();
                            let retry_after = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
                            answer_busy(stream, retry_after.max(1));
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.listeners[i].pending = false
                }
                Err(e) if is_resource_exhaustion(&e) => {
                    // The connection stays in the backlog; try again after a pause, not in a
                    // spin. Logged once until accepting works again.
                    if !self.exhausted {
                        self.exhausted = true;
                        warn!(
                            "accept paused ({e}); retrying every {} ms",
                            ACCEPT_BACKOFF.as_millis()
                        );
                    }
                    self.accept_paused_until = Instant::now() + ACCEPT_BACKOFF;
                }
                Err(_) => {} // the client gave up in the backlog (ECONNABORTED and the like)
            }
        }
    }

    fn admit(&mut self, stream: mio::net::TcpStream, peer: SocketAddr, scheme: Scheme) {
        if scheme == Scheme::Admin {
            self.admin_open += 1;
        } else if !self.admission.enter(peer.ip()) {
            // Over the per-IP cap: closed at once, without a byte.
            self.counters.drop_for(Reason::PerIpCap);
            return;
        }
        self.counters.accepted += 1;
        let _ = stream.set_nodelay(true);
        let mut transport = match (scheme, &self.certs) {
            (Scheme::Http | Scheme::Admin, _) => Transport::Plain(stream),
            (Scheme::Https, Some(certs)) => match certs.accept(stream) {
                Ok(transport) => transport,
                Err(e) => {
                    self.release_slot(scheme, peer);
                    return warn!("cannot start TLS for {peer}: {e}");
                }
            },
            (Scheme::Https, None) => return self.release_slot(scheme, peer),
            // Answered in `accept`, never admitted as a connection.
            (Scheme::Agent, _) => return self.release_slot(scheme, peer),
        };
        let slot = self.free.pop().unwrap_or(self.conns.len());
        let serial = self.next_serial + 1;
        if let Err(e) = self.poll.registry().register(
            transport.socket_mut(),
            conn_token(slot, serial),
            Interest::READABLE | Interest::WRITABLE,
        ) {
            warn!("cannot watch a new connection: {e}");
            self.release_slot(scheme, peer);
            if slot < self.conns.len() {
                self.free.push(slot);
            }
            return;
        }
        if slot == self.conns.len() {
            self.conns.push(None);
        }
        self.next_serial = serial;
        let id = ConnId { slot, serial };
        let timeout = self.timeout(self.settings.header_timeout);
        self.conns[slot] = Some(Conn::new(id, transport, peer, scheme, timeout));
    }

    fn close(&mut self, slot: usize) {
        let Some(mut conn) = self.conns.get_mut(slot).and_then(Option::take) else {
            return;
        };
        conn.give_back(&mut self.budget);
        let _ = self.poll.registry().deregister(conn.transport.socket_mut());
        let (kind, peer) = (conn.kind, conn.peer);
        // A stream still being made for it (its executor stops at its next piece).
        if matches!(conn.phase, Phase::Streaming(_)) {
            self.dispatch.cancel_stream(conn.id);
        }
        drop(conn);
        self.free.push(slot);
        self.release_slot(kind, peer);
        self.accept();
    }

    /// What the load-balancer agent says now: from the figures `/-/ready` reads.
    fn agent_answer(&self) -> agent::Answer {
        agent::Answer::for_load(&agent::Load {
            queued: self.dispatch.waiting(),
            capacity: self.dispatch.capacity(),
            predicted_wait: self.dispatch.predicted_wait(),
            queue_wait: self.settings.queue_wait,
            unready: !self.settled || self.jellyfish.as_ref().is_some_and(Jellyfish::is_red),
        })
    }

    /// Gives back the slot a connection from a `scheme` listener took.
    fn release_slot(&mut self, scheme: Scheme, peer: SocketAddr) {
        match scheme {
            Scheme::Admin => self.admin_open = self.admin_open.saturating_sub(1),
            _ => self.admission.leave(peer.ip()),
        }
    }

    fn conn_mut(&mut self, id: ConnId) -> Option<&mut Conn> {
        self.conns
            .get_mut(id.slot)
            .and_then(Option::as_mut)
            .filter(|conn| conn.id == id)
    }

    /// A poll event on a connection; `closed` when it says the peer shut its end or reset.
    /// An event for a connection that closed earlier in the same batch is dropped: its slot
    /// may already hold a new connection, which must not take the old one's end of file.
    fn on_socket_event(&mut self, token: Token, readable: bool, closed: bool) {
        let Some(slot) = token_slot(&self.conns, token) else {
            return;
        };
        let Some(conn) = self.conns.get_mut(slot).and_then(Option::as_mut) else {
            return;
        };
        if readable || closed {
            conn.saw_readable();
        }
        if closed {
            conn.saw_end_of_file(Instant::now());
        }
        match conn.phase {
            // No work for the gone: a client that left while its request waits is dropped
            // now, and its queued job skipped when it reaches the front. One whose end of file
            // came with or right after its request has half-closed: it waits for the answer,
            // unless its request was queued behind others (under pressure it counts as gone).
            Phase::AwaitAnswer(_) => {
                if conn.has_left() {
                    self.close(slot);
                }
            }
            Phase::AwaitRoom | Phase::AwaitBudget(_) => {
                if readable && conn.peer_has_closed() {
                    self.close(slot);
                }
            }
            _ => self.drive(slot),
        }
    }

    /// Moves a connection along until it blocks or closes.
    fn drive(&mut self, slot: usize) {
        loop {
            let limits = self.settings.head_limits;
            let header_timeout = self.timeout(self.settings.header_timeout);
            // Only a connection about to read a new request asks (the time bound is not free).
            let about_to_read = self
                .conns
                .get(slot)
                .and_then(Option::as_ref)
                .is_some_and(|c| c.kind != Scheme::Admin && matches!(c.phase, Phase::ExpectHead));
            let no_room = about_to_read && !self.queue_has_room();
            let Some(conn) = self.conns.get_mut(slot).and_then(Option::as_mut) else {
                return;
            };
            if no_room {
                // Backpressure instead of shedding: read the next request only once it can be
                // queued. Closing here would only make the client reconnect at once. The admin
                // listener's requests never queue, so they are always read: an operator can
                // look at a server whose queue is full.
                conn.phase = Phase::AwaitRoom;
                self.stalled.push_back(conn.id);
                return;
            }
            match conn.advance(&limits, &mut self.budget, &mut self.scratch) {
                Step::Blocked => return,
                Step::Head(head) => self.on_head(slot, head),
                Step::Request(head, body) => self.on_request(slot, head, body),
                Step::Refused(error) => self.refuse(slot, error),
                Step::Gone => return self.close(slot),
                Step::TlsFailed => {
                    self.counters.drop_for(Reason::TlsError);
                    return self.close(slot);
                }
                Step::Sent { close: true } => {
                    conn.start_lingering();
                    conn.set_deadline(LINGER);
                }
                Step::Sent { close: false } => {
                    conn.phase = Phase::ExpectHead;
                    conn.set_deadline(header_timeout);
                }
            }
        }
    }
}

impl Intake {
    /// Hands answers to their connections and places queued jobs until neither has anything
    /// left to do (an answer can free a lane; a connection answered can queue its next
    /// request).
    fn settle(&mut self) {
        loop {
            while self.dispatch.has_answers() {
                let mut answers = std::mem::take(&mut self.answers);
                let requeued_bytes = self.dispatch.take_answers(&mut answers);
                self.budget.take_back(requeued_bytes);
                for answer in answers.drain(..) {
                    self.answer(answer);
                }
                // The buffer keeps its capacity: no allocation per answer.
                self.answers = answers;
            }
            if !self.dispatch.take_pending() {
                return;
            }
            self.place_jobs();
        }
    }

    /// One placing pass: jobs go to executors; the gone are dropped, the unrouted answered.
    fn place_jobs(&mut self) {
        let conns = &self.conns;
        let mut placed = std::mem::take(&mut self.placed);
        self.dispatch
            .place(self.poll.registry(), &mut placed, |id| {
                conn_in(conns, id).is_some_and(|conn| {
                    matches!(conn.phase, Phase::AwaitAnswer(_)) && !conn.has_left()
                })
            });
        for (outcome, bytes) in placed.drain(..) {
            self.budget.release(bytes);
            match outcome {
                Placed::Sent(waited) => self.counters.queue_wait.observe(waited.as_secs_f64()),
                Placed::Gone(conn) => {
                    self.counters.drop_for(Reason::ClientGone);
                    if self.conn_mut(conn).is_some() {
                        self.close(conn.slot);
                    }
                }
                Placed::NoRoute(conn, route) => {
                    let body = format!("no plugin serves /{route}\n");
                    self.answer(Answer {
                        conn,
                        route,
                        reply: Reply::Whole(text(404, &body)),
                    });
                }
            }
        }
        self.placed = placed;
        self.accept();
    }

    /// Lets waiting connections read their next request, oldest first, while the queue has
    /// room.
    fn resume_stalled(&mut self) {
        let header_timeout = self.timeout(self.settings.header_timeout);
        while self.queue_has_room() {
            let Some(id) = self.stalled.pop_front() else {
                return;
            };
            let Some(conn) = self.conn_mut(id) else {
                continue;
            };
            if !matches!(conn.phase, Phase::AwaitRoom) {
                continue;
            }
            conn.phase = Phase::ExpectHead;
            conn.set_deadline(header_timeout);
            self.drive(id.slot);
        }
    }

    /// Writes an answer (or a part of a streamed one) to the connection waiting for it, if
    /// it still waits.
    fn answer(&mut self, answer: Answer) {
        let Answer { conn, route, reply } = answer;
        let Some(state) = self.conn_mut(conn) else {
            // The client left; drop the answer, and stop a stream being made for it.
            if matches!(reply, Reply::Head(..) | Reply::Piece(_)) {
                self.dispatch.cancel_stream(conn);
            }
            return;
        };
        match (&state.phase, reply) {
            (Phase::AwaitAnswer(shape), Reply::Whole(response)) => {
                let (shape, peer) = (*shape, state.peer);
                self.log_answer(peer, &route, response.status, response.body.len(), shape);
                self.respond(conn.slot, response, shape);
            }
            (Phase::AwaitAnswer(shape), Reply::Head(response, length)) => {
                let (shape, peer) = (*shape, state.peer);
                self.log_answer(peer, &route, response.status, 0, shape);
                self.start_stream(conn.slot, response, length, shape);
            }
            (Phase::Streaming(_), Reply::Piece(bytes)) => {
                if !state.stream_piece(&bytes, false) {
                    return self.close(conn.slot);
                }
            }
            (Phase::Streaming(_), Reply::End(true)) => {
                if !state.stream_piece(&[], true) {
                    return self.close(conn.slot);
                }
            }
            (Phase::Streaming(_), Reply::End(false) | Reply::Whole(_)) => {
                // The stream broke off (its executor died, passed its deadline, or its
                // program's answer ended early): cutting the connection is the only way left
                // to tell the client its answer is not whole.
                return self.close(conn.slot);
            }
            _ => return,
        }
        self.drive(conn.slot);
    }

    /// The latency histogram (to the first byte of the answer) and the access log line.
    fn log_answer(
        &mut self,
        peer: SocketAddr,
        route: &str,
        status: u16,
        bytes: usize,
        shape: ReplyShape,
    ) {
        let took = shape.started.elapsed();
        self.counters.latency.observe(took.as_secs_f64());
        if self.dispatch.pool().serves(route) {
            self.counters.observe_route(route, took.as_secs_f64());
        }
        if crate::observe::log::access_enabled() {
            crate::info!(
                "access {peer} /{route} {status} {bytes} bytes {:.1} ms",
                took.as_secs_f64() * 1000.0
            );
        }
    }
}

/// The connection `id` names, if it is still the one in its slot.
fn conn_in(conns: &[Option<Conn>], id: ConnId) -> Option<&Conn> {
    conns
        .get(id.slot)
        .and_then(Option::as_ref)
        .filter(|conn| conn.id == id)
}

/// Whether the connection `id` takes more of a streamed answer now (a gone one does: its
/// pieces are dropped, and its executor must not be held for it).
fn takes_more(conns: &[Option<Conn>], id: ConnId) -> bool {
    conn_in(conns, id).is_none_or(Conn::takes_more)
}

/// A connection's poll token: its slot, and its serial's low bits above them. A slot is
/// reused as soon as its connection closes (even within one batch of poll events), and the
/// serial tells a reused slot's new connection from the events of the one before.
fn conn_token(slot: usize, serial: u64) -> Token {
    // 30 bits of serial above 32 of slot: below the executors' tokens (from 2^63 - 1).
    Token(slot | (((serial & 0x3fff_ffff) as usize) << 32))
}

/// The slot a connection token names, if the connection there now is the one it was made for.
fn token_slot(conns: &[Option<Conn>], token: Token) -> Option<usize> {
    let slot = token.0 & 0xffff_ffff;
    let conn = conns.get(slot)?.as_ref()?;
    (conn_token(slot, conn.id.serial) == token).then_some(slot)
}

fn listener_token(i: usize) -> Token {
    Token(usize::MAX - 1 - i)
}

fn is_resource_exhaustion(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_names_one_connection_not_its_slot() {
        let old = conn_token(3, 41);
        let new = conn_token(3, 42);
        assert_ne!(old, new, "a reused slot gets another token");
        assert!(new.0 < crate::exec::pool::FIRST_TOKEN);
        assert_eq!(new.0 & 0xffff_ffff, 3);
        let largest = conn_token(u32::MAX as usize, u64::MAX);
        assert!(largest.0 < crate::exec::pool::FIRST_TOKEN, "{largest:?}");
    }
}
