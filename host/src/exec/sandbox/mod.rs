//! The executor's sandbox: what plugin code may touch, set up by the executor on itself before
//! any of it is mapped or started (no privilege needed, so it works as an unprivileged user in
//! a container). `PR_SET_NO_NEW_PRIVS` (set by `spawn` before exec), then Landlock (files
//! beneath the paths `paths` allows, TCP ports its settings open, no signals or abstract Unix
//! sockets outside its own processes), the seccomp filter (`seccomp`), its limits (`limits`),
//! and no capabilities when the server runs as root (`privileges`). What the kernel lacks is left out, and the executor says so in its `Ready`
//! (`Report`): the worker logs it once per version and `/-/status` shows it; `--sandbox
//! strict` refuses such a version instead, `--sandbox off` sets none of it (for debugging).
//!
//! A program that stays up gets one more Landlock layer of its own, made before each start
//! (`for_program`): the TCP ports, since its `$PORT` is only known then. The executor's own
//! layer leaves TCP alone for programs, so the executor can reach that port.

pub mod landlock;
pub mod limits;
pub mod paths;
pub mod private;
pub mod privileges;
pub mod seccomp;
pub mod settings;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::exec::port_owner::parent_and_group_of;
use crate::ids::HandlerKind;
use landlock::{Access, Ruleset, Tcp};
use settings::{Ports, SandboxSettings};

/// The variable that carries `--sandbox` to the executor.
pub const MODE_ENV: &str = "FIDDLER_SANDBOX";
/// The variable that carries the protected paths to the executor, one per line.
pub const PROTECT_ENV: &str = "FIDDLER_SANDBOX_PROTECT";

/// How much sandbox executors get (`--sandbox`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Mode {
    /// None of it: plugins run with the server's rights (for debugging).
    Off,
    /// Everything this kernel can do; what it cannot is said once.
    #[default]
    On,
    /// Everything, or the version is refused.
    Strict,
}

impl Mode {
    /// Parses `off`, `on` or `strict`.
    pub fn parse(text: &str) -> Option<Mode> {
        match text {
            "off" => Some(Mode::Off),
            "on" => Some(Mode::On),
            "strict" => Some(Mode::Strict),
            _ => None,
        }
    }

    /// Its name.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Off => "off",
            Mode::On => "on",
            Mode::Strict => "strict",
        }
    }

    /// The mode this executor was started with (`on` when unset).
    pub fn from_env() -> Mode {
        std::env::var(MODE_ENV)
            .ok()
            .and_then(|m| Mode::parse(&m))
            .unwrap_or_default()
    }
}

/// What one executor's sandbox is made of.
pub struct Plan<'a> {
    /// What it runs.
    pub kind: HandlerKind,
    /// Its library, CGI program or program folder.
    pub file: &'a Path,
    /// A native plugin's own folder.
    pub folder: Option<&'a Path>,
    /// The `env` lines it was given (absolute paths in them are opened read-only).
    pub env: &'a [(String, String)],
    /// What its settings open.
    pub settings: &'a SandboxSettings,
    /// Its private folder (read-write, its `TMPDIR`).
    pub private: &'a Path,
}

/// What an executor's sandbox is, as it reports it.
#[derive(Debug, Default)]
pub struct Report {
    /// The mechanisms in force, in words.
    pub applied: Vec<String>,
    /// What could not be set, each with why.
    pub missing: Vec<String>,
}

/// Between what is in force and what is missing, in a report's line.
const MISSING: &str = "; missing: ";

impl Report {
    /// One line: what is in force, then what is missing (`split_line` takes it apart).
    pub fn line(&self) -> String {
        let mut line = match self.applied.is_empty() {
            true => "off".to_owned(),
            false => self.applied.join(", "),
        };
        if !self.missing.is_empty() {
            let _ = write!(line, "{MISSING}{}", self.missing.join("; "));
        }
        line
    }
}

/// A report's line as the worker gets it: what is in force, and what is missing if anything.
pub fn split_line(line: &str) -> (&str, Option<&str>) {
    match line.split_once(MISSING) {
        Some((applied, missing)) => (applied, Some(missing)),
        None => (line, None),
    }
}

