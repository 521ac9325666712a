//! Tiered compilation of hot-swapped modules: a swap not in the artifact
//! cache runs on Winch's baseline code at once, then moves to Cranelift's
//! code (same version, same verdicts); the baseline code keeps every limit
//! (epoch deadline, memory cap, traps contained).

#[path = "wasm/common.rs"]
mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use event_collector::config::WasmConfig;
use event_collector::filter::current::EventJson;
use event_collector::filter::engine::{EngineSet, Ticker, Tier};
use event_collector::filter::host::CheckOutcome;
use event_collector::filter::instance::InstanceSpec;
use event_collector::filter::{ChainOutcome, FailureKind, FilterHost, FilterId, FilterWorker, module};
use event_collector::metrics::Metrics;

fn wait_for(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The tag the version in use puts on one event.
fn tag_now(w: &mut FilterWorker, id: FilterId, uid: &str) -> Option<String> {
    match w.run_chain(&[id], event(uid, "X"), None) {
        ChainOutcome::Keep { event, .. } => event.extra.get("v").and_then(|v| v.as_str()).map(str::to_string),
        other => panic!("expected a kept event, got {other:?}"),
    }
}

fn wait_optimized(host: &FilterHost, id: FilterId) {
    wait_for("Cranelift's code", Duration::from_secs(120), || {
        host.status(id).tier == Some(Tier::Optimized)
    });
}

#[test]
fn a_swap_runs_on_baseline_code_then_on_cranelifts_and_the_cache_keeps_the_optimized_code() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let f = filter_file(dir.path(), "t", &core_tagger("a"));
    let (host, metrics) = host(std::slice::from_ref(&f), &cache);
    let id = host.id("t").unwrap();
    let m = metrics.filter("t");
    let s = host.status(id);
    assert_eq!(s.tier, Some(Tier::Optimized), "start-up compiles with Cranelift");
    let mut w = host.worker();
    assert_eq!(tag_now(&mut w, id, "e0").as_deref(), Some("a"));

    std::fs::write(&f.module, core_tagger("b")).unwrap();
    assert!(matches!(host.check_now(id), CheckOutcome::Swapped { .. }));
    let swapped = host.status(id);
    // The optimizing compile runs beside this test: its tier may already be
    // Optimized here; the `optimized` swap count below says it started on Baseline.
    assert_eq!(swapped.generation, 2);
    assert_eq!(tag_now(&mut w, id, "e1").as_deref(), Some("b"));

    wait_optimized(&host, id);
    let done = host.status(id);
    assert_eq!(
        (done.generation, done.sha256.clone()),
        (2, swapped.sha256.clone()),
        "the same version, now on optimized code"
    );
    assert_eq!(tag_now(&mut w, id, "e2").as_deref(), Some("b"));
    assert_eq!(m.swaps("swapped"), 1);
    assert_eq!(
        m.swaps("optimized"),
        1,
        "`b` was not in the cache: it started on baseline code"
    );
    assert!(
        m.instantiations("optimized") + m.instantiations("swap") >= 1,
        "the worker took the new code"
    );
    assert_eq!(m.swaps("optimize_failed"), 0);

    // A second host on the same cache starts from Cranelift's artifact.
    drop(w);
    drop(host);
    let (again, _) = common::host(std::slice::from_ref(&f), &cache);
    let s = again.status(again.id("t").unwrap());
    assert_eq!((s.tier, s.from_cache), (Some(Tier::Optimized), true));
}

#[test]
fn a_swap_back_to_a_cached_version_skips_the_baseline() {
    let dir = tempfile::tempdir().unwrap();
    let f = filter_file(dir.path(), "t", &core_tagger("a"));
    let (host, metrics) = host(std::slice::from_ref(&f), &dir.path().join("cache"));
    let id = host.id("t").unwrap();
    std::fs::write(&f.module, core_tagger("b")).unwrap();
    assert!(matches!(host.check_now(id), CheckOutcome::Swapped { .. }));
    std::fs::write(&f.module, core_tagger("a")).unwrap();
    assert!(matches!(host.check_now(id), CheckOutcome::Swapped { .. }));
    let s = host.status(id);
    assert_eq!(
        (s.tier, s.from_cache),
        (Some(Tier::Optimized), true),
        "`a` was compiled by Cranelift at start-up"
    );
    let mut w = host.worker();
    assert_eq!(tag_now(&mut w, id, "e").as_deref(), Some("a"));
    // `b`'s optimized code, when it comes (its artifact is cached), must not replace `a`.
    let cache = dir.path().join("cache");
    wait_for("b's optimizing compile", Duration::from_secs(120), || {
        std::fs::read_dir(&cache)
            .map(|d| {
                d.flatten()
                    .filter(|e| e.path().extension().is_some_and(|x| x == "cwasm"))
                    .count()
            })
            .unwrap_or(0)
            >= 2
    });
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(metrics.filter("t").swaps("optimized"), 0);
    assert_eq!(host.status(id).sha256, s.sha256);
    assert_eq!(tag_now(&mut w, id, "e").as_deref(), Some("a"));
    assert_eq!(host.status(id).generation, 3);
}

