//! One watch as a plain `Stream`: a small state machine that can start from a
//! saved resourceVersion (kube-runtime's `watcher` cannot).
//!
//! Phases: `Resume(rv)` opens a watch at rv (with bookmarks) → `Watching`
//! passes on events and bookmarks, remembering the newest rv; a watch that
//! ends normally resumes at once from that rv. 410 Gone (as an HTTP status or
//! a watch ERROR event) → `Relist`: a paginated list, every item passed on
//! (the caller de-duplicates), a gap record (see [`super::gap`]), then
//! `Resume` from the list's rv. With no saved position the stream starts with
//! the initial list. A server that answers a stale rv with empty watches
//! (200, no event, ends at once) is caught after `stale_limit` such watches in
//! a row and treated like 410. Other errors back off exponentially with
//! jitter and resume from the same rv. A malformed object is skipped with a
//! metric and a log line naming its uid; the watch goes on. resourceVersions
//! are opaque strings: only kept and passed back, never compared by order.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::stream::BoxStream;
use futures::{AsyncBufReadExt, Stream, StreamExt};
use rand::Rng;
use tokio::time::Instant;

use super::WatchSpec;
use super::gap::{self, Gap, GapCause};
use super::wire::WireEvent;
use crate::ack::Mark;
use crate::event::RawEvent;
use crate::metrics::Metrics;

/// An API error, reduced to what the machine decides on.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ApiError {
    /// 410 Gone / Expired: the resourceVersion or continue token is too old.
    #[error("410 Gone: {0}")]
    Gone(String),
    #[error("{0}")]
    Other(String),
}

impl From<kube::Error> for ApiError {
    fn from(e: kube::Error) -> Self {
        match e {
            kube::Error::Api(s) if s.code == 410 => ApiError::Gone(s.message),
            other => ApiError::Other(other.to_string()),
        }
    }
}

/// One item of a watch response.
#[derive(Debug, Clone)]
pub enum WatchItem {
    Added(WireEvent),
    Modified(WireEvent),
    Deleted(WireEvent),
    Bookmark(String),
    /// A watch ERROR event (a Status).
    Error {
        code: u16,
        message: String,
    },
}

/// One page of a list.
#[derive(Debug, Clone)]
pub struct ListPage {
    pub items: Vec<WireEvent>,
    pub resource_version: String,
    pub continue_token: Option<String>,
}

pub type WatchItems = BoxStream<'static, Result<WatchItem, ApiError>>;

/// What the machine needs from the API server: list pages and watches.
#[async_trait::async_trait]
pub trait EventApi: Send + Sync + 'static {
    async fn list(&self, limit: u32, continue_token: Option<String>) -> Result<ListPage, ApiError>;
    async fn watch(&self, resource_version: &str) -> Result<WatchItems, ApiError>;
}

/// What the machine yields.
#[derive(Debug, Clone)]
pub enum Out {
    /// An object from a list (`listed`) or a watch.
    Event {
        deleted: bool,
        raw: Box<RawEvent>,
        /// Part of the very first list of a fresh start.
        initial: bool,
    },
    Mark(Mark),
    /// A list completed.
    Listed,
}

/// Settings of one machine.
#[derive(Debug, Clone)]
pub struct MachineConfig {
    pub page_size: u32,
    pub stale_limit: u32,
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    /// A watch that ends with nothing within this time counts as empty.
    pub empty_watch_time: Duration,
}

impl Default for MachineConfig {
    fn default() -> Self {
        Self {
            page_size: 500,
            stale_limit: 3,
            backoff_initial: Duration::from_millis(500),
            backoff_max: Duration::from_secs(30),
            empty_watch_time: Duration::from_secs(2),
        }
    }
}

enum Phase {
    Resume,
    Watching {
        items: WatchItems,
        started: Instant,
        seen_any: bool,
    },
    Relist {
        cause: Option<GapCause>,
        continue_token: Option<String>,
        started: bool,
    },
}

