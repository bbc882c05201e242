//! Booting the Linux guest of `make linux-guest` directly on this host's KVM.
//!
//! Under PVM (`/sys/module/kvm_pvm`) a Linux kernel that is not PVM-aware cannot boot, so the
//! test skips and says why. There, a Linux guest can only be proven inside a nested VMX machine
//! (shared/NESTED-VMX.md: Bochs with VMX, a middle Linux with kvm_intel, our VMM inside).

use std::path::Path;

use vmm_integration_tests::{in_ci, kvm_is_pvm, require_kvm, run_vmm, skip, workspace_root};

#[test]
fn test_linux_guest_boots_to_init_and_resets() {
    const TEST: &str = "linux_guest";
    if kvm_is_pvm() {
        skip(
            TEST,
            "/dev/kvm is PVM (kvm_pvm): a stock Linux kernel cannot boot as a guest here; \
             it needs a host whose KVM uses VMX/SVM (or a nested VMX machine)",
        );
        return;
    }
    if !require_kvm(TEST) {
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
    let run = run_vmm(
        &[
            "--kernel",
            kernel.to_str().unwrap(),
            "--initrd",
            initrd.to_str().unwrap(),
            "--mem",
            "256",
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
        run.line("vmm-guest: done").is_some(),
        "init end\n{}",
        run.dump()
    );
    assert_eq!(run.code, Some(0), "{}", run.dump());
}
