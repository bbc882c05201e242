//! What the device counts. Bytes are Ethernet bytes, without the 12-byte virtio-net header, so
//! they compare 1:1 with the tap's `/sys/class/net/<tap>/statistics`: guest TX = tap rx_bytes,
//! guest RX = tap tx_bytes.

use std::sync::atomic::{AtomicU64, Ordering};

/// Live counters, shared between the device thread and whoever reports them.
#[derive(Debug, Default)]
pub struct NetCounters {
    /// Frames the guest sent that reached the tap.
    pub tx_frames: AtomicU64,
    /// Their Ethernet bytes.
    pub tx_bytes: AtomicU64,
    /// Frames delivered into the guest's RX buffers.
    pub rx_frames: AtomicU64,
    /// Their Ethernet bytes.
    pub rx_bytes: AtomicU64,
    /// TX chains dropped as malformed (write-only descriptor, outside guest memory, too short).
    pub tx_malformed: AtomicU64,
    /// TX frames the tap refused (EIO, EINVAL: link down, bad frame).
    pub tx_backend_errors: AtomicU64,
    /// RX chains returned unused as malformed (read-only descriptor, outside guest memory).
    pub rx_malformed: AtomicU64,
    /// RX chains too small for a full frame (returned unused).
    pub rx_too_small: AtomicU64,
    /// Frames lost reading the tap (other than "no frame waiting"), or cut short by it.
    pub rx_backend_errors: AtomicU64,
    /// Frames that filled more than one RX chain (VIRTIO_NET_F_MRG_RXBUF, num_buffers > 1).
    pub rx_merged_frames: AtomicU64,
    /// Queue notifications from the driver (QueueNotify writes), RX queue.
    pub rx_notifications: AtomicU64,
    /// Queue notifications from the driver, TX queue.
    pub tx_notifications: AtomicU64,
    /// Used-buffer interrupts raised (the rest were suppressed as the driver asked).
    pub interrupts: AtomicU64,
    /// The features the driver accepted at its last activation (kept across a reset).
    pub features: AtomicU64,
    /// 1 once the tap reported an error or hang-up (it was deleted under the VM).
    pub backend_lost: AtomicU64,
    /// Times the host link went down or came up (reported to the guest in config space).
    pub link_changes: AtomicU64,
}

/// Frames and bytes moved during one pass, added to the shared counters at its end.
#[derive(Debug, Default)]
pub(crate) struct Moved {
    pub(crate) frames: u64,
    pub(crate) bytes: u64,
}

impl Moved {
    /// Adds the pass's figures to `frames` and `bytes`.
    pub(crate) fn add_to(&self, frames: &AtomicU64, bytes: &AtomicU64) {
        if self.frames > 0 {
            NetCounters::add(frames, self.frames);
            NetCounters::add(bytes, self.bytes);
        }
    }
}

/// A copy of the counters at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CountersSnapshot {
    /// See [`NetCounters::tx_frames`].
    pub tx_frames: u64,
    /// See [`NetCounters::tx_bytes`].
    pub tx_bytes: u64,
    /// See [`NetCounters::rx_frames`].
    pub rx_frames: u64,
    /// See [`NetCounters::rx_bytes`].
    pub rx_bytes: u64,
    /// See [`NetCounters::tx_malformed`].
    pub tx_malformed: u64,
    /// See [`NetCounters::tx_backend_errors`].
    pub tx_backend_errors: u64,
    /// See [`NetCounters::rx_malformed`].
    pub rx_malformed: u64,
    /// See [`NetCounters::rx_too_small`].
    pub rx_too_small: u64,
    /// See [`NetCounters::rx_backend_errors`].
    pub rx_backend_errors: u64,
    /// See [`NetCounters::rx_merged_frames`].
    pub rx_merged_frames: u64,
    /// See [`NetCounters::rx_notifications`].
    pub rx_notifications: u64,
    /// See [`NetCounters::tx_notifications`].
    pub tx_notifications: u64,
    /// See [`NetCounters::interrupts`].
    pub interrupts: u64,
    /// See [`NetCounters::features`].
    pub features: u64,
    /// See [`NetCounters::backend_lost`].
    pub backend_lost: u64,
    /// See [`NetCounters::link_changes`].
    pub link_changes: u64,
}

impl CountersSnapshot {
    /// Every frame or chain dropped, whatever the reason.
    pub fn dropped(&self) -> u64 {
        self.tx_malformed
            + self.tx_backend_errors
            + self.rx_malformed
            + self.rx_too_small
            + self.rx_backend_errors
    }
}

impl NetCounters {
    /// Adds one to `counter`.
    pub fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Adds `n` to `counter`.
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Records the features of an activation.
    pub fn set_features(&self, features: u64) {
        self.features.store(features, Ordering::Relaxed);
    }

    /// Reads all counters.
    pub fn snapshot(&self) -> CountersSnapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        CountersSnapshot {
            tx_frames: get(&self.tx_frames),
            tx_bytes: get(&self.tx_bytes),
            rx_frames: get(&self.rx_frames),
            rx_bytes: get(&self.rx_bytes),
            tx_malformed: get(&self.tx_malformed),
            tx_backend_errors: get(&self.tx_backend_errors),
            rx_malformed: get(&self.rx_malformed),
            rx_too_small: get(&self.rx_too_small),
            rx_backend_errors: get(&self.rx_backend_errors),
            rx_merged_frames: get(&self.rx_merged_frames),
            rx_notifications: get(&self.rx_notifications),
            tx_notifications: get(&self.tx_notifications),
            interrupts: get(&self.interrupts),
            features: get(&self.features),
            backend_lost: get(&self.backend_lost),
            link_changes: get(&self.link_changes),
        }
    }
}
