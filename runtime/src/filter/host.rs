//! [`FilterHost`]: every filter's current module version, its validation and
//! hot swap; [`FilterWorker`]: one thread's instances and the chain runner.
//!
//! The event path is `FilterWorker::run_chain`: per filter, one atomic load
//! for the breaker, one `ArcSwap` load for the current version, then a call on
//! the worker's own long-lived instance. A new version (hot swap) is picked up
//! between two events: the worker notices the pointer changed, drops its old
//! instance and instantiates the new version. Compiling and validating happen
//! on the watcher thread, never here.
//!
//! Tiered compilation: a swapped-in module not in the artifact cache is
//! compiled by the baseline compiler (Winch, a few ms) and swapped in at once;
//! a background thread then compiles it with Cranelift, validates that code
//! the same way, and moves the filter to it (`filter module optimized`) unless
//! a newer version came first.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;

use super::breaker::{Admit, Breaker, BreakerState};
use super::cache::{ArtifactCache, sha256_hex};
use super::current::EventJson;
use super::edit::Edits;
use super::engine::{EngineSet, Ticker, Tier};
use super::instance::{GuestOut, Instance, InstanceSpec};
use super::module::{self, ModuleKind, Version};
use super::vectors;
use super::watch::Watcher;
use super::{CallError, ChainOutcome, FailureKind, FilterError, FilterId, StepResult};
use crate::config::{FilterConfig, OnDelete, OnError, WasmConfig};
use crate::event::Event;
use crate::metrics::{FilterMetrics, Metrics};

/// Deadline for `_initialize` + `init` (language runtimes start slowly).
const INIT_TIMEOUT: Duration = Duration::from_secs(5);

/// How a host is built (the collector uses the defaults; author tools change them).
#[derive(Debug, Clone)]
pub struct HostOptions {
    /// Start the file watcher for filters with `watch = true`.
    pub watch: bool,
    /// Run the `*.test.jsonl` vectors beside each module when loading it.
    pub run_vectors: bool,
    /// Give guests the collector's stdout and stderr.
    pub inherit_stdio: bool,
}

impl Default for HostOptions {
    fn default() -> Self {
        HostOptions {
            watch: true,
            run_vectors: true,
            inherit_stdio: false,
        }
    }
}

/// A filter's state, for tests, tools and logs.
#[derive(Debug, Clone)]
pub struct FilterStatus {
    pub name: String,
    pub module: std::path::PathBuf,
    /// sha256 of the version in use; None while bypassed (deleted with `on_delete = "bypass"`).
    pub sha256: Option<String>,
    pub generation: u64,
    pub kind: Option<ModuleKind>,
    /// Which compiler made the code in use.
    pub tier: Option<Tier>,
    pub from_cache: bool,
    pub breaker: BreakerState,
    /// Versions swapped in since start.
    pub swaps: u64,
    /// Versions rejected since start.
    pub rejected: u64,
    /// sha256 and reason of the last rejected file.
    pub last_rejected: Option<(String, String)>,
    /// The module file is gone.
    pub deleted: bool,
}

/// What a check of a module file found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckOutcome {
    Unchanged,
    Swapped {
        old: Option<String>,
        new: String,
    },
    Rejected {
        sha256: String,
        error: String,
    },
    /// Deleted, `on_delete = "keep"`: the last good version keeps running.
    DeletedKept,
    /// Deleted, `on_delete = "bypass"`: events skip the filter.
    DeletedBypassed,
    /// Came back with the last good version's bytes.
    Restored,
    /// The file could not be read (other than not found).
    Unreadable(String),
}

/// One step of a traced chain: which filter, which module version, what it said.
#[derive(Debug, Clone)]
pub struct StepTrace {
    pub filter: FilterId,
    /// None when the filter was bypassed without a version (deleted).
    pub sha256: Option<Arc<str>>,
    pub generation: u64,
    /// keep, drop, replace, edit, error, bypassed.
    pub verdict: &'static str,
}

#[derive(Default)]
struct DiskState {
    last_good: Option<Arc<Version>>,
    rejected: Option<(String, String)>,
    deleted: bool,
    swaps: u64,
    rejects: u64,
}

pub(crate) struct Slot {
    pub(crate) id: FilterId,
    pub(crate) cfg: FilterConfig,
    pub(crate) name: Arc<str>,
    engine: usize,
    spec: InstanceSpec,
    ticks: u64,
    pub(crate) current: ArcSwapOption<Version>,
    breaker: Breaker,
    pub(crate) metrics: FilterMetrics,
    dead_letter: Option<Arc<str>>,
    recycle_memory: u64,
    generation: AtomicU64,
    disk: Mutex<DiskState>,
    log_gate: Mutex<(Option<Instant>, u64)>,
}

