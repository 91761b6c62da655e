//! Which admin routes reveal the server's internals, and who may see them. `/-/health`,
//! `/-/ready` and `/-/metrics` are for probes and Prometheus, wherever the admin routes are
//! served. The status page (`/-/` and its assets), `/-/status` and `/-/plugins` list routes,
//! versions, executor pids, events and limits: they are served on the `--admin` listener, or,
//! without one, only to loopback clients. Anyone else gets the 404 an unknown route gets, so
//! a scan learns nothing about what is there.

use std::net::IpAddr;

/// The admin routes (the part after `/-`) that any client that reaches them may read.
const PUBLIC: &[&str] = &["/health", "/ready", "/metrics"];

/// Whether the admin route `rest` (after `/-`) reveals internals. Every route but the probes'
/// does, unknown ones included: a route added later is private until it is listed here.
pub fn reveals_internals(rest: &str) -> bool {
    !PUBLIC.contains(&rest)
}

/// Whether a client at `peer` may see the internals on a listener that is not `--admin`:
/// loopback only (127.0.0.0/8, `::1`, and `::ffff:127.x.y.z` from a dual-stack socket).
pub fn may_see_internals(peer: IpAddr) -> bool {
    match peer {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_clients_see_internals() {
        let table: &[(&str, bool)] = &[
            ("127.0.0.1", true),
            ("127.3.2.1", true),
            ("::1", true),
            ("::ffff:127.0.0.1", true),
            ("::ffff:127.9.9.9", true),
            ("192.0.2.2", false),
            ("10.0.0.1", false),
            ("0.0.0.0", false),
            ("::", false),
            ("::ffff:10.0.0.1", false),
            ("::127.0.0.1", false), // IPv4-compatible, not mapped: not loopback
            ("fe80::1", false),
            ("2001:db8::1", false),
        ];
        for (addr, expected) in table {
            let ip: IpAddr = addr.parse().expect("an address");
            assert_eq!(may_see_internals(ip), *expected, "{addr}");
        }
    }

    #[test]
    fn the_probes_routes_are_public_and_everything_else_is_not() {
        for rest in ["/health", "/ready", "/metrics"] {
            assert!(!reveals_internals(rest), "{rest}");
        }
        for rest in [
            "/",
            "",
            "/status",
            "/plugins",
            "/status.js",
            "/status.css",
            "/nope",
        ] {
            assert!(reveals_internals(rest), "{rest}");
        }
    }
}
