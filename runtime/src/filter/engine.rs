//! The wasmtime engine: Cranelift, component model and core modules, the
//! pooling allocator, and epoch interruption driven by one ticker thread.
//!
//! Each engine set has two code generators ([`CodeGen`]): Cranelift, which
//! every module ends up on, and (with `[wasm] tiered`, on x86-64) Winch, a
//! baseline compiler 3-5× faster to compile, that a hot-swapped module runs on
//! while Cranelift compiles it in the background (see `host.rs`).
//!
//! `max_wasm_stack` is an engine setting in wasmtime, so filters with different
//! `max_stack` get different engines (usually there is one). Each engine comes
//! with its two linkers (components: WASI p2 + `host.log`; core modules: WASI
//! p1 + `event_collector.log`), built once.

use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use wasmtime::{Engine, InstanceAllocationStrategy, OptLevel, PoolingAllocationConfig, Strategy};

use super::instance::{CompState, CoreState, component_linker, core_linker};
use crate::config::WasmConfig;

/// An epoch deadline that never comes (the epoch is added to it, so not u64::MAX).
pub const NO_DEADLINE: u64 = u64::MAX / 4;

/// The wasmtime release this host is built on (part of every cache key).
pub const WASMTIME_VERSION: &str = "48.0.8";

/// Which compiler made a module's code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Tier {
    /// Cranelift, optimizing: what every module runs on in the end.
    Optimized,
    /// Winch, single pass: a hot-swapped module's first code, until Cranelift's is ready.
    Baseline,
}

impl Tier {
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Optimized => "optimized",
            Tier::Baseline => "baseline",
        }
    }
}

/// One compiler's engine and the linkers built for it.
pub struct CodeGen {
    pub(crate) engine: Engine,
    pub(crate) tier: Tier,
    /// Identifies the engine's code-generation settings (for cache keys).
    pub(crate) key: String,
    pub(crate) component_linker: wasmtime::component::Linker<CompState>,
    pub(crate) core_linker: wasmtime::Linker<CoreState>,
}

/// The engines of filters with one stack limit, and what is built once per engine.
pub struct EngineSet {
    pub(crate) optimized: CodeGen,
    /// Winch, when `[wasm] tiered` is on and the target has it.
    pub(crate) baseline: Option<CodeGen>,
    pub(crate) max_stack: u64,
    pub(crate) tick: Duration,
    pub(crate) epoch: bool,
}

impl EngineSet {
    /// Builds an engine for filters with this stack limit; `max_memory` is the
    /// largest `memory_limit` among them (the pool's slot size).
    pub fn new(wasm: &WasmConfig, max_stack: u64, max_memory: u64) -> Result<EngineSet, String> {
        let optimized = CodeGen::new(wasm, Tier::Optimized, max_stack, max_memory)?;
        let baseline = if wasm.tiered && cfg!(target_arch = "x86_64") {
            match CodeGen::new(wasm, Tier::Baseline, max_stack, max_memory) {
                Ok(g) => Some(g),
                Err(e) => {
                    tracing::warn!(error = %e, "no baseline compiler: a hot-swapped module waits for Cranelift");
                    None
                }
            }
        } else {
            None
        };
        Ok(EngineSet {
            optimized,
            baseline,
            max_stack,
            tick: wasm.epoch_tick,
            epoch: wasm.epoch_interruption,
        })
    }

    /// The optimizing engine.
    pub fn engine(&self) -> &Engine {
        &self.optimized.engine
    }

    /// Every engine of the set (for the epoch ticker).
    pub fn engines(&self) -> impl Iterator<Item = &Engine> {
        std::iter::once(&self.optimized.engine).chain(self.baseline.as_ref().map(|b| &b.engine))
    }

    /// Epoch ticks for a deadline of `d` (at least one).
    pub fn ticks(&self, d: Duration) -> u64 {
        let tick = self.tick.as_nanos().max(1);
        (d.as_nanos().div_ceil(tick) as u64).max(1)
    }
}

impl CodeGen {
    fn new(wasm: &WasmConfig, tier: Tier, max_stack: u64, max_memory: u64) -> Result<CodeGen, String> {
        let mut c = wasmtime::Config::new();
        c.wasm_component_model(true)
            .epoch_interruption(wasm.epoch_interruption)
            .max_wasm_stack(max_stack as usize)
            .parallel_compilation(true);
        match tier {
            Tier::Optimized => {
                c.strategy(Strategy::Cranelift).cranelift_opt_level(OptLevel::Speed);
            }
            Tier::Baseline => {
                c.strategy(Strategy::Winch);
            }
        }
        // The baseline engine holds a module for seconds at a time: instances
        // are allocated on demand rather than from a second reserved pool.
        if wasm.pooling && tier == Tier::Optimized {
            let n = wasm.max_instances.max(1);
            let mut pool = PoolingAllocationConfig::new();
            pool.total_component_instances(n)
                .total_core_instances(n.saturating_mul(8))
                .total_memories(n.saturating_mul(2))
                .total_tables(n.saturating_mul(4))
                .total_stacks(0)
                .max_core_instances_per_component(64)
                .max_memories_per_component(16)
                .max_tables_per_component(32)
                .table_elements(100_000)
                .max_memory_size(round_to_page(max_memory.max(64 << 10)) as usize);
            c.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        }
        let engine =
            Engine::new(&c).map_err(|e| format!("cannot create the wasmtime engine ({}): {e:#}", tier.as_str()))?;
        let key = engine_key(&engine, wasm, tier);
        let component_linker = component_linker(&engine).map_err(|e| format!("component linker: {e:#}"))?;
        let core_linker = core_linker(&engine).map_err(|e| format!("core module linker: {e:#}"))?;
        Ok(CodeGen {
            engine,
            tier,
            key,
            component_linker,
            core_linker,
        })
    }
}

fn round_to_page(n: u64) -> u64 {
    n.div_ceil(65536).saturating_mul(65536)
}

/// A stable name for the engine's code-generation settings: wasmtime's own
/// compatibility hash (target, flags, tunables) plus its version.
fn engine_key(engine: &Engine, wasm: &WasmConfig, tier: Tier) -> String {
    // DefaultHasher::new() uses fixed keys: the same engine settings give the
    // same value in every process built with the same toolchain.
    let mut h = std::hash::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut h);
    format!(
        "wasmtime-{WASMTIME_VERSION}-{:016x}-epoch{}-pool{}{}",
        h.finish(),
        u8::from(wasm.epoch_interruption),
        u8::from(wasm.pooling),
        match tier {
            Tier::Optimized => "",
            Tier::Baseline => "-winch",
        }
    )
}

/// The one thread that advances the epoch of every engine.
pub struct Ticker {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl Ticker {
    pub fn start(engines: Vec<Engine>, tick: Duration) -> Result<Ticker, String> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::Builder::new()
            .name("wasm-epoch".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(tick);
                    for e in &engines {
                        e.increment_epoch();
                    }
                }
            })
            .map_err(|e| format!("cannot start the epoch ticker thread: {e}"))?;
        Ok(Ticker {
            stop,
            handle: Some(handle),
        })
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}
