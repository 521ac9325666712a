//! The wiring of the data path: source → normalize → route → filters →
//! exporters, with a bounded queue and a worker per exporter, and
//! acknowledgements flowing back to the checkpoint.
//!
//! Stages run as separate tasks so they use both cores: `ingest` polls the
//! source (where JSON is decoded), `process` normalizes and routes, the
//! [`transform`] thread runs the routes' WASM filter chains and serializes each
//! kept event once, `dispatch` registers events with the tracker and queues
//! them, and one worker per exporter batches, exports and retries.
//! Each exporter's queue (`queue`) is bounded in events and bytes; when it is
//! full, the exporter's `overflow` policy decides: hold `dispatch` (and so the
//! watch) back, drop, or spill to disk. `tracker` turns exporter
//! acknowledgements into the checkpoint.
//!
//! A running pipeline can be reconfigured ([`run_with`], [`reconfigure`]):
//! the new routes, filter chains and exporter set travel down the stages in
//! stream order, so every event is handled entirely by one config.

use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use event_collector_exporters::{ErrorKind, Record, RecordFields, SharedExporter};
use futures::{Stream, StreamExt};
use rand::Rng;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::ack::{AckTracker, Checkpoint, Pending};
use crate::config::{ExporterCommon, Overflow, StartupPolicy};
use crate::event::{Event, NormalizeOptions, normalize};
use crate::filter::FilterHost;
use crate::metrics::{ExporterMetrics, Metrics};
use crate::route::RouteTable;
use crate::source::{SourceEvent, SourceItem};

pub mod transform;

pub use transform::Chains;
use transform::{DispatchBatch, Routed, RoutedBatch, Transform, TransformStats};
pub mod queue;
pub mod reconfigure;
mod recovery;

use queue::{QueueRx, QueueTx, Queued, Taken};
use reconfigure::ExporterSet;
pub use reconfigure::{Control, ExporterPlan, Reconfigure};

/// One exporter with its pipeline settings.
#[derive(Clone)]
pub struct ExporterSlot {
    pub name: String,
    pub exporter: SharedExporter,
    pub common: ExporterCommon,
}

/// Everything the pipeline needs, built from a validated config by `setup`.
pub struct Setup {
    pub routes: RouteTable,
    pub exporters: Vec<ExporterSlot>,
    /// The routes' exporters and filter chains, resolved to indices.
    pub chains: Chains,
    /// The WASM filter host, when any route runs filters.
    pub filters: Option<Arc<FilterHost>>,
    pub normalize: NormalizeOptions,
    pub startup: StartupPolicy,
    pub startup_max_age: Duration,
    /// How long shutdown waits for queues to drain.
    pub drain_timeout: Duration,
    /// The seen-set fully acknowledged events are recorded in (see `crate::state`).
    pub seen: Option<crate::state::seen::SharedSeen>,
    /// Per exporter: the position saved with the checkpoint, to read the sink back from (see `recovery`).
    pub recover_from: std::collections::BTreeMap<String, String>,
}

/// What a finished run reports.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    /// Events passed to at least one exporter.
    pub routed: u64,
    pub unrouted: u64,
    /// Routed events that every filter chain they met dropped.
    pub filtered_out: u64,
    /// Events a filter failed on, written to its dead-letter exporter.
    pub filter_dead_lettered: u64,
    pub startup_dropped: u64,
    pub normalize_failed: u64,
    /// The final checkpoint.
    pub checkpoint: Checkpoint,
    /// Events still unacknowledged when the run ended (they are re-read on the next start).
    pub unacknowledged: usize,
}

pub(crate) enum AckMsg {
    Register(Vec<(u64, Pending)>),
    Acked(Vec<u64>),
    Sample(crate::ack::SinkSample),
}

