//! `make bench`: the device model alone on a real tap, side by side with raw `writev`/`readv`
//! of the same frames on the same tap fd, in one run.
//!
//! A simulated driver lays out split rings in real guest memory (`GuestMemoryMmap`), accepts
//! what a Linux guest accepts (checksum/TSO offloads, merged RX buffers, EVENT_IDX), fills the
//! TX queue or posts RX buffers, and lets the device move frames between the rings and the tap.
//! The raw baseline is what a perfect VMM would do: the same system call per frame on the same
//! guest buffers (the same iovecs, in the same order), and nothing else — so the ratio is the
//! device's own cost: ring handling, descriptor checks, counters, notifications.
//! Rounds of device and raw alternate and the best of each counts (this is a noisy 2-core
//! machine); the figure is the ratio device/raw, never a time alone.
//!
//! The bench runs in a network namespace of its own (it unshares one, so it needs root), with
//! one tap `vbench0` that nothing else uses. The last line is
//! `bench: device/raw tx64 R tx1514 R tx64k R rx64 R rx1514 R rx64k R`.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_bindings::virtio_net::*;
use virtio_bindings::virtio_ring::{VIRTIO_RING_F_EVENT_IDX, VRING_DESC_F_WRITE};
use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};
use vmm_tap::Tap;
use vmm_virtio_net::{MacAddr, Net, VirtioDevice};

const TAP: &str = "vbench0";
const QUEUE: u16 = 256;
const MEM: usize = 96 << 20;
const RX_RING: u64 = 0x0;
const TX_RING: u64 = 0x10_0000;
/// RX buffers: 256 of them. A Linux guest sizes its mergeable buffers by the average packet
/// length it sees (an EWMA, from 1536 bytes up to a page): 1536 for small frames, 4096 for bulk
/// 64 KiB traffic; each RX row uses the size that guest would.
const RX_BUFS: u64 = 0x20_0000;
/// TX buffers: 256 slots of 66 KiB.
const TX_BUFS: u64 = 0x40_0000;
const TX_SLOT: u64 = 0x1_1000;
/// Frames queued on the tap per RX round.
const RX_BATCH: usize = 1000;
const ROUNDS: usize = 5;
const HDR: usize = 12;

/// A split virtqueue, driver side, in guest memory (virtio 1.2 §2.7).
struct Ring {
    desc: u64,
    avail: u64,
    used: u64,
    avail_idx: u16,
    last_used: u16,
}

impl Ring {
    fn new(base: u64) -> Ring {
        let avail = base + 16 * u64::from(QUEUE);
        let used = (avail + 6 + 2 * u64::from(QUEUE)).next_multiple_of(4096);
        Ring {
            desc: base,
            avail,
            used,
            avail_idx: 0,
            last_used: 0,
        }
    }

    fn queue(&self, mem: &GuestMemoryMmap) -> Queue {
        let mut q = Queue::new(QUEUE).unwrap();
        q.set_size(QUEUE);
        q.set_desc_table_address(Some(self.desc as u32), Some(0));
        q.set_avail_ring_address(Some(self.avail as u32), Some(0));
        q.set_used_ring_address(Some(self.used as u32), Some(0));
        q.set_ready(true);
        assert!(q.is_valid(mem));
        q
    }

    fn post(&mut self, mem: &GuestMemoryMmap, id: u16, addr: u64, len: u32, flags: u16) {
        let d = self.desc + 16 * u64::from(id);
        mem.write_obj(addr, GuestAddress(d)).unwrap();
        mem.write_obj(len, GuestAddress(d + 8)).unwrap();
        mem.write_obj(flags, GuestAddress(d + 12)).unwrap();
        mem.write_obj(0u16, GuestAddress(d + 14)).unwrap();
        let slot = self.avail + 4 + 2 * u64::from(self.avail_idx % QUEUE);
        mem.write_obj(id, GuestAddress(slot)).unwrap();
        self.avail_idx = self.avail_idx.wrapping_add(1);
        mem.write_obj(self.avail_idx, GuestAddress(self.avail + 2))
            .unwrap();
    }

