//! Looking inside: `--trace-net` lines, `--pcap` files and the byte-symmetry table, checked
//! against the frames netprobe sent and received and against the tap's own counters.

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use vmm_integration_tests::netns::Netns;
use vmm_integration_tests::{
    field, in_ci, netprobe, probe_counter, require_kvm, require_root, require_root_and_kvm,
    run_vmm, vmm_counter, Run, TempFile,
};

const PING: &str =
    "netprobe.mode=ping netprobe.ip=192.0.2.2 netprobe.peer=192.0.2.1 netprobe.count=10";

/// A pcap file, read independently of the library that wrote it: (linktype, [(ts, frame)]).
fn read_pcap(path: &str) -> (u32, Vec<(Duration, Vec<u8>)>) {
    let bytes = std::fs::read(path).expect("read pcap");
    assert!(bytes.len() >= 24, "pcap shorter than its header");
    let magic = u32::from_le_bytes(bytes[0..4].try_into().unwrap());
    let le = match magic {
        0xa1b2_c3d4 => true,
        0xd4c3_b2a1 => false,
        other => panic!("not a classic microsecond pcap: magic {other:#x}"),
    };
    let u32_at = |at: usize| {
        let b: [u8; 4] = bytes[at..at + 4].try_into().unwrap();
        if le {
            u32::from_le_bytes(b)
        } else {
            u32::from_be_bytes(b)
        }
    };
    let linktype = u32_at(20);
    let mut frames = Vec::new();
    let mut at = 24;
    while at < bytes.len() {
        let (sec, usec, caplen, origlen) = (
            u32_at(at),
            u32_at(at + 4),
            u32_at(at + 8) as usize,
            u32_at(at + 12),
        );
        assert_eq!(caplen as u32, origlen, "frames are captured whole");
        frames.push((
            Duration::new(sec.into(), usec * 1000),
            bytes[at + 16..at + 16 + caplen].to_vec(),
        ));
        at += 16 + caplen;
    }
    (linktype, frames)
}

fn is_icmp(frame: &[u8]) -> bool {
    frame.len() > 23 && frame[12..14] == [0x08, 0x00] && frame[23] == 1
}

#[test]
fn test_pcap_holds_every_frame_both_ways_and_tcpdump_reads_it() {
    if !require_root_and_kvm("pcap") {
        return;
    }
    let ns = Netns::with_bridge_and_tap("pcap");
    let pcap = TempFile::with("all.pcap", b"");
    let nic_pcap = TempFile::with("nic.pcap", b"");
    let start = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    let run = ns.run_vmm(
        &[
            "--kernel",
            &netprobe(),
            "--net",
            &format!("tap=vnet0,pcap={}", nic_pcap.path()),
            "--pcap",
            pcap.path(),
            "--cmdline",
            PING,
        ],
        60,
    );
    let end = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    assert!(run.line("netprobe: PASS").is_some(), "{}", run.dump());
    // The device moved (and captured) at least what the guest counted; exactly the VMM's counters.
    let total =
        vmm_counter(&run, "net0", "guest_tx_frames") + vmm_counter(&run, "net0", "guest_rx_frames");
    assert!(total >= probe_counter(&run, "tx_frames") + probe_counter(&run, "rx_frames"));

    let (linktype, frames) = read_pcap(pcap.path());
    assert_eq!(linktype, 1, "LINKTYPE_ETHERNET");
    assert_eq!(
        frames.len() as u64,
        total,
        "one record per frame the guest sent or received"
    );
    assert!(
        frames.iter().filter(|(_, f)| is_icmp(f)).count() >= 20,
        "10 requests + 10 replies"
    );
    let guest_mac = field(run.line("netprobe: net ").unwrap(), "mac")
        .unwrap()
        .to_owned();
    let first = &frames[0].1;
    assert_eq!(
        &first[0..6],
        &[0xff; 6],
        "the first frame is the guest's ARP broadcast"
    );
    assert_eq!(first[12..14], [0x08, 0x06]);
    assert_eq!(
        vmm_integration_tests::netns::parse_mac(&guest_mac),
        first[6..12]
    );
    for (ts, _) in &frames {
        assert!(
            *ts + Duration::from_secs(1) >= start && *ts <= end + Duration::from_secs(1),
            "real timestamps"
        );
    }
    let (_, nic_frames) = read_pcap(nic_pcap.path());
    assert_eq!(
        nic_frames.len(),
        frames.len(),
        "the per-NIC capture has the same frames"
    );

    // tcpdump reads it (the issue's own check).
    match Command::new("tcpdump").args(["-nr", pcap.path()]).output() {
        Ok(out) => {
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let text = String::from_utf8_lossy(&out.stdout);
            assert_eq!(text.lines().count() as u64, total, "{text}");
            assert!(
                text.contains("ICMP echo request") && text.contains("ICMP echo reply"),
                "{text}"
            );
        }
        Err(_) => {
            assert!(!in_ci(), "tcpdump must be installed in CI (.ci/run does)");
            vmm_integration_tests::skip("pcap/tcpdump", "tcpdump not installed");
        }
    }
}

