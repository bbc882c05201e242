//! Host faults under a running guest (netprobe on real KVM, real taps in a namespace of the
//! test's own): the VMM must neither spin nor stop the VM, and must say what happened.

use std::time::Duration;

use vmm_integration_tests::netns::{thread_cpu_ticks, Netns};
use vmm_integration_tests::{netprobe, require_root_and_kvm};

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
    // The guest ran to its own end (sink gives up after 6 s without frames) and reset.
    assert!(
        run.line("netprobe: FAIL fewer test frames arrived")
            .is_some(),
        "{}",
        run.dump()
    );
    assert_eq!(run.code, Some(0), "{}", run.dump());
}
