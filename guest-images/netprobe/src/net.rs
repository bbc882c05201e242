//! The virtio-net driver (virtio 1.2 §5.1): initialise the device, keep RX buffers posted,
//! send frames, and count what goes each way in Ethernet bytes (without the 12-byte header).

use core::ptr::{addr_of, addr_of_mut};

use crate::virtio::{reg, status, Mmio, QueueMem, Virtq, DESC_F_WRITE, INT_CONFIG, QUEUE_SIZE};

/// VIRTIO_ID_NET.
const DEVICE_ID_NET: u32 = 1;
/// Feature bits (virtio 1.2 §5.1.3 and §6).
const F_MTU: u64 = 1 << 3;
const F_MAC: u64 = 1 << 5;
const F_STATUS: u64 = 1 << 16;
const F_VERSION_1: u64 = 1 << 32;
/// The device takes frames with a partial checksum (NEEDS_CSUM).
pub const F_CSUM: u64 = 1 << 0;
/// We take frames with a partial checksum.
pub const F_GUEST_CSUM: u64 = 1 << 1;
/// We take 64 KiB TCPv4 segments (GSO).
pub const F_GUEST_TSO4: u64 = 1 << 7;
/// The device takes 64 KiB TCPv4 segments and cuts them for us (TSO).
pub const F_HOST_TSO4: u64 = 1 << 11;
/// A received frame may span several RX buffers (num_buffers in its header).
pub const F_MRG_RXBUF: u64 = 1 << 15;
/// virtio_net_hdr flag: the checksum from csum_start on is left to the receiver.
pub const HDR_F_NEEDS_CSUM: u8 = 1;
/// virtio_net_hdr gso_type: a TCPv4 segment larger than the MSS.
pub const HDR_GSO_TCPV4: u8 = 1;
/// Largest frame with GSO: a 64 KiB IP packet behind an Ethernet header.
pub const MAX_GSO_FRAME: usize = 65_550;
/// Config space offsets (§5.1.4): mac[6], status u16, max_virtqueue_pairs u16, mtu u16.
const CONFIG_MAC: u64 = 0;
const CONFIG_STATUS: u64 = 6;
/// Status bit: the link is up.
const S_LINK_UP: u8 = 1;
const CONFIG_MTU: u64 = 10;
/// virtio_net_hdr_v1 length.
pub const HDR_LEN: usize = 12;
/// Buffer size: header + the largest frame (1518 with a VLAN tag) rounded up; at least the
/// 1526 bytes the device asks for.
pub const BUF_LEN: usize = 1536;

/// Frames and Ethernet bytes per direction (TX counted when the device completes them).
#[derive(Default, Clone, Copy)]
pub struct Stats {
    pub tx_frames: u64,
    pub tx_bytes: u64,
    pub rx_frames: u64,
    pub rx_bytes: u64,
}

#[repr(C, align(4096))]
struct Buffers([[u8; BUF_LEN]; QUEUE_SIZE]);

// The driver's memory; zeroed with .bss. Only `NetDev::init` takes references to it, once.
// SAFETY: QueueMem is integers only; all-zero is a valid (empty) queue.
static mut RX_QUEUE: QueueMem = unsafe { core::mem::zeroed() };
// SAFETY: as above.
static mut TX_QUEUE: QueueMem = unsafe { core::mem::zeroed() };
static mut RX_BUFS: Buffers = Buffers([[0; BUF_LEN]; QUEUE_SIZE]);
static mut TX_BUFS: Buffers = Buffers([[0; BUF_LEN]; QUEUE_SIZE]);

/// One buffer for a large TX segment (TSO), and one to put a merged RX frame back together.
#[repr(C, align(4096))]
struct Big([u8; HDR_LEN + MAX_GSO_FRAME]);
static mut BIG_TX: Big = Big([0; HDR_LEN + MAX_GSO_FRAME]);
static mut MERGED_RX: Big = Big([0; HDR_LEN + MAX_GSO_FRAME]);

/// A frame received across `num_buffers` RX buffers, copied into one place.
pub struct Merged {
    /// Its virtio-net header as the device wrote it.
    pub header: [u8; HDR_LEN],
    /// The Ethernet frame's length.
    pub len: usize,
    /// How many buffers it filled.
    pub num_buffers: u16,
}

/// A received frame, still in its RX buffer.
pub struct RxFrame {
    id: u16,
    len: usize,
}

