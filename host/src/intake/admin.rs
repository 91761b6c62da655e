//! The admin routes under `/-/`, answered by intake itself without entering the queue, so they
//! answer while every lane is busy: `/-/health`, `/-/ready`, `/-/plugins`, `/-/metrics`, and
//! the status page `/-/` with its snapshot `/-/status` (in `status`).

use std::fmt::Write;
use std::sync::atomic::Ordering;
use std::time::{Duration, UNIX_EPOCH};

use plugin_api::Response;

use crate::access::gate::Gates;
use crate::exec::pool::RouteInfo;
use crate::exec::stats::ExecutorCounters;
use crate::http::response::text;
use crate::intake::status::{self, StatusView};
use crate::jellyfish::light::Color;
use crate::jellyfish::{mode_json, LightView};
use crate::observe::metrics::{self, Counters, Gauges};

/// What the admin routes may read of intake's state.
pub struct AdminView<'a> {
    /// The routes served now, with their executors.
    pub routes: &'a [RouteInfo],
    /// Executors started and ended.
    pub executors: &'a ExecutorCounters,
    /// Executors alive now.
    pub executors_alive: usize,
    /// How long a request queued now is expected to wait before it starts.
    pub predicted_wait: Duration,
    /// The longest a request may wait in the queue (`--queue-wait`).
    pub queue_wait: Duration,
    /// Requests waiting in the queue.
    pub queued: usize,
    /// The queue's capacity.
    pub queue_capacity: usize,
    /// Open connections.
    pub open: usize,
    /// Intake's counters.
    pub counters: &'a Counters,
    /// What the status page shows beyond these.
    pub status: StatusView<'a>,
    /// The jellyfish's light (`None` in crab mode).
    pub light: Option<LightView>,
    /// Routes whose first versions are still starting while the worker starts (empty once
    /// every version found at start is ready or refused).
    pub starting: &'a [String],
    /// Who may call each route (shown as whether it needs a key, never the keys).
    pub gates: &'a Gates,
}

