//! `[[exporters]]`: each table is a `name`, a `type`, the pipeline settings
//! every exporter shares ([`ExporterCommon`]), and the type's own keys, read
//! by that exporter's config struct in the exporters crate. Both halves are
//! deserialized from the original spans, so errors point at the exact key.

use std::collections::HashSet;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use event_collector_exporters::elasticsearch::ElasticsearchConfig;
use event_collector_exporters::kafka::KafkaConfig;
use event_collector_exporters::{stdout::StdoutConfig, units, volume::VolumeConfig};
use serde::Deserialize;
use toml::Spanned;
use toml::de::{DeTable, DeValue, ValueDeserializer};

use super::{Problems, de_str};

/// Pipeline settings shared by every exporter type.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExporterCommon {
    /// Most events in one batch handed to the exporter.
    pub batch_max_events: usize,
    /// Longest a partial batch waits for more events.
    #[serde(deserialize_with = "units::de_duration")]
    pub batch_timeout: Duration,
    /// Most events waiting in memory for this exporter; when full, `overflow` decides.
    pub queue_max_events: usize,
    /// Most bytes (of event JSON) waiting in memory for this exporter; when full, `overflow` decides.
    #[serde(deserialize_with = "units::de_size")]
    pub queue_max_bytes: u64,
    /// What a full queue does. None only before `parse_one` fills in the
    /// type's default ([`Overflow::default_for`]).
    pub overflow: Option<Overflow>,
    /// Directory of the on-disk queue (`overflow = "spill"`). Relative paths
    /// are relative to the config file's directory; `setup` fills in the
    /// default `state/spill/<exporter name>` there.
    pub spill_dir: Option<PathBuf>,
    /// Most bytes the on-disk queue may hold; beyond it, a full queue blocks.
    #[serde(deserialize_with = "units::de_size")]
    pub spill_max_bytes: u64,
    /// First retry delay after a failed batch; doubles up to `retry_max_backoff`, with jitter.
    #[serde(deserialize_with = "units::de_duration")]
    pub retry_initial_backoff: Duration,
    #[serde(deserialize_with = "units::de_duration")]
    pub retry_max_backoff: Duration,
    /// Another exporter that receives the records this one refuses for good,
    /// each wrapped with the error. Without it, such records are counted as
    /// dropped and logged.
    pub dead_letter: Option<String>,
}

impl Default for ExporterCommon {
    fn default() -> Self {
        Self {
            batch_max_events: 1000,
            batch_timeout: Duration::from_millis(100),
            queue_max_events: 10_000,
            queue_max_bytes: 8 << 20,
            overflow: None,
            spill_dir: None,
            spill_max_bytes: 1 << 30,
            retry_initial_backoff: Duration::from_millis(100),
            retry_max_backoff: Duration::from_secs(30),
            dead_letter: None,
        }
    }
}

const COMMON_KEYS: &[&str] = &[
    "batch_max_events",
    "batch_timeout",
    "queue_max_events",
    "queue_max_bytes",
    "overflow",
    "spill_dir",
    "spill_max_bytes",
    "retry_initial_backoff",
    "retry_max_backoff",
    "dead_letter",
];

/// What an exporter's full queue does with the next event (`overflow`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Overflow {
    /// Wait for room: backpressure reaches the watch, and the checkpoint
    /// (which does not move past unexported events) protects them.
    Block,
    /// Drop the event that does not fit (counted and logged; acknowledged, so the checkpoint moves).
    DropNewest,
    /// Drop the oldest queued event to make room (counted and logged; acknowledged).
    DropOldest,
    /// Write it to the exporter's on-disk queue (`spill_dir`); block once `spill_max_bytes` is reached.
    Spill,
}

