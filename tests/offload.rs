//! Offloads end to end, with netprobe on real KVM and a real tap on a bridge, each test in its
//! own network namespace: a TSO segment the guest sends leaves the host as MSS-sized segments
//! with correct checksums; a GSO frame the host sends reaches the guest whole, merged across
//! RX buffers; and with `offload=off` neither is offered. Counters agree exactly throughout.

use std::time::Duration;

use vmm_integration_tests::netns::{parse_mac, Netns, RawSocket};
use vmm_integration_tests::{
    assert_pass, field, netprobe, probe_counter, require_root_and_kvm, vmm_counter, Run, TempFile,
};

const ETH_IPV4: u16 = 0x0800;
/// Ethernet + IPv4 + TCP headers of the test segments.
const HEADERS: usize = 54;

/// The payload byte netprobe puts at (and expects at) offset `i`.
fn payload_byte(i: usize) -> u8 {
    (i % 251) as u8
}

/// The Internet checksum of `data` (0 when `data` includes a correct checksum).
fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = data
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Whether `frame`'s IPv4 header checksum and TCP checksum (over the pseudo header) are right.
fn checksums_ok(frame: &[u8]) -> bool {
    let ip = &frame[14..34];
    let tcp = &frame[34..];
    let mut pseudo = Vec::from(&ip[12..20]);
    pseudo.extend_from_slice(&[0, 6]);
    pseudo.extend_from_slice(&(tcp.len() as u16).to_be_bytes());
    pseudo.extend_from_slice(tcp);
    checksum(ip) == 0 && checksum(&pseudo) == 0
}

fn is_test_tcp(frame: &[u8]) -> bool {
    frame.len() >= HEADERS
        && frame[12..14] == ETH_IPV4.to_be_bytes()
        && frame[23] == 6
        && frame[36..38] == 5001u16.to_be_bytes()
}

/// A namespace with the seed bridge and tap, plus a veth pair `vA`-`vB` on the bridge whose
/// `vA` end has checksum and segmentation offloads off: frames the bridge forwards out of it
/// are cut and checksummed in software, as a real NIC without TSO would need. `vB` has no
/// address, so nothing answers the test's TCP segments.
fn with_segmenting_port(tag: &str) -> Netns {
    let ns = Netns::with_bridge_and_tap(tag);
    ns.sh(
        "ip link add vA type veth peer name vB && ip link set vA master br0 && \
         ethtool -K vA tx off tso off gso off >/dev/null && ip link set vA up && ip link set vB up",
    );
    ns
}

/// Tap counters before and after, for exact symmetry checks.
struct TapDelta {
    rx_bytes: u64,
    tx_bytes: u64,
    rx_packets: u64,
    tx_packets: u64,
}

impl TapDelta {
    fn read(ns: &Netns) -> Self {
        TapDelta {
            rx_bytes: ns.stat("vnet0", "rx_bytes"),
            tx_bytes: ns.stat("vnet0", "tx_bytes"),
            rx_packets: ns.stat("vnet0", "rx_packets"),
            tx_packets: ns.stat("vnet0", "tx_packets"),
        }
    }

    /// guest (netprobe) == VMM == tap, bytes and frames, both ways.
    fn assert_symmetric(&self, ns: &Netns, run: &Run) {
        let now = TapDelta::read(ns);
        let pairs = [
            ("tx_bytes", "guest_tx_bytes", now.rx_bytes - self.rx_bytes),
            ("rx_bytes", "guest_rx_bytes", now.tx_bytes - self.tx_bytes),
            (
                "tx_frames",
                "guest_tx_frames",
                now.rx_packets - self.rx_packets,
            ),
            (
                "rx_frames",
                "guest_rx_frames",
                now.tx_packets - self.tx_packets,
            ),
        ];
        for (probe, vmm, tap) in pairs {
            assert_eq!(
                probe_counter(run, probe),
                tap,
                "netprobe {probe} vs tap\n{}",
                run.dump()
            );
            assert_eq!(
                vmm_counter(run, "net0", vmm),
                tap,
                "vmm {vmm} vs tap\n{}",
                run.dump()
            );
        }
    }
}

