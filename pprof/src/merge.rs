//! Profiles merged and compared as `go tool pprof` does it: `go tool pprof -top a b c`
//! merges the files, `go tool pprof -top -base old new` merges `new` with `old` scaled by
//! -1. pprof's merge adds the values of samples whose stacks are the same locations — a
//! location being its mapping, its address within the mapping, and its lines' functions
//! (name, system name, file, start line) and line and column numbers — and adds the
//! durations; `-top` then aggregates by function name.
//!
//! A function's flat and cum are sums over samples, so they add across profiles; the
//! report's total does not: it is the sum of each merged sample's absolute value, so a
//! stack that grew by 10 ms counts 10 ms in a diff's total, not the sum of both sides.
//! Hence each profile keeps its stacks' values by identity ([`Mergeable::stacks`]).
//!
//! Which functions a report shows follows pprof's `newTrimmedGraph`: the node cutoff is
//! `|int64(Σ flat × 0.005)|`, nodes whose `|cum|` is below it go, as do nodes with neither
//! flat nor cum, and the rest are ordered by `|flat|` descending, then name, then `|cum|`
//! descending.

use std::collections::HashMap;

use crate::{NODE_FRACTION, TopEntry};

/// What one distinct stack is counted as against an analysis's memory allowance: its key
/// and value and the hash table's overhead.
pub const BYTES_PER_STACK: u64 = 32;

/// One function's sums over a profile's samples.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionTotal {
    /// The function's name.
    pub function: String,
    /// Its own value.
    pub flat: i64,
    /// Its value with its callees' (once per sample, however often it recurs).
    pub cum: i64,
}

/// What merging a profile with others needs of it.
#[derive(Debug, Clone, PartialEq)]
pub struct Mergeable {
    /// `type/unit` of each sample type, in the profile's order.
    pub sample_types: Vec<String>,
    /// The sample type summarised (pprof's default).
    pub default_index: usize,
    /// How long the profile sampled (0 when it does not say).
    pub duration_nanos: i64,
    /// Every function with a non-zero flat or cum, without a cutoff.
    pub functions: Vec<FunctionTotal>,
    /// Each distinct stack's summed value, by the stack's identity.
    pub stacks: HashMap<u64, i64>,
}

impl Mergeable {
    /// `type/unit` of the summarised sample type.
    pub fn sample_type(&self) -> &str {
        self.sample_types.get(self.default_index).map_or("", String::as_str)
    }

    /// About what it holds in memory, for a cache's bound.
    pub fn bytes(&self) -> u64 {
        let names: usize = self.functions.iter().map(|f| f.function.len() + 40).sum();
        (names as u64).saturating_add((self.stacks.len() as u64).saturating_mul(BYTES_PER_STACK)).saturating_add(256)
    }
}

/// Why profiles cannot be merged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MergeError {
    /// pprof merges only profiles with the same sample types, in the same order.
    #[error("the profiles cannot be merged: their sample types differ ({first} and {other})")]
    SampleTypes {
        /// The first profile's sample types.
        first: String,
        /// The first differing profile's.
        other: String,
    },
    /// No profile was given.
    #[error("no profile to merge")]
    Empty,
}

/// Profiles merged, each scaled by its factor (1, or -1 for a base).
#[derive(Debug, Clone, PartialEq)]
pub struct Merged {
    /// `type/unit` of the values.
    pub sample_type: String,
    /// The sum of the profiles' durations, as pprof's merge adds them.
    pub duration_nanos: i64,
    /// pprof's report total: the sum over merged stacks of their absolute values.
    pub total: i64,
    /// Each function's (flat, cum).
    pub functions: HashMap<String, (i64, i64)>,
}

