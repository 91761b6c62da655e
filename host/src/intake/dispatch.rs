//! Dispatch: the stage between the queue and the executors. It owns the queue and the executor
//! pool, places queued jobs (in order, letting jobs for other routes pass one whose route is
//! restarting), hands back what executors answered, puts back what they took and never
//! started, and predicts how long a request queued now would wait. Connections are intake's:
//! dispatch names them by `ConnId` and asks intake whether each is still waiting.

use std::time::{Duration, Instant};

use crate::exec::job::{Job, Reply};
use crate::exec::pool::{Place, Pool, PoolEvent};
use crate::ids::ConnId;
use crate::intake::queue::{Full, Queue};
use crate::plugins::version::NewVersion;
use crate::plugins::watcher::Change;
use mio::{Registry, Token};

/// What became of a job taken out of the queue.
pub enum Placed {
    /// Sent to an executor after waiting this long in the queue.
    Sent(Duration),
    /// Its client had gone: dropped unrun.
    Gone(ConnId),
    /// No version serves its route: answer 404.
    NoRoute(ConnId, String),
}

/// An answer to write.
pub struct Answer {
    /// Who asked.
    pub conn: ConnId,
    /// The route it went to (for the access log).
    pub route: String,
    /// The answer, or a part of a streamed one.
    pub reply: Reply,
}

/// The queue and the executors behind it.
pub struct Dispatch {
    queue: Queue,
    pool: Pool,
    /// What the pool said and dispatch has not acted on yet.
    events: Vec<PoolEvent>,
    /// Jobs may be placeable: one was queued, or an answer freed a lane.
    pending: bool,
    /// Waiting jobs at which no request is admitted: a share of the capacity while the light
    /// is red, else no bound beyond the queue's own.
    admit: usize,
}

impl Dispatch {
    /// Dispatch over an empty queue and a pool.
    pub fn new(queue: Queue, pool: Pool) -> Dispatch {
        Dispatch {
            admit: usize::MAX,
            queue,
            pool,
            events: Vec::new(),
            pending: false,
        }
    }

    /// Queues a job, or refuses it when the queue holds its capacity.
    pub fn enqueue(&mut self, job: Job) -> Result<(), Full> {
        self.queue.push(job)?;
        self.pending = true;
        Ok(())
    }

    /// Asks for another placing pass (the loop does one per turn).
    pub fn wake(&mut self) {
        self.pending = true;
    }

    /// Whether a placing pass is due; clears the flag.
    pub fn take_pending(&mut self) -> bool {
        std::mem::take(&mut self.pending)
    }

    /// Places queued jobs until every lane is busy or nothing can run. `waiting` says whether
    /// a connection still waits for its answer (checked at the last moment: a client's close
    /// may have come while its request sat unread). Appends to `placed`, per job taken out of
    /// the queue, what became of it and the body bytes it held.
    pub fn place(
        &mut self,
        registry: &Registry,
        placed: &mut Vec<(Placed, usize)>,
        mut waiting: impl FnMut(ConnId) -> bool,
    ) {
        let mut at = 0;
        // Routes one of whose jobs had to wait in this pass: their later jobs wait too, so a
        // route's jobs start in their order (a small one never passes a large one that could
        // not be written ahead).
        let mut held: Vec<String> = Vec::new();
        while let Some(job) = self.queue.get(at) {
            if held.contains(&job.route) {
                at += 1;
                continue;
            }
            let place = self.pool.place(&job.route, job.body_bytes(), registry);
            match place {
                Place::Wait => {
                    held.push(job.route.clone());
                    at += 1;
                    continue;
                }
                Place::Full => break,
                Place::NoRoute | Place::Run(_) => {}
            }
            let Some(job) = self.take_waiting(at, placed, &mut waiting) else {
                continue;
            };
            match place {
                Place::Run(executor) => {
                    placed.push((Placed::Sent(job.enqueued_at.elapsed()), job.body_bytes()));
                    let room = self.pool.batch_room(executor);
                    if room > 1 {
                        let batch = self.take_batch(job, room, at, placed, &mut waiting);
                        self.pool.send_batch(executor, batch, &mut self.events);
                    } else {
                        self.pool.send(executor, job, &mut self.events);
                    }
                }
                _ => {
                    let bytes = job.body_bytes();
                    placed.push((Placed::NoRoute(job.conn, job.route), bytes));
                }
            }
        }
    }

