//! End-to-end: exporter queues and overflow policies under real faults, with
//! thousands of events created through a real kube-apiserver and the real
//! collector binary (fault matrix rows 5 and 6).
//!
//! - Row 5: a Volume exporter whose directory becomes unwritable and an
//!   Elasticsearch exporter whose server (noida-db) is stopped, both with
//!   `overflow = "spill"`, for 60 s; a healthy Volume exporter keeps
//!   receiving throughout; afterwards every exporter holds every event.
//! - Row 6: a Volume exporter on a 2 MiB tmpfs that fills up: a clear error
//!   naming the path, no crash, and everything written once space returns.
//!
//! Every row checks, per exporter, 0 lost and 0 duplicated by (uid, resourceVersion).

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use elasticsearch::Elasticsearch;
use elasticsearch::http::Method;
use elasticsearch::http::headers::HeaderMap;
use elasticsearch::http::transport::Transport;
use event_collector_e2e::{Cluster, Collector, DevServer, events, read_volume, wait_for};
use serde_json::{Value, json};

type Key = (String, String);

/// Creates `n` core/v1 Events in `ns` with 16 concurrent clients; returns each created (uid, resourceVersion).
async fn create_many(client: &kube::Client, ns: &str, prefix: &str, n: usize, message: &str) -> Vec<Key> {
    const PARALLEL: usize = 16;
    let mut set = tokio::task::JoinSet::new();
    for w in 0..PARALLEL {
        let (client, ns, prefix, message) = (client.clone(), ns.to_string(), prefix.to_string(), message.to_string());
        set.spawn(async move {
            let mut out = Vec::new();
            for i in (w..n).step_by(PARALLEL) {
                let name = format!("{prefix}-{i}");
                let ev = events::core(&ns, &name, "Normal", "Queued", "Pod", &format!("pod-{i}"), &message);
                let created = events::create_core(&client, &ev)
                    .await
                    .unwrap_or_else(|e| panic!("create event {name}: {e}"));
                out.push((
                    created.metadata.uid.unwrap_or_default(),
                    created.metadata.resource_version.unwrap_or_default(),
                ));
            }
            out
        });
    }
    let mut all = Vec::with_capacity(n);
    while let Some(r) = set.join_next().await {
        all.extend(r.expect("creator task"));
    }
    all
}

/// Lost and duplicated events of one exporter.
#[derive(Debug, PartialEq, Eq)]
struct Tally {
    received: usize,
    lost: usize,
    duplicated: usize,
    unexpected: usize,
}

fn tally(expected: &[Key], got: &[Key]) -> Tally {
    let want: HashSet<&Key> = expected.iter().collect();
    let mut seen: HashMap<&Key, usize> = HashMap::new();
    for k in got {
        *seen.entry(k).or_default() += 1;
    }
    Tally {
        received: got.len(),
        lost: want.iter().filter(|k| !seen.contains_key(*k)).count(),
        duplicated: seen.values().map(|c| c - 1).sum(),
        unexpected: seen.keys().filter(|k| !want.contains(*k)).count(),
    }
}

