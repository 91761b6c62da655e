//! Intake: the one `mio` event loop that accepts, reads whole requests under their limits and
//! deadlines, queues them, hands them to idle lanes, and writes the answers back.
//!
//! Admission is decided at accept time: while the connection table, the queue or the body
//! budget is full, intake does not accept, and the kernel's (small) backlog absorbs and then
//! drops the excess. Nothing is allocated, logged or written for what is not accepted.
//! Intake owns the connections, the queue and the budget; lanes own everything past the queue.

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::net::TcpListener;
use mio::{Events, Interest, Poll, Token};
use plugin_api::{Header, RVec, Request, Response};

use crate::admin::{self, AdminView};
use crate::admission::{answer_busy, Admission, BusyMode};
use crate::conn::{Conn, ConnId, Outgoing, Phase, ReplyShape, Step};
use crate::http::body::BodyReader;
use crate::http::error::HttpError;
use crate::http::parse::{Framing, Head, HeadLimits};
use crate::http::response::{is_bodiless, reason, write_head, Persistence};
use crate::lane::{text, LaneEvent, LaneMsg};
use crate::listener::Scheme;
use crate::metrics::{Counters, Reason};
use crate::queue::{ByteBudget, Job, Queue};
use crate::registry::RouteTable;
use crate::signals;
use crate::tls::CertStore;
use crate::transport::Transport;
use crate::warn;

/// The token of the waker lanes use. Listener `i` has `Token(usize::MAX - 1 - i)`; connection
/// tokens are their slot numbers.
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

/// A lane as intake sees it.
pub struct LaneSlot {
    /// Where its work goes.
    pub inbox: Sender<LaneMsg>,
    /// Whether it runs a request now.
    busy: bool,
    /// Whether its thread is gone (its inbox refused a job).
    dead: bool,
}

impl LaneSlot {
    /// An idle lane reached through `inbox`.
    pub fn new(inbox: Sender<LaneMsg>) -> LaneSlot {
        LaneSlot {
            inbox,
            busy: false,
            dead: false,
        }
    }
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
    queue: Queue,
    budget: ByteBudget,
    lanes: Vec<LaneSlot>,
    lane_events: Receiver<LaneEvent>,
    routes: RouteTable,
    /// Plugin libraries mapped so far (the watcher's loader counts them).
    libraries_mapped: Arc<AtomicUsize>,
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
}