impl Slot {
    /// Logs a failed call, at most once a second per filter.
    fn log_failure(&self, error: &str) {
        let mut g = self.log_gate.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        if g.0.is_none_or(|t| now.duration_since(t) >= Duration::from_secs(1)) {
            let suppressed = std::mem::take(&mut g.1);
            g.0 = Some(now);
            drop(g);
            tracing::warn!(filter = %self.name, on_error = self.cfg.on_error.as_str(), suppressed, "{error}");
        } else {
            g.1 += 1;
        }
    }

    /// The full error text: filter, module, version, event, failure.
    fn error_text(&self, version: Option<&Version>, event: &Event, e: &CallError) -> String {
        let v = version.map(|v| format!(", sha256 {}", v.short())).unwrap_or_default();
        format!(
            "filter `{}` ({}{v}) failed on event {}: {e}",
            self.name,
            self.cfg.module.display(),
            event.describe()
        )
    }
}

pub(crate) struct Inner {
    pub(crate) slots: Vec<Slot>,
    engines: Vec<EngineSet>,
    cache: Option<ArtifactCache>,
    metrics: Arc<Metrics>,
    options: HostOptions,
    pub(crate) debounce: Duration,
    _ticker: Option<Ticker>,
}

/// The WASM filters of one collector: build once, then take a [`FilterWorker`]
/// per thread that runs chains.
pub struct FilterHost {
    inner: Arc<Inner>,
    watcher: Mutex<Option<Watcher>>,
}

