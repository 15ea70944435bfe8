//! Every way a command fails, each worded as the one line the user reads after `error: `.

use std::path::PathBuf;

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The capture argument is not `pcap/NAME`, `profilecapture/NAME` or `NAME`.
    #[error("{given:?} is not a ProfileCapture: write pcap/NAME, profilecapture/NAME or NAME")]
    BadReference {
        /// What was given.
        given: String,
    },
    /// The API server or the browser has no such capture (or run, or file).
    #[error("{0}")]
    NotFound(String),
    /// The capture exists but has not run.
    #[error("ProfileCapture {namespace}/{name} has no run yet")]
    NoRunYet {
        /// Its namespace.
        namespace: String,
        /// Its name.
        name: String,
    },
    /// It has runs, but none whose files are on the volume.
    #[error("ProfileCapture {namespace}/{name} has no run with files yet (newest: {newest})")]
    NoFilesYet {
        /// Its namespace.
        namespace: String,
        /// Its name.
        name: String,
        /// The newest run and how it stands.
        newest: String,
    },
    /// `--run`/`--base` names a run the capture does not have.
    #[error("ProfileCapture {namespace}/{name} has no run {run:?} (its runs: {known})")]
    NoSuchRun {
        /// Its namespace.
        namespace: String,
        /// Its name.
        name: String,
        /// The run asked for.
        run: String,
        /// The runs it has, newest first.
        known: String,
    },
    /// `diff` without `--base` on a capture with one run (with files) up to `--run`.
    #[error("ProfileCapture {namespace}/{name} has no run before {run} to compare with (pass --base)")]
    NothingBefore {
        /// Its namespace.
        namespace: String,
        /// Its name.
        name: String,
        /// The run that has nothing before it.
        run: String,
    },
    /// The browser runs in token mode and got no token, or one the cluster does not accept.
    #[error(
        "the capture browser wants a bearer token the cluster accepts (it runs in token mode): {0}; pass --token (e.g. $(kubectl create token NAME))"
    )]
    Unauthorized(String),
    /// The caller may not do this (a 403 from the API server or the browser).
    #[error("RBAC denied: {0}")]
    Forbidden(String),
    /// The browser could not reach an agent, or the API server (502).
    #[error("agent unreachable: {0}")]
    AgentUnreachable(String),
    /// The browser failed (500).
    #[error("the capture browser failed: {0}")]
    BrowserFailed(String),
    /// Any other answer from the browser.
    #[error("{url}: HTTP {status}: {body}")]
    Unexpected {
        /// What was asked.
        url: String,
        /// The status.
        status: u16,
        /// The start of the body.
        body: String,
    },
    /// Nothing answered at the browser's address.
    #[error("cannot reach the capture browser at {url}: {reason}")]
    BrowserUnreachable {
        /// What was asked.
        url: String,
        /// Why (connection refused, TLS, …).
        reason: String,
    },
    /// `--ui` is not an http(s) URL.
    #[error("--ui {given:?}: {reason}")]
    BadUrl {
        /// What was given.
        given: String,
        /// Why it cannot be used.
        reason: String,
    },
    /// The browser's answer is not the JSON this plugin reads.
    #[error("{url}: not the answer this plugin reads (is the operator a different version?): {source}")]
    Decode {
        /// What was asked.
        url: String,
        /// The parse error.
        source: serde_json::Error,
    },
    /// No kubeconfig, or an unusable one.
    #[error("kubeconfig: {0}")]
    Kubeconfig(String),
    /// A Kubernetes API request failed for a reason other than 403/404.
    #[error("{action}: {source}")]
    Kube {
        /// What was being done.
        action: String,
        /// The client's error.
        source: kube::Error,
    },
    /// The API server answered the port-forward upgrade with 404/405 (or did not upgrade).
    #[error("the API server does not support port-forward; pass --ui URL")]
    PortForwardUnsupported,
    /// No Deployment by the operator's name.
    #[error(
        "no operator Deployment {namespace}/{name} (pass --operator-namespace and --operator-deployment, or --ui URL)"
    )]
    NoOperator {
        /// Where it was looked for.
        namespace: String,
        /// Its name.
        name: String,
    },
    /// The Deployment has no pod to forward to.
    #[error("no running and ready pod of the operator Deployment {namespace}/{name}")]
    NoOperatorPod {
        /// Its namespace.
        namespace: String,
        /// Its name.
        name: String,
    },
    /// The port-forward broke after it was set up.
    #[error("port-forward to {pod}: {reason}")]
    PortForward {
        /// The operator's pod.
        pod: String,
        /// Why.
        reason: String,
    },
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A pod or file name from the listing that is not one plain path component.
    #[error("refusing to write {pod:?}/{file:?}: not a plain file name")]
    UnsafeName {
        /// The pod, as listed.
        pod: String,
        /// The file, as listed.
        file: String,
    },
    /// A download that is not the file the listing describes.
    #[error("{}: the download's SHA-256 is {actual}, the listing says {expected}; not written", path.display())]
    ChecksumMismatch {
        /// Where it would have gone.
        path: PathBuf,
        /// The listing's.
        expected: String,
        /// The download's.
        actual: String,
    },
    /// A different file is already where a download would go.
    #[error("{} exists and differs from the run's file; not overwritten (pass --force)", path.display())]
    Exists {
        /// The file.
        path: PathBuf,
    },
    /// Some of a run's files were not written; each was reported on its own line.
    #[error("{failed} of {total} files not written")]
    FetchIncomplete {
        /// How many failed.
        failed: usize,
        /// Of how many.
        total: usize,
    },
    /// The run asked for ended in failure.
    #[error("run {run} of {namespace}/{name} {result}")]
    RunFailed {
        /// Its namespace.
        namespace: String,
        /// Its name.
        name: String,
        /// The run.
        run: String,
        /// How it ended, with the pods' errors.
        result: String,
    },
    /// The operator acted on the request but started no run.
    #[error(
        "the operator handled capture-now={value} but started no run of {namespace}/{name} (no eligible pods: see kubectl describe pcap {name} -n {namespace})"
    )]
    RunSkipped {
        /// Its namespace.
        namespace: String,
        /// Its name.
        name: String,
        /// The annotation value.
        value: String,
    },
    /// `--wait` gave up.
    #[error("timed out after {timeout} waiting for {what} of {namespace}/{name} (is the operator running?)")]
    Timeout {
        /// Its namespace.
        namespace: String,
        /// Its name.
        name: String,
        /// What was awaited.
        what: String,
        /// How long.
        timeout: String,
    },
}

