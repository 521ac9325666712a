//! The exporter against a real Kafka-protocol broker: tansu, started on a
//! free loopback port by `dev_setup/kafka-up.sh` (which installs it on first
//! use, see `dev_setup/install-kafka.sh`). Messages are read back with an
//! rdkafka consumer.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::Message;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Headers;

use super::*;
use crate::{ErrorKind, Record};

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// A tansu broker; stopped when dropped.
pub(super) struct Broker {
    dir: PathBuf,
    pub brokers: String,
    restart: PathBuf,
    pid: String,
}

impl Broker {
    pub(super) fn start() -> Broker {
        let dir = tempfile::Builder::new().prefix("ec-kafka-").tempdir().unwrap().keep();
        let out = Command::new("bash")
            .arg(repo_root().join("dev_setup/kafka-up.sh"))
            .arg(&dir)
            .stderr(Stdio::inherit())
            .output()
            .expect("running dev_setup/kafka-up.sh");
        assert!(out.status.success(), "dev_setup/kafka-up.sh failed");
        let env_file = String::from_utf8_lossy(&out.stdout)
            .lines()
            .last()
            .unwrap()
            .trim()
            .to_string();
        let env: HashMap<String, String> = std::fs::read_to_string(&env_file)
            .unwrap()
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Broker {
            dir,
            brokers: env["KAFKA_BROKERS"].clone(),
            restart: PathBuf::from(&env["RESTART_KAFKA"]),
            pid: env["KAFKA_PID"].clone(),
        }
    }

    /// `restart-kafka.sh ARG` (`--kill`, `--start`, ...).
    pub(super) fn ctl(&self, arg: &str) {
        let ok = Command::new(&self.restart).arg(arg).status().unwrap().success();
        assert!(ok, "restart-kafka.sh {arg} failed");
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(repo_root().join("dev_setup/kafka-down.sh"))
            .arg(&self.dir)
            .stderr(Stdio::null())
            .status();
    }
}

/// Reads every message of `topics` that arrives within `timeout` (stops
/// early once `want` were read, after a short grace period for extras).
pub(super) fn consume(
    brokers: &str,
    topics: &[&str],
    want: usize,
    timeout: Duration,
) -> Vec<rdkafka::message::OwnedMessage> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("test-{}", std::process::id()))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        // tansu holds a JoinGroup for a while that grows with these (23 s
        // with librdkafka's defaults, about 3 s with these).
        .set("session.timeout.ms", "6000")
        .set("max.poll.interval.ms", "7000")
        .create()
        .unwrap();
    consumer.subscribe(topics).unwrap();
    let mut out = Vec::new();
    let deadline = Instant::now() + timeout;
    let mut done_at: Option<Instant> = None;
    while Instant::now() < deadline && done_at.is_none_or(|t| Instant::now() < t) {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                out.push(m.detach());
                if out.len() >= want && done_at.is_none() {
                    done_at = Some(Instant::now() + Duration::from_millis(500));
                }
            }
            Some(Err(e)) => eprintln!("consumer: {e}"),
            None => {}
        }
    }
    out
}

fn fields(i: usize, object: usize, ns: &str) -> RecordFields {
    RecordFields {
        cluster: "test".into(),
        api: "core/v1".into(),
        uid: format!("uid-{i}"),
        resource_version: format!("{}", 1000 + i),
        namespace: ns.into(),
        name: format!("ev-{i}"),
        event_type: if i.is_multiple_of(2) { "Normal" } else { "Warning" }.into(),
        reason: "Started".into(),
        kind: "Pod".into(),
        object_uid: format!("obj-{object}"),
        schema_version: 1,
        timestamp: "2024-01-01T00:00:00Z".into(),
    }
}

fn record(i: usize, object: usize, ns: &str) -> Arc<Record> {
    Arc::new(Record::new(
        fields(i, object, ns),
        format!("{{\"uid\":\"uid-{i}\",\"object\":\"obj-{object}\"}}"),
    ))
}

