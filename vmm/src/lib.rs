//! # vmm — a small KVM virtual machine monitor
//!
//! Boots a guest kernel on KVM the way Linux is booted and gives it a serial console; the
//! virtio-net device that moves Ethernet frames to a host tap comes in [`vmm_virtio_net`].
//!
//! What happens when you run `vmm --kernel bzImage`, step by step, and where:
//!
//! 1. Guest RAM is mmap'ed, split around the 32-bit MMIO gap ([`memory`], [`arch::e820`]).
//! 2. The kernel is recognised as bzImage or ELF and copied into RAM; the initrd goes to the top
//!    of low memory; the command line and the `boot_params` zero page with its e820 map are
//!    written at fixed addresses ([`boot`], [`arch::layout`]).
//! 3. `/dev/kvm` is opened; a VM gets guest RAM as memory slots, an in-kernel interrupt
//!    controller (PIC + IOAPIC) and PIT ([`vm`]).
//! 4. The serial port (COM1) and i8042 are attached to port I/O; the UART interrupt reaches the
//!    irqchip through an irqfd ([`devices`]).
//! 5. An MP table tells the guest its CPUs and interrupt routing ([`arch::mptable`]). Each vCPU
//!    gets CPUID with its APIC ID and topology, and MSRs; vCPU 0 also a GDT and identity-mapped
//!    page tables, and starts in 64-bit mode at the kernel's 64-bit entry with RSI = boot_params
//!    ([`arch::cpu`], [`arch::gdt`], [`arch::paging`]); the others wait for the guest's INIT/SIPI.
//! 6. Each `--tap`/`--net` NIC gets a host tap, a virtio-net device and a virtio-mmio window,
//!    announced to the guest as `virtio_mmio.device=4K@0x<base>:<irq>` on the command line;
//!    queue notifications reach the device thread through ioeventfds, its interrupts the guest
//!    through an irqfd ([`net`], [`virtio_mmio`], and the `vmm_virtio_net` crate).
//! 7. One thread per vCPU loops on `KVM_RUN`, handling port and MMIO exits, until the guest
//!    resets through the i8042, shuts down, or KVM reports an error ([`vcpu`], [`vm::VmExit`]).
//!    Every thread runs under a seccomp filter of its own from before the guest starts
//!    ([`seccomp`]).

pub mod arch;
pub mod boot;
pub mod devices;
pub mod memory;
pub mod net;
pub mod seccomp;
pub mod signals;
pub mod terminal;
pub mod vcpu;
pub mod virtio_mmio;
pub mod vm;

pub use vm::{Vm, VmConfig, VmError, VmExit, VmOutcome};
