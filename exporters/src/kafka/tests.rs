//! Unit tests: config, topic templates, keys, headers, error sorting. Tests
//! against a real broker are in `broker_tests.rs`.

use std::sync::Arc;
use std::time::Duration;

use rdkafka::message::Headers;

use super::*;
use crate::{ErrorKind, Record};

fn parse(body: &str) -> Result<KafkaConfig, String> {
    toml::from_str::<KafkaConfig>(body).map_err(|e| e.to_string())
}

fn cfg(extra: &str) -> KafkaConfig {
    parse(&format!("brokers = \"127.0.0.1:1\"\ntopic = \"events\"\n{extra}")).unwrap()
}

fn build_err(c: &KafkaConfig) -> String {
    match c.build("kafka-out") {
        Ok(_) => panic!("expected a config error"),
        Err(e) => {
            assert_eq!(e.exporter, "kafka-out");
            e.to_string()
        }
    }
}

fn fields() -> RecordFields {
    RecordFields {
        cluster: "prod-eu".into(),
        api: "events.k8s.io/v1".into(),
        uid: "ev-uid".into(),
        resource_version: "42".into(),
        namespace: "kube-system".into(),
        name: "web-1.17a2b".into(),
        event_type: "Warning".into(),
        reason: "BackOff".into(),
        kind: "Pod".into(),
        object_uid: "obj-uid".into(),
        schema_version: 1,
        timestamp: "2024-01-31T23:59:59Z".into(),
    }
}

#[test]
fn defaults() {
    let c = parse("brokers = [\"a:9092\", \" b:9092 \"]\ntopic = \"k8s-events\"").unwrap();
    assert_eq!(c.brokers, vec!["a:9092", "b:9092"]);
    assert_eq!(c.client_id, "event-collector");
    assert_eq!(c.topic.fixed(), Some("k8s-events"));
    assert_eq!(c.key, KeyField::ObjectUid);
    assert_eq!(c.compression, Compression::Lz4);
    assert_eq!(c.linger, Duration::from_millis(5));
    assert_eq!(c.batch_size, None);
    assert_eq!(c.acks, Acks::All);
    assert!(c.idempotence);
    assert_eq!(c.message_timeout, Duration::from_secs(30));
    assert!(c.tls.is_none() && c.sasl.is_none() && c.create_topics.is_none());
    assert!(c.properties.is_empty());

    let cc = c.client_config("k").unwrap();
    assert_eq!(cc.get("bootstrap.servers"), Some("a:9092,b:9092"));
    assert_eq!(cc.get("acks"), Some("all"));
    assert_eq!(cc.get("enable.idempotence"), Some("true"));
    assert_eq!(cc.get("compression.codec"), Some("lz4"));
    assert_eq!(cc.get("linger.ms"), Some("5"));
    assert_eq!(cc.get("message.timeout.ms"), Some("30000"));
    assert_eq!(cc.get("security.protocol"), Some("plaintext"));
    assert_eq!(cc.get("batch.size"), None);
}

