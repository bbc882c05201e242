//! Booting netprobe on real KVM through both loader paths (bzImage and ELF) and checking that
//! what the guest saw is what the VMM was told to configure.

use vmm_integration_tests::{
    field, guest_image, kvm_is_pvm, require_kvm, run_vmm, tiny_elf, TempFile,
};

const MIB: u64 = 1 << 20;
/// Size of the legacy hole [0x9fc00, 0x100000) that the e820 map reserves.
const LEGACY_HOLE: u64 = 0x100000 - 0x9fc00;

/// Boots `image` in boot mode with `mem` MiB and checks the boot line, PASS and exit status.
fn boot_and_check(test: &str, image: &str, mem: u64, expect_e820_entries: usize) {
    if !require_kvm(test) {
        return;
    }
    let kernel = guest_image(image);
    let marker = format!("netprobe.mode=boot test.marker={test}");
    let run = run_vmm(
        &[
            "--kernel",
            kernel.to_str().unwrap(),
            "--mem",
            &mem.to_string(),
            "--cmdline",
            &marker,
        ],
        60,
    );
    let boot = run
        .line("netprobe: boot ")
        .unwrap_or_else(|| panic!("no boot line\n{}", run.dump()));

    // Usable RAM is everything but the legacy hole; netprobe rounds down to whole MiB.
    let expected_mib = (mem * MIB - LEGACY_HOLE) / MIB;
    assert_eq!(
        field(boot, "mem_mib"),
        Some(expected_mib.to_string().as_str()),
        "{}",
        run.dump()
    );
    assert_eq!(
        field(boot, "e820_entries"),
        Some(expect_e820_entries.to_string().as_str()),
        "{}",
        run.dump()
    );
    let cmdline = field(boot, "cmdline").unwrap();
    assert!(
        cmdline.starts_with("console=ttyS0 "),
        "VMM defaults first: {cmdline}"
    );
    assert!(cmdline.ends_with(&marker), "user --cmdline last: {cmdline}");

    assert!(
        run.stdout.lines().any(|l| l == "netprobe: PASS"),
        "{}",
        run.dump()
    );
    assert_eq!(run.code, Some(0), "{}", run.dump());
    assert!(run.stderr.contains("i8042 reset"), "{}", run.dump());
}

#[test]
fn test_boot_netprobe_bzimage_reports_configured_memory_and_cmdline() {
    boot_and_check("bzimage", "netprobe.bzImage", 128, 4);
}

#[test]
fn test_boot_netprobe_elf_reports_configured_memory_and_cmdline() {
    boot_and_check("elf", "netprobe.elf", 128, 4);
}

#[test]
fn test_boot_netprobe_default_memory_is_256_mib() {
    if !require_kvm("default_mem") {
        return;
    }
    let kernel = guest_image("netprobe.bzImage");
    let run = run_vmm(&["--kernel", kernel.to_str().unwrap()], 60);
    let boot = run
        .line("netprobe: boot ")
        .unwrap_or_else(|| panic!("{}", run.dump()));
    assert_eq!(field(boot, "mem_mib"), Some("255"), "{}", run.dump());
}

#[test]
fn test_boot_netprobe_above_4_gib_splits_ram_around_the_mmio_gap() {
    // 4 GiB: 3 GiB below the gap, 1 GiB above 4 GiB, so the map has a fifth (RAM) entry.
    boot_and_check("high_mem", "netprobe.elf", 4096, 5);
}

#[test]
fn test_netprobe_unknown_mode_fails_with_reason() {
    if !require_kvm("unknown_mode") {
        return;
    }
    let kernel = guest_image("netprobe.bzImage");
    let run = run_vmm(
        &[
            "--kernel",
            kernel.to_str().unwrap(),
            "--cmdline",
            "netprobe.mode=nonsense",
        ],
        60,
    );
    let fail = run
        .line("netprobe: FAIL")
        .unwrap_or_else(|| panic!("{}", run.dump()));
    assert!(fail.contains("unknown netprobe.mode"), "{fail}");
    assert!(run.line("netprobe: PASS").is_none());
}

#[test]
fn test_guest_triple_fault_ends_vmm_with_status_0() {
    if !require_kvm("triple_fault") {
        return;
    }
    // ud2 with an empty IDT: #UD cannot be delivered, then neither can #GP or #DF: triple fault.
    let guest = TempFile::with("ud2.elf", &tiny_elf(&[0x0f, 0x0b]));
    let run = run_vmm(&["--kernel", guest.path()], 30);
    assert_eq!(run.code, Some(0), "{}", run.dump());
    assert!(
        run.stderr.contains("shut down (triple fault)"),
        "{}",
        run.dump()
    );
}

#[test]
fn test_hanging_guest_is_stopped_by_timeout() {
    if !require_kvm("timeout") {
        return;
    }
    // jmp $ forever.
    let guest = TempFile::with("spin.elf", &tiny_elf(&[0xeb, 0xfe]));
    let run = run_vmm(&["--kernel", guest.path()], 2);
    assert_eq!(run.code, Some(124), "{}", run.dump());
    assert!(run.stderr.contains("--timeout 2 s"), "{}", run.dump());
}

#[test]
fn test_sse_guest_under_pvm_reports_kvm_internal_error_with_rip() {
    if !require_kvm("internal_error") {
        return;
    }
    if !kvm_is_pvm() {
        vmm_integration_tests::skip(
            "internal_error",
            "only PVM's emulator rejects SSE instructions",
        );
        return;
    }
    // xorps xmm0, xmm0: PVM's instruction emulator cannot execute SSE.
    let guest = TempFile::with("sse.elf", &tiny_elf(&[0x0f, 0x57, 0xc0, 0xeb, 0xfe]));
    let run = run_vmm(&["--kernel", guest.path()], 30);
    assert_eq!(run.code, Some(1), "{}", run.dump());
    assert!(run.stderr.contains("KVM internal error"), "{}", run.dump());
    assert!(run.stderr.contains("RIP 0x100000"), "{}", run.dump());
}

#[test]
fn test_sigusr1_does_not_kill_a_vm_without_nics() {
    if !require_kvm("usr1_no_nic") {
        return;
    }
    // jmp $ forever; the VMM must survive SIGUSR1 and stop at its --timeout.
    let guest = TempFile::with("spin-usr1.elf", &tiny_elf(&[0xeb, 0xfe]));
    let child = std::process::Command::new(vmm_integration_tests::vmm_bin())
        .args(["--kernel", guest.path(), "--timeout", "3"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(500));
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGUSR1) };
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(124),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
