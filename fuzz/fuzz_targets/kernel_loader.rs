//! The boot code on arbitrary bytes as the kernel (bzImage, ELF or garbage), the initrd and
//! the command line, followed by everything else written before a vCPU runs (boot_params,
//! MP table, ACPI tables), as `Vm::new` does.
//!
//! Checked, not only "no panic":
//! - a kernel or initrd that is accepted lands wholly inside low guest RAM, at or above 1 MiB:
//!   the first MiB (where the zero page, command line, page tables, MP table and ACPI tables
//!   go) is untouched by loading, and the kernel's bytes are untouched by the boot structures;
//! - the initrd lies above the kernel's end and below the end of low RAM;
//! - no host allocation is sized by header fields: libFuzzer's `-malloc_limit_mb` (set by
//!   `make fuzz`) fails the run on any allocation above it.
#![no_main]

use std::io::Cursor;
use std::path::Path;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmm::arch::layout::{nic_slot, HIMEM_START, ZERO_PAGE_ADDR};
use vmm::arch::{acpi, e820::e820_map, mptable};
use vmm::boot;
use vmm_fuzz::Input;

/// Guest RAM: the smallest a VM may have, so that "past the end of RAM" is easy to reach.
const MEM_MIB: u64 = 16;
/// What the first MiB holds before loading, to see whether anything wrote there.
const CANARY: u8 = 0xa5;

fn memory() -> &'static GuestMemoryMmap {
    static MEM: OnceLock<GuestMemoryMmap> = OnceLock::new();
    MEM.get_or_init(|| vmm::memory::create_guest_memory(MEM_MIB).expect("guest memory"))
}

fn low_mib(mem: &GuestMemoryMmap) -> Vec<u8> {
    let mut v = vec![0u8; HIMEM_START as usize];
    mem.read_slice(&mut v, GuestAddress(0)).expect("in RAM");
    v
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let mem = memory();
    let low = vec![CANARY; HIMEM_START as usize];
    mem.write_slice(&low, GuestAddress(0)).expect("in RAM");

    let flags = input.u8();
    let cpus = 1 + input.u8() % 32;
    let nics = usize::from(input.u8() % 7);
    let cmdline_len = usize::from(input.u16() % 4096);
    let cmdline = String::from_utf8_lossy(input.take(cmdline_len)).into_owned();
    let initrd_len = usize::from(input.u16());
    let initrd = input.take(initrd_len).to_vec();
    let image = input.rest();
    let path = Path::new("fuzz-input");

    let loaded = boot::load_kernel_image(mem, &mut Cursor::new(image), path);
    if std::env::var_os("FUZZ_TRACE").is_some() {
        eprintln!("kernel of {} bytes: {loaded:?}", image.len());
    }
    let kernel = match loaded {
        Ok(kernel) => kernel,
        Err(_) => {
            assert!(low_mib(mem) == low, "a refused kernel wrote below 1 MiB");
            return;
        }
    };
    let low_end = MEM_MIB << 20;
    assert!(
        kernel.end <= low_end,
        "kernel ends at {:#x}, past RAM",
        kernel.end
    );
    assert!(low_mib(mem) == low, "the kernel was loaded below 1 MiB");

    let initrd = if flags & 1 == 1 {
        match boot::load_initrd_image(mem, &mut &initrd[..], initrd.len() as u64, path, &kernel) {
            Ok((addr, size)) => {
                assert!(
                    addr >= kernel.end,
                    "initrd at {addr:#x} overlaps the kernel (end {:#x})",
                    kernel.end
                );
                assert!(addr + size <= low_end, "initrd past RAM");
                assert_eq!(addr % 4096, 0, "initrd not page-aligned");
                Some((addr, size))
            }
            Err(_) => None,
        }
    } else {
        None
    };
    assert!(low_mib(mem) == low, "the initrd was loaded below 1 MiB");

    // The kernel's bytes as loaded, to see that the boot structures leave them alone.
    let mut loaded = vec![0u8; (kernel.end.saturating_sub(HIMEM_START)) as usize];
    mem.read_slice(&mut loaded, GuestAddress(HIMEM_START))
        .expect("in RAM");

    let slots: Vec<(u64, u32)> = (0..nics).map(nic_slot).collect();
    let Ok(cmdline) = boot::build_cmdline(&cmdline, &slots) else {
        return;
    };
    let cmdline_len = cmdline
        .as_cstring()
        .map(|c| c.as_bytes().len())
        .unwrap_or(0);
    let mut params = boot::boot_params(&kernel, cmdline_len, initrd, &e820_map(low_end));
    mptable::write_mptable(mem, cpus).expect("the MP table fits for 1-32 CPUs");
    params.acpi_rsdp_addr =
        acpi::write_acpi_tables(mem, cpus, &slots).expect("the ACPI tables fit for 1-32 CPUs");
    boot::write_boot_params(mem, &cmdline, &params, ZERO_PAGE_ADDR).expect("boot_params fit");

    let mut after = vec![0u8; loaded.len()];
    mem.read_slice(&mut after, GuestAddress(HIMEM_START))
        .expect("in RAM");
    assert!(after == loaded, "the boot structures overwrote the kernel");
});
