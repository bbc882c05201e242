//! Guest RX, end to end: the kernel *transmitted* a frame out of the tap interface (host
//! tx_bytes), so the tap fd is readable. For each frame:
//!
//! 1. hold enough of the driver's RX chains for the largest frame that can come
//!    (`RxBuffers::fill`): pop chains from the avail ring and turn each into iovecs (each
//!    descriptor device-writable and in guest RAM); a bad chain is completed with length 0 and
//!    counted. Without VIRTIO_NET_F_MRG_RXBUF that is one chain big enough for a whole frame
//!    (1,526 bytes at MTU 1500; 65,562 with GSO, the "big packets" layout); with it, as many
//!    chains as add up to that. If the ring runs dry first, stop reading the tap until the
//!    driver adds buffers and notifies the RX queue — the frame waits in the tap's queue
//!    instead of being read and dropped, and we do not spin on a readable fd;
//! 2. one `readv` from the tap straight into those chains: `[virtio_net_hdr_v1 | frame]`. The
//!    tap fills the header: with the offloads the driver accepted, a frame may be a 64 KiB
//!    TCP segment (`gso_type`, `gso_size`) with its checksum left to the guest (NEEDS_CSUM);
//! 3. the frame filled the first `k` chains: set the header's `num_buffers` to `k` (the tap
//!    leaves those two bytes alone);
//! 4. put those `k` chains on the used ring, each with the bytes it got, in order; chains the
//!    frame did not need stay held for the next frame;
//!
//! then interrupt the driver unless it asked not to be.

use std::io::ErrorKind;

use virtio_queue::{Queue, QueueOwnedT, QueueT};
use vm_memory::GuestMemoryMmap;

use crate::backend::Backend;
use crate::counters::{Moved, NetCounters};
use crate::device::{driver_wants_interrupt, Net, RX_QUEUE};
use crate::iovecs::{Access, ChainError, DescTable, IovecArray};
use crate::observer::{observe, Direction};
use crate::VNET_HDR_LEN;

/// Offset of `num_buffers` in virtio_net_hdr_v1.
const NUM_BUFFERS_OFFSET: usize =
    std::mem::offset_of!(virtio_bindings::virtio_net::virtio_net_hdr_v1, num_buffers);

/// Most iovecs one `readv` takes (IOV_MAX on Linux).
const MAX_RX_IOVS: usize = 1024;

/// How an RX pass ended.
#[derive(Debug, PartialEq, Eq)]
pub enum RxOutcome {
    /// No frame is waiting on the tap.
    TapEmpty,
    /// A frame may be waiting but the guest has no RX buffers: stop polling the tap.
    NoBuffers,
    /// The guest corrupted the ring; the device now needs a reset.
    Failed,
    /// A queue's worth of frames went in and the tap may have more: the rest after the
    /// loop's next turn (the tap stays readable, so the loop comes back by itself).
    Budget,
}

/// One RX chain held by the device: its head, and where it ends among the bytes and iovecs
/// held (running totals, so that "how many chains cover N bytes" is a binary search).
#[derive(Clone, Copy, Debug, Default)]
struct HeldChain {
    head: u16,
    /// Bytes of all chains pushed so far, this one included.
    end_bytes: u64,
    /// Iovecs of all chains pushed so far, this one included.
    end_iovs: u64,
}

/// RX chains popped from the avail ring and not yet filled, with their iovecs, in ring order.
/// A frame takes chains from the front; the rest wait for the next frame. Both arrays are
/// windows that move along as chains are taken (copied back to the front only when a window
/// reaches the end), and are allocated at activation.
pub(crate) struct RxBuffers {
    iovs: IovecArray,
    chains: Box<[HeldChain]>,
    /// The chains held are `chains[first..last]`.
    first: usize,
    last: usize,
    /// Bytes and iovecs of all chains ever taken by frames / ever pushed.
    taken_bytes: u64,
    pushed_bytes: u64,
    taken_iovs: u64,
    pushed_iovs: u64,
}

/// Why filling stopped.
enum Fill {
    /// Enough buffer for the largest frame.
    Enough,
    /// The avail ring ran dry first: more buffers may come.
    Short,
    /// We hold all we can (a queue's worth of chains, or as many iovecs as one readv takes)
    /// and it is still not enough: only a frame or a reset changes that.
    Stuck,
    /// The used ring is outside guest memory.
    Corrupt,
    /// The driver made this head available, past the end of the descriptor table.
    BadHead(u16),
}

