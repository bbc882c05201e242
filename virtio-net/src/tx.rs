//! Guest TX, end to end: the driver put `[virtio_net_hdr_v1 | frame]` chains on the TX queue
//! and wrote QueueNotify (KVM turned that into our TX queue eventfd). For each chain:
//!
//! 1. pop it from the avail ring; a head past the descriptor table cannot even be given back
//!    (the used ring takes only valid heads), so the device stops and asks for a reset;
//! 2. turn its descriptors into iovecs, checking each is device-readable and lies in guest RAM
//!    (`IovecArray::push_chain` in iovecs.rs, into an array allocated at activation); a bad
//!    chain, or one whose header asks for an offload the driver did not negotiate, is
//!    completed with length 0 and counted;
//! 3. one `writev` of those buffers to the tap: the kernel takes the 12-byte header
//!    (IFF_VNET_HDR) and the frame is *received* on the tap interface (host rx_bytes). With the
//!    offloads the driver accepted, the header may say "checksum from `csum_start`"
//!    (NEEDS_CSUM) and "this is a 64 KiB TCP segment, cut it into `gso_size` pieces"
//!    (`gso_type`): the host kernel does that work later, or never when the frame stays on the
//!    host — the guest sent one large frame and the tap counts one;
//! 4. put the chain on the used ring (length 0: we wrote nothing into it);
//!
//! then interrupt the driver unless it asked not to be (`used_event` with EVENT_IDX, else
//! VRING_AVAIL_F_NO_INTERRUPT). While we work, the driver's notifications are off (EVENT_IDX:
//! `avail_event` is left behind; otherwise VRING_USED_F_NO_NOTIFY); they are turned on again
//! when the queue is empty, and the queue is looked at once more in case a frame slipped in.
//!
//! Errors from the tap drop the frame and count it (EIO when the link is down, EINVAL for a
//! frame it rejects); EAGAIN puts the chain back and waits for the tap to be writable.

use std::io::ErrorKind;

use crate::backend::Backend;
use crate::counters::{Moved, NetCounters};
use crate::device::{driver_wants_interrupt, Net, TX_QUEUE};
use crate::features;
use crate::iovecs::{Access, DescTable};
use crate::observer::{observe, Direction};
use crate::VNET_HDR_LEN;
use virtio_queue::{QueueOwnedT, QueueT};

/// Largest TX chain we accept: a 64 KiB frame plus the header (a TSO segment is at most this;
/// it bounds what a hostile driver can make us gather).
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
    /// A queue's worth of frames went out and more wait: the rest after the loop's next turn.
    Budget,
}

