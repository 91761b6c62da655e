//! The admin routes under `/-/`, answered by intake itself without entering the queue, so they
//! answer while every lane is busy: `/-/health`, `/-/ready`, `/-/plugins`.

use std::fmt::Write;
use std::sync::atomic::Ordering;
use std::time::UNIX_EPOCH;

use plugin_api::Response;

use crate::exec::pool::RouteInfo;
use crate::exec::stats::ExecutorCounters;
use crate::http::response::text;
use crate::observe::metrics::{self, Counters, Gauges};

/// What the admin routes may read of intake's state.
pub struct AdminView<'a> {
    /// The routes served now, with their executors.
    pub routes: &'a [RouteInfo],
    /// Executors started and ended.
    pub executors: &'a ExecutorCounters,
    /// Executors alive now.
    pub executors_alive: usize,
    /// Requests waiting in the queue.
    pub queued: usize,
    /// The queue's capacity.
    pub queue_capacity: usize,
    /// Open connections.
    pub open: usize,
    /// Intake's counters.
    pub counters: &'a Counters,
}

/// Answers `GET /-/<rest>`.
pub fn answer(rest: &str, view: &AdminView<'_>) -> Response {
    match rest {
        "/health" => text(200, "ok\n"),
        // Not ready above the queue's high-water mark (three quarters), so a load balancer
        // sends traffic elsewhere before requests have to wait for room.
        "/ready" if view.queued * 4 >= view.queue_capacity * 3 => text(
            503,
            &format!("busy: {} of {} queued\n", view.queued, view.queue_capacity),
        ),
        "/ready" => text(
            200,
            &format!("ready: {} of {} queued\n", view.queued, view.queue_capacity),
        ),
        "/plugins" => Response::json(plugins_json(view)),
        "/metrics" => {
            let gauges = Gauges {
                open: view.open,
                queued: view.queued,
                executors: view.executors,
                executors_alive: view.executors_alive,
                routes: view.routes,
            };
            Response::status(200)
                .with_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
                .with_body(metrics::render(view.counters, &gauges))
        }
        _ => text(
            404,
            "admin routes: /-/health /-/ready /-/plugins /-/metrics\n",
        ),
    }
}

/// `{"executors_alive":N,"plugins":[{"route":..,"kind":..,"crate":..,"version":..,
/// "description":..,"generation":..,"loaded_at":..,"calls":..,"errors":..,"restarts":..,
/// "executors":[{"pid":..,"state":..,"uptime_s":..}]}]}`
fn plugins_json(view: &AdminView<'_>) -> String {
    let mut json = format!(
        "{{\"executors_alive\":{},\"plugins\":[",
        view.executors_alive
    );
    for (i, route) in view.routes.iter().enumerate() {
        let loaded_at = route
            .loaded_at
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let _ = write!(
            json,
            "{}{{\"route\":{},\"kind\":\"{}\",\"crate\":{},\"version\":{},\"description\":{},\"generation\":{},\"loaded_at\":{loaded_at},\"calls\":{},\"errors\":{},\"restarts\":{},\"executors\":[",
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

/// A JSON string literal for `text`.
fn json_string(text: &str) -> String {
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
        let view = AdminView {
            routes: &[],
            executors: &ExecutorCounters::default(),
            executors_alive: 2,
            queued: 4,
            queue_capacity: 4,
            open: 1,
            counters: &Counters::default(),
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
            Some("ready: 2 of 4 queued\n")
        );
        assert_eq!(answer("/health", &view).status, 200);
        assert_eq!(
            answer("/plugins", &view).body_str(),
            Some("{\"executors_alive\":2,\"plugins\":[]}\n")
        );
        assert_eq!(answer("/nope", &view).status, 404);
    }
}
