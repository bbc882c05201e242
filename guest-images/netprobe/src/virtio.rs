//! The driver's side of virtio-mmio (virtio 1.2 §4.2.2) and of a split virtqueue (§2.7).
//!
//! The rings live in netprobe's own .bss; their guest-physical addresses are their addresses,
//! because the VMM identity-maps memory.

use core::ptr::{addr_of, addr_of_mut, read_volatile, write_volatile};

/// Register offsets (virtio 1.2 §4.2.2.1).
pub mod reg {
    pub const MAGIC: u64 = 0x000;
    pub const VERSION: u64 = 0x004;
    pub const DEVICE_ID: u64 = 0x008;
    pub const DEVICE_FEATURES: u64 = 0x010;
    pub const DEVICE_FEATURES_SEL: u64 = 0x014;
    pub const DRIVER_FEATURES: u64 = 0x020;
    pub const DRIVER_FEATURES_SEL: u64 = 0x024;
    pub const QUEUE_SEL: u64 = 0x030;
    pub const QUEUE_NUM_MAX: u64 = 0x034;
    pub const QUEUE_NUM: u64 = 0x038;
    pub const QUEUE_READY: u64 = 0x044;
    pub const QUEUE_NOTIFY: u64 = 0x050;
    pub const INTERRUPT_STATUS: u64 = 0x060;
    pub const INTERRUPT_ACK: u64 = 0x064;
    pub const STATUS: u64 = 0x070;
    pub const QUEUE_DESC_LOW: u64 = 0x080;
    pub const QUEUE_DESC_HIGH: u64 = 0x084;
    pub const QUEUE_DRIVER_LOW: u64 = 0x090;
    pub const QUEUE_DRIVER_HIGH: u64 = 0x094;
    pub const QUEUE_DEVICE_LOW: u64 = 0x0a0;
    pub const QUEUE_DEVICE_HIGH: u64 = 0x0a4;
    pub const CONFIG: u64 = 0x100;
}

/// InterruptStatus bit: the configuration space changed (§4.2.2.1).
pub const INT_CONFIG: u32 = 2;

/// Device status bits (§2.1).
pub mod status {
    pub const ACKNOWLEDGE: u32 = 1;
    pub const DRIVER: u32 = 2;
    pub const DRIVER_OK: u32 = 4;
    pub const FEATURES_OK: u32 = 8;
}

/// Keeps the compiler from moving memory accesses across this point or assuming memory
/// unchanged (the device reads and writes the rings behind its back). x86 keeps stores in
/// order and loads in order, which is all the ring protocol needs from the CPU.
pub fn barrier() {
    // SAFETY: an empty asm block has no effect; without `nomem` the compiler must assume it
    // reads and writes any memory, which is the point.
    unsafe { core::arch::asm!("", options(nostack, preserves_flags)) };
}

/// A virtio-mmio register window.
#[derive(Clone, Copy)]
pub struct Mmio {
    base: u64,
}

impl Mmio {
    /// The device at `base` (from `virtio_mmio.device=`).
    pub fn new(base: u64) -> Self {
        Self { base }
    }

    /// Reads a 32-bit register (one MMIO exit).
    pub fn read32(&self, offset: u64) -> u32 {
        // SAFETY: base comes from the VMM's command line and is identity-mapped MMIO; a
        // volatile 4-byte access is what the transport expects.
        unsafe { read_volatile((self.base + offset) as *const u32) }
    }

    /// Writes a 32-bit register.
    pub fn write32(&self, offset: u64, value: u32) {
        // SAFETY: as for read32.
        unsafe { write_volatile((self.base + offset) as *mut u32, value) }
    }

    /// Reads one byte of the device config space.
    pub fn config8(&self, offset: u64) -> u8 {
        // SAFETY: as for read32; config space allows byte access.
        unsafe { read_volatile((self.base + reg::CONFIG + offset) as *const u8) }
    }
}

/// Entries per queue (a power of two, at most the device's QueueNumMax). 64 RX buffers of
/// 1536 bytes make 96 KiB: room for a 64 KiB GSO frame merged across buffers.
pub const QUEUE_SIZE: usize = 64;

/// Descriptor flag: the device writes this buffer.
pub const DESC_F_WRITE: u16 = 2;
/// Avail flag: do not interrupt me (we poll; a bare-metal guest under PVM gets no interrupts).
const AVAIL_F_NO_INTERRUPT: u16 = 1;

#[repr(C)]
struct Desc {
    addr: u64,
    len: u32,
    flags: u16,
    next: u16,
}

#[repr(C)]
struct Avail {
    flags: u16,
    idx: u16,
    ring: [u16; QUEUE_SIZE],
    used_event: u16,
}

#[repr(C)]
struct UsedElem {
    id: u32,
    len: u32,
}

