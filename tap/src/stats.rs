//! An interface's traffic counters, as the kernel keeps them in
//! `/sys/class/net/<if>/statistics`: the one place both the symmetry table and `tapctl show`
//! read them from.

/// An interface's own counters (`/sys/class/net/<if>/statistics`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LinkStats {
    /// Bytes the host received on the interface.
    pub rx_bytes: u64,
    /// Bytes the host sent out of it.
    pub tx_bytes: u64,
    /// Packets received.
    pub rx_packets: u64,
    /// Packets sent.
    pub tx_packets: u64,
    /// Packets the host dropped on the way out (e.g. nobody reading the tap).
    pub tx_dropped: u64,
}

impl LinkStats {
    /// Reads the statistics of `ifname` in our network namespace.
    pub fn read(ifname: &str) -> Option<Self> {
        let get = |name: &str| -> Option<u64> {
            std::fs::read_to_string(format!("/sys/class/net/{ifname}/statistics/{name}"))
                .ok()?
                .trim()
                .parse()
                .ok()
        };
        Some(LinkStats {
            rx_bytes: get("rx_bytes")?,
            tx_bytes: get("tx_bytes")?,
            rx_packets: get("rx_packets")?,
            tx_packets: get("tx_packets")?,
            tx_dropped: get("tx_dropped")?,
        })
    }

    /// What the counters grew by since `base` (wrapping, as the kernel's counters do).
    pub fn since(self, base: LinkStats) -> LinkStats {
        LinkStats {
            rx_bytes: self.rx_bytes.wrapping_sub(base.rx_bytes),
            tx_bytes: self.tx_bytes.wrapping_sub(base.tx_bytes),
            rx_packets: self.rx_packets.wrapping_sub(base.rx_packets),
            tx_packets: self.tx_packets.wrapping_sub(base.tx_packets),
            tx_dropped: self.tx_dropped.wrapping_sub(base.tx_dropped),
        }
    }
}
