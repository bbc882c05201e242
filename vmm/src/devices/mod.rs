//! Emulated devices and the port-I/O bus that routes vCPU exits to them.

pub mod i8042;
pub mod mmio_bus;
pub mod pio;
pub mod serial;

use vm_superio::Trigger;
use vmm_sys_util::eventfd::EventFd;

/// An [`EventFd`] that vm-superio devices can signal: an interrupt line (irqfd) or the reset event.
#[derive(Debug)]
pub struct EventFdTrigger(pub EventFd);

impl Trigger for EventFdTrigger {
    type E = std::io::Error;

    fn trigger(&self) -> std::io::Result<()> {
        self.0.write(1)
    }
}
