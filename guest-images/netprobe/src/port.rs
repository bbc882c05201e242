//! x86 port I/O and the i8042 reset that ends the VM.

/// Writes `value` to I/O port `port` (one VM exit each).
pub fn outb(port: u16, value: u8) {
    // SAFETY: port I/O has no memory effects; the VMM decides what the port does.
    unsafe {
        core::arch::asm!("out dx, al", in("dx") port, in("al") value, options(nomem, nostack))
    };
}

/// Reads I/O port `port`.
pub fn inb(port: u16) -> u8 {
    let value: u8;
    // SAFETY: as for `outb`.
    unsafe {
        core::arch::asm!("in al, dx", in("dx") port, out("al") value, options(nomem, nostack))
    };
    value
}

/// Pulses the reset line through the i8042 keyboard controller (command 0xFE on port 0x64),
/// which the VMM takes as "the guest is done". Halts if nothing happens.
pub fn reset() -> ! {
    outb(0x64, 0xfe);
    loop {
        // SAFETY: interrupts are off; hlt just stops this (only) CPU.
        unsafe { core::arch::asm!("hlt", options(nomem, nostack)) };
    }
}
