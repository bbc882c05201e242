//! The symmetry table: for each NIC, what the virtio-net device counted next to what the host
//! kernel counted on the NIC's interface since the VM started. The guest's TX is the host
//! interface's RX, and the other way round — the seed articles' check, done for you. Printed at
//! exit and whenever the VMM gets SIGUSR1 (`kill -USR1 <pid>`).

use std::fmt::Write;
use std::sync::{Arc, Mutex};

use virtio_bindings::virtio_net::{
    VIRTIO_NET_F_GUEST_TSO4, VIRTIO_NET_F_GUEST_TSO6, VIRTIO_NET_F_HOST_TSO4,
    VIRTIO_NET_F_HOST_TSO6,
};
use vmm_tap::LinkStats;
use vmm_virtio_net::{CountersSnapshot, NetCounters};

/// What a NIC's host side is, for the table's explanations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HostKind {
    /// A tap: its counters see exactly the frames on the fd.
    Tap,
    /// A macvtap.
    Macvtap,
}

/// One NIC being watched.
pub struct Probe {
    /// NIC number.
    pub index: usize,
    /// Host interface name.
    pub ifname: String,
    /// Tap or macvtap.
    pub kind: HostKind,
    /// Its statistics when the VM started.
    pub baseline: Option<LinkStats>,
    /// The device's counters.
    pub counters: Arc<NetCounters>,
}

/// The NICs being watched, owned by whoever prints the table (main, the signal thread).
#[derive(Default)]
pub struct Probes {
    probes: Mutex<Vec<Probe>>,
}

impl Probes {
    /// Starts watching a NIC: records the interface's statistics now.
    pub fn register(&self, index: usize, ifname: &str, kind: HostKind, counters: Arc<NetCounters>) {
        let probe = Probe {
            index,
            ifname: ifname.to_owned(),
            kind,
            baseline: LinkStats::read(ifname),
            counters,
        };
        self.lock().push(probe);
    }

