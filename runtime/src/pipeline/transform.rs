//! The filter-and-serialize stage: runs each routed event through the WASM
//! filter chains of the routes that took it, and turns what is kept into the
//! records the exporters receive.
//!
//! It runs on its own OS thread (WASI's sync bindings cannot run inside the
//! tokio runtime, and a thread of its own lets serialization use the second
//! core while `process` normalizes the next batch). Each event is serialized
//! once; an enriched event is serialized again only for the routes whose chain
//! replaced it.
//!
//! Rules when an event takes several routes:
//! - routes with the same chain share one run of it;
//! - an exporter gets at most one copy of an event: the first route (in table
//!   order) that reaches it wins, so two routes never send the same
//!   (uid, resourceVersion) twice to one sink;
//! - a chain that fails with `on_error = "dead-letter"` sends the event, with
//!   the error, to the filter's dead-letter exporter, beside whatever other
//!   routes do;
//! - an exporter whose sink already holds the event (read back at startup,
//!   see `recovery.rs`) does not get it again; for that exporter the event
//!   counts as acknowledged.

use std::ops::Range;
use std::sync::Arc;

use event_collector_exporters::{Delivered, Record};

use super::reconfigure::{DispatchSwitch, Switch};
use super::{Queued, dead_letter_json, into_record, record_with, to_record};
use crate::ack::Pending;
use crate::event::Event;
use crate::filter::{ChainOutcome, FilterHost, FilterId, FilterWorker};

/// One event after normalize and route; `event` is None when it goes nowhere
/// (skipped at startup, or not normalizable) but must still be registered.
pub(super) struct Routed {
    pub seq: u64,
    pub pending: Pending,
    pub event: Option<Event>,
    /// The routes it took, as a range into [`RoutedBatch::routes`].
    pub routes: Range<u32>,
}

/// A batch from `process`, with the taken routes of all its events in one vector.
#[derive(Default)]
pub(super) struct RoutedBatch {
    pub items: Vec<Routed>,
    pub routes: Vec<u32>,
    /// A reconfigure, applied before `items` (which then are empty).
    pub switch: Option<Box<Switch>>,
}

/// What `dispatch` registers with the tracker and puts on the exporter queues.
#[derive(Default)]
pub(super) struct DispatchBatch {
    pub regs: Vec<(u64, Pending)>,
    pub sends: Vec<(usize, Queued)>,
    /// A reconfigure's new exporter queues, switched to before `sends`.
    pub switch: Option<Box<DispatchSwitch>>,
}

/// What the stage counted, for the run's summary.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct TransformStats {
    /// Events that every chain they met dropped (sent to no exporter).
    pub filtered_out: u64,
    /// Events written to a filter's dead-letter exporter.
    pub dead_lettered: u64,
    /// (event, exporter) pairs not sent because the sink already held them.
    pub recovered: u64,
}

/// The routes' exporters and filter chains, resolved to indices.
#[derive(Debug, Clone, Default)]
pub struct Chains {
    /// Per route: its exporters, as indices into the pipeline's exporter list.
    pub exporters: Vec<Vec<usize>>,
    /// Per route: its filter chain (empty: no filters).
    pub filters: Vec<Vec<FilterId>>,
    /// Per filter id: the exporter its dead letters go to.
    pub dead_letter: Vec<Option<usize>>,
}

impl Chains {
    fn any_filters(&self) -> bool {
        self.filters.iter().any(|c| !c.is_empty())
    }
}

pub(super) struct Transform {
    chains: Chains,
    worker: Option<FilterWorker>,
    host: Option<Arc<FilterHost>>,
    /// Scratch: (exporter, record, is a dead letter).
    targets: Vec<(usize, Arc<Record>, bool)>,
    /// Scratch: (route whose chain ran, its output).
    memo: Vec<(usize, Option<Arc<Record>>)>,
    /// Per exporter: keys its sink already holds (from `recovery`); emptied as they are met.
    delivered: Vec<Delivered>,
    /// Keys left in `delivered`, so that the check costs nothing once they are all met.
    delivered_left: usize,
    pub stats: TransformStats,
}

