//! The normalized Event: one JSON schema for both Kubernetes Event APIs.
//!
//! This module owns the schema (documented field by field in
//! `docs/event-schema.md`), the wire type it is made from ([`raw`]) and the
//! one conversion between them ([`normalize`]). Everything downstream —
//! filters, routes, exporters — sees only [`Event`].

pub mod json;
pub mod normalize;
pub mod raw;

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

pub use normalize::{NormalizeError, NormalizeOptions, normalize, occurrence_count};
pub use raw::{Api, RawEvent};

/// Bumped whenever a field changes meaning or disappears.
pub const SCHEMA_VERSION: u32 = 1;

/// How the source saw this version of the event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum WatchType {
    /// First seen: in the initial list or as a watch ADDED.
    Added,
    /// Seen before, and its count went up: a new occurrence.
    Modified,
    /// Removed from the API server (TTL expiry); exported only if configured.
    Deleted,
}

/// The object an event is about (core `involvedObject`, v1 `regarding`), or a related one.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ObjectRef {
    pub kind: Option<String>,
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub uid: Option<String>,
    pub api_version: Option<String>,
    pub field_path: Option<String>,
    pub resource_version: Option<String>,
}

/// One occurrence of a Kubernetes Event, the same whichever API it came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Event {
    pub schema_version: u32,
    pub cluster: Arc<str>,
    pub api: Api,
    pub watch_type: WatchType,
    pub uid: String,
    pub resource_version: String,
    pub name: String,
    pub namespace: String,
    #[serde(rename = "type")]
    pub type_: Option<String>,
    pub reason: Option<String>,
    pub message: Option<String>,
    pub note: Option<String>,
    pub action: Option<String>,
    pub object: ObjectRef,
    pub related: Option<ObjectRef>,
    pub reporting_controller: Option<String>,
    pub reporting_instance: Option<String>,
    pub count: u64,
    pub count_delta: u64,
    pub first_timestamp: Option<String>,
    pub last_timestamp: Option<String>,
    pub timestamp: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    /// Free-form fields added by enrichers.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub extra: Map<String, Value>,
    /// The object as the API server sent it, when `source.include_raw` is on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw: Option<Value>,
}

impl Event {
    /// The involved object's kind, or "" when the server sent none.
    pub fn kind(&self) -> &str {
        self.object.kind.as_deref().unwrap_or("")
    }

    /// "namespace/name (uid …)", for error messages.
    pub fn describe(&self) -> String {
        format!("{}/{} (uid {})", self.namespace, self.name, self.uid)
    }
}
