//! Exactly once across a hard kill: what each sink received after the last
//! state write is read back from the sink at startup, and the pipeline does
//! not send it there again.
//!
//! Two halves:
//! - at startup, [`recover`] asks every exporter for the (uid,
//!   resourceVersion) keys it holds past the position saved with the
//!   checkpoint ([`Exporter::recover`](event_collector_exporters::Exporter::recover));
//!   the transform stage drops those records for that exporter and the event
//!   counts as acknowledged by it (see `transform.rs`);
//! - while running, [`Sampler`] has `dispatch` note every exporter's
//!   [`position`](event_collector_exporters::Exporter::position) a few times a
//!   second, before it queues the next event; the ack tracker keeps, for the
//!   checkpoint, the newest sample taken before the oldest event that is not
//!   fully acknowledged (`ack.rs`). Everything not covered by the checkpoint
//!   (and the seen-set saved with it) reached the sink after that position.

use std::collections::BTreeMap;
use std::time::Duration;

use event_collector_exporters::{Delivered, SharedExporter};
use tokio::time::Instant;

use super::ExporterSlot;
use crate::ack::SinkSample;

/// How long startup waits for one sink to be read back before going on without
/// its keys (which can only cause duplicates).
const RECOVER_TIMEOUT: Duration = Duration::from_secs(120);

/// How often positions are sampled.
const SAMPLE_EVERY: Duration = Duration::from_millis(100);

/// Per exporter (in `exporters` order): the keys its sink already holds.
pub(super) async fn recover(exporters: &[ExporterSlot], from: &BTreeMap<String, String>) -> Vec<Delivered> {
    let tasks = exporters.iter().map(|slot| async move {
        let from = from.get(&slot.name).map(String::as_str);
        match tokio::time::timeout(RECOVER_TIMEOUT, slot.exporter.recover(from)).await {
            Ok(Ok(keys)) => {
                if !keys.is_empty() {
                    tracing::info!(exporter = %slot.name, events = keys.len(),
                        "the sink holds events written after the last checkpoint; they are not sent to it again");
                }
                keys
            }
            Ok(Err(e)) => {
                tracing::warn!(exporter = %slot.name, error = %e,
                    "cannot read back what the sink received after the last checkpoint; events exported just before a crash may come again");
                Delivered::default()
            }
            Err(_) => {
                tracing::warn!(exporter = %slot.name, timeout = ?RECOVER_TIMEOUT,
                    "reading back the sink took too long; events exported just before a crash may come again");
                Delivered::default()
            }
        }
    });
    futures::future::join_all(tasks).await
}

/// Takes exporter positions for the checkpoint, at most every [`SAMPLE_EVERY`].
pub(super) struct Sampler {
    /// (name in the config, exporter)
    exporters: Vec<(String, SharedExporter)>,
    last: Option<Instant>,
}

impl Sampler {
    pub(super) fn new(slots: &[ExporterSlot]) -> Self {
        Self {
            exporters: slots.iter().map(|s| (s.name.clone(), s.exporter.clone())).collect(),
            last: None,
        }
    }

    /// After a reload: sample the new exporter list from now on (an exporter
    /// added by a reload was never read back, so its positions only matter
    /// for the next start).
    pub(super) fn set_exporters(&mut self, exporters: Vec<(String, SharedExporter)>) {
        self.exporters = exporters;
        self.last = None;
    }

    /// A sample to send before queueing event `seq`, if one is due and any
    /// exporter can tell its position.
    pub(super) fn before(&mut self, seq: u64) -> Option<SinkSample> {
        let now = Instant::now();
        if self.last.is_some_and(|l| now.duration_since(l) < SAMPLE_EVERY) {
            return None;
        }
        self.last = Some(now);
        let positions: Vec<(String, String)> = self
            .exporters
            .iter()
            .filter_map(|(name, e)| e.position().map(|p| (name.clone(), p)))
            .collect();
        (!positions.is_empty()).then_some(SinkSample { seq, positions })
    }
}
