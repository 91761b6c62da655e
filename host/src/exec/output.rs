//! What an executor prints: its stdout and stderr arrive on one pipe, which the worker reads
//! without blocking and turns into log lines naming the route, capped in length and in rate, so
//! a chatty or stuck plugin can neither flood the log nor block its own process for long.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

use crate::observe::log::{self, Level};

/// The most bytes read from one executor's output in one turn of the loop.
const MAX_DRAIN: usize = 1 << 20;
/// The longest line logged (the rest of it is cut).
const MAX_LINE: usize = 1024;
/// Lines logged per executor per window; more are counted and summarised.
const LINES_PER_WINDOW: u32 = 20;
const WINDOW: Duration = Duration::from_secs(1);

/// The read end of an executor's output pipe and the line being assembled.
pub struct Output {
    fd: OwnedFd,
    /// Invariant: at most `MAX_LINE` bytes (the rest of a long line is dropped).
    partial: Vec<u8>,
    /// Whether the current line was cut.
    cut: bool,
    window_start: Instant,
    lines_in_window: u32,
    suppressed: u64,
    /// The level its lines are logged at: a plugin's output is unusual (warn); a program that
    /// stays up logs as a matter of course (info).
    level: Level,
}

impl Output {
    /// Takes the pipe's read end and makes it non-blocking; its lines are logged at `level`.
    pub fn new(fd: OwnedFd, level: Level) -> io::Result<Output> {
        // SAFETY: fcntl on a descriptor we own; F_SETFL only changes its status flags.
        if unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, libc::O_NONBLOCK) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Output {
            fd,
            partial: Vec::new(),
            cut: false,
            window_start: Instant::now(),
            lines_in_window: 0,
            suppressed: 0,
            level,
        })
    }

    /// The descriptor, for registering with the poll.
    pub fn raw_fd(&self) -> std::os::fd::RawFd {
        self.fd.as_raw_fd()
    }

    /// Reads what is available, at most [`MAX_DRAIN`] bytes a turn (a plugin printing in a
    /// loop cannot hold the worker's loop; its next write signals the pipe again), and logs
    /// whole lines as `label: line`. Returns `false` once the pipe is closed (the process is
    /// gone).
    pub fn drain(&mut self, label: &str, scratch: &mut [u8]) -> bool {
        let mut read = 0;
        loop {
            if read >= MAX_DRAIN {
                return true;
            }
            // SAFETY: read into a buffer we own, of its length, from a descriptor we own.
            let n = unsafe {
                libc::read(
                    self.fd.as_raw_fd(),
                    scratch.as_mut_ptr().cast(),
                    scratch.len(),
                )
            };
            match n {
                0 => {
                    self.flush(label);
                    return false;
                }
                n if n > 0 => {
                    read += n as usize;
                    self.take(label, &scratch[..n as usize]);
                }
                _ => {
                    let e = io::Error::last_os_error();
                    match e.kind() {
                        io::ErrorKind::Interrupted => {}
                        io::ErrorKind::WouldBlock => return true,
                        _ => return false,
                    }
                }
            }
        }
    }

    fn take(&mut self, label: &str, mut bytes: &[u8]) {
        while let Some(end) = bytes.iter().position(|&b| b == b'\n') {
            self.append(&bytes[..end]);
            self.flush(label);
            bytes = &bytes[end + 1..];
        }
        self.append(bytes);
    }

    fn append(&mut self, bytes: &[u8]) {
        let room = MAX_LINE - self.partial.len();
        self.cut |= bytes.len() > room;
        self.partial
            .extend_from_slice(&bytes[..bytes.len().min(room)]);
    }

    /// Logs the assembled line (if any), within the rate.
    fn flush(&mut self, label: &str) {
        if self.partial.is_empty() && !self.cut {
            return;
        }
        let now = Instant::now();
        if now.duration_since(self.window_start) >= WINDOW {
            if self.suppressed > 0 {
                crate::warn!(
                    "{label}: {} more line(s) of its output were not logged (over {LINES_PER_WINDOW} a second)",
                    self.suppressed
                );
                self.suppressed = 0;
            }
            self.window_start = now;
            self.lines_in_window = 0;
        }
        if self.lines_in_window < LINES_PER_WINDOW {
            self.lines_in_window += 1;
            let line = String::from_utf8_lossy(&self.partial);
            let cut = if self.cut { " [cut]" } else { "" };
            let line = line.trim_end_matches('\r');
            log::write(self.level, format_args!("{label}: {line}{cut}"));
        } else {
            self.suppressed += 1;
        }
        self.partial.clear();
        self.cut = false;
    }
}