fn keys_of(docs: &[Value], ns: &str) -> Vec<Key> {
    docs.iter()
        .filter(|d| d["namespace"] == ns)
        .map(|d| {
            (
                d["uid"].as_str().unwrap_or("").to_string(),
                d["resource_version"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

fn volume_keys(dir: &Path, ns: &str) -> Vec<Key> {
    keys_of(&read_volume(dir).unwrap_or_default(), ns)
}

/// Waits until `f` returns at least `n` keys (or the timeout); returns the last result.
fn wait_keys(n: usize, timeout: Duration, mut f: impl FnMut() -> Vec<Key>) -> Vec<Key> {
    wait_for(timeout, || Some(f()).filter(|k| k.len() >= n)).unwrap_or_else(f)
}

fn segment_files(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter(|e| e.path().extension().is_some_and(|x| x == "seg"))
                .count()
        })
        .unwrap_or(0)
}

/// noida-db (Elasticsearch 8 API, keeps its data across a restart), started by dev_setup/es-up.sh.
struct Es {
    server: DevServer,
    client: Elasticsearch,
}

impl Es {
    fn start() -> Result<Es> {
        let server = DevServer::start("es", &["elasticsearch"])?;
        let client = Elasticsearch::new(Transport::single_node(server.get("ES_URL"))?);
        Ok(Es { server, client })
    }

    fn url(&self) -> &str {
        self.server.get("ES_URL")
    }

    fn restart_script(&self, arg: &str) {
        self.server.ctl("RESTART_ES", arg);
    }

    /// Every document of `index` in namespace `ns`, as (uid, resource_version).
    async fn keys(&self, index: &str, ns: &str) -> Vec<Key> {
        let call = |method, path: String, body: Option<Value>| {
            let client = self.client.clone();
            async move {
                let resp = client
                    .send(
                        method,
                        &path,
                        HeaderMap::new(),
                        None::<&()>,
                        body.map(|b| b.to_string()),
                        None,
                    )
                    .await
                    .ok()?;
                let text = resp.text().await.ok()?;
                serde_json::from_str::<Value>(&text).ok()
            }
        };
        call(Method::Post, format!("/{index}/_refresh"), None).await;
        let body = json!({
            "size": 10000,
            "query": {"term": {"namespace": ns}},
            "_source": ["uid", "resource_version", "namespace"],
        });
        let Some(v) = call(Method::Post, format!("/{index}/_search"), Some(body)).await else {
            return Vec::new();
        };
        let docs: Vec<Value> = v["hits"]["hits"]
            .as_array()
            .map(|h| h.iter().map(|d| d["_source"].clone()).collect())
            .unwrap_or_default();
        keys_of(&docs, ns)
    }
}

const WAIT: Duration = Duration::from_secs(120);

/// Row 5: two sinks down for 60 s with `overflow = "spill"`, a third one healthy.
#[tokio::test(flavor = "multi_thread")]
async fn row5_sinks_down_for_60s_spill_and_recover_while_others_keep_going() {
    let started = Instant::now();
    let cluster = Cluster::start().expect("cluster");
    let ns = "q5";
    cluster.create_namespace(ns).unwrap();
    let es = Es::start().expect("noida-db");
    let work = tempfile::tempdir().unwrap();
    let (good, sick) = (work.path().join("good"), work.path().join("sick"));
    let config = work.path().join("collector.toml");
    std::fs::write(
        &config,
        format!(
            r#"
cluster = "e2e"
[source]
api = "core/v1"

[[exporters]]
name = "good"
type = "volume"
path = "{good}"
batch_timeout = "20ms"

[[exporters]]
name = "sick"
type = "volume"
path = "{sick}"
batch_timeout = "20ms"
queue_max_events = 200
overflow = "spill"
retry_initial_backoff = "100ms"
retry_max_backoff = "1s"

[[exporters]]
name = "search"
type = "elasticsearch"
url = "{url}"
index = "queues"
batch_timeout = "20ms"
queue_max_events = 200
retry_initial_backoff = "100ms"
retry_max_backoff = "1s"
# overflow = "spill" is the default for elasticsearch

[[routes]]
name = "all"
default = true
exporters = ["good", "sick", "search"]
"#,
            good = good.display(),
            sick = sick.display(),
            url = es.url()
        ),
    )
    .unwrap();
    let mut collector = Collector::start(&config, cluster.collector_kubeconfig(), &[]).unwrap();
    let client = cluster.admin_client().await.unwrap();
    eprintln!("row 5: cluster, server and collector up after {:?}", started.elapsed());

    // Before the outage.
    let mut expected = create_many(&client, ns, "before", 1000, "before the outage").await;
    for (name, dir) in [("good", &good), ("sick", &sick)] {
        let got = wait_keys(1000, WAIT, || volume_keys(dir, ns));
        assert_eq!(got.len(), 1000, "{name}; log:\n{}", collector.log_text());
    }
    assert_eq!(wait_es(&es, 1000).await.len(), 1000, "log:\n{}", collector.log_text());

    // The outage: the sick exporter's directory becomes a regular file (even root cannot write into it), and
    // the search server stops.
    let moved = work.path().join("sick.moved");
    std::fs::rename(&sick, &moved).unwrap();
    std::fs::write(&sick, "not a directory").unwrap();
    es.restart_script("--stop");
    let outage = Instant::now();
    eprintln!("row 5: outage starts after {:?}", started.elapsed());
    let mut good_counts = vec![volume_keys(&good, ns).len()];
    let mut batch = 0;
    while outage.elapsed() < Duration::from_secs(60) {
        if batch < 6 {
            expected.extend(create_many(&client, ns, &format!("during{batch}"), 250, "during the outage").await);
            batch += 1;
            let want = expected.len();
            let got = wait_keys(want, Duration::from_secs(30), || volume_keys(&good, ns)).len();
            assert_eq!(got, want, "the healthy exporter keeps receiving during the outage");
            good_counts.push(got);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(
        good_counts.windows(2).all(|w| w[1] > w[0]),
        "good grew with every batch: {good_counts:?}"
    );
    let spill = work.path().join("state/spill");
    assert!(segment_files(&spill.join("sick")) > 0, "sick spilled to disk");
    assert!(segment_files(&spill.join("search")) > 0, "search spilled to disk");
    assert!(
        collector.child.try_wait().unwrap().is_none(),
        "still running; log:\n{}",
        collector.log_text()
    );
    let log = collector.log_text();
    assert!(
        log.contains(&sick.display().to_string()),
        "the error names the path:\n{log}"
    );

    // Recovery.
    eprintln!("row 5: outage ends after {:?}", started.elapsed());
    std::fs::remove_file(&sick).unwrap();
    std::fs::rename(&moved, &sick).unwrap();
    es.restart_script("--start");
    expected.extend(create_many(&client, ns, "after", 500, "after the outage").await);
    let n = expected.len();
    wait_keys(n, WAIT, || volume_keys(&good, ns));
    wait_keys(n, WAIT, || volume_keys(&sick, ns));
    wait_es(&es, n).await;
    // Anything late (a resend) would show up now.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let results = [
        ("good", volume_keys(&good, ns)),
        ("sick", volume_keys(&sick, ns)),
        ("search", es.keys("queues", ns).await),
    ];
    for (name, got) in &results {
        let t = tally(&expected, got);
        eprintln!(
            "row 5 {name}: events={n} received={} lost={} duplicated={} (outage 60 s, total {:?})",
            t.received,
            t.lost,
            t.duplicated,
            started.elapsed()
        );
        assert_eq!(
            t,
            Tally {
                received: n,
                lost: 0,
                duplicated: 0,
                unexpected: 0
            },
            "{name}; log:\n{}",
            collector.log_text()
        );
    }
    let status = collector.terminate().unwrap();
    assert!(status.success(), "{status}");
    assert_eq!(segment_files(&spill.join("sick")), 0, "spill drained");
    assert_eq!(segment_files(&spill.join("search")), 0, "spill drained");
}

async fn wait_es(es: &Es, n: usize) -> Vec<Key> {
    let deadline = Instant::now() + WAIT;
    loop {
        let got = es.keys("queues", "q5").await;
        if got.len() >= n || Instant::now() > deadline {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// A tmpfs mounted for the test; unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Result<Tmpfs> {
        std::fs::create_dir_all(dir)?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output()?;
        if !out.status.success() {
            bail!(
                "mount -t tmpfs on {} failed (the test needs root): {}",
                dir.display(),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(Tmpfs(dir.to_path_buf()))
    }

    fn resize(&self, size: &str) -> Result<()> {
        let out = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.0)
            .output()?;
        if !out.status.success() {
            bail!("remount failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Row 6: the Volume exporter's disk fills up, then space returns.
#[tokio::test(flavor = "multi_thread")]
async fn row6_a_full_disk_is_reported_and_recovered_from_without_loss() {
    let started = Instant::now();
    let cluster = Cluster::start().expect("cluster");
    let ns = "q6";
    cluster.create_namespace(ns).unwrap();
    let work = tempfile::tempdir().unwrap();
    let disk = work.path().join("disk");
    let tmpfs = Tmpfs::mount(&disk, "2m").expect("tmpfs");
    let out = disk.join("events");
    let config = work.path().join("collector.toml");
    std::fs::write(
        &config,
        format!(
            r#"
cluster = "e2e"
[source]
api = "core/v1"

[[exporters]]
name = "full"
type = "volume"
path = "{out}"
fsync = "always"
batch_timeout = "20ms"
retry_initial_backoff = "100ms"
retry_max_backoff = "1s"

[[routes]]
name = "all"
default = true
exporters = ["full"]
"#,
            out = out.display()
        ),
    )
    .unwrap();
    let collector = Collector::start(&config, cluster.collector_kubeconfig(), &[]).unwrap();
    let client = cluster.admin_client().await.unwrap();
    // About 1 KiB per record: 3000 do not fit in 2 MiB.
    let message = "x".repeat(600);
    let expected = create_many(&client, ns, "fill", 3000, &message).await;
    let n = expected.len();

    let log = wait_for(WAIT, || {
        let log = collector.log_text();
        log.contains("disk_full").then_some(log)
    })
    .unwrap_or_else(|| panic!("no disk_full error; log:\n{}", collector.log_text()));
    assert!(
        log.lines()
            .any(|l| l.contains("disk_full") && l.contains(&out.display().to_string())),
        "the error names the path:\n{log}"
    );
    let partial = volume_keys(&out, ns).len();
    assert!(partial < n, "the disk is full before all {n} fit ({partial} written)");
    std::thread::sleep(Duration::from_secs(2));
    assert!(collector.log_text().contains("No space left"), "the OS error is shown");
    let mut collector = collector;
    assert!(collector.child.try_wait().unwrap().is_none(), "no crash");

    tmpfs.resize("64m").unwrap();
    let got = wait_keys(n, WAIT, || volume_keys(&out, ns));
    std::thread::sleep(Duration::from_secs(2));
    let got_final = volume_keys(&out, ns);
    let t = tally(&expected, &got_final);
    eprintln!(
        "row 6 full: events={n} received={} lost={} duplicated={} (written before the disk filled: {partial}, total {:?})",
        t.received,
        t.lost,
        t.duplicated,
        started.elapsed()
    );
    assert!(got.len() >= n);
    assert_eq!(
        t,
        Tally {
            received: n,
            lost: 0,
            duplicated: 0,
            unexpected: 0
        },
        "log:\n{}",
        collector.log_text()
    );
    let status = collector.terminate().unwrap();
    assert!(status.success(), "{status}");
}
