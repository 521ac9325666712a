//! Hot swap: a worker streams events while the module file is replaced 20
//! times (good versions and bad ones); a Kubernetes ConfigMap-style `..data`
//! symlink swap; the delete policies.

#[path = "wasm/common.rs"]
mod common;

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use event_collector::config::{FilterConfig, OnDelete};
use event_collector::filter::host::CheckOutcome;
use event_collector::filter::{ChainOutcome, FilterHost, FilterId, FilterWorker, StepTrace};
use sha2::{Digest, Sha256};

fn sha(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

fn wait_for(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Replaces a file by writing a temporary file and renaming it over the old one.
fn rename_into_place(path: &Path, bytes: &[u8]) {
    let tmp = path.with_extension("tmp-new");
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn tag_of(out: &ChainOutcome) -> Option<String> {
    match out {
        ChainOutcome::Keep { event, .. } => event.extra.get("v").and_then(|v| v.as_str()).map(str::to_string),
        _ => None,
    }
}

/// Waits until `host` runs the `core_tagger(tag)` version of `id`.
fn wait_for_tag(host: &FilterHost, id: FilterId, tag: &str, timeout: Duration) {
    let s = sha(&core_tagger(tag));
    wait_for(&format!("the swap to {tag}"), timeout, || {
        host.status(id).sha256.as_deref() == Some(s.as_str())
    });
}

/// The tag of the version that processes one event (uid `uid`) now.
fn tag_now(w: &mut FilterWorker, id: FilterId, uid: &str) -> Option<String> {
    tag_of(&w.run_chain(&[id], event(uid, "X"), None))
}

/// Every log line of this test binary (the swaps are logged on the watcher thread).
fn global_logs() -> LogCapture {
    static LOGS: std::sync::OnceLock<LogCapture> = std::sync::OnceLock::new();
    LOGS.get_or_init(|| {
        let capture = LogCapture::default();
        let writer = capture.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new("info"))
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::set_global_default(subscriber).expect("one global subscriber");
        capture
    })
    .clone()
}

#[test]
fn hot_swap_under_load_loses_nothing_and_never_uses_a_bad_version() {
    let logs = global_logs();
    let dir = tempfile::tempdir().unwrap();
    let module = dir.path().join("tagger.wasm");
    std::fs::write(&module, core_tagger("v0")).unwrap();
    // The vector every good version passes: a replacement keeping the uid.
    let probe = event("probe", "BackOff");
    let vector = serde_json::json!({"input": probe, "expect": {"replace": {"uid": "probe"}}});
    std::fs::write(dir.path().join("tagger.test.jsonl"), format!("{vector}\n")).unwrap();
    let mut f = FilterConfig::new("tagger", &module);
    f.breaker_threshold = 0;
    let (host, metrics) = host(&[f], &dir.path().join("cache"));
    let id = host.id("tagger").unwrap();

    // sha256 → tag of every good version.
    let good: Arc<Mutex<HashMap<String, String>>> = Arc::new(Mutex::new(HashMap::new()));
    good.lock().unwrap().insert(sha(&core_tagger("v0")), "v0".into());
    let per_version: Arc<Mutex<HashMap<String, u64>>> = Arc::new(Mutex::new(HashMap::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));

    let stream = {
        let host = host.clone();
        let stop = stop.clone();
        let sent = sent.clone();
        let per_version = per_version.clone();
        std::thread::spawn(move || {
            let mut w = host.worker();
            let chain = [id];
            let mut results: Vec<(String, Vec<StepTrace>, ChainOutcome)> = Vec::new();
            let mut trace = Vec::new();
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let uid = format!("ev-{n}");
                sent.fetch_add(1, Ordering::Relaxed);
                trace.clear();
                let out = w.run_chain_traced(&chain, event(&uid, "BackOff"), None, &mut trace);
                if let Some(s) = trace.first().and_then(|t| t.sha256.clone()) {
                    *per_version.lock().unwrap().entry(s.to_string()).or_default() += 1;
                }
                results.push((uid, trace.clone(), out));
            }
            results
        })
    };

    let mut bad_shas = HashSet::new();
    for i in 1..=20 {
        let before = per_version.lock().unwrap().clone();
        if i % 2 == 1 {
            let tag = format!("v{i}");
            let bytes = core_tagger(&tag);
            let s = sha(&bytes);
            good.lock().unwrap().insert(s.clone(), tag.clone());
            // Alternate the two ways a file gets replaced.
            if i % 4 == 1 {
                rename_into_place(&module, &bytes);
            } else {
                std::fs::write(&module, &bytes).unwrap();
            }
            wait_for(&format!("swap to {tag}"), Duration::from_secs(20), || {
                host.status(id).sha256.as_deref() == Some(&s)
            });
            // Let the new version process some events.
            wait_for(&format!("events on {tag}"), Duration::from_secs(20), || {
                per_version.lock().unwrap().get(&s).copied().unwrap_or(0) > before.get(&s).copied().unwrap_or(0) + 10
            });
        } else {
            // Bad: alternately not WebAssembly at all, and a module that
            // compiles but fails the vector (keeps instead of replacing).
            let bytes = if i % 4 == 2 {
                format!("not wasm {i}").into_bytes()
            } else {
                core_keep_tagged(&format!("bad{i}"))
            };
            let s = sha(&bytes);
            bad_shas.insert(s.clone());
            rename_into_place(&module, &bytes);
            wait_for(&format!("rejection {i}"), Duration::from_secs(20), || {
                host.status(id).last_rejected.as_ref().is_some_and(|(r, _)| *r == s)
            });
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    stop.store(true, Ordering::Relaxed);
    let results = stream.join().unwrap();

    let good = good.lock().unwrap();
    assert_eq!(
        results.len() as u64,
        sent.load(Ordering::Relaxed),
        "every event came out"
    );
    let uids: HashSet<&str> = results.iter().map(|(u, _, _)| u.as_str()).collect();
    assert_eq!(uids.len(), results.len(), "no event twice");
    for (uid, trace, out) in &results {
        assert_eq!(trace.len(), 1, "{uid}: processed by exactly one version");
        let s = trace[0].sha256.as_deref().expect("a version");
        assert!(!bad_shas.contains(s), "{uid}: a rejected version was used");
        let tag = good.get(s).unwrap_or_else(|| panic!("{uid}: unknown version {s}"));
        assert_eq!(
            tag_of(out).as_deref(),
            Some(tag.as_str()),
            "{uid}: output of the version that the trace names"
        );
        match out {
            ChainOutcome::Keep { event, replaced: true } => assert_eq!(&event.uid, uid),
            other => panic!("{uid}: {other:?}"),
        }
    }
    let used: HashSet<&str> = results.iter().filter_map(|(_, t, _)| t[0].sha256.as_deref()).collect();
    assert_eq!(used.len(), 11, "v0 and the ten good replacements were all used");
    let m = metrics.filter("tagger");
    assert_eq!(m.swaps("swapped"), 10);
    assert!(m.swaps("rejected") >= 10, "rejected {}", m.swaps("rejected"));
    assert_eq!(host.status(id).swaps, 10);
    assert_eq!(m.error.get(), 0, "no event saw a failure");
    // Each swap is logged with the old and the new sha256; each rejection with both too.
    let text = logs.text();
    let (v0, v1) = (sha(&core_tagger("v0")), sha(&core_tagger("v1")));
    assert!(
        text.lines().any(|l| l.contains("filter module swapped")
            && l.contains(&format!("old_sha256={v0}"))
            && l.contains(&format!("new_sha256={v1}"))),
        "{text}"
    );
    let bad = sha(b"not wasm 2");
    assert!(
        text.lines().any(|l| l.contains("new filter module rejected")
            && l.contains(&format!("rejected_sha256={bad}"))
            && l.contains(&format!("running_sha256={v1}"))
            && l.contains("not a WebAssembly binary")),
        "{text}"
    );
}

/// Builds a ConfigMap volume: `name -> ..data/name`, `..data -> ..<ts>`.
fn configmap(dir: &Path, ts: &str, name: &str, bytes: &[u8]) {
    let real = dir.join(ts);
    std::fs::create_dir(&real).unwrap();
    std::fs::write(real.join(name), bytes).unwrap();
    let tmp = dir.join("..data_tmp");
    std::os::unix::fs::symlink(ts, &tmp).unwrap();
    std::fs::rename(&tmp, dir.join("..data")).unwrap();
    let link = dir.join(name);
    if std::fs::symlink_metadata(&link).is_err() {
        std::os::unix::fs::symlink(format!("..data/{name}"), &link).unwrap();
    }
}

#[test]
fn configmap_data_symlink_swap() {
    let dir = tempfile::tempdir().unwrap();
    let vol = dir.path().join("vol");
    std::fs::create_dir(&vol).unwrap();
    configmap(&vol, "..2026_05_01_10_00_00.1", "filter.wasm", &core_tagger("cm1"));
    let mut f = FilterConfig::new("cm", vol.join("filter.wasm"));
    f.breaker_threshold = 0;
    let (host, _) = host(&[f], &dir.path().join("cache"));
    let id = host.id("cm").unwrap();
    let mut w = host.worker();
    assert_eq!(tag_now(&mut w, id, "a").as_deref(), Some("cm1"));
    // The kubelet's update: a new timestamped dir, `..data` swapped atomically, the old dir removed.
    configmap(&vol, "..2026_05_01_10_05_00.2", "filter.wasm", &core_tagger("cm2"));
    std::fs::remove_dir_all(vol.join("..2026_05_01_10_00_00.1")).unwrap();
    wait_for_tag(&host, id, "cm2", Duration::from_secs(20));
    assert_eq!(tag_now(&mut w, id, "b").as_deref(), Some("cm2"));
    // And once more.
    configmap(&vol, "..2026_05_01_10_10_00.3", "filter.wasm", &core_tagger("cm3"));
    wait_for_tag(&host, id, "cm3", Duration::from_secs(20));
    assert_eq!(tag_now(&mut w, id, "c").as_deref(), Some("cm3"));
}

fn delete_host(
    policy: OnDelete,
) -> (
    tempfile::TempDir,
    Arc<FilterHost>,
    FilterId,
    Arc<event_collector::metrics::Metrics>,
) {
    let dir = tempfile::tempdir().unwrap();
    let module = dir.path().join("m.wasm");
    std::fs::write(&module, core_tagger("d1")).unwrap();
    let mut f = FilterConfig::new("m", &module);
    f.on_delete = policy;
    let (host, metrics) = host(&[f], &dir.path().join("cache"));
    let id = host.id("m").unwrap();
    (dir, host, id, metrics)
}

#[test]
fn deleting_with_on_delete_keep_keeps_the_last_good_version() {
    let (dir, host, id, metrics) = delete_host(OnDelete::Keep);
    let module = dir.path().join("m.wasm");
    let mut w = host.worker();
    std::fs::remove_file(&module).unwrap();
    wait_for("the deletion", Duration::from_secs(20), || host.status(id).deleted);
    assert_eq!(tag_now(&mut w, id, "a").as_deref(), Some("d1"));
    assert_eq!(metrics.filter("m").swaps("deleted"), 1);
    // A new file is picked up.
    std::fs::write(&module, core_tagger("d2")).unwrap();
    wait_for_tag(&host, id, "d2", Duration::from_secs(20));
    assert!(!host.status(id).deleted);
    assert_eq!(tag_now(&mut w, id, "b").as_deref(), Some("d2"));
}

#[test]
fn deleting_with_on_delete_bypass_skips_the_filter_until_it_is_back() {
    let (dir, host, id, metrics) = delete_host(OnDelete::Bypass);
    let module = dir.path().join("m.wasm");
    let mut w = host.worker();
    std::fs::remove_file(&module).unwrap();
    wait_for("the bypass", Duration::from_secs(20), || {
        host.status(id).sha256.is_none()
    });
    let input = event("a", "X");
    let mut trace = Vec::new();
    match w.run_chain_traced(&[id], input.clone(), None, &mut trace) {
        ChainOutcome::Keep { event, replaced } => assert!(!replaced && event == input),
        other => panic!("{other:?}"),
    }
    assert_eq!((trace[0].verdict, trace[0].sha256.clone()), ("bypassed", None));
    let m = metrics.filter("m");
    assert_eq!((m.swaps("bypassed"), m.bypassed.get()), (1, 1));
    // The same bytes again: restored without compiling.
    std::fs::write(&module, core_tagger("d1")).unwrap();
    wait_for("the restore", Duration::from_secs(20), || {
        host.status(id).sha256.is_some()
    });
    assert_eq!(m.swaps("restored"), 1);
    assert_eq!(tag_now(&mut w, id, "b").as_deref(), Some("d1"));
}

/// `check_now` (what the watcher runs) for a filter with `watch = false`.
#[test]
fn check_now_swaps_or_rejects_without_a_watcher() {
    let dir = tempfile::tempdir().unwrap();
    let mut f = filter_file(dir.path(), "n", &core_tagger("n1"));
    f.watch = false;
    let (host, _) = host(std::slice::from_ref(&f), &dir.path().join("cache"));
    let id = host.id("n").unwrap();
    assert_eq!(host.check_now(id), CheckOutcome::Unchanged);
    std::fs::write(&f.module, core_init_fails()).unwrap();
    match host.check_now(id) {
        CheckOutcome::Rejected { error, .. } => assert!(error.contains("init rejected"), "{error}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        host.check_now(id),
        CheckOutcome::Unchanged,
        "a rejected file is not tried again"
    );
    std::fs::write(&f.module, core_tagger("n2")).unwrap();
    assert!(matches!(host.check_now(id), CheckOutcome::Swapped { .. }));
    let mut w = host.worker();
    assert_eq!(tag_now(&mut w, id, "a").as_deref(), Some("n2"));
    assert_eq!(host.status(id).generation, 3, "n1, the rejected one, n2");
}

/// A debounce no test outlives: a swap seen within the tests' timeouts can
/// only come from the watcher ending the debounce early on a completed write.
const FOREVER: Duration = Duration::from_secs(3600);

/// A watched host for one module `dir/name.wasm` (version `tag`) with `watch_debounce = FOREVER`.
fn long_debounce_host(
    dir: &Path,
    name: &str,
    tag: &str,
) -> (Arc<FilterHost>, FilterId, Arc<event_collector::metrics::Metrics>) {
    let module = dir.join(format!("{name}.wasm"));
    std::fs::write(&module, core_tagger(tag)).unwrap();
    long_debounce_host_for(FilterConfig::new(name, &module), dir)
}

fn long_debounce_host_for(
    mut f: FilterConfig,
    dir: &Path,
) -> (Arc<FilterHost>, FilterId, Arc<event_collector::metrics::Metrics>) {
    f.breaker_threshold = 0;
    let metrics = Arc::new(event_collector::metrics::Metrics::new());
    let mut wasm = wasm_config(&dir.join("cache"));
    wasm.watch_debounce = FOREVER;
    let name = f.name.clone();
    let host = FilterHost::with_options(
        &[f],
        &wasm,
        metrics.clone(),
        event_collector::filter::HostOptions::default(),
    )
    .unwrap_or_else(|e| panic!("host: {e}"));
    let id = host.id(&name).unwrap();
    (host, id, metrics)
}

#[test]
fn a_rename_over_the_module_is_swapped_without_waiting_for_the_debounce() {
    let dir = tempfile::tempdir().unwrap();
    let (host, id, metrics) = long_debounce_host(dir.path(), "r", "r1");
    let module = dir.path().join("r.wasm");
    rename_into_place(&module, &core_tagger("r2"));
    wait_for_tag(&host, id, "r2", Duration::from_secs(60));
    let mut w = host.worker();
    assert_eq!(tag_now(&mut w, id, "a").as_deref(), Some("r2"));
    // And a second one: the first left no stale state behind.
    rename_into_place(&module, &core_tagger("r3"));
    wait_for_tag(&host, id, "r3", Duration::from_secs(60));
    assert_eq!(tag_now(&mut w, id, "b").as_deref(), Some("r3"));
    let m = metrics.filter("r");
    assert_eq!((m.swaps("swapped"), m.swaps("rejected")), (2, 0));
}

#[test]
fn an_in_place_write_is_swapped_when_the_file_is_closed() {
    let dir = tempfile::tempdir().unwrap();
    let (host, id, metrics) = long_debounce_host(dir.path(), "w", "w1");
    std::fs::write(dir.path().join("w.wasm"), core_tagger("w2")).unwrap();
    wait_for_tag(&host, id, "w2", Duration::from_secs(60));
    assert_eq!(tag_now(&mut host.worker(), id, "a").as_deref(), Some("w2"));
    assert_eq!(metrics.filter("w").swaps("swapped"), 1);
}

#[test]
fn a_half_written_module_is_not_swapped_in_and_the_finished_one_wins() {
    use std::io::Write as _;
    let dir = tempfile::tempdir().unwrap();
    let (host, id, metrics) = long_debounce_host(dir.path(), "h", "h1");
    let module = dir.path().join("h.wasm");
    let next = core_tagger("h2");
    let (head, tail) = next.split_at(next.len() / 2);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(&module)
        .unwrap();
    file.write_all(head).unwrap();
    file.sync_data().unwrap();
    // Half of it is on disk and the file still open: the old version keeps running.
    assert_eq!(tag_now(&mut host.worker(), id, "a").as_deref(), Some("h1"));
    file.write_all(tail).unwrap();
    drop(file);
    wait_for_tag(&host, id, "h2", Duration::from_secs(60));
    assert_eq!(tag_now(&mut host.worker(), id, "b").as_deref(), Some("h2"));
    let m = metrics.filter("h");
    assert_eq!(
        (m.swaps("swapped"), m.swaps("rejected")),
        (1, 0),
        "the half-written file was never checked"
    );
}

#[test]
fn a_configmap_data_swap_is_applied_without_waiting_for_the_debounce() {
    let dir = tempfile::tempdir().unwrap();
    let vol = dir.path().join("vol");
    std::fs::create_dir(&vol).unwrap();
    configmap(&vol, "..2026_05_01_10_00_00.1", "filter.wasm", &core_tagger("cm1"));
    let (host, id, _) = long_debounce_host_for(FilterConfig::new("cm", vol.join("filter.wasm")), dir.path());
    configmap(&vol, "..2026_05_01_10_05_00.2", "filter.wasm", &core_tagger("cm2"));
    wait_for_tag(&host, id, "cm2", Duration::from_secs(60));
    assert_eq!(tag_now(&mut host.worker(), id, "a").as_deref(), Some("cm2"));
}

#[test]
fn stopping_the_watcher_mid_debounce_returns() {
    let dir = tempfile::tempdir().unwrap();
    let (host, id, _) = long_debounce_host(dir.path(), "s", "s1");
    // A change that is not known complete: the watcher waits out the (hour-long) debounce.
    std::fs::write(dir.path().join("unrelated.txt"), b"x").unwrap();
    std::fs::remove_file(dir.path().join("unrelated.txt")).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let stopper = {
        let host = host.clone();
        std::thread::spawn(move || {
            host.stop_watching();
            let _ = tx.send(());
        })
    };
    rx.recv_timeout(Duration::from_secs(60))
        .expect("stop_watching returned while a debounce was pending");
    stopper.join().unwrap();
    // The host still works with the version it had.
    assert_eq!(tag_now(&mut host.worker(), id, "a").as_deref(), Some("s1"));
    drop(host);
}
