//! The WASM filter host: faults are contained (timeout, memory cap, trap,
//! bad output, denied file access), on_error policies, the circuit breaker,
//! instance reuse and recycling, the compiled-module cache, load-time
//! validation, and the author tools.

#[path = "wasm/common.rs"]
mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use event_collector::config::{FilterConfig, OnError};
use event_collector::filter::tools::{TestOptions, filter_check, filter_test};
use event_collector::filter::{BreakerState, ChainOutcome, FilterHost, FilterId, HostOptions, StepResult};
use event_collector::metrics::Metrics;

/// Every fault of a component is contained; the next good event works on a
/// fresh instance; counts are exact.
#[test]
fn component_faults_are_contained_and_the_next_call_works() {
    let dir = tempfile::tempdir().unwrap();
    let mut f = FilterConfig::new("guest", guest_copy(dir.path(), "guest.wasm"));
    f.watch = false;
    f.breaker_threshold = 0;
    f.memory_limit = 16 << 20;
    f.recycle_memory_above = Some(16 << 20);
    let (host, metrics) = host(&[f], &dir.path().join("cache"));
    let chain = one(&host, "guest");
    let mut w = host.worker();

    let faults = [
        ("Loop", "timeout"),
        ("Bomb", "memory"),
        ("Trap", "trap"),
        ("Garbage", "invalid_output"),
        ("Invalid", "invalid_output"),
        ("ChangeUid", "invalid_output"),
        ("Error", "guest_error"),
        ("Open", "guest_error"),
    ];
    for (i, (reason, _)) in faults.iter().enumerate() {
        let input = event(&format!("bad-{i}"), reason);
        let started = std::time::Instant::now();
        let (out, replaced) = keep_event(w.run_chain(&chain, input.clone(), None));
        assert_eq!(out, input, "{reason}: on_error = pass keeps the event unchanged");
        assert!(!replaced);
        assert!(
            started.elapsed() < TEST_TIMEOUT * 4,
            "{reason} took {:?}",
            started.elapsed()
        );
        // The next good call works (on a new instance after a poisoning fault).
        let (good, replaced) = keep_event(w.run_chain(&chain, event(&format!("good-{i}"), "Enrich"), None));
        assert!(replaced, "after {reason}");
        assert_eq!(good.extra["team"], "money");
        assert_eq!(good.labels["team"], "money");
        assert_eq!(good.uid, format!("good-{i}"));
    }
    let m = metrics.filter("guest");
    assert_eq!(m.failures("timeout"), 1);
    assert_eq!(m.failures("memory"), 1);
    assert_eq!(m.failures("trap"), 1);
    assert_eq!(m.failures("invalid_output"), 3);
    assert_eq!(m.failures("guest_error"), 2);
    assert_eq!(m.error.get(), 8);
    assert_eq!(m.replace.get(), 8);
    assert_eq!(m.instantiations("start"), 1);
    assert_eq!(
        m.instantiations("failure"),
        3,
        "loop, bomb and trap poison the instance"
    );
    assert!(
        metrics
            .encode()
            .contains("event_collector_filter_failures_total{filter=\"guest\",kind=\"timeout\"} 1")
    );
}

