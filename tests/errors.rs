//! The errors a new user meets: each is one clear line on stderr and a non-zero exit, and is
//! found before the guest starts.

use std::process::Command;

use vmm_integration_tests::{
    assert_one_line_error, elf_with_segments, guest_image, require_root, run_command, run_vmm,
    vmm_bin, TempFile,
};

#[test]
fn test_missing_kernel_is_one_line() {
    let run = run_vmm(&["--kernel", "/nonexistent"], 10);
    assert_one_line_error(
        &run,
        "cannot read kernel image /nonexistent: No such file or directory",
    );
}

#[test]
fn test_unreadable_kernel_is_one_line() {
    // A directory opens but cannot be read as a kernel.
    let run = run_vmm(&["--kernel", "/"], 10);
    assert_one_line_error(&run, "cannot read kernel image /");
}

#[test]
fn test_file_that_is_not_a_kernel_is_named() {
    let text = TempFile::with("notkernel", b"#!/bin/sh\necho hello\n");
    let run = run_vmm(&["--kernel", text.path()], 10);
    assert_one_line_error(&run, "is not a kernel image");
}

#[test]
fn test_truncated_elf_is_rejected() {
    let elf = TempFile::with("truncated.elf", b"\x7fELF\x02\x01\x01\x00");
    let run = run_vmm(&["--kernel", elf.path()], 10);
    assert_one_line_error(&run, "is a truncated ELF");
}

#[test]
fn test_32_bit_elf_kernel_is_named_with_what_would_work() {
    let mut elf = b"\x7fELF\x01\x01\x01".to_vec();
    elf.resize(18, 0);
    elf.extend_from_slice(&3u16.to_le_bytes()); // EM_386
    elf.resize(52, 0);
    let elf = TempFile::with("elf32", &elf);
    let run = run_vmm(&["--kernel", elf.path()], 10);
    assert_one_line_error(
        &run,
        "is a 32-bit ELF: vmm boots 64-bit x86 kernels (an x86_64 vmlinux, or its bzImage)",
    );
}

#[test]
fn test_memory_too_small_names_the_minimum() {
    let kernel = guest_image("netprobe.elf");
    let run = run_vmm(&["--kernel", kernel.to_str().unwrap(), "--mem", "8"], 10);
    assert_one_line_error(
        &run,
        "--mem 8 is too small: the guest needs at least 16 MiB",
    );
}

#[test]
fn test_initrd_too_large_says_raise_mem() {
    let kernel = guest_image("netprobe.elf");
    let big = TempFile::with("big.initrd", &vec![0u8; 20 << 20]);
    let run = run_vmm(
        &[
            "--kernel",
            kernel.to_str().unwrap(),
            "--mem",
            "16",
            "--initrd",
            big.path(),
        ],
        10,
    );
    assert_one_line_error(&run, "is too large");
    assert!(run.stderr.contains("raise --mem"), "{}", run.dump());
}

#[test]
fn test_missing_initrd_is_one_line() {
    let kernel = guest_image("netprobe.elf");
    let run = run_vmm(
        &[
            "--kernel",
            kernel.to_str().unwrap(),
            "--initrd",
            "/nonexistent.cpio",
        ],
        10,
    );
    assert_one_line_error(&run, "cannot read initrd /nonexistent.cpio");
}

#[test]
fn test_elf_segment_under_the_boot_structures_is_refused() {
    // Entry at 1 MiB, but a second segment at 0x7000, where the zero page goes.
    let jmp_self = [0xeb, 0xfe];
    let elf = TempFile::with(
        "low-segment.elf",
        &elf_with_segments(&jmp_self, &[(0x10_0000, 2), (0x7000, 2)]),
    );
    let run = run_vmm(&["--kernel", elf.path(), "--mem", "64"], 10);
    assert_one_line_error(&run, "has a segment at 0x7000, below 1 MiB");
    assert!(
        run.stderr.contains("link the kernel at 1 MiB or above"),
        "{}",
        run.dump()
    );
}

