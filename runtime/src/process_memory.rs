//! Process-wide memory settings: how the allocator (mimalloc) returns freed
//! memory to the OS (set at startup; at once while a watch lists, see
//! [`ListBurst`], and while the event rate is low, see [`count_events`]), and
//! how the kernel treats the binary's mapped code pages.
//! Each one was measured with `dev_setup/bench-cluster.sh` (docs/benchmarks.md,
//! memory optimisations).

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// mimalloc's option number of `purge_delay` in the mimalloc v3 sources built by
/// libmimalloc-sys 0.1.49 (`mi_option_e` in include/mimalloc.h; the Rust
/// bindings have no constant for it).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// How long freed memory stays with the allocator before it goes back to the OS.
const PURGE_DELAY_MS: std::os::raw::c_long = 100;

/// The same while a list runs, or while events come slowly: at once.
const LIST_PURGE_DELAY_MS: std::os::raw::c_long = 0;

/// Below this many events/s the pipeline is quiet: freed memory goes back at
/// once (~2 µs of CPU per event, 1% of a core at this rate)...
const QUIET_BELOW_PER_SEC: u64 = 5_000;
/// ...until the rate passes this (the gap keeps it from flapping).
const BUSY_ABOVE_PER_SEC: u64 = 10_000;
/// How often the event rate is looked at.
const RATE_INTERVAL: Duration = Duration::from_millis(250);
/// Intervals in a row below [`QUIET_BELOW_PER_SEC`] before the rate counts as
/// low (a start-up with no events yet, then a replay at full speed, is not quiet).
const QUIET_AFTER: u8 = 2;

/// What decides the purge delay: the lists running now, whether the event
/// rate is low, and whether the delay is ours to change (not set by
/// `MIMALLOC_PURGE_DELAY`).
#[derive(Debug, Default)]
struct Lists {
    running: usize,
    ours: bool,
    /// The event rate is below [`QUIET_BELOW_PER_SEC`] (until it passes [`BUSY_ABOVE_PER_SEC`]).
    quiet: bool,
    /// Intervals in a row below [`QUIET_BELOW_PER_SEC`].
    low: u8,
}

impl Lists {
    fn delay(&self) -> std::os::raw::c_long {
        if self.running > 0 || self.quiet {
            LIST_PURGE_DELAY_MS
        } else {
            PURGE_DELAY_MS
        }
    }

    /// Applies `change`: the purge delay to set, if it changes and is ours.
    fn update(&mut self, change: impl FnOnce(&mut Self)) -> Option<std::os::raw::c_long> {
        let before = self.delay();
        change(self);
        let after = self.delay();
        (self.ours && after != before).then_some(after)
    }

    /// A list starts: the purge delay to set, if it changes.
    fn start(&mut self) -> Option<std::os::raw::c_long> {
        self.update(|l| l.running += 1)
    }

    /// A list ends: the purge delay to set, if it changes.
    fn end(&mut self) -> Option<std::os::raw::c_long> {
        self.update(|l| l.running = l.running.saturating_sub(1))
    }

    /// The event rate over the last interval: the purge delay to set, if it changes.
    fn rate(&mut self, per_sec: u64) -> Option<std::os::raw::c_long> {
        self.update(|l| {
            if per_sec < QUIET_BELOW_PER_SEC {
                l.low = l.low.saturating_add(1);
                l.quiet |= l.low >= QUIET_AFTER;
            } else {
                l.low = 0;
                if per_sec > BUSY_ABOVE_PER_SEC {
                    l.quiet = false;
                }
            }
        })
    }
}

static LISTS: Mutex<Lists> = Mutex::new(Lists {
    running: 0,
    ours: false,
    quiet: false,
    low: 0,
});

/// Events taken by the pipeline since start (for the rate).
static EVENTS: AtomicU64 = AtomicU64::new(0);

/// Counts `n` events taken by the pipeline (one relaxed add per batch).
///
/// While fewer than 5,000 events/s come (for 500 ms in a row: a watch of a
/// live cluster, almost always), freed memory goes back to the OS at once,
/// as during a list: the 100 ms mimalloc would keep is memory for nothing at
/// that rate (steady RSS of a 200k-event stream at ~600 events/s: 41.2 →
/// 38.8 MiB), and the CPU it costs, ~2 µs per event, is ~1% of a core at
/// most. Above 10,000 events/s (a catch-up, a replay, a burst) the 100 ms
/// delay comes back.
pub fn count_events(n: usize) {
    EVENTS.fetch_add(n as u64, Ordering::Relaxed);
}

