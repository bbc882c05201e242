//! ACPI tables, for kernels that find their devices through ACPI rather than the command line.
//!
//! Our own test guest learns its NICs from `virtio_mmio.device=` on the command line and its CPUs
//! from the MP table ([`super::mptable`]). A distro kernel does not: Debian's 6.1 kernels are
//! built without `CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES`, so the only way they see a virtio-mmio
//! device is an ACPI `LNRO0005` device in the DSDT (what Firecracker and QEMU's microvm give
//! them). So vmm writes a small hardware-reduced ACPI (no PM timer, no SCI, no AML methods):
//!
//! ```text
//! 0xe0000  RSDP "RSD PTR " -> XSDT          (Linux finds it in boot_params.acpi_rsdp_addr,
//!          XSDT -> FADT, MADT                or by scanning 0xe0000..0x100000)
//!          FADT  HW_REDUCED_ACPI, i8042 present, no VGA/MSI/CMOS RTC -> DSDT
//!          MADT  one local APIC per vCPU (APIC ID = index), the IOAPIC (ID = vCPUs) at 0xfec00000
//!          DSDT  \_SB.VR0n: _HID "LNRO0005", _CRS = its 4 KiB MMIO window + its edge IRQ;
//!                \_SB.COM1 (PNP0501, 0x3f8, IRQ 4), \_SB.PS2K (PNP0303, 0x60/0x64, IRQ 1)
//! ```
//!
//! A kernel with ACPI uses the MADT and ignores the MP table; one without ACPI (our guest) reads
//! the MP table and the command line. Both say the same thing. A kernel with both ACPI and
//! command-line devices sees each NIC twice and logs a failed probe for the second (-EBUSY).

use acpi_tables::aml;
use acpi_tables::fadt::{FADTBuilder, Flags};
use acpi_tables::madt::{
    EnabledStatus, IoApic, LocalInterruptController, ProcessorLocalApic, MADT,
};
use acpi_tables::rsdp::Rsdp;
use acpi_tables::sdt::Sdt;
use acpi_tables::xsdt::XSDT;
use acpi_tables::Aml;
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryError};

use super::layout::{COM1_IRQ, COM1_PORT, HIMEM_START, I8042_KBD_IRQ, I8042_PORT};
use super::mptable::{IOAPIC_ADDR, LAPIC_ADDR, MAX_CPUS};
use crate::virtio_mmio::MMIO_WINDOW_SIZE;

/// Where the RSDP goes: the start of the BIOS area Linux scans for it. The tables follow it,
/// all inside the legacy hole the e820 map reserves.
pub const RSDP_ADDR: u64 = 0xe_0000;
/// OEM ID of every table.
const OEM_ID: [u8; 6] = *b"VMMNET";
/// OEM table ID of every table.
const OEM_TABLE_ID: [u8; 8] = *b"VMM     ";
/// Tables start on 16-byte boundaries (the RSDP must; the rest for tidiness).
const ALIGN: usize = 16;

// FADT IA-PC boot architecture flags (ACPI 6.5, table 5.11).
/// An 8042 keyboard controller is present (Linux then probes it without a PNP device).
const IAPC_8042: u16 = 1 << 1;
/// VGA is not present.
const IAPC_VGA_NOT_PRESENT: u16 = 1 << 2;
/// MSI must not be enabled.
const IAPC_MSI_NOT_SUPPORTED: u16 = 1 << 3;
/// No CMOS RTC.
const IAPC_CMOS_RTC_NOT_PRESENT: u16 = 1 << 5;