/// Batches in flight between stages. Two keep both cores busy (the replay's
/// throughput and CPU per event are the same as with four) and hold half as
/// many events while a list runs at full speed (docs/benchmarks.md, memory
/// optimisation 17).
const STAGE_DEPTH: usize = 2;
/// Most events `process` takes from the source at once.
const PROCESS_BATCH: usize = 256;
/// Chunks of decoded events (each up to [`PROCESS_BATCH`]) the source may run
/// ahead of `process`: as many as the stages after it hold. An event is ~3 KB
/// in memory, so this bounds what a fast list (thousands of events a second)
/// piles up: 4096 events held ~12 MiB at peak, 1024 hold ~3 MiB, 512 now.
const SOURCE_DEPTH: usize = STAGE_DEPTH;

/// Runs the pipeline until the source ends or `shutdown` is cancelled, then
/// drains the queues (within `drain_timeout`), flushes the exporters and
/// returns. `checkpoints` receives every new checkpoint.
pub async fn run<S>(
    source: S,
    setup: Setup,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
    checkpoints: watch::Sender<Checkpoint>,
) -> Summary
where
    S: Stream<Item = SourceItem> + Send + 'static,
{
    run_with(source, setup, metrics, shutdown, checkpoints, Control::default()).await
}

/// [`run`], reconfigurable through `control` while it runs.
pub async fn run_with<S>(
    source: S,
    setup: Setup,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
    checkpoints: watch::Sender<Checkpoint>,
    control: Control,
) -> Summary
where
    S: Stream<Item = SourceItem> + Send + 'static,
{
    let (src_tx, src_rx) = mpsc::channel::<Vec<SourceItem>>(SOURCE_DEPTH);
    let (ack_tx, ack_rx) = mpsc::unbounded_channel::<AckMsg>();
    let delivered = recovery::recover(&setup.exporters, &setup.recover_from).await;
    let sampler = recovery::Sampler::new(&setup.exporters);

    let Control { reconfigure, exporters } = control;
    let mut set = ExporterSet::new(
        ack_tx.clone(),
        metrics.clone(),
        shutdown.clone(),
        setup.drain_timeout,
        exporters,
    );
    let queues = set.start(setup.exporters.clone());
    // Only now take events: the exporters are published (for readiness) before the watch can be up.
    let ingest = tokio::spawn(ingest(source, src_tx, shutdown.clone()));
    let tracker = tokio::spawn(tracker(ack_rx, checkpoints, metrics.clone(), setup.seen.clone()));
    let drain_timeout = setup.drain_timeout;

    let (routed_tx, routed_rx) = mpsc::channel::<RoutedBatch>(STAGE_DEPTH);
    let (dispatch_tx, dispatch_rx) = mpsc::channel::<DispatchBatch>(STAGE_DEPTH);
    let transform = spawn_transform(
        setup.chains.clone(),
        setup.filters.clone(),
        delivered,
        routed_rx,
        dispatch_tx,
    );
    let dispatch = tokio::spawn(dispatch(dispatch_rx, queues, ack_tx, sampler, shutdown.clone()));
    let filters = setup.filters.clone();

    let control = reconfigure.map(|rx| (rx, &mut set));
    let mut summary = process(src_rx, setup, routed_tx, &metrics, shutdown.clone(), control).await;
    let _ = ingest.await;
    let _ = dispatch.await;
    let stats = match transform {
        Ok(t) => tokio::task::spawn_blocking(move || t.join().unwrap_or_default())
            .await
            .unwrap_or_default(),
        Err(e) => {
            tracing::error!(error = %e, "cannot start the filter thread; no event was passed on");
            TransformStats::default()
        }
    };
    summary.filtered_out = stats.filtered_out;
    summary.filter_dead_lettered = stats.dead_lettered;
    if stats.recovered > 0 {
        tracing::info!(
            events = stats.recovered,
            "not sent again: already in their sinks (written after the last checkpoint)"
        );
    }
    if let Some(f) = filters {
        f.stop_watching();
    }

    // `dispatch` dropped the queue senders: workers drain what is queued and stop.
    let (mut workers, exporters) = set.finish();
    let drained = tokio::time::timeout(drain_timeout + Duration::from_secs(1), async {
        for w in &mut workers {
            let _ = w.await;
        }
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            timeout = ?drain_timeout,
            "exporters did not drain in time; unacknowledged events will be read again on the next start"
        );
        for w in &workers {
            w.abort();
        }
    }
    for e in &exporters {
        if let Err(err) = e.flush().await {
            tracing::warn!(exporter = e.name(), error = %err, "flush on shutdown failed");
        }
    }
    drop(workers);
    let (checkpoint, unacknowledged) = tracker.await.unwrap_or_default();
    Summary {
        checkpoint,
        unacknowledged,
        ..summary
    }
}

