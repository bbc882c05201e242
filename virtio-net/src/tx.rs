//! Guest TX, end to end: the driver put `[virtio_net_hdr_v1 | frame]` chains on the TX queue
//! and wrote QueueNotify (KVM turned that into our TX queue eventfd). For each chain:
//!
//! 1. pop it from the avail ring (virtio-queue checks the head index);
//! 2. turn its descriptors into guest-memory slices, checking each is device-readable and lies
//!    in guest RAM (`chain_buffers` in buffers.rs); a bad chain is completed with length 0 and counted;
//! 3. one `writev` of those slices to the tap: the kernel strips the 12-byte header
//!    (IFF_VNET_HDR) and the frame is *received* on the tap interface (host rx_bytes);
//! 4. put the chain on the used ring (length 0: we wrote nothing into it);
//!
//! then interrupt the driver unless it asked not to be (VRING_AVAIL_F_NO_INTERRUPT).
//! Errors from the tap drop the frame and count it (EIO when the link is down, EINVAL for a
//! frame it rejects); EAGAIN puts the chain back and waits for the tap to be writable.

use std::io::ErrorKind;

use crate::backend::Backend;
use crate::buffers::{chain_buffers, Access};
use crate::counters::NetCounters;
use crate::device::{Net, TX_QUEUE};
use crate::observer::{observe, Direction};
use crate::VNET_HDR_LEN;
use virtio_queue::{QueueOwnedT, QueueT};

/// Largest TX chain we accept: a 64 KiB frame plus the header (without GSO, frames are far
/// smaller; this only bounds what a hostile driver can make us gather).
const MAX_TX_CHAIN_BYTES: usize = 65_562;

/// How a TX pass ended.
#[derive(Debug, PartialEq, Eq)]
pub enum TxOutcome {
    /// The TX queue is empty.
    Done,
    /// The tap is full; wait until it is writable.
    TapFull,
    /// The guest corrupted the ring; the device now needs a reset.
    Failed,
}