#[test]
fn test_tso_segment_leaves_the_host_as_mss_segments_with_correct_checksums() {
    if !require_root_and_kvm("tso") {
        return;
    }
    const SIZE: usize = 16_384;
    let ns = with_segmenting_port("tso");
    let peer_mac = ns.sh("cat /sys/class/net/vB/address").trim().to_owned();
    let before = TapDelta::read(&ns);
    let cmdline = format!(
        "netprobe.mode=tso netprobe.ip=192.0.2.2 netprobe.peer=192.0.2.3 \
         netprobe.peer_mac={peer_mac} netprobe.size={SIZE}"
    );
    let (segments, run) = ns.enter(|| {
        let sock = RawSocket::open("vB", ETH_IPV4).expect("AF_PACKET socket on vB");
        let run = ns.run_vmm(
            &[
                "--kernel",
                &netprobe(),
                "--tap",
                "vnet0",
                "--cmdline",
                &cmdline,
            ],
            60,
        );
        let segments = sock.collect(SIZE.div_ceil(1460), Duration::from_secs(5), is_test_tcp);
        (segments, run)
    });
    assert_pass(&run);

    // The guest sent one 16 KiB segment; the tap received exactly that (one packet).
    let line = run.line("netprobe: tso ").unwrap();
    assert_eq!(field(line, "gso_size"), Some("1460"), "{}", run.dump());
    assert_eq!(probe_counter(&run, "tx_frames"), 1, "{}", run.dump());
    assert_eq!(probe_counter(&run, "tx_bytes"), (HEADERS + SIZE) as u64);
    before.assert_symmetric(&ns, &run);
    let stderr = &run.stderr;
    assert!(
        stderr.contains("features=csum,") && stderr.contains("tso4"),
        "{stderr}"
    );

    // What left the host: MSS-sized segments, every checksum right, the bytes in order.
    assert_eq!(segments.len(), SIZE.div_ceil(1460), "segments on vB");
    let mut payload = Vec::new();
    for (i, seg) in segments.iter().enumerate() {
        assert!(seg.len() <= 1514, "segment {i} is {} bytes", seg.len());
        assert!(checksums_ok(seg), "segment {i}: bad checksum");
        let seq = u32::from_be_bytes(seg[38..42].try_into().unwrap());
        assert_eq!(
            seq as usize,
            1 + payload.len(),
            "segment {i} sequence number"
        );
        payload.extend_from_slice(&seg[HEADERS..]);
    }
    assert_eq!(payload.len(), SIZE);
    assert!(payload
        .iter()
        .enumerate()
        .all(|(i, b)| *b == payload_byte(i)));
}

#[test]
fn test_tso_with_offload_off_is_not_offered_and_says_so() {
    if !require_root_and_kvm("tso-off") {
        return;
    }
    let ns = Netns::with_bridge_and_tap("tsooff");
    let run = ns.run_vmm(
        &[
            "--kernel",
            &netprobe(),
            "--net",
            "tap=vnet0,offload=off",
            "--cmdline",
            "netprobe.mode=tso netprobe.ip=192.0.2.2 netprobe.peer=192.0.2.1",
        ],
        60,
    );
    assert!(
        run.line("netprobe: FAIL the device offers no TSO")
            .is_some(),
        "{}",
        run.dump()
    );
    assert_eq!(probe_counter(&run, "tx_frames"), 0, "nothing sent");
    let report = run
        .stderr
        .lines()
        .find(|l| l.starts_with("net0: "))
        .unwrap();
    assert!(
        !report.contains("csum"),
        "offload=off negotiates no checksum offload: {report}"
    );
}

