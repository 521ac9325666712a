//! Compiled modules on disk, so a restart or a second pod on the same node
//! skips Cranelift (0.1 s for a Rust component, close to a minute for Python).
//!
//! An entry is `<key>.cwasm` (what `Engine::precompile_*` produced) and
//! `<key>.sha256` (the artifact's checksum), where the key is the sha256 of the
//! module's sha256, the engine's settings and the module kind. Loading native
//! code is `unsafe`, so only artifacts this program wrote are loaded: the
//! directory and the files must belong to this user and be writable by no one
//! else, and the artifact must match its checksum. Both files are written to a
//! temporary name and renamed into place.
//!
//! The directory is bounded (`[wasm] cache_max_size`): every hot-swapped
//! version adds an artifact (35 MiB for the Python example), so after each
//! store the least recently used entries (by the artifact's mtime, which a
//! hit refreshes) are removed until the whole fits again. The entry just
//! written always stays.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use sha2::{Digest, Sha256};

use super::module::ModuleKind;

/// sha256 as lowercase hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// What a lookup found.
#[derive(Debug)]
pub enum Lookup {
    Hit(Vec<u8>),
    Miss,
    /// An entry exists but may not be used (the reason is logged).
    Invalid(String),
}

/// The artifact cache directory.
#[derive(Debug, Clone)]
pub struct ArtifactCache {
    dir: PathBuf,
    /// The most the entries may take together, in bytes.
    max_bytes: u64,
}

/// What [`ArtifactCache::prune`] removed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Pruned {
    pub entries: usize,
    pub bytes: u64,
}

/// How long a temporary file may lie around before it counts as left over
/// from a crash (a write in progress takes well under this).
const STALE_TMP: std::time::Duration = std::time::Duration::from_secs(3600);

