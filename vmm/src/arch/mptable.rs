//! The MP table (Intel MultiProcessor Specification 1.4): how the guest learns how many CPUs it
//! has, their local APIC IDs, where the IOAPIC is and which IOAPIC pin each ISA IRQ arrives on.
//!
//! Why an MP table and not ACPI's MADT: it is one small, self-contained structure (no RSDP, RSDT
//! and FADT around it, no AML), every x86 Linux reads it when there is no ACPI (`CONFIG_X86_MPPARSE`,
//! on in distro kernels and in our tiny guest, which has no ACPI at all), and it says everything
//! this machine has to say: N CPUs, one IOAPIC, 16 ISA lines. Firecracker booted Linux with one for
//! years; ACPI becomes worth its weight with hotplug and power management, which vmm does not have.
//!
//! ```text
//! 0x9fc00  MP floating pointer "_MP_" (16 bytes) -> the configuration table right behind it
//! 0x9fc10  configuration table "PCMP" (44 bytes), then its entries:
//!          one processor entry per vCPU (APIC ID = vCPU index, vCPU 0 the bootstrap processor)
//!          one bus entry: ISA
//!          one IOAPIC entry (ID = number of vCPUs, at 0xfec00000)
//!          one I/O interrupt entry per IOAPIC pin: ISA IRQ n -> pin n
//!          two local interrupt entries: ExtINT on LINT0, NMI on LINT1 of every CPU
//! ```
//!
//! Linux looks for the floating pointer in the last KiB of base memory, which is where
//! [`MPTABLE_START`] is (the e820 map reserves it).

use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryError};

use super::layout::{EBDA_START, HIMEM_START};

/// Where the MP floating pointer goes: the first byte of the extended BIOS data area.
pub const MPTABLE_START: u64 = EBDA_START;
/// The most vCPUs vmm gives a guest (`--cpus 1..=32`); the table for 32 still fits in 1 KiB.
pub const MAX_CPUS: u8 = 32;
/// Guest-physical address of the IOAPIC's registers (what the in-kernel irqchip emulates).
pub const IOAPIC_ADDR: u32 = 0xfec0_0000;
/// Guest-physical address of every local APIC's registers.
pub const LAPIC_ADDR: u32 = 0xfee0_0000;
/// Pins of KVM's IOAPIC (`KVM_IOAPIC_NUM_PINS`), each given an I/O interrupt entry.
pub const IOAPIC_PINS: u8 = 24;

/// MP spec revision 1.4.
const SPEC_REV: u8 = 4;
/// Local APIC version of an integrated APIC (what KVM reports in its version register).
const LAPIC_VERSION: u8 = 0x14;
/// IOAPIC version (KVM's IOAPIC reports 0x11).
const IOAPIC_VERSION: u8 = 0x11;
/// The ISA bus's ID in the bus entry.
const ISA_BUS_ID: u8 = 0;

// Entry types (MP spec 4.3).
const ENTRY_PROCESSOR: u8 = 0;
const ENTRY_BUS: u8 = 1;
const ENTRY_IOAPIC: u8 = 2;
const ENTRY_IO_INTERRUPT: u8 = 3;
const ENTRY_LOCAL_INTERRUPT: u8 = 4;
/// Processor entry flag: this CPU is usable.
const CPU_ENABLED: u8 = 1 << 0;
/// Processor entry flag: the bootstrap processor.
const CPU_BOOTSTRAP: u8 = 1 << 1;
/// IOAPIC entry flag: usable.
const IOAPIC_ENABLED: u8 = 1;
/// Interrupt types (MP spec table 4-10).
const INT_VECTORED: u8 = 0;
const INT_NMI: u8 = 1;
const INT_EXTINT: u8 = 3;
/// Polarity and trigger "conforms to the bus" (ISA: active high, edge).
const INT_FLAGS_CONFORMING: u16 = 0;
/// Destination "every local APIC" in a local interrupt entry.
const ALL_LAPICS: u8 = 0xff;
/// CPU signature of the processor entries: family 6 (what the MP spec wants is only a hint;
/// Linux reads the real one from CPUID).
const CPU_SIGNATURE: u32 = 0x600;
/// CPUID.1:EDX feature flags of the processor entries: FPU and APIC.
const CPU_FEATURES: u32 = (1 << 0) | (1 << 9);

