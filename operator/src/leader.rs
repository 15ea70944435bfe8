//! Leader election on a `coordination.k8s.io/v1` Lease, with client-go's semantics: only the
//! holder reconciles, and a holder stops before anyone else could take its lease.
//!
//! Three durations: the lease (how long a record that stops changing keeps others away),
//! the renew deadline (shorter: how long the holder keeps acting without a renewal) and the
//! retry period (how often candidates and the holder try). Every Lease request runs under a
//! timeout, so a request that hangs counts as a failed one. A candidate times expiry from when
//! *it* last saw the record change, on its own monotonic clock, never by comparing the
//! holder's `renewTime` with its own wall clock. The holder's right to act ends at the start
//! of its last successful renewal plus the renew deadline; another replica can take the lease
//! no sooner than that renewal's start plus the lease duration, so the two never overlap while
//! the clocks run at the same rate. A holder shutting down clears the holder in the Lease so
//! that a follower takes over at its next try.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use jiff::Timestamp;
use k8s_openapi::{
    api::coordination::v1::{Lease, LeaseSpec},
    apimachinery::pkg::apis::meta::v1::{MicroTime, OwnerReference},
};
use kube::{
    Api, Client,
    api::{ObjectMeta, PostParams},
};
use tokio::time::Instant;

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
    /// No renewal succeeded within the renew deadline.
    #[error("could not renew lease {lease} within the renew deadline of {deadline:?}: {last}")]
    NotRenewed {
        /// The lease's name.
        lease: String,
        /// The renew deadline.
        deadline: Duration,
        /// What the last attempt did.
        last: AttemptError,
    },
}

/// Why one attempt at the Lease failed.
#[derive(Debug, thiserror::Error)]
pub enum AttemptError {
    /// The API server answered with an error, or the connection failed.
    #[error("{0}")]
    Api(#[from] kube::Error),
    /// No answer within the attempt's time.
    #[error("no answer within {0:?}")]
    TimedOut(Duration),
}

/// The three durations of leader election.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// How long a lease whose record stops changing keeps other candidates away.
    pub lease: Duration,
    /// How long the holder keeps acting after the start of its last successful renewal.
    pub renew_deadline: Duration,
    /// How often candidates try to acquire and the holder renews.
    pub retry_period: Duration,
}

/// Why a [`Timing`] is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TimingError {
    /// The holder would act while another could take the lease.
    #[error("the renew deadline ({renew_deadline:?}) must be shorter than the lease duration ({lease:?})")]
    DeadlineNotBelowLease {
        /// The renew deadline.
        renew_deadline: Duration,
        /// The lease duration.
        lease: Duration,
    },
    /// The holder would give up before its first retry.
    #[error("the retry period ({retry_period:?}) must be shorter than the renew deadline ({renew_deadline:?})")]
    RetryNotBelowDeadline {
        /// The retry period.
        retry_period: Duration,
        /// The renew deadline.
        renew_deadline: Duration,
    },
}

impl Timing {
    /// The lease duration with the other two in client-go's proportions (15 s, 10 s, 2 s) where
    /// they are not given.
    pub fn new(
        lease: Duration,
        renew_deadline: Option<Duration>,
        retry_period: Option<Duration>,
    ) -> Result<Self, TimingError> {
        let renew_deadline = renew_deadline.unwrap_or(lease * 2 / 3);
        let retry_period = retry_period.unwrap_or(lease * 2 / 15);
        if renew_deadline >= lease {
            return Err(TimingError::DeadlineNotBelowLease { renew_deadline, lease });
        }
        if retry_period >= renew_deadline {
            return Err(TimingError::RetryNotBelowDeadline { retry_period, renew_deadline });
        }
        Ok(Self { lease, renew_deadline, retry_period })
    }
}

/// What a candidate should do about a lease it read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseAction {
    /// Ours: renew it.
    Renew,
    /// Free, or its record has not changed for a whole lease duration: take it.
    Take,
    /// Someone else holds it.
    Wait,
}