struct Machine<A> {
    api: A,
    spec: WatchSpec,
    cfg: MachineConfig,
    metrics: Arc<Metrics>,
    phase: Phase,
    /// The position a watch resumes from.
    rv: Option<String>,
    /// When the stream was known to be read up to `rv`.
    progress_at: DateTime<Utc>,
    empty_watches: u32,
    backoff: Duration,
    fresh_start: bool,
    /// Held from a list's first page to its last.
    list_burst: Option<crate::process_memory::ListBurst>,
}

/// The stream of one watch; `resume` = the saved position and when it was acknowledged.
pub fn machine<A: EventApi>(
    api: A,
    spec: WatchSpec,
    resume: Option<crate::state::Resume>,
    cfg: MachineConfig,
    metrics: Arc<Metrics>,
) -> impl Stream<Item = Out> + Send + 'static {
    let (rv, progress_at, phase) = match resume {
        Some(r) => (
            Some(r.resource_version),
            r.acked_at.unwrap_or_else(Utc::now),
            Phase::Resume,
        ),
        None => (
            None,
            Utc::now(),
            Phase::Relist {
                cause: None,
                continue_token: None,
                started: false,
            },
        ),
    };
    let fresh_start = rv.is_none();
    let m = Machine {
        api,
        spec,
        backoff: cfg.backoff_initial,
        cfg,
        metrics,
        phase,
        rv,
        progress_at,
        empty_watches: 0,
        fresh_start,
        list_burst: None,
    };
    futures::stream::unfold(m, |mut m| async move {
        let out = m.step().await;
        Some((futures::stream::iter(out), m))
    })
    .flatten()
}

impl<A: EventApi> Machine<A> {
    async fn sleep_backoff(&mut self) {
        let d = self.backoff.mul_f64(rand::rng().random_range(0.5..=1.0));
        tokio::time::sleep(d).await;
        self.backoff = (self.backoff * 2).min(self.cfg.backoff_max);
    }

    fn relist(&mut self, cause: GapCause) {
        self.phase = Phase::Relist {
            cause: Some(cause),
            continue_token: None,
            started: false,
        };
    }

    fn error(&self, reason: &'static str, error: &dyn std::fmt::Display) {
        self.metrics.watch_error(self.spec.api, reason);
        tracing::warn!(watch = %self.spec, reason, %error, "watch interrupted");
    }

