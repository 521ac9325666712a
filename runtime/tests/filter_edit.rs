//! The `edit` verdict (contract 0.2.0) end to end on the filter host:
//! components and core modules, valid and invalid edit lists, the JSON the
//! next filter sees, metrics, `filter test` and vectors; and components built
//! against the 0.1.0 contract still running as before.

#[path = "wasm/common.rs"]
mod common;

use common::*;
use event_collector::config::{FilterConfig, OnError};
use event_collector::event::Event;
use event_collector::filter::tools::{TestOptions, filter_check, filter_test};
use event_collector::filter::{ChainOutcome, ModuleKind, StepResult};

fn component(dir: &std::path::Path, name: &str, mode: &str) -> FilterConfig {
    let mut f = FilterConfig::new(name, guest_copy(dir, &format!("{name}.wasm")));
    f.watch = false;
    f.config_json = format!(r#"{{"mode":"{mode}"}}"#);
    f
}

/// What the test guest's `Edit` answer must do to `input` (see its `edit`).
fn assert_edited(ev: &Event, input: &Event) {
    assert_eq!(ev.extra["team"], "money");
    assert_eq!(ev.extra["enriched_by"], "test-guest");
    assert!(!ev.extra.contains_key("gone"), "set then removed");
    assert_eq!(ev.labels["team"], "money", "the last set-label wins");
    assert_eq!(ev.labels["app"], "web");
    assert!(!ev.labels.contains_key("tier"));
    assert_eq!(ev.annotations.get("edited").map(String::as_str), Some("yes"));
    assert!(!ev.annotations.contains_key("team"));
    let text = format!("edited: {}", input.reason.as_deref().unwrap_or(""));
    assert_eq!(ev.message.as_deref(), Some(text.as_str()));
    assert_eq!(ev.note.as_deref(), Some(text.as_str()));
    // Nothing else changed.
    let mut rest = ev.clone();
    rest.extra = input.extra.clone();
    rest.labels = input.labels.clone();
    rest.annotations = input.annotations.clone();
    rest.message = input.message.clone();
    rest.note = input.note.clone();
    assert_eq!(&rest, input);
}

/// A component's edits are applied in order; the next filter gets JSON with
/// the edits in it (the JSON source is refreshed as after a replace).
#[test]
fn component_edits_change_the_event_and_the_next_filter_sees_them() {
    let dir = tempfile::tempdir().unwrap();
    let edit = component(dir.path(), "edit", "edit");
    let echo_wat = std::fs::read_to_string(workspace().join("filters/conformance/contract/echo-replace.wat")).unwrap();
    let echo = filter_file(dir.path(), "echo", &wat::parse_str(&echo_wat).unwrap());
    let (host, metrics) = host(&[edit, echo], &dir.path().join("cache"));
    let mut w = host.worker();
    let input = event("e-1", "BackOff");
    let json = serde_json::to_vec(&input).unwrap();

    let (ev, replaced) = keep_event(w.run_chain(&one(&host, "edit"), input.clone(), Some(&json)));
    assert!(replaced);
    assert_edited(&ev, &input);

    // echo-replace sends back exactly the JSON it was given: it must be the edited event.
    let chain = host.chain(&["edit", "echo"]).unwrap();
    let (ev, replaced) = keep_event(w.run_chain(&chain, input.clone(), Some(&json)));
    assert!(replaced);
    assert_edited(&ev, &input);

    let m = metrics.filter("edit");
    assert_eq!(m.edit.get(), 2);
    assert_eq!(m.replace.get(), 0);
    assert!(
        metrics
            .encode()
            .contains("event_collector_filter_calls_total{filter=\"edit\",verdict=\"edit\"} 2"),
        "{}",
        metrics.encode()
    );
    // One call on its own: the step result carries the edits, the event is the caller's.
    match w.call(one(&host, "edit")[0], &mut input.clone(), None) {
        StepResult::Edit(e) => {
            assert_eq!(e.len(), 11);
            assert_edited(&e.applied_to(&input), &input);
        }
        other => panic!("{other:?}"),
    }
}

/// An invalid edit list fails the call like an invalid replacement: counted
/// as invalid_output, on_error applied, no edit applied, the instance kept.
#[test]
fn invalid_edits_fail_the_call_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut pass = component(dir.path(), "pass", "keep");
    pass.breaker_threshold = 0;
    let mut dl = component(dir.path(), "dl", "keep");
    dl.on_error = OnError::DeadLetter;
    dl.dead_letter = Some("dead".into());
    dl.breaker_threshold = 0;
    let (host, metrics) = host(&[pass, dl], &dir.path().join("cache"));
    let mut w = host.worker();
    for (i, reason) in ["BadEditJson", "BadEditKey"].iter().enumerate() {
        let input = event(&format!("bad-{i}"), reason);
        let (ev, replaced) = keep_event(w.run_chain(&one(&host, "pass"), input.clone(), None));
        assert!(!replaced, "{reason}");
        assert_eq!(ev, input, "{reason}: the valid first edit must not be applied either");
        match w.run_chain(&one(&host, "dl"), input.clone(), None) {
            ChainOutcome::DeadLetter { event, error, .. } => {
                assert_eq!(event, input, "{reason}");
                assert!(error.contains("invalid_output") && error.contains("edit #2"), "{error}");
                if *reason == "BadEditJson" {
                    assert!(error.contains("\"severity\"") && error.contains("not JSON"), "{error}");
                } else {
                    assert!(error.contains("key is empty"), "{error}");
                }
            }
            other => panic!("{reason}: {other:?}"),
        }
        // The same instance serves the next good event.
        let (ev, replaced) = keep_event(w.run_chain(&one(&host, "pass"), event(&format!("ok-{i}"), "Edit"), None));
        assert!(replaced && ev.labels["team"] == "money");
    }
    let m = metrics.filter("pass");
    assert_eq!(m.failures("invalid_output"), 2);
    assert_eq!((m.error.get(), m.edit.get()), (2, 2));
    assert_eq!(
        m.instantiations("failure"),
        0,
        "an invalid edit does not poison the instance"
    );
}

