//! End-to-end delivery guarantees (docs/reliability.md, the fault matrix):
//! the collector against a real kube-apiserver and etcd, writing through the
//! Volume exporter, while it is killed, stopped, its API server restarted,
//! etcd compacted under it, or its leader replaced. Each row creates a few
//! thousand Events concurrently through the API server and counts, by
//! (uid, resourceVersion), what the Volume output lost and duplicated (row 1
//! also with a Kafka exporter beside it, counting the Kafka topic too).

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use event_collector_e2e::{Cluster, Collector, DevServer, events, read_volume, wait_for};
use k8s_openapi::api::core::v1::Event as CoreEvent;
use kube::api::{Api, DeleteParams};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(180);
const NS: &str = "e2e";

fn config(out: &Path, state: &Path, extra: &str) -> String {
    config_with(out, state, extra, "")
}

/// [`config`] plus `exporter` (TOML of one more `[[exporters]]` table, whose
/// name must be the first word after `name = `), routed with "local".
fn config_with(out: &Path, state: &Path, extra: &str, exporter: &str) -> String {
    let more = exporter
        .lines()
        .find_map(|l| l.trim().strip_prefix("name = "))
        .map(|n| format!(", {n}"))
        .unwrap_or_default();
    format!(
        r#"
cluster = "e2e"
[source]
api = "core/v1"
namespaces = ["{NS}"]

[state]
dir = "{}"
{extra}

[[exporters]]
name = "local"
type = "volume"
path = "{}"
fsync = "always"
batch_timeout = "20ms"
{exporter}
[[routes]]
name = "all"
default = true
exporters = ["local"{more}]
"#,
        state.display(),
        out.display()
    )
}

fn write(dir: &Path, name: &str, body: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, body).expect("write config");
    p
}

