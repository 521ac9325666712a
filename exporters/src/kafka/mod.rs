//! The Kafka exporter: each record as one Kafka message, produced with
//! librdkafka (the `rdkafka` crate, with the librdkafka it bundles).
//!
//! # Messages
//!
//! - **value**: the record's JSON ([`Record::json`](crate::Record)), unchanged;
//! - **topic**: `topic`, fixed or a template over event fields such as
//!   `k8s-events.{namespace}` (see [`TopicTemplate`]); an expanded value is
//!   made legal for a topic name (other characters become `_`, an empty value
//!   is `_`, the name is cut to 249 characters);
//! - **key**: `key = "object_uid"` (default) keys by the uid of the object the
//!   event is about (the event's own uid when it has none), so that one
//!   object's events land in one partition, in order; `"namespace"` keys by
//!   namespace (cluster-scoped events get no key); `"none"` leaves messages
//!   unkeyed (spread over partitions);
//! - **headers**, on every message: `cluster`, `type`, `reason`, `api` and
//!   `schema_version` (empty values are sent empty).
//!
//! # Delivery
//!
//! `export` enqueues every record of the batch and awaits every delivery
//! report. A record counts as delivered only when its report says the
//! broker wrote it (with the default `acks = "all"`: every in-sync replica).
//! If some records fail, the error lists the delivered ones in `delivered`,
//! so the pipeline resends only the rest; with the idempotent producer
//! (`idempotence = true`, the default) librdkafka's own retries do not
//! duplicate either. Records the broker refuses for good (too large, an
//! invalid topic, a missing topic of a templated `topic` without
//! `create_topics`) are listed in `rejected` and go to the exporter's
//! `dead_letter` exporter. Everything else (brokers down, timeouts, a full
//! local queue, missing authorization, the fixed topic missing) is
//! transient: the pipeline retries with backoff, and the records wait.
//!
//! The producer's local queue holds at most the batch being exported (one
//! batch at a time, at most `batch_max_events` records), within librdkafka's
//! `queue.buffering.max.messages` / `queue.buffering.max.kbytes` (settable
//! in `properties`). When Kafka is slow or down, the overflow policy is the
//! pipeline's: its bounded queue (`queue_max_events`) fills up and holds the
//! watch back, and the checkpoint keeps every event that is not delivered
//! yet, so nothing is dropped.
//!
//! # Health and startup
//!
//! Building the exporter never waits for Kafka (so an unreachable cluster
//! does not stop the collector from starting). A background thread checks
//! the brokers right away (metadata request): when they are unreachable, it
//! logs an error and [`Exporter::health`] is `NotReady` until they answer
//! (checked every 3 s while not ready, and at once when librdkafka reports
//! all brokers down); when the fixed topic does not exist (and
//! `create_topics` is off), it logs an error saying so and stays `NotReady`;
//! records for it wait. `health` is also `NotReady` after a batch failed
//! transiently, until a batch is delivered.
//!
//! librdkafka's own log lines (connection failures and the like) are logged
//! under the `librdkafka` target, warnings and errors by default; set
//! `properties.debug` (e.g. `"broker,msg"`) and `RUST_LOG=librdkafka=debug`
//! for its debug output.
//!
//! With `create_topics`, topics are created (admin API) before the first
//! message to them, and again if they disappear.
//!
//! If librdkafka raises a fatal error, or a batch gets no record through
//! within `message_timeout` (an outage, or a producer stuck on state the
//! broker lost: a broker that comes back empty refuses the old producer id
//! for good), the producer is replaced by a new one and the batch's
//! undelivered records are retried with it.
//!
//! Delivery is at-least-once, with duplicates only in one narrow case: a
//! message the broker wrote but whose acknowledgement never arrived (the
//! connection died, or `message_timeout` ran out, while the request was in
//! flight) is reported as failed and sent again by the pipeline. Consumers
//! that must not see an event twice can drop repeats by `uid` +
//! `resource_version` (unique per exported record).
//!
//! Across a hard kill (SIGKILL, a leader replaced), the records produced
//! after the last checkpoint write are read back from the topic at the next
//! start and not produced again: the exporter's position is the next offset
//! of every partition it knows (see `recover.rs` for what is and is not
//! covered).

mod recover;
mod template;

#[cfg(test)]
mod broker_tests;
#[cfg(test)]
mod tests;

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientContext, Statistics};
use serde::{Deserialize, Deserializer};

use crate::{Batch, ConfigError, ErrorKind, ExportError, Exporter, Health, RecordFields, units};

pub use template::{MAX_TOPIC_LEN, PLACEHOLDERS, TopicTemplate, legal_topic_char, sanitize_topic};

/// What a message is keyed by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyField {
    /// The uid of the object the event is about (else the event's uid): one
    /// object's events stay in one partition, in order.
    #[default]
    ObjectUid,
    /// The event's namespace; cluster-scoped events get no key.
    Namespace,
    /// No key: messages are spread over partitions.
    None,
}

/// The codec messages are compressed with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    None,
    Gzip,
    #[default]
    Lz4,
    Zstd,
}

impl Compression {
    fn as_str(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Lz4 => "lz4",
            Compression::Zstd => "zstd",
        }
    }
}

/// How many replicas must have a message before the broker confirms it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Acks {
    /// Every in-sync replica (`"all"`, or -1).
    #[default]
    All,
    /// The partition leader only (1).
    Leader,
    /// No confirmation at all (0): a delivery report then says nothing.
    None,
}

impl Acks {
    fn as_str(self) -> &'static str {
        match self {
            Acks::All => "all",
            Acks::Leader => "1",
            Acks::None => "0",
        }
    }
}

impl<'de> Deserialize<'de> for Acks {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Repr {
            Int(i64),
            Str(String),
        }
        let bad =
            |v: &dyn fmt::Display| serde::de::Error::custom(format!("invalid acks `{v}`; expected \"all\", 1 or 0"));
        match Repr::deserialize(d)? {
            Repr::Int(-1) => Ok(Acks::All),
            Repr::Int(1) => Ok(Acks::Leader),
            Repr::Int(0) => Ok(Acks::None),
            Repr::Int(n) => Err(bad(&n)),
            Repr::Str(s) => match s.trim() {
                "all" | "-1" => Ok(Acks::All),
                "1" => Ok(Acks::Leader),
                "0" => Ok(Acks::None),
                _ => Err(bad(&s)),
            },
        }
    }
}

