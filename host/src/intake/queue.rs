//! The bounded FIFO of complete requests waiting for a lane, and the byte budget for bodies.
//!
//! Intake owns both (no lock): it admits a request only when the queue has room, and reads a
//! body only while the budget allows. A request whose client has gone, or that waited too long,
//! is dropped before any executor runs it. Jobs leave in order, except that a job whose route
//! is (re)starting its executor is passed by jobs for other routes; a job an executor took but
//! never started (it died) comes back to the front.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::exec::job::Job;

/// The queue refused a job: it holds its capacity already.
#[derive(Debug, PartialEq, Eq)]
pub struct Full;

/// Requests waiting for a lane, oldest first.
pub struct Queue {
    jobs: VecDeque<Job>,
    /// Invariant: the sum of the jobs' `expected` call times.
    work: Duration,
    /// Invariant: `jobs.len() <= capacity`, plus jobs handed back by executors that died
    /// (at most lanes x the pipeline depth).
    capacity: usize,
}

impl Queue {
    /// An empty queue holding at most `capacity` jobs.
    pub fn new(capacity: usize) -> Queue {
        Queue {
            jobs: VecDeque::with_capacity(capacity.min(1024)),
            work: Duration::ZERO,
            capacity,
        }
    }

    /// Whether another job would be refused.
    pub fn is_full(&self) -> bool {
        self.jobs.len() >= self.capacity
    }

    /// How many jobs wait.
    pub fn len(&self) -> usize {
        self.jobs.len()
    }

    /// The most jobs it holds.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Whether no job waits.
    pub fn is_empty(&self) -> bool {
        self.jobs.is_empty()
    }

    /// Appends a job, or drops it and says `Full`.
    pub fn push(&mut self, job: Job) -> Result<(), Full> {
        if self.is_full() {
            return Err(Full);
        }
        self.work += job.expected;
        self.jobs.push_back(job);
        Ok(())
    }

    /// The time the queued jobs are expected to take to run, one after another.
    pub fn work(&self) -> Duration {
        self.work
    }

    /// The job at `index` (0 is the oldest).
    pub fn get(&self, index: usize) -> Option<&Job> {
        self.jobs.get(index)
    }

    /// Takes the job at `index` out.
    pub fn remove(&mut self, index: usize) -> Option<Job> {
        let job = self.jobs.remove(index)?;
        self.work = self.work.saturating_sub(job.expected);
        Some(job)
    }

    /// Puts a job handed back by an executor that died before starting it at the front.
    pub fn push_front(&mut self, job: Job) {
        self.work += job.expected;
        self.jobs.push_front(job);
    }

    /// Takes the oldest job if it has waited longer than `max_wait` (jobs behind it are newer).
    pub fn pop_expired(&mut self, now: Instant, max_wait: Duration) -> Option<Job> {
        let oldest = self.jobs.front()?;
        if now.duration_since(oldest.enqueued_at) > max_wait {
            self.remove(0)
        } else {
            None
        }
    }
}

/// The request-body bytes held at once: bodies queued or being read (`held`), and the bytes
/// promised to bodies still arriving (`reserved`). A body is reserved whole before a byte of
/// it is read, so an admitted upload always has room to finish; admission and backpressure
/// look only at what is held, so uploads still on their way (a slow one, say) never keep the
/// server from reading requests without a body.
#[derive(Debug)]
pub struct ByteBudget {
    /// Invariant: `held + reserved <= limit`, plus bodies handed back by executors that died
    /// (small: only small bodies are written ahead).
    held: usize,
    reserved: usize,
    limit: usize,
}

impl ByteBudget {
    /// A budget of `limit` bytes, none held.
    pub fn new(limit: usize) -> ByteBudget {
        ByteBudget {
            held: 0,
            reserved: 0,
            limit,
        }
    }

    /// Reserves `n` bytes for a body about to be read, if they fit beside everything held and
    /// reserved.
    pub fn reserve(&mut self, n: usize) -> bool {
        match self
            .held
            .checked_add(self.reserved)
            .and_then(|t| t.checked_add(n))
        {
            Some(total) if total <= self.limit => {
                self.reserved += n;
                true
            }
            _ => false,
        }
    }

    /// `n` reserved bytes arrived: they are held now.
    pub fn arrived(&mut self, n: usize) {
        debug_assert!(n <= self.reserved, "more arrived than was reserved");
        let n = n.min(self.reserved);
        self.reserved -= n;
        self.held += n;
    }

    /// Gives back `n` reserved bytes that will not arrive (a body that ended shorter than its
    /// reservation, a connection that went).
    pub fn unreserve(&mut self, n: usize) {
        debug_assert!(n <= self.reserved, "unreserved more than was reserved");
        self.reserved = self.reserved.saturating_sub(n);
    }

    /// Takes `n` bytes back for a job returned to the queue, even past the limit (they were
    /// held all along, outside the budget, by the executor's call).
    pub fn take_back(&mut self, n: usize) {
        self.held = self.held.saturating_add(n);
    }

    /// Gives back `n` bytes held.
    pub fn release(&mut self, n: usize) {
        debug_assert!(n <= self.held, "released more than was taken");
        self.held = self.held.saturating_sub(n);
    }

    /// The whole budget.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Whether the bytes held fill it (what is only reserved does not count: see above).
    pub fn is_spent(&self) -> bool {
        self.held >= self.limit
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::ConnId;
    use plugin_api::Request;

    fn job(slot: usize, at: Instant) -> Job {
        Job {
            conn: ConnId {
                slot,
                serial: slot as u64,
            },
            route: "echo".into(),
            request: Request::new("POST", "/"),
            enqueued_at: at,
            expected: Duration::from_millis(slot as u64),
        }
    }

    #[test]
    fn the_queue_is_fifo_and_bounded() {
        let now = Instant::now();
        let mut queue = Queue::new(2);
        assert!(queue.push(job(1, now)).is_ok());
        assert!(queue.push(job(2, now)).is_ok());
        assert_eq!(queue.push(job(3, now)), Err(Full));
        assert_eq!(queue.work(), Duration::from_millis(3));
        assert_eq!(queue.remove(0).map(|j| j.conn.slot), Some(1));
        queue.push_front(job(4, now));
        assert_eq!(queue.work(), Duration::from_millis(6));
        assert_eq!(queue.remove(0).map(|j| j.conn.slot), Some(4));
        assert_eq!(queue.remove(0).map(|j| j.conn.slot), Some(2));
        assert!(queue.remove(0).is_none());
    }

    #[test]
    fn only_the_expired_front_is_taken() {
        let start = Instant::now();
        let mut queue = Queue::new(4);
        let _ = queue.push(job(1, start));
        let later = start + Duration::from_secs(10);
        assert!(queue.pop_expired(later, Duration::from_secs(60)).is_none());
        assert_eq!(
            queue
                .pop_expired(later, Duration::from_secs(5))
                .map(|j| j.conn.slot),
            Some(1)
        );
    }

    #[test]
    fn the_budget_refuses_what_does_not_fit_and_counts_only_what_arrived_as_spent() {
        let mut budget = ByteBudget::new(10);
        assert!(budget.reserve(6));
        assert!(!budget.reserve(5), "reserved bytes are taken");
        assert!(
            !budget.is_spent(),
            "but what has not arrived does not spend it"
        );
        budget.arrived(6);
        budget.release(6);
        assert!(budget.reserve(10));
        budget.arrived(4);
        budget.unreserve(6);
        assert!(budget.reserve(6));
        budget.arrived(6);
        assert!(budget.is_spent());
        assert!(!budget.reserve(usize::MAX));
    }
}
