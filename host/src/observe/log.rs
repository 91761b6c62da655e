//! One line per event on stderr: human (`<unix seconds.millis> <LEVEL> <message>`) by default, or
//! one JSON object per line (`--log-format json`) for collectors. `--log-level warn` keeps only
//! warnings. An opt-in access log (`--access-log`) adds a line per answered request; there is
//! never a line per shed request.
//!
//! Writing never waits: the worker's loop logs, and a stalled stderr (a full pipe nobody
//! reads, a stuck journal) must not freeze it. A pipe or terminal is reopened with its own
//! non-blocking file description (through `/proc/self/fd/2`, so the shared one is untouched),
//! a socket is written with `MSG_DONTWAIT`; a line that does not fit is dropped and counted,
//! and the count is written before the next line that fits. Lines are cut at 4000
//! bytes, so each is one atomic write.

use std::fmt::{Arguments, Write as _};
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

/// The longest line written (a pipe takes up to 4096 bytes in one atomic write).
const MAX_LINE: usize = 4000;

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
/// Lines dropped because stderr would have blocked, not yet reported.
static DROPPED: AtomicU64 = AtomicU64::new(0);
static SINK: OnceLock<Sink> = OnceLock::new();

/// How lines reach stderr without waiting.
#[derive(Debug)]
enum Sink {
    /// A regular file: written as is (a file does not stall like a pipe).
    File,
    /// A socket (a journal stream): `send` with `MSG_DONTWAIT`.
    Socket,
    /// A pipe or terminal reopened non-blocking on its own descriptor.
    Own(RawFd),
    /// Could not be reopened: written only when `poll` says it has room.
    Polled,
}

impl Sink {
    fn open() -> Sink {
        // SAFETY: fstat writes into a zeroed struct we own; descriptor 2 may be closed, which
        // only makes it fail.
        let mut stat: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        if unsafe { libc::fstat(2, &mut stat) } != 0 {
            return Sink::Polled;
        }
        match stat.st_mode & libc::S_IFMT {
            libc::S_IFREG => Sink::File,
            libc::S_IFSOCK => Sink::Socket,
            _ => {
                let path = c"/proc/self/fd/2";
                // SAFETY: open with a valid C string; the result is a new descriptor or -1.
                let fd = unsafe {
                    libc::open(
                        path.as_ptr(),
                        libc::O_WRONLY | libc::O_NONBLOCK | libc::O_CLOEXEC,
                    )
                };
                if fd >= 0 {
                    Sink::Own(fd)
                } else {
                    Sink::Polled
                }
            }
        }
    }

    /// Writes `bytes` whole, or not at all when it would wait (`false`).
    fn write(&self, bytes: &[u8]) -> bool {
        let n = match self {
            // SAFETY: a write of a buffer we own, of its length, to descriptor 2.
            Sink::File => unsafe { libc::write(2, bytes.as_ptr().cast(), bytes.len()) },
            // SAFETY: as above, with flags that make it fail instead of waiting.
            Sink::Socket => unsafe {
                libc::send(
                    2,
                    bytes.as_ptr().cast(),
                    bytes.len(),
                    libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
                )
            },
            // SAFETY: as above, to the descriptor `open` made, open for the process's life.
            Sink::Own(fd) => unsafe { libc::write(*fd, bytes.as_ptr().cast(), bytes.len()) },
            Sink::Polled => {
                let mut poll = libc::pollfd {
                    fd: 2,
                    events: libc::POLLOUT,
                    revents: 0,
                };
                // SAFETY: poll on one pollfd we own, with a zero timeout (it never waits).
                if unsafe { libc::poll(&mut poll, 1, 0) } != 1 {
                    return false;
                }
                // SAFETY: as for `File`.
                unsafe { libc::write(2, bytes.as_ptr().cast(), bytes.len()) }
            }
        };
        usize::try_from(n).is_ok_and(|n| n == bytes.len())
    }
}

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
    emit(format_line(level, message));
}

/// One line in the configured format, with its newline.
fn format_line(level: Level, message: Arguments<'_>) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let (secs, millis) = (now.as_secs(), now.subsec_millis());
    if JSON.load(Ordering::Relaxed) {
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
        format!("{} {level} {message}\n", rfc3339_utc(secs, millis))
    }
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ` for a time in seconds and milliseconds since the Unix epoch.
pub fn rfc3339_utc(secs: u64, millis: u32) -> String {
    let days = secs / 86_400;
    let in_day = secs % 86_400;
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        in_day / 3600,
        in_day % 3600 / 60,
        in_day % 60
    )
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (days are grouped in 400-year
/// eras of 146,097 days, years counted from March so leap days fall at the end).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let day_of_era = z % 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

/// Writes a finished line without waiting; drops and counts it when stderr has no room.
fn emit(mut line: String) {
    if line.len() > MAX_LINE {
        let mut cut = MAX_LINE - 8;
        while !line.is_char_boundary(cut) {
            cut -= 1;
        }
        line.truncate(cut);
        line.push_str(" [cut]\n");
    }
    let sink = SINK.get_or_init(Sink::open);
    let dropped = DROPPED.swap(0, Ordering::Relaxed);
    if dropped > 0 {
        let note = format_line(
            Level::Warn,
            format_args!("{dropped} log line(s) dropped: stderr was not taking them"),
        );
        if !sink.write(note.as_bytes()) {
            DROPPED.fetch_add(dropped + 1, Ordering::Relaxed);
            return;
        }
    }
    if !sink.write(line.as_bytes()) {
        DROPPED.fetch_add(1, Ordering::Relaxed);
    }
}

/// Lines dropped so far and not yet reported (for tests and metrics).
pub fn dropped() -> u64 {
    DROPPED.load(Ordering::Relaxed)
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
    ($($arg:tt)*) => { $crate::observe::log::write($crate::observe::log::Level::Info, format_args!($($arg)*)) };
}

/// Logs a warning line: `warn!("refused {file}: {why}")`.
#[macro_export]
macro_rules! warn {
    ($($arg:tt)*) => { $crate::observe::log::write($crate::observe::log::Level::Warn, format_args!($($arg)*)) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_timestamps_are_rfc_3339_utc() {
        assert_eq!(rfc3339_utc(0, 0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_utc(951_782_400, 5), "2000-02-29T00:00:00.005Z");
        assert_eq!(rfc3339_utc(1_796_140_426, 44), "2026-12-01T15:53:46.044Z");
        assert_eq!(rfc3339_utc(4_107_542_399, 999), "2100-02-28T23:59:59.999Z");
    }

    #[test]
    fn json_strings_are_escaped() {
        let mut out = String::new();
        escape_into(&mut out, "a\"b\\c\n");
        assert_eq!(out, r#"a\"b\\c\u000a"#);
    }
}
