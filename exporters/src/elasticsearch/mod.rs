//! The Elasticsearch / OpenSearch exporter: every batch goes out through the
//! bulk API (`POST /_bulk`, `create` actions), split into requests of at most
//! `max_bulk_bytes`, optionally gzipped, through the official `elasticsearch`
//! client crate.
//!
//! # Server
//!
//! At startup (from a background task, so an unreachable server never fails
//! startup) the exporter asks `GET /` which flavour and version it talks to
//! (OpenSearch says `version.distribution = "opensearch"`) and adapts:
//!
//! | | Elasticsearch 8+ | Elasticsearch 7.x | OpenSearch |
//! | --- | --- | --- | --- |
//! | headers | `application/vnd.elasticsearch+json; compatible-with=<major>` (ndjson alike) | `application/json`, `application/x-ndjson` | `application/json`, `application/x-ndjson` (compat headers are refused) |
//! | template | `_index_template` | `_index_template` (7.8+), `_template` before | `_index_template` |
//! | labels, annotations | `flattened` (7.3+) | `flattened` (7.3+) | `flat_object` (2.7+) |
//! | lifecycle | ILM `_ilm/policy/<name>` | ILM | ISM `_plugins/_ism/policies/<name>` |
//!
//! Then, when enabled, it installs the lifecycle policy, the index template
//! and (alias mode) the first index behind the write alias. A server without
//! the lifecycle API (a plain OpenSearch without ISM, an OSS build, an
//! emulator) gets one warning and a template without lifecycle settings; a
//! template the server refuses (e.g. no `manage_index_templates` privilege)
//! gets one error in the log and writing goes on. Until `GET /` answers,
//! [`Exporter::health`] is `NotReady` and batches fail as transient (the
//! pipeline keeps them and retries). After a connection failure the whole
//! startup sequence runs again before the next write, so a server that was
//! replaced (upgraded, or an in-memory one restarted) gets its template back.
//!
//! # Documents
//!
//! Each record becomes `{"create":{"_index":…,"_id":…}}` plus the record's
//! JSON with `"@timestamp"` (= the event's `timestamp`) spliced in as its
//! first key, without re-serializing the record. The `_id` is the first 128
//! bits of SHA-256 over (cluster, uid, resourceVersion) in hex: the same
//! occurrence always has the same id, so with `create` a resend (a retry, a
//! relist after a restart, a second replica, both APIs watched) finds the
//! document there already (409) and never duplicates it. In `index` mode the
//! index is rendered from the event's own timestamp (UTC), so a resend goes
//! to the same index whenever it happens; with a rollover alias or a data
//! stream, a resend that crosses a rollover lands in the new backing index.
//!
//! # Outcomes
//!
//! The bulk response is read item by item:
//!
//! - 2xx: delivered; 409 (`version_conflict_engine_exception`): already
//!   there, delivered.
//! - 429, 5xx, and 401/403/404 (security, a read-only block, a missing
//!   index): sent again, only these items, up to `item_retries` times inside
//!   the same `export` with exponential backoff and jitter; whatever still
//!   fails is returned as a transient error listing what was delivered, so
//!   the pipeline resends only the rest, with its own backoff, for as long as
//!   it takes.
//! - 400 (`mapper_parsing_exception`, `document_parsing_exception`,
//!   `illegal_argument_exception`, a closed index, …): refused for good;
//!   returned in `rejected` with `type: reason`, and the pipeline hands them
//!   to the exporter's `dead_letter` exporter (or counts them as dropped).
//!
//! A whole request that fails (connection refused, timeout, 429 or 5xx on
//! the request, 401/403) fails all its documents as transient. A request
//! refused as too large (413), or as a whole with 400, is split in halves
//! until the culprit document is alone, which is then rejected. An event is
//! acknowledged only once its item was created, found already there, or
//! dead-lettered.

mod bulk;
mod server;

#[cfg(test)]
mod tests;

use std::fmt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use elasticsearch::Elasticsearch;
use elasticsearch::auth::Credentials;
use elasticsearch::cert::{Certificate, CertificateValidation};
use elasticsearch::http::headers::{ACCEPT, CONTENT_ENCODING, CONTENT_TYPE, HeaderMap, HeaderValue};
use elasticsearch::http::transport::{MultiNodeConnectionPool, SingleNodeConnectionPool, TransportBuilder};
use elasticsearch::http::{Method, Url};
use serde::de::IgnoredAny;
use serde::{Deserialize, Deserializer};
use serde_json::Value;

use crate::{Batch, ConfigError, ExportError, Exporter, Health, units};

pub use bulk::{IndexName, Outcome, append_create, document_id, parse_bulk_response, plan_chunks};
pub use server::{
    Flavor, IndexMode, LabelsMapping, Lifecycle, Rollover, ServerInfo, TemplateParams, Version, composable_template,
    ilm_policy, ism_policy, legacy_template, mappings,
};

/// `refresh` on bulk requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Refresh {
    /// Do not wait for a refresh (the default; best throughput).
    #[default]
    False,
    /// Refresh the affected shards right away (tests, tiny volumes).
    True,
    /// Wait until a periodic refresh made the documents searchable.
    WaitFor,
}

impl Refresh {
    fn param(self) -> Option<&'static str> {
        match self {
            Refresh::False => None,
            Refresh::True => Some("true"),
            Refresh::WaitFor => Some("wait_for"),
        }
    }
}

fn de_refresh<'de, D: Deserializer<'de>>(d: D) -> Result<Refresh, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Repr {
        Bool(bool),
        Str(String),
    }
    match Repr::deserialize(d)? {
        Repr::Bool(false) => Ok(Refresh::False),
        Repr::Bool(true) => Ok(Refresh::True),
        Repr::Str(s) => match s.as_str() {
            "false" => Ok(Refresh::False),
            "true" => Ok(Refresh::True),
            "wait_for" => Ok(Refresh::WaitFor),
            other => Err(serde::de::Error::custom(format!(
                "invalid refresh `{other}`; expected false, true or \"wait_for\""
            ))),
        },
    }
}