    /// `first` and up to `room - 1` more queued jobs of its route, from queue position `at`
    /// on, in queue order: one batch. Jobs whose client has gone are dropped on the way.
    fn take_batch(
        &mut self,
        first: Job,
        room: usize,
        mut at: usize,
        placed: &mut Vec<(Placed, usize)>,
        waiting: &mut impl FnMut(ConnId) -> bool,
    ) -> Vec<Job> {
        let mut batch = vec![first];
        while batch.len() < room {
            let Some(next) = self.queue.get(at) else {
                break;
            };
            if next.route != batch[0].route {
                at += 1;
                continue;
            }
            if let Some(job) = self.take_waiting(at, placed, waiting) {
                placed.push((Placed::Sent(job.enqueued_at.elapsed()), job.body_bytes()));
                batch.push(job);
            }
        }
        batch
    }

    /// Takes the job at queue position `at` out; `None` (and it is counted as gone in
    /// `placed`) when its client no longer waits, or when there is no job there.
    fn take_waiting(
        &mut self,
        at: usize,
        placed: &mut Vec<(Placed, usize)>,
        waiting: &mut impl FnMut(ConnId) -> bool,
    ) -> Option<Job> {
        let job = self.queue.remove(at)?;
        if waiting(job.conn) {
            return Some(job);
        }
        placed.push((Placed::Gone(job.conn), job.body_bytes()));
        None
    }

    /// Appends the answers the pool has to `answers`; jobs it handed back go to the front of
    /// the queue (their body bytes are returned, to take back from the budget). Any of either
    /// calls for another placing pass.
    pub fn take_answers(&mut self, answers: &mut Vec<Answer>) -> usize {
        let mut requeued = 0;
        // Requeued jobs come in reverse order, so pushing each to the front keeps theirs.
        for event in self.events.drain(..) {
            self.pending = true;
            match event {
                PoolEvent::Answer { conn, route, reply } => {
                    answers.push(Answer { conn, route, reply })
                }
                PoolEvent::Requeue(job) => {
                    requeued += job.body_bytes();
                    self.queue.push_front(job);
                }
            }
        }
        requeued
    }

    /// Whether the pool said something not yet taken.
    pub fn has_answers(&self) -> bool {
        !self.events.is_empty()
    }

    /// Hands an executor's poll event to the pool (`closed`: it said the executor's end
    /// closed, or failed); `takes_more` says whether a connection takes more of a streamed
    /// answer now.
    pub fn on_executor_event(
        &mut self,
        token: Token,
        closed: bool,
        registry: &Registry,
        scratch: &mut [u8],
        takes_more: impl Fn(ConnId) -> bool,
    ) {
        self.pool.on_event(
            token,
            closed,
            registry,
            scratch,
            &mut self.events,
            takes_more,
        );
    }

    /// Reads what executors left unread (streamed answers whose clients take more now);
    /// whether some is still left that could be read at once.
    pub fn pump(
        &mut self,
        registry: &Registry,
        scratch: &mut [u8],
        takes_more: impl Fn(ConnId) -> bool,
    ) -> bool {
        self.pool
            .pump(registry, scratch, &mut self.events, takes_more)
    }

    /// Writes the calls given to executors in this turn (before the loop polls).
    pub fn write_due(&mut self, registry: &Registry) {
        self.pool.write_due(registry);
    }

