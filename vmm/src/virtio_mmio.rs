//! The virtio-mmio transport (virtio 1.2 §4.2.2, version 2): the register file a driver
//! programs to discover a device, negotiate features, hand over its rings and start it.
//!
//! The VMM must wire up, per device (see [`crate::net`]):
//! - a 4 KiB MMIO window in the device window, announced on the kernel command line as
//!   `virtio_mmio.device=4K@0x<base>:<irq>`;
//! - one ioeventfd per queue on `base + QueueNotify` with the queue index as datamatch, so a
//!   notification wakes the device thread without a trip through this code;
//! - an irqfd for the device's interrupt eventfd on `<irq>`.
//!
//! Everything else — reads and writes of the registers below — arrives here as MMIO exits.

use std::sync::{Arc, Mutex};

use virtio_bindings::virtio_config::{
    VIRTIO_CONFIG_S_DRIVER_OK, VIRTIO_CONFIG_S_FEATURES_OK, VIRTIO_CONFIG_S_NEEDS_RESET,
};
use virtio_bindings::virtio_mmio::*;
use virtio_queue::{Queue, QueueT};
use vm_memory::GuestMemoryMmap;
use vmm_virtio_net::VirtioDevice;

/// "virt" in little endian: the MagicValue register.
const MMIO_MAGIC: u32 = 0x7472_6976;
/// Transport version 2 (virtio 1.0 and later; version 1 is legacy).
const MMIO_VERSION: u32 = 2;
/// VendorID register: "vmm\0".
const VENDOR_ID: u32 = 0x006d_6d76;
/// Size of a device's register window.
pub const MMIO_WINDOW_SIZE: u64 = 0x1000;

/// One virtio-mmio device: the transport state plus the device behind it.
pub struct MmioTransport {
    device: Arc<Mutex<dyn VirtioDevice>>,
    mem: GuestMemoryMmap,
    queues: Vec<Queue>,
    queue_select: u32,
    device_features_select: u32,
    driver_features_select: u32,
    driver_features: u64,
    status: u32,
    config_generation: u32,
}

impl MmioTransport {
    /// Puts `device` behind a transport; `mem` is handed to it at activation.
    pub fn new(mem: GuestMemoryMmap, device: Arc<Mutex<dyn VirtioDevice>>) -> Self {
        let queues = lock(&device)
            .queue_max_sizes()
            .iter()
            .map(|&max| {
                Queue::new(max)
                    .unwrap_or_else(|_| unreachable!("device queue sizes are powers of two"))
            })
            .collect();
        Self {
            device,
            mem,
            queues,
            queue_select: 0,
            device_features_select: 0,
            driver_features_select: 0,
            driver_features: 0,
            status: 0,
            config_generation: 0,
        }
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
        let device = lock(&self.device);
        let value = match offset as u32 {
            VIRTIO_MMIO_MAGIC_VALUE => MMIO_MAGIC,
            VIRTIO_MMIO_VERSION => MMIO_VERSION,
            VIRTIO_MMIO_DEVICE_ID => device.device_type(),
            VIRTIO_MMIO_VENDOR_ID => VENDOR_ID,
            VIRTIO_MMIO_DEVICE_FEATURES => match self.device_features_select {
                0 => device.features() as u32,
                1 => (device.features() >> 32) as u32,
                _ => 0,
            },
            VIRTIO_MMIO_QUEUE_NUM_MAX => device
                .queue_max_sizes()
                .get(self.queue_select as usize)
                .map_or(0, |&m| u32::from(m)),
            VIRTIO_MMIO_QUEUE_READY => {
                drop(device);
                return data.copy_from_slice(
                    &u32::from(self.selected_queue().is_some_and(|q| q.ready())).to_le_bytes(),
                );
            }
            VIRTIO_MMIO_INTERRUPT_STATUS => device.interrupt().status(),
            VIRTIO_MMIO_STATUS => {
                self.status
                    | if device.needs_reset() {
                        VIRTIO_CONFIG_S_NEEDS_RESET
                    } else {
                        0
                    }
            }
            VIRTIO_MMIO_CONFIG_GENERATION => self.config_generation,
            _ => {
                log::debug!("virtio-mmio: read of unknown register {offset:#x}");
                0
            }
        };
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
            VIRTIO_MMIO_INTERRUPT_ACK => lock(&self.device).interrupt().ack(value),
            VIRTIO_MMIO_STATUS => self.set_status(value),
            _ => log::debug!("virtio-mmio: write of {value:#x} to register {offset:#x} ignored"),
        }
    }

    fn with_queue(&mut self, f: impl FnOnce(&mut Queue)) {
        if let Some(queue) = self.selected_queue() {
            f(queue);
        }
    }

    /// The Status register: 0 resets; FEATURES_OK checks the features; DRIVER_OK starts the device.
    fn set_status(&mut self, value: u32) {
        if value == 0 {
            self.reset();
            return;
        }
        let new = value & !self.status;
        let mut status = value;
        let mut device = lock(&self.device);
        if new & VIRTIO_CONFIG_S_FEATURES_OK != 0 {
            device.ack_features(self.driver_features);
            if !device.features_ok() {
                log::warn!(
                    "virtio-mmio: the driver's features {:#x} are not acceptable",
                    self.driver_features
                );
                status &= !VIRTIO_CONFIG_S_FEATURES_OK;
            }
        }
        if new & VIRTIO_CONFIG_S_DRIVER_OK != 0 && status & VIRTIO_CONFIG_S_FEATURES_OK != 0 {
            // The device gets its own copy of the queue configuration; the transport keeps the
            // registers' view for reads until the next reset.
            let queues = self
                .queues
                .iter()
                .map(|q| Queue::try_from(q.state()))
                .collect::<Result<Vec<_>, _>>();
            let activated = match queues {
                Ok(queues) => device.activate(self.mem.clone(), queues),
                Err(e) => {
                    log::debug!("virtio-mmio: queue configuration rejected: {e:?}");
                    Err(vmm_virtio_net::ActivateError::InvalidQueue(
                        self.queue_select as usize,
                    ))
                }
            };
            if let Err(e) = activated {
                log::warn!("virtio-mmio: cannot activate the device: {e}");
                status |= VIRTIO_CONFIG_S_NEEDS_RESET;
                device.interrupt().signal_config_change();
            }
        }
        self.status = status;
    }

    /// Device reset: device and transport back to their initial state.
    fn reset(&mut self) {
        lock(&self.device).reset();
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

/// Locks the device; a panic on another thread while holding the lock does not stop us.
fn lock(
    device: &Arc<Mutex<dyn VirtioDevice>>,
) -> std::sync::MutexGuard<'_, dyn VirtioDevice + 'static> {
    device
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
