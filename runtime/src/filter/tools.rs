//! Author tools: `event-collector filter test` and `event-collector filter check`.
//!
//! Both take an optional config file: JSON or TOML with the filter's own
//! `config` (what `init` receives), or a whole collector config, in which case
//! the `[[filters]]` entry whose `module` is this file supplies the config,
//! the limits and the grants.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use wasmtime::component::types::ComponentItem;

use super::engine::EngineSet;
use super::host::{FilterHost, HostOptions};
use super::instance::InstanceSpec;
use super::module::{self, ModuleKind, check_core_exports, detect_kind};
use super::vectors::{self, Expect};
use super::{StepResult, cache::sha256_hex};
use crate::config::filters::toml_to_json;
use crate::config::{Config, FilterConfig, WasmConfig};
use crate::event::Event;
use crate::metrics::Metrics;

/// The filter settings to use for `module`, from an optional config file.
/// Returns the settings and a note to print, if any.
pub fn filter_config_for(module: &Path, config: Option<&Path>) -> anyhow::Result<(FilterConfig, Option<String>)> {
    let name = module
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("filter")
        .to_string();
    let mut fc = FilterConfig::new(name, module);
    let Some(path) = config else {
        return Ok((fc, None));
    };
    let text = std::fs::read_to_string(path).with_context(|| format!("{}", path.display()))?;
    let is_json = path.extension().is_some_and(|e| e == "json") || text.trim_start().starts_with('{');
    if is_json {
        let v: serde_json::Value =
            serde_json::from_str(&text).with_context(|| format!("{}: not JSON", path.display()))?;
        if !v.is_object() {
            bail!("{}: the filter config must be a JSON object", path.display());
        }
        fc.config_json = v.to_string();
        return Ok((fc, None));
    }
    let table: toml::Table = toml::from_str(&text).with_context(|| format!("{}: not TOML", path.display()))?;
    let collector_keys = ["filters", "exporters", "routes", "source", "wasm", "cluster"];
    if collector_keys.iter().any(|k| table.contains_key(*k)) {
        let collector = Config::load(path)?;
        let want = std::fs::canonicalize(module).unwrap_or_else(|_| module.to_path_buf());
        let found = collector
            .filters
            .iter()
            .find(|f| std::fs::canonicalize(&f.module).unwrap_or_else(|_| f.module.clone()) == want);
        return Ok(match found {
            Some(f) => {
                let mut f = f.clone();
                f.module = module.to_path_buf();
                let note = format!("using [[filters]] `{}` from {}", f.name, path.display());
                (f, Some(note))
            }
            None => (
                fc,
                Some(format!(
                    "{} has no [[filters]] entry with module {}; using config {{}} and default limits",
                    path.display(),
                    module.display()
                )),
            ),
        });
    }
    fc.config_json = toml_to_json(&toml::Value::Table(table)).to_string();
    Ok((fc, None))
}

/// Options of `filter test`.
#[derive(Debug, Clone)]
pub struct TestOptions {
    pub module: PathBuf,
    pub config: Option<PathBuf>,
    /// JSON Lines: events (normalized, or either Kubernetes API's form) or test vectors.
    pub input: PathBuf,
    /// Run the input this many times (only the first pass is printed) for steadier timings.
    pub repeat: usize,
    /// The cluster name for events given in the Kubernetes API's form.
    pub cluster: String,
    /// Overrides the per-call timeout from the config (default 10 ms), e.g.
    /// to check a slow module's verdicts on a loaded machine.
    pub timeout: Option<Duration>,
}

