//! Bodies too big to copy: a body of [`BY_FILE_FROM`] bytes or more lives in a sealed memory
//! file (`memfd_create`, then sealed against writes, growing and shrinking) and goes between the
//! worker and an executor as that file's descriptor (`SCM_RIGHTS`), not as bytes through the
//! socket.
//!
//! Either side sees such a body as an ordinary `Vec<u8>` (so an `RVec<u8>` in a plugin's
//! `Request` or `Response`, for every plugin-api 0.1.x plugin, already built or not) whose
//! buffer is a private, copy-on-write mapping of the file: reading it touches the file's own
//! pages, so a body is in memory once however many processes look at it, and a plugin that
//! writes into it changes only its own view. [`registry`] is what makes such a `Vec` sound:
//! the process's allocator knows the mappings, and unmaps (and closes the file) when the `Vec`
//! is dropped, or moves the bytes to the heap when it grows.
//!
//! Who does what: intake fills a [`BodyFile`] as a big body arrives (over plain TCP by
//! `splice`, so its bytes never pass through the worker: [`splice`]) and seals it; the pool
//! sends the file with the request; the executor maps it for the plugin and, when the answer
//! is that same body untouched (an echo, a filter that passes it through), sends the same file
//! back; a big answer of the plugin's own making goes into a new file. The frames say which
//! bodies come as files (`exec::frame`); `exec::fds` moves the descriptors.

pub mod file;
pub mod registry;
pub mod splice;

pub use file::{answer_file, map_received, AnswerFile, BodyFile};
pub use registry::{file_of, MappingAware};
pub use splice::SpliceError;

/// The smallest body that goes as a file. Below it, copying through the socket costs less than
/// making, sealing, mapping and unmapping a file (about ten system calls on the two sides).
pub const BY_FILE_FROM: usize = 256 * 1024;