#[repr(C)]
struct Used {
    flags: u16,
    idx: u16,
    ring: [UsedElem; QUEUE_SIZE],
    avail_event: u16,
}

/// The memory of one split virtqueue: descriptor table, driver (avail) and device (used) rings.
#[repr(C, align(4096))]
pub struct QueueMem {
    desc: [Desc; QUEUE_SIZE],
    avail: Avail,
    used: Used,
}

/// A split virtqueue, driver side.
pub struct Virtq {
    mem: *mut QueueMem,
    index: u16,
    mmio: Mmio,
    last_used: u16,
}

impl Virtq {
    /// Sets up queue `index` of the device in `mem` (QueueSel, QueueNum, ring addresses,
    /// QueueReady); interrupts suppressed.
    ///
    /// # Safety
    /// `mem` must point to a zeroed QueueMem that nothing else uses, for the program's life.
    pub unsafe fn new(mmio: Mmio, index: u16, mem: *mut QueueMem) -> Result<Self, &'static str> {
        mmio.write32(reg::QUEUE_SEL, u32::from(index));
        let max = mmio.read32(reg::QUEUE_NUM_MAX);
        if max == 0 {
            return Err("the device has no such queue");
        }
        if (max as usize) < QUEUE_SIZE {
            return Err("the device's queues are smaller than netprobe's");
        }
        mmio.write32(reg::QUEUE_NUM, QUEUE_SIZE as u32);
        let addr = |p: u64| (p as u32, (p >> 32) as u32);
        // SAFETY: the caller guarantees `mem` is valid; we only take field addresses.
        let (desc, avail, used) = unsafe {
            (
                addr(addr_of!((*mem).desc) as u64),
                addr(addr_of!((*mem).avail) as u64),
                addr(addr_of!((*mem).used) as u64),
            )
        };
        mmio.write32(reg::QUEUE_DESC_LOW, desc.0);
        mmio.write32(reg::QUEUE_DESC_HIGH, desc.1);
        mmio.write32(reg::QUEUE_DRIVER_LOW, avail.0);
        mmio.write32(reg::QUEUE_DRIVER_HIGH, avail.1);
        mmio.write32(reg::QUEUE_DEVICE_LOW, used.0);
        mmio.write32(reg::QUEUE_DEVICE_HIGH, used.1);
        // SAFETY: as above; the device does not touch the rings before QueueReady.
        unsafe { write_volatile(addr_of_mut!((*mem).avail.flags), AVAIL_F_NO_INTERRUPT) };
        mmio.write32(reg::QUEUE_READY, 1);
        Ok(Self {
            mem,
            index,
            mmio,
            last_used: 0,
        })
    }

    /// Points descriptor `id` at `len` bytes at `addr`.
    pub fn set_desc(&mut self, id: u16, addr: u64, len: u32, flags: u16) {
        let d = Desc {
            addr,
            len,
            flags,
            next: 0,
        };
        // SAFETY: id < QUEUE_SIZE (callers use ring slots), `mem` is valid (see `new`).
        unsafe {
            write_volatile(
                addr_of_mut!((*self.mem).desc[usize::from(id) % QUEUE_SIZE]),
                d,
            )
        };
    }

    /// Makes descriptor `id` available to the device (without notifying).
    pub fn push_avail(&mut self, id: u16) {
        // SAFETY: `mem` is valid; slot index reduced modulo the queue size.
        unsafe {
            let idx = read_volatile(addr_of!((*self.mem).avail.idx));
            write_volatile(
                addr_of_mut!((*self.mem).avail.ring[usize::from(idx) % QUEUE_SIZE]),
                id,
            );
            barrier(); // descriptor and ring entry before the index
            write_volatile(addr_of_mut!((*self.mem).avail.idx), idx.wrapping_add(1));
        }
    }

    /// QueueNotify: "look at this queue" (a KVM ioeventfd, no exit to the VMM).
    pub fn notify(&self) {
        barrier();
        self.mmio.write32(reg::QUEUE_NOTIFY, u32::from(self.index));
    }

    /// The next used entry (descriptor id, bytes written), if the device returned one.
    pub fn pop_used(&mut self) -> Option<(u16, u32)> {
        // SAFETY: `mem` is valid; the device writes the used ring, hence volatile reads.
        unsafe {
            let idx = read_volatile(addr_of!((*self.mem).used.idx));
            if idx == self.last_used {
                return None;
            }
            barrier(); // the index before the entry it covers
            let elem = read_volatile(addr_of!(
                (*self.mem).used.ring[usize::from(self.last_used) % QUEUE_SIZE]
            ));
            self.last_used = self.last_used.wrapping_add(1);
            barrier(); // and the entry before the buffer contents
            Some((elem.id as u16, elem.len))
        }
    }
}