impl<B: Backend> Net<B> {
    /// Sends every frame waiting on the TX queue.
    pub fn process_tx(&mut self) -> TxOutcome {
        let Some(active) = self.active.as_mut() else {
            return TxOutcome::Done;
        };
        let mem = &active.mem;
        let queue = &mut active.tx;
        let iovs = &mut active.tx_iovs;
        let counters = &self.counters;
        let acked = self.acked_features;
        let mut used = false;
        let mut outcome = TxOutcome::Done;
        // Counted once per pass, not per frame (atomic adds are not free).
        let mut sent = Moved::default();
        // At most a queue's worth of chains per pass: a guest that keeps adding frames must not
        // keep this thread (and every other NIC on it) to itself.
        let mut budget = queue.size();

        loop {
            if queue.iter(mem).is_err() {
                sent.add_to(&counters.tx_frames, &counters.tx_bytes);
                self.fail("TX avail ring index is corrupt");
                return TxOutcome::Failed;
            }
            let _ = queue.disable_notification(mem);
            let table = DescTable::of(queue);
            while let Some(chain) = queue.pop_descriptor_chain(mem) {
                let head = chain.head_index();
                if head >= queue.size() {
                    NetCounters::inc(&counters.tx_malformed);
                    sent.add_to(&counters.tx_frames, &counters.tx_bytes);
                    let why = bad_head("TX", head, queue.size());
                    self.fail(&why);
                    return TxOutcome::Failed;
                }
                budget -= 1;
                iovs.clear();
                let total = iovs
                    .push_chain(table, head, mem, Access::Read)
                    .ok()
                    .map(|(total, _)| total)
                    .filter(|total| (VNET_HDR_LEN..=MAX_TX_CHAIN_BYTES).contains(total));
                // The header's flags and gso_type (bytes 0 and 1) must ask only for what was
                // negotiated, or the tap would checksum and segment for a driver that never
                // accepted it.
                let mut hdr = [0u8; 2];
                if total.is_some() {
                    iovs.guest(0..iovs.len()).read_at(0, &mut hdr);
                }
                let header_ok = features::tx_header_allowed(acked, hdr[0], hdr[1]);
                match total {
                    None => {
                        log::debug!("virtio-net TX: dropping malformed chain {head}");
                        NetCounters::inc(&counters.tx_malformed);
                    }
                    Some(_) if !header_ok => {
                        log::debug!(
                            "virtio-net TX: chain {head}: header flags {:#x} gso_type {:#x} ask for an offload not negotiated; dropped",
                            hdr[0],
                            hdr[1]
                        );
                        NetCounters::inc(&counters.tx_malformed);
                    }
                    Some(total) => {
                        let frame = iovs.guest(0..iovs.len());
                        match self.backend.write_frame(frame) {
                            Ok(_) => {
                                sent.frames += 1;
                                sent.bytes += (total - VNET_HDR_LEN) as u64;
                                if let Some(observer) = self.observer.as_deref_mut() {
                                    let heads = [head];
                                    let q = TX_QUEUE as u16;
                                    observe(observer, Direction::Tx, q, &heads, frame, total);
                                }
                            }
                            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                                // Not lost: the same chain is popped again when the tap has room.
                                queue.go_to_previous_position();
                                outcome = TxOutcome::TapFull;
                                break;
                            }
                            Err(e) => {
                                log::debug!("virtio-net TX: tap refused a frame: {e}");
                                NetCounters::inc(&counters.tx_backend_errors);
                            }
                        }
                    }
                }
                if queue.add_used(mem, head, 0).is_err() {
                    sent.add_to(&counters.tx_frames, &counters.tx_bytes);
                    self.fail("TX used ring is outside guest memory");
                    return TxOutcome::Failed;
                }
                used = true;
                if budget == 0 {
                    outcome = TxOutcome::Budget;
                    break;
                }
            }
            // Notifications stay off while the tap is full (its writability wakes us) or the
            // pass ran out of budget (we come back anyway).
            if outcome != TxOutcome::Done || !queue.enable_notification(mem).unwrap_or(false) {
                break;
            }
        }
        sent.add_to(&counters.tx_frames, &counters.tx_bytes);
        if used && driver_wants_interrupt(queue, mem) {
            Self::signal_used(&self.interrupt, counters);
        }
        outcome
    }
}

