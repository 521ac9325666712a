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

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

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
}

impl ArtifactCache {
    /// Opens (creating, mode 0700) the cache directory.
    pub fn open(dir: &Path) -> Result<ArtifactCache, String> {
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
        Ok(ArtifactCache { dir: dir.to_path_buf() })
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
        Lookup::Hit(bytes)
    }

    /// Writes an artifact and its checksum atomically.
    pub fn store(&self, key: &str, artifact: &[u8]) -> Result<(), String> {
        let (art, sum) = self.paths(key);
        write_atomic(&sum, sha256_hex(artifact).as_bytes())?;
        write_atomic(&art, artifact)
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
