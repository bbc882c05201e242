//! virtio-net end to end: netprobe on real KVM, a real tap on a real bridge, each test in its
//! own network namespace (deleted afterwards, also on failure).

use std::time::Duration;

use vmm_integration_tests::netns::{self, parse_mac, Netns, RawSocket, ETH_TEST};
use vmm_integration_tests::{
    assert_one_line_error, assert_pass, field, netprobe, probe_counter, require_root,
    require_root_and_kvm, vmm_counter,
};

/// The tests' EtherType (IEEE 802 local experimental), which netprobe's sink counts.

#[test]
fn test_ping_20_through_tap_and_bridge_passes() {
    if !require_root_and_kvm("ping") {
        return;
    }
    let ns = Netns::with_bridge_and_tap("ping");
    let run = ns.run_vmm(
        &[
            "--kernel",
            &netprobe(),
            "--mem",
            "128",
            "--tap",
            "vnet0",
            "--cmdline",
            "netprobe.mode=ping netprobe.ip=192.0.2.2 netprobe.peer=192.0.2.1 netprobe.count=20",
        ],
        60,
    );
    assert_pass(&run);
    let ping = run.line("netprobe: ping ").unwrap();
    assert_eq!(field(ping, "replies"), Some("20"), "{}", run.dump());
    assert!(probe_counter(&run, "rx_frames") >= 20, "{}", run.dump());
}

#[test]
fn test_byte_symmetry_guest_vmm_and_tap_counters_agree() {
    if !require_root_and_kvm("symmetry") {
        return;
    }
    let ns = Netns::with_bridge_and_tap("sym");
    let (rx0, tx0) = (ns.stat("vnet0", "rx_bytes"), ns.stat("vnet0", "tx_bytes"));
    let (rxp0, txp0) = (
        ns.stat("vnet0", "rx_packets"),
        ns.stat("vnet0", "tx_packets"),
    );
    let run = ns.run_vmm(
        &[
            "--kernel",
            &netprobe(),
            "--tap",
            "vnet0",
            "--cmdline",
            "netprobe.mode=ping netprobe.ip=192.0.2.2 netprobe.peer=192.0.2.1 netprobe.count=10",
        ],
        60,
    );
    assert_pass(&run);
    let tap_rx = ns.stat("vnet0", "rx_bytes") - rx0;
    let tap_tx = ns.stat("vnet0", "tx_bytes") - tx0;
    let tap_rxp = ns.stat("vnet0", "rx_packets") - rxp0;
    let tap_txp = ns.stat("vnet0", "tx_packets") - txp0;

    // What the guest sent is what the host's tap received, and back.
    assert_eq!(
        probe_counter(&run, "tx_bytes"),
        tap_rx,
        "guest TX vs tap RX\n{}",
        run.dump()
    );
    assert_eq!(
        probe_counter(&run, "rx_bytes"),
        tap_tx,
        "guest RX vs tap TX\n{}",
        run.dump()
    );
    assert_eq!(probe_counter(&run, "tx_frames"), tap_rxp, "{}", run.dump());
    assert_eq!(probe_counter(&run, "rx_frames"), tap_txp, "{}", run.dump());
    // And the VMM's device counted the same.
    assert_eq!(
        vmm_counter(&run, "net0", "guest_tx_bytes"),
        tap_rx,
        "{}",
        run.dump()
    );
    assert_eq!(
        vmm_counter(&run, "net0", "guest_rx_bytes"),
        tap_tx,
        "{}",
        run.dump()
    );
    assert_eq!(
        vmm_counter(&run, "net0", "guest_tx_frames"),
        tap_rxp,
        "{}",
        run.dump()
    );
    assert_eq!(
        vmm_counter(&run, "net0", "guest_rx_frames"),
        tap_txp,
        "{}",
        run.dump()
    );
    assert_eq!(vmm_counter(&run, "net0", "dropped"), 0, "{}", run.dump());
    // At least one ARP (42 bytes) and 10 echo requests (98 bytes each) left the guest; more if
    // the host asked for the guest's MAC meanwhile (netprobe answers such ARP probes).
    assert!(tap_rx >= 42 + 10 * 98, "{}", run.dump());
}

/// A test frame from `src` to `dst` with a sequence number in its payload.
fn test_frame(dst: [u8; 6], src: [u8; 6], seq: u16, len: usize) -> Vec<u8> {
    let mut f = netns::test_frame(dst, src, len);
    f[14..16].copy_from_slice(&seq.to_be_bytes());
    f
}

