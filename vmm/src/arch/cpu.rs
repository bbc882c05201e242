//! The state a vCPU starts in: CPUID, MSRs, FPU, segment and control registers, and the general
//! registers of the Linux 64-bit boot protocol (RIP = 64-bit entry, RSI = boot_params).

use kvm_bindings::{kvm_fpu, kvm_msr_entry, kvm_regs, CpuId, Msrs, KVM_MAX_CPUID_ENTRIES};
use kvm_ioctls::{Kvm, VcpuFd};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend};

use super::gdt::{self, BOOT_CS, BOOT_DS, BOOT_TSS, GDT};
use super::layout::{GDT_ADDR, IDT_ADDR};
use super::paging;

/// Errors while giving a vCPU its initial state.
#[derive(Debug, thiserror::Error)]
pub enum CpuError {
    /// KVM refused an ioctl.
    #[error("KVM could not {what}")]
    Kvm {
        /// Which step failed.
        what: &'static str,
        /// The ioctl's error.
        #[source]
        source: kvm_ioctls::Error,
    },
    /// The boot tables did not fit in guest memory.
    #[error("could not write the GDT or page tables to guest memory")]
    Tables(#[source] vm_memory::GuestMemoryError),
    /// Fewer MSRs were set than asked.
    #[error("KVM set only {set} of {wanted} boot MSRs")]
    Msrs {
        /// How many KVM accepted.
        set: usize,
        /// How many we passed.
        wanted: usize,
    },
}

fn kvm_err(what: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> CpuError {
    move |source| CpuError::Kvm { what, source }
}

// Model-specific registers (Intel SDM vol. 4, "Model-Specific Registers").
/// IA32_SYSENTER_CS.
const MSR_IA32_SYSENTER_CS: u32 = 0x174;
/// IA32_SYSENTER_ESP.
const MSR_IA32_SYSENTER_ESP: u32 = 0x175;
/// IA32_SYSENTER_EIP.
const MSR_IA32_SYSENTER_EIP: u32 = 0x176;
/// IA32_STAR: SYSCALL segment selectors.
const MSR_STAR: u32 = 0xc000_0081;
/// IA32_LSTAR: 64-bit SYSCALL target.
const MSR_LSTAR: u32 = 0xc000_0082;
/// IA32_CSTAR: compatibility-mode SYSCALL target.
const MSR_CSTAR: u32 = 0xc000_0083;
/// IA32_FMASK: RFLAGS mask on SYSCALL.
const MSR_SYSCALL_MASK: u32 = 0xc000_0084;
/// IA32_KERNEL_GS_BASE: swapped in by SWAPGS.
const MSR_KERNEL_GS_BASE: u32 = 0xc000_0102;
/// IA32_TIME_STAMP_COUNTER.
const MSR_IA32_TSC: u32 = 0x10;
/// IA32_MISC_ENABLE.
const MSR_IA32_MISC_ENABLE: u32 = 0x1a0;
/// IA32_MISC_ENABLE bit 0: fast-string operations enabled (what firmware leaves set).
const MISC_ENABLE_FAST_STRING: u64 = 1;

// Control register and EFER bits (Intel SDM vol. 3, 2.5 "Control Registers").
/// CR0.PE: protected mode.
const CR0_PE: u64 = 1 << 0;
/// CR0.ET: extension type, hard-wired to 1 on modern CPUs.
const CR0_ET: u64 = 1 << 4;
/// CR0.PG: paging.
const CR0_PG: u64 = 1 << 31;
/// CR4.PAE: physical address extension, required for long mode.
const CR4_PAE: u64 = 1 << 5;
/// EFER.LME: long mode enable.
const EFER_LME: u64 = 1 << 8;
/// EFER.LMA: long mode active.
const EFER_LMA: u64 = 1 << 10;

/// CPUID.1:ECX bit 31: "running under a hypervisor".
const CPUID_1_ECX_HYPERVISOR: u32 = 1 << 31;

/// Passes the host's KVM-supported CPUID to the vCPU, with the vCPU's APIC ID and the
/// hypervisor bit filled in.
pub fn setup_cpuid(kvm: &Kvm, vcpu: &VcpuFd, cpu_index: u8) -> Result<(), CpuError> {
    let mut cpuid: CpuId = kvm
        .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
        .map_err(kvm_err("read the supported CPUID"))?;
    for entry in cpuid.as_mut_slice() {
        if entry.function == 1 {
            entry.ecx |= CPUID_1_ECX_HYPERVISOR;
            // EBX[31:24]: initial APIC ID.
            entry.ebx = (entry.ebx & 0x00ff_ffff) | (u32::from(cpu_index) << 24);
        }
    }
    vcpu.set_cpuid2(&cpuid).map_err(kvm_err("set the CPUID"))
}

/// Sets the MSRs a kernel expects firmware to have initialised.
pub fn setup_msrs(vcpu: &VcpuFd) -> Result<(), CpuError> {
    let entry = |index, data| kvm_msr_entry {
        index,
        data,
        ..Default::default()
    };
    let entries = [
        entry(MSR_IA32_SYSENTER_CS, 0),
        entry(MSR_IA32_SYSENTER_ESP, 0),
        entry(MSR_IA32_SYSENTER_EIP, 0),
        entry(MSR_STAR, 0),
        entry(MSR_CSTAR, 0),
        entry(MSR_KERNEL_GS_BASE, 0),
        entry(MSR_SYSCALL_MASK, 0),
        entry(MSR_LSTAR, 0),
        entry(MSR_IA32_TSC, 0),
        entry(MSR_IA32_MISC_ENABLE, MISC_ENABLE_FAST_STRING),
    ];
    let msrs = Msrs::from_entries(&entries).expect("fewer entries than the FAM maximum");
    let set = vcpu.set_msrs(&msrs).map_err(kvm_err("set the MSRs"))?;
    if set != entries.len() {
        return Err(CpuError::Msrs {
            set,
            wanted: entries.len(),
        });
    }
    Ok(())
}

/// Initialises the x87 FPU and SSE control words to their reset values.
pub fn setup_fpu(vcpu: &VcpuFd) -> Result<(), CpuError> {
    let fpu = kvm_fpu {
        fcw: 0x37f,
        mxcsr: 0x1f80,
        ..Default::default()
    };
    vcpu.set_fpu(&fpu).map_err(kvm_err("set the FPU state"))
}

/// Writes the GDT, IDT and page tables and puts the vCPU in 64-bit mode with them.
pub fn setup_sregs<M: GuestMemoryBackend>(mem: &M, vcpu: &VcpuFd) -> Result<(), CpuError> {
    for (i, entry) in GDT.iter().enumerate() {
        mem.write_obj(*entry, GuestAddress(GDT_ADDR + i as u64 * 8))
            .map_err(CpuError::Tables)?;
    }
    mem.write_obj(0u64, GuestAddress(IDT_ADDR))
        .map_err(CpuError::Tables)?;
    let cr3 = paging::write_page_tables(mem).map_err(CpuError::Tables)?;

    let mut sregs = vcpu
        .get_sregs()
        .map_err(kvm_err("read the segment registers"))?;
    sregs.gdt.base = GDT_ADDR;
    sregs.gdt.limit = (std::mem::size_of_val(&GDT) - 1) as u16;
    sregs.idt.base = IDT_ADDR;
    sregs.idt.limit = 7;
    sregs.cs = gdt::kvm_segment(BOOT_CS);
    let data = gdt::kvm_segment(BOOT_DS);
    sregs.ds = data;
    sregs.es = data;
    sregs.fs = data;
    sregs.gs = data;
    sregs.ss = data;
    sregs.tr = gdt::kvm_segment(BOOT_TSS);
    sregs.cr3 = cr3;
    sregs.cr4 |= CR4_PAE;
    sregs.cr0 |= CR0_PE | CR0_ET | CR0_PG;
    sregs.efer |= EFER_LME | EFER_LMA;
    vcpu.set_sregs(&sregs)
        .map_err(kvm_err("set the segment registers"))
}

/// The general registers at entry: RIP at the kernel's 64-bit entry point, RSI pointing at
/// boot_params, interrupts off (RFLAGS bit 1 is reserved and always set).
pub fn boot_regs(entry: u64, zero_page: u64) -> kvm_regs {
    kvm_regs {
        rip: entry,
        rsi: zero_page,
        rflags: 0x2,
        ..Default::default()
    }
}

/// Loads [`boot_regs`] into the vCPU.
pub fn setup_regs(vcpu: &VcpuFd, entry: u64, zero_page: u64) -> Result<(), CpuError> {
    vcpu.set_regs(&boot_regs(entry, zero_page))
        .map_err(kvm_err("set the general registers"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_boot_regs_follow_the_64_bit_boot_protocol() {
        let regs = boot_regs(0x10_0200, 0x7000);
        assert_eq!(regs.rip, 0x10_0200);
        assert_eq!(regs.rsi, 0x7000);
        assert_eq!(regs.rflags & (1 << 9), 0, "interrupts must be off");
        assert_eq!(regs.rflags, 2);
    }
}
