//! What executors say and what it costs: frames turned into replies for connections (whole
//! answers, streamed ones in parts), a version becoming ready, panics, invalid statuses, and
//! deaths (the running call's 502, the calls written ahead back to the queue, the crash count
//! that drives the backoff).

use std::sync::atomic::Ordering;
use std::time::Instant;

use mio::Registry;
use plugin_api::Response;

use super::{Pool, PoolEvent, HEALTHY_AFTER};
use crate::exec::executor::{Call, DeathContext, Phase};
use crate::exec::frame::Message;
use crate::exec::job::Reply;
use crate::http::response::text;
use crate::ids::Generation;
use crate::plugins::version::HandlerMeta;
use crate::warn;

/// How a call ended.
pub(super) enum Finished {
    /// A whole answer, or the handler's panic.
    Whole(Result<Response, String>),
    /// A streamed answer's `End`: complete, or broken off.
    Stream(bool),
}

/// Whether a frame is a part of a streamed answer.
fn is_streamed(message: &Message) -> bool {
    matches!(
        message,
        Message::Head(..) | Message::Piece(_) | Message::End(_)
    )
}

impl Pool {
    pub(super) fn on_message(
        &mut self,
        slot: usize,
        message: Message,
        registry: &Registry,
        out: &mut Vec<PoolEvent>,
    ) {
        let Some(executor) = self.executors.get_mut(slot).and_then(Option::as_mut) else {
            return;
        };
        let generation = executor.generation;
        if matches!(executor.phase, Phase::ExpectExit { .. }) {
            return; // already given up on: what it sent after that does not count
        }
        match (&executor.phase, message) {
            (Phase::ExpectReady { .. }, Message::Ready(meta)) => {
                executor.phase = Phase::Serving;
                // Idle from now, not from its start (a slow init is not idleness).
                executor.idle_since = Instant::now();
                self.on_ready(generation, meta, registry);
            }
            (Phase::ExpectReady { .. }, Message::Refused { reason, .. }) => {
                self.count_crash(slot);
                let Some(executor) = self.executors.get_mut(slot).and_then(Option::as_mut) else {
                    return;
                };
                // It exits by itself; the kill makes sure a plugin cannot linger.
                executor.kill();
                executor.phase = Phase::ExpectExit {
                    look: Instant::now(),
                    why: DeathContext::AtStart(Some(reason)),
                };
                self.deregister(slot, registry);
            }
            (Phase::Serving | Phase::Retiring { .. }, message) if is_streamed(&message) => {
                self.on_stream(slot, message, registry, out);
            }
            (Phase::Serving | Phase::Retiring { .. }, Message::Response(response))
                if executor.streaming_to().is_none() =>
            {
                self.answered(slot, Finished::Whole(Ok(response)), registry, out);
            }
            (Phase::Serving | Phase::Retiring { .. }, Message::Panicked(why))
                if executor.streaming_to().is_none() =>
            {
                self.answered(slot, Finished::Whole(Err(why)), registry, out);
            }
            (_, other) => {
                warn!(
                    "executor [{}] sent an unexpected {} frame; killing it",
                    executor.pid,
                    other.name()
                );
                self.died(slot, registry, out);
            }
        }
    }

    /// An executor of `generation` said `Ready`: a candidate goes live, the version it
    /// replaces is retired.
    pub(super) fn on_ready(
        &mut self,
        generation: Generation,
        meta: HandlerMeta,
        registry: &Registry,
    ) {
        if let Some(old) = self.versions.ready(generation, meta) {
            self.retire(old, registry);
        }
    }

