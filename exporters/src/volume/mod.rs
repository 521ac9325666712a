//! The Volume exporter: events as JSON Lines files in a directory, with
//! rotation, optional gzip, retention and a configurable fsync policy.
//!
//! # Files
//!
//! Everything lives in the configured directory (`path`), named after
//! `file_prefix` (default `events`):
//!
//! | file | what it is |
//! | --- | --- |
//! | `<prefix>.jsonl` | the active file: every batch is appended here, one record per line |
//! | `<prefix>-<ts>-<n>.jsonl` | a rotated file, complete; `<ts>` is the rotation time in UTC, `%Y%m%dT%H%M%S%.3fZ` (e.g. `20240131T235959.123Z`), `<n>` a sequence number of at least three digits (`000`, `001`, …) |
//! | `<prefix>-<ts>-<n>.jsonl.gz` | the same, gzipped (with `compress = true`) |
//! | `<prefix>-<ts>-<n>.jsonl.gz.tmp` | a compression in progress; never a finished file |
//! | `<prefix>.lock` | holds an advisory lock (`flock`) while an exporter owns the prefix, and the owner's PID |
//!
//! Rotated names sort by rotation time as plain strings: the sequence number
//! separates rotations within one millisecond, and a new name is always
//! greater than every rotated name already in the directory (if the clock
//! stepped back, the newest timestamp is kept and only the sequence grows), so
//! names never collide, across restarts too. A reader that wants every event in
//! order reads the rotated files sorted by name, then the active file.
//!
//! Each line is one record's JSON followed by `\n`. A record's JSON never
//! contains a raw newline (a `\n` byte can only be whitespace between JSON
//! tokens, and is written as a space), so a line is always exactly one record.
//!
//! # Rotation
//!
//! The active file is renamed to a rotated name when the next batch would take
//! it past `max_file_size` (a single batch larger than that gets a file of its
//! own: a batch is never split), or when its first record is older than
//! `rotate_interval` (checked on every batch and by a background thread, so an
//! idle file rotates on time too). An empty file is never rotated. After a
//! rotation a new, empty active file is created. After a restart, the age of
//! an active file that already holds records counts from its creation time
//! (where the filesystem records one; otherwise from the restart).
//!
//! With `compress = true`, rotated files are gzipped by a background thread,
//! off the write path: `x.jsonl` is compressed to `x.jsonl.gz.tmp`, which is
//! fsynced and renamed to `x.jsonl.gz` before `x.jsonl` is deleted, so a crash
//! at any point leaves either the plain file or a complete `.gz`. At startup
//! (and on every later pass) leftover `.gz.tmp` files are deleted, a plain file
//! that already has its `.gz` is deleted, and plain rotated files still
//! waiting are compressed. The `.gz` keeps the modification time of the file it
//! replaces, so compression does not reset a file's age. If events arrive
//! faster than one thread compresses them, plain rotated files wait in line;
//! lower `compression_level` to keep up.
//!
//! Retention (`max_files`, `max_age`) applies to rotated files only, plain or
//! compressed, oldest (by name) first: a rotated file is deleted when its
//! modification time (its last write, i.e. about its rotation) is older than
//! `max_age`, and the oldest are deleted while more than `max_files` remain. It
//! runs after every rotation and periodically (every `max_age / 4`, between
//! 50 ms and 30 s). The active file is never deleted by retention.
//!
//! # Durability
//!
//! A batch is written with one `write` of one buffer, appended to the active
//! file. When `export` returns `Ok`:
//!
//! - `fsync = "always"`: the batch has been fsynced (`fdatasync`). Nothing
//!   acknowledged is lost, even by a machine crash.
//! - `fsync = "<duration>"` (default `"1s"`): the batch has reached the
//!   operating system; a background thread fsyncs the active file at most that
//!   interval later. A process crash loses nothing; a machine (kernel, power)
//!   crash may lose up to that interval of acknowledged events.
//! - `fsync = "never"`: the batch has reached the operating system, which
//!   writes it back when it sees fit (a machine crash may lose tens of seconds).
//!
//! Unless `never`, the active file is also fsynced before it is rotated, and
//! the directory after files are created or renamed. `flush` fsyncs the active
//! file whatever the policy (and, with `never`, the files rotated since the
//! last flush).
//!
//! A file never keeps a torn line: if a write fails part-way (disk full, I/O
//! error) or the fsync of `always` fails, the file is truncated back to its
//! length before the batch (if even that fails, the truncation is retried
//! before the next write); if the process dies mid-write, the next start finds
//! a tail that does not end in `\n` and truncates it to the last `\n`, with a
//! warning giving the number of bytes removed. Delivery is at-least-once: the
//! complete lines of a batch that a crash interrupted stay in the file; at
//! the restart, `recover` reads them back (with everything else written
//! after the position saved with the checkpoint) and the pipeline resends
//! only the rest. See `recover.rs` for the position and the bound of the scan.
//!
//! # Failures
//!
//! The directory is created (with parents) when the exporter starts (the
//! pipeline's `recover` at startup, or the first `export`; a standby
//! replica's exporter, built but never started, leaves the directory and its
//! lock alone), retried from a background thread, and again whenever it is
//! missing; a directory that
//! cannot be created or written at startup is not a config error but a
//! runtime one, retried like any other. A failed `export` returns a transient
//! [`ExportError`] whose `reason` is one of:
//!
//! - `disk_full`: no space left on the device, or quota exceeded;
//! - `permission_denied`: permissions, or a read-only filesystem;
//! - `locked`: another exporter (this process or another one) holds
//!   `<prefix>.lock`, i.e. writes the same `path` and `file_prefix`;
//! - `io`: anything else (the path is not a directory, the active file's path
//!   is not a regular file, an I/O error, …).
//!
//! The message names the path and the OS error. Until a write succeeds again,
//! [`Exporter::health`] is `NotReady` with that message. A batch is either
//! written entirely (`Ok`) or not at all (`Err`): nothing is dropped, and the
//! pipeline can resend the same batch. (A write that started goes on even if
//! the `export` future is dropped; a resend after that is a duplicate.) The exporter reopens its file, recreates
//! the directory and re-takes its lock as needed, so it recovers by itself once
//! the cause is gone. If the active file is deleted or replaced behind the
//! exporter's back, the next batch notices and goes to a new active file.
//!
//! # Threads
//!
//! Every blocking file operation runs off the async executor: each batch in
//! `spawn_blocking` (which `export` awaits), fsync-on-interval and time
//! rotation on a small per-exporter thread, compression and retention on
//! another. Both threads stop when the exporter is dropped (the first one
//! fsyncs what is still unsynced on its way out).

