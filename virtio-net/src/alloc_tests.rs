//! Proof that moving a frame allocates nothing: a counting global allocator for the unit-test
//! binary, and a backend that allocates nothing either, so any allocation counted while the
//! device moves frames is the device's.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::io;
use std::os::fd::{AsRawFd, RawFd};

use virtio_bindings::virtio_net::{
    VIRTIO_NET_F_CSUM, VIRTIO_NET_F_GUEST_CSUM, VIRTIO_NET_F_GUEST_TSO4, VIRTIO_NET_F_HOST_TSO4,
    VIRTIO_NET_F_MRG_RXBUF,
};
use virtio_bindings::virtio_ring::VIRTIO_RING_F_EVENT_IDX;

use crate::backend::Backend;
use crate::iovecs::GuestIovecs;
use crate::test_utils::*;

struct Counting;

thread_local! {
    /// Allocations made on this thread while counting is on (None: off).
    static ALLOCATIONS: Cell<Option<usize>> = const { Cell::new(None) };
}

// SAFETY: every call is passed to the system allocator unchanged; the thread-local counter
// is const-initialised, so touching it never allocates (no recursion).
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.with(|a| a.set(a.get().map(|n| n + 1)));
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.with(|a| a.set(a.get().map(|n| n + 1)));
        // SAFETY: same contract as ours.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Runs `f` and returns how many allocations it made on this thread.
fn allocations_in(f: impl FnOnce()) -> usize {
    ALLOCATIONS.with(|a| a.set(Some(0)));
    f();
    ALLOCATIONS.with(|a| a.replace(None)).unwrap_or(0)
}

/// A tap stand-in that allocates nothing: writes are accepted, reads return one fixed frame.
struct Quiet {
    fd: vmm_sys_util::eventfd::EventFd,
    frame: Vec<u8>,
    pending: usize,
}

impl AsRawFd for Quiet {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl Backend for Quiet {
    fn write_frame(&mut self, frame: GuestIovecs<'_>) -> io::Result<usize> {
        Ok(frame.len())
    }

    fn read_frame(&mut self, bufs: GuestIovecs<'_>) -> io::Result<usize> {
        if self.pending == 0 {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        self.pending -= 1;
        Ok(bufs.copy_in(&self.frame))
    }

    fn supported_offloads(&mut self) -> u32 {
        crate::backend::ALL_TUN_OFFLOADS
    }
}

#[test]
fn test_steady_state_tx_and_rx_allocate_nothing_per_frame() {
    let mem = memory();
    let h = Harness::with_features(
        &mem,
        bits(&[
            VIRTIO_NET_F_CSUM,
            VIRTIO_NET_F_HOST_TSO4,
            VIRTIO_NET_F_GUEST_CSUM,
            VIRTIO_NET_F_GUEST_TSO4,
            VIRTIO_NET_F_MRG_RXBUF,
            VIRTIO_RING_F_EVENT_IDX,
        ]),
    );
    let Harness { rx, tx, net, .. } = h;
    // The same device, on the quiet backend (activation, which allocates, happened above).
    let mut net = net.with_backend_for_test(Quiet {
        fd: vmm_sys_util::eventfd::EventFd::new(0).unwrap(),
        frame: with_header(&[0x5a; 1500]),
        pending: 0,
    });

    // 8 TX frames of two descriptors, 14 RX chains of 8 KiB (enough for 64 KiB frames).
    for i in 0..8u16 {
        let addr = BUFFERS + u64::from(i) * 0x800;
        mem_put(&mem, addr, &with_header(&[i as u8; 100]));
        let descs = [desc(addr, 40, false), desc(addr + 40, 72, false)];
        tx.add_desc_chains(&chain(&descs, i * 2), i * 2).unwrap();
    }
    for i in 0..14u16 {
        rx.add_desc_chains(
            &[desc(BUFFERS + 0x8000 + u64::from(i) * 0x2000, 0x2000, true)],
            i,
        )
        .unwrap();
    }
    net.backend_mut_for_test().pending = 6;

    let allocations = allocations_in(|| {
        assert_eq!(net.process_tx(), crate::tx::TxOutcome::Done);
        net.process_rx();
    });

    let c = net.counters().snapshot();
    assert_eq!((c.tx_frames, c.rx_frames), (8, 6), "the frames did move");
    assert_eq!(allocations, 0, "allocations while moving 14 frames");
}

fn mem_put(mem: &vm_memory::GuestMemoryMmap, addr: u64, bytes: &[u8]) {
    use vm_memory::Bytes;
    mem.write_slice(bytes, vm_memory::GuestAddress(addr))
        .unwrap();
}
