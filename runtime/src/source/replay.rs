//! The replay source: a recorded watch stream from a file, fed to the pipeline
//! as fast as it consumes it (benchmarks, reproducing a report, demos without
//! a cluster).
//!
//! The file holds JSON lines exactly as the API server sends a watch:
//! `{"type":"ADDED"|"MODIFIED"|"DELETED"|"BOOKMARK"|"ERROR","object":{...}}`,
//! core/v1 and events.k8s.io/v1 objects mixed (told apart by `apiVersion`).
//! `event-collector generate --output FILE` writes such files. Lines are
//! decoded on a thread of their own, in batches, and go through the same
//! classification (repeats, duplicates, deletions) as a live watch. A line
//! that cannot be read is counted and logged with `file:line`; the replay goes
//! on. The stream ends at the end of the file. [`latency`] times events from
//! the source to their acknowledgement, for the benchmark.

pub mod latency;

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures::{Stream, StreamExt};
use serde::Deserialize;
use tokio::sync::mpsc;

use crate::config::SourceConfig;
use crate::event::{Api, RawEvent};
use crate::metrics::Metrics;

/// Lines decoded per batch handed to the pipeline.
const BATCH: usize = 1024;

/// One decoded line.
#[derive(Debug)]
pub enum Recorded {
    Applied(Api, Box<RawEvent>),
    Deleted(Api, Box<RawEvent>),
}

/// Events are boxed as they are decoded: a `RawEvent` is over a kilobyte, and
/// moving it by value through the source's stages cost more than the decode's
/// allocations (docs/benchmarks.md).
#[derive(Deserialize)]
struct Line<'a> {
    #[serde(rename = "type", borrow)]
    type_: std::borrow::Cow<'a, str>,
    #[serde(default)]
    object: Option<Box<RawEvent>>,
}

/// Why the replay file cannot be used at all.
#[derive(Debug, thiserror::Error)]
#[error("replay file {}: {source}", path.display())]
pub struct ReplayError {
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

/// Decodes one line; `Ok(None)` for lines that carry no event (blank, BOOKMARK, ERROR).
pub fn decode(line: &[u8]) -> Result<Option<Recorded>, String> {
    if line.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    // UTF-8 checked once for the line: parsing from a str skips the check per string.
    let line = std::str::from_utf8(line).map_err(|e| format!("not UTF-8: {e}"))?;
    let l: Line = serde_json::from_str(line).map_err(|e| e.to_string())?;
    let deleted = match l.type_.as_ref() {
        "ADDED" | "MODIFIED" => false,
        "DELETED" => true,
        "BOOKMARK" | "ERROR" => return Ok(None),
        other => return Err(format!("unknown watch event type {other:?}")),
    };
    let raw = l.object.ok_or("no `object`")?;
    if raw.kind.as_deref().is_some_and(|k| k != "Event") {
        return Err(format!(
            "not an Event: kind {:?}",
            raw.kind.as_deref().unwrap_or_default()
        ));
    }
    let api = match raw.api_version.as_deref() {
        Some("v1") => Api::CoreV1,
        Some("events.k8s.io/v1") => Api::EventsV1,
        other => return Err(format!("not an Event: apiVersion {other:?}")),
    };
    Ok(Some(if deleted {
        Recorded::Deleted(api, raw)
    } else {
        Recorded::Applied(api, raw)
    }))
}

/// Reads `path` on its own thread; yields its events in file order, in batches.
pub fn read(path: &Path, metrics: Arc<Metrics>) -> Result<impl Stream<Item = Recorded> + Send + 'static, ReplayError> {
    let file = std::fs::File::open(path).map_err(|source| ReplayError {
        path: path.to_path_buf(),
        source,
    })?;
    let (tx, rx) = mpsc::channel::<Vec<Recorded>>(4);
    let shown = path.display().to_string();
    std::thread::Builder::new()
        .name("replay".into())
        .spawn(move || {
            let mut reader = std::io::BufReader::with_capacity(1 << 20, file);
            let mut line = Vec::with_capacity(4096);
            let mut batch = Vec::with_capacity(BATCH);
            let mut no = 0u64;
            loop {
                line.clear();
                match reader.read_until(b'\n', &mut line) {
                    Ok(0) => break,
                    Ok(_) => {}
                    Err(e) => {
                        tracing::error!(file = %shown, line = no + 1, error = %e, "cannot read the replay file; stopping the replay");
                        break;
                    }
                }
                no += 1;
                match decode(&line) {
                    Ok(Some(r)) => batch.push(r),
                    Ok(None) => {}
                    Err(e) => {
                        metrics.source_skipped("malformed");
                        tracing::warn!("{shown}:{no}: skipping a line that is not a watch event: {e}");
                    }
                }
                if batch.len() == BATCH && tx.blocking_send(std::mem::replace(&mut batch, Vec::with_capacity(BATCH))).is_err() {
                    return;
                }
            }
            if !batch.is_empty() {
                let _ = tx.blocking_send(batch);
            }
            tracing::info!(file = %shown, lines = no, "replay file read to the end");
        })
        .map_err(|source| ReplayError {
            path: path.to_path_buf(),
            source,
        })?;
    Ok(
        futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|b| (b, rx)) })
            .flat_map(futures::stream::iter),
    )
}

