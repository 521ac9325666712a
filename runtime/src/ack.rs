//! Acknowledgement tracking: the checkpoint moves only past events that every
//! exporter on their route has acknowledged.
//!
//! Events are registered in the order the pipeline passes them on, each with
//! the watch it came from, its resourceVersion and how many exporters must
//! acknowledge it. The checkpoint of a watch is the resourceVersion of its
//! newest event such that it and every earlier event are fully acknowledged.
//! resourceVersions stay opaque strings: only the order of arrival counts.
//!
//! A list (startup or relist) returns objects in name order, not in
//! resourceVersion order, so a watch cannot resume from the middle of one:
//! between the source's [`Mark::ListStart`] and [`Mark::ListEnd`] the
//! position stays where it was and moves to the list's own resourceVersion
//! only once every listed event is acknowledged. Fully acknowledged events are
//! recorded in the seen-set (if there is one), for relist de-duplication,
//! with the occurrence count passed on for their uid.
//!
//! It also keeps where each exporter's output ended shortly before the
//! oldest event not fully acknowledged was queued ([`Checkpoint::sinks`]):
//! everything a sink holds past that position may be unknown to the saved
//! state, and is read back from the sink at the next start.

use std::collections::{BTreeMap, VecDeque};

use chrono::{DateTime, Utc};

use crate::state::seen::SharedSeen;

/// A position marker from the source (no event, nothing to export).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mark {
    /// A list begins: its items do not move the position.
    ListStart,
    /// The list is complete as of this resourceVersion.
    ListEnd(String),
    /// A watch bookmark: nothing of interest up to this resourceVersion.
    Bookmark(String),
}

/// One event (or marker) waiting for acknowledgements.
#[derive(Debug, Clone, Default)]
pub struct Pending {
    pub stream: usize,
    pub resource_version: String,
    pub remaining: u32,
    /// The event's uid (empty for markers), recorded in the seen-set once acknowledged.
    pub uid: String,
    /// The event's occurrence count, recorded for its uid once acknowledged.
    pub count: u64,
    pub mark: Option<Mark>,
    /// When the tracker registered it (set by the tracker).
    pub registered_at: Option<DateTime<Utc>>,
}

impl Pending {
    /// The registration of a source event, not yet routed (`remaining` 0).
    pub fn event(stream: usize, raw: &crate::event::RawEvent) -> Self {
        Pending {
            stream,
            resource_version: raw.metadata.resource_version.clone().unwrap_or_default(),
            uid: raw.metadata.uid.clone().unwrap_or_default(),
            count: crate::event::occurrence_count(raw),
            ..Default::default()
        }
    }

    /// The registration of a position marker.
    pub fn mark(stream: usize, mark: Mark) -> Self {
        Pending {
            stream,
            mark: Some(mark),
            ..Default::default()
        }
    }
}

/// The acknowledged position of every watch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Checkpoint {
    /// Per watch (index as in the source's specs): the last fully acknowledged resourceVersion.
    pub streams: Vec<Option<String>>,
    /// Every event with a lower sequence number is fully acknowledged.
    pub acked_below: u64,
    /// Per watch: when the event (or marker) that set its position was registered:
    /// the stream had been read up to that position by then.
    pub acked_at: Vec<Option<DateTime<Utc>>>,
    /// Per exporter (by name): its [`position`](event_collector_exporters::Exporter::position)
    /// sampled before any event at or after `acked_below` was queued. Every
    /// record it received from then on lies after this position.
    pub sinks: BTreeMap<String, String>,
}

/// Exporter positions sampled by `dispatch` before it queued event `seq`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SinkSample {
    pub seq: u64,
    pub positions: Vec<(String, String)>,
}

#[derive(Debug, Default)]
pub struct AckTracker {
    /// Sequence number of `pending[0]`.
    base: u64,
    pending: VecDeque<Pending>,
    checkpoint: Checkpoint,
    /// Per watch: inside a list (item positions are not resumable).
    listing: Vec<bool>,
    seen: Option<SharedSeen>,
    /// Samples not yet overtaken by the acknowledged prefix, oldest first.
    samples: VecDeque<SinkSample>,
}

impl AckTracker {
    pub fn new() -> Self {
        Self::default()
    }

