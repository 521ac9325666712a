//! The on-disk queue itself: segment files of framed records, an index file
//! with the read position, fsync on every write, a size cap, and a scan at
//! open that finds torn and corrupt tails. Blocking I/O only: callers run it
//! off the async executor.
//!
//! # Files (all in one directory)
//!
//! | file | what it is |
//! | --- | --- |
//! | `<id>.seg` | a segment: records appended in order; `<id>` is 20 decimal digits, so names sort as ids |
//! | `index` | the read position: the front segment id and, for segments partly read, where their unread records start |
//! | `index.tmp` | an index being replaced (written, fsynced, renamed over `index`) |
//! | `lock` | held with an advisory lock while a process uses the directory |
//!
//! A record is `[len: u32 LE][crc32 of the payload: u32 LE][payload]`. Every
//! append is one write followed by `fdatasync`; a write that fails is cut off
//! again (`set_len`), so a failed append leaves nothing behind. A crash in
//! the middle of a write leaves a torn record at the end of the newest
//! segment: the scan at open stops each segment at its first incomplete or
//! corrupt record, reports it with the file and offset, and ignores the rest
//! of that segment. Appends after an open always go to a new segment, so
//! nothing is ever written after a damaged tail and no file is rewritten.
//!
//! Segments whose id is below the index's front are fully read: they are
//! deleted at open and whenever the read position passes them. [`SpillStore::prepend`]
//! writes a segment with an id just below the front, fsyncs it, then moves the
//! front to it in the index: a crash before the index is renamed leaves a
//! segment below the front, which the next open deletes (its records were
//! never acknowledged as spilled, so the source still has them).

use std::collections::VecDeque;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// Bytes before each payload: length and checksum.
pub const FRAME_HEADER: u64 = 8;
/// A length field above this is corruption, not a record.
const MAX_RECORD: u32 = 256 << 20;
/// The first id of an empty directory: room below it for prepended segments.
const FIRST_ID: u64 = 1 << 40;

/// Where and how big.
#[derive(Debug, Clone)]
pub struct SpillOptions {
    pub dir: PathBuf,
    /// Appends are refused (`SpillError::Full`) once unread records take this many bytes.
    pub max_bytes: u64,
    /// A new segment is started once the newest one reaches this size.
    pub segment_bytes: u64,
}

/// Why an operation on the spill directory failed.
#[derive(Debug, thiserror::Error)]
pub enum SpillError {
    #[error("spill queue: cannot {action} `{}`: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("spill queue `{}` is full: {used} bytes used, {wanted} more wanted, spill_max_bytes = {max}", dir.display())]
    Full {
        dir: PathBuf,
        used: u64,
        wanted: u64,
        max: u64,
    },
    #[error("spill queue `{}` is in use by another process (it holds `{}`)", dir.display(), dir.join("lock").display())]
    Locked { dir: PathBuf },
}

impl SpillError {
    /// A fixed word for metrics and logs.
    pub fn reason(&self) -> &'static str {
        match self {
            SpillError::Io { source, .. } => match source.kind() {
                io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded => "disk_full",
                io::ErrorKind::PermissionDenied | io::ErrorKind::ReadOnlyFilesystem => "permission_denied",
                _ => "io",
            },
            SpillError::Full { .. } => "spill_full",
            SpillError::Locked { .. } => "locked",
        }
    }
}

fn io_err(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> SpillError {
    let path = path.to_path_buf();
    move |source| SpillError::Io { action, path, source }
}

/// What is wrong with a stretch of a segment file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Damage {
    /// The last record does not fit in the file: a write was cut short.
    Torn,
    /// A complete record whose checksum does not match its bytes.
    Checksum,
    /// A length field that cannot be a record.
    BadLength,
}

/// Damage found in a segment: everything from `offset` to the end of the file is ignored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpillProblem {
    pub path: PathBuf,
    pub offset: u64,
    pub damage: Damage,
    /// Bytes ignored from `offset` to the end of the file.
    pub ignored_bytes: u64,
}

