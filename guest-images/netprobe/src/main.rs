//! netprobe: a bare-metal test guest for vmm.
//!
//! It is booted exactly like a Linux kernel (64-bit boot protocol: RIP at the 64-bit entry, RSI
//! pointing at `boot_params`), reads its command line and e820 map from there, does what
//! `netprobe.mode=` says, prints machine-readable `netprobe: key=value` lines on the 8250 UART,
//! ends with `netprobe: PASS` or `netprobe: FAIL <reason>`, and resets the machine through the
//! i8042 so the VMM exits.
//!
//! It runs under PVM's instruction emulator (about a million instructions per second, no SSE),
//! so it is small, polls instead of taking interrupts, and never formats with `core::fmt`.

#![no_std]
#![no_main]

mod boot_params;
mod clock;
mod cmdline;
mod console;
mod mem;
mod modes;
mod net;
mod packet;
mod port;
mod virtio;

use boot_params::BootParams;
use console::Console;

// The entry points. 0x100000 (start of the protected-mode kernel in a bzImage) would be the
// 32-bit entry: netprobe only supports the 64-bit protocol, so it halts. 0x100200 is the 64-bit
// entry: interrupts off, a stack of our own, .bss zeroed, then Rust with RDI = boot_params.
core::arch::global_asm!(
    ".section .text.head32, \"ax\"",
    ".code32",
    "2: hlt",
    "jmp 2b",
    ".code64",
    ".section .text.entry, \"ax\"",
    ".global _start",
    "_start:",
    "cli",
    "cld",
    "lea rsp, [rip + __stack_top]",
    "mov r12, rsi",
    "lea rdi, [rip + __bss_start]",
    "lea rcx, [rip + __bss_end]",
    "sub rcx, rdi",
    "xor eax, eax",
    "rep stosb",
    "mov rdi, r12",
    "call netprobe_main",
    "3: hlt",
    "jmp 3b",
);

/// Rust entry, called by `_start` with the address of `boot_params`.
#[no_mangle]
extern "C" fn netprobe_main(boot_params: u64) -> ! {
    let mut out = Console::new();
    // SAFETY: the boot protocol puts the address of a valid, identity-mapped boot_params in RSI,
    // which `_start` passes on unchanged.
    let params = unsafe { BootParams::new(boot_params) };
    let cmdline = params.cmdline();
    let result = match cmdline::param(cmdline, b"netprobe.mode").unwrap_or(b"boot") {
        b"boot" => modes::boot::run(&mut out, &params),
        b"cpus" => modes::cpus::run(&mut out),
        b"ping" => modes::run_net_mode(&mut out, &params, modes::ping::run),
        b"flood" => modes::run_net_mode(&mut out, &params, modes::flood::run),
        b"sink" => modes::run_net_mode(&mut out, &params, modes::sink::run),
        b"echo" => modes::run_net_mode(&mut out, &params, modes::echo::run),
        b"tso" => {
            modes::run_net_mode_with(&mut out, &params, modes::tso::FEATURES, modes::tso::run)
        }
        b"gso-rx" => modes::run_net_mode_with(
            &mut out,
            &params,
            modes::gso_rx::FEATURES,
            modes::gso_rx::run,
        ),
        _ => Err("unknown netprobe.mode (known: boot, cpus, ping, flood, sink, echo, tso, gso-rx)"),
    };
    match result {
        Ok(()) => out.line(b"netprobe: PASS"),
        Err(reason) => {
            out.str(b"netprobe: FAIL ");
            out.line(reason.as_bytes());
        }
    }
    port::reset()
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    let mut out = Console::new();
    out.str(b"netprobe: FAIL panic at ");
    if let Some(location) = info.location() {
        out.str(location.file().as_bytes());
        out.str(b":");
        out.dec(u64::from(location.line()));
    }
    out.line(b"");
    port::reset()
}