    /// A tracker that records acknowledged events in `seen`.
    pub fn with_seen(seen: Option<SharedSeen>) -> Self {
        Self {
            seen,
            ..Self::default()
        }
    }

    /// Registers the next event; its sequence number must be `next_seq()`.
    pub fn register(&mut self, seq: u64, mut p: Pending) {
        debug_assert_eq!(seq, self.next_seq(), "events are registered in order");
        if p.registered_at.is_none() {
            p.registered_at = Some(Utc::now());
        }
        self.pending.push_back(p);
        self.advance();
    }

    /// The sequence number the next registered event gets.
    pub fn next_seq(&self) -> u64 {
        self.base + self.pending.len() as u64
    }

    /// Sink positions sampled before event `sample.seq` (and every later one) was queued.
    pub fn sample(&mut self, sample: SinkSample) {
        self.samples.push_back(sample);
        self.apply_samples();
    }

    /// The newest sample taken at or before the acknowledged prefix's end sets `sinks`.
    fn apply_samples(&mut self) {
        while self.samples.len() >= 2 && self.samples[1].seq <= self.base {
            self.samples.pop_front();
        }
        if self.samples.front().is_some_and(|s| s.seq <= self.base)
            && let Some(s) = self.samples.pop_front()
        {
            // An exporter that could not tell its position then keeps the older one (safe: earlier).
            self.checkpoint.sinks.extend(s.positions);
        }
    }

    /// One exporter acknowledged event `seq`. Unknown or repeated acks are ignored.
    pub fn ack(&mut self, seq: u64) {
        if seq < self.base {
            return;
        }
        if let Some(p) = self.pending.get_mut((seq - self.base) as usize) {
            p.remaining = p.remaining.saturating_sub(1);
        }
    }

    /// Moves the checkpoint past the fully acknowledged prefix; true if it moved.
    pub fn advance(&mut self) -> bool {
        let mut moved = false;
        let mut seen = self.seen.as_ref().and_then(|s| s.lock().ok());
        while self.pending.front().is_some_and(|p| p.remaining == 0) {
            let Some(p) = self.pending.pop_front() else { break };
            let s = p.stream;
            if self.checkpoint.streams.len() <= s {
                self.checkpoint.streams.resize(s + 1, None);
                self.checkpoint.acked_at.resize(s + 1, None);
            }
            if self.listing.len() <= s {
                self.listing.resize(s + 1, false);
            }
            let position = match p.mark {
                Some(Mark::ListStart) => {
                    self.listing[s] = true;
                    None
                }
                Some(Mark::ListEnd(rv)) => {
                    self.listing[s] = false;
                    Some(rv)
                }
                Some(Mark::Bookmark(rv)) if !self.listing[s] => Some(rv),
                Some(Mark::Bookmark(_)) => None,
                None => {
                    if let Some(seen) = seen.as_mut()
                        && !p.uid.is_empty()
                        && !p.resource_version.is_empty()
                    {
                        seen.insert(&p.uid, &p.resource_version);
                        seen.insert_count(&p.uid, p.count);
                    }
                    // An object that had no resourceVersion cannot be resumed from.
                    (!self.listing[s]).then_some(p.resource_version)
                }
            };
            if let Some(rv) = position.filter(|rv| !rv.is_empty()) {
                self.checkpoint.streams[s] = Some(rv);
                self.checkpoint.acked_at[s] = p.registered_at;
            }
            self.base += 1;
            moved = true;
        }
        drop(seen);
        self.checkpoint.acked_below = self.base;
        if moved {
            self.apply_samples();
        }
        moved
    }

    pub fn checkpoint(&self) -> &Checkpoint {
        &self.checkpoint
    }

