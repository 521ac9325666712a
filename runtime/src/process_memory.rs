//! Process-wide memory settings: how the allocator (mimalloc) returns freed
//! memory to the OS (set at startup, and tightened while a watch lists: see
//! [`ListBurst`]), and how the kernel treats the binary's mapped code pages.
//! Each one was measured with `dev_setup/bench-cluster.sh` (docs/benchmarks.md,
//! memory optimisations).

use std::sync::Mutex;

/// mimalloc's option number of `purge_delay` in the mimalloc v3 sources built by
/// libmimalloc-sys 0.1.49 (`mi_option_e` in include/mimalloc.h; the Rust
/// bindings have no constant for it).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// How long freed memory stays with the allocator before it goes back to the OS.
const PURGE_DELAY_MS: std::os::raw::c_long = 100;

/// The same while a list runs: at once.
const LIST_PURGE_DELAY_MS: std::os::raw::c_long = 0;

/// The lists running now, and whether the purge delay is ours to change
/// (not set by `MIMALLOC_PURGE_DELAY`).
#[derive(Debug, Default)]
struct Lists {
    running: usize,
    ours: bool,
}

impl Lists {
    /// A list starts: the purge delay to set, if it changes.
    fn start(&mut self) -> Option<std::os::raw::c_long> {
        self.running += 1;
        (self.running == 1 && self.ours).then_some(LIST_PURGE_DELAY_MS)
    }

    /// A list ends: the purge delay to set, if it changes.
    fn end(&mut self) -> Option<std::os::raw::c_long> {
        self.running = self.running.saturating_sub(1);
        (self.running == 0 && self.ours).then_some(PURGE_DELAY_MS)
    }
}

static LISTS: Mutex<Lists> = Mutex::new(Lists {
    running: 0,
    ours: false,
});

fn set_purge_delay(ms: std::os::raw::c_long) {
    // SAFETY: sets a process-wide integer option; mimalloc reads it at each purge.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, ms) };
}

/// Held by a watch while it lists (the start-up catch-up, a relist): freed
/// memory goes back to the OS at once until the last list running ends.
///
/// A list is the collector's allocation burst: pages of 500 objects read,
/// decoded and passed on as fast as the API server serves them (11,000
/// events/s here), so the 100 ms of freed memory mimalloc would keep are
/// ~18 MiB, the difference between the catch-up's peak RSS and the watch's
/// (65 → 47 MiB for a 100k-event backlog). Returning it at once costs CPU
/// (madvise calls, page faults: ~5 µs per listed event), which a list,
/// bound by the API server's speed, can spare; the watch that follows, where
/// CPU matters more than the little it frees, keeps the 100 ms.
pub struct ListBurst(());

impl ListBurst {
    pub fn start() -> Self {
        if let Some(ms) = LISTS.lock().unwrap_or_else(|p| p.into_inner()).start() {
            set_purge_delay(ms);
        }
        ListBurst(())
    }
}

impl Drop for ListBurst {
    fn drop(&mut self) {
        if let Some(ms) = LISTS.lock().unwrap_or_else(|p| p.into_inner()).end() {
            set_purge_delay(ms);
        }
    }
}

/// Applies the settings; `MIMALLOC_PURGE_DELAY` in the environment wins over ours.
pub fn tune() {
    tune_allocator(&mut LISTS.lock().unwrap_or_else(|p| p.into_inner()));
    random_access_code_pages();
}

/// The purge delay, under the lock [`ListBurst`] takes.
fn tune_allocator(lists: &mut Lists) {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        lists.ours = true;
        // Freed pages go back to the OS after 100 ms instead of 1 s (mimalloc v3's
        // default): the collector's steady state frees as much as it allocates, and
        // a second of it kept resident was ~10-25 MiB of RSS. 0 (at once) kept no
        // less resident at full load, but cost ~2 µs of CPU per event (madvise
        // calls and page faults): docs/benchmarks.md, optimisations.
        set_purge_delay(PURGE_DELAY_MS);
    }
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
    fn the_purge_delay_is_zero_while_any_list_runs() {
        let mut l = Lists { running: 0, ours: true };
        assert_eq!(l.start(), Some(LIST_PURGE_DELAY_MS));
        assert_eq!(l.start(), None, "already at the list's delay");
        assert_eq!(l.end(), None, "the other list still runs");
        assert_eq!(l.end(), Some(PURGE_DELAY_MS));
        // Left alone when MIMALLOC_PURGE_DELAY set it.
        let mut l = Lists::default();
        assert_eq!((l.start(), l.end()), (None, None));
    }

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
        // The lock keeps the watch tests' lists from changing it meanwhile.
        let mut lists = LISTS.lock().unwrap();
        let before = unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) };
        assert_eq!(before, 1000, "option {MI_OPTION_PURGE_DELAY} is not purge_delay");
        tune_allocator(&mut lists);
        assert!(lists.ours);
        assert_eq!(
            unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) },
            PURGE_DELAY_MS
        );
        lists.ours = false;
    }
}
