//! Who gets a connection slot: the connection budget, the per-client-IP cap, and what to do
//! with the ones that do not fit.
//!
//! Intake asks [`Admission::has_room`] before each `accept`; while there is no room it does not
//! accept, and the kernel's backlog absorbs the excess. The per-IP cap can only be checked after
//! `accept` (the address comes with the socket): a connection over it is closed at once, without
//! a byte. With `--busy 503`, connections that find no room are accepted and told `503` instead
//! (for deployments behind a load balancer that should retry elsewhere).

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::IpAddr;

use mio::net::TcpStream;

/// What happens to a connection that finds no room.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BusyMode {
    /// Not accepted: the kernel backlog holds it, then drops it. No byte, no log, no work.
    Silent,
    /// Accepted, answered `503` with `Retry-After`, closed (plain HTTP only; on HTTPS it is
    /// closed without a byte, since answering would cost a handshake).
    Answer503,
}

/// Connection counts. Invariant: `open` and the sum of `by_ip` count the same connections
/// (when the per-IP cap is on).
pub struct Admission {
    max_conns: usize,
    /// The budget in force: `max_conns`, or a share of it while the jellyfish's light is red.
    admit: usize,
    per_ip: Option<u32>,
    by_ip: HashMap<IpAddr, u32>,
    open: usize,
    /// The mode for connections beyond the budget.
    pub busy: BusyMode,
}

impl Admission {
    /// Room for `max_conns` connections, at most `per_ip` from one address.
    pub fn new(max_conns: usize, per_ip: Option<u32>, busy: BusyMode) -> Admission {
        Admission {
            max_conns,
            admit: max_conns,
            per_ip,
            by_ip: HashMap::new(),
            open: 0,
            busy,
        }
    }

    /// Open connections.
    pub fn open(&self) -> usize {
        self.open
    }

    /// The connection budget (`--max-conns`).
    pub fn max_conns(&self) -> usize {
        self.max_conns
    }

    /// Whether another connection fits the budget in force.
    pub fn has_room(&self) -> bool {
        self.open < self.admit
    }

    /// Admits `1/share` of the budget from now on (1: all of it).
    pub fn set_share(&mut self, share: usize) {
        self.admit = (self.max_conns / share.max(1)).max(1);
    }

    /// Whether open connections are above the high-water mark (three quarters of the budget):
    /// then deadlines shrink so slow and idle clients make room first.
    pub fn under_pressure(&self) -> bool {
        self.open * 4 >= self.max_conns * 3
    }

    /// Counts a new connection from `ip`; `false` (and nothing counted) when its address is at
    /// the per-IP cap.
    pub fn enter(&mut self, ip: IpAddr) -> bool {
        if let Some(cap) = self.per_ip {
            let count = self.by_ip.entry(ip).or_insert(0);
            if *count >= cap {
                return false;
            }
            *count += 1;
        }
        self.open += 1;
        true
    }

    /// Forgets a connection counted by `enter`.
    pub fn leave(&mut self, ip: IpAddr) {
        self.open = self.open.saturating_sub(1);
        if self.per_ip.is_some() {
            if let Some(count) = self.by_ip.get_mut(&ip) {
                *count -= 1;
                if *count == 0 {
                    self.by_ip.remove(&ip);
                }
            }
        }
    }
}

/// Answers a connection there is no room for with `503` and `Retry-After` (the predicted wait,
/// in whole seconds) and closes it, best effort and without blocking. The request bytes already received are read first, so the close is a FIN and not a
/// reset that could destroy the answer before the client reads it.
pub fn answer_busy(mut stream: TcpStream, retry_after_secs: u64) {
    let mut scratch = [0u8; 4096];
    let _ = stream.read(&mut scratch);
    // Written into a stack buffer: shedding allocates nothing.
    let mut reply = [0u8; 192];
    let mut free = &mut reply[..];
    let written = write!(
        free,
        "HTTP/1.1 503 Service Unavailable\r\nRetry-After: {retry_after_secs}\r\n\
         Content-Type: text/plain\r\nContent-Length: 5\r\nConnection: close\r\n\r\nbusy\n"
    );
    let left = free.len();
    let len = reply.len() - left;
    if written.is_ok() {
        let _ = stream.write(&reply[..len]);
    }
    let _ = stream.shutdown(std::net::Shutdown::Write);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_per_ip_cap_counts_each_address() {
        let a: IpAddr = [127, 0, 0, 1].into();
        let b: IpAddr = [127, 0, 0, 2].into();
        let mut admission = Admission::new(4, Some(2), BusyMode::Silent);
        assert!(admission.enter(a) && admission.enter(a));
        assert!(!admission.enter(a), "a third from one address");
        assert!(admission.enter(b));
        assert_eq!(admission.open(), 3);
        assert!(admission.under_pressure());
        admission.leave(a);
        assert!(admission.enter(a), "room again once one left");
        assert!(admission.enter(b));
        assert!(!admission.has_room());
    }

    #[test]
    fn without_a_cap_only_the_budget_counts() {
        let a: IpAddr = [127, 0, 0, 1].into();
        let mut admission = Admission::new(2, None, BusyMode::Silent);
        assert!(admission.enter(a) && admission.enter(a));
        assert!(!admission.has_room());
        admission.leave(a);
        admission.leave(a);
        assert_eq!(admission.open(), 0);
        assert!(!admission.under_pressure());
    }
}
