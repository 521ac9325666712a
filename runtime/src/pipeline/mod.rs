//! The wiring of the data path: source → normalize → route → exporters, with
//! a bounded queue and a worker per exporter, and acknowledgements flowing
//! back to the checkpoint.
//!
//! Stages run as separate tasks so they use both cores: `ingest` polls the
//! source (where JSON is decoded), `process` normalizes, routes and serializes
//! each event once, and one worker per exporter batches, exports and retries.
//! A full exporter queue holds `process` back, which holds the watch back: the
//! checkpoint, not memory, absorbs a slow sink. `tracker` turns exporter
//! acknowledgements into the checkpoint.

use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use event_collector_exporters::{ErrorKind, Record, RecordFields, SharedExporter};
use futures::{Stream, StreamExt};
use rand::Rng;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::ack::{AckTracker, Checkpoint, Pending};
use crate::config::{ExporterCommon, StartupPolicy};
use crate::event::{Event, NormalizeOptions, normalize};
use crate::metrics::{ExporterMetrics, Metrics};
use crate::route::RouteTable;
use crate::source::{SourceEvent, SourceItem};

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
    pub normalize: NormalizeOptions,
    pub startup: StartupPolicy,
    pub startup_max_age: Duration,
    /// How long shutdown waits for queues to drain.
    pub drain_timeout: Duration,
}

/// What a finished run reports.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    /// Events passed to at least one exporter.
    pub routed: u64,
    pub unrouted: u64,
    pub startup_dropped: u64,
    pub normalize_failed: u64,
    /// The final checkpoint.
    pub checkpoint: Checkpoint,
    /// Events still unacknowledged when the run ended (they are re-read on the next start).
    pub unacknowledged: usize,
}

enum AckMsg {
    Register(Vec<(u64, Pending)>),
    Acked(Vec<u64>),
}

type Queued = (u64, Arc<Record>);

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
    let (src_tx, src_rx) = mpsc::channel::<SourceItem>(4096);
    let (ack_tx, ack_rx) = mpsc::unbounded_channel::<AckMsg>();

    let ingest = tokio::spawn(ingest(source, src_tx, shutdown.clone()));

    let mut queues = Vec::new();
    let mut workers: Vec<JoinHandle<()>> = Vec::new();
    for slot in &setup.exporters {
        let (tx, rx) = mpsc::channel::<Queued>(slot.common.queue_max_events.max(1));
        let m = metrics.exporter(&slot.name);
        queues.push((tx, m.clone()));
        let dead_letter = slot
            .common
            .dead_letter
            .as_ref()
            .and_then(|dl| setup.exporters.iter().find(|s| &s.name == dl))
            .map(|s| (s.clone(), metrics.exporter(&s.name)));
        workers.push(tokio::spawn(worker(
            slot.clone(),
            dead_letter,
            rx,
            ack_tx.clone(),
            m,
            shutdown.clone(),
            setup.drain_timeout,
        )));
    }
    let tracker = tokio::spawn(tracker(ack_rx, checkpoints, metrics.clone()));
    let exporters: Vec<SharedExporter> = setup.exporters.iter().map(|s| s.exporter.clone()).collect();
    let drain_timeout = setup.drain_timeout;

    let summary = process(src_rx, setup, queues, ack_tx, &metrics, shutdown.clone()).await;
    let _ = ingest.await;

    // `process` dropped the queue senders: workers drain what is queued and stop.
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

/// Polls the source and hands items to `process`; stops on shutdown.
async fn ingest<S>(source: S, tx: mpsc::Sender<SourceItem>, shutdown: CancellationToken)
where
    S: Stream<Item = SourceItem> + Send + 'static,
{
    let mut source = pin!(source);
    loop {
        let item = tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            item = source.next() => item,
        };
        let Some(item) = item else { break };
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            sent = tx.send(item) => if sent.is_err() { break },
        }
    }
}

