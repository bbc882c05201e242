//! The i8042 keyboard controller, kept for one job: a guest writing 0xFE (pulse reset line) to
//! its command port 0x64 asks to reset the machine. Linux does so with `reboot=k`, netprobe after
//! its last line. The VMM treats that reset as "the guest is done" and exits.

use vm_superio::I8042Device;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::EventFdTrigger;

/// The controller and the event its reset command signals.
pub struct I8042 {
    device: I8042Device<EventFdTrigger>,
}

impl I8042 {
    /// Creates the controller.
    pub fn new() -> std::io::Result<Self> {
        Ok(Self {
            device: I8042Device::new(EventFdTrigger(EventFd::new(EFD_NONBLOCK)?)),
        })
    }

    /// A register read at `offset` from port 0x60.
    pub fn read(&mut self, offset: u8) -> u8 {
        self.device.read(offset)
    }

    /// A register write; returns true when the guest asked for a reset.
    pub fn write(&mut self, offset: u8, value: u8) -> bool {
        if let Err(e) = self.device.write(offset, value) {
            log::warn!("i8042: cannot signal the reset event: {e}");
        }
        self.device.reset_evt().0.read().is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_reset_command_is_reported_once() {
        let mut kbd = I8042::new().unwrap();
        assert!(kbd.write(4, 0xfe), "0xFE on port 0x64 is the reset command");
        assert!(!kbd.write(4, 0x20), "other commands are not resets");
    }

    #[test]
    fn test_data_port_write_is_not_a_reset() {
        let mut kbd = I8042::new().unwrap();
        assert!(!kbd.write(0, 0xfe));
    }
}