fn default_index() -> String {
    "k8s-events-%Y.%m.%d".into()
}
fn default_max_bulk_bytes() -> u64 {
    5 << 20
}
fn default_request_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_item_retries() -> u32 {
    2
}
fn default_item_retry_backoff() -> Duration {
    Duration::from_millis(200)
}
fn yes() -> bool {
    true
}
fn default_template_priority() -> u32 {
    200
}
fn default_shards() -> u32 {
    1
}
fn default_retention() -> Duration {
    Duration::from_secs(30 * 86_400)
}
fn default_rollover_max_age() -> Duration {
    Duration::from_secs(86_400)
}
fn default_rollover_max_size() -> u64 {
    50 << 30
}

/// The `elasticsearch` (alias `opensearch`) exporter's keys.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ElasticsearchConfig {
    /// The server, e.g. `"https://es.example.com:9200"` (a path prefix is kept).
    #[serde(default)]
    pub url: Option<String>,
    /// Several nodes of one cluster, used round-robin (instead of `url`).
    #[serde(default)]
    pub urls: Vec<String>,
    /// `"auto"` (ask `GET /`), `"elasticsearch"` or `"opensearch"`. Only used
    /// when `GET /` is forbidden to the exporter's user. Default `"auto"`.
    #[serde(default)]
    pub flavor: Flavor,

    /// Where documents go. In `index` mode a name with strftime fields rendered
    /// from each event's timestamp in UTC (default `"k8s-events-%Y.%m.%d"`) or
    /// a fixed index name; in `alias` mode the write alias; in `data_stream`
    /// mode the data stream.
    #[serde(default = "default_index")]
    pub index: String,
    /// `"index"` (default), `"alias"` (a write alias over `<index>-000001`, …,
    /// rolled over by ILM/ISM; the first index is created at startup) or
    /// `"data_stream"`.
    #[serde(default)]
    pub mode: IndexMode,

    /// Largest bulk request body (before compression); a batch above it is
    /// split into several requests. A size such as `"5MiB"`. Default `"5MiB"`.
    #[serde(default = "default_max_bulk_bytes", deserialize_with = "units::de_size")]
    pub max_bulk_bytes: u64,
    /// gzip request bodies (`Content-Encoding: gzip`). Default `false`.
    #[serde(default)]
    pub compression: bool,
    /// Timeout of each HTTP request. Default `"30s"`.
    #[serde(default = "default_request_timeout", deserialize_with = "units::de_duration")]
    pub request_timeout: Duration,
    /// An ingest pipeline every document goes through. Default: none.
    #[serde(default)]
    pub pipeline: Option<String>,
    /// `refresh` on bulk requests: `false` (default), `true` or `"wait_for"`.
    #[serde(default, deserialize_with = "de_refresh")]
    pub refresh: Refresh,
    /// How often documents refused with 429/5xx are sent again inside one
    /// export before the batch goes back to the pipeline's retry. Default 2.
    #[serde(default = "default_item_retries")]
    pub item_retries: u32,
    /// First delay of those retries (doubling, with jitter). Default `"200ms"`.
    #[serde(default = "default_item_retry_backoff", deserialize_with = "units::de_duration")]
    pub item_retry_backoff: Duration,

    /// Basic auth user; the password comes from `password_file` or `password_env`.
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    #[serde(default)]
    pub password_env: Option<String>,
    /// An API key, either `id:key` or the base64 `encoded` form, from a file or
    /// an environment variable.
    #[serde(default)]
    pub api_key_file: Option<PathBuf>,
    #[serde(default)]
    pub api_key_env: Option<String>,
    /// A bearer token (e.g. a service-account token) from a file or an
    /// environment variable. Files are read again after a 401.
    #[serde(default)]
    pub bearer_token_file: Option<PathBuf>,
    #[serde(default)]
    pub bearer_token_env: Option<String>,
    /// Secrets inline in the config are refused (these keys exist only to say so).
    #[serde(default)]
    pub password: Option<IgnoredAny>,
    #[serde(default)]
    pub api_key: Option<IgnoredAny>,
    #[serde(default)]
    pub bearer_token: Option<IgnoredAny>,

    /// A PEM file with the CA certificate(s) that signed the server's certificate.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Accept any server certificate (logs a warning). Default `false`.
    #[serde(default)]
    pub tls_skip_verify: bool,

    /// Install the index template at startup. Default `true`.
    #[serde(default = "yes")]
    pub template: bool,
    /// The template's name. Default: the index name up to its first date
    /// field, without a trailing `-`, `_` or `.` (`k8s-events`).
    #[serde(default)]
    pub template_name: Option<String>,
    /// The template's priority (`order` for legacy templates). Default 200
    /// (above the built-in `logs-*-*` templates' 100).
    #[serde(default = "default_template_priority")]
    pub template_priority: u32,
    /// Primary shards of new indices. Default 1.
    #[serde(default = "default_shards")]
    pub shards: u32,
    /// Replicas of new indices. Default: the server's (1).
    #[serde(default)]
    pub replicas: Option<u32>,
    /// Install the lifecycle policy (ILM on Elasticsearch, ISM on OpenSearch)
    /// and attach it through the template. Default `true`. Ignored for a
    /// fixed index name in `index` mode (it would delete the only index).
    #[serde(default = "yes")]
    pub lifecycle: bool,
    /// The policy's name. Default: `template_name`.
    #[serde(default)]
    pub policy_name: Option<String>,
    /// Delete an index this long after it was rolled over (alias, data
    /// stream) or created (date-templated index). Default `"30d"`.
    #[serde(default = "default_retention", deserialize_with = "units::de_duration")]
    pub retention: Duration,
    /// Roll the write index over at this age (alias and data_stream modes). Default `"1d"`.
    #[serde(default = "default_rollover_max_age", deserialize_with = "units::de_duration")]
    pub rollover_max_age: Duration,
    /// ... or at this primary shard size. Default `"50GiB"`.
    #[serde(default = "default_rollover_max_size", deserialize_with = "units::de_size")]
    pub rollover_max_size: u64,
}

