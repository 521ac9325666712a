//! What differs between servers, and the bodies of the startup requests:
//! flavour and version from `GET /`, the headers to send, the index template
//! (composable or legacy), the ILM policy (Elasticsearch) and the ISM policy
//! (OpenSearch). Pure functions, unit-tested against the documented shapes.

use std::time::Duration;

use serde_json::{Value, json};

/// Which server family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Flavor {
    /// Ask the server (`GET /`).
    #[default]
    Auto,
    Elasticsearch,
    Opensearch,
}

/// A server version, `major.minor.patch`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version(pub u32, pub u32, pub u32);

impl Version {
    /// Parses "8.15.3", "7.10.2-SNAPSHOT", "3.0.0-alpha1".
    pub fn parse(s: &str) -> Option<Version> {
        let mut parts = s.split('.').map(|p| {
            let digits: String = p.chars().take_while(char::is_ascii_digit).collect();
            digits.parse::<u32>().ok()
        });
        let major = parts.next()??;
        let minor = parts.next().flatten().unwrap_or(0);
        let patch = parts.next().flatten().unwrap_or(0);
        Some(Version(major, minor, patch))
    }
}

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}.{}", self.0, self.1, self.2)
    }
}

/// How labels and annotations are mapped so that `app` and
/// `app.kubernetes.io/name` never collide.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LabelsMapping {
    /// Elasticsearch 7.3+: one field per map, every key searchable as `labels.<key>`.
    Flattened,
    /// OpenSearch 2.7+: the same idea, `flat_object`.
    FlatObject,
    /// Older servers: kept in `_source`, not indexed (still no collision).
    Disabled,
}

/// The server as detected at startup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerInfo {
    pub flavor: Flavor,
    pub version: Version,
    /// False when `GET /` was forbidden and the flavour came from the config.
    pub detected: bool,
}

impl ServerInfo {
    /// Reads the body of `GET /`: OpenSearch says `version.distribution = "opensearch"`.
    pub fn from_root(body: &Value) -> Result<ServerInfo, String> {
        let version = body.get("version").ok_or("no `version` in the answer to GET /")?;
        let number = version
            .get("number")
            .and_then(Value::as_str)
            .ok_or("no `version.number` in the answer to GET /")?;
        let version_num = Version::parse(number).ok_or_else(|| format!("cannot read version `{number}`"))?;
        let flavor = if version.get("distribution").and_then(Value::as_str) == Some("opensearch") {
            Flavor::Opensearch
        } else {
            Flavor::Elasticsearch
        };
        Ok(ServerInfo {
            flavor,
            version: version_num,
            detected: true,
        })
    }

    /// A server whose `GET /` is forbidden: assume a current version of the configured flavour.
    pub fn assumed(flavor: Flavor) -> ServerInfo {
        let version = match flavor {
            Flavor::Opensearch => Version(2, 7, 0),
            _ => Version(8, 0, 0),
        };
        ServerInfo {
            flavor,
            version,
            detected: false,
        }
    }

    pub fn is_opensearch(&self) -> bool {
        self.flavor == Flavor::Opensearch
    }

    pub fn name(&self) -> &'static str {
        if self.is_opensearch() {
            "OpenSearch"
        } else {
            "Elasticsearch"
        }
    }

    /// Elasticsearch 8+ gets REST API compatibility headers pinned to the
    /// major version seen at startup, so request and response shapes stay the
    /// same through a rolling upgrade. OpenSearch refuses them (406).
    pub fn compat_major(&self) -> Option<u32> {
        (self.flavor == Flavor::Elasticsearch && self.version.0 >= 8).then_some(self.version.0)
    }

    /// Content-Type (and Accept) for JSON bodies.
    pub fn json_content_type(&self) -> String {
        match self.compat_major() {
            Some(m) => format!("application/vnd.elasticsearch+json; compatible-with={m}"),
            None => "application/json".into(),
        }
    }

    /// Content-Type for bulk (ndjson) bodies.
    pub fn ndjson_content_type(&self) -> String {
        match self.compat_major() {
            Some(m) => format!("application/vnd.elasticsearch+x-ndjson; compatible-with={m}"),
            None => "application/x-ndjson".into(),
        }
    }

    /// Composable index templates (`_index_template`) exist on Elasticsearch
    /// 7.8+ and every OpenSearch; older Elasticsearch has only `_template`.
    pub fn composable_templates(&self) -> bool {
        self.is_opensearch() || self.version >= Version(7, 8, 0)
    }

    pub fn labels_mapping(&self) -> LabelsMapping {
        match self.flavor {
            Flavor::Opensearch if self.version >= Version(2, 7, 0) => LabelsMapping::FlatObject,
            Flavor::Elasticsearch if self.version >= Version(7, 3, 0) => LabelsMapping::Flattened,
            _ => LabelsMapping::Disabled,
        }
    }

    /// ILM's per-shard rollover condition exists since Elasticsearch 7.13.
    pub fn ilm_primary_shard_size(&self) -> bool {
        self.version >= Version(7, 13, 0)
    }
}

