//! The global descriptor table the guest starts with.
//!
//! The Linux 64-bit boot protocol asks for a flat 64-bit code segment at selector `__BOOT_CS`
//! (0x10) and a flat data segment at `__BOOT_DS` (0x18). We also add a TSS descriptor because
//! KVM wants a usable task register. The same entries are written to guest memory (for the guest
//! to keep using) and turned into the `kvm_segment`s the vCPU is loaded with.

use kvm_bindings::kvm_segment;

/// Selector of the 64-bit code segment (`__BOOT_CS`).
pub const BOOT_CS: u16 = 0x10;
/// Selector of the data segment (`__BOOT_DS`).
pub const BOOT_DS: u16 = 0x18;
/// Selector of the task state segment.
pub const BOOT_TSS: u16 = 0x20;

/// The table: null, unused, code, data, TSS.
pub const GDT: [u64; 5] = [
    0,
    0,
    gdt_entry(0xa09b, 0, 0xfffff), // code: present, DPL 0, execute/read, accessed, L=1, G=1
    gdt_entry(0xc093, 0, 0xfffff), // data: present, DPL 0, read/write, accessed, D/B=1, G=1
    gdt_entry(0x808b, 0, 0xfffff), // TSS: present, 64-bit busy TSS
];

/// Encodes a segment descriptor from its flags (access byte in bits 0-7, flags nibble in bits
/// 12-15), base and 20-bit limit (Intel SDM vol. 3, 3.4.5 "Segment Descriptors").
pub const fn gdt_entry(flags: u16, base: u32, limit: u32) -> u64 {
    ((base as u64 & 0xff00_0000) << 32)
        | ((flags as u64 & 0xf0ff) << 40)
        | ((limit as u64 & 0x000f_0000) << 32)
        | ((base as u64 & 0x00ff_ffff) << 16)
        | (limit as u64 & 0xffff)
}

/// Decodes the descriptor at `selector` into the form KVM_SET_SREGS takes.
pub fn kvm_segment(selector: u16) -> kvm_segment {
    let entry = GDT[usize::from(selector >> 3)];
    let bit = |n: u32| ((entry >> n) & 1) as u8;
    let base = ((entry >> 32) & 0xff00_0000) | ((entry >> 16) & 0x00ff_ffff);
    let raw_limit = (((entry >> 32) & 0x000f_0000) | (entry & 0xffff)) as u32;
    let g = bit(55);
    let present = bit(47);
    kvm_segment {
        base,
        limit: if g == 1 {
            (raw_limit << 12) | 0xfff
        } else {
            raw_limit
        },
        selector,
        type_: ((entry >> 40) & 0xf) as u8,
        present,
        dpl: ((entry >> 45) & 0x3) as u8,
        db: bit(54),
        s: bit(44),
        l: bit(53),
        g,
        avl: bit(52),
        unusable: u8::from(present == 0),
        padding: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_code_segment_is_flat_64_bit() {
        let cs = kvm_segment(BOOT_CS);
        assert_eq!((cs.base, cs.limit), (0, 0xffff_ffff));
        assert_eq!((cs.l, cs.db, cs.g, cs.present, cs.s), (1, 0, 1, 1, 1));
        assert_eq!(cs.type_, 0xb); // execute/read, accessed
        assert_eq!(cs.selector, 0x10);
    }

    #[test]
    fn test_data_segment_is_flat_read_write() {
        let ds = kvm_segment(BOOT_DS);
        assert_eq!((ds.base, ds.limit), (0, 0xffff_ffff));
        assert_eq!((ds.l, ds.db, ds.present, ds.s, ds.type_), (0, 1, 1, 1, 0x3));
    }

    #[test]
    fn test_tss_is_a_system_segment() {
        let tss = kvm_segment(BOOT_TSS);
        assert_eq!(
            (tss.s, tss.type_, tss.present, tss.unusable),
            (0, 0xb, 1, 0)
        );
    }

    #[test]
    fn test_gdt_entry_round_trips_base_and_limit() {
        let entry = gdt_entry(0x0093, 0x1234_5678, 0xabcde);
        assert_eq!(
            ((entry >> 32) & 0xff00_0000) | ((entry >> 16) & 0xff_ffff),
            0x1234_5678
        );
        assert_eq!(((entry >> 32) & 0xf_0000) | (entry & 0xffff), 0xabcde);
    }
}
