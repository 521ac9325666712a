//! Hot swap: watches the directories of the modules (`notify`), decides when
//! a change is complete, then checks each affected filter's file on this
//! thread (compile, validate, swap or reject; see `Inner::check`).
//!
//! Watching the directory rather than the file covers every way a module is
//! updated: writing it in place, renaming a new file over it, and Kubernetes
//! ConfigMap/Secret volumes, where the file is a symlink through `..data` and
//! an update swaps the `..data` symlink (an event on the directory, none on
//! the file's name).
//!
//! A change is known complete, and the filter is checked at once, on the
//! events that end a write: the module file closed after writing (inotify
//! `IN_CLOSE_WRITE`), a file renamed onto the module's name, and `..data`
//! renamed or created in the directory. Every other event (a plain write
//! without a close event, a deletion, platforms without close events) waits
//! for `[wasm] watch_debounce` of quiet, as before.

use std::collections::{HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use notify::event::{AccessKind, AccessMode, ModifyKind, RenameMode};
use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher as _};

use super::FilterId;
use super::host::Inner;

/// The longest the watcher thread blocks before it looks at the stop flag.
const POLL: Duration = Duration::from_millis(100);

/// The name of the symlink a Kubernetes ConfigMap/Secret volume swaps on an update.
const CONFIGMAP_DATA: &str = "..data";

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

/// Which filters an event in a watched directory concerns.
struct Targets {
    /// Watched directory → the filters with a module (or a module's symlink target) in it.
    dirs: HashMap<PathBuf, Vec<FilterId>>,
    /// Watched directory → (file name, filter): the names whose completed write
    /// means that filter's new version is in place.
    names: HashMap<PathBuf, Vec<(OsString, FilterId)>>,
    /// Every watched filter (events outside the known directories, watcher errors).
    all: Vec<FilterId>,
}

impl Targets {
    fn add(&mut self, dir: PathBuf, name: Option<&OsStr>, id: FilterId) {
        if let Some(name) = name {
            self.names
                .entry(dir.clone())
                .or_default()
                .push((name.to_os_string(), id));
        }
        self.dirs.entry(dir).or_default().push(id);
    }

    /// Adds the filters `ev` concerns to `pending` (checked after the
    /// debounce) and those whose change it completes to `now`.
    fn classify(&self, ev: &notify::Event, pending: &mut HashSet<FilterId>, now: &mut HashSet<FilterId>) {
        if !relevant(&ev.kind) {
            return;
        }
        if ev.paths.is_empty() {
            pending.extend(self.all.iter().copied());
            return;
        }
        for p in &ev.paths {
            let Some(dir) = p.parent() else {
                pending.extend(self.all.iter().copied());
                continue;
            };
            let Some(ids) = self.dirs.get(dir) else {
                pending.extend(self.all.iter().copied());
                continue;
            };
            pending.extend(ids.iter().copied());
            let Some(name) = p.file_name() else { continue };
            if !completes_a_write(&ev.kind, name) {
                continue;
            }
            if name == CONFIGMAP_DATA {
                // The kubelet swapped the whole volume: every filter in it.
                now.extend(ids.iter().copied());
            } else if let Some(names) = self.names.get(dir) {
                now.extend(names.iter().filter(|(n, _)| n == name).map(|(_, id)| *id));
            }
        }
    }
}

