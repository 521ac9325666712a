//! Writes the state document when the checkpoint moves, at most once per
//! `checkpoint_interval`, and on demand at shutdown. A failed write is
//! counted and logged and retried at the next change; the checkpoint only
//! ever lags, so a failure can cause duplicates after a restart, never loss.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::seen::SharedSeen;
use super::seenfile;
use super::store::Store;
use super::{Saved, StreamPos};
use crate::ack::Checkpoint;
use crate::metrics::Metrics;

/// Everything needed to turn a checkpoint into a document and store it.
#[derive(Clone)]
pub struct StateWriter {
    pub store: Store,
    pub cluster: String,
    /// The stream keys, in watch order.
    pub keys: Vec<String>,
    /// Positions loaded at startup (kept for streams that have not moved).
    pub prior: BTreeMap<String, StreamPos>,
    /// Exporter positions loaded at startup (kept for exporters the checkpoint has none of yet);
    /// also what the pipeline reads the sinks back from.
    pub prior_sinks: BTreeMap<String, String>,
    pub seen: SharedSeen,
    pub seen_max: usize,
    pub metrics: Arc<Metrics>,
}

impl StateWriter {
    /// Writes the document for `checkpoint` now (for the file store, the
    /// seen file first); true if it was stored.
    pub async fn write(&self, checkpoint: &Checkpoint) -> bool {
        let build = |seen| {
            Saved::build(
                &self.cluster,
                &self.keys,
                &self.prior,
                checkpoint,
                seen,
                self.seen_max,
                &self.prior_sinks,
            )
        };
        let saved = if self.store.seen_inline() {
            match self.seen.lock() {
                Ok(seen) => build(Some(&seen)),
                Err(_) => return false,
            }
        } else {
            build(None)
        };
        let stored = match &self.store {
            Store::File { dir } => {
                let place = seenfile::path(dir).display().to_string();
                let (dir, seen, max) = (dir.clone(), self.seen.clone(), self.seen_max);
                match tokio::task::spawn_blocking(move || seenfile::save(&dir, &seen, max)).await {
                    Ok(Ok(())) => self.store.save(&saved).await,
                    Ok(Err(e)) => Err(e),
                    Err(e) => Err(super::store::StoreError::Io {
                        path: place,
                        source: std::io::Error::other(e),
                    }),
                }
            }
            _ => self.store.save(&saved).await,
        };
        match stored {
            Ok(()) => {
                self.metrics.checkpoint_write("ok");
                true
            }
            Err(e) => {
                self.metrics.checkpoint_write("error");
                tracing::warn!(error = %e, "cannot write the checkpoint; retrying at the next change");
                false
            }
        }
    }

