//! Process signals as flags: the handlers only count into atomics (all a handler may safely
//! do); the supervisor's loop and intake's loop look at them.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

static TERMINATE: AtomicUsize = AtomicUsize::new(0);
static RESTART: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(signal: libc::c_int) {
    match signal {
        libc::SIGTERM | libc::SIGINT => {
            TERMINATE.fetch_add(1, Ordering::SeqCst);
        }
        libc::SIGHUP => RESTART.store(true, Ordering::SeqCst),
        _ => {}
    }
}

/// Routes SIGTERM, SIGINT and SIGHUP to the flags below, and ignores SIGPIPE (a write to a
/// closed socket is an error value, not a death).
pub fn install() {
    let handler: extern "C" fn(libc::c_int) = on_signal;
    for signal in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
        // SAFETY: `sigaction` with a zeroed struct, an empty mask and a handler that only
        // touches atomics, which is async-signal-safe.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = handler as libc::sighandler_t;
            action.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(signal, &action, std::ptr::null_mut());
        }
    }
    // SAFETY: setting a signal's disposition to "ignore" has no preconditions.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
    }
}

/// How many SIGTERM/SIGINT arrived (the first asks for a graceful stop, the second for now).
pub fn terminations() -> usize {
    TERMINATE.load(Ordering::SeqCst)
}

/// Takes a pending SIGHUP (a planned restart), if any.
pub fn take_restart() -> bool {
    RESTART.swap(false, Ordering::SeqCst)
}

/// How a process ended, in words for log lines: `SIGSEGV`, `exit code 3`.
pub fn describe_exit(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit code {code}"),
        (None, Some(signal)) => name(signal),
        _ => "unknown status".to_owned(),
    }
}

/// The name of a signal number, for log lines.
pub fn name(signal: i32) -> String {
    let known = match signal {
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGILL => "SIGILL",
        libc::SIGFPE => "SIGFPE",
        libc::SIGKILL => "SIGKILL",
        libc::SIGTERM => "SIGTERM",
        libc::SIGINT => "SIGINT",
        libc::SIGHUP => "SIGHUP",
        libc::SIGPIPE => "SIGPIPE",
        _ => return format!("signal {signal}"),
    };
    known.to_owned()
}
