//! The host side the seed articles set up by hand — taps on bridges, macvtaps in their modes,
//! fds from a helper — set up by `vmm --net` and `tapctl`, each test in its own namespaces, and
//! checked to leave nothing behind.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use vmm_integration_tests::netns::Netns;
use vmm_integration_tests::{
    assert_one_line_error, assert_pass, field, netprobe, require_root, require_root_and_kvm,
    run_command, tapctl_bin, vmm_bin, Run,
};

/// Macvtaps get `/dev/tapN` from devtmpfs with N = their ifindex, which is only unique per
/// network namespace: two tests' macvtaps with the same ifindex would fight over one name in the
/// shared /dev. The tests that create macvtaps therefore take turns.
static MACVTAP_TURN: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn macvtap_turn() -> std::sync::MutexGuard<'static, ()> {
    MACVTAP_TURN.lock().unwrap_or_else(|p| p.into_inner())
}

fn ping(ip: &str, peer: &str, count: u32) -> String {
    format!("netprobe.mode=ping netprobe.ip={ip} netprobe.peer={peer} netprobe.count={count}")
}

fn tapctl(ns: &Netns, args: &[&str]) -> Run {
    run_command(
        Command::new("ip")
            .args(["netns", "exec", &ns.name])
            .arg(tapctl_bin())
            .args(args),
    )
}

#[test]
fn test_macvtap_bridge_mode_reaches_the_peer_and_is_removed_at_exit() {
    if !require_root_and_kvm("macvtap_bridge") {
        return;
    }
    let _turn = macvtap_turn();
    let (ns, _peer) = Netns::with_veth_peer("mvb");
    let run = ns.run_vmm(
        &[
            "--kernel",
            &netprobe(),
            "--net",
            "macvtap=mv0,link=vA,mode=bridge",
            "--cmdline",
            &ping("198.51.100.2", "198.51.100.1", 5),
        ],
        60,
    );
    assert_pass(&run);
    assert!(
        !ns.has_link("mv0"),
        "the macvtap vmm created must be gone\n{:?}",
        ns.links()
    );
    // The guest used the macvtap's own MAC: the peer learned it.
    let guest_mac = field(run.line("netprobe: net ").unwrap(), "mac")
        .unwrap()
        .to_owned();
    assert!(
        _peer.sh("ip neigh show dev vB").contains(&guest_mac),
        "{}",
        run.dump()
    );
}

#[test]
fn test_macvtap_with_mac_option_sets_the_macvtap_mac() {
    if !require_root_and_kvm("macvtap_mac") {
        return;
    }
    let _turn = macvtap_turn();
    let (ns, peer) = Netns::with_veth_peer("mvmac");
    let run = ns.run_vmm(
        &[
            "--kernel",
            &netprobe(),
            "--net",
            "macvtap=mv0,link=vA,mac=52:54:00:12:34:99",
            "--cmdline",
            &ping("198.51.100.2", "198.51.100.1", 2),
        ],
        60,
    );
    assert_pass(&run);
    assert!(
        run.line("netprobe: net mac=52:54:00:12:34:99 ").is_some(),
        "{}",
        run.dump()
    );
    assert!(peer
        .sh("ip neigh show dev vB")
        .contains("52:54:00:12:34:99"));
}

#[test]
fn test_tap_on_bridge_is_created_attached_and_removed() {
    if !require_root_and_kvm("tap_bridge") {
        return;
    }
    let ns = Netns::new("tapbr");
    ns.sh("ip link add br0 type bridge && ip addr add 192.0.2.1/24 dev br0 && ip link set br0 up");
    let run = ns.run_vmm(
        &[
            "--kernel",
            &netprobe(),
            "--net",
            "tap=t0,bridge=br0",
            "--cmdline",
            &ping("192.0.2.2", "192.0.2.1", 5),
        ],
        60,
    );
    assert_pass(&run);
    assert!(!ns.has_link("t0"), "{:?}", ns.links());
}

#[test]
fn test_existing_tap_is_left_as_found() {
    if !require_root_and_kvm("tap_restore") {
        return;
    }
    let ns = Netns::new("restore");
    ns.sh(
        "ip link add br0 type bridge && ip addr add 192.0.2.1/24 dev br0 && ip link set br0 up && \
           ip tuntap add dev t5 mode tap vnet_hdr && ip link set t5 mtu 1500",
    );
    let run = ns.run_vmm(
        &[
            "--kernel",
            &netprobe(),
            "--net",
            "tap=t5,bridge=br0,mtu=1400",
            "--cmdline",
            &ping("192.0.2.2", "192.0.2.1", 2),
        ],
        60,
    );
    assert_pass(&run);
    assert!(
        run.line("netprobe: net ").unwrap().contains("mtu=1400"),
        "the guest saw the new MTU\n{}",
        run.dump()
    );
    assert!(ns.has_link("t5"), "a pre-existing tap stays");
    assert!(
        !ns.sh("ip -d link show t5").contains("master"),
        "and is detached again"
    );
    assert_eq!(
        ns.sh("cat /sys/class/net/t5/mtu").trim(),
        "1500",
        "with its old MTU"
    );
}

