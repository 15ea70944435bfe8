//! The process-wide memory budget that concurrent profile analyses share: each analysis
//! reserves what it expects to need before it starts, may grow its reservation while the
//! budget has room, and otherwise fails and asks again for more. Analyses that cannot get
//! their reservation wait in a bounded queue, first come first served; one that finds the
//! queue full is refused with the reason. So the memory all analyses hold together never
//! passes `--analysis-memory-budget`, whatever the apps serve and however many captures run.

use std::sync::{
    Arc,
    atomic::{AtomicUsize, Ordering},
};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Permits are KiB: a u32 of them covers 4 TiB.
const UNIT: u64 = 1024;

/// The smallest first reservation: the decoder, buffers and a small profile's tables.
pub const MIN_RESERVATION: u64 = 2 << 20;

/// Why an analysis got no memory.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BudgetError {
    /// Too many analyses wait already.
    #[error(
        "{waiting} profile analyses are already waiting for analysis memory (limit maxQueuedAnalyses {max}); retry later"
    )]
    QueueFull {
        /// Analyses waiting.
        waiting: usize,
        /// The bound.
        max: usize,
    },
    /// The budget's semaphore is closed (never, while the agent runs).
    #[error("the analysis memory budget is closed")]
    Closed,
}

/// The budget, shared by every capture of the agent.
#[derive(Debug, Clone)]
pub struct MemoryBudget {
    semaphore: Arc<Semaphore>,
    total: u64,
    max_waiting: usize,
    waiting: Arc<AtomicUsize>,
}

/// Memory held by one analysis, given back when dropped.
#[derive(Debug)]
pub struct Reservation {
    permit: OwnedSemaphorePermit,
    semaphore: Arc<Semaphore>,
}

fn units(bytes: u64) -> u32 {
    u32::try_from(bytes.div_ceil(UNIT)).unwrap_or(u32::MAX)
}

/// Decrements the waiting count however the wait ends (granted, cancelled, dropped).
struct Waiting(Arc<AtomicUsize>);

impl Drop for Waiting {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl MemoryBudget {
    /// `total` bytes, with at most `max_waiting` analyses waiting for them.
    pub fn new(total: u64, max_waiting: usize) -> Self {
        let total = u64::from(units(total)) * UNIT;
        Self { semaphore: Arc::new(Semaphore::new(units(total) as usize)), total, max_waiting, waiting: Arc::default() }
    }

    /// The whole budget, in bytes.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// Analyses waiting now.
    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::SeqCst)
    }

    /// Bytes no analysis holds now.
    pub fn available(&self) -> u64 {
        self.semaphore.available_permits() as u64 * UNIT
    }

    /// Reserves `bytes` (at most the whole budget): at once when free, else after the
    /// analyses queued before it; `on_wait` is called once if it has to wait. Refused
    /// only when `max_waiting` analyses wait already.
    pub async fn reserve(&self, bytes: u64, on_wait: impl FnOnce()) -> Result<Reservation, BudgetError> {
        let wanted = units(bytes.min(self.total)).max(1);
        if let Ok(permit) = self.semaphore.clone().try_acquire_many_owned(wanted) {
            return Ok(Reservation { permit, semaphore: self.semaphore.clone() });
        }
        let max = self.max_waiting;
        self.waiting
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |w| (w < max).then_some(w + 1))
            .map_err(|waiting| BudgetError::QueueFull { waiting, max })?;
        let _waiting = Waiting(self.waiting.clone());
        on_wait();
        let permit = self.semaphore.clone().acquire_many_owned(wanted).await.map_err(|_| BudgetError::Closed)?;
        Ok(Reservation { permit, semaphore: self.semaphore.clone() })
    }
}

impl Reservation {
    /// Bytes held.
    pub fn bytes(&self) -> u64 {
        self.permit.num_permits() as u64 * UNIT
    }

    /// Grows to `bytes` if the budget has that much free now and no analysis waits
    /// (the queue is never jumped); never waits.
    pub fn try_grow(&mut self, bytes: u64) -> bool {
        let (held, wanted) = (self.permit.num_permits() as u64, u64::from(units(bytes)));
        if wanted <= held {
            return true;
        }
        let more = u32::try_from(wanted - held).unwrap_or(u32::MAX);
        match self.semaphore.clone().try_acquire_many_owned(more) {
            Ok(extra) => {
                self.permit.merge(extra);
                true
            }
            Err(_) => false,
        }
    }
}

