//! A real headless Chromium (Debian's `chromium`), as a person's browser: the DOM a page
//! ends up with once its scripts ran, and a screenshot of it.

use std::{path::Path, process::Command, time::Duration};

/// How long a page's scripts and fetches may run before the DOM is taken.
const BUDGET: Duration = Duration::from_secs(15);

fn chromium() -> Command {
    let mut cmd = Command::new("chromium");
    // As root (CI) Chromium needs --no-sandbox; the pages are the project's own.
    cmd.args(["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run"])
        .arg(format!("--virtual-time-budget={}", BUDGET.as_millis()))
        .env("HOME", std::env::temp_dir());
    cmd
}

/// The serialised DOM of `url` after its scripts ran.
pub fn dump_dom(url: &str) -> String {
    let out = chromium().arg("--dump-dom").arg(url).output().expect("chromium runs (make setup installs it)");
    assert!(out.status.success(), "chromium --dump-dom {url}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A PNG screenshot of `url` at `width`×`height`, written to `path`.
pub fn screenshot(url: &str, path: &Path, width: u32, height: u32) {
    let out = chromium()
        .arg(format!("--screenshot={}", path.display()))
        .arg(format!("--window-size={width},{height}"))
        .arg("--hide-scrollbars")
        .arg(url)
        .output()
        .expect("chromium runs (make setup installs it)");
    assert!(
        out.status.success() && path.exists(),
        "chromium --screenshot {url}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