impl fmt::Display for SpillProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.damage {
            Damage::Torn => "torn record (the file ends inside it)",
            Damage::Checksum => "checksum mismatch",
            Damage::BadLength => "invalid record length",
        };
        write!(
            f,
            "`{}`: {what} at offset {}; the remaining {} bytes of this segment are ignored",
            self.path.display(),
            self.offset,
            self.ignored_bytes
        )
    }
}

#[derive(Debug)]
struct Segment {
    id: u64,
    path: PathBuf,
    /// First unread byte.
    start: u64,
    /// End of the last good record.
    end: u64,
    /// Records in `start..end`.
    records: u64,
}

/// Records read from the front, not yet acknowledged.
#[derive(Debug, Default)]
pub struct ReadBatch {
    pub payloads: Vec<Vec<u8>>,
    /// Damage found while reading (the damaged rest of that segment is skipped).
    pub problems: Vec<SpillProblem>,
    /// Where reading stopped: segment id and offset after the last record.
    end: Option<(u64, u64)>,
    /// The segment reading started in. A segment prepended after the read
    /// (`prepend`, below this id) is not part of the batch.
    start_id: Option<u64>,
}

/// One spill directory, opened by one process.
pub struct SpillStore {
    opts: SpillOptions,
    segments: VecDeque<Segment>,
    /// Open for appends: the last segment, created since open.
    tail: Option<File>,
    next_id: u64,
    records: u64,
    bytes: u64,
    _lock: File,
}

impl fmt::Debug for SpillStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SpillStore")
            .field("dir", &self.opts.dir)
            .field("records", &self.records)
            .field("bytes", &self.bytes)
            .finish()
    }
}

fn seg_name(id: u64) -> String {
    format!("{id:020}.seg")
}

fn seg_id(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".seg")?;
    (digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| digits.parse().ok())
        .flatten()
}

fn frame(out: &mut Vec<u8>, payload: &[u8]) {
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    out.extend_from_slice(payload);
}

fn frames_len(payloads: &[Vec<u8>]) -> u64 {
    payloads.iter().map(|p| FRAME_HEADER + p.len() as u64).sum()
}

fn sync_dir(dir: &Path) -> Result<(), SpillError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("fsync the directory", dir))
}

/// Reads one record at `off` (`end` is where good data stops); Ok(None) at `end`.
fn read_record(
    file: &File,
    path: &Path,
    off: u64,
    end: u64,
) -> Result<Result<Option<Vec<u8>>, SpillProblem>, SpillError> {
    if off >= end {
        return Ok(Ok(None));
    }
    let problem = |damage| SpillProblem {
        path: path.to_path_buf(),
        offset: off,
        damage,
        ignored_bytes: end - off,
    };
    if end - off < FRAME_HEADER {
        return Ok(Err(problem(Damage::Torn)));
    }
    let mut head = [0u8; FRAME_HEADER as usize];
    file.read_exact_at(&mut head, off).map_err(io_err("read", path))?;
    let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]);
    let crc = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
    if len > MAX_RECORD {
        return Ok(Err(problem(Damage::BadLength)));
    }
    if end - off - FRAME_HEADER < u64::from(len) {
        return Ok(Err(problem(Damage::Torn)));
    }
    let mut payload = vec![0u8; len as usize];
    file.read_exact_at(&mut payload, off + FRAME_HEADER)
        .map_err(io_err("read", path))?;
    if crc32fast::hash(&payload) != crc {
        return Ok(Err(problem(Damage::Checksum)));
    }
    Ok(Ok(Some(payload)))
}

/// Finds the good part of a segment from `start`: (end, records, damage).
fn scan(path: &Path, start: u64) -> Result<(u64, u64, Option<SpillProblem>), SpillError> {
    let file = File::open(path).map_err(io_err("open", path))?;
    let len = file.metadata().map_err(io_err("stat", path))?.len();
    let mut off = start.min(len);
    let mut records = 0;
    loop {
        match read_record(&file, path, off, len)? {
            Ok(None) => return Ok((off, records, None)),
            Ok(Some(p)) => {
                off += FRAME_HEADER + p.len() as u64;
                records += 1;
            }
            Err(problem) => return Ok((off, records, Some(problem))),
        }
    }
}