#[test]
fn every_key() {
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("pw");
    std::fs::write(&pw, "s3cret\n").unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, "not checked here").unwrap();
    let c = parse(&format!(
        r#"
brokers = "k-0:9093, k-1:9093"
client_id = "ec-prod"
topic = "k8s.{{cluster}}.{{namespace}}"
key = "namespace"
compression = "zstd"
linger = "20ms"
batch_size = "512KiB"
acks = "all"
idempotence = true
message_timeout = "2m"
tls = {{ ca_file = "{}" }}
sasl = {{ mechanism = "SCRAM-SHA-512", username = "collector", password_file = "{}" }}
create_topics = {{ partitions = 6 }}
[properties]
"queue.buffering.max.messages" = 50000
"socket.keepalive.enable" = true
"ssl.endpoint.identification.algorithm" = "none"
"#,
        ca.display(),
        pw.display()
    ))
    .unwrap();
    assert_eq!(c.brokers, vec!["k-0:9093", "k-1:9093"]);
    assert_eq!(c.topic.fixed(), None);
    assert_eq!(c.key, KeyField::Namespace);
    assert_eq!(c.batch_size, Some(512 * 1024));
    assert_eq!(
        c.create_topics,
        Some(CreateTopics {
            partitions: 6,
            replication: 1
        })
    );
    let cc = c.client_config("k").unwrap();
    assert_eq!(cc.get("client.id"), Some("ec-prod"));
    assert_eq!(cc.get("compression.codec"), Some("zstd"));
    assert_eq!(cc.get("linger.ms"), Some("20"));
    assert_eq!(cc.get("batch.size"), Some("524288"));
    assert_eq!(cc.get("message.timeout.ms"), Some("120000"));
    assert_eq!(cc.get("security.protocol"), Some("sasl_ssl"));
    assert_eq!(cc.get("ssl.ca.location"), Some(ca.display().to_string().as_str()));
    assert_eq!(cc.get("sasl.mechanism"), Some("SCRAM-SHA-512"));
    assert_eq!(cc.get("sasl.username"), Some("collector"));
    assert_eq!(
        cc.get("sasl.password"),
        Some("s3cret"),
        "one trailing newline is dropped"
    );
    assert_eq!(cc.get("queue.buffering.max.messages"), Some("50000"));
    assert_eq!(cc.get("socket.keepalive.enable"), Some("true"));
    assert_eq!(cc.get("ssl.endpoint.identification.algorithm"), Some("none"));
}

#[test]
fn acks_and_idempotence() {
    assert_eq!(cfg("acks = -1").acks, Acks::All);
    assert_eq!(cfg("acks = 1\nidempotence = false").acks, Acks::Leader);
    assert_eq!(cfg("acks = \"0\"\nidempotence = false").acks, Acks::None);
    let e = parse("brokers = \"a:1\"\ntopic = \"t\"\nacks = 2").unwrap_err();
    assert!(e.contains("invalid acks `2`"), "{e}");
    let e = build_err(&cfg("acks = 1"));
    assert!(e.contains("`idempotence = true` needs `acks = \"all\"`"), "{e}");
    let cc = cfg("acks = 1\nidempotence = false").client_config("k").unwrap();
    assert_eq!(cc.get("acks"), Some("1"));
    assert_eq!(cc.get("enable.idempotence"), Some("false"));
}

#[test]
fn bad_templates_are_config_errors() {
    for (topic, want) in [
        ("k8s-events.{namespac}", "unknown placeholder `{namespac}`"),
        ("k8s-events.{namespace", "unbalanced `{`"),
        ("k8s-events.namespace}", "unbalanced `}`"),
        ("k8s.{ns{x}}", "unbalanced `{`"),
        ("k8s.{}", "unknown placeholder `{}`"),
        ("k8s events", "has ` ` outside placeholders"),
        ("k8s/events.{namespace}", "has `/` outside placeholders"),
        ("", "must not be empty"),
        ("..", "not a legal topic name"),
    ] {
        let e = parse(&format!("brokers = \"a:1\"\ntopic = \"{topic}\"")).unwrap_err();
        assert!(e.contains(want), "{topic}: {e}");
    }
    let e = parse("brokers = \"a:1\"\ntopic = \"t.{nope}\"").unwrap_err();
    assert!(
        e.contains("{cluster}, {namespace}, {type}, {event_type}, {reason}, {kind}, {api}, {name}"),
        "{e}"
    );
    let long = "x".repeat(250);
    let e = TopicTemplate::parse(&long).unwrap_err();
    assert!(e.contains("at most 249"), "{e}");
    assert!(TopicTemplate::parse(&"x".repeat(249)).is_ok());
}

