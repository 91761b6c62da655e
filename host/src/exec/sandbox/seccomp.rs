//! The executor's system-call filter (seccomp BPF): what Landlock cannot say. No new session
//! (`setsid`: a kill past the deadline must take every process), no joining another process
//! group (`setpgid` only as `setpgid(0, 0)`, which plugin-api's program runner needs to kill
//! what it started as a whole), no new namespaces (`unshare`, `setns`, `clone` with a
//! `CLONE_NEW*` flag; `clone3` says it does not exist, so the C library falls back to `clone`),
//! no tracing or reading other processes' memory, no kernel keyrings, eBPF, perf events,
//! userfaultfd, io_uring (which makes sockets without the `socket` call) or `pidfd_send_signal`,
//! and sockets only of the kinds Landlock's TCP rules govern (TCP), with Unix sockets, UDP and
//! netlink route only where the plugin's kind or settings open them. As a fallback for kernels
//! without Landlock's signal scope (ABI 6), no signal to the worker's or the supervisor's pid,
//! threads (those alive at the start) or groups, or to every process at once. Refused calls
//! fail with an errno (`EPERM`, or `EACCES` for a socket) and the process goes on. Built for the
//! architecture this binary is; a call made through another ABI (32-bit `int 0x80`, x32) is
//! refused whole.

use std::io;

/// The instructions of a classic BPF program, as the kernel's `sock_filter`.
type Insn = libc::sock_filter;

const LD_W_ABS: u16 = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
const JEQ_K: u16 = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
const JGE_K: u16 = (libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K) as u16;
const AND_K: u16 = (libc::BPF_ALU | libc::BPF_AND | libc::BPF_K) as u16;
const JSET_K: u16 = (libc::BPF_JMP | libc::BPF_JSET | libc::BPF_K) as u16;
const RET_K: u16 = (libc::BPF_RET | libc::BPF_K) as u16;

/// Offsets in `seccomp_data`: the call's number, its architecture, its arguments (low half).
const OFFSET_NR: u32 = 0;
const OFFSET_ARCH: u32 = 4;
const fn offset_arg(n: u32) -> u32 {
    16 + 8 * n
}

#[cfg(target_arch = "x86_64")]
const ARCH: u32 = 0xC000_003E;
#[cfg(target_arch = "aarch64")]
const ARCH: u32 = 0xC000_00B7;
/// x32 calls on x86_64 carry this bit in their number.
#[cfg(target_arch = "x86_64")]
const X32_BIT: u32 = 0x4000_0000;

/// The calls refused outright, with `EPERM`.
const REFUSED: &[libc::c_long] = &[
    libc::SYS_setsid,
    libc::SYS_ptrace,
    libc::SYS_process_vm_readv,
    libc::SYS_process_vm_writev,
    libc::SYS_keyctl,
    libc::SYS_add_key,
    libc::SYS_request_key,
    libc::SYS_bpf,
    libc::SYS_perf_event_open,
    libc::SYS_userfaultfd,
    libc::SYS_io_uring_setup,
    libc::SYS_pidfd_send_signal,
    libc::SYS_setns,
];
/// Namespace flags: no new namespace (a user namespace's capabilities reach kernel code, the
/// traffic-control and netfilter paths, that an unprivileged process never could).
const CLONE_NEW: u32 = (libc::CLONE_NEWNS
    | libc::CLONE_NEWCGROUP
    | libc::CLONE_NEWUTS
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWUSER
    | libc::CLONE_NEWPID
    | libc::CLONE_NEWNET) as u32
    | 0x80; // CLONE_NEWTIME

/// What the filter lets through besides the always-safe, and whom it keeps signals from.
#[derive(Clone, Debug, Default)]
pub struct Openings {
    /// Processes no signal may reach, by pid (or thread id) or as a group: the worker's and
    /// the supervisor's pids, threads and groups. A fallback for kernels without Landlock's
    /// signal scope (ABI 6), which covers every way there is (a pidfd from `/proc` too).
    pub guarded: Vec<u32>,
    /// UDP sockets (name lookups need them) and netlink route sockets (`getaddrinfo` asks it
    /// which addresses the machine has).
    pub udp: bool,
    /// New Unix sockets (Landlock does not govern connecting to a socket file, so a plugin
    /// with them can reach any it finds: another program's, the system's). Programs that stay
    /// up have them (their `FIDDLER_SOCKET`); `socketpair` is always allowed (no path).
    pub unix: bool,
}

/// A jump target while the program is written: an index of an instruction to come.
#[derive(Clone, Copy)]
enum Target {
    Next,
    Allow,
    Refuse,
    RefuseSocket,
    Inet,
    OwnGroup,
    Signal,
    Namespaces,
    NoSuchCall,
    Tcp,
    Udp,
    Netlink,
}

