//! The `vmm` command line.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use vmm::{Vm, VmConfig};

/// A small KVM virtual machine monitor with a virtio-net device on a host tap.
///
/// Boots a Linux kernel (or the netprobe test guest) with a serial console on stdin/stdout.
/// The VMM exits when the guest resets the machine (Linux: `reboot`), with status 0.
#[derive(Parser, Debug)]
#[command(version, about, long_about, after_help = EXAMPLES)]
struct Args {
    /// Kernel image to boot: a bzImage or an ELF (vmlinux); the format is detected.
    ///
    /// Example: --kernel guest-images/out/bzImage
    #[arg(long, value_name = "PATH")]
    kernel: PathBuf,

    /// Initial ramdisk (e.g. a gzip'ed cpio initramfs), placed at the top of low memory.
    ///
    /// Example: --initrd guest-images/out/initramfs.cpio.gz
    #[arg(long, value_name = "PATH")]
    initrd: Option<PathBuf>,

    /// Extra kernel command line, appended to the VMM's defaults
    /// ("console=ttyS0 reboot=k panic=1 pci=off").
    ///
    /// Example: --cmdline "quiet vmm.ip=192.0.2.2/24"
    #[arg(long, value_name = "STR", default_value = "")]
    cmdline: String,

    /// Guest RAM in MiB (at least 16).
    ///
    /// Example: --mem 128
    #[arg(long, value_name = "MiB", default_value_t = 256)]
    mem: u64,

    /// Number of vCPUs. Only 1 is supported so far.
    #[arg(long, value_name = "N", default_value_t = 1)]
    cpus: u8,

    /// Host tap device for a virtio-net NIC (repeatable). Accepted now; the virtio-net
    /// device that uses it is the next milestone.
    ///
    /// Example: --tap vnet0
    #[arg(long, value_name = "NAME")]
    tap: Vec<String>,

    /// Stop the guest after this many seconds (exit status 124). Default: no limit.
    ///
    /// Example: --timeout 60
    #[arg(long, value_name = "SECS")]
    timeout: Option<u64>,
}

const EXAMPLES: &str = "\
Examples:
  vmm --kernel guest-images/out/netprobe.bzImage --mem 128 --cmdline netprobe.mode=boot
  vmm --kernel guest-images/out/bzImage --initrd guest-images/out/initramfs.cpio.gz

Logging: RUST_LOG=info (or debug, trace) shows what the VMM does.";

fn run(args: Args) -> anyhow::Result<ExitCode> {
    if !args.tap.is_empty() {
        log::warn!(
            "--tap {}: the virtio-net device is not implemented yet; booting without a NIC",
            args.tap.join(",")
        );
    }
    let config = VmConfig {
        kernel: args.kernel,
        initrd: args.initrd,
        cmdline: args.cmdline,
        mem_mib: args.mem,
        cpus: args.cpus,
        timeout: args.timeout.map(Duration::from_secs),
    };
    let vm = Vm::new(&config).context("cannot start the VM")?;
    let exit = vm.run()?;
    eprintln!("vmm: {exit}");
    Ok(ExitCode::from(exit.exit_code() as u8))
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn"))
        .format_timestamp(None)
        .init();
    match run(Args::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("vmm: {e:#}");
            ExitCode::FAILURE
        }
    }
}
