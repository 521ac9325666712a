//! Durable collector state: per watch stream the resourceVersion to resume
//! from (the acknowledged checkpoint), and the seen-set of acknowledged
//! (uid, resourceVersion) pairs.
//!
//! One JSON document holds both; it is keyed by cluster and by each stream's
//! identity (API, namespace, selectors), so a changed config never resumes a
//! different stream. [`store`] keeps it in a local file, a ConfigMap or an
//! annotation on the Lease; [`writer`] writes it on change, at most every
//! `checkpoint_interval`, and once more at shutdown.

pub mod seen;
pub mod seenfile;
pub mod store;
pub mod writer;

use std::collections::BTreeMap;

use base64::Engine;
use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

use crate::ack::Checkpoint;
use crate::source::WatchSpec;
use seen::SeenSet;

/// The persisted document.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Saved {
    pub version: u32,
    pub cluster: String,
    pub written_at: String,
    /// By stream key (see [`stream_key`]).
    pub streams: BTreeMap<String, StreamPos>,
    /// The seen-set, base64 of [`SeenSet::encode`], in the ConfigMap and Lease
    /// stores; empty in the file store, which keeps it in [`seenfile`] (a
    /// checkpoint.json of an older version still holds it here, and loads).
    #[serde(default)]
    pub seen: String,
    /// The counts passed on per uid, base64 of [`SeenSet::encode_counts`].
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub counts: String,
    /// Per exporter (by name): where its output stood before any event not
    /// covered by this checkpoint was sent to it (see `Exporter::position`);
    /// read back from there at the next start.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub sinks: BTreeMap<String, String>,
}

/// Where one stream resumes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StreamPos {
    pub resource_version: String,
    /// When the stream had been read up to `resource_version` (RFC 3339): the
    /// start of the window a gap record reports if this position is gone.
    #[serde(default)]
    pub acked_at: Option<String>,
}

/// A stream's identity in the checkpoint: cluster, API, namespace, selectors.
pub fn stream_key(cluster: &str, spec: &WatchSpec) -> String {
    format!(
        "{cluster}|{}|ns={}|fields={}|labels={}",
        spec.api,
        spec.namespace.as_deref().unwrap_or("*"),
        spec.field_selector.as_deref().unwrap_or(""),
        spec.label_selector.as_deref().unwrap_or("")
    )
}

/// A position to resume one stream from.
#[derive(Debug, Clone, PartialEq)]
pub struct Resume {
    pub resource_version: String,
    pub acked_at: Option<DateTime<Utc>>,
}

impl Saved {
    /// The resume position of each spec (None: no usable checkpoint for it).
    pub fn resume_points(&self, cluster: &str, specs: &[WatchSpec]) -> Vec<Option<Resume>> {
        specs
            .iter()
            .map(|spec| {
                if self.cluster != cluster {
                    return None;
                }
                self.streams
                    .get(&stream_key(cluster, spec))
                    .filter(|p| !p.resource_version.is_empty())
                    .map(|p| Resume {
                        resource_version: p.resource_version.clone(),
                        acked_at: p
                            .acked_at
                            .as_deref()
                            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
                            .map(|t| t.with_timezone(&Utc)),
                    })
            })
            .collect()
    }

    /// Adds the saved seen-set into `seen`; a bad encoding is logged and ignored (it can only cause duplicates).
    pub fn load_seen(&self, seen: &mut SeenSet) {
        match base64::engine::general_purpose::STANDARD.decode(self.seen.as_bytes()) {
            Ok(bytes) => seen.decode_into(&bytes),
            Err(e) => tracing::warn!(error = %e, "the saved seen-set is not valid base64; starting with an empty one"),
        }
        match base64::engine::general_purpose::STANDARD.decode(self.counts.as_bytes()) {
            Ok(bytes) => seen.decode_counts_into(&bytes),
            Err(e) => tracing::warn!(error = %e, "the saved counts are not valid base64; starting without them"),
        }
    }