/// Errors while writing the ACPI tables.
#[derive(Debug, thiserror::Error)]
pub enum AcpiError {
    /// `--cpus` out of range.
    #[error("ACPI tables hold 1 to {MAX_CPUS} vCPUs here, not {0}")]
    Cpus(u8),
    /// They would run past the legacy hole.
    #[error("the ACPI tables ({0} bytes) do not fit below 1 MiB")]
    TooLarge(usize),
    /// The guest memory write failed.
    #[error("could not write the ACPI tables to guest memory")]
    Write(#[source] GuestMemoryError),
}

/// The tables for `cpus` vCPUs and the virtio-mmio devices at `devices` ((base, IRQ) each), as
/// the bytes that go at [`RSDP_ADDR`], checksums filled in.
pub fn acpi_tables(cpus: u8, devices: &[(u64, u32)]) -> Result<Vec<u8>, AcpiError> {
    if cpus == 0 || cpus > MAX_CPUS {
        return Err(AcpiError::Cpus(cpus));
    }
    // Place the tables one after the other: RSDP, DSDT, FADT, MADT, XSDT.
    let mut image = TableImage::default();
    let rsdp_at = image.reserve(Rsdp::len());
    let dsdt_at = image.add(&dsdt(devices));
    let mut fadt = FADTBuilder::new(OEM_ID, OEM_TABLE_ID, 1)
        .flag(Flags::HwReducedAcpi)
        .flag(Flags::PwrButton)
        .flag(Flags::SlpButton)
        .dsdt_64(dsdt_at);
    fadt.iapc_boot_arch =
        (IAPC_8042 | IAPC_VGA_NOT_PRESENT | IAPC_MSI_NOT_SUPPORTED | IAPC_CMOS_RTC_NOT_PRESENT)
            .into();
    let fadt_at = image.add(&fadt.finalize());
    let madt_at = image.add(&madt(cpus));
    let mut xsdt = XSDT::new(OEM_ID, OEM_TABLE_ID, 1);
    xsdt.add_entry(fadt_at);
    xsdt.add_entry(madt_at);
    let xsdt_at = image.add(&xsdt);
    image.write(rsdp_at, &Rsdp::new(OEM_ID, xsdt_at));
    if RSDP_ADDR + image.bytes.len() as u64 > HIMEM_START {
        return Err(AcpiError::TooLarge(image.bytes.len()));
    }
    Ok(image.bytes)
}

/// Writes [`acpi_tables`] into guest memory at [`RSDP_ADDR`]; returns the RSDP's address for
/// `boot_params.acpi_rsdp_addr`.
pub fn write_acpi_tables<M: GuestMemoryBackend>(
    mem: &M,
    cpus: u8,
    devices: &[(u64, u32)],
) -> Result<u64, AcpiError> {
    let tables = acpi_tables(cpus, devices)?;
    mem.write_slice(&tables, GuestAddress(RSDP_ADDR))
        .map_err(AcpiError::Write)?;
    Ok(RSDP_ADDR)
}

/// The MADT: a local APIC per vCPU, enabled, APIC ID = processor UID = index; the IOAPIC with
/// GSI base 0 (ISA IRQ n = GSI n = pin n, as in the MP table).
fn madt(cpus: u8) -> MADT {
    let mut madt = MADT::new(
        OEM_ID,
        OEM_TABLE_ID,
        1,
        LocalInterruptController::Address(LAPIC_ADDR),
    );
    for cpu in 0..cpus {
        madt.add_structure(ProcessorLocalApic::new(cpu, cpu, EnabledStatus::Enabled));
    }
    madt.add_structure(IoApic::new(cpus, IOAPIC_ADDR, 0));
    madt
}

/// The DSDT, under `\_SB`: one `LNRO0005` (virtio-mmio) device per NIC with its register window
/// and interrupt, and the legacy devices with theirs (COM1 `PNP0501`, the i8042 `PNP0303`). A
/// hardware-reduced ACPI machine has no implicit ISA interrupts: Linux routes IRQ 4 to the
/// serial port only because the DSDT says so. Every line is edge-triggered, active high, as the
/// irqfds pulse them and the MP table says.
fn dsdt(devices: &[(u64, u32)]) -> Sdt {
    let mut children: Vec<Serialised> = devices
        .iter()
        .enumerate()
        .map(|(index, &(base, irq))| virtio_mmio_device(index, base, irq))
        .collect();
    children.push(legacy_device(
        "COM1",
        "PNP0501",
        &[(COM1_PORT, 8)],
        COM1_IRQ,
    ));
    children.push(legacy_device(
        "PS2K",
        "PNP0303",
        &[(I8042_PORT, 1), (I8042_PORT + 4, 1)],
        I8042_KBD_IRQ,
    ));
    let scope = aml::Scope::new(
        "\\_SB_".into(),
        children.iter().map(|c| c as &dyn Aml).collect(),
    );
    let mut dsdt = Sdt::new(*b"DSDT", 36, 6, OEM_ID, OEM_TABLE_ID, 1);
    dsdt.append_slice(&serialise(&scope));
    dsdt
}

/// `\_SB.VRnn`: virtio-mmio device `index`, its 4 KiB window at `base` and its IRQ.
fn virtio_mmio_device(index: usize, base: u64, irq: u32) -> Serialised {
    let memory = aml::Memory32Fixed::new(true, base as u32, MMIO_WINDOW_SIZE as u32);
    let interrupt = aml::Interrupt::new(true, true, false, false, irq);
    let crs = aml::ResourceTemplate::new(vec![&memory, &interrupt]);
    let uid = index as u8;
    let name = format!("VR{index:02}");
    // One expression: the names are temporaries that must live until serialised.
    Serialised(serialise(&aml::Device::new(
        name.as_str().into(),
        vec![
            &aml::Name::new("_HID".into(), &"LNRO0005"),
            &aml::Name::new("_UID".into(), &uid),
            // Cache-coherent DMA, as a VMM's devices are.
            &aml::Name::new("_CCA".into(), &aml::ONE),
            &aml::Name::new("_CRS".into(), &crs),
        ],
    )))
}

/// A legacy ISA device: its PNP ID, its port ranges (first port, length) and its IRQ.
fn legacy_device(name: &str, hid: &str, ports: &[(u16, u8)], irq: u32) -> Serialised {
    let ports: Vec<aml::IO> = ports
        .iter()
        .map(|&(port, len)| aml::IO::new(port, port, 1, len))
        .collect();
    let interrupt = aml::Interrupt::new(true, true, false, false, irq);
    let mut resources: Vec<&dyn Aml> = ports.iter().map(|p| p as &dyn Aml).collect();
    resources.push(&interrupt);
    let crs = aml::ResourceTemplate::new(resources);
    Serialised(serialise(&aml::Device::new(
        name.into(),
        vec![
            &aml::Name::new("_HID".into(), &aml::EISAName::new(hid)),
            &aml::Name::new("_CRS".into(), &crs),
        ],
    )))
}

/// AML already turned into bytes, to nest in a scope.
struct Serialised(Vec<u8>);

impl Aml for Serialised {
    fn to_aml_bytes(&self, sink: &mut dyn acpi_tables::AmlSink) {
        sink.vec(&self.0);
    }
}

/// Tables laid out one after another from [`RSDP_ADDR`].
#[derive(Default)]
struct TableImage {
    bytes: Vec<u8>,
}

impl TableImage {
    /// Room for `len` bytes at the next aligned offset; its guest address.
    fn reserve(&mut self, len: usize) -> u64 {
        let at = self.bytes.len().next_multiple_of(ALIGN);
        self.bytes.resize(at + len, 0);
        RSDP_ADDR + at as u64
    }

