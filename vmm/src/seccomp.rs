//! Seccomp filters: each thread may make only the system calls its job needs.
//!
//! Every thread installs its own filter when it starts its work, before the guest runs (main
//! installs its own once the vCPUs run): a vCPU thread can only run KVM and tun ioctls (a
//! status write activates a NIC on the vCPU thread), read and write eventfds and the console; the virtio-net thread only epoll, readv/writev on the taps
//! and tun ioctls; the threads that may have to undo host changes (main, signals, stdin for
//! Ctrl-A x) also netlink sockets and read-only opens (the `/sys` statistics). Nothing may
//! `execve`, open a file for writing, or make a socket other than netlink.
//!
//! A call outside the list raises SIGSYS (`SeccompAction::Trap`); the handler prints one line
//! naming the thread and the system call, and the VMM exits with status 159 (128 + SIGSYS)
//! without cleaning up — host devices it created stay; `tapctl del` removes them. It is a
//! bug in the VMM, not the guest's doing: `--seccomp off` runs without filters while it is
//! found. Firecracker kills too; a log line is what makes it debuggable.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

/// Exit status after a denied system call: as if killed by SIGSYS.
pub const DENIED_EXIT_STATUS: i32 = 128 + libc::SIGSYS;

/// Errors building or installing a filter.
#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    /// A rule did not compile (a bug here).
    #[error("cannot build the seccomp filter of the {thread} thread: {source}")]
    Build {
        /// Which thread's filter.
        thread: &'static str,
        /// What seccompiler said.
        #[source]
        source: seccompiler::Error,
    },
    /// The kernel refused the filter.
    #[error("cannot install the seccomp filter of the {thread} thread: {source} (--seccomp off runs without filters)")]
    Install {
        /// Which thread's filter.
        thread: &'static str,
        /// What seccompiler said.
        #[source]
        source: seccompiler::Error,
    },
}

/// The VMM's threads, each with its own allow-list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ThreadKind {
    /// A vCPU: `KVM_RUN` and the exits it handles.
    Vcpu,
    /// The virtio-net event loop.
    Device,
    /// The console's stdin reader (and Ctrl-A x, which ends the VM).
    Stdin,
    /// The signal thread (SIGINT/SIGTERM end the VM, SIGUSR1 prints the table).
    Signals,
    /// The main thread once the vCPUs run: waits, reports, undoes host changes.
    Main,
}

impl ThreadKind {
    /// The name used in messages.
    pub fn name(self) -> &'static str {
        match self {
            ThreadKind::Vcpu => "vcpu",
            ThreadKind::Device => "virtio-net",
            ThreadKind::Stdin => "stdin",
            ThreadKind::Signals => "signals",
            ThreadKind::Main => "main",
        }
    }
}

static ENABLED: AtomicBool = AtomicBool::new(true);

/// Turns filters on (the default) or off (`--seccomp off`) for threads that start later.
pub fn set_enabled(enabled: bool) {
    ENABLED.store(enabled, Ordering::Relaxed);
}

/// Whether threads install filters.
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

thread_local! {
    /// This thread's kind, for the SIGSYS handler's message.
    static KIND: Cell<Option<ThreadKind>> = const { Cell::new(None) };
}

/// Every thread: memory, futexes, signals, time, its own end, and writing to fds it was
/// given (stderr for logs, eventfds). `sendto`: signal-hook's handler writes to its socket on
/// whichever thread the signal lands.
const COMMON: &[libc::c_long] = &[
    libc::SYS_futex,
    libc::SYS_write,
    libc::SYS_writev,
    libc::SYS_sendto,
    libc::SYS_close,
    libc::SYS_fcntl,
    libc::SYS_mmap,
    libc::SYS_munmap,
    libc::SYS_mprotect,
    libc::SYS_madvise,
    libc::SYS_mremap,
    libc::SYS_brk,
    libc::SYS_rt_sigreturn,
    libc::SYS_rt_sigprocmask,
    libc::SYS_rt_sigaction,
    libc::SYS_sigaltstack,
    libc::SYS_restart_syscall,
    libc::SYS_exit,
    libc::SYS_exit_group,
    libc::SYS_sched_yield,
    libc::SYS_sched_getaffinity,
    libc::SYS_clock_gettime,
    libc::SYS_clock_nanosleep,
    libc::SYS_nanosleep,
    libc::SYS_getrandom,
    libc::SYS_gettid,
    libc::SYS_getpid,
    libc::SYS_tgkill,
];