    /// "Interrupt me after the next `n` used entries" (used_event, EVENT_IDX).
    fn interrupt_after(&self, mem: &GuestMemoryMmap, n: u16) {
        let at = self.avail + 4 + 2 * u64::from(QUEUE);
        let event = self.last_used.wrapping_add(n).wrapping_sub(1);
        mem.write_obj(event, GuestAddress(at)).unwrap();
    }

    fn pop_used(&mut self, mem: &GuestMemoryMmap) -> Option<(u16, u32)> {
        let idx: u16 = mem.read_obj(GuestAddress(self.used + 2)).unwrap();
        if idx == self.last_used {
            return None;
        }
        let e = self.used + 4 + 8 * u64::from(self.last_used % QUEUE);
        let id: u32 = mem.read_obj(GuestAddress(e)).unwrap();
        let len: u32 = mem.read_obj(GuestAddress(e + 4)).unwrap();
        self.last_used = self.last_used.wrapping_add(1);
        Some((id as u16, len))
    }
}

/// `[virtio_net_hdr_v1 | frame]` of `len` Ethernet bytes: an IPv4/TCP frame to a MAC that is
/// not the tap's (the host drops it early, after the tap counted it); with `len` above the MTU
/// a TSO segment (NEEDS_CSUM, TCPV4, gso_size 1448).
fn frame(len: usize) -> Vec<u8> {
    let mut f = vec![0u8; HDR + len];
    if len > 1514 {
        f[0] = VIRTIO_NET_HDR_F_NEEDS_CSUM as u8;
        f[1] = VIRTIO_NET_HDR_GSO_TCPV4 as u8;
        f[2..4].copy_from_slice(&54u16.to_le_bytes());
        f[4..6].copy_from_slice(&1448u16.to_le_bytes());
        f[6..8].copy_from_slice(&34u16.to_le_bytes());
        f[8..10].copy_from_slice(&16u16.to_le_bytes());
    }
    let e = &mut f[HDR..];
    e[0..6].copy_from_slice(&[2, 0, 0, 0, 0, 2]);
    e[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 1]);
    e[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
    if len >= 54 {
        let ip = &mut e[14..34];
        ip[0] = 0x45;
        ip[2..4].copy_from_slice(&((len - 14) as u16).to_be_bytes());
        ip[8] = 64;
        ip[9] = 6;
        ip[12..16].copy_from_slice(&[198, 51, 100, 2]);
        ip[16..20].copy_from_slice(&[198, 51, 100, 1]);
        e[46] = 0x50;
    }
    f
}

/// The simulated driver polls: its interrupts go nowhere (the device still counts them).
struct NoInterrupt;

impl vmm_virtio_net::InterruptSignal for NoInterrupt {
    fn signal_used_queue(&self) {}
    fn signal_config_change(&self) {}
}

/// The device, activated by the simulated driver, and its rings.
struct Bench {
    mem: GuestMemoryMmap,
    net: Net<Tap>,
    rx: Ring,
    tx: Ring,
    rx_buf_len: u32,
}

