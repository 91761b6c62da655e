//! The route table: which loaded plugin serves which `/<name>`, and the snapshot intake reads.
//!
//! A lane owns its registry (no shared map, no lock); the watcher sends it the versions to
//! install or remove. Plugins themselves are shared as `Arc<LoadedPlugin>`: immutable once
//! loaded, so several lanes, and a call still running on a replaced version, may hold one.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::cgi::CgiProgram;
use crate::loader::{Generation, LoadedPlugin, PluginStats};

/// A route name: `[a-z0-9_-]{1,64}`. The only way a name from a file or a URL becomes one.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PluginName(String);

impl PluginName {
    /// The name if it is valid.
    pub fn parse(text: &str) -> Option<PluginName> {
        let valid = (1..=64).contains(&text.len())
            && text
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
        valid.then(|| PluginName(text.to_owned()))
    }

    /// The route a program file serves: its stem (`wordstats.py` gives `wordstats`).
    pub fn for_program(path: &Path) -> Result<PluginName, String> {
        let stem = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        PluginName::parse(&stem).ok_or(stem)
    }

    /// The route a library file serves: its stem without a leading `lib`
    /// (`libecho.so` and `echo.so` both give `echo`). `None` when the file is not a `.so`.
    pub fn for_library(path: &Path) -> Option<Result<PluginName, String>> {
        if path.extension()? != "so" {
            return None;
        }
        let stem = path.file_stem()?.to_string_lossy();
        let stem = stem
            .strip_prefix("lib")
            .filter(|s| !s.is_empty())
            .unwrap_or(&stem);
        Some(PluginName::parse(stem).ok_or_else(|| stem.to_owned()))
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Lets the registry be searched with the route as received (no allocation per request; an
/// invalid name is simply not found).
impl Borrow<str> for PluginName {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for PluginName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What intake may know of a route without touching the plugin: for `/-/plugins` and for
/// refusing an oversized body before reading it.
#[derive(Clone, Debug)]
pub struct RouteInfo {
    /// The route.
    pub name: PluginName,
    /// The plugin crate's name and version.
    pub crate_name: String,
    /// The plugin crate's version.
    pub version: String,
    /// One line on what it does.
    pub description: String,
    /// Which load this is.
    pub generation: Generation,
    /// When it was loaded.
    pub loaded_at: SystemTime,
    /// The plugin's own body limit, if any.
    pub max_body: Option<u64>,
    /// The plugin's own deadline, if any.
    pub deadline: Option<Duration>,
    /// Its live counters.
    pub stats: Arc<PluginStats>,
}

/// The routes of one registry, sorted by name; published to intake whenever it changes.
pub type RouteTable = Arc<Vec<RouteInfo>>;

/// What serves a route: a loaded library, or an external program run per request (CGI).
#[derive(Clone, Debug)]
pub enum Handler {
    /// A `.so` plugin.
    Native(Arc<LoadedPlugin>),
    /// An executable run as a CGI script.
    Program(Arc<CgiProgram>),
}

impl Handler {
    /// The route it serves.
    pub fn name(&self) -> &PluginName {
        match self {
            Handler::Native(p) => &p.name,
            Handler::Program(p) => &p.name,
        }
    }

    /// Which version of the route it is.
    pub fn generation(&self) -> Generation {
        match self {
            Handler::Native(p) => p.generation,
            Handler::Program(p) => p.generation,
        }
    }

    /// Its counters.
    pub fn stats(&self) -> &Arc<PluginStats> {
        match self {
            Handler::Native(p) => &p.stats,
            Handler::Program(p) => &p.stats,
        }
    }

    fn route_info(&self) -> RouteInfo {
        match self {
            Handler::Native(p) => RouteInfo {
                name: p.name.clone(),
                crate_name: p.meta.crate_name.clone(),
                version: p.meta.version.clone(),
                description: p.meta.description.clone(),
                generation: p.generation,
                loaded_at: p.loaded_at,
                max_body: p.meta.max_body,
                deadline: p.meta.deadline,
                stats: Arc::clone(&p.stats),
            },
            Handler::Program(p) => RouteInfo {
                name: p.name.clone(),
                crate_name: "cgi".to_owned(),
                version: format!("{:016x}", p.hash),
                description: format!("program {}", p.path.display()),
                generation: p.generation,
                loaded_at: p.loaded_at,
                max_body: None,
                deadline: None,
                stats: Arc::clone(&p.stats),
            },
        }
    }
}

/// The handlers a lane can call, by route.
#[derive(Clone, Default)]
pub struct Registry {
    handlers: HashMap<PluginName, Handler>,
}

impl Registry {
    /// Serves `handler` at its route; returns the version it replaces, if any. A call already
    /// running on the old version keeps its own reference and finishes on it.
    pub fn install(&mut self, handler: Handler) -> Option<Handler> {
        self.handlers.insert(handler.name().clone(), handler)
    }

    /// Stops serving `name`; returns the version that served it.
    pub fn remove(&mut self, name: &PluginName) -> Option<Handler> {
        self.handlers.remove(name)
    }

    /// The handler serving `name`, if any.
    pub fn get(&self, name: &str) -> Option<&Handler> {
        self.handlers.get(name)
    }

    /// How many routes are served.
    pub fn len(&self) -> usize {
        self.handlers.len()
    }

    /// Whether no route is served.
    pub fn is_empty(&self) -> bool {
        self.handlers.is_empty()
    }

    /// A snapshot of the routes for intake.
    pub fn routes(&self) -> RouteTable {
        let mut routes: Vec<RouteInfo> = self.handlers.values().map(Handler::route_info).collect();
        routes.sort_by(|a, b| a.name.cmp(&b.name));
        Arc::new(routes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_routing_rule() {
        let table: &[(&str, Option<Result<&str, &str>>)] = &[
            ("plugins/libecho.so", Some(Ok("echo"))),
            ("plugins/echo.so", Some(Ok("echo"))),
            ("plugins/lib.so", Some(Ok("lib"))),
            ("plugins/my_plugin-2.so", Some(Ok("my_plugin-2"))),
            ("plugins/Echo.so", Some(Err("Echo"))),
            ("plugins/a.b.so", Some(Err("a.b"))),
            ("plugins/echo.py", None),
            ("plugins/echo", None),
        ];
        for (path, expected) in table {
            let got = PluginName::for_library(Path::new(path));
            let got = got
                .as_ref()
                .map(|r| r.as_ref().map(PluginName::as_str).map_err(String::as_str));
            assert_eq!(got, *expected, "{path}");
        }
        assert!(PluginName::parse(&"a".repeat(65)).is_none());
        assert!(PluginName::parse("").is_none());
        assert!(PluginName::parse("../x").is_none());
    }
}
