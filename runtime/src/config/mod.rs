//! The TOML configuration: its model, its defaults, and its validation.
//!
//! Owns everything between the file's bytes and a [`Config`] that is known to
//! be good: syntax and type errors from the toml crate, unknown keys, exporter
//! names that do not exist, duplicate names, patterns that do not compile.
//! Every error carries `file:line:col`. Nothing starts until a config loads.

pub mod exporters;
pub mod filters;
pub mod ops;
pub mod pattern;
pub mod routes;
pub mod source;
pub mod state;

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;
use toml::de::{DeTable, DeValue};

pub use exporters::{ExporterCommon, ExporterConfig, ExporterKind, Overflow};
pub use filters::{FilterConfig, OnDelete, OnError, WasmConfig};
pub use ops::{HttpConfig, LogConfig, MetricsConfig};
pub use pattern::{FieldMatcher, MatcherSpec, Pattern};
pub use routes::{RouteConfig, RouteMatch};
pub use source::{SourceConfig, StartupPolicy, WatchApi};
pub use state::{CheckpointStore, HaConfig, StateConfig};

/// The default config file name, looked up beside the binary.
pub const DEFAULT_FILE: &str = "event-collector.toml";

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where it was read from (for messages).
    pub file: PathBuf,
    /// The cluster name put on every event; None = derive it at startup.
    pub cluster: Option<String>,
    pub source: SourceConfig,
    pub exporters: Vec<ExporterConfig>,
    pub routes: Vec<RouteConfig>,
    /// `[[filters]]`: WASM filter and enricher modules routes can name.
    pub filters: Vec<FilterConfig>,
    /// `[wasm]`: engine settings shared by every filter.
    pub wasm: WasmConfig,
    /// `[state]`: checkpoint and seen-set storage.
    pub state: StateConfig,
    /// `[ha]`: Lease leader election.
    pub ha: HaConfig,
    /// `[http]`: the /metrics, /healthz and /readyz endpoint.
    pub http: HttpConfig,
    /// `[metrics]`: the per-event `kubernetes_events` counter.
    pub metrics: MetricsConfig,
    /// `[log]`: the log level.
    pub log: LogConfig,
}

/// One problem in a config file, with its place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub line: usize,
    pub col: usize,
    pub message: String,
}

/// Why a config was rejected: every problem found, each with file:line:col.
#[derive(Debug, Clone, thiserror::Error)]
pub struct ConfigError {
    pub file: PathBuf,
    pub problems: Vec<Problem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{}:{}:{}: {}", self.file.display(), p.line, p.col, p.message)?;
        }
        Ok(())
    }
}

/// Collects problems while validating, turning byte spans into line:col.
pub(crate) struct Problems<'s> {
    src: &'s str,
    list: Vec<Problem>,
}

impl<'s> Problems<'s> {
    fn new(src: &'s str) -> Self {
        Self { src, list: Vec::new() }
    }

    /// How many problems were found so far.
    pub(crate) fn len(&self) -> usize {
        self.list.len()
    }

    pub(crate) fn at(&mut self, span: Range<usize>, message: impl Into<String>) {
        let (line, col) = line_col(self.src, span.start);
        self.list.push(Problem {
            line,
            col,
            message: message.into(),
        });
    }

    /// Records a toml/serde error at its own span, or at `fallback` if it has none.
    pub(crate) fn toml(&mut self, err: toml::de::Error, fallback: Range<usize>) {
        let span = err.span().unwrap_or(fallback);
        self.at(span, err.message().trim().to_string());
    }

    fn into_error(mut self, file: &Path) -> ConfigError {
        self.list.sort_by_key(|p| (p.line, p.col));
        ConfigError {
            file: file.to_path_buf(),
            problems: self.list,
        }
    }

    fn into_result<T>(self, file: &Path, value: T) -> Result<T, ConfigError> {
        if self.list.is_empty() {
            Ok(value)
        } else {
            Err(self.into_error(file))
        }
    }
}

/// 1-based line and column (in characters) of a byte offset.
pub fn line_col(src: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(src.len());
    let before = &src[..src.floor_char_boundary(offset)];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map(|l| l.chars().count()).unwrap_or(0) + 1;
    (line, col)
}

