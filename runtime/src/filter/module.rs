//! From a file's bytes to a [`Version`]: detect the kind, compile (or load the
//! cached artifact), check the exports, and link against the engine's linker
//! so instantiation on the event path does no lookup work.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmtime::component::Component;
use wasmtime::{Engine, ExternType, Module, ValType};

use super::CallError;
use super::cache::{ArtifactCache, Lookup};
use super::engine::{CodeGen, EngineSet, Tier};
use super::instance::{CompState, CoreState, Instance, InstanceSpec, bindings, bindings_v0_1, bindings_v0_2};
use crate::metrics::Metrics;

/// Which ABI a module speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ModuleKind {
    /// A WASM component targeting the `event-filter` world.
    Component,
    /// A core module with the `alloc`/`process` memory ABI.
    Core,
}

impl ModuleKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ModuleKind::Component => "component",
            ModuleKind::Core => "core module",
        }
    }
}

/// Tells a component from a core module by the header
/// (`\0asm`, then version 1 layer 0 for modules, layer 1 for components).
pub fn detect_kind(bytes: &[u8]) -> Result<ModuleKind, String> {
    if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
        return Err("not a WebAssembly binary (no \\0asm header)".into());
    }
    match (bytes[6], bytes[7]) {
        (0, 0) => Ok(ModuleKind::Core),
        (1, 0) => Ok(ModuleKind::Component),
        (a, b) => Err(format!("unknown WebAssembly layer {a}.{b}")),
    }
}

/// Which optional exports a core module has.
#[derive(Debug, Clone, Copy)]
pub struct CoreExports {
    pub init: bool,
    pub initialize: bool,
}

/// A linked core module.
pub struct CorePre {
    pub(crate) pre: wasmtime::InstancePre<CoreState>,
    pub(crate) exports: CoreExports,
}

/// A linked component, with the bindings of the contract version it exports.
pub enum ComponentPre {
    /// `event-collector:filter/filter@0.3.x` (asks for the event JSON with `host.event`).
    V0_3(bindings::EventFilterPre<CompState>),
    /// `event-collector:filter/filter@0.2.x` (has the `edit` verdict).
    V0_2(bindings_v0_2::EventFilterPre<CompState>),
    /// `event-collector:filter/filter@0.1.x`.
    V0_1(bindings_v0_1::EventFilterPre<CompState>),
}

impl ComponentPre {
    /// The contract version, as `0.3`, `0.2` or `0.1`.
    pub fn contract(&self) -> &'static str {
        match self {
            ComponentPre::V0_3(_) => "0.3",
            ComponentPre::V0_2(_) => "0.2",
            ComponentPre::V0_1(_) => "0.1",
        }
    }
}

/// Which contract version a component's exports speak (by the name of its
/// `filter` interface export), or None.
pub fn component_contract(component: &Component, engine: &Engine) -> Option<&'static str> {
    let ty = component.component_type();
    ty.exports(engine).find_map(|(name, _)| {
        ["0.3", "0.2", "0.1"].into_iter().find(|v| {
            name.strip_prefix("event-collector:filter/filter@")
                .is_some_and(|rest| rest.starts_with(&format!("{v}.")))
        })
    })
}

/// Compiled and linked code, ready to instantiate.
pub enum Code {
    Component(ComponentPre),
    Core(CorePre),
}

/// One version of a filter's module: what the worker instantiates.
pub struct Version {
    /// sha256 of the module file, hex.
    pub sha256: Arc<str>,
    /// Counts versions of this filter from 1 (each swap adds one).
    pub generation: u64,
    pub path: PathBuf,
    pub kind: ModuleKind,
    /// Which compiler made the code: baseline until Cranelift's is ready.
    pub tier: Tier,
    /// Loaded from the artifact cache instead of compiled.
    pub from_cache: bool,
    /// Time to compile or load.
    pub load_time: Duration,
    pub(crate) engine: Engine,
    pub(crate) code: Code,
}

impl std::fmt::Debug for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Version")
            .field("sha256", &self.sha256)
            .field("generation", &self.generation)
            .field("path", &self.path)
            .field("kind", &self.kind)
            .field("tier", &self.tier)
            .field("from_cache", &self.from_cache)
            .finish()
    }
}

/// wasmtime's error (from the memfd crate) when the memory image's seals are refused.
const SEAL_REFUSED: &str = "cannot add seals to the memfd";
/// Further tries after a refused seal.
const SEAL_RETRIES: u64 = 2;

impl Version {
    /// A new instance of this version, as a worker makes on its first event.
    ///
    /// The module's memory image is made on its first instantiation, in a
    /// sealed memfd. Linux refuses the seal (EBUSY) while something else holds
    /// a reference to one of its pages (the kernel's DAMON monitor does, for a
    /// moment). Nothing was cached by the failed try, so instantiation is
    /// tried again, at most [`SEAL_RETRIES`] times, 20 and 40 ms later.
    pub fn instantiate(&self, spec: &InstanceSpec, config_json: &str) -> Result<Instance, CallError> {
        let mut tries = 0;
        loop {
            match Instance::new(&self.engine, &self.code, spec, config_json) {
                Err(e) if e.message.contains(SEAL_REFUSED) && tries < SEAL_RETRIES => {
                    tries += 1;
                    tracing::debug!(filter = %spec.filter, error = %e.message, "memory image not sealed; instantiating again");
                    std::thread::sleep(std::time::Duration::from_millis(20 * tries));
                }
                r => return r,
            }
        }
    }

