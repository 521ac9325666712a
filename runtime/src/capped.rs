//! Keeps a hash table that is held under a cap by `retain` at its size: see
//! [`make_room`]. Used by the per-event tables (the repeat tracker, the
//! seen-set) so that their memory stays flat once they reach their caps.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash};

/// Call before inserting into a table that `retain` keeps under a cap.
///
/// `retain` leaves tombstones, and the table counts them against its free
/// room. Once none is left, the next insert of a new key rebuilds the table,
/// and when more than half of it is live (as in a table at its cap) it
/// doubles it, for good: memory steps up (4-7 MiB for the 200,000-entry
/// defaults) although the number of entries did not grow. Rebuilding here at
/// the size the live entries need drops the tombstones instead. A table that
/// is really full (no tombstones) grows as it would have.
pub fn make_room<K: Eq + Hash, V, S: BuildHasher + Clone>(map: &mut HashMap<K, V, S>) {
    if map.len() < map.capacity() {
        return;
    }
    let mut fresh = HashMap::with_capacity_and_hasher(map.len() + 1, map.hasher().clone());
    fresh.extend(map.drain());
    *map = fresh;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The churn of a capped table: insert new keys, and drop the oldest
    /// tenth with `retain` whenever the cap is passed.
    fn churn(rebuild: bool) -> usize {
        let cap = 1000u64;
        let mut map: HashMap<u64, u64> = HashMap::with_capacity(cap as usize);
        let mut most = 0;
        for k in 0..200_000u64 {
            if rebuild {
                make_room(&mut map);
            }
            map.insert(k, k);
            if map.len() as u64 > cap {
                let cut = k - cap * 9 / 10;
                map.retain(|_, v| *v > cut);
            }
            most = most.max(map.capacity());
        }
        assert!(map.len() as u64 <= cap + 1);
        most
    }

    #[test]
    fn a_capped_table_keeps_its_size_under_churn() {
        // 1,000 entries need 2,048 slots (room for 1,792); without the
        // rebuild the tombstones make the table double to 4,096 slots.
        assert!(churn(false) > 1792, "the behaviour this guards against");
        assert!(churn(true) <= 1792, "{}", churn(true));
    }

    #[test]
    fn a_full_table_without_tombstones_grows() {
        let mut map: HashMap<u32, ()> = HashMap::with_capacity(3);
        let room = map.capacity();
        for k in 0..=room as u32 {
            make_room(&mut map);
            map.insert(k, ());
        }
        assert_eq!(map.len(), room + 1);
        assert!(map.capacity() > room);
    }
}
