//! End-to-end: the collector against a real kube-apiserver and etcd, writing
//! through the Volume exporter. Each test starts its own cluster.

use std::path::Path;
use std::time::Duration;

use event_collector_e2e::{Cluster, Collector, events, read_volume, wait_for, wait_for_events};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(60);

fn write_config(dir: &Path, body: &str) -> std::path::PathBuf {
    let path = dir.join("collector.toml");
    std::fs::write(&path, body).expect("write config");
    path
}

fn volume_config(api: &str, out: &Path) -> String {
    format!(
        r#"
cluster = "e2e"
[source]
api = "{api}"

[[exporters]]
name = "local"
type = "volume"
path = "{}"
fsync = "always"
batch_timeout = "20ms"

[[routes]]
name = "all"
default = true
exporters = ["local"]
"#,
        out.display()
    )
}

fn by_uid<'a>(events: &'a [Value], uid: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["uid"] == uid).collect()
}

async fn create_mixed(cluster: &Cluster, ns: &str) -> Vec<(String, &'static str)> {
    let client = cluster.admin_client().await.expect("admin client");
    let mut uids = Vec::new();
    for i in 0..3 {
        let ev = events::core(
            ns,
            &format!("core-{i}"),
            "Warning",
            "BackOff",
            "Pod",
            &format!("web-{i}"),
            "Back-off restarting failed container",
        );
        let created = events::create_core(&client, &ev).await.expect("create core event");
        uids.push((created.metadata.uid.unwrap(), "core"));
        let ev = events::v1(
            ns,
            &format!("v1-{i}"),
            "Normal",
            "Scheduled",
            "Pod",
            &format!("job-{i}"),
            "Successfully assigned",
        );
        let created = events::create_v1(&client, &ev).await.expect("create v1 event");
        uids.push((created.metadata.uid.unwrap(), "v1"));
    }
    uids
}

fn check_fields(e: &Value, created_through: &str, api: &str) {
    assert_eq!(e["schema_version"], 1);
    assert_eq!(e["cluster"], "e2e");
    assert_eq!(e["api"], api);
    assert_eq!(e["namespace"], "e2e");
    assert!(e["resource_version"].as_str().is_some_and(|s| !s.is_empty()));
    assert!(e["timestamp"].as_str().is_some_and(|s| s.ends_with('Z')), "{e}");
    assert_eq!(e["count"], 1);
    assert_eq!(e["count_delta"], 1);
    assert_eq!(e["watch_type"], "ADDED");
    assert_eq!(e["object"]["kind"], "Pod");
    if created_through == "core" {
        assert_eq!(e["type"], "Warning");
        assert_eq!(e["reason"], "BackOff");
        assert_eq!(e["message"], "Back-off restarting failed container");
        assert_eq!(e["reporting_controller"], "kubelet");
        assert_eq!(e["reporting_instance"], "node-1");
        assert!(e["object"]["name"].as_str().unwrap().starts_with("web-"));
    } else {
        assert_eq!(e["type"], "Normal");
        assert_eq!(e["reason"], "Scheduled");
        assert_eq!(e["message"], "Successfully assigned");
        assert_eq!(e["note"], "Successfully assigned");
        assert_eq!(e["action"], "Testing");
        assert_eq!(e["reporting_controller"], "e2e.example.com/controller");
        assert_eq!(e["reporting_instance"], "e2e-0");
        // eventTime is a MicroTime: sub-seconds are kept.
        assert!(e["timestamp"].as_str().unwrap().contains('.'), "{e}");
    }
}