impl Transform {
    /// Must be called on the thread that runs the stage: the filter worker's
    /// instances stay on it.
    pub fn new(chains: Chains, host: Option<Arc<FilterHost>>) -> Self {
        let worker = match &host {
            Some(h) if chains.any_filters() => Some(h.worker()),
            _ => None,
        };
        Transform {
            chains,
            worker,
            host,
            targets: Vec::new(),
            memo: Vec::new(),
            delivered: Vec::new(),
            delivered_left: 0,
            stats: TransformStats::default(),
        }
    }

    /// Per exporter index: records not to send again (their sink holds them).
    pub fn with_delivered(mut self, delivered: Vec<Delivered>) -> Self {
        self.delivered_left = delivered.iter().map(Delivered::len).sum();
        self.delivered = delivered;
        self
    }

    /// Drops the targets whose sink already holds the record.
    fn skip_delivered(&mut self) {
        let (delivered, left, stats) = (&mut self.delivered, &mut self.delivered_left, &mut self.stats);
        self.targets.retain(|(exporter, rec, dead_letter)| {
            let held = !*dead_letter
                && delivered
                    .get_mut(*exporter)
                    .is_some_and(|d| d.remove(&rec.fields.uid, &rec.fields.resource_version));
            if held {
                *left -= 1;
                stats.recovered += 1;
                tracing::debug!(exporter, uid = %rec.fields.uid, resource_version = %rec.fields.resource_version,
                    "already in the sink: not sent again");
            }
            !held
        });
    }

    pub fn batch(&mut self, batch: RoutedBatch, out: &mut DispatchBatch) {
        let RoutedBatch { items, routes, switch } = batch;
        if let Some(sw) = switch {
            let Switch {
                chains,
                filters,
                queues,
            } = *sw;
            self.switch(chains, filters);
            out.switch = Some(Box::new(queues));
        }
        crate::process_memory::count_events(items.len());
        for r in items {
            let taken = &routes[r.routes.start as usize..r.routes.end as usize];
            self.event(r.seq, r.pending, r.event, taken, out);
        }
    }

    fn event(&mut self, seq: u64, mut pending: Pending, event: Option<Event>, taken: &[u32], out: &mut DispatchBatch) {
        self.targets.clear();
        if let Some(event) = event
            && !taken.is_empty()
        {
            let filtered = taken.iter().any(|&r| !self.chains.filters[r as usize].is_empty());
            if filtered && self.worker.is_some() {
                self.filtered(event, taken);
            } else {
                self.unfiltered(event, taken);
            }
        }
        if self.delivered_left > 0 {
            self.skip_delivered();
        }
        pending.remaining = self.targets.len() as u32;
        out.regs.push((seq, pending));
        for (exporter, record, _) in self.targets.drain(..) {
            out.sends.push((exporter, (seq, record)));
        }
    }

