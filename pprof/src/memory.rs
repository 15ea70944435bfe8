//! What one analysis may allocate: every table, buffer and tree it keeps is paid for here
//! before it grows, so a profile that would need more than its allowance fails with a
//! reason instead of taking the memory. The agent grants allowances from its process-wide
//! budget; a command run by hand on a file of one's own runs with an unlimited one.

use super::ProfileError;

/// Bytes an analysis counts for what it allocates without a table: the gzip decoder's
/// state and window, the chunks between the inflating thread and the parser, that
/// thread's stack as touched.
pub const BASE_BYTES: u64 = 512 << 10;

/// Asks for a larger grant (the total wanted, in bytes) without waiting; true when given.
pub type Grow = Box<dyn FnMut(u64) -> bool + Send>;

/// One analysis's memory: granted, used, and the most it used.
pub struct Allowance {
    granted: u64,
    used: u64,
    peak: u64,
    grow: Option<Grow>,
}

impl std::fmt::Debug for Allowance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Allowance")
            .field("granted", &self.granted)
            .field("used", &self.used)
            .field("peak", &self.peak)
            .finish_non_exhaustive()
    }
}

impl Allowance {
    /// `granted` bytes; `grow`, when given, is asked for more before the analysis fails.
    pub fn new(granted: u64, grow: Option<Grow>) -> Self {
        Self { granted, used: 0, peak: 0, grow }
    }

    /// No bound: for a command run by hand on a file of one's own.
    pub fn unlimited() -> Self {
        Self::new(u64::MAX, None)
    }

    /// Bytes granted so far.
    pub fn granted(&self) -> u64 {
        self.granted
    }

    /// The most this analysis had charged at once.
    pub fn peak(&self) -> u64 {
        self.peak
    }

    /// Bytes charged now.
    pub fn used(&self) -> u64 {
        self.used
    }

    /// Pays for `bytes` more, growing the grant if the grower allows; else the analysis
    /// fails with `OverBudget` and nothing is charged.
    pub fn charge(&mut self, bytes: u64) -> Result<(), ProfileError> {
        let wanted = self.used.saturating_add(bytes);
        if wanted > self.granted {
            let grown = self.grow.as_mut().is_some_and(|grow| grow(wanted));
            if !grown {
                return Err(ProfileError::OverBudget { needed: wanted, granted: self.granted });
            }
            self.granted = wanted;
        }
        self.used = wanted;
        self.peak = self.peak.max(wanted);
        Ok(())
    }

    /// Gives back `bytes` charged before (a table dropped or shrunk).
    pub fn release(&mut self, bytes: u64) {
        self.used = self.used.saturating_sub(bytes);
    }

    /// Makes room for `additional` more elements in `v`, paying for the capacity added
    /// (at least doubling, so pushes stay amortised constant time).
    pub fn reserve<T>(&mut self, v: &mut Vec<T>, additional: usize) -> Result<(), ProfileError> {
        let needed = v.len().saturating_add(additional);
        if needed <= v.capacity() {
            return Ok(());
        }
        let new_capacity = needed.max(v.capacity().saturating_mul(2)).max(8);
        let added = (new_capacity - v.capacity()) as u64;
        self.charge(added.saturating_mul(std::mem::size_of::<T>() as u64))?;
        v.reserve_exact(new_capacity - v.len());
        Ok(())
    }

    /// Pushes onto `v`, paying for any growth first.
    pub fn push<T>(&mut self, v: &mut Vec<T>, item: T) -> Result<(), ProfileError> {
        self.reserve(v, 1)?;
        v.push(item);
        Ok(())
    }

    /// Gives back what `v`'s capacity was charged, and drops it.
    pub fn free<T>(&mut self, v: Vec<T>) {
        self.release((v.capacity() as u64).saturating_mul(std::mem::size_of::<T>() as u64));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charges_fail_past_the_grant_unless_it_grows() {
        let mut a = Allowance::new(100, None);
        a.charge(60).unwrap();
        assert!(matches!(a.charge(50), Err(ProfileError::OverBudget { needed: 110, granted: 100 })));
        assert_eq!(a.used(), 60, "a refused charge charges nothing");
        a.release(60);
        let mut calls = 0;
        let mut g = Allowance::new(
            100,
            Some(Box::new(move |want| {
                calls += 1;
                want <= 150 && calls < 10
            })),
        );
        g.charge(140).unwrap();
        assert_eq!(g.granted(), 140);
        assert!(g.charge(20).is_err(), "the grower said no");
        assert_eq!(g.peak(), 140);
    }

    #[test]
    fn vectors_pay_for_their_capacity() {
        let mut a = Allowance::new(1 << 20, None);
        let mut v: Vec<u64> = Vec::new();
        for i in 0..1000 {
            a.push(&mut v, i).unwrap();
        }
        assert!(a.used() >= v.capacity() as u64 * 8);
        a.free(v);
        assert_eq!(a.used(), 0);
        let mut small = Allowance::new(64, None);
        let mut v: Vec<u64> = Vec::new();
        assert!(small.reserve(&mut v, 1 << 40).is_err(), "an absurd reservation is refused, not attempted");
    }
}