/// Threads that may undo host changes and print the symmetry table: netlink, read-only
/// opens of `/sys`, the terminal's ioctls.
const HOST: &[libc::c_long] = &[
    libc::SYS_read,
    libc::SYS_lseek,
    libc::SYS_statx,
    libc::SYS_newfstatat,
    libc::SYS_fstat,
    libc::SYS_poll,
    libc::SYS_ppoll,
    libc::SYS_ioctl,
    libc::SYS_bind,
    libc::SYS_connect,
    libc::SYS_getsockname,
    libc::SYS_getsockopt,
    libc::SYS_setsockopt,
    libc::SYS_sendmsg,
    libc::SYS_recvfrom,
    libc::SYS_recvmsg,
];

/// ioctl type byte (bits 8-15 of the request) of KVM's ioctls (`KVMIO`).
const KVMIO: u64 = 0xae;
/// ioctl type byte of tun's ioctls ('T').
const TUNIO: u64 = b'T' as u64;

fn cond(arg: u8, op: SeccompCmpOp, value: u64) -> Result<SeccompCondition, seccompiler::Error> {
    SeccompCondition::new(arg, SeccompCmpArgLen::Dword, op, value).map_err(Into::into)
}

/// ioctl only with requests of one type (`KVMIO`, 'T').
fn ioctl_of_type(kind: u64) -> Result<Vec<SeccompRule>, seccompiler::Error> {
    let rule = SeccompRule::new(vec![cond(1, SeccompCmpOp::MaskedEq(0xff00), kind << 8)?])?;
    Ok(vec![rule])
}

/// The allow-list of `kind`: syscall number → rules (empty: any arguments).
fn rules(kind: ThreadKind) -> Result<BTreeMap<i64, Vec<SeccompRule>>, seccompiler::Error> {
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    let mut allow = |list: &[libc::c_long]| {
        for &nr in list {
            rules.insert(nr, Vec::new());
        }
    };
    allow(COMMON);
    match kind {
        ThreadKind::Vcpu => {
            allow(&[libc::SYS_read]);
            // KVM_RUN and friends; TUNSETOFFLOAD when the driver's status write activates or
            // resets a NIC (the transport runs on the vCPU that exits).
            let mut ioctls = ioctl_of_type(KVMIO)?;
            ioctls.extend(ioctl_of_type(TUNIO)?);
            rules.insert(libc::SYS_ioctl, ioctls);
        }
        ThreadKind::Device => {
            allow(&[
                libc::SYS_read,
                libc::SYS_readv,
                libc::SYS_epoll_wait,
                libc::SYS_epoll_pwait,
                libc::SYS_epoll_ctl,
                // Host link changes from the netlink socket opened at setup (net/link.rs);
                // its resynchronising request goes out with sendto (COMMON).
                libc::SYS_recvfrom,
                // To stop the VM if the event loop ends (net/attach.rs).
                libc::SYS_kill,
            ]);
            rules.insert(libc::SYS_ioctl, ioctl_of_type(TUNIO)?);
        }
        ThreadKind::Stdin | ThreadKind::Signals | ThreadKind::Main => {
            allow(HOST);
            // Sockets: netlink only.
            let netlink =
                SeccompRule::new(vec![cond(0, SeccompCmpOp::Eq, libc::AF_NETLINK as u64)?])?;
            rules.insert(libc::SYS_socket, vec![netlink]);
            // Opens: read-only, never creating (the /sys statistics).
            let mask = (libc::O_ACCMODE | libc::O_CREAT | libc::O_TRUNC) as u64;
            let read_only = SeccompRule::new(vec![cond(2, SeccompCmpOp::MaskedEq(mask), 0)?])?;
            rules.insert(libc::SYS_openat, vec![read_only]);
        }
    }
    Ok(rules)
}

