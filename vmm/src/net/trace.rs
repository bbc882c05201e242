//! `--trace-net`: one line per frame and direction, through `log` under the target
//! `vmm::net::trace` (filter it with `RUST_LOG=vmm::net::trace=info`). A line shows where the
//! frame was in the rings, the virtio-net header in front of it, and the frame decoded:
//!
//! ```text
//! net0 TX q1 head=0 descs=1 [110] hdr{flags=0 gso=none hdr_len=0 gso_size=0 csum_start=0 csum_offset=0 num_buffers=0} 52:54:00:ec:88:38 > ff:ff:ff:ff:ff:ff ARP who-has 192.0.2.1 tell 192.0.2.2, 42 bytes
//! net0 RX q0 head=1 descs=1 [1536] hdr{... num_buffers=1} 32:63:80:01:ee:cf > 52:54:00:ec:88:38 IPv4 192.0.2.1 > 192.0.2.2 ICMP echo reply id=28272 seq=1, 98 bytes
//! ```

use std::fmt::Write;

use etherparse::{
    ArpOperation, Icmpv4Type, Icmpv6Type, LinkSlice, NetSlice, SlicedPacket, TransportSlice,
};
use virtio_bindings::virtio_net::{
    VIRTIO_NET_HDR_GSO_ECN, VIRTIO_NET_HDR_GSO_NONE, VIRTIO_NET_HDR_GSO_TCPV4,
    VIRTIO_NET_HDR_GSO_TCPV6, VIRTIO_NET_HDR_GSO_UDP, VIRTIO_NET_HDR_GSO_UDP_L4,
};
use vmm_virtio_net::{Direction, FrameEvent, MacAddr, NetHeader};

/// The log target of trace lines.
pub const TARGET: &str = "vmm::net::trace";

fn mac(m: [u8; 6]) -> String {
    MacAddr(m).to_string()
}

fn gso_name(gso_type: u8) -> String {
    let base = match u32::from(gso_type) & !VIRTIO_NET_HDR_GSO_ECN {
        VIRTIO_NET_HDR_GSO_NONE => "none".to_owned(),
        VIRTIO_NET_HDR_GSO_TCPV4 => "tcpv4".to_owned(),
        VIRTIO_NET_HDR_GSO_UDP => "udp".to_owned(),
        VIRTIO_NET_HDR_GSO_TCPV6 => "tcpv6".to_owned(),
        VIRTIO_NET_HDR_GSO_UDP_L4 => "udp_l4".to_owned(),
        other => format!("{other}"),
    };
    if u32::from(gso_type) & VIRTIO_NET_HDR_GSO_ECN != 0 {
        format!("{base}+ecn")
    } else {
        base
    }
}

/// The header as `hdr{flags=.. gso=.. ...}`.
pub fn describe_header(h: &NetHeader) -> String {
    format!(
        "hdr{{flags={} gso={} hdr_len={} gso_size={} csum_start={} csum_offset={} num_buffers={}}}",
        h.flags,
        gso_name(h.gso_type),
        h.hdr_len,
        h.gso_size,
        h.csum_start,
        h.csum_offset,
        h.num_buffers
    )
}

