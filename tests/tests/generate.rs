//! End-to-end: `event-collector generate` against a real kube-apiserver. Each
//! scenario creates its sequence through both Event APIs; --count is exact.

use std::process::Command;

use event_collector_e2e::{Cluster, collector_bin};
use k8s_openapi::api::core::v1::Event as CoreEvent;
use k8s_openapi::api::events::v1::Event as V1Event;
use kube::api::{Api, ListParams};

fn generate(cluster: &Cluster, args: &[&str]) -> String {
    let out = Command::new(collector_bin())
        .arg("generate")
        .args(["--kubeconfig", cluster.admin_kubeconfig()])
        .args(args)
        .output()
        .expect("run generate");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "generate {args:?}: {text}");
    text
}

/// (created through core/v1, created through events.k8s.io/v1), read back through both APIs.
/// Both APIs serve the same objects; those created through events.k8s.io/v1 carry an eventTime.
async fn read_back(client: &kube::Client, ns: &str) -> (Vec<CoreEvent>, Vec<V1Event>) {
    let core: Vec<CoreEvent> = Api::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await
        .expect("list core")
        .items;
    let v1: Vec<V1Event> = Api::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await
        .expect("list v1")
        .items;
    assert_eq!(core.len(), v1.len(), "both APIs serve the same objects");
    let core_created = core.into_iter().filter(|e| e.event_time.is_none()).collect();
    let v1_created = v1
        .into_iter()
        .filter(|e| e.reporting_controller.is_some() && e.action.is_some())
        .collect();
    (core_created, v1_created)
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

#[tokio::test]
async fn every_scenario_creates_its_events_in_both_apis() {
    let cluster = Cluster::start().expect("cluster");
    let client = cluster.admin_client().await.expect("client");
    let scenarios: [(&str, &[&str]); 5] = [
        (
            "image-pull-failure",
            &["Scheduled", "Pulling", "Failed", "Failed", "BackOff", "Failed"],
        ),
        ("crash-loop", &["Scheduled", "Pulled", "Created", "Started", "BackOff"]),
        ("failed-scheduling", &["FailedScheduling", "FailedScheduling"]),
        ("failed-mount", &["Scheduled", "FailedMount", "FailedMount"]),
        (
            "normal-rollout",
            &[
                "ScalingReplicaSet",
                "SuccessfulCreate",
                "Scheduled",
                "Pulling",
                "Pulled",
                "Created",
                "Started",
                "ScalingReplicaSet",
            ],
        ),
    ];
    for (scenario, reasons) in scenarios {
        cluster.create_namespace(scenario).expect("namespace");
        let out = generate(&cluster, &["--scenario", scenario, "--namespace", scenario]);
        assert!(
            out.contains(&format!(
                "created {n} core/v1 and {n} events.k8s.io/v1",
                n = reasons.len()
            )),
            "{out}"
        );
        let (core, v1) = read_back(&client, scenario).await;
        let want = sorted(reasons.iter().map(|r| r.to_string()).collect());
        assert_eq!(
            sorted(core.iter().filter_map(|e| e.reason.clone()).collect()),
            want,
            "{scenario} core/v1"
        );
        assert_eq!(
            sorted(v1.iter().filter_map(|e| e.reason.clone()).collect()),
            want,
            "{scenario} events.k8s.io/v1"
        );
        for e in &core {
            let component = e.source.as_ref().and_then(|s| s.component.clone()).unwrap_or_default();
            assert!(!component.is_empty(), "{scenario}: core events name their component");
            assert_eq!(e.involved_object.namespace.as_deref(), Some(scenario));
            assert!(e.message.as_deref().is_some_and(|m| !m.is_empty()));
        }
        for e in &v1 {
            assert!(e.note.as_deref().is_some_and(|m| !m.is_empty()));
            assert!(
                e.regarding
                    .as_ref()
                    .is_some_and(|r| r.namespace.as_deref() == Some(scenario))
            );
        }
    }
    // Real components and messages, e.g. the image pull failure's.
    let (core, _) = read_back(&client, "image-pull-failure").await;
    let by_reason = |r: &str| {
        core.iter()
            .filter(|e| e.reason.as_deref() == Some(r))
            .collect::<Vec<_>>()
    };
    let scheduled = by_reason("Scheduled");
    assert_eq!(
        scheduled[0].source.as_ref().and_then(|s| s.component.as_deref()),
        Some("default-scheduler")
    );
    assert!(
        by_reason("Failed")
            .iter()
            .any(|e| e.message.as_deref() == Some("Error: ErrImagePull"))
    );
    assert!(
        by_reason("Failed")
            .iter()
            .all(|e| e.type_.as_deref() == Some("Warning"))
    );
    let (_, v1) = read_back(&client, "normal-rollout").await;
    let scaling: Vec<_> = v1
        .iter()
        .filter(|e| e.reason.as_deref() == Some("ScalingReplicaSet"))
        .collect();
    assert!(
        scaling
            .iter()
            .all(|e| e.reporting_controller.as_deref() == Some("deployment-controller")
                && e.regarding.as_ref().and_then(|r| r.kind.as_deref()) == Some("Deployment"))
    );
}

#[tokio::test]
async fn count_and_rate_are_honoured() {
    let cluster = Cluster::start().expect("cluster");
    let client = cluster.admin_client().await.expect("client");
    cluster.create_namespace("counted").expect("namespace");
    generate(
        &cluster,
        &[
            "--scenario",
            "crash-loop",
            "--api",
            "core/v1",
            "--count",
            "12",
            "--rate",
            "40",
            "-n",
            "counted",
        ],
    );
    let (core, v1) = read_back(&client, "counted").await;
    assert_eq!(core.len(), 12, "exactly --count, cycling the scenario");
    assert!(v1.is_empty(), "only core/v1 asked for");
    assert_eq!(
        core.iter().filter(|e| e.reason.as_deref() == Some("Scheduled")).count(),
        3
    );

    cluster.create_namespace("single").expect("namespace");
    generate(
        &cluster,
        &[
            "--api",
            "events.k8s.io/v1",
            "--count",
            "7",
            "--rate",
            "100",
            "-n",
            "single",
            "--kind",
            "Node",
            "--name",
            "node-7",
            "--type",
            "Warning",
            "--reason",
            "NodeNotReady",
            "--message",
            "Node node-7 status is now: NodeNotReady",
        ],
    );
    let (core, v1) = read_back(&client, "single").await;
    assert!(core.is_empty());
    assert_eq!(v1.len(), 7);
    for e in &v1 {
        assert_eq!(e.reason.as_deref(), Some("NodeNotReady"));
        assert_eq!(e.type_.as_deref(), Some("Warning"));
        assert_eq!(e.note.as_deref(), Some("Node node-7 status is now: NodeNotReady"));
        let r = e.regarding.as_ref().expect("regarding");
        assert_eq!((r.kind.as_deref(), r.name.as_deref()), (Some("Node"), Some("node-7")));
    }
}
