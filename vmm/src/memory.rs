//! Guest RAM: anonymous mmap'ed regions laid out by [`crate::arch::e820::ram_regions`].

use vm_memory::{GuestAddress, GuestMemoryMmap};

use crate::arch::e820::ram_regions;

/// Errors while creating guest memory.
#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    /// The host could not map that much memory.
    #[error("cannot allocate {mem_mib} MiB of guest memory (try a smaller --mem)")]
    Allocate {
        /// Requested size.
        mem_mib: u64,
        /// vm-memory's error.
        #[source]
        source: vm_memory::mmap::FromRangesError,
    },
}

/// Creates `mem_mib` MiB of zeroed guest RAM.
pub fn create_guest_memory(mem_mib: u64) -> Result<GuestMemoryMmap, MemoryError> {
    let ranges: Vec<(GuestAddress, usize)> = ram_regions(mem_mib << 20)
        .into_iter()
        .map(|(start, size)| (GuestAddress(start), size as usize))
        .collect();
    GuestMemoryMmap::from_ranges(&ranges)
        .map_err(|source| MemoryError::Allocate { mem_mib, source })
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::{GuestMemoryBackend, GuestMemoryRegion};

    #[test]
    fn test_guest_memory_has_requested_size() {
        let mem = create_guest_memory(32).unwrap();
        assert_eq!(mem.iter().map(|r| r.len()).sum::<u64>(), 32 << 20);
        assert_eq!(mem.num_regions(), 1);
    }
}
