//! The capture files on the profiles volume, listed and read for the operator: only files
//! the agent writes (`<profile>.pb.gz`, `<profile>.svg`, `trace.out`) under
//! `<namespace>/<capture>/<run>/<pod>/`, reached through the volume's link-refusing handles,
//! each with its SHA-256 (computed once per file version and remembered).

use std::{
    collections::HashMap,
    io::Read,
    sync::{Arc, Mutex},
};

use biometrics_crds::profile::ProfileType;
use cap_std::fs::Dir;
use sha2::{Digest, Sha256};

use crate::{
    api::{CaptureFiles, FileEntry, PodFiles, RunFiles},
    names,
    volume::{self, Volume, VolumeError},
};

/// Why a listing or a file cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum FilesError {
    /// A name in the request is invalid (400).
    #[error(transparent)]
    Invalid(#[from] names::NameError),
    /// A file name the agent never writes (400).
    #[error("{0:?} is not a file the agent writes (<profile>.pb.gz, <profile>.svg, trace.out)")]
    NotOurs(String),
    /// Another namespace's files, which a shared volume may hold (403).
    #[error("this agent serves files of namespace {serves:?} only, not {asked:?}")]
    OtherNamespace {
        /// The agent's namespace.
        serves: String,
        /// The namespace asked for.
        asked: String,
    },
    /// Nothing there (404).
    #[error("no {0} on the profiles volume")]
    NotFound(String),
    /// The volume refused (a link, 409) or failed.
    #[error(transparent)]
    Volume(#[from] VolumeError),
}

/// Whether `name` is a file the agent writes into a pod's run directory.
pub fn is_capture_file(name: &str) -> bool {
    ProfileType::ALL
        .iter()
        .any(|p| name == p.file_name() || (p.is_pprof() && name.strip_suffix(".svg") == Some(p.as_str())))
}

/// What identifies one version of a file: a rewrite changes the inode or the times.
type Version = (u64, u64, u64, i64, i64);

fn version(meta: &std::fs::Metadata) -> Version {
    use std::os::unix::fs::MetadataExt;
    (meta.dev(), meta.ino(), meta.size(), meta.mtime(), meta.mtime_nsec())
}

/// SHA-256 of file versions already hashed (or written by this agent, which hashed them
/// while fetching), so a listing or a download hashes a file at most once.
#[derive(Debug, Clone, Default)]
pub struct Hashes(Arc<Mutex<HashMap<Version, String>>>);

/// Versions remembered; past this the memory is cleared (recomputing is only slower).
const MAX_REMEMBERED: usize = 16_384;

impl Hashes {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Version, String>> {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Remembers the hash of the file `file` now is.
    pub fn remember(&self, file: &std::fs::File, sha256: &str) {
        if let Ok(meta) = file.metadata() {
            let mut known = self.lock();
            if known.len() >= MAX_REMEMBERED {
                known.clear();
            }
            known.insert(version(&meta), sha256.to_owned());
        }
    }

    /// The hash of `file` (open, at its start), computed with a small buffer if unknown.
    pub fn of(&self, file: &mut std::fs::File) -> std::io::Result<String> {
        let meta = file.metadata()?;
        if let Some(known) = self.lock().get(&version(&meta)) {
            return Ok(known.clone());
        }
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 64 << 10];
        loop {
            match file.read(&mut buf)? {
                0 => break,
                n => hasher.update(&buf[..n]),
            }
        }
        let sha = crate::fetch::hex(&hasher.finalize());
        self.remember(file, &sha);
        Ok(sha)
    }
}

/// Where the files are and whose they are.
#[derive(Debug, Clone)]
pub struct Files {
    volume: Arc<Volume>,
    namespace: String,
    hashes: Hashes,
}

/// An open capture file and what is known of it.
#[derive(Debug)]
pub struct OpenFile {
    /// The file, at its start.
    pub file: std::fs::File,
    /// Its size.
    pub bytes: u64,
    /// Its SHA-256, hex.
    pub sha256: String,
    /// When it was last written (RFC 3339).
    pub modified: String,
}

fn rfc3339(meta: &std::fs::Metadata) -> String {
    meta.modified()
        .ok()
        .and_then(|t| jiff::Timestamp::try_from(t).ok())
        .and_then(|t| t.round(jiff::Unit::Second).ok())
        .map(|t| t.to_string())
        .unwrap_or_default()
}

impl Files {
    /// The files of the pods of namespace `namespace` on `volume`.
    pub fn new(volume: Arc<Volume>, namespace: String, hashes: Hashes) -> Self {
        Self { volume, namespace, hashes }
    }

    fn check_namespace(&self, namespace: &str) -> Result<(), FilesError> {
        names::dns_label("namespace", namespace)?;
        if namespace != self.namespace {
            return Err(FilesError::OtherNamespace { serves: self.namespace.clone(), asked: namespace.to_owned() });
        }
        Ok(())
    }

    /// Every run, pod and file of a capture, oldest run first. Links and anything else the
    /// agent never writes are left out and named in `skipped`.
    pub fn list(&self, namespace: &str, capture: &str) -> Result<CaptureFiles, FilesError> {
        self.check_namespace(namespace)?;
        names::dns_subdomain("capture", capture)?;
        let shown = volume::join(namespace, capture);
        let dir = self.volume.open_dir(&[namespace, capture])?.ok_or_else(|| FilesError::NotFound(shown.clone()))?;
        let mut listing =
            CaptureFiles { namespace: namespace.to_owned(), capture: capture.to_owned(), ..Default::default() };
        for (run, run_dir) in
            self.subdirs(&dir, &shown, &mut listing.skipped, |n| names::dns_label("run", n).is_ok())?
        {
            let run_shown = volume::join(&shown, &run);
            let mut pods = Vec::new();
            let valid_pod = |n: &str| names::dns_subdomain("pod", n).is_ok();
            for (pod, pod_dir) in self.subdirs(&run_dir, &run_shown, &mut listing.skipped, valid_pod)? {
                let files = self.files(&pod_dir, &volume::join(&run_shown, &pod), &mut listing.skipped)?;
                pods.push(PodFiles { pod, files });
            }
            let modified = run_dir.try_clone().ok().and_then(|d| d.into_std_file().metadata().ok());
            listing.runs.push(RunFiles { run, modified: modified.as_ref().map(rfc3339).unwrap_or_default(), pods });
        }
        listing.runs.sort_by(|a, b| (&a.modified, &a.run).cmp(&(&b.modified, &b.run)));
        Ok(listing)
    }

    /// The directories in `dir` whose names pass `valid`, by name; anything else is skipped.
    fn subdirs(
        &self,
        dir: &Dir,
        shown: &str,
        skipped: &mut Vec<String>,
        valid: impl Fn(&str) -> bool,
    ) -> Result<Vec<(String, Dir)>, FilesError> {
        let mut found = Vec::new();
        for entry in dir.entries().map_err(|e| VolumeError::Io { path: shown.to_owned(), source: e })? {
            let Ok(entry) = entry else { continue };
            let Ok(name) = entry.file_name().into_string() else { continue };
            let path = volume::join(shown, &name);
            if !valid(&name) {
                continue;
            }
            match volume::child_dir(dir, &name, &path) {
                Ok(Some(child)) => found.push((name, child)),
                Ok(None) => {}
                Err(e) => skipped.push(e.to_string()),
            }
        }
        found.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(found)
    }

    fn files(&self, dir: &Dir, shown: &str, skipped: &mut Vec<String>) -> Result<Vec<FileEntry>, FilesError> {
        let mut files = Vec::new();
        for entry in dir.entries().map_err(|e| VolumeError::Io { path: shown.to_owned(), source: e })? {
            let Ok(entry) = entry else { continue };
            let Ok(name) = entry.file_name().into_string() else { continue };
            if !is_capture_file(&name) {
                continue;
            }
            match self.open_in(dir, &name, &volume::join(shown, &name)) {
                Ok(open) => {
                    files.push(FileEntry { name, bytes: open.bytes, sha256: open.sha256, modified: open.modified })
                }
                Err(e) => skipped.push(e.to_string()),
            }
        }
        files.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(files)
    }

    fn open_in(&self, dir: &Dir, name: &str, shown: &str) -> Result<OpenFile, FilesError> {
        let mut file = volume::open_file(dir, name).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => FilesError::NotFound(shown.to_owned()),
            _ if dir.symlink_metadata(name).is_ok_and(|m| m.file_type().is_symlink()) => {
                FilesError::Volume(VolumeError::Symlink { path: shown.to_owned() })
            }
            _ => FilesError::Volume(VolumeError::Io { path: shown.to_owned(), source: e }),
        })?;
        let meta = file.metadata().map_err(|e| VolumeError::Io { path: shown.to_owned(), source: e })?;
        if !meta.is_file() {
            return Err(FilesError::NotOurs(name.to_owned()));
        }
        let sha256 = self.hashes.of(&mut file).map_err(|e| VolumeError::Io { path: shown.to_owned(), source: e })?;
        std::io::Seek::rewind(&mut file).map_err(|e| VolumeError::Io { path: shown.to_owned(), source: e })?;
        Ok(OpenFile { file, bytes: meta.len(), sha256, modified: rfc3339(&meta) })
    }

    /// Opens one capture file for reading.
    pub fn open(
        &self,
        namespace: &str,
        capture: &str,
        run: &str,
        pod: &str,
        file: &str,
    ) -> Result<OpenFile, FilesError> {
        self.check_namespace(namespace)?;
        names::dns_subdomain("capture", capture)?;
        names::dns_label("run", run)?;
        names::dns_subdomain("pod", pod)?;
        if !is_capture_file(file) {
            return Err(FilesError::NotOurs(file.to_owned()));
        }
        let shown = [namespace, capture, run, pod].join("/");
        let dir = self
            .volume
            .open_dir(&[namespace, capture, run, pod])?
            .ok_or_else(|| FilesError::NotFound(shown.clone()))?;
        self.open_in(&dir, file, &volume::join(&shown, file))
    }
}

