//! Normalization of real objects captured from the kube-apiserver
//! (runtime/tests/fixtures, made by capture.sh there): both views of one
//! object give the same event, and each field lands where the schema says.

use std::path::PathBuf;
use std::sync::Arc;

use event_collector::event::{Api, Event, NormalizeOptions, RawEvent, WatchType, normalize};

fn fixture(name: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn opts() -> NormalizeOptions {
    NormalizeOptions {
        cluster: Arc::from("fixture"),
        include_raw: false,
    }
}

fn load(name: &str) -> Event {
    let text = fixture(name);
    let raw: RawEvent = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
    let api = Api::from_api_version(raw.api_version.as_deref().unwrap_or("")).expect("apiVersion");
    normalize(api, raw, WatchType::Added, None, &opts()).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// Both views, normalized; asserts they agree on everything but `api`.
fn both(stem: &str) -> Event {
    let core = load(&format!("{stem}_core-view.json"));
    let v1 = load(&format!("{stem}_events-v1-view.json"));
    assert_eq!(core.api, Api::CoreV1);
    assert_eq!(v1.api, Api::EventsV1);
    let mut v1_as_core = v1.clone();
    v1_as_core.api = Api::CoreV1;
    assert_eq!(core, v1_as_core, "{stem}: the two views normalize differently");
    core
}

#[test]
fn core_created_legacy_recorder() {
    let e = both("core-created");
    assert_eq!(e.type_.as_deref(), Some("Warning"));
    assert_eq!(e.count, 3);
    assert_eq!(e.object.kind.as_deref(), Some("Pod"));
    assert!(e.object.uid.is_some() && e.object.field_path.is_some() && e.object.api_version.is_some());
    // reportingComponent is "" on the server: the source fallback applies.
    assert!(e.reporting_controller.is_some(), "source.component fallback");
    assert!(e.reporting_instance.is_some(), "source.host fallback");
    // lastTimestamp wins (no series); first_timestamp is firstTimestamp.
    assert_eq!(e.last_timestamp.as_deref(), Some(e.timestamp.as_str()));
    assert!(e.first_timestamp.as_deref() < Some(e.timestamp.as_str()));
}

#[test]
fn core_minimal_has_nulls_not_errors() {
    let e = both("core-minimal");
    assert_eq!(e.type_, None);
    assert_eq!(e.reason, None);
    assert_eq!(e.message, None);
    assert_eq!(e.count, 1);
    assert_eq!(e.reporting_controller, None);
    assert_eq!(e.object.namespace.as_deref(), Some("demo"));
    assert_eq!(e.object.kind, None);
    // No times at all but creationTimestamp: that is the timestamp.
    assert!(e.timestamp.ends_with('Z'));
    assert_eq!(e.first_timestamp.as_deref(), Some(e.timestamp.as_str()));
    assert_eq!(e.last_timestamp, None);
}

#[test]
fn core_series_created_like_newer_clients() {
    let e = both("core-series-created");
    assert_eq!(e.count, 2, "series.count");
    assert_eq!(
        e.timestamp, "2026-11-21T22:04:10.987654Z",
        "series.lastObservedTime, microseconds kept"
    );
    assert_eq!(
        e.first_timestamp.as_deref(),
        Some("2026-11-21T21:59:58.000001Z"),
        "eventTime"
    );
    assert_eq!(e.reporting_controller.as_deref(), Some("example.com/sync-controller"));
    assert_eq!(e.action.as_deref(), Some("Reconcile"));
}

#[test]
fn core_mixed_series_without_last_observed_time() {
    let e = both("core-mixed");
    // series {count: 1, lastObservedTime: null} beside a legacy count: series wins for the count,
    // and the timestamp falls through to lastTimestamp.
    assert!(e.count >= 1);
    assert!(e.timestamp.ends_with('Z'));
    assert!(e.last_timestamp.is_some());
}

#[test]
fn events_v1_created_maps_regarding_related_note() {
    let e = both("events-v1-created");
    assert!(e.message.is_some());
    assert_eq!(e.message, e.note);
    assert!(e.related.is_some(), "related kept");
    assert!(e.reporting_controller.is_some() && e.reporting_instance.is_some());
    assert!(
        e.timestamp.contains('.'),
        "MicroTime keeps sub-seconds: {}",
        e.timestamp
    );
}

#[test]
fn events_v1_about_a_node_has_no_object_namespace() {
    let e = both("events-v1-node");
    assert_eq!(e.object.kind.as_deref(), Some("Node"));
    assert_eq!(e.object.namespace, None);
    assert_eq!(e.reason.as_deref(), Some("NodeNotReady"));
    assert_eq!(e.reporting_controller.as_deref(), Some("node-controller"));
    assert_eq!(e.timestamp, "2026-11-21T22:01:02.000300Z");
}

#[test]
fn list_items_normalize_without_kind_or_api_version() {
    for (file, api) in [("list-core.json", Api::CoreV1), ("list-events-v1.json", Api::EventsV1)] {
        let list: serde_json::Value = serde_json::from_str(&fixture(file)).unwrap();
        let items = list["items"].as_array().expect("items");
        assert!(!items.is_empty());
        for item in items {
            assert!(item.get("kind").is_none(), "list items carry no kind");
            let raw: RawEvent = serde_json::from_value(item.clone()).unwrap();
            let e = normalize(api, raw, WatchType::Added, None, &opts()).unwrap();
            assert!(!e.uid.is_empty() && !e.resource_version.is_empty());
        }
    }
}

#[test]
fn watch_streams_decode_and_carry_repeats() {
    for (file, api) in [
        ("watch-core.jsonl", Api::CoreV1),
        ("watch-events-v1.jsonl", Api::EventsV1),
    ] {
        let mut counts = Vec::new();
        for line in fixture(file).lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            let raw: RawEvent = serde_json::from_value(v["object"].clone()).unwrap();
            let e = normalize(api, raw, WatchType::Added, None, &opts()).unwrap();
            counts.push((v["type"].as_str().unwrap().to_string(), e.name.clone(), e.count));
        }
        // Each object: ADDED with count 1, MODIFIED with count 2 (core count or series), DELETED.
        let modified: Vec<_> = counts.iter().filter(|(t, _, _)| t == "MODIFIED").collect();
        assert_eq!(modified.len(), 2, "{file}: {counts:?}");
        assert!(modified.iter().all(|(_, _, c)| *c == 2), "{file}: {counts:?}");
        assert!(counts.iter().filter(|(t, _, _)| t == "ADDED").all(|(_, _, c)| *c == 1));
    }
}