impl ElasticsearchConfig {
    /// A config for `url` with every other key at its default.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: Some(url.into()),
            urls: Vec::new(),
            flavor: Flavor::Auto,
            index: default_index(),
            mode: IndexMode::Index,
            max_bulk_bytes: default_max_bulk_bytes(),
            compression: false,
            request_timeout: default_request_timeout(),
            pipeline: None,
            refresh: Refresh::False,
            item_retries: default_item_retries(),
            item_retry_backoff: default_item_retry_backoff(),
            username: None,
            password_file: None,
            password_env: None,
            api_key_file: None,
            api_key_env: None,
            bearer_token_file: None,
            bearer_token_env: None,
            password: None,
            api_key: None,
            bearer_token: None,
            ca_file: None,
            tls_skip_verify: false,
            template: true,
            template_name: None,
            template_priority: default_template_priority(),
            shards: default_shards(),
            replicas: None,
            lifecycle: true,
            policy_name: None,
            retention: default_retention(),
            rollover_max_age: default_rollover_max_age(),
            rollover_max_size: default_rollover_max_size(),
        }
    }

    /// Checks the config, reads the secrets and builds the exporter named
    /// `name`. Nothing is sent here: the server is contacted by a background
    /// task right after (when a Tokio runtime is running) and before the
    /// first batch.
    pub fn build(&self, name: &str) -> Result<ElasticsearchExporter, ConfigError> {
        let settings = self.validate().map_err(|message| ConfigError {
            exporter: name.to_string(),
            message,
        })?;
        let err = |message: String| ConfigError {
            exporter: name.to_string(),
            message,
        };
        if self.lifecycle && !settings.lifecycle {
            tracing::info!(exporter = name, index = %self.index,
                "no lifecycle policy for a fixed index name in index mode (it would delete the only index); \
                 use a date-templated name, mode = \"alias\" or mode = \"data_stream\" for retention");
        }
        let creds = match &settings.auth {
            Some(a) => Some(a.load().map_err(err)?),
            None => None,
        };
        let urls = &settings.urls;
        let mut builder = if urls.len() == 1 {
            TransportBuilder::new(SingleNodeConnectionPool::new(urls[0].clone()))
        } else {
            TransportBuilder::new(MultiNodeConnectionPool::round_robin(urls.clone(), None))
        };
        builder = builder.timeout(self.request_timeout);
        if let Some(c) = creds {
            builder = builder.auth(c);
        }
        if self.tls_skip_verify {
            tracing::warn!(
                exporter = name,
                "tls_skip_verify = true: the server's certificate is NOT verified"
            );
            builder = builder.cert_validation(CertificateValidation::None);
        } else if let Some(path) = &self.ca_file {
            let pem = std::fs::read(path).map_err(|e| err(format!("cannot read ca_file `{}`: {e}", path.display())))?;
            let cert = Certificate::from_pem(&pem)
                .map_err(|e| err(format!("ca_file `{}` is not a PEM certificate: {e}", path.display())))?;
            builder = builder.cert_validation(CertificateValidation::Full(cert));
        }
        let transport = builder
            .build()
            .map_err(|e| err(format!("cannot build the HTTP client: {e}")))?;
        let inner = Arc::new(Inner {
            name: name.to_string(),
            client: Elasticsearch::new(transport),
            s: settings,
            server: Mutex::new(None),
            setup_lock: tokio::sync::Mutex::new(()),
            health: Mutex::new(Some("not connected yet".into())),
            lifecycle_warned: AtomicBool::new(false),
            template_warned: AtomicBool::new(false),
            stats: Arc::new(ElasticsearchStats::default()),
        });
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(probe(Arc::downgrade(&inner)));
        }
        Ok(ElasticsearchExporter { inner })
    }

    fn validate(&self) -> Result<Settings, String> {
        let mut raw_urls: Vec<&str> = self.urls.iter().map(String::as_str).collect();
        match (&self.url, raw_urls.is_empty()) {
            (Some(u), true) => raw_urls.push(u),
            (Some(_), false) => return Err("set either `url` or `urls`, not both".into()),
            (None, true) => return Err("`url` is required (e.g. url = \"https://localhost:9200\")".into()),
            (None, false) => {}
        }
        let mut urls = Vec::new();
        for u in raw_urls {
            let url = Url::parse(u).map_err(|e| format!("invalid url `{u}`: {e}"))?;
            if url.scheme() != "http" && url.scheme() != "https" {
                return Err(format!("invalid url `{u}`: the scheme must be http or https"));
            }
            if !url.username().is_empty() || url.password().is_some() {
                return Err(format!(
                    "url `{u}` holds credentials; use `username` with `password_file`/`password_env` instead"
                ));
            }
            urls.push(url);
        }
        for (key, set) in [
            ("password", self.password.is_some()),
            ("api_key", self.api_key.is_some()),
            ("bearer_token", self.bearer_token.is_some()),
        ] {
            if set {
                return Err(format!(
                    "secrets are not accepted inline: use `{key}_file` (a mounted Secret) or `{key}_env` instead of `{key}`"
                ));
            }
        }
        let auth = self.auth_source()?;
        if self.tls_skip_verify && self.ca_file.is_some() {
            return Err("`tls_skip_verify = true` and `ca_file` contradict each other: set one".into());
        }

        let index = IndexName::parse(&self.index, self.mode == IndexMode::Index)
            .map_err(|e| format!("invalid `index`: {e}"))?;
        let dated = matches!(index, IndexName::Dated { .. });
        let base = index.prefix().trim_end_matches(['-', '_', '.']).to_string();
        let template_name = self.template_name.clone().unwrap_or_else(|| {
            if base.is_empty() {
                "event-collector".to_string()
            } else {
                base.clone()
            }
        });
        bulk::check_index_name(&template_name).map_err(|e| format!("invalid `template_name`: {e}"))?;
        let policy_name = self.policy_name.clone().unwrap_or_else(|| template_name.clone());
        bulk::check_index_name(&policy_name).map_err(|e| format!("invalid `policy_name`: {e}"))?;
        if self.max_bulk_bytes < 1024 {
            return Err(format!(
                "`max_bulk_bytes` must be at least 1KiB, not {}",
                self.max_bulk_bytes
            ));
        }
        if self.request_timeout.is_zero() {
            return Err("`request_timeout` must be greater than zero".into());
        }
        if self.item_retries > 10 {
            return Err("`item_retries` must be at most 10 (the pipeline retries after that)".into());
        }
        if self.shards == 0 {
            return Err("`shards` must be at least 1".into());
        }
        if self.retention.as_secs() == 0 {
            return Err("`retention` must be at least 1s (or set lifecycle = false)".into());
        }
        if self.rollover_max_age.as_secs() == 0 || self.rollover_max_size == 0 {
            return Err("`rollover_max_age` and `rollover_max_size` must be greater than zero".into());
        }
        if let Some(p) = &self.pipeline
            && (p.is_empty() || p.contains(['/', '?', '#', '&']))
        {
            return Err(format!("invalid `pipeline` `{p}`"));
        }
        let prefix = index.prefix().to_string();
        let patterns = server::template_patterns(self.mode, &prefix, dated);
        // A fixed plain index has nothing to roll over: deleting it after the
        // retention would delete every event.
        let lifecycle = self.lifecycle && (dated || self.mode != IndexMode::Index);
        let rollover = (self.mode != IndexMode::Index).then_some(Rollover {
            max_age: self.rollover_max_age,
            max_primary_shard_bytes: self.rollover_max_size,
        });
        Ok(Settings {
            urls,
            auth,
            flavor: self.flavor,
            mode: self.mode,
            index,
            patterns,
            template: self.template,
            template_name,
            template_priority: self.template_priority,
            shards: self.shards,
            replicas: self.replicas,
            lifecycle,
            policy_name,
            retention: self.retention,
            rollover,
            max_bulk_bytes: self.max_bulk_bytes,
            compression: self.compression,
            pipeline: self.pipeline.clone(),
            refresh: self.refresh,
            item_retries: self.item_retries,
            item_retry_backoff: self.item_retry_backoff,
        })
    }

    fn auth_source(&self) -> Result<Option<AuthSource>, String> {
        let one = |file: &Option<PathBuf>, env: &Option<String>, what: &str| -> Result<Option<Secret>, String> {
            match (file, env) {
                (Some(_), Some(_)) => Err(format!("set either `{what}_file` or `{what}_env`, not both")),
                (Some(f), None) => Ok(Some(Secret::File(f.clone()))),
                (None, Some(e)) => Ok(Some(Secret::Env(e.clone()))),
                (None, None) => Ok(None),
            }
        };
        let password = one(&self.password_file, &self.password_env, "password")?;
        let api_key = one(&self.api_key_file, &self.api_key_env, "api_key")?;
        let bearer = one(&self.bearer_token_file, &self.bearer_token_env, "bearer_token")?;
        let mut sources = Vec::new();
        match (&self.username, password) {
            (Some(u), Some(p)) => sources.push(AuthSource::Basic {
                username: u.clone(),
                password: p,
            }),
            (Some(_), None) => return Err("`username` needs `password_file` or `password_env`".into()),
            (None, Some(_)) => return Err("`password_file`/`password_env` need `username`".into()),
            (None, None) => {}
        }
        if let Some(k) = api_key {
            sources.push(AuthSource::ApiKey(k));
        }
        if let Some(t) = bearer {
            sources.push(AuthSource::Bearer(t));
        }
        if sources.len() > 1 {
            return Err("choose one way to authenticate: username/password, api_key or bearer_token".into());
        }
        Ok(sources.pop())
    }
}