/// One instruction before its jumps are resolved.
struct Step {
    code: u16,
    k: u32,
    on_true: Target,
    on_false: Target,
}

fn step(code: u16, k: u32) -> Step {
    Step {
        code,
        k,
        on_true: Target::Next,
        on_false: Target::Next,
    }
}

fn jump_if(k: u32, on_true: Target, on_false: Target) -> Step {
    Step {
        code: JEQ_K,
        k,
        on_true,
        on_false,
    }
}

/// The filter's program.
pub fn program(openings: &Openings) -> Vec<Insn> {
    let errno = |e: i32| libc::SECCOMP_RET_ERRNO | (e as u32 & libc::SECCOMP_RET_DATA);
    let mut steps = vec![
        step(LD_W_ABS, OFFSET_ARCH),
        jump_if(ARCH, Target::Next, Target::Refuse),
        step(LD_W_ABS, OFFSET_NR),
    ];
    #[cfg(target_arch = "x86_64")]
    steps.push(Step {
        code: JGE_K,
        k: X32_BIT,
        on_true: Target::Refuse,
        on_false: Target::Next,
    });
    for &nr in REFUSED {
        steps.push(jump_if(nr as u32, Target::Refuse, Target::Next));
    }
    steps.push(jump_if(
        libc::SYS_setpgid as u32,
        Target::OwnGroup,
        Target::Next,
    ));
    // clone3 hides its flags behind a pointer: "no such call", and the C library falls back to
    // clone, whose flags can be read; unshare and clone must not make namespaces.
    steps.push(jump_if(
        libc::SYS_clone3 as u32,
        Target::NoSuchCall,
        Target::Next,
    ));
    steps.push(jump_if(
        libc::SYS_clone as u32,
        Target::Namespaces,
        Target::Next,
    ));
    steps.push(jump_if(
        libc::SYS_unshare as u32,
        Target::Namespaces,
        Target::Next,
    ));
    // Calls whose first argument names a process (or group) to signal.
    for nr in [
        libc::SYS_kill,
        libc::SYS_tkill,
        libc::SYS_tgkill,
        libc::SYS_rt_sigqueueinfo,
        libc::SYS_rt_tgsigqueueinfo,
        libc::SYS_pidfd_open,
    ] {
        steps.push(jump_if(nr as u32, Target::Signal, Target::Next));
    }
    steps.push(jump_if(
        libc::SYS_socket as u32,
        Target::Next,
        Target::Allow,
    ));
    // socket(domain, type, protocol)
    steps.push(step(LD_W_ABS, offset_arg(0)));
    if openings.unix {
        steps.push(jump_if(libc::AF_UNIX as u32, Target::Allow, Target::Next));
    }
    steps.push(jump_if(libc::AF_INET as u32, Target::Inet, Target::Next));
    steps.push(jump_if(libc::AF_INET6 as u32, Target::Inet, Target::Next));
    if openings.udp {
        steps.push(jump_if(
            libc::AF_NETLINK as u32,
            Target::Netlink,
            Target::Next,
        ));
    }
    steps.push(step(RET_K, errno(libc::EACCES)));
    let mut labels = vec![(Target::Inet, steps.len())];
    steps.push(step(LD_W_ABS, offset_arg(1)));
    steps.push(step(AND_K, 0xf)); // the type without SOCK_NONBLOCK, SOCK_CLOEXEC
    steps.push(jump_if(libc::SOCK_STREAM as u32, Target::Tcp, Target::Next));
    if openings.udp {
        steps.push(jump_if(libc::SOCK_DGRAM as u32, Target::Udp, Target::Next));
    }
    steps.push(step(RET_K, errno(libc::EACCES)));
    // kill(pid, ...) and the like: never a guarded process, its group, or every process (-1).
    labels.push((Target::Signal, steps.len()));
    steps.push(step(LD_W_ABS, offset_arg(0)));
    steps.push(jump_if(u32::MAX, Target::Refuse, Target::Next));
    for &pid in openings.guarded.iter().filter(|&&pid| pid > 0) {
        steps.push(jump_if(pid, Target::Refuse, Target::Next));
        steps.push(jump_if(pid.wrapping_neg(), Target::Refuse, Target::Next));
    }
    steps.push(step(RET_K, libc::SECCOMP_RET_ALLOW));
    labels.push((Target::Namespaces, steps.len()));
    steps.push(step(LD_W_ABS, offset_arg(0)));
    steps.push(Step {
        code: JSET_K,
        k: CLONE_NEW,
        on_true: Target::Refuse,
        on_false: Target::Allow,
    });
    labels.push((Target::NoSuchCall, steps.len()));
    steps.push(step(RET_K, errno(libc::ENOSYS)));
    // setpgid(pid, pgid): only (0, 0), a group of its own.
    labels.push((Target::OwnGroup, steps.len()));
    steps.push(step(LD_W_ABS, offset_arg(0)));
    steps.push(jump_if(0, Target::Next, Target::Refuse));
    steps.push(step(LD_W_ABS, offset_arg(1)));
    steps.push(jump_if(0, Target::Allow, Target::Refuse));
    // The protocol: the type's default (0) or its own, nothing else (SCTP is a stream too).
    for (label, protocol) in [
        (Target::Tcp, libc::IPPROTO_TCP),
        (Target::Udp, libc::IPPROTO_UDP),
    ] {
        labels.push((label, steps.len()));
        steps.push(step(LD_W_ABS, offset_arg(2)));
        steps.push(jump_if(0, Target::Allow, Target::Next));
        steps.push(jump_if(
            protocol as u32,
            Target::Allow,
            Target::RefuseSocket,
        ));
    }
    labels.push((Target::Netlink, steps.len()));
    steps.push(step(LD_W_ABS, offset_arg(2)));
    steps.push(jump_if(
        libc::NETLINK_ROUTE as u32,
        Target::Allow,
        Target::RefuseSocket,
    ));
    labels.push((Target::RefuseSocket, steps.len()));
    steps.push(step(RET_K, errno(libc::EACCES)));
    labels.push((Target::Refuse, steps.len()));
    steps.push(step(RET_K, errno(libc::EPERM)));
    labels.push((Target::Allow, steps.len()));
    steps.push(step(RET_K, libc::SECCOMP_RET_ALLOW));

    let find = |target: Target| {
        labels
            .iter()
            .find(|(t, _)| std::mem::discriminant(t) == std::mem::discriminant(&target))
            .map(|(_, at)| *at)
    };
    steps
        .iter()
        .enumerate()
        .map(|(at, s)| {
            let offset = |target: Target| match target {
                Target::Next => 0,
                other => {
                    let to = find(other).expect("every jump target is placed in the program");
                    u8::try_from(to - at - 1).expect("the filter is shorter than 256 steps")
                }
            };
            Insn {
                code: s.code,
                jt: offset(s.on_true),
                jf: offset(s.on_false),
                k: s.k,
            }
        })
        .collect()
}

