//! Where frames go: the tap file descriptor. One `writev` per guest TX frame and one `readv`
//! per guest RX frame, straight between the tap and guest memory (no bounce buffer), and the
//! tap's offloads: what it can hand the guest (TUNSETOFFLOAD) follows what the guest accepted.

use std::io;
use std::os::fd::AsRawFd;

use vmm_tap::Tap;

use crate::iovecs::GuestIovecs;

/// Every TUN_F_* offload a virtio-net guest can use.
pub const ALL_TUN_OFFLOADS: u32 = libc::TUN_F_CSUM
    | libc::TUN_F_TSO4
    | libc::TUN_F_TSO6
    | libc::TUN_F_TSO_ECN
    | libc::TUN_F_UFO
    | libc::TUN_F_USO4
    | libc::TUN_F_USO6;

/// A frame sink and source. Each read or write moves exactly one `[virtio_net_hdr_v1 | frame]`.
pub trait Backend: AsRawFd + Send {
    /// Sends one frame gathered from `frame` (guest memory); returns the bytes written.
    fn write_frame(&mut self, frame: GuestIovecs<'_>) -> io::Result<usize>;
    /// Receives one frame scattered into `bufs` (guest memory); returns its length.
    /// `ErrorKind::WouldBlock` means no frame is waiting.
    fn read_frame(&mut self, bufs: GuestIovecs<'_>) -> io::Result<usize>;
    /// The TUN_F_* offloads the backend can deliver to the guest (the device offers the
    /// matching VIRTIO_NET_F_GUEST_* features and no others). Asked once, when the device is made.
    fn supported_offloads(&mut self) -> u32 {
        0
    }
    /// Lets the backend hand the guest frames with these TUN_F_* offloads (checksum left to
    /// the guest, large segments); 0 = none.
    fn set_offloads(&mut self, flags: u32) -> io::Result<()> {
        let _ = flags;
        Ok(())
    }
}

impl Backend for Tap {
    fn write_frame(&mut self, frame: GuestIovecs<'_>) -> io::Result<usize> {
        let iov = frame.as_iovecs();
        // SAFETY: each iovec covers mapped guest memory for the whole call (GuestIovecs'
        // invariant); the kernel only reads it.
        let n = unsafe { libc::writev(self.as_raw_fd(), iov.as_ptr(), iov.len() as libc::c_int) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n as usize)
    }

    fn read_frame(&mut self, bufs: GuestIovecs<'_>) -> io::Result<usize> {
        let iov = bufs.as_iovecs();
        // SAFETY: as for writev; the kernel writes at most `iov_len` bytes into each buffer, all
        // of which is guest RAM the driver gave us as device-writable.
        let n = unsafe { libc::readv(self.as_raw_fd(), iov.as_ptr(), iov.len() as libc::c_int) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n as usize)
    }

    fn supported_offloads(&mut self) -> u32 {
        self.probe_offloads(ALL_TUN_OFFLOADS)
    }

    fn set_offloads(&mut self, flags: u32) -> io::Result<()> {
        self.set_offload(flags).map_err(io::Error::other)
    }
}
