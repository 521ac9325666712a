//! `[source]`: which Event API to watch, what the API server should filter
//! for us, and what to do with the backlog found at startup.

use std::time::Duration;

use event_collector_exporters::units;
use serde::Deserialize;

use super::Problems;

/// Which Event API to watch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
pub enum WatchApi {
    /// core/v1 Events (what `kubectl get events` shows).
    #[serde(rename = "core/v1")]
    CoreV1,
    /// events.k8s.io/v1 Events: the current API, with series and reporting controller.
    #[default]
    #[serde(rename = "events.k8s.io/v1")]
    EventsV1,
    /// Both, de-duplicated by uid and resourceVersion (both APIs serve the same objects).
    #[serde(rename = "both")]
    Both,
}

/// What to export from the list the collector finds when it starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum StartupPolicy {
    /// Export every event the first list returns (nothing is lost across downtime).
    #[default]
    All,
    /// Export only events whose timestamp is within `startup_max_age`; the rest are counted and logged.
    MaxAge,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SourceConfig {
    pub api: WatchApi,
    /// Watch only these namespaces (one watch each). Empty: all namespaces.
    pub namespaces: Vec<String>,
    /// Leave these namespaces out (a server-side field selector).
    pub exclude_namespaces: Vec<String>,
    /// An extra field selector, passed to the API server as is.
    pub field_selector: Option<String>,
    /// A label selector on the Event objects, passed to the API server.
    pub label_selector: Option<String>,
    pub startup: StartupPolicy,
    #[serde(deserialize_with = "units::de_duration")]
    pub startup_max_age: Duration,
    /// Export DELETED notifications (TTL expiry) too.
    pub export_deleted: bool,
    /// Export updates that did not raise the count (metadata-only changes).
    pub export_unchanged: bool,
    /// Put the object as the server sent it under `raw`.
    pub include_raw: bool,
    /// Page size of the initial list.
    pub page_size: u32,
    /// How many event uids to remember for `count_delta` and relist de-duplication.
    pub repeat_cache_size: usize,
}

impl Default for SourceConfig {
    fn default() -> Self {
        Self {
            api: WatchApi::default(),
            namespaces: Vec::new(),
            exclude_namespaces: Vec::new(),
            field_selector: None,
            label_selector: None,
            startup: StartupPolicy::default(),
            startup_max_age: Duration::from_secs(3600),
            export_deleted: false,
            export_unchanged: false,
            include_raw: false,
            page_size: 500,
            repeat_cache_size: 200_000,
        }
    }
}

impl SourceConfig {
    /// Cross-field rules (serde has checked types). `span` is the `[source]` table's.
    pub(crate) fn validate(&self, span: std::ops::Range<usize>, problems: &mut Problems<'_>) {
        if !self.namespaces.is_empty() && !self.exclude_namespaces.is_empty() {
            problems.at(
                span.clone(),
                "[source]: `namespaces` and `exclude_namespaces` cannot both be set: an include list already leaves everything else out",
            );
        }
        for ns in self.namespaces.iter().chain(&self.exclude_namespaces) {
            if ns.is_empty() || ns.contains([',', '=', '!', ' ']) {
                problems.at(span.clone(), format!("[source]: invalid namespace name `{ns}`"));
            }
        }
        if self.page_size == 0 {
            problems.at(span.clone(), "[source]: `page_size` must be at least 1");
        }
        for (key, sel) in [
            ("field_selector", &self.field_selector),
            ("label_selector", &self.label_selector),
        ] {
            if sel.as_deref().is_some_and(|s| s.trim().is_empty()) {
                problems.at(
                    span.clone(),
                    format!("[source]: `{key}` is empty: remove it or give a selector"),
                );
            }
        }
    }
}
