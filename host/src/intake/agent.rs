//! The load-balancer agent (`--agent ADDR`): a plain-TCP listener that answers every connection
//! with one line in HAProxy's `agent-check` language and closes it. The line says more than
//! `/-/ready`'s up or down: `up 60%` lowers this instance's weight as its queue and predicted
//! wait grow, so the balancer sends it less before it is full; `up 0%` (where `/-/ready` would
//! answer 503: the queue past its high-water mark, the jellyfish's light red, the first
//! versions still starting) stops new requests without marking it down (HAProxy shows DRAIN).
//!
//! Never the words `drain` or `ready`: they set the server's administrative state, the one an
//! operator sets with `set server ... state drain` before stopping an instance, and the agent's
//! next `ready` would cancel that drain within one agent interval. A weight is a separate
//! setting, so the two never fight.
//!
//! This file owns the line (sans-IO, from what intake already knows) and the one write that
//! answers a connection; intake owns the listener and calls [`answer`] from its accept loop.
//! Nothing is read from the peer: HAProxy's `agent-send` is not needed.

use std::io::Write;
use std::time::Duration;

use mio::net::TcpStream;

/// Agent connections answered in one pass of the accept loop; the rest wait for the next pass
/// (the sweep comes back within 100 ms), so a flood on the agent port cannot hold the loop.
pub const BURST: usize = 64;

/// What the line is computed from: the same figures `/-/ready` uses.
#[derive(Clone, Copy, Debug)]
pub struct Load {
    /// Requests waiting to start.
    pub queued: usize,
    /// The queue's capacity (`--queue`).
    pub capacity: usize,
    /// How long a request queued now is expected to wait.
    pub predicted_wait: Duration,
    /// The longest a request may wait (`--queue-wait`).
    pub queue_wait: Duration,
    /// `/-/ready` says 503 for a reason beyond the queue: the light is red, or versions found
    /// at start are still starting.
    pub unready: bool,
}

/// The agent's answer, one line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answer {
    /// Send it new requests, at this share of its configured weight (1..=100).
    Weight(u8),
    /// Send it no new requests (what `/-/ready` would answer 503 for): weight 0.
    Drain,
}

impl Answer {
    /// The answer for `load`. The load is the larger of the two fractions `/-/ready` compares
    /// with three quarters (queued of `--queue`, predicted wait of `--queue-wait`); the weight
    /// falls linearly from 100% at no load to 1% just below the mark, and at the mark the
    /// instance drains.
    pub fn for_load(load: &Load) -> Answer {
        let by_count = load.queued as f64 / (load.capacity.max(1) as f64 * 0.75);
        let by_wait = load.predicted_wait.as_secs_f64()
            / (load.queue_wait.as_secs_f64() * 0.75).max(f64::MIN_POSITIVE);
        let fraction = by_count.max(by_wait);
        if load.unready || fraction >= 1.0 {
            return Answer::Drain;
        }
        // In 1..=100 by the clamp; the cast cannot truncate.
        Answer::Weight((100.0 * (1.0 - fraction)).round().clamp(1.0, 100.0) as u8)
    }

    /// Writes the line (with its newline) into `out`; returns its length. `up` only restores
    /// what health checks agree with (the agent never says `down`).
    pub fn write(self, out: &mut [u8; 32]) -> usize {
        let mut free = &mut out[..];
        let written = match self {
            Answer::Weight(percent) => writeln!(free, "up {percent}%"),
            Answer::Drain => writeln!(free, "up 0%"),
        };
        let left = free.len();
        match written {
            Ok(()) => out.len() - left,
            Err(_) => 0,
        }
    }
}

/// Answers one agent connection and closes it, best effort and without blocking: the line is
/// a few bytes on a fresh socket, so one write takes it; if it cannot, the balancer treats the
/// silence as no news (an agent that does not answer changes nothing).
pub fn answer(mut stream: TcpStream, answer: Answer) {
    let mut line = [0u8; 32];
    let len = answer.write(&mut line);
    let _ = stream.write(&line[..len]);
    let _ = stream.shutdown(std::net::Shutdown::Write);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(queued: usize, wait_ms: u64) -> Load {
        Load {
            queued,
            capacity: 16,
            predicted_wait: Duration::from_millis(wait_ms),
            queue_wait: Duration::from_millis(1000),
            unready: false,
        }
    }

    #[test]
    fn the_weight_falls_with_the_queue_and_the_predicted_wait() {
        // (queued of 16, predicted wait ms of 1000) -> answer
        let cases = [
            ((0, 0), Answer::Weight(100)),
            ((3, 0), Answer::Weight(75)),
            ((0, 375), Answer::Weight(50)),
            ((3, 600), Answer::Weight(20)), // the larger of the two
            ((0, 749), Answer::Weight(1)),
            ((0, 750), Answer::Drain), // where /-/ready turns 503
            ((12, 0), Answer::Drain),
            ((0, 5000), Answer::Drain),
        ];
        for ((queued, wait), expected) in cases {
            assert_eq!(
                Answer::for_load(&load(queued, wait)),
                expected,
                "{queued} queued, {wait} ms"
            );
        }
    }

    #[test]
    fn an_unready_instance_drains_even_when_idle() {
        let idle = Load {
            unready: true,
            ..load(0, 0)
        };
        assert_eq!(Answer::for_load(&idle), Answer::Drain);
    }

    #[test]
    fn a_zero_queue_wait_or_capacity_does_not_divide_by_zero() {
        let odd = Load {
            capacity: 0,
            queue_wait: Duration::ZERO,
            ..load(0, 0)
        };
        assert_eq!(Answer::for_load(&odd), Answer::Weight(100));
    }

    #[test]
    fn the_lines_are_haproxy_agent_words() {
        let mut out = [0u8; 32];
        let len = Answer::Weight(100).write(&mut out);
        assert_eq!(&out[..len], b"up 100%\n");
        let len = Answer::Weight(7).write(&mut out);
        assert_eq!(&out[..len], b"up 7%\n");
        let len = Answer::Drain.write(&mut out);
        assert_eq!(&out[..len], b"up 0%\n");
    }
}
