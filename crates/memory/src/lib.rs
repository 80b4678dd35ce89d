//! The allocator of the server and the load generator, set up for bursts of answers.
//!
//! A message into a room of 2,000 members is answered to 2,000 parked syncs at once, and every
//! answer allocates. mimalloc's per-thread heaps spend far less time in the allocator than the
//! system one there, but two of its defaults cost the bursts dearly in the 80,000-client
//! benchmark (BENCHMARKS.md):
//!
//! - it gives freed memory back to the system after one second, and the next burst, seconds
//!   later, faults it in again;
//! - with transparent huge pages each such fault zeroes a whole 2 MiB page, however little of it
//!   is used (`clear_page_erms` under `do_huge_pmd_anonymous_page` took a fifth of the first
//!   burst's server time).
//!
//! [`tune`] keeps freed memory for 10 s and turns huge pages off for the process. The
//! environment variables `MIMALLOC_PURGE_DELAY` and `MIMALLOC_ALLOW_THP` still override both.

pub use mimalloc::MiMalloc;

use libmimalloc_sys::{mi_option_set, mi_option_t};
use std::os::raw::c_long;

/// How long freed memory stays with the process before it goes back to the system.
pub const PURGE_DELAY_MS: c_long = 10_000;

/// mimalloc's `mi_option_purge_delay`.
const MI_OPTION_PURGE_DELAY: mi_option_t = 15;
/// mimalloc's `mi_option_allow_thp`.
const MI_OPTION_ALLOW_THP: mi_option_t = 43;

/// Sets the allocator up; call first thing in `main`, before any other thread runs.
pub fn tune() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: sets a plain integer option, before other threads exist.
        unsafe { mi_option_set(MI_OPTION_PURGE_DELAY, PURGE_DELAY_MS) };
    }
    if std::env::var_os("MIMALLOC_ALLOW_THP").is_none() {
        // mimalloc reads this option when the process starts, before `main`: the process-wide
        // switch is set here directly, and the option only tells mimalloc that it is off.
        #[cfg(target_os = "linux")]
        // SAFETY: PR_SET_THP_DISABLE takes integer arguments only.
        unsafe {
            libc::prctl(libc::PR_SET_THP_DISABLE, 1 as libc::c_ulong, 0, 0, 0);
        }
        // SAFETY: as above.
        unsafe { mi_option_set(MI_OPTION_ALLOW_THP, 0) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use libmimalloc_sys::mi_option_get;

    /// The option indexes are mimalloc's: untouched, they hold its defaults (one second, huge
    /// pages allowed), and after `tune` what it set.
    #[test]
    fn the_options_set_are_the_purge_delay_and_huge_pages() {
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some()
            || std::env::var_os("MIMALLOC_ALLOW_THP").is_some()
        {
            return;
        }
        // SAFETY: reads and sets plain integer options.
        unsafe {
            assert_eq!(mi_option_get(MI_OPTION_PURGE_DELAY), 1_000);
            assert_eq!(mi_option_get(MI_OPTION_ALLOW_THP), 1);
            tune();
            assert_eq!(mi_option_get(MI_OPTION_PURGE_DELAY), PURGE_DELAY_MS);
            assert_eq!(mi_option_get(MI_OPTION_ALLOW_THP), 0);
        }
        #[cfg(target_os = "linux")]
        // SAFETY: PR_GET_THP_DISABLE takes no further arguments.
        unsafe {
            assert_eq!(libc::prctl(libc::PR_GET_THP_DISABLE, 0, 0, 0, 0), 1);
        }
    }
}