    /// Appends `table`; its guest address.
    fn add(&mut self, table: &dyn Aml) -> u64 {
        let bytes = serialise(table);
        let at = self.reserve(bytes.len());
        self.put(at, &bytes);
        at
    }

    /// Overwrites the bytes at guest address `at` with `table`.
    fn write(&mut self, at: u64, table: &dyn Aml) {
        self.put(at, &serialise(table));
    }

    fn put(&mut self, at: u64, bytes: &[u8]) {
        let offset = (at - RSDP_ADDR) as usize;
        self.bytes[offset..offset + bytes.len()].copy_from_slice(bytes);
    }
}

fn serialise(table: &dyn Aml) -> Vec<u8> {
    let mut bytes = Vec::new();
    table.to_aml_bytes(&mut bytes);
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::layout::{COM1_IRQ, COM1_PORT, I8042_KBD_IRQ, I8042_PORT};

    fn sum(bytes: &[u8]) -> u8 {
        bytes.iter().fold(0u8, |s, b| s.wrapping_add(*b))
    }

    fn u32_at(b: &[u8], at: usize) -> u32 {
        u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
    }

    fn u64_at(b: &[u8], at: usize) -> u64 {
        u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
    }

    /// The table at guest address `addr` of `image`, its checksum and length checked.
    fn table<'a>(image: &'a [u8], addr: u64, signature: &[u8; 4]) -> &'a [u8] {
        let at = (addr - RSDP_ADDR) as usize;
        assert_eq!(&image[at..at + 4], signature);
        let len = u32_at(image, at + 4) as usize;
        let table = &image[at..at + len];
        assert_eq!(
            sum(table),
            0,
            "{} checksum",
            String::from_utf8_lossy(signature)
        );
        table
    }

    /// RSDP -> XSDT -> (FADT, MADT), FADT -> DSDT, as Linux walks them.
    fn walk(image: &[u8]) -> (&[u8], &[u8], &[u8]) {
        let rsdp = &image[..36];
        assert_eq!(&rsdp[..8], b"RSD PTR ");
        assert_eq!(sum(&rsdp[..20]), 0, "ACPI 1.0 checksum");
        assert_eq!(sum(rsdp), 0, "extended checksum");
        assert_eq!(rsdp[15], 2, "revision 2: an XSDT");
        let xsdt = table(image, u64_at(rsdp, 24), b"XSDT");
        let entries: Vec<u64> = xsdt[36..].chunks(8).map(|e| u64_at(e, 0)).collect();
        assert_eq!(entries.len(), 2);
        let fadt = table(image, entries[0], b"FACP");
        let madt = table(image, entries[1], b"APIC");
        let dsdt = table(image, u64_at(fadt, 140), b"DSDT");
        (fadt, madt, dsdt)
    }

    #[test]
    fn test_fadt_is_hardware_reduced_with_an_i8042_and_no_rtc() {
        let image = acpi_tables(1, &[]).unwrap();
        let (fadt, _, _) = walk(&image);
        let flags = u32_at(fadt, 112);
        assert_ne!(flags & Flags::HwReducedAcpi as u32, 0);
        let iapc = u16::from_le_bytes([fadt[109], fadt[110]]);
        assert_eq!(
            iapc,
            IAPC_8042 | IAPC_VGA_NOT_PRESENT | IAPC_MSI_NOT_SUPPORTED | IAPC_CMOS_RTC_NOT_PRESENT
        );
    }

    #[test]
    fn test_madt_has_one_enabled_local_apic_per_vcpu_and_the_ioapic() {
        for cpus in [1u8, 3, MAX_CPUS] {
            let image = acpi_tables(cpus, &[]).unwrap();
            let (_, madt, _) = walk(&image);
            assert_eq!(u32_at(madt, 36), LAPIC_ADDR);
            let (mut lapics, mut ioapics) = (Vec::new(), Vec::new());
            let mut at = 44;
            while at < madt.len() {
                let (kind, len) = (madt[at], madt[at + 1] as usize);
                match kind {
                    0 => {
                        assert_eq!(u32_at(madt, at + 4) & 1, 1, "enabled");
                        lapics.push((madt[at + 2], madt[at + 3]));
                    }
                    1 => ioapics.push((madt[at + 2], u32_at(madt, at + 4), u32_at(madt, at + 8))),
                    other => panic!("unexpected MADT structure {other}"),
                }
                at += len;
            }
            let expected: Vec<(u8, u8)> = (0..cpus).map(|i| (i, i)).collect();
            assert_eq!(lapics, expected, "processor UID and APIC ID = vCPU index");
            assert_eq!(
                ioapics,
                vec![(cpus, IOAPIC_ADDR, 0)],
                "the MP table's IOAPIC"
            );
        }
    }

    #[test]
    fn test_dsdt_lists_each_nic_as_virtio_mmio_with_its_window_and_irq() {
        let nics = [
            crate::arch::layout::nic_slot(0),
            crate::arch::layout::nic_slot(1),
        ];
        let image = acpi_tables(2, &nics).unwrap();
        let (_, _, dsdt) = walk(&image);
        let count = |needle: &[u8]| dsdt.windows(needle.len()).filter(|w| *w == needle).count();
        assert_eq!(count(b"LNRO0005"), 2, "one virtio-mmio device per NIC");
        assert_eq!(count(b"VR00"), 1);
        assert_eq!(count(b"VR01"), 1);
        for (base, irq) in nics {
            // Memory32Fixed: tag 0x86, length 9, read-write, base, 4 KiB.
            let mut memory = vec![0x86, 9, 0, 1];
            memory.extend((base as u32).to_le_bytes());
            memory.extend((MMIO_WINDOW_SIZE as u32).to_le_bytes());
            assert_eq!(count(&memory), 1, "window of the NIC at {base:#x}");
            // Extended interrupt: tag 0x89, length 6, consumer + edge + active high, 1 IRQ.
            let mut interrupt = vec![0x89, 6, 0, 0b0011, 1];
            interrupt.extend(irq.to_le_bytes());
            assert_eq!(count(&interrupt), 1, "IRQ {irq}");
        }
    }

    #[test]
    fn test_dsdt_gives_the_serial_port_and_i8042_their_ports_and_irqs() {
        let image = acpi_tables(1, &[]).unwrap();
        let (_, _, dsdt) = walk(&image);
        let has = |needle: &[u8]| dsdt.windows(needle.len()).any(|w| w == needle);
        // EISA IDs as AML encodes them: PNP0501 = 0x0105d041, PNP0303 = 0x0303d041.
        for (name, eisa_id, ports, irq) in [
            (b"COM1", 0x0105_d041u32, vec![(COM1_PORT, 8u8)], COM1_IRQ),
            (
                b"PS2K",
                0x0303_d041,
                vec![(I8042_PORT, 1), (I8042_PORT + 4, 1)],
                I8042_KBD_IRQ,
            ),
        ] {
            assert!(has(name));
            let mut hid = vec![0x0c]; // DWordPrefix
            hid.extend(eisa_id.to_le_bytes());
            assert!(has(&hid), "{}'s _HID", String::from_utf8_lossy(name));
            for (port, len) in ports {
                // I/O port descriptor: tag 0x47, 16-bit decode, min = max = port, align 1.
                let mut io = vec![0x47, 1];
                io.extend(port.to_le_bytes());
                io.extend(port.to_le_bytes());
                io.extend([1, len]);
                assert!(has(&io), "port {port:#x}");
            }
            let mut interrupt = vec![0x89, 6, 0, 0b0011, 1];
            interrupt.extend(irq.to_le_bytes());
            assert!(has(&interrupt), "IRQ {irq}");
        }
    }

    #[test]
    fn test_tables_fit_in_the_reserved_bios_area() {
        let nics: Vec<(u64, u32)> = (0..crate::arch::layout::NIC_IRQS.len())
            .map(crate::arch::layout::nic_slot)
            .collect();
        let image = acpi_tables(MAX_CPUS, &nics).unwrap();
        assert!(RSDP_ADDR + image.len() as u64 <= HIMEM_START);
        assert!(matches!(acpi_tables(0, &[]), Err(AcpiError::Cpus(0))));
    }
}
