//! The WASM host: runs user filter and enricher modules on events.
//!
//! A module is either a **component** built against `guest-sdk/wit/filter.wit`
//! (`event-collector:filter@0.3.0`, which asks for the event JSON through
//! `host.event`; or 0.2.0, which gets it with every call; or 0.1.0, which
//! also lacks the `edit` verdict; with WASI p2 and the `host` imports) or
//! a **core module** speaking the plain-memory ABI (`alloc` / `process` /
//! optional `init` and `_initialize`, with WASI p1 and `event_collector.log`),
//! told apart by the bytes.
//!
//! - [`engine`]: one wasmtime engine per stack limit (Cranelift, pooling
//!   allocator, epoch interruption driven by one ticker thread).
//! - [`cache`]: compiled artifacts on disk, keyed by module sha256 + engine settings.
//! - [`module`]: compiling a file into a [`Version`] (ready to instantiate).
//! - [`instance`]: one live instance with its store, limits and WASI context,
//!   and the per-call work for both kinds.
//! - [`current`]: the event of a call and its JSON, serialized only on demand.
//! - [`edit`]: the `edit` verdict's changes, checked and applied.
//! - [`breaker`]: the per-filter circuit breaker.
//! - [`host`]: [`FilterHost`] (every filter's current version, validation,
//!   hot swap) and [`FilterWorker`] (one thread's instances and the chain runner).
//! - [`watch`]: the file watcher behind hot swap.
//! - [`vectors`]: `*.test.jsonl` test vectors beside a module.
//! - [`tools`]: `event-collector filter test` and `filter check`.
//!
//! Guest failures are values, never panics: a trap, a timeout, a memory cap or
//! bad output becomes a [`ChainOutcome`] according to the filter's `on_error`.

pub mod breaker;
pub mod cache;
pub mod current;
pub mod edit;
pub mod engine;
pub mod host;
pub mod instance;
pub mod module;
pub mod tools;
pub mod vectors;
pub mod watch;

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use crate::event::Event;

pub use breaker::BreakerState;
pub use edit::{Edit, Edits};
pub use host::{FilterHost, FilterStatus, FilterWorker, HostOptions, StepTrace};
pub use module::{ModuleKind, Version};

/// A filter's index in its [`FilterHost`]: resolve names once, then run chains by id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FilterId(pub(crate) u32);

impl FilterId {
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// What a chain of filters decided about one event.
#[derive(Debug, Clone, PartialEq)]
pub enum ChainOutcome {
    /// Pass the event on; `replaced` when some filter changed it.
    Keep { event: Event, replaced: bool },
    /// A filter dropped it: by its verdict (`error` None), or by `on_error = "drop"`
    /// after a failure (`error` says why).
    Drop { by: Arc<str>, error: Option<String> },
    /// A filter failed and its `on_error` is `dead-letter`: write `event` (as it
    /// was when it reached that filter) with `error` to `exporter`.
    DeadLetter {
        event: Event,
        filter: Arc<str>,
        error: String,
        exporter: Arc<str>,
    },
}

/// Why one call failed: the kind decides the metric label and whether the
/// instance is replaced before the next call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailureKind {
    /// A wasm trap (unreachable, out-of-bounds access, stack overflow, ...).
    Trap,
    /// The epoch deadline (`timeout`) passed.
    Timeout,
    /// The instance hit `memory_limit`.
    Memory,
    /// The guest returned an error.
    GuestError,
    /// The guest's output is not a valid verdict, a replaced event is invalid,
    /// or an edit is invalid.
    InvalidOutput,
    /// The module could not be instantiated or its `init` failed.
    Instantiate,
    /// A host function panicked during the call (a bug; contained).
    Panic,
}

impl FailureKind {
    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::Trap => "trap",
            FailureKind::Timeout => "timeout",
            FailureKind::Memory => "memory",
            FailureKind::GuestError => "guest_error",
            FailureKind::InvalidOutput => "invalid_output",
            FailureKind::Instantiate => "instantiate",
            FailureKind::Panic => "panic",
        }
    }

    /// Whether the instance must be thrown away (component instances are
    /// poisoned after a trap; core instances may hold corrupt state).
    pub fn poisons(self) -> bool {
        !matches!(self, FailureKind::GuestError | FailureKind::InvalidOutput)
    }
}

impl fmt::Display for FailureKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One failed call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallError {
    pub kind: FailureKind,
    pub message: String,
}

impl CallError {
    pub fn new(kind: FailureKind, message: impl Into<String>) -> Self {
        CallError {
            kind,
            message: message.into(),
        }
    }
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind, self.message)
    }
}

/// The result of one filter on one event, before `on_error` is applied.
#[derive(Debug, Clone, PartialEq)]
pub enum StepResult {
    Keep,
    Drop,
    /// The validated replacement event.
    Replace(Box<Event>),
    /// Checked changes to the event (the `edit` verdict): the chain applies
    /// them to the event it owns, [`Edits::applied_to`] gives a changed copy.
    Edit(edit::Edits),
    Failed(CallError),
    /// Not called: the breaker is open (with its error), or the module was
    /// deleted with `on_delete = "bypass"` (None).
    Bypassed(Option<String>),
}

/// Errors building the host or loading a module; each names the filter and its file.
#[derive(Debug, Clone, thiserror::Error)]
pub enum FilterError {
    #[error("filter `{filter}` ({}): {message}", module.display())]
    Module {
        filter: String,
        module: PathBuf,
        message: String,
    },
    #[error("WASM engine: {0}")]
    Engine(String),
    #[error("unknown filter `{0}`")]
    Unknown(String),
}