#[test]
fn unknown_keys_and_values() {
    let e = parse("brokers = \"a:1\"\ntopic = \"t\"\ncompresion = \"lz4\"").unwrap_err();
    assert!(e.contains("unknown field `compresion`"), "{e}");
    let e = parse("brokers = \"a:1\"\ntopic = \"t\"\ncompression = \"snappy\"").unwrap_err();
    assert!(e.contains("unknown variant `snappy`") && e.contains("`zstd`"), "{e}");
    let e = parse("brokers = \"a:1\"\ntopic = \"t\"\nkey = \"pod\"").unwrap_err();
    assert!(e.contains("unknown variant `pod`") && e.contains("`object_uid`"), "{e}");
    let e = parse("brokers = \"a:1\"\ntopic = \"t\"\nsasl = { mechanism = \"GSSAPI\", username = \"u\" }").unwrap_err();
    assert!(
        e.contains("unknown variant `GSSAPI`") && e.contains("SCRAM-SHA-256"),
        "{e}"
    );
    let e = parse("brokers = \"a:1\"\ntopic = \"t\"\ntls = { ca = \"x\" }").unwrap_err();
    assert!(e.contains("unknown field `ca`"), "{e}");
    let e = parse("brokers = \"a:1\"\ntopic = \"t\"\ncreate_topics = { partition = 1 }").unwrap_err();
    assert!(e.contains("unknown field `partition`"), "{e}");
    let e = parse("topic = \"t\"").unwrap_err();
    assert!(e.contains("missing field `brokers`"), "{e}");
    let e = parse("brokers = \"a:1\"").unwrap_err();
    assert!(e.contains("missing field `topic`"), "{e}");
    let e = parse("brokers = \"a:1,,b:2\"\ntopic = \"t\"").unwrap_err();
    assert!(e.contains("without empty entries"), "{e}");
    let e = parse("brokers = []\ntopic = \"t\"").unwrap_err();
    assert!(e.contains("at least one"), "{e}");
    let e = parse("brokers = \"a:1\"\ntopic = \"t\"\nlinger = \"soon\"").unwrap_err();
    assert!(e.contains("invalid duration"), "{e}");
}

#[test]
fn secrets_are_read_at_build_with_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope");
    let e = build_err(&cfg(&format!(
        "sasl = {{ mechanism = \"PLAIN\", username = \"u\", password_file = \"{}\" }}",
        missing.display()
    )));
    assert!(
        e.starts_with("exporter `kafka-out`: cannot read `sasl.password_file`"),
        "{e}"
    );
    assert!(e.contains(&missing.display().to_string()), "{e}");

    let e = build_err(&cfg(
        "sasl = { mechanism = \"SCRAM-SHA-256\", username = \"u\", password_env = \"EC_KAFKA_TEST_UNSET_VAR\" }",
    ));
    assert!(
        e.contains("environment variable `EC_KAFKA_TEST_UNSET_VAR` (`sasl.password_env`) is not set"),
        "{e}"
    );

    let e = build_err(&cfg("sasl = { mechanism = \"PLAIN\", username = \"u\" }"));
    assert!(
        e.contains("needs `password_file`") && e.contains("`password_env`"),
        "{e}"
    );

    let pw = dir.path().join("pw");
    std::fs::write(&pw, "x").unwrap();
    let e = build_err(&cfg(&format!(
        "sasl = {{ mechanism = \"PLAIN\", username = \"u\", password_file = \"{}\", password_env = \"HOME\" }}",
        pw.display()
    )));
    assert!(e.contains("only one of"), "{e}");

    let empty = dir.path().join("empty");
    std::fs::write(&empty, "\n").unwrap();
    let e = build_err(&cfg(&format!(
        "sasl = {{ mechanism = \"PLAIN\", username = \"u\", password_file = \"{}\" }}",
        empty.display()
    )));
    assert!(e.contains("is empty"), "{e}");

    // The environment variable is read too (PATH is always set).
    let c = cfg("sasl = { mechanism = \"plain\", username = \"u\", password_env = \"PATH\" }");
    let cc = c.client_config("k").unwrap();
    assert_eq!(cc.get("sasl.password"), Some(std::env::var("PATH").unwrap().as_str()));
    assert_eq!(cc.get("sasl.mechanism"), Some("PLAIN"));
    assert_eq!(cc.get("security.protocol"), Some("sasl_plaintext"));
}

#[test]
fn tls_files_are_checked() {
    let e = build_err(&cfg("tls = { ca_file = \"/nonexistent/ca.pem\" }"));
    assert!(e.contains("cannot read `tls.ca_file` /nonexistent/ca.pem"), "{e}");
    let e = build_err(&cfg("tls = { cert_file = \"/etc/hostname\" }"));
    assert!(e.contains("`tls.cert_file` and `tls.key_file` go together"), "{e}");
    let cc = cfg("tls = {}").client_config("k").unwrap();
    assert_eq!(cc.get("security.protocol"), Some("ssl"));
}

