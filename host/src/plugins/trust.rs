//! The drop folder is a door: loading a `.so` runs its code in the server, and a program in it
//! runs with the server's rights. Like sshd's StrictModes, a plugins folder or file that another
//! user could have written is refused (`--insecure-plugins-dir` overrides, at the user's risk).

use std::fs::Metadata;
use std::os::unix::fs::MetadataExt;

/// Why a folder or file is not trusted, as the end of a log line; `None` when it is.
pub fn distrust(meta: &Metadata) -> Option<String> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let us = unsafe { libc::geteuid() };
    let owner = meta.uid();
    if owner != us && owner != 0 {
        return Some(format!(
            "it belongs to user {owner}, not to the server's user {us} or root"
        ));
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o022 != 0 {
        return Some(format!(
            "other users can write it (mode {mode:04o}): run chmod go-w on it"
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn group_or_world_writable_is_distrusted() {
        let path = std::env::temp_dir().join(format!("fiddler-trust-{}", std::process::id()));
        fs::write(&path, b"x").expect("write");
        for (mode, trusted) in [(0o644, true), (0o755, true), (0o664, false), (0o646, false)] {
            fs::set_permissions(&path, fs::Permissions::from_mode(mode)).expect("chmod");
            let meta = fs::metadata(&path).expect("stat");
            assert_eq!(distrust(&meta).is_none(), trusted, "mode {mode:o}");
        }
        let _ = fs::remove_file(&path);
    }
}
