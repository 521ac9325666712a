//! Builds the running parts from a validated [`Config`]: the exporters (each
//! through its own config's builder), the route table and the normalize
//! options. The one place that knows every exporter type.

use std::sync::Arc;
use std::time::Duration;

use event_collector_exporters::{ConfigError as ExporterConfigError, SharedExporter};

use crate::config::{Config, ExporterConfig, ExporterKind, Overflow};
use crate::event::NormalizeOptions;
use crate::pipeline::{ExporterSlot, Setup};
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
    config
        .exporters
        .iter()
        .map(|e| {
            let exporter = build_exporter(e).map_err(|err| {
                let src = std::fs::read_to_string(&config.file).unwrap_or_default();
                let (line, col) = crate::config::line_col(&src, e.span.start);
                anyhow::anyhow!("{}:{line}:{col}: {err}", config.file.display())
            })?;
            let mut common = e.common.clone();
            if common.overflow() == Overflow::Spill {
                let base = config.file.parent().unwrap_or(std::path::Path::new(""));
                common.spill_dir = Some(common.resolved_spill_dir(&e.name, base));
            }
            Ok(ExporterSlot {
                name: e.name.clone(),
                exporter,
                common,
            })
        })
        .collect()
}

/// Everything the pipeline needs.
pub fn pipeline_setup(config: &Config, cluster: &str, drain_timeout: Duration) -> anyhow::Result<Setup> {
    Ok(Setup {
        routes: RouteTable::new(config),
        exporters: build_exporters(config)?,
        normalize: NormalizeOptions {
            cluster: Arc::from(cluster),
            include_raw: config.source.include_raw,
        },
        startup: config.source.startup,
        startup_max_age: config.source.startup_max_age,
        drain_timeout,
    })
}
