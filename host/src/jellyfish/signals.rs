//! The machine's signals for the light, read from files kept open: CPU and memory pressure
//! (PSI `some` totals: the cgroup's `cpu.pressure` / `memory.pressure` when the server runs in
//! a cgroup v2 that has them, `/proc/pressure/*` otherwise) and memory headroom (the cgroup's
//! `memory.max - memory.current` when it has a limit, else `MemAvailable`). Where PSI is
//! missing, CPU contention comes from `/proc/stat` (runnable tasks beyond the CPUs) and there
//! is no memory pressure. Each read is one `pread` per file: cheap enough for the loop.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Where the files are (the real roots, or a test's recorded copies).
#[derive(Clone, Debug)]
pub struct Roots {
    /// `/proc`.
    pub proc: PathBuf,
    /// Where cgroup v2 is mounted: `/sys/fs/cgroup`, or `/sys/fs/cgroup/unified` on a
    /// hybrid system.
    pub cgroup: Vec<PathBuf>,
}

impl Default for Roots {
    fn default() -> Roots {
        Roots {
            proc: PathBuf::from("/proc"),
            cgroup: vec![
                PathBuf::from("/sys/fs/cgroup"),
                PathBuf::from("/sys/fs/cgroup/unified"),
            ],
        }
    }
}

/// One window's signals, as fractions.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Signals {
    /// Share of the window in which some task waited for a CPU (0..=1).
    pub cpu_pressure: f64,
    /// Share of the window in which some task waited for memory (0..=1).
    pub memory_pressure: f64,
    /// Memory still available, as a share of what may be used (`None`: unknown).
    pub headroom: Option<f64>,
    /// The same in bytes.
    pub headroom_bytes: Option<u64>,
}

/// The files, kept open, and the last totals read.
pub struct Sampler {
    cpu_psi: Option<File>,
    memory_psi: Option<File>,
    /// cgroup v2 `memory.max`, `memory.current` and `memory.stat` (only when it has a limit).
    cgroup_memory: Option<(File, File, Option<File>)>,
    meminfo: Option<File>,
    /// `/proc/stat`, for CPU contention when there is no PSI.
    stat: Option<File>,
    cpus: usize,
    last: Option<Totals>,
    /// Where the signals come from, said once at start.
    pub source: String,
}

/// Cumulative counters at one instant.
#[derive(Clone, Copy, Debug)]
struct Totals {
    at: Instant,
    cpu_stall_us: Option<u64>,
    memory_stall_us: Option<u64>,
}

impl Sampler {
    /// Opens what this machine has under `roots`.
    pub fn open(roots: &Roots) -> Sampler {
        let cgroup = own_cgroup(roots);
        let in_cgroup = |name: &str| cgroup.as_ref().and_then(|dir| open(&dir.join(name)));
        let proc_psi = |name: &str| open(&roots.proc.join("pressure").join(name));
        let (cpu_psi, cpu_from) = match in_cgroup("cpu.pressure") {
            Some(file) => (Some(file), "the cgroup's cpu.pressure"),
            None => (proc_psi("cpu"), "/proc/pressure/cpu"),
        };
        let memory_psi = in_cgroup("memory.pressure").or_else(|| proc_psi("memory"));
        let cgroup_memory = match (in_cgroup("memory.max"), in_cgroup("memory.current")) {
            (Some(max), Some(current)) if read_text(&max).is_some_and(|t| t.trim() != "max") => {
                Some((max, current, in_cgroup("memory.stat")))
            }
            _ => None,
        };
        let meminfo = open(&roots.proc.join("meminfo"));
        let stat = open(&roots.proc.join("stat"));
        let cpus = std::thread::available_parallelism().map_or(1, usize::from);
        let pressure = match (&cpu_psi, psi_total(cpu_psi.as_ref())) {
            (Some(_), Some(_)) => format!("CPU and memory pressure from {cpu_from}"),
            _ => "no pressure stall information (PSI): CPU contention from /proc/stat \
                  (runnable tasks beyond the CPUs), no memory pressure"
                .to_owned(),
        };
        let headroom = if cgroup_memory.is_some() {
            "headroom from the cgroup's memory.max"
        } else {
            "headroom from MemAvailable"
        };
        Sampler {
            cpu_psi: cpu_psi.filter(|f| psi_total(Some(f)).is_some()),
            memory_psi: memory_psi.filter(|f| psi_total(Some(f)).is_some()),
            cgroup_memory,
            meminfo,
            stat,
            cpus,
            last: None,
            source: format!("{pressure}; {headroom}"),
        }
    }

    /// Whether PSI is there (else the `/proc/stat` stand-in is used).
    pub fn has_psi(&self) -> bool {
        self.cpu_psi.is_some()
    }

