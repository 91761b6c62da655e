//! Descriptors beside the bytes on a Unix socket (`SCM_RIGHTS`): how a body's file travels
//! with its frame. Both ends read with [`recv`] always, since a plain `read` would drop (close)
//! any descriptor that came with the bytes.
//!
//! A descriptor sent with a write arrives with the read that takes that write's first byte,
//! so one sent with the write that starts its frame is there, in order, by the time the frame
//! is complete: the frame reader keeps what came in a queue and takes one per frame that says
//! it has a file.

use std::io::{self, IoSlice};
use std::os::fd::{BorrowedFd, FromRawFd, OwnedFd, RawFd};

/// The most descriptors one write carries, and one read takes.
pub const MAX_FDS: usize = 16;

/// Control-message room for [`MAX_FDS`] descriptors (`CMSG_SPACE`, over-aligned).
#[repr(C, align(8))]
struct Control([u8; 128]);

const _: () = assert!(
    std::mem::size_of::<Control>() >= 16 + MAX_FDS * std::mem::size_of::<RawFd>(),
    "room for the header and every descriptor"
);

/// `sendmsg` of `slices` with `fds` attached (at most [`MAX_FDS`]), never raising `SIGPIPE`.
/// The bytes written, as `write_vectored` gives them. Without descriptors it is a plain
/// `writev` (the small requests' path: no message header to copy in).
pub fn send(
    socket: BorrowedFd<'_>,
    slices: &[IoSlice<'_>],
    fds: &[BorrowedFd<'_>],
) -> io::Result<usize> {
    if fds.is_empty() {
        // SAFETY: `IoSlice` is ABI-compatible with `iovec`; the slices live for the call.
        let n = unsafe {
            libc::writev(
                std::os::fd::AsRawFd::as_raw_fd(&socket),
                slices.as_ptr().cast(),
                slices.len().min(libc::c_int::MAX as usize) as libc::c_int,
            )
        };
        return usize::try_from(n).map_err(|_| io::Error::last_os_error());
    }
    let mut control = Control([0; 128]);
    // SAFETY: an all-zero `msghdr` is valid (no name, no data, no control).
    let mut message: libc::msghdr = unsafe { std::mem::zeroed() };
    message.msg_iov = slices.as_ptr().cast_mut().cast();
    message.msg_iovlen = slices.len() as _;
    let fds = &fds[..fds.len().min(MAX_FDS)];
    if !fds.is_empty() {
        let data = std::mem::size_of_val(fds) as u32;
        // SAFETY: `CMSG_SPACE` is arithmetic.
        let space = unsafe { libc::CMSG_SPACE(data) } as usize;
        message.msg_control = control.0.as_mut_ptr().cast();
        message.msg_controllen = space as _;
        // SAFETY: the control buffer holds `space` bytes (checked above for `MAX_FDS`), so the
        // first header and its data fit in it; `CMSG_FIRSTHDR` points at its start.
        unsafe {
            let header = libc::CMSG_FIRSTHDR(&message);
            (*header).cmsg_level = libc::SOL_SOCKET;
            (*header).cmsg_type = libc::SCM_RIGHTS;
            (*header).cmsg_len = libc::CMSG_LEN(data) as _;
            let at = libc::CMSG_DATA(header).cast::<RawFd>();
            for (i, fd) in fds.iter().enumerate() {
                at.add(i)
                    .write_unaligned(std::os::fd::AsRawFd::as_raw_fd(fd));
            }
        }
    }
    // SAFETY: `message` points at live slices and a live control buffer for the call.
    let n = unsafe {
        libc::sendmsg(
            std::os::fd::AsRawFd::as_raw_fd(&socket),
            &message,
            libc::MSG_NOSIGNAL,
        )
    };
    usize::try_from(n).map_err(|_| io::Error::last_os_error())
}

/// Waits until `socket` has bytes to read (or its end closed). A reader that blocks in `recv`
/// is also woken each time its peer reads (the kernel wakes every sleeper on a Unix socket to
/// say there is room to write); `poll` for input alone sleeps through those.
pub fn wait_readable(socket: BorrowedFd<'_>) -> io::Result<()> {
    let mut watched = libc::pollfd {
        fd: std::os::fd::AsRawFd::as_raw_fd(&socket),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid `pollfd`, live for the call.
    match unsafe { libc::poll(&mut watched, 1, -1) } {
        -1 => Err(io::Error::last_os_error()),
        _ => Ok(()),
    }
}

/// `recvmsg` into `buffer`, appending the descriptors that came with the bytes to `fds`
/// (closed on exec); `flags` as for `recv`. A read whose descriptors did not all fit is an
/// error (`InvalidData`): the ones that did are closed, and the stream is broken.
pub fn recv(
    socket: BorrowedFd<'_>,
    buffer: &mut [u8],
    flags: libc::c_int,
    fds: &mut Vec<OwnedFd>,
) -> io::Result<usize> {
    let mut control = Control([0; 128]);
    let mut slice = libc::iovec {
        iov_base: buffer.as_mut_ptr().cast(),
        iov_len: buffer.len(),
    };
    // SAFETY: an all-zero `msghdr` is valid.
    let mut message: libc::msghdr = unsafe { std::mem::zeroed() };
    message.msg_iov = &mut slice;
    message.msg_iovlen = 1;
    message.msg_control = control.0.as_mut_ptr().cast();
    message.msg_controllen = control.0.len() as _;
    // SAFETY: `message` points at `buffer` and the control buffer, both live for the call.
    let n = unsafe {
        libc::recvmsg(
            std::os::fd::AsRawFd::as_raw_fd(&socket),
            &mut message,
            flags | libc::MSG_CMSG_CLOEXEC,
        )
    };
    let n = usize::try_from(n).map_err(|_| io::Error::last_os_error())?;
    let before = fds.len();
    // SAFETY: the kernel filled `msg_controllen` bytes of the control buffer with whole
    // headers; the CMSG_* walk stays inside them.
    unsafe {
        let mut header = libc::CMSG_FIRSTHDR(&message);
        while !header.is_null() {
            if (*header).cmsg_level == libc::SOL_SOCKET && (*header).cmsg_type == libc::SCM_RIGHTS {
                let data = (*header).cmsg_len as usize - libc::CMSG_LEN(0) as usize;
                let at = libc::CMSG_DATA(header).cast::<RawFd>();
                for i in 0..data / std::mem::size_of::<RawFd>() {
                    // Each is a new descriptor of this process, owned by nothing else yet.
                    fds.push(OwnedFd::from_raw_fd(at.add(i).read_unaligned()));
                }
            }
            header = libc::CMSG_NXTHDR(&message, header);
        }
    }
    if message.msg_flags & libc::MSG_CTRUNC != 0 {
        fds.truncate(before);
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "more descriptors than one read takes",
        ));
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::fd::AsFd;
    use std::os::unix::net::UnixStream;

    #[test]
    fn a_descriptor_comes_with_the_bytes_it_was_sent_with() {
        let (a, b) = UnixStream::pair().expect("a socketpair");
        let (mut r, mut w) = UnixStream::pair().expect("a second pair, to send an end of");
        let sent = send(a.as_fd(), &[IoSlice::new(b"frame")], &[w.as_fd()]).expect("sent");
        assert_eq!(sent, 5);
        let mut fds = Vec::new();
        let mut buffer = [0u8; 16];
        let n = recv(b.as_fd(), &mut buffer, 0, &mut fds).expect("read");
        assert_eq!((&buffer[..n], fds.len()), (&b"frame"[..], 1));
        // The descriptor received is the same socket: what goes in it comes out of `r`.
        let mut passed = UnixStream::from(fds.pop().expect("one"));
        passed.write_all(b"hi").expect("written");
        drop(passed);
        w.write_all(b"!").expect("written");
        drop(w);
        let mut got = String::new();
        std::io::Read::read_to_string(&mut r, &mut got).expect("read");
        assert_eq!(got, "hi!");
    }
}
