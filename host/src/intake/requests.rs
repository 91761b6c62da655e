//! Complete heads and requests: the keys (through `access`), the body limit, admin routes
//! (whose internals only the `--admin` listener or a loopback client sees), queueing a job,
//! and writing an answer (or a refusal) on the connection.

use super::*;
use crate::access::internals::{may_see_internals, reveals_internals};
use crate::http::convert::plugin_request;
use crate::http::response::BodyLength;
use crate::intake::status::{Limits, StatusView};
use crate::intake::stream::{Delimit, Stream};
use crate::jellyfish::Jellyfish;

impl Intake {
    pub(super) fn body_limit(&self, route: &str) -> usize {
        let own = self
            .dispatch
            .pool()
            .max_body(route)
            .and_then(|limit| usize::try_from(limit).ok());
        own.map_or(self.settings.max_body, |own| {
            own.min(self.settings.max_body)
        })
    }

    /// A complete head with a body to come. The body's bytes are reserved in the budget
    /// before a byte of it is read (its length; a chunked body's limit), so an admitted upload
    /// is never cut off halfway for want of room: without room now, the connection waits,
    /// unread, oldest first (or, with `--busy 503`, is answered 503 at once).
    pub(super) fn on_head(&mut self, slot: usize, head: Head) {
        // No key, no reading: a body sent without one is never reserved nor read.
        if !self.passes_gate(slot, &head, true) {
            return;
        }
        let (limit, need) = match self.body_reservation(&head) {
            Ok(reservation) => reservation,
            Err(e) => return self.refuse(slot, e),
        };
        if self.budget.reserve(need) {
            return self.start_body(slot, head, limit, need);
        }
        let queue_wait = self.settings.queue_wait;
        let Some(conn) = self.conns.get_mut(slot).and_then(Option::as_mut) else {
            return;
        };
        conn.phase = Phase::AwaitBudget(head);
        if self.admission.busy == BusyMode::Answer503 {
            return self.answer_no_room(slot);
        }
        conn.set_deadline(queue_wait);
        self.awaiting_budget.push_back(conn.id);
    }

    /// The body limit for `head`'s route and the budget bytes its body needs; 413 for a body
    /// longer than either.
    fn body_reservation(&self, head: &Head) -> Result<(usize, usize), HttpError> {
        let (route, _) = split_route(&head.path);
        let limit = self.body_limit(route).min(self.budget.limit());
        match head.framing {
            Framing::Length(n) if n > limit as u64 => Err(HttpError::BodyTooLarge { limit }),
            Framing::Length(n) => Ok((limit, n as usize)),
            _ => Ok((limit, limit)),
        }
    }

    /// Starts reading a body whose `reserved` bytes are taken from the budget.
    fn start_body(&mut self, slot: usize, head: Head, limit: usize, reserved: usize) {
        let idle_timeout = self.timeout(self.settings.idle_timeout);
        let expect_continue = head.expect_continue;
        let Some(conn) = self.conns.get_mut(slot).and_then(Option::as_mut) else {
            self.budget.unreserve(reserved);
            return;
        };
        if let Err(e) = conn.expect_body(head, limit, reserved) {
            self.budget.unreserve(reserved);
            return self.refuse(slot, e);
        }
        if expect_continue && !conn.has_buffered_input() {
            conn.write_now(b"HTTP/1.1 100 Continue\r\n\r\n");
        }
        conn.set_deadline(idle_timeout);
    }

    /// Lets uploads that wait for budget room read their bodies, oldest first, while the
    /// oldest one's body fits.
    pub(super) fn resume_awaiting_budget(&mut self) {
        while let Some(&id) = self.awaiting_budget.front() {
            let Some(Conn {
                phase: Phase::AwaitBudget(head),
                ..
            }) = conn_in(&self.conns, id)
            else {
                self.awaiting_budget.pop_front();
                continue;
            };
            let (limit, need) = match self.body_reservation(head) {
                Ok(reservation) => reservation,
                Err(e) => {
                    // Its route's limit shrank while it waited (a new version): refuse it now.
                    self.awaiting_budget.pop_front();
                    self.refuse(id.slot, e);
                    self.drive(id.slot);
                    continue;
                }
            };
            if !self.budget.reserve(need) {
                return;
            }
            self.awaiting_budget.pop_front();
            let Some(conn) = self.conn_mut(id) else {
                self.budget.unreserve(need);
                continue;
            };
            let Phase::AwaitBudget(head) = std::mem::replace(&mut conn.phase, Phase::ExpectHead)
            else {
                self.budget.unreserve(need);
                continue;
            };
            self.start_body(id.slot, head, limit, need);
            self.drive(id.slot);
        }
    }

