//! Reconfiguring a running pipeline while events flow: nothing lost, nothing
//! doubled, each event routed by exactly one config, kept exporters untouched,
//! a failing replaced exporter handing its events to its successor.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use event_collector_exporters::{Batch, ExportError, Exporter};

use super::*;
use crate::ack::Checkpoint;
use crate::config::Config;
use crate::pipeline::{Summary, run_with};
use crate::setup;
use crate::source::SourceItem;

/// Records the uids it receives; refuses everything while `down`.
#[derive(Default)]
struct Sink {
    name: String,
    got: Mutex<Vec<String>>,
    down: AtomicBool,
}

#[async_trait]
impl Exporter for Sink {
    fn name(&self) -> &str {
        &self.name
    }
    async fn export(&self, batch: &Batch) -> Result<(), ExportError> {
        if self.down.load(Ordering::SeqCst) {
            return Err(ExportError::transient("io", "down"));
        }
        let mut got = self.got.lock().unwrap();
        for r in batch {
            got.push(r.fields.uid.clone());
        }
        Ok(())
    }
}

fn sink(name: &str, down: bool) -> Arc<Sink> {
    Arc::new(Sink {
        name: name.into(),
        down: AtomicBool::new(down),
        ..Default::default()
    })
}

const EXPORTER_KEYS: &str =
    "batch_max_events = 7\nbatch_timeout = \"2ms\"\nretry_initial_backoff = \"2ms\"\nretry_max_backoff = \"5ms\"\n";

/// Before: Warning → keep + old, Normal → keep + chg.
fn before() -> String {
    format!(
        r#"
[[exporters]]
name = "keep"
type = "stdout"
{EXPORTER_KEYS}
[[exporters]]
name = "old"
type = "stdout"
{EXPORTER_KEYS}
[[exporters]]
name = "chg"
type = "stdout"
{EXPORTER_KEYS}queue_max_events = 10

[[routes]]
name = "warnings"
exporters = ["keep", "old"]
[routes.match]
type = "Warning"

[[routes]]
name = "normal"
exporters = ["keep", "chg"]
[routes.match]
type = "Normal"
"#
    )
}

/// After: `old` removed, `new` added for warnings, `chg` changed (restarted),
/// and the exporter order differs (indices move).
fn after() -> String {
    format!(
        r#"
[[exporters]]
name = "new"
type = "stdout"
{EXPORTER_KEYS}
[[exporters]]
name = "chg"
type = "stdout"
{EXPORTER_KEYS}queue_max_events = 500

[[exporters]]
name = "keep"
type = "stdout"
{EXPORTER_KEYS}
[[routes]]
name = "normal"
exporters = ["chg", "keep"]
[routes.match]
type = "Normal"

[[routes]]
name = "warnings"
exporters = ["new", "keep"]
[routes.match]
type = "Warning"
"#
    )
}

fn item(i: usize) -> SourceItem {
    let ty = if i.is_multiple_of(3) { "Warning" } else { "Normal" };
    let uid = format!("u{i:05}");
    crate::pipeline::tests::item(&uid, &(i + 1).to_string(), ty, "ns")
}

fn slot_of(config: &Config, name: &str, sink: &Arc<Sink>) -> ExporterSlot {
    let e = config.exporter(name).unwrap();
    let mut slot = setup::build_slot(config, e).unwrap();
    slot.exporter = sink.clone();
    slot
}

/// The reconfigure to `after()`: `keep` kept, `chg` and `new` started.
fn to_after(chg2: &Arc<Sink>, new: &Arc<Sink>) -> (Reconfigure, oneshot::Receiver<Result<(), String>>) {
    let config = Config::parse(&after(), Path::new("after.toml")).unwrap();
    let routes = RouteTable::new(&config);
    let chains = setup::chains(&config, &routes, None).unwrap();
    let (tx, rx) = oneshot::channel();
    let r = Reconfigure {
        routes,
        chains,
        filters: None,
        normalize: NormalizeOptions {
            cluster: Arc::from("c1"),
            include_raw: false,
        },
        exporters: vec![
            ExporterPlan::Start(slot_of(&config, "new", new)),
            ExporterPlan::Start(slot_of(&config, "chg", chg2)),
            ExporterPlan::Keep("keep".into()),
        ],
        applied: Some(tx),
    };
    (r, rx)
}

