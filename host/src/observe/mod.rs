//! What an operator sees: the counters `/-/metrics` renders, and the log that never blocks.

pub mod log;
pub mod metrics;
