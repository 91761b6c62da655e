//! Whose is a loopback port: the listening sockets on it (from `/proc/net/tcp` and `tcp6`) and
//! whether the processes holding them are a program's own (its process group, or descended
//! from it). A program is given a port that was free a moment before; another process may take
//! it first, and a connection that succeeds there must not be taken for the program's. Also
//! who is in a process group (what a failed start left behind).

use std::fs;
use std::io;
use std::net::Ipv4Addr;

/// A TCP socket's state in `/proc/net/tcp`: listening.
const LISTEN: &str = "0A";

/// Who listens on `port` where a connection to 127.0.0.1 can reach.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    /// Nothing listens there.
    Nobody,
    /// Every such listener is held by the program's processes.
    Program,
    /// Another process listens there (or holds one of the listeners).
    Other,
    /// A listener is not among the program's sockets, but one of its processes could not be
    /// looked into (one that made itself undumpable, say): it may be the program's.
    Unknown,
}

/// Who listens on loopback `port`: the program whose first process is `program_pid` (its
/// process group is `group`), or another process.
pub fn owner(port: u16, program_pid: u32, group: u32) -> Owner {
    let listeners = listening_inodes(port);
    if listeners.is_empty() {
        return Owner::Nobody;
    }
    let (held, all_seen) = program_sockets(program_pid, group);
    match (listeners.iter().all(|inode| held.contains(inode)), all_seen) {
        (true, _) => Owner::Program,
        (false, true) => Owner::Other,
        (false, false) => Owner::Unknown,
    }
}

/// The inodes of the sockets listening on `port` on 127.0.0.1, any IPv4 address, `::` or
/// `::ffff:127.0.0.1` (the addresses a connection to 127.0.0.1 may reach).
fn listening_inodes(port: u16) -> Vec<u64> {
    let mut found = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = fs::read_to_string(table) else {
            continue;
        };
        found.extend(
            text.lines()
                .skip(1)
                .filter_map(|line| listener_on(line, port)),
        );
    }
    found
}

/// The inode of the socket on one `/proc/net/tcp{,6}` line, if it listens on `port` where
/// 127.0.0.1 reaches.
fn listener_on(line: &str, port: u16) -> Option<u64> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    let (local, state, inode) = (fields.get(1)?, fields.get(3)?, fields.get(9)?);
    if *state != LISTEN {
        return None;
    }
    let (address, local_port) = local.split_once(':')?;
    if u16::from_str_radix(local_port, 16).ok()? != port || !reaches_loopback(address) {
        return None;
    }
    inode.parse().ok()
}

/// Whether a connection to 127.0.0.1 can reach a socket bound to this address (in the tables'
/// hex: IPv4 as one native-order word, IPv6 as four).
fn reaches_loopback(hex: &str) -> bool {
    let word = |i: usize| {
        hex.get(i * 8..i * 8 + 8)
            .and_then(|w| u32::from_str_radix(w, 16).ok())
    };
    let loopback = u32::from(Ipv4Addr::LOCALHOST).to_be();
    match hex.len() {
        8 => matches!(word(0), Some(w) if w == 0 || w == loopback),
        32 => {
            let words = [word(0), word(1), word(2), word(3)];
            let any = words.iter().all(|w| *w == Some(0));
            let mapped_prefix = u32::from_be_bytes([0, 0, 0xff, 0xff]).to_be();
            let mapped = words[..2].iter().all(|w| *w == Some(0))
                && words[2] == Some(mapped_prefix)
                && words[3] == Some(loopback);
            any || mapped
        }
        _ => false,
    }
}

/// The socket inodes held by the program: by the processes in its process group or descended
/// from its first process; and whether every one of them could be looked into. A /proc where
/// this process is missing, or has another parent, is another pid namespace's: its processes
/// are not the ones these ids name, and nothing is known.
fn program_sockets(program_pid: u32, group: u32) -> (Vec<u64>, bool) {
    let all = processes();
    // SAFETY: getppid has no preconditions and cannot fail.
    let parent = unsafe { libc::getppid() } as u32;
    let this_proc_is_ours = all
        .iter()
        .any(|(pid, up, _)| *pid == std::process::id() && *up == parent);
    let mut ours: Vec<u32> = all
        .iter()
        .filter(|(pid, _, pgrp)| *pid == program_pid || *pgrp == group)
        .map(|(pid, _, _)| *pid)
        .collect();
    if !ours.contains(&program_pid) {
        ours.push(program_pid);
    }
    // Descendants: a pass per generation, until one adds nobody.
    loop {
        let before = ours.len();
        for (pid, parent, _) in &all {
            if ours.contains(parent) && !ours.contains(pid) {
                ours.push(*pid);
            }
        }
        if ours.len() == before {
            break;
        }
    }
    let mut inodes = Vec::new();
    let mut all_seen = this_proc_is_ours;
    for pid in ours {
        match socket_inodes(pid) {
            Some(held) => inodes.extend(held),
            None => all_seen = false,
        }
    }
    (inodes, all_seen)
}

