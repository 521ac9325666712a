//! Pipeline tests with an in-process fake exporter.

use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};

use async_trait::async_trait;
use event_collector_exporters::{Batch, ExportError, Exporter};
use serde_json::json;

use super::*;
use crate::config::Config;
use crate::event::{Api, RawEvent, WatchType};
use crate::setup;

/// Records what it receives; fails the first `fail` calls.
#[derive(Default)]
struct Fake {
    name: String,
    got: Mutex<Vec<serde_json::Value>>,
    fail: AtomicU32,
    calls: AtomicU32,
}

#[async_trait]
impl Exporter for Fake {
    fn name(&self) -> &str {
        &self.name
    }
    async fn export(&self, batch: &Batch) -> Result<(), ExportError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        if self
            .fail
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(ExportError::transient("io", "injected failure"));
        }
        let mut got = self.got.lock().unwrap();
        for r in batch {
            got.push(serde_json::from_slice(&r.json).unwrap());
        }
        Ok(())
    }
}

fn fake(name: &str, fail: u32) -> Arc<Fake> {
    Arc::new(Fake {
        name: name.into(),
        fail: AtomicU32::new(fail),
        ..Default::default()
    })
}

const CONFIG: &str = r#"
[[exporters]]
name = "warn"
type = "stdout"
batch_timeout = "5ms"
retry_initial_backoff = "5ms"
retry_max_backoff = "20ms"

[[exporters]]
name = "all"
type = "stdout"
batch_timeout = "5ms"
retry_initial_backoff = "5ms"

[[routes]]
name = "warnings"
exporters = ["warn", "all"]
[routes.match]
type = "Warning"

[[routes]]
name = "kube-system-drop"
exporters = []
[routes.match]
namespace = "kube-system"

[[routes]]
name = "normal"
exporters = ["all"]
[routes.match]
type = "Normal"
"#;

fn item(uid: &str, rv: &str, ty: &str, ns: &str) -> SourceItem {
    let raw: RawEvent = serde_json::from_value(json!({
        "metadata": {"uid": uid, "resourceVersion": rv, "name": uid, "namespace": ns},
        "type": ty, "reason": "Test", "count": 1,
        "lastTimestamp": "2024-01-01T00:00:00Z"
    }))
    .unwrap();
    SourceItem::Event(Box::new(SourceEvent {
        api: Api::CoreV1,
        watch_type: WatchType::Added,
        raw,
        prev_count: None,
        stream: 0,
        initial: false,
    }))
}

fn setup_with(fakes: &[Arc<Fake>]) -> Setup {
    let config = Config::parse(CONFIG, Path::new("t.toml")).unwrap();
    let mut s = setup::pipeline_setup(&config, "c1", Duration::from_secs(2), None).unwrap();
    for (slot, f) in s.exporters.iter_mut().zip(fakes) {
        slot.exporter = f.clone();
    }
    s
}

async fn run_items(items: Vec<SourceItem>, fakes: &[Arc<Fake>]) -> (Summary, Checkpoint) {
    let (tx, rx) = watch::channel(Checkpoint::default());
    let summary = run(
        futures::stream::iter(items),
        setup_with(fakes),
        Arc::new(Metrics::new()),
        CancellationToken::new(),
        tx,
    )
    .await;
    let last = rx.borrow().clone();
    (summary, last)
}

