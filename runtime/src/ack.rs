//! Acknowledgement tracking: the checkpoint moves only past events that every
//! exporter on their route has acknowledged.
//!
//! Events are registered in the order the pipeline passes them on, each with
//! the watch it came from, its resourceVersion and how many exporters must
//! acknowledge it. The checkpoint of a watch is the resourceVersion of its
//! newest event such that it and every earlier event are fully acknowledged.
//! resourceVersions stay opaque strings: only the order of arrival counts.

use std::collections::VecDeque;

/// One event waiting for acknowledgements.
#[derive(Debug, Clone)]
pub struct Pending {
    pub stream: usize,
    pub resource_version: String,
    pub remaining: u32,
}

/// The acknowledged position of every watch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Checkpoint {
    /// Per watch (index as in the source's specs): the last fully acknowledged resourceVersion.
    pub streams: Vec<Option<String>>,
    /// Every event with a lower sequence number is fully acknowledged.
    pub acked_below: u64,
}

#[derive(Debug, Default)]
pub struct AckTracker {
    /// Sequence number of `pending[0]`.
    base: u64,
    pending: VecDeque<Pending>,
    checkpoint: Checkpoint,
}

impl AckTracker {
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers the next event; its sequence number must be `next_seq()`.
    pub fn register(&mut self, seq: u64, p: Pending) {
        debug_assert_eq!(seq, self.next_seq(), "events are registered in order");
        self.pending.push_back(p);
        self.advance();
    }

    /// The sequence number the next registered event gets.
    pub fn next_seq(&self) -> u64 {
        self.base + self.pending.len() as u64
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
        while self.pending.front().is_some_and(|p| p.remaining == 0) {
            if let Some(p) = self.pending.pop_front() {
                if self.checkpoint.streams.len() <= p.stream {
                    self.checkpoint.streams.resize(p.stream + 1, None);
                }
                // An object that had no resourceVersion cannot be resumed from.
                if !p.resource_version.is_empty() {
                    self.checkpoint.streams[p.stream] = Some(p.resource_version);
                }
                self.base += 1;
                moved = true;
            }
        }
        self.checkpoint.acked_below = self.base;
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
        }
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