mod janitor;
mod naming;
mod recover;
mod writer;

#[cfg(test)]
mod recover_tests;
#[cfg(test)]
mod tests;

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Deserializer};

use crate::{Batch, ConfigError, ExportError, Exporter, Health, Record, units};

use writer::Writer;

/// How hard the Volume exporter pushes data to the disk before acknowledging.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// fsync every batch before acknowledging it.
    Always,
    /// Acknowledge once the batch reaches the OS; fsync in the background at
    /// most this long afterwards.
    Interval(Duration),
    /// Never fsync on the write path; the OS writes back when it sees fit.
    Never,
}

impl Default for FsyncPolicy {
    fn default() -> Self {
        FsyncPolicy::Interval(Duration::from_secs(1))
    }
}

impl FromStr for FsyncPolicy {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "always" => Ok(FsyncPolicy::Always),
            "never" => Ok(FsyncPolicy::Never),
            other => match units::parse_duration(other) {
                Ok(d) if d.is_zero() => Err(format!(
                    "invalid fsync `{s}`: the interval must be greater than zero (use \"always\" to fsync every batch)"
                )),
                Ok(d) => Ok(FsyncPolicy::Interval(d)),
                Err(_) => Err(format!(
                    "invalid fsync `{s}`; expected \"always\", \"never\" or an interval such as \"500ms\" or \"1s\""
                )),
            },
        }
    }
}

