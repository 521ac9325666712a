//! One live instance of a module: its store (limits, WASI context, log
//! state) and the per-call work for components and core modules.
//!
//! An instance is created once per filter per worker and reused for every
//! event; it is thrown away after a trap, a timeout or a memory failure
//! (a component instance is unusable after a trap), when its module version
//! changes, or when it is recycled.

use std::path::PathBuf;
use std::sync::Arc;

use wasmtime::component::{HasSelf, ResourceTable};
use wasmtime::{Caller, Engine, Linker, ResourceLimiter, Store, Trap, TypedFunc};
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use super::current::{EventJson, Lent};
use super::edit::{Edit, ExtraValue};
use super::module::{Code, ComponentPre, CoreExports};
use super::{CallError, FailureKind};
use crate::event::Event;

/// Host bindings generated from the contract (`guest-sdk/wit/filter.wit`,
/// `event-collector:filter@0.3.0`).
pub mod bindings {
    wasmtime::component::bindgen!({
        path: "../guest-sdk/wit",
        world: "event-filter",
    });
}

/// Host bindings for components built against 0.2.0 (an exact copy of that
/// contract in `guest-sdk/wit/compat/0.2.0`, a folder guest toolchains
/// pointed at `guest-sdk/wit` do not read). 0.2.0 sends the event JSON with
/// every `process` call.
pub mod bindings_v0_2 {
    wasmtime::component::bindgen!({
        path: "../guest-sdk/wit/compat/0.2.0",
        world: "event-filter",
    });
}

/// Host bindings for components built against 0.1.0 (`guest-sdk/wit/compat/0.1.0`):
/// as 0.2.0 without the `edit` verdict.
pub mod bindings_v0_1 {
    wasmtime::component::bindgen!({
        path: "../guest-sdk/wit/compat/0.1.0",
        world: "event-filter",
    });
}

use bindings::event_collector::filter::types as types_v0_3;
use bindings_v0_1::event_collector::filter::types as types_v0_1;
use bindings_v0_2::event_collector::filter::types as types_v0_2;

/// At most this many guest log lines per call; the rest are counted.
const MAX_LOG_LINES_PER_CALL: u32 = 32;
/// Guest log messages are cut to this many bytes.
const MAX_LOG_BYTES: usize = 4096;

/// Caps an instance's linear memory (all its memories together) and records
/// whether a growth was refused during the current call.
pub struct Limiter {
    limit: u64,
    used: u64,
    pending: u64,
    denied: bool,
}

impl Limiter {
    fn new(limit: u64) -> Self {
        Limiter {
            limit,
            used: 0,
            pending: 0,
            denied: false,
        }
    }
}

impl ResourceLimiter for Limiter {
    fn memory_growing(&mut self, current: usize, desired: usize, maximum: Option<usize>) -> wasmtime::Result<bool> {
        let grow = desired.saturating_sub(current) as u64;
        if self.used.saturating_add(grow) > self.limit || maximum.is_some_and(|m| desired > m) {
            self.denied = true;
            return Ok(false);
        }
        self.used += grow;
        self.pending = grow;
        Ok(true)
    }

    fn memory_grow_failed(&mut self, _error: wasmtime::Error) -> wasmtime::Result<()> {
        self.used = self.used.saturating_sub(self.pending);
        self.denied = true;
        Ok(())
    }

    fn table_growing(&mut self, _current: usize, desired: usize, maximum: Option<usize>) -> wasmtime::Result<bool> {
        Ok(desired <= 1_000_000 && maximum.is_none_or(|m| desired <= m))
    }
}

/// Routes guest log lines into the collector's log, tagged with the filter.
pub struct GuestLog {
    filter: Arc<str>,
    lines: u32,
    suppressed: u64,
}

impl GuestLog {
    fn new(filter: Arc<str>) -> Self {
        GuestLog {
            filter,
            lines: 0,
            suppressed: 0,
        }
    }

    fn start_call(&mut self) {
        if self.suppressed > 0 {
            tracing::warn!(filter = %self.filter, suppressed = self.suppressed, "guest log lines suppressed (at most {MAX_LOG_LINES_PER_CALL} per call)");
            self.suppressed = 0;
        }
        self.lines = 0;
    }

