//! Top functions and comparisons computed from the profile files themselves (the status
//! keeps only five functions per profile): each file is fetched from the agent that holds
//! it, read once by the streaming pprof reader into what merging needs, and kept in a
//! bounded cache by content hash, so that a page, the plugin and a comparison reading the
//! same file pay for it once.

use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, Mutex},
};

use biometrics_crds::v1alpha1::TopFunction;
use biometrics_pprof::{
    Options,
    flamegraph::Folded,
    memory::Allowance,
    merge::{self, Mergeable},
};

use crate::{
    api::{CompareRow, CompareView, RunRow, TopView},
    views::HeldFiles,
};

/// Bytes of analyses the cache keeps at most.
pub const CACHE_BYTES: u64 = 128 << 20;
/// Analyses the cache keeps at most.
pub const CACHE_ENTRIES: usize = 1024;
/// A profile may decompress to this many bytes at most.
pub const MAX_DECOMPRESSED_BYTES: u64 = 1 << 30;
/// Memory one analysis may use at most.
pub const ANALYSIS_MEMORY: u64 = 512 << 20;
/// Files read at once (the rest wait): bounds the analyses' memory to this many times
/// [`ANALYSIS_MEMORY`].
pub const CONCURRENT_ANALYSES: usize = 2;

/// Analyses by the SHA-256 of the file they were read from, oldest first out.
#[derive(Default)]
pub struct Cache {
    inner: Mutex<CacheInner>,
}

#[derive(Default)]
struct CacheInner {
    entries: HashMap<String, Arc<Analysed>>,
    order: VecDeque<String>,
    bytes: u64,
}

impl Cache {
    /// The analysis of the file with this hash, when kept.
    pub fn get(&self, sha256: &str) -> Option<Arc<Analysed>> {
        let inner = self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        inner.entries.get(sha256).cloned()
    }

    /// Keeps an analysis, dropping the oldest until the bounds hold (one too large for the
    /// whole cache is not kept).
    pub fn put(&self, sha256: &str, analysis: Arc<Analysed>) {
        let size = analysis.bytes();
        if size > CACHE_BYTES {
            return;
        }
        let mut inner = self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if inner.entries.contains_key(sha256) {
            return;
        }
        while inner.bytes + size > CACHE_BYTES || inner.entries.len() >= CACHE_ENTRIES {
            let Some(oldest) = inner.order.pop_front() else { break };
            if let Some(gone) = inner.entries.remove(&oldest) {
                inner.bytes -= gone.bytes();
            }
        }
        inner.bytes += size;
        inner.order.push_back(sha256.to_owned());
        inner.entries.insert(sha256.to_owned(), analysis);
    }

    /// Bytes kept now.
    pub fn bytes(&self) -> u64 {
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner).bytes
    }
}

/// One profile file as read: what merging needs, and its folded stacks for a flame graph.
#[derive(Debug, Clone, PartialEq)]
pub struct Analysed {
    /// Its functions and stacks.
    pub mergeable: Mergeable,
    /// Its stacks folded (`a;b;c value`), when drawn.
    pub folded: Option<Folded>,
}

impl Analysed {
    /// About what it holds in memory.
    pub fn bytes(&self) -> u64 {
        self.mergeable.bytes() + self.folded.as_ref().map_or(0, |f| f.text.len() as u64)
    }
}

/// The SHA-256 of `bytes` in hex, as the agents list it.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// Reads a profile file into what merging needs, and its folded stacks when `flame`.
pub fn analyse(bytes: &[u8], flame: bool) -> Result<Analysed, String> {
    let options = Options { max_decompressed_bytes: MAX_DECOMPRESSED_BYTES, top_n: 0, flame, mergeable: true };
    let mut memory = Allowance::new(ANALYSIS_MEMORY, None);
    let analysis =
        biometrics_pprof::analyse(std::io::Cursor::new(bytes), &options, &mut memory).map_err(|e| e.to_string())?;
    let mergeable = analysis.mergeable.ok_or_else(|| "the analysis kept nothing to merge".to_owned())?;
    Ok(Analysed { mergeable, folded: analysis.folded })
}

