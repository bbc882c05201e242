//! Guest buffers as iovecs, checked once, for the one `readv`/`writev` a frame takes.
//!
//! A descriptor chain is turned into iovecs here, the one check both directions share: every
//! descriptor must point the right way (device-readable for TX, device-writable for RX) and lie
//! wholly inside guest RAM, or the chain is malformed. The iovecs go into an [`IovecArray`]
//! allocated once when the device is activated, so moving a frame allocates nothing.

use std::ops::Range;

use virtio_queue::desc::split::Descriptor;
use virtio_queue::{Queue, QueueT};
use vm_memory::{Address, Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, VolatileSlice};

/// Which way the device uses a chain's buffers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Access {
    /// The device reads them (TX).
    Read,
    /// The device writes them (RX).
    Write,
}

/// Why a chain could not be added to an [`IovecArray`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ChainError {
    /// A descriptor points the wrong way or outside guest RAM, or the chain itself is broken
    /// (see [`DescTable::walk`]).
    Malformed,
    /// The array has no room for all of the chain's descriptors.
    NoRoom,
}

/// A queue's descriptor table: where it is and how many entries it has.
///
/// Chains are walked here rather than with virtio-queue's `DescriptorChain` iterator, which
/// ends a broken chain silently (the device would use the part before the break) and follows
/// INDIRECT descriptors whether or not the feature was negotiated; we offer no INDIRECT_DESC.
#[derive(Clone, Copy, Debug)]
pub(crate) struct DescTable {
    addr: GuestAddress,
    size: u16,
}

impl DescTable {
    /// The table `queue` was configured with.
    pub(crate) fn of(queue: &Queue) -> Self {
        Self {
            addr: GuestAddress(queue.desc_table()),
            size: queue.size(),
        }
    }

    /// The descriptors of the chain at `head`, in order. The first of these ends it with
    /// `Err(ChainError::Malformed)`: a head or `next` index past the table, a descriptor table
    /// entry outside guest RAM, an INDIRECT descriptor, or more descriptors than the table has
    /// (a loop, virtio 1.2 §2.7.5.3.1).
    pub(crate) fn walk(self, mem: &GuestMemoryMmap, head: u16) -> ChainWalk<'_> {
        ChainWalk {
            mem,
            table: self,
            next: Some(head),
            left: self.size,
        }
    }
}

/// The iterator of [`DescTable::walk`].
pub(crate) struct ChainWalk<'m> {
    mem: &'m GuestMemoryMmap,
    table: DescTable,
    /// The index of the next descriptor; `None` once the chain (or its walk) has ended.
    next: Option<u16>,
    /// Descriptors the chain may still have.
    left: u16,
}

impl Iterator for ChainWalk<'_> {
    type Item = Result<Descriptor, ChainError>;

    fn next(&mut self) -> Option<Self::Item> {
        let index = self.next.take()?;
        if index >= self.table.size || self.left == 0 {
            return Some(Err(ChainError::Malformed));
        }
        self.left -= 1;
        // 16 * index < 2^20: no overflow in the multiplication.
        let at = self
            .table
            .addr
            .checked_add(std::mem::size_of::<Descriptor>() as u64 * u64::from(index));
        let Some(desc) = at.and_then(|at| self.mem.read_obj::<Descriptor>(at).ok()) else {
            return Some(Err(ChainError::Malformed));
        };
        if desc.refers_to_indirect_table() {
            return Some(Err(ChainError::Malformed));
        }
        self.next = desc.has_next().then(|| desc.next());
        Some(Ok(desc))
    }
}

/// A fixed-capacity array of iovecs, each covering guest RAM checked by [`Self::push_chain`].
///
/// It lives next to the guest memory it points into (in the device's `Active` state) and is
/// dropped with it, so every pointer it holds stays valid as long as the array does.
pub(crate) struct IovecArray {
    iovs: Box<[libc::iovec]>,
    /// The iovecs held are `iovs[start..end]`: dropping from the front only moves `start`.
    start: usize,
    end: usize,
}

// SAFETY: the raw pointers point into guest memory, which is mapped for the whole life of the
// `GuestMemoryMmap` kept beside this array and is valid from any thread; the array itself is
// only used by whoever owns the device, behind its mutex.
unsafe impl Send for IovecArray {}