#[test]
fn a_superseded_baseline_version_never_comes_back() {
    let dir = tempfile::tempdir().unwrap();
    let f = filter_file(dir.path(), "t", &core_tagger("a"));
    let (host, _) = host(std::slice::from_ref(&f), &dir.path().join("cache"));
    let id = host.id("t").unwrap();
    let mut w = host.worker();
    for tag in ["b", "c", "d"] {
        std::fs::write(&f.module, core_tagger(tag)).unwrap();
        assert!(matches!(host.check_now(id), CheckOutcome::Swapped { .. }));
        assert_eq!(tag_now(&mut w, id, tag).as_deref(), Some(tag));
    }
    wait_optimized(&host, id);
    // Every optimizing compile has had time to finish: only `d` may be in use.
    std::thread::sleep(Duration::from_millis(500));
    for i in 0..20 {
        assert_eq!(tag_now(&mut w, id, &format!("x{i}")).as_deref(), Some("d"));
    }
    assert_eq!(host.status(id).generation, 4);
}

#[test]
fn with_tiered_off_a_swap_waits_for_cranelift() {
    let dir = tempfile::tempdir().unwrap();
    let f = filter_file(dir.path(), "t", &core_tagger("a"));
    let metrics = Arc::new(Metrics::new());
    let wasm = WasmConfig {
        tiered: false,
        ..wasm_config(&dir.path().join("cache"))
    };
    let host = FilterHost::with_options(
        std::slice::from_ref(&f),
        &wasm,
        metrics.clone(),
        event_collector::filter::HostOptions::default(),
    )
    .unwrap();
    let id = host.id("t").unwrap();
    std::fs::write(&f.module, core_tagger("b")).unwrap();
    assert!(matches!(host.check_now(id), CheckOutcome::Swapped { .. }));
    assert_eq!(host.status(id).tier, Some(Tier::Optimized));
    assert_eq!(metrics.filter("t").swaps("optimized"), 0);
}

/// Baseline code directly (no optimizing compile racing the test): each
/// fault is caught as on Cranelift's code, and the instance is usable again
/// after a re-instantiation.
#[test]
fn baseline_code_keeps_the_deadline_the_memory_cap_and_contains_traps() {
    let wasm = WasmConfig {
        pooling: false,
        cache: false,
        ..WasmConfig::default()
    };
    let set = EngineSet::new(&wasm, 512 << 10, 8 << 20).unwrap();
    let _ticker = Ticker::start(set.engines().cloned().collect(), wasm.epoch_tick).unwrap();
    let spec = InstanceSpec {
        filter: Arc::from("f"),
        memory_limit: 8 << 20,
        allow_env: Vec::new(),
        allow_read_dirs: Vec::new(),
        init_ticks: set.ticks(Duration::from_secs(5)),
        inherit_stdio: false,
    };
    let metrics = Metrics::new();
    for (bytes, kind) in [
        (core_loop(), FailureKind::Timeout),
        (core_bomb(), FailureKind::Memory),
        (core_trap(), FailureKind::Trap),
    ] {
        let v = module::load(&set, &bytes, "sha", "f.wasm".into(), 1, None, &metrics, true).unwrap();
        assert_eq!(v.tier, Tier::Baseline);
        let mut inst = v.instantiate(&spec, "{}").unwrap();
        let mut ev = event("u", "X");
        let mut json = EventJson::new(None, Vec::new());
        let started = Instant::now();
        let err = inst
            .process(&mut ev, &mut json, set.ticks(Duration::from_millis(50)))
            .expect_err("the call fails");
        assert_eq!(err.kind, kind, "{}", err.message);
        if kind == FailureKind::Timeout {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "the deadline stopped the loop"
            );
        }
        assert!(v.instantiate(&spec, "{}").is_ok(), "a new instance after the fault");
    }
    // And a working module gives the same verdict on both tiers.
    let bytes = core_tagger("z");
    for quick in [true, false] {
        let v = module::load(&set, &bytes, "sha", "f.wasm".into(), 1, None, &metrics, quick).unwrap();
        assert_eq!(v.tier, if quick { Tier::Baseline } else { Tier::Optimized });
        let mut inst = v.instantiate(&spec, "{}").unwrap();
        let mut ev = event("u", "X");
        let mut json = EventJson::new(None, Vec::new());
        let out = inst.process(&mut ev, &mut json, set.ticks(Duration::from_secs(5)));
        assert!(out.is_ok(), "{:?}", out.err().map(|e| e.message));
    }
}