/// The same faults from core modules, each module on its own.
#[test]
fn core_module_faults_are_contained() {
    let dir = tempfile::tempdir().unwrap();
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("loop", core_loop(), "timeout"),
        ("bomb", core_bomb(), "memory"),
        ("trap", core_trap(), "trap"),
        ("garbage", core_const("{not json"), "invalid_output"),
        ("unknown", core_const(r#"{"verdict":"maybe"}"#), "invalid_output"),
        (
            "invalid",
            core_const(r#"{"verdict":"replace","event":{"uid":"x"}}"#),
            "invalid_output",
        ),
        ("error", core_const(r#"{"error":"nope"}"#), "guest_error"),
        ("open", core_open(), "guest_error"),
    ];
    let filters: Vec<FilterConfig> = cases
        .iter()
        .map(|(name, bytes, _)| {
            let mut f = filter_file(dir.path(), name, bytes);
            f.breaker_threshold = 0;
            f.memory_limit = 8 << 20;
            f.recycle_memory_above = Some(8 << 20);
            if *name == "loop" {
                // Only the loop can run into it, so it can be short even on a busy machine.
                f.timeout = Duration::from_millis(20);
            }
            f
        })
        .collect();
    let (host, metrics) = host(&filters, &dir.path().join("cache"));
    let mut w = host.worker();
    for (name, _, kind) in &cases {
        let chain = one(&host, name);
        for i in 0..3 {
            let input = event(&format!("{name}-{i}"), "BackOff");
            let started = std::time::Instant::now();
            let (out, _) = keep_event(w.run_chain(&chain, input.clone(), None));
            assert_eq!(out, input);
            if *name == "loop" {
                let took = started.elapsed();
                assert!(
                    took >= Duration::from_millis(18) && took < Duration::from_secs(1),
                    "{took:?}"
                );
            }
        }
        let m = metrics.filter(name);
        assert_eq!(m.failures(kind), 3, "{name}");
        assert_eq!(m.error.get(), 3, "{name}");
        let poisons = matches!(*kind, "timeout" | "memory" | "trap");
        assert_eq!(m.instantiations("failure"), if poisons { 2 } else { 0 }, "{name}");
        assert_eq!(m.instantiations("start"), 1, "{name}");
    }
}

/// A replacement that changes uid or resource_version is invalid output.
#[test]
fn replacement_must_keep_identity() {
    let dir = tempfile::tempdir().unwrap();
    let mut other = event("someone-else", "X");
    other.resource_version = "12345".into();
    let out = serde_json::json!({"verdict": "replace", "event": other}).to_string();
    let mut rv = event("same", "X");
    rv.resource_version = "999".into();
    let out_rv = serde_json::json!({"verdict": "replace", "event": rv}).to_string();
    let a = filter_file(dir.path(), "uid", &core_const(&out));
    let b = filter_file(dir.path(), "rv", &core_const(&out_rv));
    let (host, _) = host(&[a, b], &dir.path().join("cache"));
    let mut w = host.worker();
    let uid = one(&host, "uid")[0];
    let rvid = one(&host, "rv")[0];
    match w.call(uid, &mut event("same", "X"), None) {
        StepResult::Failed(e) => assert!(e.message.contains("changed uid"), "{e}"),
        other => panic!("{other:?}"),
    }
    match w.call(rvid, &mut event("same", "X"), None) {
        StepResult::Failed(e) => assert!(e.message.contains("changed resource_version"), "{e}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn on_error_drop_and_dead_letter() {
    let dir = tempfile::tempdir().unwrap();
    let mut d = filter_file(dir.path(), "dropper", &core_trap());
    d.on_error = OnError::Drop;
    let mut dl = filter_file(dir.path(), "dl", &core_trap());
    dl.on_error = OnError::DeadLetter;
    dl.dead_letter = Some("dlq".into());
    let keep = filter_file(dir.path(), "keep", &core_keep());
    let (host, _) = host(&[d, dl, keep], &dir.path().join("cache"));
    let mut w = host.worker();
    let input = event("uid-1", "BackOff");
    match w.run_chain(&host.chain(&["keep", "dropper"]).unwrap(), input.clone(), None) {
        ChainOutcome::Drop { by, error } => {
            assert_eq!(&*by, "dropper");
            let e = error.expect("why");
            assert!(
                e.contains("wasm trap") && e.contains("uid-1") && e.contains("dropper.wasm"),
                "{e}"
            );
        }
        other => panic!("{other:?}"),
    }
    match w.run_chain(&host.chain(&["keep", "dl", "keep"]).unwrap(), input.clone(), None) {
        ChainOutcome::DeadLetter {
            event,
            filter,
            error,
            exporter,
        } => {
            assert_eq!(event, input);
            assert_eq!(&*filter, "dl");
            assert_eq!(&*exporter, "dlq");
            assert!(error.contains("filter `dl`") && error.contains("uid uid-1"), "{error}");
        }
        other => panic!("{other:?}"),
    }
}

/// The breaker opens after N consecutive failures, bypasses per on_error,
/// half-opens after the cooldown and closes on a good trial.
#[test]
fn breaker_opens_and_closes() {
    let dir = tempfile::tempdir().unwrap();
    let mut f = FilterConfig::new("guest", guest_copy(dir.path(), "guest.wasm"));
    f.watch = false;
    f.breaker_threshold = 3;
    f.breaker_cooldown = Duration::from_millis(300);
    f.on_error = OnError::Drop;
    let (host, metrics) = host(&[f], &dir.path().join("cache"));
    let id = one(&host, "guest");
    let mut w = host.worker();
    let m = metrics.filter("guest");
    let ((), logs) = capture_logs(|| breaker_sequence(&host, &mut w, &id, &m));
    assert!(
        logs.contains("circuit breaker opened") && logs.contains("failures=3"),
        "{logs}"
    );
    assert!(logs.contains("circuit breaker half-open"), "{logs}");
    assert!(
        logs.contains("circuit breaker closed: the trial call succeeded"),
        "{logs}"
    );
}

fn breaker_sequence(
    host: &FilterHost,
    w: &mut event_collector::filter::FilterWorker,
    id: &[FilterId],
    m: &event_collector::metrics::FilterMetrics,
) {
    // Two failures, a success: the count starts over.
    for r in ["Trap", "Error", "Drop"] {
        assert!(matches!(
            w.run_chain(id, event("a", r), None),
            ChainOutcome::Drop { .. }
        ));
    }
    assert_eq!(host.status(id[0]).breaker, BreakerState::Closed);
    for r in ["Trap", "Trap", "Error"] {
        assert!(matches!(
            w.run_chain(id, event("b", r), None),
            ChainOutcome::Drop { error: Some(_), .. }
        ));
    }
    assert_eq!(host.status(id[0]).breaker, BreakerState::Open);
    assert_eq!(m.breaker_state.get(), 1);
    assert_eq!(m.error.get(), 5);
    // Open: even good events are not called; on_error (drop) applies.
    for _ in 0..4 {
        match w.run_chain(id, event("c", "Enrich"), None) {
            ChainOutcome::Drop { error: Some(e), .. } => assert!(e.contains("circuit breaker open"), "{e}"),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(m.bypassed.get(), 4);
    assert_eq!(m.error.get(), 5, "no calls while open");
    std::thread::sleep(Duration::from_millis(350));
    let (ev, replaced) = keep_event(w.run_chain(id, event("d", "Enrich"), None));
    assert!(replaced && ev.extra["team"] == "money");
    assert_eq!(host.status(id[0]).breaker, BreakerState::Closed);
    assert_eq!(m.breaker_state.get(), 0);
    assert_eq!(m.replace.get(), 1);
}

#[test]
fn guest_log_lines_reach_the_collector_log() {
    let dir = tempfile::tempdir().unwrap();
    let mut g = FilterConfig::new("guest", guest_copy(dir.path(), "guest.wasm"));
    g.watch = false;
    let c = filter_file(dir.path(), "core_logger", &core_logger());
    let (host, _) = host(&[g, c], &dir.path().join("cache"));
    let mut w = host.worker();
    let (results, logs) = capture_logs(|| {
        (
            w.call(host.id("guest").unwrap(), &mut event("u", "Log"), None),
            w.call(host.id("core_logger").unwrap(), &mut event("u", "X"), None),
        )
    });
    assert_eq!(results, (StepResult::Keep, StepResult::Keep));
    assert!(
        logs.contains("INFO") && logs.contains("hello from the test guest about web-7d9f8c6b5-abcde"),
        "{logs}"
    );
    assert!(logs.contains("filter=\"guest\""), "{logs}");
    assert!(
        logs.contains("WARN") && logs.contains("core says hi") && logs.contains("filter=\"core_logger\""),
        "{logs}"
    );
}

#[test]
fn breaker_reopens_when_the_trial_fails() {
    let dir = tempfile::tempdir().unwrap();
    let mut f = filter_file(dir.path(), "trap", &core_trap());
    f.breaker_threshold = 2;
    f.breaker_cooldown = Duration::from_millis(100);
    let (host, metrics) = host(&[f], &dir.path().join("cache"));
    let id = one(&host, "trap");
    let mut w = host.worker();
    let m = metrics.filter("trap");
    for _ in 0..5 {
        keep_event(w.run_chain(&id, event("a", "X"), None));
    }
    assert_eq!(m.error.get(), 2);
    assert_eq!(m.bypassed.get(), 3);
    std::thread::sleep(Duration::from_millis(150));
    keep_event(w.run_chain(&id, event("a", "X"), None)); // the trial: fails
    assert_eq!(m.error.get(), 3);
    assert_eq!(host.status(id[0]).breaker, BreakerState::Open);
    keep_event(w.run_chain(&id, event("a", "X"), None));
    assert_eq!(m.error.get(), 3, "open again: bypassed");
    assert_eq!(m.bypassed.get(), 4);
}

/// One instance serves every call (state persists), per worker; recycling
/// after N calls starts the state over.
#[test]
fn instances_are_reused_and_recycled() {
    let dir = tempfile::tempdir().unwrap();
    let guest = guest_copy(dir.path(), "guest.wasm");
    let mut reuse = FilterConfig::new("reuse", &guest);
    reuse.watch = false;
    reuse.config_json = r#"{"mode":"count"}"#.into();
    let mut recycle = reuse.clone();
    recycle.name = "recycle".into();
    recycle.recycle_after_calls = 3;
    let (host, metrics) = host(&[reuse, recycle], &dir.path().join("cache"));
    let count = |out: ChainOutcome| keep_event(out).0.extra["count"].as_u64().unwrap();
    let mut w = host.worker();
    let a = one(&host, "reuse");
    let seen: Vec<u64> = (0..5)
        .map(|i| count(w.run_chain(&a, event(&i.to_string(), "X"), None)))
        .collect();
    assert_eq!(seen, [1, 2, 3, 4, 5]);
    let mut w2 = host.worker();
    assert_eq!(
        count(w2.run_chain(&a, event("x", "X"), None)),
        1,
        "each worker has its own instance"
    );
    assert_eq!(metrics.filter("reuse").instantiations("start"), 2);

    let b = one(&host, "recycle");
    let seen: Vec<u64> = (0..7)
        .map(|i| count(w.run_chain(&b, event(&i.to_string(), "X"), None)))
        .collect();
    assert_eq!(seen, [1, 2, 3, 1, 2, 3, 1]);
    assert_eq!(metrics.filter("recycle").instantiations("recycle_calls"), 2);
}

#[test]
fn core_instances_are_reused_and_recycled_by_memory() {
    let dir = tempfile::tempdir().unwrap();
    let counter = filter_file(dir.path(), "counter", &core_counter());
    let mut big = filter_file(dir.path(), "big", &core_keep());
    // The module starts with 4 pages (256 KiB): above this after every call.
    big.recycle_memory_above = Some(100_000);
    let (host, metrics) = host(&[counter, big], &dir.path().join("cache"));
    let mut w = host.worker();
    let c = one(&host, "counter");
    let verdicts: Vec<&str> = (0..4)
        .map(|_| match w.run_chain(&c, event("a", "X"), None) {
            ChainOutcome::Keep { .. } => "keep",
            ChainOutcome::Drop { .. } => "drop",
            _ => "other",
        })
        .collect();
    assert_eq!(
        verdicts,
        ["keep", "drop", "keep", "drop"],
        "state persists across calls"
    );
    let b = one(&host, "big");
    for _ in 0..3 {
        keep_event(w.run_chain(&b, event("a", "X"), None));
        assert_eq!(w.instance_memory(b[0]), None, "recycled after the call");
    }
    // Counted when the replacement is created: the third is created on the next call.
    assert_eq!(metrics.filter("big").instantiations("start"), 1);
    assert_eq!(metrics.filter("big").instantiations("recycle_memory"), 2);
    assert!(w.instance_memory(c[0]).unwrap() >= 4 * 65536);
}

/// No ambient authority: files and environment only when granted.
#[test]
fn files_and_environment_need_a_grant() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::write(data.join("secret.txt"), "s3cret").unwrap();
    let guest = guest_copy(dir.path(), "guest.wasm");
    let path_cfg = format!(r#"{{"path":"{}","var":"PATH"}}"#, data.join("secret.txt").display());
    let mut denied = FilterConfig::new("denied", &guest);
    denied.watch = false;
    denied.breaker_threshold = 0;
    denied.config_json = path_cfg.clone();
    let mut granted = denied.clone();
    granted.name = "granted".into();
    granted.allow_read_dirs = vec![data.clone()];
    granted.allow_env = vec!["PATH".into()];
    let core_denied = filter_file(dir.path(), "core_open", &core_open());
    let mut core_granted = core_denied.clone();
    core_granted.name = "core_open_granted".into();
    core_granted.allow_read_dirs = vec![data.clone()];
    let core_env_denied = filter_file(dir.path(), "core_env", &core_env());
    let mut core_env_granted = core_env_denied.clone();
    core_env_granted.name = "core_env_granted".into();
    core_env_granted.allow_env = vec!["PATH".into()];
    let (host, _) = host(
        &[
            denied,
            granted,
            core_denied,
            core_granted,
            core_env_denied,
            core_env_granted,
        ],
        &dir.path().join("cache"),
    );
    let mut w = host.worker();
    let call = |w: &mut event_collector::filter::FilterWorker, name: &str, reason: &str| {
        w.call(host.id(name).unwrap(), &mut event("u", reason), None)
    };
    match call(&mut w, "denied", "Open") {
        StepResult::Failed(e) => assert!(e.message.contains("cannot open"), "{e}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        call(&mut w, "granted", "Open"),
        StepResult::Drop,
        "read-only preopen works"
    );
    assert_eq!(call(&mut w, "denied", "Env"), StepResult::Keep, "no environment");
    match call(&mut w, "granted", "Env") {
        StepResult::Replace(ev) => assert_eq!(ev.extra["env"], std::env::var("PATH").unwrap()),
        other => panic!("{other:?}"),
    }
    match call(&mut w, "core_open", "X") {
        StepResult::Failed(e) => assert_eq!(e.message, "opening secret.txt was denied"),
        other => panic!("{other:?}"),
    }
    assert_eq!(call(&mut w, "core_open_granted", "X"), StepResult::Drop);
    assert_eq!(call(&mut w, "core_env", "X"), StepResult::Keep);
    assert_eq!(call(&mut w, "core_env_granted", "X"), StepResult::Drop);
}

#[test]
fn chains_run_in_order_and_serialize_replacements() {
    let dir = tempfile::tempdir().unwrap();
    let guest = guest_copy(dir.path(), "guest.wasm");
    let mut enrich = FilterConfig::new("enrich", &guest);
    enrich.watch = false;
    enrich.config_json = r#"{"mode":"enrich"}"#.into();
    let tag = filter_file(dir.path(), "tag", &core_tagger("t1"));
    let dropper = filter_file(dir.path(), "dropper", &core_const(r#"{"verdict":"drop"}"#));
    let (host, _) = host(&[enrich, tag, dropper], &dir.path().join("cache"));
    let mut w = host.worker();
    let input = event("u1", "BackOff");
    let json = serde_json::to_vec(&input).unwrap();
    // The tagger writes its own `extra` (a second one would be a duplicate
    // field), so it runs on the event before the enricher fills `extra`.
    let (ev, replaced) = keep_event(w.run_chain(&host.chain(&["tag", "enrich"]).unwrap(), input.clone(), Some(&json)));
    assert!(replaced);
    assert_eq!(ev.extra["v"], "t1");
    assert_eq!(ev.extra["team"], "money");
    match w.run_chain(&host.chain(&["enrich", "dropper", "tag"]).unwrap(), input.clone(), None) {
        ChainOutcome::Drop { by, error: None } => assert_eq!(&*by, "dropper"),
        other => panic!("{other:?}"),
    }
    let (ev, replaced) = keep_event(w.run_chain(&[], input.clone(), None));
    assert!(!replaced && ev == input);
}

/// The second load of the same module comes from the artifact cache; a
/// changed module is a new key; a tampered artifact is not trusted.
#[test]
fn compiled_modules_are_cached_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let f = filter_file(dir.path(), "keep", &core_keep_tagged("one"));
    let g = FilterConfig {
        name: "guest".into(),
        watch: false,
        ..FilterConfig::new("guest", guest_copy(dir.path(), "guest.wasm"))
    };
    let load = |filters: &[FilterConfig]| {
        let (host, metrics) = host(filters, &cache);
        let from_cache: Vec<bool> = (0..filters.len())
            .map(|i| host.status(host.id(&filters[i].name).unwrap()).from_cache)
            .collect();
        (
            metrics.filter_cache_count("hit"),
            metrics.filter_cache_count("miss"),
            metrics.filter_cache_count("invalid"),
            from_cache,
        )
    };
    assert_eq!(load(&[f.clone(), g.clone()]), (0, 2, 0, vec![false, false]));
    assert_eq!(load(&[f.clone(), g.clone()]), (2, 0, 0, vec![true, true]));
    let artifacts = std::fs::read_dir(&cache)
        .unwrap()
        .filter(|e| e.as_ref().unwrap().path().extension().is_some_and(|x| x == "cwasm"))
        .count();
    assert_eq!(artifacts, 2);
    // A changed module: a new key.
    std::fs::write(&f.module, core_keep_tagged("two")).unwrap();
    assert_eq!(load(std::slice::from_ref(&f)), (0, 1, 0, vec![false]));
    // A tampered artifact: not loaded, compiled again (and rewritten).
    for e in std::fs::read_dir(&cache).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "cwasm") {
            let mut b = std::fs::read(&p).unwrap();
            let n = b.len();
            b[n / 2] ^= 0xff;
            std::fs::write(&p, b).unwrap();
        }
    }
    assert_eq!(load(std::slice::from_ref(&f)), (0, 0, 1, vec![false]));
    assert_eq!(load(std::slice::from_ref(&f)), (1, 0, 0, vec![true]));
}

/// Loading validates: init with the filter's config, and the vectors beside the module.
#[test]
fn load_runs_init_and_vectors() {
    let dir = tempfile::tempdir().unwrap();
    let guest = guest_copy(dir.path(), "enricher.wasm");
    let ev = event("v-1", "BackOff");
    let good = serde_json::json!({"input": ev, "config": {"mode": "enrich"}, "expect": {"replace": {"extra": {"team": "money"}}}});
    let keep = serde_json::json!({"input": ev, "expect": "keep"});
    let trap = serde_json::json!({"input": event("v-2", "Trap"), "expect": {"error": true}});
    std::fs::write(
        dir.path().join("enricher.test.jsonl"),
        format!("{good}\n\n{keep}\n{trap}\n"),
    )
    .unwrap();
    let mut f = FilterConfig::new("enricher", &guest);
    f.watch = false;
    let metrics = Arc::new(Metrics::new());
    let w = wasm_config(&dir.path().join("cache"));
    FilterHost::with_options(std::slice::from_ref(&f), &w, metrics.clone(), HostOptions::default())
        .expect("vectors pass");

    // A failing vector rejects the module, naming the filter, the file and the vector.
    let bad = serde_json::json!({"input": ev, "expect": "drop"});
    std::fs::write(dir.path().join("enricher.more.test.jsonl"), format!("{bad}\n")).unwrap();
    let e = FilterHost::with_options(std::slice::from_ref(&f), &w, metrics.clone(), HostOptions::default())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("filter `enricher`")
            && e.contains("enricher.wasm")
            && e.contains("enricher.more.test.jsonl:1")
            && e.contains("expected drop, got keep"),
        "{e}"
    );
    std::fs::remove_file(dir.path().join("enricher.more.test.jsonl")).unwrap();

    // init refusing the config rejects the module.
    f.config_json = r#"{"fail_init": true}"#.into();
    let e = FilterHost::with_options(std::slice::from_ref(&f), &w, metrics.clone(), HostOptions::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("init rejected the config: init refused"), "{e}");
    let c = filter_file(dir.path(), "core_init", &core_init_fails());
    let e = FilterHost::with_options(&[c], &w, metrics.clone(), HostOptions::default())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("filter `core_init`") && e.contains("init rejected the config: no thanks"),
        "{e}"
    );

    // A missing file and a non-module name the filter and the file.
    let missing = FilterConfig::new("gone", dir.path().join("gone.wasm"));
    let e = FilterHost::with_options(&[missing], &w, metrics.clone(), HostOptions::default())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("filter `gone`") && e.contains("gone.wasm") && e.contains("cannot read"),
        "{e}"
    );
    let junk = filter_file(dir.path(), "junk", b"\0asm\x01\0\0\0garbage");
    let e = FilterHost::with_options(&[junk], &w, metrics, HostOptions::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("filter `junk`") && e.contains("does not compile"), "{e}");
}

#[test]
fn filter_check_reports_contract_exports_and_grants() {
    let dir = tempfile::tempdir().unwrap();
    let guest = guest_copy(dir.path(), "guest.wasm");
    let mut out = Vec::new();
    filter_check(&guest, None, &mut out).expect("a good component");
    let text = String::from_utf8(out).unwrap();
    assert!(text.contains("contract: event-collector:filter@0.3.0"), "{text}");
    assert!(
        text.contains("event-collector:filter/filter@0.3.0: init, process"),
        "{text}"
    );
    assert!(
        text.contains("event-collector:filter/host@0.3.0  provided by the host"),
        "{text}"
    );
    assert!(
        text.contains("wasi:filesystem/preopens") && text.contains("NOT GRANTED"),
        "{text}"
    );
    assert!(text.contains("link:     ok") && text.contains("init:     ok"), "{text}");

    // With a collector config granting a directory.
    let cfg = dir.path().join("collector.toml");
    std::fs::write(
        &cfg,
        "[[filters]]\nname = \"g\"\nmodule = \"guest.wasm\"\nallow_read_dirs = [\".\"]\nconfig = { mode = \"enrich\" }\n",
    )
    .unwrap();
    let mut out = Vec::new();
    filter_check(&guest, Some(&cfg), &mut out).unwrap();
    let text = String::from_utf8(out).unwrap();
    assert!(
        text.contains("using [[filters]] `g`") && text.contains("granted read-only"),
        "{text}"
    );

    let core = filter_file(dir.path(), "core", &core_open()).module;
    let mut out = Vec::new();
    filter_check(&core, None, &mut out).unwrap();
    let text = String::from_utf8(out).unwrap();
    assert!(text.contains("core-module ABI"), "{text}");
    assert!(text.contains("wasi_snapshot_preview1.path_open  NOT GRANTED"), "{text}");
    // Exports read as signatures, not Rust debug output.
    assert!(text.contains("  process: func(i32, i32) -> i64"), "{text}");
    assert!(text.contains("  memory: memory ("), "{text}");
    assert!(!text.contains("FuncType"), "{text}");

    let bad = filter_file(
        dir.path(),
        "bad",
        &wat::parse_str("(module (memory (export \"memory\") 1))").unwrap(),
    )
    .module;
    let mut out = Vec::new();
    let e = filter_check(&bad, None, &mut out).unwrap_err().to_string();
    assert!(e.contains("alloc") && e.contains("process"), "{e}");
}

#[test]
fn filter_test_prints_verdicts_diffs_and_timings() {
    let dir = tempfile::tempdir().unwrap();
    let guest = guest_copy(dir.path(), "guest.wasm");
    let config = dir.path().join("c.json");
    std::fs::write(&config, r#"{"mode":"enrich"}"#).unwrap();
    let input = dir.path().join("events.jsonl");
    let ev = serde_json::to_string(&event("t-1", "BackOff")).unwrap();
    let dropped = serde_json::to_string(&event("t-2", "Drop")).unwrap();
    let vector = serde_json::json!({"input": event("t-3", "Error"), "expect": {"error": true}});
    let wrong = serde_json::json!({"input": event("t-4", "Drop"), "expect": "keep"});
    std::fs::write(&input, format!("{ev}\n{dropped}\n{vector}\n")).unwrap();
    let opts = TestOptions {
        module: guest.clone(),
        config: Some(config.clone()),
        input: input.clone(),
        repeat: 3,
        cluster: "c".into(),
        timeout: None,
    };
    let mut out = Vec::new();
    let s = filter_test(&opts, &mut out).expect("runs");
    let text = String::from_utf8(out).unwrap();
    assert_eq!(
        (s.events, s.replace, s.drop, s.errors, s.vectors_passed),
        (3, 1, 1, 1, 1)
    );
    assert!(
        text.contains("→ replace") && text.contains("+ extra.team: \"money\""),
        "{text}"
    );
    assert!(
        text.contains("~ labels.team") || text.contains("+ labels.team"),
        "{text}"
    );
    assert!(text.contains("PASS (expect error)"), "{text}");
    assert!(
        text.contains("time per call (9 calls") && text.contains("median"),
        "{text}"
    );

    std::fs::write(&input, format!("{wrong}\n")).unwrap();
    let mut out = Vec::new();
    let e = filter_test(&opts, &mut out).unwrap_err().to_string();
    assert!(e.contains("1 test vector(s) failed"), "{e}");
}
