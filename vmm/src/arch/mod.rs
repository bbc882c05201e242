//! x86-64 specifics: the guest memory layout, the e820 map, page tables, the GDT and the
//! register state a vCPU starts with.

pub mod cpu;
pub mod e820;
pub mod gdt;
pub mod layout;
pub mod paging;
