//! Loads plugin libraries. All the host's dynamic-loading `unsafe` lives here.
//!
//! A watched file is never opened by the dynamic loader directly: dlopen matches an object it
//! already has by path and by inode (returning old code), and a library overwritten in place
//! crashes the process. So each file is read, hashed, copied to a private directory (0700) under
//! a name used once, loaded from there with abi_stable's layout check, and its copy unlinked (the
//! mapping keeps it alive). Libraries are never unloaded.

use std::fmt;
use std::fs;
use std::hash::{DefaultHasher, Hasher};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use abi_stable::library::{lib_header_from_path, LibraryError, RootModuleError};
use plugin_api::{PluginModuleRef, PluginState, Request, Response};

use crate::registry::PluginName;

/// The largest plugin file read.
const MAX_PLUGIN_FILE: u64 = 1 << 30;

/// Counts loaded versions, so a plugin loaded twice is told apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Generation(pub u64);

/// What a plugin says about itself, copied out of the library into host memory.
#[derive(Clone, Debug)]
pub struct PluginMeta {
    /// The plugin crate's name.
    pub crate_name: String,
    /// The plugin crate's version.
    pub version: String,
    /// One line on what it does.
    pub description: String,
    /// Its own call deadline, if it sets one.
    pub deadline: Option<Duration>,
    /// Its own body limit, if it sets one.
    pub max_body: Option<u64>,
}

/// A plugin version's counters, shared with intake's `/-/plugins` (atomics, no lock).
#[derive(Debug, Default)]
pub struct PluginStats {
    /// Calls that reached the plugin.
    pub calls: AtomicU64,
    /// Calls that panicked or passed their deadline.
    pub errors: AtomicU64,
    /// Calls that panicked.
    pub panics: AtomicU64,
    /// Calls that passed their deadline (each quarantines the version until it returns).
    pub timeouts: AtomicU64,
    /// Answers by status class (index 1..=5 for 1xx..5xx).
    pub responses: [AtomicU64; 6],
}

/// A plugin file's contents, read once: what is hashed, copied and loaded.
pub struct PluginFile {
    /// The file in the plugins folder.
    pub path: PathBuf,
    /// Its bytes.
    pub bytes: Vec<u8>,
    /// A hash of `bytes`: the same content is loaded (or refused) once.
    pub hash: u64,
}

impl PluginFile {
    /// Reads a plugin file (at most 1 GiB).
    pub fn read(path: &Path) -> io::Result<PluginFile> {
        let bytes = read_bounded(path)?;
        let mut hasher = DefaultHasher::new();
        hasher.write(&bytes);
        Ok(PluginFile {
            path: path.to_owned(),
            hash: hasher.finish(),
            bytes,
        })
    }
}

/// One loaded version of one plugin: its module, the state its `init` built, and its metadata.
pub struct LoadedPlugin {
    /// The route it serves.
    pub name: PluginName,
    /// Which load this is.
    pub generation: Generation,
    /// Its metadata.
    pub meta: PluginMeta,
    /// When it was loaded.
    pub loaded_at: SystemTime,
    /// The hash of the file it was loaded from.
    pub hash: u64,
    /// Its counters.
    pub stats: Arc<PluginStats>,
    module: PluginModuleRef,
    /// Invariant: made by this `module`'s `init`, dropped only by `Drop` below.
    state: PluginState,
}

// SAFETY: `state` points to the plugin's `P: Plugin`, which the `Plugin` trait bounds require to
// be `Send + Sync`; `module` is a reference to an immutable, never-unloaded function table.
unsafe impl Send for LoadedPlugin {}
// SAFETY: as above; `handle` takes the state by shared reference, which `P: Sync` allows from
// any thread at once.
unsafe impl Sync for LoadedPlugin {}

impl LoadedPlugin {
    /// Calls the plugin's handler. `Err` carries the message of a panic caught in the plugin.
    pub fn call(&self, request: Request) -> Result<Response, String> {
        (self.module.handle())(self.state, request)
            .into_result()
            .map_err(|why| why.into_string())
    }
}

impl Drop for LoadedPlugin {
    fn drop(&mut self) {
        // The last `Arc` is gone, so no call is using the state (each call holds a clone).
        (self.module.drop_state())(self.state);
    }
}

impl fmt::Debug for LoadedPlugin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoadedPlugin")
            .field("name", &self.name)
            .field("generation", &self.generation)
            .field("meta", &self.meta)
            .finish_non_exhaustive()
    }
}

/// Why a file was not loaded. Each variant makes one readable log line.
#[derive(Debug)]
pub enum LoadError {
    /// The file could not be read (or is larger than the limit).
    Read(io::Error),
    /// The private copy could not be written.
    Copy(io::Error),
    /// The dynamic loader or the layout check refused it.
    Library {
        /// One or two plain sentences (what the log and `check` print).
        plain: String,
        /// abi_stable's own report (for a layout mismatch, the whole type diff).
        detail: String,
    },
    /// The plugin's `init` returned an error or panicked.
    Init(String),
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoadError::Read(e) => write!(f, "cannot read it: {e}"),
            LoadError::Copy(e) => write!(f, "cannot copy it to the private directory: {e}"),
            LoadError::Library { plain, .. } => f.write_str(plain),
            LoadError::Init(why) => write!(f, "its init failed: {why}"),
        }
    }
}

