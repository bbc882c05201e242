//! x86-64 specifics: the guest memory layout, the e820 map, page tables, the GDT, the MP table,
//! the ACPI tables and the register state a vCPU starts with.

pub mod acpi;
pub mod cpu;
pub mod e820;
pub mod gdt;
pub mod layout;
pub mod mptable;
pub mod paging;