/// What `filter test` found.
#[derive(Debug, Clone, Default)]
pub struct TestSummary {
    pub events: usize,
    pub keep: usize,
    pub drop: usize,
    pub replace: usize,
    pub edit: usize,
    pub errors: usize,
    pub vectors_passed: usize,
    pub vectors_failed: usize,
    pub median: Duration,
    pub p99: Duration,
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn micros(d: Duration) -> String {
    format!("{:.1}µs", d.as_secs_f64() * 1e6)
}

/// `filter test`: runs every input line through the module and prints each
/// verdict (with the changed fields of a replacement), then the timings.
/// Fails when a test vector fails.
pub fn filter_test(opts: &TestOptions, out: &mut dyn Write) -> anyhow::Result<TestSummary> {
    let (mut fc, note) = filter_config_for(&opts.module, opts.config.as_deref())?;
    if let Some(n) = note {
        writeln!(out, "note: {n}")?;
    }
    // Every event is really called: no breaker.
    fc.breaker_threshold = 0;
    fc.watch = false;
    if let Some(t) = opts.timeout {
        fc.timeout = t;
    }
    let wasm = WasmConfig {
        pooling: false,
        ..WasmConfig::default()
    };
    let host = FilterHost::with_options(
        std::slice::from_ref(&fc),
        &wasm,
        Arc::new(Metrics::new()),
        HostOptions {
            watch: false,
            run_vectors: false,
            inherit_stdio: true,
        },
    )?;
    let id = host.chain(&[fc.name.as_str()])?[0];
    let status = host.status(id);
    writeln!(
        out,
        "module {} ({}, sha256 {}), config {}",
        opts.module.display(),
        status.kind.map(ModuleKind::as_str).unwrap_or("?"),
        status.sha256.as_deref().unwrap_or("?"),
        fc.config_json
    )?;
    let text = std::fs::read_to_string(&opts.input).with_context(|| format!("{}", opts.input.display()))?;
    // Parse every line first: events, or vectors (with their own config, if any).
    let mut cases: Vec<(usize, Event, Option<vectors::Vector>)> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let t = line.trim();
        if t.is_empty() || t.starts_with("//") {
            continue;
        }
        let place = format!("{}:{}", opts.input.display(), i + 1);
        let value: serde_json::Value = serde_json::from_str(t).with_context(|| format!("{place}: not JSON"))?;
        if value.get("input").is_some() && value.get("expect").is_some() {
            let v = vectors::parse_line(t, &opts.input, i + 1)
                .map_err(|e| anyhow!(e))?
                .ok_or_else(|| anyhow!("{place}: empty"))?;
            cases.push((i + 1, v.input.clone(), Some(v)));
        } else {
            let ev = crate::explain::parse_event(t, &place, &opts.cluster)?;
            cases.push((i + 1, ev, None));
        }
    }
    let mut worker = host.worker();
    let mut summary = TestSummary::default();
    let mut times = Vec::with_capacity(cases.len() * opts.repeat.max(1));
    // Vectors with their own config run on a separate instance.
    let spec = |c: &FilterConfig| InstanceSpec {
        filter: Arc::from(c.name.as_str()),
        memory_limit: c.memory_limit,
        allow_env: c.allow_env.clone(),
        allow_read_dirs: c.allow_read_dirs.clone(),
        init_ticks: 5000,
        inherit_stdio: true,
    };
    for pass in 0..opts.repeat.max(1) {
        for (line, ev, vector) in &mut cases {
            let t0 = Instant::now();
            let result = match vector.as_ref().and_then(|v| v.config.as_ref()) {
                Some(cfg) => run_with_config(&opts.module, &fc, &spec(&fc), cfg, &*ev),
                None => worker.call(id, &mut *ev, None),
            };
            times.push(t0.elapsed());
            if pass > 0 {
                continue;
            }
            summary.events += 1;
            let verdict = vectors::describe(&result);
            match &result {
                StepResult::Keep => summary.keep += 1,
                StepResult::Drop => summary.drop += 1,
                StepResult::Replace(_) => summary.replace += 1,
                StepResult::Edit(_) => summary.edit += 1,
                _ => summary.errors += 1,
            }
            writeln!(
                out,
                "line {line}: {} → {verdict} ({})",
                ev.describe(),
                micros(*times.last().unwrap_or(&Duration::ZERO))
            )?;
            let changed = match &result {
                StepResult::Replace(new) => Some(serde_json::to_value(new).unwrap_or_default()),
                StepResult::Edit(edits) => Some(serde_json::to_value(edits.applied_to(&*ev)).unwrap_or_default()),
                _ => None,
            };
            if let Some(after) = changed {
                let before = serde_json::to_value(&*ev).unwrap_or_default();
                let d = vectors::diff(&before, &after);
                if d.is_empty() {
                    writeln!(out, "    (no field changed)")?;
                }
                for l in d {
                    writeln!(out, "    {l}")?;
                }
            }
            if let Some(v) = vector {
                match vectors::check(&v.expect, &result, &*ev) {
                    Ok(()) => {
                        summary.vectors_passed += 1;
                        writeln!(out, "    PASS (expect {})", expect_name(&v.expect))?;
                    }
                    Err(e) => {
                        summary.vectors_failed += 1;
                        writeln!(out, "    FAIL: {e}")?;
                    }
                }
            }
        }
    }
    times.sort_unstable();
    summary.median = percentile(&times, 0.5);
    summary.p99 = percentile(&times, 0.99);
    writeln!(
        out,
        "{} events: {} keep, {} drop, {} replace, {} edit, {} errors",
        summary.events, summary.keep, summary.drop, summary.replace, summary.edit, summary.errors
    )?;
    if summary.vectors_passed + summary.vectors_failed > 0 {
        writeln!(
            out,
            "vectors: {} passed, {} failed",
            summary.vectors_passed, summary.vectors_failed
        )?;
    }
    writeln!(
        out,
        "time per call ({} calls, host + guest): median {}, p99 {}",
        times.len(),
        micros(summary.median),
        micros(summary.p99)
    )?;
    if summary.vectors_failed > 0 {
        bail!("{} test vector(s) failed", summary.vectors_failed);
    }
    Ok(summary)
}

