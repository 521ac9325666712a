//! Remembers, per event uid, the count and resourceVersion last passed on, so
//! the source can tell a new occurrence (count went up) from a re-delivery
//! (relist, the other API's view, a metadata-only update).
//!
//! This is not an object cache: an entry is 20 bytes (a 64-bit hash of the
//! uid, a 32-bit hash of the resourceVersion, the count saturated at u32, when
//! it was last seen) in a [`CappedTable`], capped at a configured size, with
//! entries older than the event TTL evicted first, then the least recently
//! seen. The resourceVersion hash only tells a re-delivery of the very same
//! object from a metadata-only update: a count that went up is a new
//! occurrence whatever the hash says, so a collision (1 in 2^32) can at worst
//! hide one metadata-only update, never an occurrence.
//!
//! uids are keyed with the stable [`uid_key`], so that the counts saved with
//! the checkpoint (acknowledged ones only: see `state::seen`) can
//! [`seed`](RepeatTracker::seed) it after a restart: an event re-delivered
//! after a restart is then judged as it would have been without the restart.

use std::time::Instant;

use crate::capped::CappedTable;

use crate::state::seen::uid_key;

/// The resourceVersion hash of a seeded entry (no resourceVersion is known;
/// [`rv_hash`] never gives it).
const SEEDED_RV: u32 = 0;

/// 12 bytes: with its 8-byte key a table slot is 20.
#[derive(Debug, Clone, Copy, Default)]
struct Entry {
    rv: u32,
    /// Saturated at u32::MAX (the API's count is an int32).
    count: u32,
    /// Seconds since the tracker started, when last seen (for the TTL and the eviction order).
    seen: u32,
}

fn sat(count: u64) -> u32 {
    count.min(u32::MAX as u64) as u32
}

/// A 32-bit hash of a resourceVersion, never [`SEEDED_RV`].
fn rv_hash(rv: &str) -> u32 {
    ((uid_key(rv) >> 32) as u32).max(1)
}

/// What the tracker makes of one observation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Never seen (or forgotten).
    New,
    /// Seen with a lower count: `prev` occurrences were passed on already.
    Repeat { prev: u64 },
    /// Same count, other resourceVersion: a metadata-only update.
    Unchanged { prev: u64 },
    /// Same uid and resourceVersion: the very same object again.
    Duplicate,
}

pub struct RepeatTracker {
    map: CappedTable<Entry>,
    cap: usize,
    ttl_secs: u32,
    start: Instant,
}

impl RepeatTracker {
    pub fn new(cap: usize, ttl: std::time::Duration) -> Self {
        Self {
            // Eviction runs once the cap is passed by one.
            map: CappedTable::new(cap.max(1) + 1),
            cap: cap.max(1),
            ttl_secs: ttl.as_secs().min(u32::MAX as u64) as u32,
            start: Instant::now(),
        }
    }

    /// Remembers that `count` occurrences of the uid with key `key` were
    /// passed on before a restart (its resourceVersion is not known: the
    /// seen-set catches the very same object again). An entry already there
    /// keeps the higher count.
    pub fn seed(&mut self, key: u64, count: u64) {
        let fresh = Entry {
            count: sat(count),
            rv: SEEDED_RV,
            seen: self.now(),
        };
        let e = self.map.get_or_insert(key, fresh);
        e.count = e.count.max(sat(count));
        if self.map.len() > self.cap {
            self.evict();
        }
    }

    fn now(&self) -> u32 {
        self.start.elapsed().as_secs().min(u32::MAX as u64) as u32
    }

    /// Records an observation of `uid` at `rv` with `count` occurrences and
    /// says what it is.
    pub fn observe(&mut self, uid: &str, rv: &str, count: u64) -> Verdict {
        self.judge(uid_key(uid), rv_hash(rv), sat(count))
    }

    /// [`observe`](Self::observe) by hashes.
    fn judge(&mut self, key: u64, rv: u32, count: u32) -> Verdict {
        let seen = self.now();
        let fresh = Entry { count, rv, seen };
        let verdict = match self.map.insert(key, fresh) {
            None => Verdict::New,
            // The very same object again (a count that went up is news whatever the hash says).
            Some(old) if old.rv == rv && count <= old.count => Verdict::Duplicate,
            Some(old) if count > old.count => Verdict::Repeat {
                prev: u64::from(old.count),
            },
            Some(old) => {
                // Keep the highest count seen, so a stale view cannot re-add occurrences.
                if old.count > count {
                    self.map.insert(
                        key,
                        Entry {
                            count: old.count,
                            ..fresh
                        },
                    );
                }
                Verdict::Unchanged {
                    prev: u64::from(old.count),
                }
            }
        };
        if self.map.len() > self.cap {
            self.evict();
        }
        verdict
    }

