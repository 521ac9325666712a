//! Hot config reload: on a change of the config file (watched through its
//! directory, `notify`) or on SIGHUP, the new config is validated completely
//! and then applied to the running pipeline in one step, or rejected.
//!
//! Validation covers everything a start would check: parsing and the config
//! rules (errors name `file:line:col`), every exporter's settings, every
//! filter module (a new [`FilterHost`] is built when `[[filters]]` or
//! `[wasm]` changed: modules are compiled, validated and their test vectors
//! run), the routes' filter chains, and building the exporters that start.
//! A rejected config changes nothing: the error is logged and
//! `config_reloads{result="rejected"}` counted. An accepted one goes to the
//! pipeline as a [`Reconfigure`] (see `pipeline::reconfigure`: in stream
//! order, no event lost, unchanged exporters kept as they run) and counts as
//! `config_reloads{result="applied"}`, with a log line of what changed.
//!
//! Routes, filters, `[wasm]` and exporters reload live, and so does
//! `[source] include_raw`. The sections that shape the process itself —
//! `cluster`, the rest of `[source]`, `[state]`, `[ha]`, `[http]`,
//! `[metrics]` and `[log]` — keep their running values: a reload that changes
//! them applies the rest and warns, naming each section that needs a restart.
//!
//! The file's directory is watched, not the file: that catches editors that
//! write a new file and rename it over the old one, and Kubernetes ConfigMap
//! volumes, whose update swaps the `..data` symlink. Events are debounced, and
//! a file whose text did not change is not reloaded (SIGHUP always reloads).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::event::{AccessKind, AccessMode};
use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher as _};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::config::{Config, ConfigError, line_col};
use crate::event::NormalizeOptions;
use crate::filter::FilterHost;
use crate::metrics::Metrics;
use crate::pipeline::{ExporterPlan, Reconfigure};
use crate::route::RouteTable;
use crate::setup;

/// How long file events must settle before the file is read.
const DEBOUNCE: Duration = Duration::from_millis(300);

/// What asked for a reload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// The config file (or its directory) changed.
    File,
    /// SIGHUP.
    Signal,
}

impl Trigger {
    fn as_str(self) -> &'static str {
        match self {
            Trigger::File => "file change",
            Trigger::Signal => "SIGHUP",
        }
    }
}

/// Why a new config was rejected. Every variant names its place: `file:line:col`,
/// or the filter and its module file.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("{0}")]
    Config(#[from] ConfigError),
    #[error("{}:{line}:{col}: {message}", .file.display())]
    At {
        file: PathBuf,
        line: usize,
        col: usize,
        message: String,
    },
    #[error("{0}")]
    Other(String),
}

/// How the exporters of two configs relate, each list in config order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExporterDiff {
    /// Same settings (and an unchanged dead-letter exporter): keep running as they are.
    pub kept: Vec<String>,
    /// Settings changed: replaced by a new instance.
    pub restarted: Vec<String>,
    pub added: Vec<String>,
    pub removed: Vec<String>,
}

/// How the routes of two configs relate, by name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RouteDiff {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    pub changed: Vec<String>,
}