/// Before anything is known of the topic (here: no broker answers), the
/// position names the fixed topic alone, so a read-back from it reads the
/// whole topic; a templated topic has no position until a delivery.
#[test]
fn the_position_names_the_fixed_topic_from_the_start() {
    let e = cfg("").build("k").unwrap();
    assert_eq!(e.position().as_deref(), Some("kafka-v1;events"));
    let e = parse("brokers = \"127.0.0.1:1\"\ntopic = \"ev.{namespace}\"")
        .unwrap()
        .build("k")
        .unwrap();
    assert_eq!(e.position(), None);
}

#[test]
fn with_create_topics_the_broker_does_not_create_topics_on_its_own() {
    let auto = |c: &KafkaConfig| {
        c.client_config("k")
            .unwrap()
            .get("allow.auto.create.topics")
            .map(str::to_string)
    };
    // The exporter creates them, with its partitions and replication.
    assert_eq!(
        auto(&cfg("create_topics = { partitions = 3, replication = 1 }")).as_deref(),
        Some("false")
    );
    // Without it, librdkafka's default (the broker's own setting decides).
    assert_eq!(auto(&cfg("")), None);
    // `properties` still has the last word.
    let c =
        cfg("create_topics = { partitions = 3, replication = 1 }\n[properties]\n\"allow.auto.create.topics\" = true");
    assert_eq!(auto(&c).as_deref(), Some("true"));
}

#[test]
fn tls_without_a_ca_file_uses_the_system_certificates() {
    let c = cfg("tls = {}");
    // The built-in OpenSSL's own CA path is not the system's: librdkafka probes.
    assert_eq!(c.client_config("k").unwrap().get("ssl.ca.location"), Some("probe"));
    // The SSL context is made with the producer: it finds this machine's CA bundle.
    if let Err(e) = c.build("kafka-out") {
        panic!("a TLS producer with the system's CAs: {e}");
    }
}

#[test]
fn reserved_and_invalid_properties() {
    let e = build_err(&cfg("[properties]\n\"linger.ms\" = 100"));
    assert!(
        e.contains("property `linger.ms` is set by the exporter's `linger` key"),
        "{e}"
    );
    let e = build_err(&cfg("[properties]\n\"sasl.password\" = \"inline\""));
    assert!(e.contains("sasl.password_file / sasl.password_env"), "{e}");
    // librdkafka itself refuses an unknown property when the producer is created.
    let e = build_err(&cfg("[properties]\n\"no.such.property\" = 1"));
    assert!(
        e.contains("cannot create the Kafka producer") && e.contains("no.such.property"),
        "{e}"
    );
    let e = build_err(&cfg("[properties]\n\"queue.buffering.max.messages\" = \"lots\""));
    assert!(e.contains("queue.buffering.max.messages"), "{e}");
}

#[test]
fn other_checks() {
    let e = build_err(&cfg("message_timeout = \"0s\""));
    assert!(e.contains("`message_timeout` must be greater than zero"), "{e}");
    let e = build_err(&cfg("batch_size = 0"));
    assert!(e.contains("`batch_size`"), "{e}");
    let e = build_err(&cfg("create_topics = { partitions = 0 }"));
    assert!(e.contains("`create_topics.partitions` must be at least 1"), "{e}");
    let e = build_err(&cfg("client_id = \"\""));
    assert!(e.contains("`client_id`"), "{e}");
    let c = KafkaConfig::new("a:1, b:2", "events").unwrap();
    assert_eq!(c.brokers, vec!["a:1", "b:2"]);
    assert!(KafkaConfig::new("a:1", "bad topic").is_err());
}