/// Polls the source and hands its items to `process` in chunks: whatever the
/// source has ready, up to [`PROCESS_BATCH`] (one item when events come one
/// at a time), so a busy source costs one channel send per chunk, not per
/// event. Stops on shutdown.
async fn ingest<S>(source: S, tx: mpsc::Sender<Vec<SourceItem>>, shutdown: CancellationToken)
where
    S: Stream<Item = SourceItem> + Send + 'static,
{
    let mut source = pin!(source.ready_chunks(PROCESS_BATCH));
    loop {
        let chunk = tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            chunk = source.next() => chunk,
        };
        let Some(chunk) = chunk else { break };
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            sent = tx.send(chunk) => if sent.is_err() { break },
        }
    }
}

/// The fields exporters key on, taken from the event once.
fn record_fields(ev: &Event) -> RecordFields {
    RecordFields {
        cluster: ev.cluster.clone(),
        api: ev.api.as_str().into(),
        uid: ev.uid.clone(),
        resource_version: ev.resource_version.clone(),
        namespace: ev.namespace.clone(),
        name: ev.name.clone(),
        event_type: ev.type_.clone().unwrap_or_default(),
        reason: ev.reason.clone().unwrap_or_default(),
        kind: ev.kind().to_string(),
        object_uid: ev.object.uid.clone().unwrap_or_default(),
        schema_version: ev.schema_version,
        timestamp: ev.timestamp.clone(),
    }
}

/// [`record_fields`], moving the strings out of an event no longer needed.
fn record_fields_from(ev: Event) -> RecordFields {
    RecordFields {
        cluster: ev.cluster,
        api: ev.api.as_str().into(),
        uid: ev.uid,
        resource_version: ev.resource_version,
        namespace: ev.namespace,
        name: ev.name,
        event_type: ev.type_.unwrap_or_default(),
        reason: ev.reason.unwrap_or_default(),
        kind: ev.object.kind.unwrap_or_default(),
        object_uid: ev.object.uid.unwrap_or_default(),
        schema_version: ev.schema_version,
        timestamp: ev.timestamp,
    }
}

/// [`to_record`] for an event that is not needed afterwards: its strings move
/// into the record's fields instead of being copied (ten allocations less).
pub fn into_record(ev: Event) -> Record {
    let json = serialize(&ev);
    Record::new(record_fields_from(ev), json)
}

/// [`into_record`] with the event's JSON when it is already serialized
/// (`json` must be this event's; it is copied at its exact size).
pub fn record_with(ev: Event, json: Option<&[u8]>) -> Record {
    match json {
        Some(j) => Record::new(record_fields_from(ev), j.to_vec()),
        None => into_record(ev),
    }
}

/// Serializes an event once into the record every exporter shares.
pub fn to_record(ev: &Event) -> Record {
    Record::new(record_fields(ev), serialize(ev))
}

/// The event's JSON, at its exact size.
fn serialize(ev: &Event) -> Vec<u8> {
    thread_local! {
        /// Serialization happens here, then is copied out at its exact size:
        /// growing a fresh Vec to ~1 KB reallocated it eight times per event.
        static SCRATCH: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(Vec::with_capacity(4096));
    }
    SCRATCH.with_borrow_mut(|buf| {
        buf.clear();
        crate::event::json::write_event(buf, ev);
        buf.to_vec()
    })
}

fn too_old(ev: &Event, max_age: Duration, now: DateTime<Utc>) -> bool {
    match DateTime::parse_from_rfc3339(&ev.timestamp) {
        Ok(t) => now.signed_duration_since(t).to_std().is_ok_and(|age| age > max_age),
        Err(_) => false,
    }
}