/// `Debug` text without source positions (`span: 12..34`), so that moving a
/// table within the file does not count as a change.
fn fingerprint<T: std::fmt::Debug>(v: &T) -> String {
    let text = format!("{v:?}");
    let mut out = String::with_capacity(text.len());
    let mut rest = text.as_str();
    while let Some(i) = rest.find("span: ") {
        out.push_str(&rest[..i]);
        let after = &rest[i + "span: ".len()..];
        let digits = |s: &str| s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let a = digits(after);
        let range = after[a..]
            .strip_prefix("..")
            .map(|tail| a + 2 + digits(tail))
            .filter(|_| a > 0);
        match range {
            Some(n) => rest = &after[n..],
            None => {
                out.push_str("span: ");
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// Which exporters `new` keeps, restarts, adds and removes compared with
/// `old`. An exporter is kept only if its parsed settings are equal and its
/// dead-letter exporter (which its worker writes to directly) is kept too.
pub fn diff_exporters(old: &Config, new: &Config) -> ExporterDiff {
    let fp = |e: &crate::config::ExporterConfig| fingerprint(&(&e.common, &e.kind));
    let mut kept: Vec<&str> = new
        .exporters
        .iter()
        .filter(|e| old.exporter(&e.name).is_some_and(|o| fp(o) == fp(e)))
        .map(|e| e.name.as_str())
        .collect();
    loop {
        let before = kept.len();
        let snapshot = kept.clone();
        kept.retain(|n| {
            new.exporter(n)
                .and_then(|e| e.common.dead_letter.as_deref())
                .is_none_or(|dl| snapshot.contains(&dl))
        });
        if kept.len() == before {
            break;
        }
    }
    let mut d = ExporterDiff::default();
    for e in &new.exporters {
        let n = e.name.clone();
        if kept.contains(&e.name.as_str()) {
            d.kept.push(n);
        } else if old.exporter(&e.name).is_some() {
            d.restarted.push(n);
        } else {
            d.added.push(n);
        }
    }
    d.removed = old
        .exporters
        .iter()
        .filter(|e| new.exporter(&e.name).is_none())
        .map(|e| e.name.clone())
        .collect();
    d
}

/// Which routes were added, removed or changed (matchers, filters, exporters, flags).
pub fn diff_routes(old: &Config, new: &Config) -> RouteDiff {
    let fp = |r: &crate::config::RouteConfig| {
        let names = |v: &[toml::Spanned<String>]| v.iter().map(|s| s.get_ref().clone()).collect::<Vec<_>>();
        fingerprint(&(
            &r.match_,
            names(&r.filters),
            names(&r.exporters),
            r.continue_,
            r.default,
        ))
    };
    let find = |c: &Config, name: &str| c.routes.iter().find(|r| r.name.get_ref() == name).cloned();
    let mut d = RouteDiff::default();
    for r in &new.routes {
        match find(old, r.name.get_ref()) {
            None => d.added.push(r.name.get_ref().clone()),
            Some(o) if fp(&o) != fp(r) => d.changed.push(r.name.get_ref().clone()),
            Some(_) => {}
        }
    }
    for r in &old.routes {
        if find(new, r.name.get_ref()).is_none() {
            d.removed.push(r.name.get_ref().clone());
        }
    }
    d
}

/// Whether `[[filters]]` or `[wasm]` differ (and so a new filter host is built).
pub fn filters_changed(old: &Config, new: &Config) -> bool {
    fingerprint(&(&old.filters, &old.wasm)) != fingerprint(&(&new.filters, &new.wasm))
}

/// The sections that differ but only take effect after a restart.
pub fn restart_sections(old: &Config, new: &Config) -> Vec<&'static str> {
    let mut source = new.source.clone();
    source.include_raw = old.source.include_raw;
    let mut out = Vec::new();
    for (name, changed) in [
        ("cluster", old.cluster != new.cluster),
        ("[source]", fingerprint(&old.source) != fingerprint(&source)),
        ("[state]", fingerprint(&old.state) != fingerprint(&new.state)),
        ("[ha]", fingerprint(&old.ha) != fingerprint(&new.ha)),
        ("[http]", fingerprint(&old.http) != fingerprint(&new.http)),
        ("[metrics]", old.metrics != new.metrics),
        ("[log]", fingerprint(&old.log) != fingerprint(&new.log)),
    ] {
        if changed {
            out.push(name);
        }
    }
    out
}

/// `new` with the sections that cannot change live taken from `running`.
fn live_part(running: &Config, mut new: Config) -> Config {
    let include_raw = new.source.include_raw;
    new.cluster = running.cluster.clone();
    new.source = running.source.clone();
    new.source.include_raw = include_raw;
    new.state = running.state.clone();
    new.ha = running.ha.clone();
    new.http = running.http.clone();
    new.metrics = running.metrics.clone();
    new.log = running.log.clone();
    new
}

/// A validated config, ready to send to the pipeline.
pub struct Prepared {
    pub reconfigure: Reconfigure,
    /// The config that runs once applied (restart-only sections as before).
    pub config: Config,
    pub host: Option<Arc<FilterHost>>,
    pub exporters: ExporterDiff,
    pub routes: RouteDiff,
    pub filters_reloaded: bool,
    pub restart_needed: Vec<&'static str>,
}

/// Watches the config and reconfigures the pipeline.
pub struct Reloader {
    path: PathBuf,
    /// The config the pipeline runs.
    running: Config,
    /// The text last tried (applied or rejected).
    src: String,
    host: Option<Arc<FilterHost>>,
    /// The most native stack the filter thread has for WASM code.
    stack_budget: usize,
    cluster: Arc<str>,
    metrics: Arc<Metrics>,
    tx: mpsc::Sender<Reconfigure>,
}

impl Reloader {
    /// `running` was loaded from `src`, the text of `path`; `host` is the
    /// running filter host; the pipeline listens on the other end of `tx`.
    pub fn new(
        path: PathBuf,
        running: Config,
        src: String,
        host: Option<Arc<FilterHost>>,
        cluster: &str,
        metrics: Arc<Metrics>,
        tx: mpsc::Sender<Reconfigure>,
    ) -> Self {
        let stack_budget = crate::pipeline::filter_stack_budget(host.as_deref());
        Reloader {
            path,
            running,
            src,
            host,
            stack_budget,
            cluster: Arc::from(cluster),
            metrics,
            tx,
        }
    }

    /// The config the pipeline runs.
    pub fn running(&self) -> &Config {
        &self.running
    }

    /// Validates `src` completely against the running config and builds
    /// what it starts (filter host, new and changed exporters). Nothing
    /// running is touched.
    pub async fn prepare(&self, src: &str) -> Result<Prepared, ReloadError> {
        let new = Config::parse(src, &self.path)?;
        let at = |span: &std::ops::Range<usize>, message: String| {
            let (line, col) = line_col(src, span.start);
            ReloadError::At {
                file: self.path.clone(),
                line,
                col,
                message,
            }
        };
        for e in &new.exporters {
            setup::validate_exporter(e).map_err(|err| at(&e.span, err.to_string()))?;
        }
        let restart_needed = restart_sections(&self.running, &new);
        let next = live_part(&self.running, new);
        let exporters = diff_exporters(&self.running, &next);
        let routes = diff_routes(&self.running, &next);

        let filters_reloaded =
            setup::needs_filters(&next) && (filters_changed(&self.running, &next) || self.host.is_none());
        let host = if !setup::needs_filters(&next) {
            None
        } else if filters_reloaded {
            if let Some(f) = next.filters.iter().find(|f| f.max_stack as usize > self.stack_budget) {
                return Err(at(
                    &f.span,
                    format!(
                        "filter `{}`: max_stack {} is more than the filter thread's stack ({} bytes, fixed at start): restart to apply",
                        f.name, f.max_stack, self.stack_budget
                    ),
                ));
            }
            let (filters, wasm, m) = (next.filters.clone(), next.wasm.clone(), self.metrics.clone());
            let host = tokio::task::spawn_blocking(move || FilterHost::new(&filters, &wasm, m))
                .await
                .map_err(|e| ReloadError::Other(format!("building the filters failed: {e}")))?
                .map_err(|e| ReloadError::Other(format!("{}: {e}", self.path.display())))?;
            Some(host)
        } else {
            self.host.clone()
        };
        let discard = |host: &Option<Arc<FilterHost>>| {
            if filters_reloaded && let Some(h) = host {
                h.stop_watching();
            }
        };
        let table = RouteTable::new(&next);
        let chains = match setup::chains(&next, &table, host.as_deref()) {
            Ok(c) => c,
            Err(e) => {
                discard(&host);
                return Err(ReloadError::Other(format!("{}: {e}", self.path.display())));
            }
        };
        let mut plans = Vec::with_capacity(next.exporters.len());
        for e in &next.exporters {
            if exporters.kept.contains(&e.name) {
                plans.push(ExporterPlan::Keep(e.name.clone()));
                continue;
            }
            match setup::build_slot(&next, e) {
                Ok(slot) => plans.push(ExporterPlan::Start(slot)),
                Err(err) => {
                    discard(&host);
                    // The error names the exporter and its file:line:col.
                    return Err(ReloadError::Other(format!("{err:#}")));
                }
            }
        }
        let reconfigure = Reconfigure {
            routes: table,
            chains,
            filters: host.clone(),
            normalize: NormalizeOptions {
                cluster: self.cluster.clone(),
                include_raw: next.source.include_raw,
            },
            exporters: plans,
            applied: None,
        };
        Ok(Prepared {
            reconfigure,
            config: next,
            host,
            exporters,
            routes,
            filters_reloaded,
            restart_needed,
        })
    }

    /// Reloads the file: validates, applies or rejects, counts and logs.
    /// None when there was nothing to do (the file's text is unchanged, or
    /// it is missing for a moment while being replaced).
    pub async fn reload(&mut self, trigger: Trigger) -> Option<Result<(), String>> {
        let result = match tokio::fs::read_to_string(&self.path).await {
            Err(e) if trigger == Trigger::File && e.kind() == std::io::ErrorKind::NotFound => {
                tracing::debug!(config = %self.path.display(), "config file missing for now; waiting for it");
                return None;
            }
            Err(e) => Err(format!("{}:1:1: cannot read the config file: {e}", self.path.display())),
            Ok(src) if trigger == Trigger::File && src == self.src => return None,
            Ok(src) => {
                self.src = src.clone();
                self.apply(&src, trigger).await
            }
        };
        match &result {
            Ok(()) => self.metrics.config_reload("applied"),
            Err(e) => {
                self.metrics.config_reload("rejected");
                tracing::error!(trigger = trigger.as_str(), error = %e,
                    "config reload rejected; the running config stays in force");
            }
        }
        Some(result)
    }

    async fn apply(&mut self, src: &str, trigger: Trigger) -> Result<(), String> {
        let mut prepared = self.prepare(src).await.map_err(|e| e.to_string())?;
        let (done_tx, done_rx) = oneshot::channel();
        prepared.reconfigure.applied = Some(done_tx);
        let Prepared {
            reconfigure,
            config,
            host,
            exporters,
            routes,
            filters_reloaded,
            restart_needed,
        } = prepared;
        let stop_new = |host: &Option<Arc<FilterHost>>| {
            if filters_reloaded && let Some(h) = host {
                h.stop_watching();
            }
        };
        if self.tx.send(reconfigure).await.is_err() {
            stop_new(&host);
            return Err("the pipeline has stopped".into());
        }
        match done_rx.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                stop_new(&host);
                return Err(e);
            }
            Err(_) => {
                stop_new(&host);
                return Err("the pipeline has stopped".into());
            }
        }
        let old_host = std::mem::replace(&mut self.host, host);
        if let Some(old) = old_host
            && !self.host.as_ref().is_some_and(|h| Arc::ptr_eq(h, &old))
        {
            // Stopping the watcher joins its thread: off the async threads.
            tokio::task::spawn_blocking(move || old.stop_watching());
        }
        self.running = config;
        tracing::info!(
            trigger = trigger.as_str(),
            routes_added = ?routes.added,
            routes_removed = ?routes.removed,
            routes_changed = ?routes.changed,
            filters = if filters_reloaded { "reloaded" } else { "unchanged" },
            exporters_kept = ?exporters.kept,
            exporters_restarted = ?exporters.restarted,
            exporters_added = ?exporters.added,
            exporters_removed = ?exporters.removed,
            "config reloaded"
        );
        if !restart_needed.is_empty() {
            tracing::warn!(
                sections = %restart_needed.join(", "),
                "config reloaded, but these changed sections only take effect after a restart; their running values stay"
            );
        }
        Ok(())
    }

    /// Reloads on file changes and on SIGHUP (`hup`) until `stop`. First
    /// checks the file once: a change made while starting is picked up.
    pub async fn run(mut self, mut hup: Option<tokio::signal::unix::Signal>, stop: CancellationToken) {
        let (tx, mut rx) = mpsc::channel::<()>(1);
        let _watcher = match watch_file(&self.path, tx) {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::warn!(config = %self.path.display(), error = %e,
                    "cannot watch the config file; it reloads on SIGHUP only");
                None
            }
        };
        self.reload(Trigger::File).await;
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                Some(()) = rx.recv() => {
                    settle(&mut rx).await;
                    self.reload(Trigger::File).await;
                }
                _ = next_hup(&mut hup) => {
                    tracing::info!(config = %self.path.display(), "SIGHUP: reloading the config");
                    self.reload(Trigger::Signal).await;
                }
            }
        }
    }
}

