//! Loading a guest the way Linux is booted: the kernel (bzImage or ELF), the initrd, the command
//! line and the `boot_params` zero page with its e820 map (Documentation/arch/x86/boot.rst,
//! "64-bit boot protocol").
//!
//! Both image formats end in the same state: the kernel's 64-bit entry point in RIP, RSI pointing
//! at boot_params, paging on with an identity map (see [`crate::arch`]).

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use linux_loader::cmdline::Cmdline;
use linux_loader::configurator::linux::LinuxBootConfigurator;
use linux_loader::configurator::{BootConfigurator, BootParams};
// XLF_KERNEL_64 (xloadflags bit 0): the kernel has the 64-bit entry at load address + 0x200.
use linux_loader::loader::bootparam::{boot_e820_entry, boot_params, setup_header, XLF_KERNEL_64};
use linux_loader::loader::{BzImage, Elf, KernelLoader, KernelLoaderResult};
use vm_memory::{Address, Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, ReadVolatile};

use crate::arch::e820::E820Entry;
use crate::arch::layout::{CMDLINE_ADDR, CMDLINE_MAX_SIZE, HIMEM_START, MMIO_GAP_START};
use crate::virtio_mmio::MMIO_WINDOW_SIZE;

/// boot_params.hdr.boot_flag: 0xAA55, the boot sector signature.
const BOOT_FLAG_MAGIC: u16 = 0xaa55;
/// boot_params.hdr.header: "HdrS", marks a setup header of boot protocol 2.00 or later.
const HDRS_MAGIC: u32 = 0x5372_6448;
/// Offset of the setup header's "HdrS" in a bzImage file.
const HDRS_OFFSET: u64 = 0x202;
/// type_of_loader 0xff: "undefined" boot loader (boot.rst, "type_of_loader").
const LOADER_TYPE_UNDEFINED: u8 = 0xff;
/// Protocol version that introduced `xloadflags` (2.12).
const PROTOCOL_2_12: u16 = 0x020c;
/// Offset of `startup_64` from the start of the protected-mode kernel of a bzImage.
const BZIMAGE_ENTRY_64_OFFSET: u64 = 0x200;
/// Kernel alignment we tell an ELF kernel about (the x86 default, 16 MiB).
const DEFAULT_KERNEL_ALIGNMENT: u32 = 0x100_0000;
/// Guest page size.
const PAGE_SIZE: u64 = 0x1000;

