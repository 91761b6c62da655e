//! One line per event on stderr: human (`<unix seconds.millis> <LEVEL> <message>`) by default, or
//! one JSON object per line (`--log-format json`) for collectors. `--log-level warn` keeps only
//! warnings. An opt-in access log (`--access-log`) adds a line per answered request; there is
//! never a line per shed request.

use std::fmt::{Arguments, Write as _};
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// How serious a log line is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// Something the operator should know about (a plugin refused, a call timed out).
    Warn,
    /// Normal lifecycle events (listening, plugin loaded), and access lines.
    Info,
}

/// How lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// `1795724240.131 INFO message`
    Human,
    /// `{"ts":1795724240.131,"level":"info","msg":"message"}`
    Json,
}

static JSON: AtomicBool = AtomicBool::new(false);
static MAX_LEVEL: AtomicU8 = AtomicU8::new(Level::Info as u8);
static ACCESS: AtomicBool = AtomicBool::new(false);

/// Sets the format, the most verbose level written, and whether the access log is on. Called
/// once at start; the worker inherits the same flags.
pub fn configure(format: Format, max_level: Level, access: bool) {
    JSON.store(format == Format::Json, Ordering::Relaxed);
    MAX_LEVEL.store(max_level as u8, Ordering::Relaxed);
    ACCESS.store(access, Ordering::Relaxed);
}

/// Whether the access log is on (so callers skip building its lines otherwise).
pub fn access_enabled() -> bool {
    ACCESS.load(Ordering::Relaxed)
}

/// Writes one line. A failed write to stderr is ignored: there is nowhere else to report it.
pub fn write(level: Level, message: Arguments<'_>) {
    if level as u8 > MAX_LEVEL.load(Ordering::Relaxed) {
        return;
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let (secs, millis) = (now.as_secs(), now.subsec_millis());
    let line = if JSON.load(Ordering::Relaxed) {
        let level = match level {
            Level::Warn => "warn",
            Level::Info => "info",
        };
        let mut line = format!("{{\"ts\":{secs}.{millis:03},\"level\":\"{level}\",\"msg\":\"");
        escape_into(&mut line, &message.to_string());
        line.push_str("\"}\n");
        line
    } else {
        let level = match level {
            Level::Warn => "WARN",
            Level::Info => "INFO",
        };
        format!("{secs}.{millis:03} {level} {message}\n")
    };
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
}

/// Appends `text` to `out` escaped for a JSON string.
pub fn escape_into(out: &mut String, text: &str) {
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_strings_are_escaped() {
        let mut out = String::new();
        escape_into(&mut out, "a\"b\\c\n");
        assert_eq!(out, r#"a\"b\\c\u000a"#);
    }
}
