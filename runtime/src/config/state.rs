//! `[state]` and `[ha]`: where the checkpoint and the seen-set live, how often
//! they are written, and Lease leader election between replicas.

use std::path::PathBuf;
use std::time::Duration;

use event_collector_exporters::units;
use serde::Deserialize;

use super::Problems;

/// Where the checkpoint is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum CheckpointStore {
    /// `checkpoint.json` in `[state] dir` (atomic: temp file, fsync, rename, dir fsync).
    #[default]
    File,
    /// The ConfigMap `configmap_name` in the collector's namespace.
    Configmap,
    /// An annotation on the Lease `[ha] lease_name`.
    Lease,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StateConfig {
    /// The state directory. None: `/var/lib/event-collector` in a pod, else `./state`.
    pub dir: Option<PathBuf>,
    pub checkpoint: CheckpointStore,
    /// Longest time between a checkpoint change and its write.
    #[serde(deserialize_with = "units::de_duration")]
    pub checkpoint_interval: Duration,
    /// How long acknowledged (uid, resourceVersion) pairs are remembered for relist de-duplication.
    #[serde(deserialize_with = "units::de_duration")]
    pub seen_ttl: Duration,
    /// Most pairs remembered (newest kept).
    pub seen_max_entries: usize,
    /// Name of the checkpoint ConfigMap (`checkpoint = "configmap"`).
    pub configmap_name: String,
    /// Namespace of the ConfigMap. None: the pod's namespace.
    pub namespace: Option<String>,
    /// Empty watches in a row (no event, no bookmark, ended at once) taken as a stale resourceVersion.
    pub stale_watch_limit: u32,
}

impl Default for StateConfig {
    fn default() -> Self {
        Self {
            dir: None,
            checkpoint: CheckpointStore::File,
            checkpoint_interval: Duration::from_secs(1),
            seen_ttl: Duration::from_secs(3600),
            seen_max_entries: 200_000,
            configmap_name: "event-collector-checkpoint".into(),
            namespace: None,
            stale_watch_limit: 3,
        }
    }
}

/// In-cluster default of the state directory.
pub const POD_STATE_DIR: &str = "/var/lib/event-collector";

impl StateConfig {
    /// The state directory in effect.
    pub fn dir(&self) -> PathBuf {
        match &self.dir {
            Some(d) => d.clone(),
            None if std::env::var_os("KUBERNETES_SERVICE_HOST").is_some() => PathBuf::from(POD_STATE_DIR),
            None => PathBuf::from("./state"),
        }
    }

    pub(crate) fn validate(&self, span: std::ops::Range<usize>, problems: &mut Problems<'_>) {
        if self.seen_max_entries == 0 {
            problems.at(span.clone(), "[state]: `seen_max_entries` must be at least 1");
        }
        if self.configmap_name.is_empty() {
            problems.at(span.clone(), "[state]: `configmap_name` is empty");
        }
        if self.stale_watch_limit == 0 {
            problems.at(span, "[state]: `stale_watch_limit` must be at least 1");
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HaConfig {
    pub enabled: bool,
    pub lease_name: String,
    /// None: the pod's namespace (POD_NAMESPACE, else the service-account namespace file).
    pub lease_namespace: Option<String>,
    #[serde(deserialize_with = "units::de_duration")]
    pub lease_duration: Duration,
    #[serde(deserialize_with = "units::de_duration")]
    pub renew_deadline: Duration,
    #[serde(deserialize_with = "units::de_duration")]
    pub retry_period: Duration,
    /// None: POD_NAME, else the host name.
    pub identity: Option<String>,
}

impl Default for HaConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            lease_name: "event-collector".into(),
            lease_namespace: None,
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
            identity: None,
        }
    }
}

impl HaConfig {
    pub(crate) fn validate(&self, state: &StateConfig, span: std::ops::Range<usize>, problems: &mut Problems<'_>) {
        if !self.enabled {
            return;
        }
        if state.checkpoint == CheckpointStore::File {
            problems.at(
                span.clone(),
                "[ha]: `enabled = true` needs a shared checkpoint: set [state] checkpoint = \"configmap\" or \"lease\" (a standby cannot read another pod's file)",
            );
        }
        if self.lease_name.is_empty() {
            problems.at(span.clone(), "[ha]: `lease_name` is empty");
        }
        if !(self.retry_period < self.renew_deadline && self.renew_deadline < self.lease_duration) {
            problems.at(
                span,
                "[ha]: need retry_period < renew_deadline < lease_duration (defaults 2s < 10s < 15s)",
            );
        }
    }
}

/// The namespace this pod runs in: POD_NAMESPACE, else the service-account file, else None.
pub fn pod_namespace() -> Option<String> {
    if let Ok(ns) = std::env::var("POD_NAMESPACE")
        && !ns.trim().is_empty()
    {
        return Some(ns.trim().to_string());
    }
    std::fs::read_to_string("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}