#[test]
fn template_expansion_and_sanitizing() {
    let f = fields();
    let t = TopicTemplate::parse("k8s-events.{namespace}").unwrap();
    assert_eq!(t.expand(&f), "k8s-events.kube-system");
    assert!(matches!(t.expand(&f), Cow::Owned(_)));
    let fixed = TopicTemplate::parse("k8s-events").unwrap();
    assert!(matches!(fixed.expand(&f), Cow::Borrowed("k8s-events")));

    let all = TopicTemplate::parse("{cluster}.{namespace}.{type}.{event_type}.{reason}.{kind}.{api}.{name}").unwrap();
    assert_eq!(
        all.expand(&f),
        "prod-eu.kube-system.Warning.Warning.BackOff.Pod.events.k8s.io_v1.web-1.17a2b"
    );

    // Illegal characters become `_`, an empty value `_`.
    let mut g = f.clone();
    g.namespace = String::new();
    g.reason = "Failed: ünïcode/slash space".into();
    let t = TopicTemplate::parse("ev.{namespace}.{reason}").unwrap();
    let got = t.expand(&g);
    assert!(got.chars().all(legal_topic_char), "{got}");
    assert_eq!(got, "ev._.Failed___n_code_slash_space");

    // Cut to 249 characters.
    g.name = "n".repeat(400);
    let t = TopicTemplate::parse("events-{name}").unwrap();
    let got = t.expand(&g);
    assert_eq!(got.len(), MAX_TOPIC_LEN);
    assert!(got.starts_with("events-nnn"));

    // `.` and `..` alone are not legal names.
    g.reason = "..".into();
    assert_eq!(TopicTemplate::parse("{reason}").unwrap().expand(&g), "__");
    assert_eq!(sanitize_topic("."), "_");
    assert_eq!(sanitize_topic(""), "_");
    assert_eq!(sanitize_topic("a:b"), "a_b");
    assert_eq!(t.to_string(), "events-{name}");
    assert_eq!(t.as_str(), "events-{name}");
}

#[test]
fn keys() {
    let mut f = fields();
    assert_eq!(message_key(KeyField::ObjectUid, &f), Some("obj-uid"));
    assert_eq!(message_key(KeyField::Namespace, &f), Some("kube-system"));
    assert_eq!(message_key(KeyField::None, &f), None);
    // No object uid: the event's own uid keeps its repeats together.
    f.object_uid.clear();
    assert_eq!(message_key(KeyField::ObjectUid, &f), Some("ev-uid"));
    f.uid.clear();
    assert_eq!(message_key(KeyField::ObjectUid, &f), None);
    // Cluster-scoped: no namespace, no key.
    f.namespace.clear();
    assert_eq!(message_key(KeyField::Namespace, &f), None);
}

#[test]
fn headers() {
    let f = fields();
    let pairs: Vec<(&str, String)> = header_pairs(&f).iter().map(|(k, v)| (*k, v.to_string())).collect();
    assert_eq!(
        pairs,
        vec![
            ("cluster", "prod-eu".to_string()),
            ("type", "Warning".to_string()),
            ("reason", "BackOff".to_string()),
            ("api", "events.k8s.io/v1".to_string()),
            ("schema_version", "1".to_string()),
        ]
    );
    let h = message_headers(&f);
    assert_eq!(h.count(), 5);
    let got: Vec<(String, Vec<u8>)> = h
        .iter()
        .map(|h| (h.key.to_string(), h.value.unwrap_or_default().to_vec()))
        .collect();
    assert_eq!(got[0], ("cluster".to_string(), b"prod-eu".to_vec()));
    assert_eq!(got[4], ("schema_version".to_string(), b"1".to_vec()));
    // Empty values are still sent, empty.
    let h = message_headers(&RecordFields::default());
    assert_eq!(h.count(), 5);
    assert_eq!(h.get(1).value, Some(&b""[..]));
}

