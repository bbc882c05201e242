//! Just enough Ethernet, ARP, IPv4, ICMP and UDP to ping and to generate test traffic.

/// EtherType of ARP.
pub const ETH_ARP: u16 = 0x0806;
/// EtherType of IPv4.
pub const ETH_IPV4: u16 = 0x0800;
/// EtherType the tests use for raw frames (IEEE 802 local experimental 1).
pub const ETH_TEST: u16 = 0x88b5;
/// Broadcast MAC.
pub const BROADCAST: [u8; 6] = [0xff; 6];
const IP_PROTO_ICMP: u8 = 1;
const IP_PROTO_UDP: u8 = 17;
/// IP protocol number of TCP.
pub const IP_PROTO_TCP: u8 = 6;
/// Ethernet + IPv4 + TCP header lengths of the segments we build (no options).
pub const TCP_HEADERS: usize = ETH_LEN + IP_LEN + 20;
const ICMP_ECHO_REPLY: u8 = 0;
const ICMP_ECHO_REQUEST: u8 = 8;
/// Ethernet + IPv4 header lengths (no IP options in what we send).
const ETH_LEN: usize = 14;
const IP_LEN: usize = 20;

/// What a received frame is, as far as netprobe cares.
pub enum Packet {
    /// "Who has `target`? Tell `sender_ip` at `sender_mac`."
    ArpRequest {
        sender_mac: [u8; 6],
        sender_ip: u32,
        target: u32,
    },
    /// "`sender_ip` is at `sender_mac`."
    ArpReply { sender_mac: [u8; 6], sender_ip: u32 },
    /// ICMP echo request to `dst`.
    EchoRequest { dst: u32 },
    /// ICMP echo reply from `src`.
    EchoReply { src: u32, id: u16, seq: u16 },
    /// A frame with the tests' EtherType.
    Test,
    /// Anything else.
    Other,
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn mac_at(b: &[u8], at: usize) -> [u8; 6] {
    let mut m = [0u8; 6];
    m.copy_from_slice(&b[at..at + 6]);
    m
}

/// Classifies a frame (bounds-checked: short or odd frames are `Other`).
pub fn parse(f: &[u8]) -> Packet {
    if f.len() < ETH_LEN {
        return Packet::Other;
    }
    match be16(f, 12) {
        ETH_TEST => Packet::Test,
        ETH_ARP if f.len() >= ETH_LEN + 28 => {
            let a = &f[ETH_LEN..];
            if be16(a, 0) != 1 || be16(a, 2) != ETH_IPV4 || a[4] != 6 || a[5] != 4 {
                return Packet::Other;
            }
            let (sender_mac, sender_ip, target) = (mac_at(a, 8), be32(a, 14), be32(a, 24));
            match be16(a, 6) {
                1 => Packet::ArpRequest {
                    sender_mac,
                    sender_ip,
                    target,
                },
                2 => Packet::ArpReply {
                    sender_mac,
                    sender_ip,
                },
                _ => Packet::Other,
            }
        }
        ETH_IPV4 if f.len() >= ETH_LEN + IP_LEN => {
            let ip = &f[ETH_LEN..];
            let ihl = usize::from(ip[0] & 0xf) * 4;
            if ip[0] >> 4 != 4 || ihl < IP_LEN || ip[9] != IP_PROTO_ICMP || ip.len() < ihl + 8 {
                return Packet::Other;
            }
            let icmp = &ip[ihl..];
            match icmp[0] {
                ICMP_ECHO_REQUEST => Packet::EchoRequest { dst: be32(ip, 16) },
                ICMP_ECHO_REPLY => Packet::EchoReply {
                    src: be32(ip, 12),
                    id: be16(icmp, 4),
                    seq: be16(icmp, 6),
                },
                _ => Packet::Other,
            }
        }
        _ => Packet::Other,
    }
}

/// The Internet checksum (RFC 1071) of `data`.
pub fn checksum(data: &[u8]) -> u16 {
    let mut sum = 0u32;
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        sum += u32::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [last] = chunks.remainder() {
        sum += u32::from(*last) << 8;
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn put_eth(b: &mut [u8], dst: [u8; 6], src: [u8; 6], ethertype: u16) {
    b[0..6].copy_from_slice(&dst);
    b[6..12].copy_from_slice(&src);
    b[12..14].copy_from_slice(&ethertype.to_be_bytes());
}

/// Writes an ARP request (`op` 1) or reply (`op` 2); returns the frame length (42).
pub fn arp(
    b: &mut [u8],
    op: u16,
    src_mac: [u8; 6],
    src_ip: u32,
    dst_mac: [u8; 6],
    dst_ip: u32,
) -> usize {
    let eth_dst = if op == 1 { BROADCAST } else { dst_mac };
    put_eth(b, eth_dst, src_mac, ETH_ARP);
    let a = &mut b[ETH_LEN..ETH_LEN + 28];
    a[0..2].copy_from_slice(&1u16.to_be_bytes()); // Ethernet
    a[2..4].copy_from_slice(&ETH_IPV4.to_be_bytes());
    a[4] = 6;
    a[5] = 4;
    a[6..8].copy_from_slice(&op.to_be_bytes());
    a[8..14].copy_from_slice(&src_mac);
    a[14..18].copy_from_slice(&src_ip.to_be_bytes());
    a[18..24].copy_from_slice(if op == 1 { &[0; 6] } else { &dst_mac });
    a[24..28].copy_from_slice(&dst_ip.to_be_bytes());
    ETH_LEN + 28
}

/// Writes an IPv4 header for `payload_len` bytes of protocol `proto` at `b[14..34]`.
fn put_ipv4(b: &mut [u8], proto: u8, src: u32, dst: u32, payload_len: usize, ident: u16) {
    let ip = &mut b[ETH_LEN..ETH_LEN + IP_LEN];
    ip[0] = 0x45;
    ip[1] = 0;
    ip[2..4].copy_from_slice(&((IP_LEN + payload_len) as u16).to_be_bytes());
    ip[4..6].copy_from_slice(&ident.to_be_bytes());
    ip[6..8].copy_from_slice(&0x4000u16.to_be_bytes()); // don't fragment
    ip[8] = 64;
    ip[9] = proto;
    ip[10..12].fill(0);
    ip[12..16].copy_from_slice(&src.to_be_bytes());
    ip[16..20].copy_from_slice(&dst.to_be_bytes());
    let sum = checksum(ip);
    ip[10..12].copy_from_slice(&sum.to_be_bytes());
}

/// Writes an ICMP echo request with 56 payload bytes (what `ping` sends); returns 98.
pub fn echo_request(
    b: &mut [u8],
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    src: u32,
    dst: u32,
    id: u16,
    seq: u16,
) -> usize {
    const PAYLOAD: usize = 56;
    put_eth(b, dst_mac, src_mac, ETH_IPV4);
    put_ipv4(b, IP_PROTO_ICMP, src, dst, 8 + PAYLOAD, seq);
    let icmp = &mut b[ETH_LEN + IP_LEN..ETH_LEN + IP_LEN + 8 + PAYLOAD];
    icmp[0] = ICMP_ECHO_REQUEST;
    icmp[1] = 0;
    icmp[2..4].fill(0);
    icmp[4..6].copy_from_slice(&id.to_be_bytes());
    icmp[6..8].copy_from_slice(&seq.to_be_bytes());
    for (i, byte) in icmp[8..].iter_mut().enumerate() {
        *byte = i as u8;
    }
    let sum = checksum(icmp);
    icmp[2..4].copy_from_slice(&sum.to_be_bytes());
    ETH_LEN + IP_LEN + 8 + PAYLOAD
}

/// Turns a received echo request (a copy, in `f`) into the reply: swap MACs and addresses,
/// type 0, checksums redone.
pub fn echo_reply_in_place(f: &mut [u8]) {
    swap_macs(f);
    let ihl = usize::from(f[ETH_LEN] & 0xf) * 4;
    let (src, dst) = (be32(f, ETH_LEN + 12), be32(f, ETH_LEN + 16));
    f[ETH_LEN + 12..ETH_LEN + 16].copy_from_slice(&dst.to_be_bytes());
    f[ETH_LEN + 16..ETH_LEN + 20].copy_from_slice(&src.to_be_bytes());
    f[ETH_LEN + 10..ETH_LEN + 12].fill(0);
    let sum = checksum(&f[ETH_LEN..ETH_LEN + ihl]);
    f[ETH_LEN + 10..ETH_LEN + 12].copy_from_slice(&sum.to_be_bytes());
    let total = usize::from(be16(f, ETH_LEN + 2)).min(f.len() - ETH_LEN);
    let icmp = &mut f[ETH_LEN + ihl..ETH_LEN + total];
    icmp[0] = ICMP_ECHO_REPLY;
    icmp[2..4].fill(0);
    let sum = checksum(icmp);
    icmp[2..4].copy_from_slice(&sum.to_be_bytes());
}

/// Swaps destination and source MAC.
pub fn swap_macs(f: &mut [u8]) {
    for i in 0..6 {
        f.swap(i, i + 6);
    }
}

/// Writes a UDP datagram to port 9 (discard) making a frame of `size` bytes (at least 42).
pub fn udp(
    b: &mut [u8],
    size: usize,
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    src: u32,
    dst: u32,
    seq: u16,
) -> usize {
    let size = size.max(ETH_LEN + IP_LEN + 8).min(b.len());
    let udp_len = size - ETH_LEN - IP_LEN;
    put_eth(b, dst_mac, src_mac, ETH_IPV4);
    put_ipv4(b, IP_PROTO_UDP, src, dst, udp_len, seq);
    let u = &mut b[ETH_LEN + IP_LEN..size];
    u[0..2].copy_from_slice(&9u16.to_be_bytes());
    u[2..4].copy_from_slice(&9u16.to_be_bytes());
    u[4..6].copy_from_slice(&(udp_len as u16).to_be_bytes());
    u[6..8].fill(0); // checksum optional in IPv4
    for (i, byte) in u[8..].iter_mut().enumerate() {
        *byte = (i as u8) ^ (seq as u8);
    }
    size
}

/// Byte `i` of the payload of a test TCP segment (the host side checks the same pattern).
pub fn payload_byte(i: usize) -> u8 {
    (i % 251) as u8
}

/// The partial checksum a device expects in a TCP header with NEEDS_CSUM: the sum of the IPv4
/// pseudo header (addresses, protocol, TCP length), folded but not complemented — the device
/// (here: the host kernel) adds the TCP header and payload and complements.
fn pseudo_header_sum(src: u32, dst: u32, tcp_len: usize) -> u16 {
    let mut pseudo = [0u8; 12];
    pseudo[0..4].copy_from_slice(&src.to_be_bytes());
    pseudo[4..8].copy_from_slice(&dst.to_be_bytes());
    pseudo[9] = IP_PROTO_TCP;
    pseudo[10..12].copy_from_slice(&(tcp_len as u16).to_be_bytes());
    !checksum(&pseudo)
}

/// Writes one TCP segment of `payload` bytes (PSH|ACK, seq 1, to port 5001) whose checksum is
/// left to the device; returns the frame length. The caller sends it with a virtio-net header
/// that asks for checksum offload and, if it is longer than the MSS, segmentation (TSO).
#[allow(clippy::too_many_arguments)]
pub fn tcp_segment(
    b: &mut [u8],
    payload: usize,
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    src: u32,
    dst: u32,
) -> usize {
    let size = (TCP_HEADERS + payload).min(b.len());
    let tcp_len = size - ETH_LEN - IP_LEN;
    put_eth(b, dst_mac, src_mac, ETH_IPV4);
    put_ipv4(b, IP_PROTO_TCP, src, dst, tcp_len, 1);
    let t = &mut b[ETH_LEN + IP_LEN..size];
    t[0..2].copy_from_slice(&40000u16.to_be_bytes());
    t[2..4].copy_from_slice(&5001u16.to_be_bytes());
    t[4..8].copy_from_slice(&1u32.to_be_bytes()); // sequence number
    t[8..12].copy_from_slice(&1u32.to_be_bytes()); // acknowledgement number
    t[12] = 5 << 4; // data offset: 5 words, no options
    t[13] = 0x18; // PSH | ACK
    t[14..16].copy_from_slice(&65535u16.to_be_bytes());
    t[16..18].copy_from_slice(&pseudo_header_sum(src, dst, tcp_len).to_be_bytes());
    t[18..20].fill(0);
    for (i, byte) in t[20..].iter_mut().enumerate() {
        *byte = payload_byte(i);
    }
    size
}