    /// Runs one step; returns what to pass on (possibly nothing).
    async fn step(&mut self) -> Vec<Out> {
        match std::mem::replace(&mut self.phase, Phase::Resume) {
            Phase::Resume => {
                let rv = self.rv.clone().unwrap_or_default();
                match self.api.watch(&rv).await {
                    Ok(items) => {
                        self.phase = Phase::Watching {
                            items,
                            started: Instant::now(),
                            seen_any: false,
                        };
                    }
                    Err(ApiError::Gone(msg)) => {
                        self.error("gone", &msg);
                        self.relist(GapCause::Gone);
                    }
                    Err(e) => {
                        self.error("error", &e);
                        self.sleep_backoff().await;
                    }
                }
                Vec::new()
            }
            Phase::Watching {
                mut items,
                started,
                mut seen_any,
            } => {
                let Some(item) = items.next().await else {
                    // The watch ended.
                    if seen_any || started.elapsed() >= self.cfg.empty_watch_time {
                        self.empty_watches = 0;
                    } else {
                        self.empty_watches += 1;
                        if self.empty_watches >= self.cfg.stale_limit {
                            self.empty_watches = 0;
                            self.error("stale", &"the server answered several watches with nothing at once");
                            self.relist(GapCause::Stale);
                            return Vec::new();
                        }
                        self.sleep_backoff().await;
                    }
                    return Vec::new();
                };
                let out = match item {
                    Ok(WatchItem::Added(w)) | Ok(WatchItem::Modified(w)) => self.object(w, false, false, false),
                    Ok(WatchItem::Deleted(w)) => self.object(w, true, false, false),
                    Ok(WatchItem::Bookmark(rv)) => {
                        self.rv = Some(rv.clone());
                        self.progress_at = Utc::now();
                        vec![Out::Mark(Mark::Bookmark(rv))]
                    }
                    Ok(WatchItem::Error { code: 410, message }) => {
                        self.error("gone", &message);
                        self.relist(GapCause::Gone);
                        return Vec::new();
                    }
                    Ok(WatchItem::Error { code, message }) => {
                        self.error("error", &format!("{code}: {message}"));
                        self.sleep_backoff().await;
                        return Vec::new();
                    }
                    Err(ApiError::Gone(msg)) => {
                        self.error("gone", &msg);
                        self.relist(GapCause::Gone);
                        return Vec::new();
                    }
                    Err(e) => {
                        self.error("error", &e);
                        self.sleep_backoff().await;
                        return Vec::new();
                    }
                };
                seen_any = true;
                self.empty_watches = 0;
                self.backoff = self.cfg.backoff_initial;
                self.phase = Phase::Watching {
                    items,
                    started,
                    seen_any,
                };
                out
            }
            Phase::Relist {
                cause,
                continue_token,
                started,
            } => {
                let mut out = Vec::new();
                if !started {
                    if cause.is_some() {
                        self.metrics.watch_relist(self.spec.api);
                        tracing::warn!(watch = %self.spec, cause = cause.map(GapCause::as_str), "relisting");
                    }
                    out.push(Out::Mark(Mark::ListStart));
                    self.list_burst = Some(crate::process_memory::ListBurst::start());
                }
                match self.api.list(self.cfg.page_size, continue_token.clone()).await {
                    Ok(page) => {
                        if let Some(burst) = &self.list_burst {
                            burst.page_read();
                        }
                        self.backoff = self.cfg.backoff_initial;
                        let initial = self.fresh_start && cause.is_none();
                        for w in page.items {
                            out.extend(self.object(w, false, initial, true));
                        }
                        match page.continue_token.filter(|t| !t.is_empty()) {
                            Some(token) => {
                                self.phase = Phase::Relist {
                                    cause,
                                    continue_token: Some(token),
                                    started: true,
                                };
                            }
                            None => {
                                let list_rv = page.resource_version;
                                if let Some(cause) = cause {
                                    let g = Gap {
                                        from: self.progress_at,
                                        to: Utc::now(),
                                        cause,
                                        lost_rv: self.rv.clone(),
                                        list_rv: list_rv.clone(),
                                    };
                                    self.metrics.gap_records.inc();
                                    tracing::warn!(watch = %self.spec, from = %g.from, to = %g.to, cause = cause.as_str(),
                                        "emitting a gap record: events created and deleted in this window could not be seen");
                                    out.push(Out::Event {
                                        deleted: false,
                                        raw: Box::new(gap::record(&self.spec, &g)),
                                        initial: false,
                                    });
                                }
                                out.push(Out::Mark(Mark::ListEnd(list_rv.clone())));
                                out.push(Out::Listed);
                                self.list_burst = None;
                                self.rv = Some(list_rv);
                                self.progress_at = Utc::now();
                                self.fresh_start = false;
                                self.phase = Phase::Resume;
                            }
                        }
                    }
                    Err(e) => {
                        let gone = matches!(e, ApiError::Gone(_));
                        self.error(if gone { "gone" } else { "error" }, &e);
                        // An expired continue token restarts the list; items already passed on are de-duplicated.
                        self.phase = Phase::Relist {
                            cause,
                            continue_token: if gone { None } else { continue_token },
                            started: true,
                        };
                        if !gone {
                            self.sleep_backoff().await;
                        }
                    }
                }
                out
            }
        }
    }

    /// A listed object does not move the watch position (lists are in name order).
    fn object(&mut self, w: WireEvent, deleted: bool, initial: bool, listing: bool) -> Vec<Out> {
        match w.parsed {
            Ok(raw) => {
                if !listing && let Some(rv) = &raw.metadata.resource_version {
                    self.rv = Some(rv.clone());
                    self.progress_at = Utc::now();
                }
                vec![Out::Event { deleted, raw, initial }]
            }
            Err(m) => {
                if !listing && let Some(rv) = &m.resource_version {
                    self.rv = Some(rv.clone());
                }
                self.metrics.source_skipped("malformed");
                tracing::warn!(watch = %self.spec, uid = m.uid.as_deref().unwrap_or("unknown"), object = %m,
                    "skipping an object that is not a readable Event");
                Vec::new()
            }
        }
    }
}

