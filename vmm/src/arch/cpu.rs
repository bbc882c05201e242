//! The state a vCPU starts in: CPUID, MSRs, FPU, segment and control registers, and the general
//! registers of the Linux 64-bit boot protocol (RIP = 64-bit entry, RSI = boot_params).

use kvm_bindings::{
    kvm_cpuid_entry2, kvm_fpu, kvm_msr_entry, kvm_regs, CpuId, Msrs,
    KVM_CPUID_FLAG_SIGNIFCANT_INDEX, KVM_MAX_CPUID_ENTRIES,
};
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

// CPUID bits (Intel SDM vol. 2A, "CPUID"; AMD APM vol. 3, appendix E).
/// CPUID.1:ECX bit 31: "running under a hypervisor".
const CPUID_1_ECX_HYPERVISOR: u32 = 1 << 31;
/// CPUID.1:EDX bit 28: HTT, "EBX[23:16] counts the logical processors of the package".
const CPUID_1_EDX_HTT: u32 = 1 << 28;
/// Level types in CPUID.0xB/0x1F:ECX[15:8].
const LEVEL_TYPE_SMT: u32 = 1;
const LEVEL_TYPE_CORE: u32 = 2;
/// Sub-leaves of CPUID.0xB/0x1F vmm describes: SMT, core, and the invalid level that ends them.
const X2APIC_SUBLEAVES: u32 = 3;

/// Reads the CPUID KVM can give a vCPU on this host (once per VM; [`setup_cpuid`] adapts a copy
/// to each vCPU).
pub fn supported_cpuid(kvm: &Kvm) -> Result<CpuId, CpuError> {
    kvm.get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
        .map_err(kvm_err("read the supported CPUID"))
}

/// Gives vCPU `index` of `count` the host's KVM-supported CPUID, with the hypervisor bit set
/// and a topology that matches the MP table ([`super::mptable`]): one package of `count` cores
/// with one thread each, APIC ID = vCPU index.
pub fn setup_cpuid(supported: &CpuId, vcpu: &VcpuFd, index: u8, count: u8) -> Result<(), CpuError> {
    let mut cpuid = supported.clone();
    set_topology(&mut cpuid, index, count);
    vcpu.set_cpuid2(&cpuid).map_err(kvm_err("set the CPUID"))
}

