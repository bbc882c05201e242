//! The device thread's side: which file descriptors the event loop watches for this device,
//! and what each event triggers.
//!
//! | event | source | action |
//! |---|---|---|
//! | state changed | the transport activated or reset the device | start or stop watching the rest |
//! | RX queue | ioeventfd on QueueNotify = 0: the driver added RX buffers | resume reading the tap |
//! | TX queue | ioeventfd on QueueNotify = 1: the driver added frames | [`Net::process_tx`] |
//! | tap readable | a frame for the guest | [`Net::process_rx`] |
//! | tap writable | only watched after EAGAIN on TX | retry TX |
//!
//! The tap is watched for reading only while the guest has RX buffers: with none, a readable
//! tap would wake the loop forever (a 100 % CPU bug that Firecracker and Cloud Hypervisor both
//! shipped).

use event_manager::{EventOps, EventSet, Events, MutEventSubscriber};

use crate::backend::Backend;
use crate::counters::NetCounters;
use crate::device::{Net, RX_QUEUE, TX_QUEUE};
use crate::rx::RxOutcome;
use crate::tx::TxOutcome;

const STATE_EVENT: u32 = 0;
const RX_QUEUE_EVENT: u32 = 1;
const TX_QUEUE_EVENT: u32 = 2;
const TAP_EVENT: u32 = 3;

impl<B: Backend> Net<B> {
    /// What the loop should watch the tap for right now.
    fn tap_interest(&self) -> EventSet {
        let mut set = EventSet::empty();
        if !self.rx_waiting_for_buffers {
            set |= EventSet::IN;
        }
        if self.tx_waiting_for_tap {
            set |= EventSet::OUT;
        }
        set
    }

    fn update_tap_interest(&self, ops: &mut EventOps) {
        let events = Events::with_data(&self.backend, TAP_EVENT, self.tap_interest());
        if let Err(e) = ops.modify(events) {
            log::warn!("virtio-net: cannot change what the tap is watched for: {e:?}");
        }
    }

    /// Starts or stops watching queues and tap to match the device state.
    fn sync_subscriptions(&mut self, ops: &mut EventOps) {
        let want = self.is_active();
        if want == self.subscribed {
            return;
        }
        let queue_rx = Events::with_data(&self.queue_evts[RX_QUEUE], RX_QUEUE_EVENT, EventSet::IN);
        let queue_tx = Events::with_data(&self.queue_evts[TX_QUEUE], TX_QUEUE_EVENT, EventSet::IN);
        let tap = Events::with_data(&self.backend, TAP_EVENT, self.tap_interest());
        let result = if want {
            ops.add(queue_rx)
                .and_then(|_| ops.add(queue_tx))
                .and_then(|_| ops.add(tap))
        } else {
            // Removal ignores the event set; only the fd matters.
            let _ = ops.remove(queue_rx);
            let _ = ops.remove(queue_tx);
            ops.remove(tap)
        };
        if let Err(e) = result {
            log::warn!("virtio-net: cannot update the event loop: {e:?}");
        }
        self.subscribed = want;
    }

    fn handle_rx(&mut self, ops: &mut EventOps) {
        let before = self.rx_waiting_for_buffers;
        self.rx_waiting_for_buffers = self.process_rx() == RxOutcome::NoBuffers;
        if before != self.rx_waiting_for_buffers {
            self.update_tap_interest(ops);
        }
    }

    fn handle_tx(&mut self, ops: &mut EventOps) {
        let before = self.tx_waiting_for_tap;
        self.tx_waiting_for_tap = self.process_tx() == TxOutcome::TapFull;
        if before != self.tx_waiting_for_tap {
            self.update_tap_interest(ops);
        }
    }
}

impl<B: Backend> MutEventSubscriber for Net<B> {
    fn init(&mut self, ops: &mut EventOps) {
        if let Err(e) = ops.add(Events::with_data(
            &self.state_evt,
            STATE_EVENT,
            EventSet::IN,
        )) {
            log::warn!("virtio-net: cannot watch the device state: {e:?}");
        }
    }