fn config(brokers: &str, topic: &str) -> KafkaConfig {
    let mut c = KafkaConfig::new(brokers, topic).unwrap();
    c.create_topics = Some(CreateTopics {
        partitions: 3,
        replication: 1,
    });
    c.message_timeout = Duration::from_secs(5);
    c
}

/// tansu creates a missing topic when a client asks for its metadata, unless
/// the client says not to (as a broker without auto-creation would refuse).
fn no_auto_create(c: &mut KafkaConfig) {
    c.properties
        .insert("allow.auto.create.topics".into(), PropertyValue::Bool(false));
}

async fn wait_ready(e: &KafkaExporter, timeout: Duration) -> Health {
    let deadline = Instant::now() + timeout;
    loop {
        let h = e.health();
        if h.is_ready() || Instant::now() > deadline {
            return h;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// An exporter named "k" on the broker's topic "events"; with `ready`, once it reports ready.
async fn events_exporter(broker: &Broker, ready: bool) -> KafkaExporter {
    let e = config(&broker.brokers, "events").build("k").unwrap();
    if ready {
        assert_eq!(wait_ready(&e, Duration::from_secs(10)).await, Health::Ready);
    }
    e
}

/// `create_topics` makes the topic with its own partition count: the
/// exporter's metadata requests do not have the broker create it first with
/// the broker's default.
#[tokio::test(flavor = "multi_thread")]
async fn create_topics_makes_the_configured_partitions() {
    let broker = Broker::start();
    let e = events_exporter(&broker, true).await;
    e.export(&keyed_batch(0..5)).await.unwrap();
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &broker.brokers)
        .set("allow.auto.create.topics", "false")
        .create()
        .unwrap();
    let md = consumer
        .fetch_metadata(Some("events"), Duration::from_secs(10))
        .unwrap();
    let topic = md.topics().iter().find(|t| t.name() == "events").expect("the topic");
    assert_eq!(topic.partitions().len(), 3, "create_topics.partitions");
}

#[tokio::test(flavor = "multi_thread")]
async fn delivers_with_keys_headers_and_partitions() {
    let broker = Broker::start();
    let e = events_exporter(&broker, true).await;
    let batch: Vec<Arc<Record>> = (0..60).map(|i| record(i, i % 6, "default")).collect();
    e.export(&batch[..30]).await.unwrap();
    e.export(&batch[30..]).await.unwrap();
    e.flush().await.unwrap();

    let got = consume(&broker.brokers, &["events"], 60, Duration::from_secs(30));
    assert_eq!(got.len(), 60, "every record once");
    let mut partition_of: HashMap<String, i32> = HashMap::new();
    let mut partitions = HashSet::new();
    let mut uids = HashSet::new();
    for m in &got {
        let payload: serde_json::Value = serde_json::from_slice(m.payload().unwrap()).unwrap();
        let key = std::str::from_utf8(m.key().unwrap()).unwrap().to_string();
        assert_eq!(payload["object"], key.as_str(), "keyed by object uid");
        assert!(
            uids.insert(payload["uid"].as_str().unwrap().to_string()),
            "no duplicate"
        );
        let p = *partition_of.entry(key).or_insert(m.partition());
        assert_eq!(p, m.partition(), "one object, one partition");
        partitions.insert(m.partition());
        let h = m.headers().unwrap();
        let hv = |k: &str| {
            h.iter()
                .find(|x| x.key == k)
                .and_then(|x| x.value)
                .map(|v| String::from_utf8_lossy(v).to_string())
        };
        assert_eq!(hv("cluster").as_deref(), Some("test"));
        assert_eq!(hv("api").as_deref(), Some("core/v1"));
        assert_eq!(hv("reason").as_deref(), Some("Started"));
        assert_eq!(hv("schema_version").as_deref(), Some("1"));
        assert!(matches!(hv("type").as_deref(), Some("Normal" | "Warning")));
    }
    assert_eq!(partition_of.len(), 6);
    assert!(partitions.len() > 1, "6 keys over 3 partitions use more than one");
    // Per object, the order is kept (offsets rise with the record index).
    let mut last: HashMap<String, usize> = HashMap::new();
    let mut sorted: Vec<_> = got.iter().collect();
    sorted.sort_by_key(|m| (m.partition(), m.offset()));
    for m in sorted {
        let key = String::from_utf8_lossy(m.key().unwrap()).to_string();
        let v: serde_json::Value = serde_json::from_slice(m.payload().unwrap()).unwrap();
        let i: usize = v["uid"].as_str().unwrap()[4..].parse().unwrap();
        if let Some(prev) = last.insert(key, i) {
            assert!(prev < i, "order per object");
        }
    }
}

fn keyed(i: usize) -> Arc<Record> {
    Arc::new(Record::new(
        fields(i, i % 5, "default"),
        format!("{{\"uid\":\"uid-{i}\",\"resource_version\":\"{}\"}}", 1000 + i),
    ))
}

fn keyed_batch(r: std::ops::Range<usize>) -> Vec<Arc<Record>> {
    r.map(keyed).collect()
}

fn keys_of(r: std::ops::Range<usize>) -> crate::Delivered {
    let mut want = crate::Delivered::default();
    for i in r {
        want.insert(&format!("uid-{i}"), &(1000 + i).to_string());
    }
    want
}

/// Checks that a read-back holds every record of `must` (produced after its
/// position) and nothing but records of `must` and `may` (produced before it);
/// returns how many of `may` it holds.
fn expect_read_back(mut got: crate::Delivered, must: std::ops::Range<usize>, may: std::ops::Range<usize>) -> usize {
    for i in must {
        assert!(
            got.remove(&format!("uid-{i}"), &(1000 + i).to_string()),
            "uid-{i}, produced after the position, read back"
        );
    }
    let before = got.len();
    for i in may {
        got.remove(&format!("uid-{i}"), &(1000 + i).to_string());
    }
    assert!(got.is_empty(), "nothing but records of this topic");
    before
}

/// What was produced after a position is read back from the topic by a new
/// exporter (a restart after a kill), exactly; nothing before it. Batches of
/// many records: tansu then lists a partition's end inside its last batch
/// (the base offset of that batch plus one), so the read must go on to the
/// end the fetch reports.
#[tokio::test(flavor = "multi_thread")]
async fn reads_back_exactly_what_was_produced_after_a_position() {
    let broker = Broker::start();
    let e = events_exporter(&broker, true).await;
    e.export(&keyed_batch(0..20)).await.unwrap();
    let pos = e.position().expect("a position once delivered");
    assert!(pos.starts_with("kafka-v1;events:"), "{pos}");
    e.export(&keyed_batch(20..50)).await.unwrap();
    e.export(&keyed_batch(50..53)).await.unwrap();
    let end = e.position().unwrap();
    drop(e);

    let e = events_exporter(&broker, false).await;
    let got = e.recover(Some(&pos)).await.unwrap();
    assert_eq!(got.len(), 33);
    assert_eq!(got, keys_of(20..53));
    assert!(e.recover(Some(&end)).await.unwrap().is_empty(), "nothing after the end");
    assert!(
        e.recover(None).await.unwrap().is_empty(),
        "no saved state: nothing to read"
    );
    assert!(
        e.recover(Some("volume-v1;x")).await.unwrap().is_empty(),
        "not a Kafka position: nothing to read"
    );
    // The new exporter's position starts where the read-back ended: what it
    // produces next is all that a read-back from it finds.
    let next = e.position().expect("a position after the read-back");
    e.export(&keyed_batch(53..60)).await.unwrap();
    drop(e);
    let e = events_exporter(&broker, false).await;
    assert_eq!(e.recover(Some(&next)).await.unwrap(), keys_of(53..60));
}

/// A position taken before any partition's end was known (right after the
/// topic was created) names the topic alone: a read-back from it finds
/// everything the topic holds.
#[tokio::test(flavor = "multi_thread")]
async fn a_position_naming_the_topic_alone_reads_every_partition() {
    let broker = Broker::start();
    let e = events_exporter(&broker, true).await;
    e.export(&keyed_batch(0..30)).await.unwrap();
    drop(e);

    let e = events_exporter(&broker, false).await;
    let got = e.recover(Some("kafka-v1;events")).await.unwrap();
    expect_read_back(got, 0..30, 0..0);
}

/// A position that does not name every partition of the fixed topic (taken
/// before every partition's end was known, as right after the topic was
/// created) still finds what went to the partitions it lacks: they are read
/// from their start.
#[tokio::test(flavor = "multi_thread")]
async fn partitions_the_position_does_not_name_are_read_from_their_start() {
    let broker = Broker::start();
    let e = events_exporter(&broker, true).await;
    e.export(&keyed_batch(0..20)).await.unwrap();
    let full = e.position().expect("a position once delivered");
    // One partition's offset only, as if the others' ends were not known yet.
    let first = full["kafka-v1;".len()..]
        .split(',')
        .next()
        .expect("a partition")
        .to_string();
    let partial = format!("kafka-v1;{first}");
    e.export(&keyed_batch(20..60)).await.unwrap();
    drop(e);

    let e = events_exporter(&broker, false).await;
    let got = e.recover(Some(&partial)).await.unwrap();
    assert!(
        expect_read_back(got, 20..60, 0..20) > 0,
        "the partitions the position lacks were read from their start (records of 0..20 there)"
    );
}

/// Before its first delivery, an exporter's position is the end of every
/// partition of its topic when it started: a read-back from it finds what the
/// exporter produced (and, with a broker that lists an end too low, possibly
/// some records before it; never fewer).
#[tokio::test(flavor = "multi_thread")]
async fn the_position_before_any_delivery_is_the_topics_end() {
    let broker = Broker::start();
    let e = events_exporter(&broker, true).await;
    e.export(&keyed_batch(0..30)).await.unwrap();
    drop(e);

    let e = events_exporter(&broker, true).await;
    // The partitions' ends are fetched in the background, one by one (and
    // retried): wait until every partition has its offset.
    let every = |pos: &str| {
        let parts: HashSet<&str> = pos["kafka-v1;".len()..]
            .split(',')
            .filter_map(|p| p.rfind(':').map(|i| &p[..i]))
            .collect();
        ["events:0", "events:1", "events:2"].iter().all(|p| parts.contains(p))
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let pos = loop {
        match e.position() {
            Some(p) if every(&p) => break p,
            _ if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(50)).await,
            p => panic!("not every partition has an offset: {p:?}"),
        }
    };
    e.export(&keyed_batch(30..40)).await.unwrap();
    drop(e);

    let e = events_exporter(&broker, false).await;
    let got = e.recover(Some(&pos)).await.unwrap();
    expect_read_back(got, 30..40, 0..30);
}

#[tokio::test(flavor = "multi_thread")]
async fn templated_topics_are_created_and_sanitized() {
    let broker = Broker::start();
    let mut c = config(&broker.brokers, "ev.{namespace}.{api}");
    c.key = KeyField::Namespace;
    c.compression = Compression::Zstd;
    let e = c.build("k").unwrap();
    let batch = vec![
        record(0, 0, "team-a"),
        record(1, 1, "team-b"),
        record(2, 2, "team-a"),
        record(3, 3, ""),
    ];
    e.export(&batch).await.unwrap();
    let a = consume(&broker.brokers, &["ev.team-a.core_v1"], 2, Duration::from_secs(20));
    let b = consume(&broker.brokers, &["ev.team-b.core_v1"], 1, Duration::from_secs(20));
    let none = consume(&broker.brokers, &["ev._.core_v1"], 1, Duration::from_secs(20));
    assert_eq!(a.len(), 2);
    assert_eq!(b.len(), 1);
    assert_eq!(none.len(), 1);
    assert_eq!(a[0].key(), Some(&b"team-a"[..]));
    assert_eq!(none[0].key(), None, "a cluster-scoped event has no namespace key");
}

#[tokio::test(flavor = "multi_thread")]
async fn too_large_record_is_rejected_alone() {
    let broker = Broker::start();
    let e = events_exporter(&broker, false).await;
    let big = Arc::new(Record::new(fields(1, 1, "default"), vec![b'x'; 2 << 20]));
    let batch = vec![record(0, 0, "default"), big, record(2, 2, "default")];
    let err = e.export(&batch).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Permanent);
    assert_eq!(err.reason, "too_large");
    assert_eq!(err.delivered, vec![0, 2]);
    assert_eq!(err.rejected.len(), 1);
    assert_eq!(err.rejected[0].0, 1);
    assert_eq!(e.health(), Health::Ready, "a refused record says nothing about health");
    let got = consume(&broker.brokers, &["events"], 2, Duration::from_secs(20));
    assert_eq!(got.len(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn missing_fixed_topic_is_reported() {
    let broker = Broker::start();
    let mut c = KafkaConfig::new(&*broker.brokers, "never-created").unwrap();
    c.message_timeout = Duration::from_secs(3);
    // Like a broker with `auto.create.topics.enable = false`.
    no_auto_create(&mut c);
    let e = c.build("k").unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let health = loop {
        let h = e.health();
        if matches!(&h, Health::NotReady(m) if m.contains("does not exist")) || Instant::now() > deadline {
            break h;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    match health {
        Health::NotReady(m) => assert!(m.contains("topic `never-created` does not exist"), "{m}"),
        Health::Ready => panic!("a missing topic is not ready (does tansu create topics on metadata requests?)"),
    }
    let err = e.export(&[record(0, 0, "default")]).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Transient, "a missing fixed topic waits: {err:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn missing_templated_topic_is_refused_without_create_topics() {
    let broker = Broker::start();
    let mut c = KafkaConfig::new(&*broker.brokers, "ev.{namespace}").unwrap();
    c.message_timeout = Duration::from_secs(3);
    no_auto_create(&mut c);
    let e = c.build("k").unwrap();
    let err = e.export(&[record(0, 0, "nowhere")]).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Permanent, "{err:?}");
    assert_eq!(err.reason, "unknown_topic");
    assert_eq!(err.rejected.len(), 1);
}

/// The broker dies and comes back (empty: memory storage) on the same port:
/// batches fail as transient meanwhile, health says so, and afterwards the
/// exporter delivers again (recreating its topic) without a restart.
#[tokio::test(flavor = "multi_thread")]
async fn outage_and_recovery() {
    let broker = Broker::start();
    let mut c = config(&broker.brokers, "events");
    c.message_timeout = Duration::from_secs(2);
    let e = c.build("k").unwrap();
    e.export(&[record(0, 0, "default")]).await.unwrap();
    assert_eq!(e.health(), Health::Ready);

    broker.ctl("--kill");
    let err = e
        .export(&[record(1, 1, "default"), record(2, 2, "default")])
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Transient, "{err:?}");
    assert!(err.delivered.is_empty());
    assert!(!e.health().is_ready());

    broker.ctl("--start");
    // What the pipeline does: retry with backoff until delivered.
    let batch = vec![record(1, 1, "default"), record(2, 2, "default")];
    let mut remaining = batch.clone();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match e.export(&remaining).await {
            Ok(()) => break,
            Err(err) => {
                assert_eq!(err.kind, ErrorKind::Transient, "{err:?}");
                assert!(Instant::now() < deadline, "not delivered after the restart: {err:?}");
                let delivered: HashSet<usize> = err.delivered.iter().copied().collect();
                remaining = remaining
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| !delivered.contains(i))
                    .map(|(_, r)| r.clone())
                    .collect();
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
    assert_eq!(wait_ready(&e, Duration::from_secs(10)).await, Health::Ready);
    let got = consume(&broker.brokers, &["events"], 2, Duration::from_secs(20));
    let uids: Vec<String> = got
        .iter()
        .map(|m| serde_json::from_slice::<serde_json::Value>(m.payload().unwrap()).unwrap()["uid"].to_string())
        .collect();
    assert_eq!(uids.len(), 2, "{uids:?}");
    assert_eq!(uids.iter().collect::<HashSet<_>>().len(), 2, "no duplicates: {uids:?}");
}

/// User + system CPU seconds of a process (`self` or a pid), from /proc.
fn cpu_secs(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the parenthesized command name; utime and stime are the 12th and 13th.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<f64> = rest.split_whitespace().map(|x| x.parse().unwrap_or(0.0)).collect();
    if f.len() < 13 {
        return 0.0;
    }
    (f[11] + f[12]) / 100.0
}

/// Throughput into tansu: 100k records of about 1 KB in batches of 1000.
/// `cargo test --release -p event-collector-exporters kafka::broker_tests::bench -- --ignored --nocapture`
#[tokio::test(flavor = "multi_thread")]
#[ignore = "benchmark; run by hand, see docs/benchmarks.md"]
async fn bench_100k_1kb_records() {
    let total: usize = std::env::var("BENCH_RECORDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(100_000);
    let batch_size: usize = 1000;
    let broker = Broker::start();
    for compression in [Compression::Lz4, Compression::None, Compression::Zstd] {
        let topic = format!("bench-{}", compression.as_str());
        let mut c = config(&broker.brokers, &topic);
        c.compression = compression;
        c.message_timeout = Duration::from_secs(60);
        let e = c.build("bench").unwrap();
        // ~1 KB of JSON that compresses like real events (repeated keys, varying values).
        let records: Vec<Arc<Record>> = (0..total)
            .map(|i| {
                let mut f = fields(i, i % 500, "default");
                f.object_uid = format!("0b6c8a3e-{:04x}-4d7e-9a51-{:012x}", i % 500, i % 500);
                let filler: String = (0..14)
                    .map(|k| format!("\"k{k}\":\"v{}-{}\",", i * 7 + k, k * 13))
                    .collect();
                let json = format!(
                    "{{\"schema_version\":1,\"uid\":\"uid-{i}\",\"object\":{{\"kind\":\"Pod\",\"name\":\"web-{}\"}},\
                     \"message\":\"Back-off restarting failed container app in pod web-{} (attempt {i})\",{filler}\
                     \"labels\":{{\"app\":\"web\",\"tier\":\"frontend\"}},\"pad\":\"{}\"}}",
                    i % 500,
                    i % 500,
                    "x".repeat(520)
                );
                Arc::new(Record::new(f, json))
            })
            .collect();
        let bytes: usize = records.iter().map(|r| r.json.len()).sum();
        e.export(&records[..batch_size]).await.unwrap(); // warm-up: topic, connection, producer id
        let (cpu0, broker_cpu0) = (cpu_secs("self"), cpu_secs(&broker.pid));
        let start = Instant::now();
        for chunk in records[batch_size..].chunks(batch_size) {
            e.export(chunk).await.unwrap();
        }
        let secs = start.elapsed().as_secs_f64();
        let (cpu, broker_cpu) = (cpu_secs("self") - cpu0, cpu_secs(&broker.pid) - broker_cpu0);
        let n = total - batch_size;
        println!(
            "kafka bench: compression={:<4} {n} records ({:.0} B avg) in {secs:.2}s = {:.0} events/s, {:.1} MB/s; \
             CPU per event: exporter {:.1} us, broker {:.1} us; load {}",
            compression.as_str(),
            bytes as f64 / total as f64,
            n as f64 / secs,
            (bytes as f64 * n as f64 / total as f64) / secs / 1e6,
            cpu / n as f64 * 1e6,
            broker_cpu / n as f64 * 1e6,
            std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim(),
        );
    }
}
