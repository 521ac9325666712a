//! `normalize`: a raw Event from either API → the one [`Event`] schema.
//!
//! Owns the field mapping between core/v1 and events.k8s.io/v1, the timestamp
//! rule (`series.lastObservedTime` > `lastTimestamp` > `eventTime` >
//! `firstTimestamp` > `metadata.creationTimestamp`), the count rule, and the
//! reporter fallbacks. It consumes the raw object, so strings move instead of
//! being copied.

use std::sync::Arc;

use chrono::{DateTime, SecondsFormat, Utc};

use super::raw::{Api, RawEvent, RawObjectRef};
use super::{Event, ObjectRef, SCHEMA_VERSION, WatchType};

/// Settings that are the same for every event.
#[derive(Debug, Clone)]
pub struct NormalizeOptions {
    pub cluster: Arc<str>,
    pub include_raw: bool,
}

/// Why an object could not become an event. Names the object.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum NormalizeError {
    #[error("event {event} from {api} has no metadata.{field}")]
    MissingField {
        api: Api,
        event: String,
        field: &'static str,
    },
}

/// How many times the event has occurred, by the count rule: the series
/// count, else the core `count` (v1 `deprecatedCount`), else 1.
pub fn occurrence_count(raw: &RawEvent) -> u64 {
    let series = raw.series.as_ref().and_then(|s| s.count);
    let legacy = raw.count.or(raw.deprecated_count);
    series.or(legacy).map(|c| c.max(1) as u64).unwrap_or(1)
}

/// Whether `s` is a valid UTC time in the form the API server writes,
/// `YYYY-MM-DDTHH:MM:SS[.1-9 digits]Z`: such a value is kept as it is
/// without a full parse (an event carries four or five of them). Anything
/// else goes through chrono's RFC 3339 parser.
fn canonical_utc(s: &str) -> bool {
    let b = s.as_bytes();
    if !(20..=30).contains(&b.len()) || b[b.len() - 1] != b'Z' {
        return false;
    }
    let num = |from: usize, to: usize| {
        b[from..to].iter().try_fold(0u32, |acc, c| {
            c.is_ascii_digit().then(|| acc * 10 + u32::from(c - b'0'))
        })
    };
    let seps = b[4] == b'-' && b[7] == b'-' && b[10] == b'T' && b[13] == b':' && b[16] == b':';
    let fraction = &b[19..b.len() - 1];
    let fraction_ok = fraction.is_empty()
        || (fraction[0] == b'.' && (2..=10).contains(&fraction.len()) && fraction[1..].iter().all(u8::is_ascii_digit));
    let (Some(y), Some(mo), Some(d), Some(h), Some(mi), Some(s)) =
        (num(0, 4), num(5, 7), num(8, 10), num(11, 13), num(14, 16), num(17, 19))
    else {
        return false;
    };
    seps && fraction_ok && h < 24 && mi < 60 && s < 60 && chrono::NaiveDate::from_ymd_opt(y as i32, mo, d).is_some()
}

/// Parses an RFC 3339 time and prints it back in UTC with its sub-seconds.
/// A value that does not parse is treated as absent.
fn rfc3339(s: Option<String>) -> Option<String> {
    let s = s?;
    if s.is_empty() {
        return None;
    }
    if canonical_utc(&s) {
        return Some(s);
    }
    match DateTime::parse_from_rfc3339(&s) {
        Ok(t) => {
            // The server's own form is already canonical: keep it, no allocation.
            if s.ends_with('Z') {
                Some(s)
            } else {
                Some(t.with_timezone(&Utc).to_rfc3339_opts(SecondsFormat::AutoSi, true))
            }
        }
        Err(_) => None,
    }
}

fn object_ref(r: RawObjectRef) -> ObjectRef {
    ObjectRef {
        kind: r.kind,
        namespace: r.namespace,
        name: r.name,
        uid: r.uid,
        api_version: r.api_version,
        field_path: r.field_path,
        resource_version: r.resource_version,
    }
}

fn non_empty(s: Option<String>) -> Option<String> {
    s.filter(|s| !s.is_empty())
}