    /// Events registered but not fully acknowledged.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(stream: usize, rv: &str, remaining: u32) -> Pending {
        Pending {
            stream,
            resource_version: rv.to_string(),
            remaining,
            uid: format!("uid-{rv}"),
            ..Default::default()
        }
    }

    #[test]
    fn lists_move_the_position_only_at_their_end_and_fill_the_seen_set() {
        use crate::state::seen::SeenSet;
        let seen = SeenSet::new(std::time::Duration::from_secs(3600), 100).shared();
        let mut t = AckTracker::with_seen(Some(seen.clone()));
        t.register(0, p(0, "50", 0));
        assert_eq!(t.checkpoint().streams, vec![Some("50".into())]);
        t.register(1, Pending::mark(0, Mark::ListStart));
        // Items in name order: their resourceVersions say nothing about the list's progress.
        t.register(2, p(0, "90", 0));
        t.register(3, p(0, "70", 1));
        t.register(4, Pending::mark(0, Mark::Bookmark("95".into())));
        t.register(5, Pending::mark(0, Mark::ListEnd("100".into())));
        assert_eq!(
            t.checkpoint().streams,
            vec![Some("50".into())],
            "held at the old position"
        );
        assert!(seen.lock().unwrap().contains("uid-90", "90"));
        assert!(!seen.lock().unwrap().contains("uid-70", "70"), "not acknowledged yet");
        t.ack(3);
        assert!(t.advance());
        assert_eq!(t.checkpoint().streams, vec![Some("100".into())]);
        assert!(seen.lock().unwrap().contains("uid-70", "70"));
        assert!(t.checkpoint().acked_at[0].is_some());
        // After the list, watch events and bookmarks move it again.
        t.register(6, p(0, "101", 0));
        t.register(7, Pending::mark(0, Mark::Bookmark("120".into())));
        assert_eq!(t.checkpoint().streams, vec![Some("120".into())]);
    }

    #[test]
    fn moves_only_past_fully_acked_prefix() {
        let mut t = AckTracker::new();
        t.register(0, p(0, "10", 2));
        t.register(1, p(0, "11", 1));
        t.register(2, p(1, "a7", 1));
        assert_eq!(t.checkpoint().streams, Vec::<Option<String>>::new());
        // The later events are acknowledged first: nothing moves.
        t.ack(1);
        t.ack(2);
        assert!(!t.advance());
        // One of two exporters of event 0: still nothing.
        t.ack(0);
        assert!(!t.advance());
        t.ack(0);
        assert!(t.advance());
        assert_eq!(t.checkpoint().streams, vec![Some("11".into()), Some("a7".into())]);
        assert_eq!(t.checkpoint().acked_below, 3);
        assert_eq!(t.pending(), 0);
    }

    fn sample(seq: u64, pos: &str) -> SinkSample {
        SinkSample {
            seq,
            positions: vec![("vol".into(), pos.into())],
        }
    }

    #[test]
    fn sink_positions_follow_the_acknowledged_prefix() {
        let seen = crate::state::seen::SeenSet::new(std::time::Duration::from_secs(3600), 100).shared();
        let mut t = AckTracker::with_seen(Some(seen.clone()));
        t.sample(sample(0, "p0"));
        assert_eq!(
            t.checkpoint().sinks["vol"],
            "p0",
            "nothing pending: the first sample holds"
        );
        t.register(0, p(0, "10", 1));
        t.sample(sample(1, "p1"));
        t.register(1, p(0, "11", 1));
        t.sample(sample(2, "p2"));
        t.register(2, p(0, "12", 1));
        // Events 1 and 2 are acknowledged, 0 is not: records of 0 may lie after p0 only.
        t.ack(1);
        t.ack(2);
        t.advance();
        assert_eq!(t.checkpoint().sinks["vol"], "p0");
        t.ack(0);
        t.advance();
        assert_eq!(t.checkpoint().acked_below, 3);
        assert_eq!(
            t.checkpoint().sinks["vol"],
            "p2",
            "the newest sample not after the prefix"
        );
        // A sample without this exporter keeps its older position.
        t.sample(SinkSample {
            seq: 3,
            positions: Vec::new(),
        });
        assert_eq!(t.checkpoint().sinks["vol"], "p2");
        // Acknowledged events leave their count in the seen-set.
        let mut with_count = p(0, "13", 0);
        with_count.count = 7;
        t.register(3, with_count);
        assert_eq!(seen.lock().unwrap().count("uid-13"), Some(7));
    }

    #[test]
    fn unrouted_events_pass_immediately_and_stale_acks_are_ignored() {
        let mut t = AckTracker::new();
        t.register(0, p(0, "5", 0));
        assert_eq!(t.checkpoint().streams, vec![Some("5".into())]);
        t.ack(0);
        t.ack(99);
        t.register(1, p(0, "6", 1));
        t.ack(1);
        t.ack(1);
        t.advance();
        assert_eq!(t.checkpoint().streams, vec![Some("6".into())]);
        assert_eq!(t.next_seq(), 2);
    }
}
