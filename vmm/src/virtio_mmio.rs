//! The virtio-mmio transport (virtio 1.2 §4.2.2, version 2): the register file a driver
//! programs to discover a device, negotiate features, hand over its rings and start it.
//!
//! The VMM must wire up, per device (see [`crate::net`]):
//! - a 4 KiB MMIO window in the device window, announced on the kernel command line as
//!   `virtio_mmio.device=4K@0x<base>:<irq>`;
//! - one ioeventfd per queue on `base + QueueNotify` with the queue index as datamatch, so a
//!   notification wakes the device thread without a trip through this code;
//! - an irqfd for the transport's interrupt eventfd ([`MmioTransport::irqfd`]) on `<irq>`.
//!
//! The transport owns the InterruptStatus bits and that eventfd ([`MmioInterrupt`]) and hands
//! the device a handle to them when it starts it, so a driver reading or acknowledging
//! InterruptStatus never waits for the device mutex (held by the device thread for a pass).
//!
//! Everything else — reads and writes of the registers below — arrives here as MMIO exits.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use virtio_bindings::virtio_config::{
    VIRTIO_CONFIG_S_ACKNOWLEDGE, VIRTIO_CONFIG_S_DRIVER, VIRTIO_CONFIG_S_DRIVER_OK,
    VIRTIO_CONFIG_S_FAILED, VIRTIO_CONFIG_S_FEATURES_OK, VIRTIO_CONFIG_S_NEEDS_RESET,
};
use virtio_bindings::virtio_mmio::*;
use virtio_queue::{Queue, QueueT};
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};
use vmm_virtio_net::{InterruptSignal, LogLimit, VirtioDevice};

/// "virt" in little endian: the MagicValue register.
const MMIO_MAGIC: u32 = 0x7472_6976;
/// Transport version 2 (virtio 1.0 and later; version 1 is legacy).
const MMIO_VERSION: u32 = 2;
/// VendorID register: "vmm\0".
const VENDOR_ID: u32 = 0x006d_6d76;
/// Size of a device's register window.
pub const MMIO_WINDOW_SIZE: u64 = 0x1000;

/// A device's interrupt line: the InterruptStatus register and the eventfd that KVM turns into
/// a guest interrupt (irqfd).
#[derive(Debug)]
pub struct MmioInterrupt {
    status: AtomicU32,
    irqfd: EventFd,
}

impl MmioInterrupt {
    fn new() -> std::io::Result<Self> {
        Ok(Self {
            status: AtomicU32::new(0),
            irqfd: EventFd::new(EFD_NONBLOCK)?,
        })
    }

    fn raise(&self, bit: u32) {
        self.status.fetch_or(bit, Ordering::SeqCst);
        if let Err(e) = self.irqfd.write(1) {
            log::warn!("cannot raise the device interrupt: {e}");
        }
    }

    /// The InterruptStatus register.
    pub fn status(&self) -> u32 {
        self.status.load(Ordering::SeqCst)
    }
}

impl InterruptSignal for MmioInterrupt {
    fn signal_used_queue(&self) {
        self.raise(VIRTIO_MMIO_INT_VRING);
    }

    fn signal_config_change(&self) {
        self.raise(VIRTIO_MMIO_INT_CONFIG);
    }
}

/// One virtio-mmio device: the transport state plus the device behind it.
pub struct MmioTransport {
    device: Arc<Mutex<dyn VirtioDevice>>,
    interrupt: Arc<MmioInterrupt>,
    mem: GuestMemoryMmap,
    queues: Vec<Queue>,
    queue_select: u32,
    device_features_select: u32,
    driver_features_select: u32,
    driver_features: u64,
    status: u32,
    config_generation: u32,
    /// The driver's refused features and failed activations: a few warnings, then debug
    /// level (a guest can repeat them as often as it likes).
    driver_log: LogLimit,
}

