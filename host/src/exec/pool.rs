//! The worker's executors: which version serves each route, the processes that serve each
//! version, and every call in flight. Driven entirely by intake's event loop: executor sockets
//! and output pipes are registered in its poll, frames are read and written without blocking,
//! and deadlines are checked in the same sweep as the connections'.
//!
//! "Serial" keeps its meaning: at most `lanes` executors have calls in flight (default 1), and
//! jobs are placed in queue order. To keep an executor from sleeping between small calls, up
//! to [`PIPELINE_DEPTH`] small requests may be written ahead to an executor that is already
//! busy with the same route; it still runs them one at a time, and if it dies, the ones it had
//! not started go back to the front of the queue instead of being lost.
//!
//! Versions are blue/green: a new version gets its own executor; once that says `Ready`, the
//! route points to it and the old version's executors finish what they hold and exit (their
//! library goes with them). When an executor dies mid-call its request gets 502 and a fresh one
//! starts at once (then with a crash-loop backoff); a call past its deadline gets 504 and its
//! executor's process group is killed, which frees the CPU at once.

use std::path::PathBuf;
use std::process::ExitStatus;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use mio::{Registry, Token};
use plugin_api::Response;

use crate::exec::executor::{Call, DeathContext, Executor, Phase, Received};
use crate::exec::frame::{self, Message};
use crate::exec::job::{Job, Reply};
use crate::exec::spawn::Launch;
use crate::exec::stats::{Death, ExecutorCounters, PluginStats};
use crate::exec::versions::{Offer, Stage, Versions};
use crate::http::response::text;
use crate::ids::HandlerKind;
use crate::ids::{ConnId, Generation, PluginName};
use crate::plugins::version::{HandlerMeta, NewVersion};
use crate::process::backoff::crash_backoff;
use crate::process::signals::describe_exit;
use crate::warn;

/// Small requests written ahead to a busy executor of the same route.
pub const PIPELINE_DEPTH: usize = 4;
/// Only bodies up to this size are written ahead (so calls held outside the queue's byte
/// budget stay small: at most lanes x depth x this).
pub const PIPELINE_MAX_BODY: usize = 64 * 1024;
/// The first executor token; each executor has two (its socket, then its output pipe).
pub const FIRST_TOKEN: usize = usize::MAX / 2;
/// An executor that lived this long, or answered a call, resets its version's crash count.
const HEALTHY_AFTER: Duration = Duration::from_secs(1);
/// How soon an executor that is dying but not yet reapable is looked at again.
const REAP_AGAIN: Duration = Duration::from_millis(2);
/// How long executors may take to exit when the worker itself stops.
const SHUTDOWN_GRACE: Duration = Duration::from_millis(500);
/// How long a retired executor may take to exit after its socket is closed.
const RETIRE_GRACE: Duration = Duration::from_secs(2);

/// A decision for the job at the front of what may run.
#[derive(Debug, PartialEq, Eq)]
pub enum Place {
    /// Send it to this executor now.
    Run(usize),
    /// Its route's executor is starting or restarting: leave it queued, let others pass.
    Wait,
    /// Every lane is busy: nothing behind it may pass either (FIFO).
    Full,
    /// No version serves its route.
    NoRoute,
}

/// What the pool tells intake.
pub enum PoolEvent {
    /// The answer (or a part of a streamed answer) for a connection.
    Answer {
        /// Who asked.
        conn: ConnId,
        /// The route it went to (for the access log).
        route: String,
        /// The answer.
        reply: Reply,
    },
    /// A job an executor took but never started (it died): back to the front of the queue.
    Requeue(Job),
}

