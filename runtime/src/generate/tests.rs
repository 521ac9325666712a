use std::collections::HashSet;

use serde_json::Value;

use super::*;

fn lines(opts: &GenOptions) -> Vec<Value> {
    let mut out = Vec::new();
    to_writer(&mut out, opts, 500).expect("write to memory");
    String::from_utf8(out)
        .expect("utf-8")
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is JSON"))
        .collect()
}

#[test]
fn every_scenario_has_its_real_sequence() {
    let mut rng = rand::rng();
    let reasons = |s| -> Vec<String> {
        scenario_steps(s, "demo", "web", &mut rand::rng())
            .into_iter()
            .map(|st| st.reason)
            .collect()
    };
    assert_eq!(
        reasons(Scenario::ImagePullFailure),
        ["Scheduled", "Pulling", "Failed", "Failed", "BackOff", "Failed"]
    );
    assert_eq!(
        reasons(Scenario::CrashLoop),
        ["Scheduled", "Pulled", "Created", "Started", "BackOff"]
    );
    assert_eq!(
        reasons(Scenario::FailedScheduling),
        ["FailedScheduling", "FailedScheduling"]
    );
    assert_eq!(
        reasons(Scenario::FailedMount),
        ["Scheduled", "FailedMount", "FailedMount"]
    );
    assert_eq!(
        reasons(Scenario::NormalRollout),
        [
            "ScalingReplicaSet",
            "SuccessfulCreate",
            "Scheduled",
            "Pulling",
            "Pulled",
            "Created",
            "Started",
            "ScalingReplicaSet"
        ]
    );
    let steps = scenario_steps(Scenario::ImagePullFailure, "demo", "web", &mut rng);
    assert_eq!(steps[0].component, "default-scheduler");
    assert!(steps[0].message.starts_with("Successfully assigned demo/web-"));
    assert!(steps[3].message == "Error: ErrImagePull" && steps[3].type_ == "Warning");
    assert!(
        steps[1..]
            .iter()
            .all(|s| s.component == "kubelet" && s.object == steps[0].object)
    );
}

#[test]
fn recorded_stream_is_a_watch_stream_in_both_apis() {
    let opts = GenOptions {
        scenario: Some(Scenario::CrashLoop),
        namespace: "demo".into(),
        count: Some(7),
        ..GenOptions::default()
    };
    let events = lines(&opts);
    assert_eq!(events.len(), 14, "count per API, both APIs");
    let mut uids = HashSet::new();
    let mut names = HashSet::new();
    let mut last_rv = 0u64;
    for (i, line) in events.iter().enumerate() {
        assert_eq!(line["type"], "ADDED");
        let o = &line["object"];
        assert_eq!(o["kind"], "Event");
        assert_eq!(o["apiVersion"], if i % 2 == 0 { "v1" } else { "events.k8s.io/v1" });
        let m = &o["metadata"];
        assert_eq!(m["namespace"], "demo");
        assert!(uids.insert(m["uid"].as_str().expect("uid").to_string()));
        assert!(names.insert(m["name"].as_str().expect("name").to_string()));
        let rv: u64 = m["resourceVersion"].as_str().expect("rv").parse().expect("numeric rv");
        assert!(rv > last_rv, "resourceVersions increase");
        last_rv = rv;
        assert!(m["creationTimestamp"].as_str().is_some_and(|t| t.ends_with('Z')));
        assert!(m.get("managedFields").is_none());
        // Each object parses as the collector's wire type and normalizes.
        let raw: crate::event::RawEvent = serde_json::from_value(o.clone()).expect("RawEvent");
        let api = if i % 2 == 0 {
            crate::event::Api::CoreV1
        } else {
            crate::event::Api::EventsV1
        };
        let ev = crate::event::normalize(
            api,
            raw,
            crate::event::WatchType::Added,
            None,
            &crate::event::NormalizeOptions {
                cluster: std::sync::Arc::from("t"),
                include_raw: false,
            },
        )
        .expect("normalizes");
        assert_eq!(ev.kind(), "Pod");
        assert!(ev.reason.is_some());
    }
    // Steps cycle: the 6th event per API is the scenario's first step again.
    assert_eq!(events[0]["object"]["reason"], "Scheduled");
    assert_eq!(events[10]["object"]["reason"], "Scheduled");
    assert_eq!(events[8]["object"]["reason"], "BackOff");
    assert_eq!(events[9]["object"]["note"], events[8]["object"]["message"]);
}

#[test]
fn one_api_only_and_single_event_options() {
    let opts = GenOptions {
        api: GenApi::EventsV1,
        kind: "Node".into(),
        name: Some("node-7".into()),
        type_: "Warning".into(),
        reason: "NodeNotReady".into(),
        message: "Node node-7 status is now: NodeNotReady".into(),
        count: Some(3),
        ..GenOptions::default()
    };
    let events = lines(&opts);
    assert_eq!(events.len(), 3);
    for e in &events {
        let o = &e["object"];
        assert_eq!(o["apiVersion"], "events.k8s.io/v1");
        assert_eq!(o["regarding"]["kind"], "Node");
        assert_eq!(o["regarding"]["name"], "node-7");
        assert_eq!(o["type"], "Warning");
        assert_eq!(o["reason"], "NodeNotReady");
        assert_eq!(o["note"], "Node node-7 status is now: NodeNotReady");
    }
}

#[test]
fn recorded_events_are_about_a_kilobyte() {
    let opts = GenOptions {
        scenario: Some(Scenario::Mixed),
        count: Some(600),
        ..GenOptions::default()
    };
    let mut out = Vec::new();
    let done = to_writer(&mut out, &opts, 1).expect("write");
    assert_eq!(done, Generated { core: 600, v1: 600 });
    let per_event = out.len() as f64 / 1200.0;
    assert!((950.0..1250.0).contains(&per_event), "{per_event} bytes per event");
}

#[test]
fn mixed_is_every_scenario_in_turn() {
    let steps = scenario_steps(Scenario::Mixed, "demo", "shop", &mut rand::rng());
    let total: usize = Scenario::ALL
        .iter()
        .map(|&s| scenario_steps(s, "demo", "x", &mut rand::rng()).len())
        .sum();
    assert_eq!(steps.len(), total);
    assert_eq!(steps[0].reason, "Scheduled");
    assert_eq!(steps.last().map(|s| s.reason.as_str()), Some("ScalingReplicaSet"));
}
