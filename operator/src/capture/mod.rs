//! The ProfileCapture controller: decisions in `decide` (the app's request signals in
//! `signals`), the reconcile loop in `reconcile`.

pub mod decide;
pub mod plan;
pub mod reconcile;
pub mod rollout;
pub mod signals;
pub mod thresholds;

pub use reconcile::{Context, run};
