//! Executor processes: plugin code never runs in the worker. Each live handler version is
//! served by an executor (this binary under a hidden subcommand) over a Unix socketpair.
//!
//! `frame` is the wire format, `spawn` starts a process, `child` is the executor's own side
//! (`link` its socket to the worker; `program` and `proxy` its side of a program that stays up,
//! `port_owner` whether the port it listens on is really its, `sandbox` what it may touch),
//! `executor` is one process as the worker holds it (its IO), `versions` says what each route's
//! versions are (blue/green, refusals, backoff), `pool` decides (which executor takes which
//! call, what a death or a deadline costs, when executors start and stop), `output` turns what an
//! executor prints into log lines, `stats` counts, `crashes` keeps the requests that killed
//! executors for `fiddler-crab replay`.

pub mod child;
pub mod crashes;
pub mod executor;
pub mod fds;
pub mod frame;
pub mod job;
pub mod link;
pub mod output;
pub mod pool;
pub mod port_owner;
pub mod program;
pub mod proxy;
pub mod sandbox;
pub mod spawn;
pub mod stats;
pub mod versions;
