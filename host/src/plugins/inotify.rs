//! The plugins folder's change events from the kernel (inotify), so the watcher can act when a
//! file is written or moved in instead of at its next poll. It owns the inotify descriptor, its
//! watches (the folder and each handler folder's top level) and the parsing of the events; what
//! the events mean for versions is the watcher's. Where inotify is unavailable (a kernel
//! without it, a watch limit reached) or blind (a network file system changed from another
//! machine), the watcher's polls still see every change.

use std::collections::HashMap;
use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// What is watched: a file written and closed or moved in (finished), created, removed or
/// moved away, or its permissions changed.
const MASK: u32 = libc::IN_CLOSE_WRITE
    | libc::IN_MOVED_TO
    | libc::IN_MOVED_FROM
    | libc::IN_CREATE
    | libc::IN_DELETE
    | libc::IN_ATTRIB
    | libc::IN_DELETE_SELF;
/// The fixed part of one event (`struct inotify_event` before its name).
const HEADER: usize = 16;
/// Events read in one go (many at once are read in several).
const BUFFER: usize = 16 * 1024;
/// The most folders watched (each handler folder's top level, and the plugins folder).
const MAX_WATCHES: usize = 1024;

/// One change the kernel reported.
#[derive(Debug, PartialEq, Eq)]
pub struct Event {
    /// The entry of a watched folder it is about (the folder itself when it has no name).
    pub path: PathBuf,
    /// Its writer is done with it: closed after writing, or moved in whole. Such a file need
    /// not hold still for an interval before it is taken.
    pub finished: bool,
}

/// An inotify descriptor and its watches.
pub struct FolderEvents {
    fd: OwnedFd,
    /// Watch descriptors and the folders they watch.
    watches: HashMap<i32, PathBuf>,
}

impl FolderEvents {
    /// Watches `dir` (not yet its subfolders: see [`FolderEvents::watch`]).
    pub fn new(dir: &Path) -> io::Result<FolderEvents> {
        // SAFETY: inotify_init1 takes flags only and returns a new descriptor or -1.
        let fd = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the descriptor was just created and nothing else owns it.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let mut events = FolderEvents {
            fd,
            watches: HashMap::new(),
        };
        events.watch(dir)?;
        Ok(events)
    }

    /// Watches `dir`'s own entries too (a handler folder's `serve`, library, settings). Watching
    /// a folder twice is one watch; beyond [`MAX_WATCHES`] folders, polls alone see changes.
    pub fn watch(&mut self, dir: &Path) -> io::Result<()> {
        if self.watches.len() >= MAX_WATCHES || self.watches.values().any(|d| d == dir) {
            return Ok(());
        }
        let path = CString::new(dir.as_os_str().as_bytes())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a NUL in the path"))?;
        // SAFETY: the descriptor is ours and open; the path is a NUL-terminated string that
        // lives across the call.
        let wd = unsafe { libc::inotify_add_watch(self.fd.as_raw_fd(), path.as_ptr(), MASK) };
        if wd < 0 {
            return Err(io::Error::last_os_error());
        }
        self.watches.insert(wd, dir.to_owned());
        Ok(())
    }

    /// Waits up to `timeout` for events and returns those that came (none at the timeout).
    pub fn wait(&mut self, timeout: Duration) -> io::Result<Vec<Event>> {
        let mut poll = libc::pollfd {
            fd: self.fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let millis = libc::c_int::try_from(timeout.as_millis()).unwrap_or(libc::c_int::MAX);
        // SAFETY: one pollfd, valid for the call; the descriptor is ours.
        let ready = unsafe { libc::poll(&mut poll, 1, millis) };
        if ready < 0 {
            let e = io::Error::last_os_error();
            return match e.kind() {
                io::ErrorKind::Interrupted => Ok(Vec::new()),
                _ => Err(e),
            };
        }
        let mut events = Vec::new();
        let mut buffer = vec![0u8; BUFFER];
        loop {
            // SAFETY: reads at most `buffer.len()` bytes into the buffer we own.
            let read = unsafe {
                libc::read(
                    self.fd.as_raw_fd(),
                    buffer.as_mut_ptr().cast(),
                    buffer.len(),
                )
            };
            if read <= 0 {
                break;
            }
            let read = usize::try_from(read).unwrap_or(0);
            self.parse(&buffer[..read], &mut events);
        }
        Ok(events)
    }

    /// The events in `bytes` (whole events only: the kernel never splits one across reads).
    fn parse(&mut self, mut bytes: &[u8], out: &mut Vec<Event>) {
        while bytes.len() >= HEADER {
            let word = |at: usize| {
                let mut four = [0u8; 4];
                four.copy_from_slice(&bytes[at..at + 4]);
                four
            };
            let wd = i32::from_ne_bytes(word(0));
            let mask = u32::from_ne_bytes(word(4));
            let len = usize::try_from(u32::from_ne_bytes(word(12))).unwrap_or(usize::MAX);
            let Some(name) = bytes.get(HEADER..HEADER.saturating_add(len)) else {
                return;
            };
            bytes = &bytes[HEADER + len..];
            if mask & (libc::IN_IGNORED | libc::IN_DELETE_SELF) != 0 {
                // The folder went: its watch is gone with it.
                if let Some(dir) = self.watches.remove(&wd) {
                    out.push(Event {
                        path: dir,
                        finished: false,
                    });
                }
                continue;
            }
            let Some(dir) = self.watches.get(&wd) else {
                continue;
            };
            let name = &name[..name.iter().position(|&b| b == 0).unwrap_or(name.len())];
            let path = match name.is_empty() {
                true => dir.clone(),
                false => dir.join(std::ffi::OsStr::from_bytes(name)),
            };
            let finished = mask & (libc::IN_CLOSE_WRITE | libc::IN_MOVED_TO) != 0;
            out.push(Event { path, finished });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn a_written_file_and_a_moved_one_are_finished_a_created_one_is_not() {
        let dir = std::env::temp_dir().join(format!("fiddler-inotify-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join("folder")).expect("mkdir");
        let mut events = FolderEvents::new(&dir).expect("inotify");
        events.watch(&dir.join("folder")).expect("watch");
        fs::write(dir.join("a.so"), b"x").expect("write");
        fs::write(dir.join(".tmp"), b"y").expect("write");
        fs::rename(dir.join(".tmp"), dir.join("b.so")).expect("rename");
        fs::write(dir.join("folder/settings"), b"deadline=1").expect("write");
        let mut seen = Vec::new();
        let until = std::time::Instant::now() + Duration::from_secs(5);
        while seen.iter().filter(|e: &&Event| e.finished).count() < 4
            && std::time::Instant::now() < until
        {
            seen.extend(events.wait(Duration::from_millis(100)).expect("wait"));
        }
        let finished = |p: &Path| seen.iter().any(|e| e.path == p && e.finished);
        assert!(finished(&dir.join("a.so")), "{seen:?}");
        assert!(finished(&dir.join("b.so")), "{seen:?}");
        assert!(finished(&dir.join("folder/settings")), "{seen:?}");
        assert!(
            seen.iter()
                .any(|e| e.path == dir.join("a.so") && !e.finished),
            "its creation came first, not finished: {seen:?}"
        );
        let _ = fs::remove_dir_all(&dir);
    }
}