impl std::fmt::Debug for FilterHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FilterHost")
            .field(
                "filters",
                &self.inner.slots.iter().map(|s| &*s.name).collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl FilterHost {
    /// Compiles (or loads from the cache), validates and links every filter,
    /// starts the epoch ticker and the file watcher.
    pub fn new(
        filters: &[FilterConfig],
        wasm: &WasmConfig,
        metrics: Arc<Metrics>,
    ) -> Result<Arc<FilterHost>, FilterError> {
        Self::with_options(filters, wasm, metrics, HostOptions::default())
    }

    pub fn with_options(
        filters: &[FilterConfig],
        wasm: &WasmConfig,
        metrics: Arc<Metrics>,
        options: HostOptions,
    ) -> Result<Arc<FilterHost>, FilterError> {
        let mut seen = std::collections::HashSet::new();
        for f in filters {
            if !seen.insert(f.name.as_str()) {
                return Err(FilterError::Module {
                    filter: f.name.clone(),
                    module: f.module.clone(),
                    message: "defined twice".into(),
                });
            }
        }
        // One engine per distinct max_stack.
        let mut stacks: Vec<u64> = filters.iter().map(|f| f.max_stack).collect();
        stacks.sort_unstable();
        stacks.dedup();
        let mut engines = Vec::new();
        for &s in &stacks {
            let max_memory = filters
                .iter()
                .filter(|f| f.max_stack == s)
                .map(|f| f.memory_limit)
                .max()
                .unwrap_or(64 << 20);
            engines.push(EngineSet::new(wasm, s, max_memory).map_err(FilterError::Engine)?);
        }
        let ticker = if wasm.epoch_interruption && !engines.is_empty() {
            Some(
                Ticker::start(
                    engines.iter().flat_map(|e| e.engines().cloned()).collect(),
                    wasm.epoch_tick,
                )
                .map_err(FilterError::Engine)?,
            )
        } else {
            None
        };
        let cache = match wasm.resolved_cache_dir() {
            Some(dir) if !filters.is_empty() => match ArtifactCache::open(&dir, wasm.cache_max_size) {
                Ok(c) => Some(c),
                Err(e) => {
                    tracing::warn!(error = %e, "compiled-module cache disabled");
                    None
                }
            },
            _ => None,
        };
        let slots = filters
            .iter()
            .enumerate()
            .map(|(i, f)| {
                let engine = stacks.iter().position(|&s| s == f.max_stack).unwrap_or(0);
                let name: Arc<str> = Arc::from(f.name.as_str());
                let fm = metrics.filter(&f.name);
                let set = &engines[engine];
                Slot {
                    id: FilterId(i as u32),
                    name: name.clone(),
                    engine,
                    spec: InstanceSpec {
                        filter: name.clone(),
                        memory_limit: f.memory_limit,
                        allow_env: f.allow_env.clone(),
                        allow_read_dirs: f.allow_read_dirs.clone(),
                        init_ticks: set.ticks(INIT_TIMEOUT.max(f.timeout)),
                        inherit_stdio: options.inherit_stdio,
                    },
                    ticks: if set.epoch {
                        set.ticks(f.timeout)
                    } else {
                        super::engine::NO_DEADLINE
                    },
                    current: ArcSwapOption::empty(),
                    breaker: Breaker::new(name, f.breaker_threshold, f.breaker_cooldown, fm.breaker_state.clone()),
                    metrics: fm,
                    dead_letter: f.dead_letter.as_deref().map(Arc::from),
                    recycle_memory: f.recycle_memory_threshold(),
                    generation: AtomicU64::new(0),
                    disk: Mutex::new(DiskState::default()),
                    log_gate: Mutex::new((None, 0)),
                    cfg: f.clone(),
                }
            })
            .collect();
        let inner = Arc::new(Inner {
            slots,
            engines,
            cache,
            metrics,
            options: options.clone(),
            debounce: wasm.watch_debounce,
            _ticker: ticker,
        });
        for slot in &inner.slots {
            let err = |message: String| FilterError::Module {
                filter: slot.cfg.name.clone(),
                module: slot.cfg.module.clone(),
                message,
            };
            let bytes =
                std::fs::read(&slot.cfg.module).map_err(|e| err(format!("cannot read the module file: {e}")))?;
            let sha = sha256_hex(&bytes);
            let version = inner.load_version(slot, &bytes, &sha, false).map_err(err)?;
            tracing::info!(
                filter = %slot.name, module = %slot.cfg.module.display(), sha256 = %version.sha256,
                kind = version.kind.as_str(), from_cache = version.from_cache, load_time = ?version.load_time,
                "filter module loaded"
            );
            let v = Arc::new(version);
            slot.disk.lock().unwrap_or_else(|p| p.into_inner()).last_good = Some(v.clone());
            slot.current.store(Some(v));
        }
        let watcher = if options.watch && inner.slots.iter().any(|s| s.cfg.watch) {
            match Watcher::start(inner.clone()) {
                Ok(w) => Some(w),
                Err(e) => {
                    tracing::error!(error = %e, "cannot watch the filter modules: hot swap is off");
                    None
                }
            }
        } else {
            None
        };
        Ok(Arc::new(FilterHost {
            inner,
            watcher: Mutex::new(watcher),
        }))
    }

    /// The id of the filter named `name`.
    pub fn id(&self, name: &str) -> Option<FilterId> {
        self.inner.slots.iter().find(|s| &*s.name == name).map(|s| s.id)
    }

    /// Resolves a route's filter names, in order.
    pub fn chain<S: AsRef<str>>(&self, names: &[S]) -> Result<Vec<FilterId>, FilterError> {
        names
            .iter()
            .map(|n| {
                self.id(n.as_ref())
                    .ok_or_else(|| FilterError::Unknown(n.as_ref().to_string()))
            })
            .collect()
    }

    pub fn name(&self, id: FilterId) -> &str {
        &self.inner.slots[id.index()].name
    }

    pub fn len(&self) -> usize {
        self.inner.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.inner.slots.is_empty()
    }

    /// A worker: owns its own instances; use one per thread.
    pub fn worker(&self) -> FilterWorker {
        FilterWorker {
            inner: self.inner.clone(),
            slots: self.inner.slots.iter().map(|_| WorkerSlot::default()).collect(),
            json: Vec::with_capacity(2048),
            json_valid: false,
        }
    }

    /// The largest `max_stack` of any filter: a thread running a worker needs
    /// a native stack well above it (this plus 1 MiB is plenty).
    pub fn max_stack(&self) -> usize {
        self.inner
            .engines
            .iter()
            .map(|e| e.max_stack as usize)
            .max()
            .unwrap_or(0)
    }

    pub fn status(&self, id: FilterId) -> FilterStatus {
        let slot = &self.inner.slots[id.index()];
        let cur = slot.current.load_full();
        let disk = slot.disk.lock().unwrap_or_else(|p| p.into_inner());
        FilterStatus {
            name: slot.cfg.name.clone(),
            module: slot.cfg.module.clone(),
            sha256: cur.as_ref().map(|v| v.sha256.to_string()),
            generation: cur.as_ref().map(|v| v.generation).unwrap_or(0),
            kind: cur.as_ref().map(|v| v.kind),
            tier: cur.as_ref().map(|v| v.tier),
            from_cache: cur.as_ref().is_some_and(|v| v.from_cache),
            breaker: slot.breaker.state(),
            swaps: disk.swaps,
            rejected: disk.rejects,
            last_rejected: disk.rejected.clone(),
            deleted: disk.deleted,
        }
    }

    /// Checks the module file now, as the watcher does after a change
    /// (compile, validate, swap or reject).
    pub fn check_now(&self, id: FilterId) -> CheckOutcome {
        self.inner.check(id)
    }

    /// Stops the file watcher (the current versions stay in use).
    pub fn stop_watching(&self) {
        self.watcher.lock().unwrap_or_else(|p| p.into_inner()).take();
    }
}

impl Inner {
    /// Compiles and validates one version of a slot's module (`quick`: on
    /// baseline code when it is not in the cache).
    fn load_version(&self, slot: &Slot, bytes: &[u8], sha: &str, quick: bool) -> Result<Version, String> {
        let set = &self.engines[slot.engine];
        let generation = slot.generation.fetch_add(1, Ordering::Relaxed) + 1;
        let version = module::load(
            set,
            bytes,
            sha,
            slot.cfg.module.clone(),
            generation,
            self.cache.as_ref(),
            &self.metrics,
            quick,
        )?;
        self.validate(slot, &version)?;
        Ok(version)
    }

    /// Starts the Cranelift compile of a version running on baseline code.
    fn spawn_optimize(self: &Arc<Self>, id: FilterId, baseline: Arc<Version>, bytes: Vec<u8>) {
        let inner = self.clone();
        let spawned = std::thread::Builder::new()
            .name("wasm-optimize".into())
            .spawn(move || inner.optimize(id, &baseline, &bytes));
        if let Err(e) = spawned {
            let slot = &self.slots[id.index()];
            tracing::error!(filter = %slot.name, error = %e, "cannot start the optimizing compile: the filter stays on baseline code");
        }
    }

    /// Compiles and validates `baseline`'s module with Cranelift, then moves
    /// the filter to it if `baseline` is still the version in use.
    fn optimize(&self, id: FilterId, baseline: &Arc<Version>, bytes: &[u8]) {
        let slot = &self.slots[id.index()];
        let set = &self.engines[slot.engine];
        let start = Instant::now();
        let result = module::optimize(set, baseline, bytes, self.cache.as_ref(), &self.metrics).and_then(|v| {
            self.validate(slot, &v)?;
            Ok(v)
        });
        let mut disk = slot.disk.lock().unwrap_or_else(|p| p.into_inner());
        let v = match result {
            Ok(v) => Arc::new(v),
            Err(e) => {
                slot.metrics.swap("optimize_failed");
                tracing::error!(
                    filter = %slot.name, module = %slot.cfg.module.display(), sha256 = %baseline.sha256, error = %e,
                    "Cranelift cannot take a module the baseline compiler took: the filter stays on baseline code"
                );
                return;
            }
        };
        if disk.last_good.as_ref().is_some_and(|g| Arc::ptr_eq(g, baseline)) {
            disk.last_good = Some(v.clone());
        }
        let current = slot.current.load_full();
        if !current.as_ref().is_some_and(|c| Arc::ptr_eq(c, baseline)) {
            tracing::debug!(filter = %slot.name, sha256 = %baseline.sha256, "optimized code not used: the version changed meanwhile");
            return;
        }
        slot.current.store(Some(v.clone()));
        slot.metrics.swap("optimized");
        tracing::info!(
            filter = %slot.name, module = %slot.cfg.module.display(), sha256 = %v.sha256,
            generation = v.generation, compile_time = ?v.load_time, took = ?start.elapsed(),
            "filter module optimized: now on Cranelift's code"
        );
    }

    /// Instantiates with the filter's config (init must succeed) and runs the vectors.
    fn validate(&self, slot: &Slot, version: &Version) -> Result<(), String> {
        let mut instance = instantiate(version, &slot.spec, &slot.cfg.config_json)
            .map_err(|e| format!("does not start: {}", e.message))?;
        if !self.options.run_vectors {
            return Ok(());
        }
        let mut others: Vec<(String, Instance)> = Vec::new();
        for file in vectors::files_for(&slot.cfg.module) {
            for v in vectors::read_file(&file)? {
                let inst = match &v.config {
                    None => &mut instance,
                    Some(c) => {
                        let pos = match others.iter().position(|(k, _)| k == c) {
                            Some(p) => p,
                            None => {
                                let i = instantiate(version, &slot.spec, c).map_err(|e| {
                                    format!("{}: does not start with this config: {}", v.place(), e.message)
                                })?;
                                others.push((c.clone(), i));
                                others.len() - 1
                            }
                        };
                        &mut others[pos].1
                    }
                };
                let mut input = v.input.clone();
                let mut json = EventJson::new(None, Vec::new());
                // Vectors check verdicts, not speed: the init deadline, not the
                // per-event one (a loaded machine or a debug build must not fail a load).
                let ticks = slot.spec.init_ticks;
                let result = match catch_unwind(AssertUnwindSafe(|| inst.process(&mut input, &mut json, ticks))) {
                    Ok(Ok(out)) => interpret(out, &v.input),
                    Ok(Err(e)) => StepResult::Failed(e),
                    Err(p) => StepResult::Failed(CallError::new(FailureKind::Panic, panic_message(&*p))),
                };
                if let StepResult::Failed(e) = &result
                    && e.kind.poisons()
                {
                    // Re-instantiate for the next vector.
                    let cfg = v.config.as_deref().unwrap_or(&slot.cfg.config_json);
                    *inst = instantiate(version, &slot.spec, cfg)
                        .map_err(|e| format!("does not restart: {}", e.message))?;
                }
                vectors::check(&v.expect, &result, &v.input)
                    .map_err(|e| format!("test vector {} failed: {e}", v.place()))?;
            }
        }
        Ok(())
    }

    /// Looks at a slot's module file and swaps, rejects or applies `on_delete`.
    pub(crate) fn check(self: &Arc<Self>, id: FilterId) -> CheckOutcome {
        let slot = &self.slots[id.index()];
        let mut disk = slot.disk.lock().unwrap_or_else(|p| p.into_inner());
        let path = &slot.cfg.module;
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return self.deleted(slot, &mut disk),
            Err(e) => {
                tracing::warn!(filter = %slot.name, module = %path.display(), error = %e, "cannot read the module file; keeping the current version");
                return CheckOutcome::Unreadable(e.to_string());
            }
        };
        let sha = sha256_hex(&bytes);
        let was_deleted = std::mem::replace(&mut disk.deleted, false);
        let current = slot.current.load_full();
        if let Some(cur) = &current
            && *cur.sha256 == *sha
        {
            if was_deleted {
                tracing::info!(filter = %slot.name, module = %path.display(), sha256 = %sha, "module file is back, unchanged");
                return CheckOutcome::Restored;
            }
            return CheckOutcome::Unchanged;
        }
        if current.is_none()
            && let Some(good) = disk.last_good.clone()
            && *good.sha256 == *sha
        {
            slot.current.store(Some(good));
            slot.breaker.reset();
            slot.metrics.swap("restored");
            tracing::info!(filter = %slot.name, module = %path.display(), sha256 = %sha, "module file is back: filter no longer bypassed");
            return CheckOutcome::Restored;
        }
        if disk.rejected.as_ref().is_some_and(|(s, _)| *s == sha) {
            return CheckOutcome::Unchanged;
        }
        let old = current.as_ref().map(|v| v.sha256.to_string());
        match self.load_version(slot, &bytes, &sha, true) {
            Ok(v) => {
                let v = Arc::new(v);
                if v.tier == Tier::Baseline {
                    self.spawn_optimize(id, v.clone(), bytes);
                }
                disk.last_good = Some(v.clone());
                disk.rejected = None;
                disk.swaps += 1;
                slot.current.store(Some(v.clone()));
                slot.breaker.reset();
                slot.metrics.swap("swapped");
                tracing::info!(
                    filter = %slot.name, module = %path.display(),
                    old_sha256 = %old.as_deref().unwrap_or("none"), new_sha256 = %v.sha256,
                    generation = v.generation, tier = v.tier.as_str(), from_cache = v.from_cache, load_time = ?v.load_time,
                    "filter module swapped"
                );
                CheckOutcome::Swapped { old, new: sha }
            }
            Err(e) => {
                disk.rejects += 1;
                disk.rejected = Some((sha.clone(), e.clone()));
                slot.metrics.swap("rejected");
                tracing::error!(
                    filter = %slot.name, module = %path.display(), rejected_sha256 = %sha,
                    running_sha256 = %old.as_deref().unwrap_or("none"), error = %e,
                    "new filter module rejected; the running version stays"
                );
                CheckOutcome::Rejected { sha256: sha, error: e }
            }
        }
    }

    fn deleted(&self, slot: &Slot, disk: &mut DiskState) -> CheckOutcome {
        let first = !std::mem::replace(&mut disk.deleted, true);
        match slot.cfg.on_delete {
            OnDelete::Keep => {
                if first {
                    slot.metrics.swap("deleted");
                    let cur = slot.current.load_full();
                    tracing::warn!(
                        filter = %slot.name, module = %slot.cfg.module.display(),
                        sha256 = cur.as_ref().map(|v| v.sha256.to_string()).unwrap_or_default(),
                        "module file deleted; on_delete = \"keep\": the last good version keeps running"
                    );
                }
                CheckOutcome::DeletedKept
            }
            OnDelete::Bypass => {
                if first || slot.current.load().is_some() {
                    slot.current.store(None);
                    slot.metrics.swap("bypassed");
                    tracing::warn!(
                        filter = %slot.name, module = %slot.cfg.module.display(),
                        "module file deleted; on_delete = \"bypass\": events skip this filter until it is back"
                    );
                }
                CheckOutcome::DeletedBypassed
            }
        }
    }
}