/// A frame in words: MACs, then ARP / IPv4 / IPv6 with ICMP, UDP or TCP details, then length.
pub fn describe_frame(frame: &[u8]) -> String {
    let mut out = String::new();
    match SlicedPacket::from_ethernet(frame) {
        Ok(packet) => {
            if let Some(LinkSlice::Ethernet2(eth)) = &packet.link {
                let _ = write!(out, "{} > {} ", mac(eth.source()), mac(eth.destination()));
            }
            match &packet.net {
                Some(NetSlice::Arp(arp)) => match arp.to_packet().try_eth_ipv4() {
                    Ok(a) if a.operation == ArpOperation::REQUEST => {
                        let _ = write!(
                            out,
                            "ARP who-has {} tell {}",
                            std::net::Ipv4Addr::from(a.target_ipv4),
                            std::net::Ipv4Addr::from(a.sender_ipv4)
                        );
                    }
                    Ok(a) if a.operation == ArpOperation::REPLY => {
                        let _ = write!(
                            out,
                            "ARP {} is-at {}",
                            std::net::Ipv4Addr::from(a.sender_ipv4),
                            mac(a.sender_mac)
                        );
                    }
                    _ => out.push_str("ARP (not Ethernet/IPv4)"),
                },
                Some(NetSlice::Ipv4(ip)) => {
                    let h = ip.header();
                    let _ = write!(out, "IPv4 {} > {}", h.source_addr(), h.destination_addr());
                }
                Some(NetSlice::Ipv6(ip)) => {
                    let h = ip.header();
                    let _ = write!(out, "IPv6 {} > {}", h.source_addr(), h.destination_addr());
                }
                None => {
                    if let Some(LinkSlice::Ethernet2(eth)) = &packet.link {
                        let _ = write!(out, "ethertype {:#06x}", eth.ether_type().0);
                    }
                }
            }
            match &packet.transport {
                Some(TransportSlice::Icmpv4(icmp)) => {
                    let _ = match icmp.icmp_type() {
                        Icmpv4Type::EchoRequest(e) => {
                            write!(out, " ICMP echo request id={} seq={}", e.id, e.seq)
                        }
                        Icmpv4Type::EchoReply(e) => {
                            write!(out, " ICMP echo reply id={} seq={}", e.id, e.seq)
                        }
                        Icmpv4Type::DestinationUnreachable(_) => {
                            write!(out, " ICMP destination unreachable")
                        }
                        Icmpv4Type::TimeExceeded(_) => write!(out, " ICMP time exceeded"),
                        _ => write!(out, " ICMP type {}", icmp.type_u8()),
                    };
                }
                Some(TransportSlice::Icmpv6(icmp)) => {
                    let _ = match icmp.icmp_type() {
                        Icmpv6Type::EchoRequest(e) => {
                            write!(out, " ICMPv6 echo request id={} seq={}", e.id, e.seq)
                        }
                        Icmpv6Type::EchoReply(e) => {
                            write!(out, " ICMPv6 echo reply id={} seq={}", e.id, e.seq)
                        }
                        Icmpv6Type::NeighborSolicitation => {
                            write!(out, " ICMPv6 neighbor solicitation")
                        }
                        Icmpv6Type::NeighborAdvertisement(_) => {
                            write!(out, " ICMPv6 neighbor advertisement")
                        }
                        Icmpv6Type::RouterSolicitation => {
                            write!(out, " ICMPv6 router solicitation")
                        }
                        Icmpv6Type::RouterAdvertisement(_) => {
                            write!(out, " ICMPv6 router advertisement")
                        }
                        _ => write!(out, " ICMPv6 type {}", icmp.type_u8()),
                    };
                }
                Some(TransportSlice::Udp(udp)) => {
                    let _ = write!(
                        out,
                        " UDP {} > {} len={}",
                        udp.source_port(),
                        udp.destination_port(),
                        udp.length()
                    );
                }
                Some(TransportSlice::Tcp(tcp)) => {
                    let flags: String = [
                        (tcp.syn(), 'S'),
                        (tcp.fin(), 'F'),
                        (tcp.rst(), 'R'),
                        (tcp.psh(), 'P'),
                        (tcp.ack(), '.'),
                    ]
                    .iter()
                    .filter(|(set, _)| *set)
                    .map(|(_, c)| *c)
                    .collect();
                    let _ = write!(
                        out,
                        " TCP {} > {} [{flags}]",
                        tcp.source_port(),
                        tcp.destination_port()
                    );
                }
                Some(_) | None => {}
            }
        }
        Err(e) if frame.len() >= 14 => {
            let src: [u8; 6] = frame[6..12].try_into().unwrap_or_default();
            let dst: [u8; 6] = frame[0..6].try_into().unwrap_or_default();
            let _ = write!(out, "{} > {} undecoded ({e})", mac(src), mac(dst));
        }
        Err(_) => out.push_str("runt frame"),
    }
    let _ = write!(out, ", {} bytes", frame.len());
    out
}

