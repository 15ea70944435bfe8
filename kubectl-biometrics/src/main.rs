//! `kubectl biometrics`, the binary kubectl runs as the plugin `biometrics` (see the
//! library's documentation for what it does).
//!
//! Exit codes: 0 done, 1 an error (one line, `error: …`, on stderr), 2 a usage error.

use std::process::ExitCode;

use clap::Parser;
use kubectl_biometrics::{cli, commands};

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    // kube's TLS and ours (`--ui https://…`) use rustls with ring, as the operator does.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(commands::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", commands::one_line(&e.to_string()));
            ExitCode::from(1)
        }
    }
}
