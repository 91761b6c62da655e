//! One body's sealed memory file: made and filled by the side that has the bytes
//! ([`BodyFile`]: appended to, or spliced into from a socket), sealed so that nobody can change, grow or shrink it any more, mapped as a
//! `Vec<u8>` ([`BodyFile::seal`], [`map_received`], which first checks a file that came from
//! the other side), and, for an answer, either the request's own file given back untouched or
//! a new one ([`answer_file`]).

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::fs::FileExt;

use super::registry::{self, file_of};
use super::splice::{SpliceError, SplicePipe};
use super::BY_FILE_FROM;

/// The seals a body file carries: no writes, no growing, no shrinking (a mapping of it can
/// never fault past its end), and no more seals.
const SEALS: libc::c_int =
    libc::F_SEAL_WRITE | libc::F_SEAL_GROW | libc::F_SEAL_SHRINK | libc::F_SEAL_SEAL;
/// The seals a file from the other side must carry before it is mapped.
const NEEDED: libc::c_int = libc::F_SEAL_WRITE | libc::F_SEAL_GROW | libc::F_SEAL_SHRINK;

/// A memory file being filled with one body.
pub struct BodyFile {
    file: File,
    len: usize,
    /// The pipe bytes from a socket pass through ([`BodyFile::splice_from`]), made at its
    /// first use.
    pipe: Option<SplicePipe>,
}

impl BodyFile {
    /// An empty, sealable memory file (closed on exec).
    pub fn create() -> io::Result<BodyFile> {
        // SAFETY: the name is a NUL-terminated string; the flags are valid for the call.
        let fd = unsafe {
            libc::memfd_create(
                c"fiddler-body".as_ptr(),
                libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just made and is owned by nothing else.
        let file = File::from(unsafe { OwnedFd::from_raw_fd(fd) });
        Ok(BodyFile {
            file,
            len: 0,
            pipe: None,
        })
    }

    /// Appends bytes.
    pub fn append(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.file.write_all_at(bytes, self.len as u64)?;
        self.len += bytes.len();
        Ok(())
    }

    /// Appends up to `max` bytes from a socket without copying them through this process
    /// (see [`SplicePipe`]): how many came (`0`: the socket's end of file).
    pub fn splice_from(
        &mut self,
        socket: BorrowedFd<'_>,
        max: usize,
    ) -> Result<usize, SpliceError> {
        let pipe = match self.pipe.take() {
            Some(pipe) => pipe,
            None => SplicePipe::new().map_err(SpliceError::File)?,
        };
        let moved = pipe.move_into(socket, self.file.as_fd(), self.len as u64, max)?;
        // Only a pipe left empty is used again.
        self.pipe = Some(pipe);
        self.len += moved;
        Ok(moved)
    }

    /// Seals it and gives its bytes as a `Vec` over a mapping of it.
    pub fn seal(self) -> io::Result<Vec<u8>> {
        let len = self.len;
        map(self.into_sealed()?, len)
    }

    /// Seals it and gives the file.
    fn into_sealed(self) -> io::Result<OwnedFd> {
        // SAFETY: a plain `fcntl` on the file's own descriptor.
        if unsafe { libc::fcntl(self.file.as_raw_fd(), libc::F_ADD_SEALS, SEALS) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(OwnedFd::from(self.file))
    }
}

/// `statfs`'s type of the file system memory files live on (not hugetlbfs: its mappings come
/// in huge pages, which unmap and fault otherwise).
const TMPFS_MAGIC: i64 = 0x0102_1994;

/// The first `len` bytes of a body file that came from the other side, as a `Vec`: refused
/// (`InvalidData`) unless it is a memory file (of small pages) sealed against writes,
/// growing and shrinking and holding at least `len` bytes, so that nothing can change it, or
/// cut it under the mapping, while it is read.
pub fn map_received(fd: OwnedFd, len: usize) -> io::Result<Vec<u8>> {
    // SAFETY: plain `fcntl` on a descriptor this function owns.
    let seals = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GET_SEALS) };
    // SAFETY: an all-zero `statfs` is valid.
    let mut fs: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `fstatfs` fills a live `statfs` from a descriptor this function owns.
    let stated = unsafe { libc::fstatfs(fd.as_raw_fd(), &mut fs) } == 0;
    #[allow(clippy::unnecessary_cast)] // `f_type`'s width differs between targets
    let on_tmpfs = stated && fs.f_type as i64 == TMPFS_MAGIC;
    if seals < 0 || seals & NEEDED != NEEDED || !on_tmpfs {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "a body file that is not a sealed memory file",
        ));
    }
    let size = File::from(fd.try_clone()?).metadata()?.len();
    if size < len as u64 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "a body file shorter than its frame says",
        ));
    }
    map(fd, len)
}

