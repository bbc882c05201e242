//! What the VMM prints for each NIC at exit: one line with its frames, bytes, drops,
//! notifications, interrupts, host link changes and negotiated features (the byte-symmetry table beside it is
//! [`super::symmetry`]).

use std::fmt;

use vmm_virtio_net::{features, CountersSnapshot};

/// The line printed for a NIC at exit.
pub struct NicReport {
    /// NIC number.
    pub index: usize,
    /// Host tap.
    pub tap: String,
    /// Its counters.
    pub counters: CountersSnapshot,
}

impl fmt::Display for NicReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.counters;
        write!(
            f,
            "net{}: tap={} guest_tx_frames={} guest_tx_bytes={} guest_rx_frames={} guest_rx_bytes={} dropped={} \
             rx_merged={} kicks_rx={} kicks_tx={} interrupts={} link_changes={} features={}",
            self.index,
            self.tap,
            c.tx_frames,
            c.tx_bytes,
            c.rx_frames,
            c.rx_bytes,
            c.dropped(),
            c.rx_merged_frames,
            c.rx_notifications,
            c.tx_notifications,
            c.interrupts,
            c.link_changes,
            features::names(c.features)
        )
    }
}
