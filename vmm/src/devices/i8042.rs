//! The i8042 keyboard controller: enough of it that Linux's driver finds a controller without
//! waiting on a timeout, and its reset line.
//!
//! A guest writing 0xFE (pulse reset line) to the command port 0x64 asks to reset the machine:
//! Linux does so with `reboot=k`, netprobe after its last line, and the VMM takes that as "the
//! guest is done" and exits.
//!
//! Linux's i8042 driver also talks to the controller while it boots, polling the status
//! register for each answer and giving up only after half a second ("i8042: Can't read CTR").
//! So every controller command it waits on is answered at once: read and write the
//! configuration byte (CTR) and the output port, the self-test (0x55) and interface tests
//! (0x00), and the loopback commands it uses to look for an AUX port and a multiplexer (the byte
//! comes back, marked as AUX data for the AUX loop). Bytes for the keyboard itself get no answer:
//! there is no keyboard, which Linux finds out later and asynchronously. No interrupt line is
//! wired: Linux polls during its probe, and netprobe uses only the reset.

use std::collections::VecDeque;

/// Offset of the command/status port (0x64) from the data port (0x60).
const COMMAND_OFFSET: u8 = 4;

/// Status bit 0 (OBF): a byte waits in the output buffer, to be read at 0x60.
const STATUS_OUTPUT_FULL: u8 = 0x01;
/// Status bit 2: the system flag, set once the controller passed its self-test.
const STATUS_SYSTEM: u8 = 0x04;
/// Status bit 3: the last write was to the command port (0x64), not the data port.
const STATUS_COMMAND: u8 = 0x08;
/// Status bit 4: the keyboard is not inhibited (the key lock is open).
const STATUS_UNLOCKED: u8 = 0x10;
/// Status bit 5: the byte in the output buffer comes from the AUX (mouse) port.
const STATUS_AUX_DATA: u8 = 0x20;

/// Controller commands (written to 0x64), as Linux's `drivers/input/serio/i8042.h` names them.
const CMD_READ_CTR: u8 = 0x20;
const CMD_WRITE_CTR: u8 = 0x60;
const CMD_AUX_DISABLE: u8 = 0xa7;
const CMD_AUX_ENABLE: u8 = 0xa8;
const CMD_AUX_TEST: u8 = 0xa9;
const CMD_SELF_TEST: u8 = 0xaa;
const CMD_KBD_TEST: u8 = 0xab;
const CMD_KBD_DISABLE: u8 = 0xad;
const CMD_KBD_ENABLE: u8 = 0xae;
const CMD_READ_OUTPUT_PORT: u8 = 0xd0;
const CMD_WRITE_OUTPUT_PORT: u8 = 0xd1;
const CMD_KBD_LOOP: u8 = 0xd2;
const CMD_AUX_LOOP: u8 = 0xd3;
const CMD_AUX_SEND: u8 = 0xd4;
const CMD_RESET_CPU: u8 = 0xfe;

/// Answer to the self-test: passed.
const SELF_TEST_OK: u8 = 0x55;
/// Answer to an interface test: no error.
const INTERFACE_OK: u8 = 0x00;
/// The CTR at power-on: keyboard interrupt enabled, system flag set.
const CTR_DEFAULT: u8 = 0x05;
/// CTR bit 4: the keyboard port is disabled (commands 0xAD/0xAE set and clear it).
const CTR_KBD_DISABLED: u8 = 0x10;
/// CTR bit 5: the AUX port is disabled (commands 0xA7/0xA8 set and clear it; Linux reads the
/// CTR back to see that they took).
const CTR_AUX_DISABLED: u8 = 0x20;
/// The output port at power-on: A20 enabled, reset line not asserted.
const OUTPUT_PORT_DEFAULT: u8 = 0x03;
/// Bytes the output buffer holds before it drops more (a guest cannot grow it).
const OUTPUT_CAPACITY: usize = 16;

/// A command that takes a parameter byte at the data port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Pending {
    WriteCtr,
    WriteOutputPort,
    KbdLoop,
    AuxLoop,
    AuxSend,
}

/// The controller's state.
#[derive(Debug)]
pub struct I8042 {
    ctr: u8,
    output_port: u8,
    /// Bytes for the guest to read at 0x60, each with the status bits it comes with.
    output: VecDeque<(u8, u8)>,
    pending: Option<Pending>,
    last_was_command: bool,
}

impl Default for I8042 {
    fn default() -> Self {
        Self::new()
    }
}

