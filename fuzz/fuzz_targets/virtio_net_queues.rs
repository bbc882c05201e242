//! The virtio-net device's TX and RX paths against a hostile driver and a scripted backend.
//!
//! The input sets up two split queues anywhere in a 64 KiB guest memory (any size, any
//! addresses, any acked features), then runs a program: descriptors and avail entries written
//! (well-formed chains or garbage), arbitrary bytes poked into memory, frames and errors the
//! backend will return (EAGAIN, EIO, short and oversized frames), TX and RX passes, resets.
//!
//! Checked after every pass, not only "no panic" (docs/threat-model.md lists them):
//! - the device wrote only inside descriptors marked device-writable and the used rings;
//! - it put only valid heads on the used ring; TX used lengths are 0, RX used lengths never
//!   exceed the chain's writable capacity;
//! - counters add up: every TX chain completed is a frame sent, a malformed chain or a
//!   backend error; every frame or error the backend returned is delivered or counted;
//! - work is bounded: one pass completes at most a queue's worth of chains (two for RX, whose
//!   chains held from earlier passes count too) and calls the backend at most that often.
#![no_main]

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsRawFd, RawFd};

use libfuzzer_sys::fuzz_target;
use virtio_bindings::virtio_ring::{VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmm_fuzz::Input;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};
use vmm_virtio_net::rx::RxOutcome;
use vmm_virtio_net::test_utils::{active_queue_next_used, FakeInterrupt};
use vmm_virtio_net::tx::TxOutcome;
use vmm_virtio_net::{Backend, GuestIovecs, MacAddr, Net, VirtioDevice, VNET_HDR_LEN};

/// Guest memory size: small, so that random addresses often land inside it.
const MEM: usize = 0x1_0000;
/// The device's queue size (what QueueNumMax says).
const QUEUE_MAX: u16 = 256;
/// Most operations one input runs.
const MAX_OPS: usize = 512;

/// What the backend answers to one read.
enum Read {
    Frame(Vec<u8>),
    Errno(i32),
}

/// A tap that answers from a script, and counts what it was asked.
struct ScriptBackend {
    fd: EventFd,
    reads: VecDeque<Read>,
    /// errno per write, 0 = accepted; empty = accept.
    writes: VecDeque<i32>,
    /// Reads that returned a frame or an error other than EAGAIN.
    reads_answered: u64,
    writes_ok: u64,
    writes_failed: u64,
    calls: u64,
}

impl AsRawFd for ScriptBackend {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl Backend for ScriptBackend {
    fn write_frame(&mut self, frame: GuestIovecs<'_>) -> io::Result<usize> {
        self.calls += 1;
        match self.writes.pop_front().unwrap_or(0) {
            0 => {
                self.writes_ok += 1;
                Ok(frame.len())
            }
            libc::EAGAIN => Err(io::ErrorKind::WouldBlock.into()),
            errno => {
                self.writes_failed += 1;
                Err(io::Error::from_raw_os_error(errno))
            }
        }
    }

    /// Like tun: a frame longer than the buffers is cut, and its full length returned.
    fn read_frame(&mut self, bufs: GuestIovecs<'_>) -> io::Result<usize> {
        self.calls += 1;
        match self.reads.pop_front() {
            None => Err(io::ErrorKind::WouldBlock.into()),
            Some(Read::Errno(libc::EAGAIN)) => Err(io::ErrorKind::WouldBlock.into()),
            Some(Read::Errno(errno)) => {
                self.reads_answered += 1;
                Err(io::Error::from_raw_os_error(errno))
            }
            Some(Read::Frame(frame)) => {
                self.reads_answered += 1;
                bufs.copy_in(&frame);
                Ok(frame.len())
            }
        }
    }

    fn supported_offloads(&mut self) -> u32 {
        vmm_virtio_net::backend::ALL_TUN_OFFLOADS
    }
}

/// Where one queue lives, as the driver configured it.
#[derive(Clone, Copy)]
struct Geometry {
    size: u16,
    desc: u64,
    avail: u64,
    used: u64,
}

impl Geometry {
    fn read(input: &mut Input) -> Self {
        Self {
            size: 1 << (input.u8() % 9),
            desc: u64::from(input.u16()) & !15,
            avail: u64::from(input.u16()) & !1,
            used: u64::from(input.u16()) & !3,
        }
    }

