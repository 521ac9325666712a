//! Reading back what the Volume exporter wrote after a saved position, so
//! that a restart after a hard kill does not write those records again
//! (see [`Exporter::recover`](crate::Exporter::recover)).
//!
//! # The position
//!
//! [`Mark`] says where the output ended at one moment: the active file's
//! identity (device, inode), the length it had then, and the greatest rotated
//! name that existed then (`last`). The writer updates it after every
//! successful write and whenever it opens a new active file, so it never runs
//! ahead of what is on disk: every record written after the mark was read is
//! at or after it.
//!
//! # The scan
//!
//! Files are only appended to, renamed by rotation (the active file becomes
//! the first rotated name greater than every name already there), gzipped
//! (same content, same name plus `.gz`) and deleted by retention. So the file
//! the mark points into is either still the active file (same inode, and no
//! rotated name after `last` yet), or the first rotated file whose name sorts
//! after `last`. The inode alone is not enough: once the marked file is
//! rotated and gzipped, a new active file may get its inode number back. The scan reads that file
//! from the mark's offset (in uncompressed bytes), then every later rotated
//! file and the active file, and returns the `uid` and `resource_version` of
//! every complete line. That is exact: it holds every record written after
//! the mark and nothing written long before it.
//!
//! Without a mark (no state saved: a fresh start, a replay) nothing is read:
//! no position means no checkpoint either, and the startup policy decides
//! what the first list exports, as it always did. A line that is not an event (foreign, a dead-letter wrapper, a torn tail) is
//! skipped. Anything unexpected (a file replaced by hand, retention deleting
//! the file of the mark) can only make the scan miss records, which then
//! come again (a duplicate), never skip a record that is not there.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use flate2::read::GzDecoder;

use super::naming::{self, NameKey, Variant};
use crate::Delivered;

/// Where the output ended at one moment; see the module doc.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Mark {
    /// The greatest rotated name in the directory then (None: no rotated file).
    pub(super) last: Option<NameKey>,
    pub(super) dev: u64,
    pub(super) ino: u64,
    /// The active file's length then.
    pub(super) offset: u64,
}

const VERSION: &str = "volume-v1";

impl Mark {
    /// `volume-v1;<ts>-<seq>|-;<dev>;<ino>;<offset>`.
    pub(super) fn encode(&self) -> String {
        let last = self
            .last
            .as_ref()
            .map_or_else(|| "-".to_string(), |k| format!("{}-{}", k.ts, k.seq));
        format!("{VERSION};{last};{};{};{}", self.dev, self.ino, self.offset)
    }

    pub(super) fn decode(s: &str) -> Option<Mark> {
        let mut it = s.split(';');
        if it.next()? != VERSION {
            return None;
        }
        let last = match it.next()? {
            "-" => None,
            k => {
                let (ts, seq) = k.rsplit_once('-')?;
                Some(NameKey {
                    ts: ts.to_string(),
                    seq: seq.parse().ok()?,
                })
            }
        };
        let dev = it.next()?.parse().ok()?;
        let ino = it.next()?.parse().ok()?;
        let offset = it.next()?.parse().ok()?;
        it.next().is_none().then_some(Mark { last, dev, ino, offset })
    }
}

/// What a scan read.
#[derive(Debug, Default)]
pub(super) struct Scan {
    pub(super) keys: Delivered,
    pub(super) files: usize,
    pub(super) lines: u64,
    /// Complete lines without a `uid` and `resource_version`.
    pub(super) skipped: u64,
    /// A last line without its newline (a torn write), ignored.
    pub(super) torn_bytes: u64,
}

/// One file to read, from an offset of its (uncompressed) content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Part {
    pub(super) plain: PathBuf,
    /// The `.gz` to fall back to when the plain file is gone (compressed meanwhile).
    pub(super) gz: Option<PathBuf>,
    pub(super) offset: u64,
}

/// The files to read after `mark`, in write order.
pub(super) fn plan(dir: &Path, prefix: &str, active: &Path, mark: &Mark) -> io::Result<Vec<Part>> {
    let active_part = |offset| Part {
        plain: active.to_path_buf(),
        gz: None,
        offset,
    };
    let mut rotated: Vec<NameKey> = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if let Some((key, v)) = entry.file_name().to_str().and_then(|n| naming::parse(prefix, n))
            && v != Variant::GzTmp
            && mark.last.as_ref().is_none_or(|last| key > *last)
        {
            rotated.push(key);
        }
    }
    rotated.sort();
    rotated.dedup();
    // A rotated name after `last` exists only once the marked file was
    // rotated (rotation is the only way one appears). Then an active file
    // with the mark's inode is a new file that reused the number, freed when
    // the marked file was gzipped and its plain copy deleted: not the marked one.
    let active_is_marked =
        rotated.is_empty() && std::fs::metadata(active).is_ok_and(|m| m.dev() == mark.dev && m.ino() == mark.ino);
    let mut parts: Vec<Part> = rotated
        .iter()
        .enumerate()
        .map(|(i, key)| Part {
            plain: dir.join(naming::file_name(prefix, key, Variant::Plain)),
            gz: Some(dir.join(naming::file_name(prefix, key, Variant::Gz))),
            // The marked file was rotated: it is the first name after `last`.
            offset: if i == 0 && !active_is_marked { mark.offset } else { 0 },
        })
        .collect();
    parts.push(active_part(if active_is_marked { mark.offset } else { 0 }));
    Ok(parts)
}

/// Reads every part; a part that does not exist (deleted by retention) is
/// skipped, one that cannot be read to its end is read as far as it goes.
pub(super) fn scan(parts: &[Part]) -> io::Result<Scan> {
    let mut out = Scan::default();
    for part in parts {
        let reader: Box<dyn Read> = match File::open(&part.plain) {
            Ok(f) => Box::new(f),
            Err(e) if e.kind() == io::ErrorKind::NotFound => match &part.gz {
                Some(gz) => match File::open(gz) {
                    Ok(f) => Box::new(GzDecoder::new(BufReader::with_capacity(256 << 10, f))),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(e),
                },
                None => continue,
            },
            Err(e) => return Err(e),
        };
        out.files += 1;
        if let Err(e) = scan_one(reader, part.offset, &mut out) {
            // A damaged file (a broken `.gz`): keep what was read, go on with the next one.
            tracing::warn!(file = %part.plain.display(), error = %e,
                "volume exporter: cannot read back a file to its end; events in the rest of it may be written again");
        }
    }
    Ok(out)
}

fn scan_one(reader: Box<dyn Read>, offset: u64, out: &mut Scan) -> io::Result<()> {
    let mut r = BufReader::with_capacity(256 << 10, reader);
    let skipped = io::copy(&mut (&mut r).take(offset), &mut io::sink())?;
    if skipped < offset {
        // Shorter than the mark: not the file it was taken on. Nothing of it is after the mark.
        return Ok(());
    }
    let mut line = Vec::with_capacity(4096);
    loop {
        line.clear();
        let n = r.read_until(b'\n', &mut line)?;
        if n == 0 {
            return Ok(());
        }
        if line.last() != Some(&b'\n') {
            out.torn_bytes += n as u64;
            return Ok(());
        }
        out.lines += 1;
        if !out.keys.insert_json(&line) {
            out.skipped += 1;
        }
    }
}
