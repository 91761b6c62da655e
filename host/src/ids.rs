//! Identities every stage shares: which connection, which route, which version of it, which
//! contents. A leaf module: it imports nothing from the crate, so any stage may name these
//! without a circle of imports.

use std::borrow::Borrow;
use std::fmt;
use std::path::Path;

/// Names a connection across stages: its slot and a serial number, so an answer for a closed
/// connection never reaches a newer one in the same slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ConnId {
    /// Index in intake's connection table (and the mio token).
    pub slot: usize,
    /// Unique per accepted connection.
    pub serial: u64,
}

/// Counts versions of handlers (libraries and programs), so two loads of one route are told
/// apart in logs, metrics and the executors that serve them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Generation(pub u64);

/// A hash of a handler file's contents: the same bytes are loaded (or refused) once.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ContentHash(pub u64);

impl fmt::Display for ContentHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// What serves a route: a library loaded once, or a program run per request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HandlerKind {
    /// A `.so` plugin: loaded once, called per request.
    Native,
    /// An executable run per request as a CGI/1.1 script.
    Cgi,
    /// A folder whose `serve` is started once per version and stays up, called over HTTP.
    Program,
}

impl HandlerKind {
    /// The name on the executor's command line (and in `/-/plugins`).
    pub fn as_str(self) -> &'static str {
        match self {
            HandlerKind::Native => "native",
            HandlerKind::Cgi => "cgi",
            HandlerKind::Program => "program",
        }
    }

    /// The kind named on a command line.
    pub fn parse(text: &str) -> Option<HandlerKind> {
        match text {
            "native" => Some(HandlerKind::Native),
            "cgi" => Some(HandlerKind::Cgi),
            "program" => Some(HandlerKind::Program),
            _ => None,
        }
    }
}

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

/// Lets tables keyed by name be searched with the route as received (no allocation per
/// request; an invalid name is simply not found).
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
