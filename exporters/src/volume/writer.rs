//! The write path: the active file, its lock, rotation and rollback. Runs
//! only on blocking threads, under the exporter's writer mutex.

use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{self, Write};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::Sender;
use std::time::{Instant, SystemTime};

use crate::{ExportError, Record};

use super::janitor::JanitorMsg;
use super::naming::{self, NameKey, Variant};
use super::recover::Mark;
use super::{Ctx, FsyncPolicy, append_json_line, bump};

/// A batch is written in chunks of about this many bytes, through one buffer
/// kept between batches: a batch of 1,000 events (~1 MB) no longer leaves a
/// buffer of its size resident after it.
const CHUNK: usize = 256 << 10;

/// The file batches are appended to.
struct Active {
    file: Arc<File>,
    /// Its length as far as this writer knows (it is the only writer).
    len: u64,
    dev: u64,
    ino: u64,
    /// When its first record was written, for `rotate_interval`.
    first_write: Instant,
}

/// The open, locked `<prefix>.lock`.
struct Held {
    _file: File,
    dev: u64,
    ino: u64,
}

/// A failed write whose rollback (truncation) failed too: retried on the
/// next open of the same file, before anything else is written to it.
#[derive(Clone, Copy)]
struct PendingTruncate {
    dev: u64,
    ino: u64,
    len: u64,
}

/// A fault to inject into the next write, for tests of the failure paths.
#[cfg(test)]
#[derive(Debug, Clone, Copy)]
pub(super) struct Fault {
    /// Bytes of the batch actually written before the error.
    pub(super) written: usize,
    pub(super) error: io::ErrorKind,
    /// Make the rollback's truncation fail too.
    pub(super) fail_truncate: bool,
}

pub(super) struct Writer {
    /// One batch, all lines, reused.
    buf: Vec<u8>,
    active: Option<Active>,
    pending_truncate: Option<PendingTruncate>,
    lock: Option<Held>,
    lock_warned: bool,
    janitor: Sender<JanitorMsg>,
    janitor_started: bool,
    /// The greatest rotated name used or seen, once the directory was scanned.
    last_key: Option<NameKey>,
    scanned: bool,
    /// With `fsync = "never"`, the files rotated since the last flush (the
    /// newest few), which a flush must fsync too.
    rotated_unsynced: Vec<PathBuf>,
    #[cfg(test)]
    pub(super) fault: Option<Fault>,
}

/// How many rotated files a flush fsyncs at most with `fsync = "never"`
/// (older ones have long been written back by the kernel).
const MAX_ROTATED_UNSYNCED: usize = 16;

impl Writer {
    pub(super) fn new(janitor: Sender<JanitorMsg>) -> Self {
        Self {
            buf: Vec::new(),
            active: None,
            pending_truncate: None,
            lock: None,
            lock_warned: false,
            janitor,
            janitor_started: false,
            last_key: None,
            scanned: false,
            rotated_unsynced: Vec::new(),
            #[cfg(test)]
            fault: None,
        }
    }

    #[cfg(test)]
    pub(super) fn janitor(&self) -> Sender<JanitorMsg> {
        self.janitor.clone()
    }

    /// The active file, for an fsync outside the lock.
    pub(super) fn active_file(&self) -> Option<Arc<File>> {
        self.active.as_ref().map(|a| Arc::clone(&a.file))
    }

    /// Rotated files not fsynced yet (with `fsync = "never"`), for a flush.
    pub(super) fn take_rotated_unsynced(&mut self) -> Vec<PathBuf> {
        std::mem::take(&mut self.rotated_unsynced)
    }

    /// Directory, lock and active file, ready for a batch.
    pub(super) fn prepare(&mut self, ctx: &Ctx) -> Result<(), ExportError> {
        self.ensure_open(ctx)
    }

    /// Writes the batch (in chunks of about [`CHUNK`] bytes); returns the
    /// bytes written. On an error the file is cut back to where the batch
    /// started.
    pub(super) fn write_batch(&mut self, ctx: &Ctx, batch: &[Arc<Record>]) -> Result<u64, ExportError> {
        // A line is the record's JSON (newlines made spaces) and a newline.
        let n: u64 = batch.iter().map(|r| r.json.len() as u64 + 1).sum();

        self.ensure_open(ctx)?;
        if self.rotation_due(ctx, n) {
            self.rotate(ctx)?;
            self.ensure_open(ctx)?;
        }
        self.append(ctx, batch, n).map(|()| n)
    }

