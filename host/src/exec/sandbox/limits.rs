//! An executor's resource limits, set on itself before plugin code runs (lowering a limit needs
//! no privilege): how many processes it may have (a `pids` cgroup of its own where one can be
//! made, else `RLIMIT_NPROC`, which the kernel does not apply to root and which counts the
//! user's processes machine-wide, so it is set only where all of them can be seen), the largest
//! file it may write (`RLIMIT_FSIZE`, with `SIGXFSZ` ignored so a write past it fails with
//! `EFBIG` instead of killing the process) and core dumps (`RLIMIT_CORE`, 0 unless settings
//! raise it).

use std::fs;
use std::path::{Path, PathBuf};

/// What the executor's cgroups are named (with its pid), so stale ones can be found.
const CGROUP_PREFIX: &str = "fiddler-crab-executor-";
/// Where cgroup v1's `pids` hierarchy is usually mounted.
const PIDS_V1: &str = "/sys/fs/cgroup/pids";

/// How the process count was limited.
#[derive(Debug, PartialEq, Eq)]
pub enum ProcessLimit {
    /// A cgroup of its own (`pids.max`).
    Cgroup,
    /// `RLIMIT_NPROC`, counted over the user's processes (set to theirs now plus the limit).
    Rlimit,
    /// Not limited, and why.
    Unlimited(String),
}

/// Limits this process to `processes` at once (threads count), files of `file_size` bytes
/// and core dumps of `core` bytes.
pub fn apply(processes: u64, file_size: u64, core: u64) -> (ProcessLimit, Vec<String>) {
    let mut missing = Vec::new();
    // SAFETY: setting a signal's disposition to "ignore" has no memory effects.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
    }
    for (resource, bytes, name) in [
        (libc::RLIMIT_FSIZE, file_size, "file size"),
        (libc::RLIMIT_CORE, core, "core size"),
    ] {
        if let Err(e) = lower(resource, bytes) {
            missing.push(format!("{name} limit ({e})"));
        }
    }
    let limit = match pids_cgroup(processes) {
        Ok(()) => ProcessLimit::Cgroup,
        // SAFETY: getuid cannot fail.
        Err(why) if unsafe { libc::getuid() } == 0 => ProcessLimit::Unlimited(format!(
            "uid 0 is not held by RLIMIT_NPROC, and no pids cgroup: {why}"
        )),
        Err(_) if !sees_every_process() => ProcessLimit::Unlimited(
            "no pids cgroup, and in a container RLIMIT_NPROC would count this user's processes \
             in every container, which this one cannot see"
                .to_owned(),
        ),
        Err(_) => {
            let now = user_tasks();
            match lower(libc::RLIMIT_NPROC, now.saturating_add(processes)) {
                Ok(()) => ProcessLimit::Rlimit,
                Err(e) => ProcessLimit::Unlimited(format!("RLIMIT_NPROC: {e}")),
            }
        }
    };
    (limit, missing)
}

/// Sets a limit (soft and hard) to at most `value`.
fn lower(resource: libc::__rlimit_resource_t, value: u64) -> std::io::Result<()> {
    let limit = libc::rlimit {
        rlim_cur: value as libc::rlim_t,
        rlim_max: value as libc::rlim_t,
    };
    // SAFETY: a plain structure passed by pointer for the call.
    match unsafe { libc::setrlimit(resource, &limit) } {
        0 => Ok(()),
        _ => Err(std::io::Error::last_os_error()),
    }
}

/// Makes a `pids` cgroup for this process beneath the one it is in, with `pids.max`, and moves
/// into it: cgroup v2 where the `pids` controller is delegated to the server's cgroup, else
/// cgroup v1's `pids` hierarchy where it is mounted and writable. Stale ones of executors that
/// are gone are removed first.
fn pids_cgroup(processes: u64) -> Result<(), String> {
    let candidates = cgroup_parents()?;
    if candidates.is_empty() {
        return Err("no pids controller is delegated to this server's cgroup".to_owned());
    }
    let mut why = String::new();
    for parent in candidates {
        sweep(&parent);
        let dir = parent.join(format!("{CGROUP_PREFIX}{}", std::process::id()));
        let made = fs::create_dir(&dir)
            .or_else(|e| match e.kind() {
                std::io::ErrorKind::AlreadyExists => Ok(()),
                _ => Err(e),
            })
            .and_then(|()| fs::write(dir.join("pids.max"), processes.to_string()))
            .and_then(|()| fs::write(dir.join("cgroup.procs"), std::process::id().to_string()));
        match made {
            Ok(()) => return Ok(()),
            Err(e) => {
                let _ = fs::remove_dir(&dir);
                why = format!("{}: {e}", parent.display());
            }
        }
    }
    Err(why)
}