    fn queue(&self) -> Queue {
        let mut q = Queue::new(QUEUE_MAX).expect("a power of two");
        q.set_size(self.size);
        q.set_desc_table_address(Some(self.desc as u32), Some(0));
        q.set_avail_ring_address(Some(self.avail as u32), Some(0));
        q.set_used_ring_address(Some(self.used as u32), Some(0));
        q.set_ready(true);
        q
    }

    /// Bytes the device may write in the used ring: flags, idx, the ring, avail_event.
    fn used_ring_len(&self) -> u64 {
        4 + 8 * u64::from(self.size) + 2
    }
}

fn read_u16(mem: &GuestMemoryMmap, at: u64) -> u16 {
    mem.read_obj(GuestAddress(at)).unwrap_or(0)
}

fn read_u32(mem: &GuestMemoryMmap, at: u64) -> u32 {
    mem.read_obj(GuestAddress(at)).unwrap_or(0)
}

/// (addr, len, flags, next) of descriptor `i`.
fn descriptor(mem: &GuestMemoryMmap, g: &Geometry, i: u16) -> (u64, u32, u16, u16) {
    let at = g.desc + 16 * u64::from(i);
    let addr: u64 = mem.read_obj(GuestAddress(at)).unwrap_or(u64::MAX);
    (
        addr,
        read_u32(mem, at + 8),
        read_u16(mem, at + 12),
        read_u16(mem, at + 14),
    )
}

/// Marks every byte a descriptor of `g` says the device may write (ever, across passes:
/// the device holds RX chains from one pass to the next).
fn mark_writable(mem: &GuestMemoryMmap, g: &Geometry, writable: &mut [bool]) {
    for i in 0..g.size {
        let (addr, len, flags, _) = descriptor(mem, g, i);
        if flags & VRING_DESC_F_WRITE as u16 != 0 {
            mark(writable, addr, u64::from(len));
        }
    }
}

/// The bytes each ring part of `g` takes: descriptor table, avail ring, used ring.
fn ring_parts(g: &Geometry) -> [(u64, u64); 3] {
    let size = u64::from(g.size);
    [
        (g.desc, g.desc + 16 * size),
        (g.avail, g.avail + 4 + 2 * size + 2),
        (g.used, g.used + g.used_ring_len()),
    ]
}

/// Whether any two ring parts of the two queues share a byte.
fn rings_overlap(queues: &[Geometry; 2]) -> bool {
    let parts: Vec<(u64, u64)> = queues.iter().flat_map(ring_parts).collect();
    parts
        .iter()
        .enumerate()
        .any(|(i, a)| parts[i + 1..].iter().any(|b| a.0 < b.1 && b.0 < a.1))
}

/// Whether any byte of `g`'s descriptor table is in `marked`.
fn table_in(g: &Geometry, marked: &[bool]) -> bool {
    let (start, end) = ring_parts(g)[0];
    let (start, end) = (start.min(MEM as u64) as usize, end.min(MEM as u64) as usize);
    marked[start..end].iter().any(|&b| b)
}

/// Whether any byte of `g`'s used ring is in `marked`.
fn used_ring_in(g: &Geometry, marked: &[bool]) -> bool {
    let start = g.used.min(MEM as u64) as usize;
    let end = (g.used + g.used_ring_len()).min(MEM as u64) as usize;
    marked[start..end].iter().any(|&b| b)
}

fn mark(writable: &mut [bool], addr: u64, len: u64) {
    let start = addr.min(MEM as u64) as usize;
    let end = addr.saturating_add(len).min(MEM as u64) as usize;
    writable[start..end].fill(true);
}

/// Device-writable bytes of the chain starting at `head` (at most `size` descriptors).
fn writable_capacity(mem: &GuestMemoryMmap, g: &Geometry, head: u16) -> u64 {
    let (mut i, mut total) = (head, 0u64);
    for _ in 0..g.size {
        let (_, len, flags, next) = descriptor(mem, g, i);
        if flags & VRING_DESC_F_WRITE as u16 != 0 {
            total += u64::from(len);
        }
        if flags & VRING_DESC_F_NEXT as u16 == 0 || next >= g.size {
            break;
        }
        i = next;
    }
    total
}

fn snapshot(mem: &GuestMemoryMmap) -> Vec<u8> {
    let mut v = vec![0u8; MEM];
    mem.read_slice(&mut v, GuestAddress(0)).expect("in memory");
    v
}

/// What the driver side does: writes descriptors and avail entries.
struct Driver<'a> {
    mem: &'a GuestMemoryMmap,
    queues: [Geometry; 2],
}