/// The text of a caught panic.
fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    let msg = panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into());
    format!("host panic during the call (a worker must run on a plain thread, not inside an async runtime): {msg}")
}

/// Instantiates a version; a panic in a host function (a bug) becomes an error.
fn instantiate(version: &Version, spec: &InstanceSpec, config_json: &str) -> Result<Instance, CallError> {
    catch_unwind(AssertUnwindSafe(|| version.instantiate(spec, config_json)))
        .unwrap_or_else(|p| Err(CallError::new(FailureKind::Instantiate, panic_message(&*p))))
}

/// Turns the guest's answer into a step result, validating a replacement
/// or checking an edit list (all or nothing: one bad edit fails the call).
pub(crate) fn interpret(out: GuestOut, input: &Event) -> StepResult {
    let parsed = match out {
        GuestOut::Keep => return StepResult::Keep,
        GuestOut::Drop => return StepResult::Drop,
        GuestOut::Error(msg) => return StepResult::Failed(CallError::new(FailureKind::GuestError, msg)),
        GuestOut::Edit(edits) => {
            return match Edits::check(edits) {
                // Nothing to change: a keep (the JSON stays valid, nothing is re-serialized).
                Ok(e) if e.is_empty() => StepResult::Keep,
                Ok(e) => StepResult::Edit(e),
                Err(e) => StepResult::Failed(e),
            };
        }
        GuestOut::ReplaceJson(s) => serde_json::from_str::<Event>(&s),
        GuestOut::ReplaceValue(v) => serde_json::from_value::<Event>(v),
    };
    match parsed {
        Err(e) => StepResult::Failed(CallError::new(
            FailureKind::InvalidOutput,
            format!("the replacement is not a valid normalized event: {e}"),
        )),
        Ok(ev) if ev.uid != input.uid => StepResult::Failed(CallError::new(
            FailureKind::InvalidOutput,
            format!("the replacement changed uid from {:?} to {:?}", input.uid, ev.uid),
        )),
        Ok(ev) if ev.resource_version != input.resource_version => StepResult::Failed(CallError::new(
            FailureKind::InvalidOutput,
            format!(
                "the replacement changed resource_version from {:?} to {:?}",
                input.resource_version, ev.resource_version
            ),
        )),
        Ok(ev) => StepResult::Replace(Box::new(ev)),
    }
}