/// How a call ended.
enum Finished {
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

/// The limits the pool works within.
#[derive(Clone, Copy, Debug)]
pub struct PoolSettings {
    /// Executors with calls in flight at once.
    pub lanes: usize,
    /// Call deadline for handlers that set none.
    pub deadline: Duration,
    /// How long an executor may take to say `Ready`.
    pub init_timeout: Duration,
    /// Address-space limit per executor.
    pub memory_limit: Option<u64>,
}

/// What `/-/plugins` and `/-/metrics` show of one route.
#[derive(Clone, Debug)]
pub struct RouteInfo {
    /// The route.
    pub name: PluginName,
    /// Library or program.
    pub kind: HandlerKind,
    /// What the handler says about itself.
    pub meta: HandlerMeta,
    /// Which version serves it.
    pub generation: Generation,
    /// When that version was found.
    pub loaded_at: SystemTime,
    /// Its counters.
    pub stats: Arc<PluginStats>,
    /// Executors started for it after the first.
    pub restarts: u64,
    /// How long its next call is expected to take.
    pub expected_call: Duration,
    /// Its executors: pid, state, seconds up.
    pub executors: Vec<(u32, &'static str, u64)>,
}

/// Every executor and version of the worker.
pub struct Pool {
    settings: PoolSettings,
    /// What each route's versions are; a version outlives its executors here.
    versions: Versions,
    /// Slot `i` uses tokens `FIRST_TOKEN + 2i` (socket) and `+ 1` (output).
    /// Invariant: `free` lists the `None` slots.
    executors: Vec<Option<Executor>>,
    free: Vec<usize>,
    /// Executors with at least one call (at most `settings.lanes`, pipelining aside).
    busy: usize,
    /// Counters for `/-/metrics`.
    pub counters: ExecutorCounters,
    /// The worker's private directory (programs' sockets go there).
    runtime_dir: PathBuf,
}

impl Pool {
    /// An empty pool; `runtime_dir` is the worker's private directory.
    pub fn new(settings: PoolSettings, runtime_dir: PathBuf) -> Pool {
        Pool {
            settings,
            runtime_dir,
            versions: Versions::default(),
            executors: Vec::new(),
            free: Vec::new(),
            busy: 0,
            counters: ExecutorCounters::default(),
        }
    }

    /// Whether `token` is an executor's.
    pub fn owns(token: Token) -> bool {
        token.0 >= FIRST_TOKEN && token.0 < usize::MAX - 1024
    }

    /// Whether versions are still starting (intake waits for the first ones before accepting).
    pub fn is_starting(&self) -> bool {
        self.versions.is_starting()
    }

    /// Whether no executor holds a call.
    pub fn is_idle(&self) -> bool {
        self.busy == 0
    }

    /// The body limit a route sets for itself, if any.
    pub fn max_body(&self, route: &str) -> Option<u64> {
        self.versions.max_body(route)
    }

    /// Starts a new version: its first executor starts now; the route moves to it once that
    /// executor is ready.
    pub fn install(&mut self, new: NewVersion, registry: &Registry) {
        match self.versions.offer(new) {
            Offer::Start {
                generation,
                displaced,
            } => {
                if let Some(older) = displaced {
                    self.retire(older, registry);
                }
                self.start_executor(generation, registry);
            }
            Offer::Ignored { displaced } => {
                if let Some(older) = displaced {
                    self.retire(older, registry);
                }
            }
        }
    }

    /// Stops serving `name`: new jobs get 404; calls already running finish.
    pub fn remove(&mut self, name: &PluginName, registry: &Registry) {
        for generation in self.versions.remove(name) {
            self.retire(generation, registry);
        }
    }

