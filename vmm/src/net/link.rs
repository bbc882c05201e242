//! Following each NIC's host link: when the tap is set down or up, a macvtap's lower device
//! loses or regains carrier, or the interface is deleted, the guest sees its NIC's link go down
//! or up (VIRTIO_NET_S_LINK_UP in config space, with a configuration-change interrupt), as a
//! guest on QEMU does after `set_link`. A [`LinkMonitor`] hears the kernel's link messages; this
//! subscriber of the device thread's event loop hands each NIC's to its device.

use event_manager::{EventOps, EventSet, Events, MutEventSubscriber};
use vmm_tap::{LinkMonitor, LinkState};

use super::{NetDevice, Nic};

/// Watches the link of every NIC's host interface.
pub struct LinkWatcher {
    monitor: LinkMonitor,
    /// (interface index, NIC number, device) of each NIC.
    nics: Vec<(u32, usize, NetDevice)>,
}

impl LinkWatcher {
    /// Starts hearing link changes for `nics` (in the VMM's network namespace, where their
    /// interfaces are). The first messages, read by the event loop, are every link's state now.
    pub fn new(nics: &[Nic]) -> std::io::Result<Self> {
        Ok(Self {
            monitor: LinkMonitor::new()?,
            nics: nics
                .iter()
                .map(|nic| (nic.ifindex, nic.index, nic.device.clone()))
                .collect(),
        })
    }

    /// Tells the NIC whose interface `state` describes, if any.
    fn apply(nics: &[(u32, usize, NetDevice)], state: LinkState) {
        for (ifindex, index, device) in nics {
            if *ifindex != state.index {
                continue;
            }
            let mut device = device.lock().unwrap_or_else(|p| p.into_inner());
            if device.set_link_up(state.up) {
                let now = if state.up { "up" } else { "down" };
                log::info!("net{index}: host link {now}; the guest's NIC reports link {now}");
            }
        }
    }
}

impl MutEventSubscriber for LinkWatcher {
    fn init(&mut self, ops: &mut EventOps) {
        if let Err(e) = ops.add(Events::new(&self.monitor, EventSet::IN)) {
            log::warn!("cannot watch host link changes: {e:?}; guests will always see link up");
        }
    }

    fn process(&mut self, events: Events, ops: &mut EventOps) {
        let nics = &self.nics;
        let result = self.monitor.read(|state| Self::apply(nics, state));
        if events
            .event_set()
            .intersects(EventSet::ERROR | EventSet::HANG_UP)
            || result.is_err()
        {
            log::warn!(
                "host link changes can no longer be read ({result:?}); guests keep the link \
                 state they have"
            );
            let _ = ops.remove(Events::new(&self.monitor, EventSet::empty()));
        }
    }
}
