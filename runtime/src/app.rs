//! Running the collector: connect, build, watch, stop cleanly on SIGTERM/SIGINT.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::ack::Checkpoint;
use crate::config::Config;
use crate::filter::FilterHost;
use crate::metrics::Metrics;
use crate::source::client::{ClientOptions, cluster_id, connect};
use crate::{pipeline, setup, source};

/// Options from the command line.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub config: PathBuf,
    pub client: ClientOptions,
    /// How long to wait for the API server at startup.
    pub connect_timeout: Duration,
    /// How long shutdown waits for exporters to drain.
    pub drain_timeout: Duration,
    /// Replay this recorded watch stream instead of watching a cluster.
    pub replay: Option<PathBuf>,
}

/// Runs until SIGTERM/SIGINT, then drains and returns.
pub async fn run(opts: RunOptions) -> anyhow::Result<()> {
    let config = Config::load(&opts.config)?;
    tracing::info!(config = %opts.config.display(), "config loaded");
    let client = match &opts.replay {
        Some(_) => None,
        None => Some(connect(&opts.client, opts.connect_timeout).await?),
    };
    let cluster = match (&config.cluster, &client) {
        (Some(c), _) => c.clone(),
        (None, Some(client)) => cluster_id(client).await,
        (None, None) => "replay".to_string(),
    };
    tracing::info!(%cluster, "cluster name");
    let metrics = Arc::new(Metrics::new());
    let filters = if setup::needs_filters(&config) {
        let (filters, wasm, m) = (config.filters.clone(), config.wasm.clone(), metrics.clone());
        let host = tokio::task::spawn_blocking(move || FilterHost::new(&filters, &wasm, m)).await??;
        tracing::info!(filters = host.len(), "WASM filters ready");
        Some(host)
    } else {
        None
    };
    let setup = setup::pipeline_setup(&config, &cluster, opts.drain_timeout, filters)?;
    let stream = match (client, &opts.replay) {
        (Some(client), _) => {
            let specs = source::watch_specs(&config.source);
            source::watch(client, &config.source, &specs, metrics.clone()).boxed()
        }
        (None, Some(file)) => source::replay::source(file, &config.source, metrics.clone())?.boxed(),
        (None, None) => anyhow::bail!("no cluster connection and no replay file"),
    };
    let started = std::time::Instant::now();

    let shutdown = CancellationToken::new();
    tokio::spawn(stop_on_signal(shutdown.clone()));
    let (cp_tx, _cp_rx) = watch::channel(Checkpoint::default());
    let summary = pipeline::run(stream, setup, metrics, shutdown, cp_tx).await;
    tracing::info!(
        routed = summary.routed,
        unrouted = summary.unrouted,
        filtered_out = summary.filtered_out,
        filter_dead_lettered = summary.filter_dead_lettered,
        startup_dropped = summary.startup_dropped,
        normalize_failed = summary.normalize_failed,
        unacknowledged = summary.unacknowledged,
        checkpoint = ?summary.checkpoint.streams,
        "stopped"
    );
    if let Some(file) = &opts.replay {
        let secs = started.elapsed().as_secs_f64();
        let events = summary.checkpoint.acked_below;
        tracing::info!(
            file = %file.display(), events, seconds = secs, events_per_second = (events as f64 / secs.max(1e-9)) as u64,
            "replay done"
        );
    }
    Ok(())
}

/// Cancels `token` on the first SIGTERM or SIGINT.
async fn stop_on_signal(token: CancellationToken) {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: stopping"),
        _ = term => tracing::info!("SIGTERM: stopping"),
    }
    token.cancel();
}

/// Loads a config and checks every exporter's settings, without starting
/// anything or touching the file system.
pub fn check_config(path: &std::path::Path) -> anyhow::Result<Config> {
    let config = Config::load(path)?;
    for e in &config.exporters {
        setup::validate_exporter(e).map_err(|err| {
            let src = std::fs::read_to_string(path).unwrap_or_default();
            let (line, col) = crate::config::line_col(&src, e.span.start);
            anyhow::anyhow!("{}:{line}:{col}: {err}", path.display())
        })?;
    }
    Ok(config)
}