struct Process<'a> {
    setup: &'a mut Setup,
    metrics: &'a Metrics,
    route_counters: Vec<prometheus_client::metrics::counter::Counter>,
    taken: Vec<usize>,
    next_seq: u64,
    summary: Summary,
    /// Per watch: events dropped from the startup list, to report once it is done.
    startup_dropped: Vec<u64>,
}

impl Process<'_> {
    /// Normalizes and routes one event into `out`.
    fn event(&mut self, ev: SourceEvent, out: &mut RoutedBatch) {
        let SourceEvent {
            api,
            watch_type,
            raw,
            prev_count,
            stream,
            initial,
        } = ev;
        let seq = self.next_seq;
        self.next_seq += 1;
        let pending = Pending::event(stream, &raw);
        let at = out.routes.len() as u32;
        let skip = |out: &mut RoutedBatch, pending| {
            out.items.push(Routed {
                seq,
                pending,
                event: None,
                routes: at..at,
            })
        };
        let event = match normalize(api, *raw, watch_type, prev_count, &self.setup.normalize) {
            Ok(e) => e,
            Err(e) => {
                self.metrics.normalize_failed.inc();
                self.summary.normalize_failed += 1;
                tracing::warn!(error = %e, "skipping an event that cannot be normalized");
                skip(out, pending);
                return;
            }
        };
        if initial
            && self.setup.startup == StartupPolicy::MaxAge
            && too_old(&event, self.setup.startup_max_age, Utc::now())
        {
            self.metrics.startup_dropped.inc();
            self.summary.startup_dropped += 1;
            if self.startup_dropped.len() <= stream {
                self.startup_dropped.resize(stream + 1, 0);
            }
            self.startup_dropped[stream] += 1;
            skip(out, pending);
            return;
        }
        self.setup.routes.evaluate(&event, &mut self.taken);
        for &r in &self.taken {
            self.route_counters[r].inc();
            out.routes.push(r as u32);
        }
        if self.taken.is_empty() {
            self.metrics.unrouted.inc();
            self.summary.unrouted += 1;
        } else if self
            .taken
            .iter()
            .any(|&r| !self.setup.routes.routes()[r].exporters.is_empty())
        {
            self.summary.routed += 1;
            self.metrics.kubernetes_event(&event);
        }
        out.items.push(Routed {
            seq,
            pending,
            event: Some(event),
            routes: at..out.routes.len() as u32,
        });
    }

    /// Registers a position marker: it moves the checkpoint once everything before it is acknowledged.
    fn mark(&mut self, stream: usize, mark: crate::ack::Mark, out: &mut RoutedBatch) {
        let at = out.routes.len() as u32;
        out.items.push(Routed {
            seq: self.next_seq,
            pending: Pending::mark(stream, mark),
            event: None,
            routes: at..at,
        });
        self.next_seq += 1;
    }

    fn listed(&mut self, stream: usize) {
        let dropped = self.startup_dropped.get(stream).copied().unwrap_or(0);
        if dropped > 0 {
            tracing::info!(
                stream,
                dropped,
                max_age = ?self.setup.startup_max_age,
                "startup list done; dropped events older than startup_max_age (startup = \"max_age\")"
            );
            self.startup_dropped[stream] = 0;
        } else {
            tracing::info!(stream, "watch established");
        }
    }
}

