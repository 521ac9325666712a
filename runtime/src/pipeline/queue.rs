//! One exporter's queue: bounded in memory by events (`queue_max_events`)
//! and by bytes of event JSON (`queue_max_bytes`), with the exporter's
//! `overflow` policy deciding what a full queue does.
//!
//! - `block`: [`QueueTx::send`] waits for room, so backpressure reaches the
//!   watch; the checkpoint does not move past what is not exported.
//! - `drop_newest` / `drop_oldest`: the event that does not fit (or the
//!   oldest queued one) is dropped, counted in
//!   `exporter_dropped{reason="queue_full"}`, logged at most once a minute
//!   with how many since the last line, and acknowledged, so the checkpoint
//!   moves on.
//! - `spill`: events go to the exporter's on-disk queue ([`crate::spill`])
//!   once the memory queue is full, and from then on until the disk queue is
//!   read empty again, so order is kept: memory (oldest), then disk, then new
//!   events. When the sink keeps failing (three attempts of one batch), the
//!   worker also moves the batch it holds and the memory queue in front of the
//!   disk queue ([`QueueRx::evacuate`]), so nothing waits unacknowledged in
//!   memory while the sink is down. Past `spill_max_bytes` (or while the
//!   directory cannot be written) nothing more is spilled and `send` blocks.
//!   Existing spilled records are read first after a restart.
//!
//! **Spilled records are acknowledged.** A record counts as acknowledged for
//! its exporter once it is written to the spill queue and fsynced: from then
//! on it is the exporter's own responsibility (it is delivered from disk, also
//! after a restart), so the checkpoint can advance while a sink is down. A
//! record is removed from the disk queue only after the sink acknowledged it
//! (or it was dead-lettered); a crash between the two sends it again
//! (at-least-once, as everywhere else).
//!
//! Writes to disk are grouped: `send` puts overflowing events into a small
//! buffer (at most `batch_max_events`) that a writer task appends, fsyncs and
//! then acknowledges as one write.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use event_collector_exporters::Record;
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::AckMsg;
use crate::config::Overflow;
use crate::metrics::ExporterMetrics;
use crate::spill::{ReadBatch, SpillError, SpillOptions, SpillStore, codec};

/// An event on its way to one exporter: its sequence number and the shared record.
pub type Queued = (u64, Arc<Record>);

/// Segment files roll over at this size.
const SEGMENT_BYTES: u64 = 16 << 20;
/// Most bytes read back from disk in one batch.
const READ_BYTES: u64 = 8 << 20;
/// Failed attempts of one in-memory batch before it and the memory queue move to disk.
pub const EVACUATE_AFTER: u32 = 3;
/// How often drops are logged.
const DROP_LOG_EVERY: Duration = Duration::from_secs(60);

/// The queue's settings, from the exporter's config.
#[derive(Debug, Clone)]
pub struct QueueConfig {
    pub name: String,
    pub max_events: usize,
    pub max_bytes: u64,
    pub overflow: Overflow,
    /// With `overflow = "spill"`: where and how much.
    pub spill: Option<SpillOptions>,
    /// Most events per disk write and per read.
    pub batch_max_events: usize,
}

impl QueueConfig {
    pub fn from_common(name: &str, c: &crate::config::ExporterCommon) -> QueueConfig {
        let overflow = c.overflow();
        QueueConfig {
            name: name.to_string(),
            max_events: c.queue_max_events.max(1),
            max_bytes: c.queue_max_bytes.max(1),
            overflow,
            spill: (overflow == Overflow::Spill).then(|| SpillOptions {
                dir: c
                    .spill_dir
                    .clone()
                    .unwrap_or_else(|| PathBuf::from("state/spill").join(name)),
                max_bytes: c.spill_max_bytes,
                segment_bytes: SEGMENT_BYTES,
            }),
            batch_max_events: c.batch_max_events.max(1),
        }
    }
}

/// The receiving side is gone: the event was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Closed;

#[derive(Default)]
struct DropLog {
    since_last: u64,
    last: Option<Instant>,
}

