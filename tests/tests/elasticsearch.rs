//! End-to-end: the Elasticsearch / OpenSearch exporter against two real API
//! emulators started by `dev_setup/es-up.sh`: osmem-server (OpenSearch 3 API,
//! in memory) and noida-db (Elasticsearch 8 API, persisted). Every test runs
//! against both, through the `both_servers!` macro. The collector tests use
//! a real kube-apiserver as the source and the real collector binary; the
//! exporter tests drive the exporter directly to check what the collector
//! cannot show from outside (the 409s of a resend, per-item rejections,
//! request splitting, alias and data-stream modes).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use elasticsearch::Elasticsearch;
use elasticsearch::http::Method;
use elasticsearch::http::headers::HeaderMap;
use elasticsearch::http::transport::Transport;
use event_collector_e2e::{Cluster, Collector, DevServer, events, read_volume, wait_for};
use event_collector_exporters::elasticsearch::{ElasticsearchConfig, IndexMode};
use event_collector_exporters::{ErrorKind, Exporter, Record, RecordFields};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    OpenSearch,
    Elasticsearch,
}

impl Kind {
    fn arg(self) -> &'static str {
        match self {
            Kind::OpenSearch => "opensearch",
            Kind::Elasticsearch => "elasticsearch",
        }
    }

    /// The mapping type labels get on this server.
    fn labels_type(self) -> &'static str {
        match self {
            Kind::OpenSearch => "flat_object",
            Kind::Elasticsearch => "flattened",
        }
    }

    /// Whether the server keeps its data across a restart.
    fn persistent(self) -> bool {
        self == Kind::Elasticsearch
    }
}

/// A search server started by dev_setup/es-up.sh; stopped and removed when dropped.
struct Es {
    server: DevServer,
    client: Elasticsearch,
}

impl Es {
    fn start(kind: Kind) -> Result<Es> {
        let server = DevServer::start("es", &[kind.arg()])?;
        let client = Elasticsearch::new(Transport::single_node(server.get("ES_URL"))?);
        Ok(Es { server, client })
    }

    fn url(&self) -> &str {
        self.server.get("ES_URL")
    }

    fn restart_script(&self, arg: &str) {
        self.server.ctl("RESTART_ES", arg);
    }

    fn stop(&self) {
        self.restart_script("--stop");
    }

    fn start_again(&self) {
        self.restart_script("--start");
    }

    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let body = body.map(|b| b.to_string());
        let resp = self
            .client
            .send(method, path, HeaderMap::new(), None::<&()>, body, None)
            .await
            .unwrap_or_else(|e| panic!("{method:?} {path}: {e}"));
        let status = resp.status_code().as_u16();
        let text = resp.text().await.unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    async fn refresh(&self) {
        self.call(Method::Post, "/_refresh", None).await;
    }

    /// Documents matching `query` in `index` (after a refresh).
    async fn count(&self, index: &str, query: Value) -> u64 {
        self.refresh().await;
        let (status, v) = self
            .call(Method::Post, &format!("/{index}/_count"), Some(json!({"query": query})))
            .await;
        if status == 404 {
            return 0;
        }
        v["count"]
            .as_u64()
            .unwrap_or_else(|| panic!("count on {index}: {status} {v}"))
    }

    async fn all(&self, index: &str) -> u64 {
        self.count(index, json!({"match_all": {}})).await
    }

    async fn search(&self, index: &str, query: Value) -> Vec<Value> {
        self.refresh().await;
        let (_, v) = self
            .call(
                Method::Post,
                &format!("/{index}/_search"),
                Some(json!({"query": query, "size": 100})),
            )
            .await;
        v["hits"]["hits"].as_array().cloned().unwrap_or_default()
    }