    /// The first 12 hex digits of the sha256, for log lines.
    pub fn short(&self) -> &str {
        &self.sha256[..self.sha256.len().min(12)]
    }
}

fn func_sig(ty: &ExternType) -> Option<(Vec<ValType>, Vec<ValType>)> {
    match ty {
        ExternType::Func(f) => Some((f.params().collect(), f.results().collect())),
        _ => None,
    }
}

fn is_sig(ty: &ExternType, params: &[&str], results: &[&str]) -> bool {
    let Some((p, r)) = func_sig(ty) else { return false };
    let name = |v: &ValType| match v {
        ValType::I32 => "i32",
        ValType::I64 => "i64",
        _ => "other",
    };
    p.iter().map(name).eq(params.iter().copied()) && r.iter().map(name).eq(results.iter().copied())
}

/// Checks a core module's exports against the ABI.
pub fn check_core_exports(module: &Module) -> Result<CoreExports, String> {
    let mut memory = false;
    let mut alloc = None;
    let mut process = None;
    let mut init = None;
    let mut initialize = None;
    for e in module.exports() {
        let ty = e.ty();
        match e.name() {
            "memory" => memory = matches!(ty, ExternType::Memory(_)),
            "alloc" => alloc = Some(is_sig(&ty, &["i32"], &["i32"])),
            "process" => process = Some(is_sig(&ty, &["i32", "i32"], &["i64"])),
            "init" => init = Some(is_sig(&ty, &["i32", "i32"], &["i64"])),
            "_initialize" => initialize = Some(is_sig(&ty, &[], &[])),
            _ => {}
        }
    }
    let mut problems = Vec::new();
    if !memory {
        problems.push("it must export its linear memory as `memory`".to_string());
    }
    match alloc {
        None => problems.push("it must export `alloc(size: i32) -> i32`".into()),
        Some(false) => problems.push("`alloc` must have the type (i32) -> i32".into()),
        _ => {}
    }
    match process {
        None => problems.push("it must export `process(ptr: i32, len: i32) -> i64`".into()),
        Some(false) => problems.push("`process` must have the type (i32, i32) -> i64".into()),
        _ => {}
    }
    if init == Some(false) {
        problems.push("`init` must have the type (i32, i32) -> i64".into());
    }
    if initialize == Some(false) {
        problems.push("`_initialize` must have the type () -> ()".into());
    }
    if !problems.is_empty() {
        return Err(format!("not a valid core filter module: {}", problems.join("; ")));
    }
    Ok(CoreExports {
        init: init.is_some(),
        initialize: initialize.is_some(),
    })
}

enum Compiled {
    Component(Component),
    Core(Module),
}

/// Compiles `bytes` (or loads the cached artifact) and links it.
///
/// With `quick` (a hot swap) and a baseline compiler in the set, a module not
/// in the cache is compiled by Winch: the caller then calls [`optimize`] off
/// the event path. A module Winch cannot compile goes to Cranelift at once.
#[allow(clippy::too_many_arguments)]
pub fn load(
    set: &EngineSet,
    bytes: &[u8],
    sha256: &str,
    path: PathBuf,
    generation: u64,
    cache: Option<&ArtifactCache>,
    metrics: &Metrics,
    quick: bool,
) -> Result<Version, String> {
    let start = Instant::now();
    let kind = detect_kind(bytes)?;
    let cg = &set.optimized;
    let key = ArtifactCache::key(sha256, &cg.key, kind);
    let ident = Ident {
        sha256,
        path,
        generation,
        kind,
    };
    if let Some(c) = cache.and_then(|c| lookup(c, &key, cg, kind, metrics)) {
        return link(cg, c, ident, true, start);
    }
    if quick && let Some(base) = &set.baseline {
        match compile(base, kind, bytes) {
            Ok(c) => return link(base, c, ident, false, start),
            Err(e) => {
                tracing::debug!(sha256, error = %e, "the baseline compiler cannot take this module; using Cranelift")
            }
        }
    }
    optimized(set, ident, bytes, cache, metrics, start)
}

/// Compiles a baseline version's module with Cranelift (and caches it): the
/// same module, sha256 and generation, on optimized code.
pub fn optimize(
    set: &EngineSet,
    baseline: &Version,
    bytes: &[u8],
    cache: Option<&ArtifactCache>,
    metrics: &Metrics,
) -> Result<Version, String> {
    let ident = Ident {
        sha256: &baseline.sha256,
        path: baseline.path.clone(),
        generation: baseline.generation,
        kind: baseline.kind,
    };
    optimized(set, ident, bytes, cache, metrics, Instant::now())
}