    /// `level`: 0 trace, 1 debug, 2 info, 3 warn, 4 error.
    fn log(&mut self, level: u8, message: &str) {
        if self.lines >= MAX_LOG_LINES_PER_CALL {
            self.suppressed += 1;
            return;
        }
        self.lines += 1;
        let mut end = message.len().min(MAX_LOG_BYTES);
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        let msg = &message[..end];
        let filter = &*self.filter;
        match level {
            0 => tracing::trace!(target: "event_collector::guest", filter, "{msg}"),
            1 => tracing::debug!(target: "event_collector::guest", filter, "{msg}"),
            2 => tracing::info!(target: "event_collector::guest", filter, "{msg}"),
            3 => tracing::warn!(target: "event_collector::guest", filter, "{msg}"),
            _ => tracing::error!(target: "event_collector::guest", filter, "{msg}"),
        }
    }
}

/// Store data of a component instance.
pub struct CompState {
    wasi: WasiCtx,
    table: ResourceTable,
    limiter: Limiter,
    log: GuestLog,
    /// The event of the `process` call in progress (contract 0.3), for `host.event`.
    current: Lent,
}

impl WasiView for CompState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// The `host` interface (`log`, and `event` from 0.3), in each contract version.
macro_rules! host_impl {
    ($types:ident, $host:path $(, $event:item)?) => {
        impl $types::Host for CompState {}

        impl $host for CompState {
            fn log(&mut self, level: $types::Level, message: String) {
                let l = match level {
                    $types::Level::Trace => 0,
                    $types::Level::Debug => 1,
                    $types::Level::Info => 2,
                    $types::Level::Warn => 3,
                    $types::Level::Error => 4,
                };
                self.log.log(l, &message);
            }
            $($event)?
        }
    };
}
host_impl!(
    types_v0_3,
    bindings::event_collector::filter::host::Host,
    fn event(&mut self) -> String {
        self.current.json()
    }
);
host_impl!(types_v0_2, bindings_v0_2::event_collector::filter::host::Host);
host_impl!(types_v0_1, bindings_v0_1::event_collector::filter::host::Host);

/// Store data of a core module instance.
pub struct CoreState {
    wasi: WasiP1Ctx,
    limiter: Limiter,
    log: GuestLog,
}

/// The component linker: WASI p2 (sync) and the contract's `host` interface,
/// in every version (0.3.0, 0.2.0 and 0.1.0).
pub(crate) fn component_linker(engine: &Engine) -> wasmtime::Result<wasmtime::component::Linker<CompState>> {
    let mut l = wasmtime::component::Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_sync(&mut l)?;
    bindings::EventFilter::add_to_linker::<CompState, HasSelf<CompState>>(&mut l, |s| s)?;
    bindings_v0_2::EventFilter::add_to_linker::<CompState, HasSelf<CompState>>(&mut l, |s| s)?;
    bindings_v0_1::EventFilter::add_to_linker::<CompState, HasSelf<CompState>>(&mut l, |s| s)?;
    Ok(l)
}

/// The core module linker: WASI p1 (Go needs it) and `event_collector.log`.
pub(crate) fn core_linker(engine: &Engine) -> wasmtime::Result<Linker<CoreState>> {
    let mut l = Linker::new(engine);
    wasmtime_wasi::p1::add_to_linker_sync(&mut l, |s: &mut CoreState| &mut s.wasi)?;
    l.func_wrap(
        "event_collector",
        "log",
        |mut caller: Caller<'_, CoreState>, level: i32, ptr: i32, len: i32| {
            let Some(mem) = caller.get_export("memory").and_then(|e| e.into_memory()) else {
                return;
            };
            let (start, len) = (ptr as u32 as usize, (len as u32 as usize).min(MAX_LOG_BYTES));
            let msg = mem
                .data(&caller)
                .get(start..start.saturating_add(len))
                .map(|b| String::from_utf8_lossy(b).into_owned());
            if let Some(msg) = msg {
                caller.data_mut().log.log(level.clamp(0, 4) as u8, &msg);
            }
        },
    )?;
    Ok(l)
}