/// `len` bytes of a sealed file as a `Vec` over a private mapping (which the registry then
/// owns, with the file); on the heap instead when `len` is under [`BY_FILE_FROM`] or the
/// registry is full.
fn map(fd: OwnedFd, len: usize) -> io::Result<Vec<u8>> {
    if len < BY_FILE_FROM {
        return read_to_heap(fd, len);
    }
    // SAFETY: a new mapping (no address asked for) of a file this function owns; private, so
    // writes through it copy pages and never reach the file (which is sealed against them).
    let start = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE,
            fd.as_raw_fd(),
            0,
        )
    };
    if start == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    let start = start.cast::<u8>();
    if !registry::register(start, len, fd.as_raw_fd()) {
        // SAFETY: the mapping was just made and nothing else knows it.
        unsafe { libc::munmap(start.cast(), len) };
        return read_to_heap(fd, len);
    }
    // The registry owns the descriptor now (it closes it with the mapping).
    std::mem::forget(fd);
    // SAFETY: `start` is a registered mapping of `len` readable, writable, initialised bytes
    // (a sealed file at least that long), which this binary's allocator frees and grows as
    // its own; the `Vec` is its only owner.
    Ok(unsafe { Vec::from_raw_parts(start, len, len) })
}

/// The first `len` bytes of the file, read into the heap.
fn read_to_heap(fd: OwnedFd, len: usize) -> io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    bytes
        .try_reserve_exact(len)
        .map_err(|_| io::Error::from(io::ErrorKind::OutOfMemory))?;
    bytes.resize(len, 0);
    // From the start: the side that wrote it left the file's offset at its end.
    File::from(fd).read_exact_at(&mut bytes, 0)?;
    Ok(bytes)
}

/// The file an answer's body goes in.
pub enum AnswerFile<'a> {
    /// The request's own file: the plugin answered with the body it was given, untouched.
    Same(BorrowedFd<'a>),
    /// A new file holding a copy of the answer's bytes.
    New(OwnedFd),
}

impl AnswerFile<'_> {
    /// The descriptor to send.
    pub fn fd(&self) -> BorrowedFd<'_> {
        match self {
            AnswerFile::Same(fd) => *fd,
            AnswerFile::New(fd) => fd.as_fd(),
        }
    }
}

/// The file an answer of these bytes goes in, when it is big enough to go as one (`None`:
/// it goes as bytes, also when a new file cannot be had).
pub fn answer_file(body: &[u8]) -> Option<AnswerFile<'_>> {
    if body.len() < BY_FILE_FROM {
        return None;
    }
    if let Some(fd) = file_of(body) {
        if pagemap_tells_writes() && untouched(body) {
            return Some(AnswerFile::Same(fd));
        }
    }
    let mut file = BodyFile::create().ok()?;
    file.append(body).ok()?;
    file.into_sealed().ok().map(AnswerFile::New)
}

/// The size of a memory page.
fn page_size() -> Option<usize> {
    // SAFETY: `sysconf` only reads a constant.
    usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) })
        .ok()
        .filter(|&page| page > 0)
}

/// `/proc/self/pagemap`'s bits for a page: in memory, swapped out, a file's page (not a
/// private copy).
const PRESENT: u64 = 1 << 63;
const SWAPPED: u64 = 1 << 62;
const FILE_PAGE: u64 = 1 << 61;

/// Whether this kernel's page map tells a page written through a private mapping from one
/// only read (tried once, on a body file of this process's own): where it does not (a
/// kernel that hides the bits, a sandbox that hides the file), no answer is judged untouched
/// and each big answer is copied into a new file.
fn pagemap_tells_writes() -> bool {
    static TELLS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *TELLS.get_or_init(|| {
        let Ok(mut probe) = BodyFile::create() else {
            return false;
        };
        let Some(page) = page_size().filter(|&p| 2 * p <= BY_FILE_FROM) else {
            return false;
        };
        if probe.append(&vec![7u8; BY_FILE_FROM]).is_err() {
            return false;
        }
        let Ok(mut mapped) = probe.seal() else {
            return false;
        };
        if file_of(&mapped).is_none() {
            return false;
        }
        // The first page read, the second written.
        let read = std::hint::black_box(mapped[0]);
        mapped[page] = read.wrapping_add(1);
        untouched(&mapped[..page]) && !untouched(&mapped[page..2 * page])
    })
}

