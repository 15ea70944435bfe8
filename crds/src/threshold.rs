//! Threshold levels: how a measured value compares with its warning and critical bounds.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// How bad a measured value is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize, JsonSchema)]
pub enum ThresholdLevel {
    /// Within bounds.
    #[default]
    OK,
    /// Past the warning bound.
    Warning,
    /// Past the critical bound.
    Critical,
}

impl ThresholdLevel {
    /// The worst of several levels; `OK` when there are none.
    pub fn worst(levels: impl IntoIterator<Item = Self>) -> Self {
        levels.into_iter().max().unwrap_or_default()
    }
}

impl std::fmt::Display for ThresholdLevel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::OK => "OK",
            Self::Warning => "Warning",
            Self::Critical => "Critical",
        })
    }
}

/// Bounds for a metric where higher is worse (memory %, goroutines, GC rate): a value above
/// `warning` is Warning, above `critical` is Critical.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, JsonSchema)]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "self.warning < self.critical", "message": "warning must be lower than critical"}
]))]
pub struct UpperBounds {
    /// Values above this are at Warning level.
    #[schemars(range(min = 0))]
    pub warning: f64,
    /// Values above this are at Critical level.
    #[schemars(range(min = 0))]
    pub critical: f64,
}

impl UpperBounds {
    /// The level of `value`.
    pub fn level(&self, value: f64) -> ThresholdLevel {
        if value > self.critical {
            ThresholdLevel::Critical
        } else if value > self.warning {
            ThresholdLevel::Warning
        } else {
            ThresholdLevel::OK
        }
    }
}

/// Bounds for a metric where lower is worse (cache hit ratio): a value below `warning` is
/// Warning, below `critical` is Critical.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, JsonSchema)]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "self.critical < self.warning", "message": "critical must be lower than warning: this metric is worse when it is lower"}
]))]
pub struct LowerBounds {
    /// Values below this are at Warning level.
    #[schemars(range(min = 0))]
    pub warning: f64,
    /// Values below this are at Critical level.
    #[schemars(range(min = 0))]
    pub critical: f64,
}

impl LowerBounds {
    /// The level of `value`.
    pub fn level(&self, value: f64) -> ThresholdLevel {
        if value < self.critical {
            ThresholdLevel::Critical
        } else if value < self.warning {
            ThresholdLevel::Warning
        } else {
            ThresholdLevel::OK
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upper_bounds_are_exclusive() {
        let memory = UpperBounds { warning: 70.0, critical: 90.0 };
        assert_eq!(memory.level(10.0), ThresholdLevel::OK);
        assert_eq!(memory.level(70.0), ThresholdLevel::OK, "the origin's rule is '> 70%'");
        assert_eq!(memory.level(70.5), ThresholdLevel::Warning);
        assert_eq!(memory.level(90.0), ThresholdLevel::Warning);
        assert_eq!(memory.level(95.0), ThresholdLevel::Critical);
    }

    #[test]
    fn lower_bounds_invert() {
        let hit_ratio = LowerBounds { warning: 80.0, critical: 50.0 };
        assert_eq!(hit_ratio.level(99.0), ThresholdLevel::OK);
        assert_eq!(hit_ratio.level(80.0), ThresholdLevel::OK);
        assert_eq!(hit_ratio.level(79.9), ThresholdLevel::Warning);
        assert_eq!(hit_ratio.level(10.0), ThresholdLevel::Critical);
    }

    #[test]
    fn worst_level_wins() {
        use ThresholdLevel::*;
        assert_eq!(ThresholdLevel::worst([OK, Critical, Warning]), Critical);
        assert_eq!(ThresholdLevel::worst([OK, Warning]), Warning);
        assert_eq!(ThresholdLevel::worst([]), OK);
        assert_eq!(serde_json::to_string(&Warning).unwrap(), "\"Warning\"");
    }
}