struct Sinks {
    keep: Arc<Sink>,
    old: Arc<Sink>,
    chg1: Arc<Sink>,
    chg2: Arc<Sink>,
    new: Arc<Sink>,
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

struct Switched {
    summary: Summary,
    checkpoint: Checkpoint,
    running: Vec<SharedExporter>,
    /// Events 0..this had reached the kept exporter before the reconfigure was sent.
    seen_before: usize,
}

/// Streams `total` events, reconfiguring after `switch_after` of them were
/// handed to the source and some reached an exporter (the rest are still on
/// their way through the stages).
async fn run_switching(total: usize, switch_after: usize, s: &Sinks) -> Switched {
    let config = Config::parse(&before(), Path::new("before.toml")).unwrap();
    let mut setup = setup::pipeline_setup(&config, "c1", Duration::from_secs(5), None).unwrap();
    for slot in &mut setup.exporters {
        slot.exporter = match slot.name.as_str() {
            "keep" => s.keep.clone(),
            "old" => s.old.clone(),
            _ => s.chg1.clone(),
        };
    }
    let (src_tx, src_rx) = futures::channel::mpsc::unbounded::<SourceItem>();
    let (rc_tx, rc_rx) = mpsc::channel(1);
    let (exp_tx, exp_rx) = watch::channel(Vec::new());
    let (cp_tx, cp_rx) = watch::channel(Checkpoint::default());
    let control = Control {
        reconfigure: Some(rc_rx),
        exporters: Some(exp_tx),
    };
    let run = tokio::spawn(run_with(
        src_rx,
        setup,
        Arc::new(Metrics::new()),
        CancellationToken::new(),
        cp_tx,
        control,
    ));
    for i in 0..switch_after {
        src_tx.unbounded_send(item(i)).unwrap();
    }
    until(|| !got(&s.keep).is_empty()).await;
    let seen_before = got(&s.keep).len();
    let (r, applied) = to_after(&s.chg2, &s.new);
    rc_tx.send(r).await.unwrap();
    for i in switch_after..total {
        src_tx.unbounded_send(item(i)).unwrap();
        if i.is_multiple_of(64) {
            tokio::task::yield_now().await;
        }
    }
    assert_eq!(applied.await.unwrap(), Ok(()));
    drop(src_tx);
    let summary = run.await.unwrap();
    let checkpoint = cp_rx.borrow().clone();
    let running = exp_rx.borrow().clone();
    Switched {
        summary,
        checkpoint,
        running,
        seen_before,
    }
}

fn got(s: &Sink) -> Vec<String> {
    s.got.lock().unwrap().clone()
}

fn uid(i: usize) -> String {
    format!("u{i:05}")
}

/// Each uid of `want` is in exactly one of `a` and `b`, `a` holding a prefix
/// (in stream order) and `b` the rest; returns where the cut is.
fn split_once(want: &[usize], a: &[String], b: &[String]) -> usize {
    let mut count: HashMap<&str, usize> = HashMap::new();
    for u in a.iter().chain(b) {
        *count.entry(u.as_str()).or_default() += 1;
    }
    for &i in want {
        assert_eq!(
            count.get(uid(i).as_str()),
            Some(&1),
            "event {i} not delivered exactly once"
        );
    }
    assert_eq!(count.len(), want.len(), "unexpected events delivered");
    let cut = want.iter().take_while(|&&i| a.contains(&uid(i))).count();
    for &i in &want[cut..] {
        assert!(b.contains(&uid(i)), "event {i} after the cut went to the old exporter");
    }
    cut
}

#[tokio::test]
async fn events_flowing_through_a_reconfigure_are_each_routed_by_one_config() {
    let s = Sinks {
        keep: sink("keep", false),
        old: sink("old", false),
        chg1: sink("chg", false),
        chg2: sink("chg", false),
        new: sink("new", false),
    };
    let total = 3000;
    let switch_after = 1000;
    let Switched {
        summary,
        checkpoint: cp,
        running,
        seen_before,
    } = run_switching(total, switch_after, &s).await;

    // Nothing lost, nothing left unacknowledged: the checkpoint covers every event.
    assert_eq!(summary.unacknowledged, 0);
    assert_eq!(cp.acked_below, total as u64);
    assert_eq!(cp.streams, vec![Some(total.to_string())]);

    // The kept exporter got every event exactly once, in order: it ran on.
    assert_eq!(got(&s.keep), (0..total).map(uid).collect::<Vec<_>>());

    // Warnings: a prefix went to `old` (before), the rest to `new` (after).
    let warnings: Vec<usize> = (0..total).filter(|i| i.is_multiple_of(3)).collect();
    let cut_w = split_once(&warnings, &got(&s.old), &got(&s.new));
    // Normals: a prefix to the replaced `chg`, the rest to its successor.
    let normals: Vec<usize> = (0..total).filter(|i| !i.is_multiple_of(3)).collect();
    let cut_n = split_once(&normals, &got(&s.chg1), &got(&s.chg2));
    // One cut for the whole stream: no event used the old config after one used the new.
    let last_old = warnings[..cut_w].iter().chain(&normals[..cut_n]).max().copied();
    let first_new = warnings[cut_w..].iter().chain(&normals[cut_n..]).min().copied();
    let (last_old, first_new) = (last_old.unwrap(), first_new.unwrap());
    assert!(
        last_old < first_new,
        "event {last_old} used the old config after event {first_new} used the new one"
    );
    // What was delivered before the reconfigure was sent used the old config;
    // what entered the source after it, the new one.
    assert!(last_old + 1 >= seen_before, "{last_old} {seen_before}");
    assert!(first_new <= switch_after, "{first_new}");

    // The running exporters are now the new set, in the new order.
    let names: Vec<&str> = running.iter().map(|e| e.name()).collect();
    assert_eq!(names, vec!["new", "chg", "keep"]);
    assert!(Arc::ptr_eq(&running[2], &(s.keep.clone() as SharedExporter)));
}

/// `chg`'s queue (10 events, `block`) fills while its sink is down and holds
/// the whole pipeline back; the reconfigure that replaces it still goes through.
#[tokio::test]
async fn a_replaced_exporter_whose_sink_is_down_hands_its_events_to_the_successor() {
    let s = Sinks {
        keep: sink("keep", false),
        old: sink("old", false),
        chg1: sink("chg", true),
        chg2: sink("chg", false),
        new: sink("new", false),
    };
    let total = 600;
    let Switched {
        summary,
        checkpoint: cp,
        ..
    } = run_switching(total, 300, &s).await;
    assert_eq!(summary.unacknowledged, 0);
    assert_eq!(cp.acked_below, total as u64);
    // The old `chg` never delivered; its successor has every Normal event, once.
    assert!(got(&s.chg1).is_empty());
    let normals: Vec<String> = (0..total).filter(|i| !i.is_multiple_of(3)).map(uid).collect();
    let mut delivered = got(&s.chg2);
    delivered.sort();
    assert_eq!(delivered, normals);
    assert_eq!(got(&s.keep).len(), total);
}
