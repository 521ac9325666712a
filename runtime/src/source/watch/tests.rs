//! The watch machine against a scripted in-process API.

use std::collections::VecDeque;
use std::sync::Mutex;

use serde_json::json;
use tokio::sync::Notify;

use super::*;
use crate::event::Api;

enum Resp {
    List(Result<ListPage, ApiError>),
    Watch(Result<Vec<Result<WatchItem, ApiError>>, ApiError>),
}

#[derive(Default)]
struct Script {
    resps: Mutex<VecDeque<Resp>>,
    /// What was asked: "list:<continue>" or "watch:<rv>".
    calls: Mutex<Vec<String>>,
    done: Notify,
}

#[derive(Clone)]
struct Fake(Arc<Script>);

impl Fake {
    fn next(&self, call: String) -> Option<Resp> {
        self.0.calls.lock().unwrap().push(call);
        let r = self.0.resps.lock().unwrap().pop_front();
        if r.is_none() {
            self.0.done.notify_one();
        }
        r
    }
}

#[async_trait::async_trait]
impl EventApi for Fake {
    async fn list(&self, _limit: u32, continue_token: Option<String>) -> Result<ListPage, ApiError> {
        match self.next(format!("list:{}", continue_token.unwrap_or_default())) {
            Some(Resp::List(r)) => r,
            Some(Resp::Watch(_)) => panic!("script expected a watch, the machine listed"),
            None => futures::future::pending().await,
        }
    }
    async fn watch(&self, rv: &str) -> Result<WatchItems, ApiError> {
        match self.next(format!("watch:{rv}")) {
            Some(Resp::Watch(r)) => r.map(|items| futures::stream::iter(items).boxed()),
            Some(Resp::List(_)) => panic!("script expected a list, the machine watched"),
            None => Ok(futures::stream::pending().boxed()),
        }
    }
}

fn ev(uid: &str, rv: &str) -> WireEvent {
    WireEvent::from_value(
        json!({"metadata": {"uid": uid, "resourceVersion": rv, "name": uid, "namespace": "ns"}, "reason": "R"}),
    )
}

fn page(items: Vec<WireEvent>, rv: &str, cont: Option<&str>) -> Resp {
    Resp::List(Ok(ListPage {
        items,
        resource_version: rv.into(),
        continue_token: cont.map(str::to_string),
    }))
}

fn watch(items: Vec<WatchItem>) -> Resp {
    Resp::Watch(Ok(items.into_iter().map(Ok).collect()))
}

fn spec() -> WatchSpec {
    WatchSpec {
        api: Api::CoreV1,
        namespace: Some("ns".into()),
        field_selector: None,
        label_selector: None,
    }
}

/// Runs the machine over the script until the script is used up.
async fn run(resume: Option<&str>, script: Vec<Resp>) -> (Vec<Out>, Vec<String>, Arc<Metrics>) {
    let s = Arc::new(Script {
        resps: Mutex::new(script.into()),
        ..Default::default()
    });
    let metrics = Arc::new(Metrics::new());
    let cfg = MachineConfig {
        page_size: 2,
        stale_limit: 3,
        backoff_initial: Duration::from_millis(1),
        backoff_max: Duration::from_millis(2),
        empty_watch_time: Duration::from_secs(3600),
    };
    let resume = resume.map(|rv| crate::state::Resume {
        resource_version: rv.into(),
        acked_at: Some(Utc::now() - chrono::Duration::minutes(5)),
    });
    let mut m = std::pin::pin!(machine(Fake(s.clone()), spec(), resume, cfg, metrics.clone()));
    let mut out = Vec::new();
    loop {
        tokio::select! {
            biased;
            o = m.next() => out.push(o.expect("the machine never ends")),
            _ = s.done.notified() => break,
        }
    }
    let calls = s.calls.lock().unwrap().clone();
    (out, calls, metrics)
}

