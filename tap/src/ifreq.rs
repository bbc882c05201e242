//! `struct ifreq` ioctls on a control socket: link flags, MTU, MAC and index of an interface
//! by name (netdevice(7)). They act in the caller's network namespace.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// An `ifreq` whose name field holds `name` (already validated: at most 15 bytes).
pub fn ifreq_for(name: &str) -> libc::ifreq {
    // SAFETY: ifreq is plain old data (chars and a union of integers/sockaddrs); all-zero is a
    // valid value of every field.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(name.bytes()) {
        *dst = src as libc::c_char;
    }
    req
}

/// A datagram socket for interface ioctls (any family works; AF_INET is always there).
fn control_socket() -> io::Result<OwnedFd> {
    // SAFETY: socket() has no memory preconditions; the result is checked before use.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a freshly created descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Runs interface ioctl `request` with `req` on a control socket.
pub fn ifreq_ioctl(request: libc::c_ulong, req: &mut libc::ifreq) -> io::Result<()> {
    let sock = control_socket()?;
    // SAFETY: every SIOC*IF* request used in this crate reads and/or writes one `struct ifreq`,
    // and `req` is a valid, exclusively borrowed ifreq for the duration of the call.
    let ret = unsafe { libc::ioctl(sock.as_raw_fd(), request as _, req as *mut libc::ifreq) };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Sets IFF_UP on `name` (like `ip link set NAME up`), unless it is up already: setting it
/// needs CAP_NET_ADMIN, which a user running the VMM on a tap made for them does not have.
pub fn set_link_up(name: &str) -> io::Result<()> {
    let mut req = ifreq_for(name);
    ifreq_ioctl(libc::SIOCGIFFLAGS, &mut req)?;
    // SAFETY: SIOCGIFFLAGS filled the `ifru_flags` member of the union.
    let flags = unsafe { req.ifr_ifru.ifru_flags };
    if flags & libc::IFF_UP as libc::c_short != 0 {
        return Ok(());
    }
    req.ifr_ifru.ifru_flags = flags | libc::IFF_UP as libc::c_short;
    ifreq_ioctl(libc::SIOCSIFFLAGS, &mut req)
}

/// The MTU of `name`.
pub fn mtu(name: &str) -> io::Result<u32> {
    let mut req = ifreq_for(name);
    ifreq_ioctl(libc::SIOCGIFMTU, &mut req)?;
    // SAFETY: SIOCGIFMTU filled the `ifru_mtu` member of the union.
    Ok(unsafe { req.ifr_ifru.ifru_mtu } as u32)
}
