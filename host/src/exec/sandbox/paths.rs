//! Which paths an executor may read, and write: the system's programs and libraries, the
//! installations its `PATH` runs from (the `bin/` or `shims/` itself and the `lib/`,
//! `libexec/` and `versions/` beside it), what programs read of `/etc` (an allow-list), the few
//! devices every program opens, `/proc` and `/sys` (read-only; the kernel itself keeps other
//! processes' memory, environment and descriptors from a sandboxed one), its own copy and
//! folder, the absolute paths its `env` names, and what its settings add. Written to: its
//! private folder only, unless settings add.
//!
//! Protected paths come in two strengths. Sealed (the server's key and the folder it is in,
//! the `--keys` file, the plugins folder, its private and state folders, the crash folder):
//! nothing inside is ever opened. Never whole (the server's working folder): it is not opened
//! by a rule on it or on a folder above it, but a path named inside it (a virtualenv on `PATH`
//! when the server runs from a home folder) still is. A rule on a folder opens everything
//! beneath it, so a folder that holds a protected path is opened child by child, around it.

use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};

/// Read-only for every executor: where a Linux system keeps programs and libraries.
const SYSTEM: &[&str] = &[
    "/usr",
    "/lib",
    "/lib32",
    "/lib64",
    "/libx32",
    "/bin",
    "/sbin",
    "/opt",
    "/nix/store",
    "/proc",
    "/sys",
    "/run/systemd/resolve",
];
/// The devices every program may open (read and write: they hold nothing).
pub const DEVICES: &[&str] = &[
    "/dev/null",
    "/dev/zero",
    "/dev/full",
    "/dev/random",
    "/dev/urandom",
];
/// What of `/etc` is opened: what the C library, name lookups, TLS clients, interpreters and
/// locales read. Everything else (keys, credentials, other services' configuration) stays shut.
const ETC_ALLOWED: &[&str] = &[
    "/etc/ld.so.cache",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d",
    "/etc/ld.so.preload",
    "/etc/localtime",
    "/etc/timezone",
    "/etc/passwd",
    "/etc/group",
    "/etc/nsswitch.conf",
    "/etc/hosts",
    "/etc/host.conf",
    "/etc/resolv.conf",
    "/etc/gai.conf",
    "/etc/services",
    "/etc/protocols",
    "/etc/networks",
    "/etc/mime.types",
    "/etc/magic",
    "/etc/magic.mime",
    "/etc/ssl/certs",
    "/etc/ssl/openssl.cnf",
    "/etc/ca-certificates",
    "/etc/ca-certificates.conf",
    "/etc/pki/tls/certs",
    "/etc/pki/ca-trust",
    "/etc/alternatives",
    "/etc/os-release",
    "/etc/debian_version",
    "/etc/locale.alias",
    "/etc/locale.conf",
    "/etc/default/locale",
    "/etc/fonts",
    "/etc/terminfo",
    "/etc/inputrc",
];
/// Folders of `/etc` opened by prefix: an interpreter's own configuration (`/etc/python3.11`).
const ETC_ALLOWED_PREFIXES: &[&str] = &["python", "perl", "java-", "node"];
/// How deep a folder is opened around a protected path inside it.
const MAX_SPLIT_DEPTH: usize = 8;
/// The most entries opened one by one in one folder around a protected path (beyond them the
/// folder stays closed).
const MAX_SPLIT_ENTRIES: usize = 512;

/// The read-only paths of the system (before protected paths are taken out).
pub fn system() -> Vec<PathBuf> {
    let mut paths: Vec<PathBuf> = SYSTEM
        .iter()
        .chain(ETC_ALLOWED)
        .map(PathBuf::from)
        .collect();
    if let Ok(entries) = fs::read_dir("/etc") {
        for entry in entries.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if ETC_ALLOWED_PREFIXES.iter().any(|p| name.starts_with(p)) {
                paths.push(entry.path());
            }
        }
    }
    paths.extend(installations(std::env::var_os("PATH").as_deref()));
    paths
}