impl ArtifactCache {
    /// Opens (creating, mode 0700) the cache directory, bounded to `max_bytes`.
    pub fn open(dir: &Path, max_bytes: u64) -> Result<ArtifactCache, String> {
        fs::create_dir_all(dir).map_err(|e| format!("cannot create the module cache `{}`: {e}", dir.display()))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let meta = fs::metadata(dir).map_err(|e| format!("module cache `{}`: {e}", dir.display()))?;
            if meta.permissions().mode() & 0o022 != 0 {
                // Ours and group/world-writable: tighten it; someone else's: refuse.
                if owned_by_us(&meta) {
                    let _ = fs::set_permissions(dir, fs::Permissions::from_mode(0o700));
                }
            }
            let meta = fs::metadata(dir).map_err(|e| format!("module cache `{}`: {e}", dir.display()))?;
            if !owned_by_us(&meta) || meta.permissions().mode() & 0o022 != 0 {
                return Err(format!(
                    "module cache `{}` belongs to another user or is writable by others: not used",
                    dir.display()
                ));
            }
        }
        Ok(ArtifactCache {
            dir: dir.to_path_buf(),
            max_bytes,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The key of a module compiled by an engine.
    pub fn key(module_sha256: &str, engine_key: &str, kind: ModuleKind) -> String {
        sha256_hex(format!("event-collector-artifact-v1\n{module_sha256}\n{engine_key}\n{kind:?}").as_bytes())
    }

    fn paths(&self, key: &str) -> (PathBuf, PathBuf) {
        (
            self.dir.join(format!("{key}.cwasm")),
            self.dir.join(format!("{key}.sha256")),
        )
    }

    /// Reads and checks an artifact.
    pub fn load(&self, key: &str) -> Lookup {
        let (art, sum) = self.paths(key);
        let expected = match fs::read_to_string(&sum) {
            Ok(s) => s.trim().to_string(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Lookup::Miss,
            Err(e) => return Lookup::Invalid(format!("{}: {e}", sum.display())),
        };
        let bytes = match read_trusted(&art) {
            Ok(Some(b)) => b,
            Ok(None) => return Lookup::Miss,
            Err(e) => return Lookup::Invalid(e),
        };
        if let Err(e) = check_trusted(&sum) {
            return Lookup::Invalid(e);
        }
        if sha256_hex(&bytes) != expected {
            return Lookup::Invalid(format!("{}: checksum mismatch", art.display()));
        }
        // Recently used: the last to be pruned. Best effort (a read-only cache still serves).
        if let Ok(f) = fs::File::options().write(true).open(&art) {
            let _ = f.set_modified(SystemTime::now());
        }
        Lookup::Hit(bytes)
    }

    /// Writes an artifact and its checksum atomically, then prunes the
    /// directory back to its bound (never removing this entry).
    pub fn store(&self, key: &str, artifact: &[u8]) -> Result<Pruned, String> {
        let (art, sum) = self.paths(key);
        write_atomic(&sum, sha256_hex(artifact).as_bytes())?;
        write_atomic(&art, artifact)?;
        Ok(self.prune(key))
    }

    /// Removes the least recently used entries until the cache fits in its
    /// bound, and temporary files left by a crash. `keep` is never removed.
    /// Failures to remove are skipped: the next store tries again.
    pub fn prune(&self, keep: &str) -> Pruned {
        let Ok(dir) = fs::read_dir(&self.dir) else {
            return Pruned::default();
        };
        let now = SystemTime::now();
        // (last used, bytes of both files, key)
        let mut entries: Vec<(SystemTime, u64, String)> = Vec::new();
        for e in dir.flatten() {
            let name = e.file_name();
            let Some(name) = name.to_str() else { continue };
            let Ok(meta) = e.metadata() else { continue };
            let modified = meta.modified().unwrap_or(now);
            if name.starts_with('.') && name.contains(".tmp-") {
                if now.duration_since(modified).is_ok_and(|age| age > STALE_TMP) {
                    let _ = fs::remove_file(e.path());
                }
                continue;
            }
            let Some(key) = name.strip_suffix(".cwasm") else {
                continue;
            };
            let sum = fs::metadata(self.dir.join(format!("{key}.sha256"))).map_or(0, |m| m.len());
            entries.push((modified, meta.len() + sum, key.to_string()));
        }
        let mut total: u64 = entries.iter().map(|e| e.1).sum();
        let mut pruned = Pruned::default();
        if total <= self.max_bytes {
            return pruned;
        }
        entries.sort();
        for (_, bytes, key) in entries {
            if total <= self.max_bytes {
                break;
            }
            if key == keep {
                continue;
            }
            let (art, sum) = self.paths(&key);
            // The checksum goes first: an artifact without one is a miss, never loaded.
            let sum_removed = fs::remove_file(&sum).is_ok();
            let art_removed = fs::remove_file(&art).is_ok();
            if sum_removed || art_removed {
                total = total.saturating_sub(bytes);
                pruned.entries += 1;
                pruned.bytes += bytes;
            }
        }
        pruned
    }
}

#[cfg(unix)]
fn owned_by_us(meta: &fs::Metadata) -> bool {
    use std::os::unix::fs::MetadataExt;
    // /proc/self belongs to the process's effective uid.
    match fs::metadata("/proc/self") {
        Ok(me) => me.uid() == meta.uid(),
        Err(_) => true,
    }
}

/// The file must be a regular file of ours, writable by no one else.
fn check_trusted(path: &Path) -> Result<(), String> {
    let meta = fs::symlink_metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if !meta.file_type().is_file() {
        return Err(format!("{}: not a regular file", path.display()));
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if !owned_by_us(&meta) || meta.permissions().mode() & 0o022 != 0 {
            return Err(format!(
                "{}: belongs to another user or is writable by others",
                path.display()
            ));
        }
    }
    Ok(())
}

fn read_trusted(path: &Path) -> Result<Option<Vec<u8>>, String> {
    match fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("{}: {e}", path.display())),
        Ok(_) => {}
    }
    check_trusted(path)?;
    fs::read(path).map(Some).map_err(|e| format!("{}: {e}", path.display()))
}

/// Writes `bytes` to a temporary file beside `path`, syncs it and renames it into place.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), String> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.tmp-{}-{}",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("artifact"),
        std::process::id(),
        rand::random::<u32>()
    ));
    let result = (|| {
        let mut opts = fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let mut f = opts.open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    })();
    result.map_err(|e| {
        let _ = fs::remove_file(&tmp);
        format!("cannot write `{}`: {e}", path.display())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn age(cache: &ArtifactCache, key: &str, secs_ago: u64) {
        let (art, _) = cache.paths(key);
        let f = fs::File::options().write(true).open(&art).expect("artifact exists");
        f.set_modified(SystemTime::now() - Duration::from_secs(secs_ago))
            .expect("sets mtime");
    }

    fn present(cache: &ArtifactCache, key: &str) -> bool {
        let (art, sum) = cache.paths(key);
        art.exists() && sum.exists()
    }

    #[test]
    fn a_store_prunes_the_least_recently_used_down_to_the_bound() {
        let dir = tempfile::tempdir().expect("tempdir");
        // Room for three 100 KiB entries (each also has a 64-byte checksum file).
        let cache = ArtifactCache::open(dir.path(), 310 * 1024).expect("opens");
        let art = vec![7u8; 100 * 1024];
        for (i, k) in ["a", "b", "c"].iter().enumerate() {
            assert_eq!(cache.store(k, &art).expect("stores"), Pruned::default());
            age(&cache, k, 300 - 100 * i as u64);
        }
        // "a" is the oldest by mtime, but a hit makes it the most recent.
        assert!(matches!(cache.load("a"), Lookup::Hit(b) if b == art));
        let pruned = cache.store("d", &art).expect("stores");
        assert_eq!(pruned.entries, 1);
        assert_eq!(pruned.bytes, 100 * 1024 + 64);
        assert!(present(&cache, "a") && present(&cache, "c") && present(&cache, "d"));
        assert!(!present(&cache, "b"), "the least recently used entry goes");
        assert!(matches!(cache.load("b"), Lookup::Miss));
    }

    #[test]
    fn the_entry_just_stored_stays_even_when_it_alone_is_over_the_bound() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cache = ArtifactCache::open(dir.path(), 1024).expect("opens");
        cache.store("small", &[1u8; 100]).expect("stores");
        let pruned = cache.store("big", &vec![2u8; 4096]).expect("stores");
        assert_eq!(pruned.entries, 1);
        assert!(present(&cache, "big"));
        assert!(!present(&cache, "small"));
        assert!(matches!(cache.load("big"), Lookup::Hit(b) if b.len() == 4096));
    }

    #[test]
    fn prune_removes_stale_temporary_files_and_leaves_others_alone() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cache = ArtifactCache::open(dir.path(), 1 << 20).expect("opens");
        let stale = dir.path().join(".k.cwasm.tmp-1-2");
        let fresh = dir.path().join(".k.cwasm.tmp-3-4");
        let other = dir.path().join("notes.txt");
        for p in [&stale, &fresh, &other] {
            fs::write(p, b"x").expect("writes");
        }
        fs::File::options()
            .write(true)
            .open(&stale)
            .expect("opens")
            .set_modified(SystemTime::now() - 2 * STALE_TMP)
            .expect("sets mtime");
        cache.store("k", b"artifact").expect("stores");
        assert!(!stale.exists(), "a temporary file left by a crash is removed");
        assert!(fresh.exists(), "a write in progress is not touched");
        assert!(other.exists(), "files that are not the cache's stay");
    }

    #[test]
    fn an_entry_missing_its_checksum_is_a_miss_and_is_pruned_like_any() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cache = ArtifactCache::open(dir.path(), 300).expect("opens");
        cache.store("a", &[1u8; 200]).expect("stores");
        fs::remove_file(cache.paths("a").1).expect("removes the checksum");
        assert!(matches!(cache.load("a"), Lookup::Miss));
        age(&cache, "a", 60);
        let pruned = cache.store("b", &[2u8; 200]).expect("stores");
        assert_eq!(pruned.entries, 1);
        assert!(!cache.paths("a").0.exists());
    }
}