    /// Waits until `index` holds at least `n` documents; returns the count.
    async fn wait_count(&self, index: &str, n: u64) -> u64 {
        let deadline = Instant::now() + WAIT;
        loop {
            let c = self.all(index).await;
            if c >= n || Instant::now() > deadline {
                return c;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// Runs one async test body against each emulator.
macro_rules! both_servers {
    ($test:ident) => {
        mod $test {
            #[tokio::test(flavor = "multi_thread")]
            async fn opensearch() {
                super::$test(super::Kind::OpenSearch).await;
            }
            #[tokio::test(flavor = "multi_thread")]
            async fn elasticsearch() {
                super::$test(super::Kind::Elasticsearch).await;
            }
        }
    };
}

fn write_config(dir: &Path, body: &str) -> PathBuf {
    let path = dir.join("collector.toml");
    std::fs::write(&path, body).expect("write config");
    path
}

/// A collector config: everything to the search server, refusals to a Volume.
fn collector_config(kind: Kind, es_url: &str, extra: &str, dead: &Path) -> String {
    format!(
        r#"
cluster = "e2e"
[source]
api = "core/v1"

[[exporters]]
name = "search"
type = "{ty}"
url = "{es_url}"
batch_timeout = "20ms"
retry_initial_backoff = "100ms"
retry_max_backoff = "1s"
dead_letter = "refused"
{extra}

[[exporters]]
name = "refused"
type = "volume"
path = "{dead}"
fsync = "always"
batch_timeout = "20ms"

[[routes]]
name = "all"
default = true
exporters = ["search"]
"#,
        // Both type names: `opensearch` is an alias of `elasticsearch`.
        ty = kind.arg(),
        dead = dead.display()
    )
}

/// `k8s-events-YYYY.MM.DD` for now in UTC, from the system clock.
fn today_index() -> String {
    let out = Command::new("date")
        .args(["-u", "+k8s-events-%Y.%m.%d"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

async fn create_core(cluster: &Cluster, ns: &str, name: &str, ty: &str, reason: &str, msg: &str) -> String {
    let client = cluster.admin_client().await.expect("admin client");
    let ev = events::core(ns, name, ty, reason, "Pod", &format!("pod-{name}"), msg);
    events::create_core(&client, &ev)
        .await
        .expect("create event")
        .metadata
        .uid
        .unwrap()
}

// ---- collector end to end -----------------------------------------------------------

/// Events appear once, searchable on keyword fields, with the template's
/// mappings; restarting the collector (which relists and resends
/// everything) adds no duplicate.
async fn collector_indexes_each_event_once(kind: Kind) {
    let cluster = Cluster::start().expect("cluster");
    cluster.create_namespace("e2e").unwrap();
    cluster.create_namespace("other").unwrap();
    let es = Es::start(kind).expect("search server");
    let work = tempfile::tempdir().unwrap();
    let dead = work.path().join("dead");
    let config = write_config(work.path(), &collector_config(kind, es.url(), "", &dead));
    let mut collector = Collector::start(&config, cluster.collector_kubeconfig(), &[]).unwrap();

    let mut uids = Vec::new();
    for i in 0..3 {
        uids.push(
            create_core(
                &cluster,
                "e2e",
                &format!("w{i}"),
                "Warning",
                "BackOff",
                "Back-off restarting failed container",
            )
            .await,
        );
        uids.push(
            create_core(
                &cluster,
                "e2e",
                &format!("n{i}"),
                "Normal",
                "Scheduled",
                "Successfully assigned",
            )
            .await,
        );
    }
    uids.push(
        create_core(
            &cluster,
            "other",
            "o1",
            "Warning",
            "FailedMount",
            "MountVolume.SetUp failed",
        )
        .await,
    );
    // Labels whose keys collide as object paths: `app` and `app.kubernetes.io/name`.
    let client = cluster.admin_client().await.unwrap();
    let mut labelled = events::core("e2e", "lab", "Normal", "Pulled", "Pod", "pod-lab", "pulled");
    labelled.metadata.labels = Some(
        [("app", "web"), ("app.kubernetes.io/name", "web-ui")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    );
    events::create_core(&client, &labelled).await.unwrap();

    let index = today_index();
    let got = es.wait_count("k8s-events-*", 8).await;
    assert_eq!(got, 8, "log:\n{}", collector.log_text());
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(es.all("k8s-events-*").await, 8, "exactly once");

    // Searchable by keyword fields.
    assert_eq!(es.count(&index, json!({"term": {"reason": "BackOff"}})).await, 3);
    assert_eq!(es.count(&index, json!({"term": {"namespace": "e2e"}})).await, 7);
    assert_eq!(es.count(&index, json!({"term": {"namespace": "other"}})).await, 1);
    assert_eq!(es.count(&index, json!({"term": {"type": "Warning"}})).await, 4);
    assert_eq!(es.count(&index, json!({"term": {"object.kind": "Pod"}})).await, 8);
    assert_eq!(es.count(&index, json!({"term": {"cluster": "e2e"}})).await, 8);
    assert_eq!(
        es.count(&index, json!({"term": {"message.keyword": "Successfully assigned"}}))
            .await,
        3
    );
    assert_eq!(es.count(&index, json!({"match": {"message": "restarting"}})).await, 3);
    // Both colliding label keys were kept in the document, unchanged.
    let hits = es.search(&index, json!({"term": {"name": "lab"}})).await;
    assert_eq!(hits.len(), 1, "{hits:?}");
    assert_eq!(
        hits[0]["_source"]["labels"],
        json!({"app": "web", "app.kubernetes.io/name": "web-ui"})
    );
    let by_app = es.count(&index, json!({"term": {"labels.app": "web"}})).await;
    let by_name = es
        .count(&index, json!({"term": {"labels.app.kubernetes.io/name": "web-ui"}}))
        .await;
    if kind == Kind::Elasticsearch {
        // `flattened`: both colliding keys are searchable by their full key.
        assert_eq!((by_app, by_name), (1, 1));
    } else {
        // osmem's flat_object indexes only one of two keys where one is a dotted prefix of the other, and which one
        // varies between runs (seen in CI). Real OpenSearch indexes both; here at least one must be found.
        assert_eq!(
            by_app.max(by_name),
            1,
            "labels.app={by_app} labels.app.kubernetes.io/name={by_name}"
        );
    }
    for uid in &uids {
        let hits = es.search(&index, json!({"term": {"uid": uid}})).await;
        assert_eq!(hits.len(), 1, "{uid} once");
        let h = &hits[0];
        let id = h["_id"].as_str().unwrap();
        assert_eq!(id.len(), 32, "{h}");
        let src = &h["_source"];
        assert_eq!(src["@timestamp"], src["timestamp"], "{src}");
        assert_eq!(src["schema_version"], 1);
    }

    // The template is installed and applied to the new index.
    let (status, tpl) = es.call(Method::Get, "/_index_template/k8s-events", None).await;
    assert_eq!(status, 200, "{tpl}");
    assert_eq!(
        tpl["index_templates"][0]["index_template"]["index_patterns"],
        json!(["k8s-events-*"])
    );
    let (_, mapping) = es.call(Method::Get, &format!("/{index}/_mapping"), None).await;
    let p = &mapping[&index]["mappings"]["properties"];
    for f in ["reason", "type", "namespace", "name", "reporting_controller", "uid"] {
        assert_eq!(p[f]["type"], "keyword", "{f}: {p}");
    }
    assert_eq!(p["object"]["properties"]["kind"]["type"], "keyword");
    assert_eq!(p["message"]["type"], "text");
    assert_eq!(p["message"]["fields"]["keyword"]["type"], "keyword");
    for f in ["timestamp", "first_timestamp", "last_timestamp", "@timestamp"] {
        assert_eq!(p[f]["type"], "date", "{f}");
    }
    assert_eq!(p["labels"]["type"], kind.labels_type());
    assert_eq!(p["annotations"]["type"], kind.labels_type());
    assert_eq!(p["count"]["type"], "long");
    assert!(read_volume(&dead).unwrap().is_empty(), "nothing refused");
    let log = collector.log_text();
    assert_eq!(
        log.matches("continuing without a lifecycle policy").count(),
        1,
        "one warning for the missing ILM/ISM API:\n{log}"
    );

    // A restart resumes from the saved checkpoint: nothing is sent again (a
    // resend would be absorbed by the `_id`: see `resend_is_idempotent`).
    collector.terminate().unwrap();
    let collector = Collector::start(&config, cluster.collector_kubeconfig(), &[]).unwrap();
    let resumed = wait_for(WAIT, || {
        let log = collector.log_text();
        log.contains("resuming from the checkpoint").then_some(log)
    });
    assert!(resumed.is_some(), "no resume:\n{}", collector.log_text());
    create_core(&cluster, "e2e", "after", "Normal", "Started", "Started container").await;
    assert_eq!(es.wait_count("k8s-events-*", 9).await, 9);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(es.all("k8s-events-*").await, 9, "no duplicates after the restart");
}
both_servers!(collector_indexes_each_event_once);

/// A document the index mapping refuses goes to the dead-letter exporter with
/// the server's error; the others are indexed; nothing blocks.
async fn mapping_errors_go_to_the_dead_letter_file(kind: Kind) {
    let cluster = Cluster::start().expect("cluster");
    cluster.create_namespace("e2e").unwrap();
    let es = Es::start(kind).expect("search server");
    // The index exists already, with `reason` as a number.
    let (status, v) = es
        .call(
            Method::Put,
            "/conflict",
            Some(json!({"mappings": {"properties": {"reason": {"type": "long"}}}})),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    let work = tempfile::tempdir().unwrap();
    let dead = work.path().join("dead");
    let config = write_config(
        work.path(),
        &collector_config(kind, es.url(), "index = \"conflict\"", &dead),
    );
    let collector = Collector::start(&config, cluster.collector_kubeconfig(), &[]).unwrap();
    let bad = create_core(&cluster, "e2e", "bad", "Warning", "BackOff", "not a number").await;
    let good = create_core(&cluster, "e2e", "good", "Normal", "42", "a numeric reason").await;

    let refused = wait_for(WAIT, || read_volume(&dead).ok().filter(|v| !v.is_empty()))
        .unwrap_or_else(|| panic!("nothing dead-lettered; log:\n{}", collector.log_text()));
    assert_eq!(es.wait_count("conflict", 1).await, 1);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let refused_now = read_volume(&dead).unwrap();
    assert_eq!(refused_now.len(), 1, "{refused:#?}");
    let r = &refused_now[0];
    assert_eq!(r["event"]["uid"], bad.as_str());
    assert_eq!(r["dead_letter"]["exporter"], "search");
    assert_eq!(r["dead_letter"]["reason"], "mapping_error");
    let err = r["dead_letter"]["error"].as_str().unwrap();
    assert!(
        err.contains("failed to parse field [reason]") && err.contains("(status 400)"),
        "{err}"
    );
    assert!(
        err.starts_with("mapper_parsing_exception") || err.starts_with("document_parsing_exception"),
        "{err}"
    );
    let hits = es.search("conflict", json!({"match_all": {}})).await;
    assert_eq!(hits.len(), 1);
    assert_eq!(hits[0]["_source"]["uid"], good.as_str());
}
both_servers!(mapping_errors_go_to_the_dead_letter_file);

/// The server goes away mid-stream and comes back on the same port: every
/// event is indexed in the end; the template is installed again on a server
/// that lost it.
async fn server_outage_loses_nothing(kind: Kind) {
    let cluster = Cluster::start().expect("cluster");
    cluster.create_namespace("e2e").unwrap();
    let es = Es::start(kind).expect("search server");
    let work = tempfile::tempdir().unwrap();
    let dead = work.path().join("dead");
    let config = write_config(work.path(), &collector_config(kind, es.url(), "", &dead));
    let collector = Collector::start(&config, cluster.collector_kubeconfig(), &[]).unwrap();
    for i in 0..3 {
        create_core(&cluster, "e2e", &format!("before{i}"), "Normal", "Pulled", "before").await;
    }
    assert_eq!(es.wait_count("k8s-events-*", 3).await, 3);

    es.stop();
    for i in 0..4 {
        create_core(&cluster, "e2e", &format!("during{i}"), "Warning", "BackOff", "during").await;
    }
    let noticed = wait_for(WAIT, || {
        let log = collector.log_text();
        log.contains("cannot write").then_some(())
    });
    assert!(noticed.is_some(), "the outage is reported:\n{}", collector.log_text());
    tokio::time::sleep(Duration::from_secs(2)).await;
    es.start_again();
    for i in 0..2 {
        create_core(&cluster, "e2e", &format!("after{i}"), "Normal", "Started", "after").await;
    }
    // osmem keeps everything in memory: the 3 from before the outage went
    // with it; noida keeps its data dir.
    let want = if kind.persistent() { 9 } else { 6 };
    let got = es.wait_count("k8s-events-*", want).await;
    assert_eq!(got, want, "log:\n{}", collector.log_text());
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(es.all("k8s-events-*").await, want, "no duplicates");
    assert_eq!(
        es.count("k8s-events-*", json!({"term": {"message.keyword": "during"}}))
            .await,
        4
    );
    assert_eq!(
        es.count("k8s-events-*", json!({"term": {"message.keyword": "after"}}))
            .await,
        2
    );
    // The template is there (again) and shaped the index.
    let (status, _) = es.call(Method::Get, "/_index_template/k8s-events", None).await;
    assert_eq!(status, 200);
    let index = today_index();
    let (_, mapping) = es.call(Method::Get, &format!("/{index}/_mapping"), None).await;
    assert_eq!(mapping[&index]["mappings"]["properties"]["reason"]["type"], "keyword");
    assert!(read_volume(&dead).unwrap().is_empty());
    let log = collector.log_text();
    assert_eq!(log.matches("continuing without a lifecycle policy").count(), 1, "{log}");
    assert!(log.contains("elasticsearch exporter ready"), "{log}");
}
both_servers!(server_outage_loses_nothing);

// ---- the exporter against the servers ------------------------------------------------

fn records(n: usize, prefix: &str) -> Vec<Arc<Record>> {
    (0..n)
        .map(|i| {
            let uid = format!("{prefix}-{i}");
            let ts = format!("2024-03-05T10:{:02}:{:02}Z", (i / 60) % 60, i % 60);
            let json = json!({
                "schema_version": 1, "cluster": "bench", "api": "core/v1", "watch_type": "ADDED",
                "uid": uid, "resource_version": "1", "name": format!("ev-{i}"), "namespace": "ns",
                "type": "Normal", "reason": "Scheduled", "message": "Successfully assigned ns/pod to node-1",
                "note": "Successfully assigned ns/pod to node-1", "action": null,
                "object": {"kind": "Pod", "namespace": "ns", "name": format!("pod-{i}"), "uid": "x",
                           "api_version": "v1", "field_path": null, "resource_version": null},
                "related": null, "reporting_controller": "default-scheduler", "reporting_instance": null,
                "count": 1, "count_delta": 1, "first_timestamp": ts, "last_timestamp": ts, "timestamp": ts,
                "labels": {"app": "web", "app.kubernetes.io/name": "web"}, "annotations": {}
            });
            Arc::new(Record::new(
                RecordFields {
                    cluster: "bench".into(),
                    uid,
                    resource_version: "1".into(),
                    namespace: "ns".into(),
                    timestamp: ts,
                    ..Default::default()
                },
                json.to_string(),
            ))
        })
        .collect()
}

/// Exporting the same records twice writes them once: the second time every
/// item is a 409, counted as delivered.
async fn resend_is_idempotent(kind: Kind) {
    let es = Es::start(kind).expect("search server");
    let exp = ElasticsearchConfig::new(es.url()).build("es").unwrap();
    let batch = records(50, "idem");
    exp.export(&batch).await.expect("first export");
    exp.export(&batch).await.expect("second export");
    exp.export(&batch[10..20]).await.expect("a partial resend");
    let st = exp.stats();
    assert_eq!((st.created, st.duplicates, st.rejected), (50, 60, 0), "{st:?}");
    assert_eq!(es.all("k8s-events-2024.03.05").await, 50);
    assert!(exp.health().is_ready());
    let server = exp.server().unwrap();
    assert_eq!(server.is_opensearch(), kind == Kind::OpenSearch);
}
both_servers!(resend_is_idempotent);

/// Per-item rejections from the server: the refused documents are listed with
/// the server's error, the rest are delivered.
async fn mapping_errors_are_rejected_per_item(kind: Kind) {
    let es = Es::start(kind).expect("search server");
    es.call(
        Method::Put,
        "/typed",
        // dynamic: false, so that only `name` is checked (without the template,
        // noida refuses the `app` / `app.kubernetes.io/name` label collision too).
        Some(json!({"mappings": {"dynamic": false, "properties": {"name": {"type": "long"}}}})),
    )
    .await;
    let mut c = ElasticsearchConfig::new(es.url());
    c.index = "typed".into();
    let exp = c.build("es").unwrap();
    let mut batch = records(4, "typed");
    // Two of them get a numeric name, which the mapping accepts.
    for i in [1, 3] {
        let mut v: Value = serde_json::from_slice(&batch[i].json).unwrap();
        v["name"] = json!(i);
        batch[i] = Arc::new(Record::new(batch[i].fields.clone(), v.to_string()));
    }
    let err = exp.export(&batch).await.expect_err("two refused");
    assert_eq!(err.kind, ErrorKind::Permanent);
    let mut delivered = err.delivered.clone();
    delivered.sort();
    assert_eq!(delivered, vec![1, 3], "{err:?}");
    let rejected: Vec<usize> = err.rejected.iter().map(|(i, _)| *i).collect();
    assert_eq!(rejected, vec![0, 2]);
    assert!(
        err.rejected[0].1.contains("failed to parse field [name]"),
        "{:?}",
        err.rejected
    );
    assert_eq!(es.all("typed").await, 2);
}
both_servers!(mapping_errors_are_rejected_per_item);

/// Small `max_bulk_bytes` splits a batch into many gzipped requests, all accepted.
async fn split_and_gzipped_requests(kind: Kind) {
    let es = Es::start(kind).expect("search server");
    let mut c = ElasticsearchConfig::new(es.url());
    c.max_bulk_bytes = 4096;
    c.compression = true;
    let exp = c.build("es").unwrap();
    exp.export(&records(200, "split")).await.expect("export");
    let st = exp.stats();
    assert!(st.requests >= 50, "{st:?}");
    assert_eq!(st.created, 200);
    assert_eq!(es.all("k8s-events-2024.03.05").await, 200);
}
both_servers!(split_and_gzipped_requests);

/// Alias mode creates `<alias>-000001` behind the write alias, with the template applied.
async fn alias_mode_bootstraps_the_write_index(kind: Kind) {
    let es = Es::start(kind).expect("search server");
    let mut c = ElasticsearchConfig::new(es.url());
    c.mode = IndexMode::Alias;
    c.index = "ev-alias".into();
    let exp = c.build("es").unwrap();
    exp.export(&records(5, "alias")).await.expect("export");
    let (status, alias) = es.call(Method::Get, "/_alias/ev-alias", None).await;
    assert_eq!(status, 200, "{alias}");
    assert_eq!(alias["ev-alias-000001"]["aliases"]["ev-alias"]["is_write_index"], true);
    assert_eq!(es.all("ev-alias-000001").await, 5);
    let (_, mapping) = es.call(Method::Get, "/ev-alias-000001/_mapping", None).await;
    assert_eq!(
        mapping["ev-alias-000001"]["mappings"]["properties"]["labels"]["type"],
        kind.labels_type()
    );
    // A second exporter finds the alias and does not create another index.
    let exp2 = c.build("es2").unwrap();
    exp2.export(&records(5, "alias")).await.expect("resend");
    assert_eq!(exp2.stats().duplicates, 5);
    let (status, _) = es.call(Method::Get, "/ev-alias-000002", None).await;
    assert_eq!(status, 404);
}
both_servers!(alias_mode_bootstraps_the_write_index);

/// Data-stream mode: noida accepts the data-stream template and indexes into
/// a plain index; osmem has no data streams and refuses every document,
/// which the exporter reports per item as rejected (never dropped).
async fn data_stream_mode(kind: Kind) {
    let es = Es::start(kind).expect("search server");
    let mut c = ElasticsearchConfig::new(es.url());
    c.mode = IndexMode::DataStream;
    c.index = "ds-events".into();
    let exp = c.build("es").unwrap();
    let (status, tpl_before) = es.call(Method::Get, "/_index_template/ds-events", None).await;
    let result = exp.export(&records(3, "ds")).await;
    let (status_after, tpl) = es.call(Method::Get, "/_index_template/ds-events", None).await;
    assert_eq!(status_after, 200, "{status} {tpl_before} {tpl}");
    // `{}` as sent; OpenSearch shows its default timestamp field.
    assert!(
        tpl["index_templates"][0]["index_template"]["data_stream"].is_object(),
        "{tpl}"
    );
    match kind {
        Kind::Elasticsearch => {
            result.expect("noida indexes data-stream writes");
            let hits = es.search("ds-events", json!({"match_all": {}})).await;
            assert_eq!(hits.len(), 3);
            assert!(hits.iter().all(|h| h["_source"]["@timestamp"].is_string()));
        }
        Kind::OpenSearch => {
            let err = result.expect_err("osmem has no data streams");
            assert_eq!(err.rejected.len(), 3);
            assert!(
                err.rejected[0].1.contains("data streams are not supported"),
                "{:?}",
                err.rejected
            );
        }
    }
}
both_servers!(data_stream_mode);

/// Throughput into each emulator (docs/benchmarks.md). Run with
/// `cargo test --release -p event-collector-e2e --test elasticsearch -- --ignored bench --nocapture`.
async fn bench(kind: Kind) {
    let es = Es::start(kind).expect("search server");
    let total = std::env::var("EC_BENCH_DOCS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(50_000usize);
    for compression in [false, true] {
        let mut c = ElasticsearchConfig::new(es.url());
        c.compression = compression;
        c.index = format!("bench-{compression}-%Y.%m.%d");
        let exp = c.build("bench").unwrap();
        exp.connect().await.expect("connect");
        let all = records(total, &format!("bench-{compression}"));
        let start = Instant::now();
        let cpu_start = process_cpu_secs();
        for chunk in all.chunks(1000) {
            exp.export(chunk).await.expect("bench export");
        }
        let secs = start.elapsed().as_secs_f64();
        let cpu = process_cpu_secs() - cpu_start;
        let st = exp.stats();
        println!(
            "BENCH {} compression={compression}: {total} docs in {secs:.2}s = {:.0} docs/s ({} requests, {:.1} MiB sent); \
             exporter-side CPU {cpu:.2}s = {:.1} µs/doc",
            kind.arg(),
            total as f64 / secs,
            st.requests,
            st.bytes_sent as f64 / (1 << 20) as f64,
            cpu * 1e6 / total as f64
        );
        assert_eq!(st.created as usize, total);
    }
}

/// CPU time (user + system) of this test process so far: the exporter's side
/// of the benchmark (the servers run in their own processes).
fn process_cpu_secs() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which is in parentheses): utime is the 14th field, stime the 15th.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 =
        f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0) + f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    ticks / 100.0
}

mod bench {
    #[tokio::test(flavor = "multi_thread")]
    #[ignore = "benchmark: run explicitly"]
    async fn opensearch() {
        super::bench(super::Kind::OpenSearch).await;
    }
    #[tokio::test(flavor = "multi_thread")]
    #[ignore = "benchmark: run explicitly"]
    async fn elasticsearch() {
        super::bench(super::Kind::Elasticsearch).await;
    }
}