#[derive(Default)]
struct WorkerSlot {
    version: Option<Arc<Version>>,
    instance: Option<Instance>,
    calls: u64,
    /// Why the next instance is created (metric label).
    next_reason: &'static str,
}

/// One thread's instances of every filter. Not shared: each thread that runs
/// chains takes its own from [`FilterHost::worker`]. Must run on a plain
/// thread (not inside a tokio runtime: WASI's sync bindings block on their
/// own runtime), with a native stack above [`FilterHost::max_stack`].
pub struct FilterWorker {
    inner: Arc<Inner>,
    slots: Vec<WorkerSlot>,
    /// The event's JSON, serialized on demand (reused buffer).
    json: Vec<u8>,
    /// `json` holds the event the last run left.
    json_valid: bool,
}

impl FilterWorker {
    /// Runs `event` through `chain` in order. `json` is the event already
    /// serialized, if the caller has it.
    pub fn run_chain(&mut self, chain: &[FilterId], event: Event, json: Option<&[u8]>) -> ChainOutcome {
        self.run(chain, event, json, None)
    }

    /// As [`run_chain`](Self::run_chain), and records each step's module version.
    pub fn run_chain_traced(
        &mut self,
        chain: &[FilterId],
        event: Event,
        json: Option<&[u8]>,
        trace: &mut Vec<StepTrace>,
    ) -> ChainOutcome {
        self.run(chain, event, json, Some(trace))
    }

