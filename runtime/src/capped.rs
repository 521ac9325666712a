//! The hash table behind the per-event tables (the repeat tracker, the
//! seen-set): `u64` keys that are already hashes, small `Copy` values, held
//! under a cap by [`retain`](CappedTable::retain) that works in place.
//!
//! Why not `HashMap`: `retain` leaves tombstones there, and once they use up
//! its free room the next insert rebuilds the table into a new allocation
//! while the old one is still alive. At a 200,000-entry cap that was a
//! 4-7 MiB step in resident memory every ~30,000 events, the collector's
//! highest peaks. Here a removal shifts the entries after it back (linear
//! probing, no tombstones), `retain` re-places the survivors in the same
//! arrays, and the table grows (by doubling) only until it has room for the
//! most entries its owner will keep, then never again. Keys and values live
//! in two arrays, so an entry costs its key plus its value, with no padding
//! and no control byte.
//!
//! Growing never holds two whole tables: the new arrays are not written
//! before an entry lands in them (the keys are zeroed memory, the values
//! uninitialized), the entries move over in slot order, which is also the
//! order they land in (the home slot is monotone in the mixed key), and the
//! old arrays' pages go back to the OS behind the move. At the repeat
//! tracker's default cap that was +2.6 MiB for a moment, the high-water mark
//! of a 100k-event catch-up.

use std::mem::MaybeUninit;

/// Probing stays short: a table is at most three quarters full.
const LOAD_NUM: usize = 3;
const LOAD_DEN: usize = 4;

/// Slots a table starts with (grown by doubling).
const MIN_SLOTS: usize = 1024;

/// While growing, the old arrays' pages are given back every this many slots
/// (arrays smaller than that are freed whole at the end).
const RELEASE_EVERY: usize = 16 * 1024;

/// A hash table of `u64` keys (the key is used as its own hash, mixed) with
/// `Copy` values. Key 0 marks an empty slot, so its entry is kept aside.
#[derive(Clone)]
pub struct CappedTable<V: Copy> {
    keys: Vec<u64>,
    /// Invariant: `vals[i]` is initialized wherever `keys[i] != 0`.
    vals: Box<[MaybeUninit<V>]>,
    /// Entries in the slots (key 0 not counted).
    len: usize,
    /// The value of key 0.
    zero: Option<V>,
    /// The slots needed to hold `most` entries: the table does not grow past it
    /// unless its owner goes past `most`.
    full_slots: usize,
}

impl<V: Copy> std::fmt::Debug for CappedTable<V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CappedTable")
            .field("len", &self.len())
            .field("slots", &self.keys.len())
            .finish()
    }
}

fn slots_for(entries: usize) -> usize {
    entries.saturating_mul(LOAD_DEN) / LOAD_NUM + 1
}

impl<V: Copy> CappedTable<V> {
    /// A table whose owner keeps at most `most` entries: it is never resized
    /// once it has room for them.
    pub fn new(most: usize) -> Self {
        let full_slots = slots_for(most.max(1));
        let slots = full_slots.min(MIN_SLOTS);
        Self {
            keys: vec![0; slots],
            vals: Box::new_uninit_slice(slots),
            len: 0,
            zero: None,
            full_slots,
        }
    }

