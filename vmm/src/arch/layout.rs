//! Where everything sits in guest physical memory.
//!
//! ```text
//! 0x0000_0500  GDT (null, null, code 0x10, data 0x18, TSS 0x20)  Linux boot protocol selectors
//! 0x0000_0600  IDT (empty; the guest installs its own)
//! 0x0000_7000  boot_params ("zero page")
//! 0x0000_9000  PML4, 0xa000 PDPT, 0xb000..0xf000 four page directories: identity map of 4 GiB
//! 0x0002_0000  kernel command line (2 KiB)
//! 0x0009_fc00  start of the legacy hole (EBDA, VGA, BIOS ROM): reserved up to 1 MiB
//! 0x0010_0000  kernel (bzImage protected-mode part or ELF segments), then RAM
//! ...          initrd at the top of RAM below the MMIO gap
//! 0xc000_0000  32-bit MMIO gap up to 4 GiB; devices live in [DEVICE_WINDOW_START, +SIZE)
//! 0x1_0000_0000 RAM that did not fit below the gap
//! ```

/// Global descriptor table.
pub const GDT_ADDR: u64 = 0x500;
/// Interrupt descriptor table (a single null entry; guests load their own).
pub const IDT_ADDR: u64 = 0x600;
/// The Linux `boot_params` structure ("zero page"); RSI points here at entry.
pub const ZERO_PAGE_ADDR: u64 = 0x7000;
/// Page-map level 4 table; loaded into CR3.
pub const PML4_ADDR: u64 = 0x9000;
/// Page-directory-pointer table.
pub const PDPT_ADDR: u64 = 0xa000;
/// First of the four page directories (2 MiB pages) that map 4 GiB.
pub const PD_ADDR: u64 = 0xb000;
/// Kernel command line, NUL-terminated.
pub const CMDLINE_ADDR: u64 = 0x20000;
/// Longest command line we pass, including the NUL (x86 Linux COMMAND_LINE_SIZE).
pub const CMDLINE_MAX_SIZE: usize = 2048;
/// Start of the extended BIOS data area: the first reserved byte of the legacy hole.
pub const EBDA_START: u64 = 0x9fc00;
/// First byte above the legacy hole ("high memory"): kernels load here.
pub const HIMEM_START: u64 = 0x10_0000;
/// Start of the 32-bit MMIO gap: no RAM between here and 4 GiB.
pub const MMIO_GAP_START: u64 = 0xc000_0000;
/// End of the 32-bit MMIO gap (4 GiB).
pub const MMIO_GAP_END: u64 = 0x1_0000_0000;
/// Start of the window where the VMM places virtio-mmio devices (reserved in the e820 map).
pub const DEVICE_WINDOW_START: u64 = 0xd000_0000;
/// Size of the device window.
pub const DEVICE_WINDOW_SIZE: u64 = 0x1000_0000;
/// TSS for KVM's real-mode emulation on Intel (three pages just below the IOAPIC area).
pub const KVM_TSS_ADDR: u64 = 0xfffb_d000;
/// Legacy COM1 UART ports and interrupt line.
pub const COM1_PORT: u16 = 0x3f8;
/// IRQ of COM1 on the PIC/IOAPIC.
pub const COM1_IRQ: u32 = 4;
/// i8042 keyboard controller data port; the command port is at +4 (0x64).
pub const I8042_PORT: u16 = 0x60;
/// The i8042's keyboard interrupt line (described in ACPI; the VMM never raises it).
pub const I8042_KBD_IRQ: u32 = 1;
/// Smallest guest RAM we accept, in MiB: the tables above, a kernel and an initrd must fit.
pub const MIN_MEM_MIB: u64 = 16;

/// Interrupt lines for NICs, in order: free ISA IRQs (0 timer, 1 keyboard, 4 COM1, 8 RTC are taken).
pub const NIC_IRQS: [u32; 6] = [5, 6, 7, 9, 10, 11];

/// Where NIC `index` lives: (MMIO base, IRQ).
pub fn nic_slot(index: usize) -> (u64, u32) {
    (
        DEVICE_WINDOW_START + index as u64 * crate::virtio_mmio::MMIO_WINDOW_SIZE,
        NIC_IRQS[index],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_nic_slots_are_distinct_pages_in_the_device_window() {
        let (b0, i0) = nic_slot(0);
        let (b1, i1) = nic_slot(1);
        assert_eq!(b0, DEVICE_WINDOW_START);
        assert_eq!(b1 - b0, 0x1000);
        assert_ne!(i0, i1);
    }
}
