//! The virtio-net device: what it offers (features, config space), and its life cycle
//! (created → activated by the driver → reset).

use std::mem::{offset_of, size_of};
use std::sync::Arc;

use std::sync::atomic::{fence, Ordering};

use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_bindings::virtio_ids::VIRTIO_ID_NET;
use virtio_bindings::virtio_net::{
    virtio_net_config, VIRTIO_NET_F_MRG_RXBUF, VIRTIO_NET_F_STATUS, VIRTIO_NET_S_LINK_UP,
};
use virtio_bindings::virtio_ring::{VIRTIO_RING_F_EVENT_IDX, VRING_AVAIL_F_NO_INTERRUPT};
use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::backend::Backend;
use crate::counters::NetCounters;
use crate::features;
use crate::iovecs::IovecArray;
use crate::observer::FrameObserver;
use crate::rx::RxBuffers;
use crate::virtio_device::{ActivateError, InterruptSignal, VirtioDevice};
use crate::MacAddr;

/// Index of the receive queue (device → driver).
pub const RX_QUEUE: usize = 0;
/// Index of the transmit queue (driver → device).
pub const TX_QUEUE: usize = 1;
/// Maximum size of each queue.
pub const QUEUE_SIZE: u16 = 256;

/// Ethernet header length.
pub const ETH_HLEN: usize = 14;
/// Largest frame a GSO offload can deliver: a 64 KiB IP packet behind an Ethernet header (the
/// figure Firecracker and Cloud Hypervisor use; with the header, 65,562 bytes of RX buffers).
pub const MAX_GSO_FRAME: usize = 65_550;

/// What the device works with once the driver has set it up. Everything a frame needs is
/// allocated here, at activation, so that moving frames allocates nothing.
pub(crate) struct Active {
    pub(crate) mem: GuestMemoryMmap,
    pub(crate) rx: Queue,
    pub(crate) tx: Queue,
    /// RX chains taken from the ring and not yet filled (see rx.rs).
    pub(crate) rx_buffers: RxBuffers,
    /// Scratch iovecs for the TX chain being sent.
    pub(crate) tx_iovs: IovecArray,
    /// VIRTIO_NET_F_MRG_RXBUF: a frame may span several RX chains.
    pub(crate) mergeable: bool,
    /// Bytes of RX buffer the largest possible frame needs, header included.
    pub(crate) rx_frame_max: usize,
}

/// A virtio-net device on a backend (a tap in the VMM, a fake in unit tests).
pub struct Net<B: Backend> {
    mac: MacAddr,
    mtu: u16,
    /// TUN_F_* offloads the backend accepted when probed.
    backend_offloads: u32,
    avail_features: u64,
    pub(crate) acked_features: u64,
    pub(crate) backend: B,
    pub(crate) active: Option<Active>,
    pub(crate) needs_reset: bool,
    /// How to interrupt the driver: the transport's, from activation to reset.
    pub(crate) interrupt: Option<Arc<dyn InterruptSignal>>,
    pub(crate) counters: Arc<NetCounters>,
    /// Written by the guest through ioeventfd: "look at queue n".
    pub(crate) queue_evts: [EventFd; 2],
    /// Tells the device thread that the device was activated or reset.
    pub(crate) state_evt: EventFd,
    /// What the event loop watches for this device, and why (event_handler.rs).
    pub(crate) watch: crate::event_handler::Watch,
    /// Sees every frame moved, if set.
    pub(crate) observer: Option<Box<dyn FrameObserver>>,
    /// Broken rings are the guest's to repeat: a few warnings, then debug level.
    pub(crate) fail_log: crate::LogLimit,
    /// What config space reports as VIRTIO_NET_S_LINK_UP: the host link's state.
    link_up: bool,
}

impl<B: Backend> Net<B> {
    /// Creates a device with `mac` and `mtu` on `backend`, offering every offload the backend
    /// supports (see [`features`]).
    pub fn new(mut backend: B, mac: MacAddr, mtu: u16) -> std::io::Result<Self> {
        let backend_offloads = backend.supported_offloads();
        Ok(Self {
            mac,
            mtu,
            backend_offloads,
            avail_features: features::offered(backend_offloads, true),
            acked_features: 0,
            backend,
            active: None,
            needs_reset: false,
            interrupt: None,
            counters: Arc::new(NetCounters::default()),
            queue_evts: [EventFd::new(EFD_NONBLOCK)?, EventFd::new(EFD_NONBLOCK)?],
            state_evt: EventFd::new(EFD_NONBLOCK)?,
            watch: Default::default(),
            observer: None,
            fail_log: crate::LogLimit::new(10),
            link_up: true,
        })
    }

