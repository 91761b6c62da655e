//! The processes around the worker's loop: the supervisor that binds the listeners and restarts
//! the worker, the signals both react to, and the crash-loop backoff shared with the executor
//! pool.

pub mod backoff;
pub mod signals;
pub mod supervisor;
