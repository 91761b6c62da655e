//! A job: one complete request for a route, from a connection, as the queue holds it and an
//! executor takes it.

use std::time::{Duration, Instant};

use plugin_api::Request;

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
