//! Landlock, as the executor uses it: which ABI the kernel speaks, and a ruleset built from
//! paths (read-only or read-write beneath them), TCP ports (bind, connect) and scopes (signals,
//! abstract Unix sockets), then applied to the calling thread and everything it starts. Raw
//! system calls: the kernel's structures are small and stable, a crate for them is not needed.
//! What to allow is `policy`'s; this file only speaks the kernel's language.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// `LANDLOCK_CREATE_RULESET_VERSION`: asks for the ABI instead of making a ruleset.
const CREATE_RULESET_VERSION: u32 = 1;
const RULE_PATH_BENEATH: libc::c_int = 1;
const RULE_NET_PORT: libc::c_int = 2;

/// Filesystem rights (`LANDLOCK_ACCESS_FS_*`), by the ABI that brought them.
const FS_EXECUTE: u64 = 1 << 0;
const FS_WRITE_FILE: u64 = 1 << 1;
const FS_READ_FILE: u64 = 1 << 2;
const FS_READ_DIR: u64 = 1 << 3;
/// ABI 1: removing, making files of every kind.
const FS_CHANGE_V1: u64 = (1 << 4)
    | (1 << 5)
    | (1 << 6)
    | (1 << 7)
    | (1 << 8)
    | (1 << 9)
    | (1 << 10)
    | (1 << 11)
    | (1 << 12);
/// ABI 2: linking or renaming across folders.
const FS_REFER: u64 = 1 << 13;
/// ABI 3: truncating.
const FS_TRUNCATE: u64 = 1 << 14;
/// ABI 5: ioctl on devices.
const FS_IOCTL_DEV: u64 = 1 << 15;
/// The rights that may be given on a file (the others only make sense on a folder).
const FS_FILE_RIGHTS: u64 = FS_EXECUTE | FS_WRITE_FILE | FS_READ_FILE | FS_TRUNCATE | FS_IOCTL_DEV;

/// Network rights (ABI 4).
const NET_BIND_TCP: u64 = 1 << 0;
const NET_CONNECT_TCP: u64 = 1 << 1;
/// Scopes (ABI 6): no connecting to abstract Unix sockets, no signals, outside the domain.
const SCOPE_ABSTRACT_UNIX: u64 = 1 << 0;
const SCOPE_SIGNAL: u64 = 1 << 1;

/// The first ABI with TCP rules, and with scopes.
pub const ABI_NET: u32 = 4;
pub const ABI_SCOPE: u32 = 6;

#[repr(C)]
struct RulesetAttr {
    handled_access_fs: u64,
    handled_access_net: u64,
    scoped: u64,
}

#[repr(C, packed)]
struct PathBeneathAttr {
    allowed_access: u64,
    parent_fd: i32,
}

#[repr(C)]
struct NetPortAttr {
    allowed_access: u64,
    port: u64,
}

/// The Landlock ABI this kernel speaks, or why there is none (not built in, not enabled at
/// boot, or blocked by a container's seccomp profile).
pub fn abi() -> Result<u32, String> {
    // SAFETY: with a null attribute, size 0 and the version flag, the call only returns a
    // number; it reads and writes no memory.
    let version = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<RulesetAttr>(),
            0usize,
            CREATE_RULESET_VERSION,
        )
    };
    if version < 1 {
        let e = io::Error::last_os_error();
        return Err(match e.raw_os_error() {
            Some(libc::ENOSYS) => "the kernel has no Landlock".to_owned(),
            Some(libc::EOPNOTSUPP) => "Landlock is not enabled at boot (lsm=)".to_owned(),
            _ => format!("Landlock cannot be used here: {e}"),
        });
    }
    Ok(version as u32)
}

/// What one access beneath a path may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Read files and folders, run programs.
    ReadOnly,
    /// That, and write, make and remove files and folders.
    ReadWrite,
}

/// Which TCP rights a ruleset handles (refuses but where a rule allows).
#[derive(Clone, Copy, Debug)]
pub struct Tcp {
    /// `bind`.
    pub bind: bool,
    /// `connect`.
    pub connect: bool,
}

/// A ruleset being built for one ABI; rights the ABI does not know are left out (handled
/// rights must be ones the kernel knows, or it refuses the ruleset).
pub struct Ruleset {
    fd: OwnedFd,
    abi: u32,
    handled_fs: u64,
}

