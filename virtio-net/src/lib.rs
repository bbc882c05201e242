//! The virtio-net device model: features, config space, RX/TX over virtio-queue, counters.
//!
//! It has no KVM dependency: a transport (the VMM's virtio-mmio) drives it through
//! [`VirtioDevice`], an event loop through [`event_manager::MutEventSubscriber`], and frames go
//! to a [`Backend`] (a [`vmm_tap::Tap`], or a fake in the unit tests).
//!
//! Where to read what:
//! - [`tx`]: guest → tap, one `writev` per frame;
//! - [`rx`]: tap → guest, one `readv` per frame (across merged buffers), and RX flow control;
//! - [`device`]: config space, activation and reset;
//! - [`features`]: what is offered, and which offloads the tap is given;
//! - [`event_handler`]: which events wake the device thread;
//! - [`counters`]: frames and Ethernet bytes per direction, drops by reason;
//! - [`observer`]: a hook that sees every frame moved (tracing, pcap).

pub mod backend;
pub mod counters;
pub mod device;
pub mod event_handler;
pub mod features;
mod iovecs;
pub mod observer;
pub mod rx;
pub mod tx;
pub mod virtio_device;

#[cfg(test)]
mod alloc_tests;
#[cfg(test)]
mod test_utils;

pub use backend::Backend;
pub use counters::{CountersSnapshot, NetCounters};
pub use device::Net;
pub use iovecs::GuestIovecs;
pub use observer::{Direction, FrameEvent, FrameObserver, NetHeader};
pub use virtio_device::{ActivateError, Interrupt, VirtioDevice};
pub use vmm_tap::{MacAddr, MacParseError};

/// Length of `struct virtio_net_hdr_v1` in front of every frame (virtio 1.2 §5.1.6), the same
/// size the tap is set to with TUNSETVNETHDRSZ.
pub const VNET_HDR_LEN: usize = vmm_tap::VNET_HDR_LEN;
const _: () =
    assert!(VNET_HDR_LEN == std::mem::size_of::<virtio_bindings::virtio_net::virtio_net_hdr_v1>());