impl fmt::Display for FsyncPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FsyncPolicy::Always => f.write_str("always"),
            FsyncPolicy::Never => f.write_str("never"),
            FsyncPolicy::Interval(d) => write!(f, "{}", humantime::format_duration(*d)),
        }
    }
}

/// `deserialize_with` for [`FsyncPolicy`]: `"always"`, `"never"` or a duration.
pub fn de_fsync<'de, D: Deserializer<'de>>(d: D) -> Result<FsyncPolicy, D::Error> {
    let s = String::deserialize(d)?;
    s.parse().map_err(serde::de::Error::custom)
}

fn default_file_prefix() -> String {
    "events".to_string()
}

fn default_max_file_size() -> u64 {
    100 << 20
}

fn default_rotate_interval() -> Duration {
    Duration::from_secs(3600)
}

fn default_compression_level() -> u32 {
    6
}

/// The `volume` exporter's keys.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VolumeConfig {
    /// Directory that holds the files (required). Created with its parents if
    /// missing, at startup and whenever it disappears.
    pub path: PathBuf,

    /// Name of the active file (`<file_prefix>.jsonl`), of rotated files
    /// (`<file_prefix>-<UTC time>-<n>.jsonl[.gz]`) and of the lock file
    /// (`<file_prefix>.lock`). Default `"events"`. Must not contain `/`.
    /// Two exporters must not share a `path` and `file_prefix`.
    #[serde(default = "default_file_prefix")]
    pub file_prefix: String,

    /// Rotate the active file before a batch would take it past this size: a
    /// size such as `"100MiB"`, `"1GB"`, or a number of bytes. Default
    /// `"100MiB"`. A single larger batch gets a file of its own.
    #[serde(default = "default_max_file_size", deserialize_with = "units::de_size")]
    pub max_file_size: u64,

    /// Rotate the active file once its first record is this old, even if no
    /// more events arrive. Default `"1h"`; `"0s"` turns time rotation off.
    #[serde(default = "default_rotate_interval", deserialize_with = "units::de_duration")]
    pub rotate_interval: Duration,

    /// Gzip rotated files (`.jsonl.gz`) in the background. Default `false`.
    #[serde(default)]
    pub compress: bool,

    /// gzip level for `compress`, from 0 (store) and 1 (fastest) to 9
    /// (smallest). Default 6.
    #[serde(default = "default_compression_level")]
    pub compression_level: u32,

    /// Keep at most this many rotated files (the active file does not count);
    /// the oldest are deleted first. Default: no limit. At least 1.
    #[serde(default)]
    pub max_files: Option<usize>,

    /// Delete rotated files older than this (by modification time, i.e. about
    /// their rotation), e.g. `"7d"`. Default: no limit.
    #[serde(default, deserialize_with = "units::de_opt_duration")]
    pub max_age: Option<Duration>,

    /// When to fsync: `"always"` (before acknowledging each batch), an
    /// interval such as `"500ms"` or `"1s"` (acknowledge once written to the
    /// OS, fsync at most that long after; a machine crash may lose up to that
    /// interval, a process crash loses nothing), or `"never"` (leave it to the
    /// OS). Default `"1s"`.
    #[serde(default, deserialize_with = "de_fsync")]
    pub fsync: FsyncPolicy,
}