/// The differential flame graph of `compared` against `base` as an SVG: inferno's
/// differential folding (each stack's value before and after), drawn with the compared
/// side's widths, red where a stack grew and blue where it shrank.
pub fn diff_flamegraph(
    title: &str,
    count_name: &str,
    base: &[&Analysed],
    compared: &[&Analysed],
) -> std::io::Result<Vec<u8>> {
    let folded = |side: &[&Analysed]| -> Vec<u8> {
        let mut text = Vec::new();
        for a in side {
            if let Some(f) = &a.folded {
                text.extend_from_slice(f.text.as_bytes());
                if !f.text.ends_with('\n') {
                    text.push(b'\n');
                }
            }
        }
        text
    };
    let (before, after) = (folded(base), folded(compared));
    let mut differential = Vec::new();
    inferno::differential::from_readers(
        inferno::differential::Options::default(),
        before.as_slice(),
        after.as_slice(),
        &mut differential,
    )?;
    let mut options = inferno::flamegraph::Options::default();
    options.title = title.to_owned();
    options.count_name = count_name.to_owned();
    options.subtitle = Some("red: grew, blue: shrank (widths: the compared side)".to_owned());
    let text = String::from_utf8_lossy(&differential).into_owned();
    let mut svg = Vec::new();
    if text.trim().is_empty() {
        inferno::flamegraph::from_lines(&mut options, ["all 0 1"], &mut svg)?;
    } else {
        inferno::flamegraph::from_lines(&mut options, text.lines(), &mut svg)?;
    }
    Ok(svg)
}

/// One profile file of one pod in a run, and the agent that holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Located {
    /// The agent (pod) to fetch it from.
    pub holder: String,
    /// The pod that wrote it.
    pub pod: String,
    /// The file's name.
    pub file: String,
    /// Its SHA-256, as the agent listed it.
    pub sha256: String,
}

/// The file of `profile` (`cpu` → `cpu.pb.gz`) of each pod of `run` (or of `pod` only),
/// ordered by pod.
pub fn locate(held: &[HeldFiles], run: &str, profile: &str, pod: Option<&str>) -> Vec<Located> {
    let name = format!("{profile}.pb.gz");
    let mut found: Vec<Located> = Vec::new();
    for h in held {
        for r in h.listing.runs.iter().filter(|r| r.run == run) {
            for p in r.pods.iter().filter(|p| pod.is_none_or(|wanted| p.pod == wanted)) {
                for f in p.files.iter().filter(|f| f.name == name) {
                    if !found.iter().any(|l| l.pod == p.pod) {
                        found.push(Located {
                            holder: h.holder.clone(),
                            pod: p.pod.clone(),
                            file: f.name.clone(),
                            sha256: f.sha256.clone(),
                        });
                    }
                }
            }
        }
    }
    found.sort_by(|a, b| a.pod.cmp(&b.pod));
    found
}

fn seconds(nanos: i64) -> Option<f64> {
    (nanos > 0).then(|| nanos as f64 / 1e9)
}

/// A run's (or one pod's) profiles merged, as `go tool pprof -top` shows them.
pub fn top_view(
    run: &str,
    profile: &str,
    pods: Vec<String>,
    analyses: &[&Mergeable],
    nodecount: usize,
) -> Result<TopView, merge::MergeError> {
    let parts: Vec<(&Mergeable, i64)> = analyses.iter().map(|a| (*a, 1)).collect();
    let merged = merge::merge(&parts)?;
    let functions = merge::top(&merged, nodecount)
        .into_iter()
        .map(|t| TopFunction {
            function: t.function,
            flat: t.flat,
            flat_percent: t.flat_percent,
            cum: t.cum,
            cum_percent: t.cum_percent,
        })
        .collect();
    Ok(TopView {
        run: run.to_owned(),
        profile: profile.to_owned(),
        pods,
        sample_type: merged.sample_type,
        total: merged.total,
        duration_seconds: seconds(merged.duration_nanos),
        functions,
    })
}

/// What is compared: a run (all its pods, or one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Side {
    /// The run.
    pub run: String,
    /// One pod, or all.
    pub pod: Option<String>,
}