impl Bench {
    /// A freshly activated device on a fresh tap, RX buffers of `rx_buf_len` bytes posted.
    fn new(rx_buf_len: u32) -> Bench {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM)]).unwrap();
        let tap = Tap::open(TAP).expect("open the bench tap");
        let mut net = Net::new(tap, MacAddr([0x52, 0x54, 0, 0, 0, 1]), 1500).unwrap();
        let wanted = [
            VIRTIO_F_VERSION_1,
            VIRTIO_NET_F_CSUM,
            VIRTIO_NET_F_HOST_TSO4,
            VIRTIO_NET_F_GUEST_CSUM,
            VIRTIO_NET_F_GUEST_TSO4,
            VIRTIO_NET_F_MRG_RXBUF,
            VIRTIO_RING_F_EVENT_IDX,
        ]
        .iter()
        .fold(0u64, |acc, f| acc | (1 << f));
        assert_eq!(net.features() & wanted, wanted, "the tap does not take TSO");
        net.ack_features(wanted);
        assert!(net.features_ok());
        let (rx, tx) = (Ring::new(RX_RING), Ring::new(TX_RING));
        net.activate(
            mem.clone(),
            vec![rx.queue(&mem), tx.queue(&mem)],
            std::sync::Arc::new(NoInterrupt),
        )
        .unwrap();
        let mut b = Bench {
            mem,
            net,
            rx,
            tx,
            rx_buf_len,
        };
        for id in 0..QUEUE {
            b.post_rx(id);
        }
        set_txqueuelen(RX_BATCH as i32 * 2);
        b
    }

    fn post_rx(&mut self, id: u16) {
        let addr = RX_BUFS + u64::from(id) * u64::from(self.rx_buf_len);
        self.rx.post(
            &self.mem,
            id,
            addr,
            self.rx_buf_len,
            VRING_DESC_F_WRITE as u16,
        );
    }

    fn fd(&self) -> RawFd {
        self.net.backend().as_raw_fd()
    }

    /// Device TX of `n` copies of `f`, a ring-full at a time: frames per second.
    fn device_tx(&mut self, f: &[u8], n: usize) -> f64 {
        for slot in 0..u64::from(QUEUE) {
            self.mem
                .write_slice(f, GuestAddress(TX_BUFS + slot * TX_SLOT))
                .unwrap();
        }
        let mut sent = 0;
        let mut busy = Duration::ZERO;
        while sent < n {
            let batch = (n - sent).min(usize::from(QUEUE));
            for i in 0..batch as u16 {
                let addr = TX_BUFS + u64::from(i) * TX_SLOT;
                self.tx.post(&self.mem, i, addr, f.len() as u32, 0);
            }
            self.tx.interrupt_after(&self.mem, batch as u16);
            let start = Instant::now();
            self.net.process_tx();
            busy += start.elapsed();
            while self.tx.pop_used(&self.mem).is_some() {
                sent += 1;
            }
        }
        n as f64 / busy.as_secs_f64()
    }

    /// Raw TX: `n` writev calls of `f` from the same guest buffers the device sends from, in
    /// the same order, one iovec each.
    fn raw_tx(&self, f: &[u8], n: usize) -> f64 {
        let iovs: Vec<libc::iovec> = (0..u64::from(QUEUE))
            .map(|slot| self.iovec(TX_BUFS + slot * TX_SLOT, f.len()))
            .collect();
        let start = Instant::now();
        for i in 0..n {
            // SAFETY: the iovec covers mapped guest memory that lives as long as `self.mem`.
            let r = unsafe { libc::writev(self.fd(), &iovs[i % iovs.len()], 1) };
            assert!(r > 0, "writev: {}", io::Error::last_os_error());
        }
        n as f64 / start.elapsed().as_secs_f64()
    }

    /// One iovec for `len` bytes of guest memory at `addr`.
    fn iovec(&self, addr: u64, len: usize) -> libc::iovec {
        let slice = self.mem.get_slice(GuestAddress(addr), len).unwrap();
        libc::iovec {
            iov_base: slice.ptr_guard_mut().as_ptr().cast(),
            iov_len: len,
        }
    }

    /// Device RX of the frames waiting on the tap (`n` of them): frames per second. The
    /// driver gives used buffers back between passes, outside the time measured.
    fn device_rx(&mut self, n: usize) -> f64 {
        let before = self.net.counters().snapshot().rx_frames;
        let mut busy = Duration::ZERO;
        let deadline = Instant::now() + Duration::from_secs(20);
        while (self.net.counters().snapshot().rx_frames - before) < n as u64 {
            assert!(Instant::now() < deadline, "device RX stalled");
            self.rx.interrupt_after(&self.mem, QUEUE);
            let start = Instant::now();
            self.net.process_rx();
            busy += start.elapsed();
            while let Some((id, _)) = self.rx.pop_used(&self.mem) {
                self.post_rx(id);
            }
        }
        n as f64 / busy.as_secs_f64()
    }

    /// Raw RX: `n` readv calls into the same guest buffers the device fills, in the same order
    /// and with the same iovecs: enough buffers for the largest frame (65,562 bytes), the next
    /// frame starting after the buffers the last one filled.
    fn raw_rx(&self, n: usize) -> f64 {
        let len = self.rx_buf_len as usize;
        let per_read = 65_562usize.div_ceil(len);
        let ring: Vec<libc::iovec> = (0..usize::from(QUEUE) * 2)
            .map(|i| self.iovec(RX_BUFS + (i % usize::from(QUEUE) * len) as u64, len))
            .collect();
        let mut next = 0usize;
        let start = Instant::now();
        for _ in 0..n {
            let iov = &ring[next..next + per_read];
            // SAFETY: as in raw_tx; the kernel writes at most iov_len bytes into each.
            let r = unsafe { libc::readv(self.fd(), iov.as_ptr(), per_read as i32) };
            assert!(r > 0, "readv: {}", io::Error::last_os_error());
            next = (next + (r as usize).div_ceil(len)) % usize::from(QUEUE);
        }
        n as f64 / start.elapsed().as_secs_f64()
    }
}