    /// `503` with `Retry-After` (the predicted wait), then close: the body was not read, so
    /// the connection cannot carry another request. The body the client goes on sending is
    /// read and dropped while the connection lingers (up to its declared length, else the
    /// body limit), so the answer is not destroyed by a reset.
    pub(super) fn answer_no_room(&mut self, slot: usize) {
        let unread = match self
            .conns
            .get(slot)
            .and_then(Option::as_ref)
            .map(|c| &c.phase)
        {
            Some(Phase::AwaitBudget(head)) => self.body_reservation(head).map_or(0, |(_, n)| n),
            _ => 0,
        };
        if let Some(conn) = self.conns.get_mut(slot).and_then(Option::as_mut) {
            conn.phase = Phase::ExpectHead;
            conn.unread_body = unread;
        }
        self.answer_busy(slot, "no room for this body now");
    }

    /// Answers 503 with `Retry-After` (the predicted wait) to a request read whole that the
    /// queue could not take, and closes the connection.
    fn answer_queue_full(&mut self, slot: usize) {
        self.answer_busy(slot, "the queue is full");
    }

    /// A `503` saying `why` and when to retry (the predicted wait in whole seconds, at least
    /// 1, as `Retry-After`); the connection closes after it.
    fn answer_busy(&mut self, slot: usize, why: &str) {
        self.counters.busy_answers += 1;
        let wait = self.dispatch.predicted_wait();
        let retry_after = (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1);
        let response = text(503, &format!("{why}; retry after {retry_after} s\n"))
            .with_header("Retry-After", &retry_after.to_string());
        let shape = ReplyShape {
            head_only: false,
            keep_alive: false,
            http10: false,
            started: Instant::now(),
        };
        self.respond(slot, response, shape);
    }

    pub(super) fn on_request(&mut self, slot: usize, mut head: Head, body: Vec<u8>) {
        // A request with a body passed its gate at its head (`on_head`); one without, here.
        if head.framing == Framing::Empty && !self.passes_gate(slot, &head, false) {
            self.budget.release(body.len());
            return;
        }
        self.strip_checked_key(&mut head);
        let shape = ReplyShape::of(&head);
        let (route, rest) = split_route(&head.path);
        let Some((kind, peer)) = self.conns[slot].as_ref().map(|c| (c.kind, c.peer)) else {
            self.budget.release(body.len());
            return;
        };
        let on_admin_listener = kind == Scheme::Admin;
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
        // The internals are the operator's: off the --admin listener, a client that is not on
        // this machine gets what a route that does not exist gets (a 403 would say it is here).
        if route == "-"
            && !on_admin_listener
            && reveals_internals(rest)
            && !may_see_internals(peer.ip())
        {
            self.budget.release(body.len());
            return self.respond(slot, text(404, "no plugin serves /-\n"), shape);
        }
        if route == "-" {
            self.budget.release(body.len());
            let pool = self.dispatch.pool();
            let routes = pool.routes();
            let predicted_wait = self.dispatch.predicted_wait();
            let listeners = self.local_addrs().unwrap_or_default();
            let starting = match self.settled {
                true => Vec::new(),
                false => pool.starting_routes(),
            };
            let settings = self.settings;
            let status = StatusView {
                listeners: &listeners,
                limits: Limits {
                    max_conns: self.admission.max_conns(),
                    queue_bytes: self.budget.limit(),
                    max_body: settings.max_body,
                    deadline: pool.default_deadline(),
                    queue_wait: settings.queue_wait,
                    header_timeout: settings.header_timeout,
                    idle_timeout: settings.idle_timeout,
                    min_rate: settings.min_rate,
                    busy_503: self.admission.busy == BusyMode::Answer503,
                    pace: pool.default_pace(),
                },
                queue_history: &self.queue_history,
                events: pool.events(),
                lanes_busy: pool.busy(),
                lanes: pool.lanes(),
                started: self.started,
            };
            let view = AdminView {
                status,
                predicted_wait,
                queue_wait: self.settings.queue_wait,
                routes: &routes,
                executors: &pool.counters,
                executors_alive: pool.alive(),
                queued: self.dispatch.waiting(),
                queue_capacity: self.dispatch.capacity(),
                open: self.admission.open(),
                counters: &self.counters,
                light: self.jellyfish.as_ref().map(Jellyfish::view),
                starting: &starting,
                gates: &self.gates,
            };
            let response = admin::answer(rest, &view);
            return self.respond(slot, response, shape);
        }
        if self.admission.busy == BusyMode::Answer503
            && self.dispatch.pool().is_first_starting(route)
        {
            // Busy mode does not queue a request that would wait: a route still starting is
            // answered 503 at once, with when to come back.
            self.budget.release(body.len());
            let why = format!("/{route} is starting");
            return self.answer_busy(slot, &why);
        }
        // Requests wait ahead of it: the server is under pressure (see `Conn::queued_behind`).
        let behind = self.dispatch.waiting() > 0;
        let Some(conn) = self.conns.get_mut(slot).and_then(Option::as_mut) else {
            self.budget.release(body.len());
            return;
        };
        conn.queued_behind = behind;
        let (route, rest) = (route.to_owned(), rest.to_owned());
        let expected = self.dispatch.pool().expected_call(&route);
        let request = plugin_request(head, rest, body, conn.peer_text(), conn.transport.is_tls());
        let job = Job {
            conn: conn.id,
            route,
            request,
            enqueued_at: Instant::now(),
            expected,
        };
        let body_bytes = job.body_bytes();
        if self.dispatch.enqueue(job).is_err() {
            // Full: the queue had room when this head was read, but requests read at the same
            // time took it. The client has sent its whole request: it gets an answer (503 with
            // when to come back), not a silent close.
            self.budget.release(body_bytes);
            self.counters.drop_for(Reason::QueueFull);
            return self.answer_queue_full(slot);
        }
        self.counters.queued += 1;
        conn.phase = Phase::AwaitAnswer(shape);
    }