    /// Appends the batch's lines (`n` bytes) to the active file, or leaves the file as it was.
    fn append(&mut self, ctx: &Ctx, batch: &[Arc<Record>], n: u64) -> Result<(), ExportError> {
        let Some(active) = self.active.as_mut() else {
            return Err(ExportError::transient(
                "io",
                format!("volume exporter `{}`: no active file", ctx.name),
            ));
        };
        if active.len == 0 {
            active.first_write = Instant::now();
        }
        let before = active.len;
        let file = Arc::clone(&active.file);

        #[cfg(test)]
        let fault = self.fault.take();
        // The bytes the injected fault lets through before it fails the write.
        #[cfg(test)]
        let mut allowance = fault.map(|f| f.written);

        let mut rest = batch;
        let mut written: io::Result<()> = Ok(());
        while !rest.is_empty() {
            self.buf.clear();
            while let Some((r, tail)) = rest.split_first() {
                if !self.buf.is_empty() && self.buf.len() + r.json.len() + 1 > CHUNK {
                    break;
                }
                append_json_line(&mut self.buf, &r.json);
                rest = tail;
            }
            #[cfg(test)]
            let chunk_written = match (allowance.as_mut(), fault) {
                (Some(left), Some(f)) if *left < self.buf.len() => (&*file)
                    .write_all(&self.buf[..*left])
                    .and_then(|()| Err(io::Error::from(f.error))),
                (Some(left), _) => {
                    *left -= self.buf.len();
                    (&*file).write_all(&self.buf)
                }
                _ => (&*file).write_all(&self.buf),
            };
            #[cfg(not(test))]
            let chunk_written = (&*file).write_all(&self.buf);
            if let Err(e) = chunk_written {
                written = Err(e);
                break;
            }
        }
        // An injected fault fails the write even when its bytes covered the batch.
        #[cfg(test)]
        if let (Ok(()), Some(f)) = (&written, fault) {
            written = Err(io::Error::from(f.error));
        }
        if self.buf.capacity() > CHUNK * 2 {
            // One record bigger than a chunk: do not keep its buffer.
            self.buf = Vec::new();
        }

        let result = match written {
            Err(e) => Err(ctx.io_error("cannot write to", &ctx.active_path, &e)),
            Ok(()) if ctx.fsync == FsyncPolicy::Always => {
                bump(&ctx.stats.fsyncs, 1);
                file.sync_data()
                    .map_err(|e| ctx.io_error("cannot fsync", &ctx.active_path, &e))
            }
            Ok(()) => Ok(()),
        };
        match result {
            Ok(()) => {
                active.len += n;
                self.set_mark(ctx);
                Ok(())
            }
            Err(e) => {
                #[cfg(test)]
                let fail_truncate = fault.is_some_and(|f| f.fail_truncate);
                #[cfg(not(test))]
                let fail_truncate = false;
                self.roll_back(ctx, before, fail_truncate);
                Err(e)
            }
        }
    }

    /// Cuts the active file back to `len` after a failed batch and closes it
    /// (the next batch reopens it). If the truncation fails, it is retried
    /// when the file is reopened.
    fn roll_back(&mut self, ctx: &Ctx, len: u64, fail_truncate: bool) {
        let Some(active) = self.active.take() else {
            return;
        };
        let truncated = if fail_truncate {
            Err(io::Error::other("injected truncation failure"))
        } else {
            active.file.set_len(len)
        };
        match truncated {
            Ok(()) => {
                // What was acknowledged before this batch is not fsynced yet
                // (interval policy) and the file is being closed: sync it now.
                if ctx.syncs() {
                    bump(&ctx.stats.fsyncs, 1);
                    let _ = active.file.sync_data();
                }
            }
            Err(e) => {
                tracing::warn!(exporter = %ctx.name, path = %ctx.active_path.display(), error = %e,
                    "volume exporter: cannot truncate a failed batch away; will retry before the next write");
                self.pending_truncate = Some(PendingTruncate {
                    dev: active.dev,
                    ino: active.ino,
                    len,
                });
            }
        }
    }

