//! Milliseconds since start, from the PIT (8254) channel 0 counting down at 1.193182 MHz.
//! It wraps every 55 ms, so it must be read more often than that; every poll loop does.

use crate::port::{inb, outb};

/// PIT input clock.
const PIT_HZ: u64 = 1_193_182;
/// Channel 0 data port.
const PIT_CH0: u16 = 0x40;
/// Mode/command port.
const PIT_CMD: u16 = 0x43;

/// A monotonic clock.
pub struct Clock {
    last: u16,
    ticks: u64,
}

impl Clock {
    /// Programs channel 0 as a free-running rate generator (mode 2, reload 65536).
    pub fn start() -> Self {
        outb(PIT_CMD, 0x34); // channel 0, low then high byte, mode 2, binary
        outb(PIT_CH0, 0);
        outb(PIT_CH0, 0);
        Self {
            last: read_counter(),
            ticks: 0,
        }
    }

    /// Milliseconds since [`Clock::start`].
    pub fn now_ms(&mut self) -> u64 {
        let now = read_counter();
        // The counter counts down; the distance since the last read is the time passed.
        self.ticks += u64::from(self.last.wrapping_sub(now));
        self.last = now;
        self.ticks * 1000 / PIT_HZ
    }
}

fn read_counter() -> u16 {
    outb(PIT_CMD, 0x00); // latch channel 0
    let low = inb(PIT_CH0);
    let high = inb(PIT_CH0);
    u16::from_le_bytes([low, high])
}