/// Rewrites the CPUID leaves that describe where a CPU sits: leaf 1 (initial APIC ID, logical
/// processor count, HTT), leaf 4 (cores per package, threads sharing each cache), leaves 0xB
/// and 0x1F (x2APIC topology: an SMT level of 1 thread, a core level of `count`), and on AMD
/// 0x8000_0008 (core count) and 0x8000_001E (extended APIC ID). The x2APIC leaves get all three
/// sub-leaves (SMT, core, end of list) whenever the CPU has them at all, also where the host's
/// KVM lists only an empty sub-leaf 0 (as a nested host does). Everything else is left as KVM
/// offers it.
pub fn set_topology(cpuid: &mut CpuId, index: u8, count: u8) {
    let apic_id = u32::from(index);
    let count = u32::from(count.max(1));
    // Bits of the APIC ID that number the cores in the package.
    let core_bits = u32::BITS - (count - 1).leading_zeros();
    let max_leaf = cpuid
        .as_slice()
        .iter()
        .find(|e| e.function == 0)
        .map_or(0, |e| e.eax);
    for leaf in [0xb, 0x1f] {
        let listed = cpuid.as_slice().iter().any(|e| e.function == leaf);
        if !listed && (leaf == 0x1f || max_leaf < leaf) {
            continue;
        }
        for sub in 0..X2APIC_SUBLEAVES {
            if !cpuid
                .as_slice()
                .iter()
                .any(|e| e.function == leaf && e.index == sub)
            {
                let entry = kvm_cpuid_entry2 {
                    function: leaf,
                    index: sub,
                    flags: KVM_CPUID_FLAG_SIGNIFCANT_INDEX,
                    ..Default::default()
                };
                if cpuid.push(entry).is_err() {
                    log::warn!("no room for CPUID leaf {leaf:#x}.{sub}: the guest may see each vCPU as a package of its own");
                }
            }
        }
    }
    for entry in cpuid.as_mut_slice() {
        match entry.function {
            1 => {
                entry.ecx |= CPUID_1_ECX_HYPERVISOR;
                // EBX[31:24] initial APIC ID, EBX[23:16] logical processors in the package.
                entry.ebx = (entry.ebx & 0x0000_ffff) | (apic_id << 24) | (count << 16);
                if count > 1 {
                    entry.edx |= CPUID_1_EDX_HTT;
                } else {
                    entry.edx &= !CPUID_1_EDX_HTT;
                }
            }
            4 => {
                // EAX[31:26] cores per package - 1; EAX[25:14] threads sharing this cache - 1:
                // L1 and L2 belong to a core, L3 to the package.
                let level = (entry.eax >> 5) & 0x7;
                let sharing = if level >= 3 { count - 1 } else { 0 };
                entry.eax = (entry.eax & 0x3fff) | (sharing << 14) | ((count - 1) << 26);
            }
            0xb | 0x1f => {
                let (shift, processors, kind) = match entry.index {
                    0 => (0, 1, LEVEL_TYPE_SMT),
                    1 => (core_bits, count, LEVEL_TYPE_CORE),
                    _ => (0, 0, 0),
                };
                entry.flags |= KVM_CPUID_FLAG_SIGNIFCANT_INDEX;
                entry.eax = shift;
                entry.ebx = processors;
                entry.ecx = (kind << 8) | entry.index;
                entry.edx = apic_id;
            }
            0x8000_0008 => {
                // ECX[15:12] APIC ID bits for cores, ECX[7:0] cores - 1.
                entry.ecx = (entry.ecx & !0xf0ff) | (core_bits << 12) | (count - 1);
            }
            0x8000_001e => {
                entry.eax = apic_id;
                // EBX[15:8] threads per core - 1 (0), EBX[7:0] core ID.
                entry.ebx = (entry.ebx & !0xffff) | apic_id;
                entry.ecx &= !0xff; // node 0
            }
            _ => {}
        }
    }
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

    fn leaf(function: u32, index: u32, eax: u32, ebx: u32, ecx: u32, edx: u32) -> kvm_cpuid_entry2 {
        kvm_cpuid_entry2 {
            function,
            index,
            eax,
            ebx,
            ecx,
            edx,
            ..Default::default()
        }
    }

    /// A host's leaves as KVM might offer them: 8 threads on 4 cores, APIC ID 7, a shared L3.
    fn host_leaves() -> Vec<kvm_cpuid_entry2> {
        vec![
            leaf(0, 0, 0x16, 0x756e_6547, 0x6c65_746e, 0x4965_6e69),
            leaf(1, 0, 0x000306c3, 0x0708_0800, 0x7ffa_fbff, 0x1fab_fbff),
            leaf(4, 0, 0x1c00_4121, 0, 0, 0), // L1d, 4 cores, 2 threads share it
            leaf(4, 3, 0x1c03_c163, 0, 0, 0), // L3, 8 threads share it
            leaf(0xb, 0, 1, 2, 0x100, 7),
            leaf(0xb, 1, 3, 8, 0x201, 7),
            leaf(0xb, 2, 0, 0, 2, 7),
            leaf(0x8000_0008, 0, 0x3030, 0, 0x7007, 0),
            leaf(0x4000_0000, 0, 0x4000_0001, 0x4b4d_564b, 0x564b_4d56, 0x4d),
        ]
    }

    fn topology(entries: &[kvm_cpuid_entry2], index: u8, count: u8) -> Vec<kvm_cpuid_entry2> {
        let mut cpuid = CpuId::from_entries(entries).unwrap();
        set_topology(&mut cpuid, index, count);
        cpuid.as_slice().to_vec()
    }

    fn find(entries: &[kvm_cpuid_entry2], function: u32, index: u32) -> kvm_cpuid_entry2 {
        *entries
            .iter()
            .find(|e| e.function == function && e.index == index)
            .unwrap()
    }

    #[test]
    fn test_each_vcpu_reports_its_own_apic_id_everywhere() {
        for index in [0u8, 1, 2] {
            let entries = topology(&host_leaves(), index, 3);
            let id = u32::from(index);
            assert_eq!(find(&entries, 1, 0).ebx >> 24, id, "leaf 1 initial APIC ID");
            for sub in 0..3 {
                assert_eq!(find(&entries, 0xb, sub).edx, id, "leaf 0xB x2APIC ID");
            }
            assert_ne!(find(&entries, 1, 0).ecx & CPUID_1_ECX_HYPERVISOR, 0);
        }
    }

    #[test]
    fn test_topology_is_one_package_of_count_single_threaded_cores() {
        let entries = topology(&host_leaves(), 1, 3);
        let l1 = find(&entries, 1, 0);
        assert_eq!((l1.ebx >> 16) & 0xff, 3, "logical processors per package");
        assert_ne!(l1.edx & CPUID_1_EDX_HTT, 0);
        assert_eq!(l1.ebx & 0xffff, 0x0800, "CLFLUSH size and brand index kept");
        let smt = find(&entries, 0xb, 0);
        assert_eq!(
            (smt.eax, smt.ebx, smt.ecx),
            (0, 1, 0x100),
            "SMT: 1 thread per core"
        );
        let core = find(&entries, 0xb, 1);
        // 3 cores need 2 APIC ID bits.
        assert_eq!(
            (core.eax, core.ebx, core.ecx),
            (2, 3, 0x201),
            "core level: 3 cores"
        );
        let end = find(&entries, 0xb, 2);
        assert_eq!(
            (end.ebx, (end.ecx >> 8) & 0xff),
            (0, 0),
            "level 2 ends the list"
        );
        let l1d = find(&entries, 4, 0);
        assert_eq!((l1d.eax >> 26, (l1d.eax >> 14) & 0xfff), (2, 0));
        assert_eq!(l1d.eax & 0x3fff, 0x0121, "cache type and level kept");
        let l3 = find(&entries, 4, 3);
        assert_eq!(
            (l3.eax >> 26, (l3.eax >> 14) & 0xfff),
            (2, 2),
            "all 3 share L3"
        );
        assert_eq!(find(&entries, 0x8000_0008, 0).ecx & 0xf0ff, 0x2002);
        // Leaves topology does not describe pass through untouched.
        assert_eq!(find(&entries, 0x4000_0000, 0), host_leaves()[8]);
    }

    #[test]
    fn test_one_vcpu_is_one_core_without_htt() {
        let entries = topology(&host_leaves(), 0, 1);
        let l1 = find(&entries, 1, 0);
        assert_eq!(l1.ebx >> 16, 1);
        assert_eq!(l1.edx & CPUID_1_EDX_HTT, 0);
        let core = find(&entries, 0xb, 1);
        assert_eq!((core.eax, core.ebx), (0, 1));
    }

    #[test]
    fn test_x2apic_leaves_are_completed_where_the_host_lists_only_an_empty_one() {
        // What KVM offers on a nested host: 0xB and 0x1F as a single all-zero sub-leaf.
        let mut host = host_leaves();
        host.retain(|e| e.function != 0xb);
        host.push(leaf(0xb, 0, 0, 0, 0, 0));
        host.push(leaf(0x1f, 0, 0, 0, 0, 1));
        let entries = topology(&host, 1, 2);
        for function in [0xb, 0x1f] {
            let levels: Vec<(u32, u32, u32, u32)> = (0..3)
                .map(|sub| {
                    let e = find(&entries, function, sub);
                    assert_ne!(e.flags & KVM_CPUID_FLAG_SIGNIFCANT_INDEX, 0);
                    (e.eax, e.ebx, e.ecx, e.edx)
                })
                .collect();
            assert_eq!(
                levels,
                vec![(0, 1, 0x100, 1), (1, 2, 0x201, 1), (0, 0, 2, 1)],
                "leaf {function:#x}: SMT of 1, 2 cores, end; x2APIC ID 1"
            );
        }
        // A CPU whose highest leaf is below 0xB gets none.
        let mut old = host_leaves();
        old.retain(|e| e.function != 0xb);
        old[0].eax = 0xa;
        assert!(topology(&old, 0, 2).iter().all(|e| e.function != 0xb));
    }
}
