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

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sha2::{Digest, Sha256};

/// Shared between the source (reads) and the ack tracker (writes).
pub type SharedSeen = Arc<Mutex<SeenSet>>;

#[derive(Debug, Clone)]
pub struct SeenSet {
    map: HashMap<u64, u32>,
    ttl: u32,
    max: usize,
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

impl SeenSet {
    pub fn new(ttl: Duration, max: usize) -> Self {
        Self {
            map: HashMap::new(),
            ttl: ttl.as_secs().min(u32::MAX as u64) as u32,
            max: max.max(1),
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
        self.map.contains_key(&key(uid, rv))
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
        self.map.retain(|_, at| now.saturating_sub(*at) <= ttl);
        if self.map.len() > max {
            let mut times: Vec<u32> = self.map.values().copied().collect();
            let cut_index = times.len() - max;
            let (_, cut, _) = times.select_nth_unstable(cut_index);
            let cut = *cut;
            // Ties at the cut may keep a few more; the next trim takes them.
            self.map.retain(|_, at| *at >= cut);
            if self.map.len() > max {
                let mut n = self.map.len() - max;
                self.map.retain(|_, at| {
                    if n > 0 && *at == cut {
                        n -= 1;
                        false
                    } else {
                        true
                    }
                });
            }
        }
    }

    /// The newest `max` live entries as bytes: 12 per entry (hash LE, time LE).
    pub fn encode(&self, max: usize) -> Vec<u8> {
        let mut copy = self.clone();
        copy.trim(now_secs(), max);
        let mut out = Vec::with_capacity(copy.map.len() * 12);
        for (k, at) in &copy.map {
            out.extend_from_slice(&k.to_le_bytes());
            out.extend_from_slice(&at.to_le_bytes());
        }
        out
    }

    /// Adds the entries of [`encode`](Self::encode)'s output; trailing partial bytes are ignored.
    pub fn decode_into(&mut self, bytes: &[u8]) {
        for c in bytes.chunks_exact(12) {
            let mut k = [0u8; 8];
            k.copy_from_slice(&c[..8]);
            let mut t = [0u8; 4];
            t.copy_from_slice(&c[8..]);
            let (k, at) = (u64::from_le_bytes(k), u32::from_le_bytes(t));
            let e = self.map.entry(k).or_insert(at);
            *e = (*e).max(at);
        }
        self.trim(now_secs(), self.max);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
