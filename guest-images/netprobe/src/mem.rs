//! The memory functions the compiler calls (a freestanding program has no libc). `rep movsb` and
//! `rep stosb` are simple for the emulator and cannot be turned back into calls to themselves.

/// Copies `n` bytes; regions do not overlap.
///
/// # Safety
/// As C's `memcpy`.
#[no_mangle]
pub unsafe extern "C" fn memcpy(dest: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    // SAFETY: the caller passes valid, non-overlapping regions of `n` bytes; DF is clear.
    unsafe {
        core::arch::asm!("rep movsb", inout("rdi") dest => _, inout("rsi") src => _,
            inout("rcx") n => _, options(nostack, preserves_flags))
    };
    dest
}

/// Copies `n` bytes; regions may overlap.
///
/// # Safety
/// As C's `memmove`.
#[no_mangle]
pub unsafe extern "C" fn memmove(dest: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    if (dest as usize) <= (src as usize) || (dest as usize) >= (src as usize + n) {
        // SAFETY: a forward copy is correct when dest starts before src or past its end.
        return unsafe { memcpy(dest, src, n) };
    }
    // SAFETY: copying backwards (DF set, from the last byte) is correct for dest above src;
    // DF is cleared again before returning, as the ABI requires.
    unsafe {
        core::arch::asm!("std", "rep movsb", "cld",
            inout("rdi") dest.add(n - 1) => _, inout("rsi") src.add(n - 1) => _,
            inout("rcx") n => _, options(nostack))
    };
    dest
}

/// Fills `n` bytes with `c`.
///
/// # Safety
/// As C's `memset`.
#[no_mangle]
pub unsafe extern "C" fn memset(dest: *mut u8, c: i32, n: usize) -> *mut u8 {
    // SAFETY: the caller passes a valid region of `n` bytes; DF is clear.
    unsafe {
        core::arch::asm!("rep stosb", inout("rdi") dest => _, inout("rcx") n => _,
            in("al") c as u8, options(nostack, preserves_flags))
    };
    dest
}

/// Compares `n` bytes.
///
/// # Safety
/// As C's `memcmp`.
#[no_mangle]
pub unsafe extern "C" fn memcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    let mut i = 0;
    while i < n {
        // SAFETY: the caller passes two readable regions of `n` bytes; volatile reads keep the
        // compiler from turning this loop into a call to memcmp.
        let (x, y) = unsafe { (a.add(i).read_volatile(), b.add(i).read_volatile()) };
        if x != y {
            return i32::from(x) - i32::from(y);
        }
        i += 1;
    }
    0
}

/// Compares `n` bytes for equality only.
///
/// # Safety
/// As C's `bcmp`.
#[no_mangle]
pub unsafe extern "C" fn bcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    // SAFETY: same contract as memcmp.
    unsafe { memcmp(a, b, n) }
}