impl std::error::Error for LoadError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            LoadError::Read(e) | LoadError::Copy(e) => Some(e),
            _ => None,
        }
    }
}

/// Loads plugin files through private copies.
pub struct Loader {
    /// Private (0700) directory for the copies; removed when the loader is dropped.
    private_dir: PathBuf,
    next_generation: u64,
    /// Libraries mapped into the process (never unloaded), shared with the admin routes.
    mapped: Arc<AtomicUsize>,
}

impl Loader {
    /// Creates the private directory under the system temporary directory. `mapped` counts
    /// the libraries this process has mapped.
    pub fn new(mapped: Arc<AtomicUsize>) -> io::Result<Loader> {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .subsec_nanos();
        let private_dir =
            std::env::temp_dir().join(format!("fiddler-crab-{}-{nanos:08x}", std::process::id()));
        fs::DirBuilder::new().mode(0o700).create(&private_dir)?;
        Ok(Loader {
            private_dir,
            next_generation: 1,
            mapped,
        })
    }

    /// How many libraries this process has mapped so far.
    pub fn mapped(&self) -> usize {
        self.mapped.load(Ordering::Relaxed)
    }

    /// A new generation number (also used for programs, which are not loaded).
    pub fn next_generation(&mut self) -> Generation {
        let generation = Generation(self.next_generation);
        self.next_generation += 1;
        generation
    }

    /// Loads `file` as plugin `name`: copy, dlopen, layout check, `init`.
    pub fn load(&mut self, name: PluginName, file: &PluginFile) -> Result<LoadedPlugin, LoadError> {
        let generation = self.next_generation();
        // A name used once: dlopen would hand back an old library for a name it has seen.
        let copy = self
            .private_dir
            .join(format!("{name}-{:016x}-{}.so", file.hash, generation.0));
        write_private(&copy, &file.bytes).map_err(LoadError::Copy)?;
        let header = lib_header_from_path(&copy);
        if header.is_ok() {
            // Mapped from here on, whether or not the checks below pass.
            self.mapped.fetch_add(1, Ordering::Relaxed);
        }
        let module = header
            .and_then(|header| header.init_root_module::<PluginModuleRef>())
            .map_err(|e| LoadError::Library {
                plain: explain(&e),
                detail: e.to_string(),
            });
        // The mapping keeps the library alive; the name is no longer needed either way.
        let _ = fs::remove_file(&copy);
        let module = module?;
        let info = (module.info())();
        let meta = PluginMeta {
            crate_name: info.name.into_string(),
            version: info.version.into_string(),
            description: info.description.into_string(),
            deadline: info.deadline_ms.into_option().map(Duration::from_millis),
            max_body: info.max_body.into_option(),
        };
        let state = (module.init())()
            .into_result()
            .map_err(|why| LoadError::Init(why.into_string()))?;
        Ok(LoadedPlugin {
            name,
            generation,
            meta,
            loaded_at: SystemTime::now(),
            hash: file.hash,
            stats: Arc::default(),
            module,
            state,
        })
    }
}

impl Drop for Loader {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.private_dir);
    }
}

fn read_bounded(path: &Path) -> io::Result<Vec<u8>> {
    let len = fs::metadata(path)?.len();
    if len > MAX_PLUGIN_FILE {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("larger than {MAX_PLUGIN_FILE} bytes"),
        ));
    }
    fs::read(path)
}

fn write_private(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// One or two plain sentences for a load failure, instead of abi_stable's layout dump.
fn explain(error: &LibraryError) -> String {
    match error {
        LibraryError::OpenError { err, .. } => {
            let detail = err.to_string();
            let detail = detail.rsplit(": ").next().unwrap_or(&detail).to_owned();
            format!("not a loadable library ({detail})")
        }
        LibraryError::GetSymbolError { .. } => {
            "no plugin root module in it (a plugin crate must call plugin_api::export_plugin!)"
                .to_owned()
        }
        LibraryError::ParseVersionError(e) => format!("its plugin-api version is unreadable: {e}"),
        LibraryError::IncompatibleVersionNumber {
            expected_version,
            actual_version,
            ..
        } => format!(
            "built against plugin-api {actual_version}, which is incompatible with this server's \
             {expected_version}; rebuild it against this server's plugin-api"
        ),
        LibraryError::RootModule {
            err: RootModuleError::Unwound,
            ..
        } => "its module constructor panicked".to_owned(),
        LibraryError::RootModule { err, .. } => format!("its module constructor failed: {err}"),
        LibraryError::AbiInstability(_) => "built against an incompatible plugin-api (the \
             interface's type layout differs); rebuild it against this server's plugin-api"
            .to_owned(),
        LibraryError::InvalidAbiHeader(_) => {
            "built with an incompatible abi_stable version".to_owned()
        }
        LibraryError::InvalidCAbi { .. } => {
            "built by a compiler with another C ABI layout".to_owned()
        }
        LibraryError::Many(errors) => errors.iter().map(explain).collect::<Vec<_>>().join("; "),
    }
}
