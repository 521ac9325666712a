//! Reconfiguring a running pipeline (hot config reload) and the set of
//! running exporters (queue + worker each) it switches between.
//!
//! A [`Reconfigure`] enters at `process`, between two batches, and travels
//! down the stages in stream order like a batch: `process` switches the route
//! table and normalize options, the transform thread switches the filter
//! chains (and filter host), and `dispatch` switches the exporter queues.
//! Every event is therefore handled entirely by the old or entirely by the
//! new config, and none is lost: the acknowledgement tracker counts by
//! sequence number, not by exporter index, so old and new exporters
//! acknowledge into the same checkpoint.
//!
//! The exporter set ([`ExporterSet`]) follows the plan of the reload:
//! - **kept** ([`ExporterPlan::Keep`]): same queue, worker and connection;
//! - **started** ([`ExporterPlan::Start`]) with a name that is new: a new
//!   queue and worker;
//! - **started** with the name of a running exporter (its settings changed):
//!   the old queue closes at the switch; the old worker exports what it already
//!   holds and stops; the new worker starts exporting only after that (one
//!   writer per sink at a time: Volume's file lock, Kafka's order). If the old
//!   sink fails once the reload arrived, the old worker does not retry: it
//!   hands the failing batch and everything queued until the switch to the new
//!   worker, which delivers them first (a batch the old sink partly took may
//!   be sent twice: at-least-once, as everywhere). Records in its on-disk
//!   spill queue stay there for the next queue on that directory.
//! - **removed** (running, not in the plan): the queue closes at the switch;
//!   the worker exports what it holds, flushes and stops. If its sink fails
//!   once the reload arrived, what it holds is given up: acknowledged and
//!   counted in `exporter_dropped{reason="removed"}` (the exporter is gone
//!   from the config), so the checkpoint moves on.
//!
//! Retiring happens as soon as `process` receives the reconfigure, even while
//! it waits for room downstream: a full queue of a failing exporter that the
//! reload replaces or removes then empties, and the switch can go through.

use std::sync::Arc;
use std::time::Duration;

use event_collector_exporters::SharedExporter;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::queue::{self, QueueConfig, QueueTx, Queued};
use super::transform::{Chains, RoutedBatch};
use super::{AckMsg, ExporterSlot, Process, WorkerCtx, worker};
use crate::event::NormalizeOptions;
use crate::filter::FilterHost;
use crate::metrics::Metrics;
use crate::route::RouteTable;

/// The least native stack the filter thread keeps for WASM code, so a reload
/// can add filters (up to this `max_stack`) to a pipeline started without.
pub const MIN_FILTER_STACK: usize = 16 << 20;

/// How a running pipeline is reconfigured; the default never is.
#[derive(Default)]
pub struct Control {
    /// Reconfigures, applied in the order received.
    pub reconfigure: Option<mpsc::Receiver<Reconfigure>>,
    /// Receives the running exporters after start and after every reconfigure (for health polling).
    pub exporters: Option<watch::Sender<Vec<SharedExporter>>>,
}

/// What happens to one exporter of the new config, in the new config's order
/// (the order [`Chains`] indices refer to).
pub enum ExporterPlan {
    /// Keep the running exporter of this name as it is (its settings, and
    /// those of its dead-letter exporter, are unchanged).
    Keep(String),
    /// Start this exporter; a running one with the same name is replaced.
    Start(ExporterSlot),
}

impl ExporterPlan {
    pub fn name(&self) -> &str {
        match self {
            ExporterPlan::Keep(n) => n,
            ExporterPlan::Start(s) => &s.name,
        }
    }
}

/// A validated new config, ready to switch to.
pub struct Reconfigure {
    pub routes: RouteTable,
    /// Route and dead-letter exporters as indices into `exporters`.
    pub chains: Chains,
    pub filters: Option<Arc<FilterHost>>,
    pub normalize: NormalizeOptions,
    pub exporters: Vec<ExporterPlan>,
    /// Told once `process` switched (every later event uses the new config),
    /// or why the reconfigure was refused.
    pub applied: Option<oneshot::Sender<Result<(), String>>>,
}

