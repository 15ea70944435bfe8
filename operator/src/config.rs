//! Cluster-wide defaults from an optional YAML file shaped after the origin document's
//! `performance:` sections; a custom resource's own values win over them. Unknown keys
//! are an error naming the key.

use serde::Deserialize;

/// The file's root.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// The `performance:` section.
    #[serde(default)]
    pub performance: Performance,
}

/// `performance:`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Performance {
    /// `profiling:`.
    #[serde(default)]
    pub profiling: Profiling,
    /// `metrics:`.
    #[serde(default)]
    pub metrics: MetricsSection,
    /// `alerting:`.
    #[serde(default)]
    pub alerting: Alerting,
    /// `cache:`.
    #[serde(default)]
    pub cache: CacheSection,
}

/// `performance.cache:` — how the CachePolicy controller paces its Redis work (the
/// connection settings themselves are per policy).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub struct CacheSection {
    /// How often each policy's strategy is enforced again, to catch drift.
    #[serde(default = "default_enforce_interval")]
    pub enforce_interval: biometrics_crds::duration::Duration,
}

impl Default for CacheSection {
    fn default() -> Self {
        Self { enforce_interval: default_enforce_interval() }
    }
}

fn default_enforce_interval() -> biometrics_crds::duration::Duration {
    biometrics_crds::duration::Duration::from_secs(300)
}

/// The pods one run profiles when neither the capture nor the configuration says: status
/// lists grow with them, so an unbounded default would outgrow the schema.
pub const DEFAULT_MAX_PODS: u32 = 100;

fn default_max_pods() -> u32 {
    DEFAULT_MAX_PODS
}

/// `performance.profiling:`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub struct Profiling {
    /// Most pods one run profiles when a capture sets no `maxPods` (at most 1000, the
    /// schema's bound of `maxPods`).
    #[serde(default = "default_max_pods")]
    pub max_pods: u32,
    /// How long a reconcile waits for an agent's answer.
    #[serde(default = "default_agent_timeout")]
    pub agent_timeout: biometrics_crds::duration::Duration,
    /// How long a pod's agent may go without answering past its capture's expected end (and
    /// past its last answer) before that pod's part of the run fails.
    #[serde(default = "default_unreachable_grace")]
    pub unreachable_grace: biometrics_crds::duration::Duration,
}

impl Default for Profiling {
    fn default() -> Self {
        Self {
            max_pods: default_max_pods(),
            agent_timeout: default_agent_timeout(),
            unreachable_grace: default_unreachable_grace(),
        }
    }
}

fn default_unreachable_grace() -> biometrics_crds::duration::Duration {
    biometrics_crds::duration::Duration::from_secs(30)
}

fn default_agent_timeout() -> biometrics_crds::duration::Duration {
    biometrics_crds::duration::Duration::from_secs(5)
}

/// `performance.metrics:`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub struct MetricsSection {
    /// How often the pods' runtime metrics are read into status.
    #[serde(default = "default_interval")]
    pub interval: biometrics_crds::duration::Duration,
}

impl Default for MetricsSection {
    fn default() -> Self {
        Self { interval: default_interval() }
    }
}

fn default_interval() -> biometrics_crds::duration::Duration {
    biometrics_crds::duration::Duration::from_secs(30)
}

/// `performance.alerting:` — the origin document's alert thresholds, used where a capture
/// leaves its own at the schema defaults.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub struct Alerting {
    /// Goroutines at Critical level.
    #[serde(default)]
    pub goroutine_threshold: Option<f64>,
    /// GCs per second at Critical level.
    #[serde(default)]
    pub gc_threshold: Option<f64>,
    /// Request latency at Critical level (`2s`, `800ms`), for captures that read their
    /// app's metrics and set no `responseTimeMillis` of their own.
    #[serde(default)]
    pub response_time_threshold: Option<biometrics_crds::duration::Duration>,
    /// Error percentage at Critical level, for captures that read their app's metrics and
    /// set no `errorRatePercent` of their own.
    #[serde(default)]
    pub error_rate_threshold: Option<f64>,
}

/// Why a configuration file is not what the operator reads: the YAML parser's message,
/// which names an unknown key or a value that does not parse.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ParseError(Box<serde_saphyr::Error>);

impl ConfigFile {
    /// Reads the YAML text; an unknown key is an error that names it.
    pub fn parse(text: &str) -> Result<Self, ParseError> {
        serde_saphyr::from_str(text).map_err(|e| ParseError(Box::new(e)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_origin_shape() {
        let c = ConfigFile::parse("performance:\n  profiling:\n    max_pods: 5\n    agent_timeout: 3s\n  metrics:\n    interval: 10s\n  alerting:\n    goroutine_threshold: 5000\n  cache:\n    enforce_interval: 1m\n").unwrap();
        assert_eq!(c.performance.profiling.max_pods, 5);
        assert_eq!(ConfigFile::default().performance.profiling.max_pods, DEFAULT_MAX_PODS);
        assert_eq!(c.performance.metrics.interval.as_std().as_secs(), 10);
        assert_eq!(c.performance.alerting.goroutine_threshold, Some(5000.0));
        assert_eq!(c.performance.cache.enforce_interval.as_std().as_secs(), 60);
        assert_eq!(ConfigFile::parse("").unwrap_or_default(), ConfigFile::default());
        assert_eq!(c.performance.profiling.unreachable_grace.as_std().as_secs(), 30, "the default");
        let c = ConfigFile::parse("performance:\n  profiling:\n    unreachable_grace: 2m\n").unwrap();
        assert_eq!(c.performance.profiling.unreachable_grace.as_std().as_secs(), 120);
    }

    #[test]
    fn reads_the_request_alert_keys() {
        let c = ConfigFile::parse(
            "performance:\n  alerting:\n    response_time_threshold: 1500ms\n    error_rate_threshold: 2.5\n",
        )
        .unwrap();
        let alerting = &c.performance.alerting;
        assert_eq!(alerting.response_time_threshold.map(|d| d.as_std().as_millis()), Some(1500));
        assert_eq!(alerting.error_rate_threshold, Some(2.5));
        let err = ConfigFile::parse("performance:\n  alerting:\n    response_time_threshold: slow\n").unwrap_err();
        assert!(err.to_string().contains("slow"), "{err}");
    }

    #[test]
    fn unknown_keys_are_named() {
        let err = ConfigFile::parse("performance:\n  profiling:\n    max_podz: 5\n").unwrap_err().to_string();
        assert!(err.contains("max_podz"), "{err}");
        let err = ConfigFile::parse("performance:\n  metrics:\n    interval: soon\n").unwrap_err().to_string();
        assert!(err.contains("soon"), "{err}");
    }
}