/// TLS to the brokers. Every key is optional; `tls = {}` turns TLS on with
/// the system's CA certificates.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM file of the CA certificate(s) that signed the brokers' certificates.
    /// Default: the system's.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// PEM file of the client certificate, for mutual TLS (with `key_file`).
    #[serde(default)]
    pub cert_file: Option<PathBuf>,
    /// PEM file of the client certificate's private key (with `cert_file`).
    #[serde(default)]
    pub key_file: Option<PathBuf>,
}

/// A SASL mechanism.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum SaslMechanism {
    #[serde(rename = "PLAIN", alias = "plain")]
    Plain,
    #[serde(rename = "SCRAM-SHA-256", alias = "scram-sha-256")]
    ScramSha256,
    #[serde(rename = "SCRAM-SHA-512", alias = "scram-sha-512")]
    ScramSha512,
}

impl SaslMechanism {
    fn as_str(self) -> &'static str {
        match self {
            SaslMechanism::Plain => "PLAIN",
            SaslMechanism::ScramSha256 => "SCRAM-SHA-256",
            SaslMechanism::ScramSha512 => "SCRAM-SHA-512",
        }
    }
}

/// SASL authentication. The password is never written in the config: it is
/// read when the exporter starts, from `password_file` or `password_env`
/// (exactly one of them).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SaslConfig {
    /// `"PLAIN"`, `"SCRAM-SHA-256"` or `"SCRAM-SHA-512"` (required).
    pub mechanism: SaslMechanism,
    /// The user name (required).
    pub username: String,
    /// A file holding the password (e.g. a mounted Secret); one trailing
    /// newline is ignored.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// An environment variable holding the password.
    #[serde(default)]
    pub password_env: Option<String>,
}

fn default_partitions() -> i32 {
    3
}

fn default_replication() -> i32 {
    1
}

/// Creates missing topics (for development setups).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateTopics {
    /// Partitions of a created topic. Default 3.
    #[serde(default = "default_partitions")]
    pub partitions: i32,
    /// Replication factor of a created topic. Default 1.
    #[serde(default = "default_replication")]
    pub replication: i32,
}

impl Default for CreateTopics {
    fn default() -> Self {
        Self {
            partitions: default_partitions(),
            replication: default_replication(),
        }
    }
}

/// A `properties` value: TOML strings, integers, floats and booleans are all
/// passed to librdkafka as text.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum PropertyValue {
    Str(String),
    Int(i64),
    Float(f64),
    Bool(bool),
}

impl fmt::Display for PropertyValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PropertyValue::Str(s) => f.write_str(s),
            PropertyValue::Int(n) => write!(f, "{n}"),
            PropertyValue::Float(x) => write!(f, "{x}"),
            PropertyValue::Bool(b) => write!(f, "{b}"),
        }
    }
}

/// `brokers` as a list of `host:port` or one comma-separated string.
fn de_brokers<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Repr {
        One(String),
        List(Vec<String>),
    }
    let list = match Repr::deserialize(d)? {
        Repr::One(s) => s.split(',').map(|b| b.trim().to_string()).collect::<Vec<_>>(),
        Repr::List(l) => l.into_iter().map(|b| b.trim().to_string()).collect(),
    };
    if list.is_empty() || list.iter().any(String::is_empty) {
        return Err(serde::de::Error::custom(
            "`brokers` needs at least one `host:port`, without empty entries",
        ));
    }
    Ok(list)
}

fn default_client_id() -> String {
    "event-collector".to_string()
}

fn default_linger() -> Duration {
    Duration::from_millis(5)
}

fn default_message_timeout() -> Duration {
    Duration::from_secs(30)
}

fn default_true() -> bool {
    true
}

/// The `kafka` exporter's keys.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    /// Bootstrap brokers (required): a list (`["kafka-0:9092", "kafka-1:9092"]`)
    /// or one comma-separated string (`"kafka-0:9092,kafka-1:9092"`).
    #[serde(deserialize_with = "de_brokers")]
    pub brokers: Vec<String>,

    /// The client id the brokers see (logs, quotas). Default `"event-collector"`.
    #[serde(default = "default_client_id")]
    pub client_id: String,

    /// The topic (required): a name, or a template over event fields, e.g.
    /// `"k8s-events.{namespace}"`. Placeholders: `{cluster}`, `{namespace}`,
    /// `{type}` (or `{event_type}`), `{reason}`, `{kind}`, `{api}`, `{name}`.
    /// Expanded values are made legal topic names (see the module doc).
    pub topic: TopicTemplate,

    /// What messages are keyed by: `"object_uid"` (default: one object's
    /// events stay ordered in one partition), `"namespace"` or `"none"`.
    #[serde(default)]
    pub key: KeyField,

    /// `"none"`, `"gzip"`, `"lz4"` (default) or `"zstd"`.
    #[serde(default)]
    pub compression: Compression,

    /// How long the producer waits to fill a request (`linger.ms`). Default `"5ms"`.
    #[serde(default = "default_linger", deserialize_with = "units::de_duration")]
    pub linger: Duration,

    /// Largest request batch per partition (`batch.size`), e.g. `"1MiB"`.
    /// Default: librdkafka's (1,000,000 bytes).
    #[serde(default, deserialize_with = "units::de_opt_size")]
    pub batch_size: Option<u64>,

    /// Broker acknowledgement: `"all"` (default), 1 (leader only) or 0 (none).
    #[serde(default)]
    pub acks: Acks,

    /// The idempotent producer (`enable.idempotence`): librdkafka's retries
    /// never duplicate or reorder messages. Default `true`; needs `acks = "all"`.
    #[serde(default = "default_true")]
    pub idempotence: bool,

    /// How long a message may wait for delivery, retries included
    /// (`message.timeout.ms`), before it counts as failed and the pipeline
    /// retries it. Default `"30s"`.
    #[serde(default = "default_message_timeout", deserialize_with = "units::de_duration")]
    pub message_timeout: Duration,

    /// TLS: `{ ca_file, cert_file, key_file }`, every key optional. Default: plain TCP.
    #[serde(default)]
    pub tls: Option<TlsConfig>,

    /// SASL: `{ mechanism, username, password_file | password_env }`. Default: none.
    #[serde(default)]
    pub sasl: Option<SaslConfig>,

    /// Create missing topics with the admin API: `{ partitions = 3, replication = 1 }`.
    /// Meant for development setups. Default: off.
    #[serde(default)]
    pub create_topics: Option<CreateTopics>,

    /// Any other librdkafka setting, passed through as is
    /// (`[exporters.properties]`). Settings that a key above controls are refused.
    #[serde(default)]
    pub properties: BTreeMap<String, PropertyValue>,
}

