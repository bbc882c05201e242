//! Seccomp on a real VM: every thread of a running VMM is filtered (or none, with
//! `--seccomp off`), and the guest's traffic still flows under the filters (every other
//! integration test runs with them too). What a denied call does is tested in
//! vmm/src/seccomp.rs (a forked child that calls socket(2) on a vCPU filter).

use std::io::{BufRead, BufReader, Read};
use std::process::Stdio;
use std::time::{Duration, Instant};

use vmm_integration_tests::netns::Netns;
use vmm_integration_tests::{netprobe, require_root_and_kvm};

/// The threads a VMM with a NIC, two vCPUs and a console on a pipe has while the guest runs.
const THREADS: [&str; 6] = ["vmm", "signals", "stdin", "virtio-net", "vcpu0", "vcpu1"];

/// (thread name, Seccomp mode from /proc/<pid>/task/<tid>/status) of each of the VMM's threads.
fn seccomp_modes(pid: u32) -> Vec<(String, String)> {
    let mut modes = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten()
    {
        let dir = task.unwrap().path();
        let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        let status = std::fs::read_to_string(dir.join("status")).unwrap_or_default();
        let mode = status
            .lines()
            .find_map(|l| l.strip_prefix("Seccomp:"))
            .unwrap_or("?")
            .trim()
            .to_string();
        modes.push((comm.trim().to_string(), mode));
    }
    modes
}

/// Boots netprobe (2 vCPUs, a tap, stdin a pipe kept open) with `extra` arguments, waits until
/// each of [`THREADS`] reports `want`, and returns what the threads last reported.
fn thread_modes(tag: &str, extra: &[&str], want: &str) -> Vec<(String, String)> {
    let ns = Netns::with_bridge_and_tap(tag);
    let probe = netprobe();
    let mut args = vec![
        "--kernel",
        &probe,
        "--cpus",
        "2",
        "--tap",
        "vnet0",
        "--cmdline",
        "netprobe.mode=sink netprobe.count=1 netprobe.idle_ms=4000",
    ];
    args.extend_from_slice(extra);
    let mut child = ns
        .vmm_command(&args, 60)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start vmm");
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    let mut console = String::new();
    while !line.starts_with("netprobe: net mac=") && stdout.read_line(&mut line).unwrap_or(0) > 0 {
        console.push_str(&line);
        if !line.starts_with("netprobe: net mac=") {
            line.clear();
        }
    }
    // `ip netns exec` execs the VMM: the child's pid is the VMM's. Main installs its filter
    // once the vCPUs run, so look for up to 5 s.
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut modes = seccomp_modes(child.id());
    while Instant::now() < deadline
        && !THREADS
            .iter()
            .all(|t| modes.iter().any(|(name, mode)| name == t && mode == want))
    {
        std::thread::sleep(Duration::from_millis(50));
        modes = seccomp_modes(child.id());
    }
    drop(child.stdin.take());
    stdout.read_to_string(&mut console).unwrap();
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    let status = child.wait().unwrap();
    assert!(
        console.contains("netprobe: net mac="),
        "netprobe never became ready\n{console}\n{stderr}"
    );
    assert_eq!(status.code(), Some(0), "{console}\n{stderr}");
    assert!(!stderr.contains("seccomp"), "{stderr}");
    modes
}

#[test]
fn test_every_thread_of_a_running_vmm_is_filtered() {
    if !require_root_and_kvm("seccomp-on") {
        return;
    }
    let modes = thread_modes("scon", &[], "2");
    for thread in THREADS {
        assert!(
            modes
                .iter()
                .any(|(name, mode)| name == thread && mode == "2"),
            "thread {thread} is not in seccomp filter mode (2): {modes:?}"
        );
    }
}

#[test]
fn test_seccomp_off_leaves_every_thread_unfiltered() {
    if !require_root_and_kvm("seccomp-off") {
        return;
    }
    let modes = thread_modes("scoff", &["--seccomp", "off"], "0");
    for thread in THREADS {
        assert!(
            modes
                .iter()
                .any(|(name, mode)| name == thread && mode == "0"),
            "thread {thread} has a filter with --seccomp off: {modes:?}"
        );
    }
}