    /// Decides what happens to a queued job for `route` with a body of `body_len` bytes.
    pub fn place(&mut self, route: &str, body_len: usize, registry: &Registry) -> Place {
        let Some(generation) = self.versions.live(route) else {
            return Place::NoRoute;
        };
        if self.busy < self.settings.lanes {
            if let Some(slot) = self.executors.iter().position(|e| {
                e.as_ref()
                    .is_some_and(|e| e.is_ready_for(generation) && e.calls.is_empty())
            }) {
                return Place::Run(slot);
            }
            let (count, starting) = self.count_executors(generation);
            if count < self.settings.lanes && starting == 0 {
                self.start_executor(generation, registry);
            }
            return Place::Wait;
        }
        if body_len <= PIPELINE_MAX_BODY {
            let ahead = self
                .executors
                .iter()
                .enumerate()
                .filter_map(|(slot, e)| Some((slot, e.as_ref()?)))
                .filter(|(_, e)| {
                    e.is_ready_for(generation)
                        && (1..PIPELINE_DEPTH).contains(&e.calls.len())
                        && e.calls
                            .iter()
                            .all(|c| c.job.request.body.len() <= PIPELINE_MAX_BODY)
                })
                .min_by_key(|(_, e)| e.calls.len());
            if let Some((slot, _)) = ahead {
                return Place::Run(slot);
            }
        }
        Place::Full
    }

    /// Sends `job` to the executor in `slot` (as `place` chose). If the executor turns out to
    /// be gone, what that costs lands in `out`.
    pub fn send(&mut self, slot: usize, job: Job, out: &mut Vec<PoolEvent>) {
        let executor = self.executors.get_mut(slot).and_then(Option::as_mut);
        let version = executor
            .as_ref()
            .and_then(|e| self.versions.get(e.generation));
        let (Some(executor), Some(version)) = (executor, version) else {
            // Not reached (`place` chose a live executor): never drop a job, put it back.
            out.push(PoolEvent::Requeue(job));
            return;
        };
        let deadline = version.deadline(self.settings.deadline);
        version.stats.calls.fetch_add(1, Ordering::Relaxed);
        let head = frame::request(&job.request, deadline.as_millis() as u64);
        // A CGI program is killed at its deadline by its executor, which then answers 504
        // itself; the worker steps in only if that answer does not come.
        let deadline = match version.new.kind {
            HandlerKind::Cgi => deadline + crate::plugins::cgi::EXECUTOR_SLACK,
            HandlerKind::Native | HandlerKind::Program => deadline,
        };
        if executor.calls.is_empty() {
            self.busy += 1;
        }
        let started = executor.calls.is_empty().then(Instant::now);
        executor.calls.push_back(Call {
            job,
            head,
            sent: 0,
            started,
            deadline,
            streaming: None,
        });
        self.write(slot);
    }

    /// Handles a poll event on an executor token. `takes_more` says whether a connection
    /// takes more of a streamed answer now (a client that reads slowly holds its executor
    /// back instead of growing the worker's buffers).
    pub fn on_event(
        &mut self,
        token: Token,
        registry: &Registry,
        scratch: &mut [u8],
        out: &mut Vec<PoolEvent>,
        takes_more: impl Fn(ConnId) -> bool,
    ) {
        let slot = (token.0 - FIRST_TOKEN) / 2;
        if (token.0 - FIRST_TOKEN) % 2 == 1 {
            return self.drain_output(slot, registry, scratch);
        }
        // Answers first: an executor that died after answering is read to its end before
        // its death is handled.
        self.read_if_taken(slot, registry, scratch, out, &takes_more);
        self.write(slot);
    }

    /// Reads the executors that were left with frames unread, where their client takes more
    /// now (once per loop turn).
    pub fn pump(
        &mut self,
        registry: &Registry,
        scratch: &mut [u8],
        out: &mut Vec<PoolEvent>,
        takes_more: impl Fn(ConnId) -> bool,
    ) {
        for slot in 0..self.executors.len() {
            if self.executors[slot].as_ref().is_some_and(|e| e.unread) {
                self.read_if_taken(slot, registry, scratch, out, &takes_more);
            }
        }
    }