impl IovecArray {
    /// An empty array with room for `capacity` iovecs (allocated now, never again).
    pub(crate) fn with_capacity(capacity: usize) -> Self {
        let empty = libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        };
        Self {
            iovs: vec![empty; capacity].into_boxed_slice(),
            start: 0,
            end: 0,
        }
    }

    /// Number of iovecs held.
    pub(crate) fn len(&self) -> usize {
        self.end - self.start
    }

    /// Forgets every iovec from the `len`th on.
    pub(crate) fn truncate(&mut self, len: usize) {
        self.end = self.end.min(self.start + len);
        if self.end == self.start {
            self.clear();
        }
    }

    /// Forgets every iovec.
    pub(crate) fn clear(&mut self) {
        self.start = 0;
        self.end = 0;
    }

    /// Drops the first `n` iovecs (no copy: the window moves).
    pub(crate) fn drain_front(&mut self, n: usize) {
        self.start = (self.start + n).min(self.end);
        if self.start == self.end {
            self.clear();
        }
    }

    /// Moves the iovecs held to the front of the array, to make room at the end. Rare: only
    /// when the window reaches the end of the array.
    fn compact(&mut self) {
        self.iovs.copy_within(self.start..self.end, 0);
        self.end -= self.start;
        self.start = 0;
    }

    /// Appends the descriptors of the chain at `head` of `table`, checking each points the
    /// `access` way and lies in `mem`; returns the chain's total length and how many iovecs it
    /// added. On error nothing is appended.
    pub(crate) fn push_chain(
        &mut self,
        table: DescTable,
        head: u16,
        mem: &GuestMemoryMmap,
        access: Access,
    ) -> Result<(usize, usize), ChainError> {
        // A chain has at most a queue's worth of descriptors (the walk stops it there): make
        // room for that many after `end` if the window has moved along.
        let room = usize::from(crate::device::QUEUE_SIZE);
        if self.start > 0 && self.iovs.len() - self.end < room {
            self.compact();
        }
        let start = self.end;
        let mut total = 0usize;
        let mut error = None;
        for desc in table.walk(mem, head) {
            let slice = desc.ok().and_then(|desc| {
                let direction_ok = desc.is_write_only() == (access == Access::Write);
                direction_ok
                    .then(|| mem.get_slice(desc.addr(), desc.len() as usize).ok())
                    .flatten()
            });
            match slice {
                None => {
                    // Malformed wins over NoRoom: the chain can never be used.
                    error = Some(ChainError::Malformed);
                    break;
                }
                Some(_) if self.end == self.iovs.len() => {
                    error = Some(ChainError::NoRoom);
                }
                Some(slice) if error.is_none() => {
                    total += slice.len();
                    self.iovs[self.end] = libc::iovec {
                        iov_base: slice.ptr_guard_mut().as_ptr().cast(),
                        iov_len: slice.len(),
                    };
                    self.end += 1;
                }
                Some(_) => {}
            }
        }
        match error {
            Some(e) => {
                self.end = start;
                if self.end == self.start {
                    self.clear();
                }
                Err(e)
            }
            None => Ok((total, self.end - start)),
        }
    }

    /// The iovecs in `range` (counted from the first held), for one system call.
    pub(crate) fn guest(&self, range: Range<usize>) -> GuestIovecs<'_> {
        GuestIovecs {
            iovs: &self.iovs[self.start..self.end][range],
        }
    }
}

/// Guest buffers for one `readv`/`writev`: every iovec covers guest RAM that the driver gave
/// the device for this direction, mapped for at least as long as this value lives. Only this
/// crate makes them (from checked descriptor chains), which is what lets a [`crate::Backend`]
/// hand them to the kernel.
#[derive(Clone, Copy, Debug)]
pub struct GuestIovecs<'a> {
    iovs: &'a [libc::iovec],
}

impl<'a> GuestIovecs<'a> {
    /// The iovecs, for `readv`/`writev`.
    pub fn as_iovecs(&self) -> &'a [libc::iovec] {
        self.iovs
    }

    /// Total bytes the buffers hold.
    pub fn len(&self) -> usize {
        self.iovs.iter().map(|iov| iov.iov_len).sum()
    }

    /// Whether the buffers hold nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Each buffer as a volatile slice of guest memory.
    pub fn slices(&self) -> impl Iterator<Item = VolatileSlice<'a>> + 'a {
        self.iovs.iter().map(|iov| {
            // SAFETY: by the type's invariant the iovec covers mapped guest RAM that outlives
            // 'a; VolatileSlice accesses tolerate the guest changing it concurrently.
            unsafe { VolatileSlice::new(iov.iov_base.cast(), iov.iov_len) }
        })
    }

    /// Appends the first `len` bytes of the buffers to `out` (tracing, capture, tests).
    pub fn copy_out(&self, len: usize, out: &mut Vec<u8>) {
        let mut left = len;
        for slice in self.slices() {
            if left == 0 {
                break;
            }
            let take = slice.len().min(left);
            let start = out.len();
            out.resize(start + take, 0);
            slice.copy_to(&mut out[start..]);
            left -= take;
        }
    }

    /// Fills the buffers from `data`, in order; returns how many bytes fitted.
    pub fn copy_in(&self, mut data: &[u8]) -> usize {
        let mut written = 0;
        for slice in self.slices() {
            if data.is_empty() {
                break;
            }
            let n = slice.len().min(data.len());
            slice.copy_from(&data[..n]);
            data = &data[n..];
            written += n;
        }
        written
    }

    /// Reads `out.len()` bytes at byte `offset` of the buffers, wherever they fall among them;
    /// bytes past the end read as 0.
    pub(crate) fn read_at(&self, offset: usize, out: &mut [u8]) {
        for (i, byte) in out.iter_mut().enumerate() {
            let mut at = offset + i;
            *byte = 0;
            for slice in self.slices() {
                if at < slice.len() {
                    *byte = slice.read_obj(at).unwrap_or(0);
                    break;
                }
                at -= slice.len();
            }
        }
    }

    /// Writes `bytes` at byte `offset` of the buffers, wherever they fall among them (the
    /// header's `num_buffers` may straddle two descriptors).
    pub(crate) fn write_at(&self, offset: usize, bytes: &[u8]) {
        for (i, byte) in bytes.iter().enumerate() {
            let mut at = offset + i;
            for slice in self.slices() {
                if at < slice.len() {
                    let _ = slice.write_obj(*byte, at);
                    break;
                }
                at -= slice.len();
            }
        }
    }
}
