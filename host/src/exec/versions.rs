//! The versions of every route as the pool sees them: which one is live, which one is starting
//! to replace it (blue/green), which contents were refused, and each version's counters and
//! crash-loop state. No processes here: the pool starts and stops executors; this says what a
//! version's executors mean for its route, and writes the log lines (and the status page's
//! events) about versions.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use crate::exec::stats::{PluginStats, ServiceTime};
use crate::ids::{ContentHash, Generation, HandlerKind, PluginName};
use crate::lookup::LookupMap;
use crate::observe::events::{EventKind, Events};
use crate::plugins::version::{HandlerMeta, NewVersion};
use crate::process::backoff::crash_backoff;
use crate::{info, warn};

/// Where a version is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// Its first executor is starting; the route still points elsewhere (or nowhere).
    Candidate,
    /// It serves its route.
    Live,
    /// Replaced, removed or refused: its executors finish what they hold and exit.
    Retired,
}

/// One version of one route.
pub struct Version {
    /// What the watcher found.
    pub new: NewVersion,
    /// Where it is in its life.
    pub stage: Stage,
    /// What its handler said in `Ready` (empty until then).
    pub meta: HandlerMeta,
    /// Its counters.
    pub stats: Arc<PluginStats>,
    /// How long its calls take (inherited from the version it replaces until it has its own).
    pub service: ServiceTime,
    /// When it was found.
    pub loaded_at: SystemTime,
    /// The version it replaces, for the log lines.
    replaces: Option<Generation>,
    /// Executors started for it while live (restarts and more lanes).
    pub restarts: u64,
    /// Deaths in a row of executors that died young (the crash-loop backoff).
    pub crashes_in_row: u32,
    /// No executor is started for it before this (the backoff).
    pub not_before: Instant,
}

impl Version {
    /// The call deadline: its own, else `default`.
    pub fn deadline(&self, default: Duration) -> Duration {
        self.meta
            .deadline_ms
            .map(Duration::from_millis)
            .unwrap_or(default)
    }

    /// The pause after each of its calls: its own (`pace=` in its folder's settings), else
    /// `default` (`--pace`).
    pub fn pace(&self, default: Duration) -> Duration {
        self.new.pace.unwrap_or(default)
    }

    /// How long its next call is expected to take: the median of its recent calls, else its
    /// deadline (the most a call may take).
    pub fn expected_call(&self, default_deadline: Duration) -> Duration {
        self.service
            .estimate()
            .unwrap_or_else(|| self.deadline(default_deadline))
    }

    /// Counts a death it did not ask for; returns the pause before its next executor.
    pub fn count_crash(&mut self, young: bool) -> Duration {
        self.crashes_in_row = if young { self.crashes_in_row + 1 } else { 1 };
        let pause = crash_backoff(self.crashes_in_row);
        self.not_before = Instant::now() + pause;
        pause
    }
}

/// What became of a version offered by the watcher.
pub enum Offer {
    /// Start its first executor; the older candidate (if any) is to be retired.
    Start {
        /// The new version.
        generation: Generation,
        /// A candidate it displaces (a file replaced again before it was ready).
        displaced: Option<Generation>,
    },
    /// Nothing to start: the same bytes serve already, or were refused before. A candidate
    /// still starting for the route is displaced all the same (the file on disk is what
    /// serves: a quick roll-back must win over the version it rolled back from).
    Ignored {
        /// The candidate to retire, if one was starting.
        displaced: Option<Generation>,
    },
}

/// Every version the pool knows.
///
/// Invariant: a version stays in `versions` while any executor of it exists (the pool calls
/// [`Versions::forget`] only for a retired version with none left).
#[derive(Default)]
pub struct Versions {
    versions: LookupMap<Generation, Version>,
    /// The live version of each route.
    live: LookupMap<PluginName, Generation>,
    /// A version starting to replace (or become) a route's live one.
    candidates: LookupMap<PluginName, Generation>,
    /// Contents refused, with their route: not tried again until that route's file is removed
    /// (a deliberate drop-in again retries).
    refused: LookupMap<ContentHash, PluginName>,
    /// The last events of versions and executors, for the status page.
    pub events: Events,
}