/// librdkafka settings that keys of [`KafkaConfig`] control, with that key.
const RESERVED: &[(&str, &str)] = &[
    ("bootstrap.servers", "brokers"),
    ("metadata.broker.list", "brokers"),
    ("client.id", "client_id"),
    ("compression.codec", "compression"),
    ("compression.type", "compression"),
    ("linger.ms", "linger"),
    ("queue.buffering.max.ms", "linger"),
    ("batch.size", "batch_size"),
    ("acks", "acks"),
    ("request.required.acks", "acks"),
    ("enable.idempotence", "idempotence"),
    ("message.timeout.ms", "message_timeout"),
    ("delivery.timeout.ms", "message_timeout"),
    ("security.protocol", "tls / sasl"),
    ("ssl.ca.location", "tls.ca_file"),
    ("ssl.certificate.location", "tls.cert_file"),
    ("ssl.key.location", "tls.key_file"),
    ("sasl.mechanism", "sasl.mechanism"),
    ("sasl.mechanisms", "sasl.mechanism"),
    ("sasl.username", "sasl.username"),
    ("sasl.password", "sasl.password_file / sasl.password_env"),
];

impl KafkaConfig {
    /// A config for `brokers` and a fixed `topic` with every other key at its default.
    pub fn new(brokers: impl Into<String>, topic: &str) -> Result<Self, String> {
        Ok(Self {
            brokers: brokers.into().split(',').map(|s| s.trim().to_string()).collect(),
            client_id: default_client_id(),
            topic: TopicTemplate::parse(topic)?,
            key: KeyField::default(),
            compression: Compression::default(),
            linger: default_linger(),
            batch_size: None,
            acks: Acks::default(),
            idempotence: true,
            message_timeout: default_message_timeout(),
            tls: None,
            sasl: None,
            create_topics: None,
            properties: BTreeMap::new(),
        })
    }

    /// Checks the config, reads the SASL password and builds the librdkafka
    /// settings (without creating a client).
    pub fn client_config(&self, name: &str) -> Result<ClientConfig, ConfigError> {
        let err = |message: String| ConfigError {
            exporter: name.to_string(),
            message,
        };
        if self.brokers.is_empty() || self.brokers.iter().any(|b| b.trim().is_empty()) {
            return Err(err(
                "`brokers` needs at least one `host:port`, without empty entries".into()
            ));
        }
        if self.client_id.trim().is_empty() {
            return Err(err("`client_id` must not be empty".into()));
        }
        if self.idempotence && self.acks != Acks::All {
            return Err(err(format!(
                "`idempotence = true` needs `acks = \"all\"` (not {}); set `idempotence = false` to use other acks",
                self.acks.as_str()
            )));
        }
        if self.linger > Duration::from_secs(900) {
            return Err(err("`linger` must be at most 15m".into()));
        }
        if self.message_timeout.is_zero() {
            return Err(err("`message_timeout` must be greater than zero".into()));
        }
        if self.batch_size == Some(0) {
            return Err(err("`batch_size` must be greater than zero".into()));
        }
        if let Some(ct) = &self.create_topics {
            if ct.partitions < 1 {
                return Err(err("`create_topics.partitions` must be at least 1".into()));
            }
            if ct.replication < 1 {
                return Err(err("`create_topics.replication` must be at least 1".into()));
            }
        }
        for key in self.properties.keys() {
            if let Some((_, by)) = RESERVED.iter().find(|(p, _)| p == key) {
                return Err(err(format!(
                    "property `{key}` is set by the exporter's `{by}` key; use that key instead of `properties`"
                )));
            }
        }

        let mut cc = ClientConfig::new();
        cc.set("bootstrap.servers", self.brokers.join(","))
            .set("client.id", &self.client_id)
            .set("compression.codec", self.compression.as_str())
            .set("linger.ms", self.linger.as_millis().to_string())
            .set("acks", self.acks.as_str())
            .set("enable.idempotence", self.idempotence.to_string())
            .set("message.timeout.ms", duration_ms(self.message_timeout).to_string());
        if let Some(b) = self.batch_size {
            cc.set("batch.size", b.to_string());
        }
        // How long a message to a topic the cluster does not know waits for it
        // to appear before failing as "unknown topic" (librdkafka: 30 s). Kept
        // under `message_timeout` so that such a message fails for that reason
        // and not as a timeout. Settable in `properties`.
        cc.set(
            "topic.metadata.propagation.max.ms",
            duration_ms(self.message_timeout / 2).min(30_000).to_string(),
        );
        let protocol = match (&self.tls, &self.sasl) {
            (None, None) => "plaintext",
            (Some(_), None) => "ssl",
            (None, Some(_)) => "sasl_plaintext",
            (Some(_), Some(_)) => "sasl_ssl",
        };
        cc.set("security.protocol", protocol);
        if let Some(tls) = &self.tls {
            if tls.cert_file.is_some() != tls.key_file.is_some() {
                return Err(err(
                    "`tls.cert_file` and `tls.key_file` go together: set both or neither".into(),
                ));
            }
            for (key, path, prop) in [
                ("tls.ca_file", &tls.ca_file, "ssl.ca.location"),
                ("tls.cert_file", &tls.cert_file, "ssl.certificate.location"),
                ("tls.key_file", &tls.key_file, "ssl.key.location"),
            ] {
                if let Some(path) = path {
                    std::fs::File::open(path)
                        .map_err(|e| err(format!("cannot read `{key}` {}: {e}", path.display())))?;
                    cc.set(prop, path.display().to_string());
                }
            }
            // OpenSSL is built in (rdkafka's `ssl-vendored`), so its compiled-in
            // CA path is not the system's: librdkafka looks in the usual places
            // (/etc/ssl/certs/ca-certificates.crt, ...) instead.
            if tls.ca_file.is_none() {
                cc.set("ssl.ca.location", "probe");
            }
        }
        if let Some(sasl) = &self.sasl {
            if sasl.username.is_empty() {
                return Err(err("`sasl.username` must not be empty".into()));
            }
            let password = read_password(sasl).map_err(err)?;
            cc.set("sasl.mechanism", sasl.mechanism.as_str())
                .set("sasl.username", &sasl.username)
                .set("sasl.password", password);
        }
        if self.create_topics.is_some() {
            // The exporter creates its topics itself, with `create_topics`'
            // partitions and replication. librdkafka's producer would otherwise
            // have the broker create a missing topic on its first metadata
            // request, with the broker's defaults (Kafka's `num.partitions`: 1).
            // Settable in `properties`.
            cc.set("allow.auto.create.topics", "false");
        }
        for (k, v) in &self.properties {
            cc.set(k, v.to_string());
        }
        // librdkafka's debug contexts (`properties.debug`) log at debug level.
        let debug = self.properties.contains_key("debug");
        cc.set_log_level(
            if debug || tracing::enabled!(target: "librdkafka", tracing::Level::DEBUG) {
                RDKafkaLogLevel::Debug
            } else {
                RDKafkaLogLevel::Warning
            },
        );
        Ok(cc)
    }

