//! Test helpers (the crate's unit tests, and other crates' tests with the `test-utils` feature):
//! a fake backend that records what the device sends and hands it frames to receive, and a
//! driver harness on virtio-queue's mock rings that activates a device on two queues.

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsRawFd, RawFd};

use virtio_bindings::virtio_ring::{VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
use virtio_queue::desc::{split::Descriptor as SplitDescriptor, RawDescriptor};
use virtio_queue::mock::MockSplitQueue;
use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::backend::Backend;
use crate::device::Net;
use crate::iovecs::GuestIovecs;
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
    /// TUN_F_* offloads it claims to support.
    pub supported: u32,
    /// Every TUNSETOFFLOAD the device made, in order.
    pub offload_calls: Vec<u32>,
    /// Runs on every read_frame, before it answers (a guest acting behind the device's back).
    pub on_read: Option<Box<dyn FnMut() + Send>>,
    /// Runs on every write_frame, before it answers.
    pub on_write: Option<Box<dyn FnMut() + Send>>,
    /// When set, the fd the loop watches instead of `fd`: one that epoll always reports as
    /// EPOLLERR, as a deleted tap's is.
    pub broken: Option<std::os::fd::OwnedFd>,
}

impl Default for FakeBackend {
    fn default() -> Self {
        Self::new()
    }
}

impl FakeBackend {
    /// A backend with nothing queued, every offload supported, and writes accepted.
    pub fn new() -> Self {
        Self {
            fd: EventFd::new(EFD_NONBLOCK).unwrap(),
            sent: Vec::new(),
            to_guest: VecDeque::new(),
            write_errno: None,
            reads: 0,
            supported: crate::backend::ALL_TUN_OFFLOADS,
            offload_calls: Vec::new(),
            on_read: None,
            on_write: None,
            broken: None,
        }
    }
}

impl FakeBackend {
    /// From now on the backend's fd reports EPOLLERR for ever, like a tap deleted under the
    /// VM: the write end of a pipe whose read end is closed.
    pub fn break_fd(&mut self) {
        let mut fds = [0; 2];
        // SAFETY: pipe2 writes two fds into the array we pass.
        assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
        // SAFETY: both fds are new and ours; the read end is closed at once.
        unsafe {
            libc::close(fds[0]);
            self.broken = Some(std::os::fd::FromRawFd::from_raw_fd(fds[1]));
        }
    }
}

impl AsRawFd for FakeBackend {
    fn as_raw_fd(&self) -> RawFd {
        match &self.broken {
            Some(fd) => fd.as_raw_fd(),
            None => self.fd.as_raw_fd(),
        }
    }
}

impl Backend for FakeBackend {
    fn write_frame(&mut self, frame: GuestIovecs<'_>) -> io::Result<usize> {
        if let Some(hook) = self.on_write.as_mut() {
            hook();
        }
        if let Some(errno) = self.write_errno {
            return Err(io::Error::from_raw_os_error(errno));
        }
        let mut bytes = Vec::new();
        frame.copy_out(frame.len(), &mut bytes);
        self.sent.push(bytes);
        Ok(self.sent.last().map_or(0, Vec::len))
    }

    /// Like tun: a frame longer than the buffers is cut short, and its full length returned.
    fn read_frame(&mut self, bufs: GuestIovecs<'_>) -> io::Result<usize> {
        self.reads += 1;
        if let Some(hook) = self.on_read.as_mut() {
            hook();
        }
        let frame = self.to_guest.pop_front().ok_or(io::ErrorKind::WouldBlock)?;
        bufs.copy_in(&frame);
        Ok(frame.len())
    }

    fn supported_offloads(&mut self) -> u32 {
        self.supported
    }

    fn set_offloads(&mut self, flags: u32) -> io::Result<()> {
        self.offload_calls.push(flags);
        Ok(())
    }
}

