//! Between the queue and the executors: placing queued jobs (in order, skipping the gone, and
//! letting jobs for other routes pass one whose route is restarting), letting parked
//! connections read again when the queue has room, and taking the pool's answers and the
//! watcher's changes.

use super::*;

impl Intake {
    /// Places queued jobs with the pool until every lane is busy or nothing can run.
    pub(super) fn dispatch(&mut self) {
        let mut at = 0;
        while let Some(job) = self.queue.get(at) {
            let place = self
                .pool
                .place(&job.route, job.body_bytes(), self.poll.registry());
            let slot = match place {
                Place::Wait => {
                    at += 1;
                    continue;
                }
                Place::Full => break,
                Place::NoRoute | Place::Run(_) => place,
            };
            let Some(job) = self.queue.remove(at) else {
                break;
            };
            self.budget.release(job.body_bytes());
            // Checked here, at the last moment, because the client's close may have come while
            // the request still sat unread (its event then said nothing new).
            let waiting = self
                .conn_mut(job.conn)
                .map(|conn| matches!(conn.phase, Phase::AwaitAnswer(_)) && !conn.peer_has_closed());
            if waiting != Some(true) {
                self.counters.drop_for(Reason::ClientGone);
                if waiting.is_some() {
                    self.close(job.conn.slot);
                }
                continue;
            }
            match slot {
                Place::Run(executor) => {
                    self.counters
                        .queue_wait
                        .observe(job.enqueued_at.elapsed().as_secs_f64());
                    let mut events = std::mem::take(&mut self.pool_events);
                    self.pool
                        .send(executor, job, self.poll.registry(), &mut events);
                    self.pool_events = events;
                }
                _ => {
                    let body = format!("no plugin serves /{}\n", job.route);
                    self.answer(job.conn, &job.route, text(404, &body));
                }
            }
        }
        self.accept();
    }

    /// Takes the pool's events and places jobs until neither has anything left to do.
    pub(super) fn settle(&mut self) {
        loop {
            self.take_pool_events();
            if !self.dispatch_pending {
                return;
            }
            self.dispatch_pending = false;
            self.dispatch();
        }
    }

    /// Lets waiting connections read their next request, oldest first, while the queue has
    /// room.
    pub(super) fn resume_stalled(&mut self) {
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

    /// Hands an executor event to the pool.
    pub(super) fn on_executor_event(&mut self, token: Token) {
        let mut events = std::mem::take(&mut self.pool_events);
        self.pool
            .on_event(token, self.poll.registry(), &mut self.scratch, &mut events);
        self.pool_events = events;
    }

    /// The pool's deadlines, reaps and restarts.
    pub(super) fn sweep_pool(&mut self, now: Instant) {
        let mut events = std::mem::take(&mut self.pool_events);
        self.pool.sweep(now, self.poll.registry(), &mut events);
        self.pool_events = events;
    }

    /// Answers and requeued jobs from the pool (each frees or refills a lane: dispatch again).
    fn take_pool_events(&mut self) {
        while !self.pool_events.is_empty() {
            // Requeued jobs come in reverse order, so pushing each to the front keeps theirs.
            for event in std::mem::take(&mut self.pool_events) {
                match event {
                    PoolEvent::Answer {
                        conn,
                        route,
                        response,
                    } => self.answer(conn, &route, response),
                    PoolEvent::Requeue(job) => {
                        self.budget.take_back(job.body_bytes());
                        self.queue.push_front(job);
                    }
                }
            }
            self.dispatch_pending = true;
        }
    }

    /// Starts or removes versions as the watcher says.
    pub(super) fn take_changes(&mut self) {
        while let Ok(change) = self.changes.try_recv() {
            match change {
                Change::Install(version) => self.pool.install(version, self.poll.registry()),
                Change::Remove(name) => {
                    crate::info!("/{name} is no longer served");
                    self.pool.remove(&name, self.poll.registry());
                }
            }
        }
    }

    /// Writes `response` to the connection waiting for it, if it still waits.
    fn answer(&mut self, conn: ConnId, route: &str, response: Response) {
        let (shape, peer) = match self.conn_mut(conn) {
            Some(Conn {
                phase: Phase::AwaitAnswer(shape),
                peer,
                ..
            }) => (*shape, *peer),
            _ => return, // the client left; drop the answer
        };
        let took = shape.started.elapsed();
        self.counters.latency.observe(took.as_secs_f64());
        if crate::observe::log::access_enabled() {
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
}