/// The index: the front segment id and the start of partly read segments.
#[derive(Debug, Default, PartialEq)]
struct Index {
    front: u64,
    starts: Vec<(u64, u64)>,
}

impl Index {
    fn to_text(&self) -> String {
        let mut body = format!("event-collector spill index v1\nfront {}\n", self.front);
        for (id, off) in &self.starts {
            body.push_str(&format!("start {id} {off}\n"));
        }
        let crc = crc32fast::hash(body.as_bytes());
        format!("{body}crc {crc:08x}\n")
    }

    fn parse(text: &str) -> Option<Index> {
        let (body, last) = text.trim_end_matches('\n').rsplit_once('\n')?;
        let body = format!("{body}\n");
        let crc = u32::from_str_radix(last.strip_prefix("crc ")?, 16).ok()?;
        if crc32fast::hash(body.as_bytes()) != crc {
            return None;
        }
        let mut lines = body.lines();
        if lines.next()? != "event-collector spill index v1" {
            return None;
        }
        let front = lines.next()?.strip_prefix("front ")?.parse().ok()?;
        let mut starts = Vec::new();
        for l in lines {
            let (id, off) = l.strip_prefix("start ")?.split_once(' ')?;
            starts.push((id.parse().ok()?, off.parse().ok()?));
        }
        Some(Index { front, starts })
    }
}

