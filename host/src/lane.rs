//! A lane: takes one request at a time from intake, routes it, runs it on the executor with the
//! plugin's deadline, and hands the response back to intake (channel + `mio::Waker`).
//!
//! The lane owns its registry and the set of quarantined plugin versions; nothing else touches
//! them. It publishes a snapshot of its routes to intake whenever they change.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, Sender};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use plugin_api::{Request, Response};

use crate::conn::ConnId;
use crate::executor::{Executor, Outcome};
use crate::loader::Generation;
use crate::queue::Job;
use crate::registry::{Handler, PluginName, Registry, RouteTable};
use crate::warn;

/// Abandoned executor threads (calls past their deadline still running) before the worker asks
/// for a fresh process.
const ABANDONED_BUDGET: usize = 8;

/// Identifies a lane (its index).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LaneId(pub usize);

/// What a lane is told.
// `Run` is large, but it is moved once per request; boxing it would add an allocation instead.
#[allow(clippy::large_enum_variant)]
pub enum LaneMsg {
    /// Run this request.
    Run(Job),
    /// An abandoned call into this plugin version has returned: lift its quarantine.
    Released(Generation),
    /// Serve this version at its route (from the watcher), replacing any other.
    Install(Handler),
    /// Stop serving this route (its file was removed).
    Remove(PluginName),
}

/// What a lane tells intake.
pub enum LaneEvent {
    /// The answer for `conn`; the lane is free again.
    Done {
        /// Which lane is free.
        lane: LaneId,
        /// Who asked.
        conn: ConnId,
        /// The route it went to (for the access log).
        route: String,
        /// The answer.
        response: Response,
    },
    /// The routes changed (intake starts with the registry's; lanes send every change).
    Routes(RouteTable),
}

/// How intake is reached: the event channel and the waker of its poll loop.
#[derive(Clone)]
pub struct IntakeLink {
    /// Where events go.
    pub events: Sender<LaneEvent>,
    /// Wakes intake's poll after each event.
    pub waker: Arc<mio::Waker>,
}

impl IntakeLink {
    /// Sends an event and wakes intake. `false` when intake is gone.
    pub fn send(&self, event: LaneEvent) -> bool {
        self.events.send(event).is_ok() && self.waker.wake().is_ok()
    }
}

/// Settings a lane needs.
#[derive(Clone, Copy, Debug)]
pub struct LaneSettings {
    /// Call deadline for plugins that set none.
    pub deadline: Duration,
    /// Pause after each request.
    pub pace: Duration,
}

/// A lane's state; runs on its own thread.
pub struct Lane {
    id: LaneId,
    registry: Registry,
    executor: Executor,
    /// Plugin versions with an abandoned call still running: answered 503 at once.
    quarantined: HashSet<Generation>,
    intake: IntakeLink,
    settings: LaneSettings,
}

