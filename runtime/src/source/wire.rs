//! An Event object as it comes off the wire, decoded per object: one that
//! does not decode (wrong field types, or an object that is not an Event) is
//! kept as [`Malformed`] with its uid, so the source can skip and name it
//! while the watch goes on.

use std::borrow::Cow;
use std::sync::OnceLock;

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
    /// Boxed, so a page of them is small beside the events themselves.
    pub parsed: Result<Box<RawEvent>, Malformed>,
    /// What kube's `Resource` API reads of an object: its resourceVersion,
    /// also for one that did not decode. Built on first use only: the
    /// collector's own watch machine never asks, so no event pays for it.
    meta: OnceLock<Box<ObjectMeta>>,
}

impl WireEvent {
    pub fn ok(raw: RawEvent) -> Self {
        Self::new(Ok(Box::new(raw)))
    }

    fn new(parsed: Result<Box<RawEvent>, Malformed>) -> Self {
        Self {
            parsed,
            meta: OnceLock::new(),
        }
    }

    /// The object's metadata as kube's `ObjectMeta` (its resourceVersion only).
    fn kube_meta(&self) -> Box<ObjectMeta> {
        let resource_version = match &self.parsed {
            Ok(raw) => raw.metadata.resource_version.clone(),
            Err(m) => m.resource_version.clone(),
        };
        Box::new(ObjectMeta {
            resource_version,
            ..ObjectMeta::default()
        })
    }

    /// Decodes one object; never fails.
    pub fn from_value(v: Value) -> Self {
        let parsed = match Box::<RawEvent>::deserialize(&v) {
            Ok(raw) => checked(raw),
            Err(e) => Err(e.to_string()),
        };
        Self::with_fallback(parsed, || v)
    }

    /// Decodes one object from its JSON text: parsed once, straight into the
    /// wire type. The generic JSON tree is built only for an object that
    /// fails, to name it in the error.
    pub fn from_json(text: &[u8]) -> Self {
        let parsed = match serde_json::from_slice::<Box<RawEvent>>(text) {
            Ok(raw) => checked(raw),
            Err(e) => Err(e.to_string()),
        };
        Self::with_fallback(parsed, || serde_json::from_slice(text).unwrap_or(Value::Null))
    }

    fn with_fallback(parsed: Result<Box<RawEvent>, String>, value: impl FnOnce() -> Value) -> Self {
        let parsed = parsed.map_err(|error| {
            let v = value();
            let s = |p: &str| v.pointer(p).and_then(Value::as_str).map(str::to_string);
            Malformed {
                uid: s("/metadata/uid"),
                resource_version: s("/metadata/resourceVersion"),
                name: format!(
                    "{}/{}",
                    s("/metadata/namespace").unwrap_or_else(|| "-".into()),
                    s("/metadata/name").unwrap_or_else(|| "-".into())
                ),
                error,
            }
        });
        Self::new(parsed)
    }
}

/// An object that decoded, if it is an Event of an API we know.
fn checked(raw: Box<RawEvent>) -> Result<Box<RawEvent>, String> {
    match (raw.kind.as_deref(), raw.api_version.as_deref()) {
        (Some(k), _) if k != "Event" => Err(format!("unexpected kind {k}")),
        (_, Some(a)) if crate::event::Api::from_api_version(a).is_none() => Err(format!("unexpected apiVersion {a}")),
        _ => Ok(raw),
    }
}

impl<'de> Deserialize<'de> for WireEvent {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // The object's text (validated JSON, not a tree), then one typed parse of it.
        let text = Box::<serde_json::value::RawValue>::deserialize(d)?;
        Ok(WireEvent::from_json(text.get().as_bytes()))
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
        self.meta.get_or_init(|| self.kube_meta())
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        if self.meta.get().is_none() {
            self.meta = OnceLock::from(self.kube_meta());
        }
        self.meta.get_mut().unwrap_or_else(|| unreachable!("set just above"))
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
        assert_eq!(kube::Resource::meta(&good).resource_version.as_deref(), Some("5"));
        assert_eq!(good.parsed.unwrap().count, Some(2));
        let bad = WireEvent::from_value(
            json!({"metadata":{"uid":"u2","name":"n","namespace":"ns","resourceVersion":"6"},"count":"many"}),
        );
        let m = bad.parsed.clone().unwrap_err();
        assert_eq!(m.uid.as_deref(), Some("u2"));
        assert_eq!(m.resource_version.as_deref(), Some("6"));
        assert!(m.to_string().starts_with("ns/n (uid u2): "), "{m}");
        // kube's watcher still learns its resourceVersion.
        assert_eq!(kube::Resource::meta(&bad).resource_version.as_deref(), Some("6"));
        let unknown = WireEvent::from_value(json!({"kind":"ConfigMap","apiVersion":"v1","metadata":{"uid":"u3"}}));
        assert!(unknown.parsed.unwrap_err().error.contains("unexpected kind ConfigMap"));
    }

    #[test]
    fn decoded_from_text_as_from_a_tree() {
        let objects = [
            json!({"kind":"Event","apiVersion":"events.k8s.io/v1","metadata":{"uid":"u1","resourceVersion":"5","labels":{"a":"b"}},"note":"n\u{e9}\n \"q\"","regarding":{"kind":"Pod","name":"p"}}),
            json!({"metadata":{"uid":"u2","name":"n","namespace":"ns","resourceVersion":"6"},"count":"many"}),
            json!({"kind":"Event","apiVersion":"apps/v1","metadata":{"uid":"u4"}}),
        ];
        for v in objects {
            let text = v.to_string();
            let (a, b) = (WireEvent::from_json(text.as_bytes()), WireEvent::from_value(v));
            match (a.parsed, b.parsed) {
                (Ok(a), Ok(b)) => assert_eq!(a, b, "{text}"),
                // From text the error also says where: "... at line 1 column 15".
                (Err(a), Err(b)) => {
                    assert_eq!(
                        (&a.uid, &a.resource_version, &a.name),
                        (&b.uid, &b.resource_version, &b.name)
                    );
                    assert!(a.error.starts_with(&b.error), "{} / {}", a.error, b.error);
                }
                (a, b) => panic!("{text}: {a:?} / {b:?}"),
            }
        }
    }

    #[test]
    fn a_list_of_objects_decodes_each_on_its_own() {
        // As kube reads a list page: one bad item does not fail the others.
        let page = r#"[{"kind":"Event","apiVersion":"v1","metadata":{"uid":"a"}},{"metadata":{"uid":"b","name":"x","namespace":"y"},"count":[1]},{"kind":"Event","apiVersion":"v1","metadata":{"uid":"c"},"count":3}]"#;
        let items: Vec<WireEvent> = serde_json::from_str(page).unwrap();
        assert_eq!(items.len(), 3);
        assert!(items[0].parsed.is_ok());
        assert_eq!(items[1].parsed.as_ref().unwrap_err().uid.as_deref(), Some("b"));
        assert_eq!(items[2].parsed.as_ref().unwrap().count, Some(3));
    }
}
