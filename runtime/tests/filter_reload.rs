//! Hot reload of WASM filters in a running pipeline: a reload adds a filter
//! chain to a route, a second one swaps the module (a new filter host). Every
//! event is exported once, by exactly one config: untagged, then `v2`, then
//! `v3`, never mixed back; the exporter is kept (same instance) throughout.

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
use event_collector::metrics::Metrics;
use event_collector::pipeline::{Control, run_with};
use event_collector::reload::{Reloader, Trigger};
use event_collector::setup;
use event_collector::source::{SourceEvent, SourceItem};
use event_collector_exporters::{Batch, ExportError, Exporter};
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

#[derive(Default)]
struct Collect {
    got: Mutex<Vec<Value>>,
}

#[async_trait]
impl Exporter for Collect {
    fn name(&self) -> &str {
        "out"
    }
    async fn export(&self, batch: &Batch) -> Result<(), ExportError> {
        let mut got = self.got.lock().unwrap();
        for r in batch {
            got.push(serde_json::from_slice(&r.json).unwrap());
        }
        Ok(())
    }
}

fn item(i: usize) -> SourceItem {
    let uid = format!("u{i:04}");
    let raw: RawEvent = serde_json::from_value(json!({
        "metadata": {"uid": uid, "resourceVersion": (i + 1).to_string(), "name": uid, "namespace": "demo"},
        "type": "Normal", "reason": "Test", "count": 1,
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

fn config(dir: &Path, module: Option<&str>) -> String {
    let filters = match module {
        Some(m) => format!(
            "[[filters]]\nname = \"tag\"\nmodule = \"{}/{m}.wasm\"\ntimeout = \"300ms\"\nwatch = false\n\n",
            dir.display()
        ),
        None => String::new(),
    };
    let chain = if module.is_some() { "filters = [\"tag\"]\n" } else { "" };
    format!(
        "[wasm]\ncache_dir = \"{}/cache\"\n\n[[exporters]]\nname = \"out\"\ntype = \"stdout\"\nbatch_timeout = \"5ms\"\n\n{filters}[[routes]]\nname = \"all\"\ndefault = true\n{chain}exporters = [\"out\"]\n",
        dir.display()
    )
}

async fn until(mut f: impl FnMut() -> bool) {
    for _ in 0..2000 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("condition not reached in 10 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_adds_then_swaps_a_filter_chain_between_two_events() {
    let tmp = tempfile::TempDir::new().unwrap();
    let dir = tmp.path();
    std::fs::write(dir.join("v2.wasm"), core_tagger("v2")).unwrap();
    std::fs::write(dir.join("v3.wasm"), core_tagger("v3")).unwrap();
    let path = dir.join("c.toml");
    let v1 = config(dir, None);
    std::fs::write(&path, &v1).unwrap();
    let running = Config::load(&path).unwrap();
    let metrics = Arc::new(Metrics::new());
    let mut s = setup::pipeline_setup(&running, "c1", Duration::from_secs(2), None).unwrap();
    let out = Arc::new(Collect::default());
    s.exporters[0].exporter = out.clone();

    let (rc_tx, rc_rx) = mpsc::channel(1);
    let (src_tx, src_rx) = futures::channel::mpsc::unbounded::<SourceItem>();
    let (cp_tx, cp_rx) = watch::channel(Checkpoint::default());
    let (exp_tx, exp_rx) = watch::channel(Vec::new());
    let control = Control {
        reconfigure: Some(rc_rx),
        exporters: Some(exp_tx),
    };
    let run = tokio::spawn(run_with(
        src_rx,
        s,
        metrics.clone(),
        CancellationToken::new(),
        cp_tx,
        control,
    ));
    let mut reloader = Reloader::new(path.clone(), running, v1, None, "c1", metrics.clone(), rc_tx);
    let count = |out: &Collect| out.got.lock().unwrap().len();

    for i in 0..300 {
        src_tx.unbounded_send(item(i)).unwrap();
    }
    until(|| count(&out) > 0).await;
    std::fs::write(&path, config(dir, Some("v2"))).unwrap();
    assert_eq!(reloader.reload(Trigger::File).await, Some(Ok(())));
    for i in 300..600 {
        src_tx.unbounded_send(item(i)).unwrap();
    }
    until(|| count(&out) > 300).await;
    std::fs::write(&path, config(dir, Some("v3"))).unwrap();
    assert_eq!(reloader.reload(Trigger::File).await, Some(Ok(())));
    for i in 600..900 {
        src_tx.unbounded_send(item(i)).unwrap();
    }
    drop(src_tx);
    let summary = run.await.unwrap();
    assert_eq!(summary.unacknowledged, 0);
    assert_eq!(cp_rx.borrow().acked_below, 900);

    let got = out.got.lock().unwrap().clone();
    let uids: Vec<&str> = got.iter().map(|v| v["uid"].as_str().unwrap()).collect();
    let want: Vec<String> = (0..900).map(|i| format!("u{i:04}")).collect();
    assert_eq!(uids, want, "every event once, in order");
    let tags: Vec<u8> = got
        .iter()
        .map(|v| match v["extra"]["v"].as_str() {
            None => 1,
            Some("v2") => 2,
            Some("v3") => 3,
            Some(other) => panic!("unexpected tag {other}"),
        })
        .collect();
    assert!(tags.windows(2).all(|w| w[0] <= w[1]), "configs mixed: {tags:?}");
    assert_eq!(tags[0], 1, "the first events ran without filters");
    assert!(
        tags[300..].iter().all(|&t| t >= 2),
        "events sent after the first reload were not filtered"
    );
    assert!(
        tags[600..].iter().all(|&t| t == 3),
        "events sent after the second reload missed v3"
    );
    assert!(tags.contains(&2));
    // The one exporter was kept, never rebuilt.
    let running = exp_rx.borrow().clone();
    assert_eq!(running.len(), 1);
    assert!(Arc::ptr_eq(
        &running[0],
        &(out.clone() as event_collector_exporters::SharedExporter)
    ));
    assert_eq!(reloader.running().filters.len(), 1);
}