/// Creates `n` core/v1 Events named `{prefix}-{i}` with `workers` concurrent
/// clients; a create that fails (API server down) is retried, and one that
/// already exists (its reply was lost) is read back. Returns (uid, rv) by name.
async fn create_many(
    client: kube::Client,
    prefix: &str,
    n: usize,
    workers: usize,
) -> HashMap<String, (String, String)> {
    let mut set = tokio::task::JoinSet::new();
    for w in 0..workers {
        let client = client.clone();
        let prefix = prefix.to_string();
        set.spawn(async move {
            let api: Api<CoreEvent> = Api::namespaced(client.clone(), NS);
            let mut out = Vec::new();
            for i in (w..n).step_by(workers) {
                let name = format!("{prefix}-{i}");
                let ev = events::core(NS, &name, "Normal", "Created", "Pod", &name, "delivery test");
                for attempt in 0.. {
                    match events::create_core(&client, &ev).await {
                        Ok(c) => {
                            out.push((
                                name.clone(),
                                c.metadata.uid.unwrap(),
                                c.metadata.resource_version.unwrap(),
                            ));
                            break;
                        }
                        Err(e) if e.to_string().contains("already exists") => {
                            let c = api.get(&name).await.expect("read back");
                            out.push((
                                name.clone(),
                                c.metadata.uid.unwrap(),
                                c.metadata.resource_version.unwrap(),
                            ));
                            break;
                        }
                        Err(e) => {
                            assert!(attempt < 600, "creating {name}: {e}");
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                    }
                }
            }
            out
        });
    }
    let mut all = HashMap::new();
    while let Some(r) = set.join_next().await {
        for (name, uid, rv) in r.expect("creator task") {
            all.insert(name, (uid, rv));
        }
    }
    all
}

/// What the Volume output holds compared with what was created.
#[derive(Debug)]
struct Tally {
    created: usize,
    lost: usize,
    duplicated: usize,
    gap_records: Vec<Value>,
    other: usize,
}

fn tally(outs: &[&Path], expected: &HashSet<(String, String)>) -> Tally {
    let mut counts: HashMap<(String, String), usize> = HashMap::new();
    let mut gap_records = Vec::new();
    let mut other = 0;
    for out in outs {
        for e in read_volume(out).expect("read volume") {
            if e["reason"] == "EventCollectorGap" {
                gap_records.push(e);
                continue;
            }
            let key = (
                e["uid"].as_str().unwrap_or("").to_string(),
                e["resource_version"].as_str().unwrap_or("").to_string(),
            );
            if expected.contains(&key) {
                *counts.entry(key).or_default() += 1;
            } else {
                other += 1;
            }
        }
    }
    Tally {
        created: expected.len(),
        lost: expected.iter().filter(|k| !counts.contains_key(*k)).count(),
        duplicated: counts.values().map(|c| c - 1).sum(),
        gap_records,
        other,
    }
}

fn keys(m: &HashMap<String, (String, String)>) -> HashSet<(String, String)> {
    m.values().cloned().collect()
}

fn wait_all(outs: &[&Path], expected: &HashSet<(String, String)>) -> Tally {
    wait_for(WAIT, || {
        let t = tally(outs, expected);
        (t.lost == 0).then_some(())
    });
    // Give a late duplicate a chance to show up before counting.
    std::thread::sleep(Duration::from_secs(2));
    tally(outs, expected)
}

fn count_events(out: &Path) -> usize {
    read_volume(out).map(|v| v.len()).unwrap_or(0)
}

fn kill9(c: &mut Collector) {
    Command::new("kill")
        .args(["-KILL", &c.child.id().to_string()])
        .status()
        .expect("kill");
    let _ = c.child.wait();
}

struct Setup {
    cluster: Cluster,
    work: tempfile::TempDir,
}

fn setup() -> Setup {
    let cluster = Cluster::start().expect("cluster");
    cluster.create_namespace(NS).unwrap();
    Setup {
        cluster,
        work: tempfile::tempdir().unwrap(),
    }
}

/// The log lines of a restart about what was read back from the sink and not sent again.
fn recovery_lines(log: &str) -> Vec<&str> {
    log.lines()
        .filter(|l| l.contains("read back") || l.contains("not sent again"))
        .collect()
}

fn report(row: &str, t: &Tally) {
    eprintln!(
        "fault-matrix {row}: created={} lost={} duplicated={} gap_records={} other={}",
        t.created,
        t.lost,
        t.duplicated,
        t.gap_records.len(),
        t.other
    );
}

/// Row 1: SIGKILL mid-stream, then restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn row1_sigkill_mid_stream_then_restart() {
    let s = setup();
    let out = s.work.path().join("out");
    let cfg = write(s.work.path(), "c.toml", &config(&out, &s.work.path().join("state"), ""));
    let mut c = Collector::start(&cfg, s.cluster.collector_kubeconfig(), &[]).unwrap();
    let client = s.cluster.admin_client().await.unwrap();
    let creating = tokio::spawn(async move { create_many(client, "k", 4000, 16).await });
    assert!(wait_for(WAIT, || (count_events(&out) >= 1000).then_some(())).is_some());
    kill9(&mut c);
    let created = creating.await.unwrap();
    let mut c = Collector::start(&cfg, s.cluster.collector_kubeconfig(), &[]).unwrap();
    let t = wait_all(&[&out], &keys(&created));
    let status = c.terminate().unwrap();
    report("row 1 (SIGKILL)", &t);
    eprintln!("row 1 restart: {:#?}", recovery_lines(&c.log_text()));
    assert!(status.success(), "{status}\n{}", c.log_text());
    // Exactly once: what was written after the last checkpoint write is read
    // back from the output at the restart and not written again.
    assert_eq!((t.lost, t.duplicated), (0, 0), "{t:?}\n{}", c.log_text());
    assert!(t.gap_records.is_empty(), "no 410: no gap");
}