    /// Offers checksum and segmentation offloads (the default) or none (`offload=off`).
    pub fn set_offload(&mut self, enabled: bool) {
        self.avail_features = features::offered(self.backend_offloads, enabled);
    }

    /// Shows every frame moved to `observer` (tracing, capture).
    pub fn set_observer(&mut self, observer: Box<dyn FrameObserver>) {
        self.observer = Some(observer);
    }

    /// The counters, to report them while the device runs on its thread.
    pub fn counters(&self) -> Arc<NetCounters> {
        self.counters.clone()
    }

    /// The guest's MAC address.
    pub fn mac(&self) -> MacAddr {
        self.mac
    }

    /// The MTU offered in config space.
    pub fn mtu(&self) -> u16 {
        self.mtu
    }

    /// Tells the device that the host link went down or came up (the tap set down, a
    /// macvtap's lower device lost carrier, the link deleted). Config space reports it as
    /// VIRTIO_NET_S_LINK_UP, and a driver that negotiated VIRTIO_NET_F_STATUS gets a
    /// configuration-change interrupt, as on a real NIC whose cable is pulled. Returns whether
    /// the state changed.
    pub fn set_link_up(&mut self, up: bool) -> bool {
        if up == self.link_up {
            return false;
        }
        self.link_up = up;
        NetCounters::inc(&self.counters.link_changes);
        if features::has(self.acked_features, VIRTIO_NET_F_STATUS) {
            if let Some(interrupt) = &self.interrupt {
                interrupt.signal_config_change();
            }
        }
        true
    }

    /// Whether config space reports the link up.
    pub fn link_up(&self) -> bool {
        self.link_up
    }

    /// The backend.
    pub fn backend(&self) -> &B {
        &self.backend
    }

    /// The backend, to change (a test's or fuzz target's scripted answers).
    pub fn backend_mut(&mut self) -> &mut B {
        &mut self.backend
    }

    /// Whether the driver has activated the device.
    pub fn is_active(&self) -> bool {
        self.active.is_some()
    }

    /// The same device, activated state and all, on another backend (tests only).
    #[cfg(test)]
    pub(crate) fn with_backend_for_test<C: Backend>(self, backend: C) -> Net<C> {
        Net {
            mac: self.mac,
            mtu: self.mtu,
            backend_offloads: self.backend_offloads,
            avail_features: self.avail_features,
            acked_features: self.acked_features,
            backend,
            active: self.active,
            needs_reset: self.needs_reset,
            interrupt: self.interrupt,
            counters: self.counters,
            queue_evts: self.queue_evts,
            state_evt: self.state_evt,
            watch: self.watch,
            observer: self.observer,
            fail_log: self.fail_log,
            link_up: self.link_up,
        }
    }

    /// The backend, to change it (tests only).
    #[cfg(test)]
    pub(crate) fn backend_mut_for_test(&mut self) -> &mut B {
        &mut self.backend
    }

    /// The config space (virtio 1.2 §5.1.4): MAC, link state, one queue pair, MTU; little
    /// endian.
    fn config_space(&self) -> [u8; size_of::<virtio_net_config>()] {
        let mut config = [0u8; size_of::<virtio_net_config>()];
        let mut put = |offset: usize, bytes: &[u8]| {
            config[offset..offset + bytes.len()].copy_from_slice(bytes)
        };
        put(offset_of!(virtio_net_config, mac), &self.mac.0);
        put(
            offset_of!(virtio_net_config, status),
            &(if self.link_up {
                VIRTIO_NET_S_LINK_UP as u16
            } else {
                0
            })
            .to_le_bytes(),
        );
        put(
            offset_of!(virtio_net_config, max_virtqueue_pairs),
            &1u16.to_le_bytes(),
        );
        put(offset_of!(virtio_net_config, mtu), &self.mtu.to_le_bytes());
        config
    }

    /// Raises the used-buffer interrupt and counts it.
    pub(crate) fn signal_used(
        interrupt: &Option<Arc<dyn InterruptSignal>>,
        counters: &NetCounters,
    ) {
        if let Some(interrupt) = interrupt {
            NetCounters::inc(&counters.interrupts);
            interrupt.signal_used_queue();
        }
    }

    /// Records a ring the guest corrupted: the device stops until reset, and says so.
    pub(crate) fn fail(&mut self, what: &str) {
        crate::warn_limited!(
            self.fail_log,
            "virtio-net {}: {what}; the device needs a reset",
            self.mac
        );
        self.needs_reset = true;
        self.active = None;
        if let Some(interrupt) = &self.interrupt {
            interrupt.signal_config_change();
        }
        let _ = self.state_evt.write(1);
    }
}