/// The first reservation for a profile of `file_bytes` (compressed): its tables are
/// typically well under its size, so the size with a floor for the fixed costs, within the
/// budget.
pub fn first_reservation(file_bytes: u64, total: u64) -> u64 {
    file_bytes.saturating_add(MIN_RESERVATION).min(total)
}

/// After an analysis holding `granted` failed needing `needed` bytes: the reservation to
/// try again with (half as much again, within the budget), or `None` when even the whole
/// budget was not enough.
pub fn next_reservation(needed: u64, granted: u64, total: u64) -> Option<u64> {
    if needed > total || granted >= total {
        return None;
    }
    Some(needed.saturating_add(needed / 2).clamp(granted.saturating_add(1), total))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn reservations_start_from_the_file_size_and_grow_to_the_budget() {
        assert_eq!(first_reservation(0, 64 << 20), MIN_RESERVATION);
        assert_eq!(first_reservation(10 << 20, 64 << 20), (10 << 20) + MIN_RESERVATION);
        assert_eq!(first_reservation(1 << 30, 64 << 20), 64 << 20);
        assert_eq!(next_reservation(10 << 20, 4 << 20, 64 << 20), Some(15 << 20));
        assert_eq!(next_reservation(60 << 20, 40 << 20, 64 << 20), Some(64 << 20), "capped at the budget");
        assert_eq!(next_reservation(65 << 20, 40 << 20, 64 << 20), None, "more than the whole budget");
        assert_eq!(next_reservation(50 << 20, 64 << 20, 64 << 20), None, "had the whole budget already");
    }

    #[tokio::test]
    async fn analyses_wait_their_turn_and_a_full_queue_refuses() {
        let budget = MemoryBudget::new(8 << 20, 1);
        let first = budget.reserve(6 << 20, || panic!("free: no wait")).await.unwrap();
        assert_eq!(first.bytes(), 6 << 20);
        let (waited_tx, waited_rx) = tokio::sync::oneshot::channel();
        let b = budget.clone();
        let second = tokio::spawn(async move {
            b.reserve(4 << 20, move || {
                let _ = waited_tx.send(());
            })
            .await
        });
        waited_rx.await.expect("the second waits");
        assert_eq!(budget.waiting(), 1);
        let third = budget.reserve(1 << 20, || panic!("refused, not queued")).await;
        assert_eq!(third.unwrap_err(), BudgetError::QueueFull { waiting: 1, max: 1 });
        let mut first = first;
        assert!(!first.try_grow(7 << 20), "growth never jumps the queue");
        drop(first);
        let second = tokio::time::timeout(Duration::from_secs(5), second).await.unwrap().unwrap().unwrap();
        assert_eq!(second.bytes(), 4 << 20);
        assert_eq!(budget.waiting(), 0);
        assert_eq!(budget.available(), 4 << 20);
    }

    #[tokio::test]
    async fn growth_takes_what_is_free_and_drops_give_it_back() {
        let budget = MemoryBudget::new(8 << 20, 4);
        let mut r = budget.reserve(1 << 20, || {}).await.unwrap();
        assert!(r.try_grow(5 << 20));
        assert_eq!(r.bytes(), 5 << 20);
        assert!(!r.try_grow(9 << 20), "past the budget");
        assert!(r.try_grow(2 << 20), "already held");
        drop(r);
        assert_eq!(budget.available(), 8 << 20);
        let whole = budget.reserve(1 << 40, || {}).await.unwrap();
        assert_eq!(whole.bytes(), 8 << 20, "a reservation is capped at the budget");
    }

    #[tokio::test]
    async fn a_cancelled_wait_leaves_the_queue() {
        let budget = MemoryBudget::new(1 << 20, 1);
        let held = budget.reserve(1 << 20, || {}).await.unwrap();
        let waiting = tokio::time::timeout(Duration::from_millis(50), budget.reserve(1 << 20, || {})).await;
        assert!(waiting.is_err(), "still waiting when dropped");
        assert_eq!(budget.waiting(), 0);
        drop(held);
        budget.reserve(1 << 20, || panic!("free again")).await.unwrap();
    }
}