impl Versions {
    /// Takes a version from the watcher.
    pub fn offer(&mut self, new: NewVersion) -> Offer {
        let current = self.live.get(&new.name).and_then(|g| self.versions.get(g));
        if current.is_some_and(|v| v.new.hash == new.hash) {
            new.remove_copy();
            let displaced = self.candidates.remove(&new.name);
            return Offer::Ignored { displaced };
        }
        if self.refused.contains_key(&new.hash) {
            info!(
                "skipped {}: the same bytes were refused before (remove the file, then drop it \
                 in again to retry)",
                new.source.display()
            );
            new.remove_copy();
            let displaced = self.candidates.remove(&new.name);
            return Offer::Ignored { displaced };
        }
        let displaced = self.candidates.remove(&new.name);
        let replaces = self.live.get(&new.name).copied();
        let generation = new.generation;
        self.candidates.insert(new.name.clone(), generation);
        self.versions.insert(
            generation,
            Version {
                new,
                stage: Stage::Candidate,
                meta: HandlerMeta::default(),
                stats: Arc::default(),
                service: ServiceTime::default(),
                loaded_at: SystemTime::now(),
                replaces,
                restarts: 0,
                crashes_in_row: 0,
                not_before: Instant::now(),
            },
        );
        Offer::Start {
            generation,
            displaced,
        }
    }

    /// Stops serving `name`; returns the versions to retire. Contents refused for it may be
    /// tried again.
    pub fn remove(&mut self, name: &PluginName) -> Vec<Generation> {
        self.refused.retain(|_, route| route != name);
        self.events
            .push(EventKind::Removed, name.as_str(), "its file was removed");
        let gone = [self.candidates.remove(name), self.live.remove(name)];
        gone.into_iter().flatten().collect()
    }

    /// A version's executor said `Ready` with `meta`. A candidate goes live (logged); returns
    /// the version it replaces, to retire.
    pub fn ready(&mut self, generation: Generation, meta: HandlerMeta) -> Option<Generation> {
        let version = self.versions.get_mut(&generation)?;
        version.meta = meta;
        if version.meta.version.is_empty() {
            // A program has no crate version: its contents' hash tells its versions apart.
            version.meta.version = version.new.hash.to_string();
        }
        if version.stage != Stage::Candidate {
            return None;
        }
        version.stage = Stage::Live;
        let name = version.new.name.clone();
        let replacing = version
            .replaces
            .map(|g| format!(", replacing generation {}", g.0))
            .unwrap_or_default();
        match version.new.kind {
            HandlerKind::Native => info!(
                "loaded {} as /{name}: {} {} ({}), generation {}{replacing}{}",
                version.new.source.display(),
                version.meta.crate_name,
                version.meta.version,
                version.meta.description,
                generation.0,
                match version.meta.max_lanes {
                    Some(_) => "",
                    None => "; built against plugin-api 0.1.0, so it answers whole",
                }
            ),
            HandlerKind::Cgi => info!(
                "serving {} as /{name}: a program run per request (CGI), generation {}{replacing}",
                version.new.source.display(),
                generation.0
            ),
            HandlerKind::Program => info!(
                "serving {} as /{name}: a program that stays up ({}), generation {}{replacing}",
                version.new.source.display(),
                version.meta.description,
                generation.0
            ),
        }
        // Once per version: what its sandbox is, loud when something is missing.
        match crate::exec::sandbox::split_line(&version.meta.sandbox) {
            (applied, Some(missing)) => warn!(
                "/{name}: sandbox lacks {missing} (in force: {applied}); --sandbox strict would \
                 refuse it"
            ),
            (_, None) => info!("/{name}: sandbox: {}", version.meta.sandbox),
        }
        let (kind, what) = match version.replaces {
            Some(old) => (
                EventKind::Swapped,
                format!("generation {} replaced generation {}", generation.0, old.0),
            ),
            None => (
                EventKind::Loaded,
                format!("generation {} serves", generation.0),
            ),
        };
        let what = format!(
            "{what}: {} {}",
            version.meta.crate_name, version.meta.version
        );
        self.events.push(kind, name.as_str(), what);
        self.candidates.remove(&name);
        let replaced = self.live.insert(name, generation);
        // A new version of a route is expected to cost what the old one did until measured.
        let inherited = replaced
            .and_then(|old| self.versions.get(&old))
            .map(|old| old.service.clone());
        if let (Some(service), Some(version)) = (inherited, self.versions.get_mut(&generation)) {
            if version.service.is_empty() {
                version.service = service;
            }
        }
        replaced
    }

