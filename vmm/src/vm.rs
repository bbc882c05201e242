//! Putting a VM together and running it: KVM, guest RAM, the loaded kernel, the MP table, legacy
//! devices and the vCPU threads ([`crate::vcpu`]), until the guest resets, shuts down, fails, or
//! runs out of time.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use kvm_bindings::{kvm_pit_config, kvm_userspace_memory_region, KVM_PIT_SPEAKER_DUMMY};
use kvm_ioctls::{Kvm, VcpuFd, VmFd};
use vm_memory::{GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::arch::acpi::{self, AcpiError};
use crate::arch::cpu::{self, CpuError};
use crate::arch::e820::e820_map;
use crate::arch::layout::{COM1_IRQ, KVM_TSS_ADDR, MIN_MEM_MIB, ZERO_PAGE_ADDR};
use crate::arch::mptable::{self, MptableError, MAX_CPUS};
use crate::boot::{self, BootError, LoadedKernel};
use crate::devices::i8042::I8042;
use crate::devices::mmio_bus::MmioBus;
use crate::devices::pio::PioBus;
use crate::devices::serial::{forward_stdin, new_serial};
use crate::devices::EventFdTrigger;
use crate::memory::{create_guest_memory, MemoryError};
use crate::net::{self, Nic, NicConfig, NicReport};
use crate::vcpu::Vcpus;

/// What the user asked for.
#[derive(Clone, Debug)]
pub struct VmConfig {
    /// Kernel image (bzImage or ELF).
    pub kernel: PathBuf,
    /// Optional initrd / initramfs.
    pub initrd: Option<PathBuf>,
    /// Extra kernel command line, appended to [`boot::DEFAULT_CMDLINE`].
    pub cmdline: String,
    /// Guest RAM in MiB.
    pub mem_mib: u64,
    /// Number of vCPUs, 1 to [`MAX_CPUS`].
    pub cpus: u8,
    /// Stop the guest after this long.
    pub timeout: Option<Duration>,
    /// virtio-net NICs, in order (net0, net1, ...).
    pub nics: Vec<NicConfig>,
    /// Tracing and capture of their frames.
    pub observe: net::Observe,
    /// The console: stdin's terminal and what its escape key does.
    pub console: crate::terminal::Console,
}

/// Errors that stop a VM from starting.
#[derive(Debug, thiserror::Error)]
pub enum VmError {
    /// A thread's seccomp filter could not be built or installed.
    #[error(transparent)]
    Seccomp(#[from] crate::seccomp::SeccompError),
    /// --mem below the minimum.
    #[error("--mem {0} is too small: the guest needs at least {MIN_MEM_MIB} MiB")]
    MemoryTooSmall(u64),
    /// --cpus outside 1..=32.
    #[error("--cpus {0}: vmm runs 1 to {MAX_CPUS} vCPUs")]
    UnsupportedCpus(u8),
    /// --cpus above what this host's KVM allows.
    #[error(
        "--cpus {cpus}: this host's KVM allows at most {max} vCPUs per VM (KVM_CAP_MAX_VCPUS)"
    )]
    KvmCpuLimit {
        /// How many were asked for.
        cpus: u8,
        /// KVM_CAP_MAX_VCPUS.
        max: usize,
    },
    /// The MP table could not be written.
    #[error(transparent)]
    Mptable(#[from] MptableError),
    /// The ACPI tables could not be written.
    #[error(transparent)]
    Acpi(#[from] AcpiError),
    /// Guest RAM could not be created.
    #[error(transparent)]
    Memory(#[from] MemoryError),
    /// Kernel, initrd or boot parameters.
    #[error(transparent)]
    Boot(#[from] BootError),
    /// /dev/kvm does not exist.
    #[error("/dev/kvm does not exist: this host has no KVM (load kvm_intel or kvm_amd, or enable virtualization for this machine)")]
    KvmMissing,
    /// /dev/kvm exists but we may not open it.
    #[error("permission denied opening /dev/kvm: run as root or join the group that owns it (usually: sudo usermod -aG kvm $USER)")]
    KvmPermission,
    /// Any other KVM failure.
    #[error("KVM could not {what}")]
    Kvm {
        /// The step that failed.
        what: &'static str,
        /// The ioctl's error.
        #[source]
        source: kvm_ioctls::Error,
    },
    /// vCPU register setup.
    #[error(transparent)]
    Cpu(#[from] CpuError),
    /// A NIC option or its tap.
    #[error(transparent)]
    Net(#[from] net::NetError),
    /// An eventfd or thread could not be created.
    #[error("cannot create {what}")]
    Host {
        /// What we tried to create.
        what: &'static str,
        /// Why it failed.
        #[source]
        source: std::io::Error,
    },
}

fn kvm_err(what: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> VmError {
    move |source| VmError::Kvm { what, source }
}

/// How a VM run ended.
#[derive(Debug, PartialEq, Eq)]
pub enum VmExit {
    /// The guest pulsed the i8042 reset line (Linux `reboot=k`, netprobe at the end).
    Reset,
    /// The guest triple-faulted or KVM reported a shutdown.
    Shutdown,
    /// The guest asked for power-off or reset through a KVM system event.
    SystemEvent(u32),
    /// `--timeout` passed first.
    Timeout(Duration),
    /// KVM could not continue the guest (often: an instruction its emulator does not know).
    InternalError {
        /// `kvm_run.internal.suberror`.
        suberror: u32,
        /// Guest RIP at the failure.
        rip: u64,
    },
    /// KVM_RUN failed to enter the guest.
    FailEntry(u64),
    /// An exit the VMM does not handle, or KVM_RUN itself failed.
    Unexpected(String),
}

impl VmExit {
    /// Process exit status: 0 when the guest ended itself, non-zero when it was stopped or failed.
    pub fn exit_code(&self) -> i32 {
        match self {
            VmExit::Reset | VmExit::Shutdown | VmExit::SystemEvent(_) => 0,
            VmExit::Timeout(_) => 124,
            _ => 1,
        }
    }
}

impl fmt::Display for VmExit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VmExit::Reset => write!(f, "the guest reset the machine (i8042 reset); exiting"),
            VmExit::Shutdown => write!(f, "the guest shut down (triple fault); exiting"),
            VmExit::SystemEvent(kind) => write!(f, "the guest ended with KVM system event {kind}; exiting"),
            VmExit::Timeout(t) => write!(f, "the guest was still running after --timeout {} s; stopped it", t.as_secs()),
            VmExit::InternalError { suberror, rip } => write!(
                f,
                "KVM internal error {suberror} ({}) at guest RIP {rip:#x}; the guest cannot continue",
                internal_error_name(*suberror)
            ),
            VmExit::FailEntry(reason) => write!(f, "KVM could not enter the guest (hardware entry failure reason {reason:#x})"),
            VmExit::Unexpected(what) => write!(f, "unexpected vCPU exit: {what}"),
        }
    }
}

/// Names of `KVM_INTERNAL_ERROR_*` suberrors (include/uapi/linux/kvm.h).
fn internal_error_name(suberror: u32) -> &'static str {
    match suberror {
        kvm_bindings::KVM_INTERNAL_ERROR_EMULATION => "instruction emulation failed",
        kvm_bindings::KVM_INTERNAL_ERROR_SIMUL_EX => "exception while delivering an exception",
        kvm_bindings::KVM_INTERNAL_ERROR_DELIVERY_EV => "event delivery failed",
        kvm_bindings::KVM_INTERNAL_ERROR_UNEXPECTED_EXIT_REASON => "unexpected exit reason",
        _ => "unknown",
    }
}

/// Whether /dev/kvm is PVM (`kvm_pvm`), the paravirtual KVM that runs only PVM-aware kernels
/// natively and everything else through its instruction emulator.
pub fn kvm_is_pvm() -> bool {
    std::path::Path::new("/sys/module/kvm_pvm").exists()
}

/// How a run ended, and what each NIC moved.
pub struct VmOutcome {
    /// Why the VM stopped.
    pub exit: VmExit,
    /// The vCPU that ended it (none for a timeout).
    pub vcpu: Option<u8>,
    /// One report per NIC, in order.
    pub nics: Vec<NicReport>,
}

/// A VM ready to run: guest memory loaded, KVM set up.
pub struct Vm {
    // Kept alive for as long as the VM exists: KVM maps this memory into the guest.
    _mem: GuestMemoryMmap,
    _vm: VmFd,
    vcpus: Vec<VcpuFd>,
    pio: PioBus,
    mmio: MmioBus,
    nics: Vec<Nic>,
    timeout: Option<Duration>,
}

impl Vm {
    /// Checks the config, loads the guest into fresh memory, and creates the KVM VM and vCPU.
    /// User mistakes (missing files, wrong sizes) are reported before /dev/kvm is opened.
    /// Host changes and symmetry probes go into `effects`, which the caller reports and undoes.
    pub fn new(config: &VmConfig, effects: &net::HostEffects) -> Result<Self, VmError> {
        if config.mem_mib < MIN_MEM_MIB {
            return Err(VmError::MemoryTooSmall(config.mem_mib));
        }
        if config.cpus == 0 || config.cpus > MAX_CPUS {
            return Err(VmError::UnsupportedCpus(config.cpus));
        }
        net::check_nics(&config.nics)?;
        let mem = create_guest_memory(config.mem_mib)?;
        let kernel = boot::load_kernel(&mem, &config.kernel)?;
        let initrd = match &config.initrd {
            Some(path) => Some(boot::load_initrd(&mem, path, &kernel)?),
            None => None,
        };
        let slots: Vec<(u64, u32)> = (0..config.nics.len())
            .map(crate::arch::layout::nic_slot)
            .collect();
        let cmdline = boot::build_cmdline(&config.cmdline, &slots)?;
        let cmdline_len = cmdline
            .as_cstring()
            .map_err(BootError::Cmdline)?
            .as_bytes()
            .len();
        let mut params = boot::boot_params(
            &kernel,
            cmdline_len,
            initrd,
            &e820_map(config.mem_mib << 20),
        );
        // CPUs and interrupt routing twice over: an MP table for kernels without ACPI, ACPI
        // (which also lists the NICs) for distro kernels.
        mptable::write_mptable(&mem, config.cpus)?;
        params.acpi_rsdp_addr = acpi::write_acpi_tables(&mem, config.cpus, &slots)?;
        boot::write_boot_params(&mem, &cmdline, &params, ZERO_PAGE_ADDR)?;
        log::info!(
            "loaded {:?} kernel, entry {:#x}, command line: {}",
            kernel.format,
            kernel.entry,
            cmdline
                .as_cstring()
                .map(|c| c.to_string_lossy().into_owned())
                .unwrap_or_default()
        );
        warn_if_pvm_cannot_run(&kernel);
        let nics = net::open_nics(&config.nics, &config.observe, effects)?;

        let kvm = open_kvm()?;
        let max = kvm.get_max_vcpus();
        if usize::from(config.cpus) > max {
            return Err(VmError::KvmCpuLimit {
                cpus: config.cpus,
                max,
            });
        }
        let vm = kvm.create_vm().map_err(kvm_err("create a VM"))?;
        vm.set_tss_address(KVM_TSS_ADDR as usize)
            .map_err(kvm_err("set the TSS address"))?;
        vm.create_irq_chip()
            .map_err(kvm_err("create the in-kernel irqchip"))?;
        let pit = kvm_pit_config {
            flags: KVM_PIT_SPEAKER_DUMMY,
            ..Default::default()
        };
        vm.create_pit2(pit)
            .map_err(kvm_err("create the in-kernel PIT"))?;
        register_memory(&vm, &mem)?;

        let pio = legacy_devices(&vm, &config.console)?;
        let mmio = MmioBus::new(net::attach_nics(&vm, &mem, &nics)?);
        let cpuid = cpu::supported_cpuid(&kvm)?;
        let mut vcpus = Vec::with_capacity(config.cpus.into());
        for index in 0..config.cpus {
            let vcpu = vm
                .create_vcpu(index.into())
                .map_err(kvm_err("create a vCPU"))?;
            cpu::setup_cpuid(&cpuid, &vcpu, index, config.cpus)?;
            cpu::setup_msrs(&vcpu)?;
            cpu::setup_fpu(&vcpu)?;
            // The bootstrap processor starts at the kernel; the others wait for INIT/SIPI.
            if index == 0 {
                cpu::setup_sregs(&mem, &vcpu)?;
                cpu::setup_regs(&vcpu, kernel.entry, ZERO_PAGE_ADDR)?;
            }
            vcpus.push(vcpu);
        }

        Ok(Self {
            _mem: mem,
            _vm: vm,
            vcpus,
            pio,
            mmio,
            nics,
            timeout: config.timeout,
        })
    }

    /// Runs each vCPU on its own thread until the guest ends or the timeout passes, then stops
    /// them all.
    pub fn run(self) -> Result<VmOutcome, VmError> {
        let Vm {
            _mem,
            _vm,
            vcpus,
            pio,
            mmio,
            nics,
            timeout,
        } = self;
        log::info!("VM ready: entering the guest on {} vCPU(s)", vcpus.len());
        let vcpus = Vcpus::start(vcpus, pio, mmio).map_err(|source| VmError::Host {
            what: "the vCPU threads",
            source,
        })?;
        // Everything main does from now on: wait, stop the vCPUs, report, undo host changes.
        if let Err(e) = crate::seccomp::apply(crate::seccomp::ThreadKind::Main) {
            vcpus.stop();
            return Err(e.into());
        }
        let (vcpu, exit) = vcpus.wait(timeout);
        vcpus.stop();
        let nics = nics
            .iter()
            .map(|nic| NicReport {
                index: nic.index,
                tap: nic.tap.clone(),
                counters: nic.counters.snapshot(),
            })
            .collect();
        Ok(VmOutcome { exit, vcpu, nics })
    }
}

fn open_kvm() -> Result<Kvm, VmError> {
    Kvm::new().map_err(|e| match e.errno() {
        libc::ENOENT | libc::ENODEV | libc::ENXIO => VmError::KvmMissing,
        libc::EACCES | libc::EPERM => VmError::KvmPermission,
        _ => VmError::Kvm {
            what: "open /dev/kvm",
            source: e,
        },
    })
}

fn warn_if_pvm_cannot_run(kernel: &LoadedKernel) {
    if kernel.is_linux() && kvm_is_pvm() {
        log::warn!(
            "/dev/kvm is PVM (kvm_pvm): a Linux kernel that is not PVM-aware will not boot here \
             (bare-metal guests such as netprobe do); use a host whose KVM has VMX or SVM"
        );
    }
}

/// Tells KVM about each RAM region (slot n = region n).
fn register_memory(vm: &VmFd, mem: &GuestMemoryMmap) -> Result<(), VmError> {
    for (slot, region) in mem.iter().enumerate() {
        let host_addr = mem
            .get_host_address(region.start_addr())
            .map_err(|_| VmError::Kvm {
                what: "map guest memory",
                source: kvm_ioctls::Error::new(libc::EFAULT),
            })?;
        let region = kvm_userspace_memory_region {
            slot: slot as u32,
            guest_phys_addr: region.start_addr().0,
            memory_size: region.len(),
            userspace_addr: host_addr as u64,
            flags: 0,
        };
        // SAFETY: the host range belongs to `mem`, a live mmap of exactly `memory_size` bytes
        // that the `Vm` keeps until after the VM fd (and with it the slot) is gone.
        unsafe { vm.set_user_memory_region(region) }.map_err(kvm_err("register guest memory"))?;
    }
    Ok(())
}

/// COM1 on IRQ 4 through an irqfd, the i8042, and stdin forwarding.
fn legacy_devices(vm: &VmFd, console: &crate::terminal::Console) -> Result<PioBus, VmError> {
    let eventfd =
        |what| EventFd::new(EFD_NONBLOCK).map_err(|source| VmError::Host { what, source });
    let serial_irq = eventfd("the serial interrupt eventfd")?;
    vm.register_irqfd(&serial_irq, COM1_IRQ)
        .map_err(kvm_err("register the serial irqfd"))?;
    let serial = new_serial(EventFdTrigger(serial_irq));
    forward_stdin(serial.clone(), console.clone());
    Ok(PioBus::new(serial, I8042::new()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_exit_codes() {
        assert_eq!(VmExit::Reset.exit_code(), 0);
        assert_eq!(VmExit::Shutdown.exit_code(), 0);
        assert_eq!(VmExit::Timeout(Duration::from_secs(1)).exit_code(), 124);
        assert_eq!(
            VmExit::InternalError {
                suberror: 1,
                rip: 0
            }
            .exit_code(),
            1
        );
    }

    #[test]
    fn test_internal_error_message_names_rip_and_cause() {
        let text = VmExit::InternalError {
            suberror: 1,
            rip: 0x100234,
        }
        .to_string();
        assert!(text.contains("0x100234"), "{text}");
        assert!(text.contains("emulation"), "{text}");
    }

    #[test]
    fn test_user_errors_come_before_kvm() {
        let config = VmConfig {
            kernel: "/nonexistent".into(),
            initrd: None,
            cmdline: String::new(),
            mem_mib: 64,
            cpus: 1,
            timeout: None,
            nics: Vec::new(),
            observe: Default::default(),
            console: Default::default(),
        };
        assert!(matches!(
            Vm::new(&config, &net::HostEffects::default()),
            Err(VmError::Boot(BootError::KernelRead { .. }))
        ));
        let small = VmConfig {
            mem_mib: 4,
            ..config.clone()
        };
        assert!(matches!(
            Vm::new(&small, &net::HostEffects::default()),
            Err(VmError::MemoryTooSmall(4))
        ));
        for cpus in [0, MAX_CPUS + 1] {
            let smp = VmConfig {
                cpus,
                ..config.clone()
            };
            assert!(matches!(
                Vm::new(&smp, &net::HostEffects::default()),
                Err(VmError::UnsupportedCpus(n)) if n == cpus
            ));
        }
    }
}