    fn process(&mut self, events: Events, ops: &mut EventOps) {
        match events.data() {
            STATE_EVENT => {
                let _ = self.state_evt.read();
                self.sync_subscriptions(ops);
                if self.is_active() {
                    // Frames or buffers may have arrived before we watched.
                    self.handle_tx(ops);
                    self.handle_rx(ops);
                }
            }
            RX_QUEUE_EVENT => {
                // The eventfd's value is how many notifications came since we last looked.
                let kicks = self.queue_evts[RX_QUEUE].read().unwrap_or(0);
                NetCounters::add(&self.counters.rx_notifications, kicks);
                self.handle_rx(ops);
            }
            TX_QUEUE_EVENT => {
                let kicks = self.queue_evts[TX_QUEUE].read().unwrap_or(0);
                NetCounters::add(&self.counters.tx_notifications, kicks);
                self.handle_tx(ops);
            }
            TAP_EVENT => {
                if events.event_set().contains(EventSet::OUT) {
                    self.handle_tx(ops);
                }
                if events.event_set().contains(EventSet::IN) {
                    self.handle_rx(ops);
                }
            }
            other => log::warn!("virtio-net: unexpected event {other}"),
        }
        // A ring error inside processing deactivated the device.
        self.sync_subscriptions(ops);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use event_manager::{EventManager, SubscriberOps};

    use crate::device::Net;
    use crate::test_utils::*;

    type Shared = Arc<Mutex<Net<FakeBackend>>>;

    /// Runs the loop until it has nothing to do for 20 ms; returns the events it dispatched.
    fn run_until_idle(manager: &mut EventManager<Shared>) -> usize {
        let mut total = 0;
        for _ in 0..50 {
            let n = manager.run_with_timeout(20).unwrap();
            if n == 0 {
                return total;
            }
            total += n;
        }
        panic!("the event loop never went idle: busy loop");
    }

    #[test]
    fn test_readable_tap_without_rx_buffers_does_not_spin_and_resumes_on_notify() {
        let mem = memory();
        let h = Harness::new(&mem);
        let Harness { net, rx, .. } = h;
        let net: Shared = Arc::new(Mutex::new(net));
        let mut manager = EventManager::<Shared>::new().unwrap();
        manager.add_subscriber(net.clone());

        // A frame is waiting on the "tap" (its fd is readable) but the guest gave no buffers.
        {
            let mut n = net.lock().unwrap();
            n.backend.to_guest.push_back(with_header(&[1; 60]));
            n.backend.fd.write(1).unwrap();
        }
        run_until_idle(&mut manager);
        assert_eq!(
            manager.run_with_timeout(50).unwrap(),
            0,
            "readable tap must not wake the loop"
        );
        assert_eq!(net.lock().unwrap().backend.reads, 0);

        // The driver adds a buffer and notifies the RX queue: the frame is delivered.
        rx.add_desc_chains(&chain(&[desc(BUFFERS, 1536, true)], 0), 0)
            .unwrap();
        net.lock().unwrap().queue_evts[crate::device::RX_QUEUE]
            .write(1)
            .unwrap();
        run_until_idle(&mut manager);
        let n = net.lock().unwrap();
        assert_eq!(n.counters.snapshot().rx_frames, 1);
        assert!(n.backend.to_guest.is_empty());
    }

    #[test]
    fn test_tx_notify_sends_and_reset_unsubscribes() {
        let mem = memory();
        let h = Harness::new(&mem);
        h.put(BUFFERS, &with_header(&[2; 60]));
        h.tx.add_desc_chains(&chain(&[desc(BUFFERS, 72, false)], 0), 0)
            .unwrap();
        let Harness { net, .. } = h;
        let net: Shared = Arc::new(Mutex::new(net));
        let mut manager = EventManager::<Shared>::new().unwrap();
        manager.add_subscriber(net.clone());
        run_until_idle(&mut manager); // activation: pending TX is sent
        assert_eq!(net.lock().unwrap().backend.sent.len(), 1);

        crate::VirtioDevice::reset(&mut *net.lock().unwrap());
        run_until_idle(&mut manager);
        assert!(!net.lock().unwrap().subscribed);
        // Queue notifications after reset wake nothing.
        net.lock().unwrap().queue_evts[crate::device::TX_QUEUE]
            .write(1)
            .unwrap();
        assert_eq!(manager.run_with_timeout(50).unwrap(), 0);
    }
}
