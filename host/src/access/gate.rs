//! Who may call a route: the rule each route follows (its own keys, none, or the server's
//! `--keys`), the table of them intake holds, and the verdict on a request head's
//! `Authorization`. Sans IO: the table is filled from the watcher's updates, and intake asks it
//! as soon as a head is parsed, before the body is read or anything is queued.

use crate::access::keys::KeySet;
use crate::lookup::LookupMap;

/// What a route (or the server-wide default) lets through.
#[derive(Debug, Default)]
pub enum Gate {
    /// Anyone.
    #[default]
    Open,
    /// Requests carrying one of these keys as `Authorization: Bearer KEY`.
    Keys(KeySet),
    /// Nobody: the keys it names could not be read (fail closed, never open).
    Closed,
}

/// Where a route's gate comes from.
#[derive(Debug)]
pub enum Rule {
    /// The server-wide `--keys` (open without it): a route that names no `keys=`.
    Server,
    /// Its own: `keys=FILE` (keys, or closed while the file cannot be read) or `keys=none`
    /// (open, whatever `--keys` says).
    Own(Gate),
}

/// What the watcher tells intake about keys.
#[derive(Debug)]
pub enum Update {
    /// The server-wide `--keys` gate (read again after its file changed).
    Server(Gate),
    /// A route's rule (with a new version, or its key file changed).
    Route(String, Rule),
    /// A route is no longer served: it follows the server's rule again.
    Forget(String),
}

/// The verdict on one request.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Pass it on; with `checked`, a key was checked, and the `Authorization` header is the
    /// server's, not the handler's: it is taken off the request before it goes on.
    Pass {
        /// A key was required and matched.
        checked: bool,
    },
    /// A key is required and none was sent (401).
    NoKey,
    /// A key was sent and is not one of the route's (401, `error="invalid_token"`).
    WrongKey,
    /// More than one `Authorization` field (400, `error="invalid_request"`).
    Ambiguous,
    /// The route's keys cannot be read: nobody passes (503).
    Closed,
}

/// How a route requires keys, as `/-/plugins` and `/-/status` show it (never the keys).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Requirement {
    /// No key needed.
    None,
    /// A key is needed.
    Required,
    /// Its keys cannot be read: closed to everyone.
    Refused,
}

impl Requirement {
    /// Its name in the JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Requirement::None => "none",
            Requirement::Required => "required",
            Requirement::Refused => "refused",
        }
    }
}

/// Every route's rule and the server-wide gate. Routes not listed (not served, or served
/// before their rule arrived) follow the server's. Bounded by the routes the watcher serves.
#[derive(Debug, Default)]
pub struct Gates {
    server: Gate,
    routes: LookupMap<String, Rule>,
}

impl Gates {
    /// Applies a watcher's update.
    pub fn apply(&mut self, update: Update) {
        match update {
            Update::Server(gate) => self.server = gate,
            Update::Route(route, rule) => {
                self.routes.insert(route, rule);
            }
            Update::Forget(route) => {
                self.routes.remove(&route);
            }
        }
    }

    /// The gate `route` is behind.
    fn gate(&self, route: &str) -> &Gate {
        match self.routes.get(route) {
            Some(Rule::Own(gate)) => gate,
            Some(Rule::Server) | None => &self.server,
        }
    }

    /// Whether `route` has a rule of its own or the server's (a route intake knows of).
    pub fn knows(&self, route: &str) -> bool {
        self.routes.contains_key(route)
    }

    /// How `route` requires keys.
    pub fn requirement(&self, route: &str) -> Requirement {
        match self.gate(route) {
            Gate::Open => Requirement::None,
            Gate::Keys(_) => Requirement::Required,
            Gate::Closed => Requirement::Refused,
        }
    }

