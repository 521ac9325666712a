//! The source: Kubernetes Events from the API server, as one stream.
//!
//! Owns the watches (one per API and namespace, scoped server-side by
//! namespace, field and label selectors), each a [`watch::machine`] that can
//! resume from a saved resourceVersion, relist after 410 Gone and emit a gap
//! record, with no object cache; and the decision of what is worth passing
//! on: a new event, a repeat whose count went up, optionally deletions and
//! metadata-only updates. Relists and the second API's view of the same object
//! are recognized by [`repeats::RepeatTracker`] and, across restarts, by the
//! persistent seen-set, and not passed on twice. Every item carries its
//! resourceVersion and the watch it came from.

pub mod client;
pub mod gap;
pub mod list_page;
pub mod repeats;
pub mod replay;
pub mod watch;
pub mod wire;

use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt, stream::BoxStream};

use crate::ack::Mark;
use crate::config::{SourceConfig, WatchApi};
use crate::event::{Api, RawEvent, WatchType, occurrence_count};
use crate::metrics::Metrics;
use crate::state::Resume;
use crate::state::seen::SharedSeen;
use repeats::{RepeatTracker, Verdict};

/// One watch: an API, a namespace (None = all) and the selectors sent to the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchSpec {
    pub api: Api,
    pub namespace: Option<String>,
    pub field_selector: Option<String>,
    pub label_selector: Option<String>,
}

impl std::fmt::Display for WatchSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} in {}",
            self.api,
            self.namespace.as_deref().unwrap_or("all namespaces")
        )?;
        if let Some(fs) = &self.field_selector {
            write!(f, " fields[{fs}]")?;
        }
        if let Some(ls) = &self.label_selector {
            write!(f, " labels[{ls}]")?;
        }
        Ok(())
    }
}

/// The watches a source config asks for: include lists become one watch per
/// namespace; exclusions become a field selector.
pub fn watch_specs(cfg: &SourceConfig) -> Vec<WatchSpec> {
    let apis: &[Api] = match cfg.api {
        WatchApi::CoreV1 => &[Api::CoreV1],
        WatchApi::EventsV1 => &[Api::EventsV1],
        WatchApi::Both => &[Api::EventsV1, Api::CoreV1],
    };
    let mut fields: Vec<String> = cfg
        .exclude_namespaces
        .iter()
        .map(|ns| format!("metadata.namespace!={ns}"))
        .collect();
    fields.extend(cfg.field_selector.iter().map(|s| s.trim().to_string()));
    let field_selector = (!fields.is_empty()).then(|| fields.join(","));
    let namespaces: Vec<Option<String>> = if cfg.namespaces.is_empty() {
        vec![None]
    } else {
        cfg.namespaces.iter().cloned().map(Some).collect()
    };
    apis.iter()
        .flat_map(|api| {
            namespaces.iter().map(|ns| WatchSpec {
                api: *api,
                namespace: ns.clone(),
                field_selector: field_selector.clone(),
                label_selector: cfg.label_selector.clone(),
            })
        })
        .collect()
}

/// An event worth passing on.
#[derive(Debug, Clone)]
pub struct SourceEvent {
    pub api: Api,
    pub watch_type: WatchType,
    pub raw: Box<RawEvent>,
    /// The count already passed on for this uid, if any.
    pub prev_count: Option<u64>,
    /// Index of the watch (in [`watch_specs`] order) it came from.
    pub stream: usize,
    /// Part of the first list a watch returned at startup.
    pub initial: bool,
}

/// What the source stream yields.
#[derive(Debug, Clone)]
pub enum SourceItem {
    Event(Box<SourceEvent>),
    /// Watch `stream` finished a full list: it is established.
    Listed {
        stream: usize,
    },
    /// A position marker for the checkpoint (list start/end, bookmark); nothing to export.
    Mark {
        stream: usize,
        mark: Mark,
    },
}

/// What one watch machine yields, tagged with its index.
pub type Tagged = (usize, watch::Out);

/// How the watches start: per spec, the saved position (None: initial list).
#[derive(Clone, Default)]
pub struct StartState {
    pub resume: Vec<Option<Resume>>,
    /// Acknowledged (uid, resourceVersion) pairs; such objects are not passed on again.
    pub seen: Option<SharedSeen>,
    /// Empty watches in a row taken as a stale resourceVersion.
    pub stale_limit: u32,
}

/// Opens the watches for `specs` and merges them into one stream.
pub fn watch(
    client: kube::Client,
    cfg: &SourceConfig,
    specs: &[WatchSpec],
    start: StartState,
    metrics: Arc<Metrics>,
) -> impl Stream<Item = SourceItem> + Send + 'static {
    let streams: Vec<BoxStream<'static, Tagged>> = specs
        .iter()
        .enumerate()
        .map(|(i, spec)| {
            let ar = spec.api.api_resource();
            let api: kube::Api<wire::WireEvent> = match &spec.namespace {
                Some(ns) => kube::Api::namespaced_with(client.clone(), ns, &ar),
                None => kube::Api::all_with(client.clone(), &ar),
            };
            let resume = start.resume.get(i).cloned().flatten();
            tracing::info!(watch = %spec, resume_from = resume.as_ref().map(|r| r.resource_version.as_str()), "starting watch");
            let events = watch::KubeEventApi {
                api,
                client: client.clone(),
                field_selector: spec.field_selector.clone(),
                label_selector: spec.label_selector.clone(),
                timeout: 290,
            };
            let mc = watch::MachineConfig {
                page_size: cfg.page_size,
                stale_limit: start.stale_limit.max(1),
                ..Default::default()
            };
            watch::machine(events, spec.clone(), resume, mc, metrics.clone())
                .map(move |o| (i, o))
                .boxed()
        })
        .collect();
    let apis: Vec<Api> = specs.iter().map(|s| s.api).collect();
    classify(futures::stream::select_all(streams), apis, cfg, start.seen, metrics)
}