async fn process(
    mut rx: mpsc::Receiver<Vec<SourceItem>>,
    mut setup: Setup,
    out: mpsc::Sender<RoutedBatch>,
    metrics: &Metrics,
    shutdown: CancellationToken,
    mut control: reconfigure::ProcessControl<'_>,
) -> Summary {
    let route_counters = setup
        .routes
        .routes()
        .iter()
        .map(|r| metrics.route_counter(&r.name))
        .collect();
    let mut p = Process {
        setup: &mut setup,
        metrics,
        route_counters,
        taken: Vec::new(),
        next_seq: 0,
        summary: Summary::default(),
        startup_dropped: Vec::new(),
    };
    loop {
        let mut reloads_closed = false;
        let got = match control.as_mut() {
            // A reconfigure goes between two batches, in stream order.
            Some((reloads, set)) => tokio::select! {
                biased;
                r = reloads.recv() => {
                    match r {
                        Some(r) => {
                            if !reconfigure::apply(&mut p, r, set, &out, &shutdown).await {
                                break;
                            }
                        }
                        None => reloads_closed = true,
                    }
                    None
                }
                chunk = rx.recv() => Some(chunk),
            },
            None => Some(rx.recv().await),
        };
        if reloads_closed {
            control = None;
        }
        let Some(chunk) = got else { continue };
        let Some(items) = chunk else { break };
        let mut batch = RoutedBatch {
            items: Vec::with_capacity(items.len()),
            routes: Vec::with_capacity(items.len()),
            switch: None,
        };
        for item in items {
            match item {
                SourceItem::Event(ev) => p.event(*ev, &mut batch),
                SourceItem::Listed { stream } => p.listed(stream),
                SourceItem::Mark { stream, mark } => p.mark(stream, mark, &mut batch),
            }
        }
        if batch.items.is_empty() {
            continue;
        }
        if !reconfigure::send(&mut p, batch, &out, &shutdown, &mut control).await {
            break;
        }
    }
    p.summary
}

/// Starts the filter-and-serialize stage on its own thread, with a native
/// stack deep enough for the filters' wasm stack.
fn spawn_transform(
    chains: Chains,
    host: Option<Arc<FilterHost>>,
    delivered: Vec<event_collector_exporters::Delivered>,
    mut rx: mpsc::Receiver<RoutedBatch>,
    tx: mpsc::Sender<DispatchBatch>,
) -> std::io::Result<std::thread::JoinHandle<TransformStats>> {
    let stack = filter_stack_budget(host.as_deref()) + (4 << 20);
    std::thread::Builder::new()
        .name("filters".into())
        .stack_size(stack)
        .spawn(move || {
            let mut t = Transform::new(chains, host).with_delivered(delivered);
            while let Some(batch) = rx.blocking_recv() {
                let mut out = DispatchBatch {
                    regs: Vec::with_capacity(batch.items.len()),
                    sends: Vec::with_capacity(batch.items.len()),
                    switch: None,
                };
                t.batch(batch, &mut out);
                if tx.blocking_send(out).is_err() {
                    break;
                }
            }
            t.stop_watching();
            t.stats
        })
}

/// The native stack the filter thread keeps for WASM code: the host's
/// `max_stack`, and at least [`reconfigure::MIN_FILTER_STACK`] so that a
/// reload can bring filters in (the thread's stack is fixed when it starts).
pub fn filter_stack_budget(host: Option<&FilterHost>) -> usize {
    host.map_or(0, |h| h.max_stack()).max(reconfigure::MIN_FILTER_STACK)
}

/// Registers each batch with the tracker, then puts its records on the exporter queues.
async fn dispatch(
    mut rx: mpsc::Receiver<DispatchBatch>,
    mut queues: Vec<Option<QueueTx>>,
    ack_tx: mpsc::UnboundedSender<AckMsg>,
    mut sampler: recovery::Sampler,
    shutdown: CancellationToken,
) {
    'outer: while let Some(DispatchBatch { regs, sends, switch }) = rx.recv().await {
        if let Some(sw) = switch {
            sampler.set_exporters(sw.exporters());
            reconfigure::switch_queues(&mut queues, *sw);
        }
        // Sink positions before anything of this batch is queued (see `recovery`).
        if let Some(first) = regs.first()
            && let Some(sample) = sampler.before(first.0)
            && ack_tx.send(AckMsg::Sample(sample)).is_err()
        {
            break;
        }
        // Register before queueing, so no acknowledgement can overtake its registration.
        if !regs.is_empty() && ack_tx.send(AckMsg::Register(regs)).is_err() {
            break;
        }
        for (target, queued) in sends {
            tokio::select! {
                biased;
                // A closed queue (its worker gave up) leaves the event unacknowledged.
                _ = async { if let Some(Some(q)) = queues.get(target) { let _ = q.send(queued).await; } } => {}
                // On shutdown with a full queue, stop: what is not queued stays unacknowledged.
                _ = shutdown.cancelled() => break 'outer,
            }
        }
    }
}

