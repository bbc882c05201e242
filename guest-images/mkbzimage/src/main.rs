//! mkbzimage: wraps a 64-bit ELF kernel (such as netprobe) into a Linux bzImage.
//!
//! A bzImage is what boot loaders (and VMMs) know how to start: a 512-byte boot sector whose
//! last part is the *setup header* (Documentation/arch/x86/boot.rst), more "setup" sectors for
//! real-mode code, then the protected-mode kernel, which the loader copies to `code32_start`
//! (1 MiB). With boot protocol 2.12+ and `XLF_KERNEL_64`, a 64-bit loader jumps to
//! `code32_start + 0x200` with RSI pointing at boot_params.
//!
//! This tool lays the ELF's loadable segments out flat from their lowest physical address
//! (which must be the load address, 1 MiB) and prepends a setup header that describes them.
//! Real-mode setup code is not needed for the 64-bit entry, so the setup sector is empty.
//!
//! Usage: `mkbzimage <input.elf> <output.bzImage>`

use std::process::ExitCode;

/// Where the protected-mode kernel is loaded (`code32_start`, `pref_address`).
const LOAD_ADDR: u64 = 0x10_0000;
/// Setup sectors after the boot sector (`setup_sects`); the header needs only the first.
const SETUP_SECTS: u8 = 1;
/// Boot protocol 2.15: has xloadflags (2.12), init_size (2.10), pref_address (2.10).
const PROTOCOL_VERSION: u16 = 0x020f;
/// loadflags bit 0, LOADED_HIGH: the protected-mode code is loaded at 0x100000.
const LOADED_HIGH: u8 = 1 << 0;
/// xloadflags bit 0, XLF_KERNEL_64: there is a 64-bit entry at load address + 0x200.
const XLF_KERNEL_64: u16 = 1 << 0;

// Setup header field offsets inside the bzImage file (boot.rst, "The Real-Mode Kernel Header").
const SETUP_SECTS_OFF: usize = 0x1f1;
const SYSSIZE_OFF: usize = 0x1f4;
const BOOT_FLAG_OFF: usize = 0x1fe;
const JUMP_OFF: usize = 0x200;
const HEADER_OFF: usize = 0x202;
const VERSION_OFF: usize = 0x206;
const TYPE_OF_LOADER_OFF: usize = 0x210;
const LOADFLAGS_OFF: usize = 0x211;
const CODE32_START_OFF: usize = 0x214;
const INITRD_ADDR_MAX_OFF: usize = 0x22c;
const KERNEL_ALIGNMENT_OFF: usize = 0x230;
const XLOADFLAGS_OFF: usize = 0x236;
const CMDLINE_SIZE_OFF: usize = 0x238;
const PREF_ADDRESS_OFF: usize = 0x258;
const INIT_SIZE_OFF: usize = 0x260;

/// One PT_LOAD program header: where a piece of the file goes in memory.
struct Segment {
    paddr: u64,
    offset: u64,
    filesz: u64,
    memsz: u64,
}

fn le_u16(b: &[u8], at: usize) -> Result<u16, String> {
    b.get(at..at + 2)
        .map(|s| u16::from_le_bytes([s[0], s[1]]))
        .ok_or_else(|| format!("ELF truncated at {at:#x}"))
}

fn le_u32(b: &[u8], at: usize) -> Result<u32, String> {
    b.get(at..at + 4)
        .map(|s| u32::from_le_bytes(s.try_into().unwrap()))
        .ok_or_else(|| format!("ELF truncated at {at:#x}"))
}

fn le_u64(b: &[u8], at: usize) -> Result<u64, String> {
    b.get(at..at + 8)
        .map(|s| u64::from_le_bytes(s.try_into().unwrap()))
        .ok_or_else(|| format!("ELF truncated at {at:#x}"))
}