impl Watcher {
    pub(crate) fn start(inner: Arc<Inner>) -> Result<Watcher, String> {
        let (tx, rx) = mpsc::channel::<notify::Result<notify::Event>>();
        let mut watcher = notify::recommended_watcher(move |res| {
            let _ = tx.send(res);
        })
        .map_err(|e| format!("cannot start the file watcher: {e}"))?;
        let mut targets = Targets {
            dirs: HashMap::new(),
            names: HashMap::new(),
            all: inner.slots.iter().filter(|s| s.cfg.watch).map(|s| s.id).collect(),
        };
        for slot in inner.slots.iter().filter(|s| s.cfg.watch) {
            let dir = dir_of(&slot.cfg.module);
            // A module that is a symlink into another directory: watch that one too.
            if let Ok(target) = std::fs::canonicalize(&slot.cfg.module)
                && let Some(tdir) = target.parent()
                && !tdir.starts_with(&dir)
            {
                targets.add(tdir.to_path_buf(), target.file_name(), slot.id);
            }
            targets.add(dir, slot.cfg.module.file_name(), slot.id);
        }
        for dir in targets.dirs.keys() {
            watcher
                .watch(dir, RecursiveMode::NonRecursive)
                .map_err(|e| format!("cannot watch `{}`: {e}", dir.display()))?;
            tracing::info!(dir = %dir.display(), "watching filter modules for changes");
        }
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("wasm-watch".into())
            .spawn(move || run(inner, rx, targets, flag))
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
        // The notify watcher (and with it the channel's sender) is dropped
        // only after this: the thread ends on the flag, which it reads at
        // least every `POLL`.
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

/// Whether an event on `name` ends a write: the file closed after writing,
/// or a file renamed onto the name; for `..data` also its creation (a symlink
/// is created whole).
fn completes_a_write(kind: &EventKind, name: &OsStr) -> bool {
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write))
        | EventKind::Modify(ModifyKind::Name(RenameMode::To | RenameMode::Both)) => true,
        EventKind::Create(_) => name == CONFIGMAP_DATA,
        _ => false,
    }
}

/// Checks `ids` in order; stops early when asked to.
fn check_all(inner: &Arc<Inner>, ids: impl IntoIterator<Item = FilterId>, stop: &AtomicBool) -> bool {
    let mut ids: Vec<FilterId> = ids.into_iter().collect();
    ids.sort();
    ids.dedup();
    for id in ids {
        if stop.load(Ordering::Relaxed) {
            return false;
        }
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| inner.check(id)));
    }
    true
}

fn run(inner: Arc<Inner>, rx: mpsc::Receiver<notify::Result<notify::Event>>, targets: Targets, stop: Arc<AtomicBool>) {
    let debounce = inner.debounce;
    // A burst that never settles is checked after this long.
    let limit = debounce.saturating_mul(10).saturating_add(Duration::from_secs(1));
    // Filters with a change not known complete, checked once the debounce ends.
    let mut pending: HashSet<FilterId> = HashSet::new();
    // Quiet deadline and burst start of `pending`.
    let mut quiet_until: Option<Instant> = None;
    let mut burst_start: Option<Instant> = None;
    loop {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let wait = match quiet_until {
            Some(t) => t.saturating_duration_since(Instant::now()).min(POLL),
            None => POLL,
        };
        match rx.recv_timeout(wait) {
            Ok(res) => {
                let mut now = HashSet::new();
                match res {
                    Ok(ev) => targets.classify(&ev, &mut pending, &mut now),
                    Err(e) => {
                        tracing::warn!(error = %e, "file watcher error; checking every module");
                        pending.extend(targets.all.iter().copied());
                    }
                }
                if !pending.is_empty() {
                    let t = Instant::now();
                    quiet_until = Some(t + debounce);
                    burst_start.get_or_insert(t);
                }
                if !now.is_empty() {
                    // The write is complete: check now, not after the debounce.
                    pending.retain(|id| !now.contains(id));
                    if !check_all(&inner, now, &stop) {
                        return;
                    }
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => return,
        }
        if pending.is_empty() {
            quiet_until = None;
            burst_start = None;
            continue;
        }
        let t = Instant::now();
        let settled = quiet_until.is_some_and(|q| t >= q);
        let too_long = burst_start.is_some_and(|b| t.duration_since(b) > limit);
        if settled || too_long {
            quiet_until = None;
            burst_start = None;
            if !check_all(&inner, std::mem::take(&mut pending), &stop) {
                return;
            }
        }
    }
}
