//! File names of the Volume exporter: the active file, rotated files and
//! their compressed and in-progress variants. See the module doc of
//! [`super`] for the layout.

use chrono::{DateTime, Utc};

/// The extension of a plain JSON Lines file (active or rotated).
pub(super) const JSONL: &str = ".jsonl";

/// Length of a rotation timestamp such as `20240131T235959.123Z`.
const TS_LEN: usize = 20;

/// What a rotated file's name says: when it was rotated (UTC, millisecond
/// precision, fixed width so that string order is time order) and a sequence
/// number that separates rotations within the same millisecond.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(super) struct NameKey {
    pub(super) ts: String,
    pub(super) seq: u64,
}

/// The forms a rotated file takes on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Variant {
    /// `…-<n>.jsonl`: rotated, not (yet) compressed.
    Plain,
    /// `…-<n>.jsonl.gz`: compressed, complete.
    Gz,
    /// `…-<n>.jsonl.gz.tmp`: compression in progress (or interrupted).
    GzTmp,
}

impl Variant {
    fn suffix(self) -> &'static str {
        match self {
            Variant::Plain => ".jsonl",
            Variant::Gz => ".jsonl.gz",
            Variant::GzTmp => ".jsonl.gz.tmp",
        }
    }
}

/// The rotation timestamp of `now`: `%Y%m%dT%H%M%S%.3fZ`.
pub(super) fn timestamp(now: DateTime<Utc>) -> String {
    now.format("%Y%m%dT%H%M%S%.3fZ").to_string()
}

/// `<prefix>-<ts>-<seq, 3 digits at least>` plus the variant's suffix.
pub(super) fn file_name(prefix: &str, key: &NameKey, variant: Variant) -> String {
    format!("{prefix}-{}-{:03}{}", key.ts, key.seq, variant.suffix())
}

/// The name of the active file: `<prefix>.jsonl`.
pub(super) fn active_name(prefix: &str) -> String {
    format!("{prefix}{JSONL}")
}

/// The name of the lock file: `<prefix>.lock`.
pub(super) fn lock_name(prefix: &str) -> String {
    format!("{prefix}.lock")
}

/// Reads a rotated file's name back; `None` for anything else (the active
/// file, the lock file, other prefixes, foreign files).
pub(super) fn parse(prefix: &str, name: &str) -> Option<(NameKey, Variant)> {
    let rest = name.strip_prefix(prefix)?.strip_prefix('-')?;
    let ts = rest.get(..TS_LEN)?;
    if !valid_ts(ts) {
        return None;
    }
    let rest = rest[TS_LEN..].strip_prefix('-')?;
    let digits = rest.find(|c: char| !c.is_ascii_digit())?;
    if digits == 0 {
        return None;
    }
    let seq: u64 = rest[..digits].parse().ok()?;
    let variant = match &rest[digits..] {
        ".jsonl" => Variant::Plain,
        ".jsonl.gz" => Variant::Gz,
        ".jsonl.gz.tmp" => Variant::GzTmp,
        _ => return None,
    };
    Some((
        NameKey {
            ts: ts.to_string(),
            seq,
        },
        variant,
    ))
}

fn valid_ts(ts: &str) -> bool {
    let b = ts.as_bytes();
    b.len() == TS_LEN
        && b.iter().enumerate().all(|(i, &c)| match i {
            8 => c == b'T',
            15 => c == b'.',
            19 => c == b'Z',
            _ => c.is_ascii_digit(),
        })
}

/// The key for the next rotation at time `now_ts`: strictly greater than
/// `last` (the greatest name already used or found on disk), so names keep
/// sorting in rotation order even within one millisecond or if the clock
/// steps back.
pub(super) fn next_key(last: Option<&NameKey>, now_ts: String) -> NameKey {
    match last {
        Some(last) if last.ts >= now_ts => NameKey {
            ts: last.ts.clone(),
            seq: last.seq + 1,
        },
        _ => NameKey { ts: now_ts, seq: 0 },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn key(ts: &str, seq: u64) -> NameKey {
        NameKey {
            ts: ts.to_string(),
            seq,
        }
    }

    #[test]
    fn timestamp_format() {
        let t = Utc.with_ymd_and_hms(2024, 1, 31, 23, 59, 58).unwrap() + chrono::Duration::milliseconds(7);
        assert_eq!(timestamp(t), "20240131T235958.007Z");
    }

    #[test]
    fn names_round_trip() {
        let k = key("20240131T235958.007Z", 4);
        assert_eq!(
            file_name("events", &k, Variant::Plain),
            "events-20240131T235958.007Z-004.jsonl"
        );
        for v in [Variant::Plain, Variant::Gz, Variant::GzTmp] {
            assert_eq!(parse("events", &file_name("events", &k, v)), Some((k.clone(), v)));
        }
        // prefixes containing dashes work too
        let name = file_name("my-app", &k, Variant::Gz);
        assert_eq!(parse("my-app", &name), Some((k.clone(), Variant::Gz)));
        assert_eq!(parse("my", &name), None);
        let big = key("20240131T235958.007Z", 12345);
        assert_eq!(
            parse("e", &file_name("e", &big, Variant::Plain)),
            Some((big, Variant::Plain))
        );
    }

    #[test]
    fn foreign_names_are_ignored() {
        for name in [
            "events.jsonl",
            "events.lock",
            "other-20240131T235958.007Z-000.jsonl",
            "events-20240131T235958.007Z-000.json",
            "events-20240131T235958.007Z-.jsonl",
            "events-20240131X235958.007Z-000.jsonl",
            "events-2024013T235958.007Z-000.jsonl",
            "events-20240131T235958.007Z-000.jsonl.gz.tmp.x",
            "events-20240131T235958.007Z-0a0.jsonl",
            "events-20240131T235958.007Z000.jsonl",
        ] {
            assert_eq!(parse("events", name), None, "{name}");
        }
    }

    #[test]
    fn keys_order_by_time_then_sequence() {
        let a = key("20240131T235958.007Z", 9);
        let b = key("20240131T235958.007Z", 10);
        let c = key("20240131T235958.008Z", 0);
        assert!(a < b && b < c);
        // names sort the same way as keys (while sequences stay under 1000)
        let names: Vec<_> = [&a, &b, &c].iter().map(|k| file_name("e", k, Variant::Plain)).collect();
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(names, sorted);
    }

    #[test]
    fn next_key_is_strictly_increasing() {
        let now = "20240131T235958.007Z".to_string();
        assert_eq!(next_key(None, now.clone()), key(&now, 0));
        // same millisecond: bump the sequence
        let k1 = next_key(Some(&key(&now, 0)), now.clone());
        assert_eq!(k1, key(&now, 1));
        // clock went back: keep the last timestamp, bump the sequence
        let k2 = next_key(Some(&key("20300101T000000.000Z", 5)), now.clone());
        assert_eq!(k2, key("20300101T000000.000Z", 6));
        // time moved on: fresh timestamp, sequence 0
        let k3 = next_key(Some(&key("20240131T235958.006Z", 7)), now.clone());
        assert_eq!(k3, key(&now, 0));
    }
}
