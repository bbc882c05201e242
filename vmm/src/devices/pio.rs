//! The port-I/O bus: which device answers an `in`/`out` the guest executes.
//!
//! Ports nobody owns read as all ones (what an empty ISA bus returns) and ignore writes, so
//! guests probing for hardware we do not have (COM2-4, the RTC, PCI config ports) move on.

use super::i8042::I8042;
use super::serial::SharedSerial;
use crate::arch::layout::{COM1_PORT, I8042_PORT};

/// Number of 16550 registers.
const UART_PORTS: u16 = 8;
/// The i8042 decodes 0x60 (data) and 0x64 (status/command).
const I8042_PORTS: u16 = 5;

/// What the vCPU loop must do after a port write.
#[derive(Debug, PartialEq, Eq)]
pub enum PioAction {
    /// Carry on.
    None,
    /// The guest pulsed the reset line.
    Reset,
}

/// Legacy devices on port I/O.
pub struct PioBus {
    serial: SharedSerial,
    i8042: I8042,
}

impl PioBus {
    /// Creates the bus with COM1 and the i8042.
    pub fn new(serial: SharedSerial, i8042: I8042) -> Self {
        Self { serial, i8042 }
    }

    /// Handles `in` from `port` into `data`.
    pub fn read(&mut self, port: u16, data: &mut [u8]) {
        data.fill(0xff);
        let Some(first) = data.first_mut() else {
            return;
        };
        if let Some(offset) = offset_in(port, COM1_PORT, UART_PORTS) {
            if let Ok(mut serial) = self.serial.lock() {
                *first = serial.read(offset);
            }
        } else if let Some(offset) = offset_in(port, I8042_PORT, I8042_PORTS) {
            *first = self.i8042.read(offset);
        } else {
            log::trace!("pio: read of unclaimed port {port:#x}");
        }
    }

    /// Handles `out` of `data` to `port`.
    pub fn write(&mut self, port: u16, data: &[u8]) -> PioAction {
        let Some(&value) = data.first() else {
            return PioAction::None;
        };
        if let Some(offset) = offset_in(port, COM1_PORT, UART_PORTS) {
            if let Ok(mut serial) = self.serial.lock() {
                if let Err(e) = serial.write(offset, value) {
                    log::warn!("serial: {e:?}");
                }
            }
        } else if let Some(offset) = offset_in(port, I8042_PORT, I8042_PORTS) {
            if self.i8042.write(offset, value) {
                return PioAction::Reset;
            }
        } else {
            log::trace!("pio: write of {value:#x} to unclaimed port {port:#x}");
        }
        PioAction::None
    }
}

/// `port - base` if `port` is one of the `count` ports from `base`.
fn offset_in(port: u16, base: u16, count: u16) -> Option<u8> {
    port.checked_sub(base)
        .filter(|off| *off < count)
        .map(|off| off as u8)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::serial::new_serial;
    use crate::devices::EventFdTrigger;
    use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

    fn bus() -> PioBus {
        let irq = EventFdTrigger(EventFd::new(EFD_NONBLOCK).unwrap());
        PioBus::new(new_serial(irq), I8042::new())
    }

    #[test]
    fn test_unclaimed_port_reads_all_ones() {
        let mut data = [0u8; 2];
        bus().read(0x2f8, &mut data);
        assert_eq!(data, [0xff, 0xff]);
    }

    #[test]
    fn test_i8042_reset_through_the_bus() {
        let mut bus = bus();
        assert_eq!(bus.write(0x64, &[0xfe]), PioAction::Reset);
        assert_eq!(bus.write(0x80, &[0xfe]), PioAction::None);
    }

    #[test]
    fn test_uart_line_status_says_transmitter_empty() {
        let mut data = [0u8];
        bus().read(COM1_PORT + 5, &mut data);
        assert_ne!(
            data[0] & 0x20,
            0,
            "LSR.THRE must be set so guests can write"
        );
    }

    #[test]
    fn test_offsets() {
        assert_eq!(offset_in(0x3fd, 0x3f8, 8), Some(5));
        assert_eq!(offset_in(0x400, 0x3f8, 8), None);
        assert_eq!(offset_in(0x3f7, 0x3f8, 8), None);
    }
}