/// Turns a raw object from `api` into an [`Event`]. `prev_count` is the count
/// this uid had when last exported (None if never seen), which gives
/// `count_delta`.
pub fn normalize(
    api: Api,
    mut raw: RawEvent,
    watch_type: WatchType,
    prev_count: Option<u64>,
    opts: &NormalizeOptions,
) -> Result<Event, NormalizeError> {
    let missing = |raw: &RawEvent, field| NormalizeError::MissingField {
        api,
        event: raw.describe(),
        field,
    };
    let count = occurrence_count(&raw);
    let raw_value = if opts.include_raw {
        serde_json::to_value(&raw).ok()
    } else {
        None
    };
    let uid = raw.metadata.uid.take().ok_or_else(|| missing(&raw, "uid"))?;
    let resource_version = match raw.metadata.resource_version.take() {
        Some(rv) => rv,
        None => {
            raw.metadata.uid = Some(uid);
            return Err(missing(&raw, "resourceVersion"));
        }
    };
    let name = raw.metadata.name.take().unwrap_or_default();
    let namespace = raw.metadata.namespace.take().unwrap_or_default();
    let (labels, annotations) = raw.take_labels();
    let created = raw.metadata.creation_timestamp.take();

    let series_last = rfc3339(raw.series.take().and_then(|s| s.last_observed_time));
    let last_ts = rfc3339(raw.last_timestamp.take().or(raw.deprecated_last_timestamp.take()));
    let event_time = rfc3339(raw.event_time.take());
    let first_ts = rfc3339(raw.first_timestamp.take().or(raw.deprecated_first_timestamp.take()));
    let created = rfc3339(created);

    let timestamp = series_last
        .as_ref()
        .or(last_ts.as_ref())
        .or(event_time.as_ref())
        .or(first_ts.as_ref())
        .or(created.as_ref())
        .cloned()
        .unwrap_or_else(|| Utc::now().to_rfc3339_opts(SecondsFormat::AutoSi, true));
    let first_timestamp = first_ts.or_else(|| event_time.clone()).or(created);
    let last_timestamp = series_last.or(last_ts).or(event_time);

    let text = non_empty(raw.message.take()).or(non_empty(raw.note.take()));
    let source = raw.source.take().or(raw.deprecated_source.take());
    let (src_component, src_host) = match source {
        Some(s) => (s.component, s.host),
        None => (None, None),
    };
    let reporting_controller = non_empty(raw.reporting_controller.take())
        .or(non_empty(raw.reporting_component.take()))
        .or(non_empty(src_component));
    let reporting_instance = non_empty(raw.reporting_instance.take()).or(non_empty(src_host));
    let object = raw
        .regarding
        .take()
        .or(raw.involved_object.take())
        .map(object_ref)
        .unwrap_or_default();
    let count_delta = match prev_count {
        Some(prev) => count.saturating_sub(prev),
        None => count,
    };

    Ok(Event {
        schema_version: SCHEMA_VERSION,
        cluster: opts.cluster.clone(),
        api,
        watch_type,
        uid,
        resource_version,
        name,
        namespace,
        type_: non_empty(raw.type_.take()),
        reason: non_empty(raw.reason.take()),
        note: text.clone(),
        message: text,
        action: non_empty(raw.action.take()),
        object,
        related: raw.related.take().map(object_ref),
        reporting_controller,
        reporting_instance,
        count,
        count_delta,
        first_timestamp,
        last_timestamp,
        timestamp,
        labels,
        annotations,
        extra: Default::default(),
        raw: raw_value,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn opts() -> NormalizeOptions {
        NormalizeOptions {
            cluster: Arc::from("test"),
            include_raw: false,
        }
    }

    fn parse(v: serde_json::Value) -> RawEvent {
        serde_json::from_value(v).expect("raw event parses")
    }

    fn core_event() -> serde_json::Value {
        json!({
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"name": "web-1.17a", "namespace": "shop", "uid": "u-1",
                         "resourceVersion": "812", "creationTimestamp": "2024-05-01T10:00:00Z",
                         "labels": {"app": "web", "app.kubernetes.io/name": "web"}},
            "involvedObject": {"kind": "Pod", "namespace": "shop", "name": "web-1", "uid": "p-1",
                               "apiVersion": "v1", "resourceVersion": "77", "fieldPath": "spec.containers{web}"},
            "reason": "BackOff", "message": "Back-off restarting failed container",
            "source": {"component": "kubelet", "host": "node-a"},
            "firstTimestamp": "2024-05-01T10:00:00Z", "lastTimestamp": "2024-05-01T10:05:00Z",
            "count": 3, "type": "Warning", "eventTime": null,
            "reportingComponent": "", "reportingInstance": ""
        })
    }

    #[test]
    fn core_event_maps_every_field() {
        let e = normalize(Api::CoreV1, parse(core_event()), WatchType::Added, None, &opts()).unwrap();
        assert_eq!(e.uid, "u-1");
        assert_eq!(e.resource_version, "812");
        assert_eq!(e.name, "web-1.17a");
        assert_eq!(e.namespace, "shop");
        assert_eq!(e.type_.as_deref(), Some("Warning"));
        assert_eq!(e.reason.as_deref(), Some("BackOff"));
        assert_eq!(e.message.as_deref(), Some("Back-off restarting failed container"));
        assert_eq!(e.note, e.message);
        assert_eq!(e.object.kind.as_deref(), Some("Pod"));
        assert_eq!(e.object.uid.as_deref(), Some("p-1"));
        assert_eq!(e.object.field_path.as_deref(), Some("spec.containers{web}"));
        // Empty reportingComponent falls back to source.component / source.host.
        assert_eq!(e.reporting_controller.as_deref(), Some("kubelet"));
        assert_eq!(e.reporting_instance.as_deref(), Some("node-a"));
        assert_eq!(e.count, 3);
        assert_eq!(e.count_delta, 3);
        assert_eq!(e.timestamp, "2024-05-01T10:05:00Z");
        assert_eq!(e.first_timestamp.as_deref(), Some("2024-05-01T10:00:00Z"));
        assert_eq!(e.labels.len(), 2);
        assert_eq!(&*e.cluster, "test");
        assert!(e.raw.is_none());
    }

    #[test]
    fn events_v1_maps_regarding_note_series() {
        let v = json!({
            "apiVersion": "events.k8s.io/v1", "kind": "Event",
            "metadata": {"name": "sched.1", "namespace": "batch", "uid": "u-2", "resourceVersion": "900",
                         "creationTimestamp": "2024-05-01T09:00:00Z"},
            "eventTime": "2024-05-01T09:00:00.123456Z",
            "series": {"count": 4, "lastObservedTime": "2024-05-01T09:30:00.654321Z"},
            "reportingController": "default-scheduler", "reportingInstance": "sched-0",
            "action": "Scheduling", "reason": "FailedScheduling", "note": "0/3 nodes are available",
            "type": "Warning",
            "regarding": {"kind": "Pod", "namespace": "batch", "name": "job-x", "uid": "p-2"},
            "related": {"kind": "Node", "name": "node-b"},
            "deprecatedCount": 2
        });
        let e = normalize(Api::EventsV1, parse(v), WatchType::Modified, Some(3), &opts()).unwrap();
        assert_eq!(e.message.as_deref(), Some("0/3 nodes are available"));
        assert_eq!(e.action.as_deref(), Some("Scheduling"));
        assert_eq!(e.reporting_controller.as_deref(), Some("default-scheduler"));
        assert_eq!(e.reporting_instance.as_deref(), Some("sched-0"));
        assert_eq!(e.object.name.as_deref(), Some("job-x"));
        assert_eq!(e.related.as_ref().unwrap().kind.as_deref(), Some("Node"));
        // series.count wins over deprecatedCount; delta is against the previous export.
        assert_eq!(e.count, 4);
        assert_eq!(e.count_delta, 1);
        // series.lastObservedTime wins, sub-seconds kept.
        assert_eq!(e.timestamp, "2024-05-01T09:30:00.654321Z");
        assert_eq!(e.first_timestamp.as_deref(), Some("2024-05-01T09:00:00.123456Z"));
        assert_eq!(e.watch_type, WatchType::Modified);
    }

    #[test]
    fn timestamp_rule_in_order() {
        let base = json!({"metadata": {"uid": "u", "resourceVersion": "1",
            "creationTimestamp": "2024-01-01T00:00:00Z"}});
        let with = |extra: serde_json::Value| {
            let mut v = base.clone();
            for (k, val) in extra.as_object().unwrap() {
                v[k] = val.clone();
            }
            normalize(Api::CoreV1, parse(v), WatchType::Added, None, &opts())
                .unwrap()
                .timestamp
        };
        assert_eq!(with(json!({})), "2024-01-01T00:00:00Z");
        assert_eq!(
            with(json!({"firstTimestamp": "2024-01-01T00:00:01Z"})),
            "2024-01-01T00:00:01Z"
        );
        assert_eq!(
            with(json!({"firstTimestamp": "2024-01-01T00:00:01Z", "eventTime": "2024-01-01T00:00:02.5Z"})),
            "2024-01-01T00:00:02.5Z"
        );
        assert_eq!(
            with(json!({"eventTime": "2024-01-01T00:00:02.5Z", "lastTimestamp": "2024-01-01T00:00:03Z"})),
            "2024-01-01T00:00:03Z"
        );
        assert_eq!(
            with(json!({"lastTimestamp": "2024-01-01T00:00:03Z",
                        "series": {"count": 2, "lastObservedTime": "2024-01-01T00:00:04.000001Z"}})),
            "2024-01-01T00:00:04.000001Z"
        );
        // v1's deprecated timestamps take the core ones' places.
        assert_eq!(
            with(json!({"deprecatedLastTimestamp": "2024-01-01T00:00:05Z", "eventTime": "2024-01-01T00:00:02Z"})),
            "2024-01-01T00:00:05Z"
        );
        // An offset is converted to UTC; garbage is skipped, not fatal.
        assert_eq!(
            with(json!({"lastTimestamp": "2024-01-01T02:00:03+02:00"})),
            "2024-01-01T00:00:03Z"
        );
        assert_eq!(
            with(json!({"lastTimestamp": "yesterday", "firstTimestamp": "2024-01-01T00:00:01Z"})),
            "2024-01-01T00:00:01Z"
        );
    }

    #[test]
    fn the_servers_own_time_form_is_kept_without_a_parse_and_agrees_with_chrono() {
        let cases = [
            "2024-01-01T00:00:00Z",
            "2024-02-29T23:59:59.123456Z",
            "2024-12-31T10:00:00.1Z",
            "2024-12-31T10:00:00.123456789Z",
            // Not taken by the fast path; chrono decides.
            "2023-02-29T00:00:00Z",
            "2024-04-31T00:00:00Z",
            "2024-01-01T24:00:00Z",
            "2024-01-01T00:60:00Z",
            "2016-12-31T23:59:60Z",
            "2024-01-01t00:00:00z",
            "2024-01-01 00:00:00Z",
            "2024-01-01T00:00:00.Z",
            "2024-01-01T00:00:00.1234567891Z",
            "2024-01-01T00:00:00+02:00",
            "2024-1-01T00:00:00Z",
            "２０２４-01-01T00:00:00Z",
            "yesterday",
        ];
        for c in cases {
            if canonical_utc(c) {
                assert!(
                    DateTime::parse_from_rfc3339(c).is_ok(),
                    "fast path took {c:?}, chrono does not"
                );
            }
            // Whatever path: kept as written when it is valid and in UTC with 'Z'.
            let out = rfc3339(Some(c.to_string()));
            let chrono_only = DateTime::parse_from_rfc3339(c).ok().map(|t| {
                if c.ends_with('Z') {
                    c.to_string()
                } else {
                    t.with_timezone(&Utc).to_rfc3339_opts(SecondsFormat::AutoSi, true)
                }
            });
            assert_eq!(out, chrono_only, "{c:?}");
        }
        assert!(canonical_utc("2024-02-29T23:59:59.123456Z"));
        assert!(!canonical_utc("2023-02-29T00:00:00Z"), "no such day");
    }

    #[test]
    fn an_unparsable_creation_timestamp_is_absent_not_fatal() {
        // It used to fail the whole object's decode (k8s-openapi parsed it as a date).
        let v = json!({"metadata": {"uid": "u", "resourceVersion": "1", "creationTimestamp": "not a time"},
            "lastTimestamp": "2024-01-01T00:00:03Z"});
        let e = normalize(Api::CoreV1, parse(v), WatchType::Added, None, &opts()).unwrap();
        assert_eq!(e.timestamp, "2024-01-01T00:00:03Z");
        assert_eq!(e.first_timestamp, None, "the bad creation time is not a fallback");
        let v = json!({"metadata": {"uid": "u", "resourceVersion": "1", "creationTimestamp": "not a time"}});
        let e = normalize(Api::CoreV1, parse(v), WatchType::Added, None, &opts()).unwrap();
        assert!(
            DateTime::parse_from_rfc3339(&e.timestamp).is_ok(),
            "now, as for no time at all"
        );
    }

    #[test]
    fn nulls_and_absent_fields() {
        let v = json!({"metadata": {"uid": "u", "resourceVersion": "5"},
            "involvedObject": null, "series": null, "count": null, "source": {},
            "message": null, "reason": "", "type": null});
        let e = normalize(Api::CoreV1, parse(v), WatchType::Added, None, &opts()).unwrap();
        assert_eq!(e.count, 1);
        assert_eq!(e.count_delta, 1);
        assert_eq!(e.reason, None);
        assert_eq!(e.object, ObjectRef::default());
        assert!(e.reporting_controller.is_none());
        assert!(!e.timestamp.is_empty());
        assert_eq!(e.namespace, "");
    }

    #[test]
    fn missing_uid_names_the_event() {
        let v = json!({"metadata": {"name": "x", "namespace": "ns", "resourceVersion": "5"}});
        let err = normalize(Api::EventsV1, parse(v), WatchType::Added, None, &opts()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "event ns/x (uid unknown) from events.k8s.io/v1 has no metadata.uid"
        );
        let v = json!({"metadata": {"name": "x", "namespace": "ns", "uid": "u-9"}});
        let err = normalize(Api::CoreV1, parse(v), WatchType::Added, None, &opts()).unwrap_err();
        assert!(err.to_string().contains("uid u-9"), "{err}");
        assert!(err.to_string().contains("resourceVersion"), "{err}");
    }

    #[test]
    fn repeat_without_new_occurrence_has_zero_delta() {
        let e = normalize(Api::CoreV1, parse(core_event()), WatchType::Modified, Some(3), &opts()).unwrap();
        assert_eq!(e.count_delta, 0);
    }

    #[test]
    fn include_raw_keeps_the_object() {
        let o = NormalizeOptions {
            include_raw: true,
            ..opts()
        };
        let mut v = core_event();
        let managed = json!([{"manager": "kubelet", "operation": "Update", "fieldsType": "FieldsV1",
                              "fieldsV1": {"f:count": {}, "f:reason": {}}}]);
        v["metadata"]["managedFields"] = managed.clone();
        let e = normalize(Api::CoreV1, parse(v), WatchType::Added, None, &o).unwrap();
        let raw = e.raw.unwrap();
        assert_eq!(raw["involvedObject"]["name"], "web-1");
        assert_eq!(raw["metadata"]["uid"], "u-1");
        // Members the collector does not read are kept too.
        assert_eq!(raw["metadata"]["managedFields"], managed);
    }

    #[test]
    fn output_round_trips_through_the_schema() {
        let e = normalize(Api::CoreV1, parse(core_event()), WatchType::Added, None, &opts()).unwrap();
        let s = serde_json::to_string(&e).unwrap();
        let back: Event = serde_json::from_str(&s).unwrap();
        assert_eq!(back, e);
        let v: serde_json::Value = serde_json::from_str(&s).unwrap();
        assert_eq!(v["type"], "Warning");
        assert_eq!(v["object"]["kind"], "Pod");
        assert!(v.get("extra").is_none());
    }
}