    /// Runs one filter on one event, without applying `on_error`. The
    /// event is lent to the instance for the call (a 0.3 component reads it
    /// through `host.event`) and is unchanged when this returns.
    pub fn call(&mut self, id: FilterId, event: &mut Event, json: Option<&[u8]>) -> StepResult {
        let mut src = EventJson::new(json, std::mem::take(&mut self.json));
        let r = self.step(id, event, &mut src, None);
        self.finish(src);
        r
    }

    /// The JSON of the event as the last [`run_chain`](Self::run_chain) or
    /// [`call`](Self::call) left it, if a filter needed it serialized (and
    /// none changed the event afterwards): the exporters' record can reuse it.
    pub fn serialized(&self) -> Option<&[u8]> {
        self.json_valid.then_some(&self.json[..])
    }

    fn finish(&mut self, src: EventJson<'_>) {
        self.json_valid = src.serialized().is_some();
        self.json = src.into_buf();
    }

    /// How much linear memory this worker's instance of `id` holds (None: no instance).
    pub fn instance_memory(&self, id: FilterId) -> Option<u64> {
        self.slots[id.index()].instance.as_ref().map(Instance::memory_bytes)
    }

    /// Drops every instance (they are recreated on the next call).
    pub fn reset(&mut self) {
        for s in &mut self.slots {
            s.instance = None;
        }
    }