/// Row 2: SIGTERM mid-stream; more events while it is down; restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn row2_sigterm_mid_stream_restart_later() {
    let s = setup();
    let out = s.work.path().join("out");
    let cfg = write(s.work.path(), "c.toml", &config(&out, &s.work.path().join("state"), ""));
    let mut c = Collector::start(&cfg, s.cluster.collector_kubeconfig(), &[]).unwrap();
    let client = s.cluster.admin_client().await.unwrap();
    let creating = tokio::spawn(async move { create_many(client, "t", 3000, 16).await });
    assert!(wait_for(WAIT, || (count_events(&out) >= 1000).then_some(())).is_some());
    let status = c.terminate().unwrap();
    assert!(status.success(), "exit 0 on SIGTERM: {status}\n{}", c.log_text());
    assert!(c.log_text().contains("stopped"), "{}", c.log_text());
    let mut created = creating.await.unwrap();
    created.extend(create_many(s.cluster.admin_client().await.unwrap(), "down", 1000, 16).await);
    let mut c = Collector::start(&cfg, s.cluster.collector_kubeconfig(), &[]).unwrap();
    let t = wait_all(&[&out], &keys(&created));
    c.terminate().unwrap();
    report("row 2 (SIGTERM)", &t);
    assert!(
        c.log_text().contains("resuming from the checkpoint"),
        "{}",
        c.log_text()
    );
    assert_eq!((t.lost, t.duplicated), (0, 0), "{t:?}");
    assert!(t.gap_records.is_empty());
}

/// Row 3: the API server restarts mid-stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn row3_apiserver_restart_mid_stream() {
    let s = setup();
    let out = s.work.path().join("out");
    let cfg = write(s.work.path(), "c.toml", &config(&out, &s.work.path().join("state"), ""));
    let mut c = Collector::start(&cfg, s.cluster.collector_kubeconfig(), &[]).unwrap();
    let client = s.cluster.admin_client().await.unwrap();
    let creating = tokio::spawn(async move { create_many(client, "a", 3000, 16).await });
    assert!(wait_for(WAIT, || (count_events(&out) >= 800).then_some(())).is_some());
    let st = Command::new("bash")
        .arg(s.cluster.get("RESTART_APISERVER"))
        .arg("2")
        .status()
        .unwrap();
    assert!(st.success());
    let created = creating.await.unwrap();
    let t = wait_all(&[&out], &keys(&created));
    c.terminate().unwrap();
    report("row 3 (apiserver restart)", &t);
    assert!(
        c.log_text().contains("watch interrupted"),
        "the restart was seen:\n{}",
        c.log_text()
    );
    assert_eq!((t.lost, t.duplicated), (0, 0), "{t:?}");
}