#[test]
fn test_kernel_whose_bss_ends_past_guest_ram_is_refused_with_the_fix() {
    // 2 bytes in the file, 4 GiB in memory: before, it was loaded and the guest ran into the
    // gap; with --initrd the initrd placement arithmetic overflowed.
    let elf = TempFile::with(
        "huge-bss.elf",
        &elf_with_segments(&[0xeb, 0xfe], &[(0x10_0000, 1 << 32)]),
    );
    let initrd = TempFile::with("small.initrd", &[0u8; 4096]);
    for extra in [&[][..], &["--initrd", initrd.path()][..]] {
        let mut args = vec!["--kernel", elf.path(), "--mem", "64"];
        args.extend_from_slice(extra);
        let run = run_vmm(&args, 10);
        assert_one_line_error(&run, "needs guest memory up to 0x100100000");
        assert!(run.stderr.contains("raise --mem"), "{}", run.dump());
    }
}

#[test]
fn test_cpus_outside_1_to_32_are_refused_with_the_range() {
    let kernel = guest_image("netprobe.elf");
    for cpus in ["0", "33"] {
        let run = run_vmm(&["--kernel", kernel.to_str().unwrap(), "--cpus", cpus], 10);
        assert_eq!(run.code, Some(2), "a usage error\n{}", run.dump());
        assert!(run.stderr.contains("--cpus"), "{}", run.dump());
        assert!(run.stderr.contains("1..=32"), "{}", run.dump());
        assert!(run.stdout.is_empty(), "{}", run.dump());
    }
}

#[test]
fn test_overlong_cmdline_is_refused() {
    let kernel = guest_image("netprobe.elf");
    let long = "a".repeat(3000);
    let run = run_vmm(
        &["--kernel", kernel.to_str().unwrap(), "--cmdline", &long],
        10,
    );
    assert_one_line_error(&run, "invalid kernel command line");
}

#[test]
fn test_help_explains_options_with_examples() {
    let run = run_command(Command::new(vmm_bin()).arg("--help"));
    assert_eq!(run.code, Some(0));
    for option in [
        "--kernel",
        "--initrd",
        "--cmdline",
        "--mem",
        "--cpus",
        "--tap",
        "--timeout",
    ] {
        assert!(
            run.stdout.contains(option),
            "--help lacks {option}\n{}",
            run.stdout
        );
    }
    assert!(run.stdout.contains("Example: --kernel"), "{}", run.stdout);
}

#[test]
fn test_missing_dev_kvm_says_how_to_get_it() {
    if !require_root("missing_dev_kvm") {
        return;
    }
    // A private mount namespace with an empty /dev: /dev/kvm does not exist there.
    let kernel = guest_image("netprobe.elf");
    let script = format!(
        "mount -t tmpfs none /dev && exec {} --kernel {}",
        vmm_bin().display(),
        kernel.display()
    );
    let run = run_command(Command::new("unshare").args([
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-c",
        &script,
    ]));
    assert_one_line_error(&run, "/dev/kvm does not exist");
}

#[test]
fn test_dev_kvm_permission_denied_says_what_to_do() {
    if !require_root("kvm_permission") {
        return;
    }
    let meta = std::fs::metadata("/dev/kvm");
    let world_rw =
        meta.map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o006 == 0o006);
    if world_rw.unwrap_or(true) {
        vmm_integration_tests::skip(
            "kvm_permission",
            "/dev/kvm is missing or open to everyone here",
        );
        return;
    }
    // Drop to nobody, who is not in the group owning /dev/kvm.
    let copies = vmm_integration_tests::UnprivilegedCopies::new("kvm-perm");
    let run = run_command(Command::new("setpriv").args([
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        &copies.vmm,
        "--kernel",
        &copies.kernel,
    ]));
    assert_one_line_error(
        &run,
        "permission denied opening /dev/kvm: run as root or join",
    );
}