#[test]
fn test_host_frames_written_on_the_bridge_all_reach_netprobe_sink() {
    if !require_root_and_kvm("sink") {
        return;
    }
    const N: u16 = 50;
    let ns = Netns::with_bridge_and_tap("sink");
    let bridge_mac = parse_mac(&ns.sh("cat /sys/class/net/br0/address"));
    let cmdline = format!("netprobe.mode=sink netprobe.count={N} netprobe.idle_ms=10000");
    let run = ns.with_running_guest(
        &[
            "--kernel",
            &netprobe(),
            "--tap",
            "vnet0",
            "--cmdline",
            &cmdline,
        ],
        |guest, _| {
            ns.enter(|| {
                let sock = RawSocket::open("br0", ETH_TEST).expect("AF_PACKET socket on br0");
                for seq in 0..N {
                    sock.send(&test_frame(guest, bridge_mac, seq, 100))
                        .expect("send");
                }
            })
        },
    );
    assert_pass(&run);
    let sink = run.line("netprobe: sink ").unwrap();
    assert_eq!(
        field(sink, "received"),
        Some(N.to_string().as_str()),
        "{}",
        run.dump()
    );
    assert!(
        vmm_counter(&run, "net0", "guest_rx_frames") >= u64::from(N),
        "{}",
        run.dump()
    );
}

#[test]
fn test_echo_mode_returns_each_frame_with_macs_swapped() {
    if !require_root_and_kvm("echo") {
        return;
    }
    const N: u16 = 5;
    let ns = Netns::with_bridge_and_tap("echo");
    let bridge_mac = parse_mac(&ns.sh("cat /sys/class/net/br0/address"));
    let mut echoes = Vec::new();
    let cmdline = format!("netprobe.mode=echo netprobe.count={N} netprobe.idle_ms=10000");
    let run = ns.with_running_guest(
        &[
            "--kernel",
            &netprobe(),
            "--tap",
            "vnet0",
            "--cmdline",
            &cmdline,
        ],
        |guest, _| {
            echoes = ns.enter(|| {
                let sock = RawSocket::open("br0", ETH_TEST).expect("AF_PACKET socket on br0");
                for seq in 0..N {
                    sock.send(&test_frame(guest, bridge_mac, seq, 64))
                        .expect("send");
                }
                sock.collect(N.into(), Duration::from_secs(20), |f| f[6..12] == guest)
            });
            for echo in &echoes {
                assert_eq!(&echo[0..6], &bridge_mac, "echo goes back to the sender");
            }
        },
    );
    assert_pass(&run);
    assert_eq!(echoes.len(), usize::from(N), "{}", run.dump());
    let mut seqs: Vec<u16> = echoes
        .iter()
        .map(|f| u16::from_be_bytes([f[14], f[15]]))
        .collect();
    seqs.sort();
    assert_eq!(
        seqs,
        (0..N).collect::<Vec<_>>(),
        "every frame came back once"
    );
}

#[test]
fn test_flood_frames_all_reach_the_tap() {
    if !require_root_and_kvm("flood") {
        return;
    }
    let ns = Netns::with_bridge_and_tap("flood");
    let (rxp0, rx0) = (ns.stat("vnet0", "rx_packets"), ns.stat("vnet0", "rx_bytes"));
    let run = ns.run_vmm(
        &[
            "--kernel", &netprobe(), "--tap", "vnet0", "--cmdline",
            "netprobe.mode=flood netprobe.ip=192.0.2.2 netprobe.peer=192.0.2.1 netprobe.count=200 netprobe.size=1000",
        ],
        120,
    );
    assert_pass(&run);
    // One ARP request, then 200 frames of 1000 bytes (plus any ARP reply netprobe sent meanwhile):
    // every one of them reached the tap, and the device counted exactly what the tap received.
    let (tap_packets, tap_bytes) = (
        ns.stat("vnet0", "rx_packets") - rxp0,
        ns.stat("vnet0", "rx_bytes") - rx0,
    );
    assert!(
        tap_packets >= 201 && tap_bytes >= 42 + 200 * 1000,
        "{}",
        run.dump()
    );
    assert_eq!(
        vmm_counter(&run, "net0", "guest_tx_frames"),
        tap_packets,
        "{}",
        run.dump()
    );
    assert_eq!(
        vmm_counter(&run, "net0", "guest_tx_bytes"),
        tap_bytes,
        "{}",
        run.dump()
    );
    assert_eq!(
        probe_counter(&run, "tx_frames"),
        tap_packets,
        "{}",
        run.dump()
    );
}

