//! Reading what the VMM put in `boot_params` (the "zero page", Documentation/arch/x86/zero-page.rst).

/// Offset of `ext_cmd_line_ptr` (high 32 bits of the command line address).
const EXT_CMD_LINE_PTR: u64 = 0x0c8;
/// Offset of `e820_entries` (u8).
const E820_ENTRIES: u64 = 0x1e8;
/// Offset of `hdr.cmd_line_ptr` (low 32 bits of the command line address).
const CMD_LINE_PTR: u64 = 0x228;
/// Offset of `e820_table`: up to 128 entries of { addr: u64, size: u64, type: u32 }.
const E820_TABLE: u64 = 0x2d0;
/// Size of one e820 entry.
const E820_ENTRY_SIZE: u64 = 20;
/// Entries the zero page has room for.
const E820_MAX: u8 = 128;
/// Longest command line we read (x86 COMMAND_LINE_SIZE).
const CMDLINE_MAX: usize = 2048;
/// e820 type of usable RAM.
pub const E820_RAM: u32 = 1;

/// One range of the e820 map.
pub struct E820Entry {
    /// First address.
    pub addr: u64,
    /// Length in bytes.
    pub size: u64,
    /// 1 = RAM, 2 = reserved, ...
    pub kind: u32,
}

/// The zero page at a known address.
pub struct BootParams {
    base: u64,
}

impl BootParams {
    /// Wraps the zero page at `base`.
    ///
    /// # Safety
    /// `base` must be the address of a readable, identity-mapped `boot_params`.
    pub unsafe fn new(base: u64) -> Self {
        Self { base }
    }

    fn read<T: Copy>(&self, offset: u64) -> T {
        // SAFETY: `new`'s contract: the whole zero page (4 KiB) is readable; every offset used
        // here lies inside it. The page has no alignment guarantee for these fields.
        unsafe { core::ptr::read_unaligned((self.base + offset) as *const T) }
    }

    /// The kernel command line, without its NUL.
    pub fn cmdline(&self) -> &'static [u8] {
        let low: u32 = self.read(CMD_LINE_PTR);
        let high: u32 = self.read(EXT_CMD_LINE_PTR);
        let addr = (u64::from(high) << 32) | u64::from(low);
        if addr == 0 {
            return &[];
        }
        let mut len = 0;
        // SAFETY: the VMM wrote a NUL-terminated command line of at most CMDLINE_MAX bytes at
        // `addr` in identity-mapped RAM; we stop at the NUL or the limit.
        while len < CMDLINE_MAX && unsafe { *((addr + len as u64) as *const u8) } != 0 {
            len += 1;
        }
        // SAFETY: the `len` bytes just scanned are readable and nothing writes them while we run.
        unsafe { core::slice::from_raw_parts(addr as *const u8, len) }
    }

    /// Number of e820 entries (capped at what the zero page holds).
    pub fn e820_len(&self) -> u8 {
        self.read::<u8>(E820_ENTRIES).min(E820_MAX)
    }

    /// The e820 entry at `index` (< [`Self::e820_len`]).
    pub fn e820(&self, index: u8) -> E820Entry {
        let at = E820_TABLE + u64::from(index) * E820_ENTRY_SIZE;
        E820Entry {
            addr: self.read(at),
            size: self.read(at + 8),
            kind: self.read(at + 16),
        }
    }
}
