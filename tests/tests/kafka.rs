//! End-to-end: the collector against a real kube-apiserver and etcd, writing
//! through the Kafka exporter into a real Kafka-protocol broker (tansu,
//! started by `dev_setup/kafka-up.sh`), read back with an rdkafka consumer
//! in a consumer group. Each test starts its own cluster and broker.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use event_collector_e2e::{Cluster, Collector, events, repo_root, wait_for};
use k8s_openapi::api::events::v1::Event as V1Event;
use kube::api::{Api, ListParams};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message, OwnedMessage};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(60);

/// A tansu broker on a free loopback port; stopped when dropped.
struct Kafka {
    dir: PathBuf,
    brokers: String,
    restart: PathBuf,
}

impl Kafka {
    fn start() -> Kafka {
        let dir = tempfile::Builder::new().prefix("ec-kafka-").tempdir().unwrap().keep();
        let out = Command::new("bash")
            .arg(repo_root().join("dev_setup/kafka-up.sh"))
            .arg(&dir)
            .stderr(Stdio::inherit())
            .output()
            .expect("running dev_setup/kafka-up.sh");
        assert!(out.status.success(), "dev_setup/kafka-up.sh failed ({})", out.status);
        let env_file = String::from_utf8_lossy(&out.stdout)
            .lines()
            .last()
            .unwrap_or("")
            .trim()
            .to_string();
        let env: HashMap<String, String> = std::fs::read_to_string(&env_file)
            .unwrap_or_else(|e| panic!("reading {env_file}: {e}"))
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Kafka {
            dir,
            brokers: env["KAFKA_BROKERS"].clone(),
            restart: PathBuf::from(&env["RESTART_KAFKA"]),
        }
    }

    /// Runs the broker's `restart-kafka.sh` with `arg` (`--kill`, `--start`).
    fn ctl(&self, arg: &str) {
        let ok = Command::new(&self.restart).arg(arg).status().unwrap().success();
        assert!(ok, "restart-kafka.sh {arg} failed");
    }
}

impl Drop for Kafka {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(repo_root().join("dev_setup/kafka-down.sh"))
            .arg(&self.dir)
            .stderr(Stdio::null())
            .status();
    }
}

/// A consumer in its own consumer group, reading `topics` from the start.
fn consumer(brokers: &str, group: &str, topics: &[&str]) -> BaseConsumer {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .set("auto.offset.reset", "earliest")
        .set("topic.metadata.refresh.interval.ms", "1000")
        // tansu holds the first JoinGroup for a time that grows with these
        // (about 23 s with librdkafka's defaults, 3 s with these).
        .set("session.timeout.ms", "6000")
        .set("max.poll.interval.ms", "7000")
        .create()
        .expect("kafka consumer");
    c.subscribe(topics).expect("subscribe");
    c
}

/// Polls until `done` says so or `timeout` passes, then 2 s more so that a
/// duplicate would show up too; returns everything read.
fn consume_until(c: &BaseConsumer, timeout: Duration, done: impl Fn(&[OwnedMessage]) -> bool) -> Vec<OwnedMessage> {
    let mut out = Vec::new();
    let deadline = Instant::now() + timeout;
    let mut grace: Option<Instant> = None;
    loop {
        let now = Instant::now();
        if now > deadline || grace.is_some_and(|g| now > g) {
            return out;
        }
        if let Some(Ok(m)) = c.poll(Duration::from_millis(200)) {
            out.push(m.detach());
        }
        if grace.is_none() && done(&out) {
            grace = Some(Instant::now() + Duration::from_secs(2));
        }
    }
}

fn json(m: &OwnedMessage) -> Value {
    serde_json::from_slice(m.payload().expect("payload")).expect("JSON payload")
}

fn header(m: &OwnedMessage, key: &str) -> Option<String> {
    m.headers()?
        .iter()
        .find(|h| h.key == key)
        .and_then(|h| h.value)
        .map(|v| String::from_utf8_lossy(v).into_owned())
}

