//! Time: closing connections past their deadline or below the minimum rate, dropping jobs that
//! waited too long, re-reading certificates, and draining on shutdown.

use super::*;

/// How many sweeps between two samples of the queue depth for the status page (a second).
const SAMPLE_EVERY: u32 = 10;

impl Intake {
    /// Stops accepting (the listeners stay open in the supervisor for the next worker), gives
    /// idle keep-alive connections a moment for one last request, and answers everything else
    /// with `Connection: close`.
    pub(super) fn start_drain(&mut self) {
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
            self.dispatch.waiting()
        );
    }

    /// Whether nothing admitted is left to answer. Idle keep-alive connections count as
    /// unfinished until their last chance (`DRAIN_IDLE`) has passed and the sweep closed them:
    /// exiting earlier would cut off a request already on its way.
    pub(super) fn drained(&self) -> bool {
        self.dispatch.is_drained()
            && self
                .conns
                .iter()
                .flatten()
                .all(|conn| matches!(conn.phase, Phase::Lingering { .. }))
    }

    /// Closes connections past their deadline and drops jobs that waited too long.
    pub(super) fn sweep(&mut self, now: Instant) {
        while let Some(job) = self.dispatch.pop_expired(now, self.settings.queue_wait) {
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
            if matches!(conn.phase, Phase::AwaitBudget(_)) {
                // An upload that waited `--queue-wait` for room is answered, not reset.
                if now >= conn.deadline {
                    self.counters.drop_for(Reason::NoRoomForBody);
                    self.answer_no_room(slot);
                    self.drive(slot);
                }
                continue;
            }
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
        if self.sweeps % SAMPLE_EVERY == 0 {
            if self.queue_history.len() == status::HISTORY {
                self.queue_history.pop_front();
            }
            let depth = u16::try_from(self.dispatch.waiting()).unwrap_or(u16::MAX);
            self.queue_history.push_back(depth);
        }
        if self.sweeps % CERT_CHECK_EVERY == 0 {
            if let Some(certs) = self.certs.as_mut() {
                certs.refresh();
            }
        }
    }
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
        Phase::AwaitRoom | Phase::AwaitAnswer(_) | Phase::AwaitBudget(_) => return None,
        Phase::Streaming(ref stream) if stream.waits_on_server() => return None,
        Phase::Streaming(_) => Some(Reason::IdleDeadline),
        Phase::Lingering { .. } => None,
        Phase::ExpectHead => Some(Reason::HeaderDeadline),
        Phase::ExpectBody | Phase::Sending(_) => Some(Reason::IdleDeadline),
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
