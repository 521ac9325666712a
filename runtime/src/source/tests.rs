use std::sync::Arc;

use futures::StreamExt;
use serde_json::json;

use super::watch::Out;
use super::*;
use crate::config::SourceConfig;

/// Shorthands for what a watch machine yields.
#[allow(non_snake_case, non_upper_case_globals)]
mod WatchEvent {
    use super::*;
    pub const Init: Out = Out::Mark(Mark::ListStart);
    pub const InitDone: Out = Out::Listed;
    pub fn InitApply(raw: RawEvent) -> Out {
        Out::Event {
            deleted: false,
            raw: Box::new(raw),
            initial: true,
        }
    }
    /// A relist item (after 410): not part of the startup list.
    pub fn ReApply(raw: RawEvent) -> Out {
        Out::Event {
            deleted: false,
            raw: Box::new(raw),
            initial: false,
        }
    }
    pub fn Apply(raw: RawEvent) -> Out {
        ReApply(raw)
    }
    pub fn Delete(raw: RawEvent) -> Out {
        Out::Event {
            deleted: true,
            raw: Box::new(raw),
            initial: false,
        }
    }
}

fn raw(uid: &str, rv: &str, count: i64) -> RawEvent {
    serde_json::from_value(json!({
        "metadata": {"uid": uid, "resourceVersion": rv, "name": format!("ev-{uid}"), "namespace": "ns"},
        "count": count, "reason": "BackOff"
    }))
    .expect("raw event")
}

async fn run(cfg: SourceConfig, input: Vec<(usize, Out)>) -> Vec<SourceItem> {
    run_seen(cfg, input, None).await
}

async fn run_seen(cfg: SourceConfig, input: Vec<(usize, Out)>, seen: Option<SharedSeen>) -> Vec<SourceItem> {
    let apis = vec![Api::EventsV1, Api::CoreV1];
    classify(futures::stream::iter(input), apis, &cfg, seen, Arc::new(Metrics::new()))
        .collect()
        .await
}

fn events(items: &[SourceItem]) -> Vec<(String, WatchType, Option<u64>, bool)> {
    items
        .iter()
        .filter_map(|i| match i {
            SourceItem::Event(e) => Some((
                e.raw.metadata.resource_version.clone().unwrap_or_default(),
                e.watch_type,
                e.prev_count,
                e.initial,
            )),
            SourceItem::Listed { .. } | SourceItem::Mark { .. } => None,
        })
        .collect()
}

#[tokio::test]
async fn list_then_watch_repeats_and_relist() {
    let input = vec![
        (0, WatchEvent::Init),
        (0, WatchEvent::InitApply(raw("a", "1", 1))),
        (0, WatchEvent::InitDone),
        (0, WatchEvent::Apply(raw("b", "2", 1))),
        // A repeat: count went up.
        (0, WatchEvent::Apply(raw("a", "3", 2))),
        // A metadata-only update: same count, new resourceVersion.
        (0, WatchEvent::Apply(raw("a", "4", 2))),
        // A relist (after 410): everything comes again.
        (0, WatchEvent::Init),
        (0, WatchEvent::ReApply(raw("a", "4", 2))),
        (0, WatchEvent::ReApply(raw("b", "2", 1))),
        (0, WatchEvent::ReApply(raw("c", "5", 1))),
        (0, WatchEvent::InitDone),
        (0, WatchEvent::Delete(raw("c", "6", 1))),
    ];
    let items = run(SourceConfig::default(), input).await;
    assert_eq!(
        events(&items),
        vec![
            ("1".into(), WatchType::Added, None, true),
            ("2".into(), WatchType::Added, None, false),
            ("3".into(), WatchType::Modified, Some(1), false),
            // Relist: only the new one, and it is not part of the *startup* list.
            ("5".into(), WatchType::Added, None, false),
        ]
    );
    let listed = items
        .iter()
        .filter(|i| matches!(i, SourceItem::Listed { stream: 0 }))
        .count();
    assert_eq!(listed, 2);
}

#[tokio::test]
async fn both_apis_pass_each_object_once() {
    // The same object seen through both APIs (same uid and resourceVersion).
    let input = vec![
        (0, WatchEvent::Apply(raw("a", "1", 1))),
        (1, WatchEvent::Apply(raw("a", "1", 1))),
        (1, WatchEvent::Apply(raw("a", "2", 2))),
        (0, WatchEvent::Apply(raw("a", "2", 2))),
    ];
    let items = run(SourceConfig::default(), input).await;
    let ev = events(&items);
    assert_eq!(ev.len(), 2, "{ev:?}");
    assert_eq!(ev[1], ("2".into(), WatchType::Modified, Some(1), false));
}