/// The whole trace line for a frame of NIC `index`.
pub fn trace_line(index: usize, event: &FrameEvent<'_>) -> String {
    let dir = match event.direction {
        Direction::Tx => "TX",
        Direction::Rx => "RX",
    };
    let lens: Vec<String> = event.desc_lens.iter().map(u32::to_string).collect();
    // A frame merged across RX buffers names every chain it filled.
    let head = if event.heads.len() > 1 {
        let heads: Vec<String> = event.heads.iter().map(u16::to_string).collect();
        format!("heads={}", heads.join(","))
    } else {
        format!("head={}", event.head)
    };
    format!(
        "net{index} {dir} q{} {head} descs={} [{}] {} {}",
        event.queue,
        event.desc_lens.len(),
        lens.join(","),
        describe_header(&event.header),
        describe_frame(event.frame)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arp_request() -> Vec<u8> {
        let mut f = vec![0xff; 6];
        f.extend_from_slice(&[0x52, 0x54, 0, 0xec, 0x88, 0x38, 0x08, 0x06]);
        f.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
        f.extend_from_slice(&[0x52, 0x54, 0, 0xec, 0x88, 0x38, 192, 0, 2, 2]);
        f.extend_from_slice(&[0, 0, 0, 0, 0, 0, 192, 0, 2, 1]);
        f
    }

    #[test]
    fn test_arp_request_in_words() {
        assert_eq!(
            describe_frame(&arp_request()),
            "52:54:00:ec:88:38 > ff:ff:ff:ff:ff:ff ARP who-has 192.0.2.1 tell 192.0.2.2, 42 bytes"
        );
    }

    #[test]
    fn test_icmp_echo_and_udp_in_words() {
        use etherparse::PacketBuilder;
        let mut icmp = Vec::new();
        PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
            .ipv4([192, 0, 2, 2], [192, 0, 2, 1], 64)
            .icmpv4_echo_request(7, 3)
            .write(&mut icmp, &[0; 56])
            .unwrap();
        let text = describe_frame(&icmp);
        assert!(
            text.contains("IPv4 192.0.2.2 > 192.0.2.1 ICMP echo request id=7 seq=3, 98 bytes"),
            "{text}"
        );

        let mut udp = Vec::new();
        PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
            .ipv4([198, 51, 100, 2], [198, 51, 100, 1], 64)
            .udp(5000, 9)
            .write(&mut udp, &[1; 10])
            .unwrap();
        assert!(
            describe_frame(&udp).contains("UDP 5000 > 9 len=18"),
            "{}",
            describe_frame(&udp)
        );
    }

    #[test]
    fn test_odd_frames_do_not_panic() {
        assert_eq!(describe_frame(&[1, 2, 3]), "runt frame, 3 bytes");
        let mut f = vec![0u8; 14];
        f[12] = 0x88;
        f[13] = 0xb5;
        assert!(
            describe_frame(&f).contains("ethertype 0x88b5"),
            "{}",
            describe_frame(&f)
        );
        // IPv4 ethertype but garbage after it.
        let mut bad = vec![0u8; 20];
        bad[12] = 0x08;
        assert!(
            describe_frame(&bad).contains("undecoded"),
            "{}",
            describe_frame(&bad)
        );
    }

    #[test]
    fn test_header_line_names_gso_types() {
        let h = NetHeader {
            gso_type: 0x81,
            ..Default::default()
        };
        assert!(describe_header(&h).contains("gso=tcpv4+ecn"));
        assert!(describe_header(&NetHeader::default()).starts_with("hdr{flags=0 gso=none"));
    }
}