impl Error {
    /// A failed Kubernetes API request, with 403 and 404 made into their own lines.
    pub fn kube(action: impl Into<String>, source: kube::Error, not_found: impl FnOnce() -> String) -> Self {
        match &source {
            kube::Error::Api(status) if status.code == 403 => Self::Forbidden(status.message.clone()),
            kube::Error::Api(status) if status.code == 404 => Self::NotFound(not_found()),
            _ => Self::Kube { action: action.into(), source },
        }
    }
}

/// What every fallible step returns.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    fn api(code: u16, message: &str) -> kube::Error {
        kube::Error::Api(kube::core::Status::failure(message, "Reason").with_code(code).boxed())
    }

    #[test]
    fn api_errors_get_their_own_lines() {
        let e = Error::kube(
            "get",
            api(403, "profilecaptures.biometrics.io \"x\" is forbidden: User \"dev\" cannot get"),
            String::new,
        );
        assert_eq!(
            e.to_string(),
            "RBAC denied: profilecaptures.biometrics.io \"x\" is forbidden: User \"dev\" cannot get"
        );
        let e = Error::kube("get", api(404, "not found"), || "no ProfileCapture shop/x".to_owned());
        assert_eq!(e.to_string(), "no ProfileCapture shop/x");
        let e = Error::kube("get ProfileCapture shop/x", api(500, "etcd is sad"), String::new);
        assert!(e.to_string().starts_with("get ProfileCapture shop/x: "), "{e}");
    }
}