/// Where a secret is read from.
#[derive(Debug, Clone)]
enum Secret {
    File(PathBuf),
    Env(String),
}

impl Secret {
    fn read(&self, what: &str) -> Result<String, String> {
        let value = match self {
            Secret::File(p) => {
                std::fs::read_to_string(p).map_err(|e| format!("cannot read {what}_file `{}`: {e}", p.display()))?
            }
            Secret::Env(v) => {
                std::env::var(v).map_err(|_| format!("{what}_env: environment variable `{v}` is not set"))?
            }
        };
        let value = value.trim().to_string();
        if value.is_empty() {
            return Err(match self {
                Secret::File(p) => format!("{what}_file `{}` is empty", p.display()),
                Secret::Env(v) => format!("{what}_env: environment variable `{v}` is empty"),
            });
        }
        Ok(value)
    }

    fn is_file(&self) -> bool {
        matches!(self, Secret::File(_))
    }
}

#[derive(Debug, Clone)]
enum AuthSource {
    Basic { username: String, password: Secret },
    ApiKey(Secret),
    Bearer(Secret),
}

impl AuthSource {
    fn load(&self) -> Result<Credentials, String> {
        Ok(match self {
            AuthSource::Basic { username, password } => {
                Credentials::Basic(username.clone(), password.read("password")?)
            }
            AuthSource::ApiKey(s) => {
                let key = s.read("api_key")?;
                match key.split_once(':') {
                    Some((id, secret)) => Credentials::ApiKey(id.to_string(), secret.to_string()),
                    None => Credentials::EncodedApiKey(key),
                }
            }
            AuthSource::Bearer(s) => Credentials::Bearer(s.read("bearer_token")?),
        })
    }

    fn reloadable(&self) -> bool {
        match self {
            AuthSource::Basic { password, .. } => password.is_file(),
            AuthSource::ApiKey(s) | AuthSource::Bearer(s) => s.is_file(),
        }
    }
}

/// The validated config.
#[derive(Debug)]
struct Settings {
    urls: Vec<Url>,
    auth: Option<AuthSource>,
    flavor: Flavor,
    mode: IndexMode,
    index: IndexName,
    patterns: Vec<String>,
    template: bool,
    template_name: String,
    template_priority: u32,
    shards: u32,
    replicas: Option<u32>,
    lifecycle: bool,
    policy_name: String,
    retention: Duration,
    rollover: Option<Rollover>,
    max_bulk_bytes: u64,
    compression: bool,
    pipeline: Option<String>,
    refresh: Refresh,
    item_retries: u32,
    item_retry_backoff: Duration,
}

/// Counters of an Elasticsearch exporter; read them with [`ElasticsearchStats::snapshot`].
#[derive(Debug, Default)]
pub struct ElasticsearchStats {
    requests: AtomicU64,
    request_failures: AtomicU64,
    bytes_sent: AtomicU64,
    created: AtomicU64,
    duplicates: AtomicU64,
    retried: AtomicU64,
    rejected: AtomicU64,
    setups: AtomicU64,
}

/// A copy of [`ElasticsearchStats`]; every counter only grows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ElasticsearchStatsSnapshot {
    /// Bulk requests sent.
    pub requests: u64,
    /// Bulk requests that failed as a whole (connection, 429/5xx on the request, …).
    pub request_failures: u64,
    /// Request body bytes sent (after compression).
    pub bytes_sent: u64,
    /// Documents created.
    pub created: u64,
    /// Documents that were already there (409): resends made harmless.
    pub duplicates: u64,
    /// Documents refused for now (429, 5xx, …) and sent again.
    pub retried: u64,
    /// Documents refused for good (400), handed back for the dead-letter exporter.
    pub rejected: u64,
    /// Completed startup sequences (detect, policy, template); more than one after outages.
    pub setups: u64,
}

