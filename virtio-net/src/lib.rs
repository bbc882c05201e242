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
//!
//! # Example
//!
//! A driver puts one frame on the TX queue and the device sends it to its backend, here the
//! fake one of `test_utils` (feature `test-utils`) on virtio-queue's mock rings:
//!
//! ```
//! use vmm_virtio_net::test_utils::{chain, desc, memory, with_header, Harness, BUFFERS};
//! use vmm_virtio_net::tx::TxOutcome;
//!
//! let mem = memory();
//! // A device the driver has activated (VERSION_1, MAC, MTU; no offloads) on two queues.
//! let mut h = Harness::new(&mem);
//! // [virtio_net_hdr_v1 | 60-byte frame] in guest memory, one descriptor, on the avail ring.
//! let frame = with_header(&[0xab; 60]);
//! h.put(BUFFERS, &frame);
//! let descs = chain(&[desc(BUFFERS, frame.len() as u32, false)], 0);
//! h.tx.add_desc_chains(&descs, 0).unwrap();
//!
//! // What the TX queue's notification would trigger on the device thread.
//! assert_eq!(h.net.process_tx(), TxOutcome::Done);
//!
//! // One writev of the chain to the backend, the chain back on the used ring with length 0,
//! // and the frame counted in Ethernet bytes (without the 12-byte header).
//! assert_eq!(h.net.backend().sent, vec![frame]);
//! assert_eq!(Harness::used(&h.tx, 0), (0, 0));
//! assert_eq!(h.net.counters().snapshot().tx_bytes, 60);
//! ```

pub mod backend;
pub mod counters;
pub mod device;
pub mod event_handler;
pub mod features;
mod iovecs;
pub mod log_limit;
pub mod observer;
pub mod rx;
pub mod tx;
pub mod virtio_device;

#[cfg(test)]
mod alloc_tests;
#[cfg(any(test, feature = "test-utils"))]
pub mod test_utils;

pub use backend::Backend;
pub use counters::{CountersSnapshot, NetCounters};
pub use device::Net;
pub use iovecs::GuestIovecs;
pub use log_limit::LogLimit;
pub use observer::{Direction, FrameEvent, FrameObserver, NetHeader};
pub use virtio_device::{ActivateError, InterruptSignal, VirtioDevice};
pub use vmm_tap::{MacAddr, MacParseError};

/// Length of `struct virtio_net_hdr_v1` in front of every frame (virtio 1.2 §5.1.6), the same
/// size the tap is set to with TUNSETVNETHDRSZ.
pub const VNET_HDR_LEN: usize = vmm_tap::VNET_HDR_LEN;
const _: () =
    assert!(VNET_HDR_LEN == std::mem::size_of::<virtio_bindings::virtio_net::virtio_net_hdr_v1>());
