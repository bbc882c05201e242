//! Guest RX, end to end: the kernel *transmitted* a frame out of the tap interface (host
//! tx_bytes), so the tap fd is readable. For each frame:
//!
//! 1. pop a chain the driver made available on the RX queue; if there is none, stop reading
//!    the tap until the driver adds buffers and notifies the RX queue — the frame waits in the
//!    tap's queue instead of being read and dropped, and we do not spin on a readable fd;
//! 2. turn its descriptors into guest-memory slices, each device-writable and in guest RAM
//!    (`chain_buffers` in buffers.rs), large enough for a full frame; a bad chain is completed with length 0
//!    and counted;
//! 3. one `readv` from the tap straight into those slices: `[virtio_net_hdr_v1 | frame]`;
//! 4. set the header's `num_buffers` to 1 (the tap leaves those two bytes alone);
//! 5. put the chain on the used ring with the length written;
//!
//! then interrupt the driver unless it asked not to be.

use std::io::ErrorKind;

use virtio_queue::{QueueOwnedT, QueueT};
use vm_memory::{Bytes, VolatileSlice};

use crate::backend::Backend;
use crate::buffers::{chain_buffers, Access};
use crate::counters::NetCounters;
use crate::device::{Net, RX_QUEUE};
use crate::observer::{observe, Direction};
use crate::VNET_HDR_LEN;

/// Ethernet header length.
const ETH_HLEN: usize = 14;
/// Offset of `num_buffers` in virtio_net_hdr_v1.
const NUM_BUFFERS_OFFSET: usize =
    std::mem::offset_of!(virtio_bindings::virtio_net::virtio_net_hdr_v1, num_buffers);

/// How an RX pass ended.
#[derive(Debug, PartialEq, Eq)]
pub enum RxOutcome {
    /// No frame is waiting on the tap.
    TapEmpty,
    /// A frame may be waiting but the guest has no RX buffers: stop polling the tap.
    NoBuffers,
    /// The guest corrupted the ring; the device now needs a reset.
    Failed,
}

impl<B: Backend> Net<B> {
    /// Smallest RX chain that holds a full frame: header, Ethernet header, MTU (virtio 1.2
    /// §5.1.6.3.1: 1526 bytes for the default MTU of 1500).
    pub fn min_rx_chain(&self) -> usize {
        VNET_HDR_LEN + ETH_HLEN + usize::from(self.mtu())
    }

    /// Moves frames from the tap into the guest's RX buffers until one side runs out.
    pub fn process_rx(&mut self) -> RxOutcome {
        let min_chain = self.min_rx_chain();
        let Some(active) = self.active.as_mut() else {
            return RxOutcome::TapEmpty;
        };
        let mem = &active.mem;
        let queue = &mut active.rx;
        let counters = &self.counters;
        let mut used = false;
        let outcome;

        if queue.iter(mem).is_err() {
            self.fail("RX avail ring index is corrupt");
            return RxOutcome::Failed;
        }
        loop {
            let Some(chain) = queue.pop_descriptor_chain(mem) else {
                outcome = RxOutcome::NoBuffers;
                break;
            };
            let head = chain.head_index();
            let buffers = chain_buffers(chain, mem, Access::Write);
            let mut written = 0u32;
            match buffers {
                None => {
                    log::debug!("virtio-net RX: returning malformed chain {head} unused");
                    NetCounters::inc(&counters.rx_malformed);
                }
                Some((_, capacity)) if capacity < min_chain => {
                    log::debug!(
                        "virtio-net RX: chain {head} holds {capacity} bytes, a frame needs {min_chain}"
                    );
                    NetCounters::inc(&counters.rx_too_small);
                }
                Some((slices, _)) => {
                    match self.backend.read_frame(&slices) {
                        Ok(n) if n >= VNET_HDR_LEN => {
                            set_num_buffers(&slices);
                            written = n as u32;
                            NetCounters::inc(&counters.rx_frames);
                            NetCounters::add(&counters.rx_bytes, (n - VNET_HDR_LEN) as u64);
                            if let Some(observer) = self.observer.as_deref_mut() {
                                observe(observer, Direction::Rx, RX_QUEUE as u16, head, &slices, n);
                            }
                        }
                        Ok(_) => NetCounters::inc(&counters.rx_backend_errors),
                        Err(e) if e.kind() == ErrorKind::WouldBlock => {
                            // No frame: give the chain back for the next one.
                            queue.set_next_avail(queue.next_avail().wrapping_sub(1));
                            outcome = RxOutcome::TapEmpty;
                            break;
                        }
                        Err(e) => {
                            // EFAULT: the frame did not fit; the tap dropped it.
                            log::debug!("virtio-net RX: reading the tap failed: {e}");
                            NetCounters::inc(&counters.rx_backend_errors);
                        }
                    }
                }
            }
            if queue.add_used(mem, head, written).is_err() {
                self.fail("RX used ring is outside guest memory");
                return RxOutcome::Failed;
            }
            used = true;
        }
        if used && queue.needs_notification(mem).unwrap_or(true) {
            self.interrupt.signal_used_queue();
        }
        outcome
    }
}