/// A GSO TCPv4 frame as a host stack hands it to a tap with TSO: a `struct virtio_net_hdr`
/// (NEEDS_CSUM, TCPV4, gso_size 1448) and one frame with `size` payload bytes.
fn gso_frame(dst: [u8; 6], src: [u8; 6], size: usize) -> Vec<u8> {
    let mut f = vec![1, 1];
    f.extend_from_slice(&(HEADERS as u16).to_le_bytes()); // hdr_len
    f.extend_from_slice(&1448u16.to_le_bytes()); // gso_size
    f.extend_from_slice(&34u16.to_le_bytes()); // csum_start
    f.extend_from_slice(&16u16.to_le_bytes()); // csum_offset
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&ETH_IPV4.to_be_bytes());
    let total = (20 + 20 + size) as u16;
    let mut ip = vec![0x45, 0];
    ip.extend_from_slice(&total.to_be_bytes());
    ip.extend_from_slice(&[0, 1, 0x40, 0, 64, 6, 0, 0, 192, 0, 2, 1, 192, 0, 2, 2]);
    let sum = checksum(&ip);
    ip[10..12].copy_from_slice(&sum.to_be_bytes());
    f.extend_from_slice(&ip);
    let mut pseudo = vec![192, 0, 2, 1, 192, 0, 2, 2, 0, 6];
    pseudo.extend_from_slice(&((20 + size) as u16).to_be_bytes());
    let partial = !checksum(&pseudo);
    f.extend_from_slice(&5001u16.to_be_bytes());
    f.extend_from_slice(&5001u16.to_be_bytes());
    f.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 1, 0x50, 0x18, 0xff, 0xff]);
    f.extend_from_slice(&partial.to_be_bytes());
    f.extend_from_slice(&[0, 0]);
    f.extend((0..size).map(payload_byte));
    f
}

#[test]
fn test_gso_frame_from_the_host_reaches_the_guest_merged_across_rx_buffers() {
    if !require_root_and_kvm("gso-rx") {
        return;
    }
    const SIZE: usize = 30_000;
    let ns = Netns::with_bridge_and_tap("gsorx");
    let host_mac = parse_mac(&ns.sh("cat /sys/class/net/br0/address"));
    let pcap = TempFile::with("gso-rx.pcap", b"");
    let before = TapDelta::read(&ns);
    let cmdline = format!("netprobe.mode=gso-rx netprobe.size={SIZE}");
    let args = [
        "--kernel",
        &netprobe(),
        "--tap",
        "vnet0",
        "--trace-net",
        "--pcap",
        pcap.path(),
        "--cmdline",
        &cmdline,
    ];
    let run = ns.with_running_guest(&args, |guest, _| {
        ns.enter(|| {
            let sock = RawSocket::open("vnet0", ETH_IPV4).expect("AF_PACKET socket on vnet0");
            sock.enable_vnet_hdr().expect("PACKET_VNET_HDR");
            sock.send(&gso_frame(guest, host_mac, SIZE))
                .expect("send the GSO frame");
        })
    });
    assert_pass(&run);

    // One frame of 30,054 bytes in 1,536-byte buffers: 20 of them, header untouched.
    let line = run.line("netprobe: gso-rx len=").unwrap();
    let len = HEADERS + SIZE;
    assert_eq!(
        field(line, "len"),
        Some(len.to_string().as_str()),
        "{}",
        run.dump()
    );
    assert_eq!(field(line, "num_buffers"), Some("20"), "{}", run.dump());
    assert_eq!(field(line, "gso_type"), Some("1"));
    assert_eq!(field(line, "gso_size"), Some("1448"));
    assert_eq!(vmm_counter(&run, "net0", "rx_merged"), 1, "{}", run.dump());
    before.assert_symmetric(&ns, &run);

    // --trace-net names the 20 chains; --pcap holds the whole frame as the tap delivered it.
    let trace = run
        .stderr
        .lines()
        .find(|l| l.contains(" RX q0 heads="))
        .expect("trace line");
    assert!(
        trace.contains("gso=tcpv4") && trace.contains("num_buffers=20"),
        "{trace}"
    );
    assert_eq!(
        trace
            .split("heads=")
            .nth(1)
            .unwrap()
            .split(' ')
            .next()
            .unwrap()
            .split(',')
            .count(),
        20
    );
    let bytes = std::fs::read(pcap.path()).unwrap();
    let incl_len = u32::from_le_bytes(bytes[24 + 8..24 + 12].try_into().unwrap());
    assert_eq!(
        incl_len as usize, len,
        "the pcap record holds the whole GSO frame"
    );
}
