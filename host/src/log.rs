//! One line per event on stderr: `<unix seconds.millis> <level> <message>`.
//!
//! Logging never happens per shed request (see DESIGN.md); callers log events, not traffic.

use std::fmt::Arguments;
use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

/// How serious a log line is.
#[derive(Clone, Copy, Debug)]
pub enum Level {
    /// Something the operator should know about (a plugin refused, a call timed out).
    Warn,
    /// Normal lifecycle events (listening, plugin loaded).
    Info,
}

/// Writes one line. A failed write to stderr is ignored: there is nowhere else to report it.
pub fn write(level: Level, message: Arguments<'_>) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let level = match level {
        Level::Warn => "WARN",
        Level::Info => "INFO",
    };
    let line = format!(
        "{}.{:03} {level} {message}\n",
        now.as_secs(),
        now.subsec_millis()
    );
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
}

/// Logs an informational line: `info!("loaded {name}")`.
#[macro_export]
macro_rules! info {
    ($($arg:tt)*) => { $crate::log::write($crate::log::Level::Info, format_args!($($arg)*)) };
}

/// Logs a warning line: `warn!("refused {file}: {why}")`.
#[macro_export]
macro_rules! warn {
    ($($arg:tt)*) => { $crate::log::write($crate::log::Level::Warn, format_args!($($arg)*)) };
}