/// How `protected` travels to the executor: a line a path, `sealed ` or `whole ` in front.
pub fn protected_to_env(protected: &paths::Protected) -> String {
    let sealed = protected.sealed.iter().map(|p| ("sealed", p));
    let whole = protected.never_whole.iter().map(|p| ("whole", p));
    sealed
        .chain(whole)
        .map(|(kind, path)| format!("{kind} {}", path.display()))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The protected paths the worker named.
pub fn protected_from_env() -> paths::Protected {
    let mut protected = paths::Protected::default();
    let text = std::env::var_os(PROTECT_ENV).unwrap_or_default();
    for line in text.to_string_lossy().lines() {
        match line.split_once(' ') {
            Some(("sealed", path)) => protected.sealed.push(PathBuf::from(path)),
            Some(("whole", path)) => protected.never_whole.push(PathBuf::from(path)),
            _ => {}
        }
    }
    protected
}

/// Sets this executor's sandbox up as `plan` says (nothing under `Mode::Off`). Call it before
/// any plugin code is loaded or started, while the process is single-threaded.
pub fn enter(mode: Mode, plan: &Plan<'_>) -> Report {
    let mut report = Report::default();
    if mode == Mode::Off {
        return report;
    }
    // SAFETY: prctl with integer arguments; it reads no memory of ours.
    let nnp = unsafe { libc::prctl(libc::PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) } == 1;
    match nnp {
        true => report.applied.push("no_new_privs".to_owned()),
        false => report
            .missing
            .push("no_new_privs (the executor was not started by a worker)".to_owned()),
    }
    let s = plan.settings;
    let processes = s.processes.unwrap_or(settings::DEFAULT_PROCESSES);
    let file_size = s.file_size.unwrap_or(settings::DEFAULT_FILE_SIZE);
    let (limit, missing) = limits::apply(processes, file_size, s.core.unwrap_or(0));
    report.missing.extend(missing);
    match limit {
        limits::ProcessLimit::Cgroup => report.applied.push(format!("pids cgroup {processes}")),
        limits::ProcessLimit::Rlimit => report
            .applied
            .push(format!("RLIMIT_NPROC +{processes} (shared by the user)")),
        limits::ProcessLimit::Unlimited(why) => {
            report.missing.push(format!("process limit ({why})"))
        }
    }
    report
        .applied
        .push(format!("file size {}", human(file_size)));
    // After the cgroup (moving into it may need them), before anything else.
    if privileges::holds_any() {
        match privileges::drop_all() {
            Ok(()) => report.applied.push("no capabilities".to_owned()),
            Err(e) => report.missing.push(format!("dropping capabilities ({e})")),
        }
    }
    if nnp {
        landlock_layer(plan, &mut report);
        let openings = seccomp::Openings {
            guarded: guarded_pids(),
            udp: s.udp,
            unix: s.unix || plan.kind == HandlerKind::Program,
        };
        match seccomp::install(&openings) {
            Ok(()) => report.applied.push("seccomp".to_owned()),
            Err(e) => report.missing.push(format!("seccomp ({e})")),
        }
    }
    report
}

/// The worker (this executor's parent) and the supervisor (the worker's parent, unless the
/// worker runs alone): their pids, their threads and their process groups.
fn guarded_pids() -> Vec<u32> {
    // SAFETY: getppid cannot fail.
    let worker = unsafe { libc::getppid() } as u32;
    let mut guarded = Vec::new();
    let supervisor = parent_and_group_of(worker).map(|(parent, _)| parent);
    for pid in [Some(worker), supervisor].into_iter().flatten() {
        guarded.push(pid);
        if let Some((_, group)) = parent_and_group_of(pid) {
            guarded.push(group);
        }
        // Its threads (a signal to any one reaches the whole process); the few a server has.
        if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
            let tids = tasks
                .flatten()
                .filter_map(|t| t.file_name().to_str()?.parse::<u32>().ok());
            guarded.extend(tids.take(MAX_GUARDED_THREADS));
        }
    }
    guarded.sort_unstable();
    guarded.dedup();
    guarded
}

/// The most threads of one guarded process named in the filter.
const MAX_GUARDED_THREADS: usize = 32;