/// An AF_PACKET socket that makes the kernel transmit frames out of the tap (they queue for
/// our fd), with a vnet header in front so it can send GSO frames too.
struct Sender {
    fd: OwnedFd,
    ifindex: i32,
}

impl Sender {
    fn new() -> Sender {
        // SAFETY: plain socket creation; the result is checked.
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0) };
        assert!(fd >= 0, "AF_PACKET: {}", io::Error::last_os_error());
        // SAFETY: a new descriptor we own.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let name = std::ffi::CString::new(TAP).unwrap();
        // SAFETY: a valid NUL-terminated name.
        let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) } as i32;
        let set = |opt, value: libc::c_int| {
            // SAFETY: an int option passed with its size.
            let r = unsafe {
                libc::setsockopt(
                    fd.as_raw_fd(),
                    if opt == libc::PACKET_VNET_HDR {
                        libc::SOL_PACKET
                    } else {
                        libc::SOL_SOCKET
                    },
                    opt,
                    (&value as *const libc::c_int).cast(),
                    4,
                )
            };
            assert_eq!(r, 0, "setsockopt {opt}: {}", io::Error::last_os_error());
        };
        set(libc::PACKET_VNET_HDR, 1);
        // Enough send buffer for a whole batch of 64 KiB frames waiting in the tap.
        set(libc::SO_SNDBUFFORCE, 256 << 20);
        Sender { fd, ifindex }
    }

    /// Queues `n` copies of `f` (a 12-byte v1 header: the first 10 bytes are the legacy
    /// header PACKET_VNET_HDR wants).
    fn queue(&self, f: &[u8], n: usize) {
        // SAFETY: sockaddr_ll is plain data; zero is valid for every field.
        let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_ifindex = self.ifindex;
        let mut legacy = Vec::from(&f[..10]);
        legacy.extend_from_slice(&f[HDR..]);
        for _ in 0..n {
            // SAFETY: a valid buffer of its length and a valid sockaddr_ll.
            let r = unsafe {
                libc::sendto(
                    self.fd.as_raw_fd(),
                    legacy.as_ptr().cast(),
                    legacy.len(),
                    0,
                    (&addr as *const libc::sockaddr_ll).cast(),
                    std::mem::size_of::<libc::sockaddr_ll>() as u32,
                )
            };
            assert!(r > 0, "sendto: {}", io::Error::last_os_error());
        }
    }
}

/// Sets the tap's transmit queue length (how many frames may wait for our fd).
fn set_txqueuelen(len: i32) {
    // SAFETY: ifreq is plain data; zero is valid.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in req.ifr_name.iter_mut().zip(TAP.bytes()) {
        *d = s as libc::c_char;
    }
    req.ifr_ifru.ifru_metric = len;
    // SAFETY: plain socket creation.
    let sock = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0) };
    // SAFETY: SIOCSIFTXQLEN reads one ifreq, valid for the call.
    let r = unsafe { libc::ioctl(sock, libc::SIOCSIFTXQLEN as _, &req) };
    assert_eq!(r, 0, "SIOCSIFTXQLEN: {}", io::Error::last_os_error());
    // SAFETY: our socket.
    unsafe { libc::close(sock) };
}