/// This process's process group.
pub fn own_group() -> u32 {
    // SAFETY: getpgrp has no preconditions and cannot fail.
    unsafe { libc::getpgrp() as u32 }
}

/// The processes in process group `group`.
pub fn group_members(group: u32) -> Vec<u32> {
    processes()
        .into_iter()
        .filter(|(_, _, pgrp)| *pgrp == group)
        .map(|(pid, _, _)| pid)
        .collect()
}

/// Every process's id, parent and process group.
fn processes() -> Vec<(u32, u32, u32)> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| {
            let (parent, pgrp) = parent_and_group_of(pid)?;
            Some((pid, parent, pgrp))
        })
        .collect()
}

/// The parent and process group of `pid`, from `/proc/PID/stat` (`None` when it is gone).
pub fn parent_and_group_of(pid: u32) -> Option<(u32, u32)> {
    parent_and_group(&fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// The parent and process group in a `/proc/PID/stat` line (after the command's last `)`,
/// since the command may hold spaces and parentheses).
fn parent_and_group(stat: &str) -> Option<(u32, u32)> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(1);
    Some((fields.next()?.parse().ok()?, fields.next()?.parse().ok()?))
}

/// The inodes of the sockets `pid` holds open: none if it is gone, `None` if its descriptors
/// cannot be read.
fn socket_inodes(pid: u32) -> Option<Vec<u64>> {
    let fds = match fs::read_dir(format!("/proc/{pid}/fd")) {
        Ok(fds) => fds,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Some(Vec::new()),
        Err(_) => return None,
    };
    let inodes = fds
        .flatten()
        .filter_map(|fd| {
            let target = fs::read_link(fd.path()).ok()?;
            let name = target.to_str()?;
            name.strip_prefix("socket:[")?
                .strip_suffix(']')?
                .parse()
                .ok()
        })
        .collect();
    Some(inodes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;
    use std::process::{Command, Stdio};

    #[test]
    fn a_listener_of_this_process_is_the_programs_when_it_is_the_program() {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
        let port = listener.local_addr().expect("addr").port();
        assert_eq!(owner(port, std::process::id(), u32::MAX), Owner::Program);
    }

    /// Who owns a port this process listens on, for a program that is a sleeping child of this
    /// process with process group `group`.
    fn owner_for_a_sleeping_child(group: impl FnOnce() -> u32) -> Owner {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let mut child = Command::new("sleep")
            .arg("30")
            .stdin(Stdio::null())
            .spawn()
            .expect("sleep");
        let found = owner(port, child.id(), group());
        let _ = child.kill();
        let _ = child.wait();
        found
    }

    #[test]
    fn a_listener_of_another_process_is_not_the_programs() {
        // The sleeper shares this process's group; a group nobody is in leaves its descent.
        assert_eq!(owner_for_a_sleeping_child(|| u32::MAX), Owner::Other);
    }

    #[test]
    fn a_listener_in_the_programs_group_is_the_programs() {
        assert_eq!(
            owner_for_a_sleeping_child(own_group),
            Owner::Program,
            "this process is in the sleeper's group"
        );
    }

    #[test]
    fn a_port_nobody_listens_on_has_no_owner() {
        // Port 0 is never a listener's (a port freed here could be another test's a moment later).
        assert_eq!(owner(0, std::process::id(), 0), Owner::Nobody);
    }

    #[test]
    fn table_lines_are_read_for_loopback_and_wildcard_listeners_only() {
        let v4 = "   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000 0 4242 1";
        assert_eq!(listener_on(v4, 8080), Some(4242));
        assert_eq!(listener_on(v4, 8081), None);
        let any = v4.replace("0100007F", "00000000");
        assert_eq!(listener_on(&any, 8080), Some(4242));
        let elsewhere = v4.replace("0100007F", "0200000A");
        assert_eq!(listener_on(&elsewhere, 8080), None);
        let connected = v4.replace(" 0A ", " 01 ");
        assert_eq!(listener_on(&connected, 8080), None);
        let v6_any = "   0: 00000000000000000000000000000000:1F90 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000  1000 0 77 1";
        assert_eq!(listener_on(v6_any, 8080), Some(77));
        let v6_mapped = v6_any.replace(
            "00000000000000000000000000000000:1F90",
            "0000000000000000FFFF00000100007F:1F90",
        );
        assert_eq!(listener_on(&v6_mapped, 8080), Some(77));
        let v6_loopback = v6_any.replace(
            "00000000000000000000000000000000:1F90",
            "00000000000000000000000001000000:1F90",
        );
        assert_eq!(
            listener_on(&v6_loopback, 8080),
            None,
            "::1 is not 127.0.0.1"
        );
        assert_eq!(listener_on("garbage", 8080), None);
    }

    #[test]
    fn stat_lines_with_odd_commands_are_read() {
        let stat = "123 (a (b) c) S 45 67 67 0 -1";
        assert_eq!(parent_and_group(stat), Some((45, 67)));
        assert_eq!(parent_and_group("broken"), None);
    }
}