    /// The pool's deadlines, reaps and restarts, when one is due.
    pub fn sweep(&mut self, now: Instant, registry: &Registry) {
        if self.pool.next_deadline().is_some_and(|at| at <= now) {
            self.pool.sweep(now, registry, &mut self.events);
        }
    }

    /// When the pool next has something to do.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.pool.next_deadline()
    }

    /// Starts the versions found at start-up.
    pub fn install(&mut self, versions: Vec<NewVersion>, registry: &Registry) {
        for version in versions {
            self.pool.install(version, registry);
        }
    }

    /// Starts or removes a version as the watcher says.
    pub fn apply(&mut self, change: Change, registry: &Registry) {
        match change {
            Change::Install(version) => self.pool.install(version, registry),
            // The watcher said so in its log line.
            Change::Remove(name) => self.pool.remove(&name, registry),
            // Intake keeps the gates; nothing here depends on them.
            Change::Access(_) => {}
        }
    }

    /// The client of `conn` left during its streamed answer: its executor is told to stop.
    pub fn cancel_stream(&mut self, conn: ConnId) {
        self.pool.cancel_stream(conn);
    }

    /// Sets the lanes and the batch sizes the jellyfish's light allows.
    pub fn set_light(&mut self, lanes: usize, batch_max: usize, capped_batch_max: usize) {
        self.pool.set_light(lanes, batch_max, capped_batch_max);
    }

    /// Takes the oldest job if it waited past `max_wait`.
    pub fn pop_expired(&mut self, now: Instant, max_wait: Duration) -> Option<Job> {
        self.queue.pop_expired(now, max_wait)
    }

    /// How long a request queued now is expected to wait before it starts: the expected time
    /// of the work ahead of it (queued, written ahead, and what is left of the running calls)
    /// shared among the lanes (Little's law).
    pub fn predicted_wait(&self) -> Duration {
        let work = self.queue.work() + self.pool.work_in_flight(Instant::now());
        work / u32::try_from(self.effective_lanes()).unwrap_or(1).max(1)
    }

    /// The lanes the queued work can really use: the lanes in force, but no more than the
    /// routes it is for may take together (a one-lane route's queue is served by one).
    fn effective_lanes(&self) -> usize {
        let lanes = self.pool.lanes();
        if lanes <= 1 || self.queue.is_empty() {
            return lanes;
        }
        let mut routes: Vec<&str> = Vec::new();
        for at in 0..self.queue.len() {
            if let Some(job) = self.queue.get(at) {
                if !routes.contains(&job.route.as_str()) {
                    routes.push(&job.route);
                }
            }
            if routes.len() >= lanes {
                return lanes;
            }
        }
        let usable: usize = routes.iter().map(|r| self.pool.route_lanes(r)).sum();
        usable.clamp(1, lanes)
    }

    /// Jobs waiting to start: queued, or written ahead to a busy executor.
    pub fn waiting(&self) -> usize {
        self.queue.len() + self.pool.written_ahead()
    }

    /// Whether no more requests may be admitted: the queue holds its capacity, or the jobs
    /// waiting reach the share of it in force (while the jellyfish's light is red).
    pub fn is_full(&self) -> bool {
        self.queue.is_full() || self.waiting() >= self.admit
    }

    /// Admits `1/share` of the queue's capacity from now on (1: all of it, bounded by the
    /// queue alone).
    pub fn set_share(&mut self, share: usize) {
        self.admit = match share {
            0 | 1 => usize::MAX,
            _ => (self.queue.capacity() / share).max(1),
        };
    }

    /// The queue's capacity.
    pub fn capacity(&self) -> usize {
        self.queue.capacity()
    }

    /// Whether nothing is queued and no executor holds a call.
    pub fn is_drained(&self) -> bool {
        self.queue.is_empty() && self.pool.is_idle()
    }

    /// The executors, to read (admin routes, body limits, estimates).
    pub fn pool(&self) -> &Pool {
        &self.pool
    }
}