impl Driver<'_> {
    fn write_desc(&self, q: usize, i: u16, addr: u64, len: u32, flags: u16, next: u16) {
        let g = &self.queues[q];
        let at = g.desc + 16 * u64::from(i % g.size);
        let _ = self.mem.write_obj(addr, GuestAddress(at));
        let _ = self.mem.write_obj(len, GuestAddress(at + 8));
        let _ = self.mem.write_obj(flags, GuestAddress(at + 12));
        let _ = self.mem.write_obj(next, GuestAddress(at + 14));
    }

    fn publish(&self, q: usize, head: u16) {
        let g = &self.queues[q];
        let idx = read_u16(self.mem, g.avail + 2);
        let slot = g.avail + 4 + 2 * u64::from(idx % g.size);
        let _ = self.mem.write_obj(head, GuestAddress(slot));
        let _ = self
            .mem
            .write_obj(idx.wrapping_add(1), GuestAddress(g.avail + 2));
    }
}

struct Device {
    net: Net<ScriptBackend>,
    features: u64,
}

impl Device {
    fn activate(&mut self, mem: &GuestMemoryMmap, queues: &[Geometry; 2]) {
        self.net.ack_features(self.features);
        let interrupt = std::sync::Arc::new(FakeInterrupt::default());
        let _ = self.net.activate(
            mem.clone(),
            vec![queues[0].queue(), queues[1].queue()],
            interrupt,
        );
    }
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), MEM)]).expect("mmap");
    let backend = ScriptBackend {
        fd: EventFd::new(EFD_NONBLOCK).expect("eventfd"),
        reads: VecDeque::new(),
        writes: VecDeque::new(),
        reads_answered: 0,
        writes_ok: 0,
        writes_failed: 0,
        calls: 0,
    };
    let mut net = Net::new(backend, MacAddr([2, 0, 0, 0, 0, 1]), 1500).expect("device");
    let offered = net.features();
    let mut features = offered & input.u64();
    net.ack_features(features);
    if !net.features_ok() {
        // Not a driver the device accepts: fall back to VERSION_1 alone (the transport
        // target covers refused features).
        features = offered & (1 << virtio_bindings::virtio_config::VIRTIO_F_VERSION_1);
    }
    let queues = [Geometry::read(&mut input), Geometry::read(&mut input)];
    let driver = Driver { mem: &mem, queues };
    let mut device = Device { net, features };
    device.activate(&mem, &queues);

    let mut writable = vec![false; MEM];
    // Whether the driver rewrote memory behind the device's back since activation (then the
    // chain a used entry names may not be the chain the device read).
    let mut poked = false;

    let trace = std::env::var_os("FUZZ_TRACE").is_some();
    if trace {
        eprintln!(
            "features {features:#x}; rx size {} desc {:#x} avail {:#x} used {:#x}; tx size {} desc {:#x} avail {:#x} used {:#x}; active {}",
            queues[0].size, queues[0].desc, queues[0].avail, queues[0].used,
            queues[1].size, queues[1].desc, queues[1].avail, queues[1].used,
            device.net.is_active()
        );
    }
    for _ in 0..MAX_OPS {
        if input.is_empty() {
            break;
        }
        let op = input.u8() % 10;
        if trace {
            eprintln!(
                "op {op} at input offset {}",
                data.len() - input.remaining() - 1
            );
        }
        match op {
            0 => {
                // Any descriptor, in range or not.
                let (q, i) = (usize::from(input.u8() & 1), input.u16());
                let addr = match input.u8() {
                    0 => input.u64(),
                    _ => u64::from(input.u16()),
                };
                let (len, flags, next) = (input.u32() & 0x1_ffff, input.u16(), input.u16());
                if trace {
                    eprintln!(
                        "  desc q{q} [{}] addr {addr:#x} len {len} flags {flags:#x} next {next}",
                        i % queues[q].size
                    );
                }
                driver.write_desc(q, i, addr, len, flags, next);
                poked = true;
            }
            1 => {
                let (q, head) = (usize::from(input.u8() & 1), input.u16());
                if trace {
                    eprintln!("  publish q{q} head {head}");
                }
                driver.publish(q, head);
            }
            2 => {
                // A well-formed chain of 1-4 descriptors, as a driver makes them.
                let q = usize::from(input.u8() & 1);
                let first = input.u16() % queues[q].size;
                let count = (input.u8() % 4 + 1).min(queues[q].size as u8) as u16;
                let addr = u64::from(input.u16());
                let len = u32::from(input.u16());
                let flags = if q == 0 { VRING_DESC_F_WRITE as u16 } else { 0 };
                for k in 0..count {
                    let i = (first + k) % queues[q].size;
                    let last = k + 1 == count;
                    let next = (i + 1) % queues[q].size;
                    let f = if last {
                        flags
                    } else {
                        flags | VRING_DESC_F_NEXT as u16
                    };
                    driver.write_desc(q, i, addr + u64::from(k) * u64::from(len), len, f, next);
                }
                if trace {
                    eprintln!("  chain q{q} [{first}..+{count}] addr {addr:#x} len {len} each");
                }
                driver.publish(q, first);
                poked = true;
            }
            3 => {
                let len = usize::from(input.u16()) % (VNET_HDR_LEN + 65_550);
                let fill = input.u8();
                device
                    .net_backend()
                    .reads
                    .push_back(Read::Frame(vec![fill; len]));
            }
            4 => {
                let errno = [libc::EAGAIN, libc::EIO, libc::EBADFD, libc::EINVAL]
                    [usize::from(input.u8() % 4)];
                device.net_backend().reads.push_back(Read::Errno(errno));
            }
            5 => {
                let errno = [0, libc::EAGAIN, libc::EIO, libc::EINVAL][usize::from(input.u8() % 4)];
                device.net_backend().writes.push_back(errno);
            }
            6 => pass(&mut device, &mem, &queues, &mut writable, poked, true),
            7 => pass(&mut device, &mem, &queues, &mut writable, poked, false),
            8 => {
                // The driver writes anything anywhere (avail index jumps, flags, used_event).
                let at = u64::from(input.u16());
                let n = usize::from(input.u8() % 8) + 1;
                let bytes = input.take(n).to_vec();
                if trace {
                    eprintln!("  poke {at:#x} {bytes:x?}");
                }
                let _ = mem.write_slice(&bytes, GuestAddress(at));
                poked = true;
            }
            _ => {
                // Reset, the rings re-initialised, and activation again.
                device.net.reset();
                for g in &queues {
                    let _ = mem.write_obj(0u16, GuestAddress(g.avail + 2));
                    let _ = mem.write_obj(0u16, GuestAddress(g.used + 2));
                }
                device.activate(&mem, &queues);
                writable.fill(false);
                poked = false;
            }
        }
    }
});

