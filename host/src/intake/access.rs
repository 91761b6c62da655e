//! The gates at the head: a route's keys are checked as soon as its request head is parsed,
//! before a byte of the body is read, before the body's bytes are reserved and before anything
//! is queued or an executor is involved. A request turned away is answered here (401 with
//! `WWW-Authenticate`, 400 for two `Authorization` fields, 503 for a route whose keys cannot
//! be read); when its body was not read the connection closes after the answer, since the
//! unread body cannot be skipped safely. The gates themselves, and the comparison, are
//! `access`'s; who may see the admin routes' internals is decided in `requests`.

use super::requests::split_route;
use super::*;
use crate::access::gate::{Requirement, Update, Verdict};
use crate::ids::PluginName;

/// The realm named for a route that is not a valid route name (its path is the client's).
const ANY_REALM: &str = "fiddler-crab";

impl Intake {
    /// Applies the watcher's word on who may call what.
    pub fn apply_access(&mut self, update: Update) {
        self.gates.apply(update);
    }

    /// Whether the request whose head is `head`, on the connection in `slot`, may go on. If
    /// not, it is answered here; with `body_unread` (a body follows the head and was not read)
    /// the connection closes after the answer.
    pub(super) fn passes_gate(&mut self, slot: usize, head: &Head, body_unread: bool) -> bool {
        let (route, _) = split_route(&head.path);
        let Some(conn) = self.conns.get(slot).and_then(Option::as_ref) else {
            return false;
        };
        // The admin routes have their own rule (who sees internals); the admin listener
        // serves nothing else.
        if route == "-" || conn.kind == Scheme::Admin {
            return true;
        }
        let fields = head.headers.iter().map(|(n, v)| (n.as_str(), v.as_slice()));
        let verdict = self.gates.check(route, fields);
        // Only for a refusal: a request let through allocates nothing here.
        let realm = || PluginName::parse(route).map_or(ANY_REALM.to_owned(), |r| r.to_string());
        let response = match verdict {
            Verdict::Pass { .. } => return true,
            Verdict::NoKey => text(
                401,
                "401 Unauthorized: this route needs a key (Authorization: Bearer KEY)\n",
            )
            .with_header("WWW-Authenticate", &format!("Bearer realm=\"{}\"", realm())),
            Verdict::WrongKey => text(401, "401 Unauthorized: that key does not open this route\n")
                .with_header(
                    "WWW-Authenticate",
                    &format!("Bearer realm=\"{}\", error=\"invalid_token\"", realm()),
                ),
            Verdict::Ambiguous => text(400, "400 Bad Request: more than one Authorization field\n")
                .with_header(
                    "WWW-Authenticate",
                    &format!("Bearer realm=\"{}\", error=\"invalid_request\"", realm()),
                ),
            Verdict::Closed => text(503, "503 Service Unavailable: this route is closed\n"),
        };
        let status = response.status;
        self.counters.refuse(status);
        if status == 401 && self.gates.knows(route) {
            self.counters.unauthorized_for(route);
        }
        let shape = ReplyShape {
            keep_alive: !body_unread && head.keep_alive,
            ..ReplyShape::of(head)
        };
        if let Some(conn) = self.conns.get_mut(slot).and_then(Option::as_mut) {
            // Its body (if any) is neither reserved nor read: nothing to give back.
            conn.phase = Phase::ExpectHead;
        }
        self.respond(slot, response, shape);
        false
    }

    /// Takes the `Authorization` field off a request whose key the server checked: the key
    /// is the server's business, not the handler's (nor its log lines', nor a crash file's).
    pub(super) fn strip_checked_key(&self, head: &mut Head) {
        let (route, _) = split_route(&head.path);
        if route != "-" && self.gates.requirement(route) == Requirement::Required {
            head.headers
                .retain(|(name, _)| !name.eq_ignore_ascii_case("authorization"));
        }
    }
}