impl MmioTransport {
    /// Puts `device` behind a transport; `mem` is handed to it at activation. Fails only if
    /// the interrupt's eventfd cannot be made.
    pub fn new(
        mem: GuestMemoryMmap,
        device: Arc<Mutex<dyn VirtioDevice>>,
    ) -> std::io::Result<Self> {
        let queues = lock(&device)
            .queue_max_sizes()
            .iter()
            .map(|&max| {
                Queue::new(max)
                    .unwrap_or_else(|_| unreachable!("device queue sizes are powers of two"))
            })
            .collect();
        Ok(Self {
            device,
            interrupt: Arc::new(MmioInterrupt::new()?),
            mem,
            queues,
            queue_select: 0,
            device_features_select: 0,
            driver_features_select: 0,
            driver_features: 0,
            status: 0,
            config_generation: 0,
            driver_log: LogLimit::new(10),
        })
    }

    /// The eventfd to register with KVM as this device's irqfd.
    pub fn irqfd(&self) -> &EventFd {
        &self.interrupt.irqfd
    }

    fn selected_queue(&mut self) -> Option<&mut Queue> {
        self.queues.get_mut(self.queue_select as usize)
    }

    /// A guest read of `data.len()` bytes at `offset` in the window.
    pub fn read(&mut self, offset: u64, data: &mut [u8]) {
        if offset >= u64::from(VIRTIO_MMIO_CONFIG) {
            lock(&self.device).read_config(offset - u64::from(VIRTIO_MMIO_CONFIG), data);
            return;
        }
        if data.len() != 4 {
            log::debug!(
                "virtio-mmio: {}-byte read of register {offset:#x} ignored",
                data.len()
            );
            data.fill(0);
            return;
        }
        // The transport's own registers first: they never wait for the device, whose mutex
        // the device thread holds for a whole RX/TX pass.
        let own = match offset as u32 {
            VIRTIO_MMIO_MAGIC_VALUE => Some(MMIO_MAGIC),
            VIRTIO_MMIO_VERSION => Some(MMIO_VERSION),
            VIRTIO_MMIO_VENDOR_ID => Some(VENDOR_ID),
            VIRTIO_MMIO_QUEUE_READY => {
                Some(u32::from(self.selected_queue().is_some_and(|q| q.ready())))
            }
            VIRTIO_MMIO_INTERRUPT_STATUS => Some(self.interrupt.status()),
            VIRTIO_MMIO_CONFIG_GENERATION => Some(self.config_generation),
            _ => None,
        };
        let value = own.unwrap_or_else(|| {
            let device = lock(&self.device);
            match offset as u32 {
                VIRTIO_MMIO_DEVICE_ID => device.device_type(),
                VIRTIO_MMIO_DEVICE_FEATURES => match self.device_features_select {
                    0 => device.features() as u32,
                    1 => (device.features() >> 32) as u32,
                    _ => 0,
                },
                VIRTIO_MMIO_QUEUE_NUM_MAX => device
                    .queue_max_sizes()
                    .get(self.queue_select as usize)
                    .map_or(0, |&m| u32::from(m)),
                VIRTIO_MMIO_STATUS => {
                    self.status
                        | if device.needs_reset() {
                            VIRTIO_CONFIG_S_NEEDS_RESET
                        } else {
                            0
                        }
                }
                _ => {
                    log::debug!("virtio-mmio: read of unknown register {offset:#x}");
                    0
                }
            }
        });
        data.copy_from_slice(&value.to_le_bytes());
    }