    /// Reads the executor in `slot` unless its streamed answer's client is still full.
    fn read_if_taken(
        &mut self,
        slot: usize,
        registry: &Registry,
        scratch: &mut [u8],
        out: &mut Vec<PoolEvent>,
        takes_more: &impl Fn(ConnId) -> bool,
    ) {
        let Some(executor) = self.executors.get_mut(slot).and_then(Option::as_mut) else {
            return;
        };
        if executor
            .streaming_to()
            .is_some_and(|conn| !takes_more(conn))
        {
            executor.unread = true;
            return;
        }
        self.read(slot, registry, scratch, out);
    }

    fn drain_output(&mut self, slot: usize, registry: &Registry, scratch: &mut [u8]) {
        let Some(executor) = self.executors.get_mut(slot).and_then(Option::as_mut) else {
            return;
        };
        let label = self.versions.label(executor.generation, executor.pid);
        executor.drain_output(&label, registry, scratch);
    }

    /// Writes what is pending to the executor in `slot`.
    ///
    /// A broken socket is not handled here: the answers the executor wrote before it went may
    /// still wait to be read, and its end of file arrives as a poll event, which reads them
    /// first and then counts the death.
    fn write(&mut self, slot: usize) {
        if let Some(executor) = self.executors.get_mut(slot).and_then(Option::as_mut) {
            let _ = executor.write_pending();
        }
    }

    /// Reads and handles frames from the executor in `slot` until it would block.
    fn read(
        &mut self,
        slot: usize,
        registry: &Registry,
        scratch: &mut [u8],
        out: &mut Vec<PoolEvent>,
    ) {
        let Some(executor) = self.executors.get_mut(slot).and_then(Option::as_mut) else {
            return;
        };
        let mut messages = Vec::new();
        let ended = executor.receive(scratch, &mut messages);
        for message in messages {
            self.on_message(slot, message, registry, out);
        }
        match ended {
            Received::WouldBlock | Received::Paused => {}
            Received::Bad(e) => {
                warn!(
                    "executor [{}] sent a bad frame ({e}); killing it",
                    self.pid(slot)
                );
                self.died(slot, registry, out);
            }
            Received::Gone => self.died(slot, registry, out),
            Received::TooMany => {
                warn!(
                    "executor [{}] sent more frames than it had calls; killing it",
                    self.pid(slot)
                );
                self.died(slot, registry, out);
            }
        }
    }

    fn pid(&self, slot: usize) -> u32 {
        self.executors
            .get(slot)
            .and_then(Option::as_ref)
            .map_or(0, |e| e.pid)
    }

