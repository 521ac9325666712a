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
    /// Writes the document for `checkpoint` now; true if it was stored.
    pub async fn write(&self, checkpoint: &Checkpoint) -> bool {
        let saved = match self.seen.lock() {
            Ok(seen) => Saved::build(
                &self.cluster,
                &self.keys,
                &self.prior,
                checkpoint,
                &seen,
                self.seen_max,
                &self.prior_sinks,
            ),
            Err(_) => return false,
        };
        match self.store.save(&saved).await {
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
