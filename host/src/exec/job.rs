//! A job: one complete request for a route, from a connection, as the queue holds it and an
//! executor takes it; and the reply that comes back for it.

use std::time::{Duration, Instant};

use plugin_api::{Request, Response};

use crate::ids::ConnId;

/// One complete request, ready to run.
pub struct Job {
    /// The connection waiting for the answer.
    pub conn: ConnId,
    /// The route (first path segment), not yet checked against the routes served.
    pub route: String,
    /// The request as the plugin will see it.
    pub request: Request,
    /// When it entered the queue.
    pub enqueued_at: Instant,
    /// How long its call is expected to take (its route's estimate when it was queued): what
    /// it adds to the wait of every request behind it.
    pub expected: Duration,
}

impl Job {
    /// The body bytes this job holds against the budget.
    pub fn body_bytes(&self) -> usize {
        self.request.body.len()
    }
}

/// What an executor's answer to a job is, as it reaches the job's connection: a whole
/// response, or a streamed one in parts (a head, pieces of body, an end).
pub enum Reply {
    /// The whole answer. For a connection already streaming, a `Whole` (the 502 or 504 of a
    /// crash or a deadline) means the stream broke: the connection is cut.
    Whole(Response),
    /// A streamed answer starts: status and headers (its body is empty) and its length if
    /// known.
    Head(Response, Option<u64>),
    /// The next bytes of the streamed answer.
    Piece(Vec<u8>),
    /// The streamed answer ended; `false` when it broke off.
    End(bool),
}