/// Errors while loading the kernel, initrd and boot parameters.
#[derive(Debug, thiserror::Error)]
pub enum BootError {
    /// The kernel file could not be opened or read.
    #[error("cannot read kernel image {path}")]
    KernelRead {
        /// The --kernel path.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is neither a bzImage nor an ELF.
    #[error(
        "{path} is not a kernel image: expected a bzImage (\"HdrS\" at 0x202) or an ELF executable"
    )]
    NotAKernel {
        /// The --kernel path.
        path: PathBuf,
    },
    /// An ELF, but not a 64-bit x86 one.
    #[error("{path} is {what}: vmm boots 64-bit x86 kernels (an x86_64 vmlinux, or its bzImage)")]
    ElfNotX86_64 {
        /// The --kernel path.
        path: PathBuf,
        /// What it is instead ("a 32-bit ELF", "an ELF for machine 183").
        what: String,
    },
    /// A bzImage without the 64-bit entry point we start kernels at.
    #[error("{path} has no 64-bit entry point (boot protocol {version:#x}, need 2.12 with XLF_KERNEL_64)")]
    No64BitEntry {
        /// The --kernel path.
        path: PathBuf,
        /// Its boot protocol version.
        version: u16,
    },
    /// linux-loader rejected the image or it did not fit in guest memory.
    #[error("cannot load kernel image {path} into {mem_mib} MiB of guest memory (a larger --mem may help)")]
    KernelLoad {
        /// The --kernel path.
        path: PathBuf,
        /// Guest memory size.
        mem_mib: u64,
        /// linux-loader's error.
        #[source]
        source: linux_loader::loader::Error,
    },
    /// An ELF segment in the first MiB, where the boot structures go.
    #[error("{path} has a segment at {addr:#x}, below 1 MiB where vmm puts the boot structures (zero page, command line, page tables): link the kernel at 1 MiB or above")]
    ElfSegmentBelow1MiB {
        /// The --kernel path.
        path: PathBuf,
        /// The segment's physical address.
        addr: u64,
    },
    /// The kernel's memory image (with its bss, or a bzImage's init_size) ends past guest RAM.
    #[error("{path} needs guest memory up to {end:#x}, beyond the {mem_mib} MiB of guest RAM below the 3 GiB device gap: raise --mem (a kernel must fit below 3 GiB)")]
    KernelPastRam {
        /// The --kernel path.
        path: PathBuf,
        /// Where its image ends.
        end: u64,
        /// Guest RAM below the MMIO gap.
        mem_mib: u64,
    },
    /// The initrd file could not be opened or read.
    #[error("cannot read initrd {path}")]
    InitrdRead {
        /// The --initrd path.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The initrd does not fit between the kernel and the top of low memory.
    #[error("initrd {path} is too large: {size} bytes, but only {free} bytes of guest memory are free above the kernel; raise --mem")]
    InitrdTooLarge {
        /// The --initrd path.
        path: PathBuf,
        /// Its size.
        size: u64,
        /// Room available.
        free: u64,
    },
    /// The command line has characters Linux does not accept or is too long.
    #[error("invalid kernel command line (at most {max} printable ASCII characters)", max = CMDLINE_MAX_SIZE - 1)]
    Cmdline(#[source] linux_loader::cmdline::Error),
    /// Writing the command line or boot_params to guest memory failed.
    #[error("cannot write the boot parameters to guest memory")]
    WriteBootParams(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// The two kernel image formats we load.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KernelFormat {
    /// A Linux bzImage: setup sectors, then the protected-mode kernel loaded at 1 MiB.
    BzImage,
    /// An ELF executable (e.g. vmlinux): PT_LOAD segments at their physical addresses.
    Elf,
}

/// A kernel placed in guest memory.
#[derive(Clone, Copy, Debug)]
pub struct LoadedKernel {
    /// Which format it was.
    pub format: KernelFormat,
    /// The 64-bit entry point (RIP at start).
    pub entry: u64,
    /// First byte above everything the kernel needs while it starts (including a bzImage's
    /// in-place decompression, `init_size`).
    pub end: u64,
    /// The setup header of a bzImage, copied into boot_params.
    pub setup_header: Option<setup_header>,
}

impl LoadedKernel {
    /// Whether this is a Linux kernel (its setup header names a version string) rather than a
    /// bare-metal program in bzImage clothes like netprobe.
    pub fn is_linux(&self) -> bool {
        self.setup_header.is_some_and(|h| h.kernel_version != 0)
    }
}

/// Tells a bzImage from an ELF by their magic numbers; `None` for anything else.
pub fn detect_format<R: Read + Seek>(image: &mut R) -> std::io::Result<Option<KernelFormat>> {
    if read_magic(image, 0)? == Some(*b"\x7fELF") {
        return Ok(Some(KernelFormat::Elf));
    }
    if read_magic(image, HDRS_OFFSET)?.map(u32::from_le_bytes) == Some(HDRS_MAGIC) {
        return Ok(Some(KernelFormat::BzImage));
    }
    Ok(None)
}

/// What an ELF is if not a 64-bit little-endian x86-64 executable (ELF `e_ident[EI_CLASS]`,
/// `EI_DATA` and `e_machine`), so the message can say so instead of the loader's "Unable to
/// read elf header".
fn elf_not_x86_64<R: Read + Seek>(image: &mut R) -> std::io::Result<Option<String>> {
    const ELFCLASS64: u8 = 2;
    const ELFDATA2LSB: u8 = 1;
    const EM_X86_64: u16 = 62;
    let mut ident = [0u8; 20];
    image.seek(SeekFrom::Start(0))?;
    if image.read_exact(&mut ident).is_err() {
        return Ok(Some("a truncated ELF".into()));
    }
    let machine = u16::from_le_bytes([ident[18], ident[19]]);
    Ok(match (ident[4], ident[5], machine) {
        (ELFCLASS64, ELFDATA2LSB, EM_X86_64) => None,
        (1, _, _) => Some("a 32-bit ELF".into()),
        (ELFCLASS64, ELFDATA2LSB, other) => Some(format!("an ELF for machine {other}, not x86-64")),
        _ => Some("an ELF of an unknown class or byte order".into()),
    })
}

/// The physical address of the first PT_LOAD segment below `limit` in a 64-bit ELF, if any
/// (linux-loader checks only the entry point; a segment at 0x7000 would be overwritten by the
/// zero page). A truncated program header table is left to linux-loader to refuse.
fn elf_segment_below<R: Read + Seek>(image: &mut R, limit: u64) -> std::io::Result<Option<u64>> {
    const PT_LOAD: u32 = 1;
    let mut header = [0u8; 64];
    image.seek(SeekFrom::Start(0))?;
    if image.read_exact(&mut header).is_err() {
        return Ok(None);
    }
    let phoff = u64::from_le_bytes(header[32..40].try_into().expect("8 bytes"));
    let phentsize = u64::from(u16::from_le_bytes([header[54], header[55]]));
    let phnum = u16::from_le_bytes([header[56], header[57]]);
    let mut phdr = [0u8; 56];
    for i in 0..u64::from(phnum) {
        let Some(at) = phentsize.checked_mul(i).and_then(|o| o.checked_add(phoff)) else {
            return Ok(None);
        };
        image.seek(SeekFrom::Start(at))?;
        if image.read_exact(&mut phdr).is_err() {
            return Ok(None);
        }
        let kind = u32::from_le_bytes(phdr[0..4].try_into().expect("4 bytes"));
        let paddr = u64::from_le_bytes(phdr[24..32].try_into().expect("8 bytes"));
        if kind == PT_LOAD && paddr < limit {
            return Ok(Some(paddr));
        }
    }
    Ok(None)
}

/// The 4 bytes at `offset`, `None` if the file is shorter; read errors are errors.
fn read_magic<R: Read + Seek>(image: &mut R, offset: u64) -> std::io::Result<Option<[u8; 4]>> {
    let mut magic = [0u8; 4];
    image.seek(SeekFrom::Start(offset))?;
    match image.read_exact(&mut magic) {
        Ok(()) => Ok(Some(magic)),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(None),
        Err(e) => Err(e),
    }
}

/// Loads the kernel at `path` into `mem` and returns where it starts.
pub fn load_kernel(mem: &GuestMemoryMmap, path: &Path) -> Result<LoadedKernel, BootError> {
    let mut file = File::open(path).map_err(|source| BootError::KernelRead {
        path: path.to_owned(),
        source,
    })?;
    load_kernel_image(mem, &mut file, path)
}

/// Loads the kernel image read from `file` into `mem` (`path` names it in errors). Whatever the
/// image says, it lands wholly in low RAM at or above 1 MiB, clear of the boot structures, or
/// is refused: the `kernel_loader` fuzz target checks this.
pub fn load_kernel_image<R: Read + Seek + ReadVolatile>(
    mem: &GuestMemoryMmap,
    file: &mut R,
    path: &Path,
) -> Result<LoadedKernel, BootError> {
    let read_err = |source| BootError::KernelRead {
        path: path.to_owned(),
        source,
    };
    let format = detect_format(file)
        .map_err(read_err)?
        .ok_or_else(|| BootError::NotAKernel {
            path: path.to_owned(),
        })?;
    if format == KernelFormat::Elf {
        if let Some(what) = elf_not_x86_64(file).map_err(read_err)? {
            return Err(BootError::ElfNotX86_64 {
                path: path.to_owned(),
                what,
            });
        }
        if let Some(addr) = elf_segment_below(file, HIMEM_START).map_err(read_err)? {
            return Err(BootError::ElfSegmentBelow1MiB {
                path: path.to_owned(),
                addr,
            });
        }
    }
    let load_err = |source| BootError::KernelLoad {
        path: path.to_owned(),
        mem_mib: mem_size(mem) >> 20,
        source,
    };
    let highmem = Some(GuestAddress(HIMEM_START));
    let result: KernelLoaderResult = match format {
        KernelFormat::BzImage => BzImage::load(mem, None, file, highmem),
        KernelFormat::Elf => Elf::load(mem, None, file, highmem),
    }
    .map_err(load_err)?;

    let kernel = match result.setup_header {
        Some(hdr) => {
            if hdr.version < PROTOCOL_2_12 || hdr.xloadflags & XLF_KERNEL_64 == 0 {
                return Err(BootError::No64BitEntry {
                    path: path.to_owned(),
                    version: hdr.version,
                });
            }
            let start = result.kernel_load.raw_value();
            let end = result.kernel_end.max(start + u64::from(hdr.init_size));
            LoadedKernel {
                format,
                entry: start + BZIMAGE_ENTRY_64_OFFSET,
                end,
                setup_header: Some(hdr),
            }
        }
        None => LoadedKernel {
            format,
            entry: result.kernel_load.raw_value(),
            end: result.kernel_end,
            setup_header: None,
        },
    };
    // Its bss (ELF p_memsz) or its decompression room (bzImage init_size) must be RAM too, and
    // low RAM: above it the e820 map has the MMIO gap.
    let low_end = mem_size(mem).min(MMIO_GAP_START);
    if kernel.end > low_end {
        return Err(BootError::KernelPastRam {
            path: path.to_owned(),
            end: kernel.end,
            mem_mib: low_end >> 20,
        });
    }
    Ok(kernel)
}

fn mem_size(mem: &GuestMemoryMmap) -> u64 {
    use vm_memory::GuestMemoryRegion;
    mem.iter().map(|r| r.len()).sum()
}

/// Where an initrd of `size` bytes goes: page-aligned at the top of low memory (below the MMIO
/// gap and the kernel's `initrd_addr_max`), above `kernel_end`. `None` if it does not fit.
pub fn initrd_address(size: u64, kernel_end: u64, low_mem_end: u64, addr_max: u64) -> Option<u64> {
    let top = low_mem_end.min(addr_max.saturating_add(1));
    let addr = top.checked_sub(size)? & !(PAGE_SIZE - 1);
    (addr >= kernel_end.checked_next_multiple_of(PAGE_SIZE)?).then_some(addr)
}

/// Loads the initrd above the kernel; returns its (address, size).
pub fn load_initrd(
    mem: &GuestMemoryMmap,
    path: &Path,
    kernel: &LoadedKernel,
) -> Result<(u64, u64), BootError> {
    let read_err = |source| BootError::InitrdRead {
        path: path.to_owned(),
        source,
    };
    let mut file = File::open(path).map_err(read_err)?;
    let size = file.metadata().map_err(read_err)?.len();
    load_initrd_image(mem, &mut file, size, path, kernel)
}

/// Loads the `size`-byte initrd read from `file` above the kernel (`path` names it in errors);
/// returns its (address, size).
pub fn load_initrd_image<R: ReadVolatile>(
    mem: &GuestMemoryMmap,
    file: &mut R,
    size: u64,
    path: &Path,
    kernel: &LoadedKernel,
) -> Result<(u64, u64), BootError> {
    let read_err = |source| BootError::InitrdRead {
        path: path.to_owned(),
        source,
    };
    let low_end = mem_size(mem).min(MMIO_GAP_START);
    let addr_max = kernel
        .setup_header
        .map_or(u64::from(u32::MAX >> 1), |h| u64::from(h.initrd_addr_max));
    let addr = initrd_address(size, kernel.end, low_end, addr_max).ok_or_else(|| {
        BootError::InitrdTooLarge {
            path: path.to_owned(),
            size,
            free: kernel
                .end
                .checked_next_multiple_of(PAGE_SIZE)
                .map_or(0, |end| low_end.saturating_sub(end)),
        }
    })?;
    mem.read_exact_volatile_from(GuestAddress(addr), file, size as usize)
        .map_err(|e| read_err(std::io::Error::other(e)))?;
    Ok((addr, size))
}

/// The VMM's own kernel parameters, always first on the command line.
pub const DEFAULT_CMDLINE: &str = "console=ttyS0 reboot=k panic=1 pci=off";

/// Builds the full command line: [`DEFAULT_CMDLINE`], one `virtio_mmio.device=4K@<base>:<irq>`
/// per virtio-mmio device (how Linux and netprobe find them), then the user's `--cmdline`.
pub fn build_cmdline(extra: &str, virtio_devices: &[(u64, u32)]) -> Result<Cmdline, BootError> {
    let mut cmdline = Cmdline::new(CMDLINE_MAX_SIZE).map_err(BootError::Cmdline)?;
    cmdline
        .insert_str(DEFAULT_CMDLINE)
        .map_err(BootError::Cmdline)?;
    for &(base, irq) in virtio_devices {
        cmdline
            .add_virtio_mmio_device(MMIO_WINDOW_SIZE, GuestAddress(base), irq, None)
            .map_err(BootError::Cmdline)?;
    }
    if !extra.trim().is_empty() {
        cmdline
            .insert_str(extra.trim())
            .map_err(BootError::Cmdline)?;
    }
    Ok(cmdline)
}

/// Fills `boot_params`: the kernel's setup header (or a minimal one for ELF kernels), loader
/// type, command line and initrd location, and the e820 map.
pub fn boot_params(
    kernel: &LoadedKernel,
    cmdline_len: usize,
    initrd: Option<(u64, u64)>,
    e820: &[E820Entry],
) -> boot_params {
    let mut params = boot_params {
        hdr: kernel.setup_header.unwrap_or_else(|| setup_header {
            boot_flag: BOOT_FLAG_MAGIC,
            header: HDRS_MAGIC,
            kernel_alignment: DEFAULT_KERNEL_ALIGNMENT,
            ..Default::default()
        }),
        ..Default::default()
    };
    params.hdr.type_of_loader = LOADER_TYPE_UNDEFINED;
    params.hdr.cmd_line_ptr = CMDLINE_ADDR as u32;
    params.hdr.cmdline_size = cmdline_len as u32;
    if let Some((addr, size)) = initrd {
        params.hdr.ramdisk_image = addr as u32;
        params.hdr.ramdisk_size = size as u32;
    }
    for (slot, entry) in params.e820_table.iter_mut().zip(e820) {
        *slot = boot_e820_entry {
            addr: entry.addr,
            size: entry.size,
            r#type: entry.kind,
        };
    }
    params.e820_entries = e820.len().min(params.e820_table.len()) as u8;
    params
}

/// Writes the command line and boot_params to their fixed addresses.
pub fn write_boot_params(
    mem: &GuestMemoryMmap,
    cmdline: &Cmdline,
    params: &boot_params,
    zero_page: u64,
) -> Result<(), BootError> {
    linux_loader::loader::load_cmdline(mem, GuestAddress(CMDLINE_ADDR), cmdline)
        .map_err(|e| BootError::WriteBootParams(Box::new(e)))?;
    let params = BootParams::new::<boot_params>(params, GuestAddress(zero_page));
    LinuxBootConfigurator::write_bootparams::<GuestMemoryMmap>(&params, mem)
        .map_err(|e| BootError::WriteBootParams(Box::new(e)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::e820::e820_map;
    use crate::arch::layout::ZERO_PAGE_ADDR;
    use std::io::Cursor;
    use vm_memory::Bytes;

    const MIB: u64 = 1 << 20;

    #[test]
    fn test_detect_format_elf_bzimage_and_garbage() {
        let mut elf = Cursor::new(b"\x7fELF\x02\x01\x01".to_vec());
        assert_eq!(detect_format(&mut elf).unwrap(), Some(KernelFormat::Elf));

        let mut bz = vec![0u8; 0x400];
        bz[0x202..0x206].copy_from_slice(b"HdrS");
        assert_eq!(
            detect_format(&mut Cursor::new(bz)).unwrap(),
            Some(KernelFormat::BzImage)
        );

        let text = b"#!/bin/sh\necho this is not a kernel\n".to_vec();
        assert_eq!(detect_format(&mut Cursor::new(text)).unwrap(), None);
        assert_eq!(detect_format(&mut Cursor::new(Vec::new())).unwrap(), None);
    }

    #[test]
    fn test_elf_identity_names_32_bit_and_foreign_kernels() {
        let elf = |class: u8, machine: u16| {
            let mut h = vec![0x7f, b'E', b'L', b'F', class, 1, 1];
            h.resize(18, 0);
            h.extend_from_slice(&machine.to_le_bytes());
            h.resize(64, 0);
            std::io::Cursor::new(h)
        };
        assert_eq!(elf_not_x86_64(&mut elf(2, 62)).unwrap(), None);
        assert_eq!(
            elf_not_x86_64(&mut elf(1, 3)).unwrap().as_deref(),
            Some("a 32-bit ELF")
        );
        assert!(elf_not_x86_64(&mut elf(2, 183))
            .unwrap()
            .unwrap()
            .contains("machine 183"));
        let short = &mut std::io::Cursor::new(b"\x7fELF".to_vec());
        assert_eq!(
            elf_not_x86_64(short).unwrap().as_deref(),
            Some("a truncated ELF")
        );
    }

    #[test]
    fn test_initrd_goes_to_top_of_low_memory_page_aligned() {
        let addr = initrd_address(0x1234, 0x20_0000, 128 * MIB, u64::MAX).unwrap();
        assert_eq!(addr, (128 * MIB - 0x1234) & !0xfff);
        assert!(addr + 0x1234 <= 128 * MIB);
    }

    #[test]
    fn test_initrd_respects_initrd_addr_max() {
        let addr = initrd_address(MIB, 0x20_0000, 3072 * MIB, 0x7fff_ffff).unwrap();
        assert!(addr + MIB <= 0x8000_0000);
    }

    #[test]
    fn test_initrd_overlapping_kernel_is_rejected() {
        assert_eq!(
            initrd_address(100 * MIB, 30 * MIB, 128 * MIB, u64::MAX),
            None
        );
        assert_eq!(initrd_address(200 * MIB, 0, 128 * MIB, u64::MAX), None);
        // A kernel end no page boundary follows (a crafted header) is no place, not a panic.
        assert_eq!(
            initrd_address(4096, u64::MAX - 10, 128 * MIB, u64::MAX),
            None
        );
    }

    #[test]
    fn test_cmdline_starts_with_defaults_then_user_text() {
        let cmdline = build_cmdline("netprobe.mode=boot quiet", &[]).unwrap();
        let s = cmdline.as_cstring().unwrap().into_string().unwrap();
        assert_eq!(s, format!("{DEFAULT_CMDLINE} netprobe.mode=boot quiet"));
    }

    #[test]
    fn test_cmdline_announces_virtio_mmio_devices_before_user_text() {
        let cmdline = build_cmdline("x=1", &[(0xd000_0000, 5), (0xd000_1000, 6)]).unwrap();
        let s = cmdline.as_cstring().unwrap().into_string().unwrap();
        assert_eq!(
            s,
            format!("{DEFAULT_CMDLINE} virtio_mmio.device=4K@0xd0000000:5 virtio_mmio.device=4K@0xd0001000:6 x=1")
        );
    }

    #[test]
    fn test_cmdline_too_long_is_an_error() {
        let long = "x".repeat(CMDLINE_MAX_SIZE);
        assert!(matches!(
            build_cmdline(&long, &[]),
            Err(BootError::Cmdline(_))
        ));
    }

    #[test]
    fn test_boot_params_for_elf_has_magic_cmdline_initrd_and_e820() {
        let kernel = LoadedKernel {
            format: KernelFormat::Elf,
            entry: 0x10_0200,
            end: 0x20_0000,
            setup_header: None,
        };
        let e820 = e820_map(64 * MIB);
        let p = boot_params(&kernel, 42, Some((0x300_0000, 0x1000)), &e820);
        assert_eq!({ p.hdr.boot_flag }, BOOT_FLAG_MAGIC);
        assert_eq!({ p.hdr.header }, HDRS_MAGIC);
        assert_eq!(p.hdr.type_of_loader, LOADER_TYPE_UNDEFINED);
        assert_eq!({ p.hdr.cmd_line_ptr }, CMDLINE_ADDR as u32);
        assert_eq!({ p.hdr.cmdline_size }, 42);
        assert_eq!(
            ({ p.hdr.ramdisk_image }, { p.hdr.ramdisk_size }),
            (0x300_0000, 0x1000)
        );
        assert_eq!(usize::from(p.e820_entries), e820.len());
        for (raw, entry) in p.e820_table.iter().zip(&e820) {
            assert_eq!(
                ({ raw.addr }, { raw.size }, { raw.r#type }),
                (entry.addr, entry.size, entry.kind)
            );
        }
    }

    #[test]
    fn test_boot_params_keep_the_bzimage_setup_header() {
        let hdr = setup_header {
            header: HDRS_MAGIC,
            version: 0x020f,
            init_size: 0x12_3000,
            kernel_version: 0x300,
            ..Default::default()
        };
        let kernel = LoadedKernel {
            format: KernelFormat::BzImage,
            entry: 0x10_0200,
            end: 0x22_3000,
            setup_header: Some(hdr),
        };
        assert!(kernel.is_linux());
        let p = boot_params(&kernel, 1, None, &e820_map(64 * MIB));
        assert_eq!(
            ({ p.hdr.version }, { p.hdr.init_size }),
            (0x020f, 0x12_3000)
        );
        assert_eq!(p.hdr.type_of_loader, LOADER_TYPE_UNDEFINED);
    }

    #[test]
    fn test_write_boot_params_lands_at_zero_page_and_cmdline_addr() {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 16 << 20)]).unwrap();
        let cmdline = build_cmdline("hello", &[]).unwrap();
        let kernel = LoadedKernel {
            format: KernelFormat::Elf,
            entry: 0x10_0000,
            end: 0x10_1000,
            setup_header: None,
        };
        let p = boot_params(&kernel, 10, None, &e820_map(16 * MIB));
        write_boot_params(&mem, &cmdline, &p, ZERO_PAGE_ADDR).unwrap();
        // e820_entries at 0x1e8, "HdrS" at 0x202, cmd_line_ptr at 0x228 of the zero page.
        assert_eq!(
            mem.read_obj::<u8>(GuestAddress(ZERO_PAGE_ADDR + 0x1e8))
                .unwrap(),
            4
        );
        assert_eq!(
            mem.read_obj::<u32>(GuestAddress(ZERO_PAGE_ADDR + 0x202))
                .unwrap(),
            HDRS_MAGIC
        );
        assert_eq!(
            mem.read_obj::<u32>(GuestAddress(ZERO_PAGE_ADDR + 0x228))
                .unwrap(),
            CMDLINE_ADDR as u32
        );
        let mut text = [0u8; 5];
        let at = CMDLINE_ADDR + DEFAULT_CMDLINE.len() as u64 + 1;
        mem.read_slice(&mut text, GuestAddress(at)).unwrap();
        assert_eq!(&text, b"hello");
    }
}