/// A byte range asked for with `Range`, resolved against the file's size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ranged {
    /// No usable `Range`: the whole file (a multi-range request is answered this way too,
    /// as RFC 9110 allows).
    Whole,
    /// Bytes `start..=end`.
    Part {
        /// First byte.
        start: u64,
        /// Last byte.
        end: u64,
    },
    /// A range that starts past the end (416).
    Unsatisfiable,
}

/// Resolves a `Range` header value (`bytes=a-b`, `bytes=a-`, `bytes=-n`) for a file of `size`.
pub fn resolve_range(header: Option<&str>, size: u64) -> Ranged {
    let Some(spec) = header.and_then(|h| h.trim().strip_prefix("bytes=")) else { return Ranged::Whole };
    if spec.contains(',') {
        return Ranged::Whole;
    }
    let Some((first, last)) = spec.trim().split_once('-') else { return Ranged::Whole };
    let number = |s: &str| -> Option<u64> {
        (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())).then(|| s.parse().ok()).flatten()
    };
    match (first.trim(), last.trim()) {
        ("", suffix) => match number(suffix) {
            Some(0) => Ranged::Unsatisfiable,
            Some(_) if size == 0 => Ranged::Unsatisfiable,
            Some(n) => Ranged::Part { start: size.saturating_sub(n), end: size - 1 },
            None => Ranged::Whole,
        },
        (start, end) => {
            let Some(start) = number(start) else { return Ranged::Whole };
            let end = match end {
                "" => None,
                e => match number(e) {
                    Some(e) if e >= start => Some(e),
                    _ => return Ranged::Whole,
                },
            };
            if start >= size {
                return Ranged::Unsatisfiable;
            }
            Ranged::Part { start, end: end.unwrap_or(size - 1).min(size - 1) }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_files_the_agent_writes() {
        for ok in ["cpu.pb.gz", "heap.pb.gz", "cpu.svg", "goroutine.svg", "trace.out"] {
            assert!(is_capture_file(ok), "{ok}");
        }
        for bad in ["trace.svg", ".cpu.pb.gz.1234.tmp", "cpu.pb", "../cpu.pb.gz", "x.svg", "", "secret.txt"] {
            assert!(!is_capture_file(bad), "{bad}");
        }
    }

    #[test]
    fn ranges_as_rfc_9110_reads_them() {
        let r = |h: &str| resolve_range(Some(h), 1000);
        assert_eq!(resolve_range(None, 1000), Ranged::Whole);
        assert_eq!(r("bytes=0-99"), Ranged::Part { start: 0, end: 99 });
        assert_eq!(r("bytes=900-"), Ranged::Part { start: 900, end: 999 });
        assert_eq!(r("bytes=-100"), Ranged::Part { start: 900, end: 999 });
        assert_eq!(r("bytes=-5000"), Ranged::Part { start: 0, end: 999 });
        assert_eq!(r("bytes=990-5000"), Ranged::Part { start: 990, end: 999 }, "the end is clipped");
        assert_eq!(r("bytes=1000-"), Ranged::Unsatisfiable);
        assert_eq!(r("bytes=-0"), Ranged::Unsatisfiable);
        assert_eq!(r("bytes=5-1"), Ranged::Whole, "invalid: ignored");
        assert_eq!(r("bytes=0-1,5-6"), Ranged::Whole, "several ranges: the whole file");
        assert_eq!(r("items=0-1"), Ranged::Whole);
        assert_eq!(r("bytes=a-b"), Ranged::Whole);
        assert_eq!(resolve_range(Some("bytes=0-"), 0), Ranged::Unsatisfiable);
    }
}