impl VolumeConfig {
    /// A config writing to `path` with every other key at its default.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            file_prefix: default_file_prefix(),
            max_file_size: default_max_file_size(),
            rotate_interval: default_rotate_interval(),
            compress: false,
            compression_level: default_compression_level(),
            max_files: None,
            max_age: None,
            fsync: FsyncPolicy::default(),
        }
    }

    /// Checks the config and starts an exporter named `name`.
    ///
    /// Nothing is written here: the directory is prepared when the exporter
    /// is started (`recover` or the first batch; retried by its background
    /// thread), so a directory
    /// that is not writable yet is a runtime error (`health` says why, and
    /// `export` is retried), not a startup failure.
    pub fn build(&self, name: &str) -> Result<VolumeExporter, ConfigError> {
        self.validate(name)?;
        self.start(name)
    }

    /// Checks the settings without touching the file system or starting anything.
    pub fn validate(&self, name: &str) -> Result<(), ConfigError> {
        let err = |message: String| ConfigError {
            exporter: name.to_string(),
            message,
        };
        if self.path.as_os_str().is_empty() {
            return Err(err("`path` must not be empty".into()));
        }
        let prefix = &self.file_prefix;
        if prefix.is_empty() || prefix == "." || prefix == ".." || prefix.contains(['/', '\0']) {
            return Err(err(format!(
                "invalid `file_prefix` `{prefix}`: use a plain file name (not empty, no `/`)"
            )));
        }
        if self.max_file_size == 0 {
            return Err(err("`max_file_size` must be greater than zero".into()));
        }
        if self.compression_level > 9 {
            return Err(err(format!(
                "`compression_level` must be between 0 and 9, not {}",
                self.compression_level
            )));
        }
        if self.max_files == Some(0) {
            return Err(err("`max_files` must be at least 1 (omit it for no limit)".into()));
        }
        if self.max_age.is_some_and(|a| a.is_zero()) {
            return Err(err("`max_age` must be greater than zero (omit it for no limit)".into()));
        }
        Ok(())
    }

    fn start(&self, name: &str) -> Result<VolumeExporter, ConfigError> {
        let err = |message: String| ConfigError {
            exporter: name.to_string(),
            message,
        };
        let prefix = &self.file_prefix;
        let ctx = Arc::new(Ctx {
            name: name.to_string(),
            active_path: self.path.join(naming::active_name(prefix)),
            lock_path: self.path.join(naming::lock_name(prefix)),
            dir: self.path.clone(),
            prefix: prefix.clone(),
            max_file_size: self.max_file_size,
            rotate_interval: Some(self.rotate_interval).filter(|d| !d.is_zero()),
            fsync: self.fsync,
            compression: self.compress.then(|| flate2::Compression::new(self.compression_level)),
            max_files: self.max_files,
            max_age: self.max_age,
            stats: Arc::new(VolumeStats::default()),
            mark: Mutex::new(None),
        });

        let (janitor_tx, janitor_rx) = mpsc::channel();
        let janitor_ctx = Arc::clone(&ctx);
        std::thread::Builder::new()
            .name(thread_name("vol-gc-", name))
            .spawn(move || janitor::run(&janitor_ctx, &janitor_rx))
            .map_err(|e| err(format!("cannot start the background thread: {e}")))?;

        let inner = Arc::new(Inner {
            writer: Mutex::new(Writer::new(janitor_tx)),
            health: Mutex::new(None),
            unsynced: AtomicBool::new(false),
            prepared: AtomicBool::new(false),
            started: AtomicBool::new(false),
            last_prepare_error: Mutex::new(None),
            ctx,
        });
        let (shutdown_tx, shutdown_rx) = mpsc::channel::<()>();
        let bg = Arc::clone(&inner);
        std::thread::Builder::new()
            .name(thread_name("vol-sync-", name))
            .spawn(move || bg.maintain(&shutdown_rx))
            .map_err(|e| err(format!("cannot start the background thread: {e}")))?;

        Ok(VolumeExporter {
            name: name.to_string(),
            inner,
            _shutdown: shutdown_tx,
        })
    }
}

/// Linux shows at most 15 bytes of a thread name.
fn thread_name(kind: &str, name: &str) -> String {
    let mut s = format!("{kind}{name}");
    let mut cut = s.len().min(15);
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    s.truncate(cut);
    s
}