    fn on_message(
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
    fn on_ready(&mut self, generation: Generation, meta: HandlerMeta, registry: &Registry) {
        if let Some(old) = self.versions.ready(generation, meta) {
            self.retire(old, registry);
        }
    }

    /// A part of a streamed answer from the executor in `slot`: a `Head` starts one for the
    /// running call, `Piece`s go to its client, `End` finishes the call. Any of them out of
    /// that order is a broken executor.
    fn on_stream(
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
            (Some(_), Message::Piece(bytes)) => Reply::Piece(bytes),
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
    fn answered(
        &mut self,
        slot: usize,
        finished: Finished,
        registry: &Registry,
        out: &mut Vec<PoolEvent>,
    ) {
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
            None => self.busy -= 1,
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
        if let Some(started) = call.started {
            version.service.record(now.duration_since(started));
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
    fn died(&mut self, slot: usize, registry: &Registry, out: &mut Vec<PoolEvent>) {
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
        self.fail_calls(slot, 502, &format!("plugin {route} crashed\n"), out);
        if let Some(executor) = self.executors.get_mut(slot).and_then(Option::as_mut) {
            executor.phase = Phase::ExpectExit {
                why,
                look: Instant::now(),
            };
        }
        self.deregister(slot, registry);
    }

    /// Counts a death its version did not ask for, now (not at reaping, which comes later):
    /// executors that keep dying young push the next start back (the crash-loop backoff).
    fn count_crash(&mut self, slot: usize) {
        let Some(executor) = self.executors.get(slot).and_then(Option::as_ref) else {
            return;
        };
        let young = executor.started_at.elapsed() < HEALTHY_AFTER && executor.answered == 0;
        if let Some(version) = self.versions.get_mut(executor.generation) {
            version.count_crash(young);
        }
    }

    /// Answers the running call of `slot` with `status` and requeues the rest.
    fn fail_calls(&mut self, slot: usize, status: u16, body: &str, out: &mut Vec<PoolEvent>) {
        let Some(executor) = self.executors.get_mut(slot).and_then(Option::as_mut) else {
            return;
        };
        let mut calls = std::mem::take(&mut executor.calls);
        let generation = executor.generation;
        if !calls.is_empty() {
            self.busy -= 1;
        }
        if let Some(running) = calls.pop_front() {
            if let Some(version) = self.versions.get(generation) {
                version.stats.errors.fetch_add(1, Ordering::Relaxed);
                version.stats.count_response(status);
            }
            out.push(PoolEvent::Answer {
                conn: running.job.conn,
                route: running.job.route,
                reply: Reply::Whole(text(status, body)),
            });
        }
        // Back to the front of the queue in their order (pushed front last-first).
        for call in calls.into_iter().rev() {
            out.push(PoolEvent::Requeue(call.job));
        }
    }

    fn deregister(&mut self, slot: usize, registry: &Registry) {
        if let Some(executor) = self.executors.get_mut(slot).and_then(Option::as_mut) {
            executor.deregister(registry);
        }
    }

    /// Deadlines: calls past theirs get 504 and their executor is killed; executors that did
    /// not say `Ready` in time are killed; retired executors past their grace are killed;
    /// versions without an executor get one once their backoff has passed.
    pub fn sweep(&mut self, now: Instant, registry: &Registry, out: &mut Vec<PoolEvent>) {
        for slot in 0..self.executors.len() {
            let Some(executor) = self.executors[slot].as_mut() else {
                continue;
            };
            match &executor.phase {
                Phase::ExpectReady { until } if now >= *until => {
                    executor.kill();
                    let seconds = self
                        .versions
                        .get(executor.generation)
                        .and_then(|v| v.new.init_timeout)
                        .unwrap_or(self.settings.init_timeout)
                        .as_secs_f64();
                    executor.phase = Phase::ExpectExit {
                        look: Instant::now(),
                        why: DeathContext::AtStart(Some(format!(
                            "its init did not finish within {seconds:.1} s (--init-timeout)"
                        ))),
                    };
                    self.count_crash(slot);
                    self.deregister(slot, registry);
                }
                Phase::Retiring { until: Some(until) } if now >= *until => {
                    executor.kill();
                    executor.phase = Phase::ExpectExit {
                        look: Instant::now(),
                        why: DeathContext::Killed(Death::Retired),
                    };
                    self.deregister(slot, registry);
                }
                Phase::Serving | Phase::Retiring { .. } => {
                    if !self.is_late(slot, now) {
                        continue;
                    }
                    // Its answer may have come since the poll returned: read before judging,
                    // or a call that answered in time would get 504 (and the next one, already
                    // started, would run twice).
                    let mut scratch = [0u8; 16 * 1024];
                    self.read(slot, registry, &mut scratch, out);
                    if self.is_late(slot, now) {
                        self.deadline_passed(slot, registry, out);
                    }
                }
                _ => {}
            }
        }
        self.reap(registry);
        for generation in self.versions.due(now) {
            if self.count_executors(generation).0 == 0 {
                self.start_executor(generation, registry);
            }
        }
    }

    /// Whether the call the executor in `slot` runs has passed its deadline at `now`.
    fn is_late(&self, slot: usize, now: Instant) -> bool {
        self.executors
            .get(slot)
            .and_then(Option::as_ref)
            .filter(|e| matches!(e.phase, Phase::Serving | Phase::Retiring { .. }))
            .and_then(|e| e.calls.front())
            .and_then(|c| Some((c.started?, c.deadline)))
            .is_some_and(|(started, deadline)| now >= started + deadline)
    }

    fn deadline_passed(&mut self, slot: usize, registry: &Registry, out: &mut Vec<PoolEvent>) {
        let Some(executor) = self.executors.get_mut(slot).and_then(Option::as_mut) else {
            return;
        };
        executor.kill();
        let pid = executor.pid;
        let generation = executor.generation;
        let deadline = executor
            .calls
            .front()
            .map_or(Duration::ZERO, |c| c.deadline);
        let route = match self.versions.get_mut(generation) {
            Some(version) => {
                // It took at least that long: what the next such call will cost, too.
                version.service.record(deadline);
                version.stats.timeouts.fetch_add(1, Ordering::Relaxed);
                version.new.name.to_string()
            }
            None => String::new(),
        };
        warn!(
            "plugin {route} (generation {}) passed its {} ms deadline; its executor \
             [{pid}] was killed and a fresh one starts",
            generation.0,
            deadline.as_millis()
        );
        self.fail_calls(
            slot,
            504,
            &format!("plugin {route} did not answer within its deadline\n"),
            out,
        );
        if let Some(executor) = self.executors.get_mut(slot).and_then(Option::as_mut) {
            executor.phase = Phase::ExpectExit {
                look: Instant::now(),
                why: DeathContext::Killed(Death::Deadline),
            };
        }
        self.deregister(slot, registry);
    }

    /// Collects executors that have exited, logs why, and starts what must replace them.
    pub fn reap(&mut self, registry: &Registry) {
        let now = Instant::now();
        for slot in 0..self.executors.len() {
            let Some(executor) = self.executors[slot].as_mut() else {
                continue;
            };
            let Phase::ExpectExit { why, look } = &executor.phase else {
                continue;
            };
            if now < *look {
                continue;
            }
            let why = why.clone();
            let Some(status) = executor.try_reap() else {
                // Dying processes go within milliseconds; look again soon, not in a spin.
                executor.phase = Phase::ExpectExit {
                    why,
                    look: now + REAP_AGAIN,
                };
                continue;
            };
            let Some(mut executor) = self.executors[slot].take() else {
                continue;
            };
            let label = self.versions.label(executor.generation, executor.pid);
            executor.drain_output(&label, registry, &mut [0u8; 4096]);
            self.free.push(slot);
            self.exited(executor.generation, executor.pid, status, why);
        }
    }

    /// The consequences of an executor's exit for its version, and the log line.
    fn exited(&mut self, generation: Generation, pid: u32, status: ExitStatus, why: DeathContext) {
        let Some(version) = self.versions.get(generation) else {
            return;
        };
        let cause = match (version.new.kind, status.code()) {
            (HandlerKind::Program, Some(crate::exec::program::EXIT_PROGRAM_GONE)) => {
                "its program exited".to_owned()
            }
            _ => describe_exit(status),
        };
        let route = version.new.name.clone();
        match why {
            DeathContext::Killed(death) => self.counters.died(death),
            DeathContext::AtStart(reason) if version.stage == Stage::Candidate => {
                self.counters.died(Death::Init);
                let reason = reason
                    .unwrap_or_else(|| format!("its executor died while loading it ({cause})"));
                self.versions.refuse(generation, &reason);
            }
            context => {
                let pause = crash_backoff(version.crashes_in_row);
                self.counters.died(Death::of_exit(status));
                let when = match &context {
                    DeathContext::MidCall => "during a call; that request got 502".to_owned(),
                    DeathContext::AtStart(Some(reason)) => format!("at start: {reason}"),
                    DeathContext::AtStart(None) => "at start".to_owned(),
                    _ => "between calls".to_owned(),
                };
                let next = match (version.stage, pause.is_zero()) {
                    (Stage::Live, true) => "; a fresh one starts now".to_owned(),
                    (Stage::Live, false) => format!(
                        "; a fresh one starts in {} ms (it keeps dying young)",
                        pause.as_millis()
                    ),
                    _ => String::new(),
                };
                warn!(
                    "executor [{pid}] for /{route} (generation {}) died ({cause}) {when}{next}",
                    generation.0
                );
            }
        }
        self.forget_if_done(generation);
    }

    /// Drops a retired version once its last executor is gone (and its private copy).
    fn forget_if_done(&mut self, generation: Generation) {
        let any_left = self
            .executors
            .iter()
            .flatten()
            .any(|e| e.generation == generation);
        if !any_left {
            self.versions.forget(generation);
        }
    }

    /// Retires a version: idle executors are closed now, busy ones once their calls end.
    fn retire(&mut self, generation: Generation, registry: &Registry) {
        self.versions.retire(generation);
        for slot in 0..self.executors.len() {
            let Some(executor) = self.executors[slot].as_mut() else {
                continue;
            };
            if executor.generation != generation {
                continue;
            }
            match executor.phase {
                Phase::ExpectExit { .. } => {}
                Phase::ExpectReady { .. } => {
                    executor.kill();
                    executor.phase = Phase::ExpectExit {
                        look: Instant::now(),
                        why: DeathContext::Killed(Death::Retired),
                    };
                    self.deregister(slot, registry);
                }
                _ if executor.calls.is_empty() => self.close_retired(slot, registry),
                _ => executor.phase = Phase::Retiring { until: None },
            }
        }
        self.forget_if_done(generation);
    }

    /// Closes a retired executor's socket: it exits on end of file (running its plugin's
    /// `drop_state`); killed if it is still there after a grace.
    fn close_retired(&mut self, slot: usize, registry: &Registry) {
        let Some(executor) = self.executors.get_mut(slot).and_then(Option::as_mut) else {
            return;
        };
        executor.close(registry);
        executor.phase = Phase::Retiring {
            until: Some(Instant::now() + RETIRE_GRACE),
        };
    }

    /// (executors of `generation` that are not dead, of which starting)
    fn count_executors(&self, generation: Generation) -> (usize, usize) {
        self.executors
            .iter()
            .flatten()
            .filter(|e| e.generation == generation)
            .fold((0, 0), |(all, starting), e| match e.phase {
                Phase::ExpectExit { .. } | Phase::Retiring { .. } => (all, starting),
                Phase::ExpectReady { .. } => (all + 1, starting + 1),
                Phase::Serving => (all + 1, starting),
            })
    }

    /// Starts an executor for `generation` (not before its backoff).
    fn start_executor(&mut self, generation: Generation, registry: &Registry) {
        let Some(version) = self.versions.get_mut(generation) else {
            return;
        };
        if Instant::now() < version.not_before {
            return;
        }
        let slot = self.free.pop().unwrap_or(self.executors.len());
        let launch = Launch {
            kind: version.new.kind,
            route: &version.new.name,
            file: &version.new.file,
            memory_limit: self.settings.memory_limit,
            init_timeout: version
                .new
                .init_timeout
                .unwrap_or(self.settings.init_timeout),
            runtime_dir: &self.runtime_dir,
        };
        let started = Executor::start(generation, &launch, FIRST_TOKEN + 2 * slot, registry);
        let executor = match started {
            Ok(executor) => executor,
            Err(e) => {
                if slot < self.executors.len() {
                    self.free.push(slot);
                }
                if version.stage == Stage::Candidate {
                    // A new version that cannot get a process is refused (the previous one
                    // keeps serving); dropping the file in again retries it.
                    let reason = format!("cannot start an executor for it: {e}");
                    self.versions.refuse(generation, &reason);
                    self.versions.forget(generation);
                    return;
                }
                warn!("cannot start an executor for /{}: {e}", version.new.name);
                version.not_before = Instant::now() + crash_backoff(2);
                return;
            }
        };
        if slot == self.executors.len() {
            self.executors.push(None);
        }
        // Every executor after a version's first is a restart (or another lane).
        version.restarts += u64::from(version.stage == Stage::Live);
        self.counters.started += 1;
        self.executors[slot] = Some(executor);
    }

    /// The soonest instant the sweep has work: a call's deadline, an init deadline, a dead
    /// executor to reap (now), a backoff ending.
    pub fn next_deadline(&self) -> Option<Instant> {
        let now = Instant::now();
        let executors = self
            .executors
            .iter()
            .flatten()
            .filter_map(|e| match &e.phase {
                Phase::ExpectReady { until } => Some(*until),
                Phase::Retiring { until: Some(until) } => Some(*until),
                Phase::ExpectExit { look, .. } => Some(*look),
                _ => e.calls.front().and_then(|c| Some(c.started? + c.deadline)),
            });
        executors.chain(self.versions.next_backoff_end(now)).min()
    }

    /// How long a call to `route` is expected to take (zero for a route nobody serves: it is
    /// answered 404 at once).
    pub fn expected_call(&self, route: &str) -> Duration {
        self.versions
            .live(route)
            .and_then(|g| self.versions.get(g))
            .map_or(Duration::ZERO, |v| v.expected_call(self.settings.deadline))
    }

    /// The work executors hold: what is left of each running call (by its estimate) plus the
    /// calls written ahead.
    pub fn work_in_flight(&self, now: Instant) -> Duration {
        let mut work = Duration::ZERO;
        for executor in self.executors.iter().flatten() {
            for call in &executor.calls {
                work += match call.started {
                    Some(started) => call
                        .job
                        .expected
                        .saturating_sub(now.saturating_duration_since(started)),
                    None => call.job.expected,
                };
            }
        }
        work
    }

    /// Calls that may run at once.
    pub fn lanes(&self) -> usize {
        self.settings.lanes
    }

    /// Every route served, sorted, for the admin routes.
    pub fn routes(&self) -> Vec<RouteInfo> {
        let mut routes: Vec<RouteInfo> = self
            .versions
            .live_routes()
            .map(|(generation, version)| RouteInfo {
                name: version.new.name.clone(),
                kind: version.new.kind,
                meta: version.meta.clone(),
                generation,
                loaded_at: version.loaded_at,
                stats: Arc::clone(&version.stats),
                restarts: version.restarts,
                expected_call: version.expected_call(self.settings.deadline),
                executors: self
                    .executors
                    .iter()
                    .flatten()
                    .filter(|e| e.generation == generation)
                    .map(|e| (e.pid, e.phase_name(), e.started_at.elapsed().as_secs()))
                    .collect(),
            })
            .collect();
        routes.sort_by(|a, b| a.name.cmp(&b.name));
        routes
    }

    /// Executors alive now (any phase but exited).
    pub fn alive(&self) -> usize {
        self.executors.iter().flatten().count()
    }

    /// Calls written ahead to executors and not started yet: they wait like queued jobs.
    pub fn written_ahead(&self) -> usize {
        self.executors
            .iter()
            .flatten()
            .map(|e| e.calls.len().saturating_sub(1))
            .sum()
    }
}

impl Drop for Pool {
    /// The worker is going: executors get end of file (their plugins drop their state), a
    /// moment to exit, then the kill.
    fn drop(&mut self) {
        for executor in self.executors.iter_mut().flatten() {
            executor.shut();
        }
        let until = Instant::now() + SHUTDOWN_GRACE;
        while Instant::now() < until {
            let left = self
                .executors
                .iter_mut()
                .flatten()
                .map(|e| e.try_reap().is_none())
                .filter(|running| *running)
                .count();
            if left == 0 {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        for executor in self.executors.iter_mut().flatten() {
            executor.kill_and_wait();
        }
        // The versions (and their private copies) go when `self.versions` is dropped.
    }
}