    /// A guest write of `data` at `offset` in the window.
    pub fn write(&mut self, offset: u64, data: &[u8]) {
        if offset >= u64::from(VIRTIO_MMIO_CONFIG) {
            lock(&self.device).write_config(offset - u64::from(VIRTIO_MMIO_CONFIG), data);
            return;
        }
        let Ok(bytes) = <[u8; 4]>::try_from(data) else {
            log::debug!(
                "virtio-mmio: {}-byte write of register {offset:#x} ignored",
                data.len()
            );
            return;
        };
        let value = u32::from_le_bytes(bytes);
        let setting_up = self.status & VIRTIO_CONFIG_S_DRIVER_OK == 0;
        match offset as u32 {
            VIRTIO_MMIO_DEVICE_FEATURES_SEL => self.device_features_select = value,
            VIRTIO_MMIO_DRIVER_FEATURES_SEL => self.driver_features_select = value,
            VIRTIO_MMIO_DRIVER_FEATURES if self.status & VIRTIO_CONFIG_S_FEATURES_OK == 0 => {
                match self.driver_features_select {
                    0 => {
                        self.driver_features =
                            (self.driver_features & !0xffff_ffff) | u64::from(value)
                    }
                    1 => {
                        self.driver_features =
                            (self.driver_features & 0xffff_ffff) | (u64::from(value) << 32)
                    }
                    _ => {}
                }
            }
            VIRTIO_MMIO_QUEUE_SEL => self.queue_select = value,
            VIRTIO_MMIO_QUEUE_NUM if setting_up => self.with_queue(|q| q.set_size(value as u16)),
            VIRTIO_MMIO_QUEUE_READY if setting_up => self.with_queue(|q| q.set_ready(value == 1)),
            VIRTIO_MMIO_QUEUE_DESC_LOW if setting_up => {
                self.with_queue(|q| q.set_desc_table_address(Some(value), None))
            }
            VIRTIO_MMIO_QUEUE_DESC_HIGH if setting_up => {
                self.with_queue(|q| q.set_desc_table_address(None, Some(value)))
            }
            VIRTIO_MMIO_QUEUE_AVAIL_LOW if setting_up => {
                self.with_queue(|q| q.set_avail_ring_address(Some(value), None))
            }
            VIRTIO_MMIO_QUEUE_AVAIL_HIGH if setting_up => {
                self.with_queue(|q| q.set_avail_ring_address(None, Some(value)))
            }
            VIRTIO_MMIO_QUEUE_USED_LOW if setting_up => {
                self.with_queue(|q| q.set_used_ring_address(Some(value), None))
            }
            VIRTIO_MMIO_QUEUE_USED_HIGH if setting_up => {
                self.with_queue(|q| q.set_used_ring_address(None, Some(value)))
            }
            VIRTIO_MMIO_QUEUE_NOTIFY => {
                // Normally absorbed by the ioeventfd; pass it on if it reaches us anyway.
                let device = lock(&self.device);
                if let Some(evt) = device.queue_events().get(value as usize) {
                    let _ = evt.write(1);
                }
            }
            VIRTIO_MMIO_INTERRUPT_ACK => {
                // InterruptACK: the driver handled these bits.
                self.interrupt.status.fetch_and(!value, Ordering::SeqCst);
            }
            VIRTIO_MMIO_STATUS => self.set_status(value),
            _ => log::debug!("virtio-mmio: write of {value:#x} to register {offset:#x} ignored"),
        }
    }

    fn with_queue(&mut self, f: impl FnOnce(&mut Queue)) {
        if let Some(queue) = self.selected_queue() {
            f(queue);
        }
    }

