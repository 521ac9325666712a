//! The seen-set's own binary file beside `checkpoint.json` in the file store
//! (`seen.bin`): written straight from the shared set, without a copy of it
//! and without base64, replaced atomically like the checkpoint.
//!
//! Layout (little-endian): the magic `ECSEEN01`, the entry count (u64), the
//! uid-count count (u64), then the entries of [`SeenSet::write_entries`]
//! (12 bytes each) and the counts of [`SeenSet::write_counts`] (16 bytes
//! each). A missing file is an empty set; a bad one is reported and ignored
//! (losing the seen-set can only cause duplicates after a relist, never loss).

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use super::seen::{SeenSet, SharedSeen};
use super::store::{StoreError, sync_replace};

/// The file in the state directory.
pub const FILE_NAME: &str = "seen.bin";
const MAGIC: &[u8; 8] = b"ECSEEN01";
const HEADER: usize = 24;

/// Why a seen file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SeenFileError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not a seen-set file (no ECSEEN01 header)")]
    NotSeenFile { path: String },
    #[error("{path}: the file is {len} bytes, its header announces {want}: truncated or corrupt")]
    BadLength { path: String, len: u64, want: u64 },
}

/// Writes `seen` (its newest `max` entries) to `dir/seen.bin`: a temp file
/// written under the set's lock, then (lock released) fsync, rename, dir fsync.
pub fn save(dir: &Path, seen: &SharedSeen, max: usize) -> Result<(), StoreError> {
    let io = |path: &Path| {
        let path = path.display().to_string();
        move |source| StoreError::Io { path, source }
    };
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let tmp = dir.join(format!(".{FILE_NAME}.tmp"));
    let file = File::create(&tmp).map_err(io(&tmp))?;
    let mut w = BufWriter::with_capacity(64 << 10, file);
    {
        let set = seen.lock().map_err(|_| StoreError::Io {
            path: tmp.display().to_string(),
            source: std::io::Error::other("the seen-set lock is poisoned"),
        })?;
        write(&set, &mut w, max).map_err(io(&tmp))?;
    }
    let file = w.into_inner().map_err(|e| io(&tmp)(e.into_error()))?;
    sync_replace(file, &tmp, dir, FILE_NAME)
}

/// Writes the header and the newest `max` entries and the counts of `set` into `w`.
pub fn write<W: Write + Seek>(set: &SeenSet, w: &mut W, max: usize) -> std::io::Result<()> {
    w.write_all(&[0u8; HEADER])?;
    let entries = set.write_entries(w, max)?;
    let counts = set.write_counts(w)?;
    w.seek(SeekFrom::Start(0))?;
    let mut header = [0u8; HEADER];
    header[..8].copy_from_slice(MAGIC);
    header[8..16].copy_from_slice(&(entries as u64).to_le_bytes());
    header[16..].copy_from_slice(&(counts as u64).to_le_bytes());
    w.write_all(&header)?;
    w.seek(SeekFrom::End(0))?;
    Ok(())
}

/// The path of the seen file in `dir`.
pub fn path(dir: &Path) -> PathBuf {
    dir.join(FILE_NAME)
}

/// Adds the entries and counts of `dir/seen.bin` into `seen`; Ok(false) if there is no such file.
pub fn load(dir: &Path, seen: &mut SeenSet) -> Result<bool, SeenFileError> {
    let path = path(dir);
    let p = || path.display().to_string();
    let file = match File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(source) => return Err(SeenFileError::Io { path: p(), source }),
    };
    let len = file
        .metadata()
        .map_err(|source| SeenFileError::Io { path: p(), source })?
        .len();
    read(BufReader::with_capacity(64 << 10, file), len, seen).map_err(|e| match e {
        ReadError::Io(source) => SeenFileError::Io { path: p(), source },
        ReadError::NotSeenFile => SeenFileError::NotSeenFile { path: p() },
        ReadError::BadLength { want } => SeenFileError::BadLength { path: p(), len, want },
    })?;
    Ok(true)
}

/// What [`read`] can fail with (without the path).
#[derive(Debug)]
pub enum ReadError {
    Io(std::io::Error),
    NotSeenFile,
    BadLength { want: u64 },
}

