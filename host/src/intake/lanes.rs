//! Between intake and the lanes: handing queued jobs to idle lanes (skipping the gone), letting
//! parked connections read again when the queue has room, and taking the lanes' answers.

use super::*;

impl Intake {
    /// Hands queued jobs to idle lanes, skipping the ones whose client is gone.
    pub(super) fn dispatch(&mut self) {
        while let Some(lane) = self.lanes.iter().position(|l| !l.busy && !l.dead) {
            let Some(job) = self.queue.pop() else {
                break;
            };
            self.budget.release(job.body_bytes());
            // Checked here, at the last moment, because the client's close may have come while
            // the request still sat unread (its event then said nothing new).
            let waiting = self
                .conn_mut(job.conn)
                .map(|conn| matches!(conn.phase, Phase::AwaitLane(_)) && !conn.peer_has_closed());
            if waiting != Some(true) {
                self.counters.drop_for(Reason::ClientGone);
                if waiting.is_some() {
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

    /// Lets waiting connections read their next request, oldest first, while the queue has
    /// room.
    pub(super) fn resume_stalled(&mut self) {
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

    pub(super) fn take_lane_events(&mut self) {
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
}
