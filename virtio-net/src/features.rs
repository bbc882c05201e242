//! Feature bits: what the device offers, which combinations a driver may accept, and what the
//! accepted offloads mean for the tap.
//!
//! Offloads come in two directions (virtio 1.2 §5.1.3, §5.1.6.2 and §5.1.6.4):
//! - **host** offloads (`CSUM`, `HOST_TSO4`, ...): the *guest* may send frames with a partial
//!   checksum (`NEEDS_CSUM`) and large TCP segments (`gso_type`); the host kernel finishes
//!   them. A tap takes such frames whenever it has a vnet header, so these are always offered.
//! - **guest** offloads (`GUEST_CSUM`, `GUEST_TSO4`, ...): the *host* may hand the guest such
//!   frames. The tap only does so after TUNSETOFFLOAD, so each is offered only if the tap
//!   accepted the matching TUN_F_* flag, and the tap is set from what the driver *accepted*
//!   (a guest that did not accept GUEST_CSUM must never get a NEEDS_CSUM frame: Firecracker
//!   #4659, #4725).

use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_bindings::virtio_net::{
    VIRTIO_NET_F_CSUM, VIRTIO_NET_F_GUEST_CSUM, VIRTIO_NET_F_GUEST_ECN, VIRTIO_NET_F_GUEST_TSO4,
    VIRTIO_NET_F_GUEST_TSO6, VIRTIO_NET_F_GUEST_UFO, VIRTIO_NET_F_GUEST_USO4,
    VIRTIO_NET_F_GUEST_USO6, VIRTIO_NET_F_HOST_ECN, VIRTIO_NET_F_HOST_TSO4, VIRTIO_NET_F_HOST_TSO6,
    VIRTIO_NET_F_HOST_USO, VIRTIO_NET_F_MAC, VIRTIO_NET_F_MRG_RXBUF, VIRTIO_NET_F_MTU,
    VIRTIO_NET_F_STATUS,
};
use virtio_bindings::virtio_ring::VIRTIO_RING_F_EVENT_IDX;

const fn bit(feature: u32) -> u64 {
    1 << feature
}

/// Always offered: version 1 (no legacy layout), MAC, link status and MTU in config space,
/// merged RX buffers, and event-index notification suppression.
pub const BASE_FEATURES: u64 = bit(VIRTIO_F_VERSION_1)
    | bit(VIRTIO_NET_F_MAC)
    | bit(VIRTIO_NET_F_STATUS)
    | bit(VIRTIO_NET_F_MTU)
    | bit(VIRTIO_NET_F_MRG_RXBUF)
    | bit(VIRTIO_RING_F_EVENT_IDX);

/// Host offloads: a tap with a vnet header takes partial checksums and TSO frames as they are.
pub const HOST_OFFLOADS: u64 = bit(VIRTIO_NET_F_CSUM)
    | bit(VIRTIO_NET_F_HOST_TSO4)
    | bit(VIRTIO_NET_F_HOST_TSO6)
    | bit(VIRTIO_NET_F_HOST_ECN);

/// Each guest offload and the tap flag (TUNSETOFFLOAD) that lets the host send it.
pub const GUEST_OFFLOADS: [(u32, u32); 7] = [
    (VIRTIO_NET_F_GUEST_CSUM, libc::TUN_F_CSUM),
    (VIRTIO_NET_F_GUEST_TSO4, libc::TUN_F_TSO4),
    (VIRTIO_NET_F_GUEST_TSO6, libc::TUN_F_TSO6),
    (VIRTIO_NET_F_GUEST_ECN, libc::TUN_F_TSO_ECN),
    (VIRTIO_NET_F_GUEST_UFO, libc::TUN_F_UFO),
    (VIRTIO_NET_F_GUEST_USO4, libc::TUN_F_USO4),
    (VIRTIO_NET_F_GUEST_USO6, libc::TUN_F_USO6),
];

/// Whether a TX frame's header (`flags`, `gso_type`) asks only for work the driver negotiated
/// (virtio 1.2 §5.1.6.2.1: no NEEDS_CSUM without CSUM, no `gso_type` without the matching
/// HOST_* feature, ECN only with HOST_ECN). The tap would do whatever the header says, for a
/// driver that never accepted it.
pub fn tx_header_allowed(acked: u64, flags: u8, gso_type: u8) -> bool {
    use virtio_bindings::virtio_net::{
        VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_ECN, VIRTIO_NET_HDR_GSO_NONE,
        VIRTIO_NET_HDR_GSO_TCPV4, VIRTIO_NET_HDR_GSO_TCPV6,
    };
    let csum_ok = flags & VIRTIO_NET_HDR_F_NEEDS_CSUM as u8 == 0 || has(acked, VIRTIO_NET_F_CSUM);
    let ecn_ok = gso_type & VIRTIO_NET_HDR_GSO_ECN as u8 == 0 || has(acked, VIRTIO_NET_F_HOST_ECN);
    let gso_ok = match u32::from(gso_type & !(VIRTIO_NET_HDR_GSO_ECN as u8)) {
        VIRTIO_NET_HDR_GSO_NONE => true,
        VIRTIO_NET_HDR_GSO_TCPV4 => has(acked, VIRTIO_NET_F_HOST_TSO4),
        VIRTIO_NET_HDR_GSO_TCPV6 => has(acked, VIRTIO_NET_F_HOST_TSO6),
        // UDP fragmentation and USO are not offered.
        _ => false,
    };
    csum_ok && ecn_ok && gso_ok
}

