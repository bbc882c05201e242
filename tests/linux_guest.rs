//! Booting the Linux guest of `make linux-guest` directly on this host's KVM, with a NIC on a
//! tap on a bridge: it must get its address, ping the host, and its eth0 counters must equal
//! the tap's (the seed articles' byte symmetry, with a real guest NIC).
//!
//! Under PVM (`/sys/module/kvm_pvm`) a Linux kernel that is not PVM-aware cannot boot, so the
//! test skips and says why. There, a Linux guest can only be proven inside a nested VMX machine
//! (shared/NESTED-VMX.md: Bochs with VMX, a middle Linux with kvm_intel, our VMM inside).

use std::path::Path;

use vmm_integration_tests::netns::Netns;
use vmm_integration_tests::{
    in_ci, kvm_is_pvm, require_kvm, require_root, skip, workspace_root, Run,
};

/// `vmm-guest: eth0 <counter>=<n>` from the guest's console.
fn guest_counter(run: &Run, counter: &str) -> u64 {
    let prefix = format!("vmm-guest: eth0 {counter}=");
    run.stdout
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no {counter} from the guest\n{}", run.dump()))
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn test_linux_guest_boots_pings_the_host_and_counters_match_the_tap() {
    const TEST: &str = "linux_guest";
    if kvm_is_pvm() {
        skip(
            TEST,
            "/dev/kvm is PVM (kvm_pvm): a stock Linux kernel cannot boot as a guest here; \
             it needs a host whose KVM uses VMX/SVM (or a nested VMX machine)",
        );
        return;
    }
    if !require_root(TEST) || !require_kvm(TEST) {
        return;
    }
    let out = workspace_root().join("guest-images/out");
    let (kernel, initrd) = (out.join("bzImage"), out.join("initramfs.cpio.gz"));
    if !Path::new(&kernel).exists() || !Path::new(&initrd).exists() {
        let reason =
            "guest-images/out/bzImage or initramfs.cpio.gz missing: run `make linux-guest`";
        assert!(!in_ci(), "{TEST}: {reason}");
        skip(TEST, reason);
        return;
    }
    let ns = Netns::with_bridge_and_tap("linux");
    let (rx0, tx0) = (ns.stat("vnet0", "rx_bytes"), ns.stat("vnet0", "tx_bytes"));
    let run = ns.run_vmm(
        &[
            "--kernel",
            kernel.to_str().unwrap(),
            "--initrd",
            initrd.to_str().unwrap(),
            "--mem",
            "256",
            "--tap",
            "vnet0",
            "--cmdline",
            "vmm.ip=192.0.2.2/24 vmm.peer=192.0.2.1 vmm.count=3",
        ],
        300,
    );
    assert!(
        run.stdout.contains("Linux version 6.1"),
        "kernel banner\n{}",
        run.dump()
    );
    assert!(
        run.line("vmm-guest: init started").is_some(),
        "init\n{}",
        run.dump()
    );
    assert!(
        run.line("vmm-guest: ping 192.0.2.1 ok").is_some(),
        "ping\n{}",
        run.dump()
    );
    assert!(
        run.line("vmm-guest: done").is_some(),
        "init end\n{}",
        run.dump()
    );
    assert_eq!(run.code, Some(0), "{}", run.dump());
    let (tap_rx, tap_tx) = (
        ns.stat("vnet0", "rx_bytes") - rx0,
        ns.stat("vnet0", "tx_bytes") - tx0,
    );
    assert_eq!(
        guest_counter(&run, "tx_bytes"),
        tap_rx,
        "guest eth0 TX vs tap RX\n{}",
        run.dump()
    );
    assert_eq!(
        guest_counter(&run, "rx_bytes"),
        tap_tx,
        "guest eth0 RX vs tap TX\n{}",
        run.dump()
    );
}