fn uids(f: &Fake) -> Vec<String> {
    f.got
        .lock()
        .unwrap()
        .iter()
        .map(|v| v["uid"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn routes_to_the_right_exporters_once_each() {
    let (warn, all) = (fake("warn", 0), fake("all", 0));
    let items = vec![
        item("w1", "1", "Warning", "a"),
        item("n1", "2", "Normal", "a"),
        item("k1", "3", "Normal", "kube-system"),
        item("x1", "4", "Other", "a"),
        item("w2", "5", "Warning", "kube-system"),
    ];
    let (summary, cp) = run_items(items, &[warn.clone(), all.clone()]).await;
    assert_eq!(uids(&warn), vec!["w1", "w2"]);
    // n1 via "normal"; k1 was taken by the drop route before "normal"; x1 unrouted.
    assert_eq!(uids(&all), vec!["w1", "n1", "w2"]);
    assert_eq!(summary.routed, 3);
    assert_eq!(summary.unrouted, 1);
    assert_eq!(summary.unacknowledged, 0);
    assert_eq!(cp.streams, vec![Some("5".to_string())]);
    assert_eq!(summary.checkpoint, cp);
    let first = &warn.got.lock().unwrap()[0];
    assert_eq!(first["cluster"], "c1");
    assert_eq!(first["schema_version"], 1);
}

#[tokio::test]
async fn a_failing_exporter_is_retried_and_nothing_is_lost_or_doubled() {
    let (warn, all) = (fake("warn", 3), fake("all", 0));
    let items: Vec<SourceItem> = (0..50)
        .map(|i| item(&format!("w{i}"), &format!("{i}"), "Warning", "a"))
        .collect();
    let (summary, cp) = run_items(items, &[warn.clone(), all.clone()]).await;
    assert!(warn.calls.load(Ordering::SeqCst) >= 4, "three failures, then success");
    let expected: Vec<String> = (0..50).map(|i| format!("w{i}")).collect();
    assert_eq!(uids(&warn), expected);
    assert_eq!(uids(&all), expected);
    assert_eq!(summary.unacknowledged, 0);
    assert_eq!(cp.streams, vec![Some("49".to_string())]);
}

#[tokio::test]
async fn checkpoint_waits_for_the_slowest_exporter() {
    // "warn" fails for ever: events routed to it never count as acknowledged.
    let (warn, all) = (fake("warn", u32::MAX), fake("all", 0));
    let items = vec![
        item("n1", "1", "Normal", "a"),
        item("w1", "2", "Warning", "a"),
        item("n2", "3", "Normal", "a"),
    ];
    let (tx, rx) = watch::channel(Checkpoint::default());
    let shutdown = CancellationToken::new();
    let stop = shutdown.clone();
    let handle = tokio::spawn(run(
        futures::stream::iter(items).chain(futures::stream::pending()),
        setup_with(&[warn.clone(), all.clone()]),
        Arc::new(Metrics::new()),
        shutdown,
        tx,
    ));
    // The healthy exporter gets everything while the other one is down.
    for _ in 0..200 {
        if uids(&all).len() == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(uids(&all), vec!["n1", "w1", "n2"]);
    assert_eq!(rx.borrow().streams, vec![Some("1".to_string())], "stops before w1");
    stop.cancel();
    let summary = handle.await.unwrap();
    assert_eq!(summary.checkpoint.streams, vec![Some("1".to_string())]);
    assert_eq!(summary.unacknowledged, 2);
    assert!(uids(&warn).is_empty());
}

#[tokio::test]
async fn normalize_failures_are_counted_and_skipped() {
    let (warn, all) = (fake("warn", 0), fake("all", 0));
    let bad: RawEvent =
        serde_json::from_value(json!({"metadata": {"name": "no-uid", "resourceVersion": "7"}})).unwrap();
    let items = vec![
        SourceItem::Event(Box::new(SourceEvent {
            api: Api::EventsV1,
            watch_type: WatchType::Added,
            raw: bad,
            prev_count: None,
            stream: 0,
            initial: false,
        })),
        item("n1", "8", "Normal", "a"),
    ];
    let (summary, cp) = run_items(items, &[warn, all.clone()]).await;
    assert_eq!(summary.normalize_failed, 1);
    assert_eq!(uids(&all), vec!["n1"]);
    assert_eq!(cp.streams, vec![Some("8".to_string())]);
}

#[tokio::test]
async fn startup_max_age_drops_only_old_events_from_the_first_list() {
    let (warn, all) = (fake("warn", 0), fake("all", 0));
    let mut s = setup_with(&[warn, all.clone()]);
    s.startup = StartupPolicy::MaxAge;
    s.startup_max_age = Duration::from_secs(600);
    let mk = |uid: &str, ts: String, initial: bool| {
        let raw: RawEvent = serde_json::from_value(json!({
            "metadata": {"uid": uid, "resourceVersion": uid, "name": uid, "namespace": "a"},
            "type": "Normal", "lastTimestamp": ts
        }))
        .unwrap();
        SourceItem::Event(Box::new(SourceEvent {
            api: Api::CoreV1,
            watch_type: WatchType::Added,
            raw,
            prev_count: None,
            stream: 0,
            initial,
        }))
    };
    let old = (Utc::now() - chrono::Duration::hours(2)).to_rfc3339();
    let new = Utc::now().to_rfc3339();
    let items = vec![
        mk("old-listed", old.clone(), true),
        mk("new-listed", new.clone(), true),
        SourceItem::Listed { stream: 0 },
        mk("old-watched", old, false),
    ];
    let (tx, _rx) = watch::channel(Checkpoint::default());
    let summary = run(
        futures::stream::iter(items),
        s,
        Arc::new(Metrics::new()),
        CancellationToken::new(),
        tx,
    )
    .await;
    assert_eq!(summary.startup_dropped, 1);
    assert_eq!(uids(&all), vec!["new-listed", "old-watched"]);
}

/// First call: records 0 and 2 delivered, record 1 refused for good, the rest
/// failed transiently. Later calls succeed.
struct Partial {
    inner: Fake,
    first: AtomicU32,
}

#[async_trait]
impl Exporter for Partial {
    fn name(&self) -> &str {
        &self.inner.name
    }
    async fn export(&self, batch: &Batch) -> Result<(), ExportError> {
        self.inner.calls.fetch_add(1, Ordering::SeqCst);
        if self.first.swap(0, Ordering::SeqCst) == 1 {
            let mut got = self.inner.got.lock().unwrap();
            for i in [0, 2] {
                got.push(serde_json::from_slice(&batch[i].json).unwrap());
            }
            return Err(ExportError::transient("bulk_partial", "2 of 5 items failed")
                .with_delivered(vec![0, 2])
                .with_rejected(vec![(1, "mapper_parsing_exception: failed to parse [count]".into())]));
        }
        self.inner.export(batch).await
    }
}

#[tokio::test]
async fn partial_delivery_resends_only_the_rest_and_dead_letters_the_refused() {
    let config = r#"
[[exporters]]
name = "es"
type = "stdout"
batch_max_events = 5
batch_timeout = "50ms"
retry_initial_backoff = "5ms"
dead_letter = "dlq"

[[exporters]]
name = "dlq"
type = "stdout"

[[routes]]
name = "all"
default = true
exporters = ["es"]
"#;
    let cfg = Config::parse(config, Path::new("t.toml")).unwrap();
    let mut s = setup::pipeline_setup(&cfg, "c1", Duration::from_secs(2), None).unwrap();
    let es = Arc::new(Partial {
        inner: Fake {
            name: "es".into(),
            ..Default::default()
        },
        first: AtomicU32::new(1),
    });
    let dlq = fake("dlq", 1);
    s.exporters[0].exporter = es.clone();
    s.exporters[1].exporter = dlq.clone();
    let items: Vec<SourceItem> = (0..5)
        .map(|i| item(&format!("e{i}"), &format!("{i}"), "Normal", "a"))
        .collect();
    let (tx, _rx) = watch::channel(Checkpoint::default());
    let summary = run(
        futures::stream::iter(items),
        s,
        Arc::new(Metrics::new()),
        CancellationToken::new(),
        tx,
    )
    .await;

    // Delivered ones once, the transient ones resent once, the refused one never resent.
    // (How many calls that takes depends on how the five events were batched.)
    assert_eq!(uids(&es.inner), vec!["e0", "e2", "e3", "e4"]);
    // The dead-letter exporter failed once (transient) and then got the refused record, wrapped.
    let dl = dlq.got.lock().unwrap().clone();
    assert_eq!(dl.len(), 1);
    assert_eq!(dl[0]["event"]["uid"], "e1");
    assert_eq!(dl[0]["dead_letter"]["exporter"], "es");
    assert_eq!(dl[0]["dead_letter"]["reason"], "bulk_partial");
    assert_eq!(
        dl[0]["dead_letter"]["error"],
        "mapper_parsing_exception: failed to parse [count]"
    );
    assert_eq!(summary.unacknowledged, 0);
    assert_eq!(summary.checkpoint.streams, vec![Some("4".to_string())]);
}

#[tokio::test]
async fn permanent_failure_without_dead_letter_is_counted_and_acknowledged() {
    let (warn, all) = (fake("warn", 0), fake("all", 0));
    // Replace "warn" with an exporter that refuses everything permanently.
    struct Refuse;
    #[async_trait]
    impl Exporter for Refuse {
        fn name(&self) -> &str {
            "warn"
        }
        async fn export(&self, _: &Batch) -> Result<(), ExportError> {
            Err(ExportError::permanent("message_too_large", "too large"))
        }
    }
    let mut s = setup_with(&[warn, all.clone()]);
    s.exporters[0].exporter = Arc::new(Refuse);
    let metrics = Arc::new(Metrics::new());
    let (tx, _rx) = watch::channel(Checkpoint::default());
    let items = vec![item("w1", "1", "Warning", "a"), item("w2", "2", "Warning", "a")];
    let summary = run(
        futures::stream::iter(items),
        s,
        metrics.clone(),
        CancellationToken::new(),
        tx,
    )
    .await;
    assert_eq!(uids(&all), vec!["w1", "w2"]);
    assert_eq!(summary.unacknowledged, 0, "refused events do not block the checkpoint");
    let text = metrics.encode();
    assert!(
        text.contains(r#"event_collector_exporter_dropped_total{exporter="warn",reason="message_too_large"} 2"#),
        "{text}"
    );
}