    /// A part of a streamed answer from the executor in `slot`: a `Head` starts one for the
    /// running call, `Piece`s go to its client, `End` finishes the call. Any of them out of
    /// that order is a broken executor.
    pub(super) fn on_stream(
        &mut self,
        slot: usize,
        message: Message,
        registry: &Registry,
        out: &mut Vec<PoolEvent>,
    ) {
        let Some(executor) = self.executors.get_mut(slot).and_then(Option::as_mut) else {
            return;
        };
        let pid = executor.pid;
        let Some(call) = executor.calls.front_mut() else {
            warn!("executor [{pid}] streamed an answer for no call; killing it");
            return self.died(slot, registry, out);
        };
        let (conn, route) = (call.job.conn, call.job.route.clone());
        let reply = match (call.streaming, message) {
            (None, Message::Head(response, length)) if (200..=999).contains(&response.status) => {
                call.streaming = Some(response.status);
                Reply::Head(response, length)
            }
            // An empty piece carries nothing: only a broken (or hostile) executor sends one.
            (Some(_), Message::Piece(bytes)) if !bytes.is_empty() => Reply::Piece(bytes),
            (Some(_), Message::End(complete)) => {
                return self.answered(slot, Finished::Stream(complete), registry, out);
            }
            (_, message) => {
                warn!(
                    "executor [{pid}] sent a {} frame out of a streamed answer's order; \
                     killing it",
                    message.name()
                );
                return self.died(slot, registry, out);
            }
        };
        out.push(PoolEvent::Answer { conn, route, reply });
    }

    /// The front call of the executor in `slot` ended as `finished` says.
    pub(super) fn answered(
        &mut self,
        slot: usize,
        finished: Finished,
        registry: &Registry,
        out: &mut Vec<PoolEvent>,
    ) {
        let pace = self.pace_of_slot(slot);
        let Some(executor) = self.executors.get_mut(slot).and_then(Option::as_mut) else {
            return;
        };
        let Some(call) = executor.calls.pop_front() else {
            warn!(
                "executor [{}] answered a call it was not given; killing it",
                executor.pid
            );
            return self.died(slot, registry, out);
        };
        executor.answered += 1;
        let now = Instant::now();
        match executor.calls.front_mut() {
            Some(next) => next.started = Some(now),
            None => {
                self.busy -= 1;
                executor.idle_since = now;
                // The lane's breath before its next call (`--pace`, a route's `pace`).
                executor.resting_until = (!pace.is_zero()).then(|| now + pace);
            }
        }
        let generation = executor.generation;
        let retiring =
            matches!(executor.phase, Phase::Retiring { .. }) && executor.calls.is_empty();
        let Some(version) = self.versions.get_mut(generation) else {
            // Not reached: a version outlives its executors. Deliver what came anyway.
            let reply = match finished {
                Finished::Whole(Ok(response)) => Reply::Whole(response),
                Finished::Whole(Err(_)) => Reply::Whole(text(500, "the plugin panicked\n")),
                Finished::Stream(complete) => Reply::End(complete),
            };
            out.push(PoolEvent::Answer {
                conn: call.job.conn,
                route: call.job.route,
                reply,
            });
            return;
        };
        version.crashes_in_row = 0;
        // Timed with the others this read answered (`Burst`): from the first one's start, a
        // share per request (a batch's first call counts its `batch_lead` requests; the batch's
        // others are answered right after it and count none).
        if let (Some(started), lead @ 1..) = (call.started, call.batch_lead) {
            self.burst.first.get_or_insert((generation, started));
            self.burst.requests = self.burst.requests.saturating_add(lead);
        }
        let route = version.new.name.as_str();
        let stats = &version.stats;
        let result = match finished {
            Finished::Whole(result) => result,
            Finished::Stream(complete) => {
                stats.count_response(call.streaming.unwrap_or(200));
                if !complete {
                    stats.errors.fetch_add(1, Ordering::Relaxed);
                }
                out.push(PoolEvent::Answer {
                    conn: call.job.conn,
                    route: call.job.route,
                    reply: Reply::End(complete),
                });
                if retiring {
                    self.close_retired(slot, registry);
                }
                return;
            }
        };
        let response = match result {
            Ok(response) if (200..=999).contains(&response.status) => response,
            Ok(response) => {
                stats.errors.fetch_add(1, Ordering::Relaxed);
                warn!(
                    "plugin {route} answered with status {}, which it may not send; sent 500",
                    response.status
                );
                text(
                    500,
                    &format!("plugin {route} answered with an invalid status\n"),
                )
            }
            Err(why) => {
                stats.errors.fetch_add(1, Ordering::Relaxed);
                stats.panics.fetch_add(1, Ordering::Relaxed);
                warn!(
                    "plugin {route} (generation {}) panicked: {why}",
                    generation.0
                );
                text(500, &format!("plugin {route} panicked\n"))
            }
        };
        stats.count_response(response.status);
        out.push(PoolEvent::Answer {
            conn: call.job.conn,
            route: call.job.route,
            reply: Reply::Whole(response),
        });
        if retiring {
            self.close_retired(slot, registry);
        }
    }