#[test]
fn test_trace_lines_decode_arp_and_icmp_one_line_per_frame() {
    if !require_root_and_kvm("trace") {
        return;
    }
    let ns = Netns::with_bridge_and_tap("trace");
    let run = ns.run_vmm(
        &[
            "--kernel",
            &netprobe(),
            "--tap",
            "vnet0",
            "--trace-net",
            "--cmdline",
            PING,
        ],
        60,
    );
    assert!(run.line("netprobe: PASS").is_some(), "{}", run.dump());
    let lines: Vec<&str> = run
        .stderr
        .lines()
        .filter(|l| l.contains("vmm::net::trace"))
        .collect();
    let total =
        vmm_counter(&run, "net0", "guest_tx_frames") + vmm_counter(&run, "net0", "guest_rx_frames");
    assert_eq!(
        lines.len() as u64,
        total,
        "one trace line per frame the device moved\n{}",
        run.stderr
    );

    let has = |needle: &str| lines.iter().any(|l| l.contains(needle));
    assert!(has("net0 TX q1 head="), "{}", run.stderr);
    assert!(has("net0 RX q0 head="), "{}", run.stderr);
    assert!(
        has("ARP who-has 192.0.2.1 tell 192.0.2.2, 42 bytes"),
        "{}",
        run.stderr
    );
    assert!(has("ARP 192.0.2.1 is-at "), "{}", run.stderr);
    assert!(
        has("IPv4 192.0.2.2 > 192.0.2.1 ICMP echo request id=28272 seq=1, 98 bytes"),
        "{}",
        run.stderr
    );
    assert!(
        has("IPv4 192.0.2.1 > 192.0.2.2 ICMP echo reply id=28272 seq=10, 98 bytes"),
        "{}",
        run.stderr
    );
    // Headers: no offloads either way; the RX header says num_buffers=1.
    assert!(lines
        .iter()
        .filter(|l| l.contains(" RX "))
        .all(|l| l.contains("gso=none") && l.contains("num_buffers=1")));
    assert!(lines
        .iter()
        .filter(|l| l.contains(" TX "))
        .all(|l| l.contains("hdr{flags=0 gso=none")));
}

/// The numbers of a table row: (guest frames, guest bytes, host packets, host bytes, verdict).
fn table_row(run: &Run, label: &str) -> (u64, u64, u64, u64, String) {
    let line = run
        .stderr
        .lines()
        .find(|l| l.trim_start().starts_with(label))
        .unwrap_or_else(|| panic!("no {label} row\n{}", run.dump()));
    let nums: Vec<u64> = line
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    (
        nums[0],
        nums[1],
        nums[2],
        nums[3],
        line.split_whitespace().last().unwrap().to_owned(),
    )
}

