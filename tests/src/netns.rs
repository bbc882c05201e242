//! Network namespaces and raw sockets for the networking tests (DESIGN.md §7): every test
//! builds its own namespace with the documentation addresses, and the namespace is deleted when
//! the [`Netns`] is dropped, also when the test fails.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crate::{run_command, vmm_bin, Run};

static NEXT: AtomicUsize = AtomicUsize::new(0);

/// A network namespace of our own.
pub struct Netns {
    /// Its name (under /run/netns).
    pub name: String,
}

impl Netns {
    /// Creates an empty namespace with loopback up and IPv6 off (so that no router
    /// solicitations or MLD reports cross the taps and disturb byte counts).
    pub fn new(tag: &str) -> Netns {
        let name = format!(
            "vmmt-{}-{}-{tag}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        must(Command::new("ip").args(["netns", "add", &name]));
        let ns = Netns { name };
        ns.sh("sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1; ip link set lo up");
        ns
    }

    /// A namespace with bridge br0 (192.0.2.1/24) and a persistent tap vnet0 attached to it:
    /// the seed setup. br0 does no multicast snooping: a snooping bridge joins 224.0.0.106 and
    /// reports it (IGMPv3) when its first port comes up — like IPv6's chatter, a frame besides
    /// the test's own traffic that could reach the guest after it stopped counting.
    pub fn with_bridge_and_tap(tag: &str) -> Netns {
        let ns = Netns::new(tag);
        ns.sh(
            "ip link add br0 type bridge mcast_snooping 0 && \
             ip addr add 192.0.2.1/24 dev br0 && ip link set br0 up && \
             ip tuntap add dev vnet0 mode tap vnet_hdr && ip link set vnet0 master br0 && ip link set vnet0 up",
        );
        ns
    }

    /// Two namespaces joined by a veth pair: `vA` (up, no address) here, `vB` with
    /// 198.51.100.1/24 in the returned peer namespace — the "outside host".
    pub fn with_veth_peer(tag: &str) -> (Netns, Netns) {
        let ns = Netns::new(tag);
        let peer = Netns::new(&format!("{tag}-peer"));
        ns.sh(&format!(
            "ip link add vA type veth peer name vB netns {} && ip link set vA up",
            peer.name
        ));
        peer.sh("ip addr add 198.51.100.1/24 dev vB && ip link set vB up");
        (ns, peer)
    }

    /// The names of the links in the namespace.
    pub fn links(&self) -> Vec<String> {
        self.sh("ls /sys/class/net")
            .split_whitespace()
            .map(str::to_owned)
            .collect()
    }

    /// Runs a shell command in the namespace; panics with its output if it fails.
    pub fn sh(&self, script: &str) -> String {
        let out = must(Command::new("ip").args(["netns", "exec", &self.name, "sh", "-c", script]));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// A statistics counter of `dev` (e.g. "rx_bytes").
    pub fn stat(&self, dev: &str, counter: &str) -> u64 {
        self.sh(&format!("cat /sys/class/net/{dev}/statistics/{counter}"))
            .trim()
            .parse()
            .expect("a counter is a number")
    }

    /// Whether interface `dev` exists in the namespace.
    pub fn has_link(&self, dev: &str) -> bool {
        Command::new("ip")
            .args(["netns", "exec", &self.name, "ip", "link", "show", dev])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// `vmm` with `args` inside the namespace, with a guest deadline.
    pub fn vmm_command(&self, args: &[&str], timeout_s: u64) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name])
            .arg(vmm_bin())
            .args(args)
            .args(["--timeout", &timeout_s.to_string()]);
        cmd
    }

    /// Runs `vmm` in the namespace to the end.
    pub fn run_vmm(&self, args: &[&str], timeout_s: u64) -> Run {
        run_command(&mut self.vmm_command(args, timeout_s))
    }

    /// Starts `vmm args` in the namespace, waits for netprobe's "ready" line, runs `during`
    /// with the guest's MAC and the VMM's pid, then collects the rest of the run.
    pub fn with_running_guest(&self, args: &[&str], during: impl FnOnce([u8; 6], u32)) -> Run {
        self.with_running_guest_for(args, 60, during)
    }

    /// [`Self::with_running_guest`] with a guest deadline of `timeout_s` seconds.
    pub fn with_running_guest_for(
        &self,
        args: &[&str],
        timeout_s: u64,
        during: impl FnOnce([u8; 6], u32),
    ) -> Run {
        let mut child = self
            .vmm_command(args, timeout_s)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start vmm");
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut console = String::new();
        let mut mac = None;
        let mut line = String::new();
        while mac.is_none() && stdout.read_line(&mut line).unwrap_or(0) > 0 {
            if let Some(rest) = line.strip_prefix("netprobe: net mac=") {
                mac = Some(parse_mac(rest.split(' ').next().unwrap()));
            }
            console.push_str(&line);
            line.clear();
        }
        if let Some(mac) = mac {
            // `ip netns exec` execs the VMM: the child's pid is the VMM's.
            during(mac, child.id());
        }
        stdout.read_to_string(&mut console).unwrap();
        let mut stderr = String::new();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut stderr)
            .unwrap();
        let status = child.wait().unwrap();
        let run = Run {
            stdout: console,
            stderr,
            code: status.code(),
        };
        assert!(mac.is_some(), "netprobe never became ready\n{}", run.dump());
        run
    }

    /// Runs `f` on a thread that has entered this namespace (setns is per thread).
    pub fn enter<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let path = format!("/run/netns/{}", self.name);
        std::thread::scope(|s| {
            s.spawn(|| {
                let ns = File::open(&path).expect("open the namespace");
                // SAFETY: setns with a namespace fd we own affects only this thread.
                let ret = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
                assert_eq!(ret, 0, "setns: {}", io::Error::last_os_error());
                f()
            })
            .join()
            .expect("namespace thread panicked")
        })
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

