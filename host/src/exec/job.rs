//! A job: one complete request for a route, from a connection, as the queue holds it and an
//! executor takes it.

use std::time::Instant;

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
}

impl Job {
    /// The body bytes this job holds against the budget.
    pub fn body_bytes(&self) -> usize {
        self.request.body.len()
    }
}
