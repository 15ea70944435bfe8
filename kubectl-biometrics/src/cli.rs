//! The command line, as kubectl users expect it: `-n`/`--namespace`, `--kubeconfig` and
//! `--context` on every command, the capture as `pcap/NAME`.

use std::path::PathBuf;

use biometrics_crds::{duration::Duration, profile::ProfileType};
use clap::{Args, Parser, Subcommand};

/// A ProfileCapture's runs, top functions, files and comparisons, read from the capture
/// browser that the Biometrics operator serves — through a port-forward to the operator's
/// pod opened with your kubeconfig, or at `--ui URL`.
#[derive(Debug, Parser)]
#[command(name = "kubectl-biometrics", bin_name = "kubectl biometrics", version)]
pub struct Cli {
    /// Where and how to reach the cluster and the browser.
    #[command(flatten)]
    pub global: Global,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Options every command takes.
#[derive(Debug, Args)]
#[command(next_help_heading = "Cluster and browser")]
pub struct Global {
    /// The capture's namespace (default: the kubeconfig context's, else `default`).
    #[arg(short = 'n', long, global = true, value_name = "NS")]
    pub namespace: Option<String>,

    /// The kubeconfig file (default: as kubectl: $KUBECONFIG, ~/.kube/config).
    #[arg(long, global = true, value_name = "PATH")]
    pub kubeconfig: Option<PathBuf>,

    /// The kubeconfig context to use.
    #[arg(long, global = true, value_name = "NAME")]
    pub context: Option<String>,

    /// The capture browser's address, when it is reachable directly (no port-forward).
    #[arg(long, global = true, value_name = "URL", env = "BIOMETRICS_UI")]
    pub ui: Option<String>,

    /// A bearer token for a browser in token mode (the operator's --ui-auth token), sent with
    /// every request: `kubectl create token`, or any token the cluster accepts.
    #[arg(long, global = true, value_name = "TOKEN", env = "BIOMETRICS_UI_TOKEN", hide_env_values = true)]
    pub token: Option<String>,

    /// The operator's namespace, for the port-forward.
    #[arg(long, global = true, value_name = "NS", default_value = "biometrics-system")]
    pub operator_namespace: String,

    /// The operator's Deployment (the Helm release's full name), for the port-forward.
    #[arg(long, global = true, value_name = "NAME", default_value = "biometrics")]
    pub operator_deployment: String,

    /// The browser's port in the operator's pod (its --ui-addr).
    #[arg(long, global = true, value_name = "PORT", default_value_t = 9478)]
    pub ui_port: u16,

    /// How long one request to the browser may take.
    #[arg(long, global = true, value_name = "DURATION", default_value = "5m")]
    pub request_timeout: Duration,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// A capture's runs, newest first.
    Runs {
        /// The capture: pcap/NAME, profilecapture/NAME or NAME.
        capture: String,
    },
    /// A run's top functions, as `go tool pprof -top` prints them (every pod's profile
    /// merged, or one pod's).
    Top {
        /// The capture: pcap/NAME, profilecapture/NAME or NAME.
        capture: String,
        /// What the report shows.
        #[command(flatten)]
        report: Report,
        /// The run (default: the newest with files).
        #[arg(long, value_name = "RUN")]
        run: Option<String>,
    },
    /// Writes every file of a run to DIR/<pod>/<file>, each checked against its SHA-256.
    Fetch {
        /// The capture: pcap/NAME, profilecapture/NAME or NAME.
        capture: String,
        /// The run (default: the newest with files).
        #[arg(long, value_name = "RUN")]
        run: Option<String>,
        /// Where to write.
        #[arg(short = 'o', long = "output", value_name = "DIR")]
        output: PathBuf,
        /// Replace files that exist and differ.
        #[arg(long)]
        force: bool,
    },
    /// Two runs compared function by function: the changes `go tool pprof -top -base`
    /// shows, per second of capture, and both sides.
    Diff {
        /// The capture: pcap/NAME, profilecapture/NAME or NAME.
        capture: String,
        /// What the report shows.
        #[command(flatten)]
        report: Report,
        /// The base run (default: the newest with files before --run).
        #[arg(long, value_name = "RUN")]
        base: Option<String>,
        /// The run compared (default: the newest with files).
        #[arg(long, value_name = "RUN")]
        run: Option<String>,
    },
    /// Starts a run now (annotation biometrics.io/capture-now); with --wait, waits for it
    /// and prints its top functions.
    Capture {
        /// The capture: pcap/NAME, profilecapture/NAME or NAME.
        capture: String,
        /// Wait for the run to finish and print its top functions.
        #[arg(long)]
        wait: bool,
        /// How long to wait.
        #[arg(long, value_name = "DURATION", default_value = "10m")]
        timeout: Duration,
        /// Print only this profile's top functions (default: every profile's).
        #[arg(long, value_name = "TYPE")]
        profile: Option<ProfileType>,
    },
    /// Prints the browser's address (of a capture's page, if given), keeping the
    /// port-forward open until interrupted.
    Open {
        /// The capture: pcap/NAME, profilecapture/NAME or NAME.
        capture: Option<String>,
        /// The local port to forward from (default: any free one).
        #[arg(long, value_name = "PORT", default_value_t = 0)]
        port: u16,
        /// Also open it in the desktop's browser (xdg-open, or open on macOS).
        #[arg(long)]
        browser: bool,
    },
}

/// What a `top` or `diff` report shows.
#[derive(Debug, Args)]
pub struct Report {
    /// The profile type.
    #[arg(long, value_name = "TYPE", default_value = "cpu")]
    pub profile: ProfileType,
    /// One pod's profile rather than every pod's merged.
    #[arg(long, value_name = "POD")]
    pub pod: Option<String>,
    /// At most this many functions (0: the browser's default).
    #[arg(long, value_name = "N", default_value_t = 20)]
    pub nodecount: u32,
    /// The unit of the values, as pprof's -unit: minimum (pprof's default), ns, ms, s, B,
    /// kB, MB, …
    #[arg(long, value_name = "UNIT", default_value = "minimum")]
    pub unit: String,
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn namespace_anywhere_and_defaults() {
        let cli =
            Cli::try_parse_from(["kubectl-biometrics", "top", "pcap/checkout", "-n", "shop", "--run", "r2"]).unwrap();
        assert_eq!(cli.global.namespace.as_deref(), Some("shop"));
        let Command::Top { report, run, .. } = cli.command else { panic!("top") };
        assert_eq!((report.profile, report.nodecount, report.unit.as_str()), (ProfileType::Cpu, 20, "minimum"));
        assert_eq!(run.as_deref(), Some("r2"));
        let cli = Cli::try_parse_from(["kubectl-biometrics", "--namespace=shop", "runs", "checkout"]).unwrap();
        assert_eq!(cli.global.namespace.as_deref(), Some("shop"));
        assert_eq!(cli.global.operator_namespace, "biometrics-system");
        assert_eq!(cli.global.request_timeout.as_std(), std::time::Duration::from_secs(300));
        assert!(Cli::try_parse_from(["kubectl-biometrics", "top", "x", "--profile", "bogus"]).is_err());
        assert!(Cli::try_parse_from(["kubectl-biometrics", "fetch", "x"]).is_err(), "-o is required");
    }
}