fn expect_name(e: &Expect) -> &'static str {
    match e {
        Expect::Keep => "keep",
        Expect::Drop => "drop",
        Expect::Replace(_) => "replace",
        Expect::Error => "error",
    }
}

/// One call on a fresh instance initialized with `config`.
fn run_with_config(module: &Path, fc: &FilterConfig, spec: &InstanceSpec, config: &str, ev: &Event) -> StepResult {
    let run = || -> Result<StepResult, String> {
        let wasm = WasmConfig {
            pooling: false,
            cache: true,
            tiered: false,
            ..WasmConfig::default()
        };
        let set = EngineSet::new(&wasm, fc.max_stack, fc.memory_limit)?;
        let bytes = std::fs::read(module).map_err(|e| format!("{}: {e}", module.display()))?;
        let sha = sha256_hex(&bytes);
        let cache = wasm
            .resolved_cache_dir()
            .and_then(|d| super::cache::ArtifactCache::open(&d, wasm.cache_max_size).ok());
        let v = module::load(
            &set,
            &bytes,
            &sha,
            module.to_path_buf(),
            1,
            cache.as_ref(),
            &Metrics::new(),
            false,
        )?;
        let mut inst = match v.instantiate(spec, config) {
            Ok(i) => i,
            Err(e) => return Ok(StepResult::Failed(e)),
        };
        let mut ev = ev.clone();
        let mut json = super::current::EventJson::new(None, Vec::new());
        // No epoch ticker here: a generous deadline that never fires.
        Ok(match inst.process(&mut ev, &mut json, super::engine::NO_DEADLINE) {
            Ok(out) => super::host::interpret(out, &ev),
            Err(e) => StepResult::Failed(e),
        })
    };
    run().unwrap_or_else(|e| StepResult::Failed(super::CallError::new(super::FailureKind::Instantiate, e)))
}

