//! The ProfileCapture controller: decisions in `decide`, the reconcile loop in `reconcile`.

pub mod decide;
pub mod plan;
pub mod reconcile;
pub mod thresholds;

pub use reconcile::{Context, run};