impl I8042 {
    /// A controller just powered on.
    pub fn new() -> Self {
        Self {
            ctr: CTR_DEFAULT,
            output_port: OUTPUT_PORT_DEFAULT,
            output: VecDeque::with_capacity(OUTPUT_CAPACITY),
            pending: None,
            last_was_command: false,
        }
    }

    /// A read at `offset` from port 0x60: the data byte (0) or the status register (4).
    pub fn read(&mut self, offset: u8) -> u8 {
        if offset == COMMAND_OFFSET {
            return self.status();
        }
        self.output.pop_front().map_or(0, |(byte, _)| byte)
    }

    /// A write at `offset` from port 0x60; returns true when the guest asked for a reset.
    pub fn write(&mut self, offset: u8, value: u8) -> bool {
        if offset == COMMAND_OFFSET {
            self.last_was_command = true;
            return self.command(value);
        }
        self.last_was_command = false;
        match self.pending.take() {
            Some(Pending::WriteCtr) => self.ctr = value,
            Some(Pending::WriteOutputPort) => {
                self.output_port = value;
                // Bit 0 low asserts the reset line, as 0xFE pulses it.
                return value & 0x01 == 0;
            }
            Some(Pending::KbdLoop) => self.answer(value, 0),
            Some(Pending::AuxLoop) => self.answer(value, STATUS_AUX_DATA),
            // For a keyboard or mouse that is not there: nothing answers.
            Some(Pending::AuxSend) | None => {
                log::trace!("i8042: byte {value:#04x} for an absent device dropped")
            }
        }
        false
    }

    fn status(&self) -> u8 {
        let mut status = STATUS_SYSTEM | STATUS_UNLOCKED;
        if let Some((_, bits)) = self.output.front() {
            status |= STATUS_OUTPUT_FULL | bits;
        }
        if self.last_was_command {
            status |= STATUS_COMMAND;
        }
        status
    }

    /// A controller command; true for the reset.
    fn command(&mut self, command: u8) -> bool {
        self.pending = None;
        match command {
            CMD_READ_CTR => self.answer(self.ctr, 0),
            CMD_WRITE_CTR => self.pending = Some(Pending::WriteCtr),
            CMD_READ_OUTPUT_PORT => self.answer(self.output_port, 0),
            CMD_WRITE_OUTPUT_PORT => self.pending = Some(Pending::WriteOutputPort),
            CMD_SELF_TEST => {
                // A self-test resets the controller's buffer and configuration.
                self.output.clear();
                self.ctr = CTR_DEFAULT;
                self.answer(SELF_TEST_OK, 0);
            }
            CMD_KBD_TEST | CMD_AUX_TEST => self.answer(INTERFACE_OK, 0),
            CMD_KBD_LOOP => self.pending = Some(Pending::KbdLoop),
            CMD_AUX_LOOP => self.pending = Some(Pending::AuxLoop),
            CMD_AUX_SEND => self.pending = Some(Pending::AuxSend),
            CMD_KBD_DISABLE => self.ctr |= CTR_KBD_DISABLED,
            CMD_KBD_ENABLE => self.ctr &= !CTR_KBD_DISABLED,
            CMD_AUX_DISABLE => self.ctr |= CTR_AUX_DISABLED,
            CMD_AUX_ENABLE => self.ctr &= !CTR_AUX_DISABLED,
            CMD_RESET_CPU => return true,
            other => log::debug!("i8042: command {other:#04x} ignored"),
        }
        false
    }