/// What an instance needs besides its module: fixed per filter.
#[derive(Debug, Clone)]
pub struct InstanceSpec {
    pub filter: Arc<str>,
    pub memory_limit: u64,
    pub allow_env: Vec<String>,
    pub allow_read_dirs: Vec<PathBuf>,
    /// Epoch ticks for `_initialize` + `init`.
    pub init_ticks: u64,
    /// Give the guest the collector's stdout/stderr (author tools only).
    pub inherit_stdio: bool,
}

fn wasi_builder(spec: &InstanceSpec) -> Result<WasiCtxBuilder, String> {
    let mut b = WasiCtxBuilder::new();
    b.allow_blocking_current_thread(true)
        .allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false);
    if spec.inherit_stdio {
        b.inherit_stdout().inherit_stderr();
    }
    for name in &spec.allow_env {
        if let Ok(v) = std::env::var(name) {
            b.env(name, v);
        }
    }
    for dir in &spec.allow_read_dirs {
        b.preopened_dir(dir, dir.to_string_lossy(), FsPerms::ReadOnly)
            .map_err(|e| format!("cannot open allowed directory `{}`: {e:#}", dir.display()))?;
    }
    Ok(b)
}

/// What the guest answered, before the host validates a replacement or edits.
#[derive(Debug)]
pub enum GuestOut {
    Keep,
    Drop,
    /// A component's replacement JSON.
    ReplaceJson(String),
    /// A core module's replacement (already parsed as JSON).
    ReplaceValue(serde_json::Value),
    /// Changes to the event, in order (not yet checked).
    Edit(Vec<Edit>),
    Error(String),
}

pub struct CoreInstance {
    memory: wasmtime::Memory,
    alloc: TypedFunc<i32, i32>,
    process: TypedFunc<(i32, i32), i64>,
}

/// A component's bindings, in the contract version it was built against,
/// with its `event-fields` record (reused for every call).
pub enum CompBindings {
    V0_3 {
        filter: bindings::EventFilter,
        fields: types_v0_3::EventFields,
    },
    V0_2 {
        filter: bindings_v0_2::EventFilter,
        fields: types_v0_2::EventFields,
    },
    V0_1 {
        filter: bindings_v0_1::EventFilter,
        fields: types_v0_1::EventFields,
    },
}

/// A live instance.
pub enum Instance {
    Component {
        store: Store<CompState>,
        bindings: CompBindings,
    },
    Core {
        store: Store<CoreState>,
        inst: CoreInstance,
    },
}

/// Turns a wasmtime error from a call into a [`CallError`].
fn classify(err: wasmtime::Error, memory_denied: bool, what: &str) -> CallError {
    if let Some(trap) = err.downcast_ref::<Trap>() {
        if *trap == Trap::Interrupt {
            return CallError::new(FailureKind::Timeout, format!("{what}: timed out (epoch deadline)"));
        }
        let mut msg = format!("{what}: wasm trap: {trap}");
        if let Some(bt) = err.downcast_ref::<wasmtime::WasmBacktrace>() {
            let frames: Vec<String> = bt
                .frames()
                .iter()
                .take(4)
                .map(|f| {
                    f.func_name()
                        .map(str::to_string)
                        .unwrap_or_else(|| format!("func[{}]", f.func_index()))
                })
                .collect();
            if !frames.is_empty() {
                msg.push_str(&format!(" (in {})", frames.join(" <- ")));
            }
        }
        if memory_denied {
            return CallError::new(FailureKind::Memory, format!("memory limit reached; {msg}"));
        }
        return CallError::new(FailureKind::Trap, msg);
    }
    if memory_denied {
        return CallError::new(FailureKind::Memory, format!("{what}: memory limit reached: {err:#}"));
    }
    CallError::new(FailureKind::Trap, format!("{what}: {err:#}"))
}

fn out_of_bounds(what: &str) -> CallError {
    CallError::new(
        FailureKind::InvalidOutput,
        format!("{what} returned an out-of-bounds pointer or length"),
    )
}

/// A core module's verdict JSON.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct CoreVerdict {
    #[serde(default)]
    verdict: Option<String>,
    #[serde(default)]
    event: Option<serde_json::Value>,
    #[serde(default)]
    edits: Option<Vec<CoreEdit>>,
    #[serde(default)]
    error: Option<String>,
}

