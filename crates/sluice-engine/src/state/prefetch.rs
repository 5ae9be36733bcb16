//! A memory prefetch hint: start loading a value's cache lines before it is needed.
//!
//! State updates are dominated by cache misses: each event touches a random key's registers.
//! Issuing the loads for a key a few updates ahead lets them overlap with the work on the keys
//! before it, instead of stalling on each miss in turn.

/// Hints that the first `lines` cache lines of `value` will be read soon.
#[inline(always)]
pub fn prefetch<T>(value: &T, lines: usize) {
    prefetch_ptr((value as *const T).cast(), lines);
}

/// Hints that the `lines` cache lines from `address` on will be read soon. Never faults and
/// changes nothing, whatever the address; a no-op on targets without a prefetch instruction.
#[inline(always)]
#[allow(unsafe_code)]
pub fn prefetch_ptr(address: *const u8, lines: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        let base = address.cast::<i8>();
        for line in 0..lines {
            // SAFETY: a prefetch is only a hint to the cache: it does not dereference the
            // pointer in the language's sense, cannot fault, and writes nothing. SSE, which
            // provides it, is part of the x86_64 baseline.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(base.wrapping_add(line * 64)) }
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (address, lines);
}
