//! What `/readyz` answers. A replica is ready when its part is running: a follower once its
//! lease loop has reached the Lease (it builds no caches, so there is nothing else to wait
//! for), the leader once its watch caches have synced. A replica whose lease loop cannot
//! read or write the Lease (API server gone, access refused) is not ready until it can again.

use std::sync::{Arc, Mutex};

/// Where this replica's lease loop stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lease {
    /// No attempt has finished yet.
    NotYet,
    /// The last attempt found the Lease held by another replica.
    Following,
    /// The last attempt took or renewed it.
    Leading,
    /// The last attempt failed.
    Failing,
}

/// The lease loop and the caches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct State {
    /// The lease loop's last attempt.
    pub lease: Lease,
    /// The leader's watch caches (pods, workloads, both kinds) have their first list.
    pub synced: bool,
}

impl State {
    /// Whether `/readyz` answers 200.
    pub fn ready(&self) -> bool {
        match self.lease {
            Lease::Following => true,
            Lease::Leading => self.synced,
            Lease::NotYet | Lease::Failing => false,
        }
    }

    /// What `/readyz` says.
    pub fn describe(&self) -> &'static str {
        match (self.lease, self.synced) {
            (Lease::NotYet, _) => "the lease loop has not reached the Lease yet",
            (Lease::Failing, _) => "the lease loop cannot read or write the Lease",
            (Lease::Following, _) => "ok: following",
            (Lease::Leading, false) => "leading; the watch caches have not synced yet",
            (Lease::Leading, true) => "ok: leading",
        }
    }
}

/// The replica's readiness, shared by the lease loop, the controllers and `/readyz`.
#[derive(Debug, Clone)]
pub struct Readiness(Arc<Mutex<State>>);

impl Default for Readiness {
    fn default() -> Self {
        Self(Arc::new(Mutex::new(State { lease: Lease::NotYet, synced: false })))
    }
}

impl Readiness {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Records a lease attempt's outcome.
    pub fn lease(&self, lease: Lease) {
        self.lock().lease = lease;
    }

    /// Records that the leader's caches have synced.
    pub fn synced(&self) {
        self.lock().synced = true;
    }

    /// Now.
    pub fn state(&self) -> State {
        *self.lock()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_when_its_part_runs() {
        let state = |lease, synced| State { lease, synced };
        assert!(!state(Lease::NotYet, false).ready(), "before the lease loop has run");
        assert!(state(Lease::Following, false).ready(), "a follower builds no caches");
        assert!(!state(Lease::Leading, false).ready(), "a leader whose caches are still listing");
        assert!(state(Lease::Leading, true).ready());
        assert!(!state(Lease::Failing, true).ready(), "a lease loop that fails");
        assert!(!state(Lease::Failing, false).ready());
        let readiness = Readiness::default();
        assert_eq!(readiness.state().describe(), "the lease loop has not reached the Lease yet");
        readiness.lease(Lease::Leading);
        assert!(!readiness.state().ready());
        readiness.synced();
        assert!(readiness.state().ready());
        readiness.lease(Lease::Failing);
        assert!(!readiness.state().ready(), "a renewal failed");
        readiness.lease(Lease::Leading);
        assert!(readiness.state().ready(), "and came back");
    }
}