/// One edit in a core module's `{"verdict":"edit","edits":[...]}`: the
/// contract's variant names as keys, an extra value as JSON itself.
#[derive(serde::Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
enum CoreEdit {
    SetLabel(String, String),
    SetLabelIfAbsent(String, String),
    RemoveLabel(String),
    SetAnnotation(String, String),
    RemoveAnnotation(String),
    SetExtra(String, serde_json::Value),
    RemoveExtra(String),
    SetMessage(String),
}

impl From<CoreEdit> for Edit {
    fn from(e: CoreEdit) -> Edit {
        match e {
            CoreEdit::SetLabel(k, v) => Edit::SetLabel(k, v),
            CoreEdit::SetLabelIfAbsent(k, v) => Edit::SetLabelIfAbsent(k, v),
            CoreEdit::RemoveLabel(k) => Edit::RemoveLabel(k),
            CoreEdit::SetAnnotation(k, v) => Edit::SetAnnotation(k, v),
            CoreEdit::RemoveAnnotation(k) => Edit::RemoveAnnotation(k),
            CoreEdit::SetExtra(k, v) => Edit::SetExtra(k, ExtraValue::Json(v)),
            CoreEdit::RemoveExtra(k) => Edit::RemoveExtra(k),
            CoreEdit::SetMessage(m) => Edit::SetMessage(m),
        }
    }
}

/// Parses a core module's output: `{"verdict":"keep"|"drop"}`,
/// `{"verdict":"replace","event":{...}}`,
/// `{"verdict":"edit","edits":[{"set-label":["team","web"]},{"set-extra":["severity","high"]},...]}`
/// or `{"error":"msg"}`.
pub fn parse_core_verdict(out: &[u8]) -> Result<GuestOut, CallError> {
    let v: CoreVerdict = serde_json::from_slice(out).map_err(|e| {
        let shown = String::from_utf8_lossy(&out[..out.len().min(120)]).into_owned();
        CallError::new(
            FailureKind::InvalidOutput,
            format!("process returned an invalid verdict ({e}): {shown:?}"),
        )
    })?;
    if let Some(err) = v.error {
        return Ok(GuestOut::Error(err));
    }
    let invalid = |m: String| Err(CallError::new(FailureKind::InvalidOutput, m));
    match (v.verdict.as_deref(), v.event, v.edits) {
        (Some("keep"), None, None) => Ok(GuestOut::Keep),
        (Some("drop"), None, None) => Ok(GuestOut::Drop),
        (Some("replace"), Some(ev), None) => Ok(GuestOut::ReplaceValue(ev)),
        (Some("edit"), None, Some(edits)) => Ok(GuestOut::Edit(edits.into_iter().map(Edit::from).collect())),
        (Some("replace"), None, _) => invalid("verdict \"replace\" without an \"event\"".into()),
        (Some("edit"), _, None) => invalid("verdict \"edit\" without \"edits\"".into()),
        (Some(other @ ("keep" | "drop" | "edit")), Some(_), _) => {
            invalid(format!("verdict \"{other}\" must not carry an \"event\""))
        }
        (Some(other @ ("keep" | "drop" | "replace")), _, Some(_)) => {
            invalid(format!("verdict \"{other}\" must not carry \"edits\""))
        }
        (Some(other), _, _) => invalid(format!(
            "unknown verdict {other:?} (expected keep, drop, replace or edit)"
        )),
        (None, _, _) => invalid("the verdict JSON has neither \"verdict\" nor \"error\"".into()),
    }
}

fn unpack(packed: i64) -> (usize, usize) {
    let p = packed as u64;
    ((p >> 32) as usize, (p & 0xffff_ffff) as usize)
}

/// The fields the host extracts for `process` (components only).
pub fn event_fields(ev: &Event) -> types_v0_3::EventFields {
    let mut f = types_v0_3::EventFields::empty();
    f.fill(ev);
    f
}

/// The five `event-fields` members (event type, reason, namespace, kind,
/// name), the same in both contract versions.
trait FieldSlots {
    fn empty() -> Self;
    fn slots(&mut self) -> [&mut String; 5];