/// Guest offloads that deliver frames larger than the MTU (the RX buffers must hold 64 KiB).
pub const GUEST_GSO: u64 = bit(VIRTIO_NET_F_GUEST_TSO4)
    | bit(VIRTIO_NET_F_GUEST_TSO6)
    | bit(VIRTIO_NET_F_GUEST_UFO)
    | bit(VIRTIO_NET_F_GUEST_USO4)
    | bit(VIRTIO_NET_F_GUEST_USO6);

/// The features to offer for a tap that accepted `tap_offloads` (TUN_F_*); `offload = false`
/// (`--net ...,offload=off`) offers no checksum or segmentation offload at all.
pub fn offered(tap_offloads: u32, offload: bool) -> u64 {
    if !offload {
        return BASE_FEATURES;
    }
    let guest = GUEST_OFFLOADS
        .iter()
        .filter(|(_, tun)| tap_offloads & tun != 0)
        .fold(0, |acc, (feature, _)| acc | bit(*feature));
    // Without checksum offload the tap can do none of the others.
    let guest = if guest & bit(VIRTIO_NET_F_GUEST_CSUM) == 0 {
        0
    } else {
        guest
    };
    // The kernel that can send USO can take it too.
    let host_uso = if tap_offloads & libc::TUN_F_USO4 != 0 {
        bit(VIRTIO_NET_F_HOST_USO)
    } else {
        0
    };
    BASE_FEATURES | HOST_OFFLOADS | host_uso | guest
}

/// Whether `acked` respects the feature dependencies of virtio 1.2 §5.1.3.1 (a driver MUST
/// NOT accept a feature without the one it depends on); the device refuses FEATURES_OK
/// otherwise.
pub fn dependencies_ok(acked: u64) -> bool {
    let has = |f: u32| acked & bit(f) != 0;
    let needs = |f: u32, on: &[u32]| !has(f) || on.iter().any(|&d| has(d));
    needs(VIRTIO_NET_F_GUEST_TSO4, &[VIRTIO_NET_F_GUEST_CSUM])
        && needs(VIRTIO_NET_F_GUEST_TSO6, &[VIRTIO_NET_F_GUEST_CSUM])
        && needs(VIRTIO_NET_F_GUEST_UFO, &[VIRTIO_NET_F_GUEST_CSUM])
        && needs(VIRTIO_NET_F_GUEST_USO4, &[VIRTIO_NET_F_GUEST_CSUM])
        && needs(VIRTIO_NET_F_GUEST_USO6, &[VIRTIO_NET_F_GUEST_CSUM])
        && needs(
            VIRTIO_NET_F_GUEST_ECN,
            &[VIRTIO_NET_F_GUEST_TSO4, VIRTIO_NET_F_GUEST_TSO6],
        )
        && needs(VIRTIO_NET_F_HOST_TSO4, &[VIRTIO_NET_F_CSUM])
        && needs(VIRTIO_NET_F_HOST_TSO6, &[VIRTIO_NET_F_CSUM])
        && needs(VIRTIO_NET_F_HOST_USO, &[VIRTIO_NET_F_CSUM])
        && needs(
            VIRTIO_NET_F_HOST_ECN,
            &[VIRTIO_NET_F_HOST_TSO4, VIRTIO_NET_F_HOST_TSO6],
        )
}

/// The TUN_F_* flags to set on the tap for the driver's accepted features: one per accepted
/// guest offload. The tap takes USO4 and USO6 only together, so one alone sets neither.
pub fn tap_offloads(acked: u64) -> u32 {
    let flags = GUEST_OFFLOADS
        .iter()
        .filter(|(feature, _)| acked & bit(*feature) != 0)
        .fold(0, |acc, (_, tun)| acc | tun);
    let uso = libc::TUN_F_USO4 | libc::TUN_F_USO6;
    if flags & uso == uso {
        flags
    } else {
        flags & !uso
    }
}

