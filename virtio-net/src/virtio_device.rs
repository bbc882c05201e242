//! What a virtio transport (our virtio-mmio in the VMM) needs from a device, and how the device
//! interrupts the driver through it.

use std::sync::Arc;

use virtio_queue::Queue;
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::EventFd;

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
    /// Starts the device with the queues the driver set up (at DRIVER_OK); it interrupts the
    /// driver through `interrupt` until the next reset.
    fn activate(
        &mut self,
        mem: GuestMemoryMmap,
        queues: Vec<Queue>,
        interrupt: Arc<dyn InterruptSignal>,
    ) -> Result<(), ActivateError>;
    /// Returns the device to its initial state (status 0): queues gone, backend idle.
    fn reset(&mut self);
    /// Whether the device hit an error only a reset clears (DEVICE_NEEDS_RESET).
    fn needs_reset(&self) -> bool;
    /// One eventfd per queue, signalled when the driver notifies that queue.
    fn queue_events(&self) -> &[EventFd];
}

/// How a device tells its driver that something happened. The transport implements it — it
/// owns the InterruptStatus register and the interrupt line (an irqfd) — and hands it to the
/// device when the driver starts it, so the driver reading or acknowledging InterruptStatus
/// never waits for the device (whose thread may be busy with a pass).
pub trait InterruptSignal: Send + Sync {
    /// "Used buffers were added to a queue."
    fn signal_used_queue(&self);
    /// "The configuration space (or the device status) changed."
    fn signal_config_change(&self);
}
