//! What a plugin's folder `settings` may open in its sandbox, each closed by default:
//! `read=` and `write=` (paths, relative to the folder or absolute, comma-separated, on as many
//! lines as wanted), `connect=` and `bind=` (TCP ports, comma-separated, or `any`), `udp=yes`
//! (UDP and netlink route sockets: name lookups), `unix=yes` (new Unix sockets, for a native
//! plugin or CGI program; a program that stays up has them), `processes=` (processes and threads at
//! once), `file_size=` (the largest file it may write, with K, M or G) and `core=` (core
//! dumps, same units). The keys live in the same file as `plugins::program`'s; this file reads
//! only its own.

use std::path::{Path, PathBuf};

use crate::plugins::program;

/// The settings keys this file reads (the folder reader accepts them and leaves them here).
pub const KEYS: &[&str] = &[
    "read",
    "write",
    "connect",
    "bind",
    "udp",
    "unix",
    "processes",
    "file_size",
    "core",
];

/// Processes (threads count: the kernel counts tasks) an executor may have at once, unless
/// its settings say more: enough for a model runtime's thread pool, far from a fork bomb.
pub const DEFAULT_PROCESSES: u64 = 64;
/// The largest file an executor may write (`RLIMIT_FSIZE`) unless its settings say more.
pub const DEFAULT_FILE_SIZE: u64 = 64 << 20;

/// TCP ports one kind of access is allowed on.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Ports {
    /// Only these (none by default).
    #[default]
    None,
    /// These.
    Some(Vec<u16>),
    /// Every port.
    Any,
}

/// What a folder's settings open.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SandboxSettings {
    /// Read-only beneath these (absolute).
    pub read: Vec<PathBuf>,
    /// Read-write beneath these (absolute).
    pub write: Vec<PathBuf>,
    /// TCP connect.
    pub connect: Ports,
    /// TCP bind (a program may always bind its own `$PORT`).
    pub bind: Ports,
    /// UDP and netlink route sockets.
    pub udp: bool,
    /// New Unix sockets (native plugins and CGI programs; programs always have them).
    pub unix: bool,
    /// Processes and threads at once.
    pub processes: Option<u64>,
    /// Largest file written.
    pub file_size: Option<u64>,
    /// Largest core dump (0 by default).
    pub core: Option<u64>,
}

/// Reads the sandbox keys of `dir/settings` (absent: nothing opened).
pub fn read(dir: &Path) -> Result<SandboxSettings, String> {
    let mut settings = SandboxSettings::default();
    for (line, key, value) in program::pairs(dir, program::SETTINGS)? {
        let bad = |what: &str| format!("settings line {line}: {key} takes {what}, not {value:?}");
        let size = || crate::config::size(&value).map_err(&bad);
        match key.as_str() {
            "read" | "write" => {
                let paths = value
                    .split(',')
                    .map(str::trim)
                    .filter(|p| !p.is_empty())
                    .map(|p| dir.join(p));
                match key.as_str() {
                    "read" => settings.read.extend(paths),
                    _ => settings.write.extend(paths),
                }
            }
            "connect" | "bind" => {
                let ports = ports(&value).ok_or_else(|| bad("port numbers or any"))?;
                match key.as_str() {
                    "connect" => settings.connect = ports,
                    _ => settings.bind = ports,
                }
            }
            "udp" | "unix" => {
                let open = match value.as_str() {
                    "yes" => true,
                    "no" => false,
                    _ => return Err(bad("yes or no")),
                };
                match key.as_str() {
                    "udp" => settings.udp = open,
                    _ => settings.unix = open,
                }
            }
            "processes" => {
                let n = value.parse::<u64>().map_err(|_| bad("a number"))?;
                settings.processes = Some(n.max(1));
            }
            "file_size" => settings.file_size = Some(size()?),
            "core" => settings.core = Some(size()?),
            _ => {}
        }
    }
    Ok(settings)
}

fn ports(value: &str) -> Option<Ports> {
    if value == "any" {
        return Some(Ports::Any);
    }
    let ports: Option<Vec<u16>> = value
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| p.parse::<u16>().ok().filter(|&n| n > 0))
        .collect();
    match ports {
        Some(ports) if ports.is_empty() => Some(Ports::None),
        Some(ports) => Some(Ports::Some(ports)),
        None => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_key_opens_only_what_it_names_and_typos_are_refused() {
        let dir =
            std::env::temp_dir().join(format!("fiddler-sandbox-settings-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("mkdir");
        let file = dir.join(program::SETTINGS);
        std::fs::write(&file, "deadline=5\n").expect("write");
        assert_eq!(read(&dir).expect("settings"), SandboxSettings::default());
        std::fs::write(
            &file,
            "read=/models, data\nread=/opt/x\nwrite=cache\nconnect=443,8080\nbind=any\nudp=yes\nunix=yes\n\
             processes=200\nfile_size=1G\ncore=0\n",
        )
        .expect("write");
        let s = read(&dir).expect("settings");
        assert_eq!(
            s.read,
            vec![
                PathBuf::from("/models"),
                dir.join("data"),
                PathBuf::from("/opt/x")
            ]
        );
        assert_eq!(s.write, vec![dir.join("cache")]);
        assert_eq!(s.connect, Ports::Some(vec![443, 8080]));
        assert_eq!(s.bind, Ports::Any);
        assert!(s.udp && s.unix);
        assert_eq!(s.processes, Some(200));
        assert_eq!(s.file_size, Some(1 << 30));
        assert_eq!(s.core, Some(0));
        for bad in ["connect=http", "connect=0", "udp=maybe", "processes=many"] {
            std::fs::write(&file, format!("{bad}\n")).expect("write");
            assert!(read(&dir).unwrap_err().contains("line 1"), "{bad}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