fn write_config(dir: &Path, body: &str) -> PathBuf {
    let path = dir.join("collector.toml");
    std::fs::write(&path, body).expect("write config");
    path
}

fn kafka_config(brokers: &str, topic: &str, extra: &str) -> String {
    format!(
        r#"
cluster = "e2e"
[source]
api = "events.k8s.io/v1"

[[exporters]]
name = "kafka"
type = "kafka"
brokers = "{brokers}"
topic = "{topic}"
batch_timeout = "20ms"
create_topics = {{ partitions = 3, replication = 1 }}
{extra}

[[routes]]
name = "all"
default = true
exporters = ["kafka"]
"#
    )
}

/// Creates `per_object` events about each of `objects` Pods in `ns`,
/// alternating the core/v1 and events.k8s.io/v1 APIs. Returns their uids.
async fn create_events(cluster: &Cluster, ns: &str, tag: &str, objects: usize, per_object: usize) -> Vec<String> {
    let client = cluster.admin_client().await.expect("admin client");
    let mut uids = Vec::new();
    for n in 0..per_object {
        for o in 0..objects {
            let name = format!("{tag}-{o}-{n}");
            let object = format!("{tag}-pod-{o}");
            let uid = if (o + n) % 2 == 0 {
                let ev = events::core(
                    ns,
                    &name,
                    "Warning",
                    "BackOff",
                    "Pod",
                    &object,
                    &format!("crash {name}"),
                );
                events::create_core(&client, &ev)
                    .await
                    .expect("create core event")
                    .metadata
                    .uid
            } else {
                let ev = events::v1(ns, &name, "Normal", "Pulled", "Pod", &object, &format!("pulled {name}"));
                events::create_v1(&client, &ev)
                    .await
                    .expect("create v1 event")
                    .metadata
                    .uid
            };
            uids.push(uid.expect("uid"));
        }
    }
    uids
}

/// The collector process is still running.
fn alive(c: &mut Collector) -> bool {
    matches!(c.child.try_wait(), Ok(None))
}