    pub fn len(&self) -> usize {
        self.len + usize::from(self.zero.is_some())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The slots allocated (for tests of the bound).
    pub fn slots(&self) -> usize {
        self.keys.len()
    }

    /// The slot `key` wants: a multiplicative mix, then its high bits scaled
    /// to the table (no power-of-two size needed).
    fn home(&self, key: u64) -> usize {
        let h = key.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        ((u128::from(h) * self.keys.len() as u128) >> 64) as usize
    }

    fn next(&self, i: usize) -> usize {
        if i + 1 == self.keys.len() { 0 } else { i + 1 }
    }

    /// The value in slot `i`, which holds an entry.
    fn val(&self, i: usize) -> &V {
        debug_assert_ne!(self.keys[i], 0);
        // SAFETY: slot i holds an entry (keys[i] != 0), so its value was written (the invariant).
        unsafe { self.vals[i].assume_init_ref() }
    }

    fn val_mut(&mut self, i: usize) -> &mut V {
        debug_assert_ne!(self.keys[i], 0);
        // SAFETY: as in `val`.
        unsafe { self.vals[i].assume_init_mut() }
    }

    /// Puts an entry in slot `i` (which `find` gave for `key`).
    fn put(&mut self, i: usize, key: u64, value: V) {
        self.keys[i] = key;
        self.vals[i] = MaybeUninit::new(value);
    }

    /// The slot holding `key`, or the empty slot where it would go.
    fn find(&self, key: u64) -> (usize, bool) {
        let mut i = self.home(key);
        loop {
            let k = self.keys[i];
            if k == key {
                return (i, true);
            }
            if k == 0 {
                return (i, false);
            }
            i = self.next(i);
        }
    }

    pub fn get(&self, key: u64) -> Option<&V> {
        if key == 0 {
            return self.zero.as_ref();
        }
        match self.find(key) {
            (i, true) => Some(self.val(i)),
            _ => None,
        }
    }

    pub fn contains_key(&self, key: u64) -> bool {
        self.get(key).is_some()
    }

    /// The value of `key`, inserting `fresh` first when it is absent.
    pub fn get_or_insert(&mut self, key: u64, fresh: V) -> &mut V {
        if key == 0 {
            return self.zero.get_or_insert(fresh);
        }
        let (mut i, found) = self.find(key);
        if !found {
            if self.grow_for_one() {
                i = self.find(key).0;
            }
            self.put(i, key, fresh);
            self.len += 1;
        }
        self.val_mut(i)
    }

    /// Sets `key` to `value`; returns the value it had.
    pub fn insert(&mut self, key: u64, value: V) -> Option<V> {
        if key == 0 {
            return self.zero.replace(value);
        }
        let (i, found) = self.find(key);
        if found {
            return Some(std::mem::replace(self.val_mut(i), value));
        }
        let i = if self.grow_for_one() { self.find(key).0 } else { i };
        self.put(i, key, value);
        self.len += 1;
        None
    }

    /// Removes `key`; returns its value.
    pub fn remove(&mut self, key: u64) -> Option<V> {
        if key == 0 {
            return self.zero.take();
        }
        let (mut hole, found) = self.find(key);
        if !found {
            return None;
        }
        let old = *self.val(hole);
        self.keys[hole] = 0;
        self.len -= 1;
        // Shift back every entry after the hole that may not live past it.
        let mut j = hole;
        loop {
            j = self.next(j);
            let k = self.keys[j];
            if k == 0 {
                break;
            }
            let h = self.home(k);
            // It stays when its home lies cyclically in (hole, j].
            let stays = if hole <= j {
                hole < h && h <= j
            } else {
                hole < h || h <= j
            };
            if !stays {
                // Moves the entry's value with it (initialized: keys[j] != 0).
                self.keys[hole] = k;
                self.vals[hole] = self.vals[j];
                self.keys[j] = 0;
                hole = j;
            }
        }
        Some(old)
    }

    /// Keeps the entries for which `keep` holds, in place: no allocation.
    pub fn retain(&mut self, mut keep: impl FnMut(u64, &mut V) -> bool) {
        if let Some(v) = self.zero.as_mut()
            && !keep(0, v)
        {
            self.zero = None;
        }
        let n = self.keys.len();
        // Start after a slot that is empty now: no entry's probe path crosses
        // it, so each entry's home comes before it in this order, and an entry
        // put back lands between its home and where it was.
        let Some(start) = self.keys.iter().position(|&k| k == 0) else {
            return;
        };
        let mut i = start;
        for _ in 1..n {
            i = self.next(i);
            let k = self.keys[i];
            if k == 0 {
                continue;
            }
            let mut v = *self.val(i);
            self.keys[i] = 0;
            if keep(k, &mut v) {
                let (to, _) = self.find(k);
                self.put(to, k, v);
            } else {
                self.len -= 1;
            }
        }
    }

    /// Every entry, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (u64, &V)> + Clone + '_ {
        let zero = self.zero.as_ref().map(|v| (0, v));
        self.keys
            .iter()
            .enumerate()
            .filter(|(_, k)| **k != 0)
            .map(|(i, k)| (*k, self.val(i)))
            .chain(zero)
    }