fn etcdctl(cluster: &Cluster, args: &[&str]) -> String {
    let bin = match cluster.get("ETCDCTL_BIN") {
        "" => "etcdctl",
        b => b,
    };
    let out = Command::new(bin)
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={}", cluster.get("ETCD_ENDPOINT")))
        .args(args)
        .output()
        .expect("etcdctl");
    assert!(
        out.status.success(),
        "etcdctl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// Row 4: etcd compacted while the collector is down; the restart meets 410.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn row4_compaction_while_down_gap_record_and_no_duplicates() {
    let s = setup();
    let out = s.work.path().join("out");
    let cfg = write(s.work.path(), "c.toml", &config(&out, &s.work.path().join("state"), ""));
    let mut c = Collector::start(&cfg, s.cluster.collector_kubeconfig(), &[]).unwrap();
    let before = create_many(s.cluster.admin_client().await.unwrap(), "before", 1500, 16).await;
    wait_all(&[&out], &keys(&before));
    assert!(c.terminate().unwrap().success());

    // While it is down: new events, some of them deleted again, then compaction.
    let during = create_many(s.cluster.admin_client().await.unwrap(), "during", 2000, 16).await;
    let client = s.cluster.admin_client().await.unwrap();
    let api: Api<CoreEvent> = Api::namespaced(client, NS);
    let mut deleted = HashSet::new();
    for i in (0..2000).step_by(7) {
        let name = format!("during-{i}");
        api.delete(&name, &DeleteParams::default()).await.expect("delete");
        deleted.insert(during[&name].clone());
    }
    let status: Value = serde_json::from_str(&etcdctl(&s.cluster, &["endpoint", "status", "-w", "json"])).unwrap();
    let rev = status[0]["Status"]["header"]["revision"]
        .as_i64()
        .expect("etcd revision");
    etcdctl(&s.cluster, &["compaction", &rev.to_string()]);

    let mut c = Collector::start(&cfg, s.cluster.collector_kubeconfig(), &[]).unwrap();
    let mut present = keys(&before);
    present.extend(keys(&during).difference(&deleted).cloned());
    let t = wait_all(&[&out], &present);
    c.terminate().unwrap();
    report("row 4 (compaction while down)", &t);
    let log = c.log_text();
    assert!(log.contains("gap record"), "{log}");
    assert_eq!((t.lost, t.duplicated), (0, 0), "{t:?}");
    assert_eq!(t.gap_records.len(), 1, "{t:?}");
    let g = &t.gap_records[0];
    assert_eq!(g["type"], "Warning");
    assert!(g["message"].as_str().unwrap().contains("410 Gone"), "{g}");
    assert!(
        g["annotations"]["event-collector.io/gap-stream"]
            .as_str()
            .unwrap()
            .contains("core/v1 in e2e")
    );
    // The deleted events are really gone: not exported, covered by the gap record only.
    let t_deleted = tally(&[&out], &deleted);
    assert_eq!(t_deleted.lost, deleted.len(), "deleted events cannot be exported");
    eprintln!("fault-matrix row 4: deleted while down = {}", deleted.len());
}

/// The PID in a Volume output's lock file: the process that owns the output.
fn lock_owner(out: &Path) -> String {
    std::fs::read_to_string(out.join("events.lock"))
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// Row 7: two replicas with leader election; the leader is SIGKILLed. Both
/// write the same Volume directory (a shared volume): only the leader opens
/// it, and the new leader reads back what the old one wrote after the last
/// checkpoint.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn row7_leader_killed_standby_takes_over() {
    let s = setup();
    let ha = r#"checkpoint = "configmap"
namespace = "event-collector"
[ha]
enabled = true
lease_namespace = "event-collector"
lease_duration = "4s"
renew_deadline = "3s"
retry_period = "500ms""#;
    let out = s.work.path().join("out");
    let cfg_a = write(
        s.work.path(),
        "a.toml",
        &config(
            &out,
            &s.work.path().join("sa"),
            &format!("{ha}\nidentity = \"replica-a\""),
        ),
    );
    let cfg_b = write(
        s.work.path(),
        "b.toml",
        &config(
            &out,
            &s.work.path().join("sb"),
            &format!("{ha}\nidentity = \"replica-b\""),
        ),
    );
    let mut a = Collector::start(&cfg_a, s.cluster.collector_kubeconfig(), &[]).unwrap();
    assert!(
        wait_for(WAIT, || a.log_text().contains("acquired the lease").then_some(())).is_some(),
        "{}",
        a.log_text()
    );
    let mut b = Collector::start(&cfg_b, s.cluster.collector_kubeconfig(), &[]).unwrap();
    assert!(wait_for(WAIT, || b.log_text().contains("standby").then_some(())).is_some());
    let client = s.cluster.admin_client().await.unwrap();
    let creating = tokio::spawn(async move { create_many(client, "h", 3000, 16).await });
    assert!(wait_for(WAIT, || (count_events(&out) >= 1000).then_some(())).is_some());
    assert_eq!(
        lock_owner(&out),
        a.child.id().to_string(),
        "only the leader opens the output"
    );
    kill9(&mut a);
    let created = creating.await.unwrap();
    let t = wait_all(&[&out], &keys(&created));
    let owner = lock_owner(&out);
    let status = b.terminate().unwrap();
    report("row 7 (leader SIGKILL, standby takes over)", &t);
    let log = b.log_text();
    eprintln!("row 7 takeover: {:#?}", recovery_lines(&log));
    assert!(status.success(), "{log}");
    assert!(
        log.contains("acquired the lease") && log.contains("resuming from the checkpoint"),
        "{log}"
    );
    assert_eq!(owner, b.child.id().to_string(), "the standby took over");
    assert_eq!((t.lost, t.duplicated), (0, 0), "{t:?}\n{log}");
    assert!(t.gap_records.is_empty(), "no gap: {t:?}");
}

/// Row 8: a malformed Event object served by the API server (written to etcd
/// without a uid, as a restore or a broken tool could) is skipped with a
/// metric and a log line naming it; the stream goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn row8_malformed_object_is_skipped_and_the_stream_goes_on() {
    let s = setup();
    let out = s.work.path().join("out");
    let cfg = write(s.work.path(), "c.toml", &config(&out, &s.work.path().join("state"), ""));
    let mut c = Collector::start(&cfg, s.cluster.collector_kubeconfig(), &[]).unwrap();
    let first = create_many(s.cluster.admin_client().await.unwrap(), "m1", 1000, 16).await;
    wait_all(&[&out], &keys(&first));
    let broken = serde_json::json!({
        "kind": "Event", "apiVersion": "v1",
        "metadata": {"name": "broken-1", "namespace": NS, "creationTimestamp": "2024-01-01T00:00:00Z"},
        "involvedObject": {"kind": "Pod", "name": "x", "namespace": NS},
        "reason": "Broken", "type": "Normal", "count": 1
    });
    etcdctl(
        &s.cluster,
        &["put", &format!("/registry/events/{NS}/broken-1"), &broken.to_string()],
    );
    let second = create_many(s.cluster.admin_client().await.unwrap(), "m2", 1000, 16).await;
    let mut all = keys(&first);
    all.extend(keys(&second));
    let t = wait_all(&[&out], &all);
    c.terminate().unwrap();
    report("row 8 (malformed object)", &t);
    let log = c.log_text();
    assert!(log.contains("broken-1"), "a log line names the object:\n{log}");
    assert!(log.contains("uid"), "{log}");
    assert_eq!((t.lost, t.duplicated, t.other), (0, 0, 0), "{t:?}");
}