    /// Makes sure the active file is open, is still the file at the active
    /// path, and ends with a complete line.
    fn ensure_open(&mut self, ctx: &Ctx) -> Result<(), ExportError> {
        let path = &ctx.active_path;
        if let Some(a) = &self.active {
            match fs::metadata(path) {
                Ok(m) if m.dev() == a.dev && m.ino() == a.ino => return Ok(()),
                Ok(_) => {
                    tracing::warn!(exporter = %ctx.name, path = %path.display(),
                        "volume exporter: the active file was replaced behind its back; opening the new one");
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    tracing::warn!(exporter = %ctx.name, path = %path.display(),
                        "volume exporter: the active file was removed behind its back; creating a new one");
                }
                Err(e) => return Err(ctx.io_error("cannot check", path, &e)),
            }
            self.active = None;
        }

        fs::create_dir_all(&ctx.dir).map_err(|e| ctx.io_error("cannot create directory", &ctx.dir, &e))?;
        self.ensure_lock(ctx)?;
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(path)
            .map_err(|e| ctx.io_error("cannot open", path, &e))?;
        let meta = file.metadata().map_err(|e| ctx.io_error("cannot check", path, &e))?;
        if !meta.is_file() {
            return Err(ExportError::transient(
                "io",
                format!(
                    "volume exporter `{}`: cannot write to `{}`: not a regular file",
                    ctx.name,
                    path.display()
                ),
            ));
        }
        let (dev, ino) = (meta.dev(), meta.ino());
        let mut len = meta.len();
        if let Some(p) = self.pending_truncate {
            if p.dev == dev && p.ino == ino && len > p.len {
                file.set_len(p.len)
                    .map_err(|e| ctx.io_error("cannot truncate a failed batch from", path, &e))?;
                len = p.len;
            }
            self.pending_truncate = None;
        }
        let len = repair_tail(ctx, &file, len).map_err(|e| ctx.io_error("cannot repair the tail of", path, &e))?;
        if ctx.syncs() {
            sync_dir(&ctx.dir).map_err(|e| ctx.io_error("cannot fsync directory", &ctx.dir, &e))?;
        }
        // A restarted exporter goes on with the file's age as it was.
        let first_write = meta
            .created()
            .ok()
            .and_then(|c| SystemTime::now().duration_since(c).ok())
            .and_then(|age| Instant::now().checked_sub(age))
            .unwrap_or_else(Instant::now);
        self.active = Some(Active {
            file: Arc::new(file),
            len,
            dev,
            ino,
            first_write,
        });
        // A failed listing only delays the mark: the next open tries again.
        if self.scan(ctx).is_ok() {
            self.set_mark(ctx);
        }
        Ok(())
    }

