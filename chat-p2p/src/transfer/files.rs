//! Received files, for the transfer's receiver and the peers' sessions: a temporary file
//! written at offsets in batches, hashed back from disk, flushed and renamed to a name that is
//! free, never over an existing file.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use protocol::chat_transfer::Digest;
use sha2::{Digest as _, Sha256};

/// Numbered variants (`STEM (n).EXT`) tried before giving up on a name.
const MAX_VARIANTS: u32 = 9_999;

/// Choosing a free name and renaming to it is one step for every transfer of this process, so
/// two transfers of the same name cannot pick the same free name.
static NAMING: Mutex<()> = Mutex::new(());

/// A file being received, under a temporary name in the destination folder; deleted when
/// dropped unless [`PartFile::persist`] renamed it.
#[derive(Debug)]
pub(crate) struct PartFile {
    temp: PathBuf,
    file: Arc<File>,
    kept: bool,
}

impl PartFile {
    /// Creates the temporary file for `name` in `dir`, `size` bytes long (zero-filled; sparse
    /// where the file system allows). Blocking.
    pub(crate) fn create(dir: &Path, name: &str, size: u64) -> io::Result<PartFile> {
        let temp = server_kit::atomic_file::temp_path(&dir.join(name))?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&temp)?;
        let part = PartFile {
            temp,
            file: Arc::new(file),
            kept: false,
        };
        part.file.set_len(size)?;
        Ok(part)
    }

    /// The open file, for a [`BatchWriter`].
    pub(crate) fn file(&self) -> Arc<File> {
        Arc::clone(&self.file)
    }

    /// SHA-256 of the file's first `size` bytes as they are on disk. Blocking.
    pub(crate) fn sha256(&self, size: u64) -> io::Result<Digest> {
        let mut file = &*self.file;
        file.seek(SeekFrom::Start(0))?;
        let mut hasher = Sha256::new();
        let mut reader = file.take(size);
        let mut buf = vec![0; 1 << 20];
        loop {
            let n = reader.read(&mut buf)?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
        }
        Ok(hasher.finalize().into())
    }

    /// Flushes the file to disk and renames it to the first free name among `name + suffix`
    /// and its numbered variants in `dir`, then flushes the folder; the name chosen. Blocking.
    pub(crate) fn persist(mut self, dir: &Path, name: &str, suffix: &str) -> io::Result<String> {
        self.file.sync_all()?;
        let chosen = {
            let _naming = NAMING.lock().unwrap_or_else(PoisonError::into_inner);
            let chosen = free_name(dir, name, suffix)?;
            fs::rename(&self.temp, dir.join(&chosen))?;
            chosen
        };
        self.kept = true;
        if cfg!(unix) {
            File::open(dir)?.sync_all()?;
        }
        Ok(chosen)
    }
}

impl Drop for PartFile {
    fn drop(&mut self) {
        if !self.kept {
            let _ = fs::remove_file(&self.temp);
        }
    }
}

/// The first of `NAME+SUFFIX`, `STEM (1).EXT+SUFFIX`, ... that does not exist in `dir`.
fn free_name(dir: &Path, name: &str, suffix: &str) -> io::Result<String> {
    (0..=MAX_VARIANTS)
        .map(|n| variant(name, suffix, n))
        .find(|candidate| !dir.join(candidate).exists())
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{name}{suffix} and {MAX_VARIANTS} numbered variants all exist"),
            )
        })
}

/// `name + suffix` for `n == 0`, else `stem (n).ext + suffix` (the stem ends at the first dot).
pub(crate) fn variant(name: &str, suffix: &str, n: u32) -> String {
    if n == 0 {
        return format!("{name}{suffix}");
    }
    match name.split_once('.') {
        Some((stem, ext)) => format!("{stem} ({n}).{ext}{suffix}"),
        None => format!("{name} ({n}){suffix}"),
    }
}

/// Writes pieces of a file at their offsets, a batch at a time on the blocking pool, so the
/// receiving task neither blocks on the disk nor buffers more than one batch.
#[derive(Debug)]
pub(crate) struct BatchWriter {
    file: Arc<File>,
    pending: Vec<(u64, Bytes)>,
    pending_bytes: usize,
    batch_bytes: usize,
}

impl BatchWriter {
    /// A writer to `file` that writes once `batch_bytes` are pending.
    pub(crate) fn new(file: Arc<File>, batch_bytes: usize) -> BatchWriter {
        BatchWriter {
            file,
            pending: Vec::new(),
            pending_bytes: 0,
            batch_bytes,
        }
    }

    /// Queues `data` for `offset`, writing the batch when it is full.
    pub(crate) async fn write(&mut self, offset: u64, data: Bytes) -> io::Result<()> {
        self.pending_bytes += data.len();
        self.pending.push((offset, data));
        if self.pending_bytes >= self.batch_bytes {
            self.flush().await?;
        }
        Ok(())
    }

    /// Writes everything queued.
    pub(crate) async fn flush(&mut self) -> io::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let batch = std::mem::take(&mut self.pending);
        self.pending_bytes = 0;
        let file = Arc::clone(&self.file);
        tokio::task::spawn_blocking(move || write_batch(&file, &batch))
            .await
            .map_err(io::Error::other)?
    }
}

fn write_batch(file: &File, batch: &[(u64, Bytes)]) -> io::Result<()> {
    for (offset, data) in batch {
        write_at(file, *offset, data)?;
    }
    Ok(())
}

/// Writes `data` at `offset` of `file`. Blocking.
#[cfg(unix)]
pub(crate) fn write_at(file: &File, offset: u64, data: &[u8]) -> io::Result<()> {
    std::os::unix::fs::FileExt::write_all_at(file, data, offset)
}

/// Writes `data` at `offset` of `file`. Blocking.
#[cfg(not(unix))]
pub(crate) fn write_at(mut file: &File, offset: u64, data: &[u8]) -> io::Result<()> {
    use std::io::Write;
    file.seek(SeekFrom::Start(offset))?;
    file.write_all(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variants_number_the_stem() {
        assert_eq!(variant("clip.mp4", "", 0), "clip.mp4");
        assert_eq!(variant("clip.mp4", "", 2), "clip (2).mp4");
        assert_eq!(
            variant("a.tar.gz", ".incomplete", 1),
            "a (1).tar.gz.incomplete"
        );
        assert_eq!(variant("README", "", 3), "README (3)");
    }

    #[tokio::test]
    async fn a_part_file_is_written_at_offsets_hashed_and_renamed_to_a_free_name() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("x.bin"), b"older").unwrap();
        let part = PartFile::create(dir.path(), "x.bin", 6).unwrap();
        let mut writer = BatchWriter::new(part.file(), 4);
        writer.write(3, Bytes::from_static(b"def")).await.unwrap();
        writer.write(0, Bytes::from_static(b"abc")).await.unwrap();
        writer.flush().await.unwrap();
        let expected: Digest = Sha256::digest(b"abcdef").into();
        assert_eq!(part.sha256(6).unwrap(), expected);
        assert_eq!(part.persist(dir.path(), "x.bin", "").unwrap(), "x (1).bin");
        assert_eq!(fs::read(dir.path().join("x (1).bin")).unwrap(), b"abcdef");
        assert_eq!(fs::read(dir.path().join("x.bin")).unwrap(), b"older");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 2);
    }

    #[test]
    fn a_dropped_part_file_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let part = PartFile::create(dir.path(), "y", 1000).unwrap();
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
        drop(part);
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