/// A tansu broker for the Kafka rows; stopped when dropped.
fn kafka_broker() -> (DevServer, String) {
    let server = DevServer::start("kafka", &[]).expect("dev_setup/kafka-up.sh");
    let brokers = server.get("KAFKA_BROKERS").to_string();
    (server, brokers)
}

/// The Volume exporter and a Kafka exporter (topic `events`, 3 partitions) on one route.
fn kafka_config(out: &Path, state: &Path, brokers: &str) -> String {
    let kafka = format!(
        r#"
[[exporters]]
name = "kafka"
type = "kafka"
brokers = "{brokers}"
topic = "events"
batch_timeout = "20ms"
create_topics = {{ partitions = 3, replication = 1 }}
"#
    );
    config_with(out, state, "", &kafka)
}

/// Reads every record of `topic` (every partition, from its start, without a
/// consumer group) until all of `expected` are there or `WAIT` passes, then
/// 2 s more so that a late duplicate shows too; counts by (uid, resourceVersion).
fn tally_kafka(brokers: &str, topic: &str, expected: &HashSet<(String, String)>) -> Tally {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "e2e-delivery")
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .create()
        .expect("kafka consumer");
    let md = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .expect("topic metadata");
    let mut tpl = TopicPartitionList::new();
    for t in md.topics().iter().filter(|t| t.name() == topic) {
        for p in t.partitions() {
            tpl.add_partition_offset(topic, p.id(), Offset::Beginning).unwrap();
        }
    }
    consumer.assign(&tpl).expect("assign");
    let mut counts: HashMap<(String, String), usize> = HashMap::new();
    let mut other = 0;
    let deadline = Instant::now() + WAIT;
    let mut grace: Option<Instant> = None;
    while Instant::now() < deadline && grace.is_none_or(|g| Instant::now() < g) {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                let v: Value = serde_json::from_slice(m.payload().unwrap_or_default()).unwrap_or_default();
                let key = (
                    v["uid"].as_str().unwrap_or("").to_string(),
                    v["resource_version"].as_str().unwrap_or("").to_string(),
                );
                if expected.contains(&key) {
                    *counts.entry(key).or_default() += 1;
                } else {
                    other += 1;
                }
            }
            Some(Err(e)) => eprintln!("kafka consumer: {e}"),
            None => {}
        }
        if grace.is_none() && counts.len() == expected.len() {
            grace = Some(Instant::now() + Duration::from_secs(2));
        }
    }
    Tally {
        created: expected.len(),
        lost: expected.iter().filter(|k| !counts.contains_key(*k)).count(),
        duplicated: counts.values().map(|c| c - 1).sum(),
        gap_records: Vec::new(),
        other,
    }
}

