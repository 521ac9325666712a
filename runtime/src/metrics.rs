//! Self-metrics, in the Prometheus text format through `prometheus-client`.
//!
//! Owns the registry and every metric family. Labels are low-cardinality only
//! (api, route, exporter, fixed reasons): never an object name or uid. Hot
//! counters are resolved to handles once, so the per-event path does no
//! label lookup.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::config::MetricsConfig;
use crate::event::Api;
use crate::event_metrics::KubeEventCounter;

type Labels = Vec<(&'static str, String)>;

fn l1(k: &'static str, v: &str) -> Labels {
    vec![(k, v.to_string())]
}

fn l2(k1: &'static str, v1: &str, k2: &'static str, v2: &str) -> Labels {
    vec![(k1, v1.to_string()), (k2, v2.to_string())]
}

/// Handles for one exporter's metrics.
#[derive(Clone)]
pub struct ExporterMetrics {
    pub exported: Counter,
    pub batches: Counter,
    pub queue_depth: Gauge,
    /// Bytes (of event JSON) waiting in memory.
    pub queue_bytes: Gauge,
    /// `queue_max_events`.
    pub queue_capacity_events: Gauge,
    /// Bytes waiting in the on-disk spill queue.
    pub spill_bytes: Gauge,
    /// Seconds from the event's timestamp to its acknowledgement.
    pub lag: Histogram,
    failures: Family<Labels, Counter>,
    dropped: Family<Labels, Counter>,
    name: String,
}

impl Default for ExporterMetrics {
    fn default() -> Self {
        Self {
            exported: Counter::default(),
            batches: Counter::default(),
            queue_depth: Gauge::default(),
            queue_bytes: Gauge::default(),
            queue_capacity_events: Gauge::default(),
            spill_bytes: Gauge::default(),
            lag: lag_histogram(),
            failures: Family::default(),
            dropped: Family::default(),
            name: String::new(),
        }
    }
}

impl ExporterMetrics {
    /// Observes the end-to-end lag of an acknowledged batch: each record's
    /// event timestamp (RFC 3339) to now. Records without a readable timestamp are skipped.
    pub fn observe_lag(&self, batch: &[std::sync::Arc<event_collector_exporters::Record>]) {
        let now = chrono::Utc::now();
        for rec in batch {
            if let Ok(t) = chrono::DateTime::parse_from_rfc3339(&rec.fields.timestamp) {
                let secs = now.signed_duration_since(t).num_milliseconds() as f64 / 1000.0;
                self.lag.observe(secs.max(0.0));
            }
        }
    }

    /// A failed export attempt of `n` events, by the exporter's reason word.
    pub fn failed(&self, reason: &str, n: u64) {
        self.failures
            .get_or_create(&l2("exporter", &self.name, "reason", reason))
            .inc_by(n);
    }

    /// Events given up on (never silently): counted by reason.
    pub fn dropped(&self, reason: &str, n: u64) {
        self.dropped
            .get_or_create(&l2("exporter", &self.name, "reason", reason))
            .inc_by(n);
    }
}

/// Handles for one WASM filter's metrics (see `crate::filter`).
#[derive(Clone)]
pub struct FilterMetrics {
    /// Calls by verdict.
    pub keep: Counter,
    pub drop: Counter,
    pub replace: Counter,
    /// `edit` verdicts (contract 0.2.0): the event changed by a list of edits.
    pub edit: Counter,
    /// Calls that failed (any kind; see `failure`).
    pub error: Counter,
    /// Events that skipped the filter: breaker open, or module deleted with `on_delete = "bypass"`.
    pub bypassed: Counter,
    /// Time per call, in seconds.
    pub call_seconds: Histogram,
    /// Calls of `host.event` (contract 0.3.0: the guest asked for the event's JSON).
    pub event_requests: Counter,
    /// 0 closed, 1 open, 2 half-open.
    pub breaker_state: Gauge,
    failures: Family<Labels, Counter>,
    swaps: Family<Labels, Counter>,
    instantiations: Family<Labels, Counter>,
    name: String,
}

impl FilterMetrics {
    /// A failed call, by kind: trap, timeout, memory, guest_error, invalid_output, instantiate, panic.
    pub fn failure(&self, kind: &str) {
        self.failures
            .get_or_create(&l2("filter", &self.name, "kind", kind))
            .inc();
    }

    /// How many failures of this kind so far.
    pub fn failures(&self, kind: &str) -> u64 {
        self.failures
            .get_or_create(&l2("filter", &self.name, "kind", kind))
            .get()
    }

    /// A module change: swapped, rejected, deleted, bypassed, restored,
    /// optimized (a swapped version moved from baseline to Cranelift code),
    /// optimize_failed.
    pub fn swap(&self, result: &str) {
        self.swaps
            .get_or_create(&l2("filter", &self.name, "result", result))
            .inc();
    }

    pub fn swaps(&self, result: &str) -> u64 {
        self.swaps
            .get_or_create(&l2("filter", &self.name, "result", result))
            .get()
    }

    /// A new instance, by reason: start, recycle_calls, recycle_memory, failure, swap, optimized.
    pub fn instantiated(&self, reason: &str) {
        self.instantiations
            .get_or_create(&l2("filter", &self.name, "reason", reason))
            .inc();
    }

    pub fn instantiations(&self, reason: &str) -> u64 {
        self.instantiations
            .get_or_create(&l2("filter", &self.name, "reason", reason))
            .get()
    }
}

fn lag_histogram() -> Histogram {
    // 10ms .. ~45min, then +Inf.
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        0.01, 2.0, 19,
    ))
}

