//! The worker's executors: which version serves each route, the processes that serve each
//! version, and every call in flight. Driven entirely by intake's event loop: executor sockets
//! and output pipes are registered in its poll, frames are read and written without blocking,
//! and deadlines are checked in the same sweep as the connections'.
//!
//! "Serial" keeps its meaning: at most `lanes` executors have calls in flight (default 1), and
//! jobs are placed in queue order. To keep an executor from sleeping between small calls,
//! small requests may be written ahead to an executor that is already busy with the same
//! route, as many as it is expected to finish within [`WRITE_AHEAD_WORK`] (at most
//! [`PIPELINE_DEPTH`]); it still runs them one at a time, and if it dies, the ones it had not
//! started go back to the front of the queue instead of being lost. A slow route gets one
//! call written ahead, no more: its executor never waits for the worker between calls (under
//! a flood that gap is a few percent of its capacity), and a client that leaves while its
//! request waits behind that one costs it no call.
//!
//! Versions are blue/green: a new version gets its own executor; once that says `Ready`, the
//! route points to it and the old version's executors finish what they hold and exit (their
//! library goes with them). When an executor dies mid-call its request gets 502 and a fresh one
//! starts at once (then with a crash-loop backoff); a call past its deadline gets 504 and its
//! executor's process group is killed, which frees the CPU at once.
//!
//! This file holds the pool, placement, and the frame IO; `answers` is what executors' frames
//! and deaths mean for the calls, `life` their deadlines, deaths, retirements and starts.

mod answers;
mod life;

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use mio::{Registry, Token};

use crate::exec::crashes::CrashSink;
use crate::exec::executor::{Call, Drain, Executor, Phase, Received};
use crate::exec::frame;
use crate::exec::job::{Job, Reply};
use crate::exec::stats::{ExecutorCounters, PluginStats};
use crate::exec::versions::{Offer, Versions};
use crate::ids::HandlerKind;
use crate::ids::{ConnId, Generation, PluginName};
use crate::jellyfish::Mode;
use crate::plugins::version::{HandlerMeta, NewVersion};
use crate::warn;

/// The most calls an executor holds (the one it runs and those written ahead).
pub const PIPELINE_DEPTH: usize = 16;
/// Calls are written ahead to an executor while the ones it holds are expected to take at most
/// this long (by its version's recent calls): many quick calls per wakeup; for a 5 ms route,
/// three ahead, so the worker may be kept from running (a busy machine) for 15 ms before its
/// executor waits (with one ahead, S2 lost 1.5% on a busy machine); for a slow route, one
/// ahead, never seconds of work for clients that may have left.
pub const WRITE_AHEAD_WORK: Duration = Duration::from_millis(20);
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
/// A version's executor beyond its first that held no call this long is retired.
const REPLICA_IDLE: Duration = Duration::from_secs(10);

/// A decision for the job at the front of what may run.
#[derive(Debug, PartialEq, Eq)]
pub enum Place {
    /// Send it to this executor now.
    Run(usize),
    /// Its route's executor is starting or restarting (or its route's first version is still
    /// starting): leave it queued, let others pass.
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

/// The limits the pool works within.
#[derive(Clone, Debug)]
pub struct PoolSettings {
    /// Executors with calls in flight at once (the jellyfish's light changes it).
    pub lanes: usize,
    /// Crab or jellyfish: what a handler that declares no `max_lanes` gets.
    pub mode: Mode,
    /// Requests one batch may hold (1: no batches; the jellyfish's light changes it).
    pub batch_max: usize,
    /// Requests one batch may hold for a route at its own lane cap (the light's
    /// `capped_batch_max`; 1 in crab mode).
    pub capped_batch_max: usize,
    /// Call deadline for handlers that set none.
    pub deadline: Duration,
    /// How long an executor may take to say `Ready`.
    pub init_timeout: Duration,
    /// Address-space limit per executor.
    pub memory_limit: Option<u64>,
    /// The pause after each call before its lane takes the next, for handlers that set none.
    pub pace: Duration,
    /// How much sandbox executors get.
    pub sandbox: crate::exec::sandbox::Mode,
    /// What no executor may reach, whatever its settings open.
    pub protected: crate::exec::sandbox::paths::Protected,
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
    /// The pause after each of its calls.
    pub pace: Duration,
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
    /// Where the requests that killed executors go (`--crash-dir`).
    crashes: Option<CrashSink>,
    /// The frames of one read, kept between reads (no allocation per answer).
    inbox: Vec<frame::Message>,
    /// The calls answered in the read being handled, measured together (see [`Burst`]).
    burst: Burst,
}

/// The calls one read of an executor's socket answered. Only the first of them has a known
/// start (the answer before it came in an earlier read, or it was the one written to an idle
/// executor); the others became the front during this read, after running at unknown moments
/// (a worker kept off the CPU, or an executor holding quick answers, sends several at once).
/// Each is timed as a share of the whole: recorded one by one, all but the first would measure
/// near zero, and write-ahead would commit more work on every hiccup.
#[derive(Debug, Default)]
struct Burst {
    /// The version and the start of the first call answered in this read.
    first: Option<(Generation, Instant)>,
    /// Requests answered in this read (a batch counts its requests).
    requests: u32,
}

impl Pool {
    /// An empty pool; `runtime_dir` is the worker's private directory, `crashes` where the
    /// requests that killed executors are written.
    pub fn new(settings: PoolSettings, runtime_dir: PathBuf, crashes: Option<CrashSink>) -> Pool {
        Pool {
            settings,
            runtime_dir,
            crashes,
            versions: Versions::default(),
            executors: Vec::new(),
            free: Vec::new(),
            busy: 0,
            counters: ExecutorCounters::default(),
            inbox: Vec::new(),
            burst: Burst::default(),
        }
    }