    /// The Status register (virtio 1.2 §2.1, §3.1.1): 0 resets; otherwise the driver may only
    /// add the next bit of ACKNOWLEDGE → DRIVER → FEATURES_OK → DRIVER_OK, or FAILED at any
    /// time (see [`status_transition_ok`]). FEATURES_OK checks the features; DRIVER_OK starts
    /// the device. Anything else is ignored: in particular clearing DRIVER_OK without a reset
    /// must not re-activate a running device.
    fn set_status(&mut self, value: u32) {
        if value == 0 {
            self.reset();
            return;
        }
        // NEEDS_RESET is the device's to set; drivers write back what they read (Linux's
        // virtio_add_status does), so the bit is not part of their request.
        let needs_reset = self.status & VIRTIO_CONFIG_S_NEEDS_RESET;
        let value = value & !VIRTIO_CONFIG_S_NEEDS_RESET;
        let current = self.status & !VIRTIO_CONFIG_S_NEEDS_RESET;
        if !status_transition_ok(current, value) {
            log::debug!("virtio-mmio: status {current:#x} -> {value:#x} is not allowed; ignored");
            return;
        }
        let new = value & !current;
        let mut status = value;
        let mut device = lock(&self.device);
        if new & VIRTIO_CONFIG_S_FEATURES_OK != 0 {
            let unoffered = self.driver_features & !device.features();
            device.ack_features(self.driver_features);
            if unoffered != 0 || !device.features_ok() {
                vmm_virtio_net::warn_limited!(
                    self.driver_log,
                    "virtio-mmio: the driver's features {:#x} are not acceptable{}",
                    self.driver_features,
                    if unoffered != 0 {
                        format!(" (not offered: {unoffered:#x})")
                    } else {
                        String::new()
                    }
                );
                status &= !VIRTIO_CONFIG_S_FEATURES_OK;
            }
        }
        if new & VIRTIO_CONFIG_S_DRIVER_OK != 0 {
            // The device gets its own copy of the queue configuration; the transport keeps the
            // registers' view for reads until the next reset.
            let queues = self
                .queues
                .iter()
                .enumerate()
                .map(|(i, q)| Queue::try_from(q.state()).map_err(|e| (i, e)))
                .collect::<Result<Vec<_>, _>>();
            let activated = match queues {
                Ok(queues) => device.activate(self.mem.clone(), queues, self.interrupt.clone()),
                Err((index, e)) => {
                    log::debug!("virtio-mmio: queue {index} configuration rejected: {e:?}");
                    Err(vmm_virtio_net::ActivateError::InvalidQueue(index))
                }
            };
            if let Err(e) = activated {
                vmm_virtio_net::warn_limited!(
                    self.driver_log,
                    "virtio-mmio: cannot activate the device: {e}"
                );
                status |= VIRTIO_CONFIG_S_NEEDS_RESET;
                self.interrupt.signal_config_change();
            }
        }
        self.status = status | needs_reset;
    }

    /// Device reset: device and transport back to their initial state.
    fn reset(&mut self) {
        lock(&self.device).reset();
        self.interrupt.status.store(0, Ordering::SeqCst);
        for queue in &mut self.queues {
            queue.reset();
        }
        self.queue_select = 0;
        self.device_features_select = 0;
        self.driver_features_select = 0;
        self.driver_features = 0;
        self.status = 0;
    }
}

/// Whether a driver may change the device status from `current` to `new` (neither 0): add the
/// next step of initialisation (virtio 1.2 §3.1.1), write the same value again, or add FAILED
/// ("the driver has given up"). Bits are never cleared except by a reset (a write of 0).
pub fn status_transition_ok(current: u32, new: u32) -> bool {
    const STEPS: [u32; 4] = [
        VIRTIO_CONFIG_S_ACKNOWLEDGE,
        VIRTIO_CONFIG_S_DRIVER,
        VIRTIO_CONFIG_S_FEATURES_OK,
        VIRTIO_CONFIG_S_DRIVER_OK,
    ];
    let steps: u32 = STEPS.iter().sum();
    if new & !(steps | VIRTIO_CONFIG_S_FAILED) != 0 || new & current != current {
        return false; // unknown bits, or a bit cleared
    }
    let added = (new & !current) & !VIRTIO_CONFIG_S_FAILED;
    if added == 0 {
        return true; // the same again, or FAILED
    }
    // The one bit added must be the step after the last one set.
    let done = STEPS.iter().take_while(|&&bit| current & bit != 0).count();
    current & steps & !STEPS[..done].iter().sum::<u32>() == 0 && STEPS.get(done) == Some(&added)
}