async fn exactly_once_with(api: &str, expected_api: &[&str]) {
    let cluster = Cluster::start().expect("cluster");
    cluster.create_namespace("e2e").unwrap();
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("events");
    let config = write_config(work.path(), &volume_config(api, &out));
    // Least privilege: the collector runs as the get/list/watch-only user.
    let collector = Collector::start(&config, cluster.collector_kubeconfig(), &[]).unwrap();
    let uids = create_mixed(&cluster, "e2e").await;
    let got = wait_for_events(&out, uids.len(), WAIT);
    // Give a duplicate a chance to show up before counting.
    std::thread::sleep(Duration::from_secs(2));
    let got_after = read_volume(&out).unwrap();
    assert_eq!(got.len(), got_after.len().min(got.len()));
    let log = collector.log_text();
    assert_eq!(got_after.len(), uids.len(), "exactly one line per event; log:\n{log}");
    for (uid, through) in &uids {
        let lines = by_uid(&got_after, uid);
        assert_eq!(lines.len(), 1, "event {uid} exactly once");
        let e = lines[0];
        assert!(expected_api.contains(&e["api"].as_str().unwrap()), "{e}");
        check_fields(e, through, e["api"].as_str().unwrap());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn events_from_both_apis_appear_exactly_once_default_api() {
    exactly_once_with("events.k8s.io/v1", &["events.k8s.io/v1"]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn events_from_both_apis_appear_exactly_once_core_api() {
    exactly_once_with("core/v1", &["core/v1"]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn events_appear_exactly_once_when_watching_both_apis() {
    exactly_once_with("both", &["core/v1", "events.k8s.io/v1"]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn modified_repeats_are_new_occurrences() {
    let cluster = Cluster::start().expect("cluster");
    cluster.create_namespace("e2e").unwrap();
    let client = cluster.admin_client().await.unwrap();
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("events");
    let config = write_config(work.path(), &volume_config("events.k8s.io/v1", &out));
    let collector = Collector::start(&config, cluster.collector_kubeconfig(), &[]).unwrap();

    let core = events::create_core(
        &client,
        &events::core("e2e", "rep-core", "Warning", "BackOff", "Pod", "web", "crash"),
    )
    .await
    .unwrap();
    let v1 = events::create_v1(
        &client,
        &events::v1("e2e", "rep-v1", "Warning", "FailedMount", "Pod", "db", "mount failed"),
    )
    .await
    .unwrap();
    wait_for_events(&out, 2, WAIT);
    events::repeat_core(&client, "e2e", "rep-core", 2).await.unwrap();
    events::repeat_core(&client, "e2e", "rep-core", 5).await.unwrap();
    events::repeat_v1(&client, "e2e", "rep-v1", 2).await.unwrap();
    // A label change is not a new occurrence.
    events::label_core(&client, "e2e", "rep-core").await.unwrap();
    wait_for_events(&out, 5, WAIT);
    std::thread::sleep(Duration::from_secs(2));
    let got = read_volume(&out).unwrap();
    let log = collector.log_text();
    assert_eq!(
        got.len(),
        5,
        "2 created + 3 repeats, the label change is not exported; log:\n{log}\n{got:#?}"
    );

    let core_lines = by_uid(&got, core.metadata.uid.as_deref().unwrap());
    let counts: Vec<(u64, u64, &str)> = core_lines
        .iter()
        .map(|e| {
            (
                e["count"].as_u64().unwrap(),
                e["count_delta"].as_u64().unwrap(),
                e["watch_type"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(counts, vec![(1, 1, "ADDED"), (2, 1, "MODIFIED"), (5, 3, "MODIFIED")]);
    let v1_lines = by_uid(&got, v1.metadata.uid.as_deref().unwrap());
    assert_eq!(v1_lines.len(), 2);
    assert_eq!(v1_lines[1]["count"], 2);
    assert_eq!(v1_lines[1]["count_delta"], 1);
    assert_eq!(v1_lines[1]["watch_type"], "MODIFIED");
    // The repeat's timestamp is its series.lastObservedTime, later than the first.
    assert!(v1_lines[1]["timestamp"].as_str() > v1_lines[0]["timestamp"].as_str());
}

#[tokio::test(flavor = "multi_thread")]
async fn collector_user_has_only_get_list_watch() {
    let cluster = Cluster::start().expect("cluster");
    let kc = cluster.collector_kubeconfig();
    let ev = r#"{"apiVersion":"v1","kind":"Event","metadata":{"name":"x","namespace":"default"},
        "involvedObject":{"kind":"Pod","name":"p","namespace":"default"},"reason":"R","message":"m","type":"Normal"}"#;
    let (ok, out) = cluster.kubectl(kc, &["create", "-f", "-"], Some(ev)).unwrap();
    assert!(!ok, "creating an event as the collector must be denied: {out}");
    assert!(out.contains("Forbidden") || out.contains("forbidden"), "{out}");
    let can = |verb: &str, what: &str| {
        let (_, out) = cluster
            .kubectl(kc, &["auth", "can-i", verb, what, "--all-namespaces"], None)
            .unwrap();
        out.trim().to_string()
    };
    assert_eq!(can("list", "events"), "yes");
    assert_eq!(can("watch", "events.events.k8s.io"), "yes");
    assert_eq!(can("get", "events"), "yes");
    for (verb, what) in [
        ("create", "events"),
        ("delete", "events.events.k8s.io"),
        ("patch", "events"),
        ("list", "secrets"),
        ("list", "pods"),
        ("list", "namespaces"),
    ] {
        assert_eq!(can(verb, what), "no", "{verb} {what} must be denied");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn routing_table_sends_events_to_the_right_files() {
    let cluster = Cluster::start().expect("cluster");
    for ns in ["apps", "kube-system-like", "batch"] {
        cluster.create_namespace(ns).unwrap();
    }
    let client = cluster.admin_client().await.unwrap();
    let work = tempfile::tempdir().unwrap();
    let dir = |n: &str| work.path().join(n);
    let body = format!(
        r#"
[[exporters]]
name = "warnings"
type = "volume"
path = "{w}"
batch_timeout = "20ms"
[[exporters]]
name = "scheduling"
type = "volume"
path = "{s}"
batch_timeout = "20ms"
[[exporters]]
name = "rest"
type = "volume"
path = "{r}"
batch_timeout = "20ms"

# Warnings go to "warnings" and evaluation continues.
[[routes]]
name = "warnings"
exporters = ["warnings"]
continue = true
[routes.match]
type = "Warning"
namespace = {{ none_of = ["kube-system-like"] }}

# Scheduling events of Pods, by reason glob and controller regex.
[[routes]]
name = "scheduling"
exporters = ["scheduling"]
[routes.match]
reason = ["glob:*Scheduling", "Scheduled"]
kind = "Pod"
reporting_controller = "regex:.*controller"

[[routes]]
name = "rest"
default = true
exporters = ["rest"]
"#,
        w = dir("warnings").display(),
        s = dir("scheduling").display(),
        r = dir("rest").display()
    );
    let config = write_config(work.path(), &body);
    let _collector = Collector::start(&config, cluster.collector_kubeconfig(), &[]).unwrap();

    let mk = |ns: &str, name: &str, ty: &str, reason: &str| events::v1(ns, name, ty, reason, "Pod", name, "msg");
    for ev in [
        mk("apps", "w-sched", "Warning", "FailedScheduling"), // warnings + scheduling
        mk("apps", "n-sched", "Normal", "Scheduled"),         // scheduling
        mk("apps", "w-other", "Warning", "BackOff"), // warnings + rest (default: warnings continued, nothing else matched)
        mk("kube-system-like", "ks", "Warning", "BackOff"), // rest
        mk("batch", "n-other", "Normal", "Pulled"),  // rest
    ] {
        events::create_v1(&client, &ev).await.unwrap();
    }
    let names = |d: &str, n: usize| -> Vec<String> {
        let mut v: Vec<String> = wait_for_events(&dir(d), n, WAIT)
            .iter()
            .map(|e| e["name"].as_str().unwrap().to_string())
            .collect();
        v.sort();
        v
    };
    assert_eq!(names("warnings", 2), vec!["w-other", "w-sched"]);
    assert_eq!(names("scheduling", 2), vec!["n-sched", "w-sched"]);
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(names("rest", 2), vec!["ks", "n-other"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn startup_exports_the_backlog_or_only_recent_events() {
    let cluster = Cluster::start().expect("cluster");
    cluster.create_namespace("e2e").unwrap();
    let client = cluster.admin_client().await.unwrap();
    // A backlog from before the collector started: one old, one recent.
    let mut old = events::core("e2e", "old", "Normal", "Pulled", "Pod", "a", "old");
    let two_hours_ago = k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        k8s_openapi::jiff::Timestamp::now() - k8s_openapi::jiff::SignedDuration::from_hours(2),
    );
    old.first_timestamp = Some(two_hours_ago.clone());
    old.last_timestamp = Some(two_hours_ago);
    events::create_core(&client, &old).await.unwrap();
    events::create_core(
        &client,
        &events::core("e2e", "recent", "Normal", "Pulled", "Pod", "b", "recent"),
    )
    .await
    .unwrap();

    let work = tempfile::tempdir().unwrap();
    // startup = "all": both are exported.
    let all_out = work.path().join("all");
    let config = write_config(work.path(), &volume_config("core/v1", &all_out));
    let collector = Collector::start(&config, cluster.collector_kubeconfig(), &[]).unwrap();
    let got = wait_for_events(&all_out, 2, WAIT);
    assert_eq!(got.len(), 2, "{}", collector.log_text());
    drop(collector);

    // startup = "max_age": only the recent one, and the drop is logged.
    let recent_out = work.path().join("recent");
    let body = volume_config("core/v1", &recent_out).replace(
        "api = \"core/v1\"",
        "api = \"core/v1\"\nstartup = \"max_age\"\nstartup_max_age = \"30m\"",
    );
    let config = write_config(work.path(), &body);
    let collector = Collector::start(&config, cluster.collector_kubeconfig(), &[]).unwrap();
    let got = wait_for_events(&recent_out, 1, WAIT);
    let logged = wait_for(WAIT, || {
        let log = collector.log_text();
        log.contains("dropped events older than startup_max_age").then_some(log)
    });
    std::thread::sleep(Duration::from_secs(1));
    let got_after = read_volume(&recent_out).unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got_after.len(), 1);
    assert_eq!(got_after[0]["name"], "recent");
    let log = logged.expect("the startup drop is logged");
    assert!(log.contains("dropped=1"), "{log}");
}

/// A backlog of many pages: each page is read as it streams in
/// (runtime/src/source/list_page.rs) and the continue tokens are followed to
/// the end. The messages carry what a boundary finder could trip on.
#[tokio::test(flavor = "multi_thread")]
async fn a_backlog_of_many_pages_is_listed_whole() {
    let cluster = Cluster::start().expect("cluster");
    cluster.create_namespace("e2e").unwrap();
    let client = cluster.admin_client().await.unwrap();
    let awkward = "quote \" brace } bracket ] comma , \\ backslash caf\u{e9} \u{1F600} {\"items\":[1]}";
    let mut made = Vec::new();
    for i in 0..23 {
        let message = format!("{i}: {awkward}");
        let uid = if i % 2 == 0 {
            let ev = events::core("e2e", &format!("core-{i}"), "Normal", "Pulled", "Pod", "a", &message);
            events::create_core(&client, &ev).await.unwrap().metadata.uid
        } else {
            let ev = events::v1("e2e", &format!("v1-{i}"), "Normal", "Pulled", "Pod", "a", &message);
            events::create_v1(&client, &ev).await.unwrap().metadata.uid
        };
        made.push((uid.unwrap(), message));
    }
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("events");
    let body = volume_config("both", &out).replace("api = \"both\"", "api = \"both\"\npage_size = 4");
    let config = write_config(work.path(), &body);
    let collector = Collector::start(&config, cluster.collector_kubeconfig(), &[]).unwrap();
    wait_for_events(&out, made.len(), WAIT);
    // Give a duplicate a chance to show up before counting.
    std::thread::sleep(Duration::from_secs(2));
    let got = read_volume(&out).unwrap();
    let log = collector.log_text();
    assert_eq!(
        got.len(),
        made.len(),
        "every event once (23 events, pages of 4); log:\n{log}"
    );
    for (uid, message) in &made {
        let lines = by_uid(&got, uid);
        assert_eq!(lines.len(), 1, "event {uid} once");
        assert_eq!(lines[0]["message"], message.as_str(), "{}", lines[0]);
    }
    assert!(!log.contains("skipping an object"), "{log}");
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_stops_cleanly_with_exit_zero() {
    let cluster = Cluster::start().expect("cluster");
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("events");
    let config = write_config(work.path(), &volume_config("events.k8s.io/v1", &out));
    // A context that is not in the kubeconfig is a clear error naming it.
    let out = std::process::Command::new(event_collector_e2e::collector_bin())
        .args([
            "--config",
            config.to_str().unwrap(),
            "--kubeconfig",
            cluster.collector_kubeconfig(),
        ])
        .args(["--context", "no-such-context"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no-such-context") && err.contains(cluster.collector_kubeconfig()),
        "{err}"
    );

    let context = cluster.get("KUBE_CONTEXT").to_string();
    assert!(!context.is_empty());
    let mut collector = Collector::start(&config, cluster.collector_kubeconfig(), &["--context", &context]).unwrap();
    wait_for(WAIT, || {
        collector.log_text().contains("watch established").then_some(())
    })
    .expect("watch established");
    let status = collector.terminate().unwrap();
    assert!(status.success(), "exit status {status}; log:\n{}", collector.log_text());
    assert!(collector.log_text().contains("SIGTERM"));
}

#[test]
fn unreachable_api_server_is_a_clear_error() {
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("events");
    let config = write_config(work.path(), &volume_config("core/v1", &out));
    let kc = work.path().join("kubeconfig");
    std::fs::write(
        &kc,
        "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: https://127.0.0.1:1\n    insecure-skip-tls-verify: true\nusers:\n- name: u\n  user:\n    token: t\ncontexts:\n- name: x\n  context:\n    cluster: c\n    user: u\ncurrent-context: x\n",
    )
    .unwrap();
    let out = std::process::Command::new(event_collector_e2e::collector_bin())
        .args([
            "--config",
            config.to_str().unwrap(),
            "--kubeconfig",
            kc.to_str().unwrap(),
            "--connect-timeout",
            "1s",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    let last = err.lines().last().unwrap_or("");
    assert!(
        last.starts_with("error: cannot reach the API server at https://127.0.0.1:1/"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");

    // A kubeconfig that does not exist names the file.
    let out = std::process::Command::new(event_collector_e2e::collector_bin())
        .args(["--config", config.to_str().unwrap(), "--kubeconfig", "/nonexistent/kc"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/nonexistent/kc"), "{err}");
}
