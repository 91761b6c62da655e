//! Watches the plugins folder and turns file changes into handler versions for the pool.
//!
//! Every interval, and at once when the kernel reports a change (inotify, see `inotify`), it
//! lists the `*.so` files, executable programs and handler folders (a folder holding an
//! executable `serve`, or one `*.so`: a native plugin with files) and their stamps (size,
//! mtime, inode, mode, owner; for a folder, a hash over every entry's). A new or changed file is
//! taken once its writer is done with it: at once when the kernel says it was closed after
//! writing or moved in whole (a top-level entry: a file or a folder moved in), else once its
//! stamp has held for one whole interval (a file still being written, a folder being filled,
//! a file system without events); then it is read and
//! hashed and, unless the same bytes were already offered for that route, offered to the pool
//! as a new version (a library through a private copy). The pool starts its executor; loading
//! and `init` happen there, in another process, never on this thread or the loop. A removed
//! file unregisters its route.
//!
//! Key files are this thread's too (`keyfiles`): a version's rule is sent just before the
//! version itself, and each poll looks at every key file's stamp, so a rotated key takes
//! effect within one interval without a new version.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crate::access::gate::Update;
use crate::ids::HandlerKind;
use crate::ids::{ContentHash, Generation, PluginName};
use crate::plugins::files::{HandlerFile, PrivateDir};
use crate::plugins::inotify::{Event, FolderEvents};
use crate::plugins::keyfiles::KeyFiles;
use crate::plugins::program::{self, ProgramSettings};
use crate::plugins::version::NewVersion;
use crate::{info, warn};

/// What identifies a version of a file without reading it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stamp {
    len: u64,
    modified: i64,
    modified_nanos: i64,
    inode: u64,
    /// Permissions and owner: a `chmod go-w` makes a refused file worth another look.
    mode: u32,
    owner: u32,
}

/// A file seen at the last poll.
struct Seen {
    stamp: Stamp,
    /// When its stamp was first seen as it is (a poll sooner than an interval later, after an
    /// event, must not count as a whole interval held).
    since: Instant,
    /// It was considered (finished, or its stamp held for a whole interval).
    settled: bool,
}

/// The file last offered for a route.
struct Offered {
    path: PathBuf,
    hash: ContentHash,
}

/// What changed, for the pool.
#[derive(Debug)]
pub enum Change {
    /// A new version to start.
    Install(NewVersion),
    /// A route whose file was removed.
    Remove(PluginName),
    /// Who may call a route (or every route that follows `--keys`): for intake's gates.
    Access(Update),
}

/// How the watcher reaches the loop: the channel and the waker of its poll.
pub struct LoopLink {
    /// Where changes go.
    pub changes: Sender<Change>,
    /// Wakes the loop after each change.
    pub waker: Arc<mio::Waker>,
}

/// The folder's state; runs on its own thread after the first scan.
pub struct Watcher {
    dir: PathBuf,
    /// Where library copies go.
    private: PrivateDir,
    interval: Duration,
    next_generation: u64,
    files: BTreeMap<PathBuf, Seen>,
    offered: HashMap<PluginName, Offered>,
    /// Files already reported as ignored (bad name, route taken), to log them once.
    ignored: HashSet<PathBuf>,
    /// The folder could not be read, or was not trusted, at the last poll (logged once).
    unreadable: bool,
    /// Skip the ownership and permission checks (`--insecure-plugins-dir`).
    insecure: bool,
    /// Program folders' stamps, walked only every [`FOLDER_EVERY`] polls (a folder can hold
    /// thousands of entries), and the polls since.
    folder_stamps: HashMap<PathBuf, Stamp>,
    polls: u32,
    /// The key files (`--keys` and the routes' `keys=`).
    keys: KeyFiles,
    /// Rules read and not yet sent (each goes just before its version).
    access: Vec<Update>,
}

/// A program folder is walked on one poll in this many (about once a second by default).
const FOLDER_EVERY: u32 = 4;

impl Watcher {
    /// A watcher of `dir` that polls every `interval`, copying libraries into `private`, and
    /// reads `keys`' files.
    pub fn new(
        dir: &Path,
        private: PrivateDir,
        interval: Duration,
        insecure: bool,
        mut keys: KeyFiles,
    ) -> Watcher {
        let access = vec![keys.server_now()];
        Watcher {
            keys,
            access,
            dir: dir.to_owned(),
            private,
            interval,
            next_generation: 1,
            files: BTreeMap::new(),
            offered: HashMap::new(),
            ignored: HashSet::new(),
            unreadable: false,
            insecure,
            folder_stamps: HashMap::new(),
            polls: 0,
        }
    }

