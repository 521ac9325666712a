//! The background thread that looks after rotated files: finishes or cleans
//! interrupted compressions, applies retention, gzips new rotated files.
//! It is the only code that deletes or compresses files, so those steps
//! never race with each other.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, BufWriter};
use std::path::Path;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, TryRecvError};
use std::time::{Duration, SystemTime};

use flate2::write::GzEncoder;

use super::naming::{self, NameKey, Variant};
use super::writer::sync_dir;
use super::{Ctx, bump};

pub(super) enum JanitorMsg {
    /// A rotation happened, or the writer took the lock for the first time.
    Reconcile,
    /// Replies once every earlier message has been handled (tests use it to
    /// wait for compression and retention).
    #[cfg_attr(not(test), allow(dead_code))]
    Barrier(Sender<()>),
}

/// How often the janitor looks again without being asked: for `max_age`, and
/// to retry compressions that failed.
fn period(ctx: &Ctx) -> Duration {
    let max = Duration::from_secs(30);
    ctx.max_age
        .map_or(max, |a| (a / 4).clamp(Duration::from_millis(50), max))
}

/// The thread's loop; ends when the writer side is dropped.
pub(super) fn run(ctx: &Ctx, rx: &Receiver<JanitorMsg>) {
    // Nothing is touched before the writer holds the lock, so that a second
    // exporter on the same files cannot disturb the owner's work.
    let mut started = false;
    let period = period(ctx);
    loop {
        let mut barriers = Vec::new();
        let mut closed = false;
        let mut handle = |msg: JanitorMsg, started: &mut bool| match msg {
            JanitorMsg::Reconcile => *started = true,
            JanitorMsg::Barrier(reply) => barriers.push(reply),
        };
        match rx.recv_timeout(period) {
            Ok(msg) => handle(msg, &mut started),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break,
        }
        // Several rotations queued: one pass does for all.
        loop {
            match rx.try_recv() {
                Ok(msg) => handle(msg, &mut started),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    closed = true;
                    break;
                }
            }
        }
        if started {
            reconcile(ctx);
        }
        for reply in barriers {
            let _ = reply.send(());
        }
        if closed {
            break;
        }
    }
}

/// What exists on disk for one rotated name.
#[derive(Default)]
struct Found {
    plain: bool,
    gz: bool,
    tmp: bool,
}

