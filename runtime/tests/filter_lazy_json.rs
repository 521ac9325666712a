//! Contract 0.3.0 on the filter host: a component gets only the extracted
//! fields with `process` and asks for the event JSON through `host.event`,
//! so the host serializes an event only when some filter (or the exporters)
//! needs it; the JSON it gets is the event as the earlier filters of the
//! chain left it. Components built against 0.2.0 run beside 0.3.0 ones.

#[path = "wasm/common.rs"]
mod common;

use common::*;
use event_collector::config::FilterConfig;
use event_collector::filter::tools::filter_check;
use event_collector::filter::{ChainOutcome, StepResult};

fn guest(dir: &std::path::Path, name: &str, mode: &str, v0_2: bool) -> FilterConfig {
    let path = dir.join(format!("{name}.wasm"));
    let built = if v0_2 {
        guest_component_v0_2()
    } else {
        guest_component()
    };
    std::fs::copy(built, &path).expect("copy guest");
    let mut f = FilterConfig::new(name, path);
    f.watch = false;
    f.config_json = format!(r#"{{"mode":"{mode}"}}"#);
    f
}

/// Filters that decide from the fields (keep, drop, edit) never have the
/// event serialized; one that asks gets it, and the host keeps that JSON
/// for the exporters' record.
#[test]
fn the_event_is_serialized_only_when_a_filter_asks_for_it() {
    let dir = tempfile::tempdir().unwrap();
    let filters = [
        guest(dir.path(), "keep", "keep", false),
        guest(dir.path(), "drop", "drop", false),
        guest(dir.path(), "edit", "edit", false),
        guest(dir.path(), "enrich", "enrich", false),
        guest(dir.path(), "old_keep", "keep", true),
    ];
    let (host, metrics) = host(&filters, &dir.path().join("cache"));
    let mut w = host.worker();
    let input = event("l-1", "BackOff");

    let (ev, replaced) = keep_event(w.run_chain(&one(&host, "keep"), input.clone(), None));
    assert!(!replaced);
    assert_eq!(ev, input, "the lent event comes back unchanged");
    assert_eq!(w.serialized(), None, "a fields-only filter: nothing serialized");

    assert!(matches!(
        w.run_chain(&one(&host, "drop"), input.clone(), None),
        ChainOutcome::Drop { .. }
    ));
    assert_eq!(w.serialized(), None);

    let chain = host.chain(&["keep", "edit", "keep"]).unwrap();
    let (ev, replaced) = keep_event(w.run_chain(&chain, input.clone(), None));
    assert!(replaced);
    assert_eq!(ev.labels["team"], "money");
    assert_eq!(w.serialized(), None, "edits are applied to the event, never to JSON");

    // `enrich` reads the JSON (host.event) and answers with a replacement.
    let (ev, replaced) = keep_event(w.run_chain(&one(&host, "enrich"), input.clone(), None));
    assert!(replaced);
    assert_eq!(ev.extra["enriched_by"], "test-guest");
    assert_eq!(ev.uid, input.uid);

    // A 0.2.0 component gets the JSON with every call: serialized once, and
    // offered for the record because the event did not change.
    let (ev, _) = keep_event(w.run_chain(&one(&host, "old_keep"), input.clone(), None));
    assert_eq!(ev, input);
    let expected = serde_json::to_vec(&input).unwrap();
    assert_eq!(w.serialized(), Some(&expected[..]));

    // The caller's JSON is used as it is and not reported back as ours.
    let (_, _) = keep_event(w.run_chain(&one(&host, "old_keep"), input.clone(), Some(&expected)));
    assert_eq!(w.serialized(), None);

    assert_eq!(metrics.filter("keep").keep.get(), 3);
    assert_eq!(metrics.filter("edit").edit.get(), 1);
    // `filter_event_requests` counts the calls of host.event: only `enrich` asked.
    for (name, asked) in [("keep", 0), ("drop", 0), ("edit", 0), ("enrich", 1), ("old_keep", 0)] {
        assert_eq!(metrics.filter(name).event_requests.get(), asked, "{name}");
    }
}

/// `host.event` gives the event as the filters before it in the chain left
/// it (here: after another component's edits), the same text on every
/// request of one call; in a 0.2.0 component the `event` parameter does.
#[test]
fn host_event_is_the_event_after_the_earlier_filters() {
    let dir = tempfile::tempdir().unwrap();
    let filters = [
        guest(dir.path(), "edit", "edit", false),
        guest(dir.path(), "peek", "peek", false),
        guest(dir.path(), "old_edit", "edit", true),
        guest(dir.path(), "old_peek", "peek", true),
    ];
    let (host, metrics) = host(&filters, &dir.path().join("cache"));
    let mut w = host.worker();
    let input = event("p-1", "BackOff");

    // On its own: the input has no `team` label.
    let (ev, _) = keep_event(w.run_chain(&one(&host, "peek"), input.clone(), None));
    assert_eq!(ev.extra["saw_team"], "(none)");

    for (first, second) in [("edit", "peek"), ("old_edit", "peek"), ("edit", "old_peek")] {
        let chain = host.chain(&[first, second]).unwrap();
        let (ev, replaced) = keep_event(w.run_chain(&chain, input.clone(), None));
        assert!(replaced);
        assert_eq!(ev.extra["saw_team"], "money", "{first} → {second}");
        assert_eq!(ev.labels["team"], "money");
    }
    assert_eq!(
        metrics.filter("peek").error.get(),
        0,
        "both requests gave the same JSON"
    );
    assert_eq!(metrics.filter("peek").edit.get(), 3);
    // `peek` asks twice per call (the guest checks that both agree), 3 calls
    // so far; `old_peek` (0.2.0) gets the JSON as a parameter and never asks.
    assert_eq!(metrics.filter("peek").event_requests.get(), 6);
    assert_eq!(metrics.filter("old_peek").event_requests.get(), 0);

    // A single call: the event is the caller's, unchanged afterwards.
    let mut ev = input.clone();
    match w.call(one(&host, "peek")[0], &mut ev, None) {
        StepResult::Edit(e) => assert_eq!(e.len(), 1),
        other => panic!("{other:?}"),
    }
    assert_eq!(ev, input);
}

/// `set-label-if-absent` (0.3.0) sets a label only where the event (as the
/// earlier edits left it) has none: no JSON needed to respect one.
#[test]
fn a_label_if_absent_respects_the_label_the_event_has() {
    let dir = tempfile::tempdir().unwrap();
    let filters = [
        guest(dir.path(), "edit", "edit", false),
        guest(dir.path(), "default", "default", false),
    ];
    let (host, _) = host(&filters, &dir.path().join("cache"));
    let mut w = host.worker();
    let input = event("d-1", "BackOff");
    assert!(!input.labels.contains_key("team"));
    let (ev, _) = keep_event(w.run_chain(&one(&host, "default"), input.clone(), None));
    assert_eq!(
        (ev.labels["team"].as_str(), ev.labels["owner"].as_str()),
        ("default", "test-guest")
    );
    assert_eq!(ev.labels["app"], "web");
    let (ev, _) = keep_event(w.run_chain(&host.chain(&["edit", "default"]).unwrap(), input, None));
    assert_eq!(ev.labels["team"], "money", "the label set before wins");
    assert_eq!(ev.labels["owner"], "test-guest");
    assert_eq!(w.serialized(), None);
}

/// A fault while the event is lent to the instance (a trap, a timeout)
/// still gives the event back: on_error sees the real event.
#[test]
fn a_failing_call_gives_the_event_back() {
    let dir = tempfile::tempdir().unwrap();
    let mut f = guest(dir.path(), "faulty", "keep", false);
    f.on_error = event_collector::config::OnError::DeadLetter;
    f.dead_letter = Some("dead".into());
    f.breaker_threshold = 0;
    let (host, _) = host(&[f], &dir.path().join("cache"));
    let mut w = host.worker();
    for reason in ["Trap", "Loop", "Error"] {
        let input = event(&format!("f-{reason}"), reason);
        match w.run_chain(&one(&host, "faulty"), input.clone(), None) {
            ChainOutcome::DeadLetter { event, .. } => assert_eq!(event, input, "{reason}"),
            other => panic!("{reason}: {other:?}"),
        }
    }
}

#[test]
fn filter_check_names_the_contract_of_each_version() {
    let dir = tempfile::tempdir().unwrap();
    for (built, v) in [(guest_component(), "0.3.0"), (guest_component_v0_2(), "0.2.0")] {
        let path = dir.path().join(format!("g-{v}.wasm"));
        std::fs::copy(built, &path).unwrap();
        let mut out = Vec::new();
        filter_check(&path, None, &mut out).expect("a good component");
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.contains(&format!("contract: event-collector:filter@{v}")),
            "{text}"
        );
        assert!(
            text.contains(&format!("event-collector:filter/host@{v}  provided by the host")),
            "{text}"
        );
        assert!(
            text.contains(&format!("event-collector:filter/filter@{v}: init, process")),
            "{text}"
        );
    }
}
