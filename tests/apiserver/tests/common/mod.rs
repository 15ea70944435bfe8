//! kubectl as the tests run it: against one server's kubeconfig, with its own cache.

#![allow(dead_code)]

use std::{
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
};

/// The kubectl `make setup` installs, or `$KUBECTL`.
pub fn kubectl_binary() -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    std::env::var_os("KUBECTL").map_or_else(|| root.join(".tools/bin/kubectl"), PathBuf::from)
}

/// The local port `kubectl port-forward` reports in its first line ("Forwarding from
/// 127.0.0.1:PORT -> …"), read from its `output`, which the caller keeps open (kubectl writes
/// a line per connection and would die of a closed pipe).
pub fn forwarded_port(output: &mut impl std::io::BufRead) -> u16 {
    let mut line = String::new();
    output.read_line(&mut line).expect("the Forwarding line");
    line.split("127.0.0.1:")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
}

/// kubectl with the kubeconfig in `dir`.
pub struct Kubectl {
    dir: PathBuf,
}

impl Kubectl {
    /// Uses `dir/kubeconfig` and caches in `dir/cache`.
    pub fn new(dir: &Path) -> Self {
        Self { dir: dir.to_owned() }
    }

    /// kubectl with this kubeconfig, to be given its arguments and run.
    pub fn command(&self) -> Command {
        let mut command = Command::new(kubectl_binary());
        command.env("KUBECONFIG", self.dir.join("kubeconfig")).env("KUBECACHEDIR", self.dir.join("cache"));
        command
    }

    /// Runs kubectl with `stdin` (if any) and returns what it did.
    pub fn run(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let mut child = self
            .command()
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("kubectl runs");
        if let Some(text) = stdin {
            std::io::Write::write_all(&mut child.stdin.take().expect("stdin"), text.as_bytes()).expect("stdin");
        }
        drop(child.stdin.take());
        child.wait_with_output().expect("kubectl finishes")
    }

    /// Runs kubectl and returns stdout, failing the test with stderr if it fails.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args, None);
        assert!(out.status.success(), "kubectl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `kubectl apply -f -` of `manifest`, which must succeed.
    pub fn apply(&self, manifest: &str) {
        let out = self.run(&["apply", "-f", "-"], Some(manifest));
        assert!(out.status.success(), "apply: {}", String::from_utf8_lossy(&out.stderr));
    }
}