/// What `filter check` reports about one import.
fn import_note(name: &str, fc: &FilterConfig) -> String {
    let iface = name.split('@').next().unwrap_or(name);
    let base = iface.trim_start_matches("wasi:");
    if iface.starts_with("event-collector:filter/") {
        return "provided by the host".into();
    }
    if !iface.starts_with("wasi:") && !name.starts_with("wasi_snapshot_preview1") {
        return String::new();
    }
    let p1 = name.strip_prefix("wasi_snapshot_preview1.").unwrap_or("");
    let fs = base.starts_with("filesystem/")
        || p1.starts_with("path_")
        || p1.starts_with("fd_prestat")
        || p1 == "fd_readdir";
    let env = base == "cli/environment" || p1.starts_with("environ_");
    let net = base.starts_with("sockets/") || p1.starts_with("sock_");
    if fs {
        if fc.allow_read_dirs.is_empty() {
            "NOT GRANTED: no directories are visible (grant with allow_read_dirs)".into()
        } else {
            format!(
                "granted read-only: {}",
                fc.allow_read_dirs
                    .iter()
                    .map(|d| d.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        }
    } else if env {
        if fc.allow_env.is_empty() {
            "NOT GRANTED: the environment is empty (grant with allow_env)".into()
        } else {
            format!("granted: {}", fc.allow_env.join(", "))
        }
    } else if net {
        "NOT GRANTED: network access is always denied".into()
    } else if base.starts_with("clocks/")
        || base.starts_with("random/")
        || p1.starts_with("clock_")
        || p1 == "random_get"
    {
        "granted".into()
    } else if base == "cli/stdin" {
        "provided (empty)".into()
    } else if base.starts_with("cli/std") || p1 == "fd_write" {
        "provided (stdout and stderr output is discarded)".into()
    } else if base.starts_with("cli/terminal") {
        "provided (no terminal)".into()
    } else {
        "provided".into()
    }
}

/// A core export's type as a filter author reads it: `func(i32, i32) -> i32`,
/// `memory (17 pages, max 256)`, `global i32`, `table`.
fn extern_sig(ty: &wasmtime::ExternType) -> String {
    let list =
        |it: &mut dyn Iterator<Item = wasmtime::ValType>| it.map(|t| t.to_string()).collect::<Vec<_>>().join(", ");
    match ty {
        wasmtime::ExternType::Func(f) => {
            let results = list(&mut f.results());
            let arrow = match f.results().len() {
                0 => String::new(),
                1 => format!(" -> {results}"),
                _ => format!(" -> ({results})"),
            };
            format!("func({}){arrow}", list(&mut f.params()))
        }
        wasmtime::ExternType::Memory(m) => match m.maximum() {
            Some(max) => format!("memory ({} pages, max {max})", m.minimum()),
            None => format!("memory ({} pages)", m.minimum()),
        },
        wasmtime::ExternType::Global(g) => format!("global {}", g.content()),
        wasmtime::ExternType::Table(_) => "table".into(),
        wasmtime::ExternType::Tag(_) => "tag".into(),
    }
}

/// `filter check`: the contract version, exports, imports (with what the
/// config does not grant), and whether the module links and starts.
/// Fails when the module cannot be used as a filter.
pub fn filter_check(module: &Path, config: Option<&Path>, out: &mut dyn Write) -> anyhow::Result<()> {
    let (fc, note) = filter_config_for(module, config)?;
    if let Some(n) = note {
        writeln!(out, "note: {n}")?;
    }
    let bytes = std::fs::read(module).with_context(|| format!("{}", module.display()))?;
    let sha = sha256_hex(&bytes);
    let kind = detect_kind(&bytes).map_err(|e| anyhow!("{}: {e}", module.display()))?;
    writeln!(
        out,
        "module:   {} ({}, {:.1} KiB, sha256 {sha})",
        module.display(),
        kind.as_str(),
        bytes.len() as f64 / 1024.0
    )?;
    let wasm = WasmConfig {
        pooling: false,
        cache: false,
        tiered: false,
        ..WasmConfig::default()
    };
    let set = EngineSet::new(&wasm, fc.max_stack, fc.memory_limit).map_err(|e| anyhow!(e))?;
    let engine = set.engine().clone();
    let mut problems = Vec::new();
    match kind {
        ModuleKind::Component => {
            let c = wasmtime::component::Component::from_binary(&engine, &bytes)
                .map_err(|e| anyhow!("{}: does not compile: {e:#}", module.display()))?;
            let ty = c.component_type();
            let mut contract = None;
            writeln!(out, "exports:")?;
            for (name, ext) in ty.exports(&engine) {
                let funcs = match &ext.ty {
                    ComponentItem::ComponentInstance(i) => i
                        .exports(&engine)
                        .filter(|(_, e)| matches!(e.ty, ComponentItem::ComponentFunc(_)))
                        .map(|(n, _)| n.to_string())
                        .collect::<Vec<_>>()
                        .join(", "),
                    _ => String::new(),
                };
                if let Some(v) = name.strip_prefix("event-collector:filter/filter@") {
                    contract = Some(format!("event-collector:filter@{v}"));
                }
                writeln!(
                    out,
                    "  {name}{}",
                    if funcs.is_empty() {
                        String::new()
                    } else {
                        format!(": {funcs}")
                    }
                )?;
            }
            match &contract {
                Some(c) => writeln!(out, "contract: {c}")?,
                None => {
                    writeln!(
                        out,
                        "contract: none (no `event-collector:filter/filter@0.3.x`, `@0.2.x` or `@0.1.x` export)"
                    )?;
                    problems.push("it does not export the filter interface".to_string());
                }
            }
            writeln!(out, "imports:")?;
            for (name, _) in ty.imports(&engine) {
                let n = import_note(name, &fc);
                writeln!(
                    out,
                    "  {name}{}",
                    if n.is_empty() { String::new() } else { format!("  {n}") }
                )?;
            }
        }
        ModuleKind::Core => {
            let m = wasmtime::Module::from_binary(&engine, &bytes)
                .map_err(|e| anyhow!("{}: does not compile: {e:#}", module.display()))?;
            writeln!(
                out,
                "contract: core-module ABI (memory, alloc, process; optional init, _initialize)"
            )?;
            writeln!(out, "exports:")?;
            for e in m.exports() {
                writeln!(out, "  {}: {}", e.name(), extern_sig(&e.ty()))?;
            }
            if let Err(e) = check_core_exports(&m) {
                problems.push(e);
            }
            writeln!(out, "imports:")?;
            for i in m.imports() {
                let full = format!("{}.{}", i.module(), i.name());
                let n = import_note(&full, &fc);
                writeln!(
                    out,
                    "  {full}{}",
                    if n.is_empty() { String::new() } else { format!("  {n}") }
                )?;
            }
        }
    }
    if problems.is_empty() {
        match module::load(
            &set,
            &bytes,
            &sha,
            module.to_path_buf(),
            1,
            None,
            &Metrics::new(),
            false,
        ) {
            Ok(v) => {
                writeln!(out, "link:     ok")?;
                let spec = InstanceSpec {
                    filter: Arc::from(fc.name.as_str()),
                    memory_limit: fc.memory_limit,
                    allow_env: fc.allow_env.clone(),
                    allow_read_dirs: fc.allow_read_dirs.clone(),
                    init_ticks: super::engine::NO_DEADLINE,
                    inherit_stdio: true,
                };
                match v.instantiate(&spec, &fc.config_json) {
                    Ok(_) => writeln!(out, "init:     ok (config {})", fc.config_json)?,
                    Err(e) => {
                        writeln!(out, "init:     FAILED: {}", e.message)?;
                        problems.push(format!("init failed: {}", e.message));
                    }
                }
            }
            Err(e) => {
                writeln!(out, "link:     FAILED: {e}")?;
                problems.push(e);
            }
        }
    }
    if !problems.is_empty() {
        bail!("{}: {}", module.display(), problems.join("; "));
    }
    Ok(())
}
