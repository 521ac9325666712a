//! `[[filters]]` and `[wasm]`: the WASM filter and enricher modules, their
//! limits and failure policies, and the engine settings they share.
//!
//! Each `[[filters]]` table is deserialized from its original spans, so every
//! problem (an unknown key, a bad `on_error`, a dead-letter exporter that does
//! not exist, a module file that is missing) points at the exact place.
//! Defaults live in [`FilterConfig::new`] and [`WasmConfig::default`].

use std::collections::HashSet;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use event_collector_exporters::units::{parse_duration, parse_size};
use serde::Deserialize;
use toml::Spanned;
use toml::de::{DeValue, ValueDeserializer};

use super::{ExporterConfig, Problems};

/// What happens to an event when its filter fails (trap, timeout, memory cap,
/// a guest error or invalid output), and while the filter's breaker is open.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OnError {
    /// Keep the event unchanged, as if the filter had said `keep` (fail open).
    Pass,
    /// Drop the event (fail closed), counted.
    Drop,
    /// Write the event, with the error, to the exporter named by `dead_letter`.
    DeadLetter,
}

impl OnError {
    pub fn as_str(self) -> &'static str {
        match self {
            OnError::Pass => "pass",
            OnError::Drop => "drop",
            OnError::DeadLetter => "dead-letter",
        }
    }
}

/// What happens when a watched module file is deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OnDelete {
    /// Keep running the last good version.
    Keep,
    /// Skip the filter (events pass unchanged) until a module appears again.
    Bypass,
}

/// One `[[filters]]` table, validated. Paths are resolved against the config
/// file's directory.
#[derive(Debug, Clone, PartialEq)]
pub struct FilterConfig {
    /// The name routes use in `filters = [...]`.
    pub name: String,
    /// The `.wasm` file: a component (WIT `event-collector:filter`) or a core module.
    pub module: PathBuf,
    /// The `config` table as JSON, passed to the guest's `init` ("{}" when absent).
    pub config_json: String,
    pub on_error: OnError,
    /// The exporter that receives events when `on_error = "dead-letter"`.
    pub dead_letter: Option<String>,
    /// Longest one call may run (epoch deadline).
    pub timeout: Duration,
    /// Most linear memory one instance may have, in bytes.
    pub memory_limit: u64,
    /// Most native stack WASM code may use, in bytes.
    pub max_stack: u64,
    /// Replace the instance after this many calls (0 = never).
    pub recycle_after_calls: u64,
    /// Replace the instance after a call that left its memory above this many
    /// bytes; None = half of `memory_limit`.
    pub recycle_memory_above: Option<u64>,
    /// Consecutive failures that open the circuit breaker (0 = never opens).
    pub breaker_threshold: u32,
    /// How long an open breaker bypasses the filter before one trial call.
    pub breaker_cooldown: Duration,
    pub on_delete: OnDelete,
    /// Reload the module when its file changes.
    pub watch: bool,
    /// Environment variables (names) the guest may read; their values are the collector's.
    pub allow_env: Vec<String>,
    /// Directories the guest may read (read-only preopens, at the same path).
    pub allow_read_dirs: Vec<PathBuf>,
    /// Where the table starts in the config file (0..0 when built in code).
    pub span: Range<usize>,
}

impl FilterConfig {
    /// A filter with every setting at its default.
    pub fn new(name: impl Into<String>, module: impl Into<PathBuf>) -> Self {
        FilterConfig {
            name: name.into(),
            module: module.into(),
            config_json: "{}".to_string(),
            on_error: OnError::Pass,
            dead_letter: None,
            timeout: Duration::from_millis(10),
            memory_limit: 64 << 20,
            max_stack: 512 << 10,
            recycle_after_calls: 100_000,
            recycle_memory_above: None,
            breaker_threshold: 5,
            breaker_cooldown: Duration::from_secs(30),
            on_delete: OnDelete::Keep,
            watch: true,
            allow_env: Vec::new(),
            allow_read_dirs: Vec::new(),
            span: 0..0,
        }
    }

    /// The memory size above which an instance is recycled.
    pub fn recycle_memory_threshold(&self) -> u64 {
        self.recycle_memory_above.unwrap_or(self.memory_limit / 2)
    }
}

