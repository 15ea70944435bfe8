//! The ProfileCapture controller: decisions in `decide` (the app's request signals in
//! `signals`), the reconcile loop in `reconcile`.

pub mod decide;
pub mod reconcile;
pub mod signals;

pub use reconcile::{Context, run};
