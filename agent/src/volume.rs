//! The profiles volume, reached only through directory handles.
//!
//! Whoever can write the volume (the app container that mounts it, another pod on a
//! ReadWriteMany claim) can plant a symbolic link, or swap a directory for one, at any
//! moment. So no path below the root is ever resolved by name after it was checked: each
//! directory is opened one component at a time, relative to its parent's handle and without
//! following links, and files are created, renamed and removed relative to a handle that was
//! opened that way. A link found anywhere is refused and reported, never followed; cap-std's
//! `Dir` keeps even a mistake in this module from leaving the root.

use std::{io, path::Path};

use cap_fs_ext::{DirExt, FollowSymlinks, OpenOptionsFollowExt};
use cap_std::fs::{Dir, OpenOptions, OpenOptionsExt};

/// How deep a tree below the directory being removed may go: the layout is
/// `<run>/<pod>/<file>`, so anything deeper was not written by an agent.
const MAX_REMOVE_DEPTH: usize = 4;

/// Why something on the volume was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    /// A symbolic link where a directory or file of ours should be.
    #[error("{path} is a symbolic link; the agent never follows links on the profiles volume")]
    Symlink {
        /// The link, relative to the volume's root.
        path: String,
    },
    /// Something other than a directory where one should be.
    #[error("{path} is not a directory")]
    NotADirectory {
        /// The entry, relative to the volume's root.
        path: String,
    },
    /// A tree nested deeper than the agent ever writes.
    #[error("{path} is nested deeper than the agent writes; not removed")]
    TooDeep {
        /// The directory, relative to the volume's root.
        path: String,
    },
    /// The operating system refused.
    #[error("{path}: {source}")]
    Io {
        /// The entry, relative to the volume's root.
        path: String,
        /// Why.
        #[source]
        source: io::Error,
    },
}

impl VolumeError {
    fn io(path: &str, source: io::Error) -> Self {
        Self::Io { path: path.to_owned(), source }
    }
}

/// `parent/name` as shown in messages (relative to the root).
pub fn join(parent: &str, name: &str) -> String {
    if parent.is_empty() { name.to_owned() } else { format!("{parent}/{name}") }
}

/// The root of the profiles volume.
#[derive(Debug)]
pub struct Volume {
    root: Dir,
}

impl Volume {
    /// Opens (creating it if needed) the volume's root. The root itself is configuration and
    /// may be reached through links; nothing below it is.
    pub fn open(root: &Path) -> io::Result<Self> {
        std::fs::create_dir_all(root)?;
        Ok(Self { root: Dir::open_ambient_dir(root, cap_std::ambient_authority())? })
    }

    /// Opens `root/c1/c2/…`; `None` when a component does not exist.
    pub fn open_dir(&self, components: &[&str]) -> Result<Option<Dir>, VolumeError> {
        let mut dir = self.root.try_clone().map_err(|e| VolumeError::io(".", e))?;
        let mut shown = String::new();
        for name in components {
            shown = join(&shown, name);
            match child_dir(&dir, name, &shown)? {
                Some(child) => dir = child,
                None => return Ok(None),
            }
        }
        Ok(Some(dir))
    }

    /// Opens `root/c1/c2/…`, creating what is missing; a handle for each component, in order.
    pub fn create_dirs(&self, components: &[&str]) -> Result<Vec<Dir>, VolumeError> {
        let mut handles: Vec<Dir> = Vec::with_capacity(components.len());
        let mut shown = String::new();
        for name in components {
            shown = join(&shown, name);
            let parent = handles.last().unwrap_or(&self.root);
            let child = match child_dir(parent, name, &shown)? {
                Some(child) => child,
                None => {
                    match parent.create_dir(name) {
                        Ok(()) => {}
                        // Another agent on a shared volume made it first.
                        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                        Err(e) => return Err(VolumeError::io(&shown, e)),
                    }
                    child_dir(parent, name, &shown)?.ok_or_else(|| {
                        VolumeError::io(&shown, io::Error::new(io::ErrorKind::NotFound, "removed while being created"))
                    })?
                }
            };
            handles.push(child);
        }
        Ok(handles)
    }

    /// Whether `root/c1/c2/…` is still the directory `handle` refers to: a directory swapped
    /// or moved away since it was opened shows here.
    pub fn still_at(&self, components: &[&str], handle: &Dir) -> bool {
        let (Ok(Some(now)), Some(then)) = (self.open_dir(components), identity(handle)) else { return false };
        identity(&now) == Some(then)
    }
}