/// A compact view: "E:uid:rv[:i]" events, "D:uid" deletions, marks, "L" listed.
fn view(out: &[Out]) -> Vec<String> {
    out.iter()
        .map(|o| match o {
            Out::Event { deleted: true, raw, .. } => format!("D:{}", raw.metadata.uid.as_deref().unwrap_or("")),
            Out::Event { raw, initial, .. } => {
                let uid = raw.metadata.uid.clone().unwrap_or_default();
                let uid = if uid.starts_with("event-collector-gap-") {
                    "GAP".into()
                } else {
                    uid
                };
                format!(
                    "E:{uid}:{}{}",
                    raw.metadata.resource_version.as_deref().unwrap_or(""),
                    if *initial { ":i" } else { "" }
                )
            }
            Out::Mark(Mark::ListStart) => "LS".into(),
            Out::Mark(Mark::ListEnd(rv)) => format!("LE:{rv}"),
            Out::Mark(Mark::Bookmark(rv)) => format!("B:{rv}"),
            Out::Listed => "L".into(),
        })
        .collect()
}

#[tokio::test]
async fn fresh_start_lists_in_pages_then_watches_from_the_list_and_follows_bookmarks() {
    let (out, calls, m) = run(
        None,
        vec![
            page(vec![ev("a", "x9"), ev("b", "x3")], "L1", Some("c1")),
            page(vec![ev("c", "x5")], "L1", None),
            watch(vec![
                WatchItem::Added(ev("d", "w1")),
                WatchItem::Bookmark("bm7".into()),
                WatchItem::Deleted(ev("a", "w2")),
            ]),
            // The watch ended normally (server timeout): resume from the newest position.
            watch(vec![WatchItem::Modified(ev("b", "w3"))]),
        ],
    )
    .await;
    assert_eq!(
        view(&out),
        vec![
            "LS", "E:a:x9:i", "E:b:x3:i", "E:c:x5:i", "LE:L1", "L", "E:d:w1", "B:bm7", "D:a", "E:b:w3"
        ]
    );
    assert_eq!(calls, vec!["list:", "list:c1", "watch:L1", "watch:w2", "watch:w3"]);
    assert_eq!(m.gap_records.get(), 0, "a fresh start is not a gap");
    assert_eq!(m.relist_count(Api::CoreV1), 0);
}

#[tokio::test]
async fn resume_from_a_saved_position_with_opaque_resource_versions() {
    let (out, calls, _) = run(
        Some("zz-opaque"),
        vec![watch(vec![
            WatchItem::Added(ev("n", "aa-1")),
            WatchItem::Added(ev("o", "0")),
        ])],
    )
    .await;
    assert_eq!(view(&out), vec!["E:n:aa-1", "E:o:0"]);
    // No list: the watch starts at the saved position; a "smaller looking" rv is taken as is.
    assert_eq!(calls, vec!["watch:zz-opaque", "watch:0"]);
}

#[tokio::test]
async fn gone_on_resume_relists_and_emits_one_gap_record_before_the_list_end() {
    let (out, calls, m) = run(
        Some("old"),
        vec![
            Resp::Watch(Err(ApiError::Gone("too old resource version".into()))),
            page(vec![ev("a", "5")], "L2", Some("c1")),
            // The continue token expired too: the list starts over.
            Resp::List(Err(ApiError::Gone("continue expired".into()))),
            page(vec![ev("a", "5")], "L3", Some("c2")),
            page(vec![ev("b", "6")], "L3", None),
        ],
    )
    .await;
    assert_eq!(
        view(&out),
        vec!["LS", "E:a:5", "E:a:5", "E:b:6", "E:GAP:L3", "LE:L3", "L"],
        "relist items are not startup items; the caller de-duplicates a:5"
    );
    assert_eq!(
        calls,
        vec!["watch:old", "list:", "list:c1", "list:", "list:c2", "watch:L3"]
    );
    assert_eq!(m.gap_records.get(), 1);
    assert_eq!(m.relist_count(Api::CoreV1), 1);
    assert_eq!(m.watch_error_count(Api::CoreV1, "gone"), 2);
    let Out::Event { raw, .. } = &out[4] else { panic!() };
    assert_eq!(raw.reason.as_deref(), Some("EventCollectorGap"));
    assert_eq!(raw.type_.as_deref(), Some("Warning"));
    let ann = raw.metadata.annotations.as_ref().unwrap();
    assert_eq!(ann["event-collector.io/gap-resume-rv"], "old");
    assert!(ann["event-collector.io/gap-stream"].contains("core/v1 in ns"));
    // The window starts at the saved acknowledgement time (5 minutes ago) and ends now.
    let from = chrono::DateTime::parse_from_rfc3339(&ann["event-collector.io/gap-from"]).unwrap();
    let to = chrono::DateTime::parse_from_rfc3339(&ann["event-collector.io/gap-to"]).unwrap();
    assert!((to - from).num_seconds() >= 299, "{from} .. {to}");
    assert!(raw.message.as_deref().unwrap().contains("410 Gone"));
}

