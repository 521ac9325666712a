//! WASM filters inside the pipeline: route chains keep, drop and enrich;
//! routes sharing a chain run it once; an exporter gets one copy of an event;
//! a failing filter's `on_error` (pass, drop, dead-letter) decides what the
//! exporters get; invalid enrichment output takes the `on_error` path; and the
//! checkpoint still moves past every event.

#[path = "wasm/common.rs"]
mod common;

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use common::*;
use event_collector::ack::Checkpoint;
use event_collector::config::Config;
use event_collector::event::{Api, RawEvent, WatchType};
use event_collector::filter::FilterHost;
use event_collector::metrics::Metrics;
use event_collector::pipeline::{Summary, run};
use event_collector::setup;
use event_collector::source::{SourceEvent, SourceItem};
use event_collector_exporters::{Batch, ExportError, Exporter};
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// Records every record it is given.
#[derive(Default)]
struct Collect {
    name: String,
    got: Mutex<Vec<Value>>,
}

#[async_trait]
impl Exporter for Collect {
    fn name(&self) -> &str {
        &self.name
    }
    async fn export(&self, batch: &Batch) -> Result<(), ExportError> {
        let mut got = self.got.lock().unwrap();
        for r in batch {
            got.push(serde_json::from_slice(&r.json).unwrap());
        }
        Ok(())
    }
}

impl Collect {
    fn all(&self) -> Vec<Value> {
        self.got.lock().unwrap().clone()
    }
    fn uids(&self) -> Vec<String> {
        let mut u: Vec<String> = self
            .all()
            .iter()
            .map(|v| v.get("event").unwrap_or(v)["uid"].as_str().unwrap().to_string())
            .collect();
        u.sort();
        u
    }
}

