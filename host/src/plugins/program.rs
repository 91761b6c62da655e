//! Handler folders, as the plugins folder holds them: a folder `plugins/<name>/` with an
//! executable `serve` (a program that stays up) or one `*.so` at its top level (a native plugin
//! with files), beside whatever it needs (code, model files, a virtualenv), its optional
//! `settings` (`key=value`: `deadline`, `max_body`, `start_timeout`, `max_lanes`, `pace`,
//! `keys`, for programs `port_owner`, and what its sandbox opens, read by
//! `exec::sandbox::settings`) and `env` (`KEY=value` lines added to its environment). This file
//! reads that format and says when the folder changed; running the program is
//! `exec::program`'s, loading the library `plugins::loader`'s.

use std::collections::hash_map::DefaultHasher;
use std::fs;
use std::hash::Hasher;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::ids::ContentHash;
use crate::plugins::keyfiles::KeysSetting;

/// The executable a program folder must hold.
pub const SERVE: &str = "serve";
/// Its settings file.
pub const SETTINGS: &str = "settings";
/// Its environment file.
pub const ENV: &str = "env";
/// The most entries looked at in a folder on each poll: beyond them, changes are not seen.
/// (A virtualenv holds thousands of files: in `.venv` it is skipped, like every hidden name.)
const MAX_ENTRIES: usize = 10_000;
/// Folders never looked into: caches and package trees that change without being the program.
const SKIPPED: &[&str] = &["__pycache__", "node_modules"];
/// How deep the folder is walked.
const MAX_DEPTH: usize = 12;
/// The largest settings or env file read.
const MAX_SMALL_FILE: u64 = 64 * 1024;

/// A program's own settings; `None` takes the server's flag.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProgramSettings {
    /// Call deadline, in milliseconds (`deadline=`).
    pub deadline_ms: Option<u64>,
    /// Largest request body, in bytes (`max_body=`, with K, M or G).
    pub max_body: Option<u64>,
    /// How long it may take to start listening (`start_timeout=`, milliseconds).
    pub start_timeout: Option<Duration>,
    /// Instances of it that may serve calls at once (`max_lanes=`; each is a process of its
    /// own). Unset: it says nothing (one in jellyfish mode, `--lanes` otherwise).
    pub max_lanes: Option<u64>,
    /// The pause after each of its calls before its lane takes the next (`pace=`,
    /// milliseconds): a GPU or a thermal budget that wants a breath. Unset: `--pace`.
    pub pace: Option<Duration>,
    /// Whether a listener on its `$PORT` held by a process outside it is taken for its own
    /// (`port_owner=any`: `docker run -p`, where the container runtime holds the port).
    /// Default `program`: only its own processes' listeners count.
    pub any_port_owner: bool,
    /// Which keys a caller needs (`keys=FILE`, relative to the folder or absolute, or
    /// `keys=none`). Unset: the server's `--keys`, if any.
    pub keys: Option<KeysSetting>,
}