impl ElasticsearchStats {
    pub fn snapshot(&self) -> ElasticsearchStatsSnapshot {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        ElasticsearchStatsSnapshot {
            requests: g(&self.requests),
            request_failures: g(&self.request_failures),
            bytes_sent: g(&self.bytes_sent),
            created: g(&self.created),
            duplicates: g(&self.duplicates),
            retried: g(&self.retried),
            rejected: g(&self.rejected),
            setups: g(&self.setups),
        }
    }
}

fn bump(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// An HTTP answer.
struct Reply {
    status: u16,
    body: Bytes,
}

/// A failed request: no HTTP answer, or one that means "not now".
#[derive(Debug)]
struct Failure {
    reason: &'static str,
    message: String,
    /// The server could not be reached: run the startup sequence again before the next write.
    connection: bool,
}

/// The fixed metrics word for an HTTP status that means "try again".
fn status_reason(status: u16) -> &'static str {
    match status {
        429 => "throttled",
        401 => "unauthorized",
        403 => "forbidden",
        404 => "not_found",
        500..=599 => "server_error",
        _ => "http_error",
    }
}

fn is_transient_status(status: u16) -> bool {
    status == 429 || status >= 500
}

struct Inner {
    name: String,
    client: Elasticsearch,
    s: Settings,
    /// The server as detected; `None` until the startup sequence succeeded,
    /// and again after a connection failure.
    server: Mutex<Option<Arc<ServerInfo>>>,
    setup_lock: tokio::sync::Mutex<()>,
    /// `Some(message)` while not ready.
    health: Mutex<Option<String>>,
    lifecycle_warned: AtomicBool,
    template_warned: AtomicBool,
    stats: Arc<ElasticsearchStats>,
}

/// Keeps the startup sequence going until it succeeds, and again whenever a
/// connection failure reset it, so health recovers without traffic too.
async fn probe(weak: Weak<Inner>) {
    let mut backoff = Duration::from_millis(250);
    loop {
        let Some(inner) = weak.upgrade() else { return };
        let pause = if inner.current().is_some() {
            backoff = Duration::from_millis(250);
            Duration::from_secs(1)
        } else if inner.ensure_setup().await.is_ok() {
            Duration::from_secs(1)
        } else {
            backoff = (backoff * 2).min(Duration::from_secs(15));
            backoff
        };
        drop(inner);
        tokio::time::sleep(pause).await;
    }
}

/// A pseudo-random factor in [0.5, 1.0) for backoff jitter.
fn jitter() -> f64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    0.5 + f64::from(nanos % 1000) / 2000.0
}

impl Inner {
    fn current(&self) -> Option<Arc<ServerInfo>> {
        lock(&self.server).clone()
    }

    fn set_ready(&self) {
        if lock(&self.health).take().is_some() {
            tracing::info!(exporter = %self.name, "elasticsearch exporter ready: writes succeed");
        }
    }

    fn set_not_ready(&self, message: &str) {
        let mut h = lock(&self.health);
        if h.as_deref().is_none_or(|m| m == "not connected yet") {
            tracing::warn!(exporter = %self.name, error = %message, "elasticsearch exporter cannot write");
        }
        *h = Some(message.to_string());
    }

