use std::io::Read;
use std::sync::Arc;
use std::sync::Mutex as StdMutex;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;
use crate::{ErrorKind, Record, RecordFields};

fn config(toml_text: &str) -> Result<ElasticsearchConfig, String> {
    toml::from_str(toml_text).map_err(|e| e.to_string())
}

fn build_err(cfg: &ElasticsearchConfig) -> String {
    cfg.build("es").expect_err("config must be refused").message
}

fn record(uid: &str, rv: &str, ts: &str, json: &str) -> Arc<Record> {
    Arc::new(Record::new(
        RecordFields {
            cluster: "c1".into(),
            uid: uid.into(),
            resource_version: rv.into(),
            timestamp: ts.into(),
            ..Default::default()
        },
        json.to_string(),
    ))
}

// ---- config ----------------------------------------------------------------

#[test]
fn defaults() {
    let c = config(r#"url = "http://127.0.0.1:9200""#).unwrap();
    assert_eq!(c.index, "k8s-events-%Y.%m.%d");
    assert_eq!(c.mode, IndexMode::Index);
    assert_eq!(c.max_bulk_bytes, 5 << 20);
    assert!(!c.compression);
    assert_eq!(c.request_timeout, Duration::from_secs(30));
    assert_eq!(c.refresh, Refresh::False);
    assert!(c.template && c.lifecycle);
    assert_eq!(c.template_priority, 200);
    assert_eq!(c.retention, Duration::from_secs(30 * 86400));
    let s = c.validate().unwrap();
    assert_eq!(s.template_name, "k8s-events");
    assert_eq!(s.policy_name, "k8s-events");
    assert_eq!(s.patterns, vec!["k8s-events-*"]);
    assert!(s.lifecycle);
    assert!(s.rollover.is_none(), "date-templated indices roll by name, not by ILM");
}

#[test]
fn unknown_key_and_bad_values_are_config_errors() {
    let e = config("url = \"http://x\"\nbulk_size = 3").unwrap_err();
    assert!(e.contains("unknown field `bulk_size`"), "{e}");
    let e = config("url = \"http://x\"\nmode = \"stream\"").unwrap_err();
    assert!(e.contains("unknown variant `stream`"), "{e}");
    let e = config("url = \"http://x\"\nrefresh = \"sometimes\"").unwrap_err();
    assert!(e.contains("invalid refresh"), "{e}");
    let e = config("url = \"http://x\"\nmax_bulk_bytes = \"5 parsecs\"").unwrap_err();
    assert!(e.contains("invalid size unit"), "{e}");
    assert_eq!(
        config("url = \"http://x\"\nrefresh = true").unwrap().refresh,
        Refresh::True
    );
    assert_eq!(
        config("url = \"http://x\"\nrefresh = \"wait_for\"").unwrap().refresh,
        Refresh::WaitFor
    );
}

#[test]
fn urls_are_checked() {
    let mut c = ElasticsearchConfig::new("http://127.0.0.1:9200");
    c.url = None;
    assert!(build_err(&c).contains("`url` is required"));
    c.url = Some("ftp://x".into());
    assert!(build_err(&c).contains("scheme"));
    c.url = Some("https://elastic:changeme@es:9200".into());
    assert!(build_err(&c).contains("holds credentials"));
    c.url = Some("http://a:9200".into());
    c.urls = vec!["http://b:9200".into()];
    assert!(build_err(&c).contains("not both"));
    c.url = None;
    c.urls = vec!["http://a:9200".into(), "http://b:9200".into()];
    c.build("es").expect("two nodes");
}

#[test]
fn inline_secrets_are_refused() {
    for key in ["password", "api_key", "bearer_token"] {
        let c = config(&format!("url = \"http://x\"\nusername = \"u\"\n{key} = \"hunter2\"")).unwrap();
        let e = build_err(&c);
        assert!(
            e.contains("not accepted inline") && e.contains(&format!("{key}_file")),
            "{e}"
        );
    }
}

#[test]
fn auth_from_missing_file_or_env_is_a_config_error() {
    let c = config("url = \"http://x\"\nusername = \"u\"\npassword_file = \"/nonexistent/pw\"").unwrap();
    let e = build_err(&c);
    assert!(e.contains("cannot read password_file `/nonexistent/pw`"), "{e}");

    let c = config("url = \"http://x\"\napi_key_env = \"EC_TEST_SURELY_UNSET_KEY\"").unwrap();
    let e = build_err(&c);
    assert!(e.contains("EC_TEST_SURELY_UNSET_KEY") && e.contains("not set"), "{e}");

    let c = config("url = \"http://x\"\nusername = \"u\"").unwrap();
    assert!(build_err(&c).contains("needs `password_file` or `password_env`"));
    let c = config("url = \"http://x\"\npassword_env = \"X\"").unwrap();
    assert!(build_err(&c).contains("need `username`"));

    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty");
    std::fs::write(&empty, "\n").unwrap();
    let c = config(&format!(
        "url = \"http://x\"\nbearer_token_file = \"{}\"",
        empty.display()
    ))
    .unwrap();
    assert!(build_err(&c).contains("is empty"));

    let tok = dir.path().join("tok");
    std::fs::write(&tok, "abc\n").unwrap();
    let pw = dir.path().join("pw");
    std::fs::write(&pw, "secret\n").unwrap();
    let c = config(&format!(
        "url = \"http://x\"\nbearer_token_file = \"{}\"\nusername = \"u\"\npassword_file = \"{}\"",
        tok.display(),
        pw.display()
    ))
    .unwrap();
    assert!(build_err(&c).contains("choose one way"));
    let c = config(&format!(
        "url = \"http://x\"\nusername = \"u\"\npassword_file = \"{}\"",
        pw.display()
    ))
    .unwrap();
    c.build("es").expect("basic auth from a file");
    let c = config(&format!("url = \"http://x\"\napi_key_file = \"{}\"", tok.display())).unwrap();
    c.build("es").expect("api key from a file");
}

#[test]
fn tls_options_are_checked() {
    let c = config("url = \"https://x\"\nca_file = \"/nonexistent/ca.pem\"").unwrap();
    assert!(build_err(&c).contains("cannot read ca_file"));
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("ca.pem");
    std::fs::write(&bad, "not a certificate").unwrap();
    let c = config(&format!("url = \"https://x\"\nca_file = \"{}\"", bad.display())).unwrap();
    assert!(build_err(&c).contains("ca_file"));
    let c = config(&format!(
        "url = \"https://x\"\nca_file = \"{}\"\ntls_skip_verify = true",
        bad.display()
    ))
    .unwrap();
    assert!(build_err(&c).contains("contradict"));
    let c = config("url = \"https://x\"\ntls_skip_verify = true").unwrap();
    c.build("es").expect("skip verify builds (with a warning)");
}

#[test]
fn index_patterns_are_checked() {
    let bad = [
        ("%Y.%m.%d", "fixed prefix"),
        ("K8s-events-%Y", "lowercase"),
        ("k8s events", "spaces"),
        ("_k8s", "must not start"),
        ("k8s-%Q", "not a valid strftime"),
        ("k8s-%A", "lowercase"),
    ];
    for (index, want) in bad {
        let mut c = ElasticsearchConfig::new("http://x");
        c.index = index.into();
        let e = build_err(&c);
        assert!(e.contains("invalid `index`") && e.contains(want), "{index}: {e}");
    }
    let mut c = ElasticsearchConfig::new("http://x");
    c.index = "k8s-%Y".into();
    c.mode = IndexMode::DataStream;
    assert!(build_err(&c).contains("only mode = \"index\""));
    c.mode = IndexMode::Alias;
    assert!(build_err(&c).contains("only mode = \"index\""));
    c.index = "k8s-events".into();
    let s = c.validate().unwrap();
    assert_eq!(s.patterns, vec!["k8s-events-*"]);
    assert!(s.rollover.is_some());
    c.mode = IndexMode::DataStream;
    assert_eq!(c.validate().unwrap().patterns, vec!["k8s-events"]);
    // A fixed plain index gets no lifecycle: deleting it would delete everything.
    c.mode = IndexMode::Index;
    let s = c.validate().unwrap();
    assert!(!s.lifecycle);
    assert_eq!(s.patterns, vec!["k8s-events"]);
}

// ---- ids and index names --------------------------------------------------

#[test]
fn document_id_is_stable_and_keyed_on_cluster_uid_and_resource_version() {
    let a = record("u1", "100", "2024-01-01T00:00:00Z", "{}");
    let id = document_id(&a);
    assert_eq!(id.len(), 32);
    assert!(id.chars().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
    // Same occurrence, other JSON (e.g. read through the other API): same id.
    let b = record("u1", "100", "2024-01-01T00:00:09Z", "{\"api\":\"core/v1\"}");
    assert_eq!(document_id(&b), id);
    // A fixed value: the id must never change between versions of the collector,
    // or a resend after an upgrade would duplicate.
    assert_eq!(id, "fe0125b023af6c5ce42c19ede8728a56");
    assert_eq!(id, document_id(&record("u1", "100", "", "")));
    let full: String = <sha2::Sha256 as sha2::Digest>::digest(b"c1\x00u1\x00100")
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(id, full[..32]);
    // A repeat (new resourceVersion), another event, another cluster: new ids.
    assert_ne!(document_id(&record("u1", "101", "", "")), id);
    assert_ne!(document_id(&record("u2", "100", "", "")), id);
    let mut other = (*a).clone();
    other.fields.cluster = "c2".into();
    assert_ne!(document_id(&other), id);
    // No uid at all: keyed on the JSON.
    assert_ne!(
        document_id(&record("", "", "", "{\"a\":1}")),
        document_id(&record("", "", "", "{\"a\":2}"))
    );
}

#[test]
fn index_name_comes_from_the_event_timestamp_in_utc() {
    let n = IndexName::parse("k8s-events-%Y.%m.%d", true).unwrap();
    assert_eq!(n.for_timestamp("2024-03-05T23:59:59.123456Z"), "k8s-events-2024.03.05");
    assert_eq!(n.for_timestamp("2024-03-05T23:30:00-02:00"), "k8s-events-2024.03.06");
    assert_eq!(n.prefix(), "k8s-events-");
    let hourly = IndexName::parse("ev-%Y%m%d%H", true).unwrap();
    assert_eq!(hourly.for_timestamp("2031-01-02T03:04:05Z"), "ev-2031010203");
    let fixed = IndexName::parse("events", true).unwrap();
    assert_eq!(fixed.for_timestamp("2024-03-05T00:00:00Z"), "events");
    // An unparsable time (never produced by normalize) counts as now.
    let now = chrono::Utc::now().format("k8s-events-%Y.%m.%d").to_string();
    assert_eq!(n.for_timestamp("garbage"), now);
}

// ---- bulk body ------------------------------------------------------------------

#[test]
fn bulk_body_is_ndjson_with_create_actions_and_timestamp() {
    let mut buf = Vec::new();
    append_create(
        &mut buf,
        "k8s-events-2024.03.05",
        "abc",
        "2024-03-05T10:00:00Z",
        br#"{"uid":"u1","message":"a\nb"}"#,
    );
    append_create(&mut buf, "i", "def", "2024-03-05T10:00:01Z", b"{\n\"x\": 1\n}");
    append_create(&mut buf, "i", "ghi", "2024-03-05T10:00:02Z", b"{}");
    let text = String::from_utf8(buf).unwrap();
    assert!(text.ends_with('\n'));
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 6, "{text}");
    assert_eq!(lines[0], r#"{"create":{"_index":"k8s-events-2024.03.05","_id":"abc"}}"#);
    assert_eq!(
        lines[1],
        r#"{"@timestamp":"2024-03-05T10:00:00Z","uid":"u1","message":"a\nb"}"#
    );
    let doc: Value = serde_json::from_str(lines[3]).unwrap();
    assert_eq!(doc, json!({"@timestamp": "2024-03-05T10:00:01Z", "x": 1}));
    let doc: Value = serde_json::from_str(lines[5]).unwrap();
    assert_eq!(doc, json!({"@timestamp": "2024-03-05T10:00:02Z"}));
    for l in &lines {
        serde_json::from_str::<Value>(l).expect("every line is JSON");
    }
}

#[test]
fn batches_split_by_bytes() {
    assert_eq!(plan_chunks(&[], 100), Vec::<std::ops::Range<usize>>::new());
    assert_eq!(plan_chunks(&[10, 10, 10], 100), vec![0..3]);
    assert_eq!(plan_chunks(&[40, 40, 40, 40], 100), vec![0..2, 2..4]);
    assert_eq!(plan_chunks(&[50, 50, 1], 100), vec![0..2, 2..3]);
    // An item larger than the limit goes alone.
    assert_eq!(plan_chunks(&[10, 500, 10], 100), vec![0..1, 1..2, 2..3]);
}

#[test]
fn gzip_round_trips() {
    let body = b"{\"create\":{}}\n{\"a\":1}\n".repeat(100);
    let gz = bulk::gzip(&body);
    assert!(gz.len() < body.len() / 5);
    let mut back = Vec::new();
    flate2::read::GzDecoder::new(&gz[..]).read_to_end(&mut back).unwrap();
    assert_eq!(back, body);
}

// ---- bulk responses -----------------------------------------------------------

#[test]
fn bulk_items_are_classified() {
    let body = json!({
        "errors": true,
        "items": [
            {"create": {"_index": "i", "_id": "1", "status": 201, "result": "created"}},
            {"create": {"_index": "i", "_id": "2", "status": 409, "error": {
                "type": "version_conflict_engine_exception",
                "reason": "[2]: version conflict, document already exists (current version [1])"}}},
            {"create": {"_index": "i", "_id": "3", "status": 429, "error": {
                "type": "es_rejected_execution_exception", "reason": "rejected execution of coordinating operation"}}},
            {"create": {"_index": "i", "_id": "4", "status": 503, "error": {
                "type": "unavailable_shards_exception", "reason": "primary shard is not active"}}},
            {"create": {"_index": "i", "_id": "5", "status": 400, "error": {
                "type": "document_parsing_exception",
                "reason": "[1:54] failed to parse field [reason] of type [long] in document with id '5'",
                "caused_by": {"type": "illegal_argument_exception", "reason": "For input string: \"BackOff\""}}}},
            {"create": {"_index": "i", "_id": "6", "status": 400, "error": {
                "type": "mapper_parsing_exception", "reason": "failed to parse field [count] of type [long]"}}},
            {"create": {"_index": "i", "_id": "7", "status": 403, "error": {
                "type": "cluster_block_exception", "reason": "index [i] blocked by: [FORBIDDEN/8/index write (api)];"}}},
            {"index": {"_index": "i", "_id": "8", "status": 200}}
        ]
    });
    let outcomes = parse_bulk_response(body.to_string().as_bytes(), 8).unwrap();
    assert_eq!(outcomes[0], Outcome::Created);
    assert_eq!(outcomes[1], Outcome::Duplicate);
    assert!(
        matches!(&outcomes[2], Outcome::Retry { status: 429, error } if error.starts_with("es_rejected_execution_exception: rejected"))
    );
    assert!(matches!(&outcomes[3], Outcome::Retry { status: 503, .. }));
    match &outcomes[4] {
        Outcome::Reject { status: 400, error } => {
            assert!(
                error.starts_with("document_parsing_exception: [1:54] failed to parse field [reason]"),
                "{error}"
            );
            assert!(
                error.ends_with("(caused by illegal_argument_exception: For input string: \"BackOff\")"),
                "{error}"
            );
        }
        other => panic!("{other:?}"),
    }
    assert!(
        matches!(&outcomes[5], Outcome::Reject { status: 400, error } if error.starts_with("mapper_parsing_exception"))
    );
    assert!(matches!(&outcomes[6], Outcome::Retry { status: 403, .. }));
    assert_eq!(outcomes[7], Outcome::Created);

    assert!(
        parse_bulk_response(body.to_string().as_bytes(), 7)
            .unwrap_err()
            .contains("8 items for 7")
    );
    assert!(parse_bulk_response(b"<html>", 1).is_err());
    assert!(parse_bulk_response(b"{\"errors\":false}", 1).is_err());
    // filter_path answers: only status and error.
    let filtered = br#"{"errors":false,"items":[{"create":{"status":201}},{"create":{"status":201}}]}"#;
    assert_eq!(parse_bulk_response(filtered, 2).unwrap(), vec![Outcome::Created; 2]);
}

// ---- server differences, template and lifecycle bodies ----------------------

fn es(v: &str) -> ServerInfo {
    ServerInfo::from_root(
        &json!({"version": {"number": v, "build_flavor": "default"}, "tagline": "You Know, for Search"}),
    )
    .unwrap()
}

fn os(v: &str) -> ServerInfo {
    ServerInfo::from_root(&json!({"version": {"distribution": "opensearch", "number": v}})).unwrap()
}

#[test]
fn flavour_and_version_from_get_root() {
    let e = es("8.15.3");
    assert_eq!((e.flavor, e.version), (Flavor::Elasticsearch, Version(8, 15, 3)));
    let o = os("3.8.0");
    assert_eq!((o.flavor, o.version), (Flavor::Opensearch, Version(3, 8, 0)));
    assert_eq!(Version::parse("7.10.2-SNAPSHOT"), Some(Version(7, 10, 2)));
    assert_eq!(Version::parse("9"), Some(Version(9, 0, 0)));
    assert!(ServerInfo::from_root(&json!({"name": "x"})).is_err());

    assert_eq!(
        e.json_content_type(),
        "application/vnd.elasticsearch+json; compatible-with=8"
    );
    assert_eq!(
        e.ndjson_content_type(),
        "application/vnd.elasticsearch+x-ndjson; compatible-with=8"
    );
    assert_eq!(es("9.1.0").compat_major(), Some(9));
    assert_eq!(es("7.17.0").json_content_type(), "application/json");
    assert_eq!(o.json_content_type(), "application/json");
    assert_eq!(o.ndjson_content_type(), "application/x-ndjson");

    assert!(es("7.8.0").composable_templates());
    assert!(!es("7.7.1").composable_templates());
    assert!(os("1.0.0").composable_templates());
    assert_eq!(es("8.0.0").labels_mapping(), LabelsMapping::Flattened);
    assert_eq!(es("7.2.0").labels_mapping(), LabelsMapping::Disabled);
    assert_eq!(os("2.7.0").labels_mapping(), LabelsMapping::FlatObject);
    assert_eq!(os("2.6.0").labels_mapping(), LabelsMapping::Disabled);
    assert_eq!(
        ServerInfo::assumed(Flavor::Opensearch).labels_mapping(),
        LabelsMapping::FlatObject
    );
}

fn params(labels: LabelsMapping, mode: IndexMode, lifecycle: Option<Lifecycle>) -> TemplateParams {
    TemplateParams {
        patterns: vec!["k8s-events-*".into()],
        priority: 200,
        shards: 1,
        replicas: Some(2),
        labels,
        mode,
        alias: (mode == IndexMode::Alias).then(|| "k8s-events".to_string()),
        lifecycle,
    }
}

#[test]
fn template_maps_the_event_schema() {
    let t = composable_template(&params(
        LabelsMapping::Flattened,
        IndexMode::Index,
        Some(Lifecycle::Ilm {
            policy: "k8s-events".into(),
        }),
    ));
    assert_eq!(t["index_patterns"], json!(["k8s-events-*"]));
    assert_eq!(t["priority"], 200);
    assert!(t.get("data_stream").is_none());
    let s = &t["template"]["settings"];
    assert_eq!(s["index.number_of_shards"], 1);
    assert_eq!(s["index.number_of_replicas"], 2);
    assert_eq!(s["index.lifecycle.name"], "k8s-events");
    assert!(s.get("index.lifecycle.rollover_alias").is_none());
    let m = &t["template"]["mappings"];
    assert_eq!(m["dynamic"], false);
    assert_eq!(m["date_detection"], false);
    let p = &m["properties"];
    for f in [
        "type",
        "reason",
        "namespace",
        "name",
        "reporting_controller",
        "cluster",
        "uid",
    ] {
        assert_eq!(p[f]["type"], "keyword", "{f}");
    }
    assert_eq!(p["object"]["properties"]["kind"]["type"], "keyword");
    assert_eq!(p["object"]["properties"]["name"]["type"], "keyword");
    assert_eq!(p["message"]["type"], "text");
    assert_eq!(p["message"]["fields"]["keyword"]["type"], "keyword");
    for f in ["timestamp", "first_timestamp", "last_timestamp", "@timestamp"] {
        assert_eq!(p[f]["type"], "date", "{f}");
    }
    assert_eq!(p["count"]["type"], "long");
    assert_eq!(p["labels"]["type"], "flattened");
    assert_eq!(p["annotations"]["type"], "flattened");
    assert_eq!(p["extra"], json!({"type": "object", "dynamic": true}));
    assert_eq!(p["raw"]["enabled"], false);
    assert_eq!(m["dynamic_templates"][0]["extra_strings"]["path_match"], "extra.*");
    assert_eq!(m["dynamic_templates"][0]["extra_strings"]["mapping"]["type"], "keyword");

    let t = composable_template(&params(
        LabelsMapping::FlatObject,
        IndexMode::Alias,
        Some(Lifecycle::Ism),
    ));
    let s = &t["template"]["settings"];
    assert_eq!(s["plugins.index_state_management.rollover_alias"], "k8s-events");
    assert!(s.get("index.lifecycle.name").is_none());
    assert_eq!(t["template"]["mappings"]["properties"]["labels"]["type"], "flat_object");

    // No lifecycle (the server has no ILM/ISM): no lifecycle settings at all.
    let t = composable_template(&params(LabelsMapping::Disabled, IndexMode::DataStream, None));
    assert_eq!(t["data_stream"], json!({}));
    let s = t["template"]["settings"].as_object().unwrap();
    assert!(
        s.keys().all(|k| !k.contains("lifecycle") && !k.contains("index_state")),
        "{s:?}"
    );
    assert_eq!(
        t["template"]["mappings"]["properties"]["labels"],
        json!({"type": "object", "enabled": false})
    );

    let legacy = legacy_template(&params(
        LabelsMapping::Flattened,
        IndexMode::Alias,
        Some(Lifecycle::Ilm { policy: "p".into() }),
    ));
    assert_eq!(legacy["order"], 200);
    assert!(legacy.get("priority").is_none() && legacy.get("template").is_none());
    assert_eq!(legacy["settings"]["index.lifecycle.rollover_alias"], "k8s-events");
    assert_eq!(legacy["mappings"]["properties"]["reason"]["type"], "keyword");
}

#[test]
fn ilm_policy_rolls_over_then_deletes() {
    let r = Rollover {
        max_age: Duration::from_secs(86400),
        max_primary_shard_bytes: 50 << 30,
    };
    let p = ilm_policy(Some(r), Duration::from_secs(7 * 86400), true);
    assert_eq!(
        p,
        json!({"policy": {"phases": {
            "hot": {"min_age": "0ms", "actions": {"rollover": {"max_age": "1d", "max_primary_shard_size": "53687091200b"}}},
            "delete": {"min_age": "7d", "actions": {"delete": {}}}
        }}})
    );
    let p = ilm_policy(Some(r), Duration::from_secs(36 * 3600), false);
    assert_eq!(
        p["policy"]["phases"]["hot"]["actions"]["rollover"]["max_size"],
        "53687091200b"
    );
    assert_eq!(p["policy"]["phases"]["delete"]["min_age"], "36h");
    // Date-templated indices: delete only.
    let p = ilm_policy(None, Duration::from_secs(90 * 60), true);
    assert_eq!(
        p,
        json!({"policy": {"phases": {"delete": {"min_age": "90m", "actions": {"delete": {}}}}}})
    );
}

#[test]
fn ism_policy_rolls_over_then_deletes() {
    let r = Rollover {
        max_age: Duration::from_secs(86400),
        max_primary_shard_bytes: 1 << 30,
    };
    let patterns = vec!["k8s-events-*".to_string()];
    let p = ism_policy(Some(r), Duration::from_secs(30 * 86400), &patterns, 200);
    let policy = &p["policy"];
    assert_eq!(policy["default_state"], "hot");
    assert_eq!(
        policy["states"][0],
        json!({
            "name": "hot",
            "actions": [{"rollover": {"min_index_age": "1d", "min_primary_shard_size": "1073741824b"}}],
            "transitions": [{"state_name": "delete", "conditions": {"min_index_age": "30d"}}]
        })
    );
    assert_eq!(
        policy["states"][1],
        json!({"name": "delete", "actions": [{"delete": {}}], "transitions": []})
    );
    assert_eq!(
        policy["ism_template"],
        json!({"index_patterns": ["k8s-events-*"], "priority": 200})
    );
    let p = ism_policy(None, Duration::from_secs(86400), &patterns, 5);
    assert_eq!(p["policy"]["states"][0]["actions"], json!([]));
    assert_eq!(
        server::ism_patterns(IndexMode::DataStream, &["ev".to_string()], "ev"),
        vec!["ev", ".ds-ev-*"]
    );
    assert_eq!(
        server::bootstrap_index("ev"),
        json!({"aliases": {"ev": {"is_write_index": true}}})
    );
}

// ---- export against a scripted HTTP server ------------------------------------

/// What the fake server saw.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    headers: String,
    body: Vec<u8>,
}

type Script = Arc<dyn Fn(&Seen) -> (u16, String) + Send + Sync>;

/// A tiny HTTP/1.1 server on 127.0.0.1 that answers each request with
/// `script` and closes the connection.
async fn fake_server(script: Script) -> (String, Arc<StdMutex<Vec<Seen>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let seen = Arc::new(StdMutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            let script = script.clone();
            let log = log.clone();
            tokio::spawn(async move {
                let mut data = Vec::new();
                let mut tmp = [0u8; 8192];
                let (head_end, len) = loop {
                    let n = sock.read(&mut tmp).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    data.extend_from_slice(&tmp[..n]);
                    if let Some(p) = data.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&data[..p]).to_lowercase();
                        let len = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .and_then(|v| v.trim().parse::<usize>().ok())
                            .unwrap_or(0);
                        break (p + 4, len);
                    }
                };
                while data.len() < head_end + len {
                    let n = sock.read(&mut tmp).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    data.extend_from_slice(&tmp[..n]);
                }
                let head = String::from_utf8_lossy(&data[..head_end]).to_string();
                let mut first = head.lines().next().unwrap_or("").split(' ');
                let method = first.next().unwrap_or("").to_string();
                let path = first.next().unwrap_or("").to_string();
                let mut body = data[head_end..head_end + len].to_vec();
                if head.to_lowercase().contains("content-encoding: gzip") {
                    let mut out = Vec::new();
                    flate2::read::GzDecoder::new(&body[..]).read_to_end(&mut out).unwrap();
                    body = out;
                }
                let req = Seen {
                    method,
                    path,
                    headers: head,
                    body,
                };
                let (status, answer) = script(&req);
                log.lock().unwrap().push(req);
                let resp = format!(
                    "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{answer}",
                    answer.len()
                );
                let _ = sock.write_all(resp.as_bytes()).await;
                let _ = sock.shutdown().await;
            });
        }
    });
    (url, seen)
}