/// The library of a native plugin folder: the one `*.so` at its top level (`None` when it has
/// none; an error naming them when it has more than one, since which one serves is unclear).
pub fn folder_library(dir: &Path) -> Result<Option<PathBuf>, String> {
    let mut libraries: Vec<PathBuf> = fs::read_dir(dir)
        .map_err(|e| format!("cannot read it: {e}"))?
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| {
            path.extension().is_some_and(|ext| ext == "so")
                && !path
                    .file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with('.'))
                && path.is_file()
        })
        .collect();
    libraries.sort();
    match libraries.len() {
        0 => Ok(None),
        1 => Ok(libraries.pop()),
        _ => Err(format!(
            "it holds {} libraries ({}): a plugin folder holds one .so",
            libraries.len(),
            libraries
                .iter()
                .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

/// Whether `dir` is a program folder (it holds an executable `serve`).
pub fn is_program_dir(dir: &Path) -> bool {
    fs::metadata(dir.join(SERVE)).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// What identifies the folder's contents without reading them: a hash over every entry's
/// relative path, size, modification time, inode and mode (hidden names, `__pycache__` and
/// `node_modules` skipped), and the entries' total size. A model file rewritten in place changes it.
pub fn folder_stamp(dir: &Path) -> io::Result<(u64, u64)> {
    let mut hasher = DefaultHasher::new();
    let mut total = 0u64;
    let mut seen = 0usize;
    let mut pending: Vec<(PathBuf, usize)> = vec![(dir.to_owned(), 0)];
    while let Some((folder, depth)) = pending.pop() {
        let mut entries: Vec<_> = fs::read_dir(&folder)?.flatten().collect();
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            let name = entry.file_name();
            let text = name.to_string_lossy();
            if text.starts_with('.') || SKIPPED.contains(&text.as_ref()) {
                continue;
            }
            seen += 1;
            if seen > MAX_ENTRIES {
                return Ok((hasher.finish(), total));
            }
            // Not followed: a link to a big tree costs nothing; its own stamp counts.
            let Ok(meta) = entry.metadata() else {
                continue;
            };
            let path = entry.path();
            let relative = path.strip_prefix(dir).unwrap_or(&path);
            hasher.write(relative.as_os_str().as_encoded_bytes());
            for n in [
                meta.len(),
                meta.mtime() as u64,
                meta.mtime_nsec() as u64,
                meta.ino(),
                u64::from(meta.mode()),
            ] {
                hasher.write_u64(n);
            }
            total = total.saturating_add(meta.len());
            if meta.is_dir() && depth + 1 < MAX_DEPTH {
                pending.push((path, depth + 1));
            }
        }
    }
    Ok((hasher.finish(), total))
}

/// The version's hash: its main file's hash (`serve`'s or the library's bytes) and the
/// folder's stamp.
pub fn version_hash(dir: &Path, main: ContentHash) -> io::Result<ContentHash> {
    let (stamp, _) = folder_stamp(dir)?;
    let mut hasher = DefaultHasher::new();
    hasher.write_u64(main.0);
    hasher.write_u64(stamp);
    Ok(ContentHash(hasher.finish()))
}

/// Reads `dir/settings` (absent: all defaults). An unknown key or a bad value is an error
/// naming it, so a typo does not silently fall back to a default.
pub fn read_settings(dir: &Path) -> Result<ProgramSettings, String> {
    let mut settings = ProgramSettings::default();
    for (line, key, value) in pairs(dir, SETTINGS)? {
        let number = || {
            value
                .parse::<u64>()
                .map_err(|_| format!("{SETTINGS} line {line}: {key} takes a number, not {value:?}"))
        };
        match key.as_str() {
            "deadline" => settings.deadline_ms = Some(number()?.max(1)),
            "max_lanes" => settings.max_lanes = Some(number()?.clamp(1, 64)),
            "pace" => settings.pace = Some(Duration::from_millis(number()?)),
            "start_timeout" => {
                settings.start_timeout = Some(Duration::from_millis(number()?.max(1)))
            }
            "port_owner" => {
                settings.any_port_owner = match value.as_str() {
                    "program" => false,
                    "any" => true,
                    _ => {
                        return Err(format!(
                            "{SETTINGS} line {line}: port_owner takes program or any, not {value:?}"
                        ))
                    }
                }
            }
            "keys" => {
                settings.keys = Some(KeysSetting::parse(&value).map_err(|why| {
                    format!("{SETTINGS} line {line}: keys takes {why}, not {value:?}")
                })?)
            }
            "max_body" => {
                settings.max_body = Some(crate::config::size(&value).map_err(|why| {
                    format!("{SETTINGS} line {line}: max_body takes {why}, not {value:?}")
                })?)
            }
            // What the sandbox opens: read by the executor (`exec::sandbox::settings`).
            k if crate::exec::sandbox::settings::KEYS.contains(&k) => {}
            _ => {
                return Err(format!(
                    "{SETTINGS} line {line}: unknown key {key:?} (known: deadline, max_body, \
                     start_timeout, max_lanes, pace, port_owner, keys, {})",
                    crate::exec::sandbox::settings::KEYS.join(", ")
                ))
            }
        }
    }
    Ok(settings)
}

/// Reads `dir/env` (absent: nothing): `KEY=value` pairs, the value as written after `=`.
pub fn read_env(dir: &Path) -> Result<Vec<(String, String)>, String> {
    let pairs = pairs(dir, ENV)?;
    for (line, key, _) in &pairs {
        let valid = key
            .bytes()
            .enumerate()
            .all(|(i, b)| b == b'_' || b.is_ascii_alphabetic() || (i > 0 && b.is_ascii_digit()));
        if !valid {
            return Err(format!("{ENV} line {line}: {key:?} is not a variable name"));
        }
    }
    Ok(pairs.into_iter().map(|(_, k, v)| (k, v)).collect())
}

/// The `key=value` lines of a small file (blank lines and `#` comments skipped), with their
/// line numbers; an absent file has none.
pub(crate) fn pairs(dir: &Path, file: &str) -> Result<Vec<(usize, String, String)>, String> {
    let path = dir.join(file);
    let text = match fs::metadata(&path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(format!("cannot read {file}: {e}")),
        Ok(meta) if meta.len() > MAX_SMALL_FILE => {
            return Err(format!("{file} is larger than {MAX_SMALL_FILE} bytes"))
        }
        Ok(_) => fs::read_to_string(&path).map_err(|e| format!("cannot read {file}: {e}"))?,
    };
    let mut out = Vec::new();
    for (at, line) in text.lines().enumerate() {
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let Some((key, value)) = trimmed.split_once('=') else {
            return Err(format!("{file} line {}: expected key=value", at + 1));
        };
        out.push((at + 1, key.trim().to_owned(), value.trim().to_owned()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn folder(files: &[(&str, &str)]) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "fiddler-program-test-{}-{}",
            std::process::id(),
            files.len() * 31 + files.first().map_or(0, |f| f.1.len())
        ));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("mkdir");
        for (name, text) in files {
            fs::write(dir.join(name), text).expect("write");
        }
        dir
    }

    fn settings_of(dir: &Path, text: &str) -> ProgramSettings {
        fs::write(dir.join(SETTINGS), text).expect("write");
        read_settings(dir).expect("settings")
    }

    #[test]
    fn settings_and_env_are_read_and_typos_refused() {
        let dir = folder(&[
            (
                SETTINGS,
                "# mine\ndeadline = 5000\nmax_body=2M\n\nstart_timeout=90000\nmax_lanes=3\npace=250\n",
            ),
            (ENV, "MODEL=/models/a.gguf\nCUDA_VISIBLE_DEVICES=0\nX=a=b\n"),
        ]);
        let settings = read_settings(&dir).expect("settings");
        assert_eq!(settings.deadline_ms, Some(5000));
        assert_eq!(settings.max_body, Some(2 << 20));
        assert_eq!(settings.start_timeout, Some(Duration::from_secs(90)));
        assert_eq!(settings.max_lanes, Some(3));
        assert_eq!(settings.pace, Some(Duration::from_millis(250)));
        assert!(
            !settings.any_port_owner,
            "only its own listeners by default"
        );
        let env = read_env(&dir).expect("env");
        assert_eq!(env[2], ("X".to_owned(), "a=b".to_owned()));
        fs::write(dir.join(SETTINGS), "dedline=5\n").expect("write");
        assert!(read_settings(&dir)
            .unwrap_err()
            .contains("unknown key \"dedline\""));
        fs::write(dir.join(SETTINGS), "deadline=soon\n").expect("write");
        assert!(read_settings(&dir).unwrap_err().contains("line 1"));
        fs::write(dir.join(SETTINGS), "port_owner=any\n").expect("write");
        assert!(read_settings(&dir).expect("settings").any_port_owner);
        fs::write(dir.join(SETTINGS), "port_owner=anyone\n").expect("write");
        assert!(read_settings(&dir).unwrap_err().contains("program or any"));
        assert_eq!(
            settings_of(&dir, "keys=none\n").keys,
            Some(KeysSetting::None)
        );
        assert_eq!(
            settings_of(&dir, "keys = ../secret/keys\n").keys,
            Some(KeysSetting::File(PathBuf::from("../secret/keys")))
        );
        fs::write(dir.join(SETTINGS), "keys=\n").expect("write");
        assert!(read_settings(&dir)
            .unwrap_err()
            .contains("keys takes a file, or none"));
        fs::write(dir.join(ENV), "1X=2\n").expect("write");
        assert!(read_env(&dir).is_err());
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_stamp_moves_when_any_file_changes_but_not_for_caches() {
        let dir = folder(&[(SERVE, "#!/bin/sh\n"), ("model.bin", "weights")]);
        let before = folder_stamp(&dir).expect("stamp");
        fs::create_dir_all(dir.join("__pycache__")).expect("mkdir");
        fs::write(dir.join("__pycache__/x.pyc"), "cache").expect("write");
        fs::write(dir.join(".hidden"), "x").expect("write");
        assert_eq!(folder_stamp(&dir).expect("stamp"), before);
        fs::write(dir.join("model.bin"), "weights, retrained").expect("write");
        assert_ne!(folder_stamp(&dir).expect("stamp"), before);
        let _ = fs::remove_dir_all(&dir);
    }
}
