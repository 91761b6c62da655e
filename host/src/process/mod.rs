//! The processes around the worker's loop: the supervisor that binds the listeners and restarts
//! the worker, the signals both react to, and the crash-loop backoff shared with the executor
//! pool, and keeping both out of reach of same-user processes (`undumpable`).

pub mod backoff;
pub mod signals;
pub mod supervisor;

/// Makes this process (the supervisor or the worker) undumpable: no core file holding clients'
/// requests, and no other process of the same user may read its memory, environment or
/// descriptors through `/proc` or trace it (root's `CAP_SYS_PTRACE` aside, which the executors'
/// Landlock domain takes care of). Inherited by forks, reset by exec: executors are their own.
pub fn undumpable() {
    // SAFETY: prctl with integer arguments only.
    if unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) } != 0 {
        crate::warn!(
            "cannot make this process undumpable: {}",
            std::io::Error::last_os_error()
        );
    }
}