fn filter_call_histogram() -> Histogram {
    // 1µs .. ~16ms, then +Inf: per-call costs run from ~0.2µs (no-op) to the timeout.
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        1e-6, 2.0, 15,
    ))
}

pub struct Metrics {
    registry: Registry,
    received: Family<Labels, Counter>,
    received_handles: [[Counter; 3]; 2],
    skipped: Family<Labels, Counter>,
    watch_errors: Family<Labels, Counter>,
    relists: Family<Labels, Counter>,
    pub normalize_failed: Counter,
    pub startup_dropped: Counter,
    pub unrouted: Counter,
    route_matched: Family<Labels, Counter>,
    exported: Family<Labels, Counter>,
    batches: Family<Labels, Counter>,
    failures: Family<Labels, Counter>,
    dropped: Family<Labels, Counter>,
    queue_depth: Family<Labels, Gauge>,
    queue_bytes: Family<Labels, Gauge>,
    queue_capacity: Family<Labels, Gauge>,
    spill_bytes: Family<Labels, Gauge>,
    pub checkpoint_pending: Gauge,
    filter_calls: Family<Labels, Counter>,
    filter_call_seconds: Family<Labels, Histogram, fn() -> Histogram>,
    filter_event_requests: Family<Labels, Counter>,
    filter_failures: Family<Labels, Counter>,
    filter_breaker: Family<Labels, Gauge>,
    filter_swaps: Family<Labels, Counter>,
    filter_instantiations: Family<Labels, Counter>,
    filter_cache: Family<Labels, Counter>,
    /// Gap records emitted (see `source::gap`).
    pub gap_records: Counter,
    checkpoint_writes: Family<Labels, Counter>,
    checkpoint_age: Gauge<f64, std::sync::atomic::AtomicU64>,
    /// 1 while this replica holds the Lease (or HA is off), else 0.
    pub leader: Gauge,
    lag: Family<Labels, Histogram, fn() -> Histogram>,
    /// Seconds since the checkpoint last advanced while events are pending (0 when none are).
    pub checkpoint_age_seconds: Gauge<f64, std::sync::atomic::AtomicU64>,
    config_reloads: Family<Labels, Counter>,
    /// 1 when every watch is established and every exporter can deliver.
    pub ready: Gauge,
    kubernetes_events: KubeEventCounter,
}