/// What one exporter's worker runs with.
struct WorkerCtx {
    slot: ExporterSlot,
    dead_letter: Option<(ExporterSlot, ExporterMetrics)>,
    ack_tx: mpsc::UnboundedSender<AckMsg>,
    m: ExporterMetrics,
    shutdown: CancellationToken,
    drain_timeout: Duration,
    /// Cancelled when a reload replaces or removes this exporter: instead of
    /// retrying a failing batch, hand it and everything queued until the queue
    /// closes to the successor.
    retire: CancellationToken,
}

/// Batches, exports and retries for one exporter: events from its memory
/// queue are acknowledged once delivered; records read back from its spill
/// queue (acknowledged when spilled) are removed from disk once delivered.
/// `carry` (events a replaced predecessor could not deliver) goes first.
/// Returns what it hands over to its own successor once retired (else nothing).
async fn worker(ctx: WorkerCtx, rx: QueueRx, mut carry: Vec<Queued>) -> Vec<Queued> {
    let WorkerCtx {
        slot,
        dead_letter,
        ack_tx,
        m,
        shutdown,
        drain_timeout,
        retire,
    } = ctx;
    let max = slot.common.batch_max_events.max(1);
    let mut batch: Vec<Arc<Record>> = Vec::with_capacity(max);
    let mut seqs: Vec<u64> = Vec::with_capacity(max);
    loop {
        let taken = if carry.is_empty() {
            match rx.next(max, slot.common.batch_timeout).await {
                Some(t) => t,
                None => break,
            }
        } else {
            Taken::Mem(carry.drain(..carry.len().min(max)).collect())
        };
        let retry = Retry {
            shutdown: &shutdown,
            drain_timeout,
            retire: &retire,
        };
        match taken {
            Taken::Mem(queued) => {
                batch.clear();
                seqs.clear();
                for (seq, rec) in &queued {
                    seqs.push(*seq);
                    batch.push(rec.clone());
                }
                match export_with_retry(&slot, &batch, &m, dead_letter.as_ref(), &retry, Some(&rx)).await {
                    Outcome::Done => m.observe_lag(&batch),
                    Outcome::Spilled => {}
                    Outcome::GaveUp if retire.is_cancelled() && !shutdown.is_cancelled() => {
                        let mut handed = queued;
                        handed.append(&mut carry);
                        handed.extend(rx.forward_all().await);
                        return handed;
                    }
                    Outcome::GaveUp => return Vec::new(),
                }
                if ack_tx.send(AckMsg::Acked(seqs.clone())).is_err() {
                    return Vec::new();
                }
            }
            Taken::Spill(spilled) => {
                match export_with_retry(&slot, &spilled.records, &m, dead_letter.as_ref(), &retry, None).await {
                    Outcome::Done | Outcome::Spilled => {
                        m.observe_lag(&spilled.records);
                        rx.ack_spill(spilled).await
                    }
                    // Spilled records stay on disk for the next queue on this directory.
                    Outcome::GaveUp if retire.is_cancelled() && !shutdown.is_cancelled() => {
                        let mut handed = std::mem::take(&mut carry);
                        handed.extend(rx.forward_all().await);
                        return handed;
                    }
                    Outcome::GaveUp => return Vec::new(),
                }
            }
        }
    }
    Vec::new()
}

/// How `export_with_retry` ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// Every record delivered or dead-lettered.
    Done,
    /// Shutdown's drain time ran out: the batch stays unacknowledged.
    GaveUp,
    /// The sink kept failing and the rest of the batch moved to the spill queue (acknowledged).
    Spilled,
}

/// When to stop retrying.
struct Retry<'a> {
    shutdown: &'a CancellationToken,
    drain_timeout: Duration,
    /// Cancelled: the exporter was replaced by a reload; stop retrying at once.
    retire: &'a CancellationToken,
}

