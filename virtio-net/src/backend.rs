//! Where frames go: the tap file descriptor. One `writev` per guest TX frame and one `readv`
//! per guest RX frame, straight between the tap and guest memory (no bounce buffer).

use std::io;
use std::os::fd::AsRawFd;

use vm_memory::VolatileSlice;
use vmm_tap::Tap;

/// A frame sink and source. Each call moves exactly one `[virtio_net_hdr_v1 | frame]`.
pub trait Backend: AsRawFd + Send {
    /// Sends one frame gathered from `bufs` (guest memory); returns the bytes written.
    fn write_frame(&mut self, bufs: &[VolatileSlice<'_>]) -> io::Result<usize>;
    /// Receives one frame scattered into `bufs` (guest memory); returns its length.
    /// `ErrorKind::WouldBlock` means no frame is waiting.
    fn read_frame(&mut self, bufs: &[VolatileSlice<'_>]) -> io::Result<usize>;
}

/// Turns guest memory slices into an iovec array for readv/writev.
fn iovecs(bufs: &[VolatileSlice<'_>]) -> Vec<libc::iovec> {
    bufs.iter()
        .map(|b| libc::iovec {
            iov_base: b.ptr_guard_mut().as_ptr().cast(),
            iov_len: b.len(),
        })
        .collect()
}

impl Backend for Tap {
    fn write_frame(&mut self, bufs: &[VolatileSlice<'_>]) -> io::Result<usize> {
        let iov = iovecs(bufs);
        // SAFETY: each iovec covers one VolatileSlice of mapped guest memory that stays mapped
        // for the whole call (the slices borrow the guest memory); the kernel only reads them.
        let n = unsafe { libc::writev(self.as_raw_fd(), iov.as_ptr(), iov.len() as libc::c_int) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n as usize)
    }

    fn read_frame(&mut self, bufs: &[VolatileSlice<'_>]) -> io::Result<usize> {
        let iov = iovecs(bufs);
        // SAFETY: as for writev; the kernel writes at most `iov_len` bytes into each slice, all
        // of which is guest RAM the driver gave us as device-writable.
        let n = unsafe { libc::readv(self.as_raw_fd(), iov.as_ptr(), iov.len() as libc::c_int) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n as usize)
    }
}