/// Device and inode: what a directory is, whatever its name.
fn identity(dir: &Dir) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let meta = dir.try_clone().ok()?.into_std_file().metadata().ok()?;
    Some((meta.dev(), meta.ino()))
}

/// Opens the directory `name` in `parent` without following a link; `None` when absent.
pub fn child_dir(parent: &Dir, name: &str, shown: &str) -> Result<Option<Dir>, VolumeError> {
    match parent.open_dir_nofollow(name) {
        Ok(dir) => Ok(Some(dir)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(explain(parent, name, shown, e)),
    }
}

/// Turns a failed open into the reason a person needs: a link, not a directory, or the error.
fn explain(parent: &Dir, name: &str, shown: &str, error: io::Error) -> VolumeError {
    match parent.symlink_metadata(name) {
        Ok(meta) if meta.file_type().is_symlink() => VolumeError::Symlink { path: shown.to_owned() },
        Ok(meta) if !meta.is_dir() => VolumeError::NotADirectory { path: shown.to_owned() },
        _ => VolumeError::io(shown, error),
    }
}

/// Creates the file `name` in `dir` (which must not exist; a link there is refused).
pub fn create_file(dir: &Dir, name: &str) -> io::Result<std::fs::File> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true).follow(FollowSymlinks::No).mode(0o640);
    dir.open_with(name, &options).map(cap_std::fs::File::into_std)
}

/// Opens the file `name` in `dir` for reading, refusing a link.
pub fn open_file(dir: &Dir, name: &str) -> io::Result<std::fs::File> {
    let mut options = OpenOptions::new();
    options.read(true).follow(FollowSymlinks::No);
    dir.open_with(name, &options).map(cap_std::fs::File::into_std)
}

/// Makes renames and creations in `dir` durable.
pub fn sync(dir: &Dir) {
    if let Ok(d) = dir.try_clone() {
        let _ = d.into_std_file().sync_all();
    }
}

/// Removes the directory `name` in `parent` with everything in it; `false` when it did not
/// exist. Nothing is removed when a link is found anywhere in the tree (the error names it)
/// and no link is ever followed, even one planted while the removal runs.
///
/// Another agent on a shared volume may be removing the same tree at the same time: what
/// it removed first is taken as removed.
pub fn remove_tree(parent: &Dir, name: &str, shown: &str) -> Result<bool, VolumeError> {
    let Some(dir) = child_dir(parent, name, shown)? else { return Ok(false) };
    refuse_links(&dir, shown, 1)?;
    remove_contents(&dir, shown, 1)?;
    gone_already(parent.remove_dir(name)).map_err(|e| VolumeError::io(shown, e))?;
    Ok(true)
}