    pub fn values(&self) -> impl Iterator<Item = &V> + Clone + '_ {
        self.iter().map(|(_, v)| v)
    }

    /// Makes room for one more entry: doubles the slots (up to the size that
    /// holds the owner's `most`) when one more would pass the load limit.
    /// Returns whether the table was resized.
    fn grow_for_one(&mut self) -> bool {
        let n = self.keys.len();
        if (self.len + 1) * LOAD_DEN <= n * LOAD_NUM {
            return false;
        }
        let to = if n < self.full_slots {
            if n * 2 * LOAD_DEN >= self.full_slots * LOAD_NUM {
                // Straight to the full size when doubling comes within a
                // quarter of it: the short step after it would hold a
                // near-full table and the full one at once (+6 MiB at the
                // repeat tracker's default cap).
                self.full_slots
            } else {
                n * 2
            }
        } else {
            // The owner keeps more than it said: grow as a HashMap would.
            n * 2
        };
        // Zeroed keys are fresh pages from the OS at these sizes, and the
        // values are not written: nothing of the new table is resident yet.
        let mut keys = std::mem::replace(&mut self.keys, vec![0; to]);
        let mut vals = std::mem::replace(&mut self.vals, Box::new_uninit_slice(to));
        let mut released = 0;
        for i in 0..keys.len() {
            let k = keys[i];
            if k != 0 {
                let (j, _) = self.find(k);
                // Moves the value (initialized: keys[i] != 0).
                self.keys[j] = k;
                self.vals[j] = vals[i];
            }
            if (i + 1) % RELEASE_EVERY == 0 {
                release_pages(&mut keys[released..=i]);
                release_pages(&mut vals[released..=i]);
                released = i + 1;
            }
        }
        true
    }
}