/// The NIC.
pub struct NetDev {
    rx: Virtq,
    tx: Virtq,
    rx_bufs: *mut Buffers,
    tx_bufs: *mut Buffers,
    tx_free: [u16; QUEUE_SIZE],
    tx_free_len: usize,
    tx_len: [u32; QUEUE_SIZE],
    /// The TX descriptor that carries BIG_TX while the device has it.
    big_tx_id: Option<u16>,
    /// The features both sides accepted.
    pub features: u64,
    /// The MAC from config space.
    pub mac: [u8; 6],
    /// The MTU from config space.
    pub mtu: u16,
    /// The link state from config space (always up without VIRTIO_NET_F_STATUS).
    pub link_up: bool,
    mmio: Mmio,
    /// What moved so far.
    pub stats: Stats,
}

impl NetDev {
    /// Brings up the virtio-net device at `base` (§3.1.1): reset, ACKNOWLEDGE, DRIVER,
    /// features (the basic ones, plus those of `extra` the device offers), FEATURES_OK,
    /// queues, RX buffers, DRIVER_OK. Call once.
    pub fn init(base: u64, extra: u64) -> Result<NetDev, &'static str> {
        let mmio = Mmio::new(base);
        if mmio.read32(reg::MAGIC) != 0x7472_6976 {
            return Err("no virtio-mmio device at the announced address");
        }
        if mmio.read32(reg::VERSION) != 2 {
            return Err("virtio-mmio version is not 2");
        }
        if mmio.read32(reg::DEVICE_ID) != DEVICE_ID_NET {
            return Err("the virtio-mmio device is not a network device");
        }
        mmio.write32(reg::STATUS, 0);
        mmio.write32(reg::STATUS, status::ACKNOWLEDGE);
        mmio.write32(reg::STATUS, status::ACKNOWLEDGE | status::DRIVER);

        let mut offered = 0u64;
        for sel in 0..2u32 {
            mmio.write32(reg::DEVICE_FEATURES_SEL, sel);
            offered |= u64::from(mmio.read32(reg::DEVICE_FEATURES)) << (32 * sel);
        }
        if offered & F_VERSION_1 == 0 {
            return Err("the device does not offer VIRTIO_F_VERSION_1");
        }
        let wanted = offered & (F_VERSION_1 | F_MAC | F_STATUS | F_MTU | extra);
        for sel in 0..2u32 {
            mmio.write32(reg::DRIVER_FEATURES_SEL, sel);
            mmio.write32(reg::DRIVER_FEATURES, (wanted >> (32 * sel)) as u32);
        }
        let st = status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK;
        mmio.write32(reg::STATUS, st);
        if mmio.read32(reg::STATUS) & status::FEATURES_OK == 0 {
            return Err("the device refused our features");
        }

        let mut mac = [0u8; 6];
        if wanted & F_MAC != 0 {
            for (i, b) in mac.iter_mut().enumerate() {
                *b = mmio.config8(CONFIG_MAC + i as u64);
            }
        } else {
            mac = [0x52, 0x54, 0x00, 0x00, 0x00, 0x01];
        }
        let mtu = if wanted & F_MTU != 0 {
            u16::from_le_bytes([mmio.config8(CONFIG_MTU), mmio.config8(CONFIG_MTU + 1)])
        } else {
            1500
        };