/// Guest memory layout for tests: the RX rings at 0x0000.
pub const RX_RING: u64 = 0x0;
/// The TX rings.
pub const TX_RING: u64 = 0x4000;
/// Where test buffers go (up to `MEM_SIZE`).
pub const BUFFERS: u64 = 0x1_0000;
/// Size of the test guest memory (1 MiB).
pub const MEM_SIZE: usize = 0x10_0000;
/// Entries per test queue.
pub const QUEUE_LEN: u16 = 16;

/// Fresh guest memory of `MEM_SIZE` bytes at guest address 0.
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

/// An interrupt line that remembers what was signalled, as InterruptStatus bits (1: used
/// buffers, 2: configuration change).
#[derive(Debug, Default)]
pub struct FakeInterrupt {
    status: std::sync::atomic::AtomicU32,
}

impl FakeInterrupt {
    /// The bits signalled so far.
    pub fn status(&self) -> u32 {
        self.status.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl crate::InterruptSignal for FakeInterrupt {
    fn signal_used_queue(&self) {
        self.status.fetch_or(1, std::sync::atomic::Ordering::SeqCst);
    }

    fn signal_config_change(&self) {
        self.status.fetch_or(2, std::sync::atomic::Ordering::SeqCst);
    }
}

/// A device on a fake backend, activated with two mock queues.
pub struct Harness<'a> {
    /// The guest memory the rings and buffers live in.
    pub mem: &'a GuestMemoryMmap,
    /// The driver's side of the RX queue.
    pub rx: MockSplitQueue<'a, GuestMemoryMmap>,
    /// The driver's side of the TX queue.
    pub tx: MockSplitQueue<'a, GuestMemoryMmap>,
    /// The device, activated.
    pub net: Net<FakeBackend>,
    /// Its interrupt line.
    pub interrupt: std::sync::Arc<FakeInterrupt>,
}

/// The MAC of test devices.
pub const MAC: MacAddr = MacAddr([0x52, 0x54, 0x00, 0x12, 0x34, 0x56]);

/// The features of a driver that accepts no offload, no merged buffers and no event index:
/// one chain per frame, notifications by flags.
pub const PLAIN: u64 = (1 << virtio_bindings::virtio_config::VIRTIO_F_VERSION_1)
    | (1 << virtio_bindings::virtio_net::VIRTIO_NET_F_MAC)
    | (1 << virtio_bindings::virtio_net::VIRTIO_NET_F_MTU);

impl<'a> Harness<'a> {
    /// A device activated by a driver that acked [`PLAIN`].
    pub fn new(mem: &'a GuestMemoryMmap) -> Self {
        Self::with_features(mem, PLAIN)
    }

    /// A device activated by a driver that acked `features`.
    pub fn with_features(mem: &'a GuestMemoryMmap, features: u64) -> Self {
        let rx = MockSplitQueue::create(mem, GuestAddress(RX_RING), QUEUE_LEN);
        let tx = MockSplitQueue::create(mem, GuestAddress(TX_RING), QUEUE_LEN);
        MEM.with(|m| *m.borrow_mut() = Some(mem.clone()));
        let mut net = Net::new(FakeBackend::new(), MAC, 1500).unwrap();
        net.ack_features(features);
        assert!(
            net.features_ok(),
            "test features {features:#x} are not acceptable"
        );
        // virtio-queue 0.18's mock puts the used ring where avail entries 8.. and used_event
        // live (it sizes the avail ring in entries, not bytes); move it out of the way.
        let relocate = |mock: &MockSplitQueue<'a, GuestMemoryMmap>| {
            let mut q: Queue = mock.create_queue().unwrap();
            let used = used_ring_addr(mock);
            q.set_used_ring_address(Some(used as u32), Some((used >> 32) as u32));
            mem.write_slice(&[0u8; 4 + 8 * QUEUE_LEN as usize + 2], GuestAddress(used))
                .unwrap();
            q
        };
        let queues: Vec<Queue> = vec![relocate(&rx), relocate(&tx)];
        let interrupt = std::sync::Arc::new(FakeInterrupt::default());
        net.activate(mem.clone(), queues, interrupt.clone())
            .unwrap();
        Self {
            mem,
            rx,
            tx,
            net,
            interrupt,
        }
    }