impl Device {
    fn net_backend(&mut self) -> &mut ScriptBackend {
        self.net.backend_mut()
    }
}

/// Prints what `what` says when FUZZ_TRACE is set (to follow a crashing input).
fn trace(what: impl FnOnce() -> String) {
    if std::env::var_os("FUZZ_TRACE").is_some() {
        eprintln!("{}", what());
    }
}

/// One TX or RX pass, and the invariants around it.
fn pass(
    device: &mut Device,
    mem: &GuestMemoryMmap,
    queues: &[Geometry; 2],
    writable: &mut [bool],
    poked: bool,
    tx: bool,
) {
    let active = device.net.is_active();
    for g in queues {
        mark_writable(mem, g, writable);
    }
    let g = queues[usize::from(tx)];
    // A used ring that shares bytes with a buffer can be overwritten by the frame that follows
    // its entry: then its entries are not checked (the writes still are).
    let used_shared = used_ring_in(&g, writable);
    let mut may_write = writable.to_vec();
    for g in queues {
        mark(&mut may_write, g.used, g.used_ring_len());
    }
    let before_mem = snapshot(mem);
    let before = device.net.counters().snapshot();
    let (calls, answered, ok, failed) = {
        let b = device.net_backend();
        (b.calls, b.reads_answered, b.writes_ok, b.writes_failed)
    };
    let next_used = |d: &Device| active_queue_next_used(&d.net, tx).unwrap_or(0);
    let used_before = next_used(device);

    let failed_pass = if tx {
        let outcome = device.net.process_tx();
        trace(|| format!("  TX pass: {outcome:?}"));
        outcome == TxOutcome::Failed
    } else {
        let outcome = device.net.process_rx();
        trace(|| format!("  RX pass: {outcome:?}"));
        outcome == RxOutcome::Failed
    };
    trace(|| format!("  counters {:?}", device.net.counters().snapshot()));

    let after_mem = snapshot(mem);
    let changed = before_mem != after_mem;
    trace(|| {
        // Changed byte ranges, as start..end.
        let mut ranges: Vec<(usize, usize)> = Vec::new();
        for i in (0..MEM).filter(|&i| before_mem[i] != after_mem[i]) {
            match ranges.last_mut() {
                Some((_, end)) if *end == i => *end = i + 1,
                _ => ranges.push((i, i + 1)),
            }
        }
        let ranges: Vec<String> = ranges
            .iter()
            .map(|(a, b)| format!("{a:#x}..{b:#x}"))
            .collect();
        format!("  changed {}", ranges.join(" "))
    });

    // Exact only while the device's writes cannot change the descriptors it reads: rings laid
    // out apart (as virtio 1.2 §2.7 requires) and no writable buffer over a descriptor table.
    // Otherwise the device follows descriptors no snapshot here saw (still inside guest RAM:
    // vm-memory checks every access, AddressSanitizer the host side).
    let exact = !rings_overlap(queues) && !queues.iter().any(|q| table_in(q, writable));
    for (at, (a, b)) in before_mem
        .iter()
        .zip(&after_mem)
        .enumerate()
        .filter(|_| changed && exact)
    {
        assert!(
            a == b || may_write[at],
            "the device wrote {at:#x}, which no device-writable descriptor or used ring covers"
        );
    }
    if !active {
        assert_eq!(
            before_mem, after_mem,
            "an inactive device wrote guest memory"
        );
        return;
    }
    if failed_pass {
        assert!(
            !device.net.is_active(),
            "a failed pass leaves the device stopped"
        );
        return;
    }
    let after = device.net.counters().snapshot();
    let new_used = u64::from(next_used(device).wrapping_sub(used_before));
    let b = device.net_backend();
    let size = u64::from(g.size);
    let calls = b.calls - calls;
    let bound = if tx { size } else { 2 * size };
    assert!(
        new_used <= bound,
        "{new_used} chains completed in one pass of a {size}-entry queue"
    );
    assert!(
        calls <= size,
        "{calls} backend calls in one pass of a {size}-entry queue"
    );
    // In an RX pass the frame bytes can also land on the used ring when the pass is not exact:
    // the device's own used-entry write can rewrite a descriptor it reads next (found by this
    // target: a descriptor table under the used ring). A TX pass writes only used entries.
    let entries_kept = tx || (!used_shared && exact);
    for k in 0..if entries_kept { new_used as u16 } else { 0 } {
        let slot = g.used + 4 + 8 * u64::from(used_before.wrapping_add(k) % g.size);
        let (id, len) = (read_u32(mem, slot), read_u32(mem, slot + 4));
        assert!(
            id < u32::from(g.size),
            "used entry names head {id} of a {size}-entry queue"
        );
        if tx {
            assert_eq!(len, 0, "a TX used length is not 0");
        } else if !poked && exact {
            let capacity = writable_capacity(mem, &g, id as u16);
            assert!(
                u64::from(len) <= capacity,
                "used length {len} > chain capacity {capacity}"
            );
        }
    }
    if tx {
        let sent = after.tx_frames - before.tx_frames;
        let errors = after.tx_backend_errors - before.tx_backend_errors;
        let malformed = after.tx_malformed - before.tx_malformed;
        assert_eq!(
            sent,
            b.writes_ok - ok,
            "tx_frames counts every frame the backend took"
        );
        assert_eq!(
            errors,
            b.writes_failed - failed,
            "tx_backend_errors counts every refusal"
        );
        assert_eq!(
            new_used,
            sent + errors + malformed,
            "a completed TX chain went uncounted"
        );
    } else {
        let delivered = after.rx_frames - before.rx_frames;
        let errors = after.rx_backend_errors - before.rx_backend_errors;
        assert_eq!(
            delivered + errors,
            b.reads_answered - answered,
            "a frame or error from the backend was neither delivered nor counted"
        );
        assert!(
            new_used >= delivered,
            "a delivered frame without a used entry"
        );
    }
}