/// Decides from the lease's holder and how long ago this candidate saw its record change.
pub fn decide(me: &str, holder: Option<&str>, unchanged_for: Duration, lease: Duration) -> LeaseAction {
    match holder {
        Some(h) if h == me => LeaseAction::Renew,
        None | Some("") => LeaseAction::Take,
        Some(_) if unchanged_for > lease => LeaseAction::Take,
        Some(_) => LeaseAction::Wait,
    }
}

/// The last Lease record a candidate read, and when (its own clock) the record last changed.
#[derive(Debug, Clone, PartialEq)]
struct Observed {
    spec: LeaseSpec,
    changed_at: Instant,
}

/// Records `spec` read at `now`: the change time moves only when the record differs.
fn observe(previous: Option<Observed>, spec: LeaseSpec, now: Instant) -> Observed {
    match previous {
        Some(seen) if seen.spec == spec => seen,
        _ => Observed { spec, changed_at: now },
    }
}

/// Until when this replica may act as the leader; shared with whatever must stop on time
/// (the agent client checks it before every request).
#[derive(Debug, Clone, Default)]
pub struct Fence(Arc<Mutex<Option<Instant>>>);

impl Fence {
    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Instant>> {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether this replica may act now.
    pub fn holds(&self) -> bool {
        self.lock().is_some_and(|until| Instant::now() < until)
    }

    fn extend(&self, until: Instant) {
        *self.lock() = Some(until);
    }

    fn revoke(&self) {
        *self.lock() = None;
    }
}

/// A candidate for leadership.
pub struct Elector {
    api: Api<Lease>,
    name: String,
    identity: String,
    timing: Timing,
    fence: Fence,
    observed: Mutex<Option<Observed>>,
    /// What owns the Lease (see [`crate::owners`]).
    owner: Option<OwnerReference>,
}

impl Elector {
    /// A candidate `identity` for the lease `namespace/name`.
    pub fn new(client: Client, namespace: &str, name: &str, identity: &str, timing: Timing) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            name: name.into(),
            identity: identity.into(),
            timing,
            fence: Fence::default(),
            observed: Mutex::new(None),
            owner: None,
        }
    }

    /// The candidate that creates the Lease owned by `owner`, and gives a Lease made before
    /// owners were set that owner when it next writes it.
    #[must_use]
    pub fn owned_by(self, owner: Option<OwnerReference>) -> Self {
        Self { owner, ..self }
    }

    /// The fence this candidate extends while it holds the lease.
    pub fn fence(&self) -> Fence {
        self.fence.clone()
    }

    fn spec(&self, now: Timestamp, acquired: Option<MicroTime>, transitions: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(i32::try_from(self.timing.lease.as_secs().max(1)).unwrap_or(15)),
            acquire_time: Some(acquired.unwrap_or(MicroTime(now))),
            renew_time: Some(MicroTime(now)),
            lease_transitions: Some(transitions),
            ..Default::default()
        }
    }

    /// One attempt without a time limit: true when we hold the lease afterwards.
    async fn try_hold(&self) -> kube::Result<bool> {
        let now = Timestamp::now();
        let Some(mut lease) = self.api.get_opt(&self.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.name.clone()),
                    owner_references: self.owner.clone().map(|o| vec![o]),
                    ..Default::default()
                },
                spec: Some(self.spec(now, None, 0)),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
                Err(e) => Err(e),
            };
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let seen = {
            let mut observed = self.observed.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let seen = observe(observed.take(), spec.clone(), Instant::now());
            *observed = Some(seen.clone());
            seen
        };
        // The record's own duration, as client-go reads it: the holder says how long it lasts.
        let lease_for = spec
            .lease_duration_seconds
            .and_then(|s| u64::try_from(s).ok())
            .map_or(self.timing.lease, Duration::from_secs);
        let action = decide(&self.identity, spec.holder_identity.as_deref(), seen.changed_at.elapsed(), lease_for);
        let transitions = spec.lease_transitions.unwrap_or(0);
        lease.spec = Some(match action {
            LeaseAction::Wait => return Ok(false),
            LeaseAction::Renew => self.spec(now, spec.acquire_time, transitions),
            LeaseAction::Take => self.spec(now, None, transitions + 1),
        });
        if lease.metadata.owner_references.is_none() {
            lease.metadata.owner_references = self.owner.clone().map(|o| vec![o]);
        }
        // The resourceVersion we read makes this a compare-and-swap: of two candidates
        // taking an expired lease, one gets a conflict.
        match self.api.replace(&self.name, &PostParams::default(), &lease).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// One attempt that must end by `deadline`, its outcome recorded in `readiness`.
    async fn attempt(&self, readiness: &Readiness, deadline: Instant) -> Result<bool, AttemptError> {
        let limit = deadline.saturating_duration_since(Instant::now());
        let held = match tokio::time::timeout_at(deadline, self.try_hold()).await {
            Ok(held) => held.map_err(AttemptError::from),
            Err(_) => Err(AttemptError::TimedOut(limit)),
        };
        readiness.lease(match held {
            Ok(true) => LeaseState::Leading,
            Ok(false) => LeaseState::Following,
            Err(_) => LeaseState::Failing,
        });
        held
    }

    /// Waits until this candidate leads. From then on the fence holds until the renew
    /// deadline, counted from the start of the attempt that took the lease.
    pub async fn acquire(&self, readiness: &Readiness) {
        loop {
            let started = Instant::now();
            match self.attempt(readiness, started + self.timing.renew_deadline).await {
                Ok(true) => {
                    self.fence.extend(started + self.timing.renew_deadline);
                    return;
                }
                Ok(false) => {}
                Err(e) => tracing::warn!(error = %e, "leader election attempt failed"),
            }
            tokio::time::sleep_until(started + self.timing.retry_period).await;
        }
    }

    /// Renews every retry period until a renewal fails to succeed within the renew deadline
    /// or finds the lease taken; returns why, with the fence already revoked.
    pub async fn hold(&self, readiness: &Readiness) -> LeadershipError {
        let lost = self.renew(readiness).await;
        self.fence.revoke();
        lost
    }

    async fn renew(&self, readiness: &Readiness) -> LeadershipError {
        let Some(mut valid_until) = *self.fence.lock() else {
            return LeadershipError::Taken { lease: self.name.clone() };
        };
        let mut last = AttemptError::TimedOut(Duration::ZERO);
        loop {
            let next = Instant::now() + self.timing.retry_period;
            if next >= valid_until {
                // The next try could not finish in time: stop now rather than at the deadline.
                return LeadershipError::NotRenewed {
                    lease: self.name.clone(),
                    deadline: self.timing.renew_deadline,
                    last,
                };
            }
            tokio::time::sleep_until(next).await;
            let started = Instant::now();
            match self.attempt(readiness, valid_until).await {
                Ok(true) => {
                    valid_until = started + self.timing.renew_deadline;
                    self.fence.extend(valid_until);
                }
                Ok(false) => return LeadershipError::Taken { lease: self.name.clone() },
                Err(e) => {
                    tracing::warn!(error = %e, "lease renewal failed");
                    last = e;
                }
            }
            if Instant::now() >= valid_until {
                return LeadershipError::NotRenewed {
                    lease: self.name.clone(),
                    deadline: self.timing.renew_deadline,
                    last,
                };
            }
        }
    }

    /// Gives the lease up on a graceful shutdown: the holder cleared (and a one-second
    /// duration, as client-go writes), so a follower takes it at its next try instead of
    /// waiting out the lease. Only while this replica still holds it; within the retry period.
    pub async fn release(&self) {
        self.fence.revoke();
        let release = async {
            let Some(mut lease) = self.api.get_opt(&self.name).await? else { return Ok(()) };
            let spec = lease.spec.clone().unwrap_or_default();
            if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
                return Ok(());
            }
            lease.spec = Some(LeaseSpec {
                holder_identity: None,
                lease_duration_seconds: Some(1),
                acquire_time: None,
                renew_time: Some(MicroTime(Timestamp::now())),
                lease_transitions: spec.lease_transitions,
                ..Default::default()
            });
            self.api.replace(&self.name, &PostParams::default(), &lease).await.map(|_| ())
        };
        match tokio::time::timeout(self.timing.retry_period, release).await {
            Ok(Ok(())) => tracing::info!(lease = %self.name, "lease released"),
            Ok(Err(e)) => tracing::warn!(lease = %self.name, error = %e, "could not release the lease"),
            Err(_) => tracing::warn!(lease = %self.name, "could not release the lease in time"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_decisions() {
        let d = Duration::from_secs(15);
        let fresh = Duration::from_secs(5);
        let stale = Duration::from_secs(16);
        assert_eq!(decide("a", Some("a"), stale, d), LeaseAction::Renew, "ours, however old");
        assert_eq!(decide("a", Some("b"), fresh, d), LeaseAction::Wait);
        assert_eq!(decide("a", Some("b"), stale, d), LeaseAction::Take);
        assert_eq!(decide("a", Some("b"), d, d), LeaseAction::Wait, "a whole lease, not yet more");
        assert_eq!(decide("a", None, fresh, d), LeaseAction::Take, "released");
        assert_eq!(decide("a", Some(""), fresh, d), LeaseAction::Take, "released");
    }

    #[test]
    fn expiry_is_timed_from_the_last_change_seen() {
        let t0 = Instant::now();
        let record = |renewed: &str| LeaseSpec {
            holder_identity: Some("b".into()),
            renew_time: Some(MicroTime(renewed.parse().unwrap())),
            ..Default::default()
        };
        let seen = observe(None, record("2026-01-01T00:00:00Z"), t0);
        assert_eq!(seen.changed_at, t0);
        // The same record later: still timed from t0, whatever its renewTime says of clocks.
        let later = observe(Some(seen), record("2026-01-01T00:00:00Z"), t0 + Duration::from_secs(9));
        assert_eq!(later.changed_at, t0);
        // A renewal, even one whose renewTime lies in the past of our clock: timed afresh.
        let renewed = observe(Some(later), record("2025-01-01T00:00:00Z"), t0 + Duration::from_secs(10));
        assert_eq!(renewed.changed_at, t0 + Duration::from_secs(10));
    }

    #[test]
    fn timing_keeps_the_holder_inside_its_lease() {
        let s = Duration::from_secs;
        assert_eq!(
            Timing::new(s(15), None, None).unwrap(),
            Timing { lease: s(15), renew_deadline: s(10), retry_period: s(2) },
            "client-go's proportions"
        );
        assert!(matches!(Timing::new(s(15), Some(s(15)), None), Err(TimingError::DeadlineNotBelowLease { .. })));
        assert!(matches!(Timing::new(s(15), Some(s(10)), Some(s(10))), Err(TimingError::RetryNotBelowDeadline { .. })));
    }

    #[tokio::test]
    async fn the_fence_holds_until_the_deadline_only() {
        let fence = Fence::default();
        assert!(!fence.holds(), "never acquired");
        fence.extend(Instant::now() + Duration::from_secs(10));
        assert!(fence.holds());
        fence.extend(Instant::now() + Duration::from_millis(20));
        tokio::time::sleep(Duration::from_millis(30)).await;
        assert!(!fence.holds(), "the deadline passed without a renewal");
        fence.extend(Instant::now() + Duration::from_secs(10));
        fence.revoke();
        assert!(!fence.holds(), "revoked");
    }
}
