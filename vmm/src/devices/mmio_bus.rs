//! The MMIO bus: which virtio-mmio device answers a guest access in the device window.

use std::sync::{Arc, Mutex};

use crate::virtio_mmio::{MmioTransport, MMIO_WINDOW_SIZE};

/// A virtio-mmio device in the device window: where its registers start, and its transport.
pub struct MmioDevice {
    /// Guest-physical address of its register window.
    pub base: u64,
    /// The transport that answers accesses to the window.
    pub transport: Arc<Mutex<MmioTransport>>,
}

/// Devices by base address, each owning a [`MMIO_WINDOW_SIZE`] window.
#[derive(Default)]
pub struct MmioBus {
    devices: Vec<MmioDevice>,
}

impl MmioBus {
    /// A bus with `devices`.
    pub fn new(devices: Vec<MmioDevice>) -> Self {
        Self { devices }
    }

    fn find(&self, addr: u64) -> Option<(u64, &Arc<Mutex<MmioTransport>>)> {
        self.devices
            .iter()
            .find(|d| addr >= d.base && addr - d.base < MMIO_WINDOW_SIZE)
            .map(|d| (addr - d.base, &d.transport))
    }

    /// A guest read; false when no device is there.
    pub fn read(&self, addr: u64, data: &mut [u8]) -> bool {
        let Some((offset, device)) = self.find(addr) else {
            return false;
        };
        device
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .read(offset, data);
        log::trace!("mmio read  {addr:#x} -> {data:x?}");
        true
    }

    /// A guest write; false when no device is there.
    pub fn write(&self, addr: u64, data: &[u8]) -> bool {
        let Some((offset, device)) = self.find(addr) else {
            return false;
        };
        log::trace!("mmio write {addr:#x} <- {data:x?}");
        device
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .write(offset, data);
        true
    }
}