async fn next_hup(hup: &mut Option<tokio::signal::unix::Signal>) {
    let got = match hup {
        Some(s) => s.recv().await.is_some(),
        None => false,
    };
    if !got {
        std::future::pending::<()>().await;
    }
}

/// Waits until no file event arrived for [`DEBOUNCE`] (at most ten times that).
async fn settle(rx: &mut mpsc::Receiver<()>) {
    let limit = tokio::time::Instant::now() + DEBOUNCE * 10;
    loop {
        let wait = tokio::time::sleep(DEBOUNCE);
        tokio::select! {
            _ = wait => return,
            ev = rx.recv() => if ev.is_none() { return },
        }
        if tokio::time::Instant::now() > limit {
            return;
        }
    }
}

/// Whether an event can mean new contents (reads, ours included, are not).
fn relevant(kind: &EventKind) -> bool {
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => false,
        _ => true,
    }
}

fn parent_dir(path: &Path) -> PathBuf {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::canonicalize(&parent).unwrap_or(parent)
}

/// Watches the directory of `path` (and of its symlink target), sending on
/// `tx` when an entry that can change the file's text changes: the file's
/// own name, its target's name, or a `..`-entry (a ConfigMap's `..data`).
pub fn watch_file(path: &Path, tx: mpsc::Sender<()>) -> Result<RecommendedWatcher, String> {
    let mut dirs = vec![parent_dir(path)];
    let mut names: Vec<std::ffi::OsString> = path.file_name().map(|n| n.to_os_string()).into_iter().collect();
    if let Ok(target) = std::fs::canonicalize(path) {
        if let Some(n) = target.file_name() {
            names.push(n.to_os_string());
        }
        if let Some(d) = target.parent()
            && !dirs.iter().any(|x| x == d)
        {
            dirs.push(d.to_path_buf());
        }
    }
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        let hit = match res {
            Ok(ev) => {
                relevant(&ev.kind)
                    && (ev.paths.is_empty()
                        || ev.paths.iter().any(|p| {
                            p.file_name()
                                .is_some_and(|n| names.iter().any(|x| x == n) || n.to_string_lossy().starts_with(".."))
                        }))
            }
            Err(_) => true,
        };
        if hit {
            let _ = tx.try_send(());
        }
    })
    .map_err(|e| format!("cannot start the file watcher: {e}"))?;
    for d in &dirs {
        watcher
            .watch(d, RecursiveMode::NonRecursive)
            .map_err(|e| format!("cannot watch `{}`: {e}", d.display()))?;
    }
    tracing::info!(config = %path.display(), "watching the config file for changes (and SIGHUP)");
    Ok(watcher)
}

#[cfg(test)]
mod tests;
