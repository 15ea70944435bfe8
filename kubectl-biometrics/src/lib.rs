//! `kubectl biometrics`: a kubectl plugin (kubectl runs `kubectl-biometrics` from PATH) that
//! reads a ProfileCapture's runs, top functions, files and comparisons from the capture
//! browser's JSON API, reaching it through a port-forward to the operator's pod that it
//! opens with the user's kubeconfig, or at `--ui URL`; and starts a run with
//! `biometrics.io/capture-now`.
//!
//! The binary is `src/main.rs`; the modules are a library so that tests can hold the
//! formatting to pprof's own output.

pub mod browser;
pub mod cli;
pub mod cluster;
pub mod commands;
pub mod error;
pub mod fetch;
pub mod pprof;
pub mod reference;
pub mod select;
pub mod table;
