//! The mappings of body files this process holds as `Vec<u8>` buffers, and the allocator that
//! knows them.
//!
//! A mapped body is handed out as a `Vec<u8>` whose buffer is the mapping (capacity: the
//! mapping's length), so everything downstream (the plugin's `RVec`, a connection's answer)
//! stays as it is. What makes that sound is [`MappingAware`], this binary's global allocator:
//! it is `System`, except that freeing a registered mapping unmaps it and closes its file, and
//! growing or shrinking one moves the bytes to the heap first. A plugin's `RVec` frees and
//! grows through the vtable of the side that made it (the executor), so this allocator sees
//! those calls too.
//!
//! The table is fixed ([`SLOTS`] entries), lock-free, and looked at only for blocks of at least
//! [`BY_FILE_FROM`] bytes (no mapping is smaller), so every other allocation pays one
//! comparison. A full table is a value: the caller keeps that body on the heap.

use std::alloc::{GlobalAlloc, Layout, System};
use std::os::fd::{BorrowedFd, RawFd};
use std::sync::atomic::{AtomicI32, AtomicUsize, Ordering};

use super::BY_FILE_FROM;

/// The most mappings one process holds at once (bodies queued, running and being answered).
pub const SLOTS: usize = 4096;

/// A slot's `start` when nobody holds it, and while its holder fills it in (no mapping starts
/// at either address).
const FREE: usize = 0;
const CLAIMED: usize = 1;

/// One mapping: where it starts (the `Vec`'s pointer), its length (the `Vec`'s capacity) and
/// the file it maps (owned by the slot, closed when the mapping goes).
struct Slot {
    start: AtomicUsize,
    len: AtomicUsize,
    fd: AtomicI32,
}

impl Slot {
    const fn new() -> Slot {
        Slot {
            start: AtomicUsize::new(FREE),
            len: AtomicUsize::new(0),
            // Read only once `start` names a mapping, so any value does; zero keeps the table
            // in zeroed memory (not 96 KiB of the binary's data).
            fd: AtomicI32::new(0),
        }
    }
}

static TABLE: [Slot; SLOTS] = [const { Slot::new() }; SLOTS];
/// Slots ever used (a lookup scans no further).
static USED: AtomicUsize = AtomicUsize::new(0);
/// Mappings held now (a lookup with none is skipped).
static LIVE: AtomicUsize = AtomicUsize::new(0);

/// Records a mapping of `len` bytes at `start` of the file `fd` (which the table then owns).
/// `false` when the table is full (the caller unmaps and closes).
pub(super) fn register(start: *mut u8, len: usize, fd: RawFd) -> bool {
    for (at, slot) in TABLE.iter().enumerate() {
        if slot
            .start
            .compare_exchange(FREE, CLAIMED, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
        {
            slot.len.store(len, Ordering::Relaxed);
            slot.fd.store(fd, Ordering::Relaxed);
            slot.start.store(start as usize, Ordering::Release);
            USED.fetch_max(at + 1, Ordering::AcqRel);
            LIVE.fetch_add(1, Ordering::AcqRel);
            return true;
        }
    }
    false
}

/// The slot holding the mapping that starts at `start`. Never inlined: with whole-program
/// optimisation the allocator's paths are copied into every call site, and only the size test
/// in front of this belongs there.
#[inline(never)]
fn find(start: *const u8) -> Option<&'static Slot> {
    if LIVE.load(Ordering::Acquire) == 0 {
        return None;
    }
    let used = USED.load(Ordering::Acquire);
    TABLE[..used]
        .iter()
        .find(|slot| slot.start.load(Ordering::Acquire) == start as usize)
}

/// Unmaps the mapping at `start` and closes its file; `false` when `start` is no mapping.
///
/// The slot stops naming `start` (it is claimed) before the mapping goes: once unmapped, the
/// address may be handed out again at once, to a body another thread registers, and a lookup
/// must never find this slot for it.
#[inline(never)]
fn release(start: *mut u8) -> bool {
    let Some(slot) = find(start) else {
        return false;
    };
    if slot
        .start
        .compare_exchange(start as usize, CLAIMED, Ordering::AcqRel, Ordering::Relaxed)
        .is_err()
    {
        return false;
    }
    let len = slot.len.load(Ordering::Relaxed);
    let fd = slot.fd.load(Ordering::Relaxed);
    // SAFETY: the slot said a mapping of `len` bytes starts at `start`, and its only owner
    // (the `Vec` being freed) gives it up here; `fd` is the slot's own descriptor.
    unsafe {
        libc::munmap(start.cast(), len);
        libc::close(fd);
    }
    slot.start.store(FREE, Ordering::Release);
    LIVE.fetch_sub(1, Ordering::AcqRel);
    true
}

/// A body's file, when its bytes are a whole mapping's start (bodies under [`BY_FILE_FROM`]
/// never are).
pub fn file_of(body: &[u8]) -> Option<BorrowedFd<'_>> {
    if body.len() < BY_FILE_FROM {
        return None;
    }
    let slot = find(body.as_ptr())?;
    let fd = slot.fd.load(Ordering::Relaxed);
    // SAFETY: the slot's descriptor stays open while its mapping is held, and `body` borrows
    // the buffer that holds it: it cannot be freed (and the file closed) during that borrow.
    Some(unsafe { BorrowedFd::borrow_raw(fd) })
}

/// This binary's allocator: `System`, aware of mapped bodies (see the module's text).
pub struct MappingAware;

// SAFETY: every block comes from `System` and goes back to it, except the registered
// mappings, which were made by `mmap` and go back by `munmap`; a mapping is never given to
// `System`.
unsafe impl GlobalAlloc for MappingAware {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract is `System`'s.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as for `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if layout.size() >= BY_FILE_FROM && release(ptr) {
            return;
        }
        // SAFETY: not a mapping, so a block `System` gave out with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if layout.size() >= BY_FILE_FROM && find(ptr).is_some() {
            // SAFETY: `ptr` is a registered mapping of `layout.size()` bytes; the caller's
            // contract is `realloc`'s.
            return unsafe { move_to_heap(ptr, layout, new_size) };
        }
        // SAFETY: not a mapping, so a block `System` gave out with this layout.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// A mapped body being grown or shrunk: its bytes move to a heap block of `new_size`, and the
/// mapping goes. Null (the mapping kept) when the heap has no such block.
///
/// # Safety
///
/// `ptr` is a registered mapping of `layout.size()` bytes, owned by the caller; `new_size` is
/// non-zero and, rounded up to `layout.align()`, fits an `isize`.
#[cold]
#[inline(never)]
unsafe fn move_to_heap(ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
    // SAFETY: the caller's contract makes this a valid layout.
    let to = unsafe { System.alloc(Layout::from_size_align_unchecked(new_size, layout.align())) };
    if !to.is_null() {
        // SAFETY: the mapping holds `layout.size()` bytes, `to` at least `new_size`, and
        // they are different blocks.
        unsafe { std::ptr::copy_nonoverlapping(ptr, to, layout.size().min(new_size)) };
        release(ptr);
    }
    to
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mapping_is_found_by_its_start_only() {
        let fake = 0x7000_0000_0000usize as *mut u8;
        // Not really mapped: only registered, looked up and taken back out by hand.
        assert!(register(fake, BY_FILE_FROM, -1));
        assert!(find(fake).is_some());
        assert!(find(fake.wrapping_add(4096)).is_none());
        let slot = find(fake).expect("registered");
        slot.start.store(FREE, Ordering::Release);
        LIVE.fetch_sub(1, Ordering::AcqRel);
        assert!(find(fake).is_none());
    }
}
