//! Executor processes: plugin code never runs in the worker. Each live handler version is
//! served by an executor (this binary under a hidden subcommand) over a Unix socketpair.
//!
//! `frame` is the wire format, `spawn` starts a process, `child` is the executor's own side,
//! `pool` is the worker's side (versions, executors, calls in flight), `output` turns what an
//! executor prints into log lines, `stats` counts.

pub mod child;
pub mod frame;
pub mod output;
pub mod pool;
pub mod spawn;
pub mod stats;