/// Installs the filter on this thread (and so on everything it starts). Needs
/// `PR_SET_NO_NEW_PRIVS` first.
pub fn install(openings: &Openings) -> io::Result<()> {
    let program = program(openings);
    let prog = libc::sock_fprog {
        len: program.len() as u16,
        filter: program.as_ptr() as *mut Insn,
    };
    // SAFETY: the program outlives the call; the kernel copies it.
    let done = unsafe {
        libc::prctl(
            libc::PR_SET_SECCOMP,
            libc::SECCOMP_MODE_FILTER,
            &prog as *const libc::sock_fprog,
        )
    };
    match done {
        0 => Ok(()),
        _ => Err(io::Error::last_os_error()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_jump_lands_inside_the_program_and_it_ends_in_returns() {
        for (udp, unix) in [(false, false), (true, false), (false, true), (true, true)] {
            let program = program(&Openings {
                guarded: vec![1000, 999],
                udp,
                unix,
            });
            let len = program.len();
            for (at, insn) in program.iter().enumerate() {
                if insn.code == JEQ_K || insn.code == JGE_K || insn.code == JSET_K {
                    assert!(at + 1 + (insn.jt as usize) < len);
                    assert!(at + 1 + (insn.jf as usize) < len);
                }
            }
            assert_eq!(program[len - 1].code, RET_K);
            assert_eq!(program[len - 1].k, libc::SECCOMP_RET_ALLOW);
        }
    }

    /// Runs the filter on one call, as the kernel would (the few instructions it uses).
    fn verdict(program: &[Insn], nr: libc::c_long, args: [u64; 3]) -> u32 {
        let field = |offset: u32| match offset {
            OFFSET_NR => nr as u32,
            OFFSET_ARCH => ARCH,
            o => args[((o - 16) / 8) as usize] as u32,
        };
        let (mut at, mut a) = (0usize, 0u32);
        loop {
            let insn = &program[at];
            at += 1;
            match insn.code {
                LD_W_ABS => a = field(insn.k),
                AND_K => a &= insn.k,
                JEQ_K | JGE_K | JSET_K => {
                    let taken = match insn.code {
                        JEQ_K => a == insn.k,
                        JGE_K => a >= insn.k,
                        _ => a & insn.k != 0,
                    };
                    at += usize::from(if taken { insn.jt } else { insn.jf });
                }
                RET_K => return insn.k,
                other => panic!("an instruction the test does not know: {other:#x}"),
            }
        }
    }

    #[test]
    fn each_call_gets_the_verdict_the_sandbox_promises() {
        let eperm = libc::SECCOMP_RET_ERRNO | libc::EPERM as u32;
        let eacces = libc::SECCOMP_RET_ERRNO | libc::EACCES as u32;
        let allow = libc::SECCOMP_RET_ALLOW;
        let closed = program(&Openings {
            guarded: vec![1000, 999, 1001],
            udp: false,
            unix: false,
        });
        let open = program(&Openings {
            guarded: vec![1000, 999, 1001],
            udp: true,
            unix: true,
        });
        let neg = |pid: i64| pid as u64;
        let table: &[(&[Insn], libc::c_long, [u64; 3], u32)] = &[
            (&closed, libc::SYS_read, [0, 0, 0], allow),
            (&closed, libc::SYS_setsid, [0, 0, 0], eperm),
            (&closed, libc::SYS_setpgid, [0, 0, 0], allow),
            (&closed, libc::SYS_setpgid, [0, 1000, 0], eperm),
            (&closed, libc::SYS_kill, [1000, 9, 0], eperm),
            (&closed, libc::SYS_kill, [999, 9, 0], eperm),
            (&closed, libc::SYS_kill, [neg(-1000), 9, 0], eperm),
            (&closed, libc::SYS_kill, [neg(-1), 9, 0], eperm),
            (&closed, libc::SYS_kill, [0, 9, 0], allow),
            (&closed, libc::SYS_kill, [4242, 15, 0], allow),
            (&closed, libc::SYS_tgkill, [1000, 1000, 9], eperm),
            (&closed, libc::SYS_pidfd_open, [999, 0, 0], eperm),
            (&closed, libc::SYS_tkill, [1001, 9, 0], eperm),
            (&closed, libc::SYS_pidfd_send_signal, [5, 9, 0], eperm),
            (
                &closed,
                libc::SYS_clone,
                [libc::SIGCHLD as u64, 0, 0],
                allow,
            ),
            (&closed, libc::SYS_clone, [0x003d_0f00, 0, 0], allow),
            (
                &closed,
                libc::SYS_clone,
                [libc::CLONE_NEWUSER as u64, 0, 0],
                eperm,
            ),
            (
                &closed,
                libc::SYS_unshare,
                [libc::CLONE_NEWNET as u64, 0, 0],
                eperm,
            ),
            (
                &closed,
                libc::SYS_unshare,
                [libc::CLONE_FILES as u64, 0, 0],
                allow,
            ),
            (
                &closed,
                libc::SYS_clone3,
                [0, 88, 0],
                libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32,
            ),
            (&closed, libc::SYS_ptrace, [16, 1000, 0], eperm),
            (&closed, libc::SYS_io_uring_setup, [8, 0, 0], eperm),
            (
                &closed,
                libc::SYS_socket,
                [libc::AF_INET as u64, libc::SOCK_STREAM as u64, 0],
                allow,
            ),
            (
                &closed,
                libc::SYS_socket,
                [
                    libc::AF_INET6 as u64,
                    (libc::SOCK_STREAM | libc::SOCK_CLOEXEC) as u64,
                    6,
                ],
                allow,
            ),
            (
                &closed,
                libc::SYS_socket,
                [libc::AF_INET as u64, libc::SOCK_STREAM as u64, 132],
                eacces,
            ),
            (
                &closed,
                libc::SYS_socket,
                [libc::AF_INET as u64, libc::SOCK_DGRAM as u64, 0],
                eacces,
            ),
            (
                &closed,
                libc::SYS_socket,
                [libc::AF_INET as u64, libc::SOCK_RAW as u64, 1],
                eacces,
            ),
            (
                &closed,
                libc::SYS_socket,
                [libc::AF_UNIX as u64, libc::SOCK_STREAM as u64, 0],
                eacces,
            ),
            (
                &closed,
                libc::SYS_socket,
                [libc::AF_NETLINK as u64, libc::SOCK_RAW as u64, 0],
                eacces,
            ),
            (
                &closed,
                libc::SYS_socket,
                [libc::AF_PACKET as u64, libc::SOCK_RAW as u64, 0],
                eacces,
            ),
            (
                &open,
                libc::SYS_socket,
                [libc::AF_INET as u64, libc::SOCK_DGRAM as u64, 17],
                allow,
            ),
            (
                &open,
                libc::SYS_socket,
                [libc::AF_UNIX as u64, libc::SOCK_STREAM as u64, 0],
                allow,
            ),
            (
                &open,
                libc::SYS_socket,
                [libc::AF_NETLINK as u64, libc::SOCK_RAW as u64, 0],
                allow,
            ),
            (
                &open,
                libc::SYS_socket,
                [libc::AF_NETLINK as u64, libc::SOCK_RAW as u64, 9],
                eacces,
            ),
        ];
        for (i, (program, nr, args, expected)) in table.iter().enumerate() {
            assert_eq!(
                verdict(program, *nr, *args),
                *expected,
                "case {i}: call {nr} {args:?}"
            );
        }
    }
}