/// Counters of a Volume exporter, updated as it works; read them with
/// [`VolumeStats::snapshot`].
#[derive(Debug, Default)]
pub struct VolumeStats {
    batches: AtomicU64,
    records: AtomicU64,
    bytes: AtomicU64,
    write_errors: AtomicU64,
    fsyncs: AtomicU64,
    fsync_errors: AtomicU64,
    rotations: AtomicU64,
    files_compressed: AtomicU64,
    compression_errors: AtomicU64,
    files_deleted: AtomicU64,
    torn_bytes_truncated: AtomicU64,
}

/// A copy of [`VolumeStats`] at one moment. Every counter only grows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VolumeStatsSnapshot {
    /// Batches written (acknowledged).
    pub batches: u64,
    /// Records written.
    pub records: u64,
    /// Bytes written, newlines included.
    pub bytes: u64,
    /// Batches that failed (each failed attempt counts).
    pub write_errors: u64,
    /// fsyncs of data files (per batch, on interval, before rotation, on flush).
    pub fsyncs: u64,
    /// Background (interval) fsyncs that failed; the data was already acknowledged.
    pub fsync_errors: u64,
    /// Active files rotated.
    pub rotations: u64,
    /// Rotated files gzipped.
    pub files_compressed: u64,
    /// Compressions that failed (retried later; the plain file stays).
    pub compression_errors: u64,
    /// Rotated files deleted by retention (`max_files`, `max_age`).
    pub files_deleted: u64,
    /// Bytes of torn lines cut from the active file's tail at startup or reopen.
    pub torn_bytes_truncated: u64,
}

impl VolumeStats {
    pub fn snapshot(&self) -> VolumeStatsSnapshot {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        VolumeStatsSnapshot {
            batches: g(&self.batches),
            records: g(&self.records),
            bytes: g(&self.bytes),
            write_errors: g(&self.write_errors),
            fsyncs: g(&self.fsyncs),
            fsync_errors: g(&self.fsync_errors),
            rotations: g(&self.rotations),
            files_compressed: g(&self.files_compressed),
            compression_errors: g(&self.compression_errors),
            files_deleted: g(&self.files_deleted),
            torn_bytes_truncated: g(&self.torn_bytes_truncated),
        }
    }
}

fn bump(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

/// Settings and counters shared by the writer and both background threads.
struct Ctx {
    name: String,
    dir: PathBuf,
    prefix: String,
    active_path: PathBuf,
    lock_path: PathBuf,
    max_file_size: u64,
    rotate_interval: Option<Duration>,
    fsync: FsyncPolicy,
    compression: Option<flate2::Compression>,
    max_files: Option<usize>,
    max_age: Option<Duration>,
    stats: Arc<VolumeStats>,
    /// Where the output ends, as of the last write or open (see `recover`).
    mark: Mutex<Option<recover::Mark>>,
}

impl Ctx {
    /// A transient error for a failed file operation, classified by the OS error.
    fn io_error(&self, action: &str, path: &Path, e: &io::Error) -> ExportError {
        ExportError::transient(
            classify(e),
            format!("volume exporter `{}`: {action} `{}`: {e}", self.name, path.display()),
        )
    }

    fn syncs(&self) -> bool {
        self.fsync != FsyncPolicy::Never
    }
}

/// The fixed `reason` of an I/O error: `disk_full`, `permission_denied` or `io`.
pub fn classify(e: &io::Error) -> &'static str {
    match e.kind() {
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded => "disk_full",
        io::ErrorKind::PermissionDenied | io::ErrorKind::ReadOnlyFilesystem => "permission_denied",
        _ => "io",
    }
}

/// Appends `json` and a newline to `buf`. A `\n` inside `json` can only be
/// whitespace between tokens (JSON strings escape it), so it becomes a space:
/// one record stays one line whatever produced it.
pub(crate) fn append_json_line(buf: &mut Vec<u8>, json: &[u8]) {
    let start = buf.len();
    buf.extend_from_slice(json);
    if json.contains(&b'\n') {
        for b in &mut buf[start..] {
            if *b == b'\n' {
                *b = b' ';
            }
        }
    }
    buf.push(b'\n');
}