/// The two sides of a comparison from what was asked: the compared run is the one asked
/// for or the latest with files of `profile`; the base is the one asked for, else the same
/// run when two pods of it are compared, else the latest run with such files before it.
pub fn sides(
    runs: &[RunRow],
    held: &[HeldFiles],
    profile: &str,
    (base, base_pod): (Option<&str>, Option<&str>),
    (run, pod): (Option<&str>, Option<&str>),
) -> Result<(Side, Side), String> {
    let with_profile: Vec<&str> =
        runs.iter().map(|r| r.id.as_str()).filter(|id| !locate(held, id, profile, None).is_empty()).collect();
    let compared = match run {
        Some(run) => run.to_owned(),
        None => {
            (*with_profile.first().ok_or_else(|| format!("no run has a {profile} profile on the volume"))?).to_owned()
        }
    };
    let base_pod = base_pod.or(pod);
    let base = match base {
        Some(base) => base.to_owned(),
        None if base_pod != pod => compared.clone(),
        None => {
            let later = with_profile.iter().position(|id| *id == compared);
            let earlier = later.and_then(|i| with_profile.get(i + 1));
            (*earlier.ok_or_else(|| format!("no run before {compared:?} has a {profile} profile to compare with"))?)
                .to_owned()
        }
    };
    Ok((Side { run: base, pod: base_pod.map(str::to_owned) }, Side { run: compared, pod: pod.map(str::to_owned) }))
}

/// `compared` against `base`, as `go tool pprof -top -base` counts it, each flat change
/// also per second of profiling when both sides say how long they sampled.
pub fn compare_view(
    profile: &str,
    (base, base_analyses): (&Side, &[&Mergeable]),
    (compared, analyses): (&Side, &[&Mergeable]),
    nodecount: usize,
) -> Result<CompareView, merge::MergeError> {
    let diff = merge::diff(base_analyses, analyses, nodecount)?;
    let (base_seconds, seconds) = (seconds(diff.base.duration_nanos), seconds(diff.compared.duration_nanos));
    let rows = diff
        .rows
        .into_iter()
        .map(|r| CompareRow {
            flat_delta_per_second: base_seconds.zip(seconds).map(|(bs, s)| r.flat as f64 / s - r.base_flat as f64 / bs),
            function: r.function,
            base_flat: r.base_flat,
            flat: r.flat,
            flat_delta: r.flat_delta,
            flat_delta_percent: r.flat_delta_percent,
            base_cum: r.base_cum,
            cum: r.cum,
            cum_delta: r.cum_delta,
            cum_delta_percent: r.cum_delta_percent,
        })
        .collect();
    Ok(CompareView {
        base: base.run.clone(),
        base_pod: base.pod.clone(),
        run: compared.run.clone(),
        pod: compared.pod.clone(),
        profile: profile.to_owned(),
        sample_type: diff.compared.sample_type,
        base_total: diff.base.total,
        total: diff.compared.total,
        diff_total: diff.total,
        base_seconds,
        seconds,
        rows,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mergeable(functions: usize) -> Arc<Mergeable> {
        Arc::new(Mergeable {
            sample_types: vec!["cpu/nanoseconds".into()],
            default_index: 0,
            duration_nanos: 0,
            functions: (0..functions)
                .map(|i| merge::FunctionTotal { function: format!("f{i}"), flat: 1, cum: 1 })
                .collect(),
            stacks: HashMap::new(),
        })
    }

    #[test]
    fn the_cache_keeps_within_its_bounds_dropping_the_oldest() {
        let cache = Cache::default();
        let big = Arc::new(Analysed { mergeable: (*mergeable(1_200_000)).clone(), folded: None });
        let size = big.bytes();
        assert!(size > CACHE_BYTES / 3 && size < CACHE_BYTES / 2, "three do not fit: {size}");
        for key in ["a", "b", "c"] {
            cache.put(key, big.clone());
        }
        assert!(cache.bytes() <= CACHE_BYTES);
        assert!(cache.get("a").is_none(), "the oldest went");
        assert!(cache.get("b").is_some() && cache.get("c").is_some());
        for i in 0..CACHE_ENTRIES + 10 {
            cache.put(&format!("small{i}"), Arc::new(Analysed { mergeable: (*mergeable(1)).clone(), folded: None }));
        }
        assert!(cache.get("small0").is_none());
        assert!(cache.get(&format!("small{}", CACHE_ENTRIES + 9)).is_some());
    }
}