/// The thread that turns [`EVENTS`] into a rate every [`RATE_INTERVAL`].
fn follow_event_rate() {
    let spawned = std::thread::Builder::new()
        .name("alloc-rate".into())
        .stack_size(64 << 10)
        .spawn(|| {
            let mut last = EVENTS.load(Ordering::Relaxed);
            loop {
                std::thread::sleep(RATE_INTERVAL);
                let now = EVENTS.load(Ordering::Relaxed);
                let per_sec = (now - last) * 1000 / RATE_INTERVAL.as_millis().max(1) as u64;
                last = now;
                if let Some(ms) = LISTS.lock().unwrap_or_else(|p| p.into_inner()).rate(per_sec) {
                    set_purge_delay(ms);
                }
            }
        });
    // Without the thread the delay stays at 100 ms outside lists: only memory is lost.
    drop(spawned);
}

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
        // Start-up's code (config, kubeconfig, TLS set-up) has run by now.
        release_code_pages();
        ListBurst(())
    }

    /// A page of the list was read, on the thread that read it: that
    /// thread's heap gives back its pages that are free now (the earlier
    /// pages' events, freed by the stages downstream) and the arenas purge at
    /// once. Without it, freed pages wait in the heap for reuse or retirement:
    /// ~2.5 MiB more at a 100k-event list's peak (docs/benchmarks.md, memory
    /// optimisation 18). It costs well under 1% of a list's time.
    pub fn page_read(&self) {
        collect_heap();
    }
}

/// Collects the calling thread's mimalloc heap and purges the arenas now.
fn collect_heap() {
    #[cfg(not(feature = "system-alloc"))]
    // SAFETY: collects the calling thread's mimalloc heap; no pointers passed.
    unsafe {
        libmimalloc_sys::mi_collect(true)
    };
}

impl Drop for ListBurst {
    fn drop(&mut self) {
        if let Some(ms) = LISTS.lock().unwrap_or_else(|p| p.into_inner()).end() {
            set_purge_delay(ms);
        }
        // The list's own code is not needed by the watch that follows.
        release_code_pages();
    }
}

/// Unmaps this process's pages of the code it has run: the executable file
/// mappings (the binary's and the shared libraries'), with MADV_DONTNEED,
/// which for pages never written drops only the page-table entries. Code
/// that ran once (start-up, a list) stops counting in RSS; code that runs
/// again faults back in from the page cache (minor faults; the watch's code
/// is ~3.5 MiB, ~60 faults of 64 KiB). A mapping with a written page (a
/// debugger's breakpoint) is left alone. Returns the bytes advised.
pub fn release_code_pages() -> usize {
    let Ok(smaps) = std::fs::read_to_string("/proc/self/smaps") else {
        return 0;
    };
    let mut advised = 0;
    for (start, end) in unwritten_code_mappings(&smaps) {
        // SAFETY: the range is an executable, file-backed, never-written mapping of
        // this process (checked in its smaps entry just now): dropping its pages
        // loses nothing, they are read again from the file on their next use.
        if unsafe { libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_DONTNEED) } == 0 {
            advised += end - start;
        }
    }
    advised
}

/// The `r-xp` file mappings of a `/proc/<pid>/smaps` text with no anonymous
/// (written) page.
fn unwritten_code_mappings(smaps: &str) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    // The mapping being read, while it qualifies so far.
    let mut current: Option<(usize, usize)> = None;
    for line in smaps.lines() {
        let mut parts = line.split_whitespace();
        let Some(first) = parts.next() else { continue };
        if let Some((a, b)) = first.split_once('-')
            && let (Ok(a), Ok(b)) = (usize::from_str_radix(a, 16), usize::from_str_radix(b, 16))
        {
            let perms = parts.next();
            let path = parts.nth(3);
            let code = perms == Some("r-xp") && path.is_some_and(|p| p.starts_with('/'));
            current = (code && b > a).then_some((a, b));
        } else if first == "Anonymous:"
            && let Some(range) = current.take()
            && parts.next() == Some("0")
        {
            out.push(range);
        }
    }
    out
}