#[tokio::test]
async fn gone_as_a_watch_error_event_and_errors_back_off_and_resume_from_the_same_position() {
    let (out, calls, m) = run(
        Some("r1"),
        vec![
            Resp::Watch(Err(ApiError::Other("connection refused".into()))),
            Resp::Watch(Ok(vec![
                Ok(WatchItem::Added(ev("a", "r2"))),
                Err(ApiError::Other("connection reset".into())),
            ])),
            watch(vec![WatchItem::Error {
                code: 500,
                message: "internal".into(),
            }]),
            watch(vec![WatchItem::Error {
                code: 410,
                message: "expired".into(),
            }]),
            page(vec![], "L9", None),
        ],
    )
    .await;
    assert_eq!(view(&out), vec!["E:a:r2", "LS", "E:GAP:L9", "LE:L9", "L"]);
    assert_eq!(
        calls,
        vec!["watch:r1", "watch:r1", "watch:r2", "watch:r2", "list:", "watch:L9"]
    );
    assert_eq!(m.watch_error_count(Api::CoreV1, "error"), 3);
    assert_eq!(m.watch_error_count(Api::CoreV1, "gone"), 1);
}

#[tokio::test]
async fn empty_watches_in_a_row_are_a_stale_position_and_relist() {
    let (out, calls, m) = run(
        Some("stale"),
        vec![
            watch(vec![]),
            watch(vec![]),
            watch(vec![]),
            page(vec![ev("a", "1")], "L4", None),
        ],
    )
    .await;
    assert_eq!(view(&out), vec!["LS", "E:a:1", "E:GAP:L4", "LE:L4", "L"]);
    assert_eq!(
        calls,
        vec!["watch:stale", "watch:stale", "watch:stale", "list:", "watch:L4"]
    );
    assert_eq!(m.watch_error_count(Api::CoreV1, "stale"), 1);
    assert_eq!(m.relist_count(Api::CoreV1), 1);
}

#[tokio::test]
async fn a_malformed_object_is_skipped_and_the_watch_goes_on() {
    let bad = WireEvent::from_value(
        json!({"metadata": {"uid": "bad-uid", "resourceVersion": "r2", "name": "b", "namespace": "ns"}, "count": "many"}),
    );
    let alien = WireEvent::from_value(json!({"kind": "Pod", "apiVersion": "v1", "metadata": {"uid": "pod-uid"}}));
    let (out, calls, m) = run(
        Some("r0"),
        vec![watch(vec![
            WatchItem::Added(ev("a", "r1")),
            WatchItem::Added(bad),
            WatchItem::Added(alien),
        ])],
    )
    .await;
    assert_eq!(view(&out), vec!["E:a:r1"]);
    assert_eq!(m.skipped_count("malformed"), 2);
    // The position moved past the malformed object: it is not read again.
    assert_eq!(calls, vec!["watch:r0", "watch:r2"]);
}
