//! The `vmm` command line.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{ArgMatches, CommandFactory, FromArgMatches, Parser};
use std::sync::Arc;

use vmm::net::{HostEffects, NicConfig};
use vmm::terminal::{Console, Terminal};
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

    /// Number of vCPUs (1 to 32). The guest learns them from an MP table and starts them itself.
    ///
    /// Example: --cpus 2
    #[arg(long, value_name = "N", default_value_t = 1,
          value_parser = clap::value_parser!(u8).range(1..=i64::from(vmm::arch::mptable::MAX_CPUS)))]
    cpus: u8,

    /// A virtio-net NIC on host tap NAME (repeatable: one NIC each). The tap is created if it
    /// does not exist and set up; its MAC is chosen for you (see --net).
    ///
    /// Example: --tap vnet0
    #[arg(long, value_name = "NAME")]
    tap: Vec<String>,

    /// A virtio-net NIC with options (repeatable), QEMU/Cloud Hypervisor style:
    ///
    ///   tap=NAME[,mac=M][,bridge=BR][,mtu=N]     a tap (created if absent), on bridge BR
    ///
    ///   macvtap=NAME,link=DEV[,mode=M][,mac=M]   a macvtap created on DEV (mode bridge, vepa,
    ///                                            private or passthru; default bridge), removed at exit
    ///
    ///   macvtap=NAME[,mac=M]                     an existing macvtap
    ///
    ///   fd=N[,mac=M]                             an open tap/macvtap fd, e.g. 3<>/dev/tap7
    ///
    /// Without mac= the guest gets the macvtap's MAC, or for a tap a stable, locally administered
    /// MAC derived from its name. What vmm creates or changes on the host it undoes at exit.
    ///
    /// Every kind takes offload=on|off (default on): checksum and TSO offloads, as far as the
    /// host tap supports them; off makes the guest checksum and segment every frame itself.
    ///
    /// Example: --net macvtap=mv0,link=eth0,mode=bridge
    #[arg(long, value_name = "SPEC", verbatim_doc_comment)]
    net: Vec<String>,

    /// Log every frame each NIC moves: direction, queue, descriptors, the virtio-net header, and
    /// the frame decoded (ARP, IPv4/IPv6, ICMP, UDP/TCP). Log target: vmm::net::trace.
    #[arg(long)]
    trace_net: bool,

    /// Capture every NIC's frames, both directions, to a pcap file (tcpdump -r, Wireshark).
    /// Per NIC: --net ...,pcap=PATH.
    ///
    /// Example: --pcap /tmp/guest.pcap
    #[arg(long, value_name = "PATH")]
    pcap: Option<PathBuf>,

    /// Seccomp filters on every thread (on), or none (off: for debugging a "seccomp: ... made
    /// system call N" stop; please report those).
    #[arg(long, value_name = "on|off", default_value = "on", value_parser = ["on", "off"])]
    seccomp: String,

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
  vmm --kernel guest-images/out/netprobe.bzImage --tap vnet0 --trace-net --pcap /tmp/x.pcap \
      --cmdline \"netprobe.mode=ping netprobe.ip=192.0.2.2 netprobe.peer=192.0.2.1\"

Console: the guest's serial console is stdin/stdout. On a terminal, input is raw (Ctrl-C goes
to the guest); Ctrl-A x quits, Ctrl-A h lists the keys.

Logging: RUST_LOG=info (or debug, trace) shows what the VMM does.
At exit, and on SIGUSR1, the VMM prints each NIC's byte-symmetry table.";

/// The NICs of `--tap` and `--net`, in the order they appear on the command line.
fn nics(args: &Args, matches: &ArgMatches) -> anyhow::Result<Vec<NicConfig>> {
    let positions = |id| {
        matches
            .indices_of(id)
            .map(Iterator::collect::<Vec<_>>)
            .unwrap_or_default()
    };
    let mut nics: Vec<(usize, NicConfig)> = Vec::new();
    for (name, at) in args.tap.iter().zip(positions("tap")) {
        nics.push((at, NicConfig::tap(name)));
    }
    for (spec, at) in args.net.iter().zip(positions("net")) {
        nics.push((at, spec.parse()?));
    }
    nics.sort_by_key(|(at, _)| *at);
    Ok(nics.into_iter().map(|(_, nic)| nic).collect())
}

fn run(
    args: Args,
    matches: &ArgMatches,
    effects: &HostEffects,
    terminal: &Arc<Terminal>,
) -> anyhow::Result<ExitCode> {
    let nics = nics(&args, matches)?;
    vmm::seccomp::set_enabled(args.seccomp == "on");
    // Ctrl-C/SIGTERM undo host changes; SIGUSR1 prints the symmetry table (and must not kill a
    // VM without NICs, which is SIGUSR1's default action).
    vmm::signals::install(effects.clone(), terminal.clone());
    // Ctrl-A x on a raw terminal: the same orderly end as a signal, with status 0.
    let quit = {
        let (terminal, effects) = (terminal.clone(), effects.clone());
        Arc::new(move || vmm::signals::stop(&effects, &terminal, "quit (Ctrl-A x)", 0))
    };
    let config = VmConfig {
        kernel: args.kernel,
        initrd: args.initrd,
        cmdline: args.cmdline,
        mem_mib: args.mem,
        cpus: args.cpus,
        timeout: args.timeout.map(Duration::from_secs),
        nics,
        observe: vmm::net::Observe {
            trace: args.trace_net,
            pcap: args.pcap,
        },
        console: Console {
            terminal: terminal.clone(),
            quit,
        },
    };
    let vm = Vm::new(&config, effects).context("cannot start the VM")?;
    let outcome = vm.run()?;
    terminal.restore();
    match outcome.vcpu {
        // Say which vCPU failed; a guest that ended itself did so on whichever CPU it liked.
        Some(index) if outcome.exit.exit_code() != 0 => {
            eprintln!("vmm: vcpu{index}: {}", outcome.exit)
        }
        _ => eprintln!("vmm: {}", outcome.exit),
    }
    for nic in &outcome.nics {
        eprintln!("{nic}");
    }
    eprint!("{}", effects.probes.table());
    Ok(ExitCode::from(outcome.exit.exit_code() as u8))
}

fn main() -> ExitCode {
    let matches = Args::command().get_matches();
    let args = match Args::from_arg_matches(&matches) {
        Ok(args) => args,
        Err(e) => e.exit(),
    };
    let mut logger =
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn"));
    logger.format_timestamp(None);
    if args.trace_net {
        logger.filter_module(vmm::net::trace::TARGET, log::LevelFilter::Info);
    }
    logger.init();
    // What the VM changes on the host, owned here: the VM records it, the signal thread and the
    // end of main undo it.
    let effects = HostEffects::default();
    // On a terminal, raw input for the guest (Ctrl-A x quits; see vmm::terminal).
    let terminal = Arc::new(Terminal::raw_if_tty());
    let result = run(args, &matches, &effects, &terminal);
    terminal.restore();
    // Whatever happened, take back what we changed on the host (macvtaps, bridge ports, MTUs).
    effects.undo.run_all();
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("vmm: {e:#}");
            ExitCode::FAILURE
        }
    }
}