/// The cgroups an executor's own `pids` cgroup can be made in: this process's cgroup in
/// cgroup v2 where `pids` is delegated to it, and in cgroup v1's `pids` hierarchy. The worker
/// asks the same to find its executors' cgroups (they are made beneath the worker's).
fn cgroup_parents() -> Result<Vec<PathBuf>, String> {
    let own =
        fs::read_to_string("/proc/self/cgroup").map_err(|e| format!("/proc/self/cgroup: {e}"))?;
    let mut candidates = Vec::new();
    for line in own.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(id), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let path = path.trim_start_matches('/');
        if id == "0" && controllers.is_empty() {
            if let Some(mount) = cgroup2_mount() {
                let dir = mount.join(path);
                let delegated = fs::read_to_string(dir.join("cgroup.subtree_control"))
                    .is_ok_and(|c| c.split_whitespace().any(|c| c == "pids"));
                if delegated {
                    candidates.push(dir);
                }
            }
        } else if controllers.split(',').any(|c| c == "pids") {
            candidates.push(Path::new(PIDS_V1).join(path));
        }
    }
    Ok(candidates)
}

/// The processes left in the cgroup of executor `pid` (when it has one): a child that made
/// itself a group of its own is still there, and goes when its executor is killed.
pub fn cgroup_members(pid: u32) -> Vec<u32> {
    // The worker's own cgroups do not move: looked up once, not at every kill.
    static PARENTS: std::sync::OnceLock<Vec<PathBuf>> = std::sync::OnceLock::new();
    let name = format!("{CGROUP_PREFIX}{pid}");
    PARENTS
        .get_or_init(|| cgroup_parents().unwrap_or_default())
        .iter()
        .filter_map(|parent| fs::read_to_string(parent.join(&name).join("cgroup.procs")).ok())
        .flat_map(|procs| {
            procs
                .lines()
                .filter_map(|l| l.trim().parse::<u32>().ok())
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Where cgroup v2 is mounted, from `/proc/self/mountinfo`.
fn cgroup2_mount() -> Option<PathBuf> {
    let info = fs::read_to_string("/proc/self/mountinfo").ok()?;
    info.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        right
            .starts_with("cgroup2 ")
            .then(|| left.split(' ').nth(4).map(PathBuf::from))
            .flatten()
    })
}

/// Removes the empty cgroups of executors that are gone.
fn sweep(parent: &Path) {
    let Ok(entries) = fs::read_dir(parent) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(CGROUP_PREFIX))
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            // Fails while a process is still in it: then it is not stale yet.
            let _ = fs::remove_dir(entry.path());
        }
    }
}

/// Whether this process sees every process of the machine: it is in the first pid namespace
/// (`NSpid` in `/proc/self/status` names one pid, not one per nested namespace).
fn sees_every_process() -> bool {
    fs::read_to_string("/proc/self/status").is_ok_and(|status| {
        status
            .lines()
            .find_map(|l| l.strip_prefix("NSpid:"))
            .is_some_and(|pids| pids.split_whitespace().count() == 1)
    })
}

/// The tasks (processes and threads) of this process's real user now: what `RLIMIT_NPROC`
/// counts, so the limit is set that far above it.
fn user_tasks() -> u64 {
    use std::os::unix::fs::MetadataExt;
    // SAFETY: getuid cannot fail.
    let uid = unsafe { libc::getuid() };
    let Ok(entries) = fs::read_dir("/proc") else {
        return 0;
    };
    entries
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()))
        })
        .filter(|e| e.metadata().is_ok_and(|m| m.uid() == uid))
        .map(|e| fs::read_dir(e.path().join("task")).map_or(1, |tasks| tasks.count() as u64))
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_among_its_users_tasks() {
        assert!(user_tasks() >= 1);
    }
}
