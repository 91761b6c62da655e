//! Executors' lives: deadlines (a call past its deadline, an init that takes too long, a retired
//! executor that lingers), reaping and the log line of each death, retiring versions, and
//! starting executors (not before a version's backoff).

use std::process::ExitStatus;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use mio::Registry;

use super::{Pool, PoolEvent, FIRST_TOKEN, REAP_AGAIN, REPLICA_IDLE, RETIRE_GRACE};
use crate::exec::executor::{DeathContext, Drain, Executor, Phase};
use crate::exec::spawn::Launch;
use crate::exec::stats::Death;
use crate::exec::versions::Stage;
use crate::ids::{Generation, HandlerKind};
use plugin_api::Request;

use crate::exec::crashes::CrashRecord;
use crate::observe::events::EventKind;
use crate::process::backoff::crash_backoff;
use crate::process::signals::describe_exit;
use crate::warn;

impl Pool {
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
                    self.read(slot, registry, &mut scratch, out, Drain::UntilBlocked);
                    if self.is_late(slot, now) {
                        self.deadline_passed(slot, registry, out);
                    }
                }
                _ => {}
            }
        }
        self.retire_idle_replicas(now, registry);
        self.reap(registry);
        for generation in self.versions.due(now) {
            if self.count_executors(generation).0 == 0 {
                self.start_executor(generation, registry);
            }
        }
    }

    /// Whether the call the executor in `slot` runs has passed its deadline at `now`.
    pub(super) fn is_late(&self, slot: usize, now: Instant) -> bool {
        self.executors
            .get(slot)
            .and_then(Option::as_ref)
            .filter(|e| matches!(e.phase, Phase::Serving | Phase::Retiring { .. }))
            .and_then(|e| e.calls.front())
            .and_then(|c| Some((c.started?, c.deadline)))
            .is_some_and(|(started, deadline)| now >= started + deadline)
    }

    pub(super) fn deadline_passed(
        &mut self,
        slot: usize,
        registry: &Registry,
        out: &mut Vec<PoolEvent>,
    ) {
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
        self.versions.events.push(
            EventKind::Timeout,
            &route,
            format!(
                "a call passed its {} ms deadline; executor [{pid}] killed",
                deadline.as_millis()
            ),
        );
        let _ = self.fail_calls(
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
            let crash = executor.crash.take();
            self.exited(executor.generation, executor.pid, status, why, crash);
        }
    }

    /// The consequences of an executor's exit for its version, and the log line.
    pub(super) fn exited(
        &mut self,
        generation: Generation,
        pid: u32,
        status: ExitStatus,
        why: DeathContext,
        crash: Option<(Request, Duration)>,
    ) {
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
                let text = format!("executor [{pid}] died ({cause}) {when}{next}");
                if let (Some(sink), Some((request, deadline))) = (&self.crashes, crash) {
                    sink.record(CrashRecord {
                        route: route.to_string(),
                        crate_name: version.meta.crate_name.clone(),
                        version: version.meta.version.clone(),
                        hash: version.new.hash.to_string(),
                        generation: generation.0,
                        death: cause,
                        request,
                        deadline_ms: deadline.as_millis() as u64,
                    });
                }
                self.versions
                    .events
                    .push(EventKind::Crashed, route.as_str(), text);
            }
        }
        self.forget_if_done(generation);
    }

    /// Drops a retired version once its last executor is gone (and its private copy).
    pub(super) fn forget_if_done(&mut self, generation: Generation) {
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
    pub(super) fn retire(&mut self, generation: Generation, registry: &Registry) {
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
    pub(super) fn close_retired(&mut self, slot: usize, registry: &Registry) {
        let Some(executor) = self.executors.get_mut(slot).and_then(Option::as_mut) else {
            return;
        };
        executor.close(registry);
        executor.phase = Phase::Retiring {
            until: Some(Instant::now() + RETIRE_GRACE),
        };
    }

    /// Retires executors beyond each version's first that held no call for [`REPLICA_IDLE`]:
    /// replicas start on demand and go when the demand (or the light) no longer needs them.
    fn retire_idle_replicas(&mut self, now: Instant, registry: &Registry) {
        for slot in 0..self.executors.len() {
            let Some(executor) = self.executors[slot].as_ref() else {
                continue;
            };
            let idle = matches!(executor.phase, Phase::Serving)
                && executor.calls.is_empty()
                && now.saturating_duration_since(executor.idle_since) >= REPLICA_IDLE;
            if idle && self.count_serving(executor.generation) > 1 {
                crate::info!(
                    "executor [{}] retired: a replica idle for {} s",
                    executor.pid,
                    REPLICA_IDLE.as_secs()
                );
                self.close_retired(slot, registry);
            }
        }
    }

    /// When the next idle replica is due to be retired.
    pub(super) fn next_idle_replica(&self) -> Option<Instant> {
        self.executors
            .iter()
            .flatten()
            .filter(|e| matches!(e.phase, Phase::Serving) && e.calls.is_empty())
            .filter(|e| self.count_serving(e.generation) > 1)
            .map(|e| e.idle_since + REPLICA_IDLE)
            .min()
    }

    /// Executors of `generation` that are ready and serving (a replica still starting does
    /// not count: retiring the last ready one for it would leave the route waiting).
    fn count_serving(&self, generation: Generation) -> usize {
        self.executors
            .iter()
            .flatten()
            .filter(|e| e.generation == generation && matches!(e.phase, Phase::Serving))
            .count()
    }

    /// (executors of `generation` that are not dead, of which starting)
    pub(super) fn count_executors(&self, generation: Generation) -> (usize, usize) {
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
    pub(super) fn start_executor(&mut self, generation: Generation, registry: &Registry) {
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
            folder: version.new.folder.as_deref(),
            memory_limit: self.settings.memory_limit,
            init_timeout: version
                .new
                .init_timeout
                .unwrap_or(self.settings.init_timeout),
            runtime_dir: &self.runtime_dir,
            sandbox: self.settings.sandbox,
            protected: &self.settings.protected,
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
}
