//! Moving a socket's bytes into a body file without copying them through this process:
//! socket to pipe (`splice`: the pipe takes references to the socket's received pages, no
//! copy), then pipe to file (one copy, in the kernel, into the file's new pages). Reading
//! them instead costs a copy out of the socket into this process and another into the file.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

/// The pipe's size asked for: more per call than the default 64 KiB. An unprivileged process
/// may have up to 1 MiB (`/proc/sys/fs/pipe-max-size`'s default); where even that is
/// refused (the user's pipe pages spent), the pipe keeps its default size.
const PIPE_SIZE: libc::c_int = 1 << 20;

/// Which side of a splice failed.
#[derive(Debug)]
pub enum SpliceError {
    /// The socket: it would block, it was reset, and so on (an end of file is `Ok(0)`).
    Socket(io::Error),
    /// The pipe or the file: the body cannot be kept (no memory, no descriptors).
    File(io::Error),
}

/// A pipe between a socket and a file, empty between calls.
pub struct SplicePipe {
    read: OwnedFd,
    write: OwnedFd,
    /// Bytes it holds at most.
    capacity: usize,
}

impl SplicePipe {
    /// A new, empty pipe (non-blocking, closed on exec), as big as it may be made.
    pub fn new() -> io::Result<SplicePipe> {
        let mut fds = [0 as libc::c_int; 2];
        // SAFETY: `pipe2` fills the two-element array it is given.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) } < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: both descriptors were just made and are owned by nothing else.
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        // SAFETY: plain `fcntl`s on a descriptor this function owns.
        let capacity = unsafe {
            libc::fcntl(write.as_raw_fd(), libc::F_SETPIPE_SZ, PIPE_SIZE);
            libc::fcntl(write.as_raw_fd(), libc::F_GETPIPE_SZ)
        };
        let capacity = usize::try_from(capacity).map_err(|_| io::Error::last_os_error())?;
        Ok(SplicePipe {
            read,
            write,
            capacity,
        })
    }

    /// Moves up to `max` bytes from `socket` into `file` at `offset`: how many moved (`0` at
    /// the socket's end of file). The pipe is empty again after a success; after a
    /// [`SpliceError::File`] it may not be, and must not be used again.
    pub fn move_into(
        &self,
        socket: BorrowedFd<'_>,
        file: BorrowedFd<'_>,
        offset: u64,
        max: usize,
    ) -> Result<usize, SpliceError> {
        let want = max.min(self.capacity);
        let taken = loop {
            // SAFETY: `splice` between two live descriptors, with no offsets (a socket and a
            // pipe have none).
            let n = unsafe {
                libc::splice(
                    socket.as_raw_fd(),
                    std::ptr::null_mut(),
                    self.write.as_raw_fd(),
                    std::ptr::null_mut(),
                    want,
                    libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK,
                )
            };
            match usize::try_from(n) {
                Ok(n) => break n,
                Err(_) => {
                    let e = io::Error::last_os_error();
                    if e.kind() != io::ErrorKind::Interrupted {
                        return Err(SpliceError::Socket(e));
                    }
                }
            }
        };
        let mut at = i64::try_from(offset)
            .map_err(|_| SpliceError::File(io::ErrorKind::InvalidInput.into()))?;
        let mut left = taken;
        while left > 0 {
            // SAFETY: `splice` between two live descriptors; `at` is a live offset the call
            // advances.
            let n = unsafe {
                libc::splice(
                    self.read.as_raw_fd(),
                    std::ptr::null_mut(),
                    file.as_raw_fd(),
                    &mut at,
                    left,
                    libc::SPLICE_F_MOVE,
                )
            };
            match usize::try_from(n) {
                Ok(0) => return Err(SpliceError::File(io::ErrorKind::WriteZero.into())),
                Ok(n) => left -= n.min(left),
                Err(_) => {
                    let e = io::Error::last_os_error();
                    if e.kind() != io::ErrorKind::Interrupted {
                        return Err(SpliceError::File(e));
                    }
                }
            }
        }
        Ok(taken)
    }
}
