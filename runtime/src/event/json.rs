//! The normalized event's JSON text, written straight into a buffer.
//!
//! Every kept event is serialized once, for the exporters' record or for a
//! filter that asks for it. With serde_json that was a quarter of the
//! collector's CPU in the replay profile: its string writer looks up every
//! byte in an escape table, keys included. [`write_event`] writes the same
//! bytes as `serde_json::to_writer(&event)` (a test checks it on the
//! generated corpus and on strings with every kind of escape), but with the
//! keys as constants and the values checked for escapes eight bytes at a
//! time. `extra` and `raw`, free-form JSON, still go through serde_json.

use std::collections::BTreeMap;

use super::{Event, ObjectRef, WatchType};

/// Appends `ev` as one JSON object, exactly as `serde_json::to_writer` does.
pub fn write_event(out: &mut Vec<u8>, ev: &Event) {
    // Destructured without `..`: a new field fails to compile until written here.
    let Event {
        schema_version,
        cluster,
        api,
        watch_type,
        uid,
        resource_version,
        name,
        namespace,
        type_,
        reason,
        message,
        note,
        action,
        object,
        related,
        reporting_controller,
        reporting_instance,
        count,
        count_delta,
        first_timestamp,
        last_timestamp,
        timestamp,
        labels,
        annotations,
        extra,
        raw,
    } = ev;
    out.extend_from_slice(b"{\"schema_version\":");
    write_u64(out, u64::from(*schema_version));
    out.extend_from_slice(b",\"cluster\":");
    write_str(out, cluster);
    out.extend_from_slice(b",\"api\":");
    write_str(out, api.as_str());
    out.extend_from_slice(b",\"watch_type\":");
    out.extend_from_slice(match watch_type {
        WatchType::Added => b"\"ADDED\"",
        WatchType::Modified => b"\"MODIFIED\"",
        WatchType::Deleted => b"\"DELETED\"",
    });
    out.extend_from_slice(b",\"uid\":");
    write_str(out, uid);
    out.extend_from_slice(b",\"resource_version\":");
    write_str(out, resource_version);
    out.extend_from_slice(b",\"name\":");
    write_str(out, name);
    out.extend_from_slice(b",\"namespace\":");
    write_str(out, namespace);
    out.extend_from_slice(b",\"type\":");
    write_opt(out, type_);
    out.extend_from_slice(b",\"reason\":");
    write_opt(out, reason);
    out.extend_from_slice(b",\"message\":");
    write_opt(out, message);
    out.extend_from_slice(b",\"note\":");
    write_opt(out, note);
    out.extend_from_slice(b",\"action\":");
    write_opt(out, action);
    out.extend_from_slice(b",\"object\":");
    write_object_ref(out, object);
    out.extend_from_slice(b",\"related\":");
    match related {
        Some(r) => write_object_ref(out, r),
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"reporting_controller\":");
    write_opt(out, reporting_controller);
    out.extend_from_slice(b",\"reporting_instance\":");
    write_opt(out, reporting_instance);
    out.extend_from_slice(b",\"count\":");
    write_u64(out, *count);
    out.extend_from_slice(b",\"count_delta\":");
    write_u64(out, *count_delta);
    out.extend_from_slice(b",\"first_timestamp\":");
    write_opt(out, first_timestamp);
    out.extend_from_slice(b",\"last_timestamp\":");
    write_opt(out, last_timestamp);
    out.extend_from_slice(b",\"timestamp\":");
    write_str(out, timestamp);
    out.extend_from_slice(b",\"labels\":");
    write_map(out, labels);
    out.extend_from_slice(b",\"annotations\":");
    write_map(out, annotations);
    // Serializing serde_json's own values into a Vec cannot fail.
    if !extra.is_empty() {
        out.extend_from_slice(b",\"extra\":");
        let _ = serde_json::to_writer(&mut *out, extra);
    }
    if let Some(raw) = raw {
        out.extend_from_slice(b",\"raw\":");
        let _ = serde_json::to_writer(&mut *out, raw);
    }
    out.push(b'}');
}

fn write_object_ref(out: &mut Vec<u8>, r: &ObjectRef) {
    let ObjectRef {
        kind,
        namespace,
        name,
        uid,
        api_version,
        field_path,
        resource_version,
    } = r;
    out.extend_from_slice(b"{\"kind\":");
    write_opt(out, kind);
    out.extend_from_slice(b",\"namespace\":");
    write_opt(out, namespace);
    out.extend_from_slice(b",\"name\":");
    write_opt(out, name);
    out.extend_from_slice(b",\"uid\":");
    write_opt(out, uid);
    out.extend_from_slice(b",\"api_version\":");
    write_opt(out, api_version);
    out.extend_from_slice(b",\"field_path\":");
    write_opt(out, field_path);
    out.extend_from_slice(b",\"resource_version\":");
    write_opt(out, resource_version);
    out.push(b'}');
}

