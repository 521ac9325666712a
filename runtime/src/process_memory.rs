//! Process-wide memory settings applied once at startup, before any thread
//! starts: how the allocator (mimalloc) returns freed memory to the OS, and
//! how the kernel treats the binary's mapped code pages. Each one was measured
//! with `dev_setup/bench-cluster.sh memory` (docs/benchmarks.md, optimisations).

/// mimalloc's option number of `purge_delay` in the mimalloc v3 sources built by
/// libmimalloc-sys 0.1.49 (`mi_option_e` in include/mimalloc.h; the Rust
/// bindings have no constant for it).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// How long freed memory stays with the allocator before it goes back to the OS.
const PURGE_DELAY_MS: std::os::raw::c_long = 100;

/// Applies the settings; `MIMALLOC_PURGE_DELAY` in the environment wins over ours.
pub fn tune() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // Freed pages go back to the OS after 100 ms instead of 1 s (mimalloc v3's
        // default): the collector's steady state frees as much as it allocates, and
        // a second of it kept resident was ~10-25 MiB of RSS. 0 (at once) kept no
        // less resident at full load, but cost ~2 µs of CPU per event (madvise
        // calls and page faults): docs/benchmarks.md, optimisations.
        // SAFETY: sets a process-wide integer option; mimalloc reads it at each purge.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, PURGE_DELAY_MS) };
    }
    random_access_code_pages();
}

/// Marks the file-backed mappings (the binary and its shared libraries) as
/// randomly accessed (MADV_RANDOM). The binary is large (wasmtime, kube,
/// rdkafka) and most of it never runs, but each code-page fault maps the
/// pages around it too. The advice does not stop that (kernel 6.18), but the
/// kernel's page aging then skips these mappings, so when it reclaims memory
/// the mapped-but-unused pages go: measured 13.7 → 6.9 MiB of resident code
/// and read-only data on a machine with page-cache pressure; no change
/// without it. Failures are ignored: this only changes what stays resident.
fn random_access_code_pages() {
    let Ok(maps) = std::fs::read_to_string("/proc/self/maps") else {
        return;
    };
    for (start, end) in file_mappings(&maps) {
        // SAFETY: an advice on mappings of this process, which stay valid; it changes no content.
        unsafe {
            libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_RANDOM);
        }
    }
}

/// The (start, end) of every mapping of a file in `/proc/self/maps` text.
fn file_mappings(maps: &str) -> Vec<(usize, usize)> {
    maps.lines()
        .filter_map(|line| {
            let mut parts = line.split_whitespace();
            let range = parts.next()?;
            let path = parts.nth(4)?;
            if !path.starts_with('/') {
                return None;
            }
            let (a, b) = range.split_once('-')?;
            let (a, b) = (usize::from_str_radix(a, 16).ok()?, usize::from_str_radix(b, 16).ok()?);
            (b > a).then_some((a, b))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_mappings_of_proc_maps() {
        let maps = "\
55d0c0000000-55d0c0100000 r--p 00000000 08:01 123 /usr/bin/event-collector
55d0c0100000-55d0c1000000 r-xp 00100000 08:01 123 /usr/bin/event-collector
7f0000000000-7f0000021000 rw-p 00000000 00:00 0
7ffd00000000-7ffd00021000 rw-p 00000000 00:00 0 [stack]
7f1000000000-7f1000002000 r-xp 00000000 08:01 9 /usr/lib/x86_64-linux-gnu/libc.so.6
";
        assert_eq!(
            file_mappings(maps),
            vec![
                (0x55d0_c000_0000, 0x55d0_c010_0000),
                (0x55d0_c010_0000, 0x55d0_c100_0000),
                (0x7f10_0000_0000, 0x7f10_0000_2000)
            ]
        );
        // The real one parses, and holds at least this test binary.
        let real = std::fs::read_to_string("/proc/self/maps").unwrap();
        assert!(!file_mappings(&real).is_empty());
    }

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
        assert_eq!(
            unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) },
            PURGE_DELAY_MS
        );
    }
}
