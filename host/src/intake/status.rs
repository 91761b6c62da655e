//! The operator's status page: `/-/` (self-contained HTML, CSS and a little JavaScript, under
//! a strict Content-Security-Policy) and the JSON snapshot it refreshes from, `/-/status`.
//! Rendered on request from counters that exist anyway: nobody looking costs nothing.

use std::collections::VecDeque;
use std::fmt::Write;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use plugin_api::Response;

use crate::intake::admin::{json_string, AdminView};
use crate::net::listener::Scheme;
use crate::observe::events::Events;

const PAGE: &str = include_str!("status/page.html");
const STYLE: &str = include_str!("status/status.css");
const SCRIPT: &str = include_str!("status/status.js");
/// Only this origin's script, style and JSON; nothing inline, no frames, no forms.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
                   img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";
/// Queue-depth samples kept for the chart: one a second, five minutes.
pub const HISTORY: usize = 300;

/// The limits in force, as the page lists them.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// `--max-conns`.
    pub max_conns: usize,
    /// `--queue-bytes`.
    pub queue_bytes: usize,
    /// `--max-body`.
    pub max_body: usize,
    /// `--deadline`.
    pub deadline: Duration,
    /// `--queue-wait`.
    pub queue_wait: Duration,
    /// `--header-timeout`.
    pub header_timeout: Duration,
    /// `--idle-timeout`.
    pub idle_timeout: Duration,
    /// `--min-rate`.
    pub min_rate: usize,
    /// `--busy`.
    pub busy_503: bool,
    /// `--pace`.
    pub pace: Duration,
}

/// What the status snapshot reads beyond the other admin routes.
#[derive(Clone, Copy)]
pub struct StatusView<'a> {
    /// Every listener's scheme and address.
    pub listeners: &'a [(Scheme, SocketAddr)],
    /// The limits in force.
    pub limits: Limits,
    /// Queue depth, one sample a second, oldest first.
    pub queue_history: &'a VecDeque<u16>,
    /// The last events of versions and executors.
    pub events: &'a Events,
    /// Executors with a call in flight, and how many may be.
    pub lanes_busy: usize,
    /// `--lanes`.
    pub lanes: usize,
    /// When this worker started.
    pub started: SystemTime,
}

/// One of the page's assets, with the headers that keep it to itself.
pub fn asset(rest: &str) -> Option<Response> {
    let (body, kind) = match rest {
        "/" | "" => (PAGE, "text/html; charset=utf-8"),
        "/status.css" => (STYLE, "text/css; charset=utf-8"),
        "/status.js" => (SCRIPT, "text/javascript; charset=utf-8"),
        _ => return None,
    };
    Some(
        Response::status(200)
            .with_header("Content-Type", kind)
            .with_header("Content-Security-Policy", CSP)
            .with_header("X-Content-Type-Options", "nosniff")
            .with_header("Referrer-Policy", "no-referrer")
            .with_header("Cache-Control", "no-store")
            .with_body(body),
    )
}

fn epoch_seconds(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs()
}

fn millis_or_null(seconds: Option<f64>) -> String {
    seconds.map_or("null".to_owned(), |s| format!("{:.3}", s * 1000.0))
}