    /// The verdict on a request for `route` with these header fields.
    pub fn check<'a>(
        &self,
        route: &str,
        headers: impl IntoIterator<Item = (&'a str, &'a [u8])>,
    ) -> Verdict {
        let keys = match self.gate(route) {
            Gate::Open => return Verdict::Pass { checked: false },
            Gate::Closed => return Verdict::Closed,
            Gate::Keys(keys) => keys,
        };
        let mut fields = headers
            .into_iter()
            .filter(|(name, _)| name.eq_ignore_ascii_case("authorization"));
        let Some((_, value)) = fields.next() else {
            return Verdict::NoKey;
        };
        if fields.next().is_some() {
            return Verdict::Ambiguous;
        }
        match bearer(value) {
            None => Verdict::NoKey,
            Some(token) if keys.contains(token) => Verdict::Pass { checked: true },
            Some(_) => Verdict::WrongKey,
        }
    }
}

/// The token of an `Authorization: Bearer TOKEN` value (the scheme's case does not matter,
/// RFC 9110 section 11.1); `None` for another scheme, which carries no key for us.
fn bearer(value: &[u8]) -> Option<&[u8]> {
    let value = value.trim_ascii();
    let (scheme, rest) = value.split_at_checked(6)?;
    if !scheme.eq_ignore_ascii_case(b"bearer") || !rest.starts_with(b" ") {
        return None;
    }
    Some(rest.trim_ascii())
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "a-route-key-of-some-length";

    fn keyed() -> Gate {
        let (keys, _) = KeySet::parse(KEY.as_bytes());
        Gate::Keys(keys)
    }

    fn check(gates: &Gates, route: &str, headers: &[(&str, &str)]) -> Verdict {
        gates.check(route, headers.iter().map(|(n, v)| (*n, v.as_bytes())))
    }

    #[test]
    fn verdicts_as_a_table() {
        let mut gates = Gates::default();
        gates.apply(Update::Route("keyed".into(), Rule::Own(keyed())));
        gates.apply(Update::Route("closed".into(), Rule::Own(Gate::Closed)));
        let bearer = format!("Bearer {KEY}");
        let lower = format!("bearer  {KEY} ");
        type Row<'a> = (&'a str, &'a [(&'a str, &'a str)], Verdict);
        let table: &[Row] = &[
            ("open", &[], Verdict::Pass { checked: false }),
            ("keyed", &[], Verdict::NoKey),
            (
                "keyed",
                &[("Authorization", &bearer)],
                Verdict::Pass { checked: true },
            ),
            (
                "keyed",
                &[("authorization", &lower)],
                Verdict::Pass { checked: true },
            ),
            (
                "keyed",
                &[("Authorization", "Bearer nope-nope-nope-nope")],
                Verdict::WrongKey,
            ),
            (
                "keyed",
                &[("Authorization", "Basic dXNlcjpwYXNz")],
                Verdict::NoKey,
            ),
            ("keyed", &[("Authorization", "Bearer")], Verdict::NoKey),
            ("keyed", &[("Authorization", KEY)], Verdict::NoKey),
            (
                "keyed",
                &[("Authorization", &bearer), ("Authorization", &bearer)],
                Verdict::Ambiguous,
            ),
            ("closed", &[("Authorization", &bearer)], Verdict::Closed),
        ];
        for (route, headers, verdict) in table {
            assert_eq!(
                &check(&gates, route, headers),
                verdict,
                "{route} {headers:?}"
            );
        }
    }

    #[test]
    fn the_server_rule_applies_unless_a_route_opts_out_explicitly() {
        let mut gates = Gates::default();
        gates.apply(Update::Server(keyed()));
        gates.apply(Update::Route("follows".into(), Rule::Server));
        gates.apply(Update::Route("optout".into(), Rule::Own(Gate::Open)));
        assert_eq!(check(&gates, "follows", &[]), Verdict::NoKey);
        assert_eq!(
            check(&gates, "unknown", &[]),
            Verdict::NoKey,
            "no route is guessed open"
        );
        assert_eq!(
            check(&gates, "optout", &[]),
            Verdict::Pass { checked: false }
        );
        assert_eq!(gates.requirement("follows"), Requirement::Required);
        assert_eq!(gates.requirement("optout"), Requirement::None);
        gates.apply(Update::Server(Gate::Closed));
        assert_eq!(gates.requirement("follows"), Requirement::Refused);
        gates.apply(Update::Forget("optout".into()));
        assert!(!gates.knows("optout"));
        assert_eq!(
            check(&gates, "optout", &[]),
            Verdict::Closed,
            "forgotten: the server's"
        );
    }
}