/// Errors while writing the MP table.
#[derive(Debug, thiserror::Error)]
pub enum MptableError {
    /// `--cpus` out of range.
    #[error("an MP table holds 1 to {MAX_CPUS} vCPUs here, not {0}")]
    Cpus(u8),
    /// The guest memory write failed.
    #[error("could not write the MP table to guest memory")]
    Write(#[source] GuestMemoryError),
}

/// The MP floating pointer and configuration table for `cpus` vCPUs, as the bytes that go at
/// [`MPTABLE_START`] (checksums filled in).
pub fn mptable(cpus: u8) -> Result<Vec<u8>, MptableError> {
    if cpus == 0 || cpus > MAX_CPUS {
        return Err(MptableError::Cpus(cpus));
    }
    let ioapic_id = cpus;
    let mut entries: Vec<u8> = Vec::new();
    for cpu in 0..cpus {
        let flags = CPU_ENABLED | if cpu == 0 { CPU_BOOTSTRAP } else { 0 };
        entries.extend([ENTRY_PROCESSOR, cpu, LAPIC_VERSION, flags]);
        entries.extend(CPU_SIGNATURE.to_le_bytes());
        entries.extend(CPU_FEATURES.to_le_bytes());
        entries.extend([0; 8]);
    }
    entries.extend([ENTRY_BUS, ISA_BUS_ID]);
    entries.extend(*b"ISA   ");
    entries.extend([ENTRY_IOAPIC, ioapic_id, IOAPIC_VERSION, IOAPIC_ENABLED]);
    entries.extend(IOAPIC_ADDR.to_le_bytes());
    for pin in 0..IOAPIC_PINS {
        entries.extend([ENTRY_IO_INTERRUPT, INT_VECTORED]);
        entries.extend(INT_FLAGS_CONFORMING.to_le_bytes());
        entries.extend([ISA_BUS_ID, pin, ioapic_id, pin]);
    }
    for (kind, lint) in [(INT_EXTINT, 0), (INT_NMI, 1)] {
        entries.extend([ENTRY_LOCAL_INTERRUPT, kind]);
        entries.extend(INT_FLAGS_CONFORMING.to_le_bytes());
        entries.extend([ISA_BUS_ID, 0, ALL_LAPICS, lint]);
    }
    let entry_count = cpus as u16 + 1 + 1 + u16::from(IOAPIC_PINS) + 2;

    let config_addr = MPTABLE_START as u32 + FLOATING_POINTER_LEN as u32;
    let mut config: Vec<u8> = Vec::with_capacity(CONFIG_HEADER_LEN + entries.len());
    config.extend(*b"PCMP");
    config.extend(((CONFIG_HEADER_LEN + entries.len()) as u16).to_le_bytes());
    config.extend([SPEC_REV, 0]); // checksum below
    config.extend(*b"VMM     "); // OEM ID, 8 bytes
    config.extend(*b"VMM-NET     "); // product ID, 12 bytes
    config.extend(0u32.to_le_bytes()); // no OEM table
    config.extend(0u16.to_le_bytes());
    config.extend(entry_count.to_le_bytes());
    config.extend(LAPIC_ADDR.to_le_bytes());
    config.extend(0u16.to_le_bytes()); // no extended table
    config.extend([0, 0]); // its checksum, reserved
    debug_assert_eq!(config.len(), CONFIG_HEADER_LEN);
    config.extend(entries);
    config[7] = checksum(&config);

    let mut table: Vec<u8> = Vec::with_capacity(FLOATING_POINTER_LEN + config.len());
    table.extend(*b"_MP_");
    table.extend(config_addr.to_le_bytes());
    table.extend([1, SPEC_REV, 0]); // length in 16-byte units, revision, checksum below
    table.extend([0; 5]); // feature bytes: 0 = a configuration table is present
    table[10] = checksum(&table);
    table.extend(config);
    Ok(table)
}

/// Writes [`mptable`] for `cpus` vCPUs into guest memory at [`MPTABLE_START`].
pub fn write_mptable<M: GuestMemoryBackend>(mem: &M, cpus: u8) -> Result<(), MptableError> {
    let table = mptable(cpus)?;
    debug_assert!(MPTABLE_START + table.len() as u64 <= HIMEM_START);
    mem.write_slice(&table, GuestAddress(MPTABLE_START))
        .map_err(MptableError::Write)
}

/// Length of the floating pointer structure.
const FLOATING_POINTER_LEN: usize = 16;
/// Length of the configuration table's header.
const CONFIG_HEADER_LEN: usize = 44;

/// The byte that makes `bytes` sum to 0 (mod 256), given that its own slot holds 0.
fn checksum(bytes: &[u8]) -> u8 {
    0u8.wrapping_sub(bytes.iter().fold(0u8, |sum, b| sum.wrapping_add(*b)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sum(bytes: &[u8]) -> u8 {
        bytes.iter().fold(0u8, |s, b| s.wrapping_add(*b))
    }

    /// What a guest reads back: the entries of the configuration table, by type.
    struct Parsed {
        cpus: Vec<(u8, u8)>,
        buses: Vec<[u8; 6]>,
        ioapics: Vec<(u8, u32)>,
        io_ints: Vec<(u8, u8, u8, u8)>,
        local_ints: Vec<(u8, u8, u8)>,
        lapic_addr: u32,
    }

    /// Parses the table the way Linux's mpparse.c does, checking both checksums and lengths.
    fn parse(table: &[u8]) -> Parsed {
        let fp = &table[..16];
        assert_eq!(&fp[..4], b"_MP_");
        assert_eq!(fp[8], 1, "floating pointer length in paragraphs");
        assert_eq!(sum(fp), 0, "floating pointer checksum");
        let config_at = u32::from_le_bytes(fp[4..8].try_into().unwrap()) as u64 - MPTABLE_START;
        let config = &table[config_at as usize..];
        assert_eq!(&config[..4], b"PCMP");
        let len = u16::from_le_bytes([config[4], config[5]]) as usize;
        assert_eq!(len, config.len(), "base table length covers every entry");
        assert_eq!(sum(&config[..len]), 0, "configuration table checksum");
        let count = u16::from_le_bytes([config[34], config[35]]);
        let lapic_addr = u32::from_le_bytes(config[36..40].try_into().unwrap());
        let mut parsed = Parsed {
            cpus: Vec::new(),
            buses: Vec::new(),
            ioapics: Vec::new(),
            io_ints: Vec::new(),
            local_ints: Vec::new(),
            lapic_addr,
        };
        let mut at = 44;
        for _ in 0..count {
            let e = &config[at..];
            at += match e[0] {
                ENTRY_PROCESSOR => {
                    parsed.cpus.push((e[1], e[3]));
                    20
                }
                ENTRY_BUS => {
                    parsed.buses.push(e[2..8].try_into().unwrap());
                    8
                }
                ENTRY_IOAPIC => {
                    assert_eq!(e[3] & IOAPIC_ENABLED, IOAPIC_ENABLED);
                    parsed
                        .ioapics
                        .push((e[1], u32::from_le_bytes(e[4..8].try_into().unwrap())));
                    8
                }
                ENTRY_IO_INTERRUPT => {
                    parsed.io_ints.push((e[1], e[5], e[6], e[7]));
                    8
                }
                ENTRY_LOCAL_INTERRUPT => {
                    parsed.local_ints.push((e[1], e[6], e[7]));
                    8
                }
                other => panic!("unknown entry type {other}"),
            };
        }
        assert_eq!(at, len, "entry_count entries fill the table exactly");
        parsed
    }

    #[test]
    fn test_one_processor_entry_per_vcpu_the_first_one_boots() {
        for cpus in [1, 2, 7, MAX_CPUS] {
            let parsed = parse(&mptable(cpus).unwrap());
            assert_eq!(parsed.cpus.len(), cpus as usize);
            for (i, (apic_id, flags)) in parsed.cpus.iter().enumerate() {
                assert_eq!(*apic_id as usize, i, "APIC ID = vCPU index");
                assert_eq!(flags & CPU_ENABLED, CPU_ENABLED);
                assert_eq!(flags & CPU_BOOTSTRAP != 0, i == 0, "only vCPU 0 is the BSP");
            }
            assert_eq!(parsed.lapic_addr, LAPIC_ADDR);
        }
    }

    #[test]
    fn test_isa_irqs_route_to_their_own_ioapic_pin() {
        let parsed = parse(&mptable(4).unwrap());
        assert_eq!(parsed.buses, vec![*b"ISA   "]);
        // The IOAPIC's ID must not collide with an APIC ID.
        assert_eq!(parsed.ioapics, vec![(4, IOAPIC_ADDR)]);
        assert_eq!(parsed.io_ints.len(), IOAPIC_PINS as usize);
        let (com1, nics) = (
            crate::arch::layout::COM1_IRQ as u8,
            crate::arch::layout::NIC_IRQS,
        );
        for irq in nics.iter().map(|&i| i as u8).chain([com1]) {
            assert!(
                parsed.io_ints.contains(&(INT_VECTORED, irq, 4, irq)),
                "ISA IRQ {irq} must reach IOAPIC pin {irq}"
            );
        }
        assert_eq!(
            parsed.local_ints,
            vec![(INT_EXTINT, ALL_LAPICS, 0), (INT_NMI, ALL_LAPICS, 1)]
        );
    }

    #[test]
    fn test_the_largest_table_fits_before_the_legacy_hole_ends() {
        let table = mptable(MAX_CPUS).unwrap();
        // Linux scans the last KiB of base memory for the floating pointer, and the e820 map
        // reserves from there to 1 MiB; 32 vCPUs fit in that KiB.
        assert!(table.len() <= 1024, "{} bytes", table.len());
    }

    #[test]
    fn test_vcpu_counts_outside_the_range_are_refused() {
        assert!(matches!(mptable(0), Err(MptableError::Cpus(0))));
        assert!(matches!(mptable(33), Err(MptableError::Cpus(33))));
    }

    #[test]
    fn test_checksum_makes_the_sum_zero() {
        let mut bytes = vec![1, 2, 3, 250, 0];
        bytes[4] = checksum(&bytes);
        assert_eq!(sum(&bytes), 0);
    }
}
