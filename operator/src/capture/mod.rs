//! The ProfileCapture controller: decisions in `decide`, the reconcile loop in `reconcile`.

pub mod decide;
pub mod reconcile;

pub use reconcile::{Context, run};