/// How documents are addressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IndexMode {
    /// Plain indices, usually date-templated (`k8s-events-%Y.%m.%d`).
    #[default]
    Index,
    /// A write alias over `<alias>-000001`, `-000002`, … rolled over by ILM/ISM.
    Alias,
    /// A data stream (`@timestamp` in every document, `create` only).
    DataStream,
}

/// The lifecycle the template should attach to new indices.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lifecycle {
    /// Elasticsearch ILM: `index.lifecycle.name` (and the rollover alias in alias mode).
    Ilm { policy: String },
    /// OpenSearch ISM: the policy attaches itself through `ism_template`; alias
    /// mode still needs the rollover alias setting.
    Ism,
}

/// Everything the index template depends on.
#[derive(Debug, Clone)]
pub struct TemplateParams {
    pub patterns: Vec<String>,
    pub priority: u32,
    pub shards: u32,
    pub replicas: Option<u32>,
    pub labels: LabelsMapping,
    pub mode: IndexMode,
    /// The write alias (alias mode).
    pub alias: Option<String>,
    pub lifecycle: Option<Lifecycle>,
}

/// The mappings: keywords for what people filter on, `message` as text with
/// a keyword subfield, dates as dates, labels/annotations as one flattened
/// field each, `extra` dynamic with strings as keywords and no date guessing,
/// `raw` kept but not indexed, and `dynamic: false` at the top so a new
/// top-level field is kept in `_source` without growing the mapping.
pub fn mappings(labels: LabelsMapping) -> Value {
    let kw = || json!({"type": "keyword", "ignore_above": 1024});
    let date = || json!({"type": "date"});
    let obj_ref = || {
        json!({"properties": {
            "kind": kw(), "namespace": kw(), "name": kw(), "uid": kw(),
            "api_version": kw(), "field_path": kw(), "resource_version": kw()
        }})
    };
    let labels_map = match labels {
        LabelsMapping::Flattened => json!({"type": "flattened", "ignore_above": 1024}),
        LabelsMapping::FlatObject => json!({"type": "flat_object"}),
        LabelsMapping::Disabled => json!({"type": "object", "enabled": false}),
    };
    json!({
        "dynamic": false,
        "date_detection": false,
        "dynamic_templates": [
            {"extra_strings": {
                "path_match": "extra.*",
                "match_mapping_type": "string",
                "mapping": {"type": "keyword", "ignore_above": 1024}
            }}
        ],
        "properties": {
            "@timestamp": date(),
            "schema_version": {"type": "integer"},
            "cluster": kw(),
            "api": kw(),
            "watch_type": kw(),
            "uid": kw(),
            "resource_version": kw(),
            "name": kw(),
            "namespace": kw(),
            "type": kw(),
            "reason": kw(),
            "message": {"type": "text", "fields": {"keyword": {"type": "keyword", "ignore_above": 1024}}},
            "note": {"type": "text", "index": false},
            "action": kw(),
            "object": obj_ref(),
            "related": obj_ref(),
            "reporting_controller": kw(),
            "reporting_instance": kw(),
            "count": {"type": "long"},
            "count_delta": {"type": "long"},
            "first_timestamp": date(),
            "last_timestamp": date(),
            "timestamp": date(),
            "labels": labels_map.clone(),
            "annotations": labels_map,
            "extra": {"type": "object", "dynamic": true},
            "raw": {"type": "object", "enabled": false}
        }
    })
}

/// The template's index settings (shards, replicas, lifecycle).
fn settings(p: &TemplateParams) -> Value {
    let mut s = serde_json::Map::new();
    s.insert("index.number_of_shards".into(), json!(p.shards));
    if let Some(r) = p.replicas {
        s.insert("index.number_of_replicas".into(), json!(r));
    }
    match &p.lifecycle {
        Some(Lifecycle::Ilm { policy }) => {
            s.insert("index.lifecycle.name".into(), json!(policy));
            if let (IndexMode::Alias, Some(alias)) = (p.mode, &p.alias) {
                s.insert("index.lifecycle.rollover_alias".into(), json!(alias));
            }
        }
        Some(Lifecycle::Ism) => {
            if let (IndexMode::Alias, Some(alias)) = (p.mode, &p.alias) {
                s.insert("plugins.index_state_management.rollover_alias".into(), json!(alias));
            }
        }
        None => {}
    }
    Value::Object(s)
}