    fn answer(&mut self, byte: u8, status_bits: u8) {
        if self.output.len() < OUTPUT_CAPACITY {
            self.output.push_back((byte, status_bits));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DATA: u8 = 0;
    const CMD: u8 = COMMAND_OFFSET;

    /// What Linux's `i8042_command()` does for a command with an answer: write it, poll the
    /// status until OBF, read the data port.
    fn ask(kbd: &mut I8042, command: u8) -> Option<u8> {
        kbd.write(CMD, command);
        (kbd.read(CMD) & STATUS_OUTPUT_FULL != 0).then(|| kbd.read(DATA))
    }

    #[test]
    fn test_port_enable_and_disable_show_in_the_ctr_and_the_key_lock_is_open() {
        let mut kbd = I8042::new();
        assert_ne!(kbd.read(CMD) & STATUS_UNLOCKED, 0, "no \"Keylock active\"");
        for (disable, enable, bit) in [
            (CMD_AUX_DISABLE, CMD_AUX_ENABLE, CTR_AUX_DISABLED),
            (CMD_KBD_DISABLE, CMD_KBD_ENABLE, CTR_KBD_DISABLED),
        ] {
            kbd.write(CMD, disable);
            assert_eq!(ask(&mut kbd, CMD_READ_CTR).unwrap() & bit, bit);
            kbd.write(CMD, enable);
            assert_eq!(ask(&mut kbd, CMD_READ_CTR).unwrap() & bit, 0);
        }
    }

    #[test]
    fn test_reset_command_is_reported_and_other_commands_are_not() {
        let mut kbd = I8042::new();
        assert!(
            kbd.write(CMD, CMD_RESET_CPU),
            "0xFE on port 0x64 is the reset command"
        );
        assert!(
            !kbd.write(CMD, CMD_READ_CTR),
            "other commands are not resets"
        );
        assert!(
            !kbd.write(DATA, CMD_RESET_CPU),
            "0xFE on the data port is not a reset"
        );
    }

    #[test]
    fn test_ctr_reads_back_what_was_written() {
        let mut kbd = I8042::new();
        assert_eq!(ask(&mut kbd, CMD_READ_CTR), Some(CTR_DEFAULT));
        kbd.write(CMD, CMD_WRITE_CTR);
        kbd.write(DATA, 0x47);
        assert_eq!(ask(&mut kbd, CMD_READ_CTR), Some(0x47));
        assert_eq!(
            kbd.read(CMD) & STATUS_OUTPUT_FULL,
            0,
            "nothing left to read"
        );
    }

    #[test]
    fn test_self_and_interface_tests_pass() {
        let mut kbd = I8042::new();
        assert_eq!(ask(&mut kbd, CMD_SELF_TEST), Some(SELF_TEST_OK));
        assert_eq!(ask(&mut kbd, CMD_KBD_TEST), Some(INTERFACE_OK));
        assert_eq!(ask(&mut kbd, CMD_AUX_TEST), Some(INTERFACE_OK));
        assert_ne!(kbd.read(CMD) & STATUS_SYSTEM, 0, "system flag set");
    }

    #[test]
    fn test_aux_loop_echoes_as_aux_data_and_kbd_loop_as_keyboard_data() {
        let mut kbd = I8042::new();
        kbd.write(CMD, CMD_AUX_LOOP);
        kbd.write(DATA, 0x5a);
        let status = kbd.read(CMD);
        assert_ne!(status & STATUS_OUTPUT_FULL, 0);
        assert_ne!(
            status & STATUS_AUX_DATA,
            0,
            "marked as coming from the AUX port"
        );
        assert_eq!(kbd.read(DATA), 0x5a);

        kbd.write(CMD, CMD_KBD_LOOP);
        kbd.write(DATA, 0xa5);
        assert_eq!(kbd.read(CMD) & STATUS_AUX_DATA, 0);
        assert_eq!(kbd.read(DATA), 0xa5);
    }

    #[test]
    fn test_bytes_for_the_absent_keyboard_get_no_answer() {
        let mut kbd = I8042::new();
        kbd.write(DATA, 0xf2); // keyboard "get ID"
        kbd.write(CMD, CMD_AUX_SEND);
        kbd.write(DATA, 0xf2); // mouse "get ID"
        assert_eq!(kbd.read(CMD) & STATUS_OUTPUT_FULL, 0);
    }

    #[test]
    fn test_output_port_write_with_reset_bit_low_resets() {
        let mut kbd = I8042::new();
        assert_eq!(
            ask(&mut kbd, CMD_READ_OUTPUT_PORT),
            Some(OUTPUT_PORT_DEFAULT)
        );
        kbd.write(CMD, CMD_WRITE_OUTPUT_PORT);
        assert!(!kbd.write(DATA, 0x03), "A20 on, reset line high: no reset");
        kbd.write(CMD, CMD_WRITE_OUTPUT_PORT);
        assert!(kbd.write(DATA, 0x02), "reset line low: reset");
    }

    #[test]
    fn test_a_guest_cannot_grow_the_output_buffer() {
        let mut kbd = I8042::new();
        for _ in 0..1000 {
            kbd.write(CMD, CMD_READ_CTR);
        }
        assert_eq!(kbd.output.len(), OUTPUT_CAPACITY);
    }

    #[test]
    fn test_status_says_whether_the_last_write_was_a_command() {
        let mut kbd = I8042::new();
        kbd.write(CMD, CMD_WRITE_CTR);
        assert_ne!(kbd.read(CMD) & STATUS_COMMAND, 0);
        kbd.write(DATA, CTR_DEFAULT);
        assert_eq!(kbd.read(CMD) & STATUS_COMMAND, 0);
    }
}