/// A removal that found nothing to remove (someone else removed it first) succeeded.
fn gone_already(result: io::Result<()>) -> io::Result<()> {
    match result {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// Fails on the first link (or over-deep nesting) below `dir`.
pub fn refuse_links(dir: &Dir, shown: &str, depth: usize) -> Result<(), VolumeError> {
    if depth > MAX_REMOVE_DEPTH {
        return Err(VolumeError::TooDeep { path: shown.to_owned() });
    }
    for entry in dir.entries().map_err(|e| VolumeError::io(shown, e))? {
        let entry = entry.map_err(|e| VolumeError::io(shown, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = join(shown, &name);
        let kind = entry.file_type().map_err(|e| VolumeError::io(&path, e))?;
        if kind.is_symlink() {
            return Err(VolumeError::Symlink { path });
        }
        // A directory removed meanwhile (by another agent's removal) holds no link.
        if kind.is_dir()
            && let Some(child) = child_dir(dir, &name, &path)?
        {
            refuse_links(&child, &path, depth + 1)?;
        }
    }
    Ok(())
}

fn remove_contents(dir: &Dir, shown: &str, depth: usize) -> Result<(), VolumeError> {
    if depth > MAX_REMOVE_DEPTH {
        return Err(VolumeError::TooDeep { path: shown.to_owned() });
    }
    for entry in dir.entries().map_err(|e| VolumeError::io(shown, e))? {
        let entry = entry.map_err(|e| VolumeError::io(shown, e))?;
        let name = entry.file_name();
        let path = join(shown, &name.to_string_lossy());
        let kind = entry.file_type().map_err(|e| VolumeError::io(&path, e))?;
        if kind.is_symlink() {
            return Err(VolumeError::Symlink { path });
        }
        if kind.is_dir() {
            let child = match dir.open_dir_nofollow(&name) {
                Ok(child) => child,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(explain(dir, &name.to_string_lossy(), &path, e)),
            };
            remove_contents(&child, &path, depth + 1)?;
            gone_already(dir.remove_dir(&name)).map_err(|e| VolumeError::io(&path, e))?;
        } else {
            // unlinkat: removes the entry itself, never what it might point to.
            gone_already(dir.remove_file(&name)).map_err(|e| VolumeError::io(&path, e))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;

    fn volume() -> (tempfile::TempDir, Volume) {
        let dir = tempfile::tempdir().unwrap();
        let volume = Volume::open(&dir.path().join("profiles")).unwrap();
        (dir, volume)
    }

    #[test]
    fn links_are_refused_at_every_level() {
        let (dir, volume) = volume();
        let outside = dir.path().join("outside");
        std::fs::create_dir_all(outside.join("b/c")).unwrap();
        symlink(&outside, dir.path().join("profiles/a")).unwrap();
        let refused = volume.create_dirs(&["a", "b", "c"]).unwrap_err();
        assert!(matches!(&refused, VolumeError::Symlink { path } if path == "a"), "{refused}");
        assert!(volume.open_dir(&["a", "b"]).is_err());
        // A relative link that stays inside the volume is refused just the same.
        std::fs::create_dir_all(dir.path().join("profiles/x/y")).unwrap();
        symlink("x", dir.path().join("profiles/z")).unwrap();
        assert!(matches!(volume.open_dir(&["z", "y"]), Err(VolumeError::Symlink { .. })));
        std::fs::write(dir.path().join("profiles/f"), "").unwrap();
        assert!(matches!(volume.open_dir(&["f"]), Err(VolumeError::NotADirectory { .. })));
        assert!(volume.open_dir(&["missing", "y"]).unwrap().is_none());
    }

    #[test]
    fn removal_refuses_a_tree_with_a_link_and_removes_nothing() {
        let (dir, volume) = volume();
        let outside = dir.path().join("outside");
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(outside.join("keep"), "x").unwrap();
        let root = dir.path().join("profiles");
        std::fs::create_dir_all(root.join("run/pod")).unwrap();
        std::fs::write(root.join("run/pod/cpu.pb.gz"), "x").unwrap();
        symlink(&outside, root.join("run/pod/evil")).unwrap();
        let run = volume.open_dir(&["run"]).unwrap().unwrap();
        let refused = remove_tree(&run, "pod", "run/pod").unwrap_err();
        assert!(matches!(&refused, VolumeError::Symlink { path } if path == "run/pod/evil"), "{refused}");
        assert!(root.join("run/pod/cpu.pb.gz").exists(), "nothing removed");
        assert!(outside.join("keep").exists());
        std::fs::remove_file(root.join("run/pod/evil")).unwrap();
        assert!(remove_tree(&run, "pod", "run/pod").unwrap());
        assert!(!root.join("run/pod").exists());
        assert!(!remove_tree(&run, "pod", "run/pod").unwrap(), "already gone");
    }

    #[test]
    fn a_swapped_directory_is_noticed() {
        let (dir, volume) = volume();
        let handles = volume.create_dirs(&["ns", "cap"]).unwrap();
        assert!(volume.still_at(&["ns", "cap"], &handles[1]));
        let root = dir.path().join("profiles");
        std::fs::rename(root.join("ns/cap"), root.join("ns/cap.orig")).unwrap();
        std::fs::create_dir(root.join("ns/cap")).unwrap();
        assert!(!volume.still_at(&["ns", "cap"], &handles[1]));
        // Writes through the old handle land in the moved directory, inside the volume.
        drop(create_file(&handles[1], "f").unwrap());
        assert!(root.join("ns/cap.orig/f").exists());
    }

    #[test]
    fn deep_trees_are_not_walked_without_end() {
        let (dir, volume) = volume();
        let root = dir.path().join("profiles");
        std::fs::create_dir_all(root.join("run/a/b/c/d/e/f")).unwrap();
        let top = volume.open_dir(&[]).unwrap().unwrap();
        assert!(matches!(remove_tree(&top, "run", "run"), Err(VolumeError::TooDeep { .. })));
        assert!(root.join("run/a/b/c/d/e/f").exists());
    }
}
