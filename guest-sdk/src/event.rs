//! The normalized event (`docs/event-schema.md`, `schema_version` 1) as a
//! typed struct, for enrichers that read or change more than [`EventFields`].
//!
//! Parsing costs about 1 µs for a 1 KB event; filters that only look at
//! type/reason/namespace/kind/name should use [`EventFields`] and skip it.
//!
//! Fields this version of the SDK does not know (a newer host may add some
//! without bumping `schema_version`) are kept in [`Event::unknown`] and written
//! back unchanged, so an enricher built today does not strip them.
//!
//! [`EventFields`]: crate::EventFields

use std::collections::BTreeMap;

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The schema version this SDK was written for.
pub const SCHEMA_VERSION: u32 = 1;

/// The object an event is about (`object`: core/v1 `involvedObject`,
/// events.k8s.io/v1 `regarding`) or a second one (`related`). Every key is
/// always present; `None` is JSON `null`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectRef {
    pub kind: Option<String>,
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub uid: Option<String>,
    pub api_version: Option<String>,
    pub field_path: Option<String>,
    pub resource_version: Option<String>,
}

/// One normalized Kubernetes Event, the same whichever API it was read through.
///
/// Every key is always serialized (`None` as `null`) except `extra` (only when
/// not empty) and `raw` (only when set), exactly as the schema says.
///
/// Parsing is hand-written (see `Deserialize` below) rather than derived:
/// serde's `flatten` for [`Event::unknown`] would buffer the whole object
/// into an intermediate tree first, which doubled the parse time in WASM.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Event {
    /// `1`.
    pub schema_version: u32,
    pub cluster: String,
    /// `"core/v1"` or `"events.k8s.io/v1"`.
    pub api: String,
    /// `"ADDED"`, `"MODIFIED"` or `"DELETED"`.
    pub watch_type: String,
    pub uid: String,
    /// Opaque: never compare it as a number.
    pub resource_version: String,
    pub name: String,
    /// `""` when the event has none.
    pub namespace: String,
    /// `"Normal"` or `"Warning"` (JSON key `type`).
    #[serde(rename = "type")]
    pub type_: Option<String>,
    pub reason: Option<String>,
    /// The human-readable text (core/v1 `message`).
    pub message: Option<String>,
    /// The same text under its events.k8s.io/v1 name. Use [`Event::set_message`]
    /// to change both.
    pub note: Option<String>,
    pub action: Option<String>,
    pub object: ObjectRef,
    pub related: Option<ObjectRef>,
    pub reporting_controller: Option<String>,
    pub reporting_instance: Option<String>,
    /// How often it happened in all (≥ 1).
    pub count: u64,
    /// Occurrences new since the collector last passed this event on.
    pub count_delta: u64,
    /// RFC 3339, UTC.
    pub first_timestamp: Option<String>,
    pub last_timestamp: Option<String>,
    /// Always set (the schema's timestamp rule).
    pub timestamp: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    /// Free-form fields added by enrichers. Serialized only when not empty.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub extra: Map<String, Value>,
    /// The object as the API server served it (only with `source.include_raw`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw: Option<Value>,
    /// Top-level keys this SDK does not know, kept so they survive a round trip.
    #[serde(flatten)]
    pub unknown: Map<String, Value>,
}

impl Event {
    /// Parses normalized event JSON (what [`EventJson::get`](crate::EventJson::get) returns;
    /// [`EventJson::parse`](crate::EventJson::parse) does both).
    pub fn parse(json: &str) -> Result<Event, String> {
        serde_json::from_str(json).map_err(|e| format!("not a normalized event: {e}"))
    }

    /// Serializes the event for [`Verdict::Replace`](crate::Verdict::Replace)
    /// (done for you) or for logging.
    pub fn to_json(&self) -> String {
        // Cannot fail: every map key is a string and every value is JSON.
        serde_json::to_string(self).expect("an Event always serializes")
    }

    /// The human-readable text: `message`, else `note`.
    pub fn text(&self) -> Option<&str> {
        self.message.as_deref().or(self.note.as_deref())
    }

    /// Sets `message` and `note` together (they are the same text under two names).
    pub fn set_message(&mut self, text: impl Into<String>) {
        let text = text.into();
        self.note = Some(text.clone());
        self.message = Some(text);
    }

    /// Sets `extra[key] = value` (an enricher's addition).
    pub fn set_extra(&mut self, key: impl Into<String>, value: impl Into<Value>) {
        self.extra.insert(key.into(), value.into());
    }

    /// Sets `labels[key] = value`.
    pub fn set_label(&mut self, key: impl Into<String>, value: impl Into<String>) {
        self.labels.insert(key.into(), value.into());
    }