impl RxBuffers {
    /// Room for `queue_size` chains.
    pub(crate) fn new(queue_size: u16) -> Self {
        Self {
            iovs: IovecArray::with_capacity(MAX_RX_IOVS),
            chains: vec![HeldChain::default(); 2 * usize::from(queue_size)].into_boxed_slice(),
            first: 0,
            last: 0,
            taken_bytes: 0,
            pushed_bytes: 0,
            taken_iovs: 0,
            pushed_iovs: 0,
        }
    }

    fn len(&self) -> usize {
        self.last - self.first
    }

    fn bytes(&self) -> u64 {
        self.pushed_bytes - self.taken_bytes
    }

    /// Whether the chains held can take a frame of up to `frame_max` bytes (header included).
    fn enough(&self, mergeable: bool, frame_max: usize) -> bool {
        if mergeable {
            self.bytes() >= frame_max as u64
        } else {
            self.len() > 0
        }
    }

    /// Holds one more chain, whose `iovs` iovecs were just pushed.
    fn hold(&mut self, head: u16, bytes: usize, iovs: usize) {
        if self.last == self.chains.len() {
            self.chains.copy_within(self.first..self.last, 0);
            self.last -= self.first;
            self.first = 0;
        }
        self.pushed_bytes += bytes as u64;
        self.pushed_iovs += iovs as u64;
        self.chains[self.last] = HeldChain {
            head,
            end_bytes: self.pushed_bytes,
            end_iovs: self.pushed_iovs,
        };
        self.last += 1;
    }

    /// Pops chains until they can take the largest frame. Chains no frame fits in (without
    /// MRG_RXBUF: smaller than `frame_max`; with it: smaller than the header) and malformed
    /// chains are completed with length 0 and counted. Returns how filling ended and whether
    /// any chain went to the used ring.
    fn fill(
        &mut self,
        queue: &mut Queue,
        mem: &GuestMemoryMmap,
        mergeable: bool,
        frame_max: usize,
        counters: &NetCounters,
    ) -> (Fill, bool) {
        let smallest = if mergeable { VNET_HDR_LEN } else { frame_max };
        let mut returned = false;
        while !self.enough(mergeable, frame_max) {
            if self.len() == self.chains.len() / 2 {
                return (Fill::Stuck, returned);
            }
            let Some(chain) = queue.pop_descriptor_chain(mem) else {
                return (Fill::Short, returned);
            };
            let head = chain.head_index();
            if head >= queue.size() {
                NetCounters::inc(&counters.rx_malformed);
                return (Fill::BadHead(head), returned);
            }
            let held = self.iovs.len();
            match self
                .iovs
                .push_chain(DescTable::of(queue), head, mem, Access::Write)
            {
                Ok((bytes, iovs)) if bytes >= smallest => {
                    self.hold(head, bytes, iovs);
                    continue;
                }
                Ok((bytes, _)) => {
                    self.iovs.truncate(held);
                    log::debug!(
                        "virtio-net RX: chain {head} holds {bytes} bytes, a frame needs {smallest}"
                    );
                    NetCounters::inc(&counters.rx_too_small);
                }
                Err(ChainError::Malformed) => {
                    log::debug!("virtio-net RX: returning malformed chain {head} unused");
                    NetCounters::inc(&counters.rx_malformed);
                }
                Err(ChainError::NoRoom) => {
                    // Ours to give back: the driver sees nothing; retried after a frame.
                    queue.go_to_previous_position();
                    return (Fill::Stuck, returned);
                }
            }
            if queue.add_used(mem, head, 0).is_err() {
                return (Fill::Corrupt, returned);
            }
            returned = true;
        }
        (Fill::Enough, returned)
    }

    /// The chains held, oldest first.
    fn held(&self) -> &[HeldChain] {
        &self.chains[self.first..self.last]
    }