/// Short names for the exit line and logs, in bit order.
const NAMES: [(u32, &str); 18] = [
    (VIRTIO_NET_F_CSUM, "csum"),
    (VIRTIO_NET_F_GUEST_CSUM, "guest_csum"),
    (VIRTIO_NET_F_MTU, "mtu"),
    (VIRTIO_NET_F_MAC, "mac"),
    (VIRTIO_NET_F_GUEST_TSO4, "guest_tso4"),
    (VIRTIO_NET_F_GUEST_TSO6, "guest_tso6"),
    (VIRTIO_NET_F_GUEST_ECN, "guest_ecn"),
    (VIRTIO_NET_F_GUEST_UFO, "guest_ufo"),
    (VIRTIO_NET_F_HOST_TSO4, "tso4"),
    (VIRTIO_NET_F_HOST_TSO6, "tso6"),
    (VIRTIO_NET_F_HOST_ECN, "ecn"),
    (VIRTIO_NET_F_MRG_RXBUF, "mrg_rxbuf"),
    (VIRTIO_NET_F_STATUS, "status"),
    (VIRTIO_RING_F_EVENT_IDX, "event_idx"),
    (VIRTIO_F_VERSION_1, "version_1"),
    (VIRTIO_NET_F_GUEST_USO4, "guest_uso4"),
    (VIRTIO_NET_F_GUEST_USO6, "guest_uso6"),
    (VIRTIO_NET_F_HOST_USO, "uso"),
];

/// `features` as `csum,guest_csum,...` (`none` for 0).
pub fn names(features: u64) -> String {
    let out: Vec<&str> = NAMES
        .iter()
        .filter(|(f, _)| features & bit(*f) != 0)
        .map(|(_, name)| *name)
        .collect();
    if out.is_empty() {
        "none".to_owned()
    } else {
        out.join(",")
    }
}

/// Whether `features` has `feature`.
pub(crate) fn has(features: u64, feature: u32) -> bool {
    features & bit(feature) != 0
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL_TAP: u32 = crate::backend::ALL_TUN_OFFLOADS;

    #[test]
    fn test_offered_follows_what_the_tap_accepted() {
        let all = offered(ALL_TAP, true);
        assert!(has(all, VIRTIO_NET_F_GUEST_TSO6) && has(all, VIRTIO_NET_F_HOST_USO));
        let csum_only = offered(libc::TUN_F_CSUM, true);
        assert!(has(csum_only, VIRTIO_NET_F_GUEST_CSUM));
        assert!(!has(csum_only, VIRTIO_NET_F_GUEST_TSO4));
        assert!(
            has(csum_only, VIRTIO_NET_F_HOST_TSO4),
            "host TSO needs nothing of the tap"
        );
        // TSO without checksum offload is not something a tap can do.
        let no_csum = offered(libc::TUN_F_TSO4, true);
        assert_eq!(no_csum & GUEST_GSO, 0);
        assert!(!has(no_csum, VIRTIO_NET_F_GUEST_CSUM));
        assert_eq!(offered(ALL_TAP, false), BASE_FEATURES, "offload=off");
    }

    #[test]
    fn test_dependencies_refuse_tso_without_csum_and_ecn_without_tso() {
        assert!(dependencies_ok(offered(ALL_TAP, true)));
        assert!(dependencies_ok(BASE_FEATURES));
        assert!(!dependencies_ok(bit(VIRTIO_NET_F_GUEST_TSO4)));
        assert!(!dependencies_ok(bit(VIRTIO_NET_F_HOST_TSO6)));
        assert!(!dependencies_ok(
            bit(VIRTIO_NET_F_CSUM) | bit(VIRTIO_NET_F_HOST_ECN)
        ));
        assert!(dependencies_ok(
            bit(VIRTIO_NET_F_GUEST_CSUM)
                | bit(VIRTIO_NET_F_GUEST_TSO4)
                | bit(VIRTIO_NET_F_GUEST_ECN)
        ));
    }

    #[test]
    fn test_tap_flags_come_from_accepted_guest_offloads_only() {
        assert_eq!(tap_offloads(offered(ALL_TAP, true)), ALL_TAP);
        assert_eq!(
            tap_offloads(BASE_FEATURES | HOST_OFFLOADS),
            0,
            "host offloads set nothing"
        );
        assert_eq!(
            tap_offloads(bit(VIRTIO_NET_F_GUEST_CSUM) | bit(VIRTIO_NET_F_GUEST_TSO4)),
            libc::TUN_F_CSUM | libc::TUN_F_TSO4
        );
        assert_eq!(
            tap_offloads(bit(VIRTIO_NET_F_GUEST_CSUM) | bit(VIRTIO_NET_F_GUEST_USO4)),
            libc::TUN_F_CSUM,
            "USO4 without USO6 is refused by tun: set neither"
        );
    }

    #[test]
    fn test_names_in_bit_order() {
        assert_eq!(names(0), "none");
        assert_eq!(
            names(
                bit(VIRTIO_NET_F_CSUM) | bit(VIRTIO_NET_F_MRG_RXBUF) | bit(VIRTIO_RING_F_EVENT_IDX)
            ),
            "csum,mrg_rxbuf,event_idx"
        );
    }
}
