//! Opening a tap device the way a VMM needs it.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::ifname::{validate_ifname, IfNameError};
use crate::ifreq::{self, ifreq_for};

/// Length of `struct virtio_net_hdr_v1`, the header in front of every frame on the tap fd
/// (virtio 1.2 §5.1.6; 12 bytes with VIRTIO_F_VERSION_1).
pub const VNET_HDR_LEN: usize = 12;

/// The clone device every tap is created or attached through.
const TUN_PATH: &str = "/dev/net/tun";

/// Errors while opening or configuring a tap.
#[derive(Debug, thiserror::Error)]
pub enum TapError {
    /// The name is not a valid interface name.
    #[error("invalid tap name")]
    Name(#[from] IfNameError),
    /// There is no /dev/net/tun.
    #[error("{TUN_PATH} does not exist: load the tun module (modprobe tun)")]
    NoTunDevice,
    /// Opening /dev/net/tun or creating the tap was not allowed.
    #[error(
        "permission denied creating or attaching tap {0}: run as root or give vmm CAP_NET_ADMIN, \
         or have root make it yours first: tapctl tap add {0} --owner $USER"
    )]
    Permission(String),
    /// The tap is down and we may not set it up.
    #[error("tap {0} is down and setting it up needs CAP_NET_ADMIN: ip link set {0} up (as root)")]
    Down(String),
    /// Another process holds the (single-queue) tap open.
    #[error("tap {0} is busy: another process (another VMM?) has it open")]
    Busy(String),
    /// An interface of that name exists but is not a tap.
    #[error("{0} exists and is not a tap device (pick another name or delete it)")]
    NotATap(String),
    /// The fd handed to us is not a tap or macvtap.
    #[error("fd {0} is not a tap or macvtap file descriptor (TUNGETIFF failed)")]
    FdNotATap(RawFd),
    /// No macvtap of that name.
    #[error("{0} is not a macvtap (no /sys/class/net/{0}/macvtap); create it first or use link= to let vmm create it")]
    NotAMacvtap(String),
    /// Any other ioctl failure.
    #[error("cannot {what} on tap {name}")]
    Ioctl {
        /// The step that failed.
        what: &'static str,
        /// The tap's name.
        name: String,
        /// The ioctl's error.
        #[source]
        source: io::Error,
    },
}

/// An open tap device: a file descriptor that carries `[virtio_net_hdr_v1 | Ethernet frame]`
/// per read or write, non-blocking.
#[derive(Debug)]
pub struct Tap {
    file: File,
    name: String,
}

impl Tap {
    /// Opens tap `name`, creating it if it does not exist (it then disappears when closed), and
    /// prepares it for a virtio-net device:
    ///
    /// 1. `open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC)`: a fresh, unattached tun fd.
    /// 2. `TUNSETIFF` with `IFF_TAP | IFF_NO_PI | IFF_VNET_HDR`: Ethernet frames, no extra
    ///    packet-info header, but a virtio-net header in front of each frame.
    /// 3. `TUNSETVNETHDRSZ(12)`: the VERSION_1 header size (a persistent tap may carry another).
    /// 4. `TUNSETOFFLOAD(0)`: no checksum/segmentation offloads until the guest acks them.
    /// 5. `SIOCSIFFLAGS` with `IFF_UP`: the link is up.
    pub fn open(name: &str) -> Result<Tap, TapError> {
        validate_ifname(name)?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(TUN_PATH)
            .map_err(|e| match e.kind() {
                io::ErrorKind::NotFound => TapError::NoTunDevice,
                _ => open_error(name, "open /dev/net/tun", e),
            })?;
        let tap = Tap {
            file,
            name: name.to_owned(),
        };

        let mut req = ifreq_for(name);
        req.ifr_ifru.ifru_flags =
            (libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR) as libc::c_short;
        // SAFETY: TUNSETIFF reads a `struct ifreq` (name and flags) and writes back the name;
        // `req` is a valid ifreq borrowed for the call, and the fd is our tun fd.
        let ret = unsafe { libc::ioctl(tap.file.as_raw_fd(), libc::TUNSETIFF as _, &mut req) };
        if ret < 0 {
            let err = io::Error::last_os_error();
            return Err(match err.raw_os_error() {
                Some(libc::EPERM) | Some(libc::EACCES) => TapError::Permission(name.to_owned()),
                Some(libc::EBUSY) => TapError::Busy(name.to_owned()),
                Some(libc::EINVAL) => TapError::NotATap(name.to_owned()),
                _ => tap.err("attach (TUNSETIFF)")(err),
            });
        }

        tap.set_vnet_hdr_size(VNET_HDR_LEN as i32)?;
        tap.set_offload(0)?;
        ifreq::set_link_up(name).map_err(|e| match e.raw_os_error() {
            Some(libc::EPERM) | Some(libc::EACCES) => TapError::Down(name.to_owned()),
            _ => tap.err("set the link up")(e),
        })?;
        Ok(tap)
    }

