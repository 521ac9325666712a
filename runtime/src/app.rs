//! Running the collector: connect, (with `[ha]`) wait for the Lease, load
//! the checkpoint, watch from it, write it as it moves, stop cleanly on
//! SIGTERM/SIGINT (drain, flush, final checkpoint, exit 0). On losing the
//! Lease it stops the same way at once and exits non-zero, so the pod
//! restarts and stands by. While it runs, config changes (file or SIGHUP)
//! are applied by [`crate::reload`].

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::ack::Checkpoint;
use crate::config::state::pod_namespace;
use crate::config::{CheckpointStore, Config};
use crate::filter::FilterHost;
use crate::ha::{self, Elector};
use crate::health::{self, Readiness};
use crate::metrics::Metrics;
use crate::reload::Reloader;
use crate::source::client::{ClientOptions, cluster_id, connect};
use crate::state::seen::SeenSet;
use crate::state::store::{Store, StoreError};
use crate::state::writer::StateWriter;
use crate::{http, pipeline, setup, source, state};

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
    /// Replay this recorded watch stream instead of watching a cluster.
    pub replay: Option<PathBuf>,
}

/// Runs until SIGTERM/SIGINT, then drains and returns.
pub async fn run(opts: RunOptions) -> anyhow::Result<()> {
    // Taken over at once: SIGHUP's default action would end the process.
    let hup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGHUP; the config reloads on file changes only");
            None
        }
    };
    let config_src = std::fs::read_to_string(&opts.config).unwrap_or_default();
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
    let filters = if setup::needs_filters(&config) {
        let (filters, wasm, m) = (config.filters.clone(), config.wasm.clone(), metrics.clone());
        let host = tokio::task::spawn_blocking(move || FilterHost::new(&filters, &wasm, m)).await??;
        tracing::info!(filters = host.len(), "WASM filters ready");
        Some(host)
    } else {
        None
    };
    let mut setup = setup::pipeline_setup(&config, &cluster, opts.drain_timeout, filters)?;

    let shutdown = CancellationToken::new();
    tokio::spawn(stop_on_signal(shutdown.clone()));
    tokio::spawn({
        let (shutdown, readiness) = (shutdown.clone(), readiness.clone());
        async move {
            shutdown.cancelled().await;
            readiness.stopping();
        }
    });
    let client = match (client, &opts.replay) {
        (Some(c), _) => c,
        (None, Some(file)) => return replay(file, &config, setup, metrics, shutdown).await,
        (None, None) => anyhow::bail!("no cluster connection and no replay file"),
    };

    // HA: a standby waits here until it holds the Lease.
    let elector = match config.ha.enabled {
        true => {
            let ns = config
                .ha
                .lease_namespace
                .clone()
                .or_else(pod_namespace)
                .unwrap_or_else(|| "default".into());
            let e = Arc::new(Elector::new(
                kube::Api::namespaced(client.clone(), &ns),
                &config.ha,
                ha::identity(&config.ha),
            ));
            metrics.leader.set(0);
            tracing::info!(lease = %config.ha.lease_name, namespace = %ns, identity = e.identity(), "standby: waiting for the lease");
            if !e.acquire(&shutdown).await {
                tracing::info!("stopped while standing by");
                return Ok(());
            }
            Some(e)
        }
        false => None,
    };
    metrics.leader.set(1);
    // Stops the run on SIGTERM/SIGINT or when the lease is lost.
    let stop = CancellationToken::new();
    let lost = CancellationToken::new();
    {
        let (stop, shutdown, lost) = (stop.clone(), shutdown.clone(), lost.clone());
        tokio::spawn(async move {
            tokio::select! {
                _ = shutdown.cancelled() => {}
                _ = lost.cancelled() => {}
            }
            stop.cancel();
        });
    }
    let holder = elector.clone().map(|e| {
        let (stop, lost) = (stop.clone(), lost.clone());
        tokio::spawn(async move { e.hold(stop, lost).await })
    });

    let (writer, start) = open_state(&config, &client, &cluster, &specs, metrics.clone()).await?;
    setup.seen = start.seen.clone();
    setup.recover_from = writer.prior_sinks.clone();
    let stream = source::watch(client, &config.source, &specs, start, metrics.clone());
    let stream = health::track_watches(stream, readiness.clone());
    let (exporters_tx, exporters_rx) = watch::channel(Vec::new());
    tokio::spawn(health::poll_exporters(
        readiness.clone(),
        exporters_rx,
        HEALTH_INTERVAL,
        ops_stop.clone(),
    ));
    let (reload_tx, reload_rx) = tokio::sync::mpsc::channel(1);
    let reloader = Reloader::new(
        opts.config.clone(),
        config.clone(),
        config_src,
        setup.filters.clone(),
        &cluster,
        metrics.clone(),
        reload_tx,
    );
    tokio::spawn(reloader.run(hup, stop.clone()));
    let control = pipeline::Control {
        reconfigure: Some(reload_rx),
        exporters: Some(exporters_tx),
    };
    let (cp_tx, cp_rx) = watch::channel(Checkpoint::default());
    tokio::spawn(health::checkpoint_age(
        cp_tx.subscribe(),
        metrics.clone(),
        HEALTH_INTERVAL,
        ops_stop.clone(),
    ));
    let writer_stop = CancellationToken::new();
    let writer_task = tokio::spawn(
        writer
            .clone()
            .run(cp_rx, config.state.checkpoint_interval, writer_stop.clone()),
    );
    let summary = pipeline::run_with(stream, setup, metrics.clone(), stop.clone(), cp_tx, control).await;
    writer_stop.cancel();
    let _ = writer_task.await;
    let written = writer.write(&summary.checkpoint).await;
    if lost.is_cancelled() {
        metrics.leader.set(0);
        anyhow::bail!(
            "lost the lease: stopped watching, drained and wrote the checkpoint (written: {written}); exiting so the pod restarts as a standby"
        );
    }
    stop.cancel();
    if let Some(h) = holder {
        let _ = h.await;
    }
    if let Some(e) = &elector {
        e.release().await;
    }
    tracing::info!(
        routed = summary.routed,
        unrouted = summary.unrouted,
        filtered_out = summary.filtered_out,
        filter_dead_lettered = summary.filter_dead_lettered,
        startup_dropped = summary.startup_dropped,
        normalize_failed = summary.normalize_failed,
        unacknowledged = summary.unacknowledged,
        checkpoint = ?summary.checkpoint.streams,
        checkpoint_written = written,
        "stopped"
    );
    Ok(())
}