/// Compiles with Cranelift, caches the artifact and links it.
fn optimized(
    set: &EngineSet,
    ident: Ident<'_>,
    bytes: &[u8],
    cache: Option<&ArtifactCache>,
    metrics: &Metrics,
    start: Instant,
) -> Result<Version, String> {
    let cg = &set.optimized;
    let c = compile(cg, ident.kind, bytes)?;
    if let Some(cache) = cache {
        store(
            cache,
            &ArtifactCache::key(ident.sha256, &cg.key, ident.kind),
            &c,
            metrics,
        );
    }
    link(cg, c, ident, false, start)
}

/// What names a version, whichever code it runs.
struct Ident<'a> {
    sha256: &'a str,
    path: PathBuf,
    generation: u64,
    kind: ModuleKind,
}

/// The cached artifact for `key`, if there is a usable one.
fn lookup(cache: &ArtifactCache, key: &str, cg: &CodeGen, kind: ModuleKind, metrics: &Metrics) -> Option<Compiled> {
    match cache.load(key) {
        Lookup::Hit(art) => {
            // SAFETY: the artifact was written by this program (checked
            // owner, permissions and checksum in `ArtifactCache::load`), and
            // wasmtime checks that it was built by a compatible engine.
            let r = match kind {
                ModuleKind::Component => unsafe { Component::deserialize(&cg.engine, &art) }.map(Compiled::Component),
                ModuleKind::Core => unsafe { Module::deserialize(&cg.engine, &art) }.map(Compiled::Core),
            };
            match r {
                Ok(c) => {
                    metrics.filter_cache("hit");
                    Some(c)
                }
                Err(e) => {
                    metrics.filter_cache("invalid");
                    tracing::warn!(cache = %cache.dir().display(), key, error = %format!("{e:#}"), "cached artifact not usable; compiling again");
                    None
                }
            }
        }
        Lookup::Miss => {
            metrics.filter_cache("miss");
            None
        }
        Lookup::Invalid(why) => {
            metrics.filter_cache("invalid");
            tracing::warn!(cache = %cache.dir().display(), key, reason = %why, "cached artifact not trusted; compiling again");
            None
        }
    }
}

fn compile(cg: &CodeGen, kind: ModuleKind, bytes: &[u8]) -> Result<Compiled, String> {
    match kind {
        ModuleKind::Component => Component::from_binary(&cg.engine, bytes).map(Compiled::Component),
        ModuleKind::Core => Module::from_binary(&cg.engine, bytes).map(Compiled::Core),
    }
    .map_err(|e| format!("does not compile: {e:#}"))
}

/// Writes a compiled module to the cache; a failure is logged, not fatal.
fn store(cache: &ArtifactCache, key: &str, c: &Compiled, metrics: &Metrics) {
    let art = match c {
        Compiled::Component(c) => c.serialize(),
        Compiled::Core(m) => m.serialize(),
    };
    match art.map_err(|e| format!("{e:#}")).and_then(|a| cache.store(key, &a)) {
        Ok(pruned) if pruned.entries > 0 => {
            metrics.filter_cache_by("evicted", pruned.entries as u64);
            tracing::info!(
                cache = %cache.dir().display(),
                removed = pruned.entries,
                removed_bytes = pruned.bytes,
                "compiled-module cache over cache_max_size: least recently used artifacts removed"
            );
        }
        Ok(_) => {}
        Err(e) => {
            metrics.filter_cache("write_failed");
            tracing::warn!(cache = %cache.dir().display(), error = %e, "cannot cache the compiled module");
        }
    }
}

/// Links compiled code against the generator's linker: a [`Version`].
fn link(
    cg: &CodeGen,
    compiled: Compiled,
    ident: Ident<'_>,
    from_cache: bool,
    start: Instant,
) -> Result<Version, String> {
    let engine = &cg.engine;
    let code = match compiled {
        Compiled::Component(c) => {
            let pre = cg
                .component_linker
                .instantiate_pre(&c)
                .map_err(|e| format!("cannot be linked: {e:#}"))?;
            let pre = match component_contract(&c, engine) {
                Some("0.3") => bindings::EventFilterPre::new(pre).map(ComponentPre::V0_3),
                Some("0.2") => bindings_v0_2::EventFilterPre::new(pre).map(ComponentPre::V0_2),
                Some(_) => bindings_v0_1::EventFilterPre::new(pre).map(ComponentPre::V0_1),
                None => Err(wasmtime::format_err!("no such export")),
            }
            .map_err(|e| {
                format!(
                    "does not export the `event-collector:filter/filter@0.3.x` (or `@0.2.x`, `@0.1.x`) interface: {e:#}"
                )
            })?;
            Code::Component(pre)
        }
        Compiled::Core(m) => {
            let exports = check_core_exports(&m)?;
            let pre = cg
                .core_linker
                .instantiate_pre(&m)
                .map_err(|e| format!("cannot be linked: {e:#}"))?;
            Code::Core(CorePre { pre, exports })
        }
    };
    Ok(Version {
        sha256: Arc::from(ident.sha256),
        generation: ident.generation,
        path: ident.path,
        kind: ident.kind,
        tier: cg.tier,
        from_cache,
        load_time: start.elapsed(),
        engine: engine.clone(),
        code,
    })
}
