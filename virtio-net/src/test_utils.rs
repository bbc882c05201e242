//! Unit-test helpers: a fake backend and a driver built on virtio-queue's mock rings.

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsRawFd, RawFd};

use virtio_bindings::virtio_ring::{VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
use virtio_queue::desc::{split::Descriptor as SplitDescriptor, RawDescriptor};
use virtio_queue::mock::MockSplitQueue;
use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap, VolatileSlice};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::backend::Backend;
use crate::device::Net;
use crate::virtio_device::VirtioDevice;
use crate::MacAddr;

/// A backend that records what the device writes and hands out queued frames.
pub struct FakeBackend {
    /// Stands in for the tap fd; tests make it readable to simulate "frames waiting".
    pub fd: EventFd,
    /// Frames the device wrote (header included).
    pub sent: Vec<Vec<u8>>,
    /// Frames the device will read (header included).
    pub to_guest: VecDeque<Vec<u8>>,
    /// Makes every write fail with this errno.
    pub write_errno: Option<i32>,
    /// How many times read_frame was called.
    pub reads: usize,
}

impl FakeBackend {
    pub fn new() -> Self {
        Self {
            fd: EventFd::new(EFD_NONBLOCK).unwrap(),
            sent: Vec::new(),
            to_guest: VecDeque::new(),
            write_errno: None,
            reads: 0,
        }
    }
}

impl AsRawFd for FakeBackend {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl Backend for FakeBackend {
    fn write_frame(&mut self, bufs: &[VolatileSlice<'_>]) -> io::Result<usize> {
        if let Some(errno) = self.write_errno {
            return Err(io::Error::from_raw_os_error(errno));
        }
        let mut frame = Vec::new();
        for b in bufs {
            let mut part = vec![0u8; b.len()];
            b.copy_to(&mut part[..]);
            frame.extend_from_slice(&part);
        }
        self.sent.push(frame);
        Ok(self.sent.last().map_or(0, Vec::len))
    }

    fn read_frame(&mut self, bufs: &[VolatileSlice<'_>]) -> io::Result<usize> {
        self.reads += 1;
        let frame = self.to_guest.pop_front().ok_or(io::ErrorKind::WouldBlock)?;
        let mut rest = &frame[..];
        for b in bufs {
            let n = rest.len().min(b.len());
            b.copy_from(&rest[..n]);
            rest = &rest[n..];
        }
        if !rest.is_empty() {
            return Err(io::Error::from_raw_os_error(libc::EFAULT));
        }
        Ok(frame.len())
    }
}

/// Guest memory layout for tests: rings at 0x0000 (RX) and 0x4000 (TX), buffers from 0x10000.
pub const RX_RING: u64 = 0x0;
pub const TX_RING: u64 = 0x4000;
pub const BUFFERS: u64 = 0x1_0000;
pub const MEM_SIZE: usize = 0x10_0000;
pub const QUEUE_LEN: u16 = 16;

pub fn memory() -> GuestMemoryMmap {
    GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM_SIZE)]).unwrap()
}

/// A descriptor for the mock (NEXT flags are filled in by `chain`).
pub fn desc(addr: u64, len: u32, writable: bool) -> RawDescriptor {
    let flags = if writable {
        VRING_DESC_F_WRITE as u16
    } else {
        0
    };
    RawDescriptor::from(SplitDescriptor::new(addr, len, flags, 0))
}

/// Links `descs` into one chain starting at descriptor index `first`.
pub fn chain(descs: &[RawDescriptor], first: u16) -> Vec<RawDescriptor> {
    descs
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let d = SplitDescriptor::from(*d);
            let last = i + 1 == descs.len();
            let flags = if last {
                d.flags()
            } else {
                d.flags() | VRING_DESC_F_NEXT as u16
            };
            let next = if last { 0 } else { first + i as u16 + 1 };
            RawDescriptor::from(SplitDescriptor::new(d.addr().0, d.len(), flags, next))
        })
        .collect()
}

/// A device on a fake backend, activated with two mock queues.
pub struct Harness<'a> {
    pub mem: &'a GuestMemoryMmap,
    pub rx: MockSplitQueue<'a, GuestMemoryMmap>,
    pub tx: MockSplitQueue<'a, GuestMemoryMmap>,
    pub net: Net<FakeBackend>,
}

pub const MAC: MacAddr = MacAddr([0x52, 0x54, 0x00, 0x12, 0x34, 0x56]);

impl<'a> Harness<'a> {
    pub fn new(mem: &'a GuestMemoryMmap) -> Self {
        let rx = MockSplitQueue::create(mem, GuestAddress(RX_RING), QUEUE_LEN);
        let tx = MockSplitQueue::create(mem, GuestAddress(TX_RING), QUEUE_LEN);
        let mut net = Net::new(FakeBackend::new(), MAC, 1500).unwrap();
        net.ack_features(net.features());
        let queues: Vec<Queue> = vec![rx.create_queue().unwrap(), tx.create_queue().unwrap()];
        net.activate(mem.clone(), queues).unwrap();
        Self { mem, rx, tx, net }
    }

    /// Used ring entry `i` of `queue`: (descriptor head, length).
    pub fn used(queue: &MockSplitQueue<'a, GuestMemoryMmap>, i: u16) -> (u32, u32) {
        let elem = queue.used().ring().ref_at(i as usize).unwrap().load();
        (elem.id(), elem.len())
    }

    pub fn used_idx(queue: &MockSplitQueue<'a, GuestMemoryMmap>) -> u16 {
        queue.used().idx().load()
    }

    /// Writes `bytes` to guest memory at `addr`.
    pub fn put(&self, addr: u64, bytes: &[u8]) {
        self.mem.write_slice(bytes, GuestAddress(addr)).unwrap();
    }

    /// Reads `len` bytes of guest memory at `addr`.
    pub fn get(&self, addr: u64, len: usize) -> Vec<u8> {
        let mut v = vec![0u8; len];
        self.mem.read_slice(&mut v, GuestAddress(addr)).unwrap();
        v
    }
}

/// A frame as the guest driver would queue it: a zeroed 12-byte header and `payload`.
pub fn with_header(payload: &[u8]) -> Vec<u8> {
    let mut v = vec![0u8; crate::VNET_HDR_LEN];
    v.extend_from_slice(payload);
    v
}

/// The queue state of `net`'s `which` queue (for asserting a reset cleared it).
pub fn active_queue_next_avail(net: &Net<FakeBackend>, tx: bool) -> Option<u16> {
    net.active.as_ref().map(|a| {
        if tx {
            a.tx.next_avail()
        } else {
            a.rx.next_avail()
        }
    })
}