/// The real API: `kube::Api` over [`WireEvent`]; list pages are read as
/// they stream in ([`super::list_page`]).
#[derive(Clone)]
pub struct KubeEventApi {
    pub api: kube::Api<WireEvent>,
    /// The client of `api`, for list requests read as a stream.
    pub client: kube::Client,
    pub field_selector: Option<String>,
    pub label_selector: Option<String>,
    /// Server-side watch timeout (seconds).
    pub timeout: u32,
}

#[async_trait::async_trait]
impl EventApi for KubeEventApi {
    async fn list(&self, limit: u32, continue_token: Option<String>) -> Result<ListPage, ApiError> {
        let mut lp = kube::api::ListParams::default().limit(limit);
        if let Some(f) = &self.field_selector {
            lp = lp.fields(f);
        }
        if let Some(l) = &self.label_selector {
            lp = lp.labels(l);
        }
        if let Some(t) = continue_token {
            lp = lp.continue_token(&t);
        }
        // As `Api::list` asks, but the body is read chunk by chunk: kube's
        // `list` holds the whole page as bytes, then as a copy, then as a
        // `String`, beside the decoded items. Errors (410 Gone included) are
        // kube's, from `request_stream`.
        let mut req = kube::core::Request::new(self.api.resource_url())
            .list(&lp)
            .map_err(|e| ApiError::Other(format!("list request for {}: {e}", self.api.resource_url())))?;
        req.extensions_mut().insert("list");
        let body = self.client.request_stream(req).await?;
        let mut body = std::pin::pin!(body);
        let mut reader = super::list_page::PageReader::default();
        let mut items = Vec::with_capacity((limit as usize).min(1024));
        let unreadable =
            |e: &dyn std::fmt::Display| ApiError::Other(format!("list of {}: {e}", self.api.resource_url()));
        loop {
            let chunk = body.fill_buf().await.map_err(|e| unreadable(&e))?;
            if chunk.is_empty() {
                break;
            }
            let n = chunk.len();
            reader.feed(chunk, |text| items.push(WireEvent::from_json(text)));
            body.consume_unpin(n);
        }
        let envelope = reader.finish().map_err(|e| unreadable(&e))?;
        Ok(ListPage {
            items,
            resource_version: envelope.metadata.resource_version.unwrap_or_default(),
            continue_token: envelope.metadata.continue_,
        })
    }

    async fn watch(&self, resource_version: &str) -> Result<WatchItems, ApiError> {
        let mut wp = kube::api::WatchParams::default().timeout(self.timeout);
        wp.bookmarks = true;
        if let Some(f) = &self.field_selector {
            wp = wp.fields(f);
        }
        if let Some(l) = &self.label_selector {
            wp = wp.labels(l);
        }
        let s = self.api.watch(&wp, resource_version).await?;
        Ok(s.filter_map(|r| {
            futures::future::ready(match r {
                Ok(kube::api::WatchEvent::Added(w)) => Some(Ok(WatchItem::Added(w))),
                Ok(kube::api::WatchEvent::Modified(w)) => Some(Ok(WatchItem::Modified(w))),
                Ok(kube::api::WatchEvent::Deleted(w)) => Some(Ok(WatchItem::Deleted(w))),
                Ok(kube::api::WatchEvent::Bookmark(b)) => Some(Ok(WatchItem::Bookmark(b.metadata.resource_version))),
                Ok(kube::api::WatchEvent::Error(s)) => Some(Ok(WatchItem::Error {
                    code: s.code,
                    message: s.message,
                })),
                // A line that is not a watch event at all: skip it, the watch goes on.
                Err(kube::Error::SerdeError(e)) => {
                    tracing::warn!(error = %e, "skipping a watch line that cannot be decoded");
                    None
                }
                Err(e) => Some(Err(ApiError::from(e))),
            })
        })
        .boxed())
    }
}

#[cfg(test)]
mod tests;