/// Locks the device; a panic on another thread while holding the lock does not stop us.
fn lock(
    device: &Arc<Mutex<dyn VirtioDevice>>,
) -> std::sync::MutexGuard<'_, dyn VirtioDevice + 'static> {
    device
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
    use vm_memory::GuestAddress;
    use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};
    use vmm_virtio_net::ActivateError;

    const ACK: u32 = VIRTIO_CONFIG_S_ACKNOWLEDGE;
    const DRIVER: u32 = VIRTIO_CONFIG_S_DRIVER;
    const FEATURES_OK: u32 = VIRTIO_CONFIG_S_FEATURES_OK;
    const DRIVER_OK: u32 = VIRTIO_CONFIG_S_DRIVER_OK;
    const FAILED: u32 = VIRTIO_CONFIG_S_FAILED;
    const NEEDS_RESET: u32 = VIRTIO_CONFIG_S_NEEDS_RESET;
    /// What the fake device offers: VERSION_1 and bit 5.
    const OFFERED: u64 = (1 << VIRTIO_F_VERSION_1) | (1 << 5);

    /// A device that records what the transport asks of it.
    struct Fake {
        acked: u64,
        activations: usize,
        resets: usize,
        refuse_activation: bool,
        interrupt: Option<Arc<dyn InterruptSignal>>,
        evts: [EventFd; 2],
    }

    impl VirtioDevice for Fake {
        fn device_type(&self) -> u32 {
            1
        }
        fn queue_max_sizes(&self) -> &[u16] {
            &[16, 16]
        }
        fn features(&self) -> u64 {
            OFFERED
        }
        fn ack_features(&mut self, features: u64) {
            self.acked = features & OFFERED;
        }
        fn features_ok(&self) -> bool {
            self.acked & (1 << VIRTIO_F_VERSION_1) != 0
        }
        fn read_config(&self, _offset: u64, data: &mut [u8]) {
            data.fill(0);
        }
        fn write_config(&mut self, _offset: u64, _data: &[u8]) {}
        fn activate(
            &mut self,
            _mem: GuestMemoryMmap,
            _q: Vec<Queue>,
            interrupt: Arc<dyn InterruptSignal>,
        ) -> Result<(), ActivateError> {
            self.activations += 1;
            self.interrupt = Some(interrupt);
            if self.refuse_activation {
                return Err(ActivateError::InvalidQueue(0));
            }
            Ok(())
        }
        fn reset(&mut self) {
            self.resets += 1;
            self.acked = 0;
        }
        fn needs_reset(&self) -> bool {
            false
        }
        fn queue_events(&self) -> &[EventFd] {
            &self.evts
        }
    }

    fn setup() -> (MmioTransport, Arc<Mutex<Fake>>) {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap();
        let fake = Arc::new(Mutex::new(Fake {
            acked: 0,
            activations: 0,
            resets: 0,
            refuse_activation: false,
            interrupt: None,
            evts: [
                EventFd::new(EFD_NONBLOCK).unwrap(),
                EventFd::new(EFD_NONBLOCK).unwrap(),
            ],
        }));
        let device: Arc<Mutex<dyn VirtioDevice>> = fake.clone();
        let mut t = MmioTransport::new(mem, device).unwrap();
        // Both queues: size 16, rings in guest RAM, ready.
        for (q, base) in [(0u32, 0x1000u32), (1, 0x4000)] {
            t.write32(VIRTIO_MMIO_QUEUE_SEL, q);
            t.write32(VIRTIO_MMIO_QUEUE_NUM, 16);
            t.write32(VIRTIO_MMIO_QUEUE_DESC_LOW, base);
            t.write32(VIRTIO_MMIO_QUEUE_AVAIL_LOW, base + 0x200);
            t.write32(VIRTIO_MMIO_QUEUE_USED_LOW, base + 0x1000);
            t.write32(VIRTIO_MMIO_QUEUE_READY, 1);
        }
        (t, fake)
    }

    impl MmioTransport {
        fn write32(&mut self, reg: u32, value: u32) {
            self.write(u64::from(reg), &value.to_le_bytes());
        }
        fn read32(&mut self, reg: u32) -> u32 {
            let mut b = [0u8; 4];
            self.read(u64::from(reg), &mut b);
            u32::from_le_bytes(b)
        }
        fn status(&mut self) -> u32 {
            self.read32(VIRTIO_MMIO_STATUS)
        }
        fn set_driver_features(&mut self, features: u64) {
            for sel in 0..2u32 {
                self.write32(VIRTIO_MMIO_DRIVER_FEATURES_SEL, sel);
                self.write32(VIRTIO_MMIO_DRIVER_FEATURES, (features >> (32 * sel)) as u32);
            }
        }
        /// ACKNOWLEDGE, DRIVER, the features, FEATURES_OK: the status read back.
        fn negotiate(&mut self, features: u64) -> u32 {
            self.write32(VIRTIO_MMIO_STATUS, ACK);
            self.write32(VIRTIO_MMIO_STATUS, ACK | DRIVER);
            self.set_driver_features(features);
            self.write32(VIRTIO_MMIO_STATUS, ACK | DRIVER | FEATURES_OK);
            self.status()
        }
    }

    #[test]
    fn test_transitions_allow_only_the_next_step_or_failed() {
        assert!(status_transition_ok(0, ACK));
        assert!(status_transition_ok(ACK, ACK | DRIVER));
        assert!(status_transition_ok(
            ACK | DRIVER,
            ACK | DRIVER | FEATURES_OK
        ));
        let ready = ACK | DRIVER | FEATURES_OK;
        assert!(status_transition_ok(ready, ready | DRIVER_OK));
        assert!(
            status_transition_ok(ready | DRIVER_OK, ready | DRIVER_OK),
            "same again"
        );
        assert!(
            status_transition_ok(ACK | DRIVER, ACK | DRIVER | FAILED),
            "giving up"
        );
        assert!(!status_transition_ok(0, DRIVER_OK), "skipping steps");
        assert!(
            !status_transition_ok(ACK, ACK | DRIVER | FEATURES_OK),
            "two steps at once"
        );
        assert!(
            !status_transition_ok(ready | DRIVER_OK, ready),
            "clearing DRIVER_OK"
        );
        assert!(!status_transition_ok(ACK, ACK | 0x10), "an unknown bit");
        assert!(
            !status_transition_ok(ACK | DRIVER, DRIVER | FEATURES_OK),
            "clearing ACK"
        );
    }

    #[test]
    fn test_normal_start_acks_features_and_activates_once() {
        let (mut t, fake) = setup();
        assert_eq!(t.read32(VIRTIO_MMIO_MAGIC_VALUE), MMIO_MAGIC);
        assert_eq!(t.negotiate(OFFERED), ACK | DRIVER | FEATURES_OK);
        t.write32(VIRTIO_MMIO_STATUS, ACK | DRIVER | FEATURES_OK | DRIVER_OK);
        assert_eq!(t.status(), ACK | DRIVER | FEATURES_OK | DRIVER_OK);
        let f = fake.lock().unwrap();
        assert_eq!((f.acked, f.activations), (OFFERED, 1));
    }

    #[test]
    fn test_features_ok_is_refused_for_features_not_offered() {
        let (mut t, fake) = setup();
        assert_eq!(
            t.negotiate(OFFERED | (1 << 40)),
            ACK | DRIVER,
            "FEATURES_OK not set"
        );
        // DRIVER_OK without FEATURES_OK does not start the device.
        t.write32(VIRTIO_MMIO_STATUS, ACK | DRIVER | FEATURES_OK | DRIVER_OK);
        assert_eq!(fake.lock().unwrap().activations, 0);
    }

    #[test]
    fn test_features_ok_is_refused_when_the_device_refuses_the_features() {
        let (mut t, _) = setup();
        assert_eq!(t.negotiate(1 << 5), ACK | DRIVER, "no VERSION_1: refused");
    }

    #[test]
    fn test_a_driver_repeating_refused_features_gets_ten_warnings_not_more() {
        let (mut t, _) = setup();
        for _ in 0..25 {
            t.write32(VIRTIO_MMIO_STATUS, 0);
            assert_eq!(t.negotiate(1 << 5), ACK | DRIVER);
        }
        // The limit is spent: the next refusal goes to debug level.
        assert_eq!(t.driver_log.take(), None);
    }

    #[test]
    fn test_clearing_driver_ok_does_not_reactivate_a_running_device() {
        let (mut t, fake) = setup();
        t.negotiate(OFFERED);
        let ready = ACK | DRIVER | FEATURES_OK;
        t.write32(VIRTIO_MMIO_STATUS, ready | DRIVER_OK);
        t.write32(VIRTIO_MMIO_STATUS, ready);
        t.write32(VIRTIO_MMIO_STATUS, ready | DRIVER_OK);
        assert_eq!(fake.lock().unwrap().activations, 1);
        assert_eq!(t.status(), ready | DRIVER_OK);
    }

    #[test]
    fn test_queue_and_feature_registers_are_frozen_once_running() {
        let (mut t, fake) = setup();
        t.negotiate(OFFERED);
        t.write32(VIRTIO_MMIO_STATUS, ACK | DRIVER | FEATURES_OK | DRIVER_OK);
        t.write32(VIRTIO_MMIO_QUEUE_SEL, 0);
        t.write32(VIRTIO_MMIO_QUEUE_READY, 0);
        assert_eq!(
            t.read32(VIRTIO_MMIO_QUEUE_READY),
            1,
            "queue registers ignored"
        );
        t.set_driver_features(0);
        assert_eq!(
            t.driver_features, OFFERED,
            "features frozen after FEATURES_OK"
        );
        assert_eq!(fake.lock().unwrap().activations, 1);
    }

    #[test]
    fn test_reset_restores_defaults_and_resets_the_device() {
        let (mut t, fake) = setup();
        t.negotiate(OFFERED);
        t.write32(VIRTIO_MMIO_STATUS, ACK | DRIVER | FEATURES_OK | DRIVER_OK);
        t.write32(VIRTIO_MMIO_STATUS, 0);
        assert_eq!(t.status(), 0);
        assert_eq!((t.driver_features, t.queue_select), (0, 0));
        assert_eq!(
            t.read32(VIRTIO_MMIO_QUEUE_READY),
            0,
            "queues back to not ready"
        );
        assert_eq!(fake.lock().unwrap().resets, 1);
        // And the device can be started again from scratch.
        assert_eq!(t.negotiate(OFFERED), ACK | DRIVER | FEATURES_OK);
    }

    #[test]
    fn test_failed_activation_sets_needs_reset_until_a_reset() {
        let (mut t, fake) = setup();
        fake.lock().unwrap().refuse_activation = true;
        t.negotiate(OFFERED);
        let ready = ACK | DRIVER | FEATURES_OK;
        t.write32(VIRTIO_MMIO_STATUS, ready | DRIVER_OK);
        assert_ne!(t.status() & NEEDS_RESET, 0);
        assert_ne!(
            t.read32(VIRTIO_MMIO_INTERRUPT_STATUS) & VIRTIO_MMIO_INT_CONFIG,
            0,
            "a config interrupt says so"
        );
        // Writing back what it read (NEEDS_RESET included) or FAILED does not clear it.
        let seen = t.status();
        t.write32(VIRTIO_MMIO_STATUS, seen);
        t.write32(VIRTIO_MMIO_STATUS, seen | FAILED);
        assert_ne!(t.status() & NEEDS_RESET, 0);
        t.write32(VIRTIO_MMIO_STATUS, 0);
        assert_eq!(t.status(), 0);
    }

    #[test]
    fn test_interrupt_status_and_ack_do_not_wait_for_a_busy_device() {
        let (mut t, fake) = setup();
        t.negotiate(OFFERED);
        t.write32(VIRTIO_MMIO_STATUS, ACK | DRIVER | FEATURES_OK | DRIVER_OK);
        let signal = fake.lock().unwrap().interrupt.clone().unwrap();
        signal.signal_used_queue();

        // The device thread is in the middle of a pass: it holds the device mutex.
        let held = fake.lock().unwrap();
        let (done, finished) = std::sync::mpsc::channel();
        std::thread::scope(|s| {
            s.spawn(|| {
                let status = t.read32(VIRTIO_MMIO_INTERRUPT_STATUS);
                t.write32(VIRTIO_MMIO_INTERRUPT_ACK, status);
                done.send((status, t.read32(VIRTIO_MMIO_INTERRUPT_STATUS)))
                    .unwrap();
            });
            // A bound, not a timing: the answer must come while the mutex is held.
            let answer = finished.recv_timeout(std::time::Duration::from_secs(10));
            drop(held);
            assert_eq!(answer, Ok((VIRTIO_MMIO_INT_VRING, 0)));
        });
    }
}
