//! Builds the running parts from a validated [`Config`]: the exporters (each
//! through its own config's builder), the route table and the normalize
//! options. The one place that knows every exporter type.

use std::sync::Arc;
use std::time::Duration;

use event_collector_exporters::{ConfigError as ExporterConfigError, SharedExporter};

use crate::config::{Config, ExporterConfig, ExporterKind, Overflow};
use crate::event::NormalizeOptions;
use crate::filter::FilterHost;
use crate::pipeline::{Chains, ExporterSlot, Setup};
use crate::route::RouteTable;

/// Builds one exporter from its config.
pub fn build_exporter(cfg: &ExporterConfig) -> Result<SharedExporter, ExporterConfigError> {
    Ok(match &cfg.kind {
        ExporterKind::Volume(v) => Arc::new(v.build(&cfg.name)?),
        ExporterKind::Stdout(s) => Arc::new(s.build(&cfg.name)?),
        ExporterKind::Elasticsearch(e) => Arc::new(e.build(&cfg.name)?),
        ExporterKind::Kafka(k) => Arc::new(k.build(&cfg.name)?),
    })
}

/// Checks one exporter's settings without starting it or touching the file system.
pub fn validate_exporter(cfg: &ExporterConfig) -> Result<(), ExporterConfigError> {
    match &cfg.kind {
        ExporterKind::Volume(v) => v.validate(&cfg.name),
        ExporterKind::Stdout(s) => s.validate(&cfg.name),
        // Outside a Tokio runtime, building contacts nothing: it checks the
        // settings and that the secret and CA files can be read.
        ExporterKind::Elasticsearch(e) => e.build(&cfg.name).map(|_| ()),
        ExporterKind::Kafka(k) => k.validate(&cfg.name),
    }
}

/// Builds every exporter; the first error names its exporter and its place in the file.
pub fn build_exporters(config: &Config) -> anyhow::Result<Vec<ExporterSlot>> {
    config.exporters.iter().map(|e| build_slot(config, e)).collect()
}

/// Builds one exporter of `config` with its pipeline settings; an error names
/// the exporter and its place in the file.
pub fn build_slot(config: &Config, e: &ExporterConfig) -> anyhow::Result<ExporterSlot> {
    let exporter = build_exporter(e).map_err(|err| {
        let src = std::fs::read_to_string(&config.file).unwrap_or_default();
        let (line, col) = crate::config::line_col(&src, e.span.start);
        anyhow::anyhow!("{}:{line}:{col}: {err}", config.file.display())
    })?;
    let mut common = e.common.clone();
    if common.overflow() == Overflow::Spill {
        // Relative paths are relative to the config file; the default
        // is `spill/<name>` in the state directory (`[state] dir`).
        let base = config.file.parent().unwrap_or(std::path::Path::new(""));
        let state = config.state.dir();
        let state = if state.is_absolute() { state } else { base.join(state) };
        common.spill_dir = Some(common.resolved_spill_dir(&e.name, base, &state));
    }
    Ok(ExporterSlot {
        name: e.name.clone(),
        exporter,
        common,
    })
}

/// Whether any route runs filters (and so the WASM host must be built).
pub fn needs_filters(config: &Config) -> bool {
    config.routes.iter().any(|r| !r.filters.is_empty())
}

/// Resolves every route's exporters and filter chain, and every filter's
/// dead-letter exporter, to indices.
pub fn chains(config: &Config, routes: &RouteTable, host: Option<&FilterHost>) -> anyhow::Result<Chains> {
    let exporter_index = |name: &str| config.exporters.iter().position(|e| e.name == name);
    let mut chains = Chains::default();
    for r in routes.routes() {
        chains.exporters.push(r.exporters.clone());
        chains.filters.push(match host {
            Some(h) => h.chain(&r.filters)?,
            None if r.filters.is_empty() => Vec::new(),
            None => anyhow::bail!("route `{}` runs filters but the WASM host was not started", r.name),
        });
    }
    if let Some(h) = host {
        chains.dead_letter = vec![None; h.len()];
        for f in &config.filters {
            if let (Some(id), Some(dl)) = (h.id(&f.name), &f.dead_letter) {
                chains.dead_letter[id.index()] = exporter_index(dl);
            }
        }
    }
    Ok(chains)
}

/// Everything the pipeline needs. `filters` is the WASM host, built (it
/// compiles modules, so off the async threads) when [`needs_filters`].
pub fn pipeline_setup(
    config: &Config,
    cluster: &str,
    drain_timeout: Duration,
    filters: Option<Arc<FilterHost>>,
) -> anyhow::Result<Setup> {
    let routes = RouteTable::new(config);
    let chains = chains(config, &routes, filters.as_deref())?;
    Ok(Setup {
        routes,
        chains,
        filters,
        exporters: build_exporters(config)?,
        normalize: NormalizeOptions {
            cluster: Arc::from(cluster),
            include_raw: config.source.include_raw,
        },
        startup: config.source.startup,
        startup_max_age: config.source.startup_max_age,
        drain_timeout,
        seen: None,
        recover_from: Default::default(),
    })
}
