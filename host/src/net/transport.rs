//! The byte pipe under a connection: plain TCP, or TLS over TCP through rustls (sans IO).
//!
//! Both read and write plaintext without blocking. For TLS, reading pumps records from the
//! socket into rustls (which also answers the handshake), and writing hands plaintext to rustls,
//! then pushes the records it made to the socket. Whatever the socket did not take yet is
//! pushed by the next `flush` (intake calls it on every writable event). Without the `tls`
//! feature there is only the plain pipe. A body in a file (`crate::bodies`) goes over plain TCP
//! with `sendfile` ([`Transport::send_file`]): the kernel takes the file's pages, nothing is
//! copied or mapped here.

use std::io::{self, IoSlice, Read, Write};
use std::os::fd::{AsRawFd, BorrowedFd};

use mio::net::TcpStream;
#[cfg(feature = "tls")]
use rustls::ServerConnection;

/// Plain or TLS.
pub enum Transport {
    /// Plain TCP.
    Plain(TcpStream),
    /// TLS over TCP.
    #[cfg(feature = "tls")]
    Tls(Box<TlsTransport>),
}

/// A TLS connection: the socket and rustls' state for it.
#[cfg(feature = "tls")]
pub struct TlsTransport {
    socket: TcpStream,
    tls: ServerConnection,
}

impl Transport {
    /// A TLS transport over `socket`.
    #[cfg(feature = "tls")]
    pub fn tls(socket: TcpStream, tls: ServerConnection) -> Transport {
        Transport::Tls(Box::new(TlsTransport { socket, tls }))
    }

    /// The socket, to register with the poll or to peek at.
    pub fn socket(&self) -> &TcpStream {
        match self {
            Transport::Plain(socket) => socket,
            #[cfg(feature = "tls")]
            Transport::Tls(t) => &t.socket,
        }
    }

    /// The socket, mutably (for the poll registry).
    pub fn socket_mut(&mut self) -> &mut TcpStream {
        match self {
            Transport::Plain(socket) => socket,
            #[cfg(feature = "tls")]
            Transport::Tls(t) => &mut t.socket,
        }
    }

    /// Whether this is TLS.
    pub fn is_tls(&self) -> bool {
        match self {
            Transport::Plain(_) => false,
            #[cfg(feature = "tls")]
            Transport::Tls(_) => true,
        }
    }

    /// Reads plaintext. `Ok(0)` is the end of the stream; `WouldBlock` means wait.
    pub fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Transport::Plain(socket) => socket.read(buf),
            #[cfg(feature = "tls")]
            Transport::Tls(t) => t.read(buf),
        }
    }

    /// Writes plaintext; returns how much was taken (for TLS, possibly still to be flushed).
    pub fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        match self {
            Transport::Plain(socket) => socket.write_vectored(bufs),
            #[cfg(feature = "tls")]
            Transport::Tls(t) => t.write_vectored(bufs),
        }
    }

    /// Sends `len` bytes of `file` from `offset` (`sendfile`) on plain TCP; returns how many
    /// went. `Unsupported` over TLS (the bytes must pass through rustls: the caller writes
    /// them instead).
    pub fn send_file(
        &mut self,
        file: BorrowedFd<'_>,
        offset: usize,
        len: usize,
    ) -> io::Result<usize> {
        match self {
            Transport::Plain(socket) => send_file(socket, file, offset, len),
            #[cfg(feature = "tls")]
            Transport::Tls(_) => Err(io::ErrorKind::Unsupported.into()),
        }
    }

    /// Pushes what was written but not yet sent. `Ok` when nothing is left, `WouldBlock` when
    /// the socket is full.
    pub fn flush(&mut self) -> io::Result<()> {
        match self {
            Transport::Plain(_) => Ok(()),
            #[cfg(feature = "tls")]
            Transport::Tls(t) => t.flush(),
        }
    }

    /// Ends our direction: a TLS close_notify (best effort), then a TCP shutdown for writing.
    pub fn close_write(&mut self) {
        #[cfg(feature = "tls")]
        if let Transport::Tls(t) = self {
            t.tls.send_close_notify();
            let _ = t.flush();
        }
        let _ = self.socket().shutdown(std::net::Shutdown::Write);
    }
}

#[cfg(feature = "tls")]
impl TlsTransport {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match self.tls.reader().read(buf) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
            if self.tls.read_tls(&mut self.socket)? == 0 {
                return Ok(0);
            }
            if let Err(e) = self.tls.process_new_packets() {
                // Send the alert rustls prepared, if the socket takes it.
                let _ = self.flush();
                return Err(io::Error::new(io::ErrorKind::InvalidData, e));
            }
            // Handshake messages to send, if any; a full socket is retried on the next flush.
            match self.flush() {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        }
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        let mut taken = self.tls.writer().write_vectored(bufs)?;
        if taken == 0 {
            // rustls' buffer is full: make room, then try once more.
            self.flush()?;
            taken = self.tls.writer().write_vectored(bufs)?;
        }
        match self.flush() {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
        if taken == 0 {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(taken)
    }

    fn flush(&mut self) -> io::Result<()> {
        while self.tls.wants_write() {
            if self.tls.write_tls(&mut self.socket)? == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
        }
        Ok(())
    }
}

/// `sendfile` of `len` bytes of `file` from `offset` to `socket`.
fn send_file(
    socket: &TcpStream,
    file: BorrowedFd<'_>,
    offset: usize,
    len: usize,
) -> io::Result<usize> {
    let mut at = libc::off_t::try_from(offset).map_err(|_| io::ErrorKind::InvalidInput)?;
    // SAFETY: `sendfile` between two descriptors held open for the call, with a live offset;
    // it never blocks on a non-blocking socket.
    let n = unsafe { libc::sendfile(socket.as_raw_fd(), file.as_raw_fd(), &mut at, len) };
    usize::try_from(n).map_err(|_| io::Error::last_os_error())
}