const RECEIVED_KINDS: [&str; 3] = ["listed", "applied", "deleted"];
const APIS: [Api; 2] = [Api::CoreV1, Api::EventsV1];

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        Self::with_config(&MetricsConfig::default())
    }

    /// Metrics with the `[metrics]` settings (the `kubernetes_events` counter).
    pub fn with_config(config: &MetricsConfig) -> Self {
        let mut registry = Registry::with_prefix("event_collector");
        let received = Family::<Labels, Counter>::default();
        let received_handles =
            APIS.map(|api| RECEIVED_KINDS.map(|k| received.get_or_create(&l2("api", api.as_str(), "kind", k)).clone()));
        let m = Self {
            received,
            received_handles,
            skipped: Default::default(),
            watch_errors: Default::default(),
            relists: Default::default(),
            normalize_failed: Default::default(),
            startup_dropped: Default::default(),
            unrouted: Default::default(),
            route_matched: Default::default(),
            exported: Default::default(),
            batches: Default::default(),
            failures: Default::default(),
            dropped: Default::default(),
            queue_depth: Default::default(),
            queue_bytes: Default::default(),
            queue_capacity: Default::default(),
            spill_bytes: Default::default(),
            checkpoint_pending: Default::default(),
            filter_calls: Default::default(),
            filter_call_seconds: Family::new_with_constructor(filter_call_histogram),
            filter_event_requests: Default::default(),
            filter_failures: Default::default(),
            filter_breaker: Default::default(),
            filter_swaps: Default::default(),
            filter_instantiations: Default::default(),
            filter_cache: Default::default(),
            gap_records: Default::default(),
            checkpoint_writes: Default::default(),
            checkpoint_age: Default::default(),
            leader: Default::default(),
            lag: Family::new_with_constructor(lag_histogram),
            checkpoint_age_seconds: Default::default(),
            config_reloads: Default::default(),
            ready: Default::default(),
            kubernetes_events: KubeEventCounter::new(config.clone()),
            registry: Registry::default(),
        };
        registry.register(
            "events_received",
            "Event objects received from the API server, by api and kind (listed, applied, deleted)",
            m.received.clone(),
        );
        registry.register("source_skipped", "Received objects not passed on: duplicate (same uid and resourceVersion) or unchanged (count did not go up)", m.skipped.clone());
        registry.register(
            "watch_errors",
            "Watch interruptions, by api and reason (gone = 410)",
            m.watch_errors.clone(),
        );
        registry.register(
            "watch_relists",
            "Relists after the first one, by api",
            m.relists.clone(),
        );
        registry.register(
            "events_normalize_failed",
            "Objects that could not be normalized (logged with their uid)",
            m.normalize_failed.clone(),
        );
        registry.register(
            "events_startup_dropped",
            "Events older than startup_max_age dropped from the startup list",
            m.startup_dropped.clone(),
        );
        registry.register(
            "events_unrouted",
            "Events that matched no route and were dropped",
            m.unrouted.clone(),
        );
        registry.register("route_matched", "Events taken by each route", m.route_matched.clone());
        registry.register(
            "exporter_events",
            "Events acknowledged by each exporter",
            m.exported.clone(),
        );
        registry.register(
            "exporter_batches",
            "Batches acknowledged by each exporter",
            m.batches.clone(),
        );
        registry.register(
            "exporter_failures",
            "Events in failed export attempts, by exporter and reason (retried)",
            m.failures.clone(),
        );
        registry.register(
            "exporter_dropped",
            "Events an exporter gave up on, by exporter and reason",
            m.dropped.clone(),
        );
        registry.register(
            "exporter_queue_depth",
            "Events waiting for each exporter, in memory and in its spill queue",
            m.queue_depth.clone(),
        );
        registry.register(
            "exporter_queue_bytes",
            "Bytes of event JSON waiting in each exporter's memory queue",
            m.queue_bytes.clone(),
        );
        registry.register(
            "exporter_queue_capacity_events",
            "Most events each exporter's memory queue holds (queue_max_events)",
            m.queue_capacity.clone(),
        );
        registry.register(
            "exporter_spill_bytes",
            "Bytes waiting in each exporter's on-disk spill queue",
            m.spill_bytes.clone(),
        );
        registry.register(
            "checkpoint_pending",
            "Events passed on but not yet acknowledged by all their exporters",
            m.checkpoint_pending.clone(),
        );
        registry.register(
            "filter_calls",
            "WASM filter calls, by filter and verdict (keep, drop, replace, edit, error, bypassed)",
            m.filter_calls.clone(),
        );
        registry.register(
            "filter_call_seconds",
            "Time per WASM filter call, by filter",
            m.filter_call_seconds.clone(),
        );
        registry.register(
            "filter_event_requests",
            "Calls of host.event by WASM filters of contract 0.3.0, by filter: how often a filter asked for the event's JSON (serialized at most once per event until a filter changes it)",
            m.filter_event_requests.clone(),
        );
        registry.register(
            "filter_failures",
            "Failed WASM filter calls, by filter and kind (trap, timeout, memory, guest_error, invalid_output, instantiate, panic)",
            m.filter_failures.clone(),
        );
        registry.register(
            "filter_breaker_state",
            "Circuit breaker of each WASM filter: 0 closed, 1 open, 2 half-open",
            m.filter_breaker.clone(),
        );
        registry.register(
            "filter_swaps",
            "WASM module changes seen by the watcher, by filter and result (swapped, rejected, deleted, bypassed, restored)",
            m.filter_swaps.clone(),
        );
        registry.register(
            "filter_instantiations",
            "WASM instances created, by filter and reason (start, recycle_calls, recycle_memory, failure, swap)",
            m.filter_instantiations.clone(),
        );
        registry.register(
            "filter_cache",
            "Compiled-module cache lookups, by result (hit, miss, invalid, write_failed)",
            m.filter_cache.clone(),
        );
        registry.register(
            "gap_records",
            "Gap records emitted: a watch could not resume (410 Gone or a stale resourceVersion) and events in the reported window may be missing",
            m.gap_records.clone(),
        );
        registry.register(
            "checkpoint_writes",
            "Checkpoint writes, by result (ok, error)",
            m.checkpoint_writes.clone(),
        );
        registry.register(
            "checkpoint_write_age_seconds",
            "Seconds since the checkpoint was last written to its store",
            m.checkpoint_age.clone(),
        );
        registry.register(
            "leader",
            "1 while this replica is the leader (always 1 without [ha]), else 0",
            m.leader.clone(),
        );
        registry.register(
            "lag_seconds",
            "End-to-end lag: event timestamp to acknowledgement by the exporter",
            m.lag.clone(),
        );
        registry.register(
            "checkpoint_age_seconds",
            "Seconds since the checkpoint last advanced while events are pending (0 when none are)",
            m.checkpoint_age_seconds.clone(),
        );
        registry.register(
            "config_reloads",
            "Config reloads, by result (applied, rejected)",
            m.config_reloads.clone(),
        );
        registry.register(
            "ready",
            "1 when every watch is established and every exporter can deliver",
            m.ready.clone(),
        );
        if config.kubernetes_events {
            registry.register(
                "kubernetes_events",
                "Routed Kubernetes Events by type, reason, involved-object kind (and namespace with [metrics] namespace_label); capped by [metrics] max_series, overflow under \"other\"",
                m.kubernetes_events.family(),
            );
        }
        Self { registry, ..m }
    }

    /// A checkpoint write, by result: ok, error.
    pub fn checkpoint_write(&self, result: &str) {
        self.checkpoint_writes.get_or_create(&l1("result", result)).inc();
    }

    pub fn checkpoint_writes(&self, result: &str) -> u64 {
        self.checkpoint_writes.get_or_create(&l1("result", result)).get()
    }

    pub fn checkpoint_age(&self, age: std::time::Duration) {
        self.checkpoint_age.set(age.as_secs_f64());
    }

    /// How many objects were skipped for `reason`.
    pub fn skipped_count(&self, reason: &'static str) -> u64 {
        self.skipped.get_or_create(&l1("reason", reason)).get()
    }

    pub fn watch_error_count(&self, api: Api, reason: &'static str) -> u64 {
        self.watch_errors
            .get_or_create(&l2("api", api.as_str(), "reason", reason))
            .get()
    }

    pub fn relist_count(&self, api: Api) -> u64 {
        self.relists.get_or_create(&l1("api", api.as_str())).get()
    }

    /// The handles of WASM filter `name`.
    pub fn filter(&self, name: &str) -> FilterMetrics {
        let verdict = |v: &str| {
            self.filter_calls
                .get_or_create(&l2("filter", name, "verdict", v))
                .clone()
        };
        let l = l1("filter", name);
        FilterMetrics {
            keep: verdict("keep"),
            drop: verdict("drop"),
            replace: verdict("replace"),
            edit: verdict("edit"),
            error: verdict("error"),
            bypassed: verdict("bypassed"),
            call_seconds: self.filter_call_seconds.get_or_create(&l).clone(),
            event_requests: self.filter_event_requests.get_or_create(&l).clone(),
            breaker_state: self.filter_breaker.get_or_create(&l).clone(),
            failures: self.filter_failures.clone(),
            swaps: self.filter_swaps.clone(),
            instantiations: self.filter_instantiations.clone(),
            name: name.to_string(),
        }
    }

    /// A compiled-module cache lookup: hit, miss, invalid, write_failed.
    pub fn filter_cache(&self, result: &str) {
        self.filter_cache_by(result, 1);
    }

    pub fn filter_cache_by(&self, result: &str, n: u64) {
        self.filter_cache.get_or_create(&l1("result", result)).inc_by(n);
    }

    pub fn filter_cache_count(&self, result: &str) -> u64 {
        self.filter_cache.get_or_create(&l1("result", result)).get()
    }

    pub fn received(&self, api: Api, kind: &str) {
        let a = APIS.iter().position(|x| *x == api).unwrap_or(0);
        let k = RECEIVED_KINDS.iter().position(|x| *x == kind).unwrap_or(1);
        self.received_handles[a][k].inc();
    }

    pub fn source_skipped(&self, reason: &'static str) {
        self.skipped.get_or_create(&l1("reason", reason)).inc();
    }

    pub fn watch_error(&self, api: Api, reason: &'static str) {
        self.watch_errors
            .get_or_create(&l2("api", api.as_str(), "reason", reason))
            .inc();
    }

    pub fn watch_relist(&self, api: Api) {
        self.relists.get_or_create(&l1("api", api.as_str())).inc();
    }

    /// The counter of events taken by route `name`.
    pub fn route_counter(&self, name: &str) -> Counter {
        self.route_matched.get_or_create(&l1("route", name)).clone()
    }

    /// The handles of exporter `name`.
    pub fn exporter(&self, name: &str) -> ExporterMetrics {
        let l = l1("exporter", name);
        ExporterMetrics {
            exported: self.exported.get_or_create(&l).clone(),
            batches: self.batches.get_or_create(&l).clone(),
            queue_depth: self.queue_depth.get_or_create(&l).clone(),
            queue_bytes: self.queue_bytes.get_or_create(&l).clone(),
            queue_capacity_events: self.queue_capacity.get_or_create(&l).clone(),
            spill_bytes: self.spill_bytes.get_or_create(&l).clone(),
            lag: self.lag.get_or_create(&l).clone(),
            failures: self.failures.clone(),
            dropped: self.dropped.clone(),
            name: name.to_string(),
        }
    }

    /// A config reload, by result: applied, rejected.
    pub fn config_reload(&self, result: &str) {
        self.config_reloads.get_or_create(&l1("result", result)).inc();
    }

    /// Counts a routed event in `kubernetes_events_total`.
    pub fn kubernetes_event(&self, ev: &crate::event::Event) {
        self.kubernetes_events.count(
            ev.type_.as_deref().unwrap_or(""),
            ev.reason.as_deref().unwrap_or(""),
            ev.kind(),
            &ev.namespace,
        );
    }

    /// The `kubernetes_events_total` counter.
    pub fn kubernetes_events(&self) -> &KubeEventCounter {
        &self.kubernetes_events
    }

    /// The text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}
