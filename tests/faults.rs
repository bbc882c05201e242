//! Host faults under a running guest (netprobe on real KVM, real taps in a namespace of the
//! test's own): the VMM must neither spin nor stop the VM, and must say what happened.

use std::time::Duration;

use vmm_integration_tests::netns::{
    parse_mac, test_frame, thread_cpu_ticks, Netns, RawSocket, ETH_TEST,
};
use vmm_integration_tests::{
    netprobe, probe_counter, require_root_and_kvm, tapctl_bin, vmm_counter,
};

#[test]
fn test_tap_deleted_under_a_running_guest_does_not_spin_and_the_vm_runs_on() {
    if !require_root_and_kvm("tap-deleted") {
        return;
    }
    let ns = Netns::with_bridge_and_tap("gone");
    let args = [
        "--kernel",
        &netprobe(),
        "--tap",
        "vnet0",
        "--cmdline",
        // Waits 6 s for one frame that never comes, then ends the VM itself.
        "netprobe.mode=sink netprobe.count=1 netprobe.idle_ms=6000",
    ];
    let mut spent = 0;
    let run = ns.with_running_guest(&args, |_, pid| {
        ns.sh("ip link del vnet0");
        std::thread::sleep(Duration::from_millis(500));
        let before = thread_cpu_ticks(pid, "virtio-net");
        std::thread::sleep(Duration::from_secs(2));
        spent = thread_cpu_ticks(pid, "virtio-net") - before;
    });

    // 2 s at 100 % would be about 200 ticks; an idle thread uses none.
    assert!(
        spent <= 20,
        "the virtio-net thread used {spent} ticks in 2 s\n{}",
        run.dump()
    );
    assert!(
        run.stderr
            .contains("the tap reports an error or hang-up (deleted?)"),
        "{}",
        run.dump()
    );
    // The deletion reached the guest's config space as a link change (sink does not look).
    assert_eq!(
        vmm_counter(&run, "net0", "link_changes"),
        1,
        "{}",
        run.dump()
    );
    // The guest ran to its own end (sink gives up after 6 s without frames) and reset.
    assert!(
        run.line("netprobe: FAIL fewer test frames arrived")
            .is_some(),
        "{}",
        run.dump()
    );
    assert_eq!(run.code, Some(0), "{}", run.dump());
}

/// netprobe flooding the bridge's address: long enough (about 5 s here) for a fault in the
/// middle of it.
fn flood(count: u32) -> String {
    format!(
        "netprobe.mode=flood netprobe.ip=192.0.2.2 netprobe.peer=192.0.2.1 netprobe.count={count} netprobe.size=1000"
    )
}

#[test]
fn test_tap_down_and_up_drops_and_counts_then_traffic_resumes() {
    if !require_root_and_kvm("tap-down-up") {
        return;
    }
    let ns = Netns::with_bridge_and_tap("downup");
    let rx0 = ns.stat("vnet0", "rx_packets");
    let cmdline = flood(3000);
    let args = [
        "--kernel",
        &netprobe(),
        "--tap",
        "vnet0",
        "--cmdline",
        &cmdline,
    ];
    let (mut at_up, mut down_ticks) = (0, 0);
    let run = ns.with_running_guest(&args, |_, pid| {
        std::thread::sleep(Duration::from_millis(300));
        ns.sh("ip link set vnet0 down");
        let before = thread_cpu_ticks(pid, "virtio-net");
        std::thread::sleep(Duration::from_millis(1000));
        down_ticks = thread_cpu_ticks(pid, "virtio-net") - before;
        ns.sh("ip link set vnet0 up");
        at_up = ns.stat("vnet0", "rx_packets");
    });

    assert_eq!(run.code, Some(0), "{}", run.dump());
    let sent = probe_counter(&run, "tx_frames");
    let delivered = vmm_counter(&run, "net0", "guest_tx_frames");
    let dropped = vmm_counter(&run, "net0", "dropped");
    let host = ns.stat("vnet0", "rx_packets") - rx0;
    // While down the tap refused the frames (EIO): dropped and counted, none lost.
    assert!(
        dropped > 0,
        "no frame was refused while the tap was down\n{}",
        run.dump()
    );
    assert_eq!(
        delivered + dropped,
        sent,
        "every guest frame delivered or counted\n{}",
        run.dump()
    );
    assert_eq!(
        host,
        delivered,
        "the tap received what vmm says it delivered\n{}",
        run.dump()
    );
    // Up again, frames flowed again.
    assert!(
        ns.stat("vnet0", "rx_packets") > at_up,
        "no frame reached the tap after it came up\n{}",
        run.dump()
    );
    // Refusals cost a writev each, no busy loop: well below a busy second (~100 ticks).
    assert!(
        down_ticks <= 60,
        "virtio-net used {down_ticks} ticks in 1 s down\n{}",
        run.dump()
    );
    // The guest negotiated VIRTIO_NET_F_STATUS: it saw LINK_UP cleared, then set, each with a
    // configuration-change interrupt, in that order; vmm counted both changes.
    let down = run.stdout.find("netprobe: link down (config interrupt)");
    let up = run.stdout.find("netprobe: link up (config interrupt)");
    assert!(
        matches!((down, up), (Some(d), Some(u)) if d < u),
        "the guest did not see the link go down, then up\n{}",
        run.dump()
    );
    assert_eq!(
        vmm_counter(&run, "net0", "link_changes"),
        2,
        "{}",
        run.dump()
    );
}

