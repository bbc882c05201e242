//! Turning a descriptor chain into the guest memory it describes — the one check both
//! directions share. Every descriptor must point the right way (device-readable for TX,
//! device-writable for RX) and lie wholly inside guest RAM; otherwise the chain is malformed.

use std::ops::Deref;

use virtio_queue::DescriptorChain;
use vm_memory::{GuestMemoryBackend, GuestMemoryMmap, VolatileSlice};

/// Which way the device uses a chain's buffers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Access {
    /// The device reads them (TX).
    Read,
    /// The device writes them (RX).
    Write,
}

/// The chain's buffers as guest memory slices and their total length, or `None` when any
/// descriptor points the wrong way or outside guest RAM.
pub(crate) fn chain_buffers<'m, M>(
    chain: DescriptorChain<M>,
    mem: &'m GuestMemoryMmap,
    access: Access,
) -> Option<(Vec<VolatileSlice<'m>>, usize)>
where
    M: Deref,
    M::Target: vm_memory::GuestMemory,
{
    let mut slices = Vec::with_capacity(4);
    let mut total = 0usize;
    let mut malformed = false;
    // Walk the whole chain even after a bad descriptor, so the caller can complete it.
    for desc in chain {
        let direction_ok = desc.is_write_only() == (access == Access::Write);
        match direction_ok
            .then(|| mem.get_slice(desc.addr(), desc.len() as usize).ok())
            .flatten()
        {
            Some(slice) => {
                total += slice.len();
                slices.push(slice);
            }
            None => malformed = true,
        }
    }
    (!malformed).then_some((slices, total))
}