    /// Refills the fields from `ev`, reusing their buffers (no allocation once warm).
    fn fill(&mut self, ev: &Event) {
        let [event_type, reason, namespace, kind, name] = self.slots();
        let set = |s: &mut String, v: &str| {
            s.clear();
            s.push_str(v);
        };
        set(event_type, ev.type_.as_deref().unwrap_or(""));
        set(reason, ev.reason.as_deref().unwrap_or(""));
        set(namespace, &ev.namespace);
        set(kind, ev.kind());
        set(name, ev.object.name.as_deref().unwrap_or(""));
    }
}

macro_rules! field_slots {
    ($($t:ty),*) => {$(
        impl FieldSlots for $t {
            fn empty() -> Self {
                Self {
                    event_type: String::new(),
                    reason: String::new(),
                    namespace: String::new(),
                    kind: String::new(),
                    name: String::new(),
                }
            }
            fn slots(&mut self) -> [&mut String; 5] {
                [&mut self.event_type, &mut self.reason, &mut self.namespace, &mut self.kind, &mut self.name]
            }
        }
    )*};
}
field_slots!(
    types_v0_3::EventFields,
    types_v0_2::EventFields,
    types_v0_1::EventFields
);

/// A component's edit, in the host's terms (0.2 and 0.3 share the variant).
macro_rules! from_wit {
    ($name:ident, $types:ident $(, $extra:pat => $to:expr)*) => {
        fn $name(e: $types::Edit) -> Edit {
            use $types::Edit as W;
            match e {
                W::SetLabel((k, v)) => Edit::SetLabel(k, v),
                $($extra => $to,)*
                W::RemoveLabel(k) => Edit::RemoveLabel(k),
                W::SetAnnotation((k, v)) => Edit::SetAnnotation(k, v),
                W::RemoveAnnotation(k) => Edit::RemoveAnnotation(k),
                W::SetExtra((k, v)) => Edit::SetExtra(k, ExtraValue::Text(v)),
                W::RemoveExtra(k) => Edit::RemoveExtra(k),
                W::SetMessage(m) => Edit::SetMessage(m),
            }
        }
    };
}
from_wit!(from_wit_v0_3, types_v0_3, W::SetLabelIfAbsent((k, v)) => Edit::SetLabelIfAbsent(k, v));
from_wit!(from_wit_v0_2, types_v0_2);