    /// How many chains, iovecs and bytes from the front cover `bytes` (at least one chain).
    fn covering(&self, bytes: usize) -> (usize, usize, usize) {
        let held = self.held();
        let target = self.taken_bytes + bytes as u64;
        let k = (held.partition_point(|c| c.end_bytes < target) + 1).min(held.len());
        let last = held[k - 1];
        (
            k,
            (last.end_iovs - self.taken_iovs) as usize,
            (last.end_bytes - self.taken_bytes) as usize,
        )
    }

    /// Forgets the first `n` chains (they went to the used ring).
    fn consume(&mut self, n: usize) {
        let last_taken = self.held()[n - 1];
        self.iovs
            .drain_front((last_taken.end_iovs - self.taken_iovs) as usize);
        self.taken_bytes = last_taken.end_bytes;
        self.taken_iovs = last_taken.end_iovs;
        self.first += n;
        if self.first == self.last {
            self.first = 0;
            self.last = 0;
        }
    }
}

impl<B: Backend> Net<B> {
    /// Smallest single RX chain that holds a full frame without merged buffers: header,
    /// Ethernet header, MTU (virtio 1.2 §5.1.6.3.1: 1,526 bytes for the default MTU of 1500).
    pub fn min_rx_chain(&self) -> usize {
        VNET_HDR_LEN + crate::device::ETH_HLEN + usize::from(self.mtu())
    }