fn write_map(out: &mut Vec<u8>, map: &BTreeMap<String, String>) {
    out.push(b'{');
    for (i, (k, v)) in map.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_str(out, k);
        out.push(b':');
        write_str(out, v);
    }
    out.push(b'}');
}

fn write_opt(out: &mut Vec<u8>, s: &Option<String>) {
    match s {
        Some(s) => write_str(out, s),
        None => out.extend_from_slice(b"null"),
    }
}

fn write_u64(out: &mut Vec<u8>, n: u64) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGH: u64 = 0x8080_8080_8080_8080;

/// Whether any of the eight bytes in `w` must be escaped: a control
/// character (below 0x20), `"` or `\`. Exact for "any" (the usual
/// has-zero-byte test), which is all the caller asks.
#[inline]
fn needs_escape(w: u64) -> bool {
    let control = w.wrapping_sub(ONES * 0x20) & !w;
    let quote = w ^ (ONES * u64::from(b'"'));
    let backslash = w ^ (ONES * u64::from(b'\\'));
    let quote = quote.wrapping_sub(ONES) & !quote;
    let backslash = backslash.wrapping_sub(ONES) & !backslash;
    (control | quote | backslash) & HIGH != 0
}

/// Appends `s` as a JSON string, escaped as serde_json escapes it: `"`,
/// `\` and the control characters; everything else, non-ASCII included, as is.
pub fn write_str(out: &mut Vec<u8>, s: &str) {
    let b = s.as_bytes();
    out.reserve(b.len() + 2);
    out.push(b'"');
    // `b[clean..at]` has been checked and needs no escape.
    let mut clean = 0;
    let mut at = 0;
    for chunk in b.chunks_exact(8) {
        let mut w = [0u8; 8];
        w.copy_from_slice(chunk);
        if needs_escape(u64::from_le_bytes(w)) {
            for (i, &c) in chunk.iter().enumerate() {
                if let Some(esc) = escape(c) {
                    out.extend_from_slice(&b[clean..at + i]);
                    push_escape(out, c, esc);
                    clean = at + i + 1;
                }
            }
        }
        at += 8;
    }
    for (i, &c) in b[at..].iter().enumerate() {
        if let Some(esc) = escape(c) {
            out.extend_from_slice(&b[clean..at + i]);
            push_escape(out, c, esc);
            clean = at + i + 1;
        }
    }
    out.extend_from_slice(&b[clean..]);
    out.push(b'"');
}

/// The short escape letter of `c` (`u` for `\u00XX`), if `c` needs one.
#[inline]
fn escape(c: u8) -> Option<u8> {
    match c {
        b'"' => Some(b'"'),
        b'\\' => Some(b'\\'),
        0x08 => Some(b'b'),
        0x09 => Some(b't'),
        0x0a => Some(b'n'),
        0x0c => Some(b'f'),
        0x0d => Some(b'r'),
        0..=0x1f => Some(b'u'),
        _ => None,
    }
}