/// An event from a recorded stream ([`replay`]), before classification.
pub enum Replayed {
    Apply(Box<RawEvent>),
    Delete(Box<RawEvent>),
}

/// Classifies recorded events, tagged with their watch index, like live ones
/// (no seen-set: a replay starts from nothing).
pub fn classify_recorded<S>(
    input: S,
    apis: Vec<Api>,
    cfg: &SourceConfig,
    metrics: Arc<Metrics>,
) -> impl Stream<Item = SourceItem> + Send + 'static
where
    S: Stream<Item = (usize, Replayed)> + Send + 'static,
{
    let tagged = input.map(|(i, r)| {
        let (deleted, raw) = match r {
            Replayed::Apply(raw) => (false, raw),
            Replayed::Delete(raw) => (true, raw),
        };
        (
            i,
            watch::Out::Event {
                deleted,
                raw,
                initial: false,
            },
        )
    });
    classify(tagged, apis, cfg, None, metrics)
}

/// Turns tagged machine output into [`SourceItem`]s; exposed for tests.
pub fn classify<S>(
    input: S,
    apis: Vec<Api>,
    cfg: &SourceConfig,
    seen: Option<SharedSeen>,
    metrics: Arc<Metrics>,
) -> impl Stream<Item = SourceItem> + Send + 'static
where
    S: Stream<Item = Tagged> + Send + 'static,
{
    let mut tracker = RepeatTracker::new(cfg.repeat_cache_size, Duration::from_secs(3600));
    // The counts saved with the checkpoint: a re-delivery is judged as without the restart.
    if let Some(seen) = seen.as_ref().and_then(|s| s.lock().ok()) {
        seen.counts().for_each(|(uid, count)| tracker.seed(uid, count));
    }
    let mut state = Classifier {
        tracker,
        apis,
        seen,
        listed_once: Vec::new(),
        export_deleted: cfg.export_deleted,
        export_unchanged: cfg.export_unchanged,
        metrics,
    };
    input.filter_map(move |(stream, ev)| futures::future::ready(state.on(stream, ev)))
}

struct Classifier {
    tracker: RepeatTracker,
    apis: Vec<Api>,
    seen: Option<SharedSeen>,
    /// Per watch: has it finished its first list?
    listed_once: Vec<bool>,
    export_deleted: bool,
    export_unchanged: bool,
    metrics: Arc<Metrics>,
}

impl Classifier {
    fn on(&mut self, stream: usize, out: watch::Out) -> Option<SourceItem> {
        if self.listed_once.len() <= stream {
            self.listed_once.resize(stream + 1, false);
        }
        let api = self.apis.get(stream).copied().unwrap_or(Api::EventsV1);
        match out {
            watch::Out::Mark(mark) => Some(SourceItem::Mark { stream, mark }),
            watch::Out::Listed => {
                self.listed_once[stream] = true;
                Some(SourceItem::Listed { stream })
            }
            watch::Out::Event {
                deleted: false,
                raw,
                initial,
            } => self.apply(stream, api, raw, initial),
            watch::Out::Event { deleted: true, raw, .. } => {
                self.metrics.received(api, "deleted");
                if let Some(uid) = raw.metadata.uid.as_deref() {
                    self.tracker.forget(uid);
                }
                self.export_deleted.then(|| {
                    let prev = occurrence_count(&raw);
                    SourceItem::Event(Box::new(SourceEvent {
                        api,
                        watch_type: WatchType::Deleted,
                        raw,
                        prev_count: Some(prev),
                        stream,
                        initial: false,
                    }))
                })
            }
        }
    }

    fn apply(&mut self, stream: usize, api: Api, raw: Box<RawEvent>, initial: bool) -> Option<SourceItem> {
        self.metrics.received(api, if initial { "listed" } else { "applied" });
        let count = occurrence_count(&raw);
        // Objects without uid or resourceVersion still go on, so normalize can report them by name.
        let verdict = match (raw.metadata.uid.as_deref(), raw.metadata.resource_version.as_deref()) {
            (Some(uid), Some(rv)) => {
                // Acknowledged before (this run or a previous one): not again.
                if self
                    .seen
                    .as_ref()
                    .and_then(|s| s.lock().ok())
                    .is_some_and(|s| s.contains(uid, rv))
                {
                    self.tracker.observe(uid, rv, count);
                    self.metrics.source_skipped("seen");
                    return None;
                }
                self.tracker.observe(uid, rv, count)
            }
            _ => Verdict::New,
        };
        let (watch_type, prev_count) = match verdict {
            Verdict::New => (WatchType::Added, None),
            Verdict::Repeat { prev } => (WatchType::Modified, Some(prev)),
            Verdict::Unchanged { prev } if self.export_unchanged => (WatchType::Modified, Some(prev)),
            Verdict::Unchanged { .. } => {
                self.metrics.source_skipped("unchanged");
                return None;
            }
            Verdict::Duplicate => {
                self.metrics.source_skipped("duplicate");
                return None;
            }
        };
        Some(SourceItem::Event(Box::new(SourceEvent {
            api,
            watch_type,
            raw,
            prev_count,
            stream,
            initial,
        })))
    }
}

#[cfg(test)]
mod tests;
