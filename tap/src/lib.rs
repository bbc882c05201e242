//! Host side of vmm networking: tap and macvtap devices, and Linux bridges.
//!
//! A tap is a network interface whose "wire" is a file descriptor: every frame the kernel sends
//! out of the interface can be `read` from the fd, and every frame `write`n to the fd arrives
//! at the interface as if received from a cable. The VMM holds the fd; the guest's virtio-net
//! device moves frames between it and the guest's rings.
//!
//! A macvtap is the other way to give a guest a port: a virtual interface stacked on a real
//! ("lower") device, with its own MAC, whose character device `/dev/tapN` carries frames like a
//! tap fd. Its mode decides whether macvtaps on the same lower device reach each other.
//!
//! The tap ioctls are written by hand on purpose: they are the lesson. See [`Tap::open`] for the
//! steps. Links, bridges and macvtaps are made with rtnetlink (`netlink`), as `ip link` does;
//! `host::Host` wraps those into the operations of the seed articles. Both need the `host`
//! feature (default): the virtio-net device crate uses only [`Tap`] and [`MacAddr`], and builds
//! without it. `tapctl` needs the `cli` feature (default too).

#[cfg(feature = "host")]
pub mod host;
mod ifname;
mod ifreq;
#[cfg(feature = "host")]
pub mod link_monitor;
mod mac;
#[cfg(feature = "host")]
pub mod netlink;
mod stats;
mod tap;

#[cfg(feature = "host")]
pub use host::{Host, HostError, MacvtapMode};
pub use ifname::{validate_ifname, IfNameError, IFNAME_MAX_LEN};
#[cfg(feature = "host")]
pub use link_monitor::{LinkMonitor, LinkState};
pub use mac::{MacAddr, MacParseError};
pub use stats::LinkStats;
pub use tap::{ensure_char_device, macvtap_char_device, Tap, TapError, VNET_HDR_LEN};