impl<B: Backend> VirtioDevice for Net<B> {
    fn device_type(&self) -> u32 {
        VIRTIO_ID_NET
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE, QUEUE_SIZE]
    }

    fn features(&self) -> u64 {
        self.avail_features
    }

    fn ack_features(&mut self, features: u64) {
        self.acked_features = features & self.avail_features;
    }

    fn features_ok(&self) -> bool {
        features::has(self.acked_features, VIRTIO_F_VERSION_1)
            && features::dependencies_ok(self.acked_features)
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        let config = self.config_space();
        for (i, byte) in data.iter_mut().enumerate() {
            // Reads past the end return 0, like an absent register.
            *byte = usize::try_from(offset)
                .ok()
                .and_then(|o| o.checked_add(i))
                .and_then(|at| config.get(at).copied())
                .unwrap_or(0);
        }
    }

    fn write_config(&mut self, offset: u64, data: &[u8]) {
        // The MAC is only writable with VIRTIO_NET_F_CTRL_MAC_ADDR, which we do not offer.
        log::debug!(
            "virtio-net: ignoring config write of {} bytes at {offset:#x}",
            data.len()
        );
    }

    fn activate(
        &mut self,
        mem: GuestMemoryMmap,
        mut queues: Vec<Queue>,
        interrupt: Arc<dyn InterruptSignal>,
    ) -> Result<(), ActivateError> {
        if !self.features_ok() {
            return Err(ActivateError::NoVersion1);
        }
        for (i, queue) in queues.iter().enumerate() {
            if !queue.is_valid(&mem) {
                return Err(ActivateError::InvalidQueue(i));
            }
        }
        if queues.len() != 2 {
            return Err(ActivateError::QueueCount {
                expected: 2,
                got: queues.len(),
            });
        }
        let mut tx = queues.pop().unwrap_or_else(|| unreachable!());
        let mut rx = queues.pop().unwrap_or_else(|| unreachable!());
        let acked = self.acked_features;
        let event_idx = features::has(acked, VIRTIO_RING_F_EVENT_IDX);
        rx.set_event_idx(event_idx);
        tx.set_event_idx(event_idx);
        let offloads = features::tap_offloads(acked);
        self.backend
            .set_offloads(offloads)
            .map_err(ActivateError::Offloads)?;
        for (name, q) in [("rx", &rx), ("tx", &tx)] {
            log::debug!(
                "virtio-net {}: {name} queue size {} desc {:#x} avail {:#x} used {:#x}",
                self.mac,
                q.size(),
                q.desc_table(),
                q.avail_ring(),
                q.used_ring()
            );
        }
        let max_frame = if acked & features::GUEST_GSO != 0 {
            MAX_GSO_FRAME
        } else {
            ETH_HLEN + usize::from(self.mtu)
        };
        log::debug!(
            "virtio-net {}: features {} (tap offloads {offloads:#x})",
            self.mac,
            features::names(acked)
        );
        self.counters.set_features(acked);
        self.interrupt = Some(interrupt);
        self.active = Some(Active {
            mem,
            rx_buffers: RxBuffers::new(rx.size()),
            tx_iovs: IovecArray::with_capacity(usize::from(tx.size())),
            rx,
            tx,
            mergeable: features::has(acked, VIRTIO_NET_F_MRG_RXBUF),
            rx_frame_max: crate::VNET_HDR_LEN + max_frame,
        });
        self.watch.rx_waiting_for_buffers = false;
        self.watch.tx_waiting_for_tap = false;
        self.state_evt.write(1).map_err(ActivateError::Signal)
    }

    fn reset(&mut self) {
        self.active = None;
        self.acked_features = 0;
        // The next driver may accept fewer offloads: the tap must not keep sending them.
        if let Err(e) = self.backend.set_offloads(0) {
            log::warn!(
                "virtio-net {}: cannot clear the tap's offloads: {e}",
                self.mac
            );
        }
        self.needs_reset = false;
        self.watch.rx_waiting_for_buffers = false;
        self.watch.tx_waiting_for_tap = false;
        // The transport clears its InterruptStatus; the device signals nothing until activated.
        self.interrupt = None;
        // Queue notifications from before the reset must not be acted on after it.
        for evt in &self.queue_evts {
            let _ = evt.read();
        }
        let _ = self.state_evt.write(1);
    }

    fn needs_reset(&self) -> bool {
        self.needs_reset
    }

    fn queue_events(&self) -> &[EventFd] {
        &self.queue_evts
    }
}