/// Core modules answer `{"verdict":"edit","edits":[...]}`.
#[test]
fn core_module_edits() {
    let dir = tempfile::tempdir().unwrap();
    let good = filter_file(
        dir.path(),
        "good",
        &core_const(
            r#"{"verdict":"edit","edits":[{"set-label":["team","core"]},{"set-extra":["severity",{"level":"high"}]},{"remove-annotation":"team"},{"set-message":"hi"}]}"#,
        ),
    );
    let empty = filter_file(dir.path(), "empty", &core_const(r#"{"verdict":"edit","edits":[]}"#));
    let bad = [
        r#"{"verdict":"edit","edits":[{"set-label":["team","x"]},{"set-extra":["",1]}]}"#,
        r#"{"verdict":"edit","edits":[{"set-label":["team",5]}]}"#,
        r#"{"verdict":"edit","edits":[{"set-uid":"x"}]}"#,
        r#"{"verdict":"edit"}"#,
        r#"{"verdict":"edit","edits":[],"event":{}}"#,
        r#"{"verdict":"keep","edits":[]}"#,
    ];
    let mut filters = vec![good, empty];
    for (i, b) in bad.iter().enumerate() {
        filters.push(filter_file(dir.path(), &format!("bad{i}"), &core_const(b)));
    }
    let (host, metrics) = host(&filters, &dir.path().join("cache"));
    let mut w = host.worker();
    let input = event("c-1", "BackOff");
    let (ev, replaced) = keep_event(w.run_chain(&one(&host, "good"), input.clone(), None));
    assert!(replaced);
    assert_eq!(ev.labels["team"], "core");
    assert_eq!(ev.extra["severity"], serde_json::json!({"level": "high"}));
    assert!(ev.annotations.is_empty());
    assert_eq!((ev.message.as_deref(), ev.note.as_deref()), (Some("hi"), Some("hi")));
    assert_eq!((ev.uid.as_str(), ev.resource_version.as_str()), ("c-1", "12345"));

    let (ev, replaced) = keep_event(w.run_chain(&one(&host, "empty"), input.clone(), None));
    assert!(!replaced, "an empty edit list is a keep");
    assert_eq!(ev, input);
    assert_eq!(metrics.filter("empty").keep.get(), 1);

    for (i, b) in bad.iter().enumerate() {
        let name = format!("bad{i}");
        match w.call(one(&host, &name)[0], &mut input.clone(), None) {
            StepResult::Failed(e) => assert_eq!(e.kind.as_str(), "invalid_output", "{b}: {e}"),
            other => panic!("{b}: {other:?}"),
        }
        assert_eq!(metrics.filter(&name).failures("invalid_output"), 1, "{b}");
    }
}

/// `filter test` shows an edit as a diff, and an edit satisfies a
/// `{"replace": ...}` vector when the edited event matches.
#[test]
fn filter_test_prints_edit_diffs_and_checks_replace_vectors() {
    let dir = tempfile::tempdir().unwrap();
    let guest = guest_copy(dir.path(), "guest.wasm");
    let config = dir.path().join("c.json");
    std::fs::write(&config, r#"{"mode":"edit"}"#).unwrap();
    let input = dir.path().join("events.jsonl");
    let ev = serde_json::to_string(&event("t-1", "BackOff")).unwrap();
    let good = serde_json::json!({"input": event("t-2", "BackOff"),
        "expect": {"replace": {"uid": "t-2", "labels": {"team": "money"}, "extra": {"enriched_by": "test-guest"}}}});
    std::fs::write(&input, format!("{ev}\n{good}\n")).unwrap();
    let opts = TestOptions {
        module: guest.clone(),
        config: Some(config.clone()),
        input: input.clone(),
        repeat: 1,
        cluster: "c".into(),
        timeout: None,
    };
    let mut out = Vec::new();
    let s = filter_test(&opts, &mut out).expect("runs");
    let text = String::from_utf8(out).unwrap();
    assert_eq!((s.events, s.edit, s.replace, s.vectors_passed), (2, 2, 0, 1), "{text}");
    assert!(text.contains("→ edit (11 changes)"), "{text}");
    assert!(text.contains("+ extra.enriched_by: \"test-guest\""), "{text}");
    assert!(text.contains("- labels.tier"), "{text}");
    assert!(text.contains("PASS (expect replace)"), "{text}");
    assert!(text.contains("2 edit, 0 errors"), "{text}");

    let wrong = serde_json::json!({"input": event("t-3", "BackOff"),
        "expect": {"replace": {"labels": {"team": "someone-else"}}}});
    std::fs::write(&input, format!("{wrong}\n")).unwrap();
    let mut out = Vec::new();
    let e = filter_test(&opts, &mut out).unwrap_err().to_string();
    assert!(e.contains("1 test vector(s) failed"), "{e}");
}

/// A component built against the 0.1.0 contract loads, runs (keep, drop,
/// replace, errors, traps) and reports its contract, beside a 0.2.0 one.
#[test]
fn a_component_built_against_0_1_0_still_works() {
    let dir = tempfile::tempdir().unwrap();
    let mut old = FilterConfig::new("old", guest_copy_v0_1(dir.path(), "old.wasm"));
    old.watch = false;
    old.config_json = r#"{"mode":"enrich"}"#.into();
    old.breaker_threshold = 0;
    let new = component(dir.path(), "new", "edit");
    let (host, metrics) = host(&[old, new], &dir.path().join("cache"));
    let status = host.status(one(&host, "old")[0]);
    assert_eq!(status.kind, Some(ModuleKind::Component));
    let mut w = host.worker();

    let input = event("o-1", "BackOff");
    let (ev, replaced) = keep_event(w.run_chain(&one(&host, "old"), input.clone(), None));
    assert!(replaced);
    assert_eq!(
        (ev.extra["team"].as_str(), ev.labels["team"].as_str()),
        (Some("money"), "money")
    );
    assert_eq!(ev.extra["enriched_by"], "test-guest");

    // Both versions in one chain: the old enricher, then the new editor.
    let chain = host.chain(&["old", "new"]).unwrap();
    let (ev, _) = keep_event(w.run_chain(&chain, input.clone(), None));
    assert_eq!(ev.annotations.get("edited").map(String::as_str), Some("yes"));
    assert_eq!(ev.extra["enriched_by"], "test-guest");

    // Its faults are contained as before; the Edit reason means nothing to it.
    let old_id = one(&host, "old")[0];
    assert!(matches!(
        w.call(old_id, &mut event("o-2", "Drop"), None),
        StepResult::Drop
    ));
    match w.call(old_id, &mut event("o-3", "Trap"), None) {
        StepResult::Failed(e) => assert_eq!(e.kind.as_str(), "trap"),
        other => panic!("{other:?}"),
    }
    match w.call(old_id, &mut event("o-4", "Error"), None) {
        StepResult::Failed(e) => assert_eq!(e.kind.as_str(), "guest_error"),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        w.call(old_id, &mut event("o-5", "Edit"), None),
        StepResult::Keep
    ));
    let m = metrics.filter("old");
    assert_eq!(
        (m.replace.get(), m.drop.get(), m.keep.get(), m.edit.get()),
        (2, 1, 1, 0)
    );
    assert_eq!(m.instantiations("failure"), 1);

    let mut out = Vec::new();
    filter_check(&guest_copy_v0_1(dir.path(), "check.wasm"), None, &mut out).expect("a good 0.1.0 component");
    let text = String::from_utf8(out).unwrap();
    assert!(text.contains("contract: event-collector:filter@0.1.0"), "{text}");
    assert!(
        text.contains("event-collector:filter/host@0.1.0  provided by the host"),
        "{text}"
    );
    assert!(text.contains("init:     ok"), "{text}");
}
