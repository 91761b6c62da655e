//! Handler files as the watcher takes them: read once (bounded), hashed, and for libraries
//! copied to a private directory under a name used once, so the executors map a copy nobody
//! else can change while the watched file is overwritten, renamed or removed.

use std::fs;
use std::hash::{DefaultHasher, Hasher};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::ids::{ContentHash, Generation, PluginName};

/// The largest handler file read.
const MAX_FILE: u64 = 1 << 30;

/// A handler file's contents, read once: what is hashed and copied.
pub struct HandlerFile {
    /// The file in the plugins folder.
    pub path: PathBuf,
    /// Its bytes.
    pub bytes: Vec<u8>,
    /// A hash of `bytes`.
    pub hash: ContentHash,
}

impl HandlerFile {
    /// Reads a handler file (at most 1 GiB).
    pub fn read(path: &Path) -> io::Result<HandlerFile> {
        let len = fs::metadata(path)?.len();
        if len > MAX_FILE {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("larger than {MAX_FILE} bytes"),
            ));
        }
        let bytes = fs::read(path)?;
        let mut hasher = DefaultHasher::new();
        hasher.write(&bytes);
        Ok(HandlerFile {
            path: path.to_owned(),
            hash: ContentHash(hasher.finish()),
            bytes,
        })
    }
}

/// A private (0700) directory for library copies; removed when dropped.
pub struct PrivateDir {
    path: PathBuf,
}

impl PrivateDir {
    /// Creates it under `parent` (the supervisor's state folder when there is one, so a worker
    /// that dies leaves nothing behind), else under the system temporary directory.
    pub fn create(parent: Option<&Path>) -> io::Result<PrivateDir> {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .subsec_nanos();
        let name = format!("fiddler-crab-{}-{nanos:08x}", std::process::id());
        let path = match parent {
            Some(parent) => parent.join(name),
            None => std::env::temp_dir().join(name),
        };
        fs::DirBuilder::new().mode(0o700).create(&path)?;
        Ok(PrivateDir { path })
    }

    /// Where it is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes `file`'s bytes as a copy for `name` at `generation`; returns its path. The copy
    /// is owner-only and written once (`create_new`).
    pub fn copy(
        &self,
        name: &PluginName,
        generation: Generation,
        file: &HandlerFile,
    ) -> io::Result<PathBuf> {
        let path = self
            .path
            .join(format!("{name}-{}-{}.so", file.hash, generation.0));
        let mut out = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)?;
        out.write_all(&file.bytes)?;
        out.sync_all()?;
        Ok(path)
    }
}

/// Removes the private folders that servers killed outright (`SIGKILL`, a crash, a power cut)
/// left in `dir`: `fiddler-crab-state-PID` (a supervisor's) and `fiddler-crab-PID-X` (a worker's
/// without one) whose process is gone and that this user owns. Each holds copies of plugins, so
/// without this they pile up. Returns how many were removed.
pub fn remove_stale(dir: &Path) -> usize {
    let Ok(entries) = fs::read_dir(dir) else {
        return 0;
    };
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(stale_pid) else {
            continue;
        };
        let ours = entry
            .metadata()
            .is_ok_and(|m| std::os::unix::fs::MetadataExt::uid(&m) == me && m.is_dir());
        // SAFETY: kill with signal 0 only checks whether the process exists.
        let gone = unsafe { libc::kill(pid, 0) } != 0
            && io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH);
        if ours && gone && fs::remove_dir_all(entry.path()).is_ok() {
            removed += 1;
        }
    }
    removed
}

/// The pid in a private folder's name, if it is one.
fn stale_pid(name: &str) -> Option<i32> {
    let rest = name.strip_prefix("fiddler-crab-")?;
    let digits = rest.strip_prefix("state-").unwrap_or(rest);
    let pid = digits.split('-').next()?;
    if pid.is_empty() || !pid.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    pid.parse().ok().filter(|pid| *pid > 1)
}

impl Drop for PrivateDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_private_folder_names_give_a_pid() {
        assert_eq!(stale_pid("fiddler-crab-state-1234"), Some(1234));
        assert_eq!(stale_pid("fiddler-crab-1234-00ab12cd"), Some(1234));
        assert_eq!(stale_pid("fiddler-crab-state-"), None);
        assert_eq!(stale_pid("fiddler-crab-x-1"), None);
        assert_eq!(stale_pid("fiddler-test-server-1-0"), None);
        assert_eq!(stale_pid("fiddler-crab-state-1"), None, "never pid 1");
    }
}