    /// Opens the character device of macvtap `name` (`/dev/tapN`, N = its ifindex) and prepares
    /// it like a tap. Without udev there is no `/dev/tapN`, and N (an ifindex) is only unique
    /// within a network namespace while /dev is shared: unless `/dev/tapN` already is this
    /// macvtap's device, a private node is made from the device number in
    /// `/sys/class/net/<name>/macvtap/tapN/dev`, opened, and removed again (the fd stays valid).
    pub fn open_macvtap(name: &str) -> Result<Tap, TapError> {
        validate_ifname(name)?;
        let (mut path, devno) = macvtap_char_device(name)?;
        let err = |what| {
            let name = name.to_owned();
            move |source| TapError::Ioctl { what, name, source }
        };
        let is_ours = std::fs::metadata(&path).is_ok_and(|m| {
            m.file_type().is_char_device() && m.rdev() == libc::makedev(devno.0, devno.1)
        });
        if !is_ours {
            path = PathBuf::from(format!(
                "/dev/.vmm-tap-{}-{}-{}",
                devno.0,
                devno.1,
                std::process::id()
            ));
        }
        let made_node =
            ensure_char_device(&path, devno).map_err(err("create the macvtap device node"))?;
        let opened = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(&path);
        if made_node {
            let _ = std::fs::remove_file(&path);
        }
        let file = opened.map_err(|e| open_error(name, "open the macvtap device", e))?;
        let tap = Tap {
            file,
            name: name.to_owned(),
        };
        tap.prepare_adopted()?;
        Ok(tap)
    }

    /// Adopts an already-open tap or macvtap fd (say, from a privileged helper). It must be a
    /// tap; the vnet header is switched on if the device allows (macvtap does; a tap must have
    /// been opened with IFF_VNET_HDR).
    pub fn from_fd(fd: OwnedFd) -> Result<Tap, TapError> {
        let raw = fd.as_raw_fd();
        let mut req = ifreq_for("");
        // SAFETY: TUNGETIFF writes one `struct ifreq`; `req` is valid and exclusively ours.
        let ret = unsafe { libc::ioctl(raw, libc::TUNGETIFF as _, &mut req) };
        // SAFETY: on success TUNGETIFF filled `ifru_flags`.
        if ret < 0 || unsafe { req.ifr_ifru.ifru_flags } as libc::c_int & libc::IFF_TAP == 0 {
            return Err(TapError::FdNotATap(raw));
        }
        let name: String = req
            .ifr_name
            .iter()
            .take_while(|c| **c != 0)
            .map(|c| *c as u8 as char)
            .collect();
        set_nonblocking_cloexec(raw).map_err(|source| TapError::Ioctl {
            what: "make the fd non-blocking (fcntl)",
            name: name.clone(),
            source,
        })?;
        let tap = Tap {
            file: File::from(fd),
            name,
        };
        tap.prepare_adopted()?;
        Ok(tap)
    }

    /// Vnet header on, 12 bytes, no offloads, for an fd we did not attach ourselves.
    fn prepare_adopted(&self) -> Result<(), TapError> {
        let mut req = ifreq_for("");
        // SAFETY: as in `from_fd`.
        let ret = unsafe { libc::ioctl(self.file.as_raw_fd(), libc::TUNGETIFF as _, &mut req) };
        if ret < 0 {
            return Err(self.err("read the flags (TUNGETIFF)")(
                io::Error::last_os_error(),
            ));
        }
        // SAFETY: TUNGETIFF filled `ifru_flags`.
        let flags = unsafe { req.ifr_ifru.ifru_flags } as libc::c_int;
        if flags & libc::IFF_VNET_HDR == 0 {
            req.ifr_ifru.ifru_flags =
                (libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR) as libc::c_short;
            // SAFETY: TUNSETIFF reads one `struct ifreq`; macvtap accepts it on an open fd to
            // change IFF_VNET_HDR.
            let ret = unsafe { libc::ioctl(self.file.as_raw_fd(), libc::TUNSETIFF as _, &mut req) };
            if ret < 0 {
                return Err(self
                    .err("switch on the vnet header (open the tap with vnet_hdr)")(
                    io::Error::last_os_error(),
                ));
            }
        }
        self.set_vnet_hdr_size(VNET_HDR_LEN as i32)?;
        self.set_offload(0)
    }