    /// Checks the settings and reads the secrets, without contacting Kafka or starting anything.
    pub fn validate(&self, name: &str) -> Result<(), ConfigError> {
        let cc = self.client_config(name)?;
        // librdkafka checks every property name and value here, without creating a client.
        cc.create_native_config().map(|_| ()).map_err(|e| ConfigError {
            exporter: name.to_string(),
            message: format!("invalid librdkafka configuration: {}", kafka_message(&e)),
        })
    }

    /// Checks the config and starts an exporter named `name`.
    ///
    /// This never waits for Kafka: the producer connects in the background,
    /// and a background thread checks the brokers (and the fixed topic) right
    /// away, logging what is wrong; see the module doc.
    pub fn build(&self, name: &str) -> Result<KafkaExporter, ConfigError> {
        let cc = self.client_config(name)?;
        let health = Arc::new(HealthState::new(name));
        let producer = new_producer(&cc, &health).map_err(|e| ConfigError {
            exporter: name.to_string(),
            message: format!("cannot create the Kafka producer: {}", kafka_message(&e)),
        })?;
        let admin = match self.create_topics {
            Some(_) => {
                let mut admin_cc = cc.clone();
                // The admin client is a producer handle to librdkafka: keep it a plain one.
                admin_cc.set("enable.idempotence", "false");
                let admin: AdminClient<Ctx> =
                    admin_cc
                        .create_with_context(Ctx { health: health.clone() })
                        .map_err(|e| ConfigError {
                            exporter: name.to_string(),
                            message: format!("cannot create the Kafka admin client: {}", kafka_message(&e)),
                        })?;
                Some(admin)
            }
            None => None,
        };
        let shared = Arc::new(Shared {
            name: name.to_string(),
            brokers: self.brokers.join(","),
            topic: self.topic.clone(),
            key: self.key,
            client_config: cc,
            producer: RwLock::new(Arc::new(producer)),
            admin,
            create_topics: self.create_topics,
            known_topics: Mutex::new(HashSet::new()),
            health,
            message_timeout: self.message_timeout,
            // The fixed topic is named from the start: see `recover.rs`, "The position".
            offsets: Mutex::new(self.topic.fixed().map(recover::Offsets::naming).unwrap_or_default()),
            seeded: AtomicBool::new(false),
        });
        let (stop_tx, stop_rx) = mpsc::channel::<()>();
        let probe = Arc::clone(&shared);
        std::thread::Builder::new()
            .name(thread_name("kafka-chk-", name))
            .spawn(move || probe.check_loop(&stop_rx))
            .map_err(|e| ConfigError {
                exporter: name.to_string(),
                message: format!("cannot start the broker check thread: {e}"),
            })?;
        tracing::info!(
            exporter = %name, brokers = %shared.brokers, topic = %self.topic, key = ?self.key,
            compression = self.compression.as_str(), acks = self.acks.as_str(), idempotence = self.idempotence,
            "kafka exporter started"
        );
        Ok(KafkaExporter { shared, _stop: stop_tx })
    }
}

fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

/// A thread name within Linux's 15 bytes.
fn thread_name(prefix: &str, name: &str) -> String {
    let mut s = format!("{prefix}{name}");
    let mut end = s.len().min(15);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.truncate(end);
    s
}

/// Reads the SASL password from its file or environment variable.
fn read_password(sasl: &SaslConfig) -> Result<String, String> {
    match (&sasl.password_file, &sasl.password_env) {
        (Some(_), Some(_)) => Err("set only one of `sasl.password_file` and `sasl.password_env`".into()),
        (None, None) => Err(
            "`sasl` needs `password_file` (a file holding the password) or `password_env` (an environment variable)"
                .into(),
        ),
        (Some(path), None) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read `sasl.password_file` {}: {e}", path.display()))?;
            let pw = text.strip_suffix('\n').unwrap_or(&text);
            let pw = pw.strip_suffix('\r').unwrap_or(pw);
            if pw.is_empty() {
                return Err(format!("`sasl.password_file` {} is empty", path.display()));
            }
            Ok(pw.to_string())
        }
        (None, Some(var)) => match std::env::var(var) {
            Ok(pw) if !pw.is_empty() => Ok(pw),
            Ok(_) => Err(format!("environment variable `{var}` (`sasl.password_env`) is empty")),
            Err(std::env::VarError::NotPresent) => {
                Err(format!("environment variable `{var}` (`sasl.password_env`) is not set"))
            }
            Err(std::env::VarError::NotUnicode(_)) => Err(format!(
                "environment variable `{var}` (`sasl.password_env`) is not valid UTF-8"
            )),
        },
    }
}

/// A librdkafka error in a few words, without the crate's `KafkaError (...)` wrapping.
fn kafka_message(e: &KafkaError) -> String {
    match e {
        KafkaError::ClientConfig(_, desc, key, value) => {
            if key.is_empty() {
                desc.clone()
            } else {
                format!("{desc} (setting `{key}` = `{value}`)")
            }
        }
        KafkaError::ClientCreation(s) => s.clone(),
        other => match other.rdkafka_error_code() {
            Some(code) => code.to_string(),
            None => other.to_string(),
        },
    }
}

type Prod = FutureProducer<Ctx>;

fn new_producer(cc: &ClientConfig, health: &Arc<HealthState>) -> Result<Prod, KafkaError> {
    cc.create_with_context(Ctx { health: health.clone() })
}

