//! The seen-set: which (uid, resourceVersion) pairs every exporter already
//! acknowledged, so a relist (after 410 Gone, or on a fresh start with a
//! checkpoint) passes on only what is new.
//!
//! An entry is a stable 64-bit hash of the pair (SHA-256, truncated: the same
//! in every process and version) and when it was acknowledged (Unix seconds).
//! Entries live at least `ttl` (the API server's event TTL); past `max`
//! entries the oldest go first. Losing an entry can only cause a duplicate,
//! never a loss; a hash collision (about 1 in 10^9 at 200 000 entries) could
//! skip one event.
//!
//! Beside it, per uid, the occurrence count last passed on and acknowledged
//! (`counts`), so that after a restart the source still tells a count that
//! went up (a new occurrence: `count_delta` from the saved count) from a
//! re-delivery, as it would have without the restart. It holds at most a
//! quarter of `max` uids, the most recently acknowledged; a uid evicted early
//! is treated as new (its full count is its delta), as before this existed.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::capped::CappedTable;

/// Shared between the source (reads) and the ack tracker (writes).
pub type SharedSeen = Arc<Mutex<SeenSet>>;

/// Which live entries are the newest `max`: every one newer than `cut`, and
/// `ties` of those at `cut`.
struct Selection {
    now: u32,
    ttl: u32,
    cut: u32,
    ties: usize,
}

impl Selection {
    /// Of entries with these acknowledgement times.
    fn of(times: impl Iterator<Item = u32> + Clone, now: u32, ttl: u32, max: usize) -> Selection {
        let live = move |at: &u32| now.saturating_sub(*at) <= ttl;
        // Everything live: a cut below any time, with every entry at it kept.
        let every_live = Selection {
            now,
            ttl,
            cut: 0,
            ties: usize::MAX,
        };
        let count = times.clone().filter(live).count();
        if count <= max {
            return every_live;
        }
        // The oldest time kept, found without a copy of the times.
        let Some(kth) = crate::select::kth_smallest(times.filter(live), count - max) else {
            return every_live;
        };
        let newer = count - kth.below - kth.equal;
        Selection {
            now,
            ttl,
            cut: kth.value,
            ties: max - newer,
        }
    }

    /// Whether the entry acknowledged at `at` is one of them (call once per entry).
    fn keeps(&mut self, at: u32) -> bool {
        self.now.saturating_sub(at) <= self.ttl
            && (at > self.cut
                || (at == self.cut && self.ties > 0 && {
                    self.ties -= 1;
                    true
                }))
    }
}

#[derive(Debug, Clone)]
pub struct SeenSet {
    map: CappedTable<u32>,
    ttl: u32,
    max: usize,
    /// By [`uid_key`]: (count, saturated at u32 as the API's int32 is; when acknowledged).
    counts: CappedTable<(u32, u32)>,
}