/// The JSON snapshot `/-/status` answers.
pub fn snapshot(view: &AdminView<'_>, status: &StatusView<'_>) -> String {
    let mut json = String::with_capacity(4096);
    let limits = status.limits;
    let uptime = SystemTime::now()
        .duration_since(status.started)
        .unwrap_or_default()
        .as_secs();
    let _ = write!(
        json,
        "{{\"version\":{},\"uptime_s\":{uptime},{}",
        json_string(env!("CARGO_PKG_VERSION")),
        crate::jellyfish::mode_json(view.light.as_ref()),
    );
    json.push_str("\"listeners\":[");
    for (i, (scheme, addr)) in status.listeners.iter().enumerate() {
        let scheme = match scheme {
            Scheme::Http => "http",
            Scheme::Https => "https",
            Scheme::Admin => "admin",
            Scheme::Agent => "agent",
        };
        let _ = write!(
            json,
            "{}{{\"scheme\":\"{scheme}\",\"addr\":\"{addr}\"}}",
            if i == 0 { "" } else { "," }
        );
    }
    let _ = write!(
        json,
        "],\"limits\":{{\"max_conns\":{},\"queue\":{},\"queue_bytes\":{},\"max_body\":{},\
         \"lanes\":{},\"deadline_ms\":{},\"queue_wait_ms\":{},\"header_timeout_ms\":{},\
         \"idle_timeout_ms\":{},\"min_rate\":{},\"busy\":\"{}\",\"pace_ms\":{}}}",
        limits.max_conns,
        view.queue_capacity,
        limits.queue_bytes,
        limits.max_body,
        status.lanes,
        limits.deadline.as_millis(),
        limits.queue_wait.as_millis(),
        limits.header_timeout.as_millis(),
        limits.idle_timeout.as_millis(),
        limits.min_rate,
        if limits.busy_503 { "503" } else { "silent" },
        limits.pace.as_millis(),
    );
    let responses = &view.counters.responses;
    let _ = write!(
        json,
        ",\"connections_open\":{},\"queued\":{},\"queue_capacity\":{},\"predicted_wait_ms\":{},\
         \"lanes_busy\":{},\"lanes\":{},\"executors_alive\":{},\"responses\":{{\"2xx\":{},\
         \"3xx\":{},\"4xx\":{},\"5xx\":{}}},\"queue_history\":[",
        view.open,
        view.queued,
        view.queue_capacity,
        view.predicted_wait.as_millis(),
        status.lanes_busy,
        status.lanes,
        view.executors_alive,
        responses[2],
        responses[3],
        responses[4],
        responses[5],
    );
    for (i, depth) in status.queue_history.iter().enumerate() {
        let _ = write!(json, "{}{depth}", if i == 0 { "" } else { "," });
    }
    json.push_str("],\"routes\":[");
    for (i, route) in view.routes.iter().enumerate() {
        let histogram = view.counters.route_histogram(route.name.as_str());
        let (state, pid, uptime) = match route.executors.first() {
            Some((pid, state, uptime)) => (*state, pid.to_string(), uptime.to_string()),
            None => ("none", "null".to_owned(), "null".to_owned()),
        };
        let _ = write!(
            json,
            "{}{{\"route\":{},\"kind\":\"{}\",\"version\":{},\"generation\":{},\"state\":\"{state}\",\
             \"pid\":{pid},\"uptime_s\":{uptime},\"executors\":{},\"calls\":{},\"errors\":{},\
             \"restarts\":{},\"p50_ms\":{},\"p99_ms\":{},\"pace_ms\":{},\"keys\":\"{}\",\
             \"sandbox\":{}}}",
            if i == 0 { "" } else { "," },
            json_string(route.name.as_str()),
            route.kind.as_str(),
            json_string(&route.meta.version),
            route.generation.0,
            route.executors.len(),
            route.stats.calls.load(Ordering::Relaxed),
            route.stats.errors.load(Ordering::Relaxed),
            route.restarts,
            millis_or_null(histogram.and_then(|h| h.quantile(0.5))),
            millis_or_null(histogram.and_then(|h| h.quantile(0.99))),
            route.pace.as_millis(),
            view.gates.requirement(route.name.as_str()).as_str(),
            json_string(&route.meta.sandbox),
        );
    }
    json.push_str("],\"events\":[");
    for (i, event) in status.events.iter().enumerate() {
        let _ = write!(
            json,
            "{}{{\"at\":{},\"kind\":\"{}\",\"route\":{},\"text\":{}}}",
            if i == 0 { "" } else { "," },
            epoch_seconds(event.at),
            event.kind.as_str(),
            json_string(&event.route),
            json_string(&event.text),
        );
    }
    json.push_str("]}\n");
    json
}