fn must(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("cannot run ip");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// An AF_PACKET socket bound to one interface and EtherType: what the tests use to put raw
/// frames on a bridge and read the guest's answers.
pub struct RawSocket {
    fd: OwnedFd,
    ifindex: i32,
}

impl RawSocket {
    /// Opens the socket on `ifname` (in the calling thread's namespace) for `ethertype`.
    pub fn open(ifname: &str, ethertype: u16) -> io::Result<RawSocket> {
        let proto = ethertype.to_be() as i32;
        // SAFETY: plain socket creation; the result is checked.
        let fd =
            unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, proto) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is a new descriptor we own.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let name = std::ffi::CString::new(ifname).unwrap();
        // SAFETY: name is a valid NUL-terminated string.
        let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) } as i32;
        if ifindex == 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: sockaddr_ll is plain data; zero is valid for every field.
        let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_protocol = ethertype.to_be();
        addr.sll_ifindex = ifindex;
        // SAFETY: addr is a valid sockaddr_ll and the length matches it.
        let ret = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&addr as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        if ret < 0 {
            return Err(io::Error::last_os_error());
        }
        let timeout = libc::timeval {
            tv_sec: 0,
            tv_usec: 200_000,
        };
        // SAFETY: SO_RCVTIMEO takes a timeval, which we pass with its size.
        unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&timeout as *const libc::timeval).cast(),
                std::mem::size_of::<libc::timeval>() as u32,
            )
        };
        Ok(RawSocket { fd, ifindex })
    }

    /// Sends one whole Ethernet frame.
    pub fn send(&self, frame: &[u8]) -> io::Result<()> {
        // SAFETY: sockaddr_ll is plain data; zero is valid for every field.
        let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_ifindex = self.ifindex;
        addr.sll_halen = 6;
        addr.sll_addr[..6].copy_from_slice(&frame[..6]);
        // SAFETY: frame is a valid buffer of its length; addr a valid sockaddr_ll.
        let n = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                frame.as_ptr().cast(),
                frame.len(),
                0,
                (&addr as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// From now on, every frame sent carries a `struct virtio_net_hdr` (10 bytes) in front:
    /// PACKET_VNET_HDR, the way to hand the kernel a GSO frame from user space.
    pub fn enable_vnet_hdr(&self) -> io::Result<()> {
        let on: libc::c_int = 1;
        // SAFETY: PACKET_VNET_HDR takes an int, passed with its size.
        let ret = unsafe {
            libc::setsockopt(
                self.fd.as_raw_fd(),
                libc::SOL_PACKET,
                libc::PACKET_VNET_HDR,
                (&on as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as u32,
            )
        };
        if ret < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Receives one frame, or `None` after the 200 ms receive timeout.
    pub fn recv(&self) -> Option<Vec<u8>> {
        let mut buf = vec![0u8; 2048];
        // SAFETY: buf is a writable buffer of its length.
        let n = unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            return None;
        }
        buf.truncate(n as usize);
        Some(buf)
    }

    /// Receives frames until `deadline` passes or `want` frames matched `keep`.
    pub fn collect(
        &self,
        want: usize,
        deadline: Duration,
        keep: impl Fn(&[u8]) -> bool,
    ) -> Vec<Vec<u8>> {
        let end = std::time::Instant::now() + deadline;
        let mut got = Vec::new();
        while got.len() < want && std::time::Instant::now() < end {
            if let Some(frame) = self.recv() {
                if keep(&frame) {
                    got.push(frame);
                }
            }
        }
        got
    }
}

/// The tests' EtherType (IEEE 802 local experimental), the frames netprobe's sink and echo count.
pub const ETH_TEST: u16 = 0x88b5;

/// A `len`-byte frame from `src` to `dst` of EtherType [`ETH_TEST`], its payload zero: the
/// caller writes a sequence number or pattern into it.
pub fn test_frame(dst: [u8; 6], src: [u8; 6], len: usize) -> Vec<u8> {
    let mut f = vec![0u8; len];
    f[0..6].copy_from_slice(&dst);
    f[6..12].copy_from_slice(&src);
    f[12..14].copy_from_slice(&ETH_TEST.to_be_bytes());
    f
}

/// CPU time (user + system, in clock ticks) the VMM `pid`'s thread named `name` has used.
pub fn thread_cpu_ticks(pid: u32, name: &str) -> u64 {
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).expect("the VMM's threads") {
        let dir = task.unwrap().path();
        let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        if comm.trim() != name {
            continue;
        }
        let stat = std::fs::read_to_string(dir.join("stat")).unwrap();
        // Fields after "(comm)": state is the 1st, utime the 12th, stime the 13th.
        let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
        return fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    }
    panic!("the VMM has no thread named {name}");
}

/// Parses "aa:bb:cc:dd:ee:ff".
pub fn parse_mac(s: &str) -> [u8; 6] {
    let mut mac = [0u8; 6];
    for (byte, part) in mac.iter_mut().zip(s.trim().split(':')) {
        *byte = u8::from_str_radix(part, 16).expect("a MAC address");
    }
    mac
}
