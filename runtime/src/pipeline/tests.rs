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
    /// What `recover` reports the sink held (uid, rv), and the position it was asked from.
    held: Mutex<Vec<(String, String)>>,
    asked_from: Mutex<Option<Option<String>>>,
    /// Report a position (`n=<records received>`).
    positions: bool,
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
    fn position(&self) -> Option<String> {
        self.positions.then(|| format!("n={}", self.got.lock().unwrap().len()))
    }
    async fn recover(&self, from: Option<&str>) -> Result<event_collector_exporters::Delivered, ExportError> {
        *self.asked_from.lock().unwrap() = Some(from.map(str::to_string));
        let mut d = event_collector_exporters::Delivered::default();
        for (uid, rv) in self.held.lock().unwrap().iter() {
            d.insert(uid, rv);
        }
        Ok(d)
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

/// A core/v1 ADDED event from the watch (also used by `reconfigure/tests.rs`).
pub(super) fn item(uid: &str, rv: &str, ty: &str, ns: &str) -> SourceItem {
    let raw: RawEvent = serde_json::from_value(json!({
        "metadata": {"uid": uid, "resourceVersion": rv, "name": uid, "namespace": ns},
        "type": ty, "reason": "Test", "count": 1,
        "lastTimestamp": "2024-01-01T00:00:00Z"
    }))
    .unwrap();
    SourceItem::Event(Box::new(SourceEvent {
        api: Api::CoreV1,
        watch_type: WatchType::Added,
        raw: Box::new(raw),
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

/// After a hard kill: what a sink already holds is not sent to it again,
/// counts as acknowledged, and the other sinks still get it.
#[tokio::test]
async fn records_a_sink_already_holds_are_not_sent_to_it_again() {
    let (warn, all) = (fake("warn", 0), fake("all", 0));
    *all.held.lock().unwrap() = vec![
        ("w1".into(), "1".into()),
        ("n1".into(), "2".into()),
        ("old".into(), "0".into()),
    ];
    // A same uid at another resourceVersion is another occurrence: sent.
    warn.held.lock().unwrap().push(("w2".into(), "9".into()));
    let items = vec![
        item("w1", "1", "Warning", "a"),
        item("n1", "2", "Normal", "a"),
        item("n2", "3", "Normal", "a"),
        item("w2", "4", "Warning", "a"),
    ];
    let mut setup = setup_with(&[warn.clone(), all.clone()]);
    setup.recover_from.insert("all".into(), "n=7".into());
    let (tx, rx) = watch::channel(Checkpoint::default());
    let summary = run(
        futures::stream::iter(items),
        setup,
        Arc::new(Metrics::new()),
        CancellationToken::new(),
        tx,
    )
    .await;
    assert_eq!(uids(&warn), vec!["w1", "w2"]);
    assert_eq!(uids(&all), vec!["n2", "w2"]);
    assert_eq!(*all.asked_from.lock().unwrap(), Some(Some("n=7".to_string())));
    assert_eq!(*warn.asked_from.lock().unwrap(), Some(None));
    assert_eq!(summary.unacknowledged, 0);
    assert_eq!(rx.borrow().streams, vec![Some("4".to_string())]);
}

/// The checkpoint carries each sink's position from before the oldest
/// event it does not cover.
#[tokio::test]
async fn the_checkpoint_carries_sink_positions() {
    let all = Arc::new(Fake {
        name: "all".into(),
        positions: true,
        ..Default::default()
    });
    let warn = fake("warn", 0);
    let items: Vec<SourceItem> = (0..20)
        .map(|i| item(&format!("n{i}"), &format!("{i}"), "Normal", "a"))
        .collect();
    let (summary, cp) = run_items(items, &[warn, all.clone()]).await;
    assert_eq!(summary.unacknowledged, 0);
    // Sampled before some event was queued: at most what the sink got by the end.
    let n: usize = cp.sinks["all"].strip_prefix("n=").unwrap().parse().unwrap();
    assert!(n <= 20, "{:?}", cp.sinks);
    assert!(!cp.sinks.contains_key("warn"), "it cannot tell a position");
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
            raw: Box::new(bad),
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
            raw: Box::new(raw),
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

// ---- queues and overflow policies ----------------------------------------------------

/// Fails every call while `down`; when up, refuses (for good) any record whose uid is `refuse`.
struct Flaky {
    inner: Fake,
    down: std::sync::atomic::AtomicBool,
    refuse: Option<String>,
}

#[async_trait]
impl Exporter for Flaky {
    fn name(&self) -> &str {
        &self.inner.name
    }
    async fn export(&self, batch: &Batch) -> Result<(), ExportError> {
        self.inner.calls.fetch_add(1, Ordering::SeqCst);
        if self.down.load(Ordering::SeqCst) {
            return Err(ExportError::transient("io", "sink down"));
        }
        let bad = batch.iter().position(|r| Some(&r.fields.uid) == self.refuse.as_ref());
        let mut got = self.inner.got.lock().unwrap();
        let mut delivered = Vec::new();
        for (i, r) in batch.iter().enumerate() {
            if Some(i) != bad {
                got.push(serde_json::from_slice(&r.json).unwrap());
                delivered.push(i);
            }
        }
        match bad {
            None => Ok(()),
            Some(i) => Err(ExportError::transient("bulk_partial", "one refused")
                .with_delivered(delivered)
                .with_rejected(vec![(i, "mapper_parsing_exception".into())])),
        }
    }
}

fn flaky(name: &str, down: bool, refuse: Option<&str>) -> Arc<Flaky> {
    Arc::new(Flaky {
        inner: Fake {
            name: name.into(),
            ..Default::default()
        },
        down: std::sync::atomic::AtomicBool::new(down),
        refuse: refuse.map(str::to_string),
    })
}

/// Exporter "q" with the given queue keys, "all" (healthy, big queue), "dlq"; every event goes to "q" and "all".
fn queue_setup(q_keys: &str, q: Arc<dyn Exporter>, all: Arc<Fake>, dlq: Arc<Fake>) -> Setup {
    let config = format!(
        r#"
[[exporters]]
name = "q"
type = "stdout"
batch_max_events = 4
batch_timeout = "1ms"
retry_initial_backoff = "2ms"
retry_max_backoff = "10ms"
dead_letter = "dlq"
{q_keys}

[[exporters]]
name = "all"
type = "stdout"
batch_timeout = "1ms"

[[exporters]]
name = "dlq"
type = "stdout"
batch_timeout = "1ms"

[[routes]]
name = "both"
default = true
exporters = ["q", "all"]
"#
    );
    let cfg = Config::parse(&config, Path::new("/nonexistent/t.toml")).unwrap();
    let mut s = setup::pipeline_setup(&cfg, "c1", Duration::from_secs(2), None).unwrap();
    s.exporters[0].exporter = q;
    s.exporters[1].exporter = all;
    s.exporters[2].exporter = dlq;
    s
}

fn events(from: usize, n: usize) -> Vec<SourceItem> {
    (from..from + n)
        .map(|i| item(&format!("e{i}"), &format!("{i}"), "Normal", "a"))
        .collect()
}

fn names(from: usize, n: usize) -> Vec<String> {
    (from..from + n).map(|i| format!("e{i}")).collect()
}

async fn until(mut f: impl FnMut() -> bool) {
    for _ in 0..1000 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("condition not reached in 5 s");
}

fn metric(text: &str, prefix: &str) -> u64 {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

/// Runs 50 events with "q" down until "all" has them all, then brings "q" up.
async fn run_with_outage(q_keys: &str, refuse: Option<&str>) -> (Arc<Flaky>, Arc<Fake>, Summary, String) {
    let (q, all, dlq) = (flaky("q", true, refuse), fake("all", 0), fake("dlq", 0));
    let setup = queue_setup(q_keys, q.clone(), all.clone(), dlq.clone());
    let metrics = Arc::new(Metrics::new());
    let (tx, _rx) = watch::channel(Checkpoint::default());
    let q2 = q.clone();
    let all2 = all.clone();
    let recover = tokio::spawn(async move {
        until(|| uids(&all2).len() == 50).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        q2.down.store(false, Ordering::SeqCst);
    });
    let summary = run(
        futures::stream::iter(events(0, 50)),
        setup,
        metrics.clone(),
        CancellationToken::new(),
        tx,
    )
    .await;
    recover.await.unwrap();
    assert_eq!(uids(&all), names(0, 50), "the healthy exporter got everything");
    (q, dlq, summary, metrics.encode())
}

#[tokio::test]
async fn block_holds_every_exporter_back_until_the_slow_one_recovers() {
    let (q, all, dlq) = (flaky("q", true, None), fake("all", 0), fake("dlq", 0));
    let setup = queue_setup(
        "queue_max_events = 3\noverflow = \"block\"",
        q.clone(),
        all.clone(),
        dlq,
    );
    let (tx, rx) = watch::channel(Checkpoint::default());
    let handle = tokio::spawn(run(
        futures::stream::iter(events(0, 50)),
        setup,
        Arc::new(Metrics::new()),
        CancellationToken::new(),
        tx,
    ));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let stalled = uids(&all).len();
    assert!(stalled < 50, "backpressure reached the source: {stalled} delivered");
    assert!(rx.borrow().streams.is_empty(), "nothing acknowledged by q yet");
    q.down.store(false, Ordering::SeqCst);
    let summary = handle.await.unwrap();
    assert_eq!(uids(&q.inner), names(0, 50));
    assert_eq!(uids(&all), names(0, 50));
    assert_eq!(summary.unacknowledged, 0);
    assert_eq!(summary.checkpoint.streams, vec![Some("49".to_string())]);
}

#[tokio::test]
async fn drop_newest_keeps_the_oldest_counts_the_rest_and_moves_the_checkpoint() {
    let (q, _, summary, text) = run_with_outage("queue_max_events = 5\noverflow = \"drop_newest\"", None).await;
    let got = uids(&q.inner);
    let dropped = metric(
        &text,
        r#"event_collector_exporter_dropped_total{exporter="q",reason="queue_full"}"#,
    );
    assert!(dropped > 0, "{text}");
    assert_eq!(got.len() as u64 + dropped, 50);
    assert_eq!(got, names(0, got.len()), "the oldest events are kept, in order");
    assert!(
        got.len() >= 5 && got.len() <= 9,
        "one batch in flight plus the queue: {got:?}"
    );
    assert_eq!(summary.unacknowledged, 0, "dropped events count as acknowledged");
    assert_eq!(summary.checkpoint.streams, vec![Some("49".to_string())]);
}

#[tokio::test]
async fn drop_oldest_keeps_the_newest() {
    let (q, _, summary, text) = run_with_outage("queue_max_events = 5\noverflow = \"drop_oldest\"", None).await;
    let got = uids(&q.inner);
    let dropped = metric(
        &text,
        r#"event_collector_exporter_dropped_total{exporter="q",reason="queue_full"}"#,
    );
    assert!(dropped > 0);
    assert_eq!(got.len() as u64 + dropped, 50);
    assert_eq!(got[got.len() - 5..], names(45, 5), "the five newest are kept: {got:?}");
    let mut sorted = got.clone();
    sorted.sort_by_key(|u| u[1..].parse::<u32>().unwrap());
    assert_eq!(got, sorted, "in order");
    assert_eq!(summary.unacknowledged, 0);
    assert_eq!(summary.checkpoint.streams, vec![Some("49".to_string())]);
}

#[tokio::test]
async fn queue_max_bytes_bounds_the_queue_too() {
    // Each record is a few hundred bytes: 1 KiB holds about three.
    let (q, _, _, text) = run_with_outage(
        "queue_max_events = 1000\nqueue_max_bytes = \"1KiB\"\noverflow = \"drop_newest\"",
        None,
    )
    .await;
    let got = uids(&q.inner).len() as u64;
    assert!(got < 12, "bounded by bytes, not by the 1000 events: {got}");
    assert_eq!(
        got + metric(
            &text,
            r#"event_collector_exporter_dropped_total{exporter="q",reason="queue_full"}"#
        ),
        50
    );
    assert!(text.contains(r#"event_collector_exporter_queue_capacity_events{exporter="q"} 1000"#));
}

fn spill_keys(dir: &Path, extra: &str) -> String {
    format!(
        "queue_max_events = 5\noverflow = \"spill\"\nspill_dir = \"{}\"\n{extra}",
        dir.display()
    )
}

/// A pipeline running 50 events to "q" (spilling into `dir`) and "all", then waiting for more.
struct SpillRun {
    metrics: Arc<Metrics>,
    rx: watch::Receiver<Checkpoint>,
    shutdown: CancellationToken,
    handle: tokio::task::JoinHandle<Summary>,
}

fn start_spill_run(dir: &Path, q: Arc<Flaky>, all: Arc<Fake>, dlq: Arc<Fake>) -> SpillRun {
    let setup = queue_setup(&spill_keys(dir, ""), q, all, dlq);
    let metrics = Arc::new(Metrics::new());
    let (tx, rx) = watch::channel(Checkpoint::default());
    let shutdown = CancellationToken::new();
    let handle = tokio::spawn(run(
        futures::stream::iter(events(0, 50)).chain(futures::stream::pending()),
        setup,
        metrics.clone(),
        shutdown.clone(),
        tx,
    ));
    SpillRun {
        metrics,
        rx,
        shutdown,
        handle,
    }
}

#[tokio::test]
async fn spill_moves_the_checkpoint_while_the_sink_is_down_and_delivers_everything_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let (q, all, dlq) = (flaky("q", true, None), fake("all", 0), fake("dlq", 0));
    let SpillRun {
        metrics,
        rx,
        shutdown,
        handle,
    } = start_spill_run(dir.path(), q.clone(), all.clone(), dlq);
    // Everything is acknowledged (spilled) while q is still down.
    until(|| rx.borrow().streams == vec![Some("49".to_string())]).await;
    assert!(uids(&q.inner).is_empty());
    let text = metrics.encode();
    assert_eq!(
        metric(&text, r#"event_collector_exporter_queue_depth{exporter="q"}"#),
        50,
        "{text}"
    );
    assert!(metric(&text, r#"event_collector_exporter_spill_bytes{exporter="q"}"#) > 0);
    q.down.store(false, Ordering::SeqCst);
    until(|| uids(&q.inner).len() >= 50).await;
    // New events after the recovery come after the spilled ones.
    tokio::time::sleep(Duration::from_millis(50)).await;
    shutdown.cancel();
    let summary = handle.await.unwrap();
    assert_eq!(uids(&q.inner), names(0, 50), "in order, exactly once");
    assert_eq!(summary.unacknowledged, 0);
    let text = metrics.encode();
    assert_eq!(
        metric(&text, r#"event_collector_exporter_spill_bytes{exporter="q"}"#),
        0
    );
    assert_eq!(
        metric(&text, r#"event_collector_exporter_queue_depth{exporter="q"}"#),
        0
    );
    let segs = std::fs::read_dir(dir.path())
        .unwrap()
        .filter(|e| e.as_ref().unwrap().path().extension().is_some_and(|x| x == "seg"))
        .count();
    assert_eq!(segs, 0, "delivered segments are deleted");
}

#[tokio::test]
async fn a_batch_moved_to_the_spill_is_acknowledged_once_for_its_exporter_only() {
    // Every event goes to "q" (spilling, down) and "all" (down too). Should
    // the batch "q" holds while retrying, or its memory queue, be
    // acknowledged twice when they move to disk, the second acknowledgement
    // would count for "all" and move the checkpoint past events "all" never
    // received.
    let dir = tempfile::tempdir().unwrap();
    let (q, all, dlq) = (flaky("q", true, None), fake("all", u32::MAX), fake("dlq", 0));
    let SpillRun {
        metrics,
        rx,
        shutdown,
        handle,
    } = start_spill_run(dir.path(), q.clone(), all.clone(), dlq);
    until(|| {
        metric(
            &metrics.encode(),
            r#"event_collector_exporter_spill_bytes{exporter="q"}"#,
        ) > 0
    })
    .await;
    // Let "q" evacuate and keep retrying for a while.
    until(|| q.inner.calls.load(Ordering::SeqCst) >= 8).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        rx.borrow().streams.iter().all(Option::is_none),
        "nothing passes while \"all\" is down: {:?}",
        rx.borrow().streams
    );
    assert_eq!(
        metric(&metrics.encode(), "event_collector_checkpoint_pending"),
        50,
        "every event still waits for \"all\""
    );
    // "all" recovers: "q"'s acknowledgements (all by the spill) were enough.
    all.fail.store(0, Ordering::SeqCst);
    until(|| rx.borrow().streams == vec![Some("49".to_string())]).await;
    assert!(uids(&q.inner).is_empty(), "\"q\" is still down");
    q.down.store(false, Ordering::SeqCst);
    until(|| uids(&q.inner).len() >= 50).await;
    shutdown.cancel();
    let summary = handle.await.unwrap();
    assert_eq!(uids(&q.inner), names(0, 50), "in order, exactly once");
    assert_eq!(uids(&all), names(0, 50));
    assert_eq!(summary.unacknowledged, 0);
}

#[tokio::test]
async fn spilled_events_survive_a_restart_and_go_before_newer_ones() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (q, all, dlq) = (flaky("q", true, None), fake("all", 0), fake("dlq", 0));
        let setup = queue_setup(&spill_keys(dir.path(), ""), q.clone(), all, dlq);
        let (tx, rx) = watch::channel(Checkpoint::default());
        let shutdown = CancellationToken::new();
        let handle = tokio::spawn(run(
            futures::stream::iter(events(0, 30)).chain(futures::stream::pending()),
            setup,
            Arc::new(Metrics::new()),
            shutdown.clone(),
            tx,
        ));
        until(|| rx.borrow().streams == vec![Some("29".to_string())]).await;
        shutdown.cancel();
        let summary = handle.await.unwrap();
        assert_eq!(summary.unacknowledged, 0, "all 30 are on disk");
        assert!(uids(&q.inner).is_empty());
    }
    // The next start: the sink is up, new events arrive at once.
    let (q, all, dlq) = (flaky("q", false, None), fake("all", 0), fake("dlq", 0));
    let setup = queue_setup(&spill_keys(dir.path(), ""), q.clone(), all, dlq);
    let (tx, _rx) = watch::channel(Checkpoint::default());
    let summary = run(
        futures::stream::iter(events(30, 10)),
        setup,
        Arc::new(Metrics::new()),
        CancellationToken::new(),
        tx,
    )
    .await;
    assert_eq!(
        uids(&q.inner),
        names(0, 40),
        "old spilled ones first, then the new ones"
    );
    assert_eq!(summary.unacknowledged, 0);
}

#[tokio::test]
async fn a_full_spill_falls_back_to_block() {
    let dir = tempfile::tempdir().unwrap();
    // Room on disk for about one write of four records.
    let (q, all, dlq) = (flaky("q", true, None), fake("all", 0), fake("dlq", 0));
    let setup = queue_setup(
        &spill_keys(dir.path(), "spill_max_bytes = 2000"),
        q.clone(),
        all.clone(),
        dlq,
    );
    let metrics = Arc::new(Metrics::new());
    let (tx, rx) = watch::channel(Checkpoint::default());
    let handle = tokio::spawn(run(
        futures::stream::iter(events(0, 50)),
        setup,
        metrics.clone(),
        CancellationToken::new(),
        tx,
    ));
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(uids(&all).len() < 50, "blocked: the source is held back");
    assert_ne!(rx.borrow().streams, vec![Some("49".to_string())]);
    let text = metrics.encode();
    // The cap lets an empty spill take one write of any size (here: a batch and the memory queue).
    let depth = metric(&text, r#"event_collector_exporter_queue_depth{exporter="q"}"#);
    assert!(depth < 30, "bounded: {depth}");
    assert!(!text.contains("queue_full"), "nothing dropped: {text}");
    q.down.store(false, Ordering::SeqCst);
    let summary = handle.await.unwrap();
    assert_eq!(uids(&q.inner), names(0, 50));
    assert_eq!(uids(&all), names(0, 50));
    assert_eq!(summary.checkpoint.streams, vec![Some("49".to_string())]);
}

#[tokio::test]
async fn records_read_back_from_the_spill_still_go_to_the_dead_letter_exporter() {
    let dir = tempfile::tempdir().unwrap();
    let (q, all, dlq) = (flaky("q", true, Some("e7")), fake("all", 0), fake("dlq", 0));
    let setup = queue_setup(&spill_keys(dir.path(), ""), q.clone(), all.clone(), dlq.clone());
    let (tx, rx) = watch::channel(Checkpoint::default());
    let shutdown = CancellationToken::new();
    let handle = tokio::spawn(run(
        futures::stream::iter(events(0, 20)).chain(futures::stream::pending()),
        setup,
        Arc::new(Metrics::new()),
        shutdown.clone(),
        tx,
    ));
    until(|| rx.borrow().streams == vec![Some("19".to_string())]).await;
    q.down.store(false, Ordering::SeqCst);
    until(|| uids(&q.inner).len() >= 19 && !dlq.got.lock().unwrap().is_empty()).await;
    shutdown.cancel();
    handle.await.unwrap();
    let mut want = names(0, 20);
    want.retain(|u| u != "e7");
    assert_eq!(uids(&q.inner), want);
    let dl = dlq.got.lock().unwrap().clone();
    assert_eq!(dl.len(), 1);
    assert_eq!(dl[0]["event"]["uid"], "e7");
    assert_eq!(dl[0]["dead_letter"]["exporter"], "q");
}

/// Moving the strings out of an event gives the same record as copying them,
/// with or without the optional fields.
#[test]
fn into_record_equals_to_record() {
    let full: RawEvent = serde_json::from_value(json!({
        "metadata": {"uid": "u1", "resourceVersion": "7", "name": "web.1", "namespace": "shop"},
        "involvedObject": {"kind": "Pod", "name": "web", "namespace": "shop", "uid": "p1"},
        "type": "Warning", "reason": "BackOff", "message": "m", "count": 3,
        "lastTimestamp": "2024-01-01T00:00:00Z"
    }))
    .unwrap();
    let bare: RawEvent = serde_json::from_value(json!({
        "metadata": {"uid": "u2", "resourceVersion": "8", "name": "x"},
        "lastTimestamp": "2024-01-01T00:00:00Z"
    }))
    .unwrap();
    for raw in [full, bare] {
        let ev = normalize(
            Api::CoreV1,
            raw,
            WatchType::Added,
            None,
            &NormalizeOptions {
                cluster: Arc::from("c1"),
                include_raw: false,
            },
        )
        .unwrap();
        let (copied, moved) = (to_record(&ev), into_record(ev));
        assert_eq!(copied.fields, moved.fields);
        assert_eq!(copied.json, moved.json);
    }
}