impl Overflow {
    /// `spill` for the network sinks (Kafka, Elasticsearch), `block` for the local ones.
    pub fn default_for(kind: &ExporterKind) -> Overflow {
        match kind {
            ExporterKind::Kafka(_) | ExporterKind::Elasticsearch(_) => Overflow::Spill,
            ExporterKind::Volume(_) | ExporterKind::Stdout(_) => Overflow::Block,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Overflow::Block => "block",
            Overflow::DropNewest => "drop_newest",
            Overflow::DropOldest => "drop_oldest",
            Overflow::Spill => "spill",
        }
    }
}

impl ExporterCommon {
    /// The overflow policy (after parsing, always set).
    pub fn overflow(&self) -> Overflow {
        self.overflow.unwrap_or(Overflow::Block)
    }

    /// The spill directory of exporter `name`: `spill_dir` if set (relative to
    /// `base`, the config file's directory), else `<state_dir>/spill/<name>`.
    pub fn resolved_spill_dir(&self, name: &str, base: &Path, state_dir: &Path) -> PathBuf {
        match &self.spill_dir {
            Some(dir) if dir.is_absolute() => dir.clone(),
            Some(dir) => base.join(dir),
            None => state_dir.join("spill").join(name),
        }
    }
}

/// The type-specific part.
#[derive(Debug, Clone)]
pub enum ExporterKind {
    Volume(VolumeConfig),
    Stdout(StdoutConfig),
    /// `type = "elasticsearch"` or its alias `"opensearch"`.
    Elasticsearch(Box<ElasticsearchConfig>),
    Kafka(Box<KafkaConfig>),
}

impl ExporterKind {
    pub fn type_name(&self) -> &'static str {
        match self {
            ExporterKind::Volume(_) => "volume",
            ExporterKind::Stdout(_) => "stdout",
            ExporterKind::Elasticsearch(_) => "elasticsearch",
            ExporterKind::Kafka(_) => "kafka",
        }
    }
}

const TYPES: &[&str] = &["volume", "stdout", "kafka", "elasticsearch", "opensearch"];

#[derive(Debug, Clone)]
pub struct ExporterConfig {
    pub name: String,
    /// Where the exporter's table starts in the file.
    pub span: Range<usize>,
    pub common: ExporterCommon,
    pub kind: ExporterKind,
}

/// Reads the `exporters` array of tables; problems go to `problems`.
pub(crate) fn parse_all(value: Option<Spanned<DeValue<'_>>>, problems: &mut Problems<'_>) -> Vec<ExporterConfig> {
    let Some(value) = value else {
        return Vec::new();
    };
    let span = value.span();
    let DeValue::Array(items) = value.into_inner() else {
        problems.at(
            span,
            "`exporters` must be an array of tables: write each as [[exporters]]",
        );
        return Vec::new();
    };
    let mut out: Vec<ExporterConfig> = Vec::new();
    let mut names = HashSet::new();
    for item in items {
        let span = item.span();
        let DeValue::Table(table) = item.into_inner() else {
            problems.at(span, "each exporter must be a table: [[exporters]]");
            continue;
        };
        if let Some(e) = parse_one(table, span, problems) {
            if !names.insert(e.name.clone()) {
                problems.at(e.span.clone(), format!("exporter `{}` is defined twice", e.name));
            }
            out.push(e);
        }
    }
    for e in &out {
        if let Some(dl) = &e.common.dead_letter {
            if dl == &e.name {
                problems.at(
                    e.span.clone(),
                    format!("exporter `{}` cannot be its own dead_letter", e.name),
                );
            } else if !names.contains(dl) {
                problems.at(
                    e.span.clone(),
                    format!(
                        "exporter `{}` has dead_letter `{dl}`, which is not a defined exporter",
                        e.name
                    ),
                );
            }
        }
    }
    out
}