    /// The executor in `slot` is gone (end of file, a write that failed, a broken frame):
    /// its running call gets 502, the calls it had not started go back to the queue, and a
    /// fresh executor starts once it is reaped.
    pub(super) fn died(&mut self, slot: usize, registry: &Registry, out: &mut Vec<PoolEvent>) {
        let Some(executor) = self.executors.get_mut(slot).and_then(Option::as_mut) else {
            return;
        };
        if matches!(executor.phase, Phase::ExpectExit { .. }) {
            return;
        }
        executor.kill();
        let why = match executor.phase {
            Phase::ExpectReady { .. } => DeathContext::AtStart(None),
            _ if !executor.calls.is_empty() => DeathContext::MidCall,
            _ => DeathContext::Idle,
        };
        let generation = executor.generation;
        self.count_crash(slot);
        let route = self
            .versions
            .get(generation)
            .map(|v| v.new.name.to_string())
            .unwrap_or_default();
        let running = self.fail_calls(slot, 502, &format!("plugin {route} crashed\n"), out);
        let keep = self.crashes.is_some() && matches!(why, DeathContext::MidCall);
        if let Some(executor) = self.executors.get_mut(slot).and_then(Option::as_mut) {
            executor.phase = Phase::ExpectExit {
                why,
                look: Instant::now(),
            };
            // The request it died on, for the crash file once its exit status is known.
            executor.crash = running
                .filter(|_| keep)
                .map(|call| (call.job.request, call.deadline));
        }
        self.deregister(slot, registry);
    }

    /// Counts a death its version did not ask for, now (not at reaping, which comes later):
    /// executors that keep dying young push the next start back (the crash-loop backoff).
    pub(super) fn count_crash(&mut self, slot: usize) {
        let Some(executor) = self.executors.get(slot).and_then(Option::as_ref) else {
            return;
        };
        let young = executor.started_at.elapsed() < HEALTHY_AFTER && executor.answered == 0;
        if let Some(version) = self.versions.get_mut(executor.generation) {
            version.count_crash(young);
        }
    }

    /// Answers the running call of `slot` with `status` and requeues the rest; returns the
    /// running call.
    pub(super) fn fail_calls(
        &mut self,
        slot: usize,
        status: u16,
        body: &str,
        out: &mut Vec<PoolEvent>,
    ) -> Option<Call> {
        let executor = self.executors.get_mut(slot).and_then(Option::as_mut)?;
        let mut calls = std::mem::take(&mut executor.calls);
        let generation = executor.generation;
        if !calls.is_empty() {
            self.busy -= 1;
        }
        let running = calls.pop_front();
        // A batch ran as one call: every request in it had started, so every one of them
        // gets the answer (none is run twice).
        let batch_rest = running
            .as_ref()
            .map_or(0, |c| c.batch_lead.saturating_sub(1) as usize)
            .min(calls.len());
        let failed = running.iter().chain(calls.iter().take(batch_rest));
        for call in failed {
            if let Some(version) = self.versions.get(generation) {
                version.stats.errors.fetch_add(1, Ordering::Relaxed);
                version.stats.count_response(status);
            }
            out.push(PoolEvent::Answer {
                conn: call.job.conn,
                route: call.job.route.clone(),
                reply: Reply::Whole(text(status, body)),
            });
        }
        calls.drain(..batch_rest);
        // Back to the front of the queue in their order (pushed front last-first).
        for call in calls.into_iter().rev() {
            out.push(PoolEvent::Requeue(call.job));
        }
        running
    }
}