/// Row 1 with Kafka: SIGKILL mid-stream, then restart; exactly once in the
/// Kafka topic too (what was produced after the last checkpoint write is read
/// back from the topic at the restart and not produced again), and in the
/// Volume output beside it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn row1_kafka_sigkill_mid_stream_then_restart() {
    let s = setup();
    let (_kafka, brokers) = kafka_broker();
    let out = s.work.path().join("out");
    let cfg = write(
        s.work.path(),
        "c.toml",
        &kafka_config(&out, &s.work.path().join("state"), &brokers),
    );
    let mut c = Collector::start(&cfg, s.cluster.collector_kubeconfig(), &[]).unwrap();
    let client = s.cluster.admin_client().await.unwrap();
    let creating = tokio::spawn(async move { create_many(client, "q", 4000, 16).await });
    assert!(wait_for(WAIT, || (count_events(&out) >= 1000).then_some(())).is_some());
    kill9(&mut c);
    // The first run's log and saved state, shown if the test fails (the restart writes a new log).
    let first_log = c.log_text();
    let saved = std::fs::read_to_string(s.work.path().join("state").join("checkpoint.json")).unwrap_or_default();
    let created = creating.await.unwrap();
    let mut c = Collector::start(&cfg, s.cluster.collector_kubeconfig(), &[]).unwrap();
    let expected = keys(&created);
    let t = wait_all(&[&out], &expected);
    let k = tally_kafka(&brokers, "events", &expected);
    let status = c.terminate().unwrap();
    report("row 1 (SIGKILL), volume", &t);
    report("row 1 (SIGKILL), kafka", &k);
    let log = c.log_text();
    eprintln!("row 1 (kafka) first run, killed:\n{first_log}\nits saved state: {saved}");
    eprintln!("row 1 (kafka) restart: {:#?}", recovery_lines(&log));
    assert!(status.success(), "{status}\n{log}");
    assert!(
        log.contains("kafka exporter: read back what was produced after the saved position"),
        "the restart read the topic back from a saved position\n{log}"
    );
    assert!(!log.contains("did not reach the end"), "{log}");
    assert_eq!((k.lost, k.duplicated, k.other), (0, 0, 0), "kafka: {k:?}\n{log}");
    assert_eq!((t.lost, t.duplicated), (0, 0), "volume: {t:?}\n{log}");
}

/// The Kafka row's config is the Volume rows' config plus the Kafka exporter,
/// on the one route.
#[test]
fn kafka_config_adds_the_broker_to_the_volume_route() {
    let cfg: toml::Table =
        toml::from_str(&kafka_config(Path::new("/o"), Path::new("/s"), "127.0.0.1:9092")).expect("TOML");
    let exporters = cfg["exporters"].as_array().expect("exporters");
    let names: Vec<&str> = exporters.iter().filter_map(|e| e["name"].as_str()).collect();
    assert_eq!(names, ["local", "kafka"]);
    assert_eq!(exporters[1]["brokers"].as_str(), Some("127.0.0.1:9092"));
    let route = &cfg["routes"].as_array().expect("routes")[0];
    assert_eq!(
        route["exporters"].as_array().expect("route exporters"),
        &vec![toml::Value::from("local"), toml::Value::from("kafka")]
    );
    assert_eq!(cfg["state"]["dir"].as_str(), Some("/s"));
}
