//! The per-filter circuit breaker: after `breaker_threshold` consecutive
//! failures the filter is bypassed (events follow `on_error`) for
//! `breaker_cooldown`; then one trial call decides between closing and
//! opening again. Shared by every worker; the closed-state check on the event
//! path is one atomic load.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU8, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use prometheus_client::metrics::gauge::Gauge;

const CLOSED: u8 = 0;
const OPEN: u8 = 1;
const HALF_OPEN: u8 = 2;

/// The breaker's state (the gauge value in parentheses).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Calls go through (0).
    Closed,
    /// Calls are skipped until the cooldown ends (1).
    Open,
    /// One trial call is running (2).
    HalfOpen,
}

/// What the breaker allows for one event.
#[derive(Debug)]
pub(crate) enum Admit {
    Call,
    /// The one trial call after the cooldown.
    Trial,
    /// Skip the filter; the message says why.
    Bypass(String),
}

pub(crate) struct Breaker {
    name: Arc<str>,
    threshold: u32,
    cooldown: Duration,
    state: AtomicU8,
    failures: AtomicU32,
    /// When it opened, and the failure that opened it.
    opened: Mutex<(Instant, String)>,
    gauge: Gauge,
}

impl Breaker {
    pub(crate) fn new(name: Arc<str>, threshold: u32, cooldown: Duration, gauge: Gauge) -> Self {
        gauge.set(0);
        Breaker {
            name,
            threshold,
            cooldown,
            state: AtomicU8::new(CLOSED),
            failures: AtomicU32::new(0),
            opened: Mutex::new((Instant::now(), String::new())),
            gauge,
        }
    }

    pub(crate) fn state(&self) -> BreakerState {
        match self.state.load(Ordering::Acquire) {
            CLOSED => BreakerState::Closed,
            OPEN => BreakerState::Open,
            _ => BreakerState::HalfOpen,
        }
    }

    fn set(&self, s: u8) {
        self.state.store(s, Ordering::Release);
        self.gauge.set(i64::from(s));
    }

    pub(crate) fn admit(&self) -> Admit {
        match self.state.load(Ordering::Acquire) {
            CLOSED => Admit::Call,
            OPEN => {
                let opened = self.opened.lock().unwrap_or_else(|p| p.into_inner());
                if opened.0.elapsed() >= self.cooldown
                    && self
                        .state
                        .compare_exchange(OPEN, HALF_OPEN, Ordering::AcqRel, Ordering::Acquire)
                        .is_ok()
                {
                    self.gauge.set(i64::from(HALF_OPEN));
                    tracing::info!(filter = %self.name, "circuit breaker half-open: trying one call");
                    Admit::Trial
                } else {
                    Admit::Bypass(self.bypass_message(&opened.1))
                }
            }
            _ => {
                let opened = self.opened.lock().unwrap_or_else(|p| p.into_inner());
                Admit::Bypass(self.bypass_message(&opened.1))
            }
        }
    }

    fn bypass_message(&self, last: &str) -> String {
        format!(
            "circuit breaker open after {} consecutive failures (last: {last})",
            self.threshold
        )
    }

    /// A call succeeded.
    pub(crate) fn success(&self, trial: bool) {
        if trial {
            self.failures.store(0, Ordering::Relaxed);
            self.set(CLOSED);
            tracing::info!(filter = %self.name, "circuit breaker closed: the trial call succeeded");
        } else if self.failures.load(Ordering::Relaxed) != 0 {
            self.failures.store(0, Ordering::Relaxed);
        }
    }

    /// A call failed with `error`.
    pub(crate) fn failure(&self, trial: bool, error: &str) {
        if self.threshold == 0 {
            return;
        }
        if trial {
            *self.opened.lock().unwrap_or_else(|p| p.into_inner()) = (Instant::now(), error.to_string());
            self.set(OPEN);
            tracing::error!(filter = %self.name, cooldown = ?self.cooldown, error, "circuit breaker opened again: the trial call failed");
            return;
        }
        let n = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
        if n >= self.threshold && self.state.load(Ordering::Acquire) == CLOSED {
            *self.opened.lock().unwrap_or_else(|p| p.into_inner()) = (Instant::now(), error.to_string());
            self.set(OPEN);
            tracing::error!(
                filter = %self.name, failures = n, cooldown = ?self.cooldown, error,
                "circuit breaker opened: the filter is bypassed (its on_error applies) until the cooldown ends"
            );
        }
    }

    /// A trial that was admitted but not used (the module is bypassed): open again without waiting.
    pub(crate) fn release_trial(&self) {
        let _ = self
            .state
            .compare_exchange(HALF_OPEN, OPEN, Ordering::AcqRel, Ordering::Acquire);
        self.gauge.set(i64::from(self.state.load(Ordering::Acquire)));
    }

    /// A new module version: start closed.
    pub(crate) fn reset(&self) {
        self.failures.store(0, Ordering::Relaxed);
        if self.state.swap(CLOSED, Ordering::AcqRel) != CLOSED {
            tracing::info!(filter = %self.name, "circuit breaker closed: a new module version was loaded");
        }
        self.gauge.set(0);
    }
}