/// Events reach Kafka exactly once, each field as the API server holds it,
/// keyed by the object's uid (one object, one partition, in order), with the
/// headers.
#[tokio::test(flavor = "multi_thread")]
async fn events_reach_kafka_with_fields_keys_partitions_and_headers() {
    let cluster = Cluster::start().expect("cluster");
    cluster.create_namespace("e2e").unwrap();
    let kafka = Kafka::start();
    let work = tempfile::tempdir().unwrap();
    let config = write_config(work.path(), &kafka_config(&kafka.brokers, "k8s-events", ""));
    let mut collector = Collector::start(&config, cluster.collector_kubeconfig(), &[]).unwrap();

    // 6 objects with 4 events each.
    let uids = create_events(&cluster, "e2e", "obj", 6, 4).await;
    let consumer = consumer(&kafka.brokers, "e2e-basic", &["k8s-events"]);
    let got = consume_until(&consumer, WAIT, |m| m.len() >= uids.len());
    let log = collector.log_text();
    assert!(alive(&mut collector), "collector exited; log:\n{log}");
    assert_eq!(got.len(), uids.len(), "one message per event; log:\n{log}");

    // What the API server holds, by uid.
    let client = cluster.admin_client().await.unwrap();
    let listed = Api::<V1Event>::namespaced(client, "e2e")
        .list(&ListParams::default())
        .await
        .unwrap();
    let server: HashMap<String, V1Event> = listed
        .items
        .into_iter()
        .map(|e| (e.metadata.uid.clone().unwrap(), e))
        .collect();

    let mut seen = HashSet::new();
    let mut partition_of: HashMap<String, i32> = HashMap::new();
    for m in &got {
        let e = json(m);
        let uid = e["uid"].as_str().unwrap().to_string();
        assert!(seen.insert(uid.clone()), "event {uid} twice");
        assert!(uids.contains(&uid), "unexpected event {e}");
        let s = &server[&uid];
        let regarding = s.regarding.as_ref().unwrap();
        assert_eq!(e["schema_version"], 1);
        assert_eq!(e["cluster"], "e2e");
        assert_eq!(e["api"], "events.k8s.io/v1");
        assert_eq!(e["namespace"], "e2e");
        assert_eq!(e["name"], s.metadata.name.as_deref().unwrap());
        assert_eq!(e["resource_version"], s.metadata.resource_version.as_deref().unwrap());
        assert_eq!(e["type"], s.type_.as_deref().unwrap());
        assert_eq!(e["reason"], s.reason.as_deref().unwrap());
        assert_eq!(e["message"], s.note.as_deref().unwrap());
        assert_eq!(e["object"]["kind"], "Pod");
        assert_eq!(e["object"]["name"], regarding.name.as_deref().unwrap());
        assert_eq!(e["object"]["uid"], regarding.uid.as_deref().unwrap());
        assert_eq!(e["object"]["namespace"], "e2e");
        assert_eq!(e["watch_type"], "ADDED");
        assert_eq!(e["count"], 1);

        // Keyed by the object's uid; one object's events share a partition.
        let key = String::from_utf8_lossy(m.key().expect("a key")).into_owned();
        assert_eq!(key, regarding.uid.clone().unwrap());
        let p = *partition_of.entry(key.clone()).or_insert(m.partition());
        assert_eq!(p, m.partition(), "events of {key} in two partitions");

        assert_eq!(header(m, "cluster").as_deref(), Some("e2e"));
        assert_eq!(header(m, "type").as_deref(), s.type_.as_deref());
        assert_eq!(header(m, "reason").as_deref(), s.reason.as_deref());
        assert_eq!(header(m, "api").as_deref(), Some("events.k8s.io/v1"));
        assert_eq!(header(m, "schema_version").as_deref(), Some("1"));
    }
    assert_eq!(partition_of.len(), 6);
    let used: HashSet<i32> = partition_of.values().copied().collect();
    assert!(used.len() > 1, "6 objects over 3 partitions: {partition_of:?}");

    // Within a partition, one object's events are in the order they were created.
    let mut by_partition: Vec<&OwnedMessage> = got.iter().collect();
    by_partition.sort_by_key(|m| (m.partition(), m.offset()));
    let mut last: HashMap<String, usize> = HashMap::new();
    for m in by_partition {
        let e = json(m);
        let name = e["name"].as_str().unwrap();
        let n: usize = name.rsplit('-').next().unwrap().parse().unwrap();
        let object = e["object"]["name"].as_str().unwrap().to_string();
        if let Some(prev) = last.insert(object.clone(), n) {
            assert!(prev < n, "{object}: event {n} after {prev}");
        }
    }
    assert!(collector.log_text().contains("connected to the Kafka cluster"));
    let status = collector.terminate().unwrap();
    assert!(status.success(), "clean exit; log:\n{}", collector.log_text());
}

