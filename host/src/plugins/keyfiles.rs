//! Key files on disk, as the watcher thread keeps them: the server-wide `--keys` file and each
//! route's `keys=FILE`, read when a version is offered and again whenever a file's stamp
//! changes (so a rotated key takes effect within one poll, without restarting the plugin).
//! What comes of each read is an `access::gate::Update` for intake; the format and the
//! comparison are `access::keys`'s. Everything here runs on the watcher thread, never the loop.
//!
//! A file that cannot be read, that other users could write, or that holds no valid key
//! closes what it guards (fail closed), with one log line per change of the file, never its
//! contents.

use std::collections::HashMap;
use std::fs;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::access::gate::{Gate, Rule, Update};
use crate::access::keys::{KeySet, MAX_FILE};
use crate::ids::PluginName;
use crate::{info, warn};

/// A route folder's `keys=` setting.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeysSetting {
    /// `keys=none`: no key, whatever `--keys` says.
    None,
    /// `keys=FILE`: a path, relative to the plugin's folder or absolute.
    File(PathBuf),
}

impl KeysSetting {
    /// Parses a `keys=` value.
    pub fn parse(value: &str) -> Result<KeysSetting, &'static str> {
        match value {
            "" => Err("a file, or none"),
            "none" => Ok(KeysSetting::None),
            path => Ok(KeysSetting::File(PathBuf::from(path))),
        }
    }
}

/// What tells a version of a file from another without reading it; `None`: it could not be
/// looked at (missing, or its folder unreadable).
type Stamp = Option<(u64, i64, i64, u64, u64, u32, u32)>;

fn stamp(path: &Path) -> Stamp {
    let meta = fs::metadata(path).ok()?;
    Some((
        meta.len(),
        meta.mtime(),
        meta.mtime_nsec(),
        meta.ino(),
        meta.dev(),
        meta.mode(),
        meta.uid(),
    ))
}

/// A key file and its stamp at its last read.
struct Watched {
    path: PathBuf,
    stamp: Stamp,
}

/// The key files the watcher looks at.
pub struct KeyFiles {
    /// `--keys`, when given.
    server: Option<Watched>,
    /// The routes that name a file of their own (`keys=FILE`).
    routes: HashMap<PluginName, Watched>,
    /// Skip the ownership and permission check (`--insecure-plugins-dir`).
    insecure: bool,
}

impl KeyFiles {
    /// The key files for a server with `server` as its `--keys` (made absolute by the caller).
    pub fn new(server: Option<PathBuf>, insecure: bool) -> KeyFiles {
        KeyFiles {
            server: server.map(|path| Watched { path, stamp: None }),
            routes: HashMap::new(),
            insecure,
        }
    }

    /// Reads the server-wide file now: the gate of every route without `keys=` of its own.
    pub fn server_now(&mut self) -> Update {
        let insecure = self.insecure;
        match self.server.as_mut() {
            None => Update::Server(Gate::Open),
            Some(watched) => {
                watched.stamp = stamp(&watched.path);
                Update::Server(read(
                    &watched.path,
                    "every route without keys= of its own",
                    insecure,
                ))
            }
        }
    }

    /// The rule of `route`, a version of which is being offered: its folder's setting (`None`
    /// for a single file, or a folder that names none), read now.
    pub fn route(
        &mut self,
        route: &PluginName,
        setting: Option<&KeysSetting>,
        folder: &Path,
    ) -> Update {
        let rule = match setting {
            None => {
                self.routes.remove(route);
                Rule::Server
            }
            Some(KeysSetting::None) => {
                self.routes.remove(route);
                Rule::Own(Gate::Open)
            }
            Some(KeysSetting::File(file)) => {
                let path = folder.join(file); // an absolute `file` stays itself
                let path = std::path::absolute(&path).unwrap_or(path);
                // Stamped before it is read: a change in between is seen at the next poll.
                let stamp = stamp(&path);
                let gate = read(&path, &format!("/{route}"), self.insecure);
                self.routes.insert(route.clone(), Watched { path, stamp });
                Rule::Own(gate)
            }
        };
        Update::Route(route.to_string(), rule)
    }

    /// `route` is no longer served.
    pub fn forget(&mut self, route: &PluginName) -> Update {
        self.routes.remove(route);
        Update::Forget(route.to_string())
    }

    /// Looks at every key file's stamp; reads again each one that changed.
    pub fn poll(&mut self) -> Vec<Update> {
        let mut updates = Vec::new();
        if let Some(watched) = self.server.as_mut() {
            let now = stamp(&watched.path);
            if now != watched.stamp {
                watched.stamp = now;
                let gate = read(
                    &watched.path,
                    "every route without keys= of its own",
                    self.insecure,
                );
                updates.push(Update::Server(gate));
            }
        }
        for (route, watched) in &mut self.routes {
            let now = stamp(&watched.path);
            if now != watched.stamp {
                watched.stamp = now;
                let gate = read(&watched.path, &format!("/{route}"), self.insecure);
                updates.push(Update::Route(route.to_string(), Rule::Own(gate)));
            }
        }
        updates
    }
}

/// Reads the key file at `path`, which guards `what` (for the log lines): its keys, or closed
/// (with a log line saying why) when it cannot be used.
fn read(path: &Path, what: &str, insecure: bool) -> Gate {
    match read_keys(path, insecure) {
        Ok(keys) if keys.is_empty() => {
            warn!(
                "keys for {what}: {} holds no valid key; refusing every request (503) until it \
                 does",
                path.display()
            );
            Gate::Closed
        }
        Ok(keys) => {
            info!(
                "keys for {what}: {} key(s) from {}",
                keys.len(),
                path.display()
            );
            Gate::Keys(keys)
        }
        Err(why) => {
            warn!(
                "keys for {what}: {}: {why}; refusing every request (503) until it can be read",
                path.display()
            );
            Gate::Closed
        }
    }
}