/// The compiled filter of `kind`.
pub fn filter(kind: ThreadKind) -> Result<BpfProgram, SeccompError> {
    let build = |source| SeccompError::Build {
        thread: kind.name(),
        source,
    };
    let filter = SeccompFilter::new(
        rules(kind).map_err(build)?,
        SeccompAction::Trap,
        SeccompAction::Allow,
        TargetArch::x86_64,
    )
    .map_err(|e| build(e.into()))?;
    filter
        .try_into()
        .map_err(|e: seccompiler::BackendError| build(e.into()))
}

/// Installs `kind`'s filter on the calling thread, if filters are on. The SIGSYS handler
/// (installed once, process-wide) reports a denied call.
pub fn apply(kind: ThreadKind) -> Result<(), SeccompError> {
    if !enabled() {
        return Ok(());
    }
    let program = filter(kind)?;
    install_sigsys_handler();
    KIND.with(|k| k.set(Some(kind)));
    seccompiler::apply_filter(&program).map_err(|source| SeccompError::Install {
        thread: kind.name(),
        source,
    })
}

/// Installs `kind`'s filter or ends the VMM saying why: a thread without its filter must not
/// go on as if it had one.
pub fn apply_or_exit(kind: ThreadKind) {
    if let Err(e) = apply(kind) {
        eprintln!("vmm: {e}");
        std::process::exit(1);
    }
}

fn install_sigsys_handler() {
    static INSTALLED: std::sync::Once = std::sync::Once::new();
    INSTALLED.call_once(|| {
        // SAFETY: a zeroed sigaction with our handler and SA_SIGINFO is a valid argument;
        // the handler only does async-signal-safe work (see on_sigsys).
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_sigsys as *const () as usize;
            action.sa_flags = libc::SA_SIGINFO;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(libc::SIGSYS, &action, std::ptr::null_mut());
        }
    });
}

/// Offset of `si_syscall` in a SIGSYS `siginfo_t` on x86-64 (after signo, errno, code,
/// padding and `si_call_addr`).
const SI_SYSCALL_OFFSET: usize = 24;

extern "C" fn on_sigsys(_: libc::c_int, info: *mut libc::siginfo_t, _: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo_t, whose SIGSYS fields include si_syscall
    // at this offset; we read 4 bytes inside the structure (128 bytes long).
    let nr = unsafe {
        info.cast::<u8>()
            .add(SI_SYSCALL_OFFSET)
            .cast::<i32>()
            .read_unaligned()
    };
    let thread = KIND.with(|k| k.get()).map_or("unknown", ThreadKind::name);
    let mut line = [0u8; 256];
    let len = denied_message(&mut line, thread, nr);
    // SAFETY: write(2) and _exit(2) are async-signal-safe; the buffer is ours.
    unsafe {
        libc::write(2, line.as_ptr().cast(), len);
        libc::_exit(DENIED_EXIT_STATUS);
    }
}