    /// Writes on every change, at most every `interval`, until `stop`; returns the last checkpoint written.
    pub async fn run(
        self,
        mut rx: watch::Receiver<Checkpoint>,
        interval: Duration,
        stop: CancellationToken,
    ) -> Option<Checkpoint> {
        let mut last: Option<Checkpoint> = None;
        let mut written_at = tokio::time::Instant::now();
        loop {
            tokio::select! {
                biased;
                _ = stop.cancelled() => return last,
                changed = rx.changed() => if changed.is_err() { return last },
                _ = tokio::time::sleep(Duration::from_secs(1)) => {
                    self.metrics.checkpoint_age(written_at.elapsed());
                    continue;
                }
            }
            let cp = rx.borrow_and_update().clone();
            if last
                .as_ref()
                .is_some_and(|l| l.streams == cp.streams && l.acked_below == cp.acked_below && l.sinks == cp.sinks)
            {
                continue;
            }
            if self.write(&cp).await {
                written_at = tokio::time::Instant::now();
                self.metrics.checkpoint_age(Duration::ZERO);
                last = Some(cp);
            }
            tokio::select! {
                _ = stop.cancelled() => return last,
                _ = tokio::time::sleep(interval) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::seen::SeenSet;
    use crate::state::{seenfile, store::FILE_NAME};
    use std::path::Path;

    fn writer(dir: &Path, seen: SharedSeen) -> StateWriter {
        StateWriter {
            store: Store::File { dir: dir.to_path_buf() },
            cluster: "c".into(),
            keys: vec!["k".into()],
            prior: BTreeMap::new(),
            prior_sinks: BTreeMap::new(),
            seen,
            seen_max: 100,
            metrics: Arc::new(Metrics::new()),
        }
    }

    fn checkpoint(rv: &str) -> Checkpoint {
        Checkpoint {
            streams: vec![Some(rv.into())],
            acked_below: 1,
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn file_store_keeps_the_seen_set_in_its_own_binary_file() {
        let dir = tempfile::tempdir().unwrap();
        let seen = SeenSet::new(Duration::from_secs(3600), 100).shared();
        {
            let mut s = seen.lock().unwrap();
            s.insert("u1", "10");
            s.insert_count("u1", 3);
        }
        assert!(writer(dir.path(), seen).write(&checkpoint("10")).await);
        let doc = std::fs::read_to_string(dir.path().join(FILE_NAME)).unwrap();
        let json: serde_json::Value = serde_json::from_str(&doc).unwrap();
        assert_eq!(json["seen"], "", "no inline copy in checkpoint.json: {doc}");
        assert!(json.get("counts").is_none(), "{doc}");
        let bin = std::fs::read(seenfile::path(dir.path())).unwrap();
        assert_eq!(bin.len(), 24 + 12 + 16, "one entry, one count, binary");
        // Loaded back the way the collector starts.
        let store = Store::File {
            dir: dir.path().to_path_buf(),
        };
        let saved = store.load().await.unwrap();
        let mut back = SeenSet::new(Duration::from_secs(3600), 100);
        store.load_seen(saved.as_ref(), &mut back);
        assert!(back.contains("u1", "10") && !back.contains("u1", "11"));
        assert_eq!(back.count("u1"), Some(3));
        assert_eq!(
            saved.unwrap().streams["k"].resource_version,
            "10",
            "the document itself"
        );
    }

    #[tokio::test]
    async fn a_checkpoint_of_the_old_format_with_the_seen_set_inline_still_loads() {
        // What versions before seen.bin wrote: the seen-set as base64 inside checkpoint.json.
        let dir = tempfile::tempdir().unwrap();
        let mut old = SeenSet::new(Duration::from_secs(3600), 100);
        old.insert("u1", "10");
        old.insert_count("u1", 2);
        let doc = Saved::build(
            "c",
            &[],
            &BTreeMap::new(),
            &checkpoint("10"),
            Some(&old),
            100,
            &BTreeMap::new(),
        );
        assert!(!doc.seen.is_empty());
        super::super::store::write_atomic(dir.path(), FILE_NAME, serde_json::to_string(&doc).unwrap().as_bytes())
            .unwrap();
        let store = Store::File {
            dir: dir.path().to_path_buf(),
        };
        let saved = store.load().await.unwrap();
        let mut back = SeenSet::new(Duration::from_secs(3600), 100);
        store.load_seen(saved.as_ref(), &mut back);
        assert!(back.contains("u1", "10"));
        assert_eq!(back.count("u1"), Some(2));
        // The next write moves it into seen.bin and out of the document.
        let shared = back.shared();
        assert!(writer(dir.path(), shared).write(&checkpoint("11")).await);
        let saved = store.load().await.unwrap().unwrap();
        assert!(saved.seen.is_empty() && saved.counts.is_empty());
        let mut again = SeenSet::new(Duration::from_secs(3600), 100);
        store.load_seen(Some(&saved), &mut again);
        assert!(again.contains("u1", "10"));
        // A bad seen.bin is ignored (logged): the document still loads, the set starts empty.
        std::fs::write(seenfile::path(dir.path()), b"garbage").unwrap();
        let mut empty = SeenSet::new(Duration::from_secs(3600), 100);
        store.load_seen(Some(&saved), &mut empty);
        assert!(empty.is_empty());
    }
}
