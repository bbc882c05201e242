//! Identity-mapped page tables for entering 64-bit mode.
//!
//! Linux's 64-bit entry (and netprobe) expects paging to be on with the kernel, boot_params and
//! command line identity-mapped. We map the whole first 4 GiB with 2 MiB pages: one PML4 entry,
//! four PDPT entries, four page directories of 512 entries. That also covers the MMIO gap, so a
//! bare-metal guest reaches its virtio-mmio devices without building its own tables.

use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryError};

use super::layout::{PDPT_ADDR, PD_ADDR, PML4_ADDR};

/// Page present.
const PTE_PRESENT: u64 = 1 << 0;
/// Page writable.
const PTE_WRITE: u64 = 1 << 1;
/// Page-directory entry maps a 2 MiB page (PS bit).
const PTE_HUGE: u64 = 1 << 7;
/// Number of 1 GiB page directories: 4 GiB mapped.
const PD_COUNT: u64 = 4;

/// Writes the PML4, PDPT and page directories; returns the value for CR3.
pub fn write_page_tables<M: GuestMemoryBackend>(mem: &M) -> Result<u64, GuestMemoryError> {
    mem.write_obj(PDPT_ADDR | PTE_PRESENT | PTE_WRITE, GuestAddress(PML4_ADDR))?;
    for pd in 0..PD_COUNT {
        let pd_addr = PD_ADDR + pd * 0x1000;
        mem.write_obj(
            pd_addr | PTE_PRESENT | PTE_WRITE,
            GuestAddress(PDPT_ADDR + pd * 8),
        )?;
        for i in 0..512u64 {
            let frame = ((pd << 9) | i) << 21;
            mem.write_obj(
                frame | PTE_PRESENT | PTE_WRITE | PTE_HUGE,
                GuestAddress(pd_addr + i * 8),
            )?;
        }
    }
    Ok(PML4_ADDR)
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::GuestMemoryMmap;

    /// Walks the tables the way the MMU does; `None` when not mapped.
    fn translate(mem: &GuestMemoryMmap, cr3: u64, va: u64) -> Option<u64> {
        let read = |addr: u64| mem.read_obj::<u64>(GuestAddress(addr)).unwrap();
        let pml4e = read(cr3 + ((va >> 39) & 0x1ff) * 8);
        if pml4e & PTE_PRESENT == 0 {
            return None;
        }
        let pdpte = read((pml4e & !0xfff) + ((va >> 30) & 0x1ff) * 8);
        if pdpte & PTE_PRESENT == 0 {
            return None;
        }
        let pde = read((pdpte & !0xfff) + ((va >> 21) & 0x1ff) * 8);
        if pde & PTE_PRESENT == 0 || pde & PTE_HUGE == 0 {
            return None;
        }
        Some((pde & !0x1f_ffff & 0x000f_ffff_ffff_f000) | (va & 0x1f_ffff))
    }

    #[test]
    fn test_first_4_gib_is_identity_mapped() {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
        let cr3 = write_page_tables(&mem).unwrap();
        assert_eq!(cr3, PML4_ADDR);
        for va in [
            0,
            0x7000,
            0x10_0200,
            0x3fff_ffff,
            0x4000_0000,
            0xd000_0000,
            0xffff_ffff,
        ] {
            assert_eq!(translate(&mem, cr3, va), Some(va), "{va:#x}");
        }
    }

    #[test]
    fn test_above_4_gib_is_not_mapped() {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
        let cr3 = write_page_tables(&mem).unwrap();
        assert_eq!(translate(&mem, cr3, 1 << 32), None);
    }

    #[test]
    fn test_tables_outside_memory_fail() {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x8000)]).unwrap();
        assert!(write_page_tables(&mem).is_err());
    }
}
