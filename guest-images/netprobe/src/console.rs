//! Output on the 8250 UART at 0x3f8, with number printing that needs no `core::fmt`
//! (its precompiled code may use SSE, which the emulator cannot run).

use crate::port::{inb, outb};

/// COM1 base port.
const COM1: u16 = 0x3f8;
/// Line status register offset.
const LSR: u16 = 5;
/// LSR bit 5: transmit holding register empty.
const LSR_THRE: u8 = 1 << 5;

/// The serial console.
pub struct Console;

impl Console {
    /// The console (the VMM's UART needs no setup).
    pub fn new() -> Self {
        Console
    }

    fn byte(&mut self, b: u8) {
        // Bounded wait: a VMM's UART is always ready, a missing one must not hang us.
        for _ in 0..1000 {
            if inb(COM1 + LSR) & LSR_THRE != 0 {
                break;
            }
        }
        outb(COM1, b);
    }

    /// Prints bytes as they are.
    pub fn str(&mut self, s: &[u8]) {
        for &b in s {
            self.byte(b);
        }
    }

    /// Prints bytes and a newline.
    pub fn line(&mut self, s: &[u8]) {
        self.str(s);
        self.byte(b'\n');
    }

    /// Prints an unsigned decimal number.
    pub fn dec(&mut self, mut n: u64) {
        let mut digits = [0u8; 20];
        let mut i = digits.len();
        loop {
            i -= 1;
            digits[i] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        self.str(&digits[i..]);
    }

    /// Prints `0x` and a hexadecimal number.
    pub fn hex(&mut self, n: u64) {
        self.str(b"0x");
        let mut started = false;
        for shift in (0..16).rev() {
            let nibble = ((n >> (shift * 4)) & 0xf) as u8;
            if nibble != 0 || started || shift == 0 {
                started = true;
                self.byte(b"0123456789abcdef"[usize::from(nibble)]);
            }
        }
    }

    /// Prints a dotted-quad IPv4 address.
    pub fn ip(&mut self, ip: u32) {
        for (i, byte) in ip.to_be_bytes().iter().enumerate() {
            if i > 0 {
                self.str(b".");
            }
            self.dec(u64::from(*byte));
        }
    }

    /// Prints a MAC address as aa:bb:cc:dd:ee:ff.
    pub fn mac(&mut self, mac: &[u8; 6]) {
        for (i, byte) in mac.iter().enumerate() {
            if i > 0 {
                self.str(b":");
            }
            self.byte(b"0123456789abcdef"[usize::from(byte >> 4)]);
            self.byte(b"0123456789abcdef"[usize::from(byte & 0xf)]);
        }
    }

    /// Prints ` key=` followed by a decimal value.
    pub fn kv_dec(&mut self, key: &[u8], value: u64) {
        self.str(b" ");
        self.str(key);
        self.str(b"=");
        self.dec(value);
    }

    /// Prints ` key=` followed by a hexadecimal value.
    pub fn kv_hex(&mut self, key: &[u8], value: u64) {
        self.str(b" ");
        self.str(key);
        self.str(b"=");
        self.hex(value);
    }
}
