//! Intake's counters, and the Prometheus text `/-/metrics` renders from them.
//!
//! Intake owns the counters (plain integers: one thread writes and reads them); plugin and
//! executor counters are the pool's, read through its route snapshot.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::exec::pool::RouteInfo;
use crate::exec::stats::{Death, ExecutorCounters, PluginStats};

/// Why a connection was closed, or a request dropped, by the server rather than the client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// No whole request head before the header deadline (from accept, TLS included).
    HeaderDeadline,
    /// A body or response stalled past the idle deadline.
    IdleDeadline,
    /// A body or response moved slower than the minimum rate.
    TooSlow,
    /// Its address was at the per-IP cap.
    PerIpCap,
    /// The queue was full when its request completed (requests read at the same time took
    /// the room its head was admitted to): answered 503 with `Retry-After`, closed.
    QueueFull,
    /// Its body found no room in the byte budget within `--queue-wait`: answered 503, closed.
    NoRoomForBody,
    /// Queued, but its client left before a lane took it.
    ClientGone,
    /// Queued longer than the queue-wait deadline.
    Expired,
    /// The TLS handshake or a TLS record failed.
    TlsError,
}

impl Reason {
    const ALL: [Reason; 9] = [
        Reason::HeaderDeadline,
        Reason::IdleDeadline,
        Reason::TooSlow,
        Reason::PerIpCap,
        Reason::QueueFull,
        Reason::NoRoomForBody,
        Reason::ClientGone,
        Reason::Expired,
        Reason::TlsError,
    ];

    fn label(self) -> &'static str {
        match self {
            Reason::HeaderDeadline => "header_deadline",
            Reason::IdleDeadline => "idle_deadline",
            Reason::TooSlow => "too_slow",
            Reason::PerIpCap => "per_ip_cap",
            Reason::QueueFull => "queue_full",
            Reason::NoRoomForBody => "no_room_for_body",
            Reason::ClientGone => "client_gone",
            Reason::Expired => "expired",
            Reason::TlsError => "tls_error",
        }
    }
}

/// Upper bounds of the latency histogram's buckets, in seconds.
const BUCKETS: [f64; 12] = [
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 30.0,
];

/// A Prometheus histogram of durations.
#[derive(Debug, Default)]
pub struct Histogram {
    /// Observations per bucket (not cumulative); the last one is `+Inf`.
    counts: [u64; 13],
    sum: f64,
}

impl Histogram {
    /// Records one duration in seconds.
    pub fn observe(&mut self, seconds: f64) {
        let bucket = BUCKETS
            .iter()
            .position(|&b| seconds <= b)
            .unwrap_or(BUCKETS.len());
        self.counts[bucket] += 1;
        self.sum += seconds;
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// The `q` quantile (0..1) in seconds, interpolated within its bucket (the `+Inf` bucket
    /// answers its lower bound); `None` before any observation.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let total = self.count();
        if total == 0 {
            return None;
        }
        let rank = q.clamp(0.0, 1.0) * total as f64;
        let mut below = 0u64;
        for (i, &count) in self.counts.iter().enumerate() {
            if count > 0 && (below + count) as f64 >= rank {
                let low = if i == 0 { 0.0 } else { BUCKETS[i - 1] };
                let Some(&high) = BUCKETS.get(i) else {
                    return Some(low);
                };
                let within = ((rank - below as f64) / count as f64).clamp(0.0, 1.0);
                return Some(low + (high - low) * within);
            }
            below += count;
        }
        BUCKETS.last().copied()
    }

    fn render(&self, out: &mut String, name: &str) {
        self.render_labelled(out, name, "");
    }

    /// Its samples with `labels` (`key="value"` pairs, comma-separated) before `le`.
    fn render_labelled(&self, out: &mut String, name: &str, labels: &str) {
        let (inner, outer) = match labels.is_empty() {
            true => (String::new(), String::new()),
            false => (format!("{labels},"), format!("{{{labels}}}")),
        };
        let mut cumulative = 0;
        for (i, count) in self.counts.iter().enumerate() {
            cumulative += count;
            let le = BUCKETS.get(i).map_or("+Inf".to_owned(), |b| b.to_string());
            let _ = writeln!(out, "{name}_bucket{{{inner}le=\"{le}\"}} {cumulative}");
        }
        let _ = writeln!(out, "{name}_sum{outer} {}", self.sum);
        let _ = writeln!(out, "{name}_count{outer} {cumulative}");
    }
}

