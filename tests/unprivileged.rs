//! The VMM as an unprivileged user: root makes a tap for user `nobody` (`tapctl tap add
//! --owner`), and `nobody` boots netprobe on it and pings the bridge. The VMM then needs only
//! `/dev/kvm` and `/dev/net/tun`; on this machine both are root-only (0600), so each run gets
//! world-usable nodes of the same devices bind-mounted over them in a mount namespace of its
//! own (nothing changes outside it).

use std::os::unix::fs::MetadataExt;
use std::process::Command;

use vmm_integration_tests::netns::Netns;
use vmm_integration_tests::{
    assert_one_line_error, field, require_root_and_kvm, run_command, tapctl_bin, Run,
    UnprivilegedCopies,
};

/// `vmm args` as uid/gid 65534 (nobody) in `ns`, with usable /dev/kvm and /dev/net/tun.
fn run_as_nobody(ns: &Netns, copies: &UnprivilegedCopies, args: &[&str]) -> Run {
    let node = |path: &str| {
        let rdev = std::fs::metadata(path).unwrap().rdev();
        format!("{} {}", libc::major(rdev), libc::minor(rdev))
    };
    let dir = &copies.dir;
    let script = format!(
        "mknod -m 666 {d}/kvm c {kvm} && mknod -m 666 {d}/tun c {tun} && \
         mount --bind {d}/kvm /dev/kvm && mount --bind {d}/tun /dev/net/tun && \
         exec setpriv --reuid=65534 --regid=65534 --clear-groups \"$@\"",
        d = dir.display(),
        kvm = node("/dev/kvm"),
        tun = node("/dev/net/tun"),
    );
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &ns.name])
        .args([
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            &script,
            "sh",
        ])
        .arg(&copies.vmm)
        .args(["--kernel", &copies.kernel, "--timeout", "60"])
        .args(args);
    run_command(&mut cmd)
}

/// A namespace with bridge br0 (192.0.2.1/24), without a tap.
fn bridge_only(tag: &str) -> Netns {
    let ns = Netns::new(tag);
    ns.sh("ip link add br0 type bridge mcast_snooping 0 && \
         ip addr add 192.0.2.1/24 dev br0 && ip link set br0 up");
    ns
}

#[test]
fn test_nobody_boots_and_pings_on_a_tap_made_for_it() {
    if !require_root_and_kvm("unprivileged") {
        return;
    }
    let ns = bridge_only("unpriv");
    // The privileged step, once: a persistent tap owned by nobody, on br0, up.
    let made = ns.sh(&format!(
        "{} tap add vnet0 --bridge br0 --owner nobody",
        tapctl_bin().display()
    ));
    assert!(
        made.contains("usable without privileges by uid 65534"),
        "{made}"
    );
    let copies = UnprivilegedCopies::new("unpriv");

    let run = run_as_nobody(
        &ns,
        &copies,
        &[
            "--tap",
            "vnet0",
            "--cmdline",
            "netprobe.mode=ping netprobe.ip=192.0.2.2 netprobe.peer=192.0.2.1 netprobe.count=5",
        ],
    );

    assert_eq!(run.code, Some(0), "{}", run.dump());
    let ping = run
        .line("netprobe: ping ")
        .unwrap_or_else(|| panic!("{}", run.dump()));
    assert_eq!(field(ping, "replies"), Some("5"), "{}", run.dump());
    // It ran under its filters as nobody, and left the tap as it found it.
    assert!(!run.stderr.contains("seccomp"), "{}", run.dump());
    assert!(ns.has_link("vnet0"), "the tap is root's to delete");
}

#[test]
fn test_nobody_on_someone_elses_tap_is_told_how_to_get_one() {
    if !require_root_and_kvm("unprivileged-denied") {
        return;
    }
    let ns = bridge_only("unpriv-no");
    ns.sh(&format!(
        "{} tap add vnet0 --bridge br0",
        tapctl_bin().display()
    ));
    let copies = UnprivilegedCopies::new("unpriv-no");

    let run = run_as_nobody(&ns, &copies, &["--tap", "vnet0"]);

    assert_one_line_error(&run, "permission denied creating or attaching tap vnet0");
    assert!(
        run.stderr.contains("tapctl tap add vnet0 --owner $USER"),
        "{}",
        run.dump()
    );
}

#[test]
fn test_nobody_on_its_own_tap_that_is_down_is_told_to_set_it_up() {
    if !require_root_and_kvm("unprivileged-down") {
        return;
    }
    let ns = bridge_only("unpriv-down");
    ns.sh(&format!(
        "{} tap add vnet0 --owner 65534 && ip link set vnet0 down",
        tapctl_bin().display()
    ));
    let copies = UnprivilegedCopies::new("unpriv-down");

    let run = run_as_nobody(&ns, &copies, &["--tap", "vnet0"]);

    assert_one_line_error(
        &run,
        "tap vnet0 is down and setting it up needs CAP_NET_ADMIN: ip link set vnet0 up (as root)",
    );
}
