//! Running the collector: connect, build, watch, stop cleanly on SIGTERM/SIGINT.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::ack::Checkpoint;
use crate::config::Config;
use crate::health::{self, Readiness};
use crate::metrics::Metrics;
use crate::source::client::{ClientOptions, cluster_id, connect};
use crate::{http, pipeline, setup, source};

/// How often exporter health and the checkpoint age are looked at.
const HEALTH_INTERVAL: Duration = Duration::from_secs(1);

/// Options from the command line.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub config: PathBuf,
    pub client: ClientOptions,
    /// How long to wait for the API server at startup.
    pub connect_timeout: Duration,
    /// How long shutdown waits for exporters to drain.
    pub drain_timeout: Duration,
}

/// Runs until SIGTERM/SIGINT, then drains and returns.
pub async fn run(opts: RunOptions) -> anyhow::Result<()> {
    let config = Config::load(&opts.config)?;
    tracing::info!(config = %opts.config.display(), "config loaded");
    let metrics = Arc::new(Metrics::with_config(&config.metrics));
    let specs = source::watch_specs(&config.source);
    let readiness = Arc::new(Readiness::new(
        specs.iter().map(ToString::to_string).collect(),
        config.exporters.iter().map(|e| e.name.clone()).collect(),
        metrics.ready.clone(),
    ));
    // Stops the HTTP endpoint and the health tasks once the pipeline has drained.
    let ops_stop = CancellationToken::new();
    let _ops_guard = ops_stop.clone().drop_guard();
    if config.http.enabled {
        // A taken port must not stop the collection itself: log it loudly and
        // run on without the endpoint (a liveness probe then surfaces it).
        match http::bind(config.http.address()).await {
            Ok(listener) => {
                let state = http::State {
                    metrics: metrics.clone(),
                    readiness: readiness.clone(),
                };
                tokio::spawn(http::serve(listener, state, ops_stop.clone()));
            }
            Err(e) => {
                tracing::error!(error = %e, "no /metrics, /healthz or /readyz: set [http] address or enabled = false")
            }
        }
    }
    let client = connect(&opts.client, opts.connect_timeout).await?;
    let cluster = match &config.cluster {
        Some(c) => c.clone(),
        None => cluster_id(&client).await,
    };
    tracing::info!(%cluster, "cluster name");
    let setup = setup::pipeline_setup(&config, &cluster, opts.drain_timeout)?;
    let stream = source::watch(client, &config.source, &specs, metrics.clone());
    let stream = health::track_watches(stream, readiness.clone());
    let exporters = setup.exporters.iter().map(|s| s.exporter.clone()).collect();
    tokio::spawn(health::poll_exporters(
        readiness.clone(),
        exporters,
        HEALTH_INTERVAL,
        ops_stop.clone(),
    ));

    let shutdown = CancellationToken::new();
    tokio::spawn(stop_on_signal(shutdown.clone()));
    tokio::spawn({
        let (shutdown, readiness) = (shutdown.clone(), readiness.clone());
        async move {
            shutdown.cancelled().await;
            readiness.stopping();
        }
    });
    let (cp_tx, _cp_rx) = watch::channel(Checkpoint::default());
    tokio::spawn(health::checkpoint_age(
        cp_tx.subscribe(),
        metrics.clone(),
        HEALTH_INTERVAL,
        ops_stop.clone(),
    ));
    let summary = pipeline::run(stream, setup, metrics, shutdown, cp_tx).await;
    tracing::info!(
        routed = summary.routed,
        unrouted = summary.unrouted,
        startup_dropped = summary.startup_dropped,
        normalize_failed = summary.normalize_failed,
        unacknowledged = summary.unacknowledged,
        checkpoint = ?summary.checkpoint.streams,
        "stopped"
    );
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