/// The most routes with a latency histogram of their own (routes are few; this bounds what a
/// server that sees many versions and names could hold).
pub const MAX_ROUTE_HISTOGRAMS: usize = 64;

/// Intake's counters.
#[derive(Debug, Default)]
pub struct Counters {
    /// From a request's complete head to its answer being ready (queue wait + run).
    pub latency: Histogram,
    /// From entering the queue to reaching a lane.
    pub queue_wait: Histogram,
    /// Workers started before this one by the supervisor (crashes and planned restarts).
    pub worker_restarts: u64,
    /// Connections accepted.
    pub accepted: u64,
    /// Connections answered `503` by `--busy 503`.
    pub busy_answers: u64,
    /// Requests refused by the HTTP layer (4xx/5xx before a plugin), by status.
    pub refused: Vec<(u16, u64)>,
    /// Requests queued for a lane.
    pub queued: u64,
    /// Responses written, by status class (index 1..=5 for 1xx..5xx).
    pub responses: [u64; 6],
    /// Closes and drops by reason, indexed like `Reason::ALL`.
    dropped: [u64; 9],
    /// Request duration per served route (at most [`MAX_ROUTE_HISTOGRAMS`]), by name.
    pub by_route: Vec<(String, Histogram)>,
    /// Requests answered 401 (no key, or a wrong one) per route with a rule (at most
    /// [`MAX_ROUTE_HISTOGRAMS`] routes), by name.
    pub unauthorized: Vec<(String, u64)>,
}

impl Counters {
    /// Zeroed counters, for a worker the supervisor started after `restarts` others.
    pub fn with_worker_restarts(restarts: u64) -> Counters {
        Counters {
            worker_restarts: restarts,
            ..Counters::default()
        }
    }

    /// Counts a close or drop.
    pub fn drop_for(&mut self, reason: Reason) {
        if let Some(i) = Reason::ALL.iter().position(|r| *r == reason) {
            self.dropped[i] += 1;
        }
    }

    /// Counts a refused request.
    pub fn refuse(&mut self, status: u16) {
        match self.refused.iter_mut().find(|(s, _)| *s == status) {
            Some((_, n)) => *n += 1,
            None => self.refused.push((status, 1)),
        }
    }

    /// Records a request's duration under its route (a route that was served: names clients
    /// made up never get one).
    pub fn observe_route(&mut self, route: &str, seconds: f64) {
        if let Some((_, histogram)) = self.by_route.iter_mut().find(|(name, _)| name == route) {
            return histogram.observe(seconds);
        }
        if self.by_route.len() < MAX_ROUTE_HISTOGRAMS {
            let mut histogram = Histogram::default();
            histogram.observe(seconds);
            self.by_route.push((route.to_owned(), histogram));
        }
    }

    /// Counts a 401 for `route` (a route intake knows: names clients made up never get one).
    pub fn unauthorized_for(&mut self, route: &str) {
        if let Some((_, n)) = self.unauthorized.iter_mut().find(|(name, _)| name == route) {
            *n += 1;
        } else if self.unauthorized.len() < MAX_ROUTE_HISTOGRAMS {
            self.unauthorized.push((route.to_owned(), 1));
        }
    }

    /// A route's duration histogram, if it has one.
    pub fn route_histogram(&self, route: &str) -> Option<&Histogram> {
        self.by_route
            .iter()
            .find(|(name, _)| name == route)
            .map(|(_, h)| h)
    }

    /// Counts a response by its status class.
    pub fn respond(&mut self, status: u16) {
        if let Some(n) = self.responses.get_mut(usize::from(status / 100)) {
            *n += 1;
        }
    }
}

/// Gauges read at render time.
pub struct Gauges<'a> {
    /// Open connections.
    pub open: usize,
    /// Requests waiting.
    pub queued: usize,
    /// Executors started and ended.
    pub executors: &'a ExecutorCounters,
    /// Executors alive now.
    pub executors_alive: usize,
    /// How long a request queued now is expected to wait.
    pub predicted_wait: std::time::Duration,
    /// The routes, with their plugins' counters.
    pub routes: &'a [RouteInfo],
    /// The jellyfish's light (`None` in crab mode).
    pub light: Option<crate::jellyfish::LightView>,
}