/// librdkafka's callbacks: logs go to `tracing`, "all brokers down" to health.
struct Ctx {
    health: Arc<HealthState>,
}

impl ClientContext for Ctx {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        let name = &self.health.name;
        match level {
            RDKafkaLogLevel::Emerg | RDKafkaLogLevel::Alert | RDKafkaLogLevel::Critical => {
                tracing::error!(target: "librdkafka", exporter = %name, facility = fac, "{message}");
            }
            RDKafkaLogLevel::Error | RDKafkaLogLevel::Warning => {
                tracing::warn!(target: "librdkafka", exporter = %name, facility = fac, "{message}");
            }
            RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
                tracing::info!(target: "librdkafka", exporter = %name, facility = fac, "{message}");
            }
            RDKafkaLogLevel::Debug => {
                tracing::debug!(target: "librdkafka", exporter = %name, facility = fac, "{message}");
            }
        }
    }

    fn stats(&self, _: Statistics) {}

    fn error(&self, error: KafkaError, reason: &str) {
        let code = error.rdkafka_error_code();
        if code == Some(RDKafkaErrorCode::AllBrokersDown) {
            // Also reported when brokers close idle connections: the check
            // thread asks the cluster before calling it down.
            tracing::debug!(exporter = %self.health.name, "librdkafka: {reason}");
            self.health.recheck.store(true, Ordering::Relaxed);
        } else if code == Some(RDKafkaErrorCode::Fatal) {
            tracing::error!(exporter = %self.health.name, "Kafka producer fatal error: {reason}");
        } else {
            // The same error is usually logged by librdkafka's log callback too.
            tracing::debug!(exporter = %self.health.name, error = %error, "librdkafka: {reason}");
        }
    }
}

/// Why an exporter is not ready; the first one set is reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Problem {
    /// The brokers do not answer (metadata check or librdkafka's report).
    BrokersDown,
    /// The fixed topic is missing (or cannot be described/created).
    Topic,
    /// The last batch failed transiently.
    Export,
}

