//! Gap records: when a watch cannot resume (its resourceVersion was
//! compacted away: 410 Gone, or the server keeps answering with empty
//! watches) the source relists. Events created after the last position and
//! deleted before the relist cannot be seen by anyone any more; rather than
//! lose them silently, the source emits one synthetic Warning event, reason
//! `EventCollectorGap`, naming the stream and the time window in which events
//! may be missing. It goes through normalize and the routes like any event.

use chrono::{DateTime, SecondsFormat, Utc};
use sha2::{Digest, Sha256};

use super::WatchSpec;
use crate::event::RawEvent;
use crate::event::raw::{RawObjectRef, RawSource};

pub const GAP_REASON: &str = "EventCollectorGap";

/// Why the relist happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GapCause {
    /// 410 Gone: the resourceVersion was compacted.
    Gone,
    /// Repeated empty watches: the server treats the resourceVersion as stale.
    Stale,
}

impl GapCause {
    pub fn as_str(self) -> &'static str {
        match self {
            GapCause::Gone => "410 Gone (resourceVersion compacted)",
            GapCause::Stale => "stale resourceVersion (empty watches)",
        }
    }
}

/// What one gap covers.
#[derive(Debug, Clone)]
pub struct Gap {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub cause: GapCause,
    /// The position that could not be resumed from.
    pub lost_rv: Option<String>,
    /// The resourceVersion of the relist.
    pub list_rv: String,
}

fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// The synthetic core/v1-shaped Event for `gap` on `spec`.
pub fn record(spec: &WatchSpec, gap: &Gap) -> RawEvent {
    let stream = spec.to_string();
    let mut h = Sha256::new();
    h.update(stream.as_bytes());
    h.update([0]);
    h.update(gap.list_rv.as_bytes());
    let hex: String = h.finalize()[..12].iter().map(|b| format!("{b:02x}")).collect();
    let namespace = spec.namespace.clone().unwrap_or_default();
    let message = format!(
        "event-collector: events of the watch on {stream} between {} and {} may be missing: the watch could not resume from resourceVersion {} ({}); it relisted at resourceVersion {} and exported every event still present that was not exported before. Events created and deleted within that window could not be seen.",
        ts(gap.from),
        ts(gap.to),
        gap.lost_rv.as_deref().unwrap_or("(none)"),
        gap.cause.as_str(),
        gap.list_rv,
    );
    let annotations = [
        ("event-collector.io/gap-from", ts(gap.from)),
        ("event-collector.io/gap-to", ts(gap.to)),
        ("event-collector.io/gap-stream", stream.clone()),
        ("event-collector.io/gap-cause", gap.cause.as_str().to_string()),
        (
            "event-collector.io/gap-resume-rv",
            gap.lost_rv.clone().unwrap_or_default(),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let mut raw = RawEvent {
        api_version: Some("v1".into()),
        kind: Some("Event".into()),
        reason: Some(GAP_REASON.into()),
        type_: Some("Warning".into()),
        message: Some(message),
        count: Some(1),
        first_timestamp: Some(ts(gap.from)),
        last_timestamp: Some(ts(gap.to)),
        involved_object: Some(RawObjectRef {
            kind: Some("EventCollectorWatch".into()),
            namespace: spec.namespace.clone(),
            name: Some(stream),
            ..Default::default()
        }),
        source: Some(RawSource {
            component: Some("event-collector".into()),
            host: None,
        }),
        reporting_component: Some("event-collector".into()),
        ..Default::default()
    };
    raw.metadata.name = Some(format!("event-collector-gap.{hex}"));
    raw.metadata.namespace = Some(namespace);
    raw.metadata.uid = Some(format!("event-collector-gap-{hex}"));
    raw.metadata.resource_version = Some(gap.list_rv.clone());
    raw.metadata.annotations = Some(annotations);
    raw
}