/// `PUT _index_template/<name>` (composable, Elasticsearch 7.8+ and OpenSearch).
pub fn composable_template(p: &TemplateParams) -> Value {
    let mut t = json!({
        "index_patterns": p.patterns,
        "priority": p.priority,
        "template": {
            "settings": settings(p),
            "mappings": mappings(p.labels)
        },
        "_meta": {"managed_by": "event-collector", "schema_version": 1}
    });
    if p.mode == IndexMode::DataStream {
        t["data_stream"] = json!({});
    }
    t
}

/// `PUT _template/<name>` (legacy, Elasticsearch before 7.8).
pub fn legacy_template(p: &TemplateParams) -> Value {
    json!({
        "index_patterns": p.patterns,
        "order": p.priority,
        "settings": settings(p),
        "mappings": mappings(p.labels)
    })
}

/// Renders a duration in Elasticsearch time units, in the largest whole unit.
pub fn time_unit(d: Duration) -> String {
    let s = d.as_secs();
    if s == 0 {
        return format!("{}ms", d.as_millis());
    }
    if s.is_multiple_of(86_400) {
        format!("{}d", s / 86_400)
    } else if s.is_multiple_of(3600) {
        format!("{}h", s / 3600)
    } else if s.is_multiple_of(60) {
        format!("{}m", s / 60)
    } else {
        format!("{s}s")
    }
}

/// Rollover conditions (alias and data-stream modes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rollover {
    pub max_age: Duration,
    pub max_primary_shard_bytes: u64,
}

/// `PUT _ilm/policy/<name>`: roll over (when `rollover` is set), then delete
/// `retention` after the rollover (or, for a date-templated index, after
/// its creation).
pub fn ilm_policy(rollover: Option<Rollover>, retention: Duration, per_shard_size: bool) -> Value {
    let mut phases = serde_json::Map::new();
    if let Some(r) = rollover {
        let size_key = if per_shard_size {
            "max_primary_shard_size"
        } else {
            "max_size"
        };
        phases.insert(
            "hot".into(),
            json!({"min_age": "0ms", "actions": {"rollover": {
                "max_age": time_unit(r.max_age),
                size_key: format!("{}b", r.max_primary_shard_bytes)
            }}}),
        );
    }
    phases.insert(
        "delete".into(),
        json!({"min_age": time_unit(retention), "actions": {"delete": {}}}),
    );
    json!({"policy": {"phases": phases}})
}

/// `PUT _plugins/_ism/policies/<name>`: a `hot` state (rolling over when
/// `rollover` is set) that moves to `delete` once the index is `retention`
/// old; `ism_template` attaches it to new indices matching `patterns`.
pub fn ism_policy(rollover: Option<Rollover>, retention: Duration, patterns: &[String], priority: u32) -> Value {
    let hot_actions = match rollover {
        Some(r) => json!([{"rollover": {
            "min_index_age": time_unit(r.max_age),
            "min_primary_shard_size": format!("{}b", r.max_primary_shard_bytes)
        }}]),
        None => json!([]),
    };
    json!({"policy": {
        "description": "event-collector: Kubernetes events, deleted after the retention period",
        "default_state": "hot",
        "states": [
            {
                "name": "hot",
                "actions": hot_actions,
                "transitions": [{"state_name": "delete", "conditions": {"min_index_age": time_unit(retention)}}]
            },
            {"name": "delete", "actions": [{"delete": {}}], "transitions": []}
        ],
        "ism_template": {"index_patterns": patterns, "priority": priority}
    }})
}

/// The body that creates the first index behind a write alias.
pub fn bootstrap_index(alias: &str) -> Value {
    json!({"aliases": {alias: {"is_write_index": true}}})
}

/// The index patterns of the template for `mode` (and of the ISM policy,
/// which also needs the hidden backing indices of a data stream).
pub fn template_patterns(mode: IndexMode, prefix: &str, dated: bool) -> Vec<String> {
    match mode {
        IndexMode::Index if dated => vec![format!("{prefix}*")],
        IndexMode::Index => vec![prefix.to_string()],
        IndexMode::Alias => vec![format!("{prefix}-*")],
        IndexMode::DataStream => vec![prefix.to_string()],
    }
}

pub fn ism_patterns(mode: IndexMode, patterns: &[String], name: &str) -> Vec<String> {
    let mut p = patterns.to_vec();
    if mode == IndexMode::DataStream {
        p.push(format!(".ds-{name}-*"));
    }
    p
}
