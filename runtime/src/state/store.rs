//! Where the state document lives: a local file (atomic replace), a
//! ConfigMap, or an annotation on the leader-election Lease. The last two let
//! a new pod, or a standby taking over, resume where the old one stopped.

use std::io::Write;
use std::path::{Path, PathBuf};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Patch, PatchParams, PostParams};

use super::Saved;

/// The ConfigMap data key and the Lease annotation holding the document.
pub const CONFIGMAP_KEY: &str = "checkpoint.json";
pub const LEASE_ANNOTATION: &str = "event-collector.io/checkpoint";
/// The file in the state directory.
pub const FILE_NAME: &str = "checkpoint.json";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{place}: the saved checkpoint is not valid: {source}")]
    Corrupt {
        place: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("{place}: {source}")]
    Kube {
        place: String,
        #[source]
        source: kube::Error,
    },
}

/// One of the three stores.
#[derive(Clone)]
pub enum Store {
    File { dir: PathBuf },
    ConfigMap { api: kube::Api<ConfigMap>, name: String },
    Lease { api: kube::Api<Lease>, name: String },
}

impl Store {
    /// Where it is, for messages.
    pub fn place(&self) -> String {
        match self {
            Store::File { dir } => dir.join(FILE_NAME).display().to_string(),
            Store::ConfigMap { name, .. } => format!("ConfigMap {name} key {CONFIGMAP_KEY}"),
            Store::Lease { name, .. } => format!("Lease {name} annotation {LEASE_ANNOTATION}"),
        }
    }

    /// The most seen-set entries this store can hold (object size limits:
    /// 1 MiB per ConfigMap, 256 KiB of annotations per object). Each entry
    /// takes 16 bytes of base64, plus a quarter as many uid counts at 22.
    pub fn seen_capacity(&self, configured: usize) -> usize {
        match self {
            Store::File { .. } => configured,
            Store::ConfigMap { .. } => configured.min(45_000),
            Store::Lease { .. } => configured.min(11_000),
        }
    }

    /// Whether the seen-set travels inside the document (base64: ConfigMap,
    /// Lease) rather than in its own binary file (the file store, [`super::seenfile`]).
    pub fn seen_inline(&self) -> bool {
        !matches!(self, Store::File { .. })
    }