/// The keys in `path` (its refused lines logged by number, never their text).
fn read_keys(path: &Path, insecure: bool) -> Result<KeySet, String> {
    // Not blocking: a FIFO put in its place must not hang the watcher on open (it is then
    // refused below as not a file; O_NONBLOCK means nothing to a regular file).
    let file = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| format!("cannot read it ({e})"))?;
    let meta = file
        .metadata()
        .map_err(|e| format!("cannot read it ({e})"))?;
    if !meta.is_file() {
        return Err("it is not a file".to_owned());
    }
    if !insecure {
        if let Some(why) = crate::plugins::trust::distrust(&meta) {
            return Err(format!("{why} (or pass --insecure-plugins-dir)"));
        }
    }
    if meta.len() > MAX_FILE {
        return Err(format!("it is larger than {MAX_FILE} bytes"));
    }
    let mut text = Vec::with_capacity(meta.len() as usize);
    file.take(MAX_FILE + 1)
        .read_to_end(&mut text)
        .map_err(|e| format!("cannot read it ({e})"))?;
    if text.len() as u64 > MAX_FILE {
        return Err(format!("it is larger than {MAX_FILE} bytes"));
    }
    let (keys, refused) = KeySet::parse(&text);
    text.fill(0);
    for refusal in refused {
        warn!("{} {refusal}; that line is ignored", path.display());
    }
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::gate::Gates;
    use std::os::unix::fs::PermissionsExt;

    const KEY: &str = "rotation-test-key-one";
    const NEXT: &str = "rotation-test-key-two";

    fn dir(label: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("fiddler-keyfiles-{label}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("mkdir");
        dir
    }

    fn passes(gates: &Gates, route: &str, key: &str) -> bool {
        let value = format!("Bearer {key}");
        let verdict = gates.check(route, [("authorization", value.as_bytes())]);
        verdict == crate::access::gate::Verdict::Pass { checked: true }
    }

    #[test]
    fn settings_values_parse() {
        assert_eq!(KeysSetting::parse("none"), Ok(KeysSetting::None));
        assert_eq!(
            KeysSetting::parse("keys.txt"),
            Ok(KeysSetting::File(PathBuf::from("keys.txt")))
        );
        assert!(KeysSetting::parse("").is_err());
    }

    #[test]
    fn a_route_file_is_read_relative_to_its_folder_and_again_when_it_changes() {
        let dir = dir("rotate");
        let path = dir.join("keys");
        fs::write(&path, format!("{KEY}\n")).expect("write");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).expect("chmod");
        let mut files = KeyFiles::new(None, false);
        let mut gates = Gates::default();
        let route = PluginName::parse("echo").expect("a name");
        let setting = KeysSetting::File(PathBuf::from("keys"));
        gates.apply(files.route(&route, Some(&setting), &dir));
        assert!(passes(&gates, "echo", KEY));
        assert!(files.poll().is_empty(), "unchanged: not read again");
        // Rotated by a rename over it (a new inode: a new stamp).
        let next = dir.join("keys.next");
        fs::write(&next, format!("{NEXT}\n")).expect("write");
        fs::rename(&next, &path).expect("rename");
        for update in files.poll() {
            gates.apply(update);
        }
        assert!(passes(&gates, "echo", NEXT));
        assert!(!passes(&gates, "echo", KEY));
        // Gone: closed, not open.
        fs::remove_file(&path).expect("remove");
        for update in files.poll() {
            gates.apply(update);
        }
        assert_eq!(
            gates.check("echo", []),
            crate::access::gate::Verdict::Closed
        );
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_missing_unsafe_or_empty_file_closes_what_it_guards() {
        let dir = dir("closed");
        let route = PluginName::parse("echo").expect("a name");
        let mut files = KeyFiles::new(Some(dir.join("missing")), false);
        assert!(matches!(files.server_now(), Update::Server(Gate::Closed)));
        let writable = dir.join("writable");
        fs::write(&writable, format!("{KEY}\n")).expect("write");
        fs::set_permissions(&writable, fs::Permissions::from_mode(0o666)).expect("chmod");
        let setting = KeysSetting::File(writable.clone());
        assert!(matches!(
            files.route(&route, Some(&setting), &dir),
            Update::Route(_, Rule::Own(Gate::Closed))
        ));
        let mut lenient = KeyFiles::new(None, true);
        assert!(matches!(
            lenient.route(&route, Some(&setting), &dir),
            Update::Route(_, Rule::Own(Gate::Keys(_)))
        ));
        let fifo = dir.join("fifo");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status();
        assert!(made.is_ok_and(|s| s.success()), "mkfifo");
        let setting = KeysSetting::File(fifo);
        assert!(
            matches!(
                files.route(&route, Some(&setting), &dir),
                Update::Route(_, Rule::Own(Gate::Closed))
            ),
            "a FIFO is refused, without hanging on it"
        );
        let short = dir.join("short");
        fs::write(&short, "# only a short one\nabc\n").expect("write");
        let setting = KeysSetting::File(short);
        assert!(matches!(
            files.route(&route, Some(&setting), &dir),
            Update::Route(_, Rule::Own(Gate::Closed))
        ));
        assert!(matches!(
            files.route(&route, Some(&KeysSetting::None), &dir),
            Update::Route(_, Rule::Own(Gate::Open))
        ));
        assert!(matches!(
            files.route(&route, None, &dir),
            Update::Route(_, Rule::Server)
        ));
        let _ = fs::remove_dir_all(&dir);
    }
}