/// The replay as the source's item stream: each recorded event is tagged with
/// the watch of its API (as [`super::watch_specs`] orders them for the config)
/// and classified like a live one. Events of an API the config does not watch
/// are skipped and counted.
pub fn source(
    path: &Path,
    cfg: &SourceConfig,
    metrics: Arc<Metrics>,
) -> Result<impl Stream<Item = super::SourceItem> + Send + 'static, ReplayError> {
    let apis: Vec<Api> = super::watch_specs(cfg).iter().map(|s| s.api).collect();
    let m = metrics.clone();
    let index = apis.clone();
    let tagged = read(path, metrics.clone())?.filter_map(move |r| {
        let (api, ev) = match r {
            Recorded::Applied(api, raw) => (api, super::Replayed::Apply(raw)),
            Recorded::Deleted(api, raw) => (api, super::Replayed::Delete(raw)),
        };
        let out = match index.iter().position(|a| *a == api) {
            Some(i) => Some((i, ev)),
            None => {
                m.source_skipped("other_api");
                None
            }
        };
        futures::future::ready(out)
    });
    Ok(super::classify_recorded(tagged, apis, cfg, metrics))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_both_apis_and_skips_non_events() {
        let core = br#"{"type":"ADDED","object":{"apiVersion":"v1","kind":"Event","metadata":{"uid":"a","resourceVersion":"1","name":"x","namespace":"d"},"reason":"R"}}"#;
        let v1 = br#"{"type":"DELETED","object":{"apiVersion":"events.k8s.io/v1","kind":"Event","metadata":{"uid":"b","resourceVersion":"2","name":"y","namespace":"d"},"reason":"R"}}"#;
        assert!(
            matches!(decode(core), Ok(Some(Recorded::Applied(Api::CoreV1, r))) if r.metadata.uid.as_deref() == Some("a"))
        );
        assert!(matches!(decode(v1), Ok(Some(Recorded::Deleted(Api::EventsV1, _)))));
        assert!(matches!(
            decode(br#"{"type":"BOOKMARK","object":{"metadata":{"resourceVersion":"9"}}}"#),
            Ok(None)
        ));
        assert!(matches!(decode(b"  \n"), Ok(None)));
        let e = decode(br#"{"type":"ADDED","object":{"apiVersion":"v1","kind":"Pod"}}"#).unwrap_err();
        assert!(e.contains("kind \"Pod\""), "{e}");
        let e = decode(br#"{"type":"ADDED","object":{"apiVersion":"apps/v1"}}"#).unwrap_err();
        assert!(e.contains("not an Event"), "{e}");
        assert!(decode(b"{not json").is_err());
        assert!(decode(br#"{"type":"WHAT","object":{}}"#).unwrap_err().contains("WHAT"));
    }

    #[tokio::test]
    async fn reads_a_file_in_order_and_counts_bad_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.jsonl");
        let mut text = String::new();
        for i in 0..2500 {
            text.push_str(&format!(
                r#"{{"type":"ADDED","object":{{"apiVersion":"v1","kind":"Event","metadata":{{"uid":"u{i}","resourceVersion":"{i}","name":"n","namespace":"d"}}}}}}"#
            ));
            text.push('\n');
            if i == 7 {
                text.push_str("garbage\n");
            }
        }
        std::fs::write(&path, text).unwrap();
        let metrics = Arc::new(Metrics::new());
        let got: Vec<Recorded> = read(&path, metrics.clone()).unwrap().collect().await;
        assert_eq!(got.len(), 2500);
        for (i, r) in got.iter().enumerate() {
            let Recorded::Applied(Api::CoreV1, raw) = r else {
                panic!("{r:?}")
            };
            assert_eq!(raw.metadata.uid.as_deref(), Some(format!("u{i}").as_str()));
        }
        assert!(metrics.encode().contains("malformed"), "{}", metrics.encode());
        assert!(read(&dir.path().join("missing"), metrics).is_err());
    }
}