/// Whether every page of the private mapping under `body` is still the file's own page (none
/// was written, so none was copied): then the file holds exactly these bytes. `false` when
/// the kernel's page map cannot be read.
fn untouched(body: &[u8]) -> bool {
    let Some(page) = page_size() else {
        return false;
    };
    let Ok(map) = File::open("/proc/self/pagemap") else {
        return false;
    };
    let first = body.as_ptr() as usize / page;
    let pages = body.len().div_ceil(page);
    let mut entries = [0u8; 8 * 512];
    let mut done = 0;
    while done < pages {
        let count = (pages - done).min(512);
        let bytes = &mut entries[..count * 8];
        if map
            .read_exact_at(bytes, ((first + done) * 8) as u64)
            .is_err()
        {
            return false;
        }
        let copied = bytes.chunks_exact(8).any(|entry| {
            let mut word = [0u8; 8];
            word.copy_from_slice(entry);
            let bits = u64::from_le_bytes(word);
            bits & SWAPPED != 0 || (bits & PRESENT != 0 && bits & FILE_PAGE == 0)
        });
        if copied {
            return false;
        }
        done += count;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};

    fn filled(len: usize) -> Vec<u8> {
        let mut file = BodyFile::create().expect("a memory file");
        let bytes: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        file.append(&bytes).expect("written");
        let mapped = file.seal().expect("sealed and mapped");
        assert_eq!(mapped, bytes);
        mapped
    }

    #[test]
    fn a_sealed_body_is_a_vec_that_frees_grows_and_copies_on_write() {
        let mut body = filled(BY_FILE_FROM + 5);
        assert!(file_of(&body).is_some(), "a mapping the registry knows");
        assert!(untouched(&body), "read, never written");
        assert!(matches!(answer_file(&body), Some(AnswerFile::Same(_))));
        body[3] = 0;
        assert!(!untouched(&body), "a written page is a private copy");
        assert!(matches!(answer_file(&body), Some(AnswerFile::New(_))));
        body.push(9);
        assert!(file_of(&body).is_none(), "grown: moved to the heap");
        assert_eq!((body[3], body[4], body[BY_FILE_FROM + 5]), (0, 4, 9));
    }

    #[test]
    fn a_received_file_must_be_sealed_and_long_enough() {
        let mut open = BodyFile::create().expect("a memory file");
        open.append(&[1; 16]).expect("written");
        let fd = OwnedFd::from(open.file);
        assert_eq!(
            map_received(fd, 16).map_err(|e| e.kind()),
            Err(io::ErrorKind::InvalidData),
            "not sealed: it could shrink under the mapping"
        );
        let mut short = BodyFile::create().expect("a memory file");
        short.append(&[1; 16]).expect("written");
        let fd = short.into_sealed().expect("sealed");
        assert_eq!(
            map_received(fd, 17).map_err(|e| e.kind()),
            Err(io::ErrorKind::InvalidData)
        );
        let mut small = BodyFile::create().expect("a memory file");
        small.append(b"abc").expect("written");
        let fd = small.into_sealed().expect("sealed");
        assert_eq!(map_received(fd, 3).expect("read"), b"abc");
    }

    #[test]
    fn bytes_spliced_from_a_socket_and_appended_land_in_order() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("a listener");
        let mut client =
            TcpStream::connect(listener.local_addr().expect("its address")).expect("connected");
        let (server, _) = listener.accept().expect("accepted");
        server.set_nonblocking(true).expect("non-blocking");
        let sent: Vec<u8> = (0..3 * BY_FILE_FROM).map(|i| (i % 253) as u8).collect();
        let mut file = BodyFile::create().expect("a memory file");
        file.append(&sent[..10]).expect("appended");
        assert!(
            matches!(file.splice_from(server.as_fd(), 1 << 30), Err(SpliceError::Socket(e)) if e.kind() == io::ErrorKind::WouldBlock),
            "nothing sent yet"
        );
        client.write_all(&sent[10..]).expect("sent");
        // At most what is asked for: bytes beyond it (a next request) stay in the socket.
        let mut left = sent.len() - 10 - 7;
        while left > 0 {
            match file.splice_from(server.as_fd(), left) {
                Ok(n) => left -= n,
                Err(SpliceError::Socket(e)) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("{e:?}"),
            }
        }
        file.append(b"end").expect("appended");
        let mut rest = [0u8; 7];
        let mut server = server;
        server.set_nonblocking(false).expect("blocking");
        server
            .read_exact(&mut rest)
            .expect("the last bytes, left in the socket");
        assert_eq!(rest, sent[sent.len() - 7..]);
        drop(client);
        assert!(
            matches!(file.splice_from(server.as_fd(), 1), Ok(0)),
            "end of file"
        );
        let mapped = file.seal().expect("sealed and mapped");
        assert!(mapped[..sent.len() - 7] == sent[..sent.len() - 7]);
        assert_eq!(&mapped[sent.len() - 7..], b"end");
    }

    #[test]
    fn a_sealed_file_refuses_writes_and_truncation() {
        let body = filled(BY_FILE_FROM);
        let fd = file_of(&body).expect("mapped");
        let mut file = File::from(fd.try_clone_to_owned().expect("dup"));
        assert!(file.write_all(b"x").is_err());
        assert!(file.set_len(1).is_err());
    }
}
