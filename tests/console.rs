//! The guest console on a real terminal (a pty): raw mode while the VM runs, the Ctrl-A
//! escape, and the terminal put back afterwards.

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use vmm_integration_tests::{require_kvm, tiny_elf, vmm_bin, TempFile};

/// A pty pair: (master, slave).
fn pty() -> (std::fs::File, OwnedFd) {
    let (mut master, mut slave) = (0, 0);
    // SAFETY: openpty writes two new fds; the other arguments may be null.
    let ret = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            std::ptr::null(),
        )
    };
    assert_eq!(ret, 0, "openpty: {}", std::io::Error::last_os_error());
    // SAFETY: both fds are new and ours.
    unsafe {
        (
            std::fs::File::from_raw_fd(master),
            OwnedFd::from_raw_fd(slave),
        )
    }
}

/// The terminal's local flags (ICANON, ECHO, ISIG ...).
fn lflags(fd: &OwnedFd) -> libc::tcflag_t {
    // SAFETY: termios is plain data; tcgetattr fills it for a terminal fd.
    let mut t: libc::termios = unsafe { std::mem::zeroed() };
    // SAFETY: a valid fd and termios.
    assert_eq!(unsafe { libc::tcgetattr(fd.as_raw_fd(), &mut t) }, 0);
    t.c_lflag
}

#[test]
fn test_raw_terminal_ctrl_a_x_quits_and_the_terminal_is_restored() {
    if !require_kvm("console") {
        return;
    }
    // A guest that spins until stopped.
    let guest = TempFile::with("console-spin.elf", &tiny_elf(&[0xeb, 0xfe]));
    let (mut master, slave) = pty();
    let before = lflags(&slave);
    assert_ne!(before & libc::ICANON, 0, "a fresh pty is in canonical mode");
    let mut child = Command::new(vmm_bin())
        .args(["--kernel", guest.path(), "--timeout", "60"])
        .stdin(Stdio::from(slave.try_clone().unwrap()))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start vmm");

    // Raw mode while the VM runs.
    let deadline = Instant::now() + Duration::from_secs(10);
    while lflags(&slave) & libc::ICANON != 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let raw = lflags(&slave);
    assert_eq!(
        raw & (libc::ICANON | libc::ECHO | libc::ISIG),
        0,
        "raw mode: {raw:#o}"
    );

    // Ctrl-A h prints the help; Ctrl-A x quits.
    master.write_all(b"\x01h").unwrap();
    std::thread::sleep(Duration::from_millis(300));
    master.write_all(b"\x01x").unwrap();
    let status = child.wait().unwrap();
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();

    assert_eq!(status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("vmm console: C-a x  quit the VM"),
        "{stderr}"
    );
    assert!(stderr.contains("vmm: quit (Ctrl-A x)"), "{stderr}");
    assert_eq!(lflags(&slave), before, "the terminal is as it was");
}

#[test]
fn test_a_signal_while_raw_restores_the_terminal() {
    if !require_kvm("console-signal") {
        return;
    }
    let guest = TempFile::with("console-spin2.elf", &tiny_elf(&[0xeb, 0xfe]));
    let (_master, slave) = pty();
    let before = lflags(&slave);
    let mut child = Command::new(vmm_bin())
        .args(["--kernel", guest.path(), "--timeout", "60"])
        .stdin(Stdio::from(slave.try_clone().unwrap()))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start vmm");
    let deadline = Instant::now() + Duration::from_secs(10);
    while lflags(&slave) & libc::ICANON != 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(lflags(&slave) & libc::ICANON, 0, "raw mode");

    // SAFETY: kill with our child's pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();

    assert_eq!(status.code(), Some(128 + libc::SIGTERM));
    assert_eq!(lflags(&slave), before, "the terminal is as it was");
}