    /// Whether `token` is an executor's.
    pub fn owns(token: Token) -> bool {
        token.0 >= FIRST_TOKEN && token.0 < usize::MAX - 1024
    }

    /// Whether versions are still starting (the worker is ready once the first ones are ready
    /// or refused).
    pub fn is_starting(&self) -> bool {
        self.versions.is_starting()
    }

    /// Whether `route` has no live version yet and one is starting for it.
    pub fn is_first_starting(&self, route: &str) -> bool {
        self.versions.is_first_starting(route)
    }

    /// The routes whose versions are starting, sorted (`/-/ready` names them at start).
    pub fn starting_routes(&self) -> Vec<String> {
        self.versions.starting_routes()
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

    /// Sets the lanes and the batch sizes the light allows (for any route, and for a route at
    /// its own lane cap).
    pub fn set_light(&mut self, lanes: usize, batch_max: usize, capped_batch_max: usize) {
        self.settings.lanes = lanes.max(1);
        self.settings.batch_max = batch_max.max(1);
        self.settings.capped_batch_max = capped_batch_max.max(1);
    }

    /// Requests one call of `generation` may hold now: the light's batches, or, for a route
    /// that cannot have another executor (at its own cap), the capped ones.
    fn batch_limit(&self, generation: Generation) -> usize {
        let (count, _) = self.count_executors(generation);
        match count >= self.route_cap(generation) {
            true => self.settings.batch_max.max(self.settings.capped_batch_max),
            false => self.settings.batch_max,
        }
    }

    /// Executors of `generation` that may hold calls at once: the lanes, within the handler's
    /// own `max_lanes`. A handler that cannot say (a plugin built against plugin-api 0.1.0, a
    /// CGI program, a program without the setting) gets one in jellyfish mode and the lanes in
    /// crab mode, as before `max_lanes` existed; a newer plugin always says (its `MAX_LANES`,
    /// 1 by default).
    fn route_cap(&self, generation: Generation) -> usize {
        let declared = self.versions.get(generation).and_then(|v| v.meta.max_lanes);
        let cap = match (declared, self.settings.mode) {
            (Some(n), _) => usize::try_from(n).unwrap_or(usize::MAX),
            (None, Mode::Jellyfish) => 1,
            (None, Mode::Crab) => usize::MAX,
        };
        cap.min(self.settings.lanes).max(1)
    }

    /// Decides what happens to a queued job for `route` with a body of `body_len` bytes.
    pub fn place(&mut self, route: &str, body_len: usize, registry: &Registry) -> Place {
        let Some(generation) = self.versions.live(route) else {
            // A route still starting (a model loading): its requests wait for it, under the
            // queue's deadline, as promise 8 asks; only a route nobody serves is a 404.
            return match self.versions.is_first_starting(route) {
                true => Place::Wait,
                false => Place::NoRoute,
            };
        };
        let cap = self.route_cap(generation);
        // An executor in its pace's pause holds its lane, like one running a call.
        let now = Instant::now();
        let resting = self
            .executors
            .iter()
            .flatten()
            .filter(|e| e.calls.is_empty() && e.is_resting(now))
            .count();
        let held = self.busy + resting;
        let busy_here = self
            .executors
            .iter()
            .flatten()
            .filter(|e| e.generation == generation && (!e.calls.is_empty() || e.is_resting(now)))
            .count();
        if held < self.settings.lanes && busy_here < cap {
            if let Some(slot) = self.executors.iter().position(|e| {
                e.as_ref().is_some_and(|e| {
                    e.is_ready_for(generation) && e.calls.is_empty() && !e.is_resting(now)
                })
            }) {
                return Place::Run(slot);
            }
            let (count, starting) = self.count_executors(generation);
            if count < cap && starting == 0 {
                self.start_executor(generation, registry);
            }
            return Place::Wait;
        }
        // A route that takes batches is not written ahead while batches are on: its queue
        // is left to gather, and the next idle executor takes it in one call.
        // Only within the lanes in force: when the light lowers them, the executors beyond
        // the new count drain instead of being fed forever.
        // Nor is a paced route: each of its calls is followed by its pause.
        let within = held <= self.settings.lanes && busy_here <= cap;
        let paced = !self.pace_of(generation).is_zero();
        let depth = self.write_ahead_depth(generation);
        if within && !paced && body_len <= PIPELINE_MAX_BODY && !self.batches_for(generation) {
            let ahead = self
                .executors
                .iter()
                .enumerate()
                .filter_map(|(slot, e)| Some((slot, e.as_ref()?)))
                .filter(|(_, e)| {
                    e.is_ready_for(generation)
                        && (1..depth).contains(&e.calls.len())
                        && e.calls
                            .iter()
                            .all(|c| c.job.request.body.len() <= PIPELINE_MAX_BODY)
                })
                .min_by_key(|(_, e)| e.calls.len());
            if let Some((slot, _)) = ahead {
                return Place::Run(slot);
            }
        }
        // Its route is at its own cap while lanes are free: jobs for other routes may pass.
        if held < self.settings.lanes {
            Place::Wait
        } else {
            Place::Full
        }
    }

    /// How many calls an executor of `generation` may hold: as many as its recent calls say
    /// it finishes within [`WRITE_AHEAD_WORK`], within [`PIPELINE_DEPTH`]; at least 2 (the
    /// one it runs and the next), as before a call of it was measured.
    fn write_ahead_depth(&self, generation: Generation) -> usize {
        let expected = self
            .versions
            .get(generation)
            .and_then(|v| v.service.estimate());
        match expected {
            None => 2,
            Some(call) => {
                let fit = WRITE_AHEAD_WORK.as_nanos() / call.as_nanos().max(1);
                usize::try_from(fit).map_or(PIPELINE_DEPTH, |n| n.clamp(2, PIPELINE_DEPTH))
            }
        }
    }

    /// The pause after each call of `generation` (its own, else `--pace`).
    fn pace_of(&self, generation: Generation) -> Duration {
        self.versions
            .get(generation)
            .map_or(self.settings.pace, |v| v.pace(self.settings.pace))
    }

    /// The pause after each call of the executor in `slot`.
    pub(super) fn pace_of_slot(&self, slot: usize) -> Duration {
        self.executors
            .get(slot)
            .and_then(Option::as_ref)
            .map_or(Duration::ZERO, |e| self.pace_of(e.generation))
    }

    /// Whether batches are on for `generation` (the light allows them, its handler takes them).
    fn batches_for(&self, generation: Generation) -> bool {
        self.batch_limit(generation) > 1
            && self
                .versions
                .get(generation)
                .is_some_and(|v| v.meta.max_batch > 1)
    }

    /// How many queued jobs of its route the executor in `slot` may take in one batch now:
    /// more than 1 only when it is idle, batches are on, and its handler takes them.
    pub fn batch_room(&self, slot: usize) -> usize {
        let Some(executor) = self.executors.get(slot).and_then(Option::as_ref) else {
            return 1;
        };
        let takes = self
            .versions
            .get(executor.generation)
            .map_or(1, |v| usize::try_from(v.meta.max_batch).unwrap_or(1));
        if executor.calls.is_empty() {
            takes.min(self.batch_limit(executor.generation)).max(1)
        } else {
            1
        }
    }

    /// Sends `job` to the executor in `slot` (as `place` chose). If the executor turns out to
    /// be gone, what that costs lands in `out`.
    pub fn send(&mut self, slot: usize, job: Job, out: &mut Vec<PoolEvent>) {
        self.send_batch(slot, vec![job], out);
    }

    /// Sends `jobs` (of one route, at most `batch_room`) to the executor in `slot` as one
    /// batch call; a single job is an ordinary call.
    pub fn send_batch(&mut self, slot: usize, jobs: Vec<Job>, out: &mut Vec<PoolEvent>) {
        let executor = self.executors.get_mut(slot).and_then(Option::as_mut);
        let version = executor
            .as_ref()
            .and_then(|e| self.versions.get(e.generation));
        let (Some(executor), Some(version)) = (executor, version) else {
            // Not reached (`place` chose a live executor): never drop a job, put it back.
            out.extend(jobs.into_iter().rev().map(PoolEvent::Requeue));
            return;
        };
        let deadline = version.deadline(self.settings.deadline);
        // A CGI program is killed at its deadline by its executor, which then answers 504
        // itself; the worker steps in only if that answer does not come.
        let call_deadline = match version.new.kind {
            HandlerKind::Cgi => deadline + crate::plugins::cgi::EXECUTOR_SLACK,
            HandlerKind::Native | HandlerKind::Program => deadline,
        };
        let count = jobs.len();
        let batched = count > 1;
        // A batch is one call doing the work of `count`: its deadline is theirs together.
        let call_deadline = call_deadline * u32::try_from(count).unwrap_or(u32::MAX);
        if batched {
            version.stats.batches.fetch_add(1, Ordering::Relaxed);
        }
        for (i, job) in jobs.into_iter().enumerate() {
            version.stats.calls.fetch_add(1, Ordering::Relaxed);
            let mut request = frame::request(&job.request, deadline.as_millis() as u64);
            let by_file = crate::bodies::file_of(&job.request.body).is_some();
            if by_file {
                frame::mark_by_file(&mut request);
            }
            // A batch's first call carries the `Batch` frame before its own.
            let head = match (batched, i) {
                (true, 0) => [frame::batch(count), request].concat(),
                _ => request,
            };
            if executor.calls.is_empty() {
                self.busy += 1;
            }
            let started = executor.calls.is_empty().then(Instant::now);
            executor.sent_calls += 1;
            let number = executor.sent_calls;
            executor.calls.push_back(Call {
                number,
                cancelled: false,
                job,
                head,
                by_file,
                file_sent: false,
                sent: 0,
                started,
                deadline: call_deadline,
                streaming: None,
                batch_lead: match (batched, i) {
                    (false, _) => 1,
                    (true, 0) => u32::try_from(count).unwrap_or(u32::MAX),
                    (true, _) => 0,
                },
            });
        }
        self.write(slot);
    }

    /// How many executors of the route `route` serves may hold calls at once (1 when nobody
    /// serves it).
    pub fn route_lanes(&self, route: &str) -> usize {
        self.versions
            .live(route)
            .map_or(1, |generation| self.route_cap(generation))
    }

    /// The client of `conn` left while an executor streamed its answer: that executor is told
    /// to stop (its plugin's next piece is refused; a program's connection is dropped).
    pub fn cancel_stream(&mut self, conn: ConnId) {
        for executor in self.executors.iter_mut().flatten() {
            if executor.cancel_stream_to(conn) {
                return;
            }
        }
    }

    /// Handles a poll event on an executor token. `takes_more` says whether a connection
    /// takes more of a streamed answer now (a client that reads slowly holds its executor
    /// back instead of growing the worker's buffers).
    pub fn on_event(
        &mut self,
        token: Token,
        closed: bool,
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
        let drain = match closed {
            true => Drain::UntilBlocked,
            false => Drain::UntilShort,
        };
        self.read_if_taken(slot, registry, scratch, out, &takes_more, drain);
        self.write(slot);
    }

    /// Reads the executors that were left with frames unread, where their client takes more
    /// now (once per loop turn). Returns whether one still has frames unread that its client
    /// would take (it stopped at its turn's share): the loop then polls without sleeping, as
    /// no readiness event will come for what is already in its socket.
    pub fn pump(
        &mut self,
        registry: &Registry,
        scratch: &mut [u8],
        out: &mut Vec<PoolEvent>,
        takes_more: impl Fn(ConnId) -> bool,
    ) -> bool {
        let mut more = false;
        for slot in 0..self.executors.len() {
            if self.executors[slot].as_ref().is_some_and(|e| e.unread) {
                self.read_if_taken(
                    slot,
                    registry,
                    scratch,
                    out,
                    &takes_more,
                    Drain::UntilBlocked,
                );
                more |= self.executors[slot]
                    .as_ref()
                    .is_some_and(|e| e.unread && e.streaming_to().is_none_or(&takes_more));
            }
        }
        more
    }

    /// Reads the executor in `slot` unless its streamed answer's client is still full.
    fn read_if_taken(
        &mut self,
        slot: usize,
        registry: &Registry,
        scratch: &mut [u8],
        out: &mut Vec<PoolEvent>,
        takes_more: &impl Fn(ConnId) -> bool,
        drain: Drain,
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
        self.read(slot, registry, scratch, out, drain);
    }

    fn drain_output(&mut self, slot: usize, registry: &Registry, scratch: &mut [u8]) {
        let Some(executor) = self.executors.get_mut(slot).and_then(Option::as_mut) else {
            return;
        };
        let label = self.versions.label(executor.generation, executor.pid);
        executor.drain_output(&label, registry, scratch);
    }

    /// Marks the executor in `slot` as having calls to write: they go at the end of the
    /// loop's turn ([`Pool::write_due`]), together with the others queued in the same turn.
    fn write(&mut self, slot: usize) {
        if let Some(executor) = self.executors.get_mut(slot).and_then(Option::as_mut) {
            executor.write_due = true;
        }
    }

    /// Writes what is pending to every executor given calls in this turn: one `writev` for
    /// several calls, one wakeup of the executor. The loop calls it before it polls.
    ///
    /// A broken socket is not handled here: the answers the executor wrote before it went may
    /// still wait to be read, and its end of file arrives as a poll event, which reads them
    /// first and then counts the death.
    pub fn write_due(&mut self, registry: &Registry) {
        for executor in self.executors.iter_mut().flatten() {
            if std::mem::replace(&mut executor.write_due, false) {
                executor.write_and_watch(registry);
            }
        }
    }

    /// Reads and handles frames from the executor in `slot` until it would block (or, after
    /// an event, until a short read).
    fn read(
        &mut self,
        slot: usize,
        registry: &Registry,
        scratch: &mut [u8],
        out: &mut Vec<PoolEvent>,
        drain: Drain,
    ) {
        let Some(executor) = self.executors.get_mut(slot).and_then(Option::as_mut) else {
            return;
        };
        let mut messages = std::mem::take(&mut self.inbox);
        let ended = executor.receive(scratch, &mut messages, drain);
        for message in messages.drain(..) {
            self.on_message(slot, message, registry, out);
        }
        self.inbox = messages;
        if let (Some((generation, started)), requests @ 1..) = (
            self.burst.first.take(),
            std::mem::take(&mut self.burst.requests),
        ) {
            if let Some(version) = self.versions.get_mut(generation) {
                version.service.record(started.elapsed() / requests);
            }
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

    fn deregister(&mut self, slot: usize, registry: &Registry) {
        if let Some(executor) = self.executors.get_mut(slot).and_then(Option::as_mut) {
            executor.deregister(registry);
        }
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
                // A pause ending frees its lane: the loop wakes to place the next job.
                _ if e.calls.is_empty() && e.is_resting(now) => e.resting_until,
                _ => e.calls.front().and_then(|c| Some(c.started? + c.deadline)),
            });
        executors
            .chain(self.versions.next_backoff_end(now))
            .chain(self.next_idle_replica())
            .min()
    }

    /// How long a call to `route` is expected to hold its lane: the call, then its pace's
    /// pause (zero for a route nobody serves: it is answered 404 at once).
    pub fn expected_call(&self, route: &str) -> Duration {
        self.versions
            .live(route)
            .and_then(|g| self.versions.get(g))
            .map_or(Duration::ZERO, |v| {
                v.expected_call(self.settings.deadline) + v.pace(self.settings.pace)
            })
    }

    /// The work executors hold: what is left of each running call (by its estimate, its pace
    /// included) plus the calls written ahead, plus what is left of the pauses in progress.
    pub fn work_in_flight(&self, now: Instant) -> Duration {
        let mut work = Duration::ZERO;
        for executor in self.executors.iter().flatten() {
            if let Some(until) = executor.resting_until.filter(|_| executor.calls.is_empty()) {
                work += until.saturating_duration_since(now);
            }
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

    /// The call deadline for handlers that set none (`--deadline`).
    pub fn default_deadline(&self) -> Duration {
        self.settings.deadline
    }

    /// The pause after each call for handlers that set none (`--pace`).
    pub fn default_pace(&self) -> Duration {
        self.settings.pace
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
                pace: version.pace(self.settings.pace),
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

    /// The last events of versions and executors.
    pub fn events(&self) -> &crate::observe::events::Events {
        &self.versions.events
    }

    /// Executors with a call in flight.
    pub fn busy(&self) -> usize {
        self.busy
    }

    /// Whether a version serves `route` now.
    pub fn serves(&self, route: &str) -> bool {
        self.versions.live(route).is_some()
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
