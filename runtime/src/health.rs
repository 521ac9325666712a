//! Readiness and the slow-moving gauges, kept off the hot path.
//!
//! Owns the shared [`Readiness`] state behind `/readyz` and the `ready` gauge:
//! every watch must have finished its first list (the source's
//! `SourceItem::Listed`) and every exporter must report `Health::Ready`
//! (polled on an interval by [`poll_exporters`], never per request). Also
//! computes `checkpoint_age_seconds` from the checkpoint channel
//! ([`checkpoint_age`]).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use event_collector_exporters::{Health, SharedExporter};
use futures::Stream;
use futures::StreamExt;
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::ack::Checkpoint;
use crate::metrics::Metrics;
use crate::source::SourceItem;

#[derive(Debug)]
struct State {
    /// Per watch (source spec order): its description and whether its first list is done.
    watches: Vec<(String, bool)>,
    /// Per exporter: its name and why it cannot deliver (None = ready).
    exporters: Vec<(String, Option<String>)>,
    stopping: bool,
}

/// Whether the collector is ready, and if not, why.
#[derive(Debug)]
pub struct Readiness {
    state: Mutex<State>,
    gauge: Gauge,
}

/// What `/readyz` answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub ready: bool,
    /// "ok", or every part that is not ready, separated by "; ".
    pub detail: String,
}

impl Readiness {
    /// A state in which nothing is ready yet: each watch by its description,
    /// each exporter by its name. `gauge` mirrors readiness as 0/1.
    pub fn new(watches: Vec<String>, exporters: Vec<String>, gauge: Gauge) -> Self {
        let r = Self {
            state: Mutex::new(State {
                watches: watches.into_iter().map(|w| (w, false)).collect(),
                exporters: exporters
                    .into_iter()
                    .map(|e| (e, Some("not started".to_string())))
                    .collect(),
                stopping: false,
            }),
            gauge,
        };
        r.update_gauge();
        r
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        match self.state.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Watch `stream` finished its first list.
    pub fn watch_listed(&self, stream: usize) {
        if let Some(w) = self.lock().watches.get_mut(stream) {
            w.1 = true;
        }
        self.update_gauge();
    }

    /// The latest health of exporter `index`.
    pub fn exporter_health(&self, index: usize, health: &Health) {
        if let Some(e) = self.lock().exporters.get_mut(index) {
            e.1 = match health {
                Health::Ready => None,
                Health::NotReady(why) => Some(why.clone()),
            };
        }
        self.update_gauge();
    }

    /// A reload changed the exporters: `names` replace the list; one that was
    /// there keeps its state, a new one is not ready until its first poll.
    pub fn set_exporters(&self, names: Vec<String>) {
        {
            let mut st = self.lock();
            let old = std::mem::take(&mut st.exporters);
            st.exporters = names
                .into_iter()
                .map(|n| match old.iter().find(|(o, _)| *o == n) {
                    Some((_, why)) => (n, why.clone()),
                    None => (n, Some("not started".to_string())),
                })
                .collect();
        }
        self.update_gauge();
    }

    /// Shutting down: not ready from now on.
    pub fn stopping(&self) {
        self.lock().stopping = true;
        self.update_gauge();
    }

    pub fn report(&self) -> Report {
        let st = self.lock();
        let mut parts = Vec::new();
        if st.stopping {
            parts.push("shutting down".to_string());
        }
        for (w, listed) in &st.watches {
            if !listed {
                parts.push(format!("watch {w}: not established"));
            }
        }
        for (name, why) in &st.exporters {
            if let Some(why) = why {
                parts.push(format!("exporter {name}: NotReady: {why}"));
            }
        }
        if parts.is_empty() {
            Report {
                ready: true,
                detail: "ok".into(),
            }
        } else {
            Report {
                ready: false,
                detail: parts.join("; "),
            }
        }
    }

    fn update_gauge(&self) {
        let ready = self.report().ready;
        self.gauge.set(i64::from(ready));
    }
}

/// Passes the source through, marking each watch established when its first list is done.
pub fn track_watches<S>(source: S, readiness: Arc<Readiness>) -> impl Stream<Item = SourceItem> + Send + 'static
where
    S: Stream<Item = SourceItem> + Send + 'static,
{
    source.inspect(move |item| {
        if let SourceItem::Listed { stream } = item {
            readiness.watch_listed(*stream);
        }
    })
}

/// Polls every exporter's health each `interval` until `shutdown`. The
/// exporters are the current value of `set` (a reload changes it).
pub async fn poll_exporters(
    readiness: Arc<Readiness>,
    mut set: watch::Receiver<Vec<SharedExporter>>,
    interval: Duration,
    shutdown: CancellationToken,
) {
    let mut exporters: Vec<SharedExporter> = set.borrow_and_update().clone();
    let mut last: Vec<Option<Health>> = vec![None; exporters.len()];
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut open = true;
    loop {
        // A new exporter set is polled at once, not on the next tick.
        let mut changed = false;
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tick.tick() => {}
            r = set.changed(), if open => {
                open = r.is_ok();
                changed = open;
            }
        }
        if changed || set.has_changed().unwrap_or(false) {
            // Hold only the current exporters: a replaced one must be let go
            // (its connection closed, its file lock released).
            exporters = set.borrow_and_update().clone();
            last = vec![None; exporters.len()];
            readiness.set_exporters(exporters.iter().map(|e| e.name().to_string()).collect());
        }
        for (i, e) in exporters.iter().enumerate() {
            let h = e.health();
            if last[i].as_ref() != Some(&h) {
                match &h {
                    Health::Ready => tracing::info!(exporter = e.name(), "exporter ready"),
                    Health::NotReady(why) => tracing::info!(exporter = e.name(), reason = %why, "exporter not ready"),
                }
                readiness.exporter_health(i, &h);
                last[i] = Some(h);
            }
        }
    }
}