    /// Answers a refused request and closes the connection afterwards.
    pub(super) fn refuse(&mut self, slot: usize, error: HttpError) {
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
            conn.give_back(&mut self.budget);
            // The body's bytes are released; the phase below forgets them.
            conn.phase = Phase::ExpectHead;
        }
        self.respond(slot, response, shape);
    }

    /// Starts writing `response` on the connection in `slot`.
    pub(super) fn respond(&mut self, slot: usize, response: Response, shape: ReplyShape) {
        let length = BodyLength::Known(response.body.len() as u64);
        let Some((head, keep_alive, idle)) = self.reply_head(slot, &response, shape, length) else {
            return;
        };
        let body = if shape.head_only || is_bodiless(response.status) {
            RVec::new()
        } else {
            response.body
        };
        if let Some(conn) = self.conns.get_mut(slot).and_then(Option::as_mut) {
            conn.phase = Phase::Sending(Outgoing::new(head, body, !keep_alive));
            conn.set_deadline(idle);
        }
    }

    /// Starts writing a streamed response (its pieces follow as its executor sends them).
    pub(super) fn start_stream(
        &mut self,
        slot: usize,
        response: Response,
        length: Option<u64>,
        shape: ReplyShape,
    ) {
        let (body_length, delimit) = match length {
            Some(n) => (BodyLength::Known(n), Delimit::Length),
            None if shape.http10 => (BodyLength::UntilClose, Delimit::Close),
            None => (BodyLength::Chunked, Delimit::Chunked),
        };
        let delimit = match shape.head_only || is_bodiless(response.status) {
            true => Delimit::Nothing,
            false => delimit,
        };
        let Some((head, keep_alive, idle)) = self.reply_head(slot, &response, shape, body_length)
        else {
            return;
        };
        if let Some(conn) = self.conns.get_mut(slot).and_then(Option::as_mut) {
            conn.phase = Phase::Streaming(Stream::new(head, delimit, length, !keep_alive, idle));
            conn.set_deadline(idle);
        }
    }

    /// Counts an answer and writes its head; with whether the connection stays open after it
    /// and the idle deadline to write it under. `None` when the connection is gone.
    fn reply_head(
        &mut self,
        slot: usize,
        response: &Response,
        shape: ReplyShape,
        length: BodyLength,
    ) -> Option<(Vec<u8>, bool, Duration)> {
        self.counters.respond(response.status);
        let idle = self.timeout(self.settings.idle_timeout);
        let open = !self.queue_under_pressure() && self.drain_until.is_none();
        let conn = self.conns.get(slot).and_then(Option::as_ref)?;
        // A half-closed client sends nothing more: answer what it already sent, then close.
        let keep_alive =
            shape.keep_alive && open && (!conn.half_closed || conn.has_buffered_input());
        let persistence = if keep_alive {
            Persistence::KeepAlive {
                http10: shape.http10,
            }
        } else {
            Persistence::Close
        };
        let (head, dropped) = write_head(response.status, &response.headers, length, persistence);
        if dropped > 0 {
            warn!(
                "dropped {dropped} malformed response header(s) for {}",
                conn.peer
            );
        }
        Some((head, keep_alive, idle))
    }
}

/// `/echo/a/b` -> (`echo`, `/a/b`); `/echo` -> (`echo`, `/`).
pub(super) fn split_route(path: &str) -> (&str, &str) {
    let rest = path.strip_prefix('/').unwrap_or(path);
    match rest.find('/') {
        Some(at) => (&rest[..at], &rest[at..]),
        None => (rest, "/"),
    }
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
