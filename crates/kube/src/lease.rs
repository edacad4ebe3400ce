//! Leader election through a `coordination.k8s.io/v1` Lease, so that several agent replicas run
//! one active (Flagger's `-enable-leader-election`).
//!
//! A candidate takes the Lease when nobody holds it, when the holder released it, or when the
//! holder has not renewed it for `lease_duration` (measured on the candidate's own clock from
//! when it last saw the record change, as client-go does, so clock skew does not matter). The
//! holder renews every `retry_period`; if it cannot renew for `renew_deadline` it has lost the
//! lease and must stop acting. On shutdown the holder releases the Lease (empty holder), so a
//! standby takes over within one `retry_period`.
//!
//! Defaults (Kubernetes' own controllers use the same): lease 15s, renew deadline 10s, retry 2s.
//! Failover after a crash therefore takes at most ~17s; after a clean stop about 2s. Flagger uses
//! 60s/15s/5s and exits on lost leadership; aviary stops its actors and campaigns again.

use std::time::Duration;

use jiff::Timestamp;
use serde_json::{Value, json};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::client::{Kube, LEASE, describe};

/// Flagger's Lease name: running Flagger and aviary in one namespace elects one of them.
pub const DEFAULT_LEASE_NAME: &str = "flagger-leader-election";

/// Lease settings.
#[derive(Debug, Clone)]
pub struct LeaseSettings {
    pub name: String,
    pub namespace: String,
    /// This replica's identity (`hostname_uuid`).
    pub identity: String,
    pub lease_duration: Duration,
    pub renew_deadline: Duration,
    pub retry_period: Duration,
}

impl LeaseSettings {
    /// Whether a write of the Lease took: `false` when another replica wrote first (409), an
    /// error naming the Lease otherwise.
    fn written<T>(&self, verb: &str, result: Result<T, kube::Error>) -> Result<bool, String> {
        match result {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
            Err(e) => Err(format!(
                "{verb} Lease {}.{}: {}",
                self.name,
                self.namespace,
                describe(&e)
            )),
        }
    }

    /// Defaults for `namespace`, with a fresh identity.
    pub fn new(namespace: impl Into<String>) -> Self {
        Self {
            name: DEFAULT_LEASE_NAME.into(),
            namespace: namespace.into(),
            identity: format!("{}_{}", crate::platform::hostname(), uuid::Uuid::new_v4()),
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }
}

/// Why [`LeaderElector::hold`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseEnd {
    /// The lease could not be renewed in time (or another replica took it): stop acting.
    Lost,
    /// Shutdown was requested. The lease is still held: stop acting, then [`LeaderElector::release`].
    Shutdown,
}

/// Campaigns for and holds the Lease.
pub struct LeaderElector {
    kube: Kube,
    settings: LeaseSettings,
    /// The last record seen (holder, renewTime) and when it was first seen.
    observed: parking_lot::Mutex<Option<(String, String, Instant)>>,
}

/// A MicroTime: RFC 3339 with exactly six fractional digits.
fn micro_time(t: Timestamp) -> String {
    format!(
        "{}.{:06}Z",
        t.strftime("%Y-%m-%dT%H:%M:%S"),
        t.subsec_microsecond()
    )
}

impl LeaderElector {
    pub fn new(kube: Kube, settings: LeaseSettings) -> Self {
        Self {
            kube,
            settings,
            observed: parking_lot::Mutex::new(None),
        }
    }

    pub fn identity(&self) -> &str {
        &self.settings.identity
    }