/// Whether `path` is `/` or one of the system's own folders (`/etc`, `/usr`, `/home`...): a
/// folder too wide to seal because a key sits in it (the key alone is sealed then).
pub fn too_wide_to_seal(path: &Path) -> bool {
    path.parent().is_none()
        || path.parent() == Some(Path::new("/"))
        || SYSTEM.iter().any(|s| Path::new(s) == path)
        || std::env::var_os("HOME").is_some_and(|home| Path::new(&home) == path)
}

/// The folders on `PATH`, and for each `bin/` or `shims/` among them the `lib/`, `lib64/`,
/// `libexec/` and `versions/` beside it and its `version` file (a Python, a pyenv, a
/// virtualenv, a conda, `/usr/local`): what an interpreter started by name needs to run, and
/// not the rest of its parent (a `~/.local` holds keyrings and histories too).
pub fn installations(path: Option<&OsStr>) -> Vec<PathBuf> {
    let Some(path) = path else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for dir in std::env::split_paths(path).filter(|d| d.is_absolute()) {
        let Ok(dir) = fs::canonicalize(&dir) else {
            continue;
        };
        let named = dir
            .file_name()
            .is_some_and(|n| n == "bin" || n == "shims" || n == "sbin");
        if let (true, Some(prefix)) = (named, dir.parent()) {
            if prefix != Path::new("/") {
                for beside in ["lib", "lib64", "libexec", "versions", "version"] {
                    let path = prefix.join(beside);
                    if path.exists() {
                        out.push(path);
                    }
                }
            }
        }
        out.push(dir);
    }
    out
}

/// The absolute paths an `env` file's values name that exist (a model, a runtime library):
/// the operator declared them for the plugin.
pub fn named_in_env(env: &[(String, String)]) -> Vec<PathBuf> {
    env.iter()
        .map(|(_, value)| PathBuf::from(value))
        .filter(|path| path.is_absolute() && path.exists())
        .collect()
}

/// Paths an executor must not reach, by strength (see the file's doc).
#[derive(Clone, Debug, Default)]
pub struct Protected {
    /// Nothing inside is opened.
    pub sealed: Vec<PathBuf>,
    /// Not opened by a rule on it or above it; what is named inside still is.
    pub never_whole: Vec<PathBuf>,
}

impl Protected {
    fn canonical(self) -> Protected {
        let real = |paths: Vec<PathBuf>| -> Vec<PathBuf> {
            paths
                .into_iter()
                .map(|p| fs::canonicalize(&p).unwrap_or(p))
                .collect()
        };
        Protected {
            sealed: real(self.sealed),
            never_whole: real(self.never_whole),
        }
    }

    fn all(&self) -> impl Iterator<Item = &PathBuf> {
        self.sealed.iter().chain(&self.never_whole)
    }
}

/// `paths` with the protected ones taken out: a path inside a sealed one, or equal to a
/// protected one, is dropped; a folder that holds one is replaced by its entries, recursively,
/// around it. Paths that do not exist are dropped (a rule needs an open file). Returns what
/// is opened, and how many paths were left closed for lack of room to open around them.
pub fn around_protected(paths: &[PathBuf], protected: &Protected) -> (Vec<PathBuf>, usize) {
    let protected = protected.clone().canonical();
    let mut out = Vec::new();
    let mut closed = 0;
    for path in paths {
        let Ok(real) = fs::canonicalize(path) else {
            continue;
        };
        split(&real, &protected, 0, &mut out, &mut closed);
    }
    out.sort();
    out.dedup();
    (out, closed)
}