    /// Lets user `uid` and/or group `gid` attach to this (persistent) tap without
    /// CAP_NET_ADMIN (`TUNSETOWNER`, `TUNSETGROUP`; `ip tuntap add ... user U group G`).
    pub fn set_owner(&self, uid: Option<u32>, gid: Option<u32>) -> Result<(), TapError> {
        /// `_IOW('T', 204, int)` and `_IOW('T', 206, int)` (linux/if_tun.h; not in libc).
        const TUNSETOWNER: libc::c_ulong = 0x4004_54cc;
        const TUNSETGROUP: libc::c_ulong = 0x4004_54ce;
        for (request, id, what) in [
            (TUNSETOWNER, uid, "set its owner (TUNSETOWNER)"),
            (TUNSETGROUP, gid, "set its group (TUNSETGROUP)"),
        ] {
            let Some(id) = id else { continue };
            // SAFETY: both ioctls take the id by value on our tun fd.
            let ret = unsafe {
                libc::ioctl(self.file.as_raw_fd(), request as _, libc::c_ulong::from(id))
            };
            if ret < 0 {
                return Err(self.err(what)(io::Error::last_os_error()));
            }
        }
        Ok(())
    }

    /// Keeps the tap after its last fd closes (`persistent`), or lets it go.
    pub fn set_persistent(&self, persistent: bool) -> Result<(), TapError> {
        // SAFETY: TUNSETPERSIST takes its argument by value.
        let ret = unsafe {
            libc::ioctl(
                self.file.as_raw_fd(),
                libc::TUNSETPERSIST as _,
                libc::c_ulong::from(persistent),
            )
        };
        if ret < 0 {
            return Err(self.err("change persistence (TUNSETPERSIST)")(
                io::Error::last_os_error(),
            ));
        }
        Ok(())
    }

    fn err(&self, what: &'static str) -> impl FnOnce(io::Error) -> TapError + '_ {
        move |source| TapError::Ioctl {
            what,
            name: self.name.clone(),
            source,
        }
    }

    /// Sets the size of the virtio-net header the tap expects in front of each frame.
    pub fn set_vnet_hdr_size(&self, size: i32) -> Result<(), TapError> {
        // SAFETY: TUNSETVNETHDRSZ reads one int through the pointer, which points at `size`.
        let ret = unsafe { libc::ioctl(self.file.as_raw_fd(), libc::TUNSETVNETHDRSZ as _, &size) };
        if ret < 0 {
            return Err(self.err("set the vnet header size (TUNSETVNETHDRSZ)")(
                io::Error::last_os_error(),
            ));
        }
        Ok(())
    }

    /// Sets the offloads (TUN_F_CSUM, TUN_F_TSO4, ...) the tap may hand us; 0 = none.
    pub fn set_offload(&self, flags: u32) -> Result<(), TapError> {
        // SAFETY: TUNSETOFFLOAD takes its argument by value, not through a pointer.
        let ret = unsafe {
            libc::ioctl(
                self.file.as_raw_fd(),
                libc::TUNSETOFFLOAD as _,
                flags as libc::c_ulong,
            )
        };
        if ret < 0 {
            return Err(self.err("set offloads (TUNSETOFFLOAD)")(
                io::Error::last_os_error(),
            ));
        }
        Ok(())
    }

    /// Which of `wanted` (TUN_F_* bits) the tap accepts in TUNSETOFFLOAD, tried one group at a
    /// time as QEMU does: checksum first (every other offload needs it), then TSO4/TSO6 with
    /// ECN, UFO, and USO4+USO6 (Linux 6.2 and later). The tap is left with no offloads.
    ///
    /// Unknown bits make the kernel answer EINVAL ("a way to test for new features in future by
    /// trying to set them", `drivers/net/tun.c`), so this is how a VMM learns what it may offer.
    pub fn probe_offloads(&self, wanted: u32) -> u32 {
        const GROUPS: [u32; 3] = [
            libc::TUN_F_TSO4 | libc::TUN_F_TSO6 | libc::TUN_F_TSO_ECN,
            libc::TUN_F_UFO,
            libc::TUN_F_USO4 | libc::TUN_F_USO6,
        ];
        let mut accepted = 0;
        if wanted & libc::TUN_F_CSUM != 0 && self.set_offload(libc::TUN_F_CSUM).is_ok() {
            accepted = libc::TUN_F_CSUM;
            for group in GROUPS {
                let group = group & wanted;
                if group != 0 && self.set_offload(libc::TUN_F_CSUM | group).is_ok() {
                    accepted |= group;
                }
            }
        }
        let _ = self.set_offload(0);
        accepted
    }

    /// The interface name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The tap's MTU.
    pub fn mtu(&self) -> Result<u32, TapError> {
        ifreq::mtu(&self.name).map_err(self.err("read the MTU"))
    }
}

/// O_NONBLOCK and FD_CLOEXEC on `fd`, keeping its other flags; every fcntl checked.
fn set_nonblocking_cloexec(fd: RawFd) -> io::Result<()> {
    let check = |ret: libc::c_int| {
        if ret < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(ret)
        }
    };
    // SAFETY: F_GETFL/F_SETFL/F_SETFD only read or set descriptor flags; no memory is passed.
    let flags = check(unsafe { libc::fcntl(fd, libc::F_GETFL) })?;
    // SAFETY: as above.
    check(unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) })?;
    // SAFETY: as above.
    check(unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) })?;
    Ok(())
}

