//! Handlers as files: the watcher that turns the plugins folder into versions, the handler
//! files it reads and copies, the drop-folder trust check, and what runs inside an executor to
//! serve them: the loader (the dlopen `unsafe`) for libraries, CGI for programs.

pub mod cgi;
pub mod files;
pub mod inotify;
pub mod keyfiles;
pub mod loader;
pub mod program;
pub mod trust;
pub mod version;
pub mod watcher;
