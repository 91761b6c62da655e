//! A plugin with files: where a plugin that came as a folder (`plugins/<name>/` holding its
//! `.so` beside its `settings`, `env` and data) finds them. Plain Rust on the plugin's side; the
//! server says where through one environment variable, set before the library is loaded.

use std::path::{Path, PathBuf};

/// The environment variable that names a plugin's own folder, set in its executor before the
/// library is loaded (only for a plugin that came as a folder).
pub const PLUGIN_DIR_ENV: &str = "FIDDLER_PLUGIN_DIR";

/// The plugin's own folder, when it came as one (`plugins/<name>/`); `None` for a bare `.so`
/// and in a plugin's own tests. The executor also runs with it as its current folder, so
/// relative paths from the folder's `env` work as they are written.
pub fn plugin_dir() -> Option<PathBuf> {
    std::env::var_os(PLUGIN_DIR_ENV)
        .map(PathBuf::from)
        .filter(|dir| dir.is_absolute())
}

/// `path` as the plugin means it: unchanged when absolute, else inside its own folder (or the
/// current folder when it has none).
pub fn plugin_path(path: impl AsRef<Path>) -> PathBuf {
    let path = path.as_ref();
    match plugin_dir() {
        Some(dir) if path.is_relative() => dir.join(path),
        _ => path.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absolute_paths_stay_and_relative_ones_follow_the_folder() {
        assert_eq!(
            plugin_path("/models/a.onnx"),
            PathBuf::from("/models/a.onnx")
        );
        match plugin_dir() {
            Some(dir) => assert_eq!(plugin_path("model"), dir.join("model")),
            None => assert_eq!(plugin_path("model"), PathBuf::from("model")),
        }
    }
}