    fn run(
        &mut self,
        chain: &[FilterId],
        event: Event,
        json: Option<&[u8]>,
        trace: Option<&mut Vec<StepTrace>>,
    ) -> ChainOutcome {
        let mut src = EventJson::new(json, std::mem::take(&mut self.json));
        let outcome = self.run_steps(chain, event, &mut src, trace);
        self.finish(src);
        outcome
    }

    fn run_steps(
        &mut self,
        chain: &[FilterId],
        mut event: Event,
        src: &mut EventJson<'_>,
        mut trace: Option<&mut Vec<StepTrace>>,
    ) -> ChainOutcome {
        let mut replaced = false;
        for &id in chain {
            let result = self.step(id, &mut event, src, trace.as_deref_mut());
            let slot = &self.inner.slots[id.index()];
            let error = match result {
                StepResult::Keep | StepResult::Bypassed(None) => continue,
                StepResult::Drop => {
                    return ChainOutcome::Drop {
                        by: slot.name.clone(),
                        error: None,
                    };
                }
                StepResult::Replace(ev) => {
                    event = *ev;
                    replaced = true;
                    src.changed();
                    continue;
                }
                StepResult::Edit(edits) => {
                    // Checked already: applying cannot fail, and the chain's
                    // own event is changed in place (no copy).
                    edits.apply(&mut event);
                    replaced = true;
                    src.changed();
                    continue;
                }
                StepResult::Failed(e) => {
                    let v = self.slots[id.index()].version.clone();
                    slot.error_text(v.as_deref(), &event, &e)
                }
                StepResult::Bypassed(Some(why)) => format!(
                    "filter `{}` ({}) bypassed for event {}: {why}",
                    slot.name,
                    slot.cfg.module.display(),
                    event.describe()
                ),
            };
            match slot.cfg.on_error {
                OnError::Pass => continue,
                OnError::Drop => {
                    return ChainOutcome::Drop {
                        by: slot.name.clone(),
                        error: Some(error),
                    };
                }
                OnError::DeadLetter => {
                    return ChainOutcome::DeadLetter {
                        event,
                        filter: slot.name.clone(),
                        error,
                        exporter: slot.dead_letter.clone().unwrap_or_else(|| Arc::from("")),
                    };
                }
            }
        }
        ChainOutcome::Keep { event, replaced }
    }