/// Writes num_buffers = 1 (little endian) at offset 10 of the header, wherever the header's
/// bytes fall among the slices.
fn set_num_buffers(slices: &[VolatileSlice<'_>]) {
    let value = 1u16.to_le_bytes();
    for (i, byte) in value.iter().enumerate() {
        let mut at = NUM_BUFFERS_OFFSET + i;
        for slice in slices {
            if at < slice.len() {
                let _ = slice.write_obj(*byte, at);
                break;
            }
            at -= slice.len();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_utils::*;

    const BUF: u32 = 1536;

    #[test]
    fn test_rx_frame_lands_in_guest_buffer_with_num_buffers_1() {
        let mem = memory();
        let mut h = Harness::new(&mem);
        // The guest's buffer holds garbage where num_buffers goes; the tap does not write it.
        h.put(BUFFERS, &[0xee; 16]);
        h.rx.add_desc_chains(&chain(&[desc(BUFFERS, BUF, true)], 0), 0)
            .unwrap();
        let frame = with_header(&(0..98u8).collect::<Vec<_>>());
        h.net.backend.to_guest.push_back(frame.clone());

        assert_eq!(h.net.process_rx(), RxOutcome::NoBuffers);

        assert_eq!(Harness::used(&h.rx, 0), (0, frame.len() as u32));
        let got = h.get(BUFFERS, frame.len());
        assert_eq!(&got[..10], &frame[..10]);
        assert_eq!(&got[10..12], &[1, 0], "num_buffers = 1");
        assert_eq!(&got[12..], &frame[12..]);
        let c = h.net.counters.snapshot();
        assert_eq!((c.rx_frames, c.rx_bytes), (1, 98));
    }

    #[test]
    fn test_rx_without_buffers_leaves_frame_on_tap_until_buffers_come() {
        let mem = memory();
        let mut h = Harness::new(&mem);
        h.net.backend.to_guest.push_back(with_header(&[5; 60]));

        assert_eq!(h.net.process_rx(), RxOutcome::NoBuffers);
        assert_eq!(
            h.net.backend.reads, 0,
            "no buffer, no read: the frame stays in the tap"
        );
        assert_eq!(h.net.backend.to_guest.len(), 1);

        h.rx.add_desc_chains(&chain(&[desc(BUFFERS, BUF, true)], 0), 0)
            .unwrap();
        h.net.process_rx();
        assert_eq!(h.net.backend.to_guest.len(), 0);
        assert_eq!(
            h.net.counters.snapshot().rx_frames,
            1,
            "delivered exactly once"
        );
        assert_eq!(Harness::used_idx(&h.rx), 1);
    }

    #[test]
    fn test_rx_tap_empty_keeps_the_buffer_for_the_next_frame() {
        let mem = memory();
        let mut h = Harness::new(&mem);
        h.rx.add_desc_chains(&chain(&[desc(BUFFERS, BUF, true)], 0), 0)
            .unwrap();

        assert_eq!(h.net.process_rx(), RxOutcome::TapEmpty);
        assert_eq!(Harness::used_idx(&h.rx), 0);

        h.net.backend.to_guest.push_back(with_header(&[9; 42]));
        h.net.process_rx();
        assert_eq!(Harness::used(&h.rx, 0), (0, 54));
    }

    #[test]
    fn test_rx_chain_too_small_is_returned_unused_and_frame_kept() {
        let mem = memory();
        let mut h = Harness::new(&mem);
        h.rx.add_desc_chains(&chain(&[desc(BUFFERS, 100, true)], 0), 0)
            .unwrap();
        h.net.backend.to_guest.push_back(with_header(&[3; 60]));

        assert_eq!(h.net.process_rx(), RxOutcome::NoBuffers);

        assert_eq!(Harness::used(&h.rx, 0), (0, 0));
        assert_eq!(h.net.counters.snapshot().rx_too_small, 1);
        assert_eq!(
            h.net.backend.to_guest.len(),
            1,
            "the frame waits for a proper buffer"
        );
    }

    #[test]
    fn test_rx_read_only_or_outside_memory_chain_is_malformed() {
        let mem = memory();
        let mut h = Harness::new(&mem);
        h.rx.add_desc_chains(&[desc(BUFFERS, BUF, false)], 0)
            .unwrap();
        h.rx.add_desc_chains(&[desc(MEM_SIZE as u64 - 100, BUF, true)], 1)
            .unwrap();
        h.net.backend.to_guest.push_back(with_header(&[3; 60]));

        h.net.process_rx();

        assert_eq!(Harness::used(&h.rx, 0), (0, 0));
        assert_eq!(Harness::used(&h.rx, 1), (1, 0));
        assert_eq!(h.net.counters.snapshot().rx_malformed, 2);
        assert!(h.net.is_active());
    }

    #[test]
    fn test_rx_header_split_across_descriptors_gets_num_buffers() {
        let mem = memory();
        let mut h = Harness::new(&mem);
        // 11 bytes, then the rest: num_buffers straddles the two descriptors.
        h.rx.add_desc_chains(
            &chain(
                &[desc(BUFFERS, 11, true), desc(BUFFERS + 0x1000, BUF, true)],
                0,
            ),
            0,
        )
        .unwrap();
        h.net.backend.to_guest.push_back(with_header(&[4; 60]));

        h.net.process_rx();

        assert_eq!(h.get(BUFFERS + 10, 1), vec![1]);
        assert_eq!(h.get(BUFFERS + 0x1000, 1), vec![0]);
        assert_eq!(
            h.get(BUFFERS + 0x1001, 1),
            vec![4],
            "frame starts after the header"
        );
    }
}
