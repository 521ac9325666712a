//! The wire form of an Event as either API serves it, parsed once and leniently.
//!
//! One struct covers the union of core/v1 and events.k8s.io/v1 fields, so a
//! single watch type serves both APIs, and a missing or null field is `None`
//! instead of a decode error that would lose the whole object. Timestamps stay
//! strings here; `normalize` validates them. Of `metadata` only the members
//! the collector reads are decoded ([`RawMeta`]); the rest, `managedFields`
//! above all, is kept as its JSON text.

use std::collections::BTreeMap;
use std::fmt;

use kube::core::{ApiResource, GroupVersionKind};
use serde::de::{MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;

/// Which Kubernetes API an event was read through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Api {
    #[serde(rename = "core/v1")]
    CoreV1,
    #[serde(rename = "events.k8s.io/v1")]
    EventsV1,
}

impl Api {
    pub fn as_str(self) -> &'static str {
        match self {
            Api::CoreV1 => "core/v1",
            Api::EventsV1 => "events.k8s.io/v1",
        }
    }

    /// The group/version/kind used to build the watch for this API.
    pub fn api_resource(self) -> ApiResource {
        let gvk = match self {
            Api::CoreV1 => GroupVersionKind::gvk("", "v1", "Event"),
            Api::EventsV1 => GroupVersionKind::gvk("events.k8s.io", "v1", "Event"),
        };
        ApiResource::from_gvk_with_plural(&gvk, "events")
    }

    /// Which API a raw object's `apiVersion` names, if any.
    pub fn from_api_version(v: &str) -> Option<Api> {
        match v {
            "v1" => Some(Api::CoreV1),
            "events.k8s.io/v1" => Some(Api::EventsV1),
            _ => None,
        }
    }
}

impl std::fmt::Display for Api {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An object reference (core `involvedObject`/`related`, v1 `regarding`/`related`).
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct RawObjectRef {
    pub kind: Option<String>,
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub uid: Option<String>,
    pub api_version: Option<String>,
    pub resource_version: Option<String>,
    pub field_path: Option<String>,
}

/// core `source` / v1 `deprecatedSource`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(default)]
pub struct RawSource {
    pub component: Option<String>,
    pub host: Option<String>,
}

/// `series` in either API.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct RawSeries {
    pub count: Option<i64>,
    pub last_observed_time: Option<String>,
}

/// An Event's `metadata`: the members the collector reads, decoded; every
/// other member (`managedFields`, `ownerReferences`, `generateName`, …) kept
/// as its JSON text, unparsed, so that `include_raw` still gets it.
///
/// The API server sends a `managedFields` entry with every Event, about a
/// third of the object; decoding it into a JSON tree (as k8s-openapi's
/// `ObjectMeta` does) cost dozens of allocations per event for a member no
/// part of the collector reads.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RawMeta {
    pub name: Option<String>,
    pub namespace: Option<String>,
    pub uid: Option<String>,
    pub resource_version: Option<String>,
    /// As sent; `normalize` validates it like the other timestamps.
    pub creation_timestamp: Option<String>,
    pub labels: Option<BTreeMap<String, String>>,
    pub annotations: Option<BTreeMap<String, String>>,
    /// Every other member, in the order received.
    pub other: Vec<RawMember>,
}

/// A `metadata` member the collector does not read: its name and JSON text.
#[derive(Debug, Clone)]
pub struct RawMember(pub String, pub Box<RawValue>);

impl PartialEq for RawMember {
    fn eq(&self, other: &Self) -> bool {
        self.0 == other.0 && self.1.get() == other.1.get()
    }
}

impl<'de> Deserialize<'de> for RawMeta {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct MetaVisitor;
        impl<'de> Visitor<'de> for MetaVisitor {
            type Value = RawMeta;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object's metadata")
            }
            fn visit_unit<E>(self) -> Result<RawMeta, E> {
                Ok(RawMeta::default())
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawMeta, A::Error> {
                let mut m = RawMeta::default();
                while let Some(key) = map.next_key::<MetaKey>()? {
                    match key {
                        MetaKey::Name => m.name = map.next_value()?,
                        MetaKey::Namespace => m.namespace = map.next_value()?,
                        MetaKey::Uid => m.uid = map.next_value()?,
                        MetaKey::ResourceVersion => m.resource_version = map.next_value()?,
                        MetaKey::CreationTimestamp => m.creation_timestamp = map.next_value()?,
                        MetaKey::Labels => m.labels = map.next_value()?,
                        MetaKey::Annotations => m.annotations = map.next_value()?,
                        MetaKey::Other(k) => m.other.push(RawMember(k, map.next_value()?)),
                    }
                }
                Ok(m)
            }
        }
        d.deserialize_any(MetaVisitor)
    }
}

/// A `metadata` member's name; only an unknown one is copied.
enum MetaKey {
    Name,
    Namespace,
    Uid,
    ResourceVersion,
    CreationTimestamp,
    Labels,
    Annotations,
    Other(String),
}

impl<'de> Deserialize<'de> for MetaKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl Visitor<'_> for KeyVisitor {
            type Value = MetaKey;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a member name")
            }
            fn visit_str<E>(self, k: &str) -> Result<MetaKey, E> {
                Ok(match k {
                    "name" => MetaKey::Name,
                    "namespace" => MetaKey::Namespace,
                    "uid" => MetaKey::Uid,
                    "resourceVersion" => MetaKey::ResourceVersion,
                    "creationTimestamp" => MetaKey::CreationTimestamp,
                    "labels" => MetaKey::Labels,
                    "annotations" => MetaKey::Annotations,
                    other => MetaKey::Other(other.to_string()),
                })
            }
        }
        d.deserialize_identifier(KeyVisitor)
    }
}