#[test]
fn error_sorting() {
    use RDKafkaErrorCode as C;
    let e = |c| KafkaError::MessageProduction(c);
    assert_eq!(
        classify(&e(C::MessageSizeTooLarge), true),
        (ErrorKind::Permanent, "too_large")
    );
    assert_eq!(
        classify(&e(C::InvalidTopic), true),
        (ErrorKind::Permanent, "invalid_topic")
    );
    assert_eq!(
        classify(&e(C::MessageTimedOut), false),
        (ErrorKind::Transient, "timeout")
    );
    assert_eq!(classify(&e(C::QueueFull), false), (ErrorKind::Transient, "queue_full"));
    assert_eq!(
        classify(&e(C::AllBrokersDown), false),
        (ErrorKind::Transient, "unavailable")
    );
    assert_eq!(classify(&e(C::Fatal), false), (ErrorKind::Transient, "fatal"));
    assert_eq!(
        classify(&e(C::TopicAuthorizationFailed), false),
        (ErrorKind::Transient, "auth")
    );
    assert_eq!(
        classify(&e(C::NotLeaderForPartition), false),
        (ErrorKind::Transient, "kafka")
    );
    // A missing topic waits (fixed topic, or create_topics), else is refused.
    assert_eq!(
        classify(&e(C::UnknownTopic), true),
        (ErrorKind::Transient, "unknown_topic")
    );
    assert_eq!(
        classify(&e(C::UnknownTopicOrPartition), false),
        (ErrorKind::Permanent, "unknown_topic")
    );
    assert_eq!(classify(&KafkaError::Canceled, false), (ErrorKind::Transient, "kafka"));
}

#[test]
fn summarizing_outcomes() {
    let topics: Vec<Cow<'_, str>> = vec!["a".into(), "b".into(), "c".into(), "d".into()];
    let ok = Outcome::Delivered;
    let fail = |kind, reason: &'static str| Outcome::Failed {
        kind,
        reason,
        message: format!("{reason}!"),
    };
    assert!(summarize("k", &topics, &[ok.clone(), ok.clone(), ok.clone(), ok.clone()]).is_ok());

    let e = summarize(
        "k",
        &topics,
        &[
            ok.clone(),
            fail(ErrorKind::Permanent, "too_large"),
            fail(ErrorKind::Transient, "timeout"),
            ok.clone(),
        ],
    )
    .unwrap_err();
    assert_eq!(e.kind, ErrorKind::Transient);
    assert_eq!(e.reason, "timeout");
    assert_eq!(e.delivered, vec![0, 3]);
    assert_eq!(e.rejected, vec![(1, "too_large!".to_string())]);
    assert!(
        e.message
            .contains("2 of 4 records not delivered (1 to retry, 1 refused)"),
        "{}",
        e.message
    );
    assert!(e.message.contains("timeout! (topic `c`)"), "{}", e.message);

    let e = summarize(
        "k",
        &topics,
        &[ok.clone(), fail(ErrorKind::Permanent, "invalid_topic"), ok.clone(), ok],
    )
    .unwrap_err();
    assert_eq!(e.kind, ErrorKind::Permanent);
    assert_eq!(e.reason, "invalid_topic");
    assert_eq!(e.delivered, vec![0, 2, 3]);
    assert_eq!(e.rejected.len(), 1);
}

fn record(i: usize) -> Arc<Record> {
    let mut f = fields();
    f.uid = format!("uid-{i}");
    Arc::new(Record::new(f, format!("{{\"i\":{i}}}")))
}

/// No broker listens: building does not wait, the batch fails as transient
/// with nothing delivered, and health says why.
#[tokio::test(flavor = "multi_thread")]
async fn unreachable_broker_is_transient_and_not_ready() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut c = KafkaConfig::new(format!("127.0.0.1:{port}"), "events").unwrap();
    c.message_timeout = Duration::from_millis(1500);
    let started = std::time::Instant::now();
    let e = c.build("down").unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "build must not wait for Kafka"
    );
    assert_eq!(e.name(), "down");
    let err = e.export(&[record(0), record(1)]).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Transient);
    assert!(err.delivered.is_empty() && err.rejected.is_empty(), "{err:?}");
    assert!(err.message.contains("2 of 2 records not delivered"), "{}", err.message);
    match e.health() {
        Health::NotReady(m) => assert!(!m.is_empty()),
        Health::Ready => panic!("should not be ready"),
    }
    // The background check names the brokers.
    let named = (0..100).any(|_| {
        std::thread::sleep(Duration::from_millis(100));
        matches!(e.health(), Health::NotReady(m) if m.contains(&format!("127.0.0.1:{port}")))
    });
    assert!(named, "{:?}", e.health());
    assert!(e.export(&[]).await.is_ok());
}