#[test]
fn test_symmetry_table_numbers_are_the_counters() {
    if !require_root_and_kvm("symmetry_table") {
        return;
    }
    let ns = Netns::with_bridge_and_tap("table");
    let (rx0, tx0) = (ns.stat("vnet0", "rx_bytes"), ns.stat("vnet0", "tx_bytes"));
    let run = ns.run_vmm(
        &["--kernel", &netprobe(), "--tap", "vnet0", "--cmdline", PING],
        60,
    );
    assert!(run.line("netprobe: PASS").is_some(), "{}", run.dump());
    assert!(
        run.stderr.contains("byte symmetry of net0 (tap vnet0)"),
        "{}",
        run.dump()
    );
    let (tap_rx, tap_tx) = (
        ns.stat("vnet0", "rx_bytes") - rx0,
        ns.stat("vnet0", "tx_bytes") - tx0,
    );

    let tx = table_row(&run, "guest TX -> host RX");
    assert_eq!(
        (tx.0, tx.1),
        (
            vmm_counter(&run, "net0", "guest_tx_frames"),
            vmm_counter(&run, "net0", "guest_tx_bytes")
        )
    );
    assert_eq!(tx.3, tap_rx, "host column = the tap's rx_bytes delta");
    assert_eq!(tx.4, "match");
    let rx = table_row(&run, "host TX -> guest RX");
    assert_eq!(
        (rx.0, rx.1),
        (
            vmm_counter(&run, "net0", "guest_rx_frames"),
            vmm_counter(&run, "net0", "guest_rx_bytes")
        )
    );
    assert_eq!(rx.3, tap_tx);
    assert_eq!(rx.4, "match");
}

#[test]
fn test_sigusr1_prints_the_table_while_the_guest_runs() {
    if !require_root_and_kvm("sigusr1") {
        return;
    }
    let ns = Netns::with_bridge_and_tap("usr1");
    let mut child = ns
        .vmm_command(
            &[
                "--kernel",
                &netprobe(),
                "--tap",
                "vnet0",
                "--cmdline",
                "netprobe.mode=sink netprobe.count=1000 netprobe.idle_ms=30000",
            ],
            60,
        )
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    while stdout.read_line(&mut line).unwrap_or(0) > 0 && !line.contains(" ready") {
        line.clear();
    }
    // SAFETY: kill(2) on our child.
    unsafe { libc::kill(child.id() as i32, libc::SIGUSR1) };
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut table = String::new();
    for _ in 0..3 {
        let mut l = String::new();
        stderr.read_line(&mut l).unwrap();
        table.push_str(&l);
    }
    assert!(
        child.try_wait().unwrap().is_none(),
        "SIGUSR1 must not stop the VM"
    );
    // SAFETY: as above.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let mut rest = String::new();
    stderr.read_to_string(&mut rest).unwrap();
    let status = child.wait().unwrap();
    assert!(
        table.contains("byte symmetry of net0 (tap vnet0)"),
        "{table}"
    );
    assert!(
        table.contains("guest TX -> host RX") && table.contains("host TX -> guest RX"),
        "{table}"
    );
    assert_eq!(status.code(), Some(128 + libc::SIGTERM), "{rest}");
}

#[test]
fn test_pcap_that_cannot_be_created_is_one_line() {
    if !require_root("pcap_error") {
        return;
    }
    let ns = Netns::new("pcaperr");
    let run = ns.run_vmm(
        &[
            "--kernel",
            &netprobe(),
            "--tap",
            "t0",
            "--pcap",
            "/nonexistent-dir/x.pcap",
        ],
        10,
    );
    assert_eq!(run.code, Some(1), "{}", run.dump());
    assert_eq!(run.stderr.lines().count(), 1, "{}", run.dump());
    assert!(
        run.stderr
            .contains("cannot create pcap file /nonexistent-dir/x.pcap"),
        "{}",
        run.dump()
    );
    // Without NICs there is nothing to capture, and nothing is created.
    let run = run_vmm(
        &[
            "--kernel",
            &netprobe(),
            "--pcap",
            "/nonexistent-dir/x.pcap",
            "--cmdline",
            "netprobe.mode=boot",
        ],
        30,
    );
    if require_kvm("pcap_error") {
        assert_eq!(run.code, Some(0), "{}", run.dump());
    }
}
