//! Host side of vmm networking: tap devices (and, later, macvtap devices and Linux bridges).
//!
//! A tap is a network interface whose "wire" is a file descriptor: every frame the kernel sends
//! out of the interface can be `read` from the fd, and every frame `write`n to the fd arrives
//! at the interface as if received from a cable. The VMM holds the fd; the guest's virtio-net
//! device moves frames between it and the guest's rings.
//!
//! The ioctls are written by hand on purpose: they are the lesson. See [`Tap::open`] for the
//! steps.

mod ifname;
mod ifreq;
mod tap;

pub use ifname::{validate_ifname, IfNameError, IFNAME_MAX_LEN};
pub use tap::{Tap, TapError, VNET_HDR_LEN};