/// One pass over the directory: leftovers, retention, compression.
pub(super) fn reconcile(ctx: &Ctx) {
    let mut files: BTreeMap<NameKey, Found> = BTreeMap::new();
    let entries = match fs::read_dir(&ctx.dir) {
        Ok(e) => e,
        Err(e) => {
            tracing::warn!(exporter = %ctx.name, dir = %ctx.dir.display(), error = %e,
                "volume exporter: cannot list the directory for compression and retention");
            return;
        }
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some((key, variant)) = name.to_str().and_then(|n| naming::parse(&ctx.prefix, n)) else {
            continue;
        };
        let found = files.entry(key).or_default();
        match variant {
            Variant::Plain => found.plain = true,
            Variant::Gz => found.gz = true,
            Variant::GzTmp => found.tmp = true,
        }
    }
    let path = |key: &NameKey, v: Variant| ctx.dir.join(naming::file_name(&ctx.prefix, key, v));

    // Leftovers of an interrupted compression: a `.tmp` is never complete; a
    // plain file next to its `.gz` was compressed (the `.gz` was fsynced
    // before its rename) but not yet deleted.
    for (key, found) in &mut files {
        if found.tmp {
            remove(ctx, &path(key, Variant::GzTmp), "an interrupted compression");
            found.tmp = false;
        }
        if found.plain && found.gz && remove(ctx, &path(key, Variant::Plain), "a file already compressed") {
            found.plain = false;
        }
    }
    files.retain(|_, f| f.plain || f.gz);

    // Retention, oldest first.
    let mut doomed: Vec<NameKey> = Vec::new();
    if let Some(max_age) = ctx.max_age {
        let now = SystemTime::now();
        for (key, found) in &files {
            let p = path(key, if found.gz { Variant::Gz } else { Variant::Plain });
            let too_old = fs::metadata(&p)
                .and_then(|m| m.modified())
                .is_ok_and(|t| now.duration_since(t).is_ok_and(|age| age > max_age));
            if too_old {
                doomed.push(key.clone());
            }
        }
    }
    if let Some(max_files) = ctx.max_files {
        let left = files.len() - doomed.len();
        if left > max_files {
            let extra: Vec<NameKey> = files
                .keys()
                .filter(|k| !doomed.contains(k))
                .take(left - max_files)
                .cloned()
                .collect();
            doomed.extend(extra);
        }
    }
    for key in doomed {
        let Some(found) = files.remove(&key) else {
            continue;
        };
        let mut deleted = true;
        if found.gz {
            deleted &= remove(ctx, &path(&key, Variant::Gz), "retention");
        }
        if found.plain {
            deleted &= remove(ctx, &path(&key, Variant::Plain), "retention");
        }
        if deleted {
            bump(&ctx.stats.files_deleted, 1);
            tracing::debug!(exporter = %ctx.name, file = %naming::file_name(&ctx.prefix, &key, Variant::Plain),
                "volume exporter: retention deleted a rotated file");
        }
    }

    // Compression of what is left, oldest first.
    if let Some(level) = ctx.compression {
        for (key, found) in &files {
            if !found.plain || found.gz {
                continue;
            }
            let plain = path(key, Variant::Plain);
            match compress(ctx, &plain, &path(key, Variant::GzTmp), &path(key, Variant::Gz), level) {
                Ok(true) => bump(&ctx.stats.files_compressed, 1),
                Ok(false) => {}
                Err(e) => {
                    bump(&ctx.stats.compression_errors, 1);
                    tracing::warn!(exporter = %ctx.name, file = %plain.display(), error = %e,
                        "volume exporter: cannot compress a rotated file; it stays uncompressed for now");
                    let _ = fs::remove_file(path(key, Variant::GzTmp));
                }
            }
        }
    }
}

/// Deletes a file; `false` (with a warning) if it could not.
fn remove(ctx: &Ctx, path: &Path, why: &str) -> bool {
    match fs::remove_file(path) {
        Ok(()) => true,
        Err(e) if e.kind() == io::ErrorKind::NotFound => true,
        Err(e) => {
            tracing::warn!(exporter = %ctx.name, file = %path.display(), error = %e,
                "volume exporter: cannot delete a file ({why})");
            false
        }
    }
}

/// `plain` → `tmp` (gzip, fsync) → renamed to `gz` → `plain` deleted.
/// `Ok(false)` if `plain` is gone already.
fn compress(ctx: &Ctx, plain: &Path, tmp: &Path, gz: &Path, level: flate2::Compression) -> io::Result<bool> {
    let src = match File::open(plain) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    let modified = src.metadata()?.modified()?;
    let out = OpenOptions::new().write(true).create(true).truncate(true).open(tmp)?;
    let mut encoder = GzEncoder::new(BufWriter::with_capacity(256 << 10, out), level);
    io::copy(&mut BufReader::with_capacity(256 << 10, src), &mut encoder)?;
    let out = encoder.finish()?.into_inner().map_err(|e| e.into_error())?;
    // Keep the age: retention by `max_age` reads modification times.
    out.set_modified(modified)?;
    out.sync_all()?;
    drop(out);
    fs::rename(tmp, gz)?;
    sync_dir(&ctx.dir)?;
    fs::remove_file(plain)?;
    if let Err(e) = sync_dir(&ctx.dir) {
        tracing::warn!(exporter = %ctx.name, dir = %ctx.dir.display(), error = %e,
            "volume exporter: cannot fsync the directory after a compression");
    }
    tracing::debug!(exporter = %ctx.name, file = %gz.display(), "volume exporter compressed a rotated file");
    Ok(true)
}