/// Writes the message for a denied call into `out` without allocating (it runs in a signal
/// handler); returns its length.
fn denied_message(out: &mut [u8], thread: &str, nr: i32) -> usize {
    let mut digits = [0u8; 12];
    let mut n = nr.unsigned_abs();
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    let parts: [&[u8]; 5] = [
        b"\nvmm: seccomp: the ",
        thread.as_bytes(),
        b" thread made system call ",
        &digits[at..],
        b", which its filter does not allow: a bug in vmm, please report it; it stops now \
          (host devices it created stay: tapctl del; --seccomp off runs without filters)\n",
    ];
    let mut len = 0;
    for part in parts {
        let n = part.len().min(out.len() - len);
        out[len..len + n].copy_from_slice(&part[..n]);
        len += n;
    }
    len
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_every_filter_compiles() {
        for kind in [
            ThreadKind::Vcpu,
            ThreadKind::Device,
            ThreadKind::Stdin,
            ThreadKind::Signals,
            ThreadKind::Main,
        ] {
            assert!(!filter(kind).unwrap().is_empty(), "{kind:?}");
        }
    }

    #[test]
    fn test_denied_message_names_thread_and_call() {
        let mut out = [0u8; 256];
        let len = denied_message(&mut out, "vcpu", 41);
        let text = std::str::from_utf8(&out[..len]).unwrap();
        assert!(
            text.starts_with("\nvmm: seccomp: the vcpu thread made system call 41, which"),
            "{text}"
        );
        assert!(
            text.ends_with("--seccomp off runs without filters)\n"),
            "{text}"
        );
    }

    /// Runs `body` in a forked child with stderr on a pipe; returns (exit status, stderr).
    fn in_child(body: impl FnOnce()) -> (i32, String) {
        let mut fds = [0; 2];
        // SAFETY: pipe writes two fds into the array.
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        // SAFETY: the child only does what `body` does and exits with _exit; the test
        // bodies below call only async-signal-safe functions after the fork (the filter is
        // built before).
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0);
        if pid == 0 {
            // SAFETY: as above; fds are ours.
            unsafe {
                libc::dup2(fds[1], 2);
                libc::close(fds[0]);
            }
            body();
            // SAFETY: ends the child without running the parent's atexit handlers.
            unsafe { libc::_exit(0) };
        }
        let mut status = 0;
        // SAFETY: our child; status is ours to write.
        unsafe {
            libc::close(fds[1]);
            libc::waitpid(pid, &mut status, 0);
        }
        let mut text = Vec::new();
        // SAFETY: the read end is ours; File takes ownership and closes it.
        let mut pipe = unsafe { <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(fds[0]) };
        std::io::Read::read_to_end(&mut pipe, &mut text).unwrap();
        (
            libc::WEXITSTATUS(status),
            String::from_utf8_lossy(&text).into_owned(),
        )
    }

    #[test]
    fn test_a_vcpu_thread_opening_a_socket_is_stopped_with_a_message() {
        let program = filter(ThreadKind::Vcpu).unwrap();
        let (status, stderr) = in_child(|| {
            install_sigsys_handler();
            KIND.with(|k| k.set(Some(ThreadKind::Vcpu)));
            seccompiler::apply_filter(&program).unwrap();
            // SAFETY: a plain system call; the filter turns it into SIGSYS.
            unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0) };
        });
        assert_eq!(status, DENIED_EXIT_STATUS, "{stderr}");
        let expected = format!(
            "vmm: seccomp: the vcpu thread made system call {}, which its filter does not allow",
            libc::SYS_socket
        );
        assert!(stderr.contains(&expected), "{stderr}");
    }

    #[test]
    fn test_allowed_calls_pass_and_argument_rules_hold() {
        let vcpu = filter(ThreadKind::Vcpu).unwrap();
        let main = filter(ThreadKind::Main).unwrap();
        // A vCPU thread may write and use KVM and tun ioctls, but not a socket ioctl.
        let (status, stderr) = in_child(|| {
            install_sigsys_handler();
            seccompiler::apply_filter(&vcpu).unwrap();
            // SAFETY: plain system calls on fds we own or none at all.
            unsafe {
                libc::ioctl(-1, libc::TUNSETOFFLOAD, 0);
                libc::write(2, b"ok\n".as_ptr().cast(), 3);
                libc::ioctl(-1, libc::SIOCGIFFLAGS, 0);
            }
        });
        assert_eq!(status, DENIED_EXIT_STATUS, "{stderr}");
        assert!(stderr.starts_with("ok\n"), "{stderr}");
        assert!(
            stderr.contains(&format!("system call {}", libc::SYS_ioctl)),
            "{stderr}"
        );
        // Main may open /sys read-only and make a netlink socket, but not open for writing.
        let (status, stderr) = in_child(|| {
            install_sigsys_handler();
            seccompiler::apply_filter(&main).unwrap();
            // SAFETY: plain system calls; paths are NUL-terminated literals.
            unsafe {
                let fd = libc::open(c"/sys/class/net/lo/mtu".as_ptr(), libc::O_RDONLY);
                let nl = libc::socket(libc::AF_NETLINK, libc::SOCK_RAW, libc::NETLINK_ROUTE);
                if fd >= 0 && nl >= 0 {
                    libc::write(2, b"ok\n".as_ptr().cast(), 3);
                }
                libc::open(
                    c"/tmp/vmm-seccomp-test".as_ptr(),
                    libc::O_WRONLY | libc::O_CREAT,
                    0o600,
                );
            }
        });
        assert_eq!(status, DENIED_EXIT_STATUS, "{stderr}");
        assert!(stderr.starts_with("ok\n"), "{stderr}");
        assert!(
            stderr.contains(&format!("system call {}", libc::SYS_openat)),
            "{stderr}"
        );
    }
}