#[test]
fn test_fd_passing_of_a_macvtap_device() {
    if !require_root_and_kvm("fd_passing") {
        return;
    }
    let _turn = macvtap_turn();
    let (ns, _peer) = Netns::with_veth_peer("fd");
    let made = tapctl(
        &ns,
        &["macvtap", "add", "mv2", "--link", "vA", "--mode", "bridge"],
    );
    assert_eq!(made.code, Some(0), "{}", made.dump());
    let dev = made.stdout.split_whitespace().last().unwrap().to_owned(); // ".../dev/tapN"
    assert!(dev.starts_with("/dev/tap"), "{}", made.dump());
    // The node lives in the shared /dev: remove it even if the test fails.
    let _node = RemoveOnDrop(dev.clone());
    let macvtap_mac = ns.sh("cat /sys/class/net/mv2/address").trim().to_owned();

    // Like a privileged helper: the shell opens the device, vmm only gets fd 3.
    let script = format!(
        "exec {} --kernel {} --net fd=3 --timeout 60 --cmdline '{}' 3<>{dev}",
        vmm_bin().display(),
        netprobe(),
        ping("198.51.100.2", "198.51.100.1", 3)
    );
    let run =
        run_command(Command::new("ip").args(["netns", "exec", &ns.name, "sh", "-c", &script]));
    assert_pass(&run);
    assert!(
        run.line(&format!("netprobe: net mac={macvtap_mac} "))
            .is_some(),
        "guest MAC = macvtap MAC\n{}",
        run.dump()
    );
    assert!(run.stderr.contains("net0: tap=fd3:mv2 "), "{}", run.dump());
    assert!(
        ns.has_link("mv2"),
        "a passed-in macvtap is not vmm's to delete"
    );
    assert_eq!(tapctl(&ns, &["del", "mv2"]).code, Some(0));
    assert!(
        !std::path::Path::new(&dev).exists(),
        "tapctl del removes the node it made"
    );
}

/// Deletes a file when dropped.
struct RemoveOnDrop(String);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Starts a responder guest on macvtap `name` (answers ARP and ping for `ip`), waits until it is
/// ready, returns the child.
fn start_responder(ns: &Netns, name: &str, mode: &str, ip: &str) -> std::process::Child {
    let spec = format!("macvtap={name},link=vA,mode={mode}");
    let cmdline =
        format!("netprobe.mode=sink netprobe.ip={ip} netprobe.count=100000 netprobe.idle_ms=30000");
    let mut child = ns
        .vmm_command(
            &[
                "--kernel",
                &netprobe(),
                "--net",
                &spec,
                "--cmdline",
                &cmdline,
            ],
            120,
        )
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start responder");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    assert!(
        lines.any(|l| l.is_ok_and(|l| l.contains(" ready"))),
        "responder never became ready"
    );
    child
}

/// Stops a guest with SIGTERM, as a user's Ctrl-C would, and waits for it.
fn terminate(mut child: std::process::Child) {
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let _ = child.wait();
}

fn macvtap_pair(mode: &str) -> (bool, bool) {
    let (ns, _peer) = Netns::with_veth_peer(&format!("pair-{mode}"));
    let responder = start_responder(&ns, "mvR", mode, "198.51.100.3");
    let to_neighbour = ns.run_vmm(
        &[
            "--kernel",
            &netprobe(),
            "--net",
            &format!("macvtap=mvP,link=vA,mode={mode}"),
            "--cmdline",
            &ping("198.51.100.2", "198.51.100.3", 1),
        ],
        60,
    );
    let to_peer = ns.run_vmm(
        &[
            "--kernel",
            &netprobe(),
            "--net",
            &format!("macvtap=mvP,link=vA,mode={mode}"),
            "--cmdline",
            &ping("198.51.100.2", "198.51.100.1", 2),
        ],
        60,
    );
    terminate(responder);
    assert!(
        !ns.has_link("mvR"),
        "SIGTERM must clean up the responder's macvtap: {:?}",
        ns.links()
    );
    assert!(!ns.has_link("mvP"), "{:?}", ns.links());
    (
        to_neighbour.line("netprobe: PASS").is_some(),
        to_peer.line("netprobe: PASS").is_some(),
    )
}

#[test]
fn test_private_macvtaps_cannot_reach_each_other_but_reach_the_peer() {
    if !require_root_and_kvm("private") {
        return;
    }
    let _turn = macvtap_turn();
    let (neighbour, peer) = macvtap_pair("private");
    assert!(
        !neighbour,
        "private mode must isolate macvtaps on the same lower device"
    );
    assert!(peer, "private macvtaps still reach the outside");
}