/// What the transform thread switches to (and passes on to `dispatch`).
pub(super) struct Switch {
    pub chains: Chains,
    pub filters: Option<Arc<FilterHost>>,
    pub queues: DispatchSwitch,
}

/// One queue of the new exporter list.
pub(super) enum Target {
    /// The queue at this index of the old list.
    Keep(usize),
    New(QueueTx),
}

/// What `dispatch` switches to.
pub(super) struct DispatchSwitch {
    targets: Vec<Target>,
    /// The new exporter list (name, exporter), for the position sampler.
    exporters: Vec<(String, SharedExporter)>,
}

impl DispatchSwitch {
    /// The new exporter list, in order: (name in the config, exporter).
    pub(super) fn exporters(&self) -> Vec<(String, SharedExporter)> {
        self.exporters.clone()
    }
}

/// Replaces `queues` (dispatch's) by the new list: dropping the old queues of
/// replaced and removed exporters closes them.
pub(super) fn switch_queues(queues: &mut Vec<Option<QueueTx>>, sw: DispatchSwitch) {
    let mut old = std::mem::take(queues);
    *queues = sw
        .targets
        .into_iter()
        .map(|t| match t {
            Target::Keep(i) => old.get_mut(i).and_then(Option::take),
            Target::New(q) => Some(q),
        })
        .collect();
    drop(old);
}

/// The control side of `process`: where reconfigures arrive, and the exporters they change.
pub(super) type ProcessControl<'a> = Option<(mpsc::Receiver<Reconfigure>, &'a mut ExporterSet)>;

async fn next_reconfigure(rx: Option<&mut mpsc::Receiver<Reconfigure>>) -> Reconfigure {
    match rx {
        Some(rx) => match rx.recv().await {
            Some(r) => r,
            None => std::future::pending().await,
        },
        None => std::future::pending().await,
    }
}

/// Sends `batch` on from `process`. A reconfigure that arrives while it waits
/// for room retires the exporters it replaces or removes at once (so their
/// full queues can empty) and is applied right after the batch. False when
/// the pipeline is stopping.
pub(super) async fn send(
    p: &mut Process<'_>,
    batch: RoutedBatch,
    out: &mpsc::Sender<RoutedBatch>,
    shutdown: &CancellationToken,
    control: &mut ProcessControl<'_>,
) -> bool {
    let mut early: Option<Reconfigure> = None;
    {
        let send = out.send(batch);
        tokio::pin!(send);
        loop {
            let reloads = control.as_mut().filter(|_| early.is_none()).map(|(rx, _)| rx);
            tokio::select! {
                biased;
                sent = &mut send => {
                    if sent.is_err() {
                        return false;
                    }
                    break;
                }
                // On shutdown with the stages full, stop: what is not queued stays unacknowledged.
                _ = shutdown.cancelled() => return false,
                r = next_reconfigure(reloads) => {
                    if let Some((_, set)) = control.as_mut()
                        && set.check(&r.exporters).is_ok()
                    {
                        set.retire_leaving(&r.exporters);
                    }
                    early = Some(r);
                }
            }
        }
    }
    match (early, control.as_mut()) {
        (Some(r), Some((_, set))) => apply(p, r, set, out, shutdown).await,
        _ => true,
    }
}

/// Applies `r` in `process`: checks the plan, starts the new exporters,
/// switches the route table and sends the switch down the stages. False when
/// the pipeline is stopping.
pub(super) async fn apply(
    p: &mut Process<'_>,
    r: Reconfigure,
    set: &mut ExporterSet,
    out: &mpsc::Sender<RoutedBatch>,
    shutdown: &CancellationToken,
) -> bool {
    let Reconfigure {
        routes,
        chains,
        filters,
        normalize,
        exporters,
        applied,
    } = r;
    if let Err(e) = set.check(&exporters) {
        tracing::error!(error = %e, "reconfigure refused");
        if let Some(a) = applied {
            let _ = a.send(Err(e));
        }
        return true;
    }
    let queues = set.apply(exporters);
    p.route_counters = routes
        .routes()
        .iter()
        .map(|r| p.metrics.route_counter(&r.name))
        .collect();
    p.setup.routes = routes;
    p.setup.normalize = normalize;
    let batch = RoutedBatch {
        items: Vec::new(),
        routes: Vec::new(),
        switch: Some(Box::new(Switch {
            chains,
            filters,
            queues,
        })),
    };
    let sent = tokio::select! {
        biased;
        s = out.send(batch) => s.is_ok(),
        _ = shutdown.cancelled() => false,
    };
    if let Some(a) = applied {
        let _ = a.send(if sent {
            Ok(())
        } else {
            Err("the pipeline is stopping".into())
        });
    }
    sent
}