/// Reads the PT_LOAD segments of a 64-bit little-endian ELF, plus its entry point.
fn load_segments(elf: &[u8]) -> Result<(u64, Vec<Segment>), String> {
    if elf.get(..4) != Some(b"\x7fELF") || elf.get(4) != Some(&2) || elf.get(5) != Some(&1) {
        return Err("not a 64-bit little-endian ELF file".into());
    }
    let entry = le_u64(elf, 0x18)?;
    let phoff = le_u64(elf, 0x20)? as usize;
    let phentsize = usize::from(le_u16(elf, 0x36)?);
    let phnum = usize::from(le_u16(elf, 0x38)?);
    let mut segments = Vec::new();
    for i in 0..phnum {
        let ph = phoff + i * phentsize;
        const PT_LOAD: u32 = 1;
        if le_u32(elf, ph)? != PT_LOAD {
            continue;
        }
        segments.push(Segment {
            offset: le_u64(elf, ph + 0x08)?,
            paddr: le_u64(elf, ph + 0x18)?,
            filesz: le_u64(elf, ph + 0x20)?,
            memsz: le_u64(elf, ph + 0x28)?,
        });
    }
    Ok((entry, segments))
}

/// Builds the bzImage bytes for an ELF image.
fn bzimage(elf: &[u8]) -> Result<Vec<u8>, String> {
    let (entry, segments) = load_segments(elf)?;
    if entry != LOAD_ADDR + 0x200 {
        return Err(format!(
            "entry point is {entry:#x}, the 64-bit protocol needs {:#x}",
            LOAD_ADDR + 0x200
        ));
    }
    let lowest = segments
        .iter()
        .map(|s| s.paddr)
        .min()
        .ok_or("no PT_LOAD segments")?;
    if lowest != LOAD_ADDR {
        return Err(format!(
            "lowest segment at {lowest:#x}, expected {LOAD_ADDR:#x}"
        ));
    }
    // The flat protected-mode kernel: file contents at paddr - LOAD_ADDR, up to the last byte
    // that has file data. Everything beyond (bss, stack) is covered by init_size.
    let file_end = segments
        .iter()
        .map(|s| s.paddr + s.filesz)
        .max()
        .unwrap_or(LOAD_ADDR);
    let mem_end = segments
        .iter()
        .map(|s| s.paddr + s.memsz)
        .max()
        .unwrap_or(LOAD_ADDR);
    let mut payload = vec![0u8; (file_end - LOAD_ADDR) as usize];
    for s in segments.iter().filter(|s| s.filesz > 0) {
        let src = elf
            .get(s.offset as usize..(s.offset + s.filesz) as usize)
            .ok_or("segment outside the file")?;
        let at = (s.paddr - LOAD_ADDR) as usize;
        payload[at..at + src.len()].copy_from_slice(src);
    }

    let setup_len = (usize::from(SETUP_SECTS) + 1) * 512;
    let mut image = vec![0u8; setup_len];
    let put = |image: &mut Vec<u8>, at: usize, bytes: &[u8]| {
        image[at..at + bytes.len()].copy_from_slice(bytes)
    };
    put(&mut image, SETUP_SECTS_OFF, &[SETUP_SECTS]);
    put(
        &mut image,
        SYSSIZE_OFF,
        &(payload.len().div_ceil(16) as u32).to_le_bytes(),
    );
    put(&mut image, BOOT_FLAG_OFF, &0xaa55u16.to_le_bytes());
    put(&mut image, JUMP_OFF, &[0xeb, 0xfe]); // real-mode entry: jump to self (unsupported)
    put(&mut image, HEADER_OFF, b"HdrS");
    put(&mut image, VERSION_OFF, &PROTOCOL_VERSION.to_le_bytes());
    put(&mut image, TYPE_OF_LOADER_OFF, &[0]);
    put(&mut image, LOADFLAGS_OFF, &[LOADED_HIGH]);
    put(
        &mut image,
        CODE32_START_OFF,
        &(LOAD_ADDR as u32).to_le_bytes(),
    );
    put(
        &mut image,
        INITRD_ADDR_MAX_OFF,
        &0x7fff_ffffu32.to_le_bytes(),
    );
    put(
        &mut image,
        KERNEL_ALIGNMENT_OFF,
        &0x20_0000u32.to_le_bytes(),
    );
    put(&mut image, XLOADFLAGS_OFF, &XLF_KERNEL_64.to_le_bytes());
    put(&mut image, CMDLINE_SIZE_OFF, &2047u32.to_le_bytes());
    put(&mut image, PREF_ADDRESS_OFF, &LOAD_ADDR.to_le_bytes());
    put(
        &mut image,
        INIT_SIZE_OFF,
        &((mem_end - LOAD_ADDR) as u32).to_le_bytes(),
    );
    image.extend_from_slice(&payload);
    Ok(image)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let [_, input, output] = args.as_slice() else {
        eprintln!("usage: mkbzimage <input.elf> <output.bzImage>");
        return ExitCode::from(2);
    };
    let result = std::fs::read(input)
        .map_err(|e| format!("cannot read {input}: {e}"))
        .and_then(|elf| bzimage(&elf).map_err(|e| format!("{input}: {e}")))
        .and_then(|image| {
            std::fs::write(output, image).map_err(|e| format!("cannot write {output}: {e}"))
        });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mkbzimage: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal ELF with one PT_LOAD of `code` at LOAD_ADDR and `bss` extra bytes of memsz.
    fn elf(entry: u64, code: &[u8], bss: u64) -> Vec<u8> {
        let mut e = vec![0u8; 0x40 + 0x38];
        e[..6].copy_from_slice(b"\x7fELF\x02\x01");
        e[0x18..0x20].copy_from_slice(&entry.to_le_bytes());
        e[0x20..0x28].copy_from_slice(&0x40u64.to_le_bytes());
        e[0x36..0x38].copy_from_slice(&0x38u16.to_le_bytes());
        e[0x38..0x3a].copy_from_slice(&1u16.to_le_bytes());
        let ph = 0x40;
        e[ph..ph + 4].copy_from_slice(&1u32.to_le_bytes());
        e[ph + 8..ph + 16].copy_from_slice(&((0x40 + 0x38) as u64).to_le_bytes());
        e[ph + 0x18..ph + 0x20].copy_from_slice(&LOAD_ADDR.to_le_bytes());
        e[ph + 0x20..ph + 0x28].copy_from_slice(&(code.len() as u64).to_le_bytes());
        e[ph + 0x28..ph + 0x30].copy_from_slice(&(code.len() as u64 + bss).to_le_bytes());
        e.extend_from_slice(code);
        e
    }

    #[test]
    fn test_bzimage_header_and_payload() {
        let code: Vec<u8> = (0..0x300u32).map(|i| i as u8).collect();
        let image = bzimage(&elf(LOAD_ADDR + 0x200, &code, 0x1000)).unwrap();
        assert_eq!(&image[HEADER_OFF..HEADER_OFF + 4], b"HdrS");
        assert_eq!(image[BOOT_FLAG_OFF..BOOT_FLAG_OFF + 2], [0x55, 0xaa]);
        assert_eq!(le_u16(&image, XLOADFLAGS_OFF).unwrap() & XLF_KERNEL_64, 1);
        assert_eq!(le_u32(&image, INIT_SIZE_OFF).unwrap(), 0x1300);
        assert_eq!(le_u32(&image, SYSSIZE_OFF).unwrap(), 0x30);
        // The payload starts right after the setup sectors and is the code, byte for byte.
        assert_eq!(&image[1024..], &code[..]);
    }

    #[test]
    fn test_wrong_entry_is_rejected() {
        assert!(bzimage(&elf(LOAD_ADDR, &[0x90; 16], 0))
            .unwrap_err()
            .contains("entry point"));
    }

    #[test]
    fn test_not_elf_is_rejected() {
        assert!(bzimage(b"hello").unwrap_err().contains("not a 64-bit"));
    }
}
