//! Process-wide memory settings applied once at startup, before any thread
//! starts: how the allocator (mimalloc) returns freed memory to the OS.
//! Measured with `dev_setup/bench-cluster.sh memory` (docs/benchmarks.md,
//! optimisations). (Marking the code pages MADV_RANDOM to stop the kernel's
//! fault-around was tried: no effect on kernel 6.18, so not kept.)

/// mimalloc's option number of `purge_delay` in the mimalloc v3 sources built by
/// libmimalloc-sys 0.1.49 (`mi_option_e` in include/mimalloc.h; the Rust
/// bindings have no constant for it).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Applies the settings; `MIMALLOC_PURGE_DELAY` in the environment wins over ours.
pub fn tune() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // Freed pages go back to the OS at once instead of after 1 s (mimalloc v3's
        // default): the collector's steady state frees as much as it allocates, and
        // a second of it kept resident was ~10-25 MiB of RSS.
        // SAFETY: sets a process-wide integer option; mimalloc reads it at each purge.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 0) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_option_set_is_purge_delay() {
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
            return;
        }
        // In mimalloc v3 only purge_delay defaults to 1000 (ms): a libmimalloc-sys
        // update that renumbers the options fails here instead of setting another one.
        // SAFETY: reads and sets a process-wide integer option.
        let before = unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) };
        assert_eq!(before, 1000, "option {MI_OPTION_PURGE_DELAY} is not purge_delay");
        tune();
        assert_eq!(unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) }, 0);
    }
}