/// `k8s-events.{namespace}`: two namespaces, two topics (created by the
/// exporter), each holding only its namespace's events.
#[tokio::test(flavor = "multi_thread")]
async fn topic_template_splits_namespaces() {
    let cluster = Cluster::start().expect("cluster");
    cluster.create_namespace("team-a").unwrap();
    cluster.create_namespace("team-b").unwrap();
    let kafka = Kafka::start();
    let work = tempfile::tempdir().unwrap();
    let config = write_config(
        work.path(),
        &kafka_config(&kafka.brokers, "k8s-events.{namespace}", "key = \"namespace\""),
    );
    let mut collector = Collector::start(&config, cluster.collector_kubeconfig(), &[]).unwrap();
    let a = create_events(&cluster, "team-a", "a", 3, 2).await;
    let b = create_events(&cluster, "team-b", "b", 2, 2).await;

    let ca = consumer(&kafka.brokers, "e2e-a", &["k8s-events.team-a"]);
    let got_a = consume_until(&ca, WAIT, |m| m.len() >= a.len());
    let cb = consumer(&kafka.brokers, "e2e-b", &["k8s-events.team-b"]);
    let got_b = consume_until(&cb, WAIT, |m| m.len() >= b.len());
    let log = collector.log_text();
    assert!(alive(&mut collector), "collector exited; log:\n{log}");
    for (got, want, ns) in [(&got_a, &a, "team-a"), (&got_b, &b, "team-b")] {
        let uids: HashSet<String> = got
            .iter()
            .map(|m| json(m)["uid"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(got.len(), want.len(), "{ns}: one message per event; log:\n{log}");
        assert_eq!(uids, want.iter().cloned().collect::<HashSet<_>>(), "{ns}");
        for m in got {
            assert_eq!(m.topic(), format!("k8s-events.{ns}"));
            assert_eq!(json(m)["namespace"], ns);
            assert_eq!(m.key(), Some(ns.as_bytes()), "keyed by namespace");
        }
    }
    assert!(log.contains("created the topic"), "log:\n{log}");
}

/// Kafka dies (SIGKILL) while events keep coming: the collector keeps
/// running and logs the failures; once the broker is back on the same port,
/// every event arrives, none twice.
///
/// tansu runs with memory storage, so its restart loses every message written
/// before the outage (and the topic: the exporter's `create_topics` creates it
/// again). So the check is on what the NEW broker holds: every event created
/// during the outage and after it, exactly once (by uid + resource_version),
/// and no event at all twice. Events from before the outage that were already
/// acknowledged are gone with the old broker's memory; one that was not
/// acknowledged when the broker died is resent and may appear (once).
#[tokio::test(flavor = "multi_thread")]
async fn broker_outage_loses_nothing_and_duplicates_nothing() {
    let cluster = Cluster::start().expect("cluster");
    cluster.create_namespace("e2e").unwrap();
    let kafka = Kafka::start();
    let work = tempfile::tempdir().unwrap();
    let extra = "message_timeout = \"3s\"\nretry_initial_backoff = \"200ms\"\nretry_max_backoff = \"2s\"";
    let config = write_config(work.path(), &kafka_config(&kafka.brokers, "k8s-events", extra));
    let mut collector = Collector::start(&config, cluster.collector_kubeconfig(), &[]).unwrap();

    // Before: delivered and acknowledged.
    let before = create_events(&cluster, "e2e", "before", 3, 1).await;
    let c = consumer(&kafka.brokers, "e2e-before", &["k8s-events"]);
    let got = consume_until(&c, WAIT, |m| m.len() >= before.len());
    assert_eq!(got.len(), before.len(), "log:\n{}", collector.log_text());
    drop(c);

    // During: the broker is gone.
    kafka.ctl("--kill");
    let during = create_events(&cluster, "e2e", "during", 4, 2).await;
    let failing = wait_for(WAIT, || {
        let log = collector.log_text();
        (log.contains("export failed; retrying") && log.contains("kafka exporter not ready")).then_some(())
    });
    let log = collector.log_text();
    assert!(failing.is_some(), "the outage is logged; log:\n{log}");
    std::thread::sleep(Duration::from_secs(4));
    assert!(
        alive(&mut collector),
        "the collector must survive the outage; log:\n{log}"
    );

    // After: the broker is back (empty) on the same port.
    kafka.ctl("--start");
    let after = create_events(&cluster, "e2e", "after", 3, 1).await;

    let must: HashSet<String> = during.iter().chain(&after).cloned().collect();
    let c = consumer(&kafka.brokers, "e2e-after", &["k8s-events"]);
    let got = consume_until(&c, Duration::from_secs(120), |m| {
        let uids: HashSet<String> = m.iter().map(|m| json(m)["uid"].as_str().unwrap().to_string()).collect();
        must.is_subset(&uids)
    });
    let log = collector.log_text();
    assert!(alive(&mut collector), "collector exited; log:\n{log}");
    let mut seen: HashMap<(String, String), usize> = HashMap::new();
    for m in &got {
        let e = json(m);
        let id = (
            e["uid"].as_str().unwrap().to_string(),
            e["resource_version"].as_str().unwrap().to_string(),
        );
        *seen.entry(id).or_default() += 1;
    }
    let dups: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(dups.is_empty(), "duplicates: {dups:?}; log:\n{log}");
    let uids: HashSet<String> = seen.keys().map(|(u, _)| u.clone()).collect();
    let missing: Vec<_> = must.difference(&uids).collect();
    assert!(missing.is_empty(), "lost across the outage: {missing:?}; log:\n{log}");
    let unexpected: Vec<_> = uids
        .iter()
        .filter(|u| !must.contains(*u) && !before.contains(*u))
        .collect();
    assert!(unexpected.is_empty(), "{unexpected:?}");
    assert!(log.contains("exporter recovered"), "log:\n{log}");
    eprintln!("collector log:\n{log}");
    let status = collector.terminate().unwrap();
    assert!(status.success(), "clean exit; log:\n{}", collector.log_text());
}

/// Creates `n` core/v1 Events named `{prefix}-{i}` in `ns` with 8 concurrent
/// clients; returns their (uid, resourceVersion).
async fn create_many(client: kube::Client, ns: &str, prefix: &str, n: usize) -> HashSet<(String, String)> {
    let mut set = tokio::task::JoinSet::new();
    for w in 0..8 {
        let (client, ns, prefix) = (client.clone(), ns.to_string(), prefix.to_string());
        set.spawn(async move {
            let mut out = Vec::new();
            for i in (w..n).step_by(8) {
                let name = format!("{prefix}-{i}");
                let ev = events::core(&ns, &name, "Normal", "Created", "Pod", &name, "kill test");
                let c = events::create_core(&client, &ev).await.expect("create event");
                out.push((c.metadata.uid.unwrap(), c.metadata.resource_version.unwrap()));
            }
            out
        });
    }
    let mut all = HashSet::new();
    while let Some(r) = set.join_next().await {
        all.extend(r.expect("creator task"));
    }
    all
}

/// Fault-matrix row 1 with Kafka: the collector is SIGKILLed mid-stream and
/// restarted. What it produced after its last checkpoint write is read back
/// from the topic at the restart and not produced again: every event is in
/// the topic exactly once.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "open: the Kafka read-back is not verified yet (see exporters/src/kafka/broker_tests.rs)"]
async fn sigkill_mid_stream_then_restart_produces_nothing_twice() {
    let cluster = Cluster::start().expect("cluster");
    cluster.create_namespace("e2e").unwrap();
    let kafka = Kafka::start();
    let work = tempfile::tempdir().unwrap();
    let config = write_config(work.path(), &kafka_config(&kafka.brokers, "k8s-events", ""));
    let mut collector = Collector::start(&config, cluster.collector_kubeconfig(), &[]).unwrap();
    let client = cluster.admin_client().await.unwrap();
    let creating = tokio::spawn(async move { create_many(client, "e2e", "k", 4000).await });
    let watcher = consumer(&kafka.brokers, "e2e-progress", &["k8s-events"]);
    let progress = tokio::task::block_in_place(|| {
        let (mut n, deadline) = (0, Instant::now() + WAIT);
        while n < 500 && Instant::now() < deadline {
            if let Some(Ok(_)) = watcher.poll(Duration::from_millis(100)) {
                n += 1;
            }
        }
        n
    });
    assert!(progress >= 500, "log:\n{}", collector.log_text());
    // Still going? Kill it while it exports.
    std::process::Command::new("kill")
        .args(["-KILL", &collector.child.id().to_string()])
        .status()
        .expect("kill");
    let _ = collector.child.wait();
    let first_log = collector.log_text();
    let created = creating.await.unwrap();

    let mut collector = Collector::start(&config, cluster.collector_kubeconfig(), &[]).unwrap();
    let c = consumer(&kafka.brokers, "e2e-all", &["k8s-events"]);
    let got = tokio::task::block_in_place(|| {
        consume_until(&c, Duration::from_secs(180), |m| {
            let have: HashSet<(String, String)> = m
                .iter()
                .map(|m| {
                    let e = json(m);
                    (
                        e["uid"].as_str().unwrap().to_string(),
                        e["resource_version"].as_str().unwrap().to_string(),
                    )
                })
                .collect();
            created.is_subset(&have)
        })
    });
    let log = collector.log_text();
    let mut count: HashMap<(String, String), usize> = HashMap::new();
    for m in &got {
        let e = json(m);
        let id = (
            e["uid"].as_str().unwrap().to_string(),
            e["resource_version"].as_str().unwrap().to_string(),
        );
        *count.entry(id).or_default() += 1;
    }
    let lost = created.iter().filter(|k| !count.contains_key(*k)).count();
    let duplicated: usize = count.values().map(|n| n - 1).sum();
    eprintln!(
        "kafka row 1 (SIGKILL): created={} lost={lost} duplicated={duplicated} read before the kill={progress}",
        created.len()
    );
    assert_eq!((lost, duplicated), (0, 0), "first run:\n{first_log}\nrestart:\n{log}");
    assert!(
        log.contains("read back what was produced after the saved position"),
        "{log}"
    );
    let status = collector.terminate().unwrap();
    assert!(status.success(), "clean exit; log:\n{}", collector.log_text());
}

/// A config error in the Kafka exporter stops the collector at startup with
/// a message naming the exporter and its place in the file; a good one
/// (with `[exporters.properties]` nested under the exporter) passes
/// check-config without any broker running.
#[test]
fn kafka_config_is_checked_by_check_config() {
    let work = tempfile::tempdir().unwrap();
    let pw = work.path().join("kafka-password");
    std::fs::write(&pw, "s3cret\n").unwrap();
    let good = format!(
        r#"
cluster = "e2e"
[[exporters]]
name = "kafka"
type = "kafka"
brokers = ["127.0.0.1:1", "127.0.0.1:2"]
topic = "k8s-events.{{namespace}}"
key = "object_uid"
compression = "zstd"
linger = "10ms"
batch_size = "256KiB"
message_timeout = "10s"
sasl = {{ mechanism = "SCRAM-SHA-256", username = "ec", password_file = "{}" }}
batch_max_events = 500

[exporters.properties]
"queue.buffering.max.kbytes" = 65536
"socket.keepalive.enable" = true

[[routes]]
name = "all"
default = true
exporters = ["kafka"]
"#,
        pw.display()
    );
    let config = write_config(work.path(), &good);
    let out = Command::new(event_collector_e2e::collector_bin())
        .args(["check-config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("OK (1 exporters, 1 routes)"));

    let config = write_config(
        work.path(),
        &good.replace("\"socket.keepalive.enable\"", "\"no.such.setting\""),
    );
    let out = Command::new(event_collector_e2e::collector_bin())
        .args(["check-config"])
        .arg(&config)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        text.contains("exporter `kafka`") && text.contains("no.such.setting"),
        "{text}"
    );

    let config = write_config(
        work.path(),
        &kafka_config("127.0.0.1:1", "k8s-events.{namespac}", "")
            .replace("create_topics = { partitions = 3, replication = 1 }", ""),
    );
    let out = Command::new(event_collector_e2e::collector_bin())
        .args(["check-config"])
        .arg(&config)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(text.contains("exporter `kafka`"), "{text}");
    assert!(text.contains("unknown placeholder `{namespac}`"), "{text}");
    assert!(text.contains("collector.toml:"), "file:line:col: {text}");

    let config = write_config(
        work.path(),
        &kafka_config(
            "127.0.0.1:1",
            "k8s-events",
            "sasl = { mechanism = \"SCRAM-SHA-512\", username = \"ec\", password_env = \"EC_E2E_NO_SUCH_VAR\" }",
        ),
    );
    let out = Command::new(event_collector_e2e::collector_bin())
        .args(["check-config"])
        .arg(&config)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(text.contains("exporter `kafka`"), "{text}");
    assert!(
        text.contains("`EC_E2E_NO_SUCH_VAR` (`sasl.password_env`) is not set"),
        "{text}"
    );
}