impl Intake {
    /// Intake over bound listeners, with its lanes, the channel they answer on, and the routes
    /// they start with. `certs` is required when a listener is HTTPS.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        poll: Poll,
        listeners: Vec<(std::net::TcpListener, Scheme)>,
        certs: Option<CertStore>,
        lanes: Vec<LaneSlot>,
        lane_events: Receiver<LaneEvent>,
        routes: RouteTable,
        libraries_mapped: Arc<AtomicUsize>,
        admission: Admission,
        queue: usize,
        queue_bytes: usize,
        settings: IntakeSettings,
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
            queue: Queue::new(queue),
            budget: ByteBudget::new(queue_bytes),
            lanes,
            lane_events,
            routes,
            libraries_mapped,
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
        })
    }

    /// The scheme and address of each listener.
    pub fn local_addrs(&self) -> io::Result<Vec<(Scheme, SocketAddr)>> {
        self.listeners
            .iter()
            .map(|l| Ok((l.scheme, l.socket.local_addr()?)))
            .collect()
    }

    /// Runs the loop until it has drained after SIGTERM (or a second signal, or the drain
    /// deadline), or polling itself fails.
    pub fn run(mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(1024);
        let mut next_sweep = Instant::now() + SWEEP_EVERY;
        self.accept();
        loop {
            let timeout = next_sweep.saturating_duration_since(Instant::now());
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
                        self.queue.len(),
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
                match self.listener_index(token) {
                    Some(i) => {
                        self.listeners[i].pending = true;
                        self.accept();
                    }
                    None => self.on_socket_event(token.0, event.is_readable()),
                }
            }
            self.take_lane_events();
            self.resume_stalled();
            let now = Instant::now();
            if now >= next_sweep {
                self.sweep(now);
                next_sweep = now + SWEEP_EVERY;
            }
        }
    }

    fn has_room(&self) -> bool {
        self.admission.has_room() && !self.queue.is_full() && !self.budget.is_spent()
    }

    /// Whether to call `accept` now: for a slot, or to answer `503` in busy mode.
    fn may_accept(&self) -> bool {
        (self.has_room() || self.admission.busy == BusyMode::Answer503)
            && Instant::now() >= self.accept_paused_until
    }

    /// The queue is above its high-water mark (three quarters): answers close their
    /// connections instead of keeping them.
    fn queue_under_pressure(&self) -> bool {
        self.queue.len() * 4 >= self.queue.capacity() * 3
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
            Scheme::Admin => self.admin_open < ADMIN_CONNS,
            _ => self.may_accept(),
        }
    }

    /// Accepts while there is room and connections wait, taking the listeners in turn.
    fn accept(&mut self) {
        let mut start = 0;
        loop {
            let count = self.listeners.len();
            let Some(i) = (0..count)
                .map(|k| (start + k) % count)
                .find(|&i| self.listeners[i].pending && self.may_accept_on(i))
            else {
                return;
            };
            start = i + 1;
            let scheme = self.listeners[i].scheme;
            match self.listeners[i].socket.accept() {
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
                            answer_busy(stream);
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
            (Scheme::Https, Some(certs)) => {
                match rustls::ServerConnection::new(Arc::clone(certs.config())) {
                    Ok(tls) => Transport::tls(stream, tls),
                    Err(e) => {
                        self.release_slot(scheme, peer);
                        return warn!("cannot start TLS for {peer}: {e}");
                    }
                }
            }
            (Scheme::Https, None) => return self.release_slot(scheme, peer),
        };
        let slot = self.free.pop().unwrap_or(self.conns.len());
        if let Err(e) = self.poll.registry().register(
            transport.socket_mut(),
            Token(slot),
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
        self.next_serial += 1;
        let id = ConnId {
            slot,
            serial: self.next_serial,
        };
        let timeout = self.timeout(self.settings.header_timeout);
        self.conns[slot] = Some(Conn::new(id, transport, peer, scheme, timeout));
    }

    fn close(&mut self, slot: usize) {
        let Some(mut conn) = self.conns.get_mut(slot).and_then(Option::take) else {
            return;
        };
        self.budget.release(conn.charged_bytes());
        let _ = self.poll.registry().deregister(conn.transport.socket_mut());
        let (kind, peer) = (conn.kind, conn.peer);
        drop(conn);
        self.free.push(slot);
        self.release_slot(kind, peer);
        self.accept();
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

    fn on_socket_event(&mut self, slot: usize, readable: bool) {
        let Some(conn) = self.conns.get(slot).and_then(Option::as_ref) else {
            return;
        };
        if matches!(conn.phase, Phase::AwaitLane(_) | Phase::AwaitRoom) {
            // No work for the gone: a client that closed while waiting is dropped now, and a
            // queued job of it skipped when it reaches the front.
            if readable && conn.peer_has_closed() {
                self.close(slot);
            }
            return;
        }
        self.drive(slot);
    }

    /// Moves a connection along until it blocks or closes.
    fn drive(&mut self, slot: usize) {
        loop {
            let limits = self.settings.head_limits;
            let header_timeout = self.timeout(self.settings.header_timeout);
            let no_room = self.queue.is_full() || self.budget.is_spent();
            let Some(conn) = self.conns.get_mut(slot).and_then(Option::as_mut) else {
                return;
            };
            if no_room && matches!(conn.phase, Phase::ExpectHead) {
                // Backpressure instead of shedding: read the next request only once it can be
                // queued. Closing here would only make the client reconnect at once.
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
                Step::OverBudget => {
                    self.counters.drop_for(Reason::OverBudget);
                    return self.close(slot);
                }
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

    fn body_limit(&self, route: &str) -> usize {
        let own = self
            .routes
            .iter()
            .find(|r| r.name.as_str() == route)
            .and_then(|r| r.max_body)
            .and_then(|limit| usize::try_from(limit).ok());
        own.map_or(self.settings.max_body, |own| {
            own.min(self.settings.max_body)
        })
    }

    fn on_head(&mut self, slot: usize, head: Head) {
        let (route, _) = split_route(&head.path);
        let limit = self.body_limit(route);
        let reader = match head.framing {
            Framing::Empty => return self.on_request(slot, head, Vec::new()),
            Framing::Length(n) if n > limit as u64 => {
                return self.refuse(slot, HttpError::BodyTooLarge)
            }
            Framing::Length(n) => BodyReader::length(n, limit),
            Framing::Chunked => BodyReader::chunked(limit),
        };
        let idle_timeout = self.timeout(self.settings.idle_timeout);
        let Some(conn) = self.conns.get_mut(slot).and_then(Option::as_mut) else {
            return;
        };
        if head.expect_continue && !conn.has_buffered_input() {
            conn.write_now(b"HTTP/1.1 100 Continue\r\n\r\n");
        }
        conn.expect_body(head, reader);
        conn.set_deadline(idle_timeout);
    }

    fn on_request(&mut self, slot: usize, head: Head, body: Vec<u8>) {
        let shape = ReplyShape::of(&head);
        let (route, rest) = split_route(&head.path);
        let on_admin_listener = self.conns[slot].as_ref().map(|c| c.kind) == Some(Scheme::Admin);
        let misplaced = match (on_admin_listener, route == "-") {
            (true, false) => Some("this address serves only the admin routes under /-/\n"),
            (false, true) if self.listeners_have_admin => {
                Some("no route here: the admin routes are on the --admin address\n")
            }
            _ => None,
        };
        if let Some(why) = misplaced {
            self.budget.release(body.len());
            return self.respond(slot, text(404, why), shape);
        }
        if route == "-" {
            self.budget.release(body.len());
            let view = AdminView {
                routes: &self.routes,
                libraries_mapped: self.libraries_mapped.load(Ordering::Relaxed),
                queued: self.queue.len(),
                queue_capacity: self.queue.capacity(),
                open: self.admission.open(),
                counters: &self.counters,
            };
            let response = admin::answer(rest, &view);
            return self.respond(slot, response, shape);
        }
        let Some(conn) = self.conns.get_mut(slot).and_then(Option::as_mut) else {
            self.budget.release(body.len());
            return;
        };
        let request = Request {
            method: head.method.as_str().into(),
            path: rest.into(),
            query: head.query.as_str().into(),
            headers: head
                .headers
                .into_iter()
                .map(|(name, value)| Header {
                    name: name.into(),
                    value: value.into(),
                })
                .collect(),
            body: body.into(),
            client: conn.peer.to_string().into(),
            tls: conn.transport.is_tls(),
        };
        let job = Job {
            conn: conn.id,
            route: route.to_owned(),
            request,
            enqueued_at: Instant::now(),
        };
        let body_bytes = job.body_bytes();
        if self.queue.push(job).is_err() {
            // Full: shed silently, as at accept time.
            self.budget.release(body_bytes);
            self.counters.drop_for(Reason::QueueFull);
            return self.close(slot);
        }
        self.counters.queued += 1;
        conn.phase = Phase::AwaitLane(shape);
        self.dispatch();
    }

    /// Answers a refused request and closes the connection afterwards.
    fn refuse(&mut self, slot: usize, error: HttpError) {
        let status = error.status();
        self.counters.refuse(status);
        let response = text(status, &format!("{status} {}: {error}\n", reason(status)));
        let shape = ReplyShape {
            head_only: false,
            keep_alive: false,
            http10: false,
            started: Instant::now(),
        };
        if let Some(conn) = self.conns.get_mut(slot).and_then(Option::as_mut) {
            self.budget.release(conn.charged_bytes());
            // The body's bytes are released; the phase below forgets them.
            conn.phase = Phase::ExpectHead;
        }
        self.respond(slot, response, shape);
    }

    /// Starts writing `response` on the connection in `slot`.
    fn respond(&mut self, slot: usize, response: Response, shape: ReplyShape) {
        self.counters.respond(response.status);
        let keep_alive =
            shape.keep_alive && !self.queue_under_pressure() && self.drain_until.is_none();
        let idle_timeout = self.timeout(self.settings.idle_timeout);
        let Some(conn) = self.conns.get_mut(slot).and_then(Option::as_mut) else {
            return;
        };
        let persistence = if keep_alive {
            Persistence::KeepAlive {
                http10: shape.http10,
            }
        } else {
            Persistence::Close
        };
        let (head, dropped) = write_head(
            response.status,
            &response.headers,
            response.body.len(),
            persistence,
        );
        if dropped > 0 {
            warn!(
                "dropped {dropped} malformed response header(s) for {}",
                conn.peer
            );
        }
        let body = if shape.head_only || is_bodiless(response.status) {
            RVec::new()
        } else {
            response.body
        };
        conn.phase = Phase::Sending(Outgoing::new(head, body, !keep_alive));
        conn.set_deadline(idle_timeout);
    }

    /// Hands queued jobs to idle lanes, skipping the ones whose client is gone.
    fn dispatch(&mut self) {
        while let Some(lane) = self.lanes.iter().position(|l| !l.busy && !l.dead) {
            let Some(job) = self.queue.pop() else {
                break;
            };
            self.budget.release(job.body_bytes());
            // Checked here, at the last moment, because the client's close may have come while
            // the request still sat unread (its event then said nothing new).
            let waiting = self.conn_mut(job.conn).is_some_and(|conn| {
                matches!(conn.phase, Phase::AwaitLane(_)) && !conn.peer_has_closed()
            });
            if !waiting {
                self.counters.drop_for(Reason::ClientGone);
                if self.conn_mut(job.conn).is_some() {
                    self.close(job.conn.slot);
                }
                continue;
            }
            let conn = job.conn;
            self.counters
                .queue_wait
                .observe(job.enqueued_at.elapsed().as_secs_f64());
            match self.lanes[lane].inbox.send(LaneMsg::Run(job)) {
                Ok(()) => self.lanes[lane].busy = true,
                Err(_) => {
                    warn!("lane {lane} is gone; its work goes to the other lanes");
                    self.lanes[lane].dead = true;
                    self.close(conn.slot);
                }
            }
        }
        self.accept();
    }

    /// Stops accepting (the listeners stay open in the supervisor for the next worker), gives
    /// idle keep-alive connections a moment for one last request, and answers everything else
    /// with `Connection: close`.
    fn start_drain(&mut self) {
        self.drain_until = Some(Instant::now() + self.settings.drain_timeout);
        for mut listener in self.listeners.drain(..) {
            let _ = self.poll.registry().deregister(&mut listener.socket);
        }
        let last_call = Instant::now() + DRAIN_IDLE;
        for conn in self.conns.iter_mut().flatten() {
            if matches!(conn.phase, Phase::ExpectHead) && !conn.has_partial_request() {
                conn.deadline = conn.deadline.min(last_call);
            }
        }
        crate::info!(
            "draining: stopped accepting; {} connection(s) open, {} queued",
            self.admission.open(),
            self.queue.len()
        );
    }

    /// Whether nothing admitted is left to answer. Idle keep-alive connections count as
    /// unfinished until their last chance (`DRAIN_IDLE`) has passed and the sweep closed them:
    /// exiting earlier would cut off a request already on its way.
    fn drained(&self) -> bool {
        self.queue.is_empty()
            && self.lanes.iter().all(|lane| !lane.busy || lane.dead)
            && self
                .conns
                .iter()
                .flatten()
                .all(|conn| matches!(conn.phase, Phase::Lingering { .. }))
    }

    /// Lets waiting connections read their next request, oldest first, while the queue has
    /// room.
    fn resume_stalled(&mut self) {
        let header_timeout = self.timeout(self.settings.header_timeout);
        while !self.queue.is_full() && !self.budget.is_spent() {
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

    fn take_lane_events(&mut self) {
        while let Ok(event) = self.lane_events.try_recv() {
            match event {
                LaneEvent::Done {
                    lane,
                    conn,
                    route,
                    response,
                } => {
                    if let Some(slot) = self.lanes.get_mut(lane.0) {
                        slot.busy = false;
                    }
                    let (shape, peer) = match self.conn_mut(conn) {
                        Some(Conn {
                            phase: Phase::AwaitLane(shape),
                            peer,
                            ..
                        }) => (*shape, *peer),
                        _ => continue, // the client left; drop the answer
                    };
                    let took = shape.started.elapsed();
                    self.counters.latency.observe(took.as_secs_f64());
                    if crate::log::access_enabled() {
                        crate::info!(
                            "access {peer} /{route} {} {} bytes {:.1} ms",
                            response.status,
                            response.body.len(),
                            took.as_secs_f64() * 1000.0
                        );
                    }
                    self.respond(conn.slot, response, shape);
                    self.drive(conn.slot);
                }
                LaneEvent::Routes(routes) => self.routes = routes,
            }
        }
        self.dispatch();
    }

    /// Closes connections past their deadline and drops jobs that waited too long.
    fn sweep(&mut self, now: Instant) {
        while let Some(job) = self.queue.pop_expired(now, self.settings.queue_wait) {
            self.budget.release(job.body_bytes());
            self.counters.drop_for(Reason::Expired);
            if self.conn_mut(job.conn).is_some() {
                self.close(job.conn.slot);
            }
        }
        let pressure = self.admission.under_pressure();
        let settings = self.settings;
        for slot in 0..self.conns.len() {
            let Some(conn) = self.conns[slot].as_mut() else {
                continue;
            };
            let Some(reason) = expired(conn, now, pressure, &settings) else {
                continue;
            };
            if conn.has_partial_request() {
                conn.write_now(b"HTTP/1.1 408 Request Timeout\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
            }
            if let Some(reason) = reason {
                self.counters.drop_for(reason);
            }
            self.close(slot);
        }
        self.accept();
        self.sweeps = self.sweeps.wrapping_add(1);
        if self.sweeps % CERT_CHECK_EVERY == 0 {
            if let Some(certs) = self.certs.as_mut() {
                certs.refresh();
            }
        }
    }
}

fn listener_token(i: usize) -> Token {
    Token(usize::MAX - 1 - i)
}

/// Whether `conn` is past its deadline (shrunk under pressure) or below the minimum rate;
/// `Some(None)` for a close nobody needs to count (a lingering close ending).
fn expired(
    conn: &Conn,
    now: Instant,
    pressure: bool,
    settings: &IntakeSettings,
) -> Option<Option<Reason>> {
    let reason = match conn.phase {
        Phase::AwaitRoom | Phase::AwaitLane(_) => return None,
        Phase::Lingering { .. } => None,
        Phase::ExpectHead => Some(Reason::HeaderDeadline),
        Phase::ExpectBody(_) | Phase::Sending(_) => Some(Reason::IdleDeadline),
    };
    let deadline = if pressure && reason.is_some() {
        conn.deadline.min(conn.since + settings.pressure_timeout)
    } else {
        conn.deadline
    };
    if now >= deadline {
        return Some(reason);
    }
    let elapsed = now.duration_since(conn.since);
    let min_rate = settings.min_rate as f64;
    match conn.progress() {
        Some(moved)
            if elapsed > RATE_GRACE && (moved as f64) < min_rate * elapsed.as_secs_f64() =>
        {
            Some(Some(Reason::TooSlow))
        }
        _ => None,
    }
}

/// `/echo/a/b` -> (`echo`, `/a/b`); `/echo` -> (`echo`, `/`).
fn split_route(path: &str) -> (&str, &str) {
    let rest = path.strip_prefix('/').unwrap_or(path);
    match rest.find('/') {
        Some(at) => (&rest[..at], &rest[at..]),
        None => (rest, "/"),
    }
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
    fn routes_split_at_the_first_segment() {
        assert_eq!(split_route("/echo"), ("echo", "/"));
        assert_eq!(split_route("/echo/"), ("echo", "/"));
        assert_eq!(split_route("/echo/a/b"), ("echo", "/a/b"));
        assert_eq!(split_route("/"), ("", "/"));
        assert_eq!(split_route("/-/health"), ("-", "/health"));
    }
}