/// The fields exporters key on, taken from the event once.
fn record_fields(ev: &Event) -> RecordFields {
    RecordFields {
        cluster: ev.cluster.to_string(),
        api: ev.api.as_str().to_string(),
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

/// Serializes an event once into the record every exporter shares.
pub fn to_record(ev: &Event) -> Record {
    // Serializing a struct of strings, maps and numbers into a Vec cannot fail.
    let json = serde_json::to_vec(ev).unwrap_or_default();
    Record::new(record_fields(ev), json)
}

fn too_old(ev: &Event, max_age: Duration, now: DateTime<Utc>) -> bool {
    match DateTime::parse_from_rfc3339(&ev.timestamp) {
        Ok(t) => now.signed_duration_since(t).to_std().is_ok_and(|age| age > max_age),
        Err(_) => false,
    }
}

struct Process<'a> {
    setup: &'a Setup,
    metrics: &'a Metrics,
    route_counters: Vec<prometheus_client::metrics::counter::Counter>,
    taken: Vec<usize>,
    targets: Vec<usize>,
    next_seq: u64,
    summary: Summary,
    /// Per watch: events dropped from the startup list, to report once it is done.
    startup_dropped: Vec<u64>,
}

impl Process<'_> {
    /// Handles one event; returns its registration and the queues it goes to.
    fn event(&mut self, ev: SourceEvent, regs: &mut Vec<(u64, Pending)>, sends: &mut Vec<(usize, Queued)>) {
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
        let mut pending = Pending {
            stream,
            resource_version: raw.metadata.resource_version.clone().unwrap_or_default(),
            remaining: 0,
        };
        let event = match normalize(api, raw, watch_type, prev_count, &self.setup.normalize) {
            Ok(e) => e,
            Err(e) => {
                self.metrics.normalize_failed.inc();
                self.summary.normalize_failed += 1;
                tracing::warn!(error = %e, "skipping an event that cannot be normalized");
                regs.push((seq, pending));
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
            regs.push((seq, pending));
            return;
        }
        self.setup.routes.evaluate(&event, &mut self.taken);
        self.targets.clear();
        for &r in &self.taken {
            self.route_counters[r].inc();
            for &e in &self.setup.routes.routes()[r].exporters {
                if !self.targets.contains(&e) {
                    self.targets.push(e);
                }
            }
        }
        if self.taken.is_empty() {
            self.metrics.unrouted.inc();
            self.summary.unrouted += 1;
        }
        if !self.targets.is_empty() {
            self.summary.routed += 1;
            self.metrics.kubernetes_event(&event);
            let record = Arc::new(to_record(&event));
            for &t in &self.targets {
                sends.push((t, (seq, record.clone())));
            }
        }
        pending.remaining = self.targets.len() as u32;
        regs.push((seq, pending));
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
    mut rx: mpsc::Receiver<SourceItem>,
    setup: Setup,
    queues: Vec<(mpsc::Sender<Queued>, ExporterMetrics)>,
    ack_tx: mpsc::UnboundedSender<AckMsg>,
    metrics: &Metrics,
    shutdown: CancellationToken,
) -> Summary {
    let route_counters = setup
        .routes
        .routes()
        .iter()
        .map(|r| metrics.route_counter(&r.name))
        .collect();
    let mut p = Process {
        setup: &setup,
        metrics,
        route_counters,
        taken: Vec::new(),
        targets: Vec::new(),
        next_seq: 0,
        summary: Summary::default(),
        startup_dropped: Vec::new(),
    };
    let mut items = Vec::with_capacity(256);
    let mut regs = Vec::with_capacity(256);
    let mut sends = Vec::with_capacity(512);
    'outer: while rx.recv_many(&mut items, 256).await > 0 {
        for item in items.drain(..) {
            match item {
                SourceItem::Event(ev) => p.event(*ev, &mut regs, &mut sends),
                SourceItem::Listed { stream } => p.listed(stream),
            }
        }
        // Register before queueing, so no acknowledgement can overtake its registration.
        if !regs.is_empty() && ack_tx.send(AckMsg::Register(std::mem::take(&mut regs))).is_err() {
            break;
        }
        for (target, queued) in sends.drain(..) {
            let (tx, m) = &queues[target];
            m.queue_depth.inc();
            tokio::select! {
                biased;
                sent = tx.send(queued) => if sent.is_err() { m.queue_depth.dec(); },
                // On shutdown with a full queue, stop: what is not queued stays unacknowledged.
                _ = shutdown.cancelled() => { m.queue_depth.dec(); break 'outer; }
            }
        }
    }
    p.summary
}

/// Batches, exports and retries for one exporter.
async fn worker(
    slot: ExporterSlot,
    dead_letter: Option<(ExporterSlot, ExporterMetrics)>,
    mut rx: mpsc::Receiver<Queued>,
    ack_tx: mpsc::UnboundedSender<AckMsg>,
    m: ExporterMetrics,
    shutdown: CancellationToken,
    drain_timeout: Duration,
) {
    let max = slot.common.batch_max_events.max(1);
    let mut queued: Vec<Queued> = Vec::with_capacity(max);
    let mut batch: Vec<Arc<Record>> = Vec::with_capacity(max);
    let mut seqs: Vec<u64> = Vec::with_capacity(max);
    loop {
        if rx.recv_many(&mut queued, max).await == 0 {
            break;
        }
        let deadline = Instant::now() + slot.common.batch_timeout;
        while queued.len() < max {
            let room = max - queued.len();
            match tokio::time::timeout_at(deadline, rx.recv_many(&mut queued, room)).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
        m.queue_depth.dec_by(queued.len() as i64);
        batch.clear();
        seqs.clear();
        for (seq, rec) in queued.drain(..) {
            seqs.push(seq);
            batch.push(rec);
        }
        let retry = Retry {
            shutdown: &shutdown,
            drain_timeout,
        };
        if !export_with_retry(&slot, &batch, &m, dead_letter.as_ref(), &retry).await {
            return;
        }
        m.observe_lag(&batch);
        if ack_tx.send(AckMsg::Acked(seqs.clone())).is_err() {
            return;
        }
    }
}

/// When to stop retrying.
struct Retry<'a> {
    shutdown: &'a CancellationToken,
    drain_timeout: Duration,
}

impl Retry<'_> {
    /// Sleeps `backoff` with jitter; false if shutdown's drain time would run out first.
    async fn sleep(&self, backoff: Duration, give_up_at: &mut Option<Instant>) -> bool {
        let jittered = backoff.mul_f64(rand::rng().random_range(0.5..=1.0));
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
            }
        }
        true
    }
}