/// Locks a mutex, ignoring poisoning: every critical section leaves its data
/// consistent at each step, so a panic elsewhere must not stop the exporter.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The state every task and thread of one exporter shares.
struct Inner {
    ctx: Arc<Ctx>,
    writer: Mutex<Writer>,
    /// `Some(message)` while not ready.
    health: Mutex<Option<String>>,
    /// Something was written since the last fsync (interval policy).
    unsynced: AtomicBool,
    /// The startup preparation (directory, lock, active file) is done, or a
    /// batch has been attempted (which prepares everything itself).
    prepared: AtomicBool,
    /// `recover` or `export` was called: the pipeline runs (a standby
    /// replica's exporter never touches the directory, nor takes its lock).
    started: AtomicBool,
    last_prepare_error: Mutex<Option<String>>,
}

impl Inner {
    /// Writes one batch (blocking). See the module doc for the guarantees.
    fn write(&self, batch: &[Arc<Record>]) -> Result<(), ExportError> {
        self.started.store(true, Ordering::Release);
        let mut w = lock(&self.writer);
        self.prepared.store(true, Ordering::Release);
        let result = w.write_batch(&self.ctx, batch);
        // Health changes under the writer lock, so that they keep the order
        // of the writes (and of the startup preparation).
        match &result {
            Ok(bytes) => {
                if matches!(self.ctx.fsync, FsyncPolicy::Interval(_)) {
                    self.unsynced.store(true, Ordering::Release);
                }
                let s = &self.ctx.stats;
                bump(&s.batches, 1);
                bump(&s.records, batch.len() as u64);
                bump(&s.bytes, *bytes);
                self.set_ready();
            }
            Err(e) => {
                bump(&self.ctx.stats.write_errors, 1);
                self.set_not_ready(&e.message);
            }
        }
        drop(w);
        result.map(|_| ())
    }

    fn set_ready(&self) {
        let mut h = lock(&self.health);
        if h.take().is_some() {
            tracing::info!(exporter = %self.ctx.name, "volume exporter recovered: writes succeed again");
        }
    }

    fn set_not_ready(&self, message: &str) {
        let mut h = lock(&self.health);
        if h.is_none() {
            tracing::warn!(exporter = %self.ctx.name, error = %message, "volume exporter cannot write");
        }
        *h = Some(message.to_string());
    }

    /// fsyncs the active file now, whatever the policy.
    fn flush(&self) -> Result<(), ExportError> {
        // fsync outside the lock so that writes go on meanwhile.
        let (file, rotated) = {
            let mut w = lock(&self.writer);
            (w.active_file(), w.take_rotated_unsynced())
        };
        for path in rotated {
            // Gone (compressed: the .gz was fsynced; or deleted): nothing to do.
            if let Ok(f) = std::fs::File::open(&path) {
                bump(&self.ctx.stats.fsyncs, 1);
                f.sync_data()
                    .map_err(|e| self.ctx.io_error("cannot fsync", &path, &e))?;
            }
        }
        let Some(file) = file else {
            return Ok(());
        };
        let was_unsynced = self.unsynced.swap(false, Ordering::AcqRel);
        bump(&self.ctx.stats.fsyncs, 1);
        file.sync_data().map_err(|e| {
            if was_unsynced {
                self.unsynced.store(true, Ordering::Release);
            }
            self.ctx.io_error("cannot fsync", &self.ctx.active_path, &e)
        })
    }