impl<B: Backend> Net<B> {
    /// Sends every frame waiting on the TX queue.
    pub fn process_tx(&mut self) -> TxOutcome {
        let Some(active) = self.active.as_mut() else {
            return TxOutcome::Done;
        };
        let mem = &active.mem;
        let queue = &mut active.tx;
        let counters = &self.counters;
        let mut used = false;
        let mut outcome = TxOutcome::Done;

        if queue.iter(mem).is_err() {
            self.fail("TX avail ring index is corrupt");
            return TxOutcome::Failed;
        }
        while let Some(chain) = queue.pop_descriptor_chain(mem) {
            let head = chain.head_index();
            let buffers = chain_buffers(chain, mem, Access::Read)
                .filter(|(_, total)| (VNET_HDR_LEN..=MAX_TX_CHAIN_BYTES).contains(total));
            match buffers {
                None => {
                    log::debug!("virtio-net TX: dropping malformed chain {head}");
                    NetCounters::inc(&counters.tx_malformed);
                }
                Some((slices, total)) => match self.backend.write_frame(&slices) {
                    Ok(_) => {
                        NetCounters::inc(&counters.tx_frames);
                        NetCounters::add(&counters.tx_bytes, (total - VNET_HDR_LEN) as u64);
                        if let Some(observer) = self.observer.as_deref_mut() {
                            observe(
                                observer,
                                Direction::Tx,
                                TX_QUEUE as u16,
                                head,
                                &slices,
                                total,
                            );
                        }
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {
                        // Not lost: the same chain is popped again when the tap has room.
                        queue.set_next_avail(queue.next_avail().wrapping_sub(1));
                        outcome = TxOutcome::TapFull;
                        break;
                    }
                    Err(e) => {
                        log::debug!("virtio-net TX: tap refused a frame: {e}");
                        NetCounters::inc(&counters.tx_backend_errors);
                    }
                },
            }
            if queue.add_used(mem, head, 0).is_err() {
                self.fail("TX used ring is outside guest memory");
                return TxOutcome::Failed;
            }
            used = true;
        }
        if used && queue.needs_notification(mem).unwrap_or(true) {
            self.interrupt.signal_used_queue();
        }
        outcome
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_utils::*;
    use crate::virtio_device::VirtioDevice;

    #[test]
    fn test_tx_frame_split_over_two_descriptors_reaches_backend_whole() {
        let mem = memory();
        let mut h = Harness::new(&mem);
        let frame: Vec<u8> = (0..60u8).collect();
        let bytes = with_header(&frame);
        // Header and the first 8 frame bytes in one buffer, the rest in another.
        h.put(BUFFERS, &bytes[..20]);
        h.put(BUFFERS + 0x1000, &bytes[20..]);
        h.tx.add_desc_chains(
            &chain(
                &[desc(BUFFERS, 20, false), desc(BUFFERS + 0x1000, 52, false)],
                0,
            ),
            0,
        )
        .unwrap();

        assert_eq!(h.net.process_tx(), TxOutcome::Done);

        assert_eq!(h.net.backend.sent, vec![bytes]);
        assert_eq!(Harness::used_idx(&h.tx), 1);
        assert_eq!(
            Harness::used(&h.tx, 0),
            (0, 0),
            "TX chains are returned with length 0"
        );
        let c = h.net.counters.snapshot();
        assert_eq!(
            (c.tx_frames, c.tx_bytes),
            (1, 60),
            "bytes are Ethernet bytes, header excluded"
        );
        assert_ne!(
            h.net.interrupt.status() & 1,
            0,
            "used-buffer interrupt raised"
        );
    }

    #[test]
    fn test_tx_backend_eio_drops_counts_and_returns_chain() {
        let mem = memory();
        let mut h = Harness::new(&mem);
        h.net.backend.write_errno = Some(libc::EIO);
        h.put(BUFFERS, &with_header(&[0xab; 60]));
        h.tx.add_desc_chains(&chain(&[desc(BUFFERS, 72, false)], 0), 0)
            .unwrap();

        assert_eq!(h.net.process_tx(), TxOutcome::Done);

        assert_eq!(Harness::used(&h.tx, 0), (0, 0));
        let c = h.net.counters.snapshot();
        assert_eq!((c.tx_frames, c.tx_backend_errors), (0, 1));
        assert!(
            h.net.is_active() && !h.net.needs_reset(),
            "an EIO never kills the device"
        );

        // The next frame goes through once the tap accepts writes again.
        h.net.backend.write_errno = None;
        h.tx.add_desc_chains(&chain(&[desc(BUFFERS, 72, false)], 1), 1)
            .unwrap();
        h.net.process_tx();
        assert_eq!(h.net.counters.snapshot().tx_frames, 1);
    }

    #[test]
    fn test_tx_eagain_keeps_the_frame_for_later() {
        let mem = memory();
        let mut h = Harness::new(&mem);
        h.net.backend.write_errno = Some(libc::EAGAIN);
        h.put(BUFFERS, &with_header(&[7; 40]));
        h.tx.add_desc_chains(&chain(&[desc(BUFFERS, 52, false)], 0), 0)
            .unwrap();

        assert_eq!(h.net.process_tx(), TxOutcome::TapFull);
        assert_eq!(Harness::used_idx(&h.tx), 0, "not completed, not lost");

        h.net.backend.write_errno = None;
        assert_eq!(h.net.process_tx(), TxOutcome::Done);
        assert_eq!(h.net.backend.sent.len(), 1);
        assert_eq!(Harness::used_idx(&h.tx), 1);
    }

    #[test]
    fn test_tx_malformed_chains_complete_with_zero_and_device_lives() {
        let mem = memory();
        let mut h = Harness::new(&mem);
        let cases = [
            desc(BUFFERS, 60, true),               // device-writable descriptor on TX
            desc(MEM_SIZE as u64 - 10, 60, false), // runs past the end of guest RAM
            desc(0xdead_0000_0000, 60, false),     // nowhere near guest RAM
            desc(BUFFERS, 5, false),               // shorter than the header
        ];
        for (i, d) in cases.iter().enumerate() {
            h.tx.add_desc_chains(&[*d], i as u16).unwrap();
        }

        assert_eq!(h.net.process_tx(), TxOutcome::Done);

        assert!(h.net.backend.sent.is_empty());
        assert_eq!(Harness::used_idx(&h.tx), 4);
        for i in 0..4 {
            assert_eq!(Harness::used(&h.tx, i), (u32::from(i), 0));
        }
        assert_eq!(h.net.counters.snapshot().tx_malformed, 4);
        assert!(h.net.is_active());
    }

    #[test]
    fn test_tx_corrupt_avail_index_sets_needs_reset() {
        let mem = memory();
        let mut h = Harness::new(&mem);
        // avail.idx 100 ahead of next_avail 0 with a 16-entry queue: impossible.
        h.tx.avail().idx().store(100);

        assert_eq!(h.net.process_tx(), TxOutcome::Failed);

        assert!(h.net.needs_reset());
        assert!(!h.net.is_active());
        assert_ne!(
            h.net.interrupt.status() & 2,
            0,
            "config-change interrupt tells the driver"
        );
    }

    #[test]
    fn test_reset_drops_queues_and_stops_processing() {
        let mem = memory();
        let mut h = Harness::new(&mem);
        h.net.interrupt.signal_used_queue();
        h.net.reset();

        assert!(!h.net.is_active());
        assert_eq!(active_queue_next_avail(&h.net, true), None);
        assert_eq!(h.net.interrupt.status(), 0);
        assert!(!h.net.features_ok(), "acked features are forgotten");

        h.put(BUFFERS, &with_header(&[1; 60]));
        h.tx.add_desc_chains(&chain(&[desc(BUFFERS, 72, false)], 0), 0)
            .unwrap();
        assert_eq!(h.net.process_tx(), TxOutcome::Done);
        assert!(
            h.net.backend.sent.is_empty(),
            "a reset device moves nothing"
        );
    }
}
