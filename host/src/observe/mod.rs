//! What an operator sees: the counters `/-/metrics` renders, the log that never blocks, and the
//! last events the status page lists.

pub mod events;
pub mod log;
pub mod metrics;
