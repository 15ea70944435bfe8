//! The pprof profile types a capture can ask for, and where each is fetched and stored.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A profile served by Go's `net/http/pprof` (and by Rust apps using pprof-rs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ProfileType {
    /// CPU time, sampled for the capture's duration.
    Cpu,
    /// Live heap objects at the moment of capture.
    Heap,
    /// Every allocation since the program started.
    Allocs,
    /// Stacks of all current goroutines.
    Goroutine,
    /// Where goroutines blocked on synchronisation.
    Block,
    /// Holders of contended mutexes.
    Mutex,
    /// Stacks that created OS threads.
    Threadcreate,
    /// An execution trace for the capture's duration (not a pprof profile).
    Trace,
}

impl ProfileType {
    /// Every profile type, in declaration order.
    pub const ALL: [Self; 8] = [
        Self::Cpu,
        Self::Heap,
        Self::Allocs,
        Self::Goroutine,
        Self::Block,
        Self::Mutex,
        Self::Threadcreate,
        Self::Trace,
    ];

    /// The name used in manifests and file names.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Cpu => "cpu",
            Self::Heap => "heap",
            Self::Allocs => "allocs",
            Self::Goroutine => "goroutine",
            Self::Block => "block",
            Self::Mutex => "mutex",
            Self::Threadcreate => "threadcreate",
            Self::Trace => "trace",
        }
    }

    /// Whether the profile is sampled over a duration (the others are snapshots).
    pub const fn is_timed(self) -> bool {
        matches!(self, Self::Cpu | Self::Trace)
    }

    /// Whether the result is a pprof protobuf that can be summarised.
    pub const fn is_pprof(self) -> bool {
        !matches!(self, Self::Trace)
    }

    /// The path under the target's pprof base path and its query for a capture of
    /// `seconds` (only timed profiles use it).
    pub fn endpoint(self, seconds: u64) -> String {
        match self {
            Self::Cpu => format!("profile?seconds={seconds}"),
            Self::Trace => format!("trace?seconds={seconds}"),
            other => other.as_str().to_owned(),
        }
    }

    /// The file the profile is stored as.
    pub fn file_name(self) -> String {
        match self {
            Self::Trace => "trace.out".to_owned(),
            other => format!("{}.pb.gz", other.as_str()),
        }
    }
}

impl std::fmt::Display for ProfileType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for ProfileType {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL.into_iter().find(|p| p.as_str() == s).ok_or_else(|| {
            let known: Vec<_> = Self::ALL.iter().map(|p| p.as_str()).collect();
            format!("unknown profile type {s:?} (known: {})", known.join(", "))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_follow_net_http_pprof() {
        assert_eq!(ProfileType::Cpu.endpoint(30), "profile?seconds=30");
        assert_eq!(ProfileType::Trace.endpoint(5), "trace?seconds=5");
        assert_eq!(ProfileType::Heap.endpoint(30), "heap");
        assert_eq!(ProfileType::Threadcreate.endpoint(1), "threadcreate");
    }

    #[test]
    fn names_round_trip() {
        for p in ProfileType::ALL {
            assert_eq!(p.as_str().parse::<ProfileType>().unwrap(), p);
            assert_eq!(serde_json::to_value(p).unwrap(), p.as_str());
        }
        assert!("CPU".parse::<ProfileType>().unwrap_err().contains("known: cpu, heap"));
        assert_eq!(ProfileType::Trace.file_name(), "trace.out");
        assert_eq!(ProfileType::Mutex.file_name(), "mutex.pb.gz");
    }
}