    /// Loads the seen-set: the document's inline copy (the text stores, and
    /// checkpoints written before the seen file existed), then for the file
    /// store `seen.bin`. A bad seen file is logged and ignored (duplicates
    /// after a relist, never loss).
    pub fn load_seen(&self, saved: Option<&Saved>, seen: &mut super::seen::SeenSet) {
        if let Some(s) = saved {
            s.load_seen(seen);
        }
        if let Store::File { dir } = self {
            match super::seenfile::load(dir, seen) {
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "ignoring the unreadable seen-set file; events already exported may be exported again after a relist")
                }
            }
        }
    }

    /// Reads the document; None if there is none yet.
    pub async fn load(&self) -> Result<Option<Saved>, StoreError> {
        let text = match self {
            Store::File { dir } => {
                let path = dir.join(FILE_NAME);
                match tokio::fs::read_to_string(&path).await {
                    Ok(t) => Some(t),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                    Err(source) => {
                        return Err(StoreError::Io {
                            path: path.display().to_string(),
                            source,
                        });
                    }
                }
            }
            Store::ConfigMap { api, name } => api
                .get_opt(name)
                .await
                .map_err(|source| self.kube_err(source))?
                .and_then(|cm| cm.data)
                .and_then(|mut d| d.remove(CONFIGMAP_KEY)),
            Store::Lease { api, name } => api
                .get_opt(name)
                .await
                .map_err(|source| self.kube_err(source))?
                .and_then(|l| l.metadata.annotations)
                .and_then(|mut a| a.remove(LEASE_ANNOTATION)),
        };
        match text {
            None => Ok(None),
            Some(t) => serde_json::from_str(&t)
                .map(Some)
                .map_err(|source| StoreError::Corrupt {
                    place: self.place(),
                    source,
                }),
        }
    }

    /// Writes the document (replacing the old one).
    pub async fn save(&self, saved: &Saved) -> Result<(), StoreError> {
        // Serializing a struct of strings and maps cannot fail.
        let text = serde_json::to_string(saved).unwrap_or_default();
        match self {
            Store::File { dir } => {
                let dir = dir.clone();
                tokio::task::spawn_blocking(move || write_atomic(&dir, FILE_NAME, text.as_bytes()))
                    .await
                    .map_err(|e| StoreError::Io {
                        path: self.place(),
                        source: std::io::Error::other(e),
                    })?
            }
            Store::ConfigMap { api, name } => {
                let patch = serde_json::json!({"data": {CONFIGMAP_KEY: text}});
                match api.patch(name, &PatchParams::default(), &Patch::Merge(&patch)).await {
                    Ok(_) => Ok(()),
                    Err(kube::Error::Api(s)) if s.code == 404 => {
                        let cm = ConfigMap {
                            metadata: kube::api::ObjectMeta {
                                name: Some(name.clone()),
                                ..Default::default()
                            },
                            data: Some([(CONFIGMAP_KEY.to_string(), text)].into()),
                            ..Default::default()
                        };
                        api.create(&PostParams::default(), &cm)
                            .await
                            .map(|_| ())
                            .map_err(|source| self.kube_err(source))
                    }
                    Err(source) => Err(self.kube_err(source)),
                }
            }
            Store::Lease { api, name } => {
                // A merge patch carries no resourceVersion: it never conflicts with lease renewals.
                let patch = serde_json::json!({"metadata": {"annotations": {LEASE_ANNOTATION: text}}});
                match api.patch(name, &PatchParams::default(), &Patch::Merge(&patch)).await {
                    Ok(_) => Ok(()),
                    Err(kube::Error::Api(s)) if s.code == 404 => {
                        let lease = Lease {
                            metadata: kube::api::ObjectMeta {
                                name: Some(name.clone()),
                                annotations: Some([(LEASE_ANNOTATION.to_string(), text)].into()),
                                ..Default::default()
                            },
                            spec: None,
                        };
                        api.create(&PostParams::default(), &lease)
                            .await
                            .map(|_| ())
                            .map_err(|source| self.kube_err(source))
                    }
                    Err(source) => Err(self.kube_err(source)),
                }
            }
        }
    }

    fn kube_err(&self, source: kube::Error) -> StoreError {
        StoreError::Kube {
            place: self.place(),
            source,
        }
    }
}

/// Replaces `dir/name` atomically: a temp file in `dir`, fsync, rename, fsync of `dir`.
pub fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), StoreError> {
    let io = |path: &Path| {
        let path = path.display().to_string();
        move |source| StoreError::Io { path, source }
    };
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let tmp = dir.join(format!(".{name}.tmp"));
    let mut f = std::fs::File::create(&tmp).map_err(io(&tmp))?;
    f.write_all(bytes).map_err(io(&tmp))?;
    sync_replace(f, &tmp, dir, name)
}

/// Ends an atomic replace of `dir/name` by the written temp file `tmp` (open as `file`): fsync, rename, fsync of `dir`.
pub fn sync_replace(file: std::fs::File, tmp: &Path, dir: &Path, name: &str) -> Result<(), StoreError> {
    let io = |path: &Path| {
        let path = path.display().to_string();
        move |source| StoreError::Io { path, source }
    };
    file.sync_all().map_err(io(tmp))?;
    drop(file);
    let target = dir.join(name);
    std::fs::rename(tmp, &target).map_err(io(&target))?;
    std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn file_store_round_trip_and_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::File {
            dir: dir.path().join("state"),
        };
        assert_eq!(store.load().await.unwrap(), None, "nothing saved yet");
        let mut saved = Saved {
            version: 1,
            cluster: "c".into(),
            ..Default::default()
        };
        saved.streams.insert(
            "k".into(),
            super::super::StreamPos {
                resource_version: "abc-opaque".into(),
                acked_at: None,
            },
        );
        store.save(&saved).await.unwrap();
        assert_eq!(store.load().await.unwrap(), Some(saved.clone()));
        saved.cluster = "d".into();
        store.save(&saved).await.unwrap();
        assert_eq!(store.load().await.unwrap().unwrap().cluster, "d", "replaced");
        let names: Vec<_> = std::fs::read_dir(dir.path().join("state"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, vec![FILE_NAME.to_string()], "no temp file left");
        std::fs::write(dir.path().join("state").join(FILE_NAME), "{not json").unwrap();
        let err = store.load().await.unwrap_err().to_string();
        assert!(err.contains("checkpoint.json") && err.contains("not valid"), "{err}");
    }
}