/// `[wasm]`: settings of the engine every filter shares.
#[derive(Debug, Clone, PartialEq)]
pub struct WasmConfig {
    /// Keep compiled modules on disk, keyed by the module's sha256 and the engine settings.
    pub cache: bool,
    /// Where; None = `$XDG_CACHE_HOME/event-collector/wasm` (or `~/.cache/...`).
    pub cache_dir: Option<PathBuf>,
    /// The most the cache may hold, in bytes; least recently used artifacts go first.
    pub cache_max_size: u64,
    /// How often the epoch ticker thread advances (the resolution of `timeout`).
    pub epoch_tick: Duration,
    /// Use the pooling instance allocator (faster instantiation, memory reserved up front).
    pub pooling: bool,
    /// Instances the pool holds: at least filters × (workers + 1) (one spare for validation).
    pub max_instances: u32,
    /// How long the watcher waits for a burst of file events to settle.
    pub watch_debounce: Duration,
    /// Tiered compilation of a hot-swapped module: it starts on Winch's
    /// baseline code (compiled in a few ms) while Cranelift optimizes it in
    /// the background, then moves to the optimized code.
    pub tiered: bool,
    /// Epoch interruption (the `timeout` mechanism). Not settable from the
    /// config file: turned off only by benchmarks, to measure its cost.
    pub epoch_interruption: bool,
    /// Where the table starts in the config file.
    pub span: Range<usize>,
}

/// `[wasm] cache_max_size` by default: room for the Python and JavaScript
/// examples' artifacts (35 and 34 MiB) several times over.
pub const DEFAULT_CACHE_MAX_SIZE: u64 = 512 << 20;

impl Default for WasmConfig {
    fn default() -> Self {
        WasmConfig {
            cache: true,
            cache_dir: None,
            cache_max_size: DEFAULT_CACHE_MAX_SIZE,
            epoch_tick: Duration::from_millis(1),
            pooling: true,
            max_instances: 64,
            watch_debounce: Duration::from_millis(200),
            tiered: true,
            epoch_interruption: true,
            span: 0..0,
        }
    }
}

impl WasmConfig {
    /// The artifact cache directory in force, if caching is on and one can be found.
    pub fn resolved_cache_dir(&self) -> Option<PathBuf> {
        if !self.cache {
            return None;
        }
        if let Some(d) = &self.cache_dir {
            return Some(d.clone());
        }
        let base = std::env::var_os("XDG_CACHE_HOME")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
            .or_else(|| {
                std::env::var_os("HOME")
                    .filter(|v| !v.is_empty())
                    .map(|h| PathBuf::from(h).join(".cache"))
            })?;
        Some(base.join("event-collector").join("wasm"))
    }
}