#[test]
fn test_bridge_removed_under_a_running_guest_the_vm_runs_on_and_counts_agree() {
    if !require_root_and_kvm("bridge-removed") {
        return;
    }
    let ns = Netns::with_bridge_and_tap("nobr");
    let rx0 = ns.stat("vnet0", "rx_packets");
    let cmdline = flood(2000);
    let args = [
        "--kernel",
        &netprobe(),
        "--tap",
        "vnet0",
        "--cmdline",
        &cmdline,
    ];
    let run = ns.with_running_guest(&args, |_, _| {
        std::thread::sleep(Duration::from_millis(300));
        ns.sh("ip link del br0");
    });

    assert_eq!(run.code, Some(0), "{}", run.dump());
    assert!(!ns.has_link("br0"));
    let sent = probe_counter(&run, "tx_frames");
    let delivered = vmm_counter(&run, "net0", "guest_tx_frames");
    // The tap itself is unchanged: it takes every frame, bridge or not.
    assert_eq!(delivered, sent, "{}", run.dump());
    assert_eq!(
        ns.stat("vnet0", "rx_packets") - rx0,
        delivered,
        "{}",
        run.dump()
    );
}

#[test]
fn test_macvtap_lower_device_deleted_the_vm_runs_on_without_spinning() {
    if !require_root_and_kvm("macvtap-lower-deleted") {
        return;
    }
    let (ns, _peer) = Netns::with_veth_peer("lower");
    let args = [
        "--kernel",
        &netprobe(),
        "--net",
        "macvtap=mv0,link=vA",
        "--cmdline",
        "netprobe.mode=sink netprobe.count=1 netprobe.idle_ms=6000",
    ];
    let mut spent = 0;
    let run = ns.with_running_guest(&args, |_, pid| {
        // Deleting the veth deletes the macvtap on it: its fd reports an error for ever.
        ns.sh("ip link del vA");
        std::thread::sleep(Duration::from_millis(500));
        let before = thread_cpu_ticks(pid, "virtio-net");
        std::thread::sleep(Duration::from_secs(2));
        spent = thread_cpu_ticks(pid, "virtio-net") - before;
    });

    assert!(
        spent <= 20,
        "virtio-net used {spent} ticks in 2 s\n{}",
        run.dump()
    );
    // A macvtap whose lower device went reports no hang-up on its fd (unlike a deleted tap):
    // it just stays quiet. Nothing spins, the guest runs to its own end, and the cleanup
    // finds the macvtap gone without complaining.
    assert!(!run.stderr.contains("cleanup step"), "{}", run.dump());
    assert!(
        run.line("netprobe: FAIL fewer test frames arrived")
            .is_some(),
        "{}",
        run.dump()
    );
    assert_eq!(run.code, Some(0), "{}", run.dump());
    assert!(!ns.has_link("mv0"), "{:?}", ns.links());
}