#[tokio::test]
async fn deleted_and_unchanged_are_opt_in() {
    let input = || {
        vec![
            (0, WatchEvent::Apply(raw("a", "1", 1))),
            (0, WatchEvent::Apply(raw("a", "2", 1))),
            (0, WatchEvent::Delete(raw("a", "3", 1))),
        ]
    };
    assert_eq!(events(&run(SourceConfig::default(), input()).await).len(), 1);
    let cfg = SourceConfig {
        export_deleted: true,
        export_unchanged: true,
        ..Default::default()
    };
    let ev = events(&run(cfg, input()).await);
    assert_eq!(
        ev,
        vec![
            ("1".into(), WatchType::Added, None, false),
            ("2".into(), WatchType::Modified, Some(1), false),
            ("3".into(), WatchType::Deleted, Some(1), false),
        ]
    );
}

#[test]
fn specs_scope_server_side() {
    let cfg = SourceConfig {
        api: WatchApi::Both,
        exclude_namespaces: vec!["kube-system".into(), "kube-public".into()],
        field_selector: Some("type=Warning".into()),
        label_selector: Some("team=a".into()),
        ..Default::default()
    };
    let specs = watch_specs(&cfg);
    assert_eq!(specs.len(), 2);
    assert_eq!(specs[0].api, Api::EventsV1);
    assert_eq!(specs[1].api, Api::CoreV1);
    assert_eq!(
        specs[0].field_selector.as_deref(),
        Some("metadata.namespace!=kube-system,metadata.namespace!=kube-public,type=Warning")
    );
    assert_eq!(specs[0].namespace, None);
    assert_eq!(specs[0].label_selector.as_deref(), Some("team=a"));

    let cfg = SourceConfig {
        namespaces: vec!["a".into(), "b".into()],
        ..Default::default()
    };
    let specs = watch_specs(&cfg);
    assert_eq!(
        specs.iter().map(|s| s.namespace.as_deref()).collect::<Vec<_>>(),
        vec![Some("a"), Some("b")]
    );
    assert!(
        specs
            .iter()
            .all(|s| s.field_selector.is_none() && s.api == Api::EventsV1)
    );
}

#[tokio::test]
async fn acknowledged_pairs_from_a_previous_run_are_not_passed_on() {
    let seen = crate::state::seen::SeenSet::new(Duration::from_secs(3600), 100).shared();
    seen.lock().unwrap().insert("a", "1");
    let input = vec![
        (0, WatchEvent::Init),
        (0, WatchEvent::ReApply(raw("a", "1", 1))),
        (0, WatchEvent::ReApply(raw("b", "2", 1))),
        (0, WatchEvent::InitDone),
        // A new occurrence of the acknowledged event is new.
        (0, WatchEvent::Apply(raw("a", "3", 2))),
    ];
    let items = run_seen(SourceConfig::default(), input, Some(seen)).await;
    let ev = events(&items);
    assert_eq!(
        ev.iter().map(|e| e.0.as_str()).collect::<Vec<_>>(),
        vec!["2", "3"],
        "{ev:?}"
    );
    // Marks pass through to the pipeline.
    assert!(matches!(
        items[0],
        SourceItem::Mark {
            stream: 0,
            mark: Mark::ListStart
        }
    ));
}

/// The counts saved with the checkpoint make a resumed watch judge what it
/// re-delivers as the first run would have (a restart changes nothing).
#[tokio::test]
async fn a_restart_judges_counts_as_without_it() {
    let stream = vec![
        (1, WatchEvent::Apply(raw("a", "1", 1))),
        (1, WatchEvent::Apply(raw("a", "2", 3))),
        // After the checkpoint (not acknowledged when the collector was killed):
        (1, WatchEvent::Apply(raw("a", "3", 3))),
        (1, WatchEvent::Apply(raw("a", "4", 5))),
    ];
    let without = events(&run(SourceConfig::default(), stream.clone()).await);
    // The first run acknowledged up to resourceVersion 2 and saved the state.
    let seen = crate::state::seen::SeenSet::new(Duration::from_secs(3600), 100).shared();
    let mut tracker = crate::ack::AckTracker::with_seen(Some(seen.clone()));
    for (seq, (_, out)) in stream[..2].iter().enumerate() {
        let Out::Event { raw, .. } = out else { unreachable!() };
        tracker.register(seq as u64, crate::ack::Pending::event(1, raw));
    }
    let bytes = {
        let s = seen.lock().unwrap();
        (s.encode(100), s.encode_counts())
    };
    let mut loaded = crate::state::seen::SeenSet::new(Duration::from_secs(3600), 100);
    loaded.decode_into(&bytes.0);
    loaded.decode_counts_into(&bytes.1);
    // The restart resumes from resourceVersion 2: the watch re-delivers the rest.
    let after = events(&run_seen(SourceConfig::default(), stream[2..].to_vec(), Some(loaded.shared())).await);
    assert_eq!(after, without[2..].to_vec());
    assert_eq!(after, vec![("4".into(), WatchType::Modified, Some(3), false)]);
}