/// Gives the whole pages inside `slots` back to the OS (`MADV_DONTNEED`):
/// they read as zeros afterwards, which the caller no longer reads. The
/// allocators' large blocks are private anonymous memory, where that is all
/// the advice does; a failure only leaves the pages resident.
fn release_pages<T: Copy>(slots: &mut [T]) {
    #[cfg(target_os = "linux")]
    {
        const PAGE: usize = 4096;
        let start = slots.as_mut_ptr() as usize;
        let end = start + std::mem::size_of_val(slots);
        let (from, to) = (start.next_multiple_of(PAGE), end / PAGE * PAGE);
        if to > from {
            // SAFETY: [from, to) lies inside `slots`, which the caller holds
            // exclusively (&mut) and will not read again; T is Copy (no drop).
            unsafe {
                libc::madvise(from as *mut libc::c_void, to - from, libc::MADV_DONTNEED);
            }
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = slots;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// Keys that collide a lot in a small table, zero included.
    fn keys(n: u64) -> impl Iterator<Item = u64> {
        (0..n).map(|i| i.wrapping_mul(0x2545_f491_4f6c_dd1d) >> (i % 5 * 13))
    }

    #[test]
    fn behaves_like_a_hash_map_under_random_operations() {
        let mut t: CappedTable<u32> = CappedTable::new(500);
        let mut m: HashMap<u64, u32> = HashMap::new();
        let pool: Vec<u64> = keys(700).collect();
        let mut x: u64 = 0x1234_5678;
        for step in 0..200_000u32 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let k = pool[(x % pool.len() as u64) as usize];
            match x >> 60 {
                0..=5 => assert_eq!(t.insert(k, step), m.insert(k, step), "insert {k}"),
                6..=9 => assert_eq!(t.remove(k), m.remove(&k), "remove {k}"),
                10..=12 => {
                    *t.get_or_insert(k, step) += 1;
                    *m.entry(k).or_insert(step) += 1;
                }
                13 if step % 64 == 0 => {
                    let cut = step / 2;
                    t.retain(|k, v| (*v > cut) ^ (k % 3 == 0));
                    m.retain(|k, v| (*v > cut) ^ (k % 3 == 0));
                }
                _ => assert_eq!(t.get(k), m.get(&k), "get {k}"),
            }
            assert_eq!(t.len(), m.len());
        }
        let mut a: Vec<(u64, u32)> = t.iter().map(|(k, v)| (k, *v)).collect();
        let mut b: Vec<(u64, u32)> = m.into_iter().collect();
        a.sort_unstable();
        b.sort_unstable();
        assert_eq!(a, b);
    }

    #[test]
    fn retain_keeps_every_survivor_findable() {
        let mut t: CappedTable<u64> = CappedTable::new(3000);
        for k in keys(3000) {
            t.insert(k, k);
        }
        t.retain(|k, _| k % 7 != 0);
        for k in keys(3000) {
            assert_eq!(t.get(k).copied(), (k % 7 != 0).then_some(k), "{k}");
        }
    }

    /// The churn of a capped table: insert new keys, and drop the oldest
    /// tenth with `retain` whenever the cap is passed.
    #[test]
    fn at_its_cap_the_table_never_grows_again() {
        let cap = 1000u64;
        let mut t: CappedTable<u64> = CappedTable::new(cap as usize + 1);
        let mut sizes = std::collections::BTreeSet::new();
        for k in 1..200_000u64 {
            t.insert(k, k);
            if t.len() as u64 > cap {
                let cut = k - cap * 9 / 10;
                t.retain(|_, v| *v > cut);
            }
            sizes.insert(t.slots());
        }
        assert!(t.len() as u64 <= cap + 1);
        // 1,024 slots, then the size that holds 1,001 entries at three quarters.
        assert_eq!(sizes.into_iter().collect::<Vec<_>>(), vec![1024, slots_for(1001)]);
    }

    #[test]
    fn the_last_step_goes_straight_to_the_full_size() {
        // At the repeat tracker's default cap: 131,072 slots, then the full
        // 266,668 at once, not 262,144 and a short step to 266,668 later.
        let mut t: CappedTable<u64> = CappedTable::new(200_001);
        let mut sizes = vec![t.slots()];
        for k in 1..=200_001u64 {
            t.insert(k, k);
            if sizes.last() != Some(&t.slots()) {
                sizes.push(t.slots());
            }
        }
        let full = slots_for(200_001);
        assert_eq!(sizes.last(), Some(&full));
        assert!(sizes.windows(2).all(|w| w[1] >= w[0] * 2), "{sizes:?}");
    }

    #[test]
    fn growing_past_the_release_step_keeps_every_entry() {
        // Large enough that growth gives the old arrays' pages back as it goes.
        let n = 300_000u64;
        let mut t = CappedTable::<(u32, u64)>::new(n as usize);
        let key = |i: u64| i.wrapping_mul(0x2545_f491_4f6c_dd1d) | 1;
        for i in 0..n {
            assert_eq!(t.insert(key(i), (i as u32, i)), None);
        }
        assert!(t.slots() > 4 * RELEASE_EVERY);
        assert_eq!(t.len(), n as usize);
        for i in 0..n {
            assert_eq!(t.get(key(i)), Some(&(i as u32, i)), "entry {i}");
        }
        assert_eq!(t.iter().count(), n as usize);
        assert_eq!(t.values().map(|v| v.1).sum::<u64>(), n * (n - 1) / 2);
    }

    #[test]
    fn an_owner_past_its_most_still_gets_room() {
        let mut t: CappedTable<()> = CappedTable::new(10);
        for k in 1..=5000u64 {
            t.insert(k, ());
        }
        assert_eq!(t.len(), 5000);
        assert!((1..=5000).all(|k| t.contains_key(k)));
    }
}
