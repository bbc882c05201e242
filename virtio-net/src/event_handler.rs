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
//! | tap error / hang-up | the tap was deleted or detached | stop watching it; frames are dropped and counted |
//!
//! The tap is watched for reading only while the guest has RX buffers: with none, a readable
//! tap would wake the loop forever (a 100 % CPU bug that Firecracker and Cloud Hypervisor both
//! shipped). A tap that reports an error or hang-up (deleted under the running VM) leaves the
//! loop for good, for the same reason. And no pass runs for ever: after a queue's worth of
//! frames it yields to the loop, so one busy guest cannot starve the other NICs.

use event_manager::{EventOps, EventSet, Events, MutEventSubscriber};

use crate::backend::Backend;
use crate::counters::NetCounters;
use crate::device::{Net, RX_QUEUE, TX_QUEUE};
use crate::rx::RxOutcome;
use crate::tx::TxOutcome;

/// What the event loop watches for a device, and why.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Watch {
    /// Whether the loop watches the queue events (and the tap) at all: while active.
    pub(crate) subscribed: bool,
    /// What the loop watches the tap for now (None: not at all). Compared with what the flags
    /// below ask for, never assumed: activation and reset change the flags behind the loop's
    /// back.
    pub(crate) tap_registered: Option<EventSet>,
    /// The tap reported an error or hang-up (deleted, detached): out of the loop for good.
    pub(crate) backend_lost: bool,
    /// The guest has too few RX buffers: don't read the tap until it adds some.
    pub(crate) rx_waiting_for_buffers: bool,
    /// The tap refused a TX frame with EAGAIN: retry when it is writable.
    pub(crate) tx_waiting_for_tap: bool,
}

const STATE_EVENT: u32 = 0;
const RX_QUEUE_EVENT: u32 = 1;
const TX_QUEUE_EVENT: u32 = 2;
const TAP_EVENT: u32 = 3;

impl<B: Backend> Net<B> {
    /// What the loop should watch the tap for right now.
    fn tap_interest(&self) -> EventSet {
        let mut set = EventSet::empty();
        if !self.watch.rx_waiting_for_buffers {
            set |= EventSet::IN;
        }
        if self.watch.tx_waiting_for_tap {
            set |= EventSet::OUT;
        }
        set
    }

    /// Makes the loop watch the tap for what the device needs now — whatever it watched before
    /// (the flags change in `activate` and `reset` too, not only here) — or not at all once the
    /// tap is lost.
    fn update_tap_interest(&mut self, ops: &mut EventOps) {
        if self.watch.backend_lost {
            if self.watch.tap_registered.take().is_some() {
                let _ = ops.remove(Events::new(&self.backend, EventSet::empty()));
            }
            return;
        }
        let want = self.watch.subscribed.then(|| self.tap_interest());
        if want == self.watch.tap_registered {
            return;
        }
        let result = match (self.watch.tap_registered, want) {
            (None, Some(set)) => ops.add(Events::with_data(&self.backend, TAP_EVENT, set)),
            (Some(_), Some(set)) => ops.modify(Events::with_data(&self.backend, TAP_EVENT, set)),
            (Some(_), None) => ops.remove(Events::new(&self.backend, EventSet::empty())),
            (None, None) => Ok(()),
        };
        match result {
            Ok(()) => self.watch.tap_registered = want,
            Err(e) => log::warn!("virtio-net: cannot change what the tap is watched for: {e:?}"),
        }
    }

    /// Starts or stops watching the queues and the tap to match the device state.
    fn sync_subscriptions(&mut self, ops: &mut EventOps) {
        let want = self.is_active();
        if want != self.watch.subscribed {
            let queue_rx =
                Events::with_data(&self.queue_evts[RX_QUEUE], RX_QUEUE_EVENT, EventSet::IN);
            let queue_tx =
                Events::with_data(&self.queue_evts[TX_QUEUE], TX_QUEUE_EVENT, EventSet::IN);
            let result = if want {
                ops.add(queue_rx).and_then(|_| ops.add(queue_tx))
            } else {
                // Removal ignores the event set; only the fd matters.
                let _ = ops.remove(queue_rx);
                ops.remove(queue_tx)
            };
            if let Err(e) = result {
                log::warn!("virtio-net: cannot update the event loop: {e:?}");
            }
            self.watch.subscribed = want;
        }
        self.update_tap_interest(ops);
    }

    /// The tap reported EPOLLERR or EPOLLHUP: it was deleted, or its queue detached. It stays
    /// that way, and epoll reports it on every wait, so it leaves the loop (otherwise the
    /// thread spins at 100 %: F1 of the reliability review). The guest keeps running; its
    /// frames are dropped and counted from now on.
    fn tap_lost(&mut self, ops: &mut EventOps) {
        if !self.watch.backend_lost {
            log::warn!(
                "virtio-net {}: the tap reports an error or hang-up (deleted?); this NIC moves no \
                 more frames",
                self.mac()
            );
            NetCounters::inc(&self.counters.backend_lost);
        }
        self.watch.backend_lost = true;
        self.update_tap_interest(ops);
    }

    fn handle_rx(&mut self, ops: &mut EventOps) {
        self.watch.rx_waiting_for_buffers = self.process_rx() == RxOutcome::NoBuffers;
        self.update_tap_interest(ops);
    }