    /// The table for every registered NIC (empty without NICs).
    pub fn table(&self) -> String {
        let probes = self.lock();
        let mut out = String::new();
        for probe in probes.iter() {
            let now = LinkStats::read(&probe.ifname);
            out.push_str(&render(probe, probe.counters.snapshot(), now));
        }
        out
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Probe>> {
        self.probes.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// One NIC's part of the table, given the device counters and the interface's current stats.
pub fn render(probe: &Probe, guest: CountersSnapshot, now: Option<LinkStats>) -> String {
    let kind = match probe.kind {
        HostKind::Tap => "tap",
        HostKind::Macvtap => "macvtap",
    };
    let mut out = format!(
        "vmm: byte symmetry of net{} ({kind} {}): device counters vs the host interface's statistics since start\n",
        probe.index, probe.ifname
    );
    let (Some(base), Some(now)) = (probe.baseline, now) else {
        let _ = writeln!(
            out,
            "  (no statistics for {} in this network namespace)",
            probe.ifname
        );
        return out;
    };
    let host = now.since(base);
    let row = |out: &mut String,
               what: &str,
               frames: u64,
               bytes: u64,
               side: &str,
               packets: u64,
               hbytes: u64| {
        let verdict = if frames == packets && bytes == hbytes {
            "match"
        } else {
            "DIFFERS"
        };
        let _ = writeln!(
            out,
            "  {what:<20} guest {frames:>8} frames {bytes:>12} bytes   {side} {packets:>8} packets {hbytes:>12} bytes   {verdict}"
        );
    };
    row(
        &mut out,
        "guest TX -> host RX",
        guest.tx_frames,
        guest.tx_bytes,
        "host rx",
        host.rx_packets,
        host.rx_bytes,
    );
    row(
        &mut out,
        "host TX -> guest RX",
        guest.rx_frames,
        guest.rx_bytes,
        "host tx",
        host.tx_packets,
        host.tx_bytes,
    );
    for reason in reasons(&guest, &host) {
        let _ = writeln!(out, "  why: {reason}");
    }
    if guest.features & SEGMENTATION_OFFLOADS != 0 {
        let _ = writeln!(
            out,
            "  note: with TSO/GSO a frame can be one 64 KiB segment; the tap counts it once, with \
             its full length, as the device does. It becomes MTU-sized packets only where it \
             leaves the host (a NIC without TSO), and is counted there as several"
        );
    }
    if probe.kind == HostKind::Macvtap {
        let _ = writeln!(
            out,
            "  note: these are the macvtap's own counters (measured: they match like a tap's); its lower \
             device counts the same frames mixed with all its other traffic, so compare with the macvtap"
        );
    }
    out
}

/// Offloads that let one frame be larger than the MTU, either way.
const SEGMENTATION_OFFLOADS: u64 = (1 << VIRTIO_NET_F_HOST_TSO4)
    | (1 << VIRTIO_NET_F_HOST_TSO6)
    | (1 << VIRTIO_NET_F_GUEST_TSO4)
    | (1 << VIRTIO_NET_F_GUEST_TSO6);

/// Legitimate reasons for the two sides to differ, where they apply.
fn reasons(guest: &CountersSnapshot, host: &LinkStats) -> Vec<String> {
    let mut why = Vec::new();
    if host.tx_packets > guest.rx_frames {
        why.push(format!(
            "the host sent {} more frame(s) than the guest received: they wait in the tap's queue while the guest has no RX buffers, or arrived after the guest stopped reading",
            host.tx_packets - guest.rx_frames
        ));
    }
    if host.tx_dropped > 0 {
        why.push(format!(
            "the host dropped {} frame(s) on the way to the VMM (queue full, or no reader yet)",
            host.tx_dropped
        ));
    }
    if guest.dropped() > 0 {
        why.push(format!(
            "the device dropped {} chain(s)/frame(s) (malformed, too small, or refused by the tap): counted on one side only",
            guest.dropped()
        ));
    }
    why
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe(kind: HostKind) -> Probe {
        Probe {
            index: 0,
            ifname: "vnet0".into(),
            kind,
            baseline: Some(LinkStats {
                rx_bytes: 100,
                tx_bytes: 50,
                rx_packets: 1,
                tx_packets: 1,
                tx_dropped: 0,
            }),
            counters: Arc::new(NetCounters::default()),
        }
    }

    fn guest(tx_frames: u64, tx_bytes: u64, rx_frames: u64, rx_bytes: u64) -> CountersSnapshot {
        CountersSnapshot {
            tx_frames,
            tx_bytes,
            rx_frames,
            rx_bytes,
            ..Default::default()
        }
    }

    #[test]
    fn test_matching_counters_say_match_and_show_the_numbers() {
        let now = LinkStats {
            rx_bytes: 2102,
            tx_bytes: 2052,
            rx_packets: 22,
            tx_packets: 22,
            tx_dropped: 0,
        };
        let text = render(&probe(HostKind::Tap), guest(21, 2002, 21, 2002), Some(now));
        assert!(text.contains("byte symmetry of net0 (tap vnet0)"), "{text}");
        let lines: Vec<&str> = text.lines().collect();
        assert!(
            lines[1].contains("guest TX -> host RX")
                && lines[1].contains(" 2002 bytes")
                && lines[1].ends_with("match"),
            "{text}"
        );
        assert!(
            lines[2].contains("host TX -> guest RX") && lines[2].ends_with("match"),
            "{text}"
        );
        assert!(!text.contains("why:"), "{text}");
    }

    #[test]
    fn test_host_sent_more_is_explained() {
        let now = LinkStats {
            rx_bytes: 2102,
            tx_bytes: 2052 + 98,
            rx_packets: 22,
            tx_packets: 23,
            tx_dropped: 1,
        };
        let text = render(&probe(HostKind::Tap), guest(21, 2002, 21, 2002), Some(now));
        assert!(text.contains("DIFFERS"), "{text}");
        assert!(
            text.contains("why: the host sent 1 more frame(s)"),
            "{text}"
        );
        assert!(text.contains("why: the host dropped 1 frame(s)"), "{text}");
    }

    #[test]
    fn test_tso_gets_a_note_on_how_segments_are_counted_and_plain_does_not() {
        // The baseline of `probe` plus one 16 KiB TSO segment received.
        let now = LinkStats {
            rx_bytes: 100 + 16_438,
            tx_bytes: 50,
            rx_packets: 2,
            tx_packets: 1,
            tx_dropped: 0,
        };
        let mut tso = guest(1, 16_438, 0, 0);
        tso.features = 1 << VIRTIO_NET_F_HOST_TSO4;
        let text = render(&probe(HostKind::Tap), tso, Some(now));
        assert!(
            text.contains("match") && text.contains("the tap counts it once"),
            "{text}"
        );
        let plain = render(&probe(HostKind::Tap), guest(1, 16_438, 0, 0), Some(now));
        assert!(!plain.contains("note:"), "{plain}");
    }

    #[test]
    fn test_macvtap_gets_a_note_about_the_lower_device() {
        let now = LinkStats {
            rx_bytes: 100,
            tx_bytes: 50,
            rx_packets: 1,
            tx_packets: 1,
            tx_dropped: 0,
        };
        let text = render(&probe(HostKind::Macvtap), guest(0, 0, 0, 0), Some(now));
        assert!(
            text.contains("(macvtap vnet0)")
                && text.contains("note: these are the macvtap's own counters"),
            "{text}"
        );
    }

    #[test]
    fn test_missing_interface_is_said() {
        let text = render(&probe(HostKind::Tap), guest(0, 0, 0, 0), None);
        assert!(text.contains("no statistics for vnet0"), "{text}");
    }
}