/// Reads a seen file of `len` bytes from `r` into `seen`, in pieces; nothing is added unless the header and length agree.
pub fn read(mut r: impl Read, len: u64, seen: &mut SeenSet) -> Result<(), ReadError> {
    let mut header = [0u8; HEADER];
    if len < HEADER as u64 {
        return Err(ReadError::NotSeenFile);
    }
    r.read_exact(&mut header).map_err(ReadError::Io)?;
    if &header[..8] != MAGIC {
        return Err(ReadError::NotSeenFile);
    }
    let field = |i: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&header[i..i + 8]);
        u64::from_le_bytes(b)
    };
    let (entries, counts) = (field(8), field(16));
    let want = entries
        .checked_mul(12)
        .and_then(|e| counts.checked_mul(16).and_then(|c| e.checked_add(c)))
        .and_then(|b| b.checked_add(HEADER as u64))
        .unwrap_or(u64::MAX);
    if want != len {
        return Err(ReadError::BadLength { want });
    }
    // 12 × 16 × 16 bytes: whole entries and whole counts per piece.
    let mut buf = vec![0u8; 12 * 16 * 256];
    let mut left = entries * 12;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        r.read_exact(&mut buf[..n]).map_err(ReadError::Io)?;
        seen.add_encoded(&buf[..n]);
        left -= n as u64;
    }
    let mut left = counts * 16;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        r.read_exact(&mut buf[..n]).map_err(ReadError::Io)?;
        seen.add_encoded_counts(&buf[..n]);
        left -= n as u64;
    }
    seen.trim_now();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn set_of(n: usize) -> SeenSet {
        let mut s = SeenSet::new(Duration::from_secs(3600), 1000);
        for i in 0..n {
            s.insert(&format!("u{i}"), &i.to_string());
            s.insert_count(&format!("u{i}"), i as u64 + 1);
        }
        s
    }

    #[test]
    fn round_trip_through_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let shared = set_of(200).shared();
        save(dir.path(), &shared, 1000).unwrap();
        let len = std::fs::metadata(path(dir.path())).unwrap().len();
        assert_eq!(len, 24 + 200 * 12 + 200 * 16, "200 entries, 200 counts");
        let mut back = SeenSet::new(Duration::from_secs(3600), 1000);
        assert!(load(dir.path(), &mut back).unwrap());
        assert_eq!(back.len(), 200);
        assert!(back.contains("u0", "0") && back.contains("u199", "199") && !back.contains("u0", "1"));
        assert_eq!(back.count("u199"), Some(200), "the counts travel too");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, vec![FILE_NAME.to_string()], "no temp file left");
    }

    #[test]
    fn same_bytes_as_the_inline_encoding() {
        // The file holds exactly the inline (ConfigMap/Lease) encodings, behind a header.
        let s = set_of(50);
        let mut cur = std::io::Cursor::new(Vec::new());
        write(&s, &mut cur, 1000).unwrap();
        let bytes = cur.into_inner();
        let mut entries: Vec<[u8; 12]> = bytes[24..24 + 600].chunks(12).map(|c| c.try_into().unwrap()).collect();
        let mut inline: Vec<[u8; 12]> = s.encode(1000).chunks(12).map(|c| c.try_into().unwrap()).collect();
        entries.sort();
        inline.sort();
        assert_eq!(entries, inline);
        assert_eq!(&bytes[..8], b"ECSEEN01");
        assert_eq!(u64::from_le_bytes(bytes[8..16].try_into().unwrap()), 50);
        assert_eq!(u64::from_le_bytes(bytes[16..24].try_into().unwrap()), 50);
    }

    #[test]
    fn missing_is_empty_and_bad_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = SeenSet::new(Duration::from_secs(3600), 1000);
        assert!(!load(dir.path(), &mut s).unwrap(), "no file: nothing loaded");
        std::fs::write(path(dir.path()), b"{\"seen\":\"\"}").unwrap();
        let e = load(dir.path(), &mut s).unwrap_err().to_string();
        assert!(e.contains("seen.bin") && e.contains("not a seen-set file"), "{e}");
        // Truncated: the header announces more than the file holds; nothing is added.
        let shared = set_of(10).shared();
        save(dir.path(), &shared, 1000).unwrap();
        let full = std::fs::read(path(dir.path())).unwrap();
        std::fs::write(path(dir.path()), &full[..full.len() - 5]).unwrap();
        let e = load(dir.path(), &mut s).unwrap_err().to_string();
        assert!(e.contains("seen.bin") && e.contains("truncated"), "{e}");
        assert!(s.is_empty());
    }

    #[test]
    fn capped_to_the_newest_max() {
        let mut s = SeenSet::new(Duration::from_secs(100_000), 1000);
        for i in 0..100 {
            s.insert(&format!("u{i}"), "1");
        }
        let mut cur = std::io::Cursor::new(Vec::new());
        write(&s, &mut cur, 40).unwrap();
        let bytes = cur.into_inner();
        assert_eq!(
            u64::from_le_bytes(bytes[8..16].try_into().unwrap()),
            40,
            "exactly max, ties included"
        );
        let mut back = SeenSet::new(Duration::from_secs(100_000), 1000);
        read(&bytes[..], bytes.len() as u64, &mut back).unwrap();
        assert_eq!(back.len(), 40);
    }
}