impl Instance {
    /// Instantiates `code`, runs `_initialize` (core) and `init(config)`.
    pub fn new(engine: &Engine, code: &Code, spec: &InstanceSpec, config_json: &str) -> Result<Instance, CallError> {
        let inst_err = |m: String| CallError::new(FailureKind::Instantiate, m);
        let mut b = wasi_builder(spec).map_err(inst_err)?;
        match code {
            Code::Component(pre) => {
                let state = CompState {
                    wasi: b.build(),
                    table: ResourceTable::new(),
                    limiter: Limiter::new(spec.memory_limit),
                    log: GuestLog::new(spec.filter.clone()),
                    current: Lent::default(),
                };
                let mut store = Store::new(engine, state);
                store.limiter(|s| &mut s.limiter);
                store.epoch_deadline_trap();
                store.set_epoch_deadline(spec.init_ticks);
                let inst_fail = |store: &Store<CompState>, e: wasmtime::Error| {
                    let denied = store.data().limiter.denied;
                    let mut c = classify(e, denied, "instantiate");
                    if c.kind != FailureKind::Memory {
                        c.kind = FailureKind::Instantiate;
                    }
                    c
                };
                // The contract versions differ only in their generated types.
                macro_rules! start {
                    ($pre:expr, $variant:ident, $types:ident) => {{
                        let filter = $pre
                            .instantiate(&mut store)
                            .map_err(|e| inst_fail(&store, e))?;
                        store.data_mut().log.start_call();
                        let r = filter
                            .event_collector_filter_filter()
                            .call_init(&mut store, config_json);
                        let fields = $types::EventFields::empty();
                        (CompBindings::$variant { filter, fields }, r)
                    }};
                }
                let (bindings, r) = match pre {
                    ComponentPre::V0_3(pre) => start!(pre, V0_3, types_v0_3),
                    ComponentPre::V0_2(pre) => start!(pre, V0_2, types_v0_2),
                    ComponentPre::V0_1(pre) => start!(pre, V0_1, types_v0_1),
                };
                match r {
                    Ok(Ok(())) => {}
                    Ok(Err(msg)) => return Err(inst_err(format!("init rejected the config: {msg}"))),
                    Err(e) => {
                        let denied = store.data().limiter.denied;
                        let c = classify(e, denied, "init");
                        return Err(CallError::new(FailureKind::Instantiate, c.message));
                    }
                }
                store.data_mut().limiter.denied = false;
                Ok(Instance::Component { store, bindings })
            }
            Code::Core(core) => {
                let state = CoreState {
                    wasi: b.build_p1(),
                    limiter: Limiter::new(spec.memory_limit),
                    log: GuestLog::new(spec.filter.clone()),
                };
                let mut store = Store::new(engine, state);
                store.limiter(|s| &mut s.limiter);
                store.epoch_deadline_trap();
                store.set_epoch_deadline(spec.init_ticks);
                let instance = core.pre.instantiate(&mut store).map_err(|e| {
                    let denied = store.data().limiter.denied;
                    CallError::new(FailureKind::Instantiate, classify(e, denied, "instantiate").message)
                })?;
                let fail = |store: &Store<CoreState>, e: wasmtime::Error, what: &str| {
                    CallError::new(
                        FailureKind::Instantiate,
                        classify(e, store.data().limiter.denied, what).message,
                    )
                };
                let CoreExports { init, initialize } = core.exports;
                if initialize {
                    let f = instance
                        .get_typed_func::<(), ()>(&mut store, "_initialize")
                        .map_err(|e| fail(&store, e, "_initialize"))?;
                    f.call(&mut store, ()).map_err(|e| fail(&store, e, "_initialize"))?;
                }
                let memory = instance
                    .get_memory(&mut store, "memory")
                    .ok_or_else(|| inst_err("the module does not export `memory`".into()))?;
                let alloc = instance
                    .get_typed_func::<i32, i32>(&mut store, "alloc")
                    .map_err(|e| inst_err(format!("export `alloc(i32) -> i32`: {e:#}")))?;
                let process = instance
                    .get_typed_func::<(i32, i32), i64>(&mut store, "process")
                    .map_err(|e| inst_err(format!("export `process(i32, i32) -> i64`: {e:#}")))?;
                let inst = CoreInstance { memory, alloc, process };
                if init {
                    let f = instance
                        .get_typed_func::<(i32, i32), i64>(&mut store, "init")
                        .map_err(|e| inst_err(format!("export `init(i32, i32) -> i64`: {e:#}")))?;
                    store.data_mut().log.start_call();
                    let (ptr, len) = write_input(&mut store, &inst, config_json.as_bytes())
                        .map_err(|c| CallError::new(FailureKind::Instantiate, format!("init: {}", c.message)))?;
                    let packed = f.call(&mut store, (ptr, len)).map_err(|e| fail(&store, e, "init"))?;
                    if packed != 0 {
                        let (p, l) = unpack(packed);
                        let msg = inst
                            .memory
                            .data(&store)
                            .get(p..p.saturating_add(l))
                            .map(|b| String::from_utf8_lossy(b).into_owned())
                            .unwrap_or_else(|| "(error message out of bounds)".into());
                        return Err(inst_err(format!("init rejected the config: {msg}")));
                    }
                }
                store.data_mut().limiter.denied = false;
                Ok(Instance::Core { store, inst })
            }
        }
    }