/// Merges `parts` (each with its scale) as pprof's `profile.Merge` would, and sums what
/// `-top` aggregates by function.
pub fn merge(parts: &[(&Mergeable, i64)]) -> Result<Merged, MergeError> {
    let (first, _) = parts.first().ok_or(MergeError::Empty)?;
    for (other, _) in &parts[1..] {
        if other.sample_types != first.sample_types || other.default_index != first.default_index {
            return Err(MergeError::SampleTypes {
                first: first.sample_types.join(", "),
                other: other.sample_types.join(", "),
            });
        }
    }
    let mut functions: HashMap<String, (i64, i64)> = HashMap::new();
    let mut duration_nanos = 0i64;
    for (part, scale) in parts {
        duration_nanos = duration_nanos.wrapping_add(part.duration_nanos);
        for f in &part.functions {
            let entry = functions.entry(f.function.clone()).or_default();
            entry.0 = entry.0.wrapping_add(f.flat.wrapping_mul(*scale));
            entry.1 = entry.1.wrapping_add(f.cum.wrapping_mul(*scale));
        }
    }
    let total = if let [(only, _)] = parts {
        only.stacks.values().fold(0i64, |t, v| t.wrapping_add(v.wrapping_abs()))
    } else {
        let mut stacks: HashMap<u64, i64> = HashMap::with_capacity(parts.iter().map(|(p, _)| p.stacks.len()).sum());
        for (part, scale) in parts {
            for (key, value) in &part.stacks {
                let v = stacks.entry(*key).or_default();
                *v = v.wrapping_add(value.wrapping_mul(*scale));
            }
        }
        stacks.values().fold(0i64, |t, v| t.wrapping_add(v.wrapping_abs()))
    };
    Ok(Merged { sample_type: first.sample_type().to_owned(), duration_nanos, total, functions })
}

/// pprof's node cutoff for a report whose nodes' flat values sum to `flat_sum`.
pub fn node_cutoff(flat_sum: i64) -> i64 {
    ((flat_sum as f64 * NODE_FRACTION) as i64).wrapping_abs()
}

/// The functions `go tool pprof -top` shows, in its order: `(name, flat, cum)` after the
/// node cutoff, at most `nodecount` (0: all).
pub fn report_order<'a>(
    functions: impl Iterator<Item = (&'a str, i64, i64)>,
    nodecount: usize,
) -> Vec<(&'a str, i64, i64)> {
    let all: Vec<(&str, i64, i64)> = functions.filter(|(_, flat, cum)| *flat != 0 || *cum != 0).collect();
    let cutoff = node_cutoff(all.iter().fold(0i64, |s, (_, flat, _)| s.wrapping_add(*flat)));
    let mut kept: Vec<(&str, i64, i64)> =
        all.into_iter().filter(|(_, _, cum)| cutoff == 0 || cum.unsigned_abs() >= cutoff.unsigned_abs()).collect();
    kept.sort_by(|a, b| {
        b.1.unsigned_abs()
            .cmp(&a.1.unsigned_abs())
            .then_with(|| a.0.cmp(b.0))
            .then_with(|| b.2.unsigned_abs().cmp(&a.2.unsigned_abs()))
    });
    if nodecount > 0 {
        kept.truncate(nodecount);
    }
    kept
}

/// `value` as a percentage of `total` (0 when the total is).
pub fn percent(value: i64, total: i64) -> f64 {
    if total == 0 { 0.0 } else { value as f64 * 100.0 / total as f64 }
}

/// The lines of `go tool pprof -top` over the merged profiles, at most `nodecount` (0: all).
pub fn top(merged: &Merged, nodecount: usize) -> Vec<TopEntry> {
    report_order(merged.functions.iter().map(|(name, (flat, cum))| (name.as_str(), *flat, *cum)), nodecount)
        .into_iter()
        .map(|(function, flat, cum)| TopEntry {
            function: function.to_owned(),
            flat,
            flat_percent: percent(flat, merged.total),
            cum,
            cum_percent: percent(cum, merged.total),
        })
        .collect()
}

/// One function's line of `go tool pprof -top -base`, with both sides beside it.
#[derive(Debug, Clone, PartialEq)]
pub struct DiffRow {
    /// The function.
    pub function: String,
    /// Its flat value in the base.
    pub base_flat: i64,
    /// Its cum value in the base.
    pub base_cum: i64,
    /// Its flat value in the compared profiles.
    pub flat: i64,
    /// Its cum value in the compared profiles.
    pub cum: i64,
    /// `flat - base_flat`: the flat `-top -base` shows.
    pub flat_delta: i64,
    /// `cum - base_cum`: the cum `-top -base` shows.
    pub cum_delta: i64,
    /// `flat_delta` as a percentage of the diff's total, as `-top -base` prints it.
    pub flat_delta_percent: f64,
    /// `cum_delta` as a percentage of the diff's total.
    pub cum_delta_percent: f64,
}

/// Two sets of profiles compared as `go tool pprof -top -base B1 -base … N1 N2 …`.
#[derive(Debug, Clone, PartialEq)]
pub struct Diff {
    /// The base merged.
    pub base: Merged,
    /// The compared profiles merged.
    pub compared: Merged,
    /// The total `-top -base` reports: each stack's absolute change, summed.
    pub total: i64,
    /// The functions it shows, in its order.
    pub rows: Vec<DiffRow>,
}