/// One running exporter.
struct Running {
    slot: ExporterSlot,
    /// Returns what the worker hands over once retired.
    worker: JoinHandle<Vec<Queued>>,
    retire: CancellationToken,
}

impl Running {
    /// Waits for the worker to stop, flushes the exporter and lets it go
    /// (releasing its connection or file lock); what it handed over.
    async fn finish(self) -> Vec<Queued> {
        let Running { slot, worker, .. } = self;
        let handed = worker.await.unwrap_or_default();
        if let Err(e) = slot.exporter.flush().await {
            tracing::warn!(exporter = %slot.name, error = %e, "flush of a replaced exporter failed");
        }
        handed
    }
}

/// The running exporters, in the order `dispatch`'s queues and the chains' indices use.
pub(super) struct ExporterSet {
    running: Vec<Running>,
    /// Exporters that left the set, finishing what they hold.
    leaving: Vec<JoinHandle<Vec<Queued>>>,
    ack_tx: mpsc::UnboundedSender<AckMsg>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
    drain_timeout: Duration,
    publish: Option<watch::Sender<Vec<SharedExporter>>>,
}

impl ExporterSet {
    pub(super) fn new(
        ack_tx: mpsc::UnboundedSender<AckMsg>,
        metrics: Arc<Metrics>,
        shutdown: CancellationToken,
        drain_timeout: Duration,
        publish: Option<watch::Sender<Vec<SharedExporter>>>,
    ) -> Self {
        ExporterSet {
            running: Vec::new(),
            leaving: Vec::new(),
            ack_tx,
            metrics,
            shutdown,
            drain_timeout,
            publish,
        }
    }

    /// Starts the first exporters; their queues, for `dispatch`.
    pub(super) fn start(&mut self, slots: Vec<ExporterSlot>) -> Vec<Option<QueueTx>> {
        let mut queues = Vec::with_capacity(slots.len());
        for slot in &slots {
            let (running, tx) = self.spawn(slot.clone(), &slots, None);
            self.running.push(running);
            queues.push(Some(tx));
        }
        self.publish();
        queues
    }

    /// Whether `plans` can be applied: every kept exporter runs, no name twice.
    fn check(&self, plans: &[ExporterPlan]) -> Result<(), String> {
        let mut seen = std::collections::HashSet::new();
        for p in plans {
            if !seen.insert(p.name()) {
                return Err(format!("exporter `{}` is planned twice", p.name()));
            }
            if let ExporterPlan::Keep(n) = p
                && !self.running.iter().any(|r| &r.slot.name == n)
            {
                return Err(format!("exporter `{n}` is to be kept but does not run"));
            }
        }
        Ok(())
    }

    /// Tells the workers of the exporters `plans` replaces or removes to stop
    /// retrying and hand over (see the module doc).
    fn retire_leaving(&self, plans: &[ExporterPlan]) {
        for r in &self.running {
            let kept = plans
                .iter()
                .any(|p| matches!(p, ExporterPlan::Keep(n) if *n == r.slot.name));
            if !kept {
                r.retire.cancel();
            }
        }
    }