    /// Forgets a uid (the event was deleted).
    pub fn forget(&mut self, uid: &str) {
        self.map.remove(uid_key(uid));
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Drops entries older than the TTL; if that is not enough, the tenth
    /// seen longest ago. Amortized: runs only when the cap is passed.
    fn evict(&mut self) {
        let now = self.now();
        let ttl = self.ttl_secs;
        self.map.retain(|_, e| now.saturating_sub(e.seen) < ttl);
        if self.map.len() > self.cap {
            let k = self.map.len() / 10;
            // The cut, found without a copy of the times.
            let Some(kth) = crate::select::kth_smallest(self.map.values().map(|e| e.seen), k) else {
                return;
            };
            let cut = kth.value;
            // Every entry older than the cut goes, and of those at the cut as many as make a tenth
            // (within one second, which of them is arbitrary).
            let mut ties = (k + 1).saturating_sub(kth.below);
            self.map.retain(|_, e| {
                e.seen > cut
                    || (e.seen == cut
                        && if ties > 0 {
                            ties -= 1;
                            false
                        } else {
                            true
                        })
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn at_its_cap_the_table_keeps_its_size() {
        // A stream of new uids with evictions must not make the table grow
        // past the slots 2,001 entries need at three quarters full.
        let mut t = RepeatTracker::new(2000, Duration::from_secs(3600));
        let mut most = 0;
        for i in 0..100_000 {
            t.observe(&format!("uid-{i}"), "1", 1);
            most = most.max(t.map.slots());
        }
        assert!(t.len() <= 2000);
        assert!(most <= 2001 * 4 / 3 + 1, "the table grew to {most} slots");
    }

    #[test]
    fn verdicts() {
        let mut t = RepeatTracker::new(100, Duration::from_secs(3600));
        assert_eq!(t.observe("a", "1", 1), Verdict::New);
        assert_eq!(t.observe("a", "1", 1), Verdict::Duplicate);
        assert_eq!(t.observe("a", "2", 3), Verdict::Repeat { prev: 1 });
        assert_eq!(t.observe("a", "3", 3), Verdict::Unchanged { prev: 3 });
        // A stale view with a lower count does not lower the remembered count.
        assert_eq!(t.observe("a", "4", 2), Verdict::Unchanged { prev: 3 });
        assert_eq!(t.observe("a", "5", 4), Verdict::Repeat { prev: 3 });
        t.forget("a");
        assert_eq!(t.observe("a", "6", 4), Verdict::New);
    }

    #[test]
    fn a_colliding_resource_version_hash_never_hides_an_occurrence() {
        let mut t = RepeatTracker::new(100, Duration::from_secs(3600));
        let key = uid_key("a");
        assert_eq!(t.judge(key, 7, 1), Verdict::New);
        // Another resourceVersion with the same 32-bit hash and a higher count: a new occurrence.
        assert_eq!(t.judge(key, 7, 2), Verdict::Repeat { prev: 1 });
        // With the same count it passes for the same object (at worst a metadata-only update is hidden).
        assert_eq!(t.judge(key, 7, 2), Verdict::Duplicate);
        assert_eq!(t.judge(key, 8, 2), Verdict::Unchanged { prev: 2 });
        assert_ne!(rv_hash("0"), SEEDED_RV);
    }

    #[test]
    fn seeded_counts_judge_a_redelivery_as_without_a_restart() {
        // Before the restart: passed on with count 3 (acknowledged, saved).
        let mut before = RepeatTracker::new(100, Duration::from_secs(3600));
        before.observe("a", "1", 3);
        let without_restart = before.observe("a", "2", 5);
        assert_eq!(without_restart, Verdict::Repeat { prev: 3 });
        // After the restart, seeded with the saved count: the same verdict.
        let mut after = RepeatTracker::new(100, Duration::from_secs(3600));
        after.seed(uid_key("a"), 3);
        assert_eq!(after.observe("a", "2", 5), without_restart);
        // A metadata-only update at the saved count is unchanged, as before.
        let mut after = RepeatTracker::new(100, Duration::from_secs(3600));
        after.seed(uid_key("a"), 3);
        assert_eq!(after.observe("a", "9", 3), Verdict::Unchanged { prev: 3 });
        // A seed never lowers what this run saw.
        after.seed(uid_key("a"), 1);
        assert_eq!(after.observe("a", "10", 3), Verdict::Unchanged { prev: 3 });
    }

    #[test]
    fn bounded() {
        let mut t = RepeatTracker::new(1000, Duration::from_secs(3600));
        for i in 0..10_000 {
            t.observe(&format!("uid-{i}"), "1", 1);
            assert!(t.len() <= 1000);
        }
        assert!(t.len() >= 900, "eviction keeps most entries: {}", t.len());
    }
}
