//! The admin routes under `/-/`, answered by intake itself without entering the queue, so they
//! answer while the lane is busy: `/-/health`, `/-/ready`, `/-/plugins`.

use std::fmt::Write;
use std::sync::atomic::Ordering;
use std::time::UNIX_EPOCH;

use plugin_api::Response;

use crate::lane::text;
use crate::metrics::{self, Counters, Gauges};
use crate::registry::RouteInfo;

/// What the admin routes may read of intake's state.
pub struct AdminView<'a> {
    /// The routes last published by a lane.
    pub routes: &'a [RouteInfo],
    /// Plugin libraries mapped into the process so far (never unloaded).
    pub libraries_mapped: usize,
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
                libraries_mapped: view.libraries_mapped,
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

/// `{"libraries_mapped":N,"plugins":[{"route":..,"crate":..,"version":..,"description":..,
/// "generation":..,"loaded_at":..,"calls":..,"errors":..}]}`
fn plugins_json(view: &AdminView<'_>) -> String {
    let mut json = format!(
        "{{\"libraries_mapped\":{},\"plugins\":[",
        view.libraries_mapped
    );
    for (i, route) in view.routes.iter().enumerate() {
        let loaded_at = route
            .loaded_at
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let _ = write!(
            json,
            "{}{{\"route\":{},\"crate\":{},\"version\":{},\"description\":{},\"generation\":{},\"loaded_at\":{loaded_at},\"calls\":{},\"errors\":{}}}",
            if i == 0 { "" } else { "," },
            json_string(route.name.as_str()),
            json_string(&route.crate_name),
            json_string(&route.version),
            json_string(&route.description),
            route.generation.0,
            route.stats.calls.load(Ordering::Relaxed),
            route.stats.errors.load(Ordering::Relaxed),
        );
    }
    json.push_str("]}\n");
    json
}

/// A JSON string literal for `text`.
fn json_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    crate::log::escape_into(&mut out, text);
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
            libraries_mapped: 2,
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
            Some("{\"libraries_mapped\":2,\"plugins\":[]}\n")
        );
        assert_eq!(answer("/nope", &view).status, 404);
    }
}