impl Lane {
    /// Starts a lane thread. `inbox` receives its work; `outbox` is a sender into that same
    /// inbox, for its executor's reports.
    pub fn spawn(
        id: LaneId,
        registry: Registry,
        intake: IntakeLink,
        settings: LaneSettings,
        inbox: Receiver<LaneMsg>,
        outbox: Sender<LaneMsg>,
    ) -> std::io::Result<thread::JoinHandle<()>> {
        let lane = Lane {
            id,
            registry,
            executor: Executor::new(outbox),
            quarantined: HashSet::new(),
            intake,
            settings,
        };
        thread::Builder::new()
            .name(format!("lane-{}", id.0))
            .spawn(move || {
                // A lane that panics is a host bug; the worker process cannot be trusted after
                // it, so it exits and the supervisor starts a fresh one on the same sockets.
                let result =
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| lane.run(inbox)));
                if result.is_err() {
                    crate::warn!(
                        "lane {} panicked (a host bug); the worker exits to be replaced",
                        id.0
                    );
                    std::process::exit(70);
                }
            })
    }

    fn run(mut self, inbox: Receiver<LaneMsg>) {
        for msg in inbox {
            match msg {
                LaneMsg::Run(job) => {
                    let handler = self.registry.get(&job.route).cloned();
                    let response = self.serve(&job.route, handler.as_ref(), job.request);
                    if let Some(handler) = &handler {
                        let class = usize::from(response.status / 100).min(5);
                        handler.stats().responses[class].fetch_add(1, Ordering::Relaxed);
                    }
                    let done = LaneEvent::Done {
                        lane: self.id,
                        conn: job.conn,
                        route: job.route,
                        response,
                    };
                    if !self.intake.send(done) {
                        return;
                    }
                    if !self.settings.pace.is_zero() {
                        thread::sleep(self.settings.pace);
                    }
                }
                LaneMsg::Released(generation) => {
                    self.executor.abandoned = self.executor.abandoned.saturating_sub(1);
                    if self.quarantined.remove(&generation) {
                        crate::info!(
                            "generation {} returned from its late call; quarantine lifted",
                            generation.0
                        );
                    }
                }
                LaneMsg::Install(plugin) => {
                    // The old version is dropped once no call holds it (its state with it).
                    self.registry.install(plugin);
                    if !self.publish_routes() {
                        return;
                    }
                }
                LaneMsg::Remove(name) => {
                    self.registry.remove(&name);
                    if !self.publish_routes() {
                        return;
                    }
                }
            }
        }
    }

    fn publish_routes(&self) -> bool {
        self.intake.send(LaneEvent::Routes(self.registry.routes()))
    }

    /// Answers `request` for `route` with `handler` (looked up once by the caller).
    fn serve(&mut self, route: &str, handler: Option<&Handler>, request: Request) -> Response {
        let plugin = match handler {
            None => return text(404, &format!("no plugin serves /{route}\n")),
            Some(Handler::Program(program)) => {
                // A program is a child process: it can be killed, so it runs here, without an
                // executor thread or a quarantine.
                program.stats.calls.fetch_add(1, Ordering::Relaxed);
                let response = crate::cgi::call(program, request, self.settings.deadline);
                if response.status >= 500 {
                    program.stats.errors.fetch_add(1, Ordering::Relaxed);
                }
                return response;
            }
            Some(Handler::Native(plugin)) => plugin,
        };
        if self.quarantined.contains(&plugin.generation) {
            return text(
                503,
                &format!("plugin {route} is quarantined: a call past its deadline still runs\n"),
            );
        }
        let deadline = plugin.meta.deadline.unwrap_or(self.settings.deadline);
        plugin.stats.calls.fetch_add(1, Ordering::Relaxed);
        let outcome = self.executor.call(plugin, request, deadline);
        if !matches!(&outcome, Outcome::Answered(r) if (200..=999).contains(&r.status)) {
            plugin.stats.errors.fetch_add(1, Ordering::Relaxed);
        }
        match outcome {
            Outcome::Answered(response) if (200..=999).contains(&response.status) => response,
            Outcome::Answered(response) => {
                warn!(
                    "plugin {route} answered with status {}, which it may not send; sent 500",
                    response.status
                );
                text(
                    500,
                    &format!("plugin {route} answered with an invalid status\n"),
                )
            }
            Outcome::Panicked(why) => {
                plugin.stats.panics.fetch_add(1, Ordering::Relaxed);
                warn!(
                    "plugin {route} (generation {}) panicked: {why}",
                    plugin.generation.0
                );
                text(500, &format!("plugin {route} panicked\n"))
            }
            Outcome::TimedOut => {
                plugin.stats.timeouts.fetch_add(1, Ordering::Relaxed);
                self.quarantined.insert(plugin.generation);
                if self.executor.abandoned == ABANDONED_BUDGET {
                    crate::request_restart(&format!(
                        "{ABANDONED_BUDGET} timed-out plugin calls are still running on abandoned threads"
                    ));
                }
                warn!(
                    "plugin {route} (generation {}) passed its {} ms deadline; the call is \
                     abandoned ({} abandoned so far) and the plugin quarantined until it returns",
                    plugin.generation.0,
                    deadline.as_millis(),
                    self.executor.abandoned
                );
                text(
                    504,
                    &format!("plugin {route} did not answer within its deadline\n"),
                )
            }
            Outcome::Unavailable(e) => {
                warn!("cannot start an executor thread: {e}");
                text(503, "no thread available to run the request\n")
            }
        }
    }
}

/// A plain-text response made by the host.
pub fn text(status: u16, body: &str) -> Response {
    Response::text(body).with_status(status)
}
