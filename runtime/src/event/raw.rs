//! The wire form of an Event as either API serves it, parsed once and leniently.
//!
//! One struct covers the union of core/v1 and events.k8s.io/v1 fields, so a
//! single watch type serves both APIs, and a missing or null field is `None`
//! instead of a decode error that would lose the whole object. Timestamps stay
//! strings here; `normalize` validates them.

use std::borrow::Cow;
use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::core::{ApiResource, GroupVersionKind};
use serde::{Deserialize, Serialize};

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

/// An Event as served by core/v1 or events.k8s.io/v1.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct RawEvent {
    pub api_version: Option<String>,
    pub kind: Option<String>,
    pub metadata: ObjectMeta,
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

impl kube::Resource for RawEvent {
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
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}
