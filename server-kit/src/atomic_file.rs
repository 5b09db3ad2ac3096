//! Replacing a file atomically: the new content goes to a temporary file in the same folder,
//! which is flushed to disk and renamed over the target, and the folder itself is flushed, so a
//! crash at any point leaves either the old content or the new, never a torn file.
//!
//! Temporary files are named `.<target name>.tmp-<pid>-<n>`; one left behind by a crash is
//! recognisable and [`remove_leftovers`] deletes it at the next start.
//!
//! When the disk refuses a write, [`DiskTrouble`] says why in words a client can be told (a full
//! disk, a read-only folder), so that servers answer with the reason rather than a bare failure.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

const TEMP_MARKER: &str = ".tmp-";

static NEXT_TEMP: AtomicU64 = AtomicU64::new(0);

/// Replaces (or creates) `path` with `contents`, durably: when this returns `Ok`, the new content
/// survives a crash or power loss. Blocking; call it from `spawn_blocking` in async code.
pub fn write_atomically(path: &Path, contents: &[u8]) -> io::Result<()> {
    let folder = folder_of(path);
    let temp = temp_path(path)?;
    let written = write_and_sync(&temp, contents).and_then(|()| fs::rename(&temp, path));
    if let Err(err) = written {
        let _ = fs::remove_file(&temp);
        return Err(err);
    }
    sync_folder(folder)
}

/// Renames `staged` (a file written in full and synced, in the same folder) over `target`, and
/// flushes the folder so that the rename survives a crash. Blocking.
pub fn rename_into_place(staged: &Path, target: &Path) -> io::Result<()> {
    fs::rename(staged, target)?;
    sync_folder(folder_of(target))
}

/// Why the disk refused a write, when it is something an operator fixes (not a bug).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskTrouble {
    /// No space (or no quota) left.
    Full,
    /// The file system is mounted read-only.
    ReadOnly,
    /// The server's user may not write there.
    Denied,
}

impl DiskTrouble {
    /// The trouble behind `err`, if it is one of the above.
    pub fn of(err: &io::Error) -> Option<DiskTrouble> {
        match err.kind() {
            io::ErrorKind::StorageFull
            | io::ErrorKind::QuotaExceeded
            | io::ErrorKind::FileTooLarge => Some(DiskTrouble::Full),
            io::ErrorKind::ReadOnlyFilesystem => Some(DiskTrouble::ReadOnly),
            io::ErrorKind::PermissionDenied => Some(DiskTrouble::Denied),
            _ => None,
        }
    }

    /// What is wrong, as a client is told: `the server's disk is full`.
    pub fn describe(self) -> &'static str {
        match self {
            DiskTrouble::Full => "the server's disk is full",
            DiskTrouble::ReadOnly => "the server's data folder is read-only",
            DiskTrouble::Denied => "the server is not allowed to write to its data folder",
        }
    }
}

/// Deletes the temporary files a crash left in `folder`; returns how many there were.
pub fn remove_leftovers(folder: &Path) -> io::Result<usize> {
    let mut removed = 0;
    for entry in fs::read_dir(folder)? {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.') && name.contains(TEMP_MARKER) && entry.file_type()?.is_file() {
            fs::remove_file(entry.path())?;
            removed += 1;
        }
    }
    Ok(removed)
}

fn folder_of(path: &Path) -> &Path {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    }
}

/// A fresh temporary name beside `path` (`.<name>.tmp-<pid>-<n>`), for a file written in full
/// before it is renamed over `path`; one a crash leaves behind is deleted by
/// [`remove_leftovers`]. Used by [`write_atomically`], and by writers that stream a large body.
pub fn temp_path(path: &Path) -> io::Result<PathBuf> {
    let name = path.file_name().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} does not name a file", path.display()),
        )
    })?;
    let unique = NEXT_TEMP.fetch_add(1, Ordering::Relaxed);
    let temp = format!(
        ".{}{TEMP_MARKER}{}-{unique}",
        name.to_string_lossy(),
        std::process::id()
    );
    Ok(folder_of(path).join(temp))
}

fn write_and_sync(temp: &Path, contents: &[u8]) -> io::Result<()> {
    let mut file = OpenOptions::new().write(true).create_new(true).open(temp)?;
    file.write_all(contents)?;
    file.sync_all()
}

/// Makes the rename itself durable. Only Unix can open a folder to flush it.
fn sync_folder(folder: &Path) -> io::Result<()> {
    if cfg!(unix) {
        File::open(folder)?.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_the_content_and_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("records.json");
        write_atomically(&path, b"first").unwrap();
        write_atomically(&path, b"second, longer").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"second, longer");
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["records.json"]);
    }

    #[test]
    fn a_failed_write_keeps_the_old_content() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("target");
        write_atomically(&path, b"old").unwrap();
        // A folder in the way of the rename makes it fail after the temporary file was written.
        let blocked = dir.path().join("blocked");
        fs::create_dir_all(blocked.join("inner")).unwrap();
        assert!(write_atomically(&blocked, b"new").is_err());
        assert_eq!(fs::read(&path).unwrap(), b"old");
        assert_eq!(
            remove_leftovers(dir.path()).unwrap(),
            0,
            "temp file cleaned up"
        );
    }

    #[test]
    fn leftovers_of_a_crash_are_removed_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(".150.txt.tmp-99-3"), b"torn").unwrap();
        fs::write(dir.path().join("150.txt"), b"whole").unwrap();
        fs::write(dir.path().join(".hidden"), b"kept").unwrap();
        assert_eq!(remove_leftovers(dir.path()).unwrap(), 1);
        assert!(dir.path().join("150.txt").exists());
        assert!(dir.path().join(".hidden").exists());
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn disk_trouble_is_told_from_other_failures() {
        let os = io::Error::from_raw_os_error;
        // ENOSPC, EDQUOT, EROFS, EACCES, then ENOENT which is no disk trouble.
        assert_eq!(DiskTrouble::of(&os(28)), Some(DiskTrouble::Full));
        assert_eq!(DiskTrouble::of(&os(122)), Some(DiskTrouble::Full));
        assert_eq!(DiskTrouble::of(&os(30)), Some(DiskTrouble::ReadOnly));
        assert_eq!(DiskTrouble::of(&os(13)), Some(DiskTrouble::Denied));
        assert_eq!(DiskTrouble::of(&os(2)), None);
        assert_eq!(DiskTrouble::Full.describe(), "the server's disk is full");
    }

    #[test]
    fn rename_into_place_replaces_the_target() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("upload.bin");
        fs::write(&target, b"old").unwrap();
        let staged = temp_path(&target).unwrap();
        fs::write(&staged, b"new").unwrap();
        rename_into_place(&staged, &target).unwrap();
        assert_eq!(fs::read(&target).unwrap(), b"new");
        assert!(!staged.exists());
    }

    #[test]
    fn a_path_without_a_file_name_is_refused() {
        let err = write_atomically(Path::new("/"), b"x").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }
}
