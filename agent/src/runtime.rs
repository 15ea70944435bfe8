//! The app's runtime metrics, read from the Go runtime's own pprof text endpoints:
//! `heap?debug=1` ends with the `runtime.MemStats` block, `goroutine?debug=1` starts with
//! the goroutine total.

use crate::api::RuntimeSample;

/// The MemStats fields we report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MemStats {
    /// `HeapAlloc`.
    pub heap_alloc: u64,
    /// `HeapSys`.
    pub heap_sys: u64,
    /// `Sys`.
    pub sys: u64,
    /// `NumGC`.
    pub num_gc: u64,
}

/// Why the app's metrics could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuntimeError {
    /// The heap page has no `runtime.MemStats` block (not a Go app, or pprof not mounted).
    #[error("the app's heap?debug=1 has no runtime.MemStats block (is it a Go program serving net/http/pprof?)")]
    NoMemStats,
    /// A MemStats field is missing.
    #[error("runtime.MemStats lacks {0}")]
    MissingField(&'static str),
    /// The goroutine page does not start with a total.
    #[error("the app's goroutine?debug=1 does not start with 'goroutine profile: total N'")]
    NoGoroutineTotal,
}

/// Parses the `# runtime.MemStats` block of `heap?debug=1`.
pub fn parse_memstats(text: &str) -> Result<MemStats, RuntimeError> {
    let block = text.split_once("# runtime.MemStats").ok_or(RuntimeError::NoMemStats)?.1;
    let field = |name: &'static str| {
        block
            .lines()
            .find_map(|l| l.strip_prefix("# ").and_then(|l| l.strip_prefix(name)).and_then(|l| l.strip_prefix(" = ")))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .ok_or(RuntimeError::MissingField(name))
    };
    Ok(MemStats {
        heap_alloc: field("HeapAlloc")?,
        heap_sys: field("HeapSys")?,
        sys: field("Sys")?,
        num_gc: field("NumGC")?,
    })
}

/// Parses the first line of `goroutine?debug=1`.
pub fn parse_goroutines(text: &str) -> Result<u64, RuntimeError> {
    text.lines()
        .next()
        .and_then(|l| l.strip_prefix("goroutine profile: total "))
        .and_then(|n| n.trim().parse().ok())
        .ok_or(RuntimeError::NoGoroutineTotal)
}

/// The previous sample's GC count and time, for rates.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Previous {
    /// `NumGC` then.
    pub num_gc: u64,
    /// Seconds since the epoch then (fractional).
    pub at: f64,
}

/// Builds the sample from parsed metrics: GC per second from the previous sample's count,
/// memory percent from `Sys` and the memory limit.
pub fn sample(
    mem: MemStats,
    goroutines: u64,
    at: f64,
    previous: Option<Previous>,
    memory_limit: Option<u64>,
    sampled_at: String,
) -> RuntimeSample {
    let gc_per_second =
        previous.filter(|p| at > p.at && mem.num_gc >= p.num_gc).map(|p| (mem.num_gc - p.num_gc) as f64 / (at - p.at));
    let memory_percent = memory_limit.filter(|l| *l > 0).map(|l| mem.sys as f64 * 100.0 / l as f64);
    RuntimeSample {
        sampled_at: Some(sampled_at),
        heap_alloc_bytes: Some(mem.heap_alloc),
        heap_sys_bytes: Some(mem.heap_sys),
        sys_bytes: Some(mem.sys),
        num_gc: Some(mem.num_gc),
        goroutines: Some(goroutines),
        gc_per_second,
        memory_percent,
        memory_limit_bytes: memory_limit,
        error: None,
        requests: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEAP: &str = "heap profile: 1: 2 [3: 4] @ heap/1048576\n1: 2 [3: 4] @ 0x1\n\n# runtime.MemStats\n# Alloc = 307952\n# TotalAlloc = 307952\n# Sys = 14398728\n# Lookups = 0\n# Mallocs = 1000\n# HeapAlloc = 307952\n# HeapSys = 3866624\n# HeapIdle = 1\n# NumGC = 75\n# NumForcedGC = 0\n";

    #[test]
    fn parses_memstats() {
        let m = parse_memstats(HEAP).unwrap();
        assert_eq!(m, MemStats { heap_alloc: 307_952, heap_sys: 3_866_624, sys: 14_398_728, num_gc: 75 });
        assert_eq!(parse_memstats("no stats here"), Err(RuntimeError::NoMemStats));
        assert_eq!(parse_memstats("# runtime.MemStats\n# Sys = 1\n"), Err(RuntimeError::MissingField("HeapAlloc")));
    }

    #[test]
    fn parses_goroutines() {
        assert_eq!(parse_goroutines("goroutine profile: total 12\n1 @ 0x1\n"), Ok(12));
        assert_eq!(parse_goroutines("<html>"), Err(RuntimeError::NoGoroutineTotal));
    }

    #[test]
    fn rates_and_percentages() {
        let mem = MemStats { heap_alloc: 1, heap_sys: 2, sys: 512, num_gc: 30 };
        let s = sample(mem, 9, 20.0, Some(Previous { num_gc: 10, at: 10.0 }), Some(1024), "t".into());
        assert_eq!(s.gc_per_second, Some(2.0));
        assert_eq!(s.memory_percent, Some(50.0));
        let first = sample(mem, 9, 20.0, None, None, "t".into());
        assert_eq!(
            (first.gc_per_second, first.memory_percent),
            (None, None),
            "no rate without a previous sample, no % without a limit"
        );
    }
}