/// The top level of the file, minus `[[exporters]]` which is read per type.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TopLevel {
    #[serde(default)]
    cluster: Option<String>,
    #[serde(default)]
    source: Option<Spanned<SourceConfig>>,
    #[serde(default)]
    routes: Vec<RouteConfig>,
    #[serde(default)]
    state: Option<Spanned<StateConfig>>,
    #[serde(default)]
    ha: Option<Spanned<HaConfig>>,
    #[serde(default)]
    http: HttpConfig,
    #[serde(default)]
    metrics: Option<Spanned<MetricsConfig>>,
    #[serde(default)]
    log: LogConfig,
}

impl Config {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let src = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: path.to_path_buf(),
            problems: vec![Problem {
                line: 1,
                col: 1,
                message: format!("cannot read the config file: {e}"),
            }],
        })?;
        Self::parse(&src, path)
    }

    /// Validates config text; `file` only names it in errors.
    pub fn parse(src: &str, file: &Path) -> Result<Config, ConfigError> {
        let mut problems = Problems::new(src);
        let root = match DeTable::parse(src) {
            Ok(root) => root,
            Err(e) => {
                problems.toml(e, 0..0);
                return Err(problems.into_error(file));
            }
        };
        let root_span = root.span();
        let mut table = root.into_inner();
        let exporters_value = table.remove("exporters");
        let filters_value = table.remove("filters");
        let wasm_value = table.remove("wasm");

        let top = match TopLevel::deserialize(toml::de::Deserializer::from(Spanned::new(root_span.clone(), table))) {
            Ok(t) => Some(t),
            Err(e) => {
                problems.toml(e, root_span.clone());
                None
            }
        };
        let exporters = exporters::parse_all(exporters_value, &mut problems);
        let base = file.parent().unwrap_or(Path::new(""));
        let filters = filters::parse_all(filters_value, base, &exporters, &mut problems);
        let wasm = filters::parse_wasm(wasm_value, base, &mut problems);
        let Some(top) = top else {
            return Err(problems.into_error(file));
        };
        let source = match top.source {
            Some(s) => {
                s.get_ref().validate(s.span(), &mut problems);
                s.into_inner()
            }
            None => SourceConfig::default(),
        };
        let state = match top.state {
            Some(s) => {
                s.get_ref().validate(s.span(), &mut problems);
                s.into_inner()
            }
            None => StateConfig::default(),
        };
        // A relative state dir (and the default outside a pod, `state`) is
        // relative to the config file, not to the working directory: two
        // collectors with their own configs never share a checkpoint.
        let mut state = state;
        let base = file.parent().unwrap_or(Path::new(""));
        state.dir = Some(match state.dir.take() {
            Some(d) if d.is_absolute() => d,
            Some(d) => base.join(d),
            None => match state.dir() {
                d if d.is_absolute() => d,
                _ => base.join("state"),
            },
        });
        let ha = match top.ha {
            Some(h) => {
                h.get_ref().validate(&state, h.span(), &mut problems);
                h.into_inner()
            }
            None => HaConfig::default(),
        };
        let metrics = top
            .metrics
            .unwrap_or_else(|| Spanned::new(0..0, MetricsConfig::default()));
        ops::validate(&top.http, &metrics, &top.log, &mut problems);
        let mut routes = top.routes;
        routes::validate(&mut routes, &exporters, &filters, &mut problems);
        let config = Config {
            file: file.to_path_buf(),
            cluster: top.cluster,
            source,
            exporters,
            routes,
            filters,
            wasm,
            state,
            ha,
            http: top.http,
            metrics: metrics.into_inner(),
            log: top.log,
        };
        problems.into_result(file, config)
    }

    /// The filter config with this name.
    pub fn filter(&self, name: &str) -> Option<&FilterConfig> {
        self.filters.iter().find(|f| f.name == name)
    }

    /// The exporter config with this name.
    pub fn exporter(&self, name: &str) -> Option<&ExporterConfig> {
        self.exporters.iter().find(|e| e.name == name)
    }
}

/// Finds the config file when none is given: `event-collector.toml` in the
/// working directory, then beside the binary.
pub fn default_path() -> PathBuf {
    let cwd = PathBuf::from(DEFAULT_FILE);
    if cwd.exists() {
        return cwd;
    }
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|d| d.join(DEFAULT_FILE)))
        .filter(|p| p.exists())
        .unwrap_or(cwd)
}

/// A string value of a `DeValue`, or None.
pub(crate) fn de_str<'a>(v: &'a Spanned<DeValue<'_>>) -> Option<&'a str> {
    match v.get_ref() {
        DeValue::String(s) => Some(s.as_ref()),
        _ => None,
    }
}

#[cfg(test)]
mod tests;
