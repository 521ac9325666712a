//! Connecting to the API server: an explicit kubeconfig and context, the
//! usual inference (`KUBECONFIG`, `~/.kube/config`, in-cluster service
//! account), a reachability check with a clear error, and the cluster id.

use std::path::PathBuf;
use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use kube::config::{KubeConfigOptions, Kubeconfig};

/// How to reach the API server.
#[derive(Debug, Clone, Default)]
pub struct ClientOptions {
    /// A kubeconfig file; None = infer.
    pub kubeconfig: Option<PathBuf>,
    /// A context in the kubeconfig; None = its current context.
    pub context: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("kubeconfig {path}: {source}")]
    Kubeconfig {
        path: String,
        #[source]
        source: kube::config::KubeconfigError,
    },
    #[error(
        "no usable Kubernetes configuration (tried KUBECONFIG, ~/.kube/config and the in-cluster service account): {0}"
    )]
    Infer(#[source] kube::config::InferConfigError),
    #[error("Kubernetes client for {url}: {source}")]
    Build {
        url: String,
        #[source]
        source: kube::Error,
    },
    #[error("cannot reach the API server at {url} after {secs}s: {source}")]
    Unreachable {
        url: String,
        secs: u64,
        #[source]
        source: kube::Error,
    },
}

/// Builds a client and checks that the API server answers, retrying for up to `wait`.
pub async fn connect(opts: &ClientOptions, wait: Duration) -> Result<kube::Client, ClientError> {
    let kube_opts = KubeConfigOptions {
        context: opts.context.clone(),
        ..Default::default()
    };
    let config = match &opts.kubeconfig {
        Some(path) => {
            let kc = Kubeconfig::read_from(path).map_err(|source| ClientError::Kubeconfig {
                path: path.display().to_string(),
                source,
            })?;
            kube::Config::from_custom_kubeconfig(kc, &kube_opts)
                .await
                .map_err(|source| ClientError::Kubeconfig {
                    path: path.display().to_string(),
                    source,
                })?
        }
        None if opts.context.is_some() => {
            kube::Config::from_kubeconfig(&kube_opts)
                .await
                .map_err(|source| ClientError::Kubeconfig {
                    path: "(KUBECONFIG or ~/.kube/config)".into(),
                    source,
                })?
        }
        None => kube::Config::infer().await.map_err(ClientError::Infer)?,
    };
    let url = config.cluster_url.to_string();
    let client = kube::Client::try_from(config).map_err(|source| ClientError::Build {
        url: url.clone(),
        source,
    })?;
    let started = tokio::time::Instant::now();
    let mut delay = Duration::from_millis(200);
    loop {
        match client.apiserver_version().await {
            Ok(v) => {
                tracing::info!(%url, version = %v.git_version, "connected to the API server");
                return Ok(client);
            }
            Err(source) if started.elapsed() >= wait => {
                return Err(ClientError::Unreachable {
                    url,
                    secs: wait.as_secs(),
                    source,
                });
            }
            Err(e) => {
                tracing::warn!(%url, error = %e, "API server not answering yet; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// The cluster name when the config gives none: the kube-system namespace's
/// uid if it can be read, else "default".
pub async fn cluster_id(client: &kube::Client) -> String {
    let api: kube::Api<Namespace> = kube::Api::all(client.clone());
    match api.get("kube-system").await {
        Ok(ns) => match ns.metadata.uid {
            Some(uid) => uid,
            None => "default".to_string(),
        },
        Err(e) => {
            tracing::info!(error = %e, "cannot read the kube-system namespace uid; cluster name is \"default\" (set `cluster` in the config)");
            "default".to_string()
        }
    }
}