/// The age of the checkpoint: how long it has not advanced while events are pending.
#[derive(Debug)]
pub struct CheckpointAge {
    acked_below: u64,
    since: Instant,
}

impl CheckpointAge {
    pub fn new(now: Instant) -> Self {
        Self {
            acked_below: 0,
            since: now,
        }
    }

    /// The age in seconds at `now`, given the latest checkpoint and how many events are pending.
    pub fn update(&mut self, acked_below: u64, pending: i64, now: Instant) -> f64 {
        if acked_below != self.acked_below || pending <= 0 {
            self.acked_below = acked_below;
            self.since = now;
        }
        if pending <= 0 {
            0.0
        } else {
            now.duration_since(self.since).as_secs_f64()
        }
    }
}

/// Sets `checkpoint_age_seconds` each `interval` and on every checkpoint, until `shutdown`.
pub async fn checkpoint_age(
    mut checkpoints: watch::Receiver<Checkpoint>,
    metrics: Arc<Metrics>,
    interval: Duration,
    shutdown: CancellationToken,
) {
    let mut age = CheckpointAge::new(Instant::now());
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut open = true;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tick.tick() => {}
            changed = checkpoints.changed(), if open => open = changed.is_ok(),
        }
        let acked_below = checkpoints.borrow_and_update().acked_below;
        let secs = age.update(acked_below, metrics.checkpoint_pending.get(), Instant::now());
        metrics.checkpoint_age_seconds.set(secs);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn readiness() -> (Readiness, Gauge) {
        let gauge = Gauge::default();
        let r = Readiness::new(
            vec!["core/v1 in default".into(), "events.k8s.io/v1 in all namespaces".into()],
            vec!["es".into(), "local".into()],
            gauge.clone(),
        );
        (r, gauge)
    }

    #[test]
    fn not_ready_until_every_watch_listed_and_every_exporter_ready() {
        let (r, gauge) = readiness();
        let rep = r.report();
        assert!(!rep.ready);
        assert_eq!(gauge.get(), 0);
        assert_eq!(
            rep.detail,
            "watch core/v1 in default: not established; watch events.k8s.io/v1 in all namespaces: not established; \
             exporter es: NotReady: not started; exporter local: NotReady: not started"
        );
        r.watch_listed(0);
        r.exporter_health(0, &Health::NotReady("connection refused".into()));
        r.exporter_health(1, &Health::Ready);
        assert_eq!(
            r.report().detail,
            "watch events.k8s.io/v1 in all namespaces: not established; exporter es: NotReady: connection refused"
        );
        r.watch_listed(1);
        assert_eq!(r.report().detail, "exporter es: NotReady: connection refused");
        assert_eq!(gauge.get(), 0);
        r.exporter_health(0, &Health::Ready);
        assert_eq!(
            r.report(),
            Report {
                ready: true,
                detail: "ok".into()
            }
        );
        assert_eq!(gauge.get(), 1);
        // An exporter that goes down makes it not ready again.
        r.exporter_health(1, &Health::NotReady("disk full".into()));
        assert_eq!(r.report().detail, "exporter local: NotReady: disk full");
        assert_eq!(gauge.get(), 0);
    }

    #[test]
    fn unknown_indexes_are_ignored_and_stopping_is_not_ready() {
        let (r, gauge) = readiness();
        r.watch_listed(7);
        r.exporter_health(9, &Health::Ready);
        for i in 0..2 {
            r.watch_listed(i);
            r.exporter_health(i, &Health::Ready);
        }
        assert!(r.report().ready);
        r.stopping();
        assert_eq!(r.report().detail, "shutting down");
        assert_eq!(gauge.get(), 0);
    }

    #[test]
    fn no_watches_and_no_exporters_is_ready() {
        let r = Readiness::new(Vec::new(), Vec::new(), Gauge::default());
        assert!(r.report().ready);
    }

    #[tokio::test]
    async fn listed_items_mark_watches_established() {
        let (r, _) = readiness();
        let r = Arc::new(r);
        let items = futures::stream::iter(vec![SourceItem::Listed { stream: 1 }]);
        let out: Vec<SourceItem> = track_watches(items, r.clone()).collect().await;
        assert_eq!(out.len(), 1, "items pass through");
        assert!(
            r.report()
                .detail
                .starts_with("watch core/v1 in default: not established; exporter")
        );
    }

    #[test]
    fn checkpoint_age_grows_only_while_pending_and_stuck() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut age = CheckpointAge::new(t0);
        assert_eq!(age.update(0, 0, t0 + s(100)), 0.0, "nothing pending");
        // Events become pending at t0+100: the age counts from there.
        assert_eq!(age.update(0, 5, t0 + s(103)), 3.0);
        assert_eq!(age.update(0, 5, t0 + s(110)), 10.0);
        // The checkpoint advances: back to 0, then grows again.
        assert_eq!(age.update(3, 2, t0 + s(111)), 0.0);
        assert_eq!(age.update(3, 2, t0 + s(115)), 4.0);
        assert_eq!(age.update(5, 0, t0 + s(116)), 0.0);
    }
}
