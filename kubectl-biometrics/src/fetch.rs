//! `fetch`: every file of a run written to `DIR/<pod>/<file>`, each checked against the
//! SHA-256 the listing gives before it is put in place (downloads go to a hidden file
//! beside their destination and are renamed once they check out, so a bad or interrupted
//! download never leaves a file under the final name).

use std::path::{Path, PathBuf};

use biometrics_ui::api::RunDetail;
use http_body_util::BodyExt;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use crate::{
    browser::{Browser, error_chain},
    error::{Error, Result},
};

/// One file to fetch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Planned {
    /// Where it goes.
    pub path: PathBuf,
    /// Where the browser serves it.
    pub download: String,
    /// Its SHA-256 per the listing (lower-case hex).
    pub sha256: String,
    /// Its size per the listing.
    pub bytes: u64,
}

/// A name usable as one path component: not empty, not `.` or `..`, no separator or NUL.
/// The names come from the profiles volume, which the app's pod can write.
pub fn plain_name(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains(['/', '\\', '\0'])
}

/// Every file of the run under `dir`, and the listed files refused for their names.
pub fn plan(run: &RunDetail, dir: &Path) -> (Vec<Planned>, Vec<Error>) {
    let mut planned = Vec::new();
    let mut refused = Vec::new();
    for pod in &run.pods {
        for file in &pod.files {
            if !plain_name(&pod.pod) || !plain_name(&file.file) || !file.download.starts_with('/') {
                refused.push(Error::UnsafeName { pod: pod.pod.clone(), file: file.file.clone() });
                continue;
            }
            planned.push(Planned {
                path: dir.join(&pod.pod).join(&file.file),
                download: file.download.clone(),
                sha256: file.sha256.to_ascii_lowercase(),
                bytes: file.bytes,
            });
        }
    }
    (planned, refused)
}

fn hex(digest: &[u8]) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// What happened to one file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Downloaded, checked and written.
    Written,
    /// Already there with the listed SHA-256.
    Unchanged,
}

async fn sha256_of(path: &Path) -> Result<Option<String>> {
    match tokio::fs::read(path).await {
        Ok(bytes) => Ok(Some(hex(&Sha256::digest(&bytes)))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(Error::Io { path: path.to_owned(), source }),
    }
}

/// Fetches one planned file (see the module's doc for how it is put in place).
pub async fn fetch(browser: &Browser, file: &Planned, force: bool) -> Result<Outcome> {
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| Error::Io { path, source }
    };
    match sha256_of(&file.path).await? {
        Some(existing) if existing == file.sha256 => return Ok(Outcome::Unchanged),
        Some(_) if !force => return Err(Error::Exists { path: file.path.clone() }),
        _ => {}
    }
    let parent = file.path.parent().unwrap_or(Path::new("."));
    tokio::fs::create_dir_all(parent).await.map_err(io(parent))?;
    let name = file.path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let partial = parent.join(format!(".{name}.partial-{}", std::process::id()));
    let result = download(browser, file, &partial).await;
    match result {
        Ok(()) => tokio::fs::rename(&partial, &file.path).await.map_err(io(&file.path)).map(|()| Outcome::Written),
        Err(e) => {
            let _ = tokio::fs::remove_file(&partial).await;
            Err(e)
        }
    }
}

async fn download(browser: &Browser, file: &Planned, partial: &Path) -> Result<()> {
    let io = |source| Error::Io { path: partial.to_owned(), source };
    let mut body = browser.get(&file.download).await?;
    let mut out = tokio::fs::File::create(partial).await.map_err(io)?;
    let mut hasher = Sha256::new();
    while let Some(frame) = body.frame().await {
        let frame = frame
            .map_err(|e| Error::BrowserUnreachable { url: browser.url(&file.download), reason: error_chain(&e) })?;
        if let Some(data) = frame.data_ref() {
            hasher.update(data);
            out.write_all(data).await.map_err(io)?;
        }
    }
    out.flush().await.map_err(io)?;
    out.sync_all().await.map_err(io)?;
    let actual = hex(&hasher.finalize());
    if actual != file.sha256 {
        return Err(Error::ChecksumMismatch { path: file.path.clone(), expected: file.sha256.clone(), actual });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use biometrics_ui::api::{CaptureRow, PodRun, ProfileFile, RunRow};

    use super::*;

    #[test]
    fn names_that_stay_in_their_directory() {
        for ok in ["cpu.pb.gz", "web-0", "..cpu", "a.b"] {
            assert!(plain_name(ok), "{ok}");
        }
        for bad in ["", ".", "..", "a/b", "../x", "a\\b", "a\0b", "/etc"] {
            assert!(!plain_name(bad), "{bad:?}");
        }
    }

    fn file(name: &str, download: &str) -> ProfileFile {
        ProfileFile {
            profile_type: "cpu".into(),
            file: name.into(),
            bytes: 3,
            sha256: "ABC".into(),
            download: download.into(),
            top: vec![],
        }
    }

    #[test]
    fn every_file_under_its_pod_and_hostile_names_refused() {
        let pod = |name: &str, files| PodRun { pod: name.into(), result: None, error: None, files, runtime: None };
        let run = RunDetail {
            capture: CaptureRow {
                namespace: "shop".into(),
                name: "checkout".into(),
                phase: None,
                selected_pods: None,
                last_run: None,
                last_run_time: None,
                next_run_time: None,
                threshold_level: None,
                profiles: vec![],
            },
            run: RunRow { id: "r1".into(), trigger: None, start_time: None, result: None, pods_with_files: vec![] },
            pods: vec![
                pod("web-0", vec![file("cpu.pb.gz", "/api/v1/x/cpu"), file("../../etc/passwd", "/api/v1/x/p")]),
                pod("..", vec![file("heap.pb.gz", "/api/v1/x/heap")]),
                pod("web-1", vec![file("heap.pb.gz", "http://elsewhere/heap")]),
            ],
            warnings: vec![],
        };
        let (planned, refused) = plan(&run, Path::new("out"));
        assert_eq!(
            planned,
            [Planned {
                path: PathBuf::from("out/web-0/cpu.pb.gz"),
                download: "/api/v1/x/cpu".into(),
                sha256: "abc".into(),
                bytes: 3
            }]
        );
        let refused: Vec<String> = refused.iter().map(ToString::to_string).collect();
        assert_eq!(
            refused,
            [
                "refusing to write \"web-0\"/\"../../etc/passwd\": not a plain file name",
                "refusing to write \"..\"/\"heap.pb.gz\": not a plain file name",
                "refusing to write \"web-1\"/\"heap.pb.gz\": not a plain file name",
            ]
        );
    }
}
