//! `netprobe.mode=boot`: report what the VMM told us at boot.
//!
//! ```text
//! netprobe: e820 addr=0x0 size=0x9fc00 type=1
//! ...
//! netprobe: boot mem_mib=127 e820_entries=4 cmdline="console=ttyS0 ... netprobe.mode=boot"
//! ```

use crate::boot_params::{BootParams, E820_RAM};
use crate::console::Console;

/// Prints the e820 map and the boot line; fails when the VMM gave us no RAM map.
pub fn run(out: &mut Console, params: &BootParams) -> Result<(), &'static str> {
    let entries = params.e820_len();
    let mut usable = 0u64;
    for i in 0..entries {
        let entry = params.e820(i);
        out.str(b"netprobe: e820");
        out.kv_hex(b"addr", entry.addr);
        out.kv_hex(b"size", entry.size);
        out.kv_dec(b"type", u64::from(entry.kind));
        out.line(b"");
        if entry.kind == E820_RAM {
            usable += entry.size;
        }
    }
    out.str(b"netprobe: boot");
    out.kv_dec(b"mem_mib", usable >> 20);
    out.kv_dec(b"e820_entries", u64::from(entries));
    out.str(b" cmdline=\"");
    out.str(params.cmdline());
    out.line(b"\"");
    if usable == 0 {
        return Err("no usable RAM in the e820 map");
    }
    Ok(())
}