fn parse_one(mut table: DeTable<'_>, span: Range<usize>, problems: &mut Problems<'_>) -> Option<ExporterConfig> {
    let name = table.remove("name");
    let ty = table.remove("type");
    let name = match name.as_ref().and_then(|n| de_str(n).map(|s| (s.to_string(), n.span()))) {
        Some((n, _)) if !n.is_empty() && !n.contains(char::is_whitespace) => n,
        Some((n, nspan)) => {
            problems.at(
                nspan,
                format!("invalid exporter name `{n}`: use a non-empty name without spaces"),
            );
            return None;
        }
        None => {
            problems.at(span, "an exporter needs `name = \"...\"` (a string)");
            return None;
        }
    };
    let Some(ty) = ty else {
        problems.at(
            span,
            format!("exporter `{name}` needs `type` (one of: {})", TYPES.join(", ")),
        );
        return None;
    };
    let ty_name = de_str(&ty).unwrap_or("").to_string();

    let mut common = DeTable::new();
    let mut own = DeTable::new();
    for (k, v) in table {
        if COMMON_KEYS.contains(&k.get_ref().as_ref()) {
            common.insert(k, v);
        } else {
            own.insert(k, v);
        }
    }
    let spans: Vec<(String, Range<usize>)> = common
        .iter()
        .map(|(k, v)| (k.get_ref().to_string(), v.span()))
        .collect();
    let key_span = |k: &str| spans.iter().find(|(n, _)| n == k).map(|(_, s)| s.clone());
    let common: Option<ExporterCommon> = de_table(common, span.clone(), problems, &name);
    let kind = match ty_name.as_str() {
        "volume" => de_table(own, span.clone(), problems, &name).map(ExporterKind::Volume),
        "stdout" => de_table(own, span.clone(), problems, &name).map(ExporterKind::Stdout),
        "kafka" => de_table(own, span.clone(), problems, &name).map(|c| ExporterKind::Kafka(Box::new(c))),
        "elasticsearch" | "opensearch" => {
            de_table(own, span.clone(), problems, &name).map(|c| ExporterKind::Elasticsearch(Box::new(c)))
        }
        other => {
            problems.at(
                ty.span(),
                format!(
                    "exporter `{name}` has unknown type `{other}` (expected one of: {})",
                    TYPES.join(", ")
                ),
            );
            None
        }
    };
    let (mut common, kind) = (common?, kind?);
    let overflow = *common.overflow.get_or_insert(Overflow::default_for(&kind));
    for (key, zero) in [
        ("queue_max_events", common.queue_max_events == 0),
        ("queue_max_bytes", common.queue_max_bytes == 0),
        ("spill_max_bytes", common.spill_max_bytes == 0),
    ] {
        if zero {
            problems.at(
                key_span(key).unwrap_or(span.clone()),
                format!("exporter `{name}`: `{key}` must be greater than zero"),
            );
        }
    }
    if overflow != Overflow::Spill {
        for key in ["spill_dir", "spill_max_bytes"] {
            if let Some(s) = key_span(key) {
                problems.at(
                    s,
                    format!(
                        "exporter `{name}`: `{key}` is only used with overflow = \"spill\" (overflow is \"{}\")",
                        overflow.as_str()
                    ),
                );
            }
        }
    }
    if common.spill_dir.as_ref().is_some_and(|d| d.as_os_str().is_empty()) {
        problems.at(
            key_span("spill_dir").unwrap_or(span.clone()),
            format!("exporter `{name}`: `spill_dir` must not be empty"),
        );
    }
    Some(ExporterConfig {
        name,
        span,
        common,
        kind,
    })
}

fn de_table<T: for<'de> Deserialize<'de>>(
    table: DeTable<'_>,
    span: Range<usize>,
    problems: &mut Problems<'_>,
    name: &str,
) -> Option<T> {
    let de = ValueDeserializer::from(Spanned::new(span.clone(), DeValue::Table(table)));
    match T::deserialize(de) {
        Ok(v) => Some(v),
        Err(e) => {
            let span = e.span().unwrap_or(span);
            problems.at(span, format!("exporter `{name}`: {}", e.message().trim()));
            None
        }
    }
}