/// One function's `(flat, cum)` on both sides of a comparison (zero where a side lacks it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Joined<'a> {
    /// The function.
    pub function: &'a str,
    /// Its (flat, cum) in the base.
    pub base: (i64, i64),
    /// Its (flat, cum) in the compared profiles.
    pub compared: (i64, i64),
}

/// Each function of `base` or `compared` with its values on both sides, by name: the
/// per-function join every comparison of two runs reports. A function's flat and cum add
/// across profiles, so `compared - base` here is what the merged difference of the
/// profiles holds for it.
pub fn joined<'a>(base: &'a Merged, compared: &'a Merged) -> Vec<Joined<'a>> {
    let mut names: Vec<&str> = base.functions.keys().chain(compared.functions.keys()).map(String::as_str).collect();
    names.sort_unstable();
    names.dedup();
    names
        .into_iter()
        .map(|function| {
            let side = |m: &Merged| m.functions.get(function).copied().unwrap_or_default();
            Joined { function, base: side(base), compared: side(compared) }
        })
        .collect()
}

/// `compared` against `base`, as `go tool pprof -top -base` reports it, at most `nodecount`
/// rows (0: all).
pub fn diff(base: &[&Mergeable], compared: &[&Mergeable], nodecount: usize) -> Result<Diff, MergeError> {
    let parts: Vec<(&Mergeable, i64)> = compared.iter().map(|p| (*p, 1)).chain(base.iter().map(|p| (*p, -1))).collect();
    let delta = merge(&parts)?;
    let base_merged = merge(&base.iter().map(|p| (*p, 1)).collect::<Vec<_>>())?;
    let compared_merged = merge(&compared.iter().map(|p| (*p, 1)).collect::<Vec<_>>())?;
    let both = joined(&base_merged, &compared_merged);
    let sides: HashMap<&str, &Joined<'_>> = both.iter().map(|j| (j.function, j)).collect();
    let deltas =
        both.iter().map(|j| (j.function, j.compared.0.wrapping_sub(j.base.0), j.compared.1.wrapping_sub(j.base.1)));
    let rows = report_order(deltas, nodecount)
        .into_iter()
        .map(|(function, flat_delta, cum_delta)| {
            let ((base_flat, base_cum), (flat, cum)) =
                sides.get(function).map(|j| (j.base, j.compared)).unwrap_or_default();
            DiffRow {
                function: function.to_owned(),
                base_flat,
                base_cum,
                flat,
                cum,
                flat_delta,
                cum_delta,
                flat_delta_percent: percent(flat_delta, delta.total),
                cum_delta_percent: percent(cum_delta, delta.total),
            }
        })
        .collect();
    Ok(Diff { base: base_merged, compared: compared_merged, total: delta.total, rows })
}

/// A function's flat value and its share of its side's total, before and after.
#[derive(Debug, Clone, PartialEq)]
pub struct ShareChange {
    /// The function.
    pub function: String,
    /// Its flat value in the base.
    pub base_flat: i64,
    /// Its flat value in the compared profiles.
    pub flat: i64,
    /// `base_flat` as a percentage of the base's total.
    pub base_percent: f64,
    /// `flat` as a percentage of the compared profiles' total.
    pub percent: f64,
}

impl ShareChange {
    /// How many percentage points its share moved (positive: grew).
    pub fn points(&self) -> f64 {
        self.percent - self.base_percent
    }
}