/// The health of one exporter, shared with librdkafka's callbacks.
struct HealthState {
    name: String,
    problems: Mutex<BTreeMap<Problem, String>>,
    /// librdkafka said all brokers are down: check now.
    recheck: AtomicBool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl HealthState {
    fn new(name: &str) -> Self {
        Self {
            name: name.to_string(),
            problems: Mutex::new(BTreeMap::new()),
            recheck: AtomicBool::new(false),
        }
    }

    /// Sets or clears one problem, logging when readiness changes.
    fn set(&self, which: Problem, message: Option<String>) {
        let mut p = lock(&self.problems);
        let was_ready = p.is_empty();
        let changed = match message {
            Some(m) => p.insert(which, m.clone()).as_ref() != Some(&m),
            None => p.remove(&which).is_some(),
        };
        if !changed {
            return;
        }
        match (was_ready, p.values().next()) {
            (true, Some(m)) => {
                tracing::warn!(exporter = %self.name, "kafka exporter not ready: {m}");
            }
            (false, None) => tracing::info!(exporter = %self.name, "kafka exporter ready again"),
            _ => {}
        }
    }

    fn get(&self) -> Health {
        match lock(&self.problems).values().next() {
            None => Health::Ready,
            Some(m) => Health::NotReady(m.clone()),
        }
    }

    fn has(&self, which: Problem) -> bool {
        lock(&self.problems).contains_key(&which)
    }
}

struct Shared {
    name: String,
    brokers: String,
    topic: TopicTemplate,
    key: KeyField,
    client_config: ClientConfig,
    /// Replaced after a fatal error.
    producer: RwLock<Arc<Prod>>,
    admin: Option<AdminClient<Ctx>>,
    create_topics: Option<CreateTopics>,
    /// Topics known to exist (created or confirmed), with `create_topics`.
    known_topics: Mutex<HashSet<String>>,
    health: Arc<HealthState>,
    message_timeout: Duration,
    /// Per partition: the offset after the last record known delivered (the position).
    offsets: Mutex<recover::Offsets>,
    /// Every partition of the fixed topic has an offset in `offsets`.
    seeded: AtomicBool,
}

/// How long the startup read-back may take.
const READ_BACK_TIMEOUT: Duration = Duration::from_secs(60);

/// How often the background thread checks the brokers while not ready.
const CHECK_INTERVAL: Duration = Duration::from_secs(3);
/// How long one metadata request may take.
const METADATA_TIMEOUT: Duration = Duration::from_secs(5);
/// Most topics remembered as existing (a template over names could grow without end).
const MAX_KNOWN_TOPICS: usize = 10_000;

impl Shared {
    fn producer(&self) -> Arc<Prod> {
        self.producer.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The background check: right away, then every few seconds while not
    /// ready, until the exporter is dropped.
    fn check_loop(&self, stop: &mpsc::Receiver<()>) {
        self.check(true);
        let mut last = Instant::now();
        loop {
            match stop.recv_timeout(Duration::from_millis(250)) {
                Err(RecvTimeoutError::Timeout) => {}
                _ => return,
            }
            let asked = self.health.recheck.swap(false, Ordering::Relaxed);
            let unseeded = self.topic.fixed().is_some() && !self.seeded.load(Ordering::Relaxed);
            if asked || ((unseeded || !self.health.get().is_ready()) && last.elapsed() >= CHECK_INTERVAL) {
                self.check(false);
                last = Instant::now();
            }
        }
    }

    /// One metadata request: are the brokers there, does the fixed topic exist?
    fn check(&self, startup: bool) {
        let producer = self.producer();
        let fixed = self.topic.fixed();
        let md = match producer.client().fetch_metadata(fixed, METADATA_TIMEOUT) {
            Ok(md) => md,
            Err(e) => {
                let m = format!(
                    "cannot reach the Kafka brokers {} ({}); events wait until they answer",
                    self.brokers,
                    kafka_message(&e)
                );
                if startup || !self.health.has(Problem::BrokersDown) {
                    tracing::error!(exporter = %self.name, "{m}");
                }
                self.health.set(Problem::BrokersDown, Some(m));
                return;
            }
        };
        if startup || self.health.has(Problem::BrokersDown) {
            tracing::info!(exporter = %self.name, brokers = md.brokers().len(), "connected to the Kafka cluster");
        }
        self.health.set(Problem::BrokersDown, None);
        let Some(topic) = fixed else { return };
        let err = match md.topics().iter().find(|t| t.name() == topic) {
            None => Some(RDKafkaRespErr::RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART),
            Some(t) => t.error(),
        };
        let problem = match err {
            None => {
                self.remember_topic(topic);
                if let Some(t) = md.topics().iter().find(|t| t.name() == topic) {
                    let ids: Vec<i32> = t.partitions().iter().map(|p| p.id()).collect();
                    self.seed_offsets(&producer, topic, &ids);
                }
                None
            }
            Some(RDKafkaRespErr::RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART) => {
                if let (Some(admin), Some(ct)) = (&self.admin, &self.create_topics) {
                    match block_on(create_topic(admin, topic, ct, METADATA_TIMEOUT)) {
                        Ok(()) => {
                            tracing::info!(exporter = %self.name, topic, partitions = ct.partitions, "created the topic");
                            self.remember_topic(topic);
                            let ids: Vec<i32> = (0..ct.partitions).collect();
                            self.seed_offsets(&producer, topic, &ids);
                            None
                        }
                        Err(e) => Some(format!("topic `{topic}` does not exist and cannot be created: {e}")),
                    }
                } else {
                    Some(format!(
                        "topic `{topic}` does not exist on the Kafka cluster (and `create_topics` is off): \
                         create it, or set `create_topics`; events wait until it exists"
                    ))
                }
            }
            Some(e) => Some(format!("topic `{topic}` cannot be used: {}", RDKafkaErrorCode::from(e))),
        };
        match problem {
            Some(m) => {
                if startup || !self.health.has(Problem::Topic) {
                    tracing::error!(exporter = %self.name, "{m}");
                }
                self.health.set(Problem::Topic, Some(m));
            }
            None => {
                if self.health.has(Problem::Topic) {
                    tracing::info!(exporter = %self.name, topic, "the topic exists now");
                }
                self.health.set(Problem::Topic, None);
            }
        }
    }

    /// With `create_topics`: makes sure each topic exists. Returns the
    /// topics that could not be created, with why.
    async fn ensure_topics(&self, topics: &[Cow<'_, str>]) -> HashMap<String, String> {
        let (Some(admin), Some(ct)) = (&self.admin, &self.create_topics) else {
            return HashMap::new();
        };
        let missing: Vec<&str> = {
            let known = lock(&self.known_topics);
            let mut seen = HashSet::new();
            topics
                .iter()
                .map(|t| t.as_ref())
                .filter(|t| !known.contains(*t) && seen.insert(*t))
                .collect()
        };
        let mut failed = HashMap::new();
        if missing.is_empty() {
            return failed;
        }
        let new: Vec<NewTopic<'_>> = missing
            .iter()
            .map(|t| NewTopic::new(t, ct.partitions, TopicReplication::Fixed(ct.replication)))
            .collect();
        let opts = AdminOptions::new()
            .request_timeout(Some(self.message_timeout))
            .operation_timeout(Some(self.message_timeout));
        match admin.create_topics(&new, &opts).await {
            Ok(results) => {
                let mut known = lock(&self.known_topics);
                if known.len() + results.len() > MAX_KNOWN_TOPICS {
                    known.clear();
                }
                for r in results {
                    match r {
                        Ok(t) => {
                            tracing::info!(exporter = %self.name, topic = %t, partitions = ct.partitions, "created the topic");
                            known.insert(t);
                        }
                        Err((t, RDKafkaErrorCode::TopicAlreadyExists)) => {
                            known.insert(t);
                        }
                        Err((t, code)) => {
                            failed.insert(t, format!("cannot create topic: {code}"));
                        }
                    }
                }
            }
            Err(e) => {
                for t in missing {
                    failed.insert(t.to_string(), format!("cannot create topic: {}", kafka_message(&e)));
                }
            }
        }
        failed
    }

    /// Makes the position cover partitions of `topic` it has no offset for
    /// yet, with their high watermark now (every later record lies past it;
    /// a watermark that is too low only makes a read-back read more).
    /// Until every partition has one, the check runs again every few seconds.
    fn seed_offsets(&self, producer: &Prod, topic: &str, partitions: &[i32]) {
        let missing: Vec<i32> = {
            let o = lock(&self.offsets);
            partitions.iter().copied().filter(|p| !o.knows(topic, *p)).collect()
        };
        for p in missing {
            match producer.client().fetch_watermarks(topic, p, METADATA_TIMEOUT) {
                Ok((_, high)) => lock(&self.offsets).advance(topic, p, high),
                Err(e) => {
                    tracing::debug!(exporter = %self.name, topic, partition = p, error = %kafka_message(&e),
                        "cannot read a partition's end; will retry");
                    return;
                }
            }
        }
        self.seeded.store(true, Ordering::Relaxed);
    }

    fn remember_topic(&self, topic: &str) {
        if self.create_topics.is_some() {
            lock(&self.known_topics).insert(topic.to_string());
        }
    }

    fn forget_topic(&self, topic: &str) {
        lock(&self.known_topics).remove(topic);
    }

    /// Replaces the producer with a new one (the old one is dropped off the executor).
    fn replace_producer(&self, why: &str) {
        match new_producer(&self.client_config, &self.health) {
            Ok(p) => {
                let old = std::mem::replace(
                    &mut *self.producer.write().unwrap_or_else(|e| e.into_inner()),
                    Arc::new(p),
                );
                tracing::info!(exporter = %self.name, "replaced the Kafka producer with a new one: {why}");
                std::thread::spawn(move || drop(old));
            }
            Err(e) => tracing::error!(
                exporter = %self.name, error = %kafka_message(&e),
                "cannot create a new Kafka producer (to replace one: {why})"
            ),
        }
    }
}

/// Runs a future to completion on the current (non-async) thread.
fn block_on<F: std::future::Future>(f: F) -> F::Output {
    use std::task::{Context, Poll, Wake, Waker};
    struct ThreadWaker(std::thread::Thread);
    impl Wake for ThreadWaker {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(ThreadWaker(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut f = std::pin::pin!(f);
    loop {
        if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
        std::thread::park();
    }
}

async fn create_topic(
    admin: &AdminClient<Ctx>,
    topic: &str,
    ct: &CreateTopics,
    timeout: Duration,
) -> Result<(), String> {
    let new = NewTopic::new(topic, ct.partitions, TopicReplication::Fixed(ct.replication));
    let opts = AdminOptions::new()
        .request_timeout(Some(timeout))
        .operation_timeout(Some(timeout));
    match admin.create_topics([&new], &opts).await {
        Ok(results) => match results.into_iter().next() {
            Some(Ok(_)) | Some(Err((_, RDKafkaErrorCode::TopicAlreadyExists))) | None => Ok(()),
            Some(Err((_, code))) => Err(code.to_string()),
        },
        Err(e) => Err(kafka_message(&e)),
    }
}

/// The key of a record's message, per the `key` setting.
pub fn message_key(key: KeyField, f: &RecordFields) -> Option<&str> {
    let non_empty = |s: &str| !s.is_empty();
    match key {
        KeyField::ObjectUid => Some(f.object_uid.as_str())
            .filter(|s| non_empty(s))
            .or(Some(f.uid.as_str()).filter(|s| non_empty(s))),
        KeyField::Namespace => Some(f.namespace.as_str()).filter(|s| non_empty(s)),
        KeyField::None => None,
    }
}

/// The headers of a record's message, in order.
pub fn header_pairs(f: &RecordFields) -> [(&'static str, Cow<'_, str>); 5] {
    [
        ("cluster", Cow::Borrowed(&f.cluster)),
        ("type", Cow::Borrowed(f.event_type.as_str())),
        ("reason", Cow::Borrowed(f.reason.as_str())),
        ("api", Cow::Borrowed(&f.api)),
        ("schema_version", Cow::Owned(f.schema_version.to_string())),
    ]
}

fn message_headers(f: &RecordFields) -> OwnedHeaders {
    header_pairs(f)
        .iter()
        .fold(OwnedHeaders::new_with_capacity(5), |h, (k, v)| {
            h.insert(Header {
                key: k,
                value: Some(v.as_ref()),
            })
        })
}

/// What became of one record.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    Delivered,
    Failed {
        kind: ErrorKind,
        reason: &'static str,
        message: String,
    },
}

/// Sorts a librdkafka error on one record into transient or permanent, with
/// a metric reason. A missing topic is permanent only for a templated topic
/// without `create_topics` (its records go to the dead letter rather than
/// hold every other topic back); a missing fixed topic waits to be created.
fn classify(e: &KafkaError, missing_topic_waits: bool) -> (ErrorKind, &'static str) {
    use RDKafkaErrorCode as C;
    let Some(code) = e.rdkafka_error_code() else {
        return (ErrorKind::Transient, "kafka");
    };
    match code {
        C::MessageSizeTooLarge | C::InvalidMessageSize | C::MessageBatchTooLarge => (ErrorKind::Permanent, "too_large"),
        C::InvalidTopic => (ErrorKind::Permanent, "invalid_topic"),
        C::InvalidMessage | C::InvalidRecord | C::BadMessage => (ErrorKind::Permanent, "invalid_record"),
        C::UnknownTopic | C::UnknownTopicOrPartition | C::UnknownPartition => {
            if missing_topic_waits {
                (ErrorKind::Transient, "unknown_topic")
            } else {
                (ErrorKind::Permanent, "unknown_topic")
            }
        }
        C::TopicAuthorizationFailed
        | C::ClusterAuthorizationFailed
        | C::SaslAuthenticationFailed
        | C::Authentication
        | C::TransactionalIdAuthorizationFailed => (ErrorKind::Transient, "auth"),
        C::MessageTimedOut | C::RequestTimedOut | C::OperationTimedOut | C::TimedOutQueue => {
            (ErrorKind::Transient, "timeout")
        }
        C::QueueFull => (ErrorKind::Transient, "queue_full"),
        C::Fatal => (ErrorKind::Transient, "fatal"),
        C::AllBrokersDown | C::BrokerTransportFailure | C::BrokerNotAvailable | C::NetworkException => {
            (ErrorKind::Transient, "unavailable")
        }
        _ => (ErrorKind::Transient, "kafka"),
    }
}

/// Turns per-record outcomes into the export result.
fn summarize(name: &str, topics: &[Cow<'_, str>], outcomes: &[Outcome]) -> Result<(), ExportError> {
    let mut delivered = Vec::new();
    let mut rejected = Vec::new();
    let mut first_transient: Option<(usize, &'static str, &str)> = None;
    let mut first_permanent: Option<(usize, &'static str, &str)> = None;
    let mut transient = 0usize;
    for (i, o) in outcomes.iter().enumerate() {
        match o {
            Outcome::Delivered => delivered.push(i),
            Outcome::Failed {
                kind: ErrorKind::Permanent,
                reason,
                message,
            } => {
                rejected.push((i, message.clone()));
                first_permanent.get_or_insert((i, reason, message));
            }
            Outcome::Failed { reason, message, .. } => {
                transient += 1;
                first_transient.get_or_insert((i, reason, message));
            }
        }
    }
    if delivered.len() == outcomes.len() {
        return Ok(());
    }
    let failed = outcomes.len() - delivered.len();
    let (kind, (i, reason, first)) = match (first_transient, first_permanent) {
        (Some(t), _) => (ErrorKind::Transient, t),
        (None, Some(p)) => (ErrorKind::Permanent, p),
        (None, None) => unreachable!("a record neither delivered nor failed"),
    };
    let message = format!(
        "kafka exporter `{name}`: {failed} of {} records not delivered ({transient} to retry, {} refused); \
         first error: {first} (topic `{}`)",
        outcomes.len(),
        rejected.len(),
        topics[i]
    );
    let e = match kind {
        ErrorKind::Transient => ExportError::transient(reason, message),
        ErrorKind::Permanent => ExportError::permanent(reason, message),
    };
    Err(e.with_delivered(delivered).with_rejected(rejected))
}

/// Produces batches to Kafka; see the module doc.
pub struct KafkaExporter {
    shared: Arc<Shared>,
    /// Dropping it stops the background check thread.
    _stop: mpsc::Sender<()>,
}

impl fmt::Debug for KafkaExporter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KafkaExporter")
            .field("name", &self.shared.name)
            .field("brokers", &self.shared.brokers)
            .field("topic", &self.shared.topic.as_str())
            .finish()
    }
}

#[async_trait]
impl Exporter for KafkaExporter {
    fn name(&self) -> &str {
        &self.shared.name
    }

    async fn export(&self, batch: &Batch) -> Result<(), ExportError> {
        if batch.is_empty() {
            return Ok(());
        }
        let s = &*self.shared;
        let producer = s.producer();
        let topics: Vec<Cow<'_, str>> = batch.iter().map(|r| s.topic.expand(&r.fields)).collect();
        let not_created = s.ensure_topics(&topics).await;
        let missing_topic_waits = s.topic.fixed().is_some() || s.create_topics.is_some();

        let mut outcomes: Vec<Option<Outcome>> = vec![None; batch.len()];
        let mut pending = Vec::with_capacity(batch.len());
        let queue_deadline = Instant::now() + s.message_timeout;
        for (i, rec) in batch.iter().enumerate() {
            if let Some(why) = not_created.get(topics[i].as_ref()) {
                outcomes[i] = Some(Outcome::Failed {
                    kind: ErrorKind::Transient,
                    reason: "create_topic",
                    message: why.clone(),
                });
                continue;
            }
            let mut record = FutureRecord::to(&topics[i])
                .payload(&rec.json[..])
                .headers(message_headers(&rec.fields));
            if let Some(k) = message_key(s.key, &rec.fields) {
                record = record.key(k);
            }
            loop {
                match producer.send_result(record) {
                    Ok(delivery) => {
                        pending.push((i, delivery));
                        break;
                    }
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back))
                        if Instant::now() < queue_deadline =>
                    {
                        // The local queue is full: wait for deliveries to make room.
                        record = back;
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                    Err((e, _)) => {
                        let (kind, reason) = classify(&e, missing_topic_waits);
                        outcomes[i] = Some(Outcome::Failed {
                            kind,
                            reason,
                            message: kafka_message(&e),
                        });
                        break;
                    }
                }
            }
        }
        let mut placed: Vec<(usize, i32, i64)> = Vec::with_capacity(pending.len());
        for (i, delivery) in pending {
            outcomes[i] = Some(match delivery.await {
                Ok(Ok(d)) => {
                    placed.push((i, d.partition, d.offset));
                    Outcome::Delivered
                }
                Ok(Err((e, _msg))) => {
                    let (kind, reason) = classify(&e, missing_topic_waits);
                    if reason == "unknown_topic" {
                        s.forget_topic(&topics[i]);
                    }
                    Outcome::Failed {
                        kind,
                        reason,
                        message: kafka_message(&e),
                    }
                }
                Err(_canceled) => Outcome::Failed {
                    kind: ErrorKind::Transient,
                    reason: "canceled",
                    message: "the producer was closed before the delivery report".into(),
                },
            });
        }
        if !placed.is_empty() {
            let mut o = lock(&s.offsets);
            for (i, partition, offset) in placed {
                o.advance(&topics[i], partition, offset + 1);
            }
        }
        let outcomes: Vec<Outcome> = outcomes
            .into_iter()
            .map(|o| o.expect("every record has an outcome"))
            .collect();

        if let Some((code, reason)) = producer.client().fatal_error() {
            s.replace_producer(&format!("fatal error {code}: {reason}"));
        } else if outcomes.iter().all(|o| *o != Outcome::Delivered)
            && outcomes
                .iter()
                .any(|o| matches!(o, Outcome::Failed { reason: "timeout", .. }))
        {
            // Nothing got through within `message_timeout`. Besides an outage,
            // this is how a producer stuck on broker-side state looks (e.g. its
            // producer id refused for good by a broker that lost its data), so
            // the retry starts from a fresh producer. Nothing of the batch is
            // in flight any more, so this cannot duplicate anything.
            s.replace_producer("no record of a batch was delivered within message_timeout");
        }
        let result = summarize(&s.name, &topics, &outcomes);
        match &result {
            Ok(()) => {
                s.health.set(Problem::Export, None);
                s.health.set(Problem::BrokersDown, None);
            }
            Err(e) if e.kind == ErrorKind::Transient => s.health.set(Problem::Export, Some(e.message.clone())),
            // Records refused for good say nothing about the cluster's health.
            Err(_) => s.health.set(Problem::Export, None),
        }
        result
    }

    async fn flush(&self) -> Result<(), ExportError> {
        let producer = self.shared.producer();
        let timeout = self.shared.message_timeout;
        let name = self.shared.name.clone();
        let result = tokio::task::spawn_blocking(move || producer.flush(timeout)).await;
        match result {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(ExportError::transient(
                "timeout",
                format!("kafka exporter `{name}`: flush: {}", kafka_message(&e)),
            )),
            Err(e) => Err(ExportError::transient(
                "kafka",
                format!("kafka exporter `{name}`: flush task failed: {e}"),
            )),
        }
    }

    fn health(&self) -> Health {
        self.shared.health.get()
    }

    fn position(&self) -> Option<String> {
        let o = lock(&self.shared.offsets);
        (!o.is_empty()).then(|| o.encode())
    }

    async fn recover(&self, from: Option<&str>) -> Result<crate::Delivered, ExportError> {
        let s = Arc::clone(&self.shared);
        let from = match from.map(|f| (f, recover::Offsets::decode(f))) {
            None => recover::Offsets::default(),
            Some((_, Some(o))) => o,
            Some((f, None)) => {
                tracing::warn!(exporter = %s.name, position = f,
                    "kafka exporter: the saved position is not one of this exporter; nothing to read back, \
                     events exported just before the last stop may come again");
                recover::Offsets::default()
            }
        };
        if from.is_empty() {
            // Nothing saved: nothing to read back (the background check seeds the position
            // with the fixed topic's partition ends, without holding the startup).
            return Ok(crate::Delivered::default());
        }
        let name = s.name.clone();
        let result = tokio::task::spawn_blocking(move || {
            let r = recover::read_back(&s.client_config, &s.name, &from, s.topic.fixed(), READ_BACK_TIMEOUT);
            if let Ok(r) = &r {
                lock(&s.offsets).merge(&r.ends);
            }
            r
        })
        .await
        .map_err(|e| ExportError::transient("kafka", format!("kafka exporter `{name}`: read-back task failed: {e}")))?
        .map_err(|e| ExportError::transient("unavailable", format!("kafka exporter `{name}`: read-back: {e}")))?;
        tracing::info!(exporter = %name, records = result.records, keys = result.keys.len(),
            not_events = result.not_events,
            "kafka exporter: read back what was produced after the saved position");
        if !result.unfinished.is_empty() {
            tracing::warn!(exporter = %name, unfinished = %result.unfinished.join("; "),
                "kafka exporter: the read-back did not reach the end of every partition; \
                 the last events exported before the stop may be produced again (at least once)");
        }
        Ok(result.keys)
    }
}