    /// Switches to a reload's chains. The filter worker (and its instances)
    /// stays when the host does; a new host gets a new worker.
    fn switch(&mut self, chains: Chains, host: Option<Arc<FilterHost>>) {
        let same_host = match (&self.host, &host) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            (None, None) => true,
            _ => false,
        };
        if !same_host {
            self.worker = None;
            self.host = host;
        }
        self.chains = chains;
        // The keys read back at startup are indexed by the old exporter list;
        // a reload may reorder it. Forgetting them can only let an event
        // through twice, never lose one.
        if self.delivered_left > 0 {
            tracing::info!(
                events = self.delivered_left,
                "config reloaded before every event read back from the sinks came again: the rest may be sent twice"
            );
            self.delivered.clear();
            self.delivered_left = 0;
        }
        if !self.chains.any_filters() {
            self.worker = None;
        } else if self.worker.is_none() {
            self.worker = self.host.as_ref().map(|h| h.worker());
        }
    }

    /// Stops the current host's module watcher (at the end of the run).
    pub fn stop_watching(&self) {
        if let Some(h) = &self.host {
            h.stop_watching();
        }
    }

    /// Adds `record` for `exporter` unless the exporter already has this event.
    fn push(&mut self, exporter: usize, record: &Arc<Record>, dead_letter: bool) {
        if dead_letter || !self.targets.iter().any(|(e, _, dl)| *e == exporter && !dl) {
            self.targets.push((exporter, record.clone(), dead_letter));
        }
    }

    fn unfiltered(&mut self, event: Event, taken: &[u32]) {
        if taken.iter().all(|&r| self.chains.exporters[r as usize].is_empty()) {
            return;
        }
        let record = Arc::new(into_record(event));
        for &r in taken {
            for i in 0..self.chains.exporters[r as usize].len() {
                let e = self.chains.exporters[r as usize][i];
                self.push(e, &record, false);
            }
        }
    }

    fn filtered(&mut self, event: Event, taken: &[u32]) {
        // The unchanged event's record, serialized when a route first needs
        // it: a chain whose filters read only the extracted fields (contract
        // 0.3) and drops the event never has it serialized at all.
        let mut base: Option<Arc<Record>> = None;
        self.memo.clear();
        let mut kept = false;
        let mut event = Some(event);
        for (k, &r) in taken.iter().enumerate() {
            let r = r as usize;
            let output = if self.chains.filters[r].is_empty() {
                // Only the last route's chain takes the event, so it is still here.
                event
                    .as_ref()
                    .map(|ev| base.get_or_insert_with(|| Arc::new(to_record(ev))).clone())
            } else if let Some((_, out)) = self
                .memo
                .iter()
                .find(|(m, _)| self.chains.filters[*m] == self.chains.filters[r])
            {
                out.clone()
            } else {
                // The chain takes the event: the last route's run gets it, earlier ones a copy.
                let ev = if k + 1 == taken.len() {
                    event.take()
                } else {
                    event.clone()
                };
                let out = ev.and_then(|ev| self.run_chain(r, ev, &mut base));
                self.memo.push((r, out.clone()));
                out
            };
            if let Some(rec) = output {
                kept = true;
                for i in 0..self.chains.exporters[r].len() {
                    let e = self.chains.exporters[r][i];
                    self.push(e, &rec, false);
                }
            }
        }
        if !kept {
            self.stats.filtered_out += 1;
        }
    }

    /// Runs route `r`'s chain; the record to send, or None when it dropped the event.
    fn run_chain(&mut self, r: usize, event: Event, base: &mut Option<Arc<Record>>) -> Option<Arc<Record>> {
        let worker = self.worker.as_mut()?;
        let json = base.as_ref().map(|b| &b.json[..]);
        match worker.run_chain(&self.chains.filters[r], event, json) {
            // Serialized at most once: reuse what a filter had serialized.
            ChainOutcome::Keep { event, replaced: false } => {
                let json = worker.serialized();
                Some(base.get_or_insert_with(|| Arc::new(record_with(event, json))).clone())
            }
            ChainOutcome::Keep { event, replaced: true } => Some(Arc::new(record_with(event, worker.serialized()))),
            ChainOutcome::Drop { .. } => None,
            ChainOutcome::DeadLetter {
                event,
                filter,
                error,
                exporter,
            } => {
                let id = self.host.as_ref().and_then(|h| h.id(&filter));
                let target = id.and_then(|id| self.chains.dead_letter.get(id.index()).copied().flatten());
                match target {
                    Some(t) => {
                        let rec = to_record(&event);
                        let json = dead_letter_json("filter", &filter, "filter_failed", &error, &rec.json);
                        let rec = Arc::new(Record::new(rec.fields, json));
                        self.stats.dead_lettered += 1;
                        self.push(t, &rec, true);
                    }
                    // Config validation names only defined exporters, so this cannot happen.
                    None => tracing::error!(filter = %filter, exporter = %exporter, uid = %event.uid,
                        "dead-letter exporter of a filter is not running; the event is dropped"),
                }
                None
            }
        }
    }
}