fn main() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("bench: needs root (it makes a network namespace of its own with a tap in it)");
        std::process::exit(1);
    }
    // SAFETY: unshare affects only this (single-threaded) process.
    if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
        eprintln!(
            "bench: cannot unshare a network namespace: {}",
            io::Error::last_os_error()
        );
        std::process::exit(1);
    }
    let mut b = Bench::new(1536);
    println!(
        "bench: virtio-net device model vs raw readv/writev on the same tap ({TAP}, own netns)"
    );
    println!("bench: driver accepts csum, tso4, guest_csum, guest_tso4, mrg_rxbuf, event_idx");
    // BENCH_ROWS=rx64,tx64 runs only those rows; BENCH_SCALE=N divides the frame counts (for
    // `valgrind --tool=callgrind`, whose instruction counts are the repeatable second figure).
    let rows = std::env::var("BENCH_ROWS").unwrap_or_default();
    let wanted = |name: &str| rows.is_empty() || rows.split(',').any(|r| r == name);
    let scale: usize = std::env::var("BENCH_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1)
        .max(1);
    let mut ratios = Vec::new();
    for (name, len, n) in [
        ("tx64", 64, 200_000),
        ("tx1514", 1514, 100_000),
        ("tx64k", 65_536 - 14, 4_000),
    ] {
        if !wanted(name) {
            continue;
        }
        let n = (n / scale).max(1);
        let f = frame(len);
        let (mut d, mut r) = (0f64, 0f64);
        for _ in 0..ROUNDS {
            d = d.max(b.device_tx(&f, n));
            r = r.max(b.raw_tx(&f, n));
        }
        report(name, len, d, r);
        ratios.push((name, d / r));
    }
    let mut counters = b.net.counters().snapshot();
    drop(b);
    let rx_rows = [
        ("rx64", 64, RX_BATCH, 1536),
        ("rx1514", 1514, RX_BATCH, 1536),
        ("rx64k", 65_536 - 14, 200, 4096),
    ];
    for (name, len, batch, buf_len) in rx_rows {
        if !wanted(name) {
            continue;
        }
        let batch = (batch / scale).max(1);
        let mut b = Bench::new(buf_len);
        let sender = Sender::new();
        let f = frame(len);
        let (mut d, mut r) = (0f64, 0f64);
        for _ in 0..ROUNDS {
            sender.queue(&f, batch);
            d = d.max(b.device_rx(batch));
            sender.queue(&f, batch);
            r = r.max(b.raw_rx(batch));
        }
        report(name, len, d, r);
        println!("bench:         (RX buffers of {buf_len} bytes, as a Linux guest posts for such traffic)");
        ratios.push((name, d / r));
        let c = b.net.counters().snapshot();
        counters.rx_frames += c.rx_frames;
        counters.rx_merged_frames += c.rx_merged_frames;
        counters.interrupts += c.interrupts;
        counters.rx_too_small += c.dropped();
    }
    let c = counters;
    println!(
        "bench: device counters: tx_frames={} rx_frames={} rx_merged={} dropped={} interrupts={}",
        c.tx_frames,
        c.rx_frames,
        c.rx_merged_frames,
        c.dropped(),
        c.interrupts
    );
    let cols: Vec<String> = ratios.iter().map(|(n, r)| format!("{n} {r:.2}")).collect();
    println!("bench: device/raw {}", cols.join(" "));
}

fn report(name: &str, len: usize, device: f64, raw: f64) {
    let gbit = |fps: f64| fps * len as f64 * 8.0 / 1e9;
    println!(
        "bench: {name:<7} device {device:>10.0} frames/s {:>6.2} Gbit/s   raw {raw:>10.0} frames/s {:>6.2} Gbit/s   device/raw {:.2}",
        gbit(device),
        gbit(raw),
        device / raw
    );
}