const ES_ROOT: &str =
    r#"{"name":"n","version":{"number":"8.15.3","build_flavor":"default"},"tagline":"You Know, for Search"}"#;
const OS_ROOT: &str = r#"{"name":"n","version":{"distribution":"opensearch","number":"2.19.0"}}"#;

/// Answers the startup requests: `GET /` with `root`, lifecycle APIs missing, templates accepted.
fn startup(req: &Seen, root: &str) -> Option<(u16, String)> {
    match (req.method.as_str(), req.path.as_str()) {
        ("GET", "/") => Some((200, root.to_string())),
        (_, p) if p.starts_with("/_ilm") || p.starts_with("/_plugins/_ism") => Some((
            400,
            format!(
                r#"{{"error":"no handler found for uri [{p}] and method [{}]"}}"#,
                req.method
            ),
        )),
        ("PUT", p) if p.starts_with("/_index_template/") => Some((200, r#"{"acknowledged":true}"#.into())),
        _ => None,
    }
}

/// The `_id`s of a bulk body, in order.
fn ids(body: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(body)
        .lines()
        .step_by(2)
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["create"]["_id"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect()
}

fn items(statuses: &[u16]) -> String {
    let items: Vec<Value> = statuses
        .iter()
        .map(|&s| match s {
            200..=299 => json!({"create": {"status": s}}),
            409 => json!({"create": {"status": 409, "error": {"type": "version_conflict_engine_exception", "reason": "exists"}}}),
            400 => json!({"create": {"status": 400, "error": {"type": "document_parsing_exception", "reason": "failed to parse field [reason] of type [long]"}}}),
            _ => json!({"create": {"status": s, "error": {"type": "es_rejected_execution_exception", "reason": "queue full"}}}),
        })
        .collect();
    json!({"errors": true, "items": items}).to_string()
}

fn batch(n: usize) -> Vec<Arc<Record>> {
    (0..n)
        .map(|i| {
            record(
                &format!("uid-{i}"),
                "1",
                "2024-03-05T10:00:00Z",
                &format!("{{\"uid\":\"uid-{i}\",\"reason\":\"R\"}}"),
            )
        })
        .collect()
}

fn bulks(seen: &StdMutex<Vec<Seen>>) -> Vec<Seen> {
    seen.lock()
        .unwrap()
        .iter()
        .filter(|s| s.path.starts_with("/_bulk"))
        .cloned()
        .collect()
}

#[tokio::test]
async fn per_item_outcomes_retry_only_the_failed_items() {
    let round = Arc::new(StdMutex::new(0));
    let r = round.clone();
    let script: Script = Arc::new(move |req| {
        if let Some(a) = startup(req, ES_ROOT) {
            return a;
        }
        let mut n = r.lock().unwrap();
        *n += 1;
        match *n {
            // created, duplicate, throttled, 503, mapping error
            1 => (200, items(&[201, 409, 429, 503, 400])),
            // the resend of the two: one made it, one is still throttled
            2 => (200, items(&[201, 429])),
            _ => (200, items(&[201])),
        }
    });
    let (url, seen) = fake_server(script).await;
    let mut c = ElasticsearchConfig::new(url);
    c.item_retries = 1;
    c.item_retry_backoff = Duration::from_millis(10);
    let exp = c.build("es").unwrap();
    let b = batch(5);
    let err = exp.export(&b).await.expect_err("one item is still throttled");
    assert_eq!(err.kind, ErrorKind::Transient);
    assert_eq!(err.reason, "throttled");
    let mut delivered = err.delivered.clone();
    delivered.sort();
    assert_eq!(delivered, vec![0, 1, 2]);
    assert_eq!(err.rejected.len(), 1);
    assert_eq!(err.rejected[0].0, 4);
    assert!(
        err.rejected[0].1.starts_with("document_parsing_exception"),
        "{:?}",
        err.rejected
    );
    assert!(!exp.health().is_ready());

    let sent = bulks(&seen);
    assert_eq!(sent.len(), 2);
    let all: Vec<String> = b.iter().map(|r| document_id(r)).collect();
    assert_eq!(ids(&sent[0].body), all);
    assert_eq!(
        ids(&sent[1].body),
        vec![all[2].clone(), all[3].clone()],
        "only the failed items"
    );
    assert!(sent[0].path.contains("filter_path="));
    assert!(
        sent[0]
            .headers
            .to_lowercase()
            .contains("content-type: application/vnd.elasticsearch+x-ndjson; compatible-with=8")
    );

    // The pipeline resends what is left (item 3): it now succeeds.
    let rest = vec![b[3].clone()];
    exp.export(&rest).await.expect("the rest goes through");
    assert!(exp.health().is_ready());
    let st = exp.stats();
    assert_eq!((st.created, st.duplicates, st.rejected), (3, 1, 1));
}

#[tokio::test]
async fn all_rejected_or_delivered_is_permanent_and_complete() {
    let script: Script = Arc::new(|req| startup(req, OS_ROOT).unwrap_or((200, items(&[201, 400]))));
    let (url, seen) = fake_server(script).await;
    let exp = ElasticsearchConfig::new(url).build("es").unwrap();
    let err = exp.export(&batch(2)).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Permanent);
    assert_eq!(err.reason, "mapping_error");
    assert_eq!(err.delivered, vec![0]);
    assert_eq!(err.rejected.len(), 1);
    // OpenSearch: plain content types, no compatibility headers.
    let sent = bulks(&seen);
    let h = sent[0].headers.to_lowercase();
    assert!(h.contains("content-type: application/x-ndjson"), "{h}");
    assert!(!h.contains("compatible-with"), "{h}");
    // One warning's worth of lifecycle trouble, and the template was still installed.
    let paths: Vec<String> = seen
        .lock()
        .unwrap()
        .iter()
        .map(|s| format!("{} {}", s.method, s.path))
        .collect();
    assert!(
        paths.contains(&"GET /_plugins/_ism/policies/k8s-events".to_string()),
        "{paths:?}"
    );
    assert!(
        paths.contains(&"PUT /_index_template/k8s-events".to_string()),
        "{paths:?}"
    );
    let tpl = seen
        .lock()
        .unwrap()
        .iter()
        .find(|s| s.path == "/_index_template/k8s-events")
        .map(|s| serde_json::from_slice::<Value>(&s.body).unwrap())
        .unwrap();
    assert_eq!(
        tpl["template"]["mappings"]["properties"]["labels"]["type"],
        "flat_object"
    );
    assert!(
        !tpl["template"]["settings"].to_string().contains("lifecycle"),
        "no lifecycle settings without ISM"
    );
}

#[tokio::test]
async fn whole_request_failures_are_transient_for_everything_left() {
    let script: Script = Arc::new(|req| {
        startup(req, ES_ROOT).unwrap_or((
            429,
            r#"{"error":{"type":"es_rejected_execution_exception","reason":"rejected execution"},"status":429}"#.into(),
        ))
    });
    let (url, _seen) = fake_server(script).await;
    let exp = ElasticsearchConfig::new(url).build("es").unwrap();
    let err = exp.export(&batch(3)).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Transient);
    assert_eq!(err.reason, "throttled");
    assert!(err.delivered.is_empty() && err.rejected.is_empty());
    assert!(
        err.message.contains("es_rejected_execution_exception"),
        "{}",
        err.message
    );
}

#[tokio::test]
async fn large_batches_are_split_and_gzipped() {
    let script: Script = Arc::new(|req| {
        if let Some(a) = startup(req, ES_ROOT) {
            return a;
        }
        let n = String::from_utf8_lossy(&req.body).lines().count() / 2;
        (200, items(&vec![201; n]))
    });
    let (url, seen) = fake_server(script).await;
    let mut c = ElasticsearchConfig::new(url);
    c.max_bulk_bytes = 1024;
    c.compression = true;
    let exp = c.build("es").unwrap();
    let b = batch(40);
    exp.export(&b).await.unwrap();
    let sent = bulks(&seen);
    assert!(sent.len() > 3, "{} requests", sent.len());
    let mut got: Vec<String> = sent.iter().flat_map(|s| ids(&s.body)).collect();
    for s in &sent {
        assert!(s.body.len() <= 1024);
        assert!(s.headers.to_lowercase().contains("content-encoding: gzip"));
    }
    let mut want: Vec<String> = b.iter().map(|r| document_id(r)).collect();
    got.sort();
    want.sort();
    assert_eq!(got, want, "every document exactly once");
}

#[tokio::test]
async fn too_large_requests_are_halved_until_the_culprit_is_alone() {
    let script: Script = Arc::new(|req| {
        if let Some(a) = startup(req, ES_ROOT) {
            return a;
        }
        let body = String::from_utf8_lossy(&req.body);
        if body.contains("HUGE") {
            return (413, String::new());
        }
        (200, items(&vec![201; body.lines().count() / 2]))
    });
    let (url, _seen) = fake_server(script).await;
    let exp = ElasticsearchConfig::new(url).build("es").unwrap();
    let mut b = batch(5);
    b[3] = record("uid-big", "1", "2024-03-05T10:00:00Z", "{\"reason\":\"HUGE\"}");
    let err = exp.export(&b).await.unwrap_err();
    let mut delivered = err.delivered.clone();
    delivered.sort();
    assert_eq!(delivered, vec![0, 1, 2, 4]);
    assert_eq!(err.rejected.len(), 1);
    assert_eq!(err.rejected[0].0, 3);
    assert!(err.rejected[0].1.contains("request_entity_too_large"));
}

#[tokio::test]
async fn unreachable_server_is_not_ready_and_transient() {
    // A port nobody listens on.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let exp = ElasticsearchConfig::new(format!("http://127.0.0.1:{port}"))
        .build("es")
        .unwrap();
    assert!(!exp.health().is_ready());
    let err = exp.export(&batch(2)).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Transient);
    assert_eq!(err.reason, "connection");
    assert!(err.delivered.is_empty());
    match exp.health() {
        Health::NotReady(m) => assert!(m.contains("GET /"), "{m}"),
        Health::Ready => panic!("must not be ready"),
    }
}

