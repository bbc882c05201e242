//! The e820 memory map handed to the guest in `boot_params`.
//!
//! The same map the guest RAM regions are built from, so what the guest is told is what KVM
//! has: usable RAM below the legacy hole, the hole itself, RAM from 1 MiB up to the 32-bit MMIO
//! gap, the device window inside the gap (reserved, so no driver claims it), and RAM above 4 GiB
//! when the guest has more memory than fits below the gap.

use super::layout::{
    DEVICE_WINDOW_SIZE, DEVICE_WINDOW_START, EBDA_START, HIMEM_START, MMIO_GAP_END, MMIO_GAP_START,
};

/// e820 type of usable RAM (ACPI spec, "AddressRangeMemory").
pub const E820_RAM: u32 = 1;
/// e820 type of reserved ranges ("AddressRangeReserved").
pub const E820_RESERVED: u32 = 2;

/// One range of the map.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct E820Entry {
    /// First guest physical address.
    pub addr: u64,
    /// Length in bytes.
    pub size: u64,
    /// [`E820_RAM`] or [`E820_RESERVED`].
    pub kind: u32,
}

/// The guest RAM regions `(start, size)` for `mem_size` bytes of memory: below the MMIO gap and,
/// for what does not fit there, above 4 GiB.
pub fn ram_regions(mem_size: u64) -> Vec<(u64, u64)> {
    let low = mem_size.min(MMIO_GAP_START);
    let mut regions = vec![(0, low)];
    if mem_size > MMIO_GAP_START {
        regions.push((MMIO_GAP_END, mem_size - MMIO_GAP_START));
    }
    regions
}

/// The e820 map for a guest with `mem_size` bytes of RAM (`mem_size` must exceed 1 MiB).
pub fn e820_map(mem_size: u64) -> Vec<E820Entry> {
    let low_end = mem_size.min(MMIO_GAP_START);
    let mut map = vec![
        E820Entry {
            addr: 0,
            size: EBDA_START,
            kind: E820_RAM,
        },
        E820Entry {
            addr: EBDA_START,
            size: HIMEM_START - EBDA_START,
            kind: E820_RESERVED,
        },
        E820Entry {
            addr: HIMEM_START,
            size: low_end - HIMEM_START,
            kind: E820_RAM,
        },
        E820Entry {
            addr: DEVICE_WINDOW_START,
            size: DEVICE_WINDOW_SIZE,
            kind: E820_RESERVED,
        },
    ];
    if mem_size > MMIO_GAP_START {
        map.push(E820Entry {
            addr: MMIO_GAP_END,
            size: mem_size - MMIO_GAP_START,
            kind: E820_RAM,
        });
    }
    map
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    fn usable(map: &[E820Entry]) -> u64 {
        map.iter()
            .filter(|e| e.kind == E820_RAM)
            .map(|e| e.size)
            .sum()
    }

    #[test]
    fn test_e820_small_guest_has_hole_ram_and_device_window() {
        let map = e820_map(128 * MIB);
        assert_eq!(map.len(), 4);
        assert_eq!(
            map[0],
            E820Entry {
                addr: 0,
                size: 0x9fc00,
                kind: E820_RAM
            }
        );
        assert_eq!(map[1].kind, E820_RESERVED);
        assert_eq!(map[1].addr + map[1].size, HIMEM_START);
        assert_eq!(
            map[2],
            E820Entry {
                addr: HIMEM_START,
                size: 127 * MIB,
                kind: E820_RAM
            }
        );
        assert_eq!(map[3].addr, DEVICE_WINDOW_START);
        assert_eq!(map[3].kind, E820_RESERVED);
        // Usable RAM is everything but the legacy hole.
        assert_eq!(usable(&map), 128 * MIB - (HIMEM_START - EBDA_START));
    }

    #[test]
    fn test_e820_large_guest_splits_around_mmio_gap() {
        let mem = 4096 * MIB;
        let map = e820_map(mem);
        assert_eq!(map.len(), 5);
        assert_eq!(map[2].addr + map[2].size, MMIO_GAP_START);
        assert_eq!(
            map[4],
            E820Entry {
                addr: 1 << 32,
                size: mem - MMIO_GAP_START,
                kind: E820_RAM
            }
        );
        assert_eq!(usable(&map), mem - (HIMEM_START - EBDA_START));
    }

    #[test]
    fn test_e820_entries_are_sorted_and_disjoint() {
        for mem in [16 * MIB, 256 * MIB, 3072 * MIB, 8192 * MIB] {
            let map = e820_map(mem);
            for pair in map.windows(2) {
                assert!(
                    pair[0].addr + pair[0].size <= pair[1].addr,
                    "{mem}: {pair:?}"
                );
            }
        }
    }

    #[test]
    fn test_ram_regions_match_e820_ram() {
        for mem in [16 * MIB, 3072 * MIB, 5000 * MIB] {
            let regions = ram_regions(mem);
            assert_eq!(regions.iter().map(|r| r.1).sum::<u64>(), mem);
            // Every RAM range of the map lies inside a region KVM will have.
            for e in e820_map(mem).iter().filter(|e| e.kind == E820_RAM) {
                assert!(regions
                    .iter()
                    .any(|(s, l)| e.addr >= *s && e.addr + e.size <= s + l));
            }
        }
    }
}
