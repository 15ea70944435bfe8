//! Leader election on a `coordination.k8s.io/v1` Lease: only the holder reconciles; a
//! holder that cannot renew before its lease runs out stops (the process exits non-zero)
//! rather than act without it.

use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::{
    api::coordination::v1::{Lease, LeaseSpec},
    apimachinery::pkg::apis::meta::v1::MicroTime,
};
use kube::{
    Api, Client,
    api::{ObjectMeta, PostParams},
};

use crate::readiness::{Lease as LeaseState, Readiness};

/// Why a leader stopped leading.
#[derive(Debug, thiserror::Error)]
pub enum LeadershipError {
    /// Another replica holds the lease now.
    #[error("lease {lease} taken by another replica")]
    Taken {
        /// The lease's name.
        lease: String,
    },
    /// Renewals failed for as long as the lease lasts.
    #[error("could not renew lease {lease} in time: {source}")]
    NotRenewed {
        /// The lease's name.
        lease: String,
        /// The last renewal's failure.
        source: kube::Error,
    },
}

/// What a candidate should do about a lease it read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseAction {
    /// Ours: renew it.
    Renew,
    /// Free or expired: take it.
    Take,
    /// Someone else holds it.
    Wait,
}

/// Decides from the lease's holder and last renewal.
pub fn decide(
    me: &str,
    holder: Option<&str>,
    renewed: Option<Timestamp>,
    duration: Duration,
    now: Timestamp,
) -> LeaseAction {
    match holder {
        Some(h) if h == me => LeaseAction::Renew,
        None | Some("") => LeaseAction::Take,
        Some(_) => {
            let expired = renewed.is_none_or(|r| {
                r.checked_add(jiff::SignedDuration::try_from(duration).unwrap_or_default()).is_ok_and(|end| end < now)
            });
            if expired { LeaseAction::Take } else { LeaseAction::Wait }
        }
    }
}

/// A candidate for leadership.
pub struct Elector {
    api: Api<Lease>,
    name: String,
    identity: String,
    duration: Duration,
}

impl Elector {
    /// A candidate `identity` for the lease `namespace/name`.
    pub fn new(client: Client, namespace: &str, name: &str, identity: &str, duration: Duration) -> Self {
        Self { api: Api::namespaced(client, namespace), name: name.into(), identity: identity.into(), duration }
    }

    fn spec(&self, now: Timestamp, acquired: Option<MicroTime>, transitions: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(i32::try_from(self.duration.as_secs()).unwrap_or(15)),
            acquire_time: Some(acquired.unwrap_or(MicroTime(now))),
            renew_time: Some(MicroTime(now)),
            lease_transitions: Some(transitions),
            ..Default::default()
        }
    }

    /// One attempt: true when we hold the lease afterwards.
    pub async fn try_hold(&self) -> kube::Result<bool> {
        let now = Timestamp::now();
        let Some(mut lease) = self.api.get_opt(&self.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta { name: Some(self.name.clone()), ..Default::default() },
                spec: Some(self.spec(now, None, 0)),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
                Err(e) => Err(e),
            };
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let action =
            decide(&self.identity, spec.holder_identity.as_deref(), spec.renew_time.map(|t| t.0), self.duration, now);
        let transitions = spec.lease_transitions.unwrap_or(0);
        lease.spec = Some(match action {
            LeaseAction::Wait => return Ok(false),
            LeaseAction::Renew => self.spec(now, spec.acquire_time, transitions),
            LeaseAction::Take => self.spec(now, None, transitions + 1),
        });
        // The resourceVersion we read makes this a compare-and-swap: of two candidates
        // taking an expired lease, one gets a conflict.
        match self.api.replace(&self.name, &PostParams::default(), &lease).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// One attempt, its outcome recorded in `readiness`.
    async fn attempt(&self, readiness: &Readiness) -> kube::Result<bool> {
        let held = self.try_hold().await;
        readiness.lease(match held {
            Ok(true) => LeaseState::Leading,
            Ok(false) => LeaseState::Following,
            Err(_) => LeaseState::Failing,
        });
        held
    }

    /// Waits until this candidate leads.
    pub async fn acquire(&self, readiness: &Readiness) {
        loop {
            match self.attempt(readiness).await {
                Ok(true) => return,
                Ok(false) => {}
                Err(e) => tracing::warn!(error = %e, "leader election attempt failed"),
            }
            tokio::time::sleep(self.duration / 3).await;
        }
    }

    /// Renews until the lease is lost; returns why.
    pub async fn hold(&self, readiness: &Readiness) -> LeadershipError {
        let mut last_renewed = tokio::time::Instant::now();
        loop {
            tokio::time::sleep(self.duration / 3).await;
            match self.attempt(readiness).await {
                Ok(true) => last_renewed = tokio::time::Instant::now(),
                Ok(false) => return LeadershipError::Taken { lease: self.name.clone() },
                Err(source) => {
                    if last_renewed.elapsed() >= self.duration {
                        return LeadershipError::NotRenewed { lease: self.name.clone(), source };
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_decisions() {
        let now: Timestamp = "2026-01-01T00:00:30Z".parse().unwrap();
        let fresh = Some("2026-01-01T00:00:25Z".parse().unwrap());
        let stale = Some("2026-01-01T00:00:00Z".parse().unwrap());
        let d = Duration::from_secs(15);
        assert_eq!(decide("a", Some("a"), fresh, d, now), LeaseAction::Renew);
        assert_eq!(decide("a", Some("b"), fresh, d, now), LeaseAction::Wait);
        assert_eq!(decide("a", Some("b"), stale, d, now), LeaseAction::Take);
        assert_eq!(decide("a", None, None, d, now), LeaseAction::Take);
        assert_eq!(decide("a", Some("b"), None, d, now), LeaseAction::Take);
    }
}