impl Retry<'_> {
    /// Sleeps `backoff` with jitter; false if shutdown's drain time would run
    /// out first, or if the exporter was retired (its successor takes over).
    async fn sleep(&self, backoff: Duration, give_up_at: &mut Option<Instant>) -> bool {
        let jittered = backoff.mul_f64(rand::rng().random_range(0.5..=1.0));
        if self.retire.is_cancelled() && !self.shutdown.is_cancelled() {
            return false;
        }
        if self.shutdown.is_cancelled() {
            let limit = *give_up_at.get_or_insert_with(|| Instant::now() + self.drain_timeout);
            if Instant::now() + jittered > limit {
                return false;
            }
            tokio::time::sleep(jittered).await;
        } else {
            tokio::select! {
                _ = tokio::time::sleep(jittered) => {}
                _ = self.shutdown.cancelled() => {}
                _ = self.retire.cancelled() => return self.shutdown.is_cancelled(),
            }
        }
        true
    }
}

/// Exports one batch until every record is delivered or dead-lettered.
/// Records the sink reports as delivered are not sent again; records it
/// refuses for good go to the dead-letter exporter. With `spill_to` (a batch
/// from memory, `overflow = "spill"`), a sink that failed `EVACUATE_AFTER`
/// attempts makes the rest of the batch and the memory queue move to disk.
async fn export_with_retry(
    slot: &ExporterSlot,
    batch: &[Arc<Record>],
    m: &ExporterMetrics,
    dead_letter: Option<&(ExporterSlot, ExporterMetrics)>,
    retry: &Retry<'_>,
    spill_to: Option<&QueueRx>,
) -> Outcome {
    let mut remaining: Vec<Arc<Record>> = batch.to_vec();
    let mut backoff = slot.common.retry_initial_backoff;
    let mut attempt: u32 = 0;
    let mut give_up_at: Option<Instant> = None;
    loop {
        attempt += 1;
        let e = match slot.exporter.export(&remaining).await {
            Ok(()) => {
                if attempt > 1 {
                    tracing::info!(exporter = %slot.name, attempts = attempt, "exporter recovered");
                }
                m.exported.inc_by(remaining.len() as u64);
                m.batches.inc();
                return Outcome::Done;
            }
            Err(e) => e,
        };
        let mut done = vec![false; remaining.len()];
        for &i in &e.delivered {
            if i < done.len() && !done[i] {
                done[i] = true;
                m.exported.inc();
            }
        }
        let mut rejected: Vec<(Arc<Record>, String)> = Vec::new();
        for (i, why) in &e.rejected {
            if *i < done.len() && !done[*i] {
                done[*i] = true;
                rejected.push((remaining[*i].clone(), why.clone()));
            }
        }
        if e.kind == ErrorKind::Permanent {
            for (i, d) in done.iter_mut().enumerate() {
                if !*d {
                    *d = true;
                    rejected.push((remaining[i].clone(), e.message.clone()));
                }
            }
        }
        if !rejected.is_empty() && !send_to_dead_letter(slot, e.reason, rejected, m, dead_letter, retry).await {
            return Outcome::GaveUp;
        }
        let mut i = 0;
        remaining.retain(|_| {
            i += 1;
            !done[i - 1]
        });
        if remaining.is_empty() {
            m.batches.inc();
            return Outcome::Done;
        }
        m.failed(e.reason, remaining.len() as u64);
        if attempt.is_power_of_two() {
            tracing::warn!(
                exporter = %slot.name, events = remaining.len(), attempt, reason = e.reason, error = %e,
                retry_in = ?backoff, "export failed; retrying"
            );
        }
        if let Some(q) = spill_to.filter(|q| q.overflow() == Overflow::Spill && !retry.shutdown.is_cancelled())
            && (attempt == queue::EVACUATE_AFTER || (attempt > queue::EVACUATE_AFTER && attempt.is_multiple_of(16)))
            && q.evacuate(&remaining).await
        {
            return Outcome::Spilled;
        }
        if !retry.sleep(backoff, &mut give_up_at).await {
            return Outcome::GaveUp;
        }
        backoff = (backoff * 2).min(slot.common.retry_max_backoff);
    }
}

/// The record written to a dead-letter exporter: the event with why it was refused.
pub fn dead_letter_record(rec: &Record, exporter: &str, reason: &str, error: &str) -> Record {
    Record::new(
        rec.fields.clone(),
        dead_letter_json("exporter", exporter, reason, error, &rec.json),
    )
}