    fn handle_tx(&mut self, ops: &mut EventOps) {
        let outcome = self.process_tx();
        self.watch.tx_waiting_for_tap = outcome == TxOutcome::TapFull;
        if outcome == TxOutcome::Budget {
            // More frames wait, but other NICs and this NIC's RX get their turn first: come
            // back through the loop (F2).
            let _ = self.state_evt.write(1);
        }
        self.update_tap_interest(ops);
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
                    // Frames or buffers may have arrived before we watched, or a pass stopped
                    // at its budget.
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
                let set = events.event_set();
                if set.intersects(EventSet::ERROR | EventSet::HANG_UP) {
                    self.tap_lost(ops);
                    return;
                }
                if set.contains(EventSet::OUT) {
                    self.handle_tx(ops);
                }
                if set.contains(EventSet::IN) {
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

    /// The device shared with an event loop that serves it, as the VMM's device thread does.
    fn in_a_loop(net: Net<FakeBackend>) -> (Shared, EventManager<Shared>) {
        let net: Shared = Arc::new(Mutex::new(net));
        let mut manager = EventManager::<Shared>::new().unwrap();
        manager.add_subscriber(net.clone());
        (net, manager)
    }

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
        let (net, mut manager) = in_a_loop(net);

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
        let (net, mut manager) = in_a_loop(net);
        run_until_idle(&mut manager); // activation: pending TX is sent
        assert_eq!(net.lock().unwrap().backend.sent.len(), 1);

        crate::VirtioDevice::reset(&mut *net.lock().unwrap());
        run_until_idle(&mut manager);
        assert!(!net.lock().unwrap().watch.subscribed);
        // Queue notifications after reset wake nothing.
        net.lock().unwrap().queue_evts[crate::device::TX_QUEUE]
            .write(1)
            .unwrap();
        assert_eq!(manager.run_with_timeout(50).unwrap(), 0);
    }

    #[test]
    fn test_deleted_tap_leaves_the_loop_instead_of_spinning() {
        let mem = memory();
        let h = Harness::new(&mem);
        let Harness { net, rx, .. } = h;
        let (net, mut manager) = in_a_loop(net);
        run_until_idle(&mut manager);

        // The tap is deleted: its fd reports EPOLLERR on every wait from now on. (Re-adding
        // it to the loop is the easiest way to have the loop see the new fd.)
        {
            let mut n = net.lock().unwrap();
            n.backend.break_fd();
            n.watch.tap_registered = None;
        }
        net.lock().unwrap().state_evt.write(1).unwrap();
        run_until_idle(&mut manager); // panics "busy loop" if the error keeps waking it
        assert_eq!(manager.run_with_timeout(50).unwrap(), 0);
        {
            let n = net.lock().unwrap();
            assert!(n.watch.backend_lost && n.watch.tap_registered.is_none());
            assert_eq!(n.counters.snapshot().backend_lost, 1);
        }

        // RX kicks read nothing from a lost tap (the old code used up every buffer).
        rx.add_desc_chains(&chain(&[desc(BUFFERS, 1536, true)], 0), 0)
            .unwrap();
        net.lock().unwrap().queue_evts[crate::device::RX_QUEUE]
            .write(1)
            .unwrap();
        run_until_idle(&mut manager);
        let n = net.lock().unwrap();
        assert_eq!(n.backend.reads, 0);
        assert_eq!(n.counters.snapshot().dropped(), 0, "no buffer was used up");
    }

    #[test]
    fn test_reactivation_rearms_the_tap_even_when_still_subscribed() {
        let mem = memory();
        let h = Harness::new(&mem);
        let Harness { net, rx, .. } = h;
        let (net, mut manager) = in_a_loop(net);
        // No RX buffers: the loop stops watching the tap for reading.
        run_until_idle(&mut manager);
        assert!(net.lock().unwrap().watch.rx_waiting_for_buffers);

        // The driver clears DRIVER_OK and sets it again (no reset in between): the device is
        // activated again, with a buffer this time, while the loop is still subscribed.
        rx.add_desc_chains(&chain(&[desc(BUFFERS, 1536, true)], 0), 0)
            .unwrap();
        {
            let mut n = net.lock().unwrap();
            let rxq = rx.create_queue().unwrap();
            let txq = virtio_queue::mock::MockSplitQueue::create(
                &mem,
                vm_memory::GuestAddress(TX_RING),
                QUEUE_LEN,
            )
            .create_queue()
            .unwrap();
            let irq = Arc::new(FakeInterrupt::default());
            crate::VirtioDevice::activate(&mut *n, mem.clone(), vec![rxq, txq], irq).unwrap();
        }
        run_until_idle(&mut manager);

        // A frame arrives later: the loop must see the tap readable and deliver it, without
        // waiting for an RX kick (the stale mask froze ingress: F3).
        {
            let n = net.lock().unwrap();
            assert!(!n.watch.rx_waiting_for_buffers);
        }
        {
            let mut n = net.lock().unwrap();
            n.backend.to_guest.push_back(with_header(&[7; 60]));
            n.backend.fd.write(1).unwrap();
        }
        run_until_idle(&mut manager);
        assert_eq!(net.lock().unwrap().counters.snapshot().rx_frames, 1);
    }
}
