//! An Event object as it comes off the wire, decoded per object: one that
//! does not decode (wrong field types, or an object that is not an Event) is
//! kept as [`Malformed`] with its uid, so the source can skip and name it
//! while the watch goes on.

use std::borrow::Cow;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::core::ApiResource;
use serde::{Deserialize, Deserializer};
use serde_json::Value;

use crate::event::RawEvent;

/// An object that could not be read as an Event.
#[derive(Debug, Clone, PartialEq)]
pub struct Malformed {
    pub uid: Option<String>,
    pub resource_version: Option<String>,
    /// namespace/name, for the log line.
    pub name: String,
    pub error: String,
}

impl std::fmt::Display for Malformed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} (uid {}): {}",
            self.name,
            self.uid.as_deref().unwrap_or("unknown"),
            self.error
        )
    }
}

/// One object from a list or a watch.
#[derive(Debug, Clone)]
pub struct WireEvent {
    pub parsed: Result<RawEvent, Malformed>,
    fallback: ObjectMeta,
}

impl WireEvent {
    pub fn ok(raw: RawEvent) -> Self {
        Self {
            parsed: Ok(raw),
            fallback: ObjectMeta::default(),
        }
    }

    /// Decodes one object; never fails.
    pub fn from_value(v: Value) -> Self {
        let s = |p: &str| v.pointer(p).and_then(Value::as_str).map(str::to_string);
        let kind_error = match (s("/kind"), s("/apiVersion")) {
            (Some(k), _) if k != "Event" => Some(format!("unexpected kind {k}")),
            (_, Some(a)) if crate::event::Api::from_api_version(&a).is_none() => {
                Some(format!("unexpected apiVersion {a}"))
            }
            _ => None,
        };
        let parsed = match kind_error {
            None => RawEvent::deserialize(&v).map_err(|e| e.to_string()),
            Some(e) => Err(e),
        };
        let parsed = parsed.map_err(|error| Malformed {
            uid: s("/metadata/uid"),
            resource_version: s("/metadata/resourceVersion"),
            name: format!(
                "{}/{}",
                s("/metadata/namespace").unwrap_or_else(|| "-".into()),
                s("/metadata/name").unwrap_or_else(|| "-".into())
            ),
            error,
        });
        Self {
            parsed,
            fallback: ObjectMeta::default(),
        }
    }
}

impl<'de> Deserialize<'de> for WireEvent {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Value::deserialize(d).map(WireEvent::from_value)
    }
}

impl kube::Resource for WireEvent {
    type DynamicType = ApiResource;
    type Scope = kube::core::DynamicResourceScope;

    fn kind(dt: &ApiResource) -> Cow<'_, str> {
        dt.kind.as_str().into()
    }
    fn group(dt: &ApiResource) -> Cow<'_, str> {
        dt.group.as_str().into()
    }
    fn version(dt: &ApiResource) -> Cow<'_, str> {
        dt.version.as_str().into()
    }
    fn api_version(dt: &ApiResource) -> Cow<'_, str> {
        dt.api_version.as_str().into()
    }
    fn plural(dt: &ApiResource) -> Cow<'_, str> {
        dt.plural.as_str().into()
    }
    fn meta(&self) -> &ObjectMeta {
        match &self.parsed {
            Ok(r) => &r.metadata,
            Err(_) => &self.fallback,
        }
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        match &mut self.parsed {
            Ok(r) => &mut r.metadata,
            Err(_) => &mut self.fallback,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn good_bad_and_unknown_objects() {
        let good = WireEvent::from_value(
            json!({"kind":"Event","apiVersion":"v1","metadata":{"uid":"u1","resourceVersion":"5"},"count":2}),
        );
        assert_eq!(good.parsed.unwrap().count, Some(2));
        let bad = WireEvent::from_value(
            json!({"metadata":{"uid":"u2","name":"n","namespace":"ns","resourceVersion":"6"},"count":"many"}),
        );
        let m = bad.parsed.unwrap_err();
        assert_eq!(m.uid.as_deref(), Some("u2"));
        assert_eq!(m.resource_version.as_deref(), Some("6"));
        assert!(m.to_string().starts_with("ns/n (uid u2): "), "{m}");
        let unknown = WireEvent::from_value(json!({"kind":"ConfigMap","apiVersion":"v1","metadata":{"uid":"u3"}}));
        assert!(unknown.parsed.unwrap_err().error.contains("unexpected kind ConfigMap"));
    }
}
