//! Per-event latency of a replay, for the pipeline benchmark: from the moment
//! the pipeline takes an event off the source (decoded and classified) to the
//! moment the checkpoint passes it, i.e. every exporter on its route has
//! acknowledged it.
//!
//! Every [`SAMPLE_EVERY`]th item is stamped with the time it leaves the
//! source. The pipeline numbers events and position marks in source order, so
//! the sample's sequence number is known without touching the pipeline; it is
//! done once the published checkpoint's `acked_below` passes it. The cost is
//! a counter per item and a clock read and a channel send per sample.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use futures::{Stream, StreamExt};
use tokio::sync::{mpsc, watch};

use crate::ack::Checkpoint;
use crate::source::SourceItem;

/// One item in this many is timed.
pub const SAMPLE_EVERY: u64 = 16;

/// The latencies seen, in microseconds, sorted.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LatencySummary {
    pub samples: usize,
    pub median_us: u64,
    pub p99_us: u64,
    pub max_us: u64,
    /// Samples whose event was never acknowledged (the run stopped first).
    pub unfinished: usize,
}

impl LatencySummary {
    fn from_micros(mut us: Vec<u64>, unfinished: usize) -> Self {
        us.sort_unstable();
        let at = |q: f64| -> u64 {
            if us.is_empty() {
                return 0;
            }
            // Nearest rank.
            let rank = ((q * us.len() as f64).ceil() as usize).clamp(1, us.len());
            us[rank - 1]
        };
        LatencySummary {
            samples: us.len(),
            median_us: at(0.5),
            p99_us: at(0.99),
            max_us: us.last().copied().unwrap_or(0),
            unfinished,
        }
    }
}

/// Wraps the source stream: stamps every [`SAMPLE_EVERY`]th item the
/// pipeline will number (events and marks). The stamps go to [`observe`].
pub fn stamp<S>(source: S) -> (impl Stream<Item = SourceItem> + Send + 'static, Stamps)
where
    S: Stream<Item = SourceItem> + Send + 'static,
{
    let (tx, rx) = mpsc::unbounded_channel();
    let mut next_seq = 0u64;
    let stream = source.inspect(move |item| {
        if matches!(item, SourceItem::Event(_) | SourceItem::Mark { .. }) {
            if next_seq.is_multiple_of(SAMPLE_EVERY) {
                let _ = tx.send((next_seq, Instant::now()));
            }
            next_seq += 1;
        }
    });
    (stream, Stamps(rx))
}

/// The stamps of [`stamp`], to hand to [`observe`].
pub struct Stamps(mpsc::UnboundedReceiver<(u64, Instant)>);

/// Follows the published checkpoint until its sender is gone; each stamped
/// item is done when `acked_below` passes its sequence number.
pub async fn observe(mut stamps: Stamps, mut checkpoints: watch::Receiver<Checkpoint>) -> LatencySummary {
    let mut waiting: VecDeque<(u64, Instant)> = VecDeque::new();
    let mut done: Vec<u64> = Vec::new();
    loop {
        let changed = checkpoints.changed().await;
        let acked_below = checkpoints.borrow_and_update().acked_below;
        let now = Instant::now();
        while let Ok(s) = stamps.0.try_recv() {
            waiting.push_back(s);
        }
        while let Some(&(seq, at)) = waiting.front()
            && seq < acked_below
        {
            waiting.pop_front();
            done.push(micros(now.saturating_duration_since(at)));
        }
        if changed.is_err() {
            break;
        }
    }
    while let Ok(s) = stamps.0.try_recv() {
        waiting.push_back(s);
    }
    LatencySummary::from_micros(done, waiting.len())
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let s = LatencySummary::from_micros((1..=200).rev().collect(), 3);
        assert_eq!(s.samples, 200);
        assert_eq!(s.median_us, 100);
        assert_eq!(s.p99_us, 198);
        assert_eq!(s.max_us, 200);
        assert_eq!(s.unfinished, 3);
        assert_eq!(LatencySummary::from_micros(Vec::new(), 0), LatencySummary::default());
    }

    #[tokio::test]
    async fn a_sample_is_done_when_the_checkpoint_passes_it() {
        let items = (0..40).map(|i| SourceItem::Mark {
            stream: 0,
            mark: crate::ack::Mark::Bookmark(i.to_string()),
        });
        let listed = std::iter::once(SourceItem::Listed { stream: 0 });
        let (stream, stamps) = stamp(futures::stream::iter(listed.chain(items)));
        // Listed is not numbered: 40 numbered items, samples at 0, 16 and 32.
        assert_eq!(stream.count().await, 41);
        let (tx, rx) = watch::channel(Checkpoint::default());
        let observer = tokio::spawn(observe(stamps, rx));
        tx.send_replace(Checkpoint {
            acked_below: 17,
            ..Default::default()
        });
        tokio::task::yield_now().await;
        drop(tx);
        let s = observer.await.unwrap();
        // 0 and 16 are done; 32 was never acknowledged.
        assert_eq!((s.samples, s.unfinished), (2, 1));
    }
}