/// `{"dead_letter":{"<by>":<name>,"reason":…,"error":…,"time":…},"event":<event JSON>}`,
/// built without re-parsing the event. `by` is `exporter` or `filter`.
pub(crate) fn dead_letter_json(by: &str, name: &str, reason: &str, error: &str, event: &[u8]) -> Vec<u8> {
    let mut json = Vec::with_capacity(event.len() + error.len() + 128);
    let mut info = serde_json::Map::new();
    info.insert(by.to_string(), name.into());
    info.insert("reason".into(), reason.into());
    info.insert("error".into(), error.into());
    info.insert(
        "time".into(),
        Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true).into(),
    );
    let head = serde_json::json!({ "dead_letter": info }).to_string();
    json.extend_from_slice(&head.as_bytes()[..head.len() - 1]);
    json.extend_from_slice(b",\"event\":");
    json.extend_from_slice(event);
    json.push(b'}');
    json
}

/// Hands refused records to the dead-letter exporter (retrying it while it is
/// down), or counts and logs them as dropped when there is none.
async fn send_to_dead_letter(
    slot: &ExporterSlot,
    reason: &'static str,
    rejected: Vec<(Arc<Record>, String)>,
    m: &ExporterMetrics,
    dead_letter: Option<&(ExporterSlot, ExporterMetrics)>,
    retry: &Retry<'_>,
) -> bool {
    let n = rejected.len() as u64;
    let Some((dl, dl_m)) = dead_letter else {
        m.dropped(reason, n);
        tracing::error!(
            exporter = %slot.name, events = n, reason, first_error = %rejected[0].1,
            "exporter refused events for good and has no dead_letter exporter: counted as dropped"
        );
        return true;
    };
    let records: Vec<Arc<Record>> = rejected
        .iter()
        .map(|(r, why)| Arc::new(dead_letter_record(r, &slot.name, reason, why)))
        .collect();
    tracing::warn!(
        exporter = %slot.name, dead_letter = %dl.name, events = n, reason, first_error = %rejected[0].1,
        "exporter refused events for good; writing them to the dead-letter exporter"
    );
    let mut backoff = dl.common.retry_initial_backoff;
    let mut give_up_at = None;
    loop {
        match dl.exporter.export(&records).await {
            Ok(()) => {
                m.dropped("dead_lettered", n);
                dl_m.exported.inc_by(n);
                return true;
            }
            Err(e) if e.kind == ErrorKind::Permanent => {
                m.dropped(reason, n);
                tracing::error!(exporter = %slot.name, dead_letter = %dl.name, error = %e, events = n,
                    "the dead-letter exporter refused the events too: counted as dropped");
                return true;
            }
            Err(e) => {
                dl_m.failed(e.reason, n);
                if !retry.sleep(backoff, &mut give_up_at).await {
                    return false;
                }
                backoff = (backoff * 2).min(dl.common.retry_max_backoff);
            }
        }
    }
}

/// Applies registrations and acknowledgements; publishes the checkpoint.
async fn tracker(
    mut rx: mpsc::UnboundedReceiver<AckMsg>,
    out: watch::Sender<Checkpoint>,
    metrics: Arc<Metrics>,
    seen: Option<crate::state::seen::SharedSeen>,
) -> (Checkpoint, usize) {
    let mut t = AckTracker::with_seen(seen);
    let mut msgs = Vec::with_capacity(64);
    while rx.recv_many(&mut msgs, 64).await > 0 {
        for msg in msgs.drain(..) {
            match msg {
                AckMsg::Register(regs) => regs.into_iter().for_each(|(seq, p)| t.register(seq, p)),
                AckMsg::Acked(seqs) => seqs.into_iter().for_each(|s| t.ack(s)),
                AckMsg::Sample(sample) => t.sample(sample),
            }
        }
        if t.advance()
            || out.borrow().acked_below != t.checkpoint().acked_below
            || out.borrow().sinks != t.checkpoint().sinks
        {
            out.send_replace(t.checkpoint().clone());
        }
        metrics.checkpoint_pending.set(t.pending() as i64);
    }
    (t.checkpoint().clone(), t.pending())
}

#[cfg(test)]
mod tests;