#[test]
fn test_bridge_macvtaps_reach_each_other_and_the_peer() {
    if !require_root_and_kvm("bridge_pair") {
        return;
    }
    let _turn = macvtap_turn();
    let (neighbour, peer) = macvtap_pair("bridge");
    assert!(
        neighbour,
        "bridge mode lets macvtaps on one lower device talk directly"
    );
    assert!(peer);
}

#[test]
fn test_host_setup_errors_are_one_line_and_leave_nothing_behind() {
    if !require_root("host_errors") {
        return;
    }
    let _turn = macvtap_turn();
    let (ns, _peer) = Netns::with_veth_peer("errs");
    let before = ns.links();
    let kernel = netprobe();
    let cases: &[(&[&str], &str)] = &[
        (
            &["--net", "macvtap=mv1,link=nosuchdev,mode=bridge"],
            "lower device nosuchdev does not exist",
        ),
        (&["--net", "tap=t1,bridge=br0"], "bridge br0 does not exist"),
        (&["--net", "tap=t1,bridge=vA"], "vA is not a bridge"),
        (
            &["--net", "macvtap=mv1,link=vA,mode=switch"],
            "unknown macvtap mode \"switch\"",
        ),
        (
            &["--net", "macvtap=a-very-long-macvtap,link=vA"],
            "at most 15",
        ),
        (&["--net", "macvtap=vA"], "vA is not a macvtap"),
        (&["--net", "macvtap=nomv"], "macvtap nomv does not exist"),
        // The second NIC fails after the first macvtap was created: it must be removed again.
        (
            &[
                "--net",
                "macvtap=mv1,link=vA",
                "--net",
                "tap=t1,bridge=nobr",
            ],
            "bridge nobr does not exist",
        ),
    ];
    for (args, needle) in cases {
        let mut all = vec!["--kernel", kernel.as_str()];
        all.extend_from_slice(args);
        let run = ns.run_vmm(&all, 10);
        assert_one_line_error(&run, needle);
        assert_eq!(ns.links(), before, "{args:?} left something behind");
    }
    let script = format!(
        "exec {} --kernel {kernel} --net fd=3 3</dev/null",
        vmm_bin().display()
    );
    let run =
        run_command(Command::new("ip").args(["netns", "exec", &ns.name, "sh", "-c", &script]));
    assert_one_line_error(&run, "fd 3 is not a tap or macvtap");
}

#[test]
fn test_tapctl_builds_the_seed_setup_and_shows_it() {
    if !require_root("tapctl") {
        return;
    }
    let _turn = macvtap_turn();
    let (ns, _peer) = Netns::with_veth_peer("tapctl");
    for args in [
        &["bridge", "add", "br0"][..],
        &["tap", "add", "vnet0", "--bridge", "br0"],
        &["macvtap", "add", "mv0", "--link", "vA", "--mode", "vepa"],
        &["set", "vnet0", "--mtu", "1400"],
    ] {
        let run = tapctl(&ns, args);
        assert_eq!(run.code, Some(0), "tapctl {args:?}\n{}", run.dump());
    }
    let show = tapctl(&ns, &["show"]);
    let row = |name: &str| {
        show.stdout
            .lines()
            .find(|l| l.starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("{}", show.stdout))
            .to_owned()
    };
    assert!(row("br0").contains(" bridge "), "{}", show.stdout);
    let vnet0 = row("vnet0");
    assert!(
        vnet0.contains(" tap ") && vnet0.contains(" br0 ") && vnet0.contains(" 1400 "),
        "{vnet0}"
    );
    let mv0 = row("mv0");
    assert!(
        mv0.contains("macvtap/vepa@vA") && mv0.contains("/dev/tap"),
        "{mv0}"
    );
    let quiet = tapctl(&ns, &["bridge", "add", "br1", "--no-mcast-snooping"]);
    assert_eq!(quiet.code, Some(0), "{}", quiet.dump());
    assert!(ns.sh("ip -d link show br1").contains("mcast_snooping 0"));
    assert!(
        ns.sh("ip -d link show br0").contains("mcast_snooping 1"),
        "the default is the kernel's"
    );
    // What ip sees agrees.
    assert!(ns.sh("ip -d link show vnet0").contains("master br0"));
    assert!(ns.sh("ip -d link show mv0").contains("macvtap mode vepa"));

    let err = tapctl(&ns, &["macvtap", "add", "mv1", "--link", "nosuch"]);
    assert_eq!(err.code, Some(1));
    assert!(
        err.stderr.contains("lower device nosuch does not exist"),
        "{}",
        err.dump()
    );
    let err = tapctl(&ns, &["tap", "add", "vnet1", "--bridge", "vA"]);
    assert!(err.stderr.contains("vA is not a bridge"), "{}", err.dump());
    assert!(!ns.has_link("vnet1"), "a failed tap add leaves nothing");

    for name in ["mv0", "vnet0", "br0", "br1"] {
        assert_eq!(tapctl(&ns, &["del", name]).code, Some(0));
        assert!(!ns.has_link(name));
    }
}
