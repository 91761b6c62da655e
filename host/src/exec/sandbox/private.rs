//! An executor's private folder: the only place its sandbox lets it write (its `TMPDIR`, its
//! working folder when it has no folder of its own, where a program's `FIDDLER_SOCKET` lives).
//! A 0700 folder `p<pid>` in the worker's private directory (so it goes with the worker), made
//! once per executor and kept for its whole life (its sandbox's rule holds that folder, not its
//! name); folders of executors that are gone are removed when a new one is made.

use std::fs;
use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use crate::exec::spawn::RUNTIME_DIR_ENV;

/// The longest Unix socket path (`sun_path` holds 108 bytes with its NUL).
const MAX_SOCKET_PATH: usize = 100;
/// The name of a program's socket in it.
pub const SOCKET: &str = "sock";

/// Makes this executor's private folder and returns it.
pub fn create() -> io::Result<PathBuf> {
    let runtime = std::env::var_os(RUNTIME_DIR_ENV).map(PathBuf::from);
    let name = format!("p{}", std::process::id());
    let (base, ours) = match runtime {
        Some(dir) if dir.join(&name).join(SOCKET).as_os_str().len() <= MAX_SOCKET_PATH => {
            (dir, true)
        }
        // The system's temporary folder is everyone's: a name of its own, and no sweeping.
        _ => (std::env::temp_dir(), false),
    };
    let name = match ours {
        true => name,
        false => format!("fiddler-crab-executor-{}", std::process::id()),
    };
    if ours {
        sweep(&base);
    }
    let dir = base.join(name);
    let _ = fs::remove_dir_all(&dir);
    fs::DirBuilder::new().mode(0o700).create(&dir)?;
    Ok(dir)
}

/// Removes the folders of executors that are gone.
fn sweep(base: &Path) {
    let Ok(entries) = fs::read_dir(base) else {
        return;
    };
    for entry in entries.flatten() {
        let stale = entry
            .file_name()
            .to_str()
            .and_then(|n| n.strip_prefix('p'))
            .and_then(|pid| pid.parse::<u32>().ok())
            .is_some_and(|pid| !Path::new(&format!("/proc/{pid}")).exists());
        if stale {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}
