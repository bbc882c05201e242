//! Watching frames go by: the device calls a [`FrameObserver`] for every frame it moved between
//! the guest and the backend (after the move succeeded, so what is observed is exactly what the
//! counters count). The VMM's `--trace-net` and `--pcap` are observers.

use std::mem::offset_of;

use virtio_bindings::virtio_net::virtio_net_hdr_v1;

use crate::iovecs::GuestIovecs;
use crate::VNET_HDR_LEN;

/// Which way a frame went, seen from the guest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// Guest → tap (the TX queue).
    Tx,
    /// Tap → guest (the RX queue).
    Rx,
}

/// The fields of `struct virtio_net_hdr_v1` (virtio 1.2 §5.1.6), decoded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetHeader {
    /// VIRTIO_NET_HDR_F_NEEDS_CSUM, _DATA_VALID, _RSC_INFO.
    pub flags: u8,
    /// VIRTIO_NET_HDR_GSO_NONE, _TCPV4, _UDP, _TCPV6, _UDP_L4, | _ECN.
    pub gso_type: u8,
    /// Length of the headers to copy into each segment.
    pub hdr_len: u16,
    /// Segment size for GSO.
    pub gso_size: u16,
    /// Where checksumming starts.
    pub csum_start: u16,
    /// Where the checksum goes, from csum_start.
    pub csum_offset: u16,
    /// Number of merged RX buffers (1 without VIRTIO_NET_F_MRG_RXBUF).
    pub num_buffers: u16,
}

impl NetHeader {
    /// Decodes the 12 header bytes (little endian, VERSION_1).
    pub fn parse(b: &[u8; VNET_HDR_LEN]) -> Self {
        let le16 = |at: usize| u16::from_le_bytes([b[at], b[at + 1]]);
        let csum = offset_of!(virtio_net_hdr_v1, __bindgen_anon_1);
        NetHeader {
            flags: b[offset_of!(virtio_net_hdr_v1, flags)],
            gso_type: b[offset_of!(virtio_net_hdr_v1, gso_type)],
            hdr_len: le16(offset_of!(virtio_net_hdr_v1, hdr_len)),
            gso_size: le16(offset_of!(virtio_net_hdr_v1, gso_size)),
            csum_start: le16(csum),
            csum_offset: le16(csum + 2),
            num_buffers: le16(offset_of!(virtio_net_hdr_v1, num_buffers)),
        }
    }
}

/// One frame the device moved.
#[derive(Debug)]
pub struct FrameEvent<'a> {
    /// Which way.
    pub direction: Direction,
    /// Queue index (0 = RX, 1 = TX).
    pub queue: u16,
    /// Head descriptor index of the (first) chain.
    pub head: u16,
    /// Head index of every chain the frame used, in order: more than one for an RX frame
    /// merged across buffers (`num_buffers` of them).
    pub heads: &'a [u16],
    /// Length of each descriptor of the chains (for RX: capacity, not bytes written).
    pub desc_lens: &'a [u32],
    /// The virtio-net header in front of the frame.
    pub header: NetHeader,
    /// The Ethernet frame.
    pub frame: &'a [u8],
}

/// Something that wants to see every frame.
pub trait FrameObserver: Send {
    /// Called once per frame moved, on the device thread.
    fn frame(&mut self, event: &FrameEvent<'_>);
}

/// Copies a frame out of guest memory (the first `len` bytes of `bufs`, which are the chains
/// `heads`) and shows it to `observer`. Only runs when an observer is set: the data path
/// itself never copies.
pub(crate) fn observe(
    observer: &mut dyn FrameObserver,
    direction: Direction,
    queue: u16,
    heads: &[u16],
    bufs: GuestIovecs<'_>,
    len: usize,
) {
    let mut bytes = Vec::with_capacity(len);
    bufs.copy_out(len, &mut bytes);
    if bytes.len() < VNET_HDR_LEN {
        return;
    }
    let desc_lens: Vec<u32> = bufs.slices().map(|s| s.len() as u32).collect();
    let mut header = [0u8; VNET_HDR_LEN];
    header.copy_from_slice(&bytes[..VNET_HDR_LEN]);
    observer.frame(&FrameEvent {
        direction,
        queue,
        head: heads.first().copied().unwrap_or_default(),
        heads,
        desc_lens: &desc_lens,
        header: NetHeader::parse(&header),
        frame: &bytes[VNET_HDR_LEN..],
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_header_fields_at_spec_offsets() {
        let raw = [
            1, 4, 0x36, 0x00, 0xa8, 0x05, 0x22, 0x00, 0x10, 0x00, 0x01, 0x00,
        ];
        let h = NetHeader::parse(&raw);
        assert_eq!(
            h,
            NetHeader {
                flags: 1,
                gso_type: 4,
                hdr_len: 0x36,
                gso_size: 1448,
                csum_start: 0x22,
                csum_offset: 0x10,
                num_buffers: 1
            }
        );
    }
}

#[cfg(test)]
mod device_tests {
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::test_utils::*;

    type Seen = Arc<Mutex<Vec<(Direction, u16, Vec<u32>, NetHeader, Vec<u8>)>>>;

    struct Recorder(Seen);

    impl FrameObserver for Recorder {
        fn frame(&mut self, e: &FrameEvent<'_>) {
            self.0.lock().unwrap().push((
                e.direction,
                e.head,
                e.desc_lens.to_vec(),
                e.header,
                e.frame.to_vec(),
            ));
        }
    }

    #[test]
    fn test_observer_sees_each_moved_frame_once_with_header_and_bytes() {
        let mem = memory();
        let mut h = Harness::new(&mem);
        let seen: Seen = Arc::default();
        h.net.set_observer(Box::new(Recorder(seen.clone())));

        let tx_frame: Vec<u8> = (0..60u8).collect();
        h.put(BUFFERS, &with_header(&tx_frame));
        h.tx.add_desc_chains(&chain(&[desc(BUFFERS, 72, false)], 0), 0)
            .unwrap();
        // A malformed chain: counted as dropped, never observed.
        h.tx.add_desc_chains(&[desc(BUFFERS, 4, false)], 1).unwrap();
        h.net.process_tx();

        h.rx.add_desc_chains(&chain(&[desc(BUFFERS + 0x1000, 1536, true)], 0), 0)
            .unwrap();
        let rx_frame = vec![0xab; 64];
        h.net.backend.to_guest.push_back(with_header(&rx_frame));
        h.net.process_rx();

        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 2);
        assert_eq!(
            (seen[0].0, seen[0].1, &seen[0].2, &seen[0].4),
            (Direction::Tx, 0, &vec![72], &tx_frame)
        );
        assert_eq!(
            (seen[1].0, &seen[1].2, &seen[1].4),
            (Direction::Rx, &vec![1536], &rx_frame)
        );
        assert_eq!(seen[1].3.num_buffers, 1, "RX header as the guest sees it");
    }
}
