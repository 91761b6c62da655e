//! Which paths an executor may read, and write: the system's programs and libraries, the
//! installations its `PATH` runs from (an interpreter under a `bin/` or `shims/` beside its
//! `lib/`), `/etc` without its secrets, the few devices every program opens, `/proc` and
//! `/sys` (read-only; the kernel itself keeps other processes' memory, environment and
//! descriptors from a sandboxed one), its own copy and folder, the absolute paths its `env`
//! names, and what its settings add. Written to: its private folder only, unless settings add.
//!
//! No allowed path may hold a protected one (the server's key, the plugins folder, the server's
//! working folder, its private folder, the crash folder): a rule on a folder opens everything
//! beneath it, so such a folder is opened child by child, around what it protects.

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
/// What of `/etc` is never opened: password hashes, privilege rules, host keys, private keys.
const ETC_SECRETS: &[&str] = &[
    "shadow",
    "shadow-",
    "gshadow",
    "gshadow-",
    "sudoers",
    "sudoers.d",
    "ssh",
    "ssl",
    "security",
    "krb5.keytab",
    "machine-id",
    "fiddler-crab",
];
/// What of `/etc/ssl` is public.
const ETC_SSL_PUBLIC: &[&str] = &["/etc/ssl/certs", "/etc/ssl/openssl.cnf"];
/// How deep a folder is opened around a protected path inside it.
const MAX_SPLIT_DEPTH: usize = 8;
/// The most entries opened one by one in one folder around a protected path (beyond them the
/// folder stays closed).
const MAX_SPLIT_ENTRIES: usize = 512;

/// The read-only paths of the system (before protected paths are taken out).
pub fn system() -> Vec<PathBuf> {
    let mut paths: Vec<PathBuf> = SYSTEM.iter().map(PathBuf::from).collect();
    if let Ok(entries) = fs::read_dir("/etc") {
        for entry in entries.flatten() {
            let name = entry.file_name();
            if !ETC_SECRETS.contains(&name.to_string_lossy().as_ref()) {
                paths.push(entry.path());
            }
        }
    }
    paths.extend(ETC_SSL_PUBLIC.iter().map(PathBuf::from));
    paths.extend(installations(std::env::var_os("PATH").as_deref()));
    paths
}

/// The folders on `PATH`, and the installation each `bin/` or `shims/` belongs to when that
/// installation has a `lib/`, `libexec/` or `versions/` beside it (a Python, a pyenv, a
/// virtualenv, a conda, `/usr/local`): what an interpreter started by name needs to run.
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
            let prefix_like = ["lib", "libexec", "versions"]
                .iter()
                .any(|d| prefix.join(d).is_dir());
            if prefix_like && prefix != Path::new("/") {
                out.push(prefix.to_owned());
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

/// `paths` with every protected path taken out: a path inside (or equal to) a protected one
/// is dropped; a folder that holds one is replaced by its entries, recursively, around it.
/// Paths that do not exist are dropped (a rule needs an open file).
pub fn around_protected(paths: &[PathBuf], protected: &[PathBuf]) -> Vec<PathBuf> {
    let protected: Vec<PathBuf> = protected
        .iter()
        .map(|p| fs::canonicalize(p).unwrap_or_else(|_| p.clone()))
        .collect();
    let mut out = Vec::new();
    for path in paths {
        let Ok(real) = fs::canonicalize(path) else {
            continue;
        };
        split(&real, &protected, 0, &mut out);
    }
    out.sort();
    out.dedup();
    out
}

fn split(path: &Path, protected: &[PathBuf], depth: usize, out: &mut Vec<PathBuf>) {
    if protected.iter().any(|p| path.starts_with(p)) {
        return;
    }
    if !protected.iter().any(|p| p.starts_with(path)) {
        out.push(path.to_owned());
        return;
    }
    if depth >= MAX_SPLIT_DEPTH {
        return;
    }
    let Ok(entries) = fs::read_dir(path) else {
        return;
    };
    for entry in entries.flatten().take(MAX_SPLIT_ENTRIES) {
        // Links are resolved: one inside the folder may lead back into what is protected.
        if let Ok(real) = fs::canonicalize(entry.path()) {
            split(&real, protected, depth + 1, out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree() -> PathBuf {
        let root =
            std::env::temp_dir().join(format!("fiddler-sandbox-paths-{}", std::process::id()));
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
        let root = tree();
        let key = root.join("srv/app/certs/key.pem");
        let open = around_protected(
            &[root.join("srv"), root.join("missing")],
            std::slice::from_ref(&key),
        );
        assert!(open.contains(&root.join("srv/other")));
        assert!(open.contains(&root.join("srv/app/lib")));
        assert!(open.contains(&root.join("srv/app/readme")));
        assert!(!open.iter().any(|p| key.starts_with(p)), "{open:?}");
        let inside = around_protected(
            &[root.join("srv/app/certs/key.pem")],
            &[root.join("srv/app")],
        );
        assert!(inside.is_empty());
        let _ = fs::remove_dir_all(&root);
    }

    #[test]
    fn an_installation_on_path_is_opened_with_its_libraries_a_plain_bin_alone() {
        let root = tree();
        let path =
            std::env::join_paths([root.join("py/bin"), root.join("tools/bin")]).expect("join");
        let found = installations(Some(path.as_os_str()));
        assert!(found.contains(&root.join("py")), "{found:?}");
        assert!(found.contains(&root.join("tools/bin")));
        assert!(
            !found.contains(&root.join("tools")),
            "no lib/ beside it: {found:?}"
        );
        let _ = fs::remove_dir_all(&root);
    }
}