impl Serialize for RawMeta {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(None)?;
        let strings = [
            ("name", &self.name),
            ("namespace", &self.namespace),
            ("uid", &self.uid),
            ("resourceVersion", &self.resource_version),
            ("creationTimestamp", &self.creation_timestamp),
        ];
        for (k, v) in strings {
            if let Some(v) = v {
                map.serialize_entry(k, v)?;
            }
        }
        for (k, v) in [("labels", &self.labels), ("annotations", &self.annotations)] {
            if let Some(v) = v {
                map.serialize_entry(k, v)?;
            }
        }
        for RawMember(k, v) in &self.other {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

/// An Event as served by core/v1 or events.k8s.io/v1.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct RawEvent {
    pub api_version: Option<String>,
    pub kind: Option<String>,
    pub metadata: RawMeta,
    // Both APIs.
    pub action: Option<String>,
    pub reason: Option<String>,
    #[serde(rename = "type")]
    pub type_: Option<String>,
    pub event_time: Option<String>,
    pub related: Option<RawObjectRef>,
    pub reporting_instance: Option<String>,
    pub series: Option<RawSeries>,
    // core/v1 only.
    pub message: Option<String>,
    pub count: Option<i64>,
    pub first_timestamp: Option<String>,
    pub last_timestamp: Option<String>,
    pub involved_object: Option<RawObjectRef>,
    pub source: Option<RawSource>,
    pub reporting_component: Option<String>,
    // events.k8s.io/v1 only.
    pub note: Option<String>,
    pub regarding: Option<RawObjectRef>,
    pub reporting_controller: Option<String>,
    pub deprecated_count: Option<i64>,
    pub deprecated_first_timestamp: Option<String>,
    pub deprecated_last_timestamp: Option<String>,
    pub deprecated_source: Option<RawSource>,
}

impl RawEvent {
    /// "namespace/name (uid …)", for error messages and logs.
    pub fn describe(&self) -> String {
        let m = &self.metadata;
        format!(
            "{}/{} (uid {})",
            m.namespace.as_deref().unwrap_or("-"),
            m.name.as_deref().unwrap_or("-"),
            m.uid.as_deref().unwrap_or("unknown")
        )
    }

    /// The labels and annotations, taken out of the metadata.
    pub fn take_labels(&mut self) -> (BTreeMap<String, String>, BTreeMap<String, String>) {
        (
            self.metadata.labels.take().unwrap_or_default(),
            self.metadata.annotations.take().unwrap_or_default(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn managed() -> serde_json::Value {
        json!([{"manager": "kubelet", "operation": "Update", "apiVersion": "v1",
                "time": "2026-11-22T16:52:49Z", "fieldsType": "FieldsV1",
                "fieldsV1": {"f:count": {}, "f:involvedObject": {"f:kind": {}, "f:name": {}}, "f:reason": {}}}])
    }

    #[test]
    fn metadata_members_not_read_are_kept_as_text() {
        let meta = json!({"name": "web-1.17a", "generateName": "web-", "namespace": "shop",
            "uid": "u-1", "resourceVersion": "812", "creationTimestamp": "2026-11-22T16:52:49Z",
            "labels": {"app": "web"}, "managedFields": managed(),
            "ownerReferences": [{"kind": "Pod", "name": "web-1", "uid": "p-1", "apiVersion": "v1"}]});
        let text = json!({"kind": "Event", "apiVersion": "v1", "metadata": meta, "reason": "BackOff"}).to_string();
        let raw: RawEvent = serde_json::from_str(&text).expect("decodes");
        let m = &raw.metadata;
        assert_eq!(m.name.as_deref(), Some("web-1.17a"));
        assert_eq!(m.uid.as_deref(), Some("u-1"));
        assert_eq!(m.resource_version.as_deref(), Some("812"));
        assert_eq!(m.creation_timestamp.as_deref(), Some("2026-11-22T16:52:49Z"));
        assert_eq!(
            m.labels.as_ref().and_then(|l| l.get("app")).map(String::as_str),
            Some("web")
        );
        assert!(m.annotations.is_none());
        let names: Vec<&str> = m.other.iter().map(|RawMember(k, _)| k.as_str()).collect();
        assert_eq!(names, ["generateName", "managedFields", "ownerReferences"]);
        // Unparsed, and given back whole when the object is serialized (include_raw).
        let back = serde_json::to_value(&raw).expect("serializes");
        assert_eq!(back["metadata"], meta);
        // The same from a JSON tree (`event-collector explain`).
        let from_tree: RawEvent = serde_json::from_str::<serde_json::Value>(&text)
            .and_then(serde_json::from_value)
            .expect("decodes from a tree");
        assert_eq!(from_tree, raw);
    }

    #[test]
    fn metadata_null_or_absent_or_wrongly_typed() {
        let raw: RawEvent = serde_json::from_value(json!({"metadata": null})).expect("null metadata");
        assert_eq!(raw.metadata, RawMeta::default());
        let raw: RawEvent = serde_json::from_value(json!({"metadata": {"name": null}})).expect("null member");
        assert_eq!(raw.metadata.name, None);
        let err = serde_json::from_str::<RawEvent>(r#"{"metadata": {"uid": 7}}"#).unwrap_err();
        assert!(err.to_string().contains("invalid type: integer `7`"), "{err}");
        let err = serde_json::from_str::<RawEvent>(r#"{"metadata": ["x"]}"#).unwrap_err();
        assert!(err.to_string().contains("an object's metadata"), "{err}");
    }
}