/// A byte size: an integer or a string with a unit.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum SizeValue {
    Int(u64),
    Str(String),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFilter {
    name: Spanned<String>,
    module: Spanned<String>,
    #[serde(default)]
    config: Option<toml::Table>,
    #[serde(default)]
    on_error: Option<Spanned<OnError>>,
    #[serde(default)]
    dead_letter: Option<Spanned<String>>,
    #[serde(default)]
    timeout: Option<Spanned<String>>,
    #[serde(default)]
    memory_limit: Option<Spanned<SizeValue>>,
    #[serde(default)]
    max_stack: Option<Spanned<SizeValue>>,
    #[serde(default)]
    recycle_after_calls: Option<u64>,
    #[serde(default)]
    recycle_memory_above: Option<Spanned<SizeValue>>,
    #[serde(default)]
    breaker_threshold: Option<u32>,
    #[serde(default)]
    breaker_cooldown: Option<Spanned<String>>,
    #[serde(default)]
    on_delete: Option<OnDelete>,
    #[serde(default)]
    watch: Option<bool>,
    #[serde(default)]
    allow_env: Vec<Spanned<String>>,
    #[serde(default)]
    allow_read_dirs: Vec<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWasm {
    #[serde(default)]
    cache: Option<bool>,
    #[serde(default)]
    cache_dir: Option<String>,
    #[serde(default)]
    cache_max_size: Option<Spanned<SizeValue>>,
    #[serde(default)]
    epoch_tick: Option<Spanned<String>>,
    #[serde(default)]
    pooling: Option<bool>,
    #[serde(default)]
    max_instances: Option<Spanned<u32>>,
    #[serde(default)]
    watch_debounce: Option<Spanned<String>>,
    #[serde(default)]
    tiered: Option<bool>,
}

/// Resolves a path from the config file against the file's directory.
pub(crate) fn resolve(base: &Path, p: &str) -> PathBuf {
    let p = Path::new(p);
    if p.is_absolute() { p.to_path_buf() } else { base.join(p) }
}

fn duration(v: &Spanned<String>, what: &str, min: Duration, problems: &mut Problems<'_>) -> Option<Duration> {
    match parse_duration(v.get_ref()) {
        Ok(d) if d >= min => Some(d),
        Ok(_) => {
            problems.at(v.span(), format!("{what} must be at least {min:?}"));
            None
        }
        Err(e) => {
            problems.at(v.span(), format!("{what}: {e}"));
            None
        }
    }
}

fn size(v: &Spanned<SizeValue>, what: &str, min: u64, problems: &mut Problems<'_>) -> Option<u64> {
    let n = match v.get_ref() {
        SizeValue::Int(n) => Ok(*n),
        SizeValue::Str(s) => parse_size(s),
    };
    match n {
        Ok(n) if n >= min => Some(n),
        Ok(_) => {
            problems.at(v.span(), format!("{what} must be at least {min} bytes"));
            None
        }
        Err(e) => {
            problems.at(v.span(), format!("{what}: {e}"));
            None
        }
    }
}

/// Converts the `config` table to JSON (datetimes become their TOML text).
pub fn toml_to_json(v: &toml::Value) -> serde_json::Value {
    use serde_json::Value as J;
    match v {
        toml::Value::String(s) => J::String(s.clone()),
        toml::Value::Integer(i) => J::from(*i),
        toml::Value::Float(f) => serde_json::Number::from_f64(*f).map(J::Number).unwrap_or(J::Null),
        toml::Value::Boolean(b) => J::Bool(*b),
        toml::Value::Datetime(d) => J::String(d.to_string()),
        toml::Value::Array(a) => J::Array(a.iter().map(toml_to_json).collect()),
        toml::Value::Table(t) => J::Object(t.iter().map(|(k, v)| (k.clone(), toml_to_json(v))).collect()),
    }
}

/// Reads the `filters` array of tables; problems go to `problems`.
pub(crate) fn parse_all(
    value: Option<Spanned<DeValue<'_>>>,
    base: &Path,
    exporters: &[ExporterConfig],
    problems: &mut Problems<'_>,
) -> Vec<FilterConfig> {
    let Some(value) = value else {
        return Vec::new();
    };
    let span = value.span();
    let DeValue::Array(items) = value.into_inner() else {
        problems.at(span, "`filters` must be an array of tables: write each as [[filters]]");
        return Vec::new();
    };
    let exporter_names: HashSet<&str> = exporters.iter().map(|e| e.name.as_str()).collect();
    let mut out: Vec<FilterConfig> = Vec::new();
    let mut names = HashSet::new();
    for item in items {
        let span = item.span();
        let de = ValueDeserializer::from(item);
        let raw = match RawFilter::deserialize(de) {
            Ok(r) => r,
            Err(e) => {
                let at = e.span().unwrap_or(span.clone());
                problems.at(at, format!("filter: {}", e.message().trim()));
                continue;
            }
        };
        if !names.insert(raw.name.get_ref().clone()) {
            problems.at(
                raw.name.span(),
                format!("filter `{}` is defined twice", raw.name.get_ref()),
            );
        }
        if let Some(f) = validate_one(raw, span, base, &exporter_names, problems) {
            out.push(f);
        }
    }
    out
}

fn validate_one(
    raw: RawFilter,
    span: Range<usize>,
    base: &Path,
    exporters: &HashSet<&str>,
    problems: &mut Problems<'_>,
) -> Option<FilterConfig> {
    let before = problems.len();
    let name = raw.name.get_ref().clone();
    if name.is_empty() || name.contains(char::is_whitespace) {
        problems.at(
            raw.name.span(),
            format!("invalid filter name `{name}`: use a non-empty name without spaces"),
        );
        return None;
    }
    let mut f = FilterConfig::new(name.clone(), resolve(base, raw.module.get_ref()));
    f.span = span;
    if raw.module.get_ref().is_empty() {
        problems.at(raw.module.span(), format!("filter `{name}`: `module` cannot be empty"));
    } else if !f.module.is_file() {
        problems.at(
            raw.module.span(),
            format!(
                "filter `{name}`: module file `{}` does not exist (or is not a file)",
                f.module.display()
            ),
        );
    }
    if let Some(c) = &raw.config {
        f.config_json =
            serde_json::Value::Object(c.iter().map(|(k, v)| (k.clone(), toml_to_json(v))).collect()).to_string();
    }
    if let Some(o) = &raw.on_error {
        f.on_error = *o.get_ref();
    }
    match (&raw.dead_letter, f.on_error) {
        (None, OnError::DeadLetter) => {
            let at = raw.on_error.as_ref().map(|o| o.span()).unwrap_or(f.span.clone());
            problems.at(
                at,
                format!("filter `{name}` has on_error = \"dead-letter\" but no `dead_letter = \"<exporter>\"`"),
            );
        }
        (Some(dl), OnError::DeadLetter) => {
            if !exporters.contains(dl.get_ref().as_str()) {
                let mut known: Vec<&str> = exporters.iter().copied().collect();
                known.sort_unstable();
                problems.at(
                    dl.span(),
                    format!(
                        "filter `{name}` has dead_letter `{}`, which is not a defined exporter (defined: {})",
                        dl.get_ref(),
                        if known.is_empty() { "none".to_string() } else { known.join(", ") }
                    ),
                );
            }
            f.dead_letter = Some(dl.get_ref().clone());
        }
        (Some(dl), other) => problems.at(
            dl.span(),
            format!(
                "filter `{name}` has a dead_letter exporter but on_error = \"{}\": set on_error = \"dead-letter\" or remove dead_letter",
                other.as_str()
            ),
        ),
        (None, _) => {}
    }
    if let Some(t) = &raw.timeout {
        f.timeout = duration(t, "timeout", Duration::from_micros(100), problems).unwrap_or(f.timeout);
    }
    if let Some(m) = &raw.memory_limit {
        f.memory_limit = size(m, "memory_limit", 64 << 10, problems).unwrap_or(f.memory_limit);
    }
    if let Some(m) = &raw.max_stack {
        f.max_stack = size(m, "max_stack", 16 << 10, problems).unwrap_or(f.max_stack);
    }
    if let Some(n) = raw.recycle_after_calls {
        f.recycle_after_calls = n;
    }
    if let Some(m) = &raw.recycle_memory_above {
        f.recycle_memory_above = size(m, "recycle_memory_above", 0, problems);
    }
    if let Some(n) = raw.breaker_threshold {
        f.breaker_threshold = n;
    }
    if let Some(c) = &raw.breaker_cooldown {
        f.breaker_cooldown = duration(c, "breaker_cooldown", Duration::ZERO, problems).unwrap_or(f.breaker_cooldown);
    }
    if let Some(d) = raw.on_delete {
        f.on_delete = d;
    }
    if let Some(w) = raw.watch {
        f.watch = w;
    }
    for v in &raw.allow_env {
        let n = v.get_ref();
        if n.is_empty() || n.contains('=') || n.contains('\0') {
            problems.at(
                v.span(),
                format!("filter `{name}`: invalid environment variable name `{n}`"),
            );
        } else {
            f.allow_env.push(n.clone());
        }
    }
    for d in &raw.allow_read_dirs {
        let p = resolve(base, d.get_ref());
        if !p.is_dir() {
            problems.at(
                d.span(),
                format!(
                    "filter `{name}`: allow_read_dirs entry `{}` is not a directory",
                    p.display()
                ),
            );
        } else {
            f.allow_read_dirs.push(p);
        }
    }
    if problems.len() > before { None } else { Some(f) }
}

/// Reads the `[wasm]` table.
pub(crate) fn parse_wasm(value: Option<Spanned<DeValue<'_>>>, base: &Path, problems: &mut Problems<'_>) -> WasmConfig {
    let mut w = WasmConfig::default();
    let Some(value) = value else {
        return w;
    };
    let span = value.span();
    w.span = span.clone();
    let raw = match RawWasm::deserialize(ValueDeserializer::from(value)) {
        Ok(r) => r,
        Err(e) => {
            problems.at(e.span().unwrap_or(span), format!("wasm: {}", e.message().trim()));
            return w;
        }
    };
    if let Some(c) = raw.cache {
        w.cache = c;
    }
    if let Some(d) = &raw.cache_dir {
        w.cache_dir = Some(resolve(base, d));
    }
    if let Some(m) = &raw.cache_max_size {
        w.cache_max_size = size(m, "cache_max_size", 1 << 20, problems).unwrap_or(w.cache_max_size);
    }
    if let Some(t) = &raw.epoch_tick {
        w.epoch_tick = duration(t, "epoch_tick", Duration::from_micros(100), problems).unwrap_or(w.epoch_tick);
    }
    if let Some(p) = raw.pooling {
        w.pooling = p;
    }
    if let Some(n) = &raw.max_instances {
        if *n.get_ref() == 0 {
            problems.at(n.span(), "max_instances must be at least 1");
        } else {
            w.max_instances = *n.get_ref();
        }
    }
    if let Some(d) = &raw.watch_debounce {
        w.watch_debounce = duration(d, "watch_debounce", Duration::ZERO, problems).unwrap_or(w.watch_debounce);
    }
    if let Some(t) = raw.tiered {
        w.tiered = t;
    }
    w
}