#[tokio::test]
async fn credentials_and_alias_bootstrap() {
    let script: Script = Arc::new(|req| {
        if let Some(a) = startup(req, ES_ROOT) {
            return a;
        }
        match (req.method.as_str(), req.path.as_str()) {
            ("GET", "/_alias/k8s") => (404, r#"{"error":"alias [k8s] missing","status":404}"#.into()),
            ("PUT", "/k8s-000001") => (200, r#"{"acknowledged":true}"#.into()),
            _ => (200, items(&[201])),
        }
    });
    let (url, seen) = fake_server(script).await;
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("key");
    std::fs::write(&key, "myid:mysecret\n").unwrap();
    let mut c = ElasticsearchConfig::new(url);
    c.mode = IndexMode::Alias;
    c.index = "k8s".into();
    c.api_key_file = Some(key);
    let exp = c.build("es").unwrap();
    exp.export(&batch(1)).await.unwrap();
    let seen = seen.lock().unwrap().clone();
    let create = seen
        .iter()
        .find(|s| s.path == "/k8s-000001")
        .expect("bootstrap index created");
    assert_eq!(
        serde_json::from_slice::<Value>(&create.body).unwrap(),
        json!({"aliases": {"k8s": {"is_write_index": true}}})
    );
    let bulk = seen.iter().find(|s| s.path.starts_with("/_bulk")).unwrap();
    assert!(String::from_utf8_lossy(&bulk.body).starts_with(r#"{"create":{"_index":"k8s","#));
    // ApiKey base64("myid:mysecret")
    assert!(bulk.headers.contains("ApiKey bXlpZDpteXNlY3JldA=="), "{}", bulk.headers);
    let tpl = seen.iter().find(|s| s.path == "/_index_template/k8s").unwrap();
    let tpl: Value = serde_json::from_slice(&tpl.body).unwrap();
    assert_eq!(tpl["index_patterns"], json!(["k8s-*"]));
}

// ---- the files shipped in dev_setup/elasticsearch/ ---------------------------------

/// The JSON bodies the manual scripts send, as the exporter builds them for
/// the default config (index `k8s-events`, template and policy `k8s-events`,
/// 30 days, rollover at 1 day or 50GiB).
fn shipped_files() -> Vec<(&'static str, Value)> {
    let day = Duration::from_secs(86_400);
    let rollover = Rollover {
        max_age: day,
        max_primary_shard_bytes: 50 << 30,
    };
    let retention = day * 30;
    let template = |labels, mode, lifecycle, patterns: &[&str]| {
        composable_template(&TemplateParams {
            patterns: patterns.iter().map(|p| p.to_string()).collect(),
            priority: 200,
            shards: 1,
            replicas: None,
            labels,
            mode,
            alias: (mode == IndexMode::Alias).then(|| "k8s-events".to_string()),
            lifecycle,
        })
    };
    let ilm = || {
        Some(Lifecycle::Ilm {
            policy: "k8s-events".into(),
        })
    };
    let es = LabelsMapping::Flattened;
    let os = LabelsMapping::FlatObject;
    let dated = ["k8s-events-*"];
    let ds = ["k8s-events"];
    vec![
        ("ilm-policy-index.json", ilm_policy(None, retention, true)),
        ("ilm-policy-rollover.json", ilm_policy(Some(rollover), retention, true)),
        (
            "ism-policy-index.json",
            ism_policy(None, retention, &["k8s-events-*".to_string()], 200),
        ),
        (
            "ism-policy-alias.json",
            ism_policy(Some(rollover), retention, &["k8s-events-*".to_string()], 200),
        ),
        (
            "ism-policy-data-stream.json",
            ism_policy(
                Some(rollover),
                retention,
                &["k8s-events".to_string(), ".ds-k8s-events-*".to_string()],
                200,
            ),
        ),
        (
            "template-index-elasticsearch.json",
            template(es, IndexMode::Index, ilm(), &dated),
        ),
        (
            "template-index-opensearch.json",
            template(os, IndexMode::Index, Some(Lifecycle::Ism), &dated),
        ),
        (
            "template-alias-elasticsearch.json",
            template(es, IndexMode::Alias, ilm(), &dated),
        ),
        (
            "template-alias-opensearch.json",
            template(os, IndexMode::Alias, Some(Lifecycle::Ism), &dated),
        ),
        (
            "template-data-stream-elasticsearch.json",
            template(es, IndexMode::DataStream, ilm(), &ds),
        ),
        (
            "template-data-stream-opensearch.json",
            template(os, IndexMode::DataStream, Some(Lifecycle::Ism), &ds),
        ),
        ("bootstrap-alias.json", server::bootstrap_index("k8s-events")),
    ]
}

/// The shipped files are exactly what the exporter sends. Regenerate them with
/// `EC_WRITE_ES_FILES=1 cargo test -p event-collector-exporters shipped_json`.
#[test]
fn shipped_json_matches_the_exporter() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../dev_setup/elasticsearch");
    let write = std::env::var_os("EC_WRITE_ES_FILES").is_some();
    for (name, value) in shipped_files() {
        let path = dir.join(name);
        if write {
            std::fs::write(&path, serde_json::to_string_pretty(&value).unwrap() + "\n").unwrap();
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let shipped: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(
            shipped, value,
            "{name} differs from what the exporter sends; regenerate with EC_WRITE_ES_FILES=1"
        );
    }
    // The dashboards are valid ndjson: one JSON object per line, each with a type and an id.
    for name in ["dashboards/kibana.ndjson", "dashboards/opensearch-dashboards.ndjson"] {
        let text = std::fs::read_to_string(dir.join(name)).unwrap();
        let mut types = Vec::new();
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{name}: {e}: {line}"));
            assert!(v["id"].is_string(), "{name}: {line}");
            types.push(v["type"].as_str().unwrap().to_string());
            // Embedded JSON strings must parse too.
            for key in ["visState", "panelsJSON", "kibanaSavedObjectMeta"] {
                let attr = &v["attributes"][key];
                let s = if key == "kibanaSavedObjectMeta" {
                    &attr["searchSourceJSON"]
                } else {
                    attr
                };
                if let Some(s) = s.as_str() {
                    serde_json::from_str::<Value>(s).unwrap_or_else(|e| panic!("{name}: {key}: {e}"));
                }
            }
        }
        for t in ["index-pattern", "visualization", "search", "dashboard"] {
            assert!(types.iter().any(|x| x == t), "{name} has no {t}");
        }
    }
}
