//! Several vCPUs (`--cpus N`): what the guest is told (MP table, CPUID), the vCPU threads, and
//! how they all end. netprobe reads the tables on the bootstrap CPU; it starts no other CPU (a
//! PVM host could not run their start-up code), so the other vCPUs wait in KVM for INIT/SIPI the
//! whole run, which is also what the stop path must handle. A Linux guest bringing them online
//! is proven by `make test-linux` ("test-linux: smp PASS").

use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use vmm_integration_tests::{
    assert_pass, field, guest_image, kvm_is_pvm, require_kvm, run_vmm, tiny_elf, vmm_bin, TempFile,
};

#[test]
fn test_guest_finds_every_vcpu_in_the_mp_table_and_cpuid() {
    if !require_kvm("cpus_tables") {
        return;
    }
    let kernel = guest_image("netprobe.elf");
    for cpus in [1u8, 2, 5] {
        let run = run_vmm(
            &[
                "--kernel",
                kernel.to_str().unwrap(),
                "--mem",
                "64",
                "--cpus",
                &cpus.to_string(),
                "--cmdline",
                "netprobe.mode=cpus",
            ],
            60,
        );
        assert_pass(&run);
        let table = run
            .line("netprobe: mptable ")
            .unwrap_or_else(|| panic!("no mptable line\n{}", run.dump()));
        let ids: Vec<String> = (0..cpus).map(|i| i.to_string()).collect();
        assert_eq!(
            field(table, "cpus"),
            Some(cpus.to_string().as_str()),
            "{table}"
        );
        assert_eq!(field(table, "bsp"), Some("0"), "{table}");
        assert_eq!(
            field(table, "apic_ids"),
            Some(ids.join(",").as_str()),
            "{table}"
        );
        // The IOAPIC's ID follows the CPUs' APIC IDs; all 24 pins are routed, NIC IRQ 5 to pin 5.
        assert_eq!(
            field(table, "ioapic_id"),
            Some(cpus.to_string().as_str()),
            "{table}"
        );
        assert_eq!(field(table, "ioapic_addr"), Some("0xfec00000"), "{table}");
        assert_eq!(field(table, "io_ints"), Some("24"), "{table}");
        assert_eq!(field(table, "isa_irq5_pin"), Some("5"), "{table}");
        let cpuid = run
            .line("netprobe: cpuid ")
            .unwrap_or_else(|| panic!("no cpuid line\n{}", run.dump()));
        assert_eq!(field(cpuid, "apic_id"), Some("0"), "{cpuid}");
        assert_eq!(
            field(cpuid, "logical"),
            Some(cpus.to_string().as_str()),
            "{cpuid}"
        );
        if let Some(cores) = field(cpuid, "x2apic_cores") {
            assert_eq!(cores, cpus.to_string(), "{cpuid}");
        }
        assert!(
            !run.stderr.contains("KVM_RUN"),
            "every vCPU stopped\n{}",
            run.dump()
        );
    }
}

/// The names of `pid`'s threads.
fn thread_names(pid: u32) -> Vec<String> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .map(|name| name.trim().to_string())
        .collect()
}

#[test]
fn test_each_vcpu_has_a_named_thread_and_a_timeout_stops_them_all() {
    if !require_kvm("cpus_threads") {
        return;
    }
    // jmp $ forever on vCPU 0; vCPUs 1 and 2 wait for a SIPI that never comes.
    let guest = TempFile::with("spin-smp.elf", &tiny_elf(&[0xeb, 0xfe]));
    let child = Command::new(vmm_bin())
        .args(["--kernel", guest.path(), "--cpus", "3", "--timeout", "3"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start vmm");
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut names = Vec::new();
    while Instant::now() < deadline {
        names = thread_names(child.id());
        if ["vcpu0", "vcpu1", "vcpu2"]
            .iter()
            .all(|n| names.iter().any(|name| name == n))
        {
            break;
        }
        thread::sleep(Duration::from_millis(50));
    }
    let output = child.wait_with_output().expect("wait for vmm");
    let stderr = String::from_utf8_lossy(&output.stderr);
    for vcpu in ["vcpu0", "vcpu1", "vcpu2"] {
        assert!(
            names.iter().any(|n| n == vcpu),
            "no thread {vcpu}: {names:?}"
        );
    }
    assert!(!names.iter().any(|n| n == "vcpu3"), "{names:?}");
    assert_eq!(output.status.code(), Some(124), "{stderr}");
    assert!(stderr.contains("--timeout 3 s"), "{stderr}");
    // Every vCPU left KVM_RUN when asked: none is reported stuck.
    assert!(!stderr.contains("did not leave KVM_RUN"), "{stderr}");
}

#[test]
fn test_a_failing_vcpu_is_named_in_the_one_line_reason() {
    if !require_kvm("cpus_failure") {
        return;
    }
    if !kvm_is_pvm() {
        vmm_integration_tests::skip(
            "cpus_failure",
            "only PVM's emulator rejects SSE instructions",
        );
        return;
    }
    // xorps xmm0, xmm0 on vCPU 0: PVM's instruction emulator cannot execute it.
    let guest = TempFile::with("sse-smp.elf", &tiny_elf(&[0x0f, 0x57, 0xc0, 0xeb, 0xfe]));
    let run = run_vmm(&["--kernel", guest.path(), "--cpus", "2"], 30);
    assert_eq!(run.code, Some(1), "{}", run.dump());
    let reason: Vec<&str> = run
        .stderr
        .lines()
        .filter(|l| l.starts_with("vmm: "))
        .collect();
    assert_eq!(reason.len(), 1, "{}", run.dump());
    assert!(
        reason[0].starts_with("vmm: vcpu0: KVM internal error"),
        "{}",
        run.dump()
    );
    assert!(
        !run.stderr.contains("did not leave KVM_RUN"),
        "{}",
        run.dump()
    );
}
