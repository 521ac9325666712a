//! Leader election between replicas over a coordination.k8s.io/v1 Lease, a
//! thin layer over `kube::Api<Lease>` with optimistic concurrency (every
//! write carries the resourceVersion read; a 409 means someone else wrote
//! first).
//!
//! A replica takes the Lease when it is free or its record has not changed
//! for `lease_duration` by this replica's own clock (so clock skew between
//! nodes does not matter), renews it every `retry_period`, and gives up
//! leadership when it could not renew for `renew_deadline`. Only the leader
//! watches and exports; see `app` for what happens on loss.

use std::sync::Mutex;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{ObjectMeta, PostParams};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::HaConfig;

pub struct Elector {
    api: kube::Api<Lease>,
    name: String,
    identity: String,
    lease_duration: Duration,
    renew_deadline: Duration,
    retry_period: Duration,
    /// The last lease record seen (holder, renewTime) and when this replica first saw it.
    observed: Mutex<Option<(String, Instant)>>,
}

/// This replica's identity: the config's, else POD_NAME, else the host name and process id.
pub fn identity(cfg: &HaConfig) -> String {
    if let Some(id) = &cfg.identity {
        return id.clone();
    }
    if let Ok(p) = std::env::var("POD_NAME")
        && !p.is_empty()
    {
        return p;
    }
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "event-collector".into());
    format!("{host}-{}", std::process::id())
}

fn now() -> MicroTime {
    MicroTime(Timestamp::now())
}

impl Elector {
    pub fn new(api: kube::Api<Lease>, cfg: &HaConfig, identity: String) -> Self {
        Self {
            api,
            name: cfg.lease_name.clone(),
            identity,
            lease_duration: cfg.lease_duration,
            renew_deadline: cfg.renew_deadline,
            retry_period: cfg.retry_period,
            observed: Mutex::new(None),
        }
    }

    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// One attempt to take or renew the Lease; Ok(true) if this replica holds it now.
    pub async fn try_acquire_or_renew(&self) -> Result<bool, kube::Error> {
        let secs = self.lease_duration.as_secs().max(1) as i32;
        let Some(mut lease) = self.api.get_opt(&self.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.name.clone()),
                    ..Default::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.identity.clone()),
                    lease_duration_seconds: Some(secs),
                    acquire_time: Some(now()),
                    renew_time: Some(now()),
                    lease_transitions: Some(0),
                    ..Default::default()
                }),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
                Err(e) => Err(e),
            };
        };
        let spec = lease.spec.get_or_insert_with(Default::default);
        let holder = spec.holder_identity.clone().unwrap_or_default();
        let record = format!("{holder}|{:?}", spec.renew_time.as_ref().map(|t| t.0.to_string()));
        let observed_for = {
            let mut o = self.observed.lock().unwrap_or_else(|p| p.into_inner());
            match o.as_ref() {
                Some((r, at)) if *r == record => at.elapsed(),
                _ => {
                    *o = Some((record, Instant::now()));
                    Duration::ZERO
                }
            }
        };
        let mine = holder == self.identity;
        let expired = holder.is_empty() || observed_for >= self.lease_duration;
        if !mine && !expired {
            return Ok(false);
        }
        if !mine {
            spec.holder_identity = Some(self.identity.clone());
            spec.acquire_time = Some(now());
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
        }
        spec.lease_duration_seconds = Some(secs);
        spec.renew_time = Some(now());
        match self.api.replace(&self.name, &PostParams::default(), &lease).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Waits (as a standby) until this replica holds the Lease; false if `stop` fired first.
    pub async fn acquire(&self, stop: &CancellationToken) -> bool {
        loop {
            match self.try_acquire_or_renew().await {
                Ok(true) => {
                    tracing::info!(lease = %self.name, identity = %self.identity, "acquired the lease: leading");
                    return true;
                }
                Ok(false) => {}
                Err(e) => tracing::warn!(lease = %self.name, error = %e, "cannot read or take the lease; retrying"),
            }
            tokio::select! {
                _ = stop.cancelled() => return false,
                _ = tokio::time::sleep(self.retry_period) => {}
            }
        }
    }

    /// Renews every `retry_period` until `stop`; cancels `lost` (and returns)
    /// as soon as another replica holds the Lease or renewal failed for `renew_deadline`.
    pub async fn hold(&self, stop: CancellationToken, lost: CancellationToken) {
        let mut last_ok = Instant::now();
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(self.retry_period) => {}
            }
            match self.try_acquire_or_renew().await {
                Ok(true) => last_ok = Instant::now(),
                Ok(false) if !self.still_mine().await => {
                    tracing::error!(lease = %self.name, "another replica holds the lease: stopping at once");
                    lost.cancel();
                    return;
                }
                Ok(false) => {}
                Err(e) => tracing::warn!(lease = %self.name, error = %e, "cannot renew the lease"),
            }
            if last_ok.elapsed() >= self.renew_deadline {
                tracing::error!(lease = %self.name, deadline = ?self.renew_deadline, "could not renew the lease in time: stopping at once");
                lost.cancel();
                return;
            }
        }
    }

    async fn still_mine(&self) -> bool {
        match self.api.get_opt(&self.name).await {
            Ok(Some(l)) => l.spec.and_then(|s| s.holder_identity).as_deref() == Some(self.identity.as_str()),
            Ok(None) => false,
            // Unknown: keep trying until the renew deadline.
            Err(_) => true,
        }
    }

    /// Gives the Lease up (on a clean shutdown), so a standby takes over without waiting for expiry.
    pub async fn release(&self) {
        for _ in 0..3 {
            let Ok(Some(mut lease)) = self.api.get_opt(&self.name).await else {
                return;
            };
            let Some(spec) = lease.spec.as_mut() else { return };
            if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
                return;
            }
            spec.holder_identity = None;
            spec.renew_time = None;
            match self.api.replace(&self.name, &PostParams::default(), &lease).await {
                Ok(_) => {
                    tracing::info!(lease = %self.name, "released the lease");
                    return;
                }
                Err(kube::Error::Api(s)) if s.code == 409 => continue,
                Err(e) => {
                    tracing::warn!(lease = %self.name, error = %e, "cannot release the lease; it expires by itself");
                    return;
                }
            }
        }
    }
}