    /// Takes every handler in the folder now (at start-up, without waiting for stability).
    pub fn scan_now(&mut self) -> Vec<NewVersion> {
        let mut versions = Vec::new();
        for (path, stamp) in self.list().unwrap_or_default() {
            self.files.insert(
                path.clone(),
                Seen {
                    stamp,
                    since: Instant::now(),
                    settled: true,
                },
            );
            if let Some(Change::Install(version)) = self.consider(&path) {
                versions.push(version);
            }
        }
        versions
    }

    /// The rules read so far and not yet sent (the server-wide one and each route's found by
    /// [`scan_now`](Watcher::scan_now)), for intake before it serves anything.
    pub fn take_access(&mut self) -> Vec<Update> {
        std::mem::take(&mut self.access)
    }

    /// Polls on a thread of its own, every interval and at once on the kernel's events,
    /// sending changes to the loop, until the loop is gone.
    pub fn spawn(mut self, link: LoopLink) -> std::io::Result<thread::JoinHandle<()>> {
        let mut events = match FolderEvents::new(&self.dir) {
            Ok(events) => Some(events),
            Err(e) => {
                info!(
                    "no change events for {} ({e}): it is looked at every {} ms",
                    self.dir.display(),
                    self.interval.as_millis()
                );
                None
            }
        };
        thread::Builder::new()
            .name("watcher".to_owned())
            .spawn(move || loop {
                let happened = match events.as_mut().map(|e| e.wait(self.interval)) {
                    None => {
                        thread::sleep(self.interval);
                        Vec::new()
                    }
                    Some(Ok(happened)) => happened,
                    Some(Err(e)) => {
                        warn!(
                            "change events for {} failed ({e}): it is looked at every {} ms \
                             from now on",
                            self.dir.display(),
                            self.interval.as_millis()
                        );
                        events = None;
                        Vec::new()
                    }
                };
                for change in self.poll(&happened) {
                    if link.changes.send(change).is_err() || link.waker.wake().is_err() {
                        return;
                    }
                }
                if let Some(events) = events.as_mut() {
                    // Handler folders' own entries too (a new settings, env or library).
                    for path in self.folder_stamps.keys() {
                        let _ = events.watch(path);
                    }
                }
            })
    }

    /// The `*.so` libraries and executable programs in the folder with their stamps; `None`
    /// when it cannot be read. Hidden files (temporary files of `mv`, rsync, editors) are
    /// skipped; any other file is reported once as ignored.
    fn list(&mut self) -> Option<BTreeMap<PathBuf, Stamp>> {
        let distrusted = match fs::metadata(&self.dir) {
            Ok(meta) if !self.insecure => crate::plugins::trust::distrust(&meta),
            _ => None,
        };
        if let Some(why) = distrusted {
            if !self.unreadable {
                warn!(
                    "refused plugins folder {}: {why} (or pass --insecure-plugins-dir); nothing \
                     in it is loaded until it is fixed",
                    self.dir.display()
                );
                self.unreadable = true;
            }
            return None;
        }
        let entries = match fs::read_dir(&self.dir) {
            Ok(entries) => {
                self.unreadable = false;
                entries
            }
            Err(e) => {
                if !self.unreadable {
                    warn!("cannot read plugins folder {}: {e}", self.dir.display());
                    self.unreadable = true;
                }
                return None;
            }
        };
        let mut files = BTreeMap::new();
        for entry in entries.flatten() {
            let path = entry.path();
            if entry.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            // Follows symlinks: a link to a library is served like the library.
            let Ok(meta) = fs::metadata(&path) else {
                continue;
            };
            if meta.is_dir() {
                if program::is_program_dir(&path)
                    || !matches!(program::folder_library(&path), Ok(None))
                {
                    if let Some(stamp) = self.folder_stamp(&path, &meta) {
                        files.insert(path, stamp);
                    }
                } else if path.join(program::SERVE).exists() && self.ignored.insert(path.clone()) {
                    // Other folders (a plugin's source beside its .so) are none of ours.
                    crate::info!(
                        "ignored {}: its serve is not executable (chmod +x it)",
                        path.display()
                    );
                }
                continue;
            }
            if !meta.is_file() {
                continue;
            }
            let executable = meta.permissions().mode() & 0o111 != 0;
            if !is_library(&path) && !executable {
                if self.ignored.insert(path.clone()) {
                    crate::info!(
                        "ignored {}: neither a .so library nor an executable program",
                        path.display()
                    );
                }
                continue;
            }
            let stamp = Stamp {
                len: meta.len(),
                modified: meta.mtime(),
                modified_nanos: meta.mtime_nsec(),
                inode: meta.ino(),
                mode: meta.mode(),
                owner: meta.uid(),
            };
            files.insert(path, stamp);
        }
        Some(files)
    }