/// Applies the settings; `MIMALLOC_PURGE_DELAY` in the environment wins over ours.
pub fn tune() {
    let ours = {
        let mut lists = LISTS.lock().unwrap_or_else(|p| p.into_inner());
        tune_allocator(&mut lists);
        lists.ours
    };
    if ours {
        follow_event_rate();
    }
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
        let mut l = Lists {
            running: 0,
            ours: true,
            ..Lists::default()
        };
        assert_eq!(l.start(), Some(LIST_PURGE_DELAY_MS));
        assert_eq!(l.start(), None, "already at the list's delay");
        assert_eq!(l.end(), None, "the other list still runs");
        assert_eq!(l.end(), Some(PURGE_DELAY_MS));
        // Left alone when MIMALLOC_PURGE_DELAY set it.
        let mut l = Lists::default();
        assert_eq!((l.start(), l.end()), (None, None));
    }

    #[test]
    fn the_purge_delay_is_zero_while_events_come_slowly() {
        let mut l = Lists {
            running: 0,
            ours: true,
            ..Lists::default()
        };
        assert_eq!(l.rate(0), None, "one low interval (a start-up) is not quiet yet");
        assert_eq!(l.rate(50_000), None, "busy: 100 ms already");
        assert_eq!(l.rate(800), None);
        assert_eq!(l.rate(800), Some(LIST_PURGE_DELAY_MS), "two low intervals in a row");
        assert_eq!(l.rate(7_000), None, "between the two marks: stays quiet");
        assert_eq!(l.rate(12_000), Some(PURGE_DELAY_MS));
        assert_eq!(l.rate(7_000), None, "between the two marks: stays busy");
        // A list while quiet changes nothing; the list's end leaves it quiet.
        assert_eq!((l.rate(0), l.rate(0)), (None, Some(LIST_PURGE_DELAY_MS)));
        assert_eq!((l.start(), l.end()), (None, None));
        // A list while busy: at once during it, 100 ms after it.
        assert_eq!(l.rate(20_000), Some(PURGE_DELAY_MS));
        assert_eq!(l.start(), Some(LIST_PURGE_DELAY_MS));
        assert_eq!((l.rate(0), l.rate(0)), (None, None), "the list already set it");
        assert_eq!(l.end(), None, "quiet now: stays at once");
        // Left alone when MIMALLOC_PURGE_DELAY set it.
        let mut l = Lists::default();
        assert_eq!((l.rate(0), l.rate(0), l.rate(50_000)), (None, None, None));
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
    fn code_mappings_with_no_written_page() {
        let smaps = "\
55d0c0000000-55d0c0100000 r--p 00000000 08:01 123 /usr/bin/event-collector
Rss:                 400 kB
Anonymous:             0 kB
55d0c0100000-55d0c1000000 r-xp 00100000 08:01 123 /usr/bin/event-collector
Rss:                3400 kB
Anonymous:             0 kB
55d0c1000000-55d0c1100000 r-xp 01000000 08:01 123 /usr/bin/event-collector
Rss:                  16 kB
Anonymous:             4 kB
7f0000000000-7f0000021000 r-xp 00000000 00:00 0
Anonymous:             0 kB
7f1000000000-7f1000002000 r-xp 00000000 08:01 9 /usr/lib/x86_64-linux-gnu/libc.so.6
Anonymous:             0 kB
VmFlags: rd ex mr mw me
";
        assert_eq!(
            unwritten_code_mappings(smaps),
            vec![
                (0x55d0_c010_0000, 0x55d0_c100_0000),
                (0x7f10_0000_0000, 0x7f10_0000_2000)
            ],
            "code only, file-backed only, none with a written (breakpoint) page"
        );
    }

    #[test]
    fn released_code_runs_again() {
        fn code_rss_kb() -> u64 {
            let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
            let ranges = unwritten_code_mappings(&smaps);
            let mut in_code = false;
            let mut kb = 0;
            for line in smaps.lines() {
                if let Some((a, _)) = line.split_once('-')
                    && let Ok(a) = usize::from_str_radix(a, 16)
                    && line.contains(' ')
                {
                    in_code = ranges.iter().any(|r| r.0 == a);
                } else if in_code && let Some(v) = line.strip_prefix("Rss:") {
                    kb += v.trim().trim_end_matches(" kB").parse::<u64>().unwrap();
                }
            }
            kb
        }
        let before = code_rss_kb();
        assert!(release_code_pages() > 0, "this test binary has code mappings");
        // Reading smaps runs code again (it faults back in); still far less than before.
        let after = code_rss_kb();
        assert!(after < before, "resident code {before} kB → {after} kB");
        // And everything still runs: the code comes back from the file.
        assert_eq!(format!("{:?}", vec![1, 2, 3]), "[1, 2, 3]");
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