#[derive(Default)]
struct State {
    mem: VecDeque<Queued>,
    mem_bytes: u64,
    /// Spill: events waiting for the writer, oldest first.
    pending: VecDeque<Queued>,
    pending_bytes: u64,
    /// Events the writer took from `pending` and is writing now.
    writing: usize,
    writing_bytes: u64,
    /// Unread records and bytes in the spill store (mirrors it).
    spill_records: u64,
    spill_bytes: u64,
    /// New events go to `pending` (the disk) until it is all read again.
    spilling: bool,
    /// The spill directory from before is being opened: its records go first.
    opening: bool,
    /// The sender (`process`) is done.
    closed: bool,
    /// The worker is gone.
    rx_gone: bool,
    drops: DropLog,
}

struct Shared {
    cfg: QueueConfig,
    state: Mutex<State>,
    /// `send` waits here for room.
    room: Notify,
    /// The worker waits here for events.
    data: Notify,
    /// The spill writer waits here for events to write, or for room on disk.
    work: Notify,
    /// Opened by the writer (or by an evacuation) when first needed.
    store: Arc<Mutex<Option<SpillStore>>>,
    ack_tx: mpsc::UnboundedSender<AckMsg>,
    m: ExporterMetrics,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn size(q: &Queued) -> u64 {
    q.1.json.len() as u64
}

impl Shared {
    fn publish(&self, st: &State) {
        let depth = st.mem.len() as u64 + st.pending.len() as u64 + st.writing as u64 + st.spill_records;
        self.m.queue_depth.set(depth as i64);
        self.m
            .queue_bytes
            .set((st.mem_bytes + st.pending_bytes + st.writing_bytes) as i64);
        self.m.spill_bytes.set(st.spill_bytes as i64);
    }

    fn mem_fits(&self, st: &State, bytes: u64) -> bool {
        st.mem.is_empty() || (st.mem.len() < self.cfg.max_events && st.mem_bytes + bytes <= self.cfg.max_bytes)
    }

    fn ack(&self, seqs: Vec<u64>) {
        if !seqs.is_empty() {
            let _ = self.ack_tx.send(AckMsg::Acked(seqs));
        }
    }

    /// Counts (and maybe logs) `n` events dropped because the queue was full.
    fn dropped(&self, st: &mut State, n: u64) {
        self.m.dropped("queue_full", n);
        st.drops.since_last += n;
        let now = Instant::now();
        if st.drops.last.is_none_or(|t| now.duration_since(t) >= DROP_LOG_EVERY) {
            tracing::warn!(
                exporter = %self.cfg.name,
                dropped = st.drops.since_last,
                overflow = self.cfg.overflow.as_str(),
                queue_max_events = self.cfg.max_events,
                queue_max_bytes = self.cfg.max_bytes,
                "exporter queue full: events dropped since the last report (acknowledged; counted in exporter_dropped{{reason=\"queue_full\"}})"
            );
            st.drops.since_last = 0;
            st.drops.last = Some(now);
        }
    }

    fn flush_drop_log(&self) {
        let mut st = lock(&self.state);
        if st.drops.since_last > 0 {
            tracing::warn!(
                exporter = %self.cfg.name, dropped = st.drops.since_last,
                "exporter queue full: events dropped since the last report"
            );
            st.drops.since_last = 0;
        }
    }

    /// Opens the spill store if it is not open yet (blocking I/O).
    fn open_store(&self) -> Result<(), SpillError> {
        let Some(opts) = &self.cfg.spill else {
            return Ok(());
        };
        let mut store = lock(&self.store);
        if store.is_some() {
            return Ok(());
        }
        let (s, problems) = SpillStore::open(opts.clone())?;
        for p in &problems {
            tracing::error!(exporter = %self.cfg.name, problem = %p, "damaged spill queue data skipped");
            self.m.dropped("spill_corrupt", 1);
        }
        if !s.is_empty() {
            tracing::info!(
                exporter = %self.cfg.name, dir = %s.dir().display(), records = s.records(), bytes = s.bytes(),
                "spill queue holds records from before: delivering them before newer events"
            );
        }
        let mut st = lock(&self.state);
        st.spill_records = s.records();
        st.spill_bytes = s.bytes();
        st.opening = false;
        self.publish(&st);
        *store = Some(s);
        Ok(())
    }
}

/// Builds an exporter's queue: the sending half for `process`, the receiving
/// half for the worker (which also runs the spill writer, if any).
pub(crate) fn queue(cfg: QueueConfig, ack_tx: mpsc::UnboundedSender<AckMsg>, m: ExporterMetrics) -> (QueueTx, QueueRx) {
    m.queue_capacity_events.set(cfg.max_events as i64);
    // A spill directory left from before is replayed before anything new.
    let replay = cfg.spill.as_ref().is_some_and(|s| s.dir.exists());
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            spilling: replay,
            opening: replay,
            ..State::default()
        }),
        cfg,
        room: Notify::new(),
        data: Notify::new(),
        work: Notify::new(),
        store: Arc::new(Mutex::new(None)),
        ack_tx,
        m,
    });
    let writer = shared
        .cfg
        .spill
        .is_some()
        .then(|| tokio::spawn(spill_writer(shared.clone(), replay)));
    (QueueTx { shared: shared.clone() }, QueueRx { shared, writer })
}

