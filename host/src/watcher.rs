//! Watches the plugins folder and turns file changes into plugin versions for the lanes.
//!
//! Every interval it lists the `*.so` files and executable programs and their stamps (size, mtime, inode). A new or
//! changed file is taken only once its stamp has held for one whole interval (so a file still
//! being written is not loaded); then it is read and hashed, and loaded through the loader's
//! private copy unless the same bytes already serve that route or were already refused. Each
//! version that loads and `init`s is sent to every lane (`LaneMsg::Install`); a removed file
//! unregisters its route (`LaneMsg::Remove`). Loading happens here, not on a lane, so a slow
//! `init` never holds up requests.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, SystemTime};

use crate::cgi::CgiProgram;
use crate::lane::LaneMsg;
use crate::loader::{Generation, LoadError, Loader, PluginFile};
use crate::registry::{Handler, PluginName, Registry};
use crate::{info, warn};

/// In the state folder: the file being loaded right now (`<hash> <path>`).
const LOADING: &str = "loading";
/// In the state folder: hashes whose loading killed a worker, one per line.
const CRASHED: &str = "crashed";

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
    /// Its stamp held for a whole interval and it was considered.
    settled: bool,
}

/// The file a route is served from.
struct Serving {
    path: PathBuf,
    hash: u64,
    generation: Generation,
}

/// What changed for the lanes.
enum Change {
    Install(Handler),
    Remove(PluginName),
}

/// The folder's state and the loader; runs on its own thread after the first scan.
pub struct Watcher {
    dir: PathBuf,
    loader: Loader,
    interval: Duration,
    /// Replaced versions that may stay mapped before a restart is asked for.
    swap_budget: usize,
    budget_spent: bool,
    files: BTreeMap<PathBuf, Seen>,
    serving: HashMap<PluginName, Serving>,
    /// Contents that failed to load: not tried again until the file changes.
    refused: HashSet<u64>,
    /// Files already reported as ignored (bad name, route taken), to log them once.
    ignored: HashSet<PathBuf>,
    /// The folder could not be read, or was not trusted, at the last poll (logged once).
    unreadable: bool,
    /// Skip the ownership and permission checks (`--insecure-plugins-dir`).
    insecure: bool,
    /// The supervisor's state folder, which outlives this worker: a marker there names the file
    /// being loaded, so a load that kills the worker is known to the next one.
    state_dir: Option<PathBuf>,
}

impl Watcher {
    /// A watcher of `dir` that polls every `interval`.
    pub fn new(
        dir: &Path,
        loader: Loader,
        interval: Duration,
        swap_budget: usize,
        insecure: bool,
    ) -> Watcher {
        Watcher {
            dir: dir.to_owned(),
            loader,
            interval,
            swap_budget,
            budget_spent: false,
            files: BTreeMap::new(),
            serving: HashMap::new(),
            refused: HashSet::new(),
            ignored: HashSet::new(),
            unreadable: false,
            insecure,
            state_dir: std::env::var_os("FIDDLER_STATE_DIR").map(PathBuf::from),
        }
        .remembering_crashes()
    }

    /// Refuses, for good, the contents whose loading killed an earlier worker.
    fn remembering_crashes(mut self) -> Watcher {
        let Some(dir) = self.state_dir.clone() else {
            return self;
        };
        if let Ok(marker) = fs::read_to_string(dir.join(LOADING)) {
            let _ = fs::remove_file(dir.join(LOADING));
            if let Some((hash, path)) = marker.split_once(' ') {
                warn!(
                    "skipping {path}: the worker died while loading it; it stays refused until \
                     the file changes"
                );
                let mut crashed = fs::read_to_string(dir.join(CRASHED)).unwrap_or_default();
                crashed.push_str(hash);
                crashed.push('\n');
                let _ = fs::write(dir.join(CRASHED), crashed);
            }
        }
        let crashed = fs::read_to_string(dir.join(CRASHED)).unwrap_or_default();
        self.refused.extend(
            crashed
                .lines()
                .filter_map(|h| u64::from_str_radix(h, 16).ok()),
        );
        self
    }

    /// Loads every plugin in the folder now (at start-up, without waiting for stability).
    pub fn scan_now(&mut self) -> Registry {
        let mut registry = Registry::default();
        for (path, stamp) in self.list().unwrap_or_default() {
            self.files.insert(
                path.clone(),
                Seen {
                    stamp,
                    settled: true,
                },
            );
            if let Some(Change::Install(handler)) = self.consider(&path) {
                registry.install(handler);
            }
        }
        registry
    }

    /// Polls on a thread of its own, sending changes to every lane, until no lane is left.
    pub fn spawn(mut self, lanes: Vec<Sender<LaneMsg>>) -> std::io::Result<thread::JoinHandle<()>> {
        thread::Builder::new()
            .name("watcher".to_owned())
            .spawn(move || loop {
                thread::sleep(self.interval);
                for change in self.poll() {
                    let mut delivered = false;
                    for lane in &lanes {
                        let msg = match &change {
                            Change::Install(handler) => LaneMsg::Install(handler.clone()),
                            Change::Remove(name) => LaneMsg::Remove(name.clone()),
                        };
                        delivered |= lane.send(msg).is_ok();
                    }
                    if !delivered {
                        return;
                    }
                }
            })
    }