    /// The document for `checkpoint`: streams it has not moved keep their `prior` position.
    /// `seen` (inline, base64) only for the stores that keep it inside the document.
    pub fn build(
        cluster: &str,
        keys: &[String],
        prior: &BTreeMap<String, StreamPos>,
        checkpoint: &Checkpoint,
        seen: Option<&SeenSet>,
        seen_max: usize,
        prior_sinks: &BTreeMap<String, String>,
    ) -> Saved {
        let mut sinks = prior_sinks.clone();
        sinks.extend(checkpoint.sinks.iter().map(|(k, v)| (k.clone(), v.clone())));
        let mut streams = BTreeMap::new();
        for (i, key) in keys.iter().enumerate() {
            let moved = checkpoint.streams.get(i).cloned().flatten().map(|rv| StreamPos {
                resource_version: rv,
                acked_at: checkpoint
                    .acked_at
                    .get(i)
                    .copied()
                    .flatten()
                    .map(|t| t.to_rfc3339_opts(SecondsFormat::Millis, true)),
            });
            if let Some(pos) = moved.or_else(|| prior.get(key).cloned()) {
                streams.insert(key.clone(), pos);
            }
        }
        Saved {
            version: 1,
            cluster: cluster.to_string(),
            written_at: Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true),
            streams,
            seen: seen
                .map(|s| base64::engine::general_purpose::STANDARD.encode(s.encode(seen_max)))
                .unwrap_or_default(),
            counts: seen
                .map(|s| base64::engine::general_purpose::STANDARD.encode(s.encode_counts()))
                .unwrap_or_default(),
            sinks,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Api;
    use std::time::Duration;

    fn spec(ns: Option<&str>) -> WatchSpec {
        WatchSpec {
            api: Api::CoreV1,
            namespace: ns.map(str::to_string),
            field_selector: None,
            label_selector: Some("a=b".into()),
        }
    }

    #[test]
    fn keyed_by_cluster_and_stream_identity() {
        let specs = [spec(Some("x")), spec(None)];
        let keys: Vec<String> = specs.iter().map(|s| stream_key("c1", s)).collect();
        let cp = Checkpoint {
            streams: vec![Some("41".into())],
            acked_below: 1,
            acked_at: vec![Some(Utc::now())],
            sinks: [("vol".to_string(), "p2".to_string())].into(),
        };
        let prior_sinks: BTreeMap<String, String> = [
            ("vol".to_string(), "p1".to_string()),
            ("kafka".to_string(), "k1".to_string()),
        ]
        .into();
        let mut prior = BTreeMap::new();
        prior.insert(
            keys[1].clone(),
            StreamPos {
                resource_version: "7".into(),
                acked_at: None,
            },
        );
        let mut seen = SeenSet::new(Duration::from_secs(60), 10);
        seen.insert("u", "41");
        seen.insert_count("u", 4);
        let saved = Saved::build("c1", &keys, &prior, &cp, Some(&seen), 10, &prior_sinks);
        let text = serde_json::to_string(&saved).unwrap();
        let back: Saved = serde_json::from_str(&text).unwrap();
        let r = back.resume_points("c1", &specs);
        assert_eq!(r[0].as_ref().unwrap().resource_version, "41");
        assert!(r[0].as_ref().unwrap().acked_at.is_some());
        assert_eq!(
            r[1].as_ref().unwrap().resource_version,
            "7",
            "an unmoved stream keeps its position"
        );
        // Another cluster, or a changed selector, resumes nothing.
        assert!(back.resume_points("c2", &specs).iter().all(Option::is_none));
        let mut changed = spec(Some("x"));
        changed.label_selector = Some("a=c".into());
        assert_eq!(back.resume_points("c1", &[changed]), vec![None]);
        let mut s2 = SeenSet::new(Duration::from_secs(60), 10);
        back.load_seen(&mut s2);
        assert!(s2.contains("u", "41"));
        assert_eq!(s2.count("u"), Some(4), "the counts travel with the seen-set");
        // The moved exporter position replaces the loaded one; the others stay.
        assert_eq!(back.sinks, prior_sinks_after());
    }

    fn prior_sinks_after() -> BTreeMap<String, String> {
        [
            ("vol".to_string(), "p2".to_string()),
            ("kafka".to_string(), "k1".to_string()),
        ]
        .into()
    }
}