    /// The background thread: startup preparation, fsync on interval, time
    /// rotation. Ends (after a last fsync) when the exporter is dropped.
    fn maintain(&self, shutdown: &mpsc::Receiver<()>) {
        let mut tick = Duration::from_secs(1);
        if let FsyncPolicy::Interval(d) = self.ctx.fsync {
            tick = tick.min(d);
        }
        if let Some(r) = self.ctx.rotate_interval {
            tick = tick.min(r);
        }
        let tick = tick.max(Duration::from_millis(10));
        // Nothing is ever sent: the channel only closes when the exporter drops.
        while let Err(RecvTimeoutError::Timeout) = shutdown.recv_timeout(tick) {
            if self.started.load(Ordering::Acquire) && !self.prepared.load(Ordering::Acquire) {
                self.prepare();
            }
            self.background_sync();
            self.rotate_if_due();
        }
        self.background_sync();
    }

    /// Creates the directory, takes the lock and opens the active file
    /// (repairing a torn tail) before the first batch, so leftovers are
    /// handled at startup even if no event comes. Until a batch is attempted,
    /// a failure here makes the exporter not ready.
    fn prepare(&self) {
        let mut w = lock(&self.writer);
        if self.prepared.load(Ordering::Acquire) {
            return;
        }
        match w.prepare(&self.ctx) {
            Ok(()) => {
                self.prepared.store(true, Ordering::Release);
                *lock(&self.last_prepare_error) = None;
                self.set_ready();
            }
            Err(e) => {
                let mut last = lock(&self.last_prepare_error);
                if last.as_deref() != Some(e.message.as_str()) {
                    tracing::warn!(exporter = %self.ctx.name, error = %e.message, "volume exporter cannot prepare its directory; will retry");
                    *last = Some(e.message.clone());
                }
                *lock(&self.health) = Some(e.message);
            }
        }
    }

    /// Prepares the directory (lock, torn tail) and reads back the keys
    /// written after `from`; see [`recover`].
    fn recover(&self, from: Option<&str>) -> Result<crate::Delivered, ExportError> {
        self.started.store(true, Ordering::Release);
        let mark = from.and_then(|f| {
            let m = recover::Mark::decode(f);
            if m.is_none() {
                tracing::warn!(exporter = %self.ctx.name, position = f,
                    "volume exporter: the saved position is not one of this exporter; nothing to read back");
            }
            m
        });
        // Under the writer lock: nothing is written meanwhile, and the torn tail is repaired first.
        let _w = {
            let mut w = lock(&self.writer);
            if let Err(e) = w.prepare(&self.ctx) {
                // The background thread retries the preparation; the pipeline goes on without the keys.
                self.set_not_ready(&e.message);
                return Err(e);
            }
            self.prepared.store(true, Ordering::Release);
            self.set_ready();
            w
        };
        let ctx = &self.ctx;
        let Some(mark) = mark else {
            // No saved state (a fresh start, a replay): nothing can have been written after it.
            return Ok(crate::Delivered::default());
        };
        let parts = recover::plan(&ctx.dir, &ctx.prefix, &ctx.active_path, &mark)
            .map_err(|e| ctx.io_error("cannot list", &ctx.dir, &e))?;
        let scan = recover::scan(&parts).map_err(|e| ctx.io_error("cannot read back", &ctx.dir, &e))?;
        tracing::info!(exporter = %ctx.name, files = scan.files, lines = scan.lines, keys = scan.keys.len(),
            not_events = scan.skipped, from = from.unwrap_or_default(),
            "volume exporter: read back what was written after the saved position");
        if scan.torn_bytes > 0 {
            tracing::warn!(exporter = %ctx.name, bytes = scan.torn_bytes,
                "volume exporter: a rotated file ends with a torn line; ignored");
        }
        Ok(scan.keys)
    }

    fn background_sync(&self) {
        if !self.unsynced.swap(false, Ordering::AcqRel) {
            return;
        }
        // fsync outside the lock so that writes go on meanwhile.
        let Some(file) = lock(&self.writer).active_file() else {
            return;
        };
        bump(&self.ctx.stats.fsyncs, 1);
        if let Err(e) = file.sync_data() {
            self.unsynced.store(true, Ordering::Release);
            bump(&self.ctx.stats.fsync_errors, 1);
            tracing::error!(exporter = %self.ctx.name, path = %self.ctx.active_path.display(), error = %e,
                "volume exporter: background fsync failed; acknowledged events may not be on disk");
        }
    }