    fn step(
        &mut self,
        id: FilterId,
        event: &mut Event,
        json: &mut EventJson<'_>,
        trace: Option<&mut Vec<StepTrace>>,
    ) -> StepResult {
        let inner = &*self.inner;
        let slot = &inner.slots[id.index()];
        let ws = &mut self.slots[id.index()];
        let trial = match slot.breaker.admit() {
            Admit::Call => false,
            Admit::Trial => true,
            Admit::Bypass(why) => {
                slot.metrics.bypassed.inc();
                if let Some(t) = trace {
                    t.push(StepTrace {
                        filter: id,
                        sha256: ws.version.as_ref().map(|v| v.sha256.clone()),
                        generation: ws.version.as_ref().map(|v| v.generation).unwrap_or(0),
                        verdict: "bypassed",
                    });
                }
                return StepResult::Bypassed(Some(why));
            }
        };
        {
            let cur = slot.current.load();
            let Some(v) = (*cur).as_ref() else {
                if trial {
                    slot.breaker.release_trial();
                }
                slot.metrics.bypassed.inc();
                if ws.version.take().is_some() {
                    ws.instance = None;
                }
                if let Some(t) = trace {
                    t.push(StepTrace {
                        filter: id,
                        sha256: None,
                        generation: 0,
                        verdict: "bypassed",
                    });
                }
                return StepResult::Bypassed(None);
            };
            if !ws.version.as_ref().is_some_and(|w| Arc::ptr_eq(w, v)) {
                if let Some(old) = &ws.version {
                    ws.instance = None;
                    // The same version on optimized code, or a new version.
                    ws.next_reason = if old.generation == v.generation && old.sha256 == v.sha256 {
                        "optimized"
                    } else {
                        "swap"
                    };
                }
                ws.version = Some(v.clone());
            }
        }
        let Some(version) = ws.version.as_ref() else {
            return StepResult::Bypassed(None);
        };
        let mut result = None;
        if ws.instance.is_none() {
            let t0 = Instant::now();
            match instantiate(version, &slot.spec, &slot.cfg.config_json) {
                Ok(i) => {
                    ws.instance = Some(i);
                    ws.calls = 0;
                    slot.metrics.instantiated(if ws.next_reason.is_empty() {
                        "start"
                    } else {
                        ws.next_reason
                    });
                    tracing::debug!(filter = %slot.name, reason = ws.next_reason, took = ?t0.elapsed(), "instantiated");
                }
                Err(e) => result = Some(StepResult::Failed(e)),
            }
        }
        let result = match result {
            Some(r) => r,
            None => {
                let Some(instance) = ws.instance.as_mut() else {
                    return StepResult::Bypassed(None);
                };
                let t0 = Instant::now();
                let r = catch_unwind(AssertUnwindSafe(|| instance.process(event, json, slot.ticks)));
                slot.metrics.call_seconds.observe(t0.elapsed().as_secs_f64());
                let asked = instance.take_event_requests();
                if asked > 0 {
                    slot.metrics.event_requests.inc_by(asked);
                }
                let memory = instance.memory_bytes();
                ws.calls += 1;
                let r = match r {
                    Ok(Ok(out)) => interpret(out, event),
                    Ok(Err(e)) => StepResult::Failed(e),
                    Err(panic) => StepResult::Failed(CallError::new(FailureKind::Panic, panic_message(&*panic))),
                };
                // Replace the instance when it is poisoned or due for recycling.
                let drop_reason = match &r {
                    StepResult::Failed(e) if e.kind.poisons() => Some("failure"),
                    _ if slot.cfg.recycle_after_calls > 0 && ws.calls >= slot.cfg.recycle_after_calls => {
                        Some("recycle_calls")
                    }
                    _ if memory > slot.recycle_memory => Some("recycle_memory"),
                    _ => None,
                };
                if let Some(reason) = drop_reason {
                    ws.instance = None;
                    ws.next_reason = reason;
                }
                r
            }
        };
        let m = &slot.metrics;
        let verdict = match &result {
            StepResult::Keep => {
                m.keep.inc();
                slot.breaker.success(trial);
                "keep"
            }
            StepResult::Drop => {
                m.drop.inc();
                slot.breaker.success(trial);
                "drop"
            }
            StepResult::Replace(_) => {
                m.replace.inc();
                slot.breaker.success(trial);
                "replace"
            }
            StepResult::Edit(_) => {
                m.edit.inc();
                slot.breaker.success(trial);
                "edit"
            }
            StepResult::Failed(e) => {
                m.error.inc();
                m.failure(e.kind.as_str());
                let text = slot.error_text(Some(version.as_ref()), event, e);
                slot.breaker.failure(trial, &text);
                slot.log_failure(&text);
                "error"
            }
            StepResult::Bypassed(_) => "bypassed",
        };
        if let Some(t) = trace {
            t.push(StepTrace {
                filter: id,
                sha256: Some(version.sha256.clone()),
                generation: version.generation,
                verdict,
            });
        }
        result
    }
}
