//! The k-th smallest of many `u32` values (acknowledgement or last-seen
//! times) without copying them: a radix select in three passes over the
//! values, with one 8 KiB histogram on the stack.
//!
//! The capped tables (the seen-set, its counts, the repeat tracker) trim
//! their oldest entries when they pass their caps. Selecting the cut by
//! collecting every time into a vector cost ~0.9 MB for a moment at each
//! trim of a 200,000-entry table, every ~20,000 new events: spikes of the
//! stream's RSS (docs/benchmarks.md, memory optimisation 21).

/// Bits of each pass's digit, from the most significant: 11 + 11 + 10 = 32.
const DIGITS: [(u32, u32); 3] = [(21, 11), (10, 11), (0, 10)];

/// The k-th smallest value and how many values are below it and equal to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Kth {
    pub value: u32,
    /// Values strictly smaller.
    pub below: usize,
    /// Values equal to `value` (at least one).
    pub equal: usize,
}

/// The `k`-th smallest (from 0) of `values`, or None if there are not more
/// than `k` of them. `values` is iterated three times and must yield the
/// same values each time.
pub fn kth_smallest<I>(values: I, k: usize) -> Option<Kth>
where
    I: Iterator<Item = u32> + Clone,
{
    let (mut prefix, mut mask) = (0u32, 0u32);
    let (mut k, mut below, mut equal) = (k, 0usize, 0usize);
    for (shift, width) in DIGITS {
        let digit_mask = (1u32 << width) - 1;
        let mut hist = [0u32; 1 << 11];
        for v in values.clone() {
            if v & mask == prefix {
                hist[((v >> shift) & digit_mask) as usize] += 1;
            }
        }
        let mut chosen = None;
        for (d, &n) in hist.iter().enumerate().take(1 << width) {
            let n = n as usize;
            if k < n {
                chosen = Some(d as u32);
                equal = n;
                break;
            }
            k -= n;
            below += n;
        }
        prefix |= chosen? << shift;
        mask |= digit_mask << shift;
    }
    Some(Kth {
        value: prefix,
        below,
        equal,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The same answer from a sorted copy.
    fn by_sorting(values: &[u32], k: usize) -> Option<Kth> {
        let mut sorted = values.to_vec();
        sorted.sort_unstable();
        let value = *sorted.get(k)?;
        Some(Kth {
            value,
            below: sorted.iter().filter(|v| **v < value).count(),
            equal: sorted.iter().filter(|v| **v == value).count(),
        })
    }

    #[test]
    fn as_a_sorted_copy_says() {
        // A small xorshift: times in a narrow range (many ties), and across all 32 bits.
        let mut x = 0x9E37_79B9u32;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x
        };
        for (len, spread) in [
            (1usize, 10u32),
            (2, 1),
            (100, 3),
            (1000, 3600),
            (5000, u32::MAX),
            (20_000, 7200),
        ] {
            let values: Vec<u32> = (0..len)
                .map(|_| {
                    if spread == u32::MAX {
                        next()
                    } else {
                        1_700_000_000 + next() % spread
                    }
                })
                .collect();
            for k in [0, 1, len / 10, len / 2, len.saturating_sub(1), len, len + 5] {
                assert_eq!(
                    kth_smallest(values.iter().copied(), k),
                    by_sorting(&values, k),
                    "len {len}, spread {spread}, k {k}"
                );
            }
        }
    }

    #[test]
    fn edges() {
        assert_eq!(kth_smallest(std::iter::empty(), 0), None);
        let all_same = [7u32; 50];
        assert_eq!(
            kth_smallest(all_same.iter().copied(), 49),
            Some(Kth {
                value: 7,
                below: 0,
                equal: 50
            })
        );
        let extremes = [u32::MAX, 0, u32::MAX, 1 << 21, (1 << 10) - 1];
        for k in 0..extremes.len() {
            assert_eq!(
                kth_smallest(extremes.iter().copied(), k),
                by_sorting(&extremes, k),
                "k {k}"
            );
        }
    }
}