    /// One attempt to take or renew the Lease; `Ok(true)` when this replica holds it now.
    pub async fn try_acquire_or_renew(&self) -> Result<bool, String> {
        let s = &self.settings;
        let now = micro_time(Timestamp::now());
        let duration_secs = s.lease_duration.as_secs().max(1) as i64;
        let current = self
            .kube
            .get(LEASE, &s.namespace, &s.name)
            .await
            .map_err(|e| format!("reading Lease {}.{}: {}", s.name, s.namespace, describe(&e)))?;
        let Some(lease) = current else {
            let obj = json!({
                "metadata": {"name": s.name, "namespace": s.namespace},
                "spec": {
                    "holderIdentity": s.identity,
                    "leaseDurationSeconds": duration_secs,
                    "acquireTime": now,
                    "renewTime": now,
                    "leaseTransitions": 0,
                },
            });
            return s.written("creating", self.kube.create(LEASE, &s.namespace, obj).await);
        };
        let spec = &lease["spec"];
        let holder = spec["holderIdentity"].as_str().unwrap_or_default().to_string();
        let renew = spec["renewTime"].as_str().unwrap_or_default().to_string();
        let their_duration = Duration::from_secs(
            spec["leaseDurationSeconds"]
                .as_u64()
                .unwrap_or(duration_secs as u64),
        );
        let first_seen = {
            let mut obs = self.observed.lock();
            match obs.as_ref() {
                Some((h, r, at)) if *h == holder && *r == renew => *at,
                _ => {
                    let at = Instant::now();
                    *obs = Some((holder.clone(), renew.clone(), at));
                    at
                }
            }
        };
        let mine = holder == s.identity;
        if !mine && !holder.is_empty() && first_seen.elapsed() < their_duration {
            return Ok(false);
        }
        let transitions = spec["leaseTransitions"].as_i64().unwrap_or(0) + i64::from(!mine);
        let patch = json!({
            "metadata": {"resourceVersion": lease["metadata"]["resourceVersion"]},
            "spec": {
                "holderIdentity": s.identity,
                "leaseDurationSeconds": duration_secs,
                "acquireTime": if mine { spec["acquireTime"].clone() } else { Value::from(now.clone()) },
                "renewTime": now,
                "leaseTransitions": transitions,
            },
        });
        let patched = self
            .kube
            .api(LEASE, &s.namespace)
            .patch(&s.name, &Default::default(), &kube::api::Patch::Merge(&patch))
            .await;
        let written = s.written("updating", patched)?;
        if written && !mine {
            tracing::info!(lease = %s.name, identity = %s.identity, previous = %holder, "acquired the lease");
        }
        Ok(written)
    }

    /// Waits until this replica holds the Lease; `false` when `shutdown` came first.
    pub async fn acquire(&self, shutdown: &CancellationToken) -> bool {
        let mut logged = false;
        loop {
            match self.try_acquire_or_renew().await {
                Ok(true) => return true,
                Ok(false) => {
                    if !logged {
                        tracing::info!(lease = %self.settings.name, "another replica holds the lease; standing by");
                        logged = true;
                    }
                }
                Err(e) => tracing::warn!("leader election: {e}"),
            }
            tokio::select! {
                _ = shutdown.cancelled() => return false,
                _ = tokio::time::sleep(self.settings.retry_period) => {}
            }
        }
    }

    /// Renews the Lease until it is lost or `shutdown`.
    pub async fn hold(&self, shutdown: &CancellationToken) -> LeaseEnd {
        let mut last_renew = Instant::now();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return LeaseEnd::Shutdown,
                _ = tokio::time::sleep(self.settings.retry_period) => {}
            }
            match self.try_acquire_or_renew().await {
                Ok(true) => last_renew = Instant::now(),
                Ok(false) => {
                    tracing::warn!(lease = %self.settings.name, "another replica took the lease");
                    return LeaseEnd::Lost;
                }
                Err(e) => tracing::warn!("leader election: cannot renew the lease: {e}"),
            }
            if last_renew.elapsed() > self.settings.renew_deadline {
                tracing::error!(lease = %self.settings.name, "could not renew the lease within {:?}", self.settings.renew_deadline);
                return LeaseEnd::Lost;
            }
        }
    }

    /// Gives the Lease up (empty holder) if this replica holds it.
    pub async fn release(&self) {
        let s = &self.settings;
        let now = micro_time(Timestamp::now());
        let result = self
            .kube
            .modify(LEASE, &s.namespace, &s.name, |lease| {
                if lease["spec"]["holderIdentity"] != s.identity.as_str() {
                    return Ok(());
                }
                lease["spec"]["holderIdentity"] = Value::from("");
                lease["spec"]["leaseDurationSeconds"] = Value::from(1);
                lease["spec"]["renewTime"] = Value::from(now.clone());
                Ok(())
            })
            .await;
        match result {
            Ok(_) => tracing::info!(lease = %s.name, "released the lease"),
            Err(e) => tracing::warn!("cannot release the lease: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn micro_time_has_six_digits() {
        let t: Timestamp = "2026-01-02T03:04:05.5Z".parse().unwrap();
        assert_eq!(micro_time(t), "2026-01-02T03:04:05.500000Z");
    }
}