    /// Runs `process` on one event within `ticks` epoch ticks. `json` is
    /// serialized only if the guest needs it: always for core modules and
    /// 0.1/0.2 components; for a 0.3 component only when it calls
    /// `host.event` (the event is lent to the store for the call and is back
    /// in `event` when this returns, also after a panic).
    pub fn process(&mut self, event: &mut Event, json: &mut EventJson<'_>, ticks: u64) -> Result<GuestOut, CallError> {
        match self {
            Instance::Component { store, bindings } => {
                store.set_epoch_deadline(ticks);
                store.data_mut().log.start_call();
                // The 0.2 and 0.1 contracts differ only in their generated types.
                macro_rules! call {
                    ($filter:expr, $fields:expr, $map:expr) => {{
                        let f = &mut *$fields;
                        f.fill(event);
                        let j = json.get(event);
                        $filter
                            .event_collector_filter_filter()
                            .call_process(&mut *store, f, j)
                            .map(|r| r.map($map))
                    }};
                }
                let r = match bindings {
                    CompBindings::V0_3 { filter, fields } => {
                        fields.fill(event);
                        store.data_mut().current.lend(event, json);
                        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                            filter.event_collector_filter_filter().call_process(&mut *store, fields)
                        }));
                        store.data_mut().current.give_back(event, json);
                        let r = r.unwrap_or_else(|panic| std::panic::resume_unwind(panic));
                        r.map(|r| {
                            r.map(|v| match v {
                                types_v0_3::Verdict::Keep => GuestOut::Keep,
                                types_v0_3::Verdict::Drop => GuestOut::Drop,
                                types_v0_3::Verdict::Replace(s) => GuestOut::ReplaceJson(s),
                                types_v0_3::Verdict::Edit(edits) => {
                                    GuestOut::Edit(edits.into_iter().map(from_wit_v0_3).collect())
                                }
                            })
                        })
                    }
                    CompBindings::V0_2 { filter, fields } => call!(filter, fields, |v| match v {
                        types_v0_2::Verdict::Keep => GuestOut::Keep,
                        types_v0_2::Verdict::Drop => GuestOut::Drop,
                        types_v0_2::Verdict::Replace(s) => GuestOut::ReplaceJson(s),
                        types_v0_2::Verdict::Edit(edits) =>
                            GuestOut::Edit(edits.into_iter().map(from_wit_v0_2).collect()),
                    }),
                    CompBindings::V0_1 { filter, fields } => call!(filter, fields, |v| match v {
                        types_v0_1::Verdict::Keep => GuestOut::Keep,
                        types_v0_1::Verdict::Drop => GuestOut::Drop,
                        types_v0_1::Verdict::Replace(s) => GuestOut::ReplaceJson(s),
                    }),
                };
                let denied = std::mem::take(&mut store.data_mut().limiter.denied);
                match r {
                    Ok(Ok(out)) => Ok(out),
                    Ok(Err(msg)) if denied => Err(CallError::new(
                        FailureKind::Memory,
                        format!("memory limit reached; the guest returned: {msg}"),
                    )),
                    Ok(Err(msg)) => Ok(GuestOut::Error(msg)),
                    Err(e) => Err(classify(e, denied, "process")),
                }
            }
            Instance::Core { store, inst } => {
                store.set_epoch_deadline(ticks);
                store.data_mut().log.start_call();
                let r = core_process(store, inst, json.get(event).as_bytes());
                let denied = std::mem::take(&mut store.data_mut().limiter.denied);
                match r {
                    Err(e) => Err(classify(e, denied, "process")),
                    Ok(Err(c)) => Err(c),
                    Ok(Ok(GuestOut::Error(msg))) if denied => Err(CallError::new(
                        FailureKind::Memory,
                        format!("memory limit reached; the guest returned: {msg}"),
                    )),
                    Ok(Ok(out)) => Ok(out),
                }
            }
        }
    }

    /// Calls of `host.event` since the last time this was asked (0.3
    /// components; the others get the JSON with every call).
    pub fn take_event_requests(&mut self) -> u64 {
        match self {
            Instance::Component { store, .. } => store.data_mut().current.take_requests(),
            Instance::Core { .. } => 0,
        }
    }

    /// Bytes of linear memory the instance holds now.
    pub fn memory_bytes(&self) -> u64 {
        match self {
            Instance::Component { store, .. } => store.data().limiter.used,
            Instance::Core { store, .. } => store.data().limiter.used,
        }
    }
}