/// The sending half, used by `process`. Dropping it closes the queue.
pub struct QueueTx {
    shared: Arc<Shared>,
}

impl QueueTx {
    /// Queues one event as the overflow policy says; waits only with `block`,
    /// or with `spill` while the disk cannot take more. Cancel-safe: an event
    /// whose `send` was dropped before it returned was not queued.
    pub async fn send(&self, item: Queued) -> Result<(), Closed> {
        let sh = &*self.shared;
        let bytes = size(&item);
        let mut item = Some(item);
        loop {
            {
                let mut st = lock(&sh.state);
                if st.rx_gone {
                    return Err(Closed);
                }
                let Some(it) = item.take() else { return Ok(()) };
                let fits = sh.mem_fits(&st, bytes);
                match sh.cfg.overflow {
                    Overflow::Block | Overflow::Spill if fits && !st.spilling => {
                        push_mem(sh, &mut st, it);
                        return Ok(());
                    }
                    Overflow::Block => item = Some(it),
                    Overflow::DropNewest => {
                        if fits {
                            push_mem(sh, &mut st, it);
                        } else {
                            sh.dropped(&mut st, 1);
                            sh.ack(vec![it.0]);
                        }
                        return Ok(());
                    }
                    Overflow::DropOldest => {
                        let mut seqs = Vec::new();
                        while !sh.mem_fits(&st, bytes) {
                            let Some(old) = st.mem.pop_front() else { break };
                            st.mem_bytes -= size(&old);
                            seqs.push(old.0);
                        }
                        if !seqs.is_empty() {
                            sh.dropped(&mut st, seqs.len() as u64);
                            sh.ack(seqs);
                        }
                        push_mem(sh, &mut st, it);
                        return Ok(());
                    }
                    Overflow::Spill => {
                        st.spilling = true;
                        let room = st.pending.is_empty()
                            || (st.pending.len() < sh.cfg.batch_max_events
                                && st.pending_bytes + bytes <= sh.cfg.max_bytes);
                        if room {
                            st.pending_bytes += bytes;
                            st.pending.push_back(it);
                            sh.publish(&st);
                            drop(st);
                            sh.work.notify_one();
                            return Ok(());
                        }
                        item = Some(it);
                    }
                }
            }
            sh.room.notified().await;
        }
    }
}

fn push_mem(sh: &Shared, st: &mut State, it: Queued) {
    st.mem_bytes += size(&it);
    st.mem.push_back(it);
    sh.publish(st);
    sh.data.notify_one();
}

impl Drop for QueueTx {
    fn drop(&mut self) {
        lock(&self.shared.state).closed = true;
        self.shared.data.notify_one();
        self.shared.work.notify_one();
    }
}

/// What the worker gets next.
pub enum Taken {
    /// Events from memory: acknowledge their sequence numbers once delivered.
    Mem(Vec<Queued>),
    /// Records read back from the spill queue (already acknowledged):
    /// [`QueueRx::ack_spill`] removes them once delivered.
    Spill(SpillBatch),
}

pub struct SpillBatch {
    pub records: Vec<Arc<Record>>,
    read: ReadBatch,
}

/// The receiving half, used by the worker.
pub struct QueueRx {
    shared: Arc<Shared>,
    writer: Option<JoinHandle<()>>,
}

impl Drop for QueueRx {
    fn drop(&mut self) {
        lock(&self.shared.state).rx_gone = true;
        self.shared.room.notify_one();
        if let Some(w) = &self.writer {
            w.abort();
        }
        self.shared.flush_drop_log();
    }
}

