//! The memory allocator: mimalloc, told to keep freed memory.
//!
//! Measured on the 1M-event benchmark: the system allocator returns freed batches to the kernel
//! and faults them back in (about 2.5 s of CPU); mimalloc on transparent huge pages cuts TLB
//! misses on the randomly accessed state (1.35 s user against 1.55 s on 4 KiB pages), but by
//! default it purges freed huge pages after a delay and faults them in again, which costs up to
//! 17% of a run in the kernel's page clearing. With purging off, memory freed by one batch is
//! reused by the next; peak memory is unchanged.

use libmimalloc_sys::{mi_option_set, mi_option_t, mi_option_use_numa_nodes};

/// mimalloc's `mi_option_purge_delay`, the entry before `mi_option_use_numa_nodes` in its
/// option enum (the crate does not export it; `purge_delay_option_is_the_purge_delay` checks it).
const MI_OPTION_PURGE_DELAY: mi_option_t = mi_option_use_numa_nodes - 1;

/// The global allocator.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Turns off purging of freed memory. Call once, first thing in `main`.
#[allow(unsafe_code)]
pub fn keep_freed_memory() {
    // SAFETY: `mi_option_set` only stores an integer option; it takes no pointers and may be
    // called at any time. -1 means "never purge".
    unsafe { mi_option_set(MI_OPTION_PURGE_DELAY, -1) }
}

/// Turns transparent huge pages off for this process (`prctl(PR_SET_THP_DISABLE)`), for
/// `sluice serve`: a fault on a fresh huge page zeroes 2 MiB and may compact memory first, a
/// stall of several milliseconds that a request then waits for. Measured at 20,000
/// single-event requests per second: p99 4.8 ms with huge pages, 0.17 ms without. Batch runs
/// keep them (fewer TLB misses, see above). Returns whether the kernel accepted it.
#[allow(unsafe_code)]
pub fn no_huge_pages() -> bool {
    // SAFETY: PR_SET_THP_DISABLE takes integer arguments only and changes a flag of this
    // process; it touches no memory of ours.
    unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) == 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The current purge delay in milliseconds.
    #[allow(unsafe_code)]
    fn purge_delay() -> std::os::raw::c_long {
        // SAFETY: reads an integer option; no pointers involved.
        unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) }
    }

    #[test]
    fn purge_delay_option_is_the_purge_delay() {
        // mimalloc v3's default purge delay is 1000 ms; no neighbouring option has that value.
        assert_eq!(
            purge_delay(),
            1000,
            "the option index does not name purge_delay any more"
        );
        keep_freed_memory();
        assert_eq!(purge_delay(), -1);
    }
}