    /// Used ring entry `i` of `queue`: (descriptor head, length).
    pub fn used(queue: &MockSplitQueue<'a, GuestMemoryMmap>, i: u16) -> (u32, u32) {
        let at = used_ring_addr(queue) + 4 + 8 * u64::from(i % QUEUE_LEN);
        let mem = queue_mem(queue);
        let id: u32 = mem.read_obj(GuestAddress(at)).unwrap();
        let len: u32 = mem.read_obj(GuestAddress(at + 4)).unwrap();
        (id, len)
    }

    /// The used ring's index of `queue`: how many chains the device has completed.
    pub fn used_idx(queue: &MockSplitQueue<'a, GuestMemoryMmap>) -> u16 {
        queue_mem(queue)
            .read_obj(GuestAddress(used_ring_addr(queue) + 2))
            .unwrap()
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
pub fn active_queue_next_avail<B: Backend>(net: &Net<B>, tx: bool) -> Option<u16> {
    net.active.as_ref().map(|a| {
        if tx {
            a.tx.next_avail()
        } else {
            a.rx.next_avail()
        }
    })
}

/// How many chains the device has put on the TX or RX used ring since activation (its
/// `next_used`): what a fuzz target compares with the used ring it can see.
pub fn active_queue_next_used<B: Backend>(net: &Net<B>, tx: bool) -> Option<u16> {
    net.active.as_ref().map(|a| {
        if tx {
            a.tx.next_used()
        } else {
            a.rx.next_used()
        }
    })
}

/// Where the harness puts a queue's used ring: 4 KiB after its descriptor table.
pub fn used_ring_addr(q: &MockSplitQueue<'_, GuestMemoryMmap>) -> u64 {
    q.desc_table_addr().0 + 0x1000
}

thread_local! {
    /// The memory of the harness on this thread (the mock does not give it back).
    static MEM: std::cell::RefCell<Option<GuestMemoryMmap>> = const { std::cell::RefCell::new(None) };
}

fn queue_mem(_q: &MockSplitQueue<'_, GuestMemoryMmap>) -> GuestMemoryMmap {
    MEM.with(|m| {
        m.borrow()
            .clone()
            .expect("a Harness was made on this thread")
    })
}

/// Ring fields the mock has no accessor for (virtio 1.2 §2.7.6, §2.7.8).
pub mod ring {
    use super::*;

    /// Sets the avail ring's flags (VRING_AVAIL_F_NO_INTERRUPT).
    pub fn set_avail_flags(q: &MockSplitQueue<'_, GuestMemoryMmap>, mem: &GuestMemoryMmap, v: u16) {
        mem.write_obj(v, q.avail_addr()).unwrap();
    }

    /// Sets `used_event`, at the end of the avail ring (EVENT_IDX).
    pub fn set_used_event(q: &MockSplitQueue<'_, GuestMemoryMmap>, mem: &GuestMemoryMmap, v: u16) {
        let at = q.avail_addr().0 + 4 + 2 * u64::from(QUEUE_LEN);
        mem.write_obj(v, GuestAddress(at)).unwrap();
    }

    /// `avail_event`, at the end of the used ring (EVENT_IDX).
    pub fn avail_event(q: &MockSplitQueue<'_, GuestMemoryMmap>, mem: &GuestMemoryMmap) -> u16 {
        let at = used_ring_addr(q) + 4 + 8 * u64::from(QUEUE_LEN);
        mem.read_obj(GuestAddress(at)).unwrap()
    }

    /// The used ring's flags (VRING_USED_F_NO_NOTIFY).
    pub fn used_flags(q: &MockSplitQueue<'_, GuestMemoryMmap>, mem: &GuestMemoryMmap) -> u16 {
        mem.read_obj(GuestAddress(used_ring_addr(q))).unwrap()
    }
}

/// Feature bits for tests.
pub fn bits(features: &[u32]) -> u64 {
    features.iter().fold(PLAIN, |acc, f| acc | (1 << f))
}