impl QueueRx {
    pub fn overflow(&self) -> Overflow {
        self.shared.cfg.overflow
    }

    /// The next batch: up to `max` events from memory (waiting up to
    /// `timeout` for a partial batch to fill), or else records from the spill
    /// queue. None once the queue is closed and everything is taken.
    pub async fn next(&self, max: usize, timeout: Duration) -> Option<Taken> {
        let sh = &*self.shared;
        let mut batch: Vec<Queued> = Vec::new();
        loop {
            let read_spill = {
                let mut st = lock(&sh.state);
                if !st.mem.is_empty() {
                    take_mem(sh, &mut st, &mut batch, max);
                    break;
                }
                if st.spill_records > 0 {
                    true
                } else {
                    let idle = st.pending.is_empty() && st.writing == 0 && !st.opening;
                    if st.spilling && idle {
                        // The disk queue is read empty: new events use memory again.
                        st.spilling = false;
                        drop(st);
                        sh.room.notify_one();
                        continue;
                    }
                    if st.closed && idle {
                        return None;
                    }
                    false
                }
            };
            if read_spill {
                match self.read_spill(max).await {
                    Some(b) => return Some(Taken::Spill(b)),
                    None => continue,
                }
            }
            sh.data.notified().await;
        }
        // Fill a partial batch from memory until the timeout.
        let deadline = Instant::now() + timeout;
        while batch.len() < max {
            if tokio::time::timeout_at(deadline, sh.data.notified()).await.is_err() {
                break;
            }
            let mut st = lock(&sh.state);
            take_mem(sh, &mut st, &mut batch, max);
            if st.closed {
                break;
            }
        }
        Some(Taken::Mem(batch))
    }

    /// Takes every event queued from now until the queue is closed, oldest
    /// first, unacknowledged (with `spill`: those not yet written to disk;
    /// what is on disk stays there). A retired worker hands them to its
    /// successor instead of exporting them.
    pub async fn forward_all(&self) -> Vec<Queued> {
        let sh = &*self.shared;
        let mut out: Vec<Queued> = Vec::new();
        loop {
            {
                let mut st = lock(&sh.state);
                out.extend(st.mem.drain(..));
                out.extend(st.pending.drain(..));
                st.mem_bytes = 0;
                st.pending_bytes = 0;
                sh.publish(&st);
                let done = st.closed && st.writing == 0;
                drop(st);
                sh.room.notify_one();
                if done {
                    return out;
                }
            }
            sh.data.notified().await;
        }
    }