    /// Moves frames from the tap into the guest's RX buffers until one side runs out.
    pub fn process_rx(&mut self) -> RxOutcome {
        let Some(active) = self.active.as_mut() else {
            return RxOutcome::TapEmpty;
        };
        if self.watch.backend_lost {
            return RxOutcome::TapEmpty;
        }
        let mem = &active.mem;
        let queue = &mut active.rx;
        let held = &mut active.rx_buffers;
        let (mergeable, frame_max) = (active.mergeable, active.rx_frame_max);
        let counters = &self.counters;
        let mut used = false;
        // Counted once per pass, not per frame (atomic adds are not free).
        let mut delivered = Moved::default();
        let mut merged = 0;
        // At most a queue's worth of frames per pass (see tx.rs).
        let mut budget = queue.size();
        let mut bad_head = None;

        if queue.iter(mem).is_err() {
            self.fail("RX avail ring index is corrupt");
            return RxOutcome::Failed;
        }
        // We look at the ring whenever the tap has a frame; the driver need not tell us about
        // each buffer it adds until we run out.
        let _ = queue.disable_notification(mem);
        let outcome = loop {
            let (fill, returned) = held.fill(queue, mem, mergeable, frame_max, counters);
            used |= returned;
            match fill {
                Fill::Corrupt => break RxOutcome::Failed,
                Fill::BadHead(head) => {
                    bad_head = Some(head);
                    break RxOutcome::Failed;
                }
                Fill::Stuck => {
                    log::debug!(
                        "virtio-net RX: the driver's buffers cannot hold the largest frame"
                    );
                    break RxOutcome::NoBuffers;
                }
                Fill::Short => {
                    // Ask to be told about new buffers; look again in case some just came. A
                    // ring that looks non-empty but yields nothing has a corrupt index: without
                    // this check, "look again" would never end.
                    match queue.enable_notification(mem) {
                        Ok(true) if queue.iter(mem).is_err() => break RxOutcome::Failed,
                        Ok(true) => continue,
                        _ => break RxOutcome::NoBuffers,
                    }
                }
                Fill::Enough => {}
            }
            let (_, iovs, capacity) = held.covering(frame_max);
            let bufs = held.iovs.guest(0..iovs);
            let n = match self.backend.read_frame(bufs) {
                Ok(n) if (VNET_HDR_LEN..=capacity).contains(&n) => n,
                Ok(n) => {
                    // Shorter than a header, or longer than the buffers (the tap cut it). The
                    // chains stay ours for the next frame; the event loop calls again if more
                    // frames wait (one error never turns into a loop here).
                    log::debug!("virtio-net RX: the tap returned a {n}-byte frame; dropped");
                    NetCounters::inc(&counters.rx_backend_errors);
                    break RxOutcome::TapEmpty;
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break RxOutcome::TapEmpty,
                Err(e) => {
                    log::debug!("virtio-net RX: reading the tap failed: {e}");
                    NetCounters::inc(&counters.rx_backend_errors);
                    break RxOutcome::TapEmpty;
                }
            };
            // Without MRG_RXBUF the one chain held took the whole frame.
            let (k, k_iovs, _) = held.covering(n);
            let frame = held.iovs.guest(0..k_iovs);
            frame.write_at(NUM_BUFFERS_OFFSET, &(k as u16).to_le_bytes());
            if held.complete(k, n, queue, mem).is_err() {
                break RxOutcome::Failed;
            }
            used = true;
            delivered.frames += 1;
            delivered.bytes += (n - VNET_HDR_LEN) as u64;
            merged += u64::from(k > 1);
            if let Some(observer) = self.observer.as_deref_mut() {
                let heads: Vec<u16> = held.held()[..k].iter().map(|c| c.head).collect();
                observe(observer, Direction::Rx, RX_QUEUE as u16, &heads, frame, n);
            }
            held.consume(k);
            budget -= 1;
            if budget == 0 {
                break RxOutcome::Budget;
            }
        };
        delivered.add_to(&counters.rx_frames, &counters.rx_bytes);
        NetCounters::add(&counters.rx_merged_frames, merged);
        if outcome == RxOutcome::Failed {
            let size = queue.size();
            self.fail(&match bad_head {
                Some(head) => crate::tx::bad_head("RX", head, size),
                None => {
                    "RX ring is corrupt (avail index, or used ring outside guest memory)".into()
                }
            });
            return outcome;
        }
        if used && driver_wants_interrupt(queue, mem) {
            Self::signal_used(&self.interrupt, counters);
        }
        outcome
    }
}

impl RxBuffers {
    /// Puts the first `k` chains on the used ring, in order, each with the bytes of the
    /// `n`-byte frame it holds. An error means the used ring is outside guest memory.
    fn complete(
        &self,
        k: usize,
        n: usize,
        queue: &mut Queue,
        mem: &GuestMemoryMmap,
    ) -> Result<(), virtio_queue::Error> {
        let mut start = self.taken_bytes;
        let mut left = n as u64;
        for chain in &self.held()[..k] {
            let len = left.min(chain.end_bytes - start);
            left -= len;
            start = chain.end_bytes;
            queue.add_used(mem, chain.head, len as u32)?;
        }
        Ok(())
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
    fn test_rx_indirect_chain_is_malformed_and_the_frame_waits() {
        use virtio_bindings::virtio_ring::{VRING_DESC_F_INDIRECT, VRING_DESC_F_WRITE};
        use virtio_queue::desc::{split::Descriptor as SplitDescriptor, RawDescriptor};
        use vm_memory::{Bytes, GuestAddress};
        let mem = memory();
        let mut h = Harness::new(&mem);
        // INDIRECT_DESC is not offered: its table (one good writable buffer) is never used.
        let table = BUFFERS + 0x4000;
        let inner = SplitDescriptor::new(BUFFERS, BUF, VRING_DESC_F_WRITE as u16, 0);
        mem.write_obj(RawDescriptor::from(inner), GuestAddress(table))
            .unwrap();
        let indirect = SplitDescriptor::new(table, 16, VRING_DESC_F_INDIRECT as u16, 0);
        h.rx.add_desc_chains(&[RawDescriptor::from(indirect)], 0)
            .unwrap();
        h.net.backend.to_guest.push_back(with_header(&[3; 60]));

        assert_eq!(h.net.process_rx(), RxOutcome::NoBuffers);

        assert_eq!(Harness::used(&h.rx, 0), (0, 0));
        let c = h.net.counters.snapshot();
        assert_eq!((c.rx_malformed, c.rx_frames), (1, 0));
        assert_eq!(
            h.net.backend.to_guest.len(),
            1,
            "the frame stays in the tap"
        );
    }

    #[test]
    fn test_rx_head_past_the_table_is_malformed_and_stops_the_device() {
        use vm_memory::{Address, Bytes};
        let mem = memory();
        let mut h = Harness::new(&mem);
        mem.write_obj(16u16, h.rx.avail_addr().unchecked_add(4))
            .unwrap();
        h.rx.avail().idx().store(1);
        h.net.backend.to_guest.push_back(with_header(&[3; 60]));

        assert_eq!(h.net.process_rx(), RxOutcome::Failed);

        assert!(crate::VirtioDevice::needs_reset(&h.net));
        assert_eq!(h.net.counters.snapshot().rx_malformed, 1);
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

    use virtio_bindings::virtio_net::{
        VIRTIO_NET_F_GUEST_CSUM, VIRTIO_NET_F_GUEST_TSO4, VIRTIO_NET_F_MRG_RXBUF,
    };
    use virtio_bindings::virtio_ring::VIRTIO_RING_F_EVENT_IDX;

    /// A driver with merged buffers and GSO: a frame may need 65,562 bytes of buffers.
    fn mergeable_gso() -> u64 {
        bits(&[
            VIRTIO_NET_F_MRG_RXBUF,
            VIRTIO_NET_F_GUEST_CSUM,
            VIRTIO_NET_F_GUEST_TSO4,
        ])
    }

    /// Size of each merged buffer in these tests: 16 of them hold a 64 KiB frame.
    const MRG_BUF: u32 = 4352;

    /// Posts `n` one-descriptor chains of `len` bytes, buffers back to back from BUFFERS.
    fn post(h: &Harness<'_>, first: u16, n: u16, len: u32) {
        for i in first..first + n {
            let addr = BUFFERS + u64::from(i) * u64::from(len);
            h.rx.add_desc_chains(&[desc(addr, len, true)], i).unwrap();
        }
    }

    /// A recognisable frame of `len` bytes, header included (zeroed, as the tap writes it
    /// before we set num_buffers).
    fn patterned(len: usize) -> Vec<u8> {
        let mut f = vec![0u8; crate::VNET_HDR_LEN];
        f.extend((0..len - crate::VNET_HDR_LEN).map(|i| (i * 7 + i / 251) as u8));
        f
    }

    #[test]
    fn test_rx_merged_frame_split_at_every_boundary_fills_chains_in_order() {
        let c = MRG_BUF as usize;
        for len in [60, c - 1, c, c + 1, 2 * c, 3 * c + 5, 65_562] {
            let mem = memory();
            let mut h = Harness::with_features(&mem, mergeable_gso());
            post(&h, 0, 16, MRG_BUF);
            let frame = patterned(len);
            h.net.backend.to_guest.push_back(frame.clone());

            // After the frame, what is left may be less than the next frame might need.
            h.net.process_rx();

            let k = len.div_ceil(c);
            assert_eq!(
                Harness::used_idx(&h.rx) as usize,
                k,
                "len {len}: chains used"
            );
            let mut got = Vec::new();
            for i in 0..k as u16 {
                let (id, used_len) = Harness::used(&h.rx, i);
                assert_eq!(id, u32::from(i), "len {len}: chains in ring order");
                let expect = (len - i as usize * c).min(c);
                assert_eq!(used_len as usize, expect, "len {len}: bytes in chain {i}");
                got.extend(h.get(BUFFERS + u64::from(i) * u64::from(MRG_BUF), expect));
            }
            assert_eq!(
                &got[10..12],
                &(k as u16).to_le_bytes(),
                "len {len}: num_buffers"
            );
            assert_eq!(&got[..10], &frame[..10]);
            assert_eq!(&got[12..], &frame[12..], "len {len}: every byte");
            let counters = h.net.counters.snapshot();
            assert_eq!(counters.rx_bytes as usize, len - 12);
            assert_eq!(counters.rx_merged_frames, u64::from(k > 1));
            assert_eq!(counters.dropped(), 0);
        }
    }

    #[test]
    fn test_rx_merged_unused_chains_are_kept_for_the_next_frame() {
        let mem = memory();
        let mut h = Harness::with_features(&mem, mergeable_gso());
        // 16 x 8 KiB: after each small frame, still room for a 64 KiB one.
        post(&h, 0, 16, 8192);
        h.net.backend.to_guest.push_back(patterned(100));
        h.net.backend.to_guest.push_back(patterned(200));

        assert_eq!(h.net.process_rx(), RxOutcome::TapEmpty);

        assert_eq!(
            Harness::used_idx(&h.rx),
            2,
            "one chain each, none returned empty"
        );
        assert_eq!(Harness::used(&h.rx, 0), (0, 100));
        assert_eq!(Harness::used(&h.rx, 1), (1, 200));
        assert_eq!(h.get(BUFFERS + 8192 + 10, 2), vec![1, 0], "num_buffers = 1");
        assert_eq!(h.net.counters.snapshot().dropped(), 0);
    }

    #[test]
    fn test_rx_merged_chains_held_after_a_frame_are_not_lost_when_one_runs_short() {
        let mem = memory();
        let mut h = Harness::with_features(&mem, mergeable_gso());
        // 16 x 4352: the first frame leaves 15 chains, less than a 64 KiB frame needs.
        post(&h, 0, 16, MRG_BUF);
        h.net.backend.to_guest.push_back(patterned(100));
        h.net.backend.to_guest.push_back(patterned(200));

        assert_eq!(h.net.process_rx(), RxOutcome::NoBuffers);
        assert_eq!(Harness::used_idx(&h.rx), 1);
        assert_eq!(
            h.net.backend.to_guest.len(),
            1,
            "the second frame waits in the tap"
        );
    }

    #[test]
    fn test_rx_merged_too_few_buffers_frame_waits_in_the_tap() {
        let mem = memory();
        let mut h = Harness::with_features(&mem, mergeable_gso());
        // 8 x 4352 bytes: less than a 64 KiB frame might need.
        post(&h, 0, 8, MRG_BUF);
        h.net.backend.to_guest.push_back(patterned(60));

        assert_eq!(h.net.process_rx(), RxOutcome::NoBuffers);
        assert_eq!(h.net.backend.reads, 0, "not read: it might not fit");
        assert_eq!(
            Harness::used_idx(&h.rx),
            0,
            "the chains are neither used nor lost"
        );

        // The driver adds more: now the frame goes into the first chain it gave.
        post(&h, 8, 8, MRG_BUF);
        h.net.process_rx();
        assert_eq!(Harness::used(&h.rx, 0), (0, 60));
        assert_eq!(h.net.counters.snapshot().rx_frames, 1);
    }

    #[test]
    fn test_rx_merged_tap_empty_keeps_the_chains() {
        let mem = memory();
        let mut h = Harness::with_features(&mem, mergeable_gso());
        post(&h, 0, 16, MRG_BUF);

        assert_eq!(h.net.process_rx(), RxOutcome::TapEmpty);
        assert_eq!(Harness::used_idx(&h.rx), 0);

        h.net.backend.to_guest.push_back(patterned(70));
        h.net.process_rx();
        assert_eq!(Harness::used(&h.rx, 0), (0, 70));
    }

    #[test]
    fn test_rx_frame_longer_than_the_buffers_is_counted_not_delivered() {
        let mem = memory();
        let mut h = Harness::new(&mem);
        h.rx.add_desc_chains(&chain(&[desc(BUFFERS, BUF, true)], 0), 0)
            .unwrap();
        // A frame the tap could not fit (host MTU raised): tun cuts it, reports its length.
        h.net
            .backend
            .to_guest
            .push_back(patterned(BUF as usize + 100));
        h.net.backend.to_guest.push_back(patterned(80));

        h.net.process_rx();
        h.net.process_rx();

        let c = h.net.counters.snapshot();
        assert_eq!((c.rx_backend_errors, c.rx_frames), (1, 1));
        assert_eq!(
            Harness::used(&h.rx, 0),
            (0, 80),
            "the chain went to the next frame"
        );
    }

    #[test]
    fn test_rx_big_packets_without_mrg_need_one_64k_chain() {
        let mem = memory();
        let gso = bits(&[VIRTIO_NET_F_GUEST_CSUM, VIRTIO_NET_F_GUEST_TSO4]);
        let mut h = Harness::with_features(&mem, gso);
        // A 1536-byte chain cannot hold a GSO frame; a 12 + 5 x 16 KiB chain can.
        h.rx.add_desc_chains(&[desc(BUFFERS, BUF, true)], 0)
            .unwrap();
        let mut big = vec![desc(BUFFERS + 0x1000, 12, true)];
        big.extend((0..5).map(|i| desc(BUFFERS + 0x2000 + i * 0x4000, 0x4000, true)));
        h.rx.add_desc_chains(&chain(&big, 1), 1).unwrap();
        let frame = patterned(30_000);
        h.net.backend.to_guest.push_back(frame.clone());

        assert_eq!(h.net.process_rx(), RxOutcome::NoBuffers);

        assert_eq!(Harness::used(&h.rx, 0), (0, 0), "too small: returned");
        assert_eq!(Harness::used(&h.rx, 1), (1, 30_000));
        assert_eq!(
            h.get(BUFFERS + 0x1000 + 10, 2),
            vec![1, 0],
            "num_buffers = 1"
        );
        assert_eq!(h.get(BUFFERS + 0x2000, 29_988), frame[12..].to_vec());
        assert_eq!(h.net.counters.snapshot().rx_too_small, 1);
    }

    #[test]
    fn test_rx_event_idx_interrupts_only_past_used_event_and_asks_for_kicks() {
        let mem = memory();
        let mut h = Harness::with_features(&mem, bits(&[VIRTIO_RING_F_EVENT_IDX]));
        // "Interrupt me once the device has used entry 2" (used_event = 2).
        ring::set_used_event(&h.rx, &mem, 2);
        post(&h, 0, 4, BUF);

        h.net.backend.to_guest.push_back(patterned(60));
        h.net.process_rx();
        assert_eq!(
            h.net.counters.snapshot().interrupts,
            0,
            "used idx 1: not yet"
        );
        h.net.backend.to_guest.push_back(patterned(60));
        h.net.process_rx();
        assert_eq!(
            h.net.counters.snapshot().interrupts,
            0,
            "used idx 2: not yet"
        );
        h.net.backend.to_guest.push_back(patterned(60));
        h.net.process_rx();
        assert_eq!(h.net.counters.snapshot().interrupts, 1, "entry 2 used: now");

        // Out of buffers: the device asks to be kicked when the next one comes (avail_event).
        h.net.backend.to_guest.push_back(patterned(60));
        h.net.backend.to_guest.push_back(patterned(60));
        assert_eq!(h.net.process_rx(), RxOutcome::NoBuffers);
        assert_eq!(ring::avail_event(&h.rx, &mem), 4);
    }

    #[test]
    fn test_rx_no_interrupt_flag_suppresses_interrupts_without_event_idx() {
        let mem = memory();
        let mut h = Harness::new(&mem);
        ring::set_avail_flags(&h.rx, &mem, 1); // VRING_AVAIL_F_NO_INTERRUPT
        post(&h, 0, 2, BUF);
        h.net.backend.to_guest.push_back(patterned(60));

        h.net.process_rx();

        assert_eq!(h.net.counters.snapshot().rx_frames, 1);
        assert_eq!(h.net.counters.snapshot().interrupts, 0);
        assert_eq!(h.interrupt.status(), 0);
    }

    #[test]
    fn test_rx_avail_index_corrupted_mid_pass_ends_the_pass_instead_of_spinning() {
        let mem = memory();
        let mut h = Harness::with_features(&mem, mergeable_gso());
        post(&h, 0, 16, MRG_BUF);
        h.net.backend.to_guest.push_back(patterned(60));
        // While the device reads the frame, the guest makes avail.idx impossible (200 with a
        // 16-entry queue). After the frame the device needs one more chain, finds the ring
        // "not empty" but unreadable: that must end the pass (NEEDS_RESET), not loop.
        let (m, avail_idx) = (mem.clone(), h.rx.avail_addr().0 + 2);
        h.net.backend.on_read = Some(Box::new(move || {
            vm_memory::Bytes::write_obj(&m, 200u16, vm_memory::GuestAddress(avail_idx)).unwrap();
        }));

        assert_eq!(h.net.process_rx(), RxOutcome::Failed);
        assert!(crate::VirtioDevice::needs_reset(&h.net));
        assert_eq!(
            h.net.counters.snapshot().rx_frames,
            1,
            "the frame before it was delivered"
        );
    }

    #[test]
    fn test_rx_pass_yields_after_a_queue_worth_of_frames() {
        let mem = memory();
        let mut h = Harness::new(&mem);
        post(&h, 0, 16, BUF);
        for _ in 0..20 {
            h.net.backend.to_guest.push_back(patterned(60));
        }

        assert_eq!(h.net.process_rx(), RxOutcome::Budget);

        assert_eq!(h.net.counters.snapshot().rx_frames, u64::from(QUEUE_LEN));
        assert_eq!(h.net.backend.to_guest.len(), 4, "the rest wait in the tap");
    }
}