fn item(uid: &str, rv: &str, ty: &str, reason: &str) -> SourceItem {
    let raw: RawEvent = serde_json::from_value(json!({
        "metadata": {"uid": uid, "resourceVersion": rv, "name": uid, "namespace": "demo"},
        "type": ty, "reason": reason, "message": format!("{reason} happened"), "count": 1,
        "involvedObject": {"kind": "Pod", "name": "web-0", "namespace": "demo"},
        "lastTimestamp": "2026-01-01T00:00:00Z"
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

/// Writes the modules, loads `config` (with `{dir}` replaced), builds the
/// host and runs `items` through the pipeline into one [`Collect`] per exporter.
async fn run_config(
    dir: &Path,
    modules: &[(&str, Vec<u8>)],
    config: &str,
    items: Vec<SourceItem>,
) -> (Summary, Checkpoint, Vec<Arc<Collect>>, Arc<Metrics>) {
    for (name, bytes) in modules {
        std::fs::write(dir.join(format!("{name}.wasm")), bytes).unwrap();
    }
    let text = config.replace("{dir}", &dir.display().to_string());
    let config = Config::parse(&text, Path::new("filters.toml")).unwrap_or_else(|e| panic!("{e}"));
    let metrics = Arc::new(Metrics::new());
    let host = {
        let (filters, wasm, m) = (config.filters.clone(), config.wasm.clone(), metrics.clone());
        tokio::task::spawn_blocking(move || FilterHost::new(&filters, &wasm, m))
            .await
            .unwrap()
            .unwrap()
    };
    let mut s = setup::pipeline_setup(&config, "c1", Duration::from_secs(2), Some(host)).unwrap();
    let mut sinks = Vec::new();
    for slot in &mut s.exporters {
        let c = Arc::new(Collect {
            name: slot.name.clone(),
            ..Default::default()
        });
        slot.exporter = c.clone();
        sinks.push(c);
    }
    let (tx, rx) = watch::channel(Checkpoint::default());
    let summary = run(
        futures::stream::iter(items),
        s,
        metrics.clone(),
        CancellationToken::new(),
        tx,
    )
    .await;
    let cp = rx.borrow().clone();
    (summary, cp, sinks, metrics)
}

const EXPORTERS: &str = r#"
[wasm]
cache_dir = "{dir}/cache"

[[exporters]]
name = "tagged"
type = "stdout"
batch_timeout = "5ms"

[[exporters]]
name = "plain"
type = "stdout"
batch_timeout = "5ms"

[[exporters]]
name = "dl"
type = "stdout"
batch_timeout = "5ms"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chains_enrich_drop_and_share_runs() {
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        r#"{EXPORTERS}
[[filters]]
name = "tagger"
module = "{{dir}}/tagger.wasm"
timeout = "300ms"

[[filters]]
name = "only-odd"
module = "{{dir}}/counter.wasm"
timeout = "300ms"

# Warnings: tagged (enriched) to `tagged`, and on to the next routes.
[[routes]]
name = "warn-tag"
filters = ["tagger"]
exporters = ["tagged"]
continue = true
[routes.match]
type = "Warning"

# Same chain, same exporter: runs once, sent once.
[[routes]]
name = "warn-tag-again"
filters = ["tagger"]
exporters = ["tagged"]
continue = true
[routes.match]
type = "Warning"

# Everything, unfiltered, to `plain`.
[[routes]]
name = "all"
exporters = ["plain"]
continue = true

# Every second Normal event (by call count) to `dl`.
[[routes]]
name = "normal-half"
filters = ["only-odd"]
exporters = ["dl"]
[routes.match]
type = "Normal"
"#
    );
    let mut items = Vec::new();
    for i in 0..40 {
        let ty = if i % 2 == 0 { "Warning" } else { "Normal" };
        items.push(item(&format!("u{i:02}"), &format!("{}", 100 + i), ty, "BackOff"));
    }
    let (summary, cp, sinks, metrics) = run_config(
        dir.path(),
        &[("tagger", core_tagger("v1")), ("counter", core_counter())],
        &config,
        items,
    )
    .await;
    let [tagged, plain, dl] = [&sinks[0], &sinks[1], &sinks[2]];

    // 20 warnings, each once, enriched by the tagger and otherwise unchanged.
    let t = tagged.all();
    assert_eq!(t.len(), 20, "{t:?}");
    for v in &t {
        assert_eq!(v["extra"]["v"], "v1", "{v}");
        assert_eq!(v["type"], "Warning");
        assert_eq!(v["reason"], "BackOff");
        assert_eq!(v["schema_version"], 1);
    }
    let mut uids = tagged.uids();
    uids.dedup();
    assert_eq!(uids.len(), 20, "no duplicates");

    // All 40 unfiltered and not enriched.
    assert_eq!(plain.all().len(), 40);
    assert!(
        plain
            .all()
            .iter()
            .all(|v| v.get("extra").is_none_or(|e| e.get("v").is_none()))
    );

    // The counter keeps odd calls: 10 of the 20 Normal events.
    assert_eq!(dl.all().len(), 10);
    assert!(dl.all().iter().all(|v| v["type"] == "Normal"));

    assert_eq!(summary.routed, 40);
    assert_eq!(summary.filtered_out, 0, "every event reached `plain`");
    assert_eq!(cp.streams, vec![Some("139".to_string())]);
    assert_eq!(cp.acked_below, 40);

    // The tagger ran once per warning, not once per route.
    let text = metrics.encode();
    assert!(
        text.contains(r#"event_collector_filter_calls_total{filter="tagger",verdict="replace"} 20"#),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_filters_follow_on_error() {
    let dir = tempfile::tempdir().unwrap();
    // `bad-id` returns a replacement that changes the uid: invalid output.
    let bad_id = core_const(r#"{"verdict":"replace","event":{"uid":"someone-else"}}"#);
    let config = format!(
        r#"{EXPORTERS}
[[filters]]
name = "trap-pass"
module = "{{dir}}/trap.wasm"
on_error = "pass"
breaker_threshold = 0
timeout = "300ms"

[[filters]]
name = "trap-dl"
module = "{{dir}}/trap.wasm"
on_error = "dead-letter"
dead_letter = "dl"
breaker_threshold = 0
timeout = "300ms"

[[filters]]
name = "invalid-drop"
module = "{{dir}}/bad-id.wasm"
on_error = "drop"
breaker_threshold = 0
timeout = "300ms"

[[filters]]
name = "loop-drop"
module = "{{dir}}/loop.wasm"
on_error = "drop"
breaker_threshold = 0
timeout = "50ms"

[[routes]]
name = "crash"
filters = ["trap-pass"]
exporters = ["plain"]
[routes.match]
reason = "Crash"

[[routes]]
name = "dead"
filters = ["trap-dl"]
exporters = ["tagged"]
[routes.match]
reason = "Dead"

[[routes]]
name = "invalid"
filters = ["invalid-drop"]
exporters = ["tagged"]
[routes.match]
reason = "Invalid"

[[routes]]
name = "slow"
filters = ["loop-drop"]
exporters = ["tagged"]
[routes.match]
reason = "Slow"
"#
    );
    let mut items = Vec::new();
    let mut rv = 1;
    for reason in ["Crash", "Dead", "Invalid", "Slow"] {
        for i in 0..3 {
            items.push(item(&format!("{reason}-{i}"), &rv.to_string(), "Warning", reason));
            rv += 1;
        }
    }
    let (summary, cp, sinks, metrics) = run_config(
        dir.path(),
        &[("trap", core_trap()), ("bad-id", bad_id), ("loop", core_loop())],
        &config,
        items,
    )
    .await;
    let [tagged, plain, dl] = [&sinks[0], &sinks[1], &sinks[2]];

    // on_error = pass: the trapping filter lets the events through unchanged.
    assert_eq!(plain.uids(), vec!["Crash-0", "Crash-1", "Crash-2"]);
    // dead-letter: the events and the error, nowhere else.
    assert_eq!(dl.uids(), vec!["Dead-0", "Dead-1", "Dead-2"]);
    for v in dl.all() {
        assert_eq!(v["dead_letter"]["filter"], "trap-dl", "{v}");
        assert_eq!(v["dead_letter"]["reason"], "filter_failed");
        assert!(v["dead_letter"]["error"].as_str().unwrap().contains("trap"), "{v}");
        assert_eq!(v["event"]["reason"], "Dead");
    }
    // Invalid output and the timeout with on_error = drop: nothing reaches `tagged`.
    assert!(tagged.all().is_empty(), "{:?}", tagged.all());

    assert_eq!(summary.routed, 12);
    assert_eq!(summary.filter_dead_lettered, 3);
    assert_eq!(
        summary.filtered_out, 9,
        "dead-lettered, invalid and timed-out events reach no route's exporter"
    );
    // Every event is acknowledged, failures included.
    assert_eq!(cp.acked_below, 12);
    assert_eq!(cp.streams, vec![Some("12".to_string())]);

    let text = metrics.encode();
    for (filter, kind) in [
        ("trap-pass", "trap"),
        ("trap-dl", "trap"),
        ("invalid-drop", "invalid_output"),
        ("loop-drop", "timeout"),
    ] {
        let line = format!(r#"event_collector_filter_failures_total{{filter="{filter}",kind="{kind}"}} 3"#);
        assert!(text.contains(&line), "{line} in\n{text}");
    }
}