    /// The signals since the last read (pressures are 0 on the first).
    pub fn read(&mut self) -> Signals {
        let now = Totals {
            at: Instant::now(),
            cpu_stall_us: psi_total(self.cpu_psi.as_ref()),
            memory_stall_us: psi_total(self.memory_psi.as_ref()),
        };
        let share = |before: Option<u64>, after: Option<u64>, window_us: f64| match (before, after)
        {
            (Some(b), Some(a)) if window_us > 0.0 => {
                (a.saturating_sub(b) as f64 / window_us).min(1.0)
            }
            _ => 0.0,
        };
        let (cpu_pressure, memory_pressure) = match self.last {
            Some(last) => {
                let window_us = now.at.duration_since(last.at).as_micros() as f64;
                (
                    share(last.cpu_stall_us, now.cpu_stall_us, window_us),
                    share(last.memory_stall_us, now.memory_stall_us, window_us),
                )
            }
            None => (0.0, 0.0),
        };
        let cpu_pressure = if self.cpu_psi.is_some() {
            cpu_pressure
        } else {
            self.stat
                .as_ref()
                .and_then(read_text)
                .and_then(|t| runnable_excess(&t, self.cpus))
                .unwrap_or(0.0)
        };
        self.last = Some(now);
        let (headroom_bytes, limit) = self.headroom();
        Signals {
            cpu_pressure,
            memory_pressure,
            headroom: headroom_bytes
                .zip(limit)
                .filter(|(_, limit)| *limit > 0)
                .map(|(left, limit)| (left as f64 / limit as f64).clamp(0.0, 1.0)),
            headroom_bytes,
        }
    }

    /// (bytes still available, bytes that may be used at most)
    fn headroom(&self) -> (Option<u64>, Option<u64>) {
        if let Some((max, current, stat)) = &self.cgroup_memory {
            let number = |f: &File| read_text(f).and_then(|t| t.trim().parse::<u64>().ok());
            if let (Some(max), Some(current)) = (number(max), number(current)) {
                // `memory.current` counts the page cache too; the inactive part of it is
                // reclaimed before anything is squeezed (the working set, as kubelet counts).
                let reclaimable = stat
                    .as_ref()
                    .and_then(read_text)
                    .and_then(|t| stat_field(&t, "inactive_file"))
                    .unwrap_or(0);
                let used = current.saturating_sub(reclaimable);
                return (Some(max.saturating_sub(used)), Some(max));
            }
        }
        match self.meminfo.as_ref().and_then(read_text) {
            Some(text) => {
                let (total, available) = meminfo(&text);
                (available, total)
            }
            None => (None, None),
        }
    }
}

/// The server's own cgroup v2 folder, if it is mounted where `roots` say.
fn own_cgroup(roots: &Roots) -> Option<PathBuf> {
    let text = std::fs::read_to_string(roots.proc.join("self/cgroup")).ok()?;
    let path = text.lines().find_map(|l| l.strip_prefix("0::"))?;
    let relative = path.trim().trim_start_matches('/');
    roots
        .cgroup
        .iter()
        .map(|root| root.join(relative))
        .find(|dir| dir.join("cgroup.procs").exists())
}

fn open(path: &Path) -> Option<File> {
    File::open(path).ok()
}

/// The whole file, read from its start (pseudo-files give fresh contents to each read;
/// `/proc/stat` runs past 4 KiB on machines with many interrupts). At most 1 MiB.
fn read_text(file: &File) -> Option<String> {
    let mut buf = vec![0u8; 4096];
    let mut len = 0;
    loop {
        let n = file.read_at(&mut buf[len..], len as u64).ok()?;
        len += n;
        if n == 0 || len < buf.len() || buf.len() >= 1 << 20 {
            break;
        }
        buf.resize(buf.len() * 2, 0);
    }
    buf.truncate(len);
    String::from_utf8(buf).ok()
}

fn psi_total(file: Option<&File>) -> Option<u64> {
    psi_some_total(&read_text(file?)?)
}

/// The `total=` of a PSI file's `some` line (microseconds stalled since boot).
pub fn psi_some_total(text: &str) -> Option<u64> {
    text.lines()
        .find(|l| l.starts_with("some "))?
        .split_whitespace()
        .find_map(|field| field.strip_prefix("total="))?
        .parse()
        .ok()
}

/// A `name value` line's value in a cgroup's `memory.stat`.
pub fn stat_field(text: &str, name: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let (key, value) = l.split_once(' ')?;
        (key == name).then(|| value.trim().parse().ok())?
    })
}

/// (MemTotal, MemAvailable) in bytes from `/proc/meminfo`.
pub fn meminfo(text: &str) -> (Option<u64>, Option<u64>) {
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| {
                rest.trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse::<u64>()
                    .ok()
            })
            .map(|kib| kib * 1024)
    };
    (field("MemTotal:"), field("MemAvailable:"))
}