/// Answers `GET /-/<rest>`.
pub fn answer(rest: &str, view: &AdminView<'_>) -> Response {
    match rest {
        "/health" => text(200, "ok\n"),
        // Starting: the server answers, but a route found at start is not ready yet.
        "/ready" if !view.starting.is_empty() => text(
            503,
            &format!(
                "starting: {} not ready yet\n",
                view.starting
                    .iter()
                    .map(|r| format!("/{r}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            ),
        ),
        // Red: the machine is short of memory or CPU; a balancer should send traffic elsewhere.
        "/ready" if view.light.is_some_and(|l| l.color == Color::Red) => text(
            503,
            &format!(
                "busy: the light is red (CPU pressure {:.0}%, memory pressure {:.0}%), {} of {} \
                 queued\n",
                view.light.map_or(0.0, |l| l.signals.cpu_pressure * 100.0),
                view.light
                    .map_or(0.0, |l| l.signals.memory_pressure * 100.0),
                view.queued,
                view.queue_capacity
            ),
        ),
        // Not ready above the queue's high-water mark (three quarters of its count, or of
        // --queue-wait in predicted wait), so a load balancer sends traffic elsewhere before
        // requests have to wait for room or would wait too long.
        "/ready"
            if view.queued * 4 >= view.queue_capacity * 3
                || view.predicted_wait * 4 >= view.queue_wait * 3 =>
        {
            text(
                503,
                &format!(
                    "busy: {} of {} queued, predicted wait {} ms of {}\n",
                    view.queued,
                    view.queue_capacity,
                    view.predicted_wait.as_millis(),
                    view.queue_wait.as_millis()
                ),
            )
        }
        "/ready" => text(
            200,
            &format!(
                "ready: {} of {} queued, predicted wait {} ms of {}\n",
                view.queued,
                view.queue_capacity,
                view.predicted_wait.as_millis(),
                view.queue_wait.as_millis()
            ),
        ),
        "/plugins" => Response::json(plugins_json(view)),
        "/status" => Response::json(status::snapshot(view, &view.status))
            .with_header("Cache-Control", "no-store"),
        "/metrics" => {
            let gauges = Gauges {
                open: view.open,
                queued: view.queued,
                executors: view.executors,
                executors_alive: view.executors_alive,
                predicted_wait: view.predicted_wait,
                routes: view.routes,
                light: view.light,
            };
            Response::status(200)
                .with_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
                .with_body(metrics::render(view.counters, &gauges))
        }
        _ => status::asset(rest).unwrap_or_else(|| {
            text(
                404,
                "admin routes: /-/ (status page) /-/status /-/health /-/ready /-/plugins \
                 /-/metrics\n",
            )
        }),
    }
}

/// `{"executors_alive":N,"plugins":[{"route":..,"kind":..,"crate":..,"version":..,
/// "description":..,"generation":..,"loaded_at":..,"calls":..,"errors":..,"restarts":..,
/// "service_ms":..,"max_lanes":..,"max_batch":..,"deadline_ms":..,"max_body":..,"batches":..,
/// "pace_ms":..,"keys":"none"|"required"|"refused","sandbox":"..","executors":[{"pid":..,
/// "state":..,"uptime_s":..}]}]}` with the top-level
/// `"predicted_wait_ms"` after `executors_alive`
fn plugins_json(view: &AdminView<'_>) -> String {
    let mut json = format!(
        "{{\"executors_alive\":{},\"predicted_wait_ms\":{},{}",
        view.executors_alive,
        view.predicted_wait.as_millis(),
        mode_json(view.light.as_ref()),
    );
    json.push_str("\"plugins\":[");
    for (i, route) in view.routes.iter().enumerate() {
        let loaded_at = route
            .loaded_at
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let _ = write!(
            json,
            "{}{{\"route\":{},\"kind\":\"{}\",\"crate\":{},\"version\":{},\"description\":{},\"generation\":{},\"loaded_at\":{loaded_at},\"calls\":{},\"errors\":{},\"restarts\":{},\"service_ms\":{:.3},\"max_lanes\":{},\"max_batch\":{},\"deadline_ms\":{},\"max_body\":{},\"batches\":{},\"pace_ms\":{},\"keys\":\"{}\",\"sandbox\":{},\"executors\":[",
            if i == 0 { "" } else { "," },
            json_string(route.name.as_str()),
            route.kind.as_str(),
            json_string(&route.meta.crate_name),
            json_string(&route.meta.version),
            json_string(&route.meta.description),
            route.generation.0,
            route.stats.calls.load(Ordering::Relaxed),
            route.stats.errors.load(Ordering::Relaxed),
            route.restarts,
            route.expected_call.as_secs_f64() * 1000.0,
            optional(route.meta.max_lanes),
            route.meta.max_batch.max(1),
            optional(route.meta.deadline_ms),
            optional(route.meta.max_body),
            route.stats.batches.load(Ordering::Relaxed),
            route.pace.as_millis(),
            view.gates.requirement(route.name.as_str()).as_str(),
            json_string(&route.meta.sandbox),
        );
        for (k, (pid, state, uptime)) in route.executors.iter().enumerate() {
            let _ = write!(
                json,
                "{}{{\"pid\":{pid},\"state\":\"{state}\",\"uptime_s\":{uptime}}}",
                if k == 0 { "" } else { "," }
            );
        }
        json.push_str("]}");
    }
    json.push_str("]}\n");
    json
}

/// A number, or `null` when there is none (the handler sets none: the server's flag applies).
fn optional(value: Option<u64>) -> String {
    value.map_or("null".to_owned(), |n| n.to_string())
}

/// A JSON string literal for `text`.
pub fn json_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    crate::observe::log::escape_into(&mut out, text);
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_strings_are_escaped() {
        assert_eq!(json_string("a\"b\\c\n"), r#""a\"b\\c\u000a""#);
    }

    #[test]
    fn ready_follows_the_queue() {
        let history = std::collections::VecDeque::new();
        let events = crate::observe::events::Events::default();
        let status = StatusView {
            listeners: &[],
            limits: status::Limits {
                max_conns: 8,
                queue_bytes: 1024,
                max_body: 1024,
                deadline: Duration::from_secs(1),
                queue_wait: Duration::from_secs(60),
                header_timeout: Duration::from_secs(1),
                idle_timeout: Duration::from_secs(1),
                min_rate: 0,
                busy_503: false,
                pace: Duration::ZERO,
            },
            queue_history: &history,
            events: &events,
            lanes_busy: 0,
            lanes: 1,
            started: std::time::SystemTime::now(),
        };
        let view = AdminView {
            status,
            routes: &[],
            executors: &ExecutorCounters::default(),
            executors_alive: 2,
            predicted_wait: Duration::ZERO,
            queue_wait: Duration::from_secs(60),
            queued: 4,
            queue_capacity: 4,
            open: 1,
            counters: &Counters::default(),
            light: None,
            starting: &[],
            gates: &Gates::default(),
        };
        assert_eq!(answer("/ready", &view).status, 503);
        let view = AdminView { queued: 3, ..view };
        assert_eq!(
            answer("/ready", &view).status,
            503,
            "3/4 is the high-water mark"
        );
        let view = AdminView { queued: 2, ..view };
        assert_eq!(
            answer("/ready", &view).body_str(),
            Some("ready: 2 of 4 queued, predicted wait 0 ms of 60000\n")
        );
        let slow = AdminView {
            predicted_wait: Duration::from_secs(45),
            ..view
        };
        assert_eq!(
            answer("/ready", &slow).status,
            503,
            "3/4 of --queue-wait in predicted wait is the high-water mark too"
        );
        assert_eq!(answer("/health", &view).status, 200);
        assert_eq!(
            answer("/plugins", &view).body_str(),
            Some("{\"executors_alive\":2,\"predicted_wait_ms\":0,\"mode\":\"crab\",\"plugins\":[]}\n")
        );
        // Jellyfish on red: not ready, whatever the queue; the light is in /-/plugins.
        let red = AdminView {
            light: Some(crate::jellyfish::LightView {
                color: Color::Red,
                signals: crate::jellyfish::signals::Signals {
                    cpu_pressure: 0.97,
                    memory_pressure: 0.0,
                    headroom: Some(0.5),
                    headroom_bytes: Some(1 << 30),
                },
                changes: 1,
                lanes: 1,
                batch_max: 1,
                pinned: false,
            }),
            queued: 0,
            ..view
        };
        let not_ready = answer("/ready", &red);
        assert_eq!(not_ready.status, 503);
        assert!(not_ready
            .body_str()
            .is_some_and(|b| b.contains("light is red (CPU pressure 97%")));
        let plugins = answer("/plugins", &red);
        assert!(plugins
            .body_str()
            .is_some_and(|b| b.contains("\"mode\":\"jellyfish\",\"light\":\"red\"")));
        let metrics = answer("/metrics", &red);
        assert!(metrics
            .body_str()
            .is_some_and(|b| b.contains("fiddler_light{light=\"red\"} 1\n")));
        assert_eq!(answer("/nope", &view).status, 404);
        let page = answer("/", &view);
        assert_eq!(
            page.header("content-type"),
            Some("text/html; charset=utf-8")
        );
        assert!(page
            .header("content-security-policy")
            .is_some_and(|csp| csp.starts_with("default-src 'none'")));
        let snapshot = answer("/status", &view);
        let json = snapshot.body_str().unwrap_or_default();
        assert!(json.starts_with("{\"version\":"), "{json}");
        assert!(json.contains("\"queued\":2,\"queue_capacity\":4"), "{json}");
        assert!(json.ends_with("\"routes\":[],\"events\":[]}\n"), "{json}");
    }
}