/// Whether the driver wants an interrupt for the used buffers just added to `queue`: with
/// EVENT_IDX, `used_event` decides (virtio-queue does the index arithmetic); without it, the
/// VRING_AVAIL_F_NO_INTERRUPT flag (virtio 1.2 §2.7.7), which virtio-queue does not read.
pub(crate) fn driver_wants_interrupt(queue: &mut Queue, mem: &GuestMemoryMmap) -> bool {
    if queue.event_idx_enabled() {
        return queue.needs_notification(mem).unwrap_or(true);
    }
    // The used index written by add_used must be visible before we read the flags.
    fence(Ordering::SeqCst);
    mem.read_obj::<u16>(GuestAddress(queue.avail_ring()))
        .map_or(true, |flags| flags & VRING_AVAIL_F_NO_INTERRUPT as u16 == 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_utils::*;
    use virtio_bindings::virtio_net::{
        VIRTIO_NET_F_CSUM, VIRTIO_NET_F_GUEST_CSUM, VIRTIO_NET_F_GUEST_TSO4,
    };

    #[test]
    fn test_config_space_has_mac_link_up_and_mtu() {
        let net = Net::new(FakeBackend::new(), MAC, 1500).unwrap();
        let mut config = [0u8; 12];
        net.read_config(0, &mut config);
        assert_eq!(&config[0..6], &MAC.0);
        assert_eq!(&config[6..8], &[1, 0], "status: link up");
        assert_eq!(&config[8..10], &[1, 0], "one queue pair");
        assert_eq!(&config[10..12], &1500u16.to_le_bytes(), "mtu");
        let mut past = [0xffu8; 4];
        net.read_config(1000, &mut past);
        assert_eq!(past, [0; 4]);
    }

    #[test]
    fn test_host_link_down_and_up_reach_config_space_with_a_config_interrupt() {
        let mem = memory();
        let with_status = PLAIN | (1 << VIRTIO_NET_F_STATUS);
        let Harness {
            mut net, interrupt, ..
        } = Harness::with_features(&mem, with_status);
        let status = |net: &Net<FakeBackend>| {
            let mut s = [0u8; 2];
            net.read_config(6, &mut s);
            u16::from_le_bytes(s)
        };
        assert_eq!(status(&net), VIRTIO_NET_S_LINK_UP as u16);

        assert!(net.set_link_up(false));
        assert_eq!(status(&net), 0, "LINK_UP cleared");
        assert_eq!(
            interrupt.status(),
            2,
            "a config interrupt, no used-buffer one"
        );
        assert!(!net.set_link_up(false), "no change, nothing to tell");
        assert!(net.set_link_up(true));
        assert_eq!(status(&net), VIRTIO_NET_S_LINK_UP as u16);
        assert_eq!(net.counters.snapshot().link_changes, 2);

        // The host link state outlives a reset: the next driver reads it at start.
        net.set_link_up(false);
        net.reset();
        assert_eq!(status(&net), 0);
    }

    #[test]
    fn test_link_change_interrupts_only_a_driver_that_negotiated_status() {
        let mem = memory();
        let Harness {
            mut net, interrupt, ..
        } = Harness::with_features(&mem, PLAIN); // PLAIN has no STATUS
        assert!(net.set_link_up(false));
        assert_eq!(interrupt.status(), 0);

        // Nor a device the driver has not started: no interrupt line to raise.
        let mut idle = Net::new(FakeBackend::new(), MAC, 1500).unwrap();
        assert!(idle.set_link_up(false));
        let mut s = [0u8; 2];
        idle.read_config(6, &mut s);
        assert_eq!(s, [0, 0]);
    }

    #[test]
    fn test_features_offered_and_unknown_acks_are_masked() {
        let mut backend = FakeBackend::new();
        backend.supported = libc::TUN_F_CSUM;
        let mut net = Net::new(backend, MAC, 1500).unwrap();
        let offered = net.features();
        assert_eq!(offered, features::offered(libc::TUN_F_CSUM, true));
        assert!(features::has(offered, VIRTIO_NET_F_GUEST_CSUM));
        assert!(
            !features::has(offered, VIRTIO_NET_F_GUEST_TSO4),
            "the tap refused TSO4, so GUEST_TSO4 is not offered"
        );
        assert!(!net.features_ok());
        net.ack_features(u64::MAX);
        assert!(net.features_ok());
        assert_eq!(net.acked_features, offered, "unoffered bits are dropped");
    }

    #[test]
    fn test_offload_off_offers_no_checksum_or_segmentation() {
        let mut net = Net::new(FakeBackend::new(), MAC, 1500).unwrap();
        net.set_offload(false);
        assert!(!features::has(net.features(), VIRTIO_NET_F_CSUM));
        assert!(!features::has(net.features(), VIRTIO_NET_F_GUEST_CSUM));
        assert!(features::has(net.features(), VIRTIO_NET_F_MRG_RXBUF));
    }

    #[test]
    fn test_features_ok_refuses_tso_without_csum() {
        let mut net = Net::new(FakeBackend::new(), MAC, 1500).unwrap();
        net.ack_features((1 << VIRTIO_F_VERSION_1) | (1 << VIRTIO_NET_F_GUEST_TSO4));
        assert!(!net.features_ok());
    }

    /// Activates `net` on fresh mock queues after the driver acked `acked`.
    fn activate_with(net: &mut Net<FakeBackend>, mem: &GuestMemoryMmap, acked: u64) {
        let q =
            |at| virtio_queue::mock::MockSplitQueue::create(mem, vm_memory::GuestAddress(at), 16);
        let queues = vec![
            q(RX_RING).create_queue().unwrap(),
            q(TX_RING).create_queue().unwrap(),
        ];
        net.ack_features(acked);
        assert!(net.features_ok());
        let interrupt = Arc::new(FakeInterrupt::default());
        net.activate(mem.clone(), queues, interrupt).unwrap();
    }

    #[test]
    fn test_tap_offloads_follow_acked_features_and_reset_clears_them() {
        let mem = memory();
        let mut net = Net::new(FakeBackend::new(), MAC, 1500).unwrap();

        // A driver that accepts every offload: the tap may send all of them.
        let all = net.features();
        activate_with(&mut net, &mem, all);
        assert_eq!(
            net.backend.offload_calls,
            vec![crate::backend::ALL_TUN_OFFLOADS]
        );
        assert_eq!(net.counters.snapshot().features, net.features());

        // Reset: none, before any other driver can see a frame.
        net.reset();
        assert_eq!(net.backend.offload_calls.last(), Some(&0));

        // A driver that accepts checksum offload only: no TSO frames for it.
        let csum = (1 << VIRTIO_F_VERSION_1) | (1 << VIRTIO_NET_F_GUEST_CSUM);
        activate_with(&mut net, &mem, csum);
        assert_eq!(net.backend.offload_calls.last(), Some(&libc::TUN_F_CSUM));
        net.reset();

        // A driver that accepts none: no NEEDS_CSUM frame may ever reach it.
        activate_with(&mut net, &mem, 1 << VIRTIO_F_VERSION_1);
        assert_eq!(net.backend.offload_calls.last(), Some(&0));
        assert_eq!(net.counters.snapshot().features, 1 << VIRTIO_F_VERSION_1);
    }

    #[test]
    fn test_activate_without_version_1_fails() {
        let mem = memory();
        let mut net = Net::new(FakeBackend::new(), MAC, 1500).unwrap();
        let q = || virtio_queue::mock::MockSplitQueue::create(&mem, vm_memory::GuestAddress(0), 16);
        let queues = vec![q().create_queue().unwrap(), q().create_queue().unwrap()];
        assert!(matches!(
            net.activate(mem.clone(), queues, Arc::new(FakeInterrupt::default())),
            Err(ActivateError::NoVersion1)
        ));
    }

    #[test]
    fn test_activate_with_one_queue_names_the_count() {
        let mem = memory();
        let mut net = Net::new(FakeBackend::new(), MAC, 1500).unwrap();
        net.ack_features(net.features());
        let q = virtio_queue::mock::MockSplitQueue::create(&mem, vm_memory::GuestAddress(0), 16);
        let err = net.activate(
            mem.clone(),
            vec![q.create_queue().unwrap()],
            Arc::new(FakeInterrupt::default()),
        );
        assert!(matches!(
            err,
            Err(ActivateError::QueueCount {
                expected: 2,
                got: 1
            })
        ));
    }

    #[test]
    fn test_activate_with_rings_outside_memory_fails() {
        let mem = memory();
        let mut net = Net::new(FakeBackend::new(), MAC, 1500).unwrap();
        net.ack_features(net.features());
        let good = virtio_queue::mock::MockSplitQueue::create(&mem, vm_memory::GuestAddress(0), 16);
        let mut bad: Queue = good.create_queue().unwrap();
        bad.set_desc_table_address(Some(0xffff_f000), Some(0x10));
        let queues = vec![good.create_queue().unwrap(), bad];
        assert!(matches!(
            net.activate(mem.clone(), queues, Arc::new(FakeInterrupt::default())),
            Err(ActivateError::InvalidQueue(1))
        ));
        assert!(!net.is_active());
    }
}
