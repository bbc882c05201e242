//! The virtio-net device: what it offers (features, config space), and its life cycle
//! (created → activated by the driver → reset).

use std::mem::{offset_of, size_of};
use std::sync::Arc;

use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_bindings::virtio_ids::VIRTIO_ID_NET;
use virtio_bindings::virtio_net::{
    virtio_net_config, VIRTIO_NET_F_MAC, VIRTIO_NET_F_MTU, VIRTIO_NET_F_STATUS,
    VIRTIO_NET_S_LINK_UP,
};
use virtio_queue::{Queue, QueueT};
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::backend::Backend;
use crate::counters::NetCounters;
use crate::observer::FrameObserver;
use crate::virtio_device::{ActivateError, Interrupt, VirtioDevice};
use crate::MacAddr;

/// Index of the receive queue (device → driver).
pub const RX_QUEUE: usize = 0;
/// Index of the transmit queue (driver → device).
pub const TX_QUEUE: usize = 1;
/// Maximum size of each queue.
pub const QUEUE_SIZE: u16 = 256;

/// The features we offer: version 1 (no legacy layout), a MAC address and a link status in
/// config space, and the MTU. No offloads: the tap is told TUNSETOFFLOAD(0) to match.
pub const AVAIL_FEATURES: u64 = (1 << VIRTIO_F_VERSION_1)
    | (1 << VIRTIO_NET_F_MAC)
    | (1 << VIRTIO_NET_F_STATUS)
    | (1 << VIRTIO_NET_F_MTU);

/// What the device works with once the driver has set it up.
pub(crate) struct Active {
    pub(crate) mem: GuestMemoryMmap,
    pub(crate) rx: Queue,
    pub(crate) tx: Queue,
}

/// A virtio-net device on a backend (a tap in the VMM, a fake in unit tests).
pub struct Net<B: Backend> {
    mac: MacAddr,
    mtu: u16,
    acked_features: u64,
    pub(crate) backend: B,
    pub(crate) active: Option<Active>,
    pub(crate) needs_reset: bool,
    pub(crate) interrupt: Arc<Interrupt>,
    pub(crate) counters: Arc<NetCounters>,
    /// Written by the guest through ioeventfd: "look at queue n".
    pub(crate) queue_evts: [EventFd; 2],
    /// Tells the device thread that the device was activated or reset.
    pub(crate) state_evt: EventFd,
    /// Whether the event loop currently watches the queue events and the tap.
    pub(crate) subscribed: bool,
    /// The guest gave us no RX buffers: don't read the tap until it does.
    pub(crate) rx_waiting_for_buffers: bool,
    /// The tap refused a TX frame with EAGAIN: retry when it is writable.
    pub(crate) tx_waiting_for_tap: bool,
    /// Sees every frame moved, if set.
    pub(crate) observer: Option<Box<dyn FrameObserver>>,
}