fn push_escape(out: &mut Vec<u8>, c: u8, esc: u8) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    if esc == b'u' {
        out.extend_from_slice(&[
            b'\\',
            b'u',
            b'0',
            b'0',
            HEX[usize::from(c >> 4)],
            HEX[usize::from(c & 0xf)],
        ]);
    } else {
        out.extend_from_slice(&[b'\\', esc]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Api, NormalizeOptions, RawEvent, normalize};
    use serde_json::json;
    use std::sync::Arc;

    fn ours(ev: &Event) -> String {
        let mut out = Vec::new();
        write_event(&mut out, ev);
        String::from_utf8(out).expect("the writer writes UTF-8")
    }

    fn serde(ev: &Event) -> String {
        serde_json::to_string(ev).expect("serde serializes an event")
    }

    /// Every byte value that needs an escape, at every offset of an 8-byte
    /// word, among ASCII and multi-byte characters.
    fn awkward_strings() -> Vec<String> {
        let mut out = vec![String::new(), "a".into(), "\"".into(), "\\".into(), "é€😀".into()];
        for c in (0u8..0x20).chain([b'"', b'\\', 0x7f]) {
            for at in 0..17 {
                let mut s: String = "x".repeat(at);
                s.push(char::from(c));
                s.push_str("ü abcdefgh");
                out.push(s);
            }
        }
        out.push("line one\nline two\ttab \"quoted\" C:\\path\u{1}\u{1f}\r\u{c}\u{8} ß 日本".into());
        out.push("ÿ".repeat(40));
        out
    }

    fn event_with(s: &str) -> Event {
        let mut ev = full_event();
        ev.name = s.to_string();
        ev.message = Some(s.to_string());
        ev.object.field_path = Some(s.to_string());
        ev.labels.insert(s.to_string(), s.to_string());
        ev.annotations.insert(format!("k{s}"), s.to_string());
        ev
    }

    /// Every field set, both maps and `extra`/`raw` populated.
    fn full_event() -> Event {
        let raw: RawEvent = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"name": "web-1.17a", "namespace": "shop", "uid": "u-1",
                         "resourceVersion": "812", "creationTimestamp": "2024-05-01T10:00:00Z",
                         "labels": {"app": "web", "tier": "front"},
                         "annotations": {"note": "x"}},
            "involvedObject": {"kind": "Pod", "namespace": "shop", "name": "web-1", "uid": "p-1",
                               "apiVersion": "v1", "resourceVersion": "77", "fieldPath": "spec.containers{web}"},
            "related": {"kind": "Node", "name": "node-a"},
            "reason": "BackOff", "message": "Back-off restarting failed container",
            "source": {"component": "kubelet", "host": "node-a"},
            "firstTimestamp": "2024-05-01T10:00:00Z", "lastTimestamp": "2024-05-01T10:05:00.5Z",
            "count": 3, "type": "Warning", "action": "Restart"
        }))
        .expect("test event parses");
        let opts = NormalizeOptions {
            cluster: Arc::from("prod \"eu\""),
            include_raw: true,
        };
        let mut ev = normalize(Api::CoreV1, raw, WatchType::Modified, Some(1), &opts).expect("normalizes");
        ev.extra.insert("severity".into(), json!("high"));
        ev.extra.insert("score".into(), json!({"n": 1.5, "tags": ["a", "b\n"]}));
        ev
    }

    #[test]
    fn same_bytes_as_serde_for_a_full_event() {
        let ev = full_event();
        assert!(ev.raw.is_some() && ev.related.is_some() && !ev.extra.is_empty());
        assert_eq!(ours(&ev), serde(&ev));
    }

    #[test]
    fn same_bytes_as_serde_for_empty_and_absent_fields() {
        let mut ev = full_event();
        ev.type_ = None;
        ev.reason = None;
        ev.message = None;
        ev.note = None;
        ev.action = None;
        ev.related = None;
        ev.object = ObjectRef::default();
        ev.reporting_controller = None;
        ev.reporting_instance = None;
        ev.first_timestamp = None;
        ev.last_timestamp = None;
        ev.labels.clear();
        ev.annotations.clear();
        ev.extra.clear();
        ev.raw = None;
        ev.count = u64::MAX;
        ev.count_delta = 0;
        for wt in [WatchType::Added, WatchType::Modified, WatchType::Deleted] {
            for api in [Api::CoreV1, Api::EventsV1] {
                ev.watch_type = wt;
                ev.api = api;
                assert_eq!(ours(&ev), serde(&ev));
            }
        }
    }

    #[test]
    fn same_bytes_as_serde_for_every_escape_at_every_offset() {
        for s in awkward_strings() {
            let mut mine = Vec::new();
            write_str(&mut mine, &s);
            assert_eq!(
                String::from_utf8(mine).expect("UTF-8"),
                serde_json::to_string(&s).expect("serializes"),
                "{s:?}"
            );
            let ev = event_with(&s);
            assert_eq!(ours(&ev), serde(&ev), "{s:?}");
        }
    }

    #[test]
    fn same_bytes_as_serde_for_the_generated_corpus() {
        let opts = crate::generate::GenOptions {
            count: Some(200),
            scenario: Some(crate::generate::Scenario::Mixed),
            ..Default::default()
        };
        let mut lines = Vec::new();
        crate::generate::to_writer(&mut lines, &opts, 1).expect("generates");
        let norm = NormalizeOptions {
            cluster: Arc::from("bench"),
            include_raw: false,
        };
        let mut n = 0;
        for line in lines.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            let v: serde_json::Value = serde_json::from_slice(line).expect("a generated line is JSON");
            let api = match v["object"]["apiVersion"].as_str() {
                Some("v1") => Api::CoreV1,
                _ => Api::EventsV1,
            };
            let raw: RawEvent = serde_json::from_value(v["object"].clone()).expect("a generated event parses");
            let ev = normalize(api, raw, WatchType::Added, None, &norm).expect("normalizes");
            assert_eq!(ours(&ev), serde(&ev));
            n += 1;
        }
        assert!(n >= 400, "{n} events checked");
    }

    #[test]
    fn the_escape_test_matches_a_byte_by_byte_check() {
        // Every byte value in every lane, and a word with none.
        for lane in 0..8 {
            for c in 0..=255u8 {
                let mut w = [b'a'; 8];
                w[lane] = c;
                assert_eq!(
                    needs_escape(u64::from_le_bytes(w)),
                    escape(c).is_some(),
                    "byte {c:#x} in lane {lane}"
                );
            }
        }
    }
}