impl SpillStore {
    /// Opens (creating it if needed) and locks the directory, scans what is
    /// in it, and returns the store with any damage found (already skipped).
    pub fn open(opts: SpillOptions) -> Result<(SpillStore, Vec<SpillProblem>), SpillError> {
        let dir = opts.dir.clone();
        fs::create_dir_all(&dir).map_err(io_err("create the directory", &dir))?;
        let lock_path = dir.join("lock");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io_err("open", &lock_path))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => return Err(SpillError::Locked { dir }),
            Err(fs::TryLockError::Error(e)) => return Err(io_err("lock", &lock_path)(e)),
        }
        let mut problems = Vec::new();
        let index_path = dir.join("index");
        let index = match fs::read_to_string(&index_path) {
            Ok(text) => match Index::parse(&text) {
                Some(i) => Some(i),
                None => {
                    problems.push(SpillProblem {
                        path: index_path.clone(),
                        offset: 0,
                        damage: Damage::Checksum,
                        ignored_bytes: text.len() as u64,
                    });
                    None
                }
            },
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(io_err("read", &index_path)(e)),
        };
        let mut ids: Vec<u64> = Vec::new();
        for entry in fs::read_dir(&dir).map_err(io_err("list", &dir))? {
            let entry = entry.map_err(io_err("list", &dir))?;
            if let Some(id) = entry.file_name().to_str().and_then(seg_id) {
                ids.push(id);
            }
        }
        ids.sort_unstable();
        let index = index.unwrap_or_else(|| Index {
            front: ids.first().copied().unwrap_or(FIRST_ID),
            starts: Vec::new(),
        });
        let mut store = SpillStore {
            next_id: ids.last().map_or(FIRST_ID, |m| m + 1).max(index.front),
            opts,
            segments: VecDeque::new(),
            tail: None,
            records: 0,
            bytes: 0,
            _lock: lock,
        };
        for id in ids {
            let path = dir.join(seg_name(id));
            if id < index.front {
                fs::remove_file(&path).map_err(io_err("delete", &path))?;
                continue;
            }
            let start = index.starts.iter().find(|(i, _)| *i == id).map_or(0, |(_, o)| *o);
            let (end, records, problem) = scan(&path, start)?;
            problems.extend(problem);
            if records == 0 {
                fs::remove_file(&path).map_err(io_err("delete", &path))?;
                continue;
            }
            store.records += records;
            store.bytes += end - start;
            store.segments.push_back(Segment {
                id,
                path,
                start,
                end,
                records,
            });
        }
        store.write_index()?;
        Ok((store, problems))
    }

    pub fn dir(&self) -> &Path {
        &self.opts.dir
    }

    /// Records written and not yet acknowledged.
    pub fn records(&self) -> u64 {
        self.records
    }

    /// Bytes of those records (with their frame headers).
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    pub fn is_empty(&self) -> bool {
        self.records == 0
    }

    fn check_room(&self, wanted: u64) -> Result<(), SpillError> {
        // An empty queue takes one oversized write rather than refusing it for ever.
        if self.bytes > 0 && self.bytes + wanted > self.opts.max_bytes {
            return Err(SpillError::Full {
                dir: self.opts.dir.clone(),
                used: self.bytes,
                wanted,
                max: self.opts.max_bytes,
            });
        }
        Ok(())
    }

    /// Whether `wanted` more bytes fit under the cap.
    pub fn has_room(&self, wanted: u64) -> bool {
        self.check_room(wanted).is_ok()
    }

    /// Appends records at the back, durably (written and fdatasynced) when it returns Ok.
    pub fn append(&mut self, payloads: &[Vec<u8>]) -> Result<(), SpillError> {
        if payloads.is_empty() {
            return Ok(());
        }
        let size = frames_len(payloads);
        self.check_room(size)?;
        let need_new = match (&self.tail, self.segments.back()) {
            (Some(_), Some(last)) => last.end >= self.opts.segment_bytes,
            _ => true,
        };
        if need_new {
            let id = self.next_id;
            let path = self.opts.dir.join(seg_name(id));
            let file = OpenOptions::new()
                .create_new(true)
                .write(true)
                .read(true)
                .open(&path)
                .map_err(io_err("create", &path))?;
            sync_dir(&self.opts.dir)?;
            self.next_id += 1;
            self.tail = Some(file);
            self.segments.push_back(Segment {
                id,
                path,
                start: 0,
                end: 0,
                records: 0,
            });
        }
        let (Some(file), Some(seg)) = (&self.tail, self.segments.back_mut()) else {
            unreachable!("a tail segment was just ensured");
        };
        let mut buf = Vec::with_capacity(size as usize);
        for p in payloads {
            frame(&mut buf, p);
        }
        let written = file
            .write_all_at(&buf, seg.end)
            .map_err(io_err("write", &seg.path))
            .and_then(|()| file.sync_data().map_err(io_err("fsync", &seg.path)));
        if let Err(e) = written {
            // Leave no partial record behind; if even that fails, the scan at open finds it.
            let _ = file.set_len(seg.end);
            return Err(e);
        }
        seg.end += size;
        seg.records += payloads.len() as u64;
        self.records += payloads.len() as u64;
        self.bytes += size;
        Ok(())
    }

    /// Puts records in front of everything already queued, durably. Used to
    /// move records that were waiting in memory ahead of the ones spilled after them.
    pub fn prepend(&mut self, payloads: &[Vec<u8>]) -> Result<(), SpillError> {
        if payloads.is_empty() {
            return Ok(());
        }
        let Some(front) = self.segments.front().map(|s| s.id) else {
            return self.append(payloads);
        };
        let size = frames_len(payloads);
        self.check_room(size)?;
        let id = front - 1;
        let path = self.opts.dir.join(seg_name(id));
        let mut buf = Vec::with_capacity(size as usize);
        for p in payloads {
            frame(&mut buf, p);
        }
        let written = (|| {
            // A leftover from a crash (below the front, so never acknowledged) is replaced.
            let mut f = File::create(&path).map_err(io_err("create", &path))?;
            f.write_all(&buf).map_err(io_err("write", &path))?;
            f.sync_data().map_err(io_err("fsync", &path))?;
            sync_dir(&self.opts.dir)
        })();
        if let Err(e) = written {
            let _ = fs::remove_file(&path);
            return Err(e);
        }
        self.segments.push_front(Segment {
            id,
            path: path.clone(),
            start: 0,
            end: size,
            records: payloads.len() as u64,
        });
        if let Err(e) = self.write_index() {
            self.segments.pop_front();
            let _ = fs::remove_file(&path);
            return Err(e);
        }
        self.records += payloads.len() as u64;
        self.bytes += size;
        Ok(())
    }

    /// Reads up to `max_records` (and about `max_bytes`) from the front,
    /// without removing them: call [`SpillStore::ack`] once they are delivered.
    /// Damaged records found on the way are skipped and reported.
    pub fn read(&mut self, max_records: usize, max_bytes: u64) -> Result<ReadBatch, SpillError> {
        let mut batch = ReadBatch::default();
        let mut bytes = 0u64;
        for seg in self.segments.iter_mut() {
            if batch.payloads.len() >= max_records || (bytes >= max_bytes && !batch.payloads.is_empty()) {
                break;
            }
            let file = File::open(&seg.path).map_err(io_err("open", &seg.path))?;
            let mut off = seg.start;
            let mut here = 0u64;
            while batch.payloads.len() < max_records && (bytes < max_bytes || batch.payloads.is_empty()) {
                match read_record(&file, &seg.path, off, seg.end)? {
                    Ok(None) => break,
                    Ok(Some(p)) => {
                        off += FRAME_HEADER + p.len() as u64;
                        bytes += FRAME_HEADER + p.len() as u64;
                        here += 1;
                        batch.payloads.push(p);
                    }
                    Err(problem) => {
                        // Changed on disk since it was scanned: keep what was good.
                        let lost = seg.records.saturating_sub(here);
                        self.records -= lost.min(self.records);
                        self.bytes -= (seg.end - off).min(self.bytes);
                        seg.records = here;
                        seg.end = off;
                        batch.problems.push(problem);
                        break;
                    }
                }
            }
            batch.start_id.get_or_insert(seg.id);
            batch.end = Some((seg.id, off));
        }
        Ok(batch)
    }

    /// Removes the records of `batch` (the oldest ones) and records the new
    /// read position durably; fully read segments are deleted.
    pub fn ack(&mut self, batch: &ReadBatch) -> Result<(), SpillError> {
        let Some((end_id, end_off)) = batch.end else {
            return Ok(());
        };
        let start_id = batch.start_id.unwrap_or(end_id);
        let mut left = batch.payloads.len() as u64;
        let mut removed = Vec::new();
        // Segments prepended since the read (ids below `start_id`) stay: their
        // records were not in the batch.
        let i = self
            .segments
            .iter()
            .position(|s| s.id >= start_id)
            .unwrap_or(self.segments.len());
        while let Some(seg) = self.segments.get_mut(i) {
            if seg.id > end_id {
                break;
            }
            let upto = if seg.id == end_id {
                end_off.min(seg.end)
            } else {
                seg.end
            };
            let n = left.min(seg.records);
            left -= n;
            self.bytes -= upto.saturating_sub(seg.start).min(self.bytes);
            self.records -= n.min(self.records);
            seg.records -= n;
            seg.start = upto.max(seg.start);
            if seg.start < seg.end {
                break;
            }
            // Fully read; if it was the segment being appended to, the next append starts a new one.
            if i + 1 == self.segments.len() {
                self.tail = None;
            }
            if let Some(s) = self.segments.remove(i) {
                removed.push(s.path);
            }
        }
        self.write_index()?;
        for path in removed {
            fs::remove_file(&path).map_err(io_err("delete", &path))?;
        }
        Ok(())
    }

    fn write_index(&self) -> Result<(), SpillError> {
        let index = Index {
            front: self.segments.front().map_or(self.next_id, |s| s.id),
            starts: self
                .segments
                .iter()
                .filter(|s| s.start > 0)
                .map(|s| (s.id, s.start))
                .collect(),
        };
        let tmp = self.opts.dir.join("index.tmp");
        let path = self.opts.dir.join("index");
        let mut f = File::create(&tmp).map_err(io_err("create", &tmp))?;
        f.write_all(index.to_text().as_bytes()).map_err(io_err("write", &tmp))?;
        f.sync_all().map_err(io_err("fsync", &tmp))?;
        fs::rename(&tmp, &path).map_err(io_err("rename", &tmp))?;
        sync_dir(&self.opts.dir)
    }
}

#[cfg(test)]
mod tests;