    /// Takes `<prefix>.lock` (again, if the directory was recreated). The
    /// first time, tells the janitor to handle the leftovers of earlier runs.
    fn ensure_lock(&mut self, ctx: &Ctx) -> Result<(), ExportError> {
        let path = &ctx.lock_path;
        if let Some(held) = &self.lock {
            match fs::metadata(path) {
                Ok(m) if m.dev() == held.dev && m.ino() == held.ino => return Ok(()),
                _ => self.lock = None,
            }
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(|e| ctx.io_error("cannot open lock file", path, &e))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                return Err(ExportError::transient(
                    "locked",
                    format!(
                        "volume exporter `{}`: `{}` is locked by another writer: another exporter or process writes to the same `path` and `file_prefix`",
                        ctx.name,
                        path.display()
                    ),
                ));
            }
            Err(TryLockError::Error(e)) => {
                if !self.lock_warned {
                    self.lock_warned = true;
                    tracing::warn!(exporter = %ctx.name, path = %path.display(), error = %e,
                        "volume exporter: file locks are not supported here; going on without one");
                }
            }
        }
        // The owner's PID, for humans; best effort.
        let pid = format!("{}\n", std::process::id());
        if file.set_len(0).is_ok() {
            let _ = file.write_all_at(pid.as_bytes(), 0);
        }
        let meta = file.metadata().map_err(|e| ctx.io_error("cannot check", path, &e))?;
        self.lock = Some(Held {
            dev: meta.dev(),
            ino: meta.ino(),
            _file: file,
        });
        if !self.janitor_started {
            self.janitor_started = true;
            let _ = self.janitor.send(JanitorMsg::Reconcile);
        }
        Ok(())
    }

    /// Whether the active file must rotate before `incoming` more bytes.
    fn rotation_due(&self, ctx: &Ctx, incoming: u64) -> bool {
        let Some(a) = &self.active else {
            return false;
        };
        a.len > 0
            && (a.len.saturating_add(incoming) > ctx.max_file_size
                || ctx.rotate_interval.is_some_and(|i| a.first_write.elapsed() >= i))
    }

    /// Time rotation (and rotation of a file that one big batch took past
    /// `max_file_size`), from the background thread.
    pub(super) fn rotate_if_due(&mut self, ctx: &Ctx) -> Result<(), ExportError> {
        if !self.rotation_due(ctx, 0) {
            return Ok(());
        }
        // Only rotate the file that is really at the active path.
        self.ensure_open(ctx)?;
        if self.rotation_due(ctx, 0) {
            self.rotate(ctx)?;
            self.ensure_open(ctx)?;
        }
        Ok(())
    }

    /// Renames the active file to the next rotated name.
    fn rotate(&mut self, ctx: &Ctx) -> Result<(), ExportError> {
        let Some(active) = &self.active else {
            return Ok(());
        };
        if ctx.syncs() {
            bump(&ctx.stats.fsyncs, 1);
            active
                .file
                .sync_data()
                .map_err(|e| ctx.io_error("cannot fsync", &ctx.active_path, &e))?;
        }
        let key = self.next_key(ctx)?;
        let target = ctx.dir.join(naming::file_name(&ctx.prefix, &key, Variant::Plain));
        fs::rename(&ctx.active_path, &target).map_err(|e| ctx.io_error("cannot rotate", &ctx.active_path, &e))?;
        self.last_key = Some(key);
        self.active = None;
        if ctx.syncs()
            && let Err(e) = sync_dir(&ctx.dir)
        {
            tracing::warn!(exporter = %ctx.name, dir = %ctx.dir.display(), error = %e,
                "volume exporter: cannot fsync the directory after a rotation");
        }
        if !ctx.syncs() {
            if self.rotated_unsynced.len() == MAX_ROTATED_UNSYNCED {
                self.rotated_unsynced.remove(0);
            }
            self.rotated_unsynced.push(target.clone());
        }
        bump(&ctx.stats.rotations, 1);
        tracing::debug!(exporter = %ctx.name, file = %target.display(), "volume exporter rotated its file");
        let _ = self.janitor.send(JanitorMsg::Reconcile);
        Ok(())
    }

    /// Learns the greatest rotated name in the directory, once.
    fn scan(&mut self, ctx: &Ctx) -> Result<(), ExportError> {
        if self.scanned {
            return Ok(());
        }
        let entries = fs::read_dir(&ctx.dir).map_err(|e| ctx.io_error("cannot list", &ctx.dir, &e))?;
        for entry in entries {
            let entry = entry.map_err(|e| ctx.io_error("cannot list", &ctx.dir, &e))?;
            if let Some((key, _)) = entry.file_name().to_str().and_then(|n| naming::parse(&ctx.prefix, n))
                && self.last_key.as_ref().is_none_or(|last| key > *last)
            {
                self.last_key = Some(key);
            }
        }
        self.scanned = true;
        Ok(())
    }

    /// Publishes where the output ends now (see `recover`): after every
    /// write and whenever a new active file is opened.
    fn set_mark(&self, ctx: &Ctx) {
        if let Some(a) = &self.active
            && self.scanned
        {
            *super::lock(&ctx.mark) = Some(Mark {
                last: self.last_key.clone(),
                dev: a.dev,
                ino: a.ino,
                offset: a.len,
            });
        }
    }

    /// A rotated name greater than every rotated name in the directory.
    fn next_key(&mut self, ctx: &Ctx) -> Result<NameKey, ExportError> {
        self.scan(ctx)?;
        let mut key = naming::next_key(self.last_key.as_ref(), naming::timestamp(chrono::Utc::now()));
        // Files may have appeared since the scan (another exporter before a
        // restart, a copy): never overwrite one.
        while [Variant::Plain, Variant::Gz, Variant::GzTmp].into_iter().any(|v| {
            let p = ctx.dir.join(naming::file_name(&ctx.prefix, &key, v));
            !matches!(fs::symlink_metadata(p), Err(e) if e.kind() == io::ErrorKind::NotFound)
        }) {
            key.seq += 1;
        }
        Ok(key)
    }
}

/// If the file does not end with `\n` (a write torn by a crash), truncates
/// it after its last `\n` (or to empty); returns the new length.
fn repair_tail(ctx: &Ctx, file: &File, len: u64) -> io::Result<u64> {
    if len == 0 {
        return Ok(0);
    }
    let mut last = [0u8; 1];
    file.read_exact_at(&mut last, len - 1)?;
    if last[0] == b'\n' {
        return Ok(len);
    }
    const CHUNK: u64 = 64 << 10;
    let mut buf = vec![0u8; CHUNK as usize];
    let mut end = len - 1;
    let keep = loop {
        if end == 0 {
            break 0;
        }
        let start = end.saturating_sub(CHUNK);
        let chunk = &mut buf[..(end - start) as usize];
        file.read_exact_at(chunk, start)?;
        if let Some(i) = chunk.iter().rposition(|&b| b == b'\n') {
            break start + i as u64 + 1;
        }
        end = start;
    };
    file.set_len(keep)?;
    if ctx.syncs() {
        file.sync_data()?;
    }
    let removed = len - keep;
    bump(&ctx.stats.torn_bytes_truncated, removed);
    tracing::warn!(exporter = %ctx.name, path = %ctx.active_path.display(), bytes = removed,
        "volume exporter: the active file ended with a torn line (an interrupted write); removed {removed} bytes");
    Ok(keep)
}

/// fsyncs a directory, so that the names created or renamed in it persist.
pub(super) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}