    fn rotate_if_due(&self) {
        let mut w = lock(&self.writer);
        if let Err(e) = w.rotate_if_due(&self.ctx) {
            tracing::warn!(exporter = %self.ctx.name, error = %e.message, "volume exporter: time rotation failed; will retry");
        }
    }
}

/// Writes batches as JSON Lines under a directory; see the module doc.
pub struct VolumeExporter {
    name: String,
    inner: Arc<Inner>,
    /// Dropping it stops the background thread.
    _shutdown: mpsc::Sender<()>,
}

impl fmt::Debug for VolumeExporter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VolumeExporter")
            .field("name", &self.name)
            .field("dir", &self.inner.ctx.dir)
            .field("prefix", &self.inner.ctx.prefix)
            .finish()
    }
}

impl VolumeExporter {
    /// The counters now.
    pub fn stats(&self) -> VolumeStatsSnapshot {
        self.inner.ctx.stats.snapshot()
    }

    /// A handle on the live counters, e.g. for a metrics collector that
    /// outlives this borrow.
    pub fn stats_handle(&self) -> Arc<VolumeStats> {
        Arc::clone(&self.inner.ctx.stats)
    }

    /// The directory this exporter writes to.
    pub fn dir(&self) -> &Path {
        &self.inner.ctx.dir
    }

    /// The path of the active file.
    pub fn active_path(&self) -> &Path {
        &self.inner.ctx.active_path
    }

    fn task_failed(&self, e: &tokio::task::JoinError) -> ExportError {
        ExportError::transient(
            "io",
            format!("volume exporter `{}`: writer task failed: {e}", self.name),
        )
    }
}

#[async_trait]
impl Exporter for VolumeExporter {
    fn name(&self) -> &str {
        &self.name
    }

    async fn export(&self, batch: &Batch) -> Result<(), ExportError> {
        if batch.is_empty() {
            return Ok(());
        }
        let records = batch.to_vec();
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || inner.write(&records))
            .await
            .unwrap_or_else(|e| Err(self.task_failed(&e)))
    }

    async fn flush(&self) -> Result<(), ExportError> {
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || inner.flush())
            .await
            .unwrap_or_else(|e| Err(self.task_failed(&e)))
    }

    fn position(&self) -> Option<String> {
        lock(&self.inner.ctx.mark).as_ref().map(recover::Mark::encode)
    }

    async fn recover(&self, from: Option<&str>) -> Result<crate::Delivered, ExportError> {
        let inner = Arc::clone(&self.inner);
        let from = from.map(str::to_string);
        tokio::task::spawn_blocking(move || inner.recover(from.as_deref()))
            .await
            .unwrap_or_else(|e| Err(self.task_failed(&e)))
    }

    fn health(&self) -> Health {
        match &*lock(&self.inner.health) {
            None => Health::Ready,
            Some(message) => Health::NotReady(message.clone()),
        }
    }
}

#[cfg(test)]
impl VolumeExporter {
    /// Waits until the startup preparation and every queued compression and
    /// retention pass are done (the barrier itself triggers one more pass).
    fn settle(&self) {
        self.inner.started.store(true, Ordering::Release);
        self.inner.prepare();
        let janitor = lock(&self.inner.writer).janitor();
        let (tx, rx) = mpsc::channel();
        janitor
            .send(janitor::JanitorMsg::Barrier(tx))
            .expect("janitor thread alive");
        rx.recv_timeout(Duration::from_secs(120)).expect("janitor answers");
    }

    /// Makes the next write fail as described.
    fn inject(&self, fault: writer::Fault) {
        lock(&self.inner.writer).fault = Some(fault);
    }
}