/// Exports one batch until every record is delivered or dead-lettered.
/// Records the sink reports as delivered are not sent again; records it
/// refuses for good go to the dead-letter exporter. Returns false if it gave
/// up because shutdown's drain time ran out (the batch stays unacknowledged).
async fn export_with_retry(
    slot: &ExporterSlot,
    batch: &[Arc<Record>],
    m: &ExporterMetrics,
    dead_letter: Option<&(ExporterSlot, ExporterMetrics)>,
    retry: &Retry<'_>,
) -> bool {
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
                return true;
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
            return false;
        }
        let mut i = 0;
        remaining.retain(|_| {
            i += 1;
            !done[i - 1]
        });
        if remaining.is_empty() {
            m.batches.inc();
            return true;
        }
        m.failed(e.reason, remaining.len() as u64);
        if attempt.is_power_of_two() {
            tracing::warn!(
                exporter = %slot.name, events = remaining.len(), attempt, reason = e.reason, error = %e,
                retry_in = ?backoff, "export failed; retrying"
            );
        }
        if !retry.sleep(backoff, &mut give_up_at).await {
            return false;
        }
        backoff = (backoff * 2).min(slot.common.retry_max_backoff);
    }
}

/// The record written to a dead-letter exporter: the event with why it was refused.
pub fn dead_letter_record(rec: &Record, exporter: &str, reason: &str, error: &str) -> Record {
    let mut json = Vec::with_capacity(rec.json.len() + error.len() + 128);
    let head = serde_json::json!({
        "dead_letter": {
            "exporter": exporter,
            "reason": reason,
            "error": error,
            "time": Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        }
    });
    // `{"dead_letter":{…},"event":<the record's JSON>}`, without re-parsing the event.
    let head = head.to_string();
    json.extend_from_slice(&head.as_bytes()[..head.len() - 1]);
    json.extend_from_slice(b",\"event\":");
    json.extend_from_slice(&rec.json);
    json.push(b'}');
    Record::new(rec.fields.clone(), json)
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
) -> (Checkpoint, usize) {
    let mut t = AckTracker::new();
    let mut msgs = Vec::with_capacity(64);
    while rx.recv_many(&mut msgs, 64).await > 0 {
        for msg in msgs.drain(..) {
            match msg {
                AckMsg::Register(regs) => regs.into_iter().for_each(|(seq, p)| t.register(seq, p)),
                AckMsg::Acked(seqs) => seqs.into_iter().for_each(|s| t.ack(s)),
            }
        }
        if t.advance() || out.borrow().acked_below != t.checkpoint().acked_below {
            out.send_replace(t.checkpoint().clone());
        }
        metrics.checkpoint_pending.set(t.pending() as i64);
    }
    (t.checkpoint().clone(), t.pending())
}

#[cfg(test)]
mod tests;