/// A stable 64-bit key of a uid (FNV-1a: the same in every process and version;
/// shared with the source's repeat tracker, which the saved counts seed).
pub fn uid_key(uid: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in uid.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// The key of a (uid, resourceVersion) pair.
pub fn key(uid: &str, rv: &str) -> u64 {
    let mut h = Sha256::new();
    h.update(uid.as_bytes());
    h.update([0u8]);
    h.update(rv.as_bytes());
    let d = h.finalize();
    let mut b = [0u8; 8];
    b.copy_from_slice(&d[..8]);
    u64::from_le_bytes(b)
}

fn now_secs() -> u32 {
    chrono::Utc::now().timestamp().clamp(0, u32::MAX as i64) as u32
}

fn sat(count: u64) -> u32 {
    count.min(u32::MAX as u64) as u32
}

impl SeenSet {
    pub fn new(ttl: Duration, max: usize) -> Self {
        let max = max.max(1);
        let counts_max = (max / 4).max(1);
        Self {
            // Both are trimmed once a tenth past their cap.
            map: CappedTable::new(max + max / 10 + 1),
            ttl: ttl.as_secs().min(u32::MAX as u64) as u32,
            max,
            counts: CappedTable::new(counts_max + counts_max / 10 + 1),
        }
    }

    /// The most uids whose counts are kept.
    fn counts_max(&self) -> usize {
        (self.max / 4).max(1)
    }

    /// Records the occurrence count passed on for `uid` (the highest one wins).
    pub fn insert_count(&mut self, uid: &str, count: u64) {
        let now = now_secs();
        let count = sat(count);
        let e = self.counts.get_or_insert(uid_key(uid), (count, now));
        *e = (e.0.max(count), now);
        let max = self.counts_max();
        if self.counts.len() > max + max / 10 {
            self.trim_counts(now, max);
        }
    }

    /// The count recorded for `uid`.
    pub fn count(&self, uid: &str) -> Option<u64> {
        self.counts.get(uid_key(uid)).map(|(c, _)| u64::from(*c))
    }

    /// Every recorded (uid key, count), to seed the source's repeat tracker.
    pub fn counts(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.counts.iter().map(|(k, (c, _))| (k, u64::from(*c)))
    }

    /// Which counts are the newest `max` live ones.
    fn counts_selection(&self, now: u32, max: usize) -> Selection {
        Selection::of(self.counts.values().map(|(_, at)| *at), now, self.ttl, max)
    }

    /// Keeps the newest `max` live counts, in place.
    fn trim_counts(&mut self, now: u32, max: usize) {
        let mut sel = self.counts_selection(now, max);
        self.counts.retain(|_, (_, at)| sel.keeps(*at));
    }

    /// The newest live counts as bytes: 16 per uid (key LE, count LE as u32, saturated; time LE).
    pub fn encode_counts(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.counts.len().min(self.counts_max()) * 16);
        // Writing into a Vec cannot fail.
        let _ = self.write_counts(&mut out);
        out
    }

    /// Writes what [`encode_counts`](Self::encode_counts) returns; returns how many counts.
    pub fn write_counts(&self, w: &mut impl std::io::Write) -> std::io::Result<usize> {
        let mut sel = self.counts_selection(now_secs(), self.counts_max());
        let mut n = 0;
        for (k, (count, at)) in self.counts.iter() {
            if sel.keeps(*at) {
                let mut e = [0u8; 16];
                e[..8].copy_from_slice(&k.to_le_bytes());
                e[8..12].copy_from_slice(&count.to_le_bytes());
                e[12..].copy_from_slice(&at.to_le_bytes());
                w.write_all(&e)?;
                n += 1;
            }
        }
        Ok(n)
    }

    /// Adds the counts of [`encode_counts`](Self::encode_counts)'s output; trailing partial bytes are ignored.
    pub fn decode_counts_into(&mut self, bytes: &[u8]) {
        self.add_encoded_counts(bytes);
        self.trim_counts(now_secs(), self.counts_max());
    }

    /// [`decode_counts_into`](Self::decode_counts_into) without the trim.
    pub fn add_encoded_counts(&mut self, bytes: &[u8]) {
        for c in bytes.chunks_exact(16) {
            let k = u64::from_le_bytes(c[..8].try_into().unwrap_or_default());
            let count = u32::from_le_bytes(c[8..12].try_into().unwrap_or_default());
            let at = u32::from_le_bytes(c[12..].try_into().unwrap_or_default());
            let e = self.counts.get_or_insert(k, (count, at));
            *e = (e.0.max(count), e.1.max(at));
            // Bounded while loading too.
            let max = self.counts_max();
            if self.counts.len() > max + max / 10 {
                self.trim_counts(now_secs(), max);
            }
        }
    }

    pub fn shared(self) -> SharedSeen {
        Arc::new(Mutex::new(self))
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    pub fn contains(&self, uid: &str, rv: &str) -> bool {
        self.map.contains_key(key(uid, rv))
    }

    /// Records an acknowledged pair now.
    pub fn insert(&mut self, uid: &str, rv: &str) {
        self.insert_at(key(uid, rv), now_secs());
    }

    fn insert_at(&mut self, k: u64, at: u32) {
        self.map.insert(k, at);
        // Amortized: trim a tenth past the cap at once.
        if self.map.len() > self.max + self.max / 10 {
            self.trim(now_secs(), self.max);
        }
    }

    /// Drops entries older than the TTL, then the oldest until at most `max` are left.
    pub fn trim(&mut self, now: u32, max: usize) {
        let ttl = self.ttl;
        let mut sel = Selection::of(self.map.values().copied(), now, ttl, max);
        self.map.retain(|_, at| sel.keeps(*at));
    }

    /// The newest `max` live entries as bytes: 12 per entry (hash LE, time LE).
    pub fn encode(&self, max: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.map.len().min(max) * 12);
        // Writing into a Vec cannot fail.
        let _ = self.write_entries(&mut out, max);
        out
    }

    /// Writes the newest `max` live entries, 12 bytes each (hash LE, time LE),
    /// straight from the set (no copy of it); returns how many.
    pub fn write_entries(&self, w: &mut impl std::io::Write, max: usize) -> std::io::Result<usize> {
        let mut sel = Selection::of(self.map.values().copied(), now_secs(), self.ttl, max);
        let mut n = 0;
        for (k, at) in self.map.iter() {
            if sel.keeps(*at) {
                let mut e = [0u8; 12];
                e[..8].copy_from_slice(&k.to_le_bytes());
                e[8..].copy_from_slice(&at.to_le_bytes());
                w.write_all(&e)?;
                n += 1;
            }
        }
        Ok(n)
    }

    /// Adds the entries of [`encode`](Self::encode)'s output; trailing partial bytes are ignored.
    pub fn decode_into(&mut self, bytes: &[u8]) {
        self.add_encoded(bytes);
        self.trim(now_secs(), self.max);
    }

    /// [`decode_into`](Self::decode_into) without the trim: for reading a file in pieces (then [`trim_now`](Self::trim_now)).
    pub fn add_encoded(&mut self, bytes: &[u8]) {
        for c in bytes.chunks_exact(12) {
            let mut k = [0u8; 8];
            k.copy_from_slice(&c[..8]);
            let mut t = [0u8; 4];
            t.copy_from_slice(&c[8..]);
            let (k, at) = (u64::from_le_bytes(k), u32::from_le_bytes(t));
            let e = self.map.get_or_insert(k, at);
            *e = (*e).max(at);
            // Bounded while loading too.
            if self.map.len() > self.max + self.max / 10 {
                self.trim(now_secs(), self.max);
            }
        }
    }

    /// Applies the TTL and the caps now (after [`add_encoded`](Self::add_encoded) and [`add_encoded_counts`](Self::add_encoded_counts)).
    pub fn trim_now(&mut self) {
        self.trim(now_secs(), self.max);
        self.trim_counts(now_secs(), self.counts_max());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_its_cap_the_table_keeps_its_size() {
        // Trimmed at 2,200 entries to 2,000: never more slots than 2,201
        // entries need at three quarters full.
        let mut s = SeenSet::new(Duration::from_secs(3600), 2000);
        let mut most = 0;
        for i in 0..100_000 {
            s.insert(&format!("uid-{i}"), "1");
            most = most.max(s.map.slots());
        }
        assert!(s.len() <= 2200);
        assert!(most <= 2201 * 4 / 3 + 1, "the table grew to {most} slots");
    }

    #[test]
    fn keys_are_stable_and_distinct() {
        assert_eq!(key("a", "1"), key("a", "1"));
        assert_ne!(key("a", "1"), key("a", "2"));
        // The separator keeps ("ab","1") and ("a","b1") apart.
        assert_ne!(key("ab", "1"), key("a", "b1"));
    }

    #[test]
    fn round_trip_and_contains() {
        let mut s = SeenSet::new(Duration::from_secs(3600), 100);
        s.insert("u1", "10");
        s.insert("u2", "11");
        let bytes = s.encode(100);
        assert_eq!(bytes.len(), 24);
        let mut t = SeenSet::new(Duration::from_secs(3600), 100);
        t.decode_into(&bytes);
        assert!(t.contains("u1", "10") && t.contains("u2", "11"));
        assert!(!t.contains("u1", "11"));
    }

    #[test]
    fn counts_round_trip_keep_the_highest_and_are_bounded() {
        let mut s = SeenSet::new(Duration::from_secs(3600), 40);
        s.insert_count("a", 3);
        s.insert_count("a", 2);
        s.insert_count("b", 1);
        assert_eq!((s.count("a"), s.count("b"), s.count("c")), (Some(3), Some(1), None));
        let mut t = SeenSet::new(Duration::from_secs(3600), 40);
        t.decode_counts_into(&s.encode_counts());
        assert_eq!((t.count("a"), t.count("b")), (Some(3), Some(1)));
        assert_eq!(uid_key("a"), 0xaf63_dc4c_8601_ec8c, "FNV-1a: stable across versions");
        let mut keys: Vec<(u64, u64)> = t.counts().collect();
        keys.sort();
        assert_eq!(keys.len(), 2);
        for i in 0..100 {
            s.insert_count(&format!("u{i}"), 1);
            assert!(s.counts.len() <= 11, "a quarter of max, amortized: {}", s.counts.len());
        }
        assert_eq!(s.encode_counts().len(), 10 * 16);
    }

    #[test]
    fn ttl_and_cap() {
        let mut s = SeenSet::new(Duration::from_secs(100), 1000);
        let now = now_secs();
        s.insert_at(key("old", "1"), now - 500);
        s.insert_at(key("new", "1"), now);
        s.trim(now, 1000);
        assert!(!s.contains("old", "1") && s.contains("new", "1"));
        // Past the cap the oldest go first.
        let mut s = SeenSet::new(Duration::from_secs(100_000), 10);
        for i in 0..50u32 {
            s.insert_at(key("u", &i.to_string()), now - 1000 + i);
            assert!(s.len() <= 11, "bounded: {}", s.len());
        }
        s.trim(now, 10);
        assert_eq!(s.len(), 10);
        assert!(s.contains("u", "49") && s.contains("u", "40") && !s.contains("u", "39"));
        // encode keeps the newest `max`.
        let mut t = SeenSet::new(Duration::from_secs(100_000), 10);
        t.decode_into(&s.encode(3));
        assert_eq!(t.len(), 3);
        assert!(t.contains("u", "49") && !t.contains("u", "46"));
    }
}