/// Opens the checkpoint store, loads the saved state and builds the writer and the watches' start.
async fn open_state(
    config: &Config,
    client: &kube::Client,
    cluster: &str,
    specs: &[source::WatchSpec],
    metrics: Arc<Metrics>,
) -> anyhow::Result<(StateWriter, source::StartState)> {
    let st = &config.state;
    let ns = || {
        st.namespace
            .clone()
            .or_else(pod_namespace)
            .unwrap_or_else(|| "default".into())
    };
    let store = match st.checkpoint {
        CheckpointStore::File => Store::File { dir: st.dir() },
        CheckpointStore::Configmap => Store::ConfigMap {
            api: kube::Api::namespaced(client.clone(), &ns()),
            name: st.configmap_name.clone(),
        },
        CheckpointStore::Lease => Store::Lease {
            api: kube::Api::namespaced(client.clone(), &config.ha.lease_namespace.clone().unwrap_or_else(ns)),
            name: config.ha.lease_name.clone(),
        },
    };
    let saved = match store.load().await {
        Ok(s) => s,
        Err(e @ StoreError::Corrupt { .. }) => {
            // Starting over re-reads what the API server still has: duplicates, never loss.
            tracing::error!(error = %e, "ignoring the unreadable checkpoint; starting with a full list");
            if let Store::File { dir } = &store {
                let aside = dir.join(format!("{}.corrupt", state::store::FILE_NAME));
                let _ = std::fs::rename(dir.join(state::store::FILE_NAME), &aside);
            }
            None
        }
        Err(e) => return Err(anyhow::anyhow!("cannot read the checkpoint: {e}")),
    };
    let seen_max = store.seen_capacity(st.seen_max_entries);
    let mut seen = SeenSet::new(st.seen_ttl, seen_max);
    store.load_seen(saved.as_ref(), &mut seen);
    let resume = match &saved {
        Some(s) => s.resume_points(cluster, specs),
        None => vec![None; specs.len()],
    };
    for (spec, r) in specs.iter().zip(&resume) {
        match r {
            Some(r) => {
                tracing::info!(watch = %spec, resource_version = %r.resource_version, store = %store.place(), "resuming from the checkpoint")
            }
            None => {
                tracing::info!(watch = %spec, store = %store.place(), "no checkpoint for this watch: starting with a full list")
            }
        }
    }
    tracing::info!(entries = seen.len(), "seen-set loaded");
    let seen = seen.shared();
    let writer = StateWriter {
        store,
        cluster: cluster.to_string(),
        keys: specs.iter().map(|s| state::stream_key(cluster, s)).collect(),
        prior_sinks: saved.as_ref().map(|s| s.sinks.clone()).unwrap_or_default(),
        prior: saved.map(|s| s.streams).unwrap_or_default(),
        seen: seen.clone(),
        seen_max,
        metrics,
    };
    let start = source::StartState {
        resume,
        seen: Some(seen),
        stale_limit: st.stale_watch_limit,
    };
    Ok((writer, start))
}

/// `run --replay`: the recorded stream through the pipeline, without a cluster,
/// HA or a saved checkpoint; ends at the end of the file with a summary.
async fn replay(
    file: &Path,
    config: &Config,
    setup: pipeline::Setup,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let stream = source::replay::source(file, &config.source, metrics.clone())?;
    let (stream, stamps) = source::replay::latency::stamp(stream);
    let started = std::time::Instant::now();
    let (cp_tx, cp_rx) = watch::channel(Checkpoint::default());
    let latency = tokio::spawn(source::replay::latency::observe(stamps, cp_rx));
    let summary = pipeline::run(stream, setup, metrics, shutdown, cp_tx).await;
    let secs = started.elapsed().as_secs_f64();
    let events = summary.checkpoint.acked_below;
    let latency = latency.await.unwrap_or_default();
    tracing::info!(
        file = %file.display(), events, routed = summary.routed, filtered_out = summary.filtered_out,
        unacknowledged = summary.unacknowledged, seconds = secs,
        events_per_second = (events as f64 / secs.max(1e-9)) as u64,
        latency_samples = latency.samples, latency_median_us = latency.median_us,
        latency_p99_us = latency.p99_us, latency_max_us = latency.max_us,
        "replay done"
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
