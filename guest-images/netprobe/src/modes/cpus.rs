//! `netprobe.mode=cpus`: read the CPUs the VMM describes, the way Linux's mpparse.c does, and
//! what CPUID says on this (the bootstrap) CPU. netprobe starts no other CPU: on a PVM host the
//! guest could not (no SIPI through the instruction emulator), and counting is the point.
//!
//! ```text
//! netprobe: mptable cpus=2 bsp=0 apic_ids=0,1 ioapic_id=2 ioapic_addr=0xfec00000 io_ints=24 isa_irq5_pin=5
//! netprobe: cpuid apic_id=0 logical=2 x2apic_cores=2
//! ```

use crate::console::Console;

/// Where Linux looks for the MP floating pointer: the last KiB of base memory, then the BIOS ROM.
const SCAN: [(u64, u64); 2] = [(0x9fc00, 0x400), (0xf0000, 0x10000)];

/// Finds and checks the MP table, prints it and CPUID's view; fails on a bad table.
pub fn run(out: &mut Console) -> Result<(), &'static str> {
    let fp = SCAN
        .iter()
        .find_map(|&(start, len)| find_floating_pointer(start, len))
        .ok_or(
            "no MP floating pointer (\"_MP_\") in the last KiB of base memory or the BIOS ROM",
        )?;
    let fp_bytes = bytes(fp, 16);
    if fp_bytes[8] != 1 || sum(fp_bytes) != 0 {
        return Err("MP floating pointer: bad length or checksum");
    }
    let config = u64::from(u32_at(fp_bytes, 4));
    let header = bytes(config, 44);
    if &header[..4] != b"PCMP" {
        return Err("MP configuration table: no PCMP signature");
    }
    let len = usize::from(u16_at(header, 4));
    let table = bytes(config, len);
    if sum(table) != 0 {
        return Err("MP configuration table: bad checksum");
    }
    let count = u16_at(header, 34);
    let (mut cpus, mut bsp, mut bsps) = (0u64, 0u64, 0u64);
    let (mut ioapic_id, mut ioapic_addr, mut io_ints, mut irq5_pin) = (None, 0u64, 0u64, None);
    let mut apic_ids = [0u8; 64];
    let mut at = 44;
    for _ in 0..count {
        if at >= len {
            return Err("MP configuration table: entries run past its length");
        }
        let entry = &table[at..];
        at += match entry[0] {
            0 => {
                if entry[3] & 1 != 0 {
                    if (cpus as usize) < apic_ids.len() {
                        apic_ids[cpus as usize] = entry[1];
                    }
                    cpus += 1;
                    if entry[3] & 2 != 0 {
                        bsp = u64::from(entry[1]);
                        bsps += 1;
                    }
                }
                20
            }
            2 => {
                ioapic_id = Some(entry[1]);
                ioapic_addr = u64::from(u32_at(entry, 4));
                8
            }
            3 => {
                io_ints += 1;
                if entry[5] == 5 {
                    irq5_pin = Some(entry[7]);
                }
                8
            }
            1 | 4 => 8,
            _ => return Err("MP configuration table: unknown entry type"),
        };
    }
    out.str(b"netprobe: mptable");
    out.kv_dec(b"cpus", cpus);
    out.kv_dec(b"bsp", bsp);
    out.str(b" apic_ids=");
    for (i, id) in apic_ids.iter().take(cpus as usize).enumerate() {
        if i > 0 {
            out.str(b",");
        }
        out.dec(u64::from(*id));
    }
    let ioapic_id = ioapic_id.ok_or("MP configuration table: no IOAPIC entry")?;
    out.kv_dec(b"ioapic_id", u64::from(ioapic_id));
    out.kv_hex(b"ioapic_addr", ioapic_addr);
    out.kv_dec(b"io_ints", io_ints);
    if let Some(pin) = irq5_pin {
        out.kv_dec(b"isa_irq5_pin", u64::from(pin));
    }
    out.line(b"");

    // CPUID leaf 1: EBX[31:24] initial APIC ID, EBX[23:16] logical processors in the package;
    // leaf 0xB sub-leaf 1 (core level): EBX[15:0] logical processors at that level.
    let leaf1 = cpuid(1, 0);
    out.str(b"netprobe: cpuid");
    out.kv_dec(b"apic_id", u64::from(leaf1.1 >> 24));
    out.kv_dec(b"logical", u64::from((leaf1.1 >> 16) & 0xff));
    if cpuid(0, 0).0 >= 0xb {
        out.kv_dec(b"x2apic_cores", u64::from(cpuid(0xb, 1).1 & 0xffff));
    }
    out.line(b"");

    if cpus == 0 || bsps != 1 {
        return Err("MP table: need at least one CPU and exactly one bootstrap processor");
    }
    if u64::from(leaf1.1 >> 24) != bsp {
        return Err("CPUID's APIC ID is not the MP table's bootstrap processor");
    }
    Ok(())
}

/// The first "_MP_" on a 16-byte boundary in `[start, start + len)`.
fn find_floating_pointer(start: u64, len: u64) -> Option<u64> {
    (start..start + len)
        .step_by(16)
        .find(|&addr| bytes(addr, 4) == b"_MP_")
}

/// `len` bytes of guest memory at `addr`.
fn bytes(addr: u64, len: usize) -> &'static [u8] {
    // SAFETY: the VMM identity-maps the first 4 GiB, and every address read here is in the
    // legacy area below 1 MiB or the table the floating pointer names, which the VMM wrote
    // into RAM; nothing writes to it while netprobe runs.
    unsafe { core::slice::from_raw_parts(addr as *const u8, len) }
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn sum(b: &[u8]) -> u8 {
    b.iter().fold(0u8, |s, x| s.wrapping_add(*x))
}

/// CPUID `leaf`/`sub`: (EAX, EBX, ECX, EDX).
fn cpuid(leaf: u32, sub: u32) -> (u32, u32, u32, u32) {
    let r = core::arch::x86_64::__cpuid_count(leaf, sub);
    (r.eax, r.ebx, r.ecx, r.edx)
}