    /// A program folder's stamp: walked afresh every [`FOLDER_EVERY`] polls (and the first
    /// time), else the last one.
    fn folder_stamp(&mut self, path: &Path, meta: &fs::Metadata) -> Option<Stamp> {
        if self.polls % FOLDER_EVERY != 0 {
            if let Some(stamp) = self.folder_stamps.get(path) {
                return Some(*stamp);
            }
        }
        let (hash, total) = program::folder_stamp(path).ok()?;
        let stamp = Stamp {
            len: total,
            modified: hash as i64,
            modified_nanos: 0,
            inode: meta.ino(),
            mode: meta.mode(),
            owner: meta.uid(),
        };
        self.folder_stamps.insert(path.to_owned(), stamp);
        Some(stamp)
    }

    /// Looks at the folder; `happened` are the kernel's events since the last look (none on a
    /// timed poll).
    fn poll(&mut self, happened: &[Event]) -> Vec<Change> {
        self.polls = self.polls.wrapping_add(1);
        // A change inside a handler folder is walked now, not at its turn.
        for event in happened {
            if let Some(folder) = event.path.parent().filter(|p| *p != self.dir) {
                self.folder_stamps.remove(folder);
            }
        }
        // Top-level entries whose writer is done: no interval to wait.
        let finished: HashSet<&Path> = happened
            .iter()
            .filter(|e| e.finished && e.path.parent() == Some(self.dir.as_path()))
            .map(|e| e.path.as_path())
            .collect();
        let now = Instant::now();
        let Some(listing) = self.list() else {
            // An unreadable folder is not an empty one: change nothing.
            return Vec::new();
        };
        let mut changes = Vec::new();
        let gone: Vec<PathBuf> = self
            .files
            .keys()
            .filter(|path| !listing.contains_key(*path))
            .cloned()
            .collect();
        for path in gone {
            self.files.remove(&path);
            self.folder_stamps.remove(&path);
            self.ignored.remove(&path);
            let Some(name) = self
                .offered
                .iter()
                .find(|(_, s)| s.path == path)
                .map(|(name, _)| name.clone())
            else {
                continue;
            };
            self.offered.remove(&name);
            info!(
                "{} was removed: /{name} is no longer served",
                path.display()
            );
            changes.push(Change::Remove(name.clone()));
            changes.push(Change::Access(self.keys.forget(&name)));
            // Another file for the same route (echo.so beside libecho.so) gets its turn.
            for (other, seen) in self.files.iter_mut() {
                if route_of(other).as_ref() == Some(&name) {
                    seen.settled = false;
                    self.ignored.remove(other);
                }
            }
        }
        for (path, stamp) in listing {
            let done = finished.contains(path.as_path());
            let ready = match self.files.get_mut(&path) {
                None => {
                    self.files.insert(
                        path.clone(),
                        Seen {
                            stamp,
                            since: now,
                            settled: done,
                        },
                    );
                    done
                }
                Some(seen) if seen.stamp != stamp => {
                    seen.stamp = stamp;
                    seen.since = now;
                    seen.settled = done;
                    done
                }
                Some(seen) if !seen.settled && (done || now - seen.since >= self.interval) => {
                    seen.settled = true;
                    true
                }
                Some(_) => false,
            };
            if ready {
                if let Some(change) = self.consider(&path) {
                    // Its rule first: the new version never serves a moment under the old
                    // rule (the new rule holds for the old version too, while it still serves).
                    changes.extend(self.access.drain(..).map(Change::Access));
                    changes.push(change);
                }
            }
        }
        changes.extend(self.keys.poll().into_iter().map(Change::Access));
        changes
    }