#[test]
fn test_explicit_mac_reaches_the_guest() {
    if !require_root_and_kvm("mac") {
        return;
    }
    let ns = Netns::with_bridge_and_tap("mac");
    let run = ns.run_vmm(
        &[
            "--kernel",
            &netprobe(),
            "--net",
            "tap=vnet0,mac=52:54:00:aa:bb:cc",
            "--cmdline",
            "netprobe.mode=ping netprobe.ip=192.0.2.2 netprobe.peer=192.0.2.1 netprobe.count=1",
        ],
        60,
    );
    assert_pass(&run);
    assert!(
        run.line("netprobe: net mac=52:54:00:aa:bb:cc ").is_some(),
        "{}",
        run.dump()
    );
    // The bridge learned the guest's MAC on vnet0.
    assert!(ns
        .sh("bridge fdb show br br0")
        .contains("52:54:00:aa:bb:cc"));
}

#[test]
fn test_vmm_creates_an_absent_tap_and_it_is_gone_after_exit() {
    if !require_root_and_kvm("tap_lifecycle") {
        return;
    }
    let ns = Netns::new("life");
    assert!(!ns.has_link("t0"));
    let run = ns.run_vmm(
        &[
            "--kernel",
            &netprobe(),
            "--tap",
            "t0",
            "--cmdline",
            "netprobe.mode=boot",
        ],
        60,
    );
    assert_pass(&run);
    assert!(run
        .line("netprobe: boot ")
        .unwrap()
        .contains("virtio_mmio.device=4K@0xd0000000:5"));
    assert!(
        !ns.has_link("t0"),
        "a tap the VMM created must not outlive it"
    );
}

#[test]
fn test_tap_held_by_another_process_is_busy() {
    if !require_root("tap_busy") {
        return;
    }
    let ns = Netns::new("busy");
    let held = ns.enter(|| vmm_tap::Tap::open("held0").expect("open a tap in the namespace"));
    let run = ns.run_vmm(&["--kernel", &netprobe(), "--tap", "held0"], 10);
    assert_one_line_error(&run, "tap held0 is busy");
    drop(held);
}

#[test]
fn test_interface_that_is_not_a_tap_is_refused() {
    if !require_root("not_a_tap") {
        return;
    }
    let ns = Netns::new("notap");
    ns.sh("ip link add br9 type bridge");
    let run = ns.run_vmm(&["--kernel", &netprobe(), "--tap", "br9"], 10);
    assert_one_line_error(&run, "br9 exists and is not a tap device");
}

#[test]
fn test_missing_dev_net_tun_says_load_tun() {
    if !require_root("no_tun") {
        return;
    }
    let ns = Netns::new("notun");
    let script = format!(
        "mount -t tmpfs none /dev && exec {} --kernel {} --tap t0",
        vmm_integration_tests::vmm_bin().display(),
        netprobe()
    );
    let run = vmm_integration_tests::run_command(std::process::Command::new("ip").args([
        "netns",
        "exec",
        &ns.name,
        "unshare",
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-c",
        &script,
    ]));
    assert_one_line_error(&run, "/dev/net/tun does not exist: load the tun module");
}

#[test]
fn test_tap_without_permission_says_run_as_root() {
    if !require_root("tap_permission") {
        return;
    }
    let ns = Netns::new("perm");
    let copies = vmm_integration_tests::UnprivilegedCopies::new("tap-perm");
    let run = vmm_integration_tests::run_command(std::process::Command::new("ip").args([
        "netns",
        "exec",
        &ns.name,
        "setpriv",
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        &copies.vmm,
        "--kernel",
        &copies.kernel,
        "--tap",
        "t0",
    ]));
    assert_one_line_error(&run, "permission denied creating or attaching tap t0");
}

#[test]
fn test_tap_name_too_long_and_bad_net_spec_need_no_root() {
    let run = vmm_integration_tests::run_vmm(
        &["--kernel", &netprobe(), "--tap", "name-longer-than-15"],
        10,
    );
    assert_one_line_error(&run, "Linux allows at most 15");
    let run =
        vmm_integration_tests::run_vmm(&["--kernel", &netprobe(), "--net", "tap=a,speed=10"], 10);
    assert_one_line_error(&run, "unknown option \"speed\"");
    let run =
        vmm_integration_tests::run_vmm(&["--kernel", &netprobe(), "--tap", "a", "--tap", "a"], 10);
    assert_one_line_error(&run, "tap a is used by two NICs");
}