    /// A candidate's executor refused it or died before `Ready`: the version is refused (one
    /// log line) and its contents remembered.
    pub fn refuse(&mut self, generation: Generation, reason: &str) {
        let Some(version) = self.versions.get_mut(&generation) else {
            return;
        };
        let route = version.new.name.clone();
        let keeps = version
            .replaces
            .map(|g| format!("; generation {} keeps serving /{route}", g.0))
            .unwrap_or_default();
        warn!("refused {}: {reason}{keeps}", version.new.source.display());
        self.events.push(
            EventKind::Refused,
            route.as_str(),
            format!("{reason}{keeps}"),
        );
        self.refused.insert(version.new.hash, route.clone());
        if self.candidates.get(&route) == Some(&generation) {
            self.candidates.remove(&route);
        }
        version.stage = Stage::Retired;
    }

    /// Marks a version retired (replaced or removed).
    pub fn retire(&mut self, generation: Generation) {
        if let Some(version) = self.versions.get_mut(&generation) {
            version.stage = Stage::Retired;
        }
    }

    /// Drops a retired version (the pool saw its last executor go) and its private copy.
    pub fn forget(&mut self, generation: Generation) {
        let retired = self
            .versions
            .get(&generation)
            .is_some_and(|v| v.stage == Stage::Retired);
        if retired {
            if let Some(version) = self.versions.remove(&generation) {
                version.new.remove_copy();
            }
        }
    }

    /// The version serving `route`.
    pub fn live(&self, route: &str) -> Option<Generation> {
        self.live.get(route).copied()
    }

    /// Every live route with its version, in no order.
    pub fn live_routes(&self) -> impl Iterator<Item = (Generation, &Version)> + '_ {
        self.live
            .values()
            .filter_map(|g| Some((*g, self.versions.get(g)?)))
    }

    /// A version.
    pub fn get(&self, generation: Generation) -> Option<&Version> {
        self.versions.get(&generation)
    }

    /// A version, to change.
    pub fn get_mut(&mut self, generation: Generation) -> Option<&mut Version> {
        self.versions.get_mut(&generation)
    }

    /// Whether versions are still starting.
    pub fn is_starting(&self) -> bool {
        !self.candidates.is_empty()
    }

    /// Whether `route` has no live version yet and one is starting for it (its requests wait
    /// for it instead of being answered 404).
    pub fn is_first_starting(&self, route: &str) -> bool {
        !self.live.contains_key(route) && self.candidates.contains_key(route)
    }

    /// The routes whose versions are starting, sorted.
    pub fn starting_routes(&self) -> Vec<String> {
        let mut routes: Vec<String> = self.candidates.keys().map(|n| n.to_string()).collect();
        routes.sort();
        routes
    }

    /// The body limit a route sets for itself, if any.
    pub fn max_body(&self, route: &str) -> Option<u64> {
        self.versions.get(self.live.get(route)?)?.meta.max_body
    }

    /// How log lines name an executor of `generation`: `/route [pid]`.
    pub fn label(&self, generation: Generation, pid: u32) -> String {
        match self.versions.get(&generation) {
            Some(v) => format!("/{} [{pid}]", v.new.name),
            None => format!("executor [{pid}]"),
        }
    }

    /// Live versions whose backoff is over (the pool starts one for each that has none).
    pub fn due(&self, now: Instant) -> Vec<Generation> {
        self.versions
            .iter()
            .filter(|(_, v)| v.stage == Stage::Live && now >= v.not_before)
            .map(|(g, _)| *g)
            .collect()
    }

    /// When the soonest backoff ends.
    pub fn next_backoff_end(&self, now: Instant) -> Option<Instant> {
        self.versions
            .values()
            .filter(|v| v.stage == Stage::Live && v.not_before > now)
            .map(|v| v.not_before)
            .min()
    }
}

impl Drop for Versions {
    fn drop(&mut self) {
        for version in self.versions.values() {
            version.new.remove_copy();
        }
    }
}