    fn headers(server: Option<&ServerInfo>, ndjson: bool, gzip: bool) -> HeaderMap {
        let mut h = HeaderMap::new();
        let (json, nd) = match server {
            Some(s) => (s.json_content_type(), s.ndjson_content_type()),
            None => ("application/json".to_string(), "application/x-ndjson".to_string()),
        };
        let ct = if ndjson { nd } else { json.clone() };
        if let Ok(v) = HeaderValue::from_str(&ct) {
            h.insert(CONTENT_TYPE, v);
        }
        if let Ok(v) = HeaderValue::from_str(&json) {
            h.insert(ACCEPT, v);
        }
        if gzip {
            h.insert(CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        }
        h
    }

    /// One HTTP request; `Err` only when no answer came.
    async fn request(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<Bytes>,
        headers: HeaderMap,
    ) -> Result<Reply, Failure> {
        let query = (!query.is_empty()).then_some(query);
        let sent = self.client.send(method, path, headers, query, body, None).await;
        let fail = |e: elasticsearch::Error| Failure {
            reason: if e.is_timeout() { "timeout" } else { "connection" },
            message: format!("{} {path}: {e}", format!("{method:?}").to_uppercase()),
            connection: true,
        };
        let resp = sent.map_err(fail)?;
        let status = resp.status_code().as_u16();
        let body = resp.bytes().await.map_err(fail)?;
        if status == 401 {
            self.reload_credentials();
        }
        Ok(Reply { status, body })
    }

    /// Reads file-based credentials again (a rotated token or password) after a 401.
    fn reload_credentials(&self) {
        let Some(auth) = &self.s.auth else { return };
        if !auth.reloadable() {
            return;
        }
        match auth.load() {
            Ok(c) => self.client.transport().set_auth(c),
            Err(e) => tracing::warn!(exporter = %self.name, error = %e, "cannot read the credentials again"),
        }
    }

    async fn json_request(
        &self,
        server: &ServerInfo,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&Value>,
    ) -> Result<Reply, Failure> {
        let body = body.map(|b| Bytes::from(serde_json::to_vec(b).unwrap_or_default()));
        self.request(method, path, query, body, Self::headers(Some(server), false, false))
            .await
    }

    /// Runs the startup sequence unless it already succeeded.
    async fn ensure_setup(&self) -> Result<Arc<ServerInfo>, ExportError> {
        if let Some(s) = self.current() {
            return Ok(s);
        }
        let _guard = self.setup_lock.lock().await;
        if let Some(s) = self.current() {
            return Ok(s);
        }
        match self.setup().await {
            Ok(info) => {
                let info = Arc::new(info);
                *lock(&self.server) = Some(info.clone());
                bump(&self.stats.setups, 1);
                self.set_ready();
                Ok(info)
            }
            Err(f) => {
                let message = format!("elasticsearch exporter `{}`: {}", self.name, f.message);
                self.set_not_ready(&message);
                Err(ExportError::transient(f.reason, message))
            }
        }
    }

    /// Detect, lifecycle policy, template, write alias.
    async fn setup(&self) -> Result<ServerInfo, Failure> {
        let info = self.detect().await?;
        let lifecycle = if self.s.lifecycle {
            self.install_policy(&info).await?
        } else {
            None
        };
        if self.s.template {
            self.install_template(&info, lifecycle).await?;
        }
        if self.s.mode == IndexMode::Alias {
            self.bootstrap_alias(&info).await?;
        }
        tracing::info!(
            exporter = %self.name, server = info.name(), version = %info.version,
            url = %self.s.urls[0], "connected to the search server"
        );
        Ok(info)
    }

    async fn detect(&self) -> Result<ServerInfo, Failure> {
        let r = self
            .request(Method::Get, "/", &[], None, Self::headers(None, false, false))
            .await?;
        let failure = |reason, message: String| Failure {
            reason,
            message,
            connection: false,
        };
        match r.status {
            200 => {
                let body: Value = serde_json::from_slice(&r.body)
                    .map_err(|e| failure("bad_response", format!("GET / did not answer JSON: {e}")))?;
                let info = ServerInfo::from_root(&body).map_err(|e| failure("bad_response", e))?;
                let configured = match self.s.flavor {
                    Flavor::Auto => info.flavor,
                    f => f,
                };
                if configured != info.flavor {
                    tracing::warn!(exporter = %self.name, configured = ?configured, server = info.name(),
                        "`flavor` says otherwise, but the server says it is {}; following the server", info.name());
                }
                if info.flavor == Flavor::Elasticsearch && info.version.0 < 7 {
                    tracing::warn!(exporter = %self.name, version = %info.version,
                        "Elasticsearch before 7.0 is not supported (bulk actions without _type)");
                }
                Ok(info)
            }
            403 if self.s.flavor != Flavor::Auto => {
                tracing::info!(exporter = %self.name, flavor = ?self.s.flavor,
                    "GET / is forbidden for this user; assuming a current version of the configured flavor");
                Ok(ServerInfo::assumed(self.s.flavor))
            }
            403 => Err(failure(
                "forbidden",
                format!(
                    "GET / is forbidden ({}); grant the `monitor` privilege or set flavor = \"elasticsearch\" or \"opensearch\"",
                    bulk::describe_body(&r.body)
                ),
            )),
            s => Err(failure(
                status_reason(s),
                format!("GET / answered {s}: {}", bulk::describe_body(&r.body)),
            )),
        }
    }

    fn warn_lifecycle(&self, message: String) {
        if !self.lifecycle_warned.swap(true, Ordering::Relaxed) {
            tracing::warn!(exporter = %self.name, "{message}; continuing without a lifecycle policy (indices are kept until deleted by hand)");
        } else {
            tracing::debug!(exporter = %self.name, "{message}");
        }
    }

    /// Installs the ILM or ISM policy; `Ok(None)` when the server has no such API.
    async fn install_policy(&self, info: &ServerInfo) -> Result<Option<Lifecycle>, Failure> {
        let name = &self.s.policy_name;
        if info.is_opensearch() {
            let patterns = server::ism_patterns(self.s.mode, &self.s.patterns, self.s.index.as_str());
            let body = ism_policy(self.s.rollover, self.s.retention, &patterns, self.s.template_priority);
            let path = format!("/_plugins/_ism/policies/{name}");
            let existing = self.json_request(info, Method::Get, &path, &[], None).await?;
            let mut query = Vec::new();
            match existing.status {
                200 => {
                    // Updating needs the current sequence number and primary term.
                    let v: Value = serde_json::from_slice(&existing.body).unwrap_or_default();
                    if let (Some(seq), Some(term)) = (v["_seq_no"].as_u64(), v["_primary_term"].as_u64()) {
                        query.push(("if_seq_no", seq.to_string()));
                        query.push(("if_primary_term", term.to_string()));
                    }
                }
                404 => {}
                s if is_transient_status(s) => return Err(self.setup_failure("GET", &path, &existing)),
                s => {
                    self.warn_lifecycle(format!(
                        "the server has no ISM API (GET {path} answered {s}: {})",
                        bulk::describe_body(&existing.body)
                    ));
                    return Ok(None);
                }
            }
            let r = self.json_request(info, Method::Put, &path, &query, Some(&body)).await?;
            match r.status {
                200 | 201 => Ok(Some(Lifecycle::Ism)),
                s if is_transient_status(s) => Err(self.setup_failure("PUT", &path, &r)),
                s => {
                    self.warn_lifecycle(format!(
                        "the ISM policy was refused (PUT {path} answered {s}: {})",
                        bulk::describe_body(&r.body)
                    ));
                    Ok(None)
                }
            }
        } else {
            let body = ilm_policy(self.s.rollover, self.s.retention, info.ilm_primary_shard_size());
            let path = format!("/_ilm/policy/{name}");
            let r = self.json_request(info, Method::Put, &path, &[], Some(&body)).await?;
            match r.status {
                200 | 201 => Ok(Some(Lifecycle::Ilm { policy: name.clone() })),
                s if is_transient_status(s) => Err(self.setup_failure("PUT", &path, &r)),
                s => {
                    self.warn_lifecycle(format!(
                        "the server has no usable ILM API (PUT {path} answered {s}: {})",
                        bulk::describe_body(&r.body)
                    ));
                    Ok(None)
                }
            }
        }
    }

    fn setup_failure(&self, method: &str, path: &str, r: &Reply) -> Failure {
        Failure {
            reason: status_reason(r.status),
            message: format!(
                "{method} {path} answered {}: {}",
                r.status,
                bulk::describe_body(&r.body)
            ),
            connection: false,
        }
    }

    fn template_params(&self, info: &ServerInfo, lifecycle: Option<Lifecycle>) -> TemplateParams {
        TemplateParams {
            patterns: self.s.patterns.clone(),
            priority: self.s.template_priority,
            shards: self.s.shards,
            replicas: self.s.replicas,
            labels: info.labels_mapping(),
            mode: self.s.mode,
            alias: (self.s.mode == IndexMode::Alias).then(|| self.s.index.as_str().to_string()),
            lifecycle,
        }
    }

    async fn install_template(&self, info: &ServerInfo, lifecycle: Option<Lifecycle>) -> Result<(), Failure> {
        let params = self.template_params(info, lifecycle);
        let (path, body) = if info.composable_templates() {
            (
                format!("/_index_template/{}", self.s.template_name),
                composable_template(&params),
            )
        } else {
            (format!("/_template/{}", self.s.template_name), legacy_template(&params))
        };
        let r = self.json_request(info, Method::Put, &path, &[], Some(&body)).await?;
        match r.status {
            200 | 201 => {
                tracing::debug!(exporter = %self.name, template = %self.s.template_name, "index template installed");
                Ok(())
            }
            s if is_transient_status(s) => Err(self.setup_failure("PUT", &path, &r)),
            s => {
                let message = format!(
                    "the index template was refused (PUT {path} answered {s}: {}); new indices get dynamic mappings. \
                     Install it by hand (dev_setup/elasticsearch/) and set template = false, or fix the privileges",
                    bulk::describe_body(&r.body)
                );
                if !self.template_warned.swap(true, Ordering::Relaxed) {
                    tracing::error!(exporter = %self.name, "{message}");
                }
                Ok(())
            }
        }
    }

    /// Alias mode: creates `<alias>-000001` as the write index unless the alias exists.
    async fn bootstrap_alias(&self, info: &ServerInfo) -> Result<(), Failure> {
        let alias = self.s.index.as_str();
        let path = format!("/_alias/{alias}");
        let r = self.json_request(info, Method::Get, &path, &[], None).await?;
        match r.status {
            200 => return Ok(()),
            404 => {}
            _ => return Err(self.setup_failure("GET", &path, &r)),
        }
        let first = format!("/{alias}-000001");
        let body = server::bootstrap_index(alias);
        let r = self.json_request(info, Method::Put, &first, &[], Some(&body)).await?;
        match r.status {
            200 | 201 => {
                tracing::info!(exporter = %self.name, alias, index = %&first[1..], "created the first index behind the write alias");
                Ok(())
            }
            // Created meanwhile by another replica: fine if the alias is there now.
            400 if bulk::describe_body(&r.body).starts_with("resource_already_exists_exception") => {
                let again = self.json_request(info, Method::Get, &path, &[], None).await?;
                if again.status == 200 {
                    Ok(())
                } else {
                    Err(self.setup_failure("PUT", &first, &r))
                }
            }
            _ => Err(self.setup_failure("PUT", &first, &r)),
        }
    }

    /// Sends one bulk body; the server's answer, or why none came.
    async fn send_bulk(&self, server: &ServerInfo, body: Bytes) -> Result<Reply, Failure> {
        let gzip = self.s.compression;
        let body = if gzip {
            tokio::task::spawn_blocking(move || Bytes::from(bulk::gzip(&body)))
                .await
                .map_err(|e| Failure {
                    reason: "io",
                    message: format!("compressing the bulk body failed: {e}"),
                    connection: false,
                })?
        } else {
            body
        };
        let mut query: Vec<(&str, String)> = vec![(
            "filter_path",
            "errors,items.*.status,items.*.error.type,items.*.error.reason,items.*.error.caused_by.type,items.*.error.caused_by.reason".into(),
        )];
        if let Some(p) = &self.s.pipeline {
            query.push(("pipeline", p.clone()));
        }
        if let Some(r) = self.s.refresh.param() {
            query.push(("refresh", r.into()));
        }
        bump(&self.stats.requests, 1);
        bump(&self.stats.bytes_sent, body.len() as u64);
        let headers = Self::headers(Some(server), true, gzip);
        let r = self.request(Method::Post, "/_bulk", &query, Some(body), headers).await;
        if !matches!(&r, Ok(reply) if reply.status == 200) {
            bump(&self.stats.request_failures, 1);
        }
        r
    }

    /// One pass over `pending` (indices into the batch): splits into requests,
    /// sends them, and sorts every document into delivered, rejected or retry.
    async fn send_round(
        &self,
        server: &ServerInfo,
        buf: &Bytes,
        spans: &[std::ops::Range<usize>],
        pending: &[usize],
        out: &mut RoundResult,
    ) {
        let sizes: Vec<usize> = pending.iter().map(|&i| spans[i].len()).collect();
        let mut work: std::collections::VecDeque<Vec<usize>> = plan_chunks(&sizes, self.s.max_bulk_bytes)
            .into_iter()
            .map(|r| pending[r].to_vec())
            .collect();
        while let Some(chunk) = work.pop_front() {
            let body = body_of(buf, spans, &chunk);
            let reply = match self.send_bulk(server, body).await {
                Ok(r) => r,
                Err(f) => {
                    if f.connection {
                        *lock(&self.server) = None;
                    }
                    out.fail_request(f.reason, f.message, chunk, work.drain(..).flatten());
                    return;
                }
            };
            match reply.status {
                200 => match parse_bulk_response(&reply.body, chunk.len()) {
                    Ok(outcomes) => {
                        for (i, o) in chunk.into_iter().zip(outcomes) {
                            out.item(&self.stats, i, o);
                        }
                    }
                    Err(e) => {
                        out.fail_request("bad_response", e, chunk, work.drain(..).flatten());
                        return;
                    }
                },
                // Too large, or refused as a whole: halve until the culprit is alone.
                400 | 413 if chunk.len() > 1 => {
                    let (a, b) = chunk.split_at(chunk.len() / 2);
                    work.push_front(b.to_vec());
                    work.push_front(a.to_vec());
                }
                400 | 413 => {
                    let why = if reply.status == 413 {
                        format!(
                            "request_entity_too_large: the document ({} bytes) is larger than the server accepts",
                            spans[chunk[0]].len()
                        )
                    } else {
                        bulk::describe_body(&reply.body)
                    };
                    out.item(
                        &self.stats,
                        chunk[0],
                        Outcome::Reject {
                            status: reply.status,
                            error: why,
                        },
                    );
                }
                s => {
                    let message = format!("POST /_bulk answered {s}: {}", bulk::describe_body(&reply.body));
                    out.fail_request(status_reason(s), message, chunk, work.drain(..).flatten());
                    return;
                }
            }
        }
    }

    async fn export(&self, batch: &Batch) -> Result<(), ExportError> {
        if batch.is_empty() {
            return Ok(());
        }
        let server = self.ensure_setup().await?;
        // Every document's action and source, once; requests are slices of it.
        let mut buf = Vec::with_capacity(batch.iter().map(|r| r.json.len() + 160).sum());
        let mut spans = Vec::with_capacity(batch.len());
        for rec in batch {
            let start = buf.len();
            let index = self.s.index.for_timestamp(&rec.fields.timestamp);
            append_create(&mut buf, &index, &document_id(rec), &rec.fields.timestamp, &rec.json);
            spans.push(start..buf.len());
        }
        let buf = Bytes::from(buf);
        let mut out = RoundResult::default();
        let mut pending: Vec<usize> = (0..batch.len()).collect();
        let mut attempt = 0;
        loop {
            self.send_round(&server, &buf, &spans, &pending, &mut out).await;
            if out.retry.is_empty() {
                break;
            }
            bump(&self.stats.retried, out.retry.len() as u64);
            if out.request_failed || attempt >= self.s.item_retries {
                let (reason, why) = out.last_error.take().unwrap_or(("http_error", String::new()));
                let message = format!(
                    "elasticsearch exporter `{}`: {} of {} documents not written yet: {why}",
                    self.name,
                    out.retry.len(),
                    batch.len()
                );
                self.set_not_ready(&message);
                return Err(ExportError::transient(reason, message)
                    .with_delivered(out.delivered)
                    .with_rejected(out.rejected));
            }
            let backoff = self.s.item_retry_backoff * 2u32.pow(attempt);
            tokio::time::sleep(backoff.mul_f64(jitter())).await;
            attempt += 1;
            pending = std::mem::take(&mut out.retry);
            out.last_error = None;
        }
        self.set_ready();
        if out.duplicates > 0 {
            tracing::info!(exporter = %self.name, documents = out.duplicates,
                "documents already indexed (a resend after a retry, restart or relist): not duplicated");
        }
        if out.rejected.is_empty() {
            return Ok(());
        }
        let mapping = out.rejected.iter().any(|(_, e)| {
            e.starts_with("mapper_parsing_exception")
                || e.starts_with("document_parsing_exception")
                || e.starts_with("strict_dynamic_mapping_exception")
        });
        let message = format!(
            "elasticsearch exporter `{}`: {} of {} documents refused for good; first: {}",
            self.name,
            out.rejected.len(),
            batch.len(),
            out.rejected[0].1
        );
        Err(
            ExportError::permanent(if mapping { "mapping_error" } else { "rejected" }, message)
                .with_delivered(out.delivered)
                .with_rejected(out.rejected),
        )
    }
}

/// The concatenated actions of `items`; a zero-copy slice when they are consecutive.
fn body_of(buf: &Bytes, spans: &[std::ops::Range<usize>], items: &[usize]) -> Bytes {
    let consecutive = items.windows(2).all(|w| spans[w[0]].end == spans[w[1]].start);
    if let (true, Some(first), Some(last)) = (consecutive, items.first(), items.last()) {
        return buf.slice(spans[*first].start..spans[*last].end);
    }
    let mut b = BytesMut::with_capacity(items.iter().map(|&i| spans[i].len()).sum());
    for &i in items {
        b.extend_from_slice(&buf[spans[i].clone()]);
    }
    b.freeze()
}

/// Where each document of a batch stands after a pass.
#[derive(Debug, Default)]
struct RoundResult {
    delivered: Vec<usize>,
    rejected: Vec<(usize, String)>,
    retry: Vec<usize>,
    /// Documents found already there (409) in this export.
    duplicates: usize,
    last_error: Option<(&'static str, String)>,
    /// A whole request failed: stop retrying inside this export.
    request_failed: bool,
}

impl RoundResult {
    fn item(&mut self, stats: &ElasticsearchStats, i: usize, o: Outcome) {
        match o {
            Outcome::Created => {
                bump(&stats.created, 1);
                self.delivered.push(i);
            }
            Outcome::Duplicate => {
                bump(&stats.duplicates, 1);
                self.duplicates += 1;
                self.delivered.push(i);
            }
            Outcome::Retry { status, error } => {
                self.last_error = Some((status_reason(status), format!("{error} (status {status})")));
                self.retry.push(i);
            }
            Outcome::Reject { status, error } => {
                bump(&stats.rejected, 1);
                self.rejected.push((i, format!("{error} (status {status})")));
            }
        }
    }