/// A failed open of a tap's device: "permission denied" names the fix, anything else the step.
fn open_error(name: &str, what: &'static str, source: io::Error) -> TapError {
    match source.kind() {
        io::ErrorKind::PermissionDenied => TapError::Permission(name.to_owned()),
        _ => TapError::Ioctl {
            what,
            name: name.to_owned(),
            source,
        },
    }
}

/// `/dev/tapN` of macvtap `name` and its device number (major, minor) from sysfs.
pub fn macvtap_char_device(name: &str) -> Result<(PathBuf, (u32, u32)), TapError> {
    let dir = Path::new("/sys/class/net").join(name).join("macvtap");
    let entry = std::fs::read_dir(&dir)
        .ok()
        .and_then(|mut entries| entries.find_map(|e| e.ok()))
        .ok_or_else(|| TapError::NotAMacvtap(name.to_owned()))?;
    let node = entry.file_name().to_string_lossy().into_owned(); // "tapN"
    let dev =
        std::fs::read_to_string(entry.path().join("dev")).map_err(|source| TapError::Ioctl {
            what: "read the macvtap device number",
            name: name.to_owned(),
            source,
        })?;
    let (major, minor) = dev
        .trim()
        .split_once(':')
        .and_then(|(a, b)| Some((a.parse().ok()?, b.parse().ok()?)))
        .ok_or_else(|| TapError::NotAMacvtap(name.to_owned()))?;
    Ok((Path::new("/dev").join(node), (major, minor)))
}

/// Makes `path` a character device with `devno` unless it already is one; true if made.
pub fn ensure_char_device(path: &Path, (major, minor): (u32, u32)) -> io::Result<bool> {
    let devno = libc::makedev(major, minor);
    if let Ok(meta) = std::fs::metadata(path) {
        if meta.file_type().is_char_device() && meta.rdev() == devno {
            return Ok(false);
        }
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!("{} exists and is not the macvtap's device", path.display()),
        ));
    }
    let c_path =
        std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).map_err(io::Error::other)?;
    // SAFETY: c_path is a valid NUL-terminated path; mknod has no other memory arguments.
    let ret = unsafe { libc::mknod(c_path.as_ptr(), libc::S_IFCHR | 0o600, devno) };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(true)
}

impl AsRawFd for Tap {
    fn as_raw_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_fcntl_on_a_closed_fd_is_an_error_not_ignored() {
        assert!(set_nonblocking_cloexec(-1).is_err());
        let mut fds = [0; 2];
        // SAFETY: pipe writes two new fds into the array we pass.
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        set_nonblocking_cloexec(fds[0]).unwrap();
        // SAFETY: F_GETFL on a pipe fd we own.
        let flags = unsafe { libc::fcntl(fds[0], libc::F_GETFL) };
        assert_ne!(flags & libc::O_NONBLOCK, 0);
        // SAFETY: both fds are ours and used no more.
        unsafe {
            libc::close(fds[0]);
            libc::close(fds[1]);
        }
    }

    #[test]
    fn test_open_rejects_long_name_before_touching_the_system() {
        let err = Tap::open("a-very-long-tap-name").unwrap_err();
        assert!(matches!(err, TapError::Name(IfNameError::TooLong { .. })));
    }
}