fn split(
    path: &Path,
    protected: &Protected,
    depth: usize,
    out: &mut Vec<PathBuf>,
    closed: &mut usize,
) {
    if protected.sealed.iter().any(|p| path.starts_with(p)) || protected.all().any(|p| p == path) {
        return;
    }
    if !protected.all().any(|p| p.starts_with(path)) {
        out.push(path.to_owned());
        return;
    }
    let Some(entries) = (depth < MAX_SPLIT_DEPTH)
        .then(|| fs::read_dir(path).ok())
        .flatten()
    else {
        *closed += 1;
        return;
    };
    let mut entries = entries.flatten();
    for entry in entries.by_ref().take(MAX_SPLIT_ENTRIES) {
        // Links are resolved: one inside the folder may lead back into what is protected.
        if let Ok(real) = fs::canonicalize(entry.path()) {
            split(&real, protected, depth + 1, out, closed);
        }
    }
    *closed += entries.count();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(label: &str) -> PathBuf {
        let root = std::env::temp_dir().join(format!(
            "fiddler-sandbox-paths-{label}-{}",
            std::process::id()
        ));
        let _ = fs::remove_dir_all(&root);
        for dir in [
            "srv/app/certs",
            "srv/app/lib",
            "srv/other",
            "py/bin",
            "py/lib",
            "tools/bin",
        ] {
            fs::create_dir_all(root.join(dir)).expect("mkdir");
        }
        fs::write(root.join("srv/app/certs/key.pem"), "secret").expect("write");
        fs::write(root.join("srv/app/readme"), "public").expect("write");
        root
    }

    #[test]
    fn a_folder_holding_a_protected_path_is_opened_around_it() {
        let root = tree("t1");
        let key = root.join("srv/app/certs/key.pem");
        let sealed = Protected {
            sealed: vec![key.clone()],
            never_whole: Vec::new(),
        };
        let (open, _) = around_protected(&[root.join("srv"), root.join("missing")], &sealed);
        assert!(open.contains(&root.join("srv/other")));
        assert!(open.contains(&root.join("srv/app/lib")));
        assert!(open.contains(&root.join("srv/app/readme")));
        assert!(!open.iter().any(|p| key.starts_with(p)), "{open:?}");
        let app = Protected {
            sealed: vec![root.join("srv/app")],
            never_whole: Vec::new(),
        };
        let (inside, _) = around_protected(&[root.join("srv/app/certs/key.pem")], &app);
        assert!(inside.is_empty());
        let _ = fs::remove_dir_all(&root);
    }

    #[test]
    fn the_working_folder_is_never_opened_whole_but_what_is_named_inside_it_is() {
        let root = tree("t2");
        let cwd = Protected {
            sealed: Vec::new(),
            never_whole: vec![root.join("srv")],
        };
        let named = [root.clone(), root.join("srv"), root.join("srv/app/lib")];
        let (open, _) = around_protected(&named, &cwd);
        assert!(open.contains(&root.join("py")), "its siblings: {open:?}");
        assert!(
            open.contains(&root.join("srv/app/lib")),
            "named inside it: {open:?}"
        );
        assert!(!open.contains(&root.join("srv")), "never itself: {open:?}");
        assert!(
            !open.contains(&root.join("srv/other")),
            "nor through a rule above: {open:?}"
        );
        // Run from `/`, the system stays open.
        let slash = Protected {
            sealed: Vec::new(),
            never_whole: vec![PathBuf::from("/")],
        };
        let (open, _) = around_protected(&[PathBuf::from("/usr")], &slash);
        assert_eq!(open, vec![PathBuf::from("/usr")]);
        let _ = fs::remove_dir_all(&root);
    }

    #[test]
    fn an_installation_on_path_is_opened_bin_and_libraries_not_its_whole_parent() {
        let root = tree("t3");
        let path =
            std::env::join_paths([root.join("py/bin"), root.join("tools/bin")]).expect("join");
        let found = installations(Some(path.as_os_str()));
        assert!(found.contains(&root.join("py/lib")), "{found:?}");
        assert!(
            !found.contains(&root.join("py")),
            "not all of its parent: {found:?}"
        );
        assert!(found.contains(&root.join("tools/bin")));
        assert!(!found.contains(&root.join("tools")), "{found:?}");
        let _ = fs::remove_dir_all(&root);
    }
}