    fn fail_request(
        &mut self,
        reason: &'static str,
        message: String,
        chunk: Vec<usize>,
        rest: impl Iterator<Item = usize>,
    ) {
        self.retry.extend(chunk);
        self.retry.extend(rest);
        self.last_error = Some((reason, message));
        self.request_failed = true;
    }
}

/// Writes batches to Elasticsearch or OpenSearch; see the module doc.
pub struct ElasticsearchExporter {
    inner: Arc<Inner>,
}

impl fmt::Debug for ElasticsearchExporter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ElasticsearchExporter")
            .field("name", &self.inner.name)
            .field("urls", &self.inner.s.urls)
            .field("index", &self.inner.s.index.as_str())
            .field("mode", &self.inner.s.mode)
            .finish()
    }
}

impl ElasticsearchExporter {
    /// The counters now.
    pub fn stats(&self) -> ElasticsearchStatsSnapshot {
        self.inner.stats.snapshot()
    }

    /// A handle on the live counters.
    pub fn stats_handle(&self) -> Arc<ElasticsearchStats> {
        Arc::clone(&self.inner.stats)
    }

    /// The server as detected, once the startup sequence succeeded.
    pub fn server(&self) -> Option<ServerInfo> {
        self.inner.current().map(|s| (*s).clone())
    }

    /// Runs the startup sequence now (detect, policy, template, alias) unless done.
    pub async fn connect(&self) -> Result<ServerInfo, ExportError> {
        self.inner.ensure_setup().await.map(|s| (*s).clone())
    }

    /// The index a record with this timestamp goes to.
    pub fn index_for(&self, timestamp: &str) -> String {
        self.inner.s.index.for_timestamp(timestamp).into_owned()
    }
}

#[async_trait]
impl Exporter for ElasticsearchExporter {
    fn name(&self) -> &str {
        &self.inner.name
    }

    async fn export(&self, batch: &Batch) -> Result<(), ExportError> {
        self.inner.export(batch).await
    }

    fn health(&self) -> Health {
        match &*lock(&self.inner.health) {
            None => Health::Ready,
            Some(m) => Health::NotReady(m.clone()),
        }
    }
}