    /// The `*.so` libraries and executable programs in the folder with their stamps; `None`
    /// when it cannot be read. Hidden files (temporary files of `mv`, rsync, editors) are
    /// skipped; any other file is reported once as ignored.
    fn list(&mut self) -> Option<BTreeMap<PathBuf, Stamp>> {
        let distrusted = match fs::metadata(&self.dir) {
            Ok(meta) if !self.insecure => crate::trust::distrust(&meta),
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

    fn poll(&mut self) -> Vec<Change> {
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
            self.ignored.remove(&path);
            let Some(name) = self
                .serving
                .iter()
                .find(|(_, s)| s.path == path)
                .map(|(name, _)| name.clone())
            else {
                continue;
            };
            self.serving.remove(&name);
            info!(
                "{} was removed: /{name} is no longer served",
                path.display()
            );
            changes.push(Change::Remove(name.clone()));
            // Another file for the same route (echo.so beside libecho.so) gets its turn.
            for (other, seen) in self.files.iter_mut() {
                if route_of(other).as_ref() == Some(&name) {
                    seen.settled = false;
                    self.ignored.remove(other);
                }
            }
        }
        for (path, stamp) in listing {
            let ready = match self.files.get_mut(&path) {
                None => {
                    self.files.insert(
                        path.clone(),
                        Seen {
                            stamp,
                            settled: false,
                        },
                    );
                    false
                }
                Some(seen) if seen.stamp != stamp => {
                    seen.stamp = stamp;
                    seen.settled = false;
                    false
                }
                Some(seen) if !seen.settled => {
                    seen.settled = true;
                    true
                }
                Some(_) => false,
            };
            if ready {
                changes.extend(self.consider(&path));
            }
        }
        changes
    }

    /// Loads a settled file if it is a new version of its route.
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
        let current = self.serving.get(&name);
        if let Some(current) = current.filter(|c| c.path != path) {
            if self.ignored.insert(path.to_owned()) {
                warn!(
                    "ignored {}: /{name} is already served by {}",
                    path.display(),
                    current.path.display()
                );
            }
            return None;
        }
        if !self.insecure {
            if let Some(why) = fs::metadata(path)
                .ok()
                .and_then(|m| crate::trust::distrust(&m))
            {
                if self.ignored.insert(path.to_owned()) {
                    warn!(
                        "refused {}: {why} (or pass --insecure-plugins-dir)",
                        path.display()
                    );
                }
                return None;
            }
        }
        let file = match PluginFile::read(path) {
            Ok(file) => file,
            Err(e) => {
                warn!("refused {}: {}", path.display(), LoadError::Read(e));
                return None;
            }
        };
        if current.is_some_and(|c| c.hash == file.hash) || self.refused.contains(&file.hash) {
            return None;
        }
        let replaces = current.map(|c| c.generation);
        if !is_library(path) {
            return Some(self.register_program(name, file, replaces));
        }
        let marker = self.state_dir.as_ref().map(|dir| dir.join(LOADING));
        if let Some(marker) = &marker {
            let _ = fs::write(marker, format!("{:016x} {}", file.hash, path.display()));
        }
        let result = self.loader.load(name.clone(), &file);
        if let Some(marker) = &marker {
            let _ = fs::remove_file(marker);
        }
        let change = match result {
            Ok(plugin) => {
                let replacing = replaces
                    .map(|g| format!(", replacing generation {}", g.0))
                    .unwrap_or_default();
                info!(
                    "loaded {} as /{name}: {} {} ({}), generation {}{replacing}",
                    path.display(),
                    plugin.meta.crate_name,
                    plugin.meta.version,
                    plugin.meta.description,
                    plugin.generation.0
                );
                self.serving.insert(
                    name,
                    Serving {
                        path: path.to_owned(),
                        hash: file.hash,
                        generation: plugin.generation,
                    },
                );
                Some(Change::Install(Handler::Native(Arc::new(plugin))))
            }
            Err(e) => {
                let keeps = replaces
                    .map(|g| format!("; generation {} keeps serving /{name}", g.0))
                    .unwrap_or_default();
                warn!("refused {}: {e}{keeps}", path.display());
                self.refused.insert(file.hash);
                None
            }
        };
        self.check_budget();
        change
    }

    /// Serves an executable as a CGI program (nothing is loaded: it runs per request).
    fn register_program(
        &mut self,
        name: PluginName,
        file: PluginFile,
        replaces: Option<Generation>,
    ) -> Change {
        let generation = self.loader.next_generation();
        let replacing = replaces
            .map(|g| format!(", replacing generation {}", g.0))
            .unwrap_or_default();
        info!(
            "serving {} as /{name}: a program run per request (CGI), generation {}{replacing}",
            file.path.display(),
            generation.0
        );
        self.serving.insert(
            name.clone(),
            Serving {
                path: file.path.clone(),
                hash: file.hash,
                generation,
            },
        );
        // Absolute: the program runs with the plugins folder as its working directory, where a
        // relative path (`--plugins plugins`) would no longer lead to it.
        let path = std::path::absolute(&file.path).unwrap_or(file.path);
        Change::Install(Handler::Program(Arc::new(CgiProgram {
            name,
            path,
            generation,
            loaded_at: SystemTime::now(),
            hash: file.hash,
            stats: Arc::default(),
        })))
    }

    /// Logs, once, that replaced versions have used up their budget of mappings.
    fn check_budget(&mut self) {
        let live = self
            .serving
            .values()
            .filter(|s| is_library(&s.path))
            .count();
        let stale = self.loader.mapped().saturating_sub(live);
        if stale > self.swap_budget && !self.budget_spent {
            self.budget_spent = true;
            crate::request_restart(&format!(
                "{stale} replaced or refused plugin libraries stay mapped (budget {})",
                self.swap_budget
            ));
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