        // Raw pointers only: init runs once, and these statics are used only through this NetDev.
        let (rxq, txq, rx_bufs, tx_bufs) = (
            addr_of_mut!(RX_QUEUE),
            addr_of_mut!(TX_QUEUE),
            addr_of_mut!(RX_BUFS),
            addr_of_mut!(TX_BUFS),
        );
        // SAFETY: each queue memory is a zeroed static used by this queue alone.
        let rx = unsafe { Virtq::new(mmio, 0, rxq)? };
        // SAFETY: as above.
        let tx = unsafe { Virtq::new(mmio, 1, txq)? };
        let mut dev = NetDev {
            rx,
            tx,
            rx_bufs,
            tx_bufs,
            tx_free: [0; QUEUE_SIZE],
            tx_free_len: QUEUE_SIZE,
            tx_len: [0; QUEUE_SIZE],
            big_tx_id: None,
            features: wanted,
            mac,
            mtu,
            link_up: wanted & F_STATUS == 0 || mmio.config8(CONFIG_STATUS) & S_LINK_UP != 0,
            mmio,
            stats: Stats::default(),
        };
        for (i, slot) in dev.tx_free.iter_mut().enumerate() {
            *slot = i as u16;
        }
        for id in 0..QUEUE_SIZE as u16 {
            dev.post_rx(id);
        }
        mmio.write32(reg::STATUS, st | status::DRIVER_OK);
        dev.rx.notify();
        Ok(dev)
    }

    /// The new link state, if the device raised a configuration-change interrupt and the link
    /// is not what it was (one MMIO read when nothing changed). We poll the interrupt status
    /// rather than take the interrupt: a bare-metal guest under PVM gets none.
    pub fn poll_link(&mut self) -> Option<bool> {
        if self.features & F_STATUS == 0
            || self.mmio.read32(reg::INTERRUPT_STATUS) & INT_CONFIG == 0
        {
            return None;
        }
        self.mmio.write32(reg::INTERRUPT_ACK, INT_CONFIG);
        let up = self.mmio.config8(CONFIG_STATUS) & S_LINK_UP != 0;
        if up == self.link_up {
            return None;
        }
        self.link_up = up;
        Some(up)
    }

    fn rx_buf_addr(&self, id: u16) -> u64 {
        // SAFETY: only the address is taken; id < QUEUE_SIZE.
        unsafe { addr_of!((*self.rx_bufs).0[usize::from(id)]) as u64 }
    }

    fn post_rx(&mut self, id: u16) {
        let addr = self.rx_buf_addr(id);
        self.rx.set_desc(id, addr, BUF_LEN as u32, DESC_F_WRITE);
        self.rx.push_avail(id);
    }

    /// The next received frame, if any.
    pub fn poll_rx(&mut self) -> Option<RxFrame> {
        let (id, len) = self.rx.pop_used()?;
        let id = id % QUEUE_SIZE as u16;
        let len = (len as usize).clamp(HDR_LEN, BUF_LEN);
        self.stats.rx_frames += 1;
        self.stats.rx_bytes += (len - HDR_LEN) as u64;
        Some(RxFrame { id, len })
    }

    /// The Ethernet frame of `rx`.
    pub fn frame(&self, rx: &RxFrame) -> &[u8] {
        // SAFETY: the device finished writing this buffer (its used entry was consumed) and does
        // not touch it again until `release` re-posts it.
        let buf: &[u8; BUF_LEN] = unsafe { &(*self.rx_bufs).0[usize::from(rx.id)] };
        &buf[HDR_LEN..rx.len]
    }

    /// Gives the buffer of `rx` back to the device.
    pub fn release(&mut self, rx: RxFrame) {
        self.post_rx(rx.id);
        self.rx.notify();
    }

    /// Collects completed TX buffers.
    pub fn reclaim_tx(&mut self) {
        while let Some((id, _)) = self.tx.pop_used() {
            let id = id % QUEUE_SIZE as u16;
            self.stats.tx_frames += 1;
            self.stats.tx_bytes += u64::from(self.tx_len[usize::from(id)]);
            if self.big_tx_id == Some(id) {
                self.big_tx_id = None;
            }
            self.tx_free[self.tx_free_len] = id;
            self.tx_free_len += 1;
        }
    }

    /// Frames sent but not yet completed.
    pub fn tx_in_flight(&self) -> usize {
        QUEUE_SIZE - self.tx_free_len
    }

    /// Sends a frame that `build` writes into the TX buffer (returning its length), or returns
    /// false when every TX buffer is in flight.
    pub fn send_with(&mut self, build: impl FnOnce(&mut [u8]) -> usize) -> bool {
        self.reclaim_tx();
        if self.tx_free_len == 0 {
            return false;
        }
        self.tx_free_len -= 1;
        let id = self.tx_free[self.tx_free_len];
        // SAFETY: buffer `id` is free: the device completed it (or never had it).
        let buf = unsafe { &mut (*self.tx_bufs).0[usize::from(id)] };
        buf[..HDR_LEN].fill(0); // no offloads: flags 0, gso_type NONE
        let len = build(&mut buf[HDR_LEN..]).min(BUF_LEN - HDR_LEN);
        self.tx_len[usize::from(id)] = len as u32;
        let addr = buf.as_ptr() as u64;
        self.tx.set_desc(id, addr, (HDR_LEN + len) as u32, 0);
        self.tx.push_avail(id);
        self.tx.notify();
        true
    }

    /// Sends one large frame with virtio-net header `header` (offloads: NEEDS_CSUM, TSO), that
    /// `build` writes into the big TX buffer (returning its length); false while the device
    /// still has the previous one or every TX descriptor is in flight.
    pub fn send_big(
        &mut self,
        header: &[u8; HDR_LEN],
        build: impl FnOnce(&mut [u8]) -> usize,
    ) -> bool {
        self.reclaim_tx();
        if self.big_tx_id.is_some() || self.tx_free_len == 0 {
            return false;
        }
        self.tx_free_len -= 1;
        let id = self.tx_free[self.tx_free_len];
        // SAFETY: BIG_TX is only used here, and the device is done with it (big_tx_id is None).
        let buf = unsafe { &mut (*addr_of_mut!(BIG_TX)).0 };
        buf[..HDR_LEN].copy_from_slice(header);
        let len = build(&mut buf[HDR_LEN..]).min(MAX_GSO_FRAME);
        self.tx_len[usize::from(id)] = len as u32;
        self.big_tx_id = Some(id);
        let addr = buf.as_ptr() as u64;
        self.tx.set_desc(id, addr, (HDR_LEN + len) as u32, 0);
        self.tx.push_avail(id);
        self.tx.notify();
        true
    }

    /// The next received frame with VIRTIO_NET_F_MRG_RXBUF: its first buffer says how many
    /// buffers it filled (`num_buffers`); the rest follow in the used ring. The pieces are
    /// copied into one buffer (see [`NetDev::merged_frame`]) and the RX buffers re-posted.
    pub fn poll_rx_merged(
        &mut self,
        clock: &mut crate::clock::Clock,
    ) -> Result<Option<Merged>, &'static str> {
        let Some(first) = self.poll_rx_buffer() else {
            return Ok(None);
        };
        // SAFETY: MERGED_RX is only used here and by `merged_frame`, never by the device.
        let out = unsafe { &mut (*addr_of_mut!(MERGED_RX)).0 };
        let mut header = [0u8; HDR_LEN];
        header.copy_from_slice(&self.rx_buffer(first.0)[..HDR_LEN]);
        let num_buffers = u16::from_le_bytes([header[10], header[11]]);
        if num_buffers == 0 || usize::from(num_buffers) > QUEUE_SIZE {
            return Err("the device wrote an impossible num_buffers");
        }
        let mut total = 0usize;
        let mut piece = Some(first);
        let mut taken = 0u16;
        let deadline = clock.now_ms() + 1000;
        while taken < num_buffers {
            let Some((id, len)) = piece.take().or_else(|| self.poll_rx_buffer()) else {
                if clock.now_ms() > deadline {
                    return Err("the device announced more buffers than it used");
                }
                continue;
            };
            let bytes = &self.rx_buffer(id)[..len];
            let end = (total + len).min(out.len());
            out[total..end].copy_from_slice(&bytes[..end - total]);
            total = end;
            taken += 1;
            self.post_rx(id);
        }
        self.rx.notify();
        let len = total.saturating_sub(HDR_LEN);
        self.stats.rx_frames += 1;
        self.stats.rx_bytes += len as u64;
        Ok(Some(Merged {
            header,
            len,
            num_buffers,
        }))
    }

    /// The Ethernet frame of the last merged frame.
    pub fn merged_frame(&self, m: &Merged) -> &[u8] {
        // SAFETY: written only by `poll_rx_merged`, which is done with it.
        let buf = unsafe { &(*addr_of!(MERGED_RX)).0 };
        &buf[HDR_LEN..HDR_LEN + m.len]
    }

    /// The next used RX buffer (id, bytes written), not counted in the stats.
    fn poll_rx_buffer(&mut self) -> Option<(u16, usize)> {
        let (id, len) = self.rx.pop_used()?;
        Some((id % QUEUE_SIZE as u16, (len as usize).min(BUF_LEN)))
    }

    /// RX buffer `id`, which the device has returned.
    fn rx_buffer(&self, id: u16) -> &[u8; BUF_LEN] {
        // SAFETY: callers pass an id the device returned through the used ring, which it does
        // not touch again until re-posted.
        unsafe { &(*self.rx_bufs).0[usize::from(id)] }
    }

    /// Sends a copy of received frame `rx`, changed by `edit` (echo and replies).
    pub fn send_edited_copy(&mut self, rx: &RxFrame, edit: impl FnOnce(&mut [u8])) -> bool {
        let rx_bufs = self.rx_bufs;
        let (id, len) = (usize::from(rx.id), rx.len - HDR_LEN);
        self.send_with(|buf| {
            // SAFETY: the RX buffer is ours until released (see `frame`), and distinct from
            // every TX buffer.
            let src: &[u8; BUF_LEN] = unsafe { &(*rx_bufs).0[id] };
            let src = &src[HDR_LEN..HDR_LEN + len];
            buf[..len].copy_from_slice(src);
            edit(&mut buf[..len]);
            len
        })
    }
}
