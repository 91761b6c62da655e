//! Capabilities: an executor of a server run as root drops every one (bounding set, ambient,
//! effective, permitted, inheritable) before plugin code runs. It keeps uid 0 (so the files
//! the worker made for it stay its own) but loses what makes root more than an owner:
//! `CAP_SYS_PTRACE` (which would open the undumpable worker's `/proc/PID/environ`),
//! `CAP_DAC_OVERRIDE`, `CAP_KILL`, `CAP_NET_RAW`, `CAP_SYS_ADMIN` and the rest.

use std::io;

/// `_LINUX_CAPABILITY_VERSION_3`: 64-bit sets, as two 32-bit halves.
const CAPABILITY_VERSION_3: u32 = 0x2008_0522;
/// Beyond any capability number a kernel has (`PR_CAPBSET_DROP` says `EINVAL` past the last).
const MAX_CAPABILITY: libc::c_ulong = 64;

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// Whether this process holds any capability now.
pub fn holds_any() -> bool {
    let mut header = CapHeader {
        version: CAPABILITY_VERSION_3,
        pid: 0,
    };
    let mut data = [CapData::default(); 2];
    // SAFETY: capget fills the two structures the header's version describes.
    let done = unsafe {
        libc::syscall(
            libc::SYS_capget,
            &mut header as *mut CapHeader,
            data.as_mut_ptr(),
        )
    };
    done != 0 || data.iter().any(|d| d.effective != 0 || d.permitted != 0)
}

/// Drops every capability of this process for good.
pub fn drop_all() -> io::Result<()> {
    for cap in 0..MAX_CAPABILITY {
        // SAFETY: prctl with integers; EINVAL past the last capability ends the loop.
        if unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0) } != 0 {
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EINVAL) => break,
                // Without CAP_SETPCAP (a binary with file capabilities, run by a user) the
                // bounding set stays; no_new_privs keeps exec from using it, and capset below
                // still clears what the process holds.
                Some(libc::EPERM) => break,
                _ => return Err(e),
            }
        }
    }
    // SAFETY: prctl with integers.
    unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL,
            0,
            0,
            0,
        );
    }
    let header = CapHeader {
        version: CAPABILITY_VERSION_3,
        pid: 0,
    };
    let data = [CapData::default(); 2];
    // SAFETY: capset reads the two structures the header's version describes.
    let done =
        unsafe { libc::syscall(libc::SYS_capset, &header as *const CapHeader, data.as_ptr()) };
    match done {
        0 => Ok(()),
        _ => Err(io::Error::last_os_error()),
    }
}