    /// Reads a batch from the spill store; None if nothing usable was there (state refreshed).
    async fn read_spill(&self, max: usize) -> Option<SpillBatch> {
        let sh = self.shared.clone();
        let res = tokio::task::spawn_blocking(move || {
            let mut store = lock(&sh.store);
            let Some(s) = store.as_mut() else {
                return Ok(None);
            };
            let read = s.read(max, READ_BYTES)?;
            Ok::<_, SpillError>(Some((read, s.records(), s.bytes(), s.dir().to_path_buf())))
        })
        .await;
        let sh = &*self.shared;
        let (read, records, bytes, dir) = match res {
            Ok(Ok(Some(r))) => r,
            Ok(Ok(None)) => {
                // Not open (yet): the writer opens it.
                tokio::time::sleep(Duration::from_millis(50)).await;
                return None;
            }
            Ok(Err(e)) => {
                tracing::error!(exporter = %sh.cfg.name, error = %e, "cannot read the spill queue; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                return None;
            }
            Err(e) => {
                tracing::error!(exporter = %sh.cfg.name, error = %e, "spill read task failed");
                return None;
            }
        };
        for p in &read.problems {
            tracing::error!(exporter = %sh.cfg.name, problem = %p, "damaged spill queue data skipped");
            sh.m.dropped("spill_corrupt", 1);
        }
        let mut records_out = Vec::with_capacity(read.payloads.len());
        for p in &read.payloads {
            match codec::decode(p) {
                Ok(r) => records_out.push(Arc::new(r)),
                Err(e) => {
                    tracing::error!(exporter = %sh.cfg.name, dir = %dir.display(), error = %e,
                        "a spilled record cannot be decoded; skipped");
                    sh.m.dropped("spill_corrupt", 1);
                }
            }
        }
        {
            let mut st = lock(&sh.state);
            st.spill_records = records;
            st.spill_bytes = bytes;
            sh.publish(&st);
        }
        if read.payloads.is_empty() {
            return None;
        }
        Some(SpillBatch {
            records: records_out,
            read,
        })
    }

    /// Removes delivered spilled records from the disk queue.
    pub async fn ack_spill(&self, batch: SpillBatch) {
        let sh = self.shared.clone();
        let res = tokio::task::spawn_blocking(move || {
            let mut store = lock(&sh.store);
            let Some(s) = store.as_mut() else {
                return Ok((0, 0));
            };
            let r = s.ack(&batch.read);
            r.map(|()| (s.records(), s.bytes()))
        })
        .await;
        let sh = &*self.shared;
        match res {
            Ok(Ok((records, bytes))) => {
                let mut st = lock(&sh.state);
                st.spill_records = records;
                st.spill_bytes = bytes;
                sh.publish(&st);
            }
            Ok(Err(e)) => tracing::error!(exporter = %sh.cfg.name, error = %e,
                "cannot record delivered spill records; they may be sent again after a restart"),
            Err(e) => tracing::error!(exporter = %sh.cfg.name, error = %e, "spill ack task failed"),
        }
        sh.work.notify_one();
    }

    /// With `spill`: moves `held` (the rest of a batch the sink keeps
    /// refusing, taken from memory) and every event still in memory in front
    /// of the disk queue, durably, and acknowledges the memory ones. Returns
    /// false (and changes nothing) if they cannot be written; the caller keeps
    /// retrying them from memory.
    pub async fn evacuate(&self, held: &[Arc<Record>]) -> bool {
        let sh = &*self.shared;
        if sh.cfg.overflow != Overflow::Spill {
            return false;
        }
        let taken: Vec<Queued> = {
            let mut st = lock(&sh.state);
            st.spilling = true;
            st.mem_bytes = 0;
            st.mem.drain(..).collect()
        };
        sh.room.notify_one();
        let payloads: Vec<Vec<u8>> = held
            .iter()
            .map(|r| codec::encode(r))
            .chain(taken.iter().map(|(_, r)| codec::encode(r)))
            .collect();
        let n = payloads.len();
        let sh2 = self.shared.clone();
        let res = tokio::task::spawn_blocking(move || {
            sh2.open_store()?;
            let mut store = lock(&sh2.store);
            let Some(s) = store.as_mut() else {
                return Err(not_open(&sh2));
            };
            s.prepend(&payloads)?;
            Ok::<_, SpillError>((s.records(), s.bytes()))
        })
        .await;
        match res {
            Ok(Ok((records, bytes))) => {
                let seqs = taken.iter().map(|(s, _)| *s).collect();
                let mut st = lock(&sh.state);
                st.spill_records = records;
                st.spill_bytes = bytes;
                sh.publish(&st);
                drop(st);
                sh.ack(seqs);
                tracing::warn!(
                    exporter = %sh.cfg.name, events = n,
                    "sink keeps failing: moved the events waiting in memory to the spill queue"
                );
                true
            }
            Ok(Err(_)) | Err(_) => {
                let why = match res {
                    Ok(Err(e)) => e.to_string(),
                    Err(e) => e.to_string(),
                    Ok(Ok(_)) => String::new(),
                };
                tracing::warn!(exporter = %sh.cfg.name, error = %why,
                    "cannot move waiting events to the spill queue; keeping them in memory");
                let mut st = lock(&sh.state);
                for q in taken.into_iter().rev() {
                    st.mem_bytes += size(&q);
                    st.mem.push_front(q);
                }
                sh.publish(&st);
                false
            }
        }
    }
}

fn take_mem(sh: &Shared, st: &mut State, batch: &mut Vec<Queued>, max: usize) {
    let before = batch.len();
    while batch.len() < max {
        let Some(q) = st.mem.pop_front() else { break };
        st.mem_bytes -= size(&q);
        batch.push(q);
    }
    if batch.len() > before {
        sh.publish(st);
        sh.room.notify_one();
    }
}

/// Appends what `send` put in `pending` to the disk queue, fsynced, then
/// acknowledges it. Waits (and so, through `pending`, blocks `send`) while
/// the disk queue is at `spill_max_bytes` or cannot be written.
async fn spill_writer(sh: Arc<Shared>, replay: bool) {
    let mut backoff = Duration::from_millis(100);
    let mut last_error_log: Option<Instant> = None;
    if replay {
        open_with_retry(&sh, &mut last_error_log).await;
        sh.data.notify_one();
    }
    loop {
        let batch: Option<Vec<Queued>> = {
            let mut st = lock(&sh.state);
            if st.pending.is_empty() {
                if st.closed {
                    return;
                }
                None
            } else {
                let n = st.pending.len().min(sh.cfg.batch_max_events);
                let batch: Vec<Queued> = st.pending.drain(..n).collect();
                let bytes: u64 = batch.iter().map(size).sum();
                st.pending_bytes -= bytes;
                st.writing = batch.len();
                st.writing_bytes = bytes;
                Some(batch)
            }
        };
        let Some(batch) = batch else {
            sh.work.notified().await;
            continue;
        };
        sh.room.notify_one();
        let payloads: Arc<Vec<Vec<u8>>> = Arc::new(batch.iter().map(|(_, r)| codec::encode(r)).collect());
        loop {
            let sh2 = sh.clone();
            let p = payloads.clone();
            let res = tokio::task::spawn_blocking(move || {
                sh2.open_store()?;
                let mut store = lock(&sh2.store);
                let Some(s) = store.as_mut() else {
                    return Err(not_open(&sh2));
                };
                s.append(&p)?;
                Ok::<_, SpillError>((s.records(), s.bytes()))
            })
            .await;
            match res {
                Ok(Ok((records, spill_bytes))) => {
                    let mut st = lock(&sh.state);
                    st.writing = 0;
                    st.writing_bytes = 0;
                    st.spill_records = records;
                    st.spill_bytes = spill_bytes;
                    sh.publish(&st);
                    drop(st);
                    sh.ack(batch.iter().map(|(s, _)| *s).collect());
                    sh.data.notify_one();
                    backoff = Duration::from_millis(100);
                    break;
                }
                Ok(Err(SpillError::Full { .. })) => {
                    log_rarely(&mut last_error_log, || {
                        tracing::warn!(
                            exporter = %sh.cfg.name,
                            spill_max_bytes = sh.cfg.spill.as_ref().map_or(0, |s| s.max_bytes),
                            "spill queue full: blocking until the sink takes records again"
                        )
                    });
                    // Wait for the worker to remove records (or poll, in case it did meanwhile).
                    let _ = tokio::time::timeout(Duration::from_secs(1), sh.work.notified()).await;
                }
                Ok(Err(e)) => {
                    sh.m.failed(e.reason(), batch.len() as u64);
                    log_rarely(&mut last_error_log, || {
                        tracing::error!(exporter = %sh.cfg.name, error = %e, reason = e.reason(),
                            "cannot write to the spill queue; blocking and retrying")
                    });
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
                Err(e) => {
                    tracing::error!(exporter = %sh.cfg.name, error = %e, "spill write task failed; retrying");
                    tokio::time::sleep(backoff).await;
                }
            }
        }
    }
}

fn not_open(sh: &Shared) -> SpillError {
    SpillError::Io {
        action: "open",
        path: sh.cfg.spill.as_ref().map(|s| s.dir.clone()).unwrap_or_default(),
        source: std::io::Error::other("the exporter has no spill queue"),
    }
}

async fn open_with_retry(sh: &Arc<Shared>, last_log: &mut Option<Instant>) {
    let mut backoff = Duration::from_millis(100);
    loop {
        let sh2 = sh.clone();
        match tokio::task::spawn_blocking(move || sh2.open_store()).await {
            Ok(Ok(())) => return,
            Ok(Err(e)) => log_rarely(
                last_log,
                || tracing::error!(exporter = %sh.cfg.name, error = %e, "cannot open the spill queue; retrying"),
            ),
            Err(e) => tracing::error!(exporter = %sh.cfg.name, error = %e, "spill open task failed"),
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

/// Runs `f` at most every 10 s.
fn log_rarely(last: &mut Option<Instant>, f: impl FnOnce()) {
    let now = Instant::now();
    if last.is_none_or(|t| now.duration_since(t) >= Duration::from_secs(10)) {
        *last = Some(now);
        f();
    }
}