impl Ruleset {
    /// A ruleset that handles every filesystem right of `abi` when `files` (so what no rule
    /// allows is refused), TCP bind and connect as `tcp` says when the ABI knows them (an unhandled
    /// right is left open), and both scopes when the ABI knows them.
    pub fn new(abi: u32, files: bool, tcp: Tcp) -> io::Result<Ruleset> {
        let handled_fs = match files {
            true => fs_rights(abi),
            false => 0,
        };
        let mut handled_net = 0;
        if abi >= ABI_NET && tcp.bind {
            handled_net |= NET_BIND_TCP;
        }
        if abi >= ABI_NET && tcp.connect {
            handled_net |= NET_CONNECT_TCP;
        }
        let attr = RulesetAttr {
            handled_access_fs: handled_fs,
            handled_access_net: handled_net,
            scoped: match abi >= ABI_SCOPE {
                true => SCOPE_ABSTRACT_UNIX | SCOPE_SIGNAL,
                false => 0,
            },
        };
        // The structure grew with the ABI: give the kernel only the fields it knows.
        let size = match abi {
            0..=3 => std::mem::size_of::<u64>(),
            4 | 5 => 2 * std::mem::size_of::<u64>(),
            _ => std::mem::size_of::<RulesetAttr>(),
        };
        // SAFETY: the attribute lives for the call and `size` does not exceed it.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_landlock_create_ruleset,
                &attr as *const RulesetAttr,
                size,
                0u32,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the kernel just returned this descriptor; nothing else owns it.
        let fd = unsafe { OwnedFd::from_raw_fd(fd as libc::c_int) };
        Ok(Ruleset {
            fd,
            abi,
            handled_fs,
        })
    }

    /// Allows `access` beneath `path` (a folder: everything under it; a file: that file).
    pub fn allow_path(&mut self, path: &Path, access: Access) -> io::Result<()> {
        let c_path = CString::new(path.as_os_str().as_bytes())
            .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        // SAFETY: a valid NUL-terminated path; O_PATH opens without reading anything.
        let raw = unsafe { libc::open(c_path.as_ptr(), libc::O_PATH | libc::O_CLOEXEC) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: just opened; owned here and closed when dropped.
        let parent = unsafe { OwnedFd::from_raw_fd(raw) };
        let is_dir = std::fs::metadata(path).map(|m| m.is_dir()).unwrap_or(false);
        let mut rights = match access {
            Access::ReadOnly => FS_EXECUTE | FS_READ_FILE | FS_READ_DIR,
            Access::ReadWrite => self.handled_fs,
        };
        if !is_dir {
            rights &= FS_FILE_RIGHTS;
        }
        let attr = PathBeneathAttr {
            allowed_access: rights & self.handled_fs,
            parent_fd: parent.as_raw_fd(),
        };
        self.add(
            RULE_PATH_BENEATH,
            &attr as *const PathBeneathAttr as *const libc::c_void,
        )
    }

    /// Allows binding (`bind`) or connecting (`!bind`) to TCP `port`.
    pub fn allow_port(&mut self, port: u16, bind: bool) -> io::Result<()> {
        if self.abi < ABI_NET {
            return Ok(());
        }
        let attr = NetPortAttr {
            allowed_access: match bind {
                true => NET_BIND_TCP,
                false => NET_CONNECT_TCP,
            },
            port: u64::from(port),
        };
        self.add(
            RULE_NET_PORT,
            &attr as *const NetPortAttr as *const libc::c_void,
        )
    }

    fn add(&mut self, kind: libc::c_int, attr: *const libc::c_void) -> io::Result<()> {
        // SAFETY: `attr` points to the structure `kind` names, alive for the call.
        let done = unsafe {
            libc::syscall(
                libc::SYS_landlock_add_rule,
                self.fd.as_raw_fd(),
                kind,
                attr,
                0u32,
            )
        };
        match done {
            0 => Ok(()),
            _ => Err(io::Error::last_os_error()),
        }
    }

    /// Applies the ruleset to this thread (the executor is single-threaded here, and every
    /// process it starts inherits it). Needs `PR_SET_NO_NEW_PRIVS` set first. One system call
    /// and no allocation: safe between fork and exec.
    pub fn restrict(&self) -> io::Result<()> {
        // SAFETY: a ruleset descriptor of ours; flags 0.
        let done =
            unsafe { libc::syscall(libc::SYS_landlock_restrict_self, self.fd.as_raw_fd(), 0u32) };
        match done {
            0 => Ok(()),
            _ => Err(io::Error::last_os_error()),
        }
    }
}

/// Every filesystem right `abi` knows.
fn fs_rights(abi: u32) -> u64 {
    let mut rights = FS_EXECUTE | FS_WRITE_FILE | FS_READ_FILE | FS_READ_DIR | FS_CHANGE_V1;
    if abi >= 2 {
        rights |= FS_REFER;
    }
    if abi >= 3 {
        rights |= FS_TRUNCATE;
    }
    if abi >= 5 {
        rights |= FS_IOCTL_DEV;
    }
    rights
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rights_grow_with_the_abi_and_files_take_only_file_rights() {
        assert_eq!(fs_rights(1) & FS_REFER, 0);
        assert_ne!(fs_rights(2) & FS_REFER, 0);
        assert_eq!(fs_rights(4) & FS_IOCTL_DEV, 0);
        assert_ne!(fs_rights(7) & FS_IOCTL_DEV, 0);
        assert_eq!(fs_rights(7) & FS_FILE_RIGHTS & FS_READ_DIR, 0);
        assert_eq!(std::mem::size_of::<PathBeneathAttr>(), 12);
    }
}
