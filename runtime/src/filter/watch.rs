//! Hot swap: watches the directories of the modules (`notify`), waits for a
//! burst of changes to settle, then checks each affected filter's file on
//! this thread (compile, validate, swap or reject; see `Inner::check`).
//!
//! Watching the directory rather than the file covers every way a module is
//! updated: writing it in place, renaming a new file over it, and Kubernetes
//! ConfigMap/Secret volumes, where the file is a symlink through `..data` and
//! an update swaps the `..data` symlink (an event on the directory, none on
//! the file's name).

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use notify::event::{AccessKind, AccessMode};
use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher as _};

use super::FilterId;
use super::host::Inner;

pub(crate) struct Watcher {
    _watcher: RecommendedWatcher,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

fn dir_of(path: &Path) -> PathBuf {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::canonicalize(&parent).unwrap_or(parent)
}

impl Watcher {
    pub(crate) fn start(inner: Arc<Inner>) -> Result<Watcher, String> {
        let (tx, rx) = mpsc::channel::<notify::Result<notify::Event>>();
        let mut watcher = notify::recommended_watcher(move |res| {
            let _ = tx.send(res);
        })
        .map_err(|e| format!("cannot start the file watcher: {e}"))?;
        let mut dirs: HashMap<PathBuf, Vec<FilterId>> = HashMap::new();
        for slot in inner.slots.iter().filter(|s| s.cfg.watch) {
            let dir = dir_of(&slot.cfg.module);
            // A module that is a symlink into another directory: watch that one too.
            if let Ok(target) = std::fs::canonicalize(&slot.cfg.module)
                && let Some(tdir) = target.parent()
                && !tdir.starts_with(&dir)
            {
                dirs.entry(tdir.to_path_buf()).or_default().push(slot.id);
            }
            dirs.entry(dir).or_default().push(slot.id);
        }
        for dir in dirs.keys() {
            watcher
                .watch(dir, RecursiveMode::NonRecursive)
                .map_err(|e| format!("cannot watch `{}`: {e}", dir.display()))?;
            tracing::info!(dir = %dir.display(), "watching filter modules for changes");
        }
        let all: Vec<FilterId> = inner.slots.iter().filter(|s| s.cfg.watch).map(|s| s.id).collect();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("wasm-watch".into())
            .spawn(move || run(inner, rx, dirs, all, flag))
            .map_err(|e| format!("cannot start the watcher thread: {e}"))?;
        Ok(Watcher {
            _watcher: watcher,
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Whether an event can mean new contents (reads of the module, ours
/// included, are ignored).
fn relevant(kind: &EventKind) -> bool {
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => false,
        _ => true,
    }
}

fn run(
    inner: Arc<Inner>,
    rx: mpsc::Receiver<notify::Result<notify::Event>>,
    dirs: HashMap<PathBuf, Vec<FilterId>>,
    all: Vec<FilterId>,
    stop: Arc<AtomicBool>,
) {
    let debounce = inner.debounce;
    let add = |res: notify::Result<notify::Event>, affected: &mut HashSet<FilterId>| match res {
        Ok(ev) => {
            if !relevant(&ev.kind) {
                return;
            }
            for p in &ev.paths {
                match p.parent().and_then(|d| dirs.get(d)) {
                    Some(ids) => affected.extend(ids.iter().copied()),
                    None => affected.extend(all.iter().copied()),
                }
            }
            if ev.paths.is_empty() {
                affected.extend(all.iter().copied());
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "file watcher error; checking every module");
            affected.extend(all.iter().copied());
        }
    };
    loop {
        let first = match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(ev) => ev,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                continue;
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => return,
        };
        let mut affected = HashSet::new();
        add(first, &mut affected);
        // Debounce: wait until no event arrived for `debounce` (a burst that
        // never settles is checked after ten times that).
        let burst = Instant::now();
        let limit = debounce * 10 + Duration::from_secs(1);
        loop {
            if stop.load(Ordering::Relaxed) {
                return;
            }
            match rx.recv_timeout(debounce.max(Duration::from_millis(1))) {
                Ok(ev) => add(ev, &mut affected),
                Err(mpsc::RecvTimeoutError::Timeout) => break,
                Err(mpsc::RecvTimeoutError::Disconnected) => return,
            }
            if burst.elapsed() > limit {
                break;
            }
        }
        let mut ids: Vec<FilterId> = affected.into_iter().collect();
        ids.sort();
        for id in ids {
            if stop.load(Ordering::Relaxed) {
                return;
            }
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| inner.check(id)));
        }
    }
}
