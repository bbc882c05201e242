//! What a virtio transport (our virtio-mmio in the VMM) needs from a device, and the interrupt
//! the device raises through it.

use std::sync::atomic::{AtomicU32, Ordering};

use virtio_bindings::virtio_mmio::{VIRTIO_MMIO_INT_CONFIG, VIRTIO_MMIO_INT_VRING};
use virtio_queue::Queue;
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

/// Why a device could not start.
#[derive(Debug, thiserror::Error)]
pub enum ActivateError {
    /// The driver did not set up a queue the device needs, or set it up outside guest memory.
    #[error("queue {0} is not ready or its rings lie outside guest memory")]
    InvalidQueue(usize),
    /// The transport handed over another number of queues than the device has.
    #[error("the device has {expected} queues, the transport handed over {got}")]
    QueueCount {
        /// Queues the device has.
        expected: usize,
        /// Queues it got.
        got: usize,
    },
    /// The driver did not ack a feature the device requires.
    #[error("the driver did not accept VIRTIO_F_VERSION_1 (legacy devices are not supported)")]
    NoVersion1,
    /// The backend refused the offloads the driver accepted.
    #[error("the tap refused the offloads the driver accepted (TUNSETOFFLOAD)")]
    Offloads(#[source] std::io::Error),
    /// The device thread could not be told.
    #[error("cannot signal the device thread")]
    Signal(#[source] std::io::Error),
}

/// A virtio device behind a transport.
pub trait VirtioDevice: Send {
    /// Device ID (virtio 1.2 §5, e.g. VIRTIO_ID_NET).
    fn device_type(&self) -> u32;
    /// Maximum size of each queue; the number of entries is the number of queues.
    fn queue_max_sizes(&self) -> &[u16];
    /// Features the device offers.
    fn features(&self) -> u64;
    /// Records the features the driver accepted (masked to what was offered).
    fn ack_features(&mut self, features: u64);
    /// Whether the accepted feature set can work (checked at FEATURES_OK).
    fn features_ok(&self) -> bool;
    /// Reads the device-specific config space at `offset`.
    fn read_config(&self, offset: u64, data: &mut [u8]);
    /// Writes the device-specific config space at `offset`.
    fn write_config(&mut self, offset: u64, data: &[u8]);
    /// Starts the device with the queues the driver set up (at DRIVER_OK).
    fn activate(&mut self, mem: GuestMemoryMmap, queues: Vec<Queue>) -> Result<(), ActivateError>;
    /// Returns the device to its initial state (status 0): queues gone, backend idle.
    fn reset(&mut self);
    /// Whether the device hit an error only a reset clears (DEVICE_NEEDS_RESET).
    fn needs_reset(&self) -> bool;
    /// The device's interrupt.
    fn interrupt(&self) -> &Interrupt;
    /// One eventfd per queue, signalled when the driver notifies that queue.
    fn queue_events(&self) -> &[EventFd];
}

/// The device's interrupt line: the InterruptStatus register bits and the eventfd that KVM
/// turns into a guest interrupt (irqfd).
#[derive(Debug)]
pub struct Interrupt {
    status: AtomicU32,
    irqfd: EventFd,
}

impl Interrupt {
    /// Creates the interrupt with a fresh eventfd.
    pub fn new() -> std::io::Result<Self> {
        Ok(Self {
            status: AtomicU32::new(0),
            irqfd: EventFd::new(EFD_NONBLOCK)?,
        })
    }

    /// The eventfd to register with KVM as an irqfd.
    pub fn irqfd(&self) -> &EventFd {
        &self.irqfd
    }

    /// "Used buffers were added to a queue."
    pub fn signal_used_queue(&self) {
        self.signal(VIRTIO_MMIO_INT_VRING);
    }

    /// "The config space (or device status) changed."
    pub fn signal_config_change(&self) {
        self.signal(VIRTIO_MMIO_INT_CONFIG);
    }

    fn signal(&self, bit: u32) {
        self.status.fetch_or(bit, Ordering::SeqCst);
        if let Err(e) = self.irqfd.write(1) {
            log::warn!("cannot raise the device interrupt: {e}");
        }
    }

    /// The InterruptStatus register.
    pub fn status(&self) -> u32 {
        self.status.load(Ordering::SeqCst)
    }

    /// InterruptACK: the driver handled these bits.
    pub fn ack(&self, bits: u32) {
        self.status.fetch_and(!bits, Ordering::SeqCst);
    }

    /// Clears all pending bits (device reset).
    pub fn clear(&self) {
        self.status.store(0, Ordering::SeqCst);
    }
}