/// A stand-in for CPU pressure from `/proc/stat`: the share of runnable tasks that cannot have
/// a CPU now (`procs_running` beyond `cpus`), 0 when every one can.
pub fn runnable_excess(text: &str, cpus: usize) -> Option<f64> {
    let running: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("procs_running "))?
        .trim()
        .parse()
        .ok()?;
    let cpus = cpus.max(1) as f64;
    Some(if running > cpus {
        (running - cpus) / running
    } else {
        0.0
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pressure_and_memory_files_are_read_as_recorded() {
        let cpu = "some avg10=1.07 avg60=5.38 avg300=5.72 total=1414291849\n\
                   full avg10=0.00 avg60=0.00 avg300=0.00 total=0\n";
        assert_eq!(psi_some_total(cpu), Some(1_414_291_849));
        assert_eq!(psi_some_total("full avg10=0.00 total=5\n"), None);
        assert_eq!(psi_some_total(""), None);
        let info = "MemTotal:       24683584 kB\nMemFree:        13333276 kB\n\
                    MemAvailable:   20415716 kB\n";
        assert_eq!(
            meminfo(info),
            (Some(24_683_584 * 1024), Some(20_415_716 * 1024))
        );
        assert_eq!(meminfo("MemTotal: 1 kB\n"), (Some(1024), None));
        let stat = "cpu  1 2 3 4\nprocs_running 6\nprocs_blocked 0\n";
        assert_eq!(runnable_excess(stat, 2), Some(4.0 / 6.0));
        assert_eq!(runnable_excess("procs_running 1\n", 2), Some(0.0));
        assert_eq!(runnable_excess("cpu 1 2\n", 2), None);
        let stat = "anon 1000\nfile 9000\ninactive_file 7000\nactive_file 2000\n";
        assert_eq!(stat_field(stat, "inactive_file"), Some(7000));
        assert_eq!(stat_field(stat, "file"), Some(9000));
        assert_eq!(stat_field(stat, "shmem"), None);
    }

    #[test]
    fn a_cgroup_limit_counts_the_working_set_and_a_long_stat_is_read_whole() {
        let dir = std::env::temp_dir().join(format!("fiddler-cgroup-{}", std::process::id()));
        let (proc, cgroup) = (dir.join("proc"), dir.join("cg"));
        let own = cgroup.join("pod/app");
        std::fs::create_dir_all(proc.join("self")).expect("fake /proc");
        std::fs::create_dir_all(&own).expect("fake cgroup");
        std::fs::write(proc.join("self/cgroup"), "0::/pod/app\n").expect("cgroup");
        std::fs::write(own.join("cgroup.procs"), "1\n").expect("procs");
        std::fs::write(own.join("memory.max"), "1000\n").expect("max");
        std::fs::write(own.join("memory.current"), "990\n").expect("current");
        std::fs::write(own.join("memory.stat"), "anon 90\ninactive_file 600\n").expect("stat");
        // A /proc/stat longer than one read, its procs_running line last.
        let long = format!("intr {}\nprocs_running 9\n", "0 ".repeat(5000));
        std::fs::write(proc.join("stat"), long).expect("stat");
        let roots = Roots {
            proc,
            cgroup: vec![cgroup],
        };
        let mut sampler = Sampler::open(&roots);
        assert!(
            sampler.source.contains("the cgroup's memory.max"),
            "{}",
            sampler.source
        );
        let signals = sampler.read();
        // 990 used, 600 of it reclaimable cache: 610 of 1000 left, not 10.
        assert_eq!(signals.headroom_bytes, Some(610));
        assert!(
            signals.cpu_pressure > 0.5,
            "procs_running was read: {signals:?}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn missing_files_fall_back_and_say_so() {
        let dir = std::env::temp_dir().join(format!("fiddler-signals-{}", std::process::id()));
        let proc = dir.join("proc");
        std::fs::create_dir_all(&proc).expect("make a fake /proc");
        std::fs::write(
            proc.join("meminfo"),
            "MemTotal: 1000 kB\nMemAvailable: 250 kB\n",
        )
        .expect("write meminfo");
        std::fs::write(proc.join("stat"), "procs_running 1\n").expect("write stat");
        let roots = Roots {
            proc: proc.clone(),
            cgroup: vec![dir.join("no-cgroup")],
        };
        let mut sampler = Sampler::open(&roots);
        assert!(!sampler.has_psi());
        assert!(
            sampler.source.contains("no pressure stall information"),
            "{}",
            sampler.source
        );
        let signals = sampler.read();
        assert_eq!(signals.headroom, Some(0.25));
        assert_eq!(signals.cpu_pressure, 0.0);

        // With PSI files, pressure is the stalled share of the window between two reads.
        std::fs::create_dir_all(proc.join("pressure")).expect("make pressure/");
        std::fs::write(proc.join("pressure/cpu"), "some avg10=0 total=1000\n").expect("cpu");
        let mut sampler = Sampler::open(&roots);
        assert!(sampler.has_psi());
        assert_eq!(
            sampler.read().cpu_pressure,
            0.0,
            "the first read has no window"
        );
        std::fs::write(proc.join("pressure/cpu"), "some avg10=0 total=999999999\n").expect("cpu");
        assert_eq!(
            sampler.read().cpu_pressure,
            1.0,
            "capped at the whole window"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