impl<B: Backend> Net<B> {
    /// Creates a device with `mac` and `mtu` on `backend`.
    pub fn new(backend: B, mac: MacAddr, mtu: u16) -> std::io::Result<Self> {
        Ok(Self {
            mac,
            mtu,
            acked_features: 0,
            backend,
            active: None,
            needs_reset: false,
            interrupt: Arc::new(Interrupt::new()?),
            counters: Arc::new(NetCounters::default()),
            queue_evts: [EventFd::new(EFD_NONBLOCK)?, EventFd::new(EFD_NONBLOCK)?],
            state_evt: EventFd::new(EFD_NONBLOCK)?,
            subscribed: false,
            rx_waiting_for_buffers: false,
            tx_waiting_for_tap: false,
            observer: None,
        })
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

    /// The backend.
    pub fn backend(&self) -> &B {
        &self.backend
    }

    /// Whether the driver has activated the device.
    pub fn is_active(&self) -> bool {
        self.active.is_some()
    }

    /// The config space (virtio 1.2 §5.1.4): MAC, link up, one queue pair, MTU; little endian.
    fn config_space(&self) -> [u8; size_of::<virtio_net_config>()] {
        let mut config = [0u8; size_of::<virtio_net_config>()];
        let mut put = |offset: usize, bytes: &[u8]| {
            config[offset..offset + bytes.len()].copy_from_slice(bytes)
        };
        put(offset_of!(virtio_net_config, mac), &self.mac.0);
        put(
            offset_of!(virtio_net_config, status),
            &(VIRTIO_NET_S_LINK_UP as u16).to_le_bytes(),
        );
        put(
            offset_of!(virtio_net_config, max_virtqueue_pairs),
            &1u16.to_le_bytes(),
        );
        put(offset_of!(virtio_net_config, mtu), &self.mtu.to_le_bytes());
        config
    }

    /// Records a ring the guest corrupted: the device stops until reset, and says so.
    pub(crate) fn fail(&mut self, what: &str) {
        log::warn!("virtio-net {}: {what}; the device needs a reset", self.mac);
        self.needs_reset = true;
        self.active = None;
        self.interrupt.signal_config_change();
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
        AVAIL_FEATURES
    }

    fn ack_features(&mut self, features: u64) {
        self.acked_features = features & AVAIL_FEATURES;
    }

    fn features_ok(&self) -> bool {
        self.acked_features & (1 << VIRTIO_F_VERSION_1) != 0
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
            return Err(ActivateError::InvalidQueue(queues.len()));
        }
        let tx = queues.pop().unwrap_or_else(|| unreachable!());
        let rx = queues.pop().unwrap_or_else(|| unreachable!());
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
        self.active = Some(Active { mem, rx, tx });
        self.rx_waiting_for_buffers = false;
        self.tx_waiting_for_tap = false;
        self.state_evt.write(1).map_err(ActivateError::Signal)
    }

    fn reset(&mut self) {
        self.active = None;
        self.acked_features = 0;
        self.needs_reset = false;
        self.rx_waiting_for_buffers = false;
        self.tx_waiting_for_tap = false;
        self.interrupt.clear();
        // Queue notifications from before the reset must not be acted on after it.
        for evt in &self.queue_evts {
            let _ = evt.read();
        }
        let _ = self.state_evt.write(1);
    }

    fn needs_reset(&self) -> bool {
        self.needs_reset
    }

    fn interrupt(&self) -> &Interrupt {
        &self.interrupt
    }

    fn queue_events(&self) -> &[EventFd] {
        &self.queue_evts
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_utils::*;
    use virtio_bindings::virtio_net::VIRTIO_NET_F_CSUM;

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
    fn test_features_offered_and_unknown_acks_are_masked() {
        let mut net = Net::new(FakeBackend::new(), MAC, 1500).unwrap();
        assert_eq!(net.features(), AVAIL_FEATURES);
        assert!(!net.features_ok());
        net.ack_features(u64::MAX);
        assert!(net.features_ok());
        assert_eq!(
            net.acked_features & (1 << VIRTIO_NET_F_CSUM),
            0,
            "no offloads offered"
        );
    }

    #[test]
    fn test_activate_without_version_1_fails() {
        let mem = memory();
        let mut net = Net::new(FakeBackend::new(), MAC, 1500).unwrap();
        let q = || virtio_queue::mock::MockSplitQueue::create(&mem, vm_memory::GuestAddress(0), 16);
        let queues = vec![q().create_queue().unwrap(), q().create_queue().unwrap()];
        assert!(matches!(
            net.activate(mem.clone(), queues),
            Err(ActivateError::NoVersion1)
        ));
    }

    #[test]
    fn test_activate_with_rings_outside_memory_fails() {
        let mem = memory();
        let mut net = Net::new(FakeBackend::new(), MAC, 1500).unwrap();
        net.ack_features(AVAIL_FEATURES);
        let good = virtio_queue::mock::MockSplitQueue::create(&mem, vm_memory::GuestAddress(0), 16);
        let mut bad: Queue = good.create_queue().unwrap();
        bad.set_desc_table_address(Some(0xffff_f000), Some(0x10));
        let queues = vec![good.create_queue().unwrap(), bad];
        assert!(matches!(
            net.activate(mem.clone(), queues),
            Err(ActivateError::InvalidQueue(1))
        ));
        assert!(!net.is_active());
    }
}
