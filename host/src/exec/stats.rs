//! Counters of handler versions and executors, for `/-/plugins` and `/-/metrics`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Calls remembered per version for its service-time estimate.
const RECENT_CALLS: usize = 16;

/// How long a version's calls take: the median of its last [`RECENT_CALLS`] calls, so one
/// outlier (a cold cache, one huge input) does not swing it. Admission predicts the wait
/// ahead of a new request from it.
#[derive(Clone, Debug, Default)]
pub struct ServiceTime {
    /// Invariant: the first `len` entries (in ring order from `next`) are measured calls.
    recent: [Duration; RECENT_CALLS],
    /// The same `len` calls, in order (kept by `record`: the median is read on every request).
    sorted: [Duration; RECENT_CALLS],
    len: usize,
    next: usize,
}

impl ServiceTime {
    /// Remembers one call's duration, forgetting the oldest once [`RECENT_CALLS`] are kept.
    pub fn record(&mut self, took: Duration) {
        if self.len == RECENT_CALLS {
            let oldest = self.recent[self.next];
            let at = self.sorted[..self.len].partition_point(|d| *d < oldest);
            self.sorted.copy_within(at + 1..self.len, at);
            self.len -= 1;
        }
        self.recent[self.next] = took;
        self.next = (self.next + 1) % RECENT_CALLS;
        let at = self.sorted[..self.len].partition_point(|d| *d < took);
        self.sorted.copy_within(at..self.len, at + 1);
        self.sorted[at] = took;
        self.len += 1;
    }

    /// The median of the calls remembered; `None` before the first.
    pub fn estimate(&self) -> Option<Duration> {
        (self.len > 0).then(|| self.sorted[self.len / 2])
    }

    /// Whether no call was measured yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// A handler version's counters. Atomics so a snapshot can be shared with the admin view
/// without a copy; only the worker's loop writes them.
#[derive(Debug, Default)]
pub struct PluginStats {
    /// Calls sent to an executor.
    pub calls: AtomicU64,
    /// Calls that panicked, crashed, passed their deadline or answered an invalid status.
    pub errors: AtomicU64,
    /// Calls that panicked.
    pub panics: AtomicU64,
    /// Calls that passed their deadline (each kills its executor).
    pub timeouts: AtomicU64,
    /// Batch calls sent (each holds several of `calls`).
    pub batches: AtomicU64,
    /// Answers by status class (index 1..=5 for 1xx..5xx).
    pub responses: [AtomicU64; 6],
}

impl PluginStats {
    /// Counts an answer by its status class.
    pub fn count_response(&self, status: u16) {
        let class = usize::from(status / 100).min(5);
        self.responses[class].fetch_add(1, Ordering::Relaxed);
    }
}

/// How an executor ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Death {
    /// Killed by a signal it did not get from the pool (a crash, the OOM killer, `kill -9`).
    Signal,
    /// Exited by itself (`exit`, a refused start).
    Exit,
    /// Killed by the pool: a call passed its deadline.
    Deadline,
    /// Refused at start, or did not start in time.
    Init,
    /// Its version was replaced or removed.
    Retired,
}

impl Death {
    /// Every cause, in the order of [`ExecutorCounters::deaths`].
    pub const ALL: [Death; 5] = [
        Death::Signal,
        Death::Exit,
        Death::Deadline,
        Death::Init,
        Death::Retired,
    ];

    /// How an executor the pool did not kill ended, from its exit status.
    pub fn of_exit(status: std::process::ExitStatus) -> Death {
        use std::os::unix::process::ExitStatusExt;
        match status.signal() {
            Some(_) => Death::Signal,
            None => Death::Exit,
        }
    }

    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Death::Signal => "signal",
            Death::Exit => "exit",
            Death::Deadline => "deadline",
            Death::Init => "init",
            Death::Retired => "retired",
        }
    }
}

/// Executors started and ended.
#[derive(Debug, Default)]
pub struct ExecutorCounters {
    /// Executors started.
    pub started: u64,
    /// Executors ended, indexed like [`Death::ALL`].
    pub deaths: [u64; 5],
}

impl ExecutorCounters {
    /// Counts an executor's end.
    pub fn died(&mut self, death: Death) {
        if let Some(i) = Death::ALL.iter().position(|d| *d == death) {
            self.deaths[i] += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_estimate_is_the_median_of_recent_calls() {
        let ms = Duration::from_millis;
        let mut service = ServiceTime::default();
        assert_eq!(service.estimate(), None);
        service.record(ms(200));
        assert_eq!(service.estimate(), Some(ms(200)));
        service.record(ms(30_000)); // one outlier
        service.record(ms(210));
        assert_eq!(service.estimate(), Some(ms(210)));
        for _ in 0..RECENT_CALLS {
            service.record(ms(5));
        }
        assert_eq!(service.estimate(), Some(ms(5)), "old calls are forgotten");
    }

    #[test]
    fn the_kept_order_matches_sorting_the_last_calls_afresh() {
        let mut service = ServiceTime::default();
        let mut all = Vec::new();
        let mut x: u64 = 12_345;
        for _ in 0..500 {
            // A small range, so equal durations (the case removal must get right) are common.
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            let took = Duration::from_micros((x >> 33) % 40);
            service.record(took);
            all.push(took);
            let mut last: Vec<_> = all.iter().rev().take(RECENT_CALLS).copied().collect();
            last.sort_unstable();
            assert_eq!(service.estimate(), Some(last[last.len() / 2]));
        }
    }
}