    /// The involved object's kind, `""` when absent (as in [`EventFields`](crate::EventFields)).
    pub fn kind(&self) -> &str {
        self.object.kind.as_deref().unwrap_or("")
    }
}

/// A map key, borrowed from the input when it has no escapes.
struct Key<'de>(Cow<'de, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a key")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v)))
            }
        }
        d.deserialize_str(V)
    }
}

impl<'de> Deserialize<'de> for Event {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(EventVisitor)
    }
}

struct EventVisitor;

/// Reads the value of `key` into `slot`; a second occurrence is an error.
fn once<'de, A: MapAccess<'de>, T: Deserialize<'de>>(
    map: &mut A,
    slot: &mut Option<T>,
    key: &'static str,
) -> Result<(), A::Error> {
    if slot.is_some() {
        return Err(de::Error::duplicate_field(key));
    }
    *slot = Some(map.next_value()?);
    Ok(())
}

impl<'de> Visitor<'de> for EventVisitor {
    type Value = Event;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a normalized event (a JSON object)")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Event, A::Error> {
        // Required keys are `Option<T>` until the end; optional ones (JSON
        // `null` or absent) are `Option<Option<T>>`.
        let (mut schema_version, mut count, mut count_delta) = (None::<u32>, None::<u64>, None::<u64>);
        let (mut cluster, mut api, mut watch_type) = (None::<String>, None::<String>, None::<String>);
        let (mut uid, mut resource_version) = (None::<String>, None::<String>);
        let (mut name, mut namespace, mut timestamp) = (None::<String>, None::<String>, None::<String>);
        let (mut type_, mut reason) = (None::<Option<String>>, None::<Option<String>>);
        let (mut message, mut note, mut action) =
            (None::<Option<String>>, None::<Option<String>>, None::<Option<String>>);
        let (mut object, mut related) = (None::<ObjectRef>, None::<Option<ObjectRef>>);
        let (mut reporting_controller, mut reporting_instance) = (None::<Option<String>>, None::<Option<String>>);
        let (mut first_timestamp, mut last_timestamp) = (None::<Option<String>>, None::<Option<String>>);
        let (mut labels, mut annotations) = (None::<BTreeMap<String, String>>, None::<BTreeMap<String, String>>);
        let (mut extra, mut raw) = (None::<Map<String, Value>>, None::<Option<Value>>);
        let mut unknown = Map::new();
        while let Some(Key(key)) = map.next_key::<Key<'de>>()? {
            match &*key {
                "schema_version" => once(&mut map, &mut schema_version, "schema_version")?,
                "cluster" => once(&mut map, &mut cluster, "cluster")?,
                "api" => once(&mut map, &mut api, "api")?,
                "watch_type" => once(&mut map, &mut watch_type, "watch_type")?,
                "uid" => once(&mut map, &mut uid, "uid")?,
                "resource_version" => once(&mut map, &mut resource_version, "resource_version")?,
                "name" => once(&mut map, &mut name, "name")?,
                "namespace" => once(&mut map, &mut namespace, "namespace")?,
                "type" => once(&mut map, &mut type_, "type")?,
                "reason" => once(&mut map, &mut reason, "reason")?,
                "message" => once(&mut map, &mut message, "message")?,
                "note" => once(&mut map, &mut note, "note")?,
                "action" => once(&mut map, &mut action, "action")?,
                "object" => once(&mut map, &mut object, "object")?,
                "related" => once(&mut map, &mut related, "related")?,
                "reporting_controller" => once(&mut map, &mut reporting_controller, "reporting_controller")?,
                "reporting_instance" => once(&mut map, &mut reporting_instance, "reporting_instance")?,
                "count" => once(&mut map, &mut count, "count")?,
                "count_delta" => once(&mut map, &mut count_delta, "count_delta")?,
                "first_timestamp" => once(&mut map, &mut first_timestamp, "first_timestamp")?,
                "last_timestamp" => once(&mut map, &mut last_timestamp, "last_timestamp")?,
                "timestamp" => once(&mut map, &mut timestamp, "timestamp")?,
                "labels" => once(&mut map, &mut labels, "labels")?,
                "annotations" => once(&mut map, &mut annotations, "annotations")?,
                "extra" => once(&mut map, &mut extra, "extra")?,
                "raw" => once(&mut map, &mut raw, "raw")?,
                _ => {
                    let v: Value = map.next_value()?;
                    unknown.insert(key.into_owned(), v);
                }
            }
        }
        fn need<T, E: de::Error>(v: Option<T>, key: &'static str) -> Result<T, E> {
            v.ok_or_else(|| de::Error::missing_field(key))
        }
        Ok(Event {
            schema_version: need(schema_version, "schema_version")?,
            cluster: need(cluster, "cluster")?,
            api: need(api, "api")?,
            watch_type: need(watch_type, "watch_type")?,
            uid: need(uid, "uid")?,
            resource_version: need(resource_version, "resource_version")?,
            name: need(name, "name")?,
            namespace: need(namespace, "namespace")?,
            type_: type_.flatten(),
            reason: reason.flatten(),
            message: message.flatten(),
            note: note.flatten(),
            action: action.flatten(),
            object: need(object, "object")?,
            related: related.flatten(),
            reporting_controller: reporting_controller.flatten(),
            reporting_instance: reporting_instance.flatten(),
            count: need(count, "count")?,
            count_delta: need(count_delta, "count_delta")?,
            first_timestamp: first_timestamp.flatten(),
            last_timestamp: last_timestamp.flatten(),
            timestamp: need(timestamp, "timestamp")?,
            labels: labels.unwrap_or_default(),
            annotations: annotations.unwrap_or_default(),
            extra: extra.unwrap_or_default(),
            raw: raw.flatten(),
            unknown,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"{
      "schema_version": 1, "cluster": "prod-eu", "api": "events.k8s.io/v1",
      "watch_type": "MODIFIED", "uid": "8c1b", "resource_version": "104233",
      "name": "web.17f3a", "namespace": "shop", "type": "Warning", "reason": "BackOff",
      "message": "Back-off", "note": "Back-off", "action": null,
      "object": {"kind": "Pod", "namespace": "shop", "name": "web", "uid": "5f0e",
                 "api_version": "v1", "field_path": null, "resource_version": "103998"},
      "related": null, "reporting_controller": "kubelet", "reporting_instance": "node-a",
      "count": 6, "count_delta": 1, "first_timestamp": "2026-11-21T10:00:00Z",
      "last_timestamp": "2026-11-21T10:05:00Z", "timestamp": "2026-11-21T10:05:00Z",
      "labels": {}, "annotations": {}, "added_by_a_newer_host": [1, 2]
    }"#;

    #[test]
    fn round_trip_keeps_every_key_and_unknown_ones() {
        let ev = Event::parse(EXAMPLE).unwrap();
        assert_eq!(ev.kind(), "Pod");
        let out: Value = serde_json::from_str(&ev.to_json()).unwrap();
        let want: Value = serde_json::from_str(EXAMPLE).unwrap();
        assert_eq!(out, want);
    }

    #[test]
    fn extra_and_raw_only_when_set() {
        let mut ev = Event::parse(EXAMPLE).unwrap();
        assert!(!ev.to_json().contains("\"extra\""));
        assert!(!ev.to_json().contains("\"raw\""));
        ev.set_extra("severity", "high");
        ev.set_message("x");
        let out: Value = serde_json::from_str(&ev.to_json()).unwrap();
        assert_eq!(out["extra"]["severity"], "high");
        assert_eq!(out["note"], "x");
        assert_eq!(out["action"], Value::Null);
    }

    #[test]
    fn hand_written_parse_matches_the_schema_rules() {
        // Optional keys may be absent or null; unknown keys (escaped too) survive.
        let mut v: Value = serde_json::from_str(EXAMPLE).unwrap();
        let o = v.as_object_mut().unwrap();
        o.remove("reason");
        o.remove("labels");
        o.insert("related".into(), Value::Null);
        o.insert("raw".into(), Value::Null);
        o.insert("new\"key".into(), serde_json::json!({"a": [1]}));
        let ev = Event::parse(&v.to_string()).unwrap();
        assert_eq!((ev.reason, ev.related, ev.raw), (None, None, None));
        assert!(ev.labels.is_empty());
        assert_eq!(ev.unknown["new\"key"], serde_json::json!({"a": [1]}));
        assert_eq!(ev.unknown["added_by_a_newer_host"], serde_json::json!([1, 2]));
        assert_eq!(ev.type_.as_deref(), Some("Warning"));
        assert_eq!(ev.count, 6);
    }

    #[test]
    fn missing_duplicate_and_mistyped_keys_are_errors() {
        let mut v: Value = serde_json::from_str(EXAMPLE).unwrap();
        v.as_object_mut().unwrap().remove("uid");
        let e = Event::parse(&v.to_string()).unwrap_err();
        assert!(e.contains("missing field `uid`"), "{e}");
        let dup = EXAMPLE.replacen("\"count\": 6,", "\"count\": 6, \"count\": 7,", 1);
        let e = Event::parse(&dup).unwrap_err();
        assert!(e.contains("duplicate field `count`"), "{e}");
        let bad = EXAMPLE.replacen("\"count\": 6", "\"count\": \"six\"", 1);
        assert!(Event::parse(&bad).is_err());
        assert!(Event::parse("[1]").is_err());
    }
}