/// Writes one metric family: its HELP and TYPE lines, then its samples (kept together, as the
/// text format wants).
fn family(out: &mut String, name: &str, kind: &str, help: &str, samples: impl FnOnce(&mut String)) {
    let _ = write!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n");
    samples(out);
}

/// The jellyfish's light and its inputs.
fn render_light(o: &mut String, light: &crate::jellyfish::LightView) {
    use crate::jellyfish::light::Color;
    family(
        o,
        "fiddler_light",
        "gauge",
        "The jellyfish's light: 1 for the one in force (green: parallel, yellow: batches, red: \
         one lane and tightened admission).",
        |o| {
            for color in [Color::Green, Color::Yellow, Color::Red] {
                let on = u8::from(color == light.color);
                let _ = writeln!(o, "fiddler_light{{light=\"{}\"}} {on}", color.name());
            }
        },
    );
    let s = &light.signals;
    let gauges: [(&str, &str, f64); 4] = [
        (
            "fiddler_cpu_pressure_ratio",
            "Share of the last window some task waited for a CPU (PSI some).",
            s.cpu_pressure,
        ),
        (
            "fiddler_memory_pressure_ratio",
            "Share of the last window some task waited for memory (PSI some).",
            s.memory_pressure,
        ),
        (
            "fiddler_lanes_allowed",
            "Calls the light allows at once.",
            light.lanes as f64,
        ),
        (
            "fiddler_batch_max",
            "Requests the light allows in one batch (1: none).",
            light.batch_max as f64,
        ),
    ];
    for (name, help, value) in gauges {
        family(o, name, "gauge", help, |o| {
            let _ = writeln!(o, "{name} {value}");
        });
    }
    if let Some(bytes) = s.headroom_bytes {
        family(
            o,
            "fiddler_memory_headroom_bytes",
            "gauge",
            "Memory still available (cgroup limit minus use, else MemAvailable).",
            |o| {
                let _ = writeln!(o, "fiddler_memory_headroom_bytes {bytes}");
            },
        );
    }
    family(
        o,
        "fiddler_light_changes_total",
        "counter",
        "Times the light changed.",
        |o| {
            let _ = writeln!(o, "fiddler_light_changes_total {}", light.changes);
        },
    );
}