/// The executor's Landlock layer: files always, TCP for everything but programs (theirs comes
/// with `for_program`), scopes where the kernel has them.
fn landlock_layer(plan: &Plan<'_>, report: &mut Report) {
    let abi = match landlock::abi() {
        Ok(abi) => abi,
        Err(why) => {
            report
                .missing
                .push(format!("files, network and signals ({why})"));
            return;
        }
    };
    let net_here = plan.kind != HandlerKind::Program;
    let tcp = match net_here {
        true => handled(plan.settings),
        false => Tcp {
            bind: false,
            connect: false,
        },
    };
    let mut closed = 0;
    let built = Ruleset::new(abi, true, tcp).and_then(|mut ruleset| {
        let protected = protected_from_env();
        let mut read = paths::system();
        read.extend(paths::named_in_env(plan.env));
        read.extend(plan.settings.read.iter().cloned());
        let mut write: Vec<PathBuf> = paths::DEVICES.iter().map(PathBuf::from).collect();
        write.extend(plan.settings.write.iter().cloned());
        // A path that vanished since it was listed is only not opened.
        let (read, closed_read) = paths::around_protected(&read, &protected);
        for path in read {
            let _ = ruleset.allow_path(&path, Access::ReadOnly);
        }
        let (write, closed_write) = paths::around_protected(&write, &protected);
        for path in write {
            let _ = ruleset.allow_path(&path, Access::ReadWrite);
        }
        closed = closed_read + closed_write;
        // Its own: inside protected folders (the plugins folder, the worker's private one),
        // and opened all the same.
        for own in [Some(plan.file), plan.folder].into_iter().flatten() {
            ruleset.allow_path(own, Access::ReadOnly)?;
        }
        ruleset.allow_path(plan.private, Access::ReadWrite)?;
        if net_here {
            allow_ports(&mut ruleset, &plan.settings.connect, false)?;
            allow_ports(&mut ruleset, &plan.settings.bind, true)?;
        }
        ruleset.restrict()
    });
    if closed > 0 {
        report.missing.push(format!(
            "{closed} path(s) left shut: too many entries to open around a protected folder"
        ));
    }
    match built {
        Err(e) => report.missing.push(format!("Landlock ({e})")),
        Ok(()) => {
            let mut what = vec!["files"];
            if abi >= landlock::ABI_NET {
                what.push("tcp");
            } else {
                report.missing.push(format!(
                    "tcp rules (Landlock ABI {abi}; they need {})",
                    landlock::ABI_NET
                ));
            }
            if abi >= landlock::ABI_SCOPE {
                what.push("signals");
            } else {
                report.missing.push(format!(
                    "signal scoping (Landlock ABI {abi}; it needs {}): this plugin can signal \
                     the worker",
                    landlock::ABI_SCOPE
                ));
            }
            report
                .applied
                .push(format!("landlock {abi} ({})", what.join(", ")));
        }
    }
}

/// A ruleset for one start of a program that stays up: TCP bind on its `$PORT` and what its
/// settings open, connect where its settings allow; applied in the program's own process
/// between fork and exec (`Ruleset::restrict` is one system call). `None` when the kernel
/// has no TCP rules or the mode is off.
pub fn for_program(mode: Mode, port: u16, settings: &SandboxSettings) -> Option<Ruleset> {
    if mode == Mode::Off {
        return None;
    }
    let abi = landlock::abi()
        .ok()
        .filter(|&abi| abi >= landlock::ABI_NET)?;
    // Files are the executor's layer's: this one adds only the ports.
    let mut ruleset = Ruleset::new(abi, false, handled(settings)).ok()?;
    ruleset.allow_port(port, true).ok()?;
    allow_ports(&mut ruleset, &settings.bind, true).ok()?;
    allow_ports(&mut ruleset, &settings.connect, false).ok()?;
    Some(ruleset)
}

/// The TCP rights a plugin's settings keep handled: all but those open to every port (left
/// unhandled rather than allowed port by port).
fn handled(settings: &SandboxSettings) -> Tcp {
    Tcp {
        bind: settings.bind != Ports::Any,
        connect: settings.connect != Ports::Any,
    }
}

fn allow_ports(ruleset: &mut Ruleset, ports: &Ports, bind: bool) -> std::io::Result<()> {
    match ports {
        Ports::Some(list) => list.iter().try_for_each(|&p| ruleset.allow_port(p, bind)),
        Ports::None | Ports::Any => Ok(()),
    }
}

/// A size in the units settings take.
fn human(bytes: u64) -> String {
    match bytes {
        b if b >= 1 << 30 && b % (1 << 30) == 0 => format!("{}G", b >> 30),
        b if b >= 1 << 20 && b % (1 << 20) == 0 => format!("{}M", b >> 20),
        b if b >= 1 << 10 && b % (1 << 10) == 0 => format!("{}K", b >> 10),
        b => b.to_string(),
    }
}
