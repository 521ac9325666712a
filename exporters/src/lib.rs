//! The seam between the pipeline and every sink.
//!
//! This crate owns the [`Exporter`] trait (a batch of [`Record`]s in, an
//! acknowledgement out), the [`Health`] and [`ExportError`] types, and one
//! module per exporter, each a config struct plus a builder. It never imports
//! the runtime: records arrive already serialized, so a sink only writes bytes
//! and keys them on the few fields in [`RecordFields`].

pub mod delivered;
pub mod elasticsearch;
pub mod kafka;
pub mod stdout;
pub mod units;
pub mod volume;

use std::borrow::Cow;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;

pub use delivered::Delivered;

/// The fields of an event that exporters key, route or name things on.
/// Everything else stays inside [`Record::json`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecordFields {
    /// Shared with every event of the run (no copy per event).
    pub cluster: Arc<str>,
    /// `core/v1` or `events.k8s.io/v1` (a constant, no copy per event).
    pub api: Cow<'static, str>,
    pub uid: String,
    pub resource_version: String,
    pub namespace: String,
    pub name: String,
    pub event_type: String,
    pub reason: String,
    pub kind: String,
    pub object_uid: String,
    pub schema_version: u32,
    /// The event's chosen timestamp (RFC 3339), as in the JSON.
    pub timestamp: String,
}

/// One normalized event, serialized once and shared by every exporter on its route.
#[derive(Debug, Clone)]
pub struct Record {
    pub fields: RecordFields,
    /// The event as one JSON object, without a trailing newline.
    pub json: Bytes,
}

impl Record {
    pub fn new(fields: RecordFields, json: impl Into<Bytes>) -> Self {
        Self {
            fields,
            json: json.into(),
        }
    }
}

/// What the pipeline hands an exporter: records shared, never copied.
pub type Batch = [Arc<Record>];

/// Whether an exporter can deliver right now, and if not, why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    Ready,
    NotReady(String),
}

impl Health {
    pub fn is_ready(&self) -> bool {
        matches!(self, Health::Ready)
    }
}

/// Whether retrying the same batch can succeed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The sink is down, full or slow: retry with backoff.
    Transient,
    /// The records themselves are refused: retrying cannot help.
    Permanent,
}

/// Why an exporter did not acknowledge a whole batch. `reason` is a short,
/// fixed, low-cardinality word for metrics; `message` is for humans.
///
/// Sinks that report per record (bulk APIs, delivery reports) say which
/// records of the batch were delivered anyway (`delivered`) and which were
/// refused for good (`rejected`, with the sink's error). The pipeline
/// acknowledges the delivered ones, sends the rejected ones to the exporter's
/// dead-letter exporter, and resends only the rest (as `kind` says).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct ExportError {
    pub kind: ErrorKind,
    pub reason: &'static str,
    pub message: String,
    /// Indices into the batch of records that were delivered.
    pub delivered: Vec<usize>,
    /// Indices into the batch of records refused permanently, with why.
    pub rejected: Vec<(usize, String)>,
}

impl ExportError {
    pub fn transient(reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            kind: ErrorKind::Transient,
            reason,
            message: message.into(),
            delivered: Vec::new(),
            rejected: Vec::new(),
        }
    }

    pub fn permanent(reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            kind: ErrorKind::Permanent,
            reason,
            message: message.into(),
            delivered: Vec::new(),
            rejected: Vec::new(),
        }
    }

    /// Marks records of the batch (by index) as delivered despite the error.
    pub fn with_delivered(mut self, delivered: Vec<usize>) -> Self {
        self.delivered = delivered;
        self
    }

    /// Marks records of the batch (by index) as refused for good, each with its error.
    pub fn with_rejected(mut self, rejected: Vec<(usize, String)>) -> Self {
        self.rejected = rejected;
        self
    }
}

/// An error in an exporter's configuration, found before anything starts.
#[derive(Debug, Clone, thiserror::Error)]
#[error("exporter `{exporter}`: {message}")]
pub struct ConfigError {
    pub exporter: String,
    pub message: String,
}

/// A sink. The pipeline calls [`Exporter::export`] from one task per exporter,
/// one batch at a time, and retries a batch that failed with a transient error.
///
/// Acknowledgement contract: `Ok(())` means every record of the batch is
/// delivered as durably as the exporter's policy promises, so the checkpoint
/// may move past it. An `Err` means only the records it lists in `delivered`
/// count as delivered; an exporter that wrote more than it lists must either
/// undo it or make the resend harmless (idempotent keys).
#[async_trait]
pub trait Exporter: Send + Sync {
    /// The name the config gives this exporter.
    fn name(&self) -> &str;

    /// Deliver a batch; see the trait's acknowledgement contract.
    async fn export(&self, batch: &Batch) -> Result<(), ExportError>;

    /// Push out anything buffered (called on shutdown and reload).
    async fn flush(&self) -> Result<(), ExportError> {
        Ok(())
    }

    /// Whether the exporter can deliver now.
    fn health(&self) -> Health {
        Health::Ready
    }

    /// Where the sink's output ends right now, as an opaque string the same
    /// exporter's [`recover`](Exporter::recover) understands: every record
    /// exported after this call lands at or after it. Must be cheap (the
    /// pipeline asks a few times a second) and never block on I/O. `None`:
    /// the sink cannot tell (the default).
    fn position(&self) -> Option<String> {
        None
    }

    /// Called once at startup, before the first `export`: the (uid,
    /// resourceVersion) of every record the sink holds from `from` (a
    /// [`position`](Exporter::position) saved with the checkpoint; `None`: no
    /// position was saved) to its end. These may have been delivered after the
    /// last checkpoint write (a SIGKILL, a takeover); the pipeline does not
    /// send them to this exporter again and counts them as acknowledged.
    ///
    /// The default recovers nothing: right for sinks that absorb a resend
    /// themselves (Elasticsearch: a deterministic `_id` with `create`, 409 =
    /// already there) and for sinks that cannot be read back (stdout).
    /// An error only costs duplicates: the pipeline logs it and goes on.
    async fn recover(&self, from: Option<&str>) -> Result<Delivered, ExportError> {
        let _ = from;
        Ok(Delivered::default())
    }
}

/// A shared handle to any exporter.
pub type SharedExporter = Arc<dyn Exporter>;