/// The Prometheus text exposition of the counters and gauges.
pub fn render(counters: &Counters, gauges: &Gauges<'_>) -> String {
    let mut out = String::with_capacity(4096);
    let o = &mut out;
    let load = |n: &std::sync::atomic::AtomicU64| n.load(Ordering::Relaxed);
    family(
        o,
        "fiddler_connections_accepted_total",
        "counter",
        "Connections accepted.",
        |o| {
            let _ = writeln!(
                o,
                "fiddler_connections_accepted_total {}",
                counters.accepted
            );
        },
    );
    family(
        o,
        "fiddler_connections_open",
        "gauge",
        "Connections open now.",
        |o| {
            let _ = writeln!(o, "fiddler_connections_open {}", gauges.open);
        },
    );
    family(
        o,
        "fiddler_busy_answers_total",
        "counter",
        "Connections answered 503 by --busy 503.",
        |o| {
            let _ = writeln!(o, "fiddler_busy_answers_total {}", counters.busy_answers);
        },
    );
    family(
        o,
        "fiddler_queue_depth",
        "gauge",
        "Requests waiting for a lane.",
        |o| {
            let _ = writeln!(o, "fiddler_queue_depth {}", gauges.queued);
        },
    );
    family(
        o,
        "fiddler_predicted_wait_seconds",
        "gauge",
        "How long a request queued now is expected to wait before it starts.",
        |o| {
            let _ = writeln!(
                o,
                "fiddler_predicted_wait_seconds {:.6}",
                gauges.predicted_wait.as_secs_f64()
            );
        },
    );
    family(
        o,
        "fiddler_requests_queued_total",
        "counter",
        "Requests queued for a lane.",
        |o| {
            let _ = writeln!(o, "fiddler_requests_queued_total {}", counters.queued);
        },
    );
    family(
        o,
        "fiddler_dropped_total",
        "counter",
        "Connections closed or requests dropped by the server, by reason.",
        |o| {
            for (reason, n) in Reason::ALL.iter().zip(counters.dropped) {
                let _ = writeln!(
                    o,
                    "fiddler_dropped_total{{reason=\"{}\"}} {n}",
                    reason.label()
                );
            }
        },
    );
    family(
        o,
        "fiddler_refused_total",
        "counter",
        "Requests refused before a plugin, by status.",
        |o| {
            for (status, n) in &counters.refused {
                let _ = writeln!(o, "fiddler_refused_total{{status=\"{status}\"}} {n}");
            }
        },
    );
    family(
        o,
        "fiddler_unauthorized_total",
        "counter",
        "Requests answered 401 (no key, or a wrong one), per route that needs a key.",
        |o| {
            for (route, n) in &counters.unauthorized {
                let _ = writeln!(o, "fiddler_unauthorized_total{{plugin=\"{route}\"}} {n}");
            }
        },
    );
    family(
        o,
        "fiddler_responses_total",
        "counter",
        "Responses written, by status class.",
        |o| {
            for (class, n) in counters.responses.iter().enumerate().skip(1) {
                let _ = writeln!(o, "fiddler_responses_total{{class=\"{class}xx\"}} {n}");
            }
        },
    );
    if let Some(light) = &gauges.light {
        render_light(o, light);
    }
    family(o, "fiddler_routes_served", "gauge", "Routes served.", |o| {
        let _ = writeln!(o, "fiddler_routes_served {}", gauges.routes.len());
    });
    family(
        o,
        "fiddler_executors_alive",
        "gauge",
        "Executor processes alive now (serving, starting or retiring).",
        |o| {
            let _ = writeln!(o, "fiddler_executors_alive {}", gauges.executors_alive);
        },
    );
    family(
        o,
        "fiddler_executor_starts_total",
        "counter",
        "Executor processes started.",
        |o| {
            let _ = writeln!(
                o,
                "fiddler_executor_starts_total {}",
                gauges.executors.started
            );
        },
    );
    family(
        o,
        "fiddler_executor_deaths_total",
        "counter",
        "Executor processes ended, by cause.",
        |o| {
            for (death, n) in Death::ALL.iter().zip(gauges.executors.deaths) {
                let _ = writeln!(
                    o,
                    "fiddler_executor_deaths_total{{cause=\"{}\"}} {n}",
                    death.label()
                );
            }
        },
    );
    // One counter per route, read from each version's stats.
    type Counter = fn(&PluginStats) -> &AtomicU64;
    let per_plugin: [(&str, &str, Counter); 5] = [
        (
            "fiddler_plugin_calls_total",
            "Calls per plugin route.",
            |s| &s.calls,
        ),
        (
            "fiddler_plugin_errors_total",
            "Panics, crashes, timeouts and invalid answers per plugin route.",
            |s| &s.errors,
        ),
        (
            "fiddler_plugin_panics_total",
            "Panics per plugin route.",
            |s| &s.panics,
        ),
        (
            "fiddler_plugin_timeouts_total",
            "Calls past their deadline (each kills its executor) per route.",
            |s| &s.timeouts,
        ),
        (
            "fiddler_plugin_batches_total",
            "Batch calls per route (jellyfish on yellow; each holds several calls).",
            |s| &s.batches,
        ),
    ];
    for (name, help, counter) in per_plugin {
        family(o, name, "counter", help, |o| {
            for route in gauges.routes {
                let value = counter(&route.stats).load(Ordering::Relaxed);
                let _ = writeln!(o, "{name}{{plugin=\"{}\"}} {value}", route.name);
            }
        });
    }
    family(
        o,
        "fiddler_plugin_service_seconds",
        "gauge",
        "Expected duration of a call per plugin route (median of its recent calls).",
        |o| {
            for route in gauges.routes {
                let _ = writeln!(
                    o,
                    "fiddler_plugin_service_seconds{{plugin=\"{}\"}} {:.6}",
                    route.name,
                    route.expected_call.as_secs_f64()
                );
            }
        },
    );
    family(
        o,
        "fiddler_plugin_responses_total",
        "counter",
        "Answers per plugin route and status class.",
        |o| {
            for route in gauges.routes {
                for (class, n) in route.stats.responses.iter().enumerate().skip(1) {
                    let _ = writeln!(
                        o,
                        "fiddler_plugin_responses_total{{plugin=\"{}\",class=\"{class}xx\"}} {}",
                        route.name,
                        load(n)
                    );
                }
            }
        },
    );
    family(
        o,
        "fiddler_request_duration_seconds",
        "histogram",
        "From a complete request head to its answer.",
        |o| {
            counters
                .latency
                .render(o, "fiddler_request_duration_seconds");
        },
    );
    family(
        o,
        "fiddler_plugin_request_duration_seconds",
        "histogram",
        "From a complete request head to its answer, per plugin route served.",
        |o| {
            for (route, histogram) in &counters.by_route {
                histogram.render_labelled(
                    o,
                    "fiddler_plugin_request_duration_seconds",
                    &format!("plugin=\"{route}\""),
                );
            }
        },
    );
    family(
        o,
        "fiddler_queue_wait_seconds",
        "histogram",
        "From entering the queue to reaching a lane.",
        |o| {
            counters.queue_wait.render(o, "fiddler_queue_wait_seconds");
        },
    );
    family(
        o,
        "fiddler_worker_restarts_total",
        "counter",
        "Workers the supervisor started before this one.",
        |o| {
            let _ = writeln!(
                o,
                "fiddler_worker_restarts_total {}",
                counters.worker_restarts
            );
        },
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_sample_line_is_a_name_labels_and_a_number() {
        let mut counters = Counters::default();
        counters.drop_for(Reason::ClientGone);
        counters.refuse(413);
        counters.respond(200);
        counters.latency.observe(0.003);
        counters.latency.observe(99.0);
        counters.observe_route("echo", 0.002);
        counters.unauthorized_for("echo");
        counters.unauthorized_for("echo");
        let gauges = Gauges {
            open: 3,
            queued: 1,
            executors: &ExecutorCounters::default(),
            executors_alive: 2,
            predicted_wait: std::time::Duration::from_millis(1500),
            routes: &[],
            light: None,
        };
        let text = render(&counters, &gauges);
        assert!(text.contains("fiddler_dropped_total{reason=\"client_gone\"} 1\n"));
        assert!(text.contains("fiddler_refused_total{status=\"413\"} 1\n"));
        assert!(text.contains("fiddler_unauthorized_total{plugin=\"echo\"} 2\n"));
        assert!(text.contains("fiddler_predicted_wait_seconds 1.500000\n"));
        assert!(text.contains("fiddler_responses_total{class=\"2xx\"} 1\n"));
        assert!(text.contains("fiddler_request_duration_seconds_bucket{le=\"0.005\"} 1\n"));
        assert!(text.contains("fiddler_request_duration_seconds_bucket{le=\"+Inf\"} 2\n"));
        assert!(text.contains(
            "fiddler_plugin_request_duration_seconds_bucket{plugin=\"echo\",le=\"0.005\"} 1\n"
        ));
        assert!(text.contains("fiddler_plugin_request_duration_seconds_count{plugin=\"echo\"} 1\n"));
        // Each family's samples follow its own TYPE line, together.
        let mut family = "";
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                family = rest.split(' ').next().unwrap_or_default();
            } else if !line.starts_with('#') {
                let name = line.split(['{', ' ']).next().unwrap_or_default();
                let base = ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|suffix| name.strip_suffix(suffix))
                    .filter(|base| *base == family)
                    .unwrap_or(name);
                assert_eq!(base, family, "{line} outside its family");
            }
        }
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let (_, value) = line.rsplit_once(' ').expect("name and value");
            assert!(value.parse::<f64>().is_ok(), "{line}");
        }
    }
    #[test]
    fn quantiles_interpolate_within_buckets() {
        let mut histogram = Histogram::default();
        assert_eq!(histogram.quantile(0.5), None);
        for _ in 0..90 {
            histogram.observe(0.003); // (0.001, 0.005]
        }
        for _ in 0..10 {
            histogram.observe(0.2); // (0.1, 0.25]
        }
        let p50 = histogram.quantile(0.5).expect("a p50");
        assert!((0.001..=0.005).contains(&p50), "{p50}");
        let p99 = histogram.quantile(0.99).expect("a p99");
        assert!((0.1..=0.25).contains(&p99), "{p99}");
        histogram.observe(500.0);
        assert_eq!(
            histogram.quantile(1.0),
            Some(30.0),
            "+Inf answers its lower bound"
        );
    }

    #[test]
    fn route_histograms_are_bounded() {
        let mut counters = Counters::default();
        for i in 0..MAX_ROUTE_HISTOGRAMS + 10 {
            counters.observe_route(&format!("r{i}"), 0.01);
        }
        assert_eq!(counters.by_route.len(), MAX_ROUTE_HISTOGRAMS);
    }
}