/// Why the device stops when the driver makes descriptor `head` available on a `size`-entry
/// queue (virtio-queue would refuse it on the used ring; the driver broke the ring).
pub(crate) fn bad_head(queue: &str, head: u16, size: u16) -> String {
    format!("the driver made descriptor {head} available, past the end of the {size}-entry {queue} table")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_utils::*;
    use crate::virtio_device::VirtioDevice;
    use virtio_queue::desc::{split::Descriptor as SplitDescriptor, RawDescriptor};
    use vm_memory::{Address, Bytes, GuestAddress};

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
        assert_ne!(h.interrupt.status() & 1, 0, "used-buffer interrupt raised");
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

    /// (addr, len, flags, next) as a descriptor, flags as given (`desc` sets no NEXT).
    fn raw(addr: u64, len: u32, flags: u32, next: u16) -> RawDescriptor {
        RawDescriptor::from(SplitDescriptor::new(addr, len, flags as u16, next))
    }

    #[test]
    fn test_tx_broken_chains_are_dropped_whole_not_sent_in_part() {
        use virtio_bindings::virtio_ring::{VRING_DESC_F_INDIRECT, VRING_DESC_F_NEXT};
        let mem = memory();
        let mut h = Harness::new(&mem);
        h.put(BUFFERS, &with_header(&[0xab; 60]));
        // An indirect table holding one good 72-byte descriptor.
        let table = BUFFERS + 0x1000;
        mem.write_obj(raw(BUFFERS, 72, 0, 0), GuestAddress(table))
            .unwrap();
        let cases = [
            raw(BUFFERS, 72, VRING_DESC_F_NEXT, 0),   // loops onto itself
            raw(BUFFERS, 72, VRING_DESC_F_NEXT, 200), // next is past the 16-entry table
            raw(table, 16, VRING_DESC_F_INDIRECT, 0), // INDIRECT_DESC was not offered
        ];
        for (i, d) in cases.iter().enumerate() {
            h.tx.add_desc_chains(&[*d], i as u16).unwrap();
        }

        assert_eq!(h.net.process_tx(), TxOutcome::Done);

        // virtio-queue's iterator ends such chains silently: the loop was sent as 16 copies of
        // the frame, the cut chain and the indirect one as the frame they lead to.
        assert!(
            h.net.backend.sent.is_empty(),
            "{:?}",
            h.net.backend.sent.len()
        );
        assert_eq!(Harness::used_idx(&h.tx), 3);
        for i in 0..3 {
            assert_eq!(Harness::used(&h.tx, i), (u32::from(i), 0));
        }
        assert_eq!(h.net.counters.snapshot().tx_malformed, 3);
        assert!(h.net.is_active());
    }

    #[test]
    fn test_tx_header_asking_for_offloads_not_negotiated_is_dropped_and_counted() {
        use virtio_bindings::virtio_net::{
            VIRTIO_NET_F_CSUM, VIRTIO_NET_F_HOST_TSO4, VIRTIO_NET_HDR_F_NEEDS_CSUM,
            VIRTIO_NET_HDR_GSO_TCPV4, VIRTIO_NET_HDR_GSO_UDP,
        };
        let header = |flags: u32, gso: u32| {
            let mut f = with_header(&[0x5a; 60]);
            f[0] = flags as u8;
            f[1] = gso as u8;
            f
        };
        let csum = VIRTIO_NET_HDR_F_NEEDS_CSUM;
        // A driver that accepted no offload: NEEDS_CSUM and TSO are refused, a plain frame
        // goes out. A driver with CSUM and HOST_TSO4: both go out, UDP fragmentation does not.
        for (features, frames, sent) in [
            (
                PLAIN,
                vec![
                    header(csum, 0),
                    header(0, VIRTIO_NET_HDR_GSO_TCPV4),
                    header(0, 0),
                ],
                1,
            ),
            (
                bits(&[VIRTIO_NET_F_CSUM, VIRTIO_NET_F_HOST_TSO4]),
                vec![
                    header(csum, 0),
                    header(csum, VIRTIO_NET_HDR_GSO_TCPV4),
                    header(csum, VIRTIO_NET_HDR_GSO_UDP),
                ],
                2,
            ),
        ] {
            let mem = memory();
            let mut h = Harness::with_features(&mem, features);
            for (i, f) in frames.iter().enumerate() {
                let addr = BUFFERS + i as u64 * 0x100;
                h.put(addr, f);
                h.tx.add_desc_chains(&[desc(addr, f.len() as u32, false)], i as u16)
                    .unwrap();
            }

            assert_eq!(h.net.process_tx(), TxOutcome::Done);

            let c = h.net.counters.snapshot();
            assert_eq!(h.net.backend.sent.len(), sent, "features {features:#x}");
            assert_eq!(c.tx_frames, sent as u64);
            assert_eq!(c.tx_malformed, (frames.len() - sent) as u64);
            assert_eq!(
                Harness::used_idx(&h.tx),
                frames.len() as u16,
                "all completed"
            );
        }
    }

    #[test]
    fn test_tx_head_past_the_table_is_malformed_and_stops_the_device() {
        let mem = memory();
        let mut h = Harness::new(&mem);
        // avail.ring[0] = 20 on a 16-entry queue, avail.idx = 1.
        mem.write_obj(20u16, h.tx.avail_addr().unchecked_add(4))
            .unwrap();
        h.tx.avail().idx().store(1);

        assert_eq!(h.net.process_tx(), TxOutcome::Failed);

        assert!(h.net.needs_reset());
        let c = h.net.counters.snapshot();
        assert_eq!(
            (c.tx_malformed, c.tx_frames),
            (1, 0),
            "counted as malformed"
        );
        assert_eq!(
            bad_head("TX", 20, QUEUE_LEN),
            "the driver made descriptor 20 available, past the end of the 16-entry TX table"
        );
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
            h.interrupt.status() & 2,
            0,
            "config-change interrupt tells the driver"
        );
    }

    #[test]
    fn test_reset_drops_queues_and_stops_processing() {
        let mem = memory();
        let mut h = Harness::new(&mem);
        h.net.reset();

        assert!(!h.net.is_active());
        assert_eq!(active_queue_next_avail(&h.net, true), None);
        assert!(
            h.net.interrupt.is_none(),
            "a reset device interrupts no one"
        );
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

    #[test]
    fn test_tx_event_idx_asks_for_the_next_kick_and_interrupts_past_used_event() {
        use virtio_bindings::virtio_ring::VIRTIO_RING_F_EVENT_IDX;
        let mem = memory();
        let mut h = Harness::with_features(&mem, bits(&[VIRTIO_RING_F_EVENT_IDX]));
        ring::set_used_event(&h.tx, &mem, 5);
        for i in 0..3u16 {
            let addr = BUFFERS + u64::from(i) * 0x100;
            h.put(addr, &with_header(&[i as u8; 60]));
            h.tx.add_desc_chains(&[desc(addr, 72, false)], i).unwrap();
        }

        assert_eq!(h.net.process_tx(), TxOutcome::Done);

        assert_eq!(h.net.backend.sent.len(), 3);
        assert_eq!(
            ring::avail_event(&h.tx, &mem),
            3,
            "kick me when you make entry 3 available"
        );
        assert_eq!(
            h.net.counters.snapshot().interrupts,
            0,
            "used_event 5 not reached"
        );
    }

    #[test]
    fn test_tx_without_event_idx_notifications_are_back_on_after_a_pass() {
        let mem = memory();
        let mut h = Harness::new(&mem);
        h.put(BUFFERS, &with_header(&[1; 60]));
        h.tx.add_desc_chains(&[desc(BUFFERS, 72, false)], 0)
            .unwrap();

        h.net.process_tx();

        assert_eq!(
            ring::used_flags(&h.tx, &mem),
            0,
            "VRING_USED_F_NO_NOTIFY cleared"
        );
        assert_eq!(h.net.counters.snapshot().interrupts, 1);
    }

    #[test]
    fn test_tx_gso_frame_reaches_the_tap_with_its_header() {
        use virtio_bindings::virtio_net::{VIRTIO_NET_F_CSUM, VIRTIO_NET_F_HOST_TSO4};
        let mem = memory();
        let mut h =
            Harness::with_features(&mem, bits(&[VIRTIO_NET_F_CSUM, VIRTIO_NET_F_HOST_TSO4]));
        // NEEDS_CSUM, TCPv4, hdr_len 54, gso_size 1448, csum_start 34, csum_offset 16.
        let mut frame = vec![1, 1, 54, 0, 0xa8, 0x05, 34, 0, 16, 0, 0, 0];
        frame.extend((0..16_384 + 54).map(|i| i as u8));
        h.put(BUFFERS, &frame[..4096]);
        h.put(BUFFERS + 0x2000, &frame[4096..]);
        let descs = [
            desc(BUFFERS, 4096, false),
            desc(BUFFERS + 0x2000, (frame.len() - 4096) as u32, false),
        ];
        h.tx.add_desc_chains(&chain(&descs, 0), 0).unwrap();

        h.net.process_tx();

        assert_eq!(
            h.net.backend.sent,
            vec![frame],
            "header and 16 KiB segment, as sent"
        );
        assert_eq!(h.net.counters.snapshot().tx_bytes, 16_384 + 54);
    }

    #[test]
    fn test_tx_pass_yields_after_a_queue_worth_of_frames() {
        let mem = memory();
        let mut h = Harness::new(&mem);
        h.put(BUFFERS, &with_header(&[3; 60]));
        h.tx.add_desc_chains(&[desc(BUFFERS, 72, false)], 0)
            .unwrap();
        // A guest that publishes the same descriptor again with every frame sent: without a
        // budget this pass would never end.
        let (m, avail) = (mem.clone(), h.tx.avail_addr().0);
        h.net.backend.on_write = Some(Box::new(move || {
            use vm_memory::{Bytes, GuestAddress};
            let idx: u16 = m.read_obj(GuestAddress(avail + 2)).unwrap();
            let slot = avail + 4 + 2 * u64::from(idx % QUEUE_LEN);
            m.write_obj(0u16, GuestAddress(slot)).unwrap();
            m.write_obj(idx.wrapping_add(1), GuestAddress(avail + 2))
                .unwrap();
        }));

        assert_eq!(h.net.process_tx(), TxOutcome::Budget);
        assert_eq!(h.net.backend.sent.len(), usize::from(QUEUE_LEN));
        assert_eq!(
            h.net.process_tx(),
            TxOutcome::Budget,
            "the next turn goes on"
        );
        assert_eq!(h.net.backend.sent.len(), 2 * usize::from(QUEUE_LEN));
    }
}