    /// Offers a settled file if it is a new version of its route.
    fn consider(&mut self, path: &Path) -> Option<Change> {
        let name = match route_for(path) {
            Ok(name) => name,
            Err(stem) => {
                if self.ignored.insert(path.to_owned()) {
                    warn!(
                        "ignored {}: route name {stem:?} is not [a-z0-9_-]{{1,64}}",
                        path.display()
                    );
                }
                return None;
            }
        };
        let current_hash = self.offered.get(&name).map(|c| c.hash);
        if let Some(current) = self.offered.get(&name).filter(|c| c.path != path) {
            if self.ignored.insert(path.to_owned()) {
                warn!(
                    "ignored {}: /{name} is already served by {}",
                    path.display(),
                    current.path.display()
                );
            }
            return None;
        }
        let folder = path.is_dir();
        // A folder's main file: its `serve`, or for a native plugin with files its library.
        let main_file = match folder {
            false => path.to_owned(),
            true if program::is_program_dir(path) => path.join(program::SERVE),
            true => match program::folder_library(path) {
                Ok(Some(library)) => library,
                Ok(None) => return None,
                Err(why) => {
                    if self.ignored.insert(path.to_owned()) {
                        warn!("refused {}: {why}", path.display());
                    }
                    return None;
                }
            },
        };
        if !self.insecure {
            let mut checked = vec![path.to_owned()];
            if folder {
                checked.push(main_file.clone());
                checked.extend([program::SETTINGS, program::ENV].map(|f| path.join(f)));
            }
            if let Some(why) = checked.iter().find_map(|p| {
                fs::metadata(p)
                    .ok()
                    .and_then(|m| crate::plugins::trust::distrust(&m))
                    .map(|why| format!("{}: {why}", p.display()))
            }) {
                if self.ignored.insert(path.to_owned()) {
                    warn!("refused {why} (or pass --insecure-plugins-dir)");
                }
                return None;
            }
        }
        let main = match HandlerFile::read(&main_file) {
            Ok(file) => file,
            Err(e) => {
                warn!("refused {}: cannot read it: {e}", main_file.display());
                return None;
            }
        };
        let settings = match folder {
            true => Some(self.read_folder(path, &main)?),
            false => None,
        };
        let hash = settings.as_ref().map_or(main.hash, |(hash, _)| *hash);
        if current_hash == Some(hash) {
            return None;
        }
        let generation = Generation(self.next_generation);
        self.next_generation += 1;
        // Absolute: a program runs in its own folder, where a relative path (`--plugins
        // plugins`) would no longer lead to it.
        let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_owned());
        let (kind, handler_file, owns_file, plugin_folder) = if is_library(&main_file) {
            match self.private.copy(&name, generation, &main) {
                Ok(copy) => (HandlerKind::Native, copy, true, folder.then_some(absolute)),
                Err(e) => {
                    warn!(
                        "refused {}: cannot copy it to the private directory: {e}",
                        main_file.display()
                    );
                    return None;
                }
            }
        } else if folder {
            (HandlerKind::Program, absolute, false, None)
        } else {
            (HandlerKind::Cgi, absolute, false, None)
        };
        self.offered.insert(
            name.clone(),
            Offered {
                path: path.to_owned(),
                hash,
            },
        );
        let keys = settings.as_ref().and_then(|(_, s)| s.keys.as_ref());
        let update = self.keys.route(&name, keys, path);
        self.access.push(update);
        Some(Change::Install(NewVersion {
            name,
            generation,
            kind,
            file: handler_file,
            owns_file,
            folder: plugin_folder,
            source: path.to_owned(),
            hash,
            init_timeout: settings.as_ref().and_then(|(_, s)| s.start_timeout),
            pace: settings.as_ref().and_then(|(_, s)| s.pace),
        }))
    }
}

impl Watcher {
    /// A handler folder's hash (over `main`, its `serve` or library, and the folder's stamp)
    /// and settings; `None` (logged once) when they cannot be read.
    fn read_folder(
        &mut self,
        dir: &Path,
        main: &HandlerFile,
    ) -> Option<(ContentHash, ProgramSettings)> {
        let read = program::version_hash(dir, main.hash)
            .map_err(|e| format!("cannot read it: {e}"))
            .and_then(|hash| Ok((hash, program::read_settings(dir)?)))
            .and_then(|read| program::read_env(dir).map(|_| read));
        match read {
            Ok(read) => {
                self.ignored.remove(dir);
                Some(read)
            }
            Err(why) => {
                if self.ignored.insert(dir.to_owned()) {
                    warn!("refused {}: {why}", dir.display());
                }
                None
            }
        }
    }
}

fn is_library(path: &Path) -> bool {
    path.extension().is_some_and(|ext| ext == "so")
}

/// The route a file serves, or the stem that is not a valid route name.
fn route_for(path: &Path) -> Result<PluginName, String> {
    match PluginName::for_library(path) {
        Some(route) => route,
        None => PluginName::for_program(path),
    }
}

fn route_of(path: &Path) -> Option<PluginName> {
    route_for(path).ok()
}