    /// Switches the set to `plans` (checked); the queue switch for `dispatch`.
    fn apply(&mut self, plans: Vec<ExporterPlan>) -> DispatchSwitch {
        self.retire_leaving(&plans);
        let mut old: Vec<Option<Running>> = std::mem::take(&mut self.running).into_iter().map(Some).collect();
        let position = |old: &[Option<Running>], name: &str| {
            old.iter().position(|r| r.as_ref().is_some_and(|r| r.slot.name == name))
        };
        let slots: Vec<ExporterSlot> = plans
            .iter()
            .filter_map(|p| match p {
                ExporterPlan::Keep(n) => position(&old, n).and_then(|i| old[i].as_ref()).map(|r| r.slot.clone()),
                ExporterPlan::Start(s) => Some(s.clone()),
            })
            .collect();
        let exporters = slots.iter().map(|s| (s.name.clone(), s.exporter.clone())).collect();
        let mut targets = Vec::with_capacity(plans.len());
        for plan in plans {
            match plan {
                ExporterPlan::Keep(name) => {
                    if let Some(i) = position(&old, &name)
                        && let Some(r) = old[i].take()
                    {
                        self.running.push(r);
                        targets.push(Target::Keep(i));
                    }
                }
                ExporterPlan::Start(slot) => {
                    let prev = position(&old, &slot.name).and_then(|i| old[i].take());
                    let (running, tx) = self.spawn(slot, &slots, prev);
                    self.running.push(running);
                    targets.push(Target::New(tx));
                }
            }
        }
        for removed in old.into_iter().flatten() {
            let name = removed.slot.name.clone();
            let (ack_tx, m) = (self.ack_tx.clone(), self.metrics.exporter(&name));
            self.leaving.push(tokio::spawn(async move {
                let handed = removed.finish().await;
                if handed.is_empty() {
                    tracing::info!(exporter = %name, "removed exporter drained and stopped");
                } else {
                    tracing::warn!(exporter = %name, events = handed.len(),
                        "removed exporter stopped with its sink failing: the events it still held are given up (counted in exporter_dropped{{reason=\"removed\"}})");
                    m.dropped("removed", handed.len() as u64);
                    let _ = ack_tx.send(AckMsg::Acked(handed.iter().map(|(seq, _)| *seq).collect()));
                }
                Vec::new()
            }));
        }
        self.publish();
        DispatchSwitch { targets, exporters }
    }

    /// Starts `slot`'s queue and worker; with `prev` (the exporter it
    /// replaces), the worker first waits for `prev` to stop and delivers what
    /// `prev` handed over.
    fn spawn(&self, slot: ExporterSlot, all: &[ExporterSlot], prev: Option<Running>) -> (Running, QueueTx) {
        let m = self.metrics.exporter(&slot.name);
        let (tx, rx) = queue::queue(
            QueueConfig::from_common(&slot.name, &slot.common),
            self.ack_tx.clone(),
            m.clone(),
        );
        let dead_letter = slot
            .common
            .dead_letter
            .as_ref()
            .and_then(|dl| all.iter().find(|s| &s.name == dl))
            .map(|s| (s.clone(), self.metrics.exporter(&s.name)));
        let retire = CancellationToken::new();
        let ctx = WorkerCtx {
            slot: slot.clone(),
            dead_letter,
            ack_tx: self.ack_tx.clone(),
            m,
            shutdown: self.shutdown.clone(),
            drain_timeout: self.drain_timeout,
            retire: retire.clone(),
        };
        let worker = tokio::spawn(async move {
            let carry = match prev {
                Some(prev) => {
                    let name = prev.slot.name.clone();
                    let handed = prev.finish().await;
                    tracing::info!(exporter = %name, handed_over = handed.len(),
                        "replaced exporter stopped; its successor takes over");
                    handed
                }
                None => Vec::new(),
            };
            worker(ctx, rx, carry).await
        });
        (Running { slot, worker, retire }, tx)
    }

    fn publish(&self) {
        if let Some(p) = &self.publish {
            p.send_replace(self.running.iter().map(|r| r.slot.exporter.clone()).collect());
        }
    }

    /// Every worker still to wait for at shutdown, and the exporters to flush.
    pub(super) fn finish(self) -> (Vec<JoinHandle<Vec<Queued>>>, Vec<SharedExporter>) {
        let exporters = self.running.iter().map(|r| r.slot.exporter.clone()).collect();
        let mut handles: Vec<JoinHandle<Vec<Queued>>> = self.running.into_iter().map(|r| r.worker).collect();
        handles.extend(self.leaving);
        (handles, exporters)
    }
}

#[cfg(test)]
mod tests;