#[test]
fn test_sigkill_leaves_only_a_created_macvtap_behind_and_tapctl_removes_it() {
    if !require_root_and_kvm("sigkill") {
        return;
    }
    let (ns, _peer) = Netns::with_veth_peer("kill9");
    let args = [
        "--kernel",
        &netprobe(),
        "--tap",
        "vnet9",
        "--net",
        "macvtap=mv0,link=vA",
        "--cmdline",
        "netprobe.mode=sink netprobe.count=1 netprobe.idle_ms=6000",
    ];
    let run = ns.with_running_guest(&args, |_, pid| {
        // SAFETY: kill(2) of the VMM we started.
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    });
    assert_eq!(run.code, None, "killed by a signal\n{}", run.dump());
    let links = ns.links();
    // The tap it created went with its fd; the macvtap it created is a netlink object and
    // stays (no process can undo anything after SIGKILL).
    assert!(!links.iter().any(|l| l == "vnet9"), "{links:?}");
    assert!(links.iter().any(|l| l == "mv0"), "{links:?}");
    let out = ns.sh(&format!("{} del mv0", tapctl_bin().display()));
    assert!(out.contains("mv0 deleted"), "{out}");
    assert!(!ns.has_link("mv0"), "{:?}", ns.links());
}

#[test]
fn test_a_flood_that_overflows_the_tap_queue_loses_nothing_past_the_tap_and_leaves_no_spin() {
    if !require_root_and_kvm("tap-queue-full") {
        return;
    }
    const N: u64 = 6000;
    let ns = Netns::with_bridge_and_tap("full");
    let bridge_mac = parse_mac(&ns.sh("cat /sys/class/net/br0/address"));
    let (tx0, drop0) = (
        ns.stat("vnet0", "tx_packets"),
        ns.stat("vnet0", "tx_dropped"),
    );
    let cmdline = format!("netprobe.mode=sink netprobe.count={N} netprobe.idle_ms=4000");
    let args = [
        "--kernel",
        &netprobe(),
        "--tap",
        "vnet0",
        "--cmdline",
        &cmdline,
    ];
    let mut after_ticks = 0;
    let run = ns.with_running_guest(&args, |guest, pid| {
        // As fast as the host can: far faster than the guest takes frames, so the tap's queue
        // (1000 frames) fills and the rest is the host's to drop.
        ns.enter(|| {
            let sock = RawSocket::open("br0", ETH_TEST).expect("AF_PACKET socket on br0");
            for seq in 0..N {
                let mut f = test_frame(guest, bridge_mac, 1000);
                f[14..22].copy_from_slice(&seq.to_be_bytes());
                sock.send(&f).expect("send");
            }
        });
        // Once the guest has taken what the tap held, the device thread idles.
        std::thread::sleep(Duration::from_millis(1500));
        let before = thread_cpu_ticks(pid, "virtio-net");
        std::thread::sleep(Duration::from_secs(1));
        after_ticks = thread_cpu_ticks(pid, "virtio-net") - before;
    });

    let dropped_by_tap = ns.stat("vnet0", "tx_dropped") - drop0;
    let tap_sent = ns.stat("vnet0", "tx_packets") - tx0;
    let guest_rx = probe_counter(&run, "rx_frames");
    assert!(
        dropped_by_tap > 0,
        "the tap's queue never overflowed\n{}",
        run.dump()
    );
    // Every frame the tap passed on reached the guest, counted alike on all three sides; the
    // rest the host dropped and counted (tx_dropped) before they reached the VMM.
    assert_eq!(
        tap_sent,
        vmm_counter(&run, "net0", "guest_rx_frames"),
        "{}",
        run.dump()
    );
    assert_eq!(guest_rx, tap_sent, "{}", run.dump());
    assert_eq!(vmm_counter(&run, "net0", "dropped"), 0, "{}", run.dump());
    assert!(
        after_ticks <= 10,
        "virtio-net used {after_ticks} ticks idle\n{}",
        run.dump()
    );
    assert_eq!(run.code, Some(0), "{}", run.dump());
}