/// Copies `bytes` into the guest through its `alloc`.
fn write_input(store: &mut Store<CoreState>, inst: &CoreInstance, bytes: &[u8]) -> Result<(i32, i32), CallError> {
    let len = i32::try_from(bytes.len())
        .map_err(|_| CallError::new(FailureKind::InvalidOutput, "input larger than 2 GiB"))?;
    let ptr = inst.alloc.call(&mut *store, len).map_err(|e| {
        let denied = store.data().limiter.denied;
        classify(e, denied, "alloc")
    })?;
    inst.memory
        .write(&mut *store, ptr as u32 as usize, bytes)
        .map_err(|_| out_of_bounds("alloc"))?;
    Ok((ptr, len))
}

/// alloc + copy + process + read the verdict. The outer error is a wasm
/// failure (classified by the caller); the inner one a contract violation.
fn core_process(
    store: &mut Store<CoreState>,
    inst: &CoreInstance,
    json: &[u8],
) -> wasmtime::Result<Result<GuestOut, CallError>> {
    let len = match i32::try_from(json.len()) {
        Ok(l) => l,
        Err(_) => {
            return Ok(Err(CallError::new(
                FailureKind::InvalidOutput,
                "event larger than 2 GiB",
            )));
        }
    };
    let ptr = inst.alloc.call(&mut *store, len)?;
    if inst.memory.write(&mut *store, ptr as u32 as usize, json).is_err() {
        return Ok(Err(out_of_bounds("alloc")));
    }
    let packed = inst.process.call(&mut *store, (ptr, len))?;
    if packed == 0 {
        return Ok(Ok(GuestOut::Keep));
    }
    let (p, l) = unpack(packed);
    let Some(out) = inst.memory.data(&*store).get(p..p.saturating_add(l)) else {
        return Ok(Err(out_of_bounds("process")));
    };
    Ok(parse_core_verdict(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn edits(out: &str) -> Vec<Edit> {
        match parse_core_verdict(out.as_bytes()) {
            Ok(GuestOut::Edit(e)) => e,
            other => panic!("{out}: {other:?}"),
        }
    }

    fn invalid(out: &str) -> String {
        match parse_core_verdict(out.as_bytes()) {
            Err(e) if e.kind == FailureKind::InvalidOutput => e.message,
            other => panic!("{out}: {other:?}"),
        }
    }

    #[test]
    fn core_edit_verdicts() {
        let e = edits(
            r#"{"verdict":"edit","edits":[{"set-label":["team","web"]},{"set-label-if-absent":["o","x"]},{"remove-label":"tier"},
                {"set-annotation":["a","1"]},{"remove-annotation":"b"},{"set-extra":["n",{"x":[1]}]},
                {"remove-extra":"old"},{"set-message":"m"}]}"#,
        );
        assert_eq!(
            e,
            vec![
                Edit::SetLabel("team".into(), "web".into()),
                Edit::SetLabelIfAbsent("o".into(), "x".into()),
                Edit::RemoveLabel("tier".into()),
                Edit::SetAnnotation("a".into(), "1".into()),
                Edit::RemoveAnnotation("b".into()),
                Edit::SetExtra("n".into(), ExtraValue::Json(serde_json::json!({"x": [1]}))),
                Edit::RemoveExtra("old".into()),
                Edit::SetMessage("m".into()),
            ]
        );
        assert!(edits(r#"{"verdict":"edit","edits":[]}"#).is_empty());
    }

    #[test]
    fn core_edit_verdicts_that_are_not() {
        assert!(invalid(r#"{"verdict":"edit"}"#).contains("without \"edits\""));
        assert!(invalid(r#"{"verdict":"keep","edits":[]}"#).contains("must not carry \"edits\""));
        assert!(invalid(r#"{"verdict":"replace","event":{},"edits":[]}"#).contains("must not carry \"edits\""));
        assert!(invalid(r#"{"verdict":"edit","edits":[],"event":{}}"#).contains("must not carry an \"event\""));
        assert!(invalid(r#"{"verdict":"edit","edits":[{"set-uid":"x"}]}"#).contains("invalid verdict"));
        assert!(invalid(r#"{"verdict":"edit","edits":[{"set-label":["k",1]}]}"#).contains("invalid verdict"));
        assert!(invalid(r#"{"verdict":"edit","edits":[{"set-label":"k"}]}"#).contains("invalid verdict"));
        assert!(invalid(r#"{"verdict":"maybe"}"#).contains("keep, drop, replace or edit"));
    }
}
