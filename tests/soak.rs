//! `make soak` (not a test): netprobe echoes frames of random sizes (60-1514 bytes) that the
//! host puts on the bridge, for SOAK_SECONDS (default 600), so that both directions carry
//! traffic the whole time. At the end the guest's, the VMM's and the tap's counters must agree
//! exactly, nothing may be dropped, every frame sent must have come back, and the VMM's
//! resident memory (sampled every 10 s) must be flat. Prints the figures; exits 1 otherwise.

use std::time::{Duration, Instant};

use vmm_integration_tests::netns::{parse_mac, test_frame, Netns, RawSocket, ETH_TEST};
use vmm_integration_tests::{netprobe, probe_counter, require_root_and_kvm, vmm_counter};

/// Frames sent and not yet echoed, at most: enough to keep both queues busy, few enough that
/// the tap's queue (1000 frames) never overflows.
const WINDOW: u64 = 32;

/// A frame of `len` bytes from `src` to `dst` with `seq` in its first payload bytes.
fn frame(dst: [u8; 6], src: [u8; 6], seq: u64, len: usize) -> Vec<u8> {
    let mut f = test_frame(dst, src, len);
    f[14..22].copy_from_slice(&seq.to_be_bytes());
    for (i, b) in f[22..].iter_mut().enumerate() {
        *b = (seq as u8).wrapping_add(i as u8);
    }
    f
}

/// The VMM's resident set in KiB.
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

fn main() {
    if !require_root_and_kvm("soak") {
        return;
    }
    let seconds: u64 = std::env::var("SOAK_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(600);
    let ns = Netns::with_bridge_and_tap("soak");
    let bridge_mac = parse_mac(&ns.sh("cat /sys/class/net/br0/address"));
    let stat = |c| ns.stat("vnet0", c);
    let before = [
        stat("rx_packets"),
        stat("rx_bytes"),
        stat("tx_packets"),
        stat("tx_bytes"),
        stat("tx_dropped"),
    ];
    let probe = netprobe();
    let args = [
        "--kernel",
        &probe,
        "--tap",
        "vnet0",
        "--mem",
        "64",
        "--cmdline",
        "netprobe.mode=echo netprobe.count=1000000000 netprobe.idle_ms=3000",
    ];
    let (mut sent, mut echoed, mut bad, mut rss) = (0u64, 0u64, 0u64, Vec::new());
    let mut stall: Option<u64> = None;
    let mut seed = std::process::id() as u64 | 1;
    println!("soak: {seconds} s of echoes of random sizes through vnet0");
    let run = ns.with_running_guest_for(&args, seconds + 60, |guest, pid| {
        ns.enter(|| {
            let sock = RawSocket::open("br0", ETH_TEST).expect("AF_PACKET socket on br0");
            let start = Instant::now();
            let mut next_sample = start;
            let mut stalls = 0;
            let mut stalled = None;
            while start.elapsed() < Duration::from_secs(seconds) {
                if Instant::now() >= next_sample {
                    rss.push(rss_kib(pid));
                    next_sample += Duration::from_secs(10);
                }
                while sent - echoed < WINDOW {
                    // xorshift64: sizes 60..=1514.
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    let len = 60 + (seed % 1455) as usize;
                    sock.send(&frame(guest, bridge_mac, sent, len))
                        .expect("send");
                    sent += 1;
                }
                match sock.recv() {
                    Some(f) if f[6..12] == guest => {
                        let seq = u64::from_be_bytes(f[14..22].try_into().unwrap());
                        let len = f.len().max(60);
                        // Back unchanged but for the swapped MACs.
                        if f[0..6] != bridge_mac
                            || f[22..] != frame(guest, bridge_mac, seq, len)[22..]
                        {
                            bad += 1;
                        }
                        echoed += 1;
                        stalls = 0;
                    }
                    Some(_) => {}
                    None => {
                        stalls += 1;
                        if stalls == 25 {
                            // No echo for 5 s: stop, and let the counters say where the
                            // frames are (the guest ends 3 s after its last frame).
                            stalled = Some(start.elapsed().as_secs());
                            break;
                        }
                    }
                }
            }
            stall = stalled;
            // The last echoes.
            let deadline = Instant::now() + Duration::from_secs(5);
            while echoed < sent && Instant::now() < deadline {
                if let Some(f) = sock.recv() {
                    if f[6..12] == guest {
                        echoed += 1;
                    }
                }
            }
            rss.push(rss_kib(pid));
        });
    });
    let after = [
        stat("rx_packets"),
        stat("rx_bytes"),
        stat("tx_packets"),
        stat("tx_bytes"),
        stat("tx_dropped"),
    ];
    let tap: Vec<u64> = after.iter().zip(before).map(|(a, b)| a - b).collect();
    let guest = [
        probe_counter(&run, "tx_frames"),
        probe_counter(&run, "tx_bytes"),
        probe_counter(&run, "rx_frames"),
        probe_counter(&run, "rx_bytes"),
    ];
    let vmm = [
        vmm_counter(&run, "net0", "guest_tx_frames"),
        vmm_counter(&run, "net0", "guest_tx_bytes"),
        vmm_counter(&run, "net0", "guest_rx_frames"),
        vmm_counter(&run, "net0", "guest_rx_bytes"),
    ];
    let dropped = vmm_counter(&run, "net0", "dropped");
    let (first, last, max) = (
        rss.first().copied().unwrap_or(0),
        rss.last().copied().unwrap_or(0),
        rss.iter().copied().max().unwrap_or(0),
    );
    println!("soak: host sent {sent} frames, {echoed} came back ({bad} changed)");
    if let Some(at) = stall {
        println!("soak: STALLED after {at} s: no echo for 5 s");
    }
    println!("soak:                     guest        vmm        tap");
    let names = ["TX frames", "TX bytes", "RX frames", "RX bytes"];
    // Guest TX is the tap's RX and the other way round.
    let tap_view = [tap[0], tap[1], tap[2], tap[3]];
    let mut exact = true;
    for i in 0..4 {
        let ok = guest[i] == vmm[i] && vmm[i] == tap_view[i];
        exact &= ok;
        println!(
            "soak: {:<14} {:>12} {:>10} {:>10} {}",
            names[i],
            guest[i],
            vmm[i],
            tap_view[i],
            if ok { "match" } else { "MISMATCH" }
        );
    }
    println!("soak: dropped: vmm {dropped}, tap tx_dropped {}", tap[4]);
    println!(
        "soak: VMM RSS over {} samples: first {first} KiB, last {last} KiB, max {max} KiB",
        rss.len()
    );
    // Flat: no more than 1 MiB of growth from the first sample (taken once the guest ran).
    let flat = last <= first + 1024 && max <= first + 1024;
    let pass = stall.is_none()
        && exact
        && dropped == 0
        && tap[4] == 0
        && echoed == sent
        && bad == 0
        && flat;
    if pass {
        println!("soak: PASS");
    } else {
        println!("soak: FAIL\n{}", run.dump());
        std::process::exit(1);
    }
}