/// How each function's flat share moved from `base` to `compared`, each share of its own
/// side's total (so two sides of different length or pod count compare): grown first,
/// largest move first, then by name. Functions whose share did not move are left out.
pub fn share_changes(base: &Merged, compared: &Merged) -> Vec<ShareChange> {
    let mut changes: Vec<ShareChange> = joined(base, compared)
        .into_iter()
        .map(|j| ShareChange {
            function: j.function.to_owned(),
            base_flat: j.base.0,
            flat: j.compared.0,
            base_percent: percent(j.base.0, base.total),
            percent: percent(j.compared.0, compared.total),
        })
        .filter(|c| c.points() != 0.0)
        .collect();
    changes.sort_by(|a, b| b.points().total_cmp(&a.points()).then_with(|| a.function.cmp(&b.function)));
    changes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile(functions: &[(&str, i64, i64)], stacks: &[(u64, i64)]) -> Mergeable {
        Mergeable {
            sample_types: vec!["samples/count".into(), "cpu/nanoseconds".into()],
            default_index: 1,
            duration_nanos: 1_000,
            functions: functions
                .iter()
                .map(|(f, flat, cum)| FunctionTotal { function: (*f).into(), flat: *flat, cum: *cum })
                .collect(),
            stacks: stacks.iter().copied().collect(),
        }
    }

    #[test]
    fn merging_adds_functions_durations_and_same_stacks() {
        let a = profile(&[("main", 0, 100), ("work", 100, 100)], &[(1, 100)]);
        let b = profile(&[("main", 10, 60), ("idle", 50, 50)], &[(1, -10), (2, 50), (3, 10)]);
        let m = merge(&[(&a, 1), (&b, 1)]).unwrap();
        assert_eq!(m.duration_nanos, 2_000);
        assert_eq!(m.functions["main"], (10, 160));
        assert_eq!(m.functions["idle"], (50, 50));
        assert_eq!(m.total, 90 + 50 + 10, "stack 1 merges to 90 before its absolute value counts");
        let top = top(&m, 0);
        let names: Vec<&str> = top.iter().map(|t| t.function.as_str()).collect();
        assert_eq!(names, ["work", "idle", "main"]);
    }

    #[test]
    fn a_diff_subtracts_the_base_and_totals_each_stack_s_change() {
        let old = profile(&[("main", 0, 300), ("hot", 100, 100), ("cold", 200, 200)], &[(1, 100), (2, 200)]);
        let new = profile(&[("main", 0, 400), ("hot", 350, 350), ("cold", 50, 50)], &[(1, 350), (2, 50)]);
        let d = diff(&[&old], &[&new], 0).unwrap();
        assert_eq!(d.total, 250 + 150);
        let rows: Vec<(&str, i64, i64)> =
            d.rows.iter().map(|r| (r.function.as_str(), r.flat_delta, r.cum_delta)).collect();
        assert_eq!(rows, [("hot", 250, 250), ("cold", -150, -150), ("main", 0, 100)]);
        assert_eq!((d.rows[0].base_flat, d.rows[0].flat), (100, 350));
        assert!((d.rows[0].flat_delta_percent - 62.5).abs() < 1e-9);
    }

    #[test]
    fn share_changes_compare_each_side_s_own_total_and_count_one_sided_functions_as_zero() {
        // Base 1000 in total, compared 2000 (twice the pods): `hot` keeps its share, `new`
        // appears, `gone` disappears.
        let old = profile(&[("hot", 500, 500), ("gone", 200, 200), ("rest", 300, 300)], &[(1, 1000)]);
        let new = profile(&[("hot", 1000, 1000), ("new", 600, 600), ("rest", 400, 400)], &[(1, 2000)]);
        let base = merge(&[(&old, 1)]).unwrap();
        let compared = merge(&[(&new, 1)]).unwrap();
        let changes = share_changes(&base, &compared);
        let moved: Vec<(&str, f64, f64)> =
            changes.iter().map(|c| (c.function.as_str(), c.base_percent, c.percent)).collect();
        assert_eq!(moved, [("new", 0.0, 30.0), ("rest", 30.0, 20.0), ("gone", 20.0, 0.0)]);
        assert_eq!((changes[0].base_flat, changes[0].flat), (0, 600));
        assert!((changes[2].points() + 20.0).abs() < 1e-9);
    }

    #[test]
    fn the_cutoff_is_pprof_s_truncated_fraction_of_the_flat_sum() {
        // Σ flat = 2000: cutoff int64(10.0) = 10; a cum of exactly 10 stays, 9 goes.
        let p = profile(&[("a", 1981, 1981), ("b", 10, 10), ("c", 9, 9)], &[(1, 2000)]);
        let m = merge(&[(&p, 1)]).unwrap();
        let names: Vec<String> = top(&m, 0).into_iter().map(|t| t.function).collect();
        assert_eq!(names, ["a", "b"]);
        assert_eq!(top(&m, 1).len(), 1);
    }

    #[test]
    fn different_sample_types_are_refused() {
        let a = profile(&[], &[]);
        let mut b = profile(&[], &[]);
        b.sample_types = vec!["alloc_objects/count".into(), "alloc_space/bytes".into()];
        assert!(matches!(merge(&[(&a, 1), (&b, 1)]), Err(MergeError::SampleTypes { .. })));
        assert_eq!(merge(&[]), Err(MergeError::Empty));
    }
}
