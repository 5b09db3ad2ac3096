//! The records on disk: `FILE_PATH/<id>.txt` per student, and the record file (`records.json`)
//! mapping each id to the timestamp in its file's first line.
//!
//! Every file is replaced atomically ([`server_kit::write_atomically`]). A write holds its id's
//! lock from the record file's write to the index update, so two writes to one id are serialized
//! and the index always ends with the timestamp of the file that won; writes to different ids run
//! in parallel. The record file is rewritten after every change with a group commit: a writer
//! that finds its change already saved by a concurrent writer does not write it again.
//!
//! A write replaces the record's file before the record file, so a crash between the two leaves
//! a record the record file lists with its previous timestamp, or not at all.
//! [`RecordStore::open`] therefore reconciles the record file with the folder: a missing, empty
//! or corrupt record file is rebuilt from the records' first lines; an entry whose file vanished
//! is dropped; a record file the index does not know is added; an entry whose timestamp is not
//! its file's takes the file's. Each repair is logged as a warning.

use std::collections::HashMap;
use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime};

use chrono::{DateTime, Local};
use server_kit::atomic_file::DiskTrouble;
use thiserror::Error;
use tracing::{debug, info, warn};

use crate::index::RecordIndex;
use crate::record_id::RecordId;
use crate::timestamp::{self, Timestamp};

/// A storage failure: the disk's fault, not the client's.
#[derive(Debug, Error)]
pub enum StoreError {
    /// A file or folder could not be read or written.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file or folder.
        path: PathBuf,
        /// What the system said.
        source: io::Error,
    },
    /// A file the server cannot do without is damaged.
    #[error("{path} is damaged: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// Password hashing failed.
    #[error(transparent)]
    Password(#[from] server_kit::password::PasswordError),
}

impl StoreError {
    /// What is wrong with the disk, when it is something the server's operator fixes (full,
    /// read-only) rather than a fault of the server.
    pub fn disk_trouble(&self) -> Option<DiskTrouble> {
        match self {
            StoreError::Io { source, .. } => DiskTrouble::of(source),
            _ => None,
        }
    }

    pub(crate) fn io(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> StoreError {
        let path = path.to_owned();
        move |source| StoreError::Io {
            action,
            path,
            source,
        }
    }
}

/// What [`RecordStore::open`] had to repair.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct OpenReport {
    /// The record file was missing, empty or corrupt and was rebuilt from the records.
    pub rebuilt: bool,
    /// Ids whose record file had vanished, dropped from the index.
    pub dropped: Vec<String>,
    /// Record files the index did not list, added to it.
    pub added: Vec<String>,
    /// Ids whose index timestamp was not their file's (a crash between the two writes), given
    /// the file's.
    pub restamped: Vec<String>,
    /// Temporary files a crash left behind, deleted.
    pub leftovers: usize,
}

/// What the updater did to one record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Restamp {
    /// Its first line and its index entry now carry the new timestamp.
    Updated,
    /// It was written again since it was found stale; nothing to do.
    Fresh,
    /// Its file has vanished; it was dropped from the index.
    Vanished,
}

/// The record store; cheap to clone, shared by every connection and the updater.
#[derive(Debug, Clone)]
pub struct RecordStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    files: PathBuf,
    record_file: PathBuf,
    index: Mutex<Versioned>,
    /// The version of the index last saved; held while saving.
    saved: tokio::sync::Mutex<u64>,
    id_locks: Mutex<HashMap<RecordId, Weak<tokio::sync::Mutex<()>>>>,
}

/// The index and a counter bumped by every change, for the group commit.
#[derive(Debug)]
struct Versioned {
    index: RecordIndex,
    version: u64,
}

impl RecordStore {
    /// Opens (creating the folders if needed) and reconciles the store. Blocking.
    pub fn open(files: &Path, record_file: &Path) -> Result<(RecordStore, OpenReport), StoreError> {
        let record_folder = record_file.parent().unwrap_or(Path::new("."));
        for folder in [files, record_folder] {
            fs::create_dir_all(folder).map_err(StoreError::io("cannot create", folder))?;
        }
        let mut report = OpenReport::default();
        for folder in [files, record_folder] {
            report.leftovers += server_kit::atomic_file::remove_leftovers(folder)
                .map_err(StoreError::io("cannot clean", folder))?;
        }
        let on_disk = list_records(files)?;
        let index = load_index(record_file, files, &on_disk, &mut report)?;
        let changed = report.rebuilt
            || !report.dropped.is_empty()
            || !report.added.is_empty()
            || !report.restamped.is_empty()
            || !record_file.exists();
        if changed {
            server_kit::write_atomically(record_file, &index.to_json())
                .map_err(StoreError::io("cannot write", record_file))?;
        }
        let store = RecordStore {
            inner: Arc::new(Inner {
                files: files.to_owned(),
                record_file: record_file.to_owned(),
                index: Mutex::new(Versioned { index, version: 0 }),
                saved: tokio::sync::Mutex::new(0),
                id_locks: Mutex::new(HashMap::new()),
            }),
        };
        Ok((store, report))
    }

    /// How many records there are.
    pub fn len(&self) -> usize {
        self.index().index.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The timestamp the index holds for `id`.
    pub fn timestamp_of(&self, id: &RecordId) -> Option<Timestamp> {
        self.index().index.get(id)
    }

    /// The record file's path.
    pub fn record_file(&self) -> &Path {
        &self.inner.record_file
    }

    /// Stores `data` as the record of `id` under a fresh `Last updated:` line (replacing the
    /// client's), then records the same timestamp in the index; both durable before it returns.
    pub async fn write(&self, id: &RecordId, data: &str) -> Result<Timestamp, StoreError> {
        let lock = self.lock_id(id);
        let _guard = lock.lock().await;
        let now = Timestamp::now();
        self.replace_file(id, timestamp::stamp(data, now)).await?;
        let version = self.update_index(|index| index.set(id, now));
        self.save_index(version).await?;
        Ok(now)
    }

    /// The record of `id`, or `None` when there is none.
    pub async fn read(&self, id: &RecordId) -> Result<Option<String>, StoreError> {
        let path = self.inner.files.join(id.file_name());
        match tokio::fs::read(&path).await {
            Ok(bytes) => Ok(Some(String::from_utf8(bytes).unwrap_or_else(|invalid| {
                String::from_utf8_lossy(invalid.as_bytes()).into_owned()
            }))),
            Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(err) => Err(StoreError::io("cannot read", &path)(err)),
        }
    }

    /// The ids whose index timestamp is more than `threshold` old at `now`, in index order.
    pub fn stale(&self, threshold: Duration, now: Timestamp) -> Vec<RecordId> {
        self.index()
            .index
            .iter()
            .filter(|(_, at)| at.age(now) > threshold)
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// Gives the record of `id` the timestamp `now` in its first line and in the index, unless
    /// it was rewritten since it was found older than `threshold`. The index is not saved: call
    /// [`RecordStore::save`] after a batch.
    pub async fn restamp(
        &self,
        id: &RecordId,
        threshold: Duration,
        now: Timestamp,
    ) -> Result<Restamp, StoreError> {
        let lock = self.lock_id(id);
        let _guard = lock.lock().await;
        if self
            .timestamp_of(id)
            .is_some_and(|at| at.age(now) <= threshold)
        {
            return Ok(Restamp::Fresh);
        }
        let Some(content) = self.read(id).await? else {
            self.update_index(|index| {
                index.remove(id);
            });
            return Ok(Restamp::Vanished);
        };
        self.replace_file(id, timestamp::stamp(&content, now))
            .await?;
        self.update_index(|index| index.set(id, now));
        Ok(Restamp::Updated)
    }

    /// Saves the index if it changed since it was last saved.
    pub async fn save(&self) -> Result<(), StoreError> {
        let version = self.index().version;
        self.save_index(version).await
    }

    fn index(&self) -> std::sync::MutexGuard<'_, Versioned> {
        self.inner
            .index
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn update_index(&self, change: impl FnOnce(&mut RecordIndex)) -> u64 {
        let mut versioned = self.index();
        change(&mut versioned.index);
        versioned.version += 1;
        versioned.version
    }

    /// Makes sure the index as of `version` (or later) is on disk.
    async fn save_index(&self, version: u64) -> Result<(), StoreError> {
        let mut saved = self.inner.saved.lock().await;
        if *saved >= version {
            return Ok(()); // a concurrent writer saved our change along with its own
        }
        let (bytes, snapshot) = {
            let versioned = self.index();
            (versioned.index.to_json(), versioned.version)
        };
        let path = self.inner.record_file.clone();
        blocking_write(path, bytes).await?;
        *saved = snapshot;
        Ok(())
    }

    async fn replace_file(&self, id: &RecordId, content: String) -> Result<(), StoreError> {
        blocking_write(self.inner.files.join(id.file_name()), content.into_bytes()).await
    }

    /// The lock serializing changes to `id`'s record, created on first use and forgotten when
    /// nobody holds it.
    fn lock_id(&self, id: &RecordId) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self
            .inner
            .id_locks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(lock) = locks.get(id).and_then(Weak::upgrade) {
            return lock;
        }
        if locks.len() >= 1024 {
            locks.retain(|_, lock| lock.strong_count() > 0);
        }
        let lock = Arc::new(tokio::sync::Mutex::new(()));
        locks.insert(id.clone(), Arc::downgrade(&lock));
        lock
    }
}

pub(crate) async fn blocking_write(path: PathBuf, bytes: Vec<u8>) -> Result<(), StoreError> {
    let target = path.clone();
    tokio::task::spawn_blocking(move || server_kit::write_atomically(&target, &bytes))
        .await
        .map_err(|err| StoreError::io("cannot write", &path)(io::Error::other(err)))?
        .map_err(StoreError::io("cannot write", &path))
}

/// The ids that have a record file in `files`; other files are ignored.
fn list_records(files: &Path) -> Result<Vec<RecordId>, StoreError> {
    let mut ids = Vec::new();
    for entry in fs::read_dir(files).map_err(StoreError::io("cannot list", files))? {
        let entry = entry.map_err(StoreError::io("cannot list", files))?;
        match entry
            .file_name()
            .to_str()
            .and_then(RecordId::from_file_name)
        {
            Some(id) if entry.path().is_file() => ids.push(id),
            _ => debug!(file = ?entry.file_name(), "not a record file; ignored"),
        }
    }
    ids.sort();
    Ok(ids)
}

/// The index, reconciled with the records in the folder.
fn load_index(
    record_file: &Path,
    files: &Path,
    on_disk: &[RecordId],
    report: &mut OpenReport,
) -> Result<RecordIndex, StoreError> {
    let problem = match fs::read(record_file) {
        Ok(bytes) if bytes.iter().all(u8::is_ascii_whitespace) => "is empty".to_owned(),
        Ok(bytes) => match RecordIndex::parse(&bytes) {
            Ok(parsed) => {
                for (key, value) in parsed.rejected {
                    warn!(file = %record_file.display(), key, value, "record file entry is not an id and a timestamp; dropped");
                }
                return reconcile(parsed.index, files, on_disk, report);
            }
            Err(reason) => format!("is corrupt ({reason})"),
        },
        Err(err) if err.kind() == io::ErrorKind::NotFound => "is missing".to_owned(),
        Err(err) => return Err(StoreError::io("cannot read", record_file)(err)),
    };
    if problem == "is missing" && on_disk.is_empty() {
        info!("Starting a new record file {}.", record_file.display());
        return Ok(RecordIndex::default());
    }
    warn!(
        "The record file {} {problem}; rebuilding it from the {} records in {}.",
        record_file.display(),
        on_disk.len(),
        files.display()
    );
    report.rebuilt = true;
    let mut index = RecordIndex::default();
    for id in on_disk {
        index.set(id, first_line_timestamp(files, id)?);
    }
    Ok(index)
}

fn reconcile(
    mut index: RecordIndex,
    files: &Path,
    on_disk: &[RecordId],
    report: &mut OpenReport,
) -> Result<RecordIndex, StoreError> {
    let vanished: Vec<RecordId> = index
        .iter()
        .map(|(id, _)| id.clone())
        .filter(|id| on_disk.binary_search(id).is_err())
        .collect();
    for id in vanished {
        warn!("The file of client {id} has vanished; its record is dropped.");
        index.remove(&id);
        report.dropped.push(id.to_string());
    }
    for id in on_disk {
        match index.get(id) {
            None => {
                let at = first_line_timestamp(files, id)?;
                warn!(
                    "The file of client {id} was not in the record file; added with timestamp {at}."
                );
                index.set(id, at);
                report.added.push(id.to_string());
            }
            Some(listed) => match stamp_in_file(files, id)? {
                Some(at) if at != listed => {
                    warn!(
                        "The file of client {id} is stamped {at}, the record file said {listed}; corrected."
                    );
                    index.set(id, at);
                    report.restamped.push(id.to_string());
                }
                _ => {}
            },
        }
    }
    Ok(index)
}

/// The timestamp in a record's `Last updated:` line, if its first line is one. Reads only the
/// start of the file.
fn stamp_in_file(files: &Path, id: &RecordId) -> Result<Option<Timestamp>, StoreError> {
    let path = files.join(id.file_name());
    let mut start = Vec::with_capacity(FIRST_LINE_BYTES);
    fs::File::open(&path)
        .and_then(|file| file.take(FIRST_LINE_BYTES as u64).read_to_end(&mut start))
        .map_err(StoreError::io("cannot read", &path))?;
    let first = start.split(|&b| b == b'\n').next().unwrap_or_default();
    Ok(std::str::from_utf8(first)
        .ok()
        .and_then(Timestamp::of_record))
}

/// Enough of a record for its `Last updated: YYYY-MM-DD HH:MM:SS` line, with room to spare.
const FIRST_LINE_BYTES: usize = 128;

/// The timestamp in a record's first line, or its file's modification time when the line is
/// missing or unreadable.
fn first_line_timestamp(files: &Path, id: &RecordId) -> Result<Timestamp, StoreError> {
    if let Some(at) = stamp_in_file(files, id)? {
        return Ok(at);
    }
    let path = files.join(id.file_name());
    let modified = fs::metadata(&path)
        .and_then(|meta| meta.modified())
        .unwrap_or_else(|_| SystemTime::now());
    let at = Timestamp::parse(
        &DateTime::<Local>::from(modified)
            .format(timestamp::FORMAT)
            .to_string(),
    )
    .unwrap_or_else(Timestamp::now);
    warn!("The file of client {id} has no `Last updated:` line; using its modification time {at}.");
    Ok(at)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIXTURE: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../shared/fixtures/record-v1"
    );

    struct Folder {
        _dir: tempfile::TempDir,
        files: PathBuf,
        record_file: PathBuf,
    }

    impl Folder {
        fn empty() -> Folder {
            let dir = tempfile::tempdir().unwrap();
            let files = dir.path().join("data");
            let record_file = dir.path().join("records.json");
            Folder {
                _dir: dir,
                files,
                record_file,
            }
        }

        /// A writable copy of the seed server's folder.
        fn fixture() -> Folder {
            let folder = Folder::empty();
            fs::create_dir(&folder.files).unwrap();
            for entry in fs::read_dir(Path::new(FIXTURE).join("data")).unwrap() {
                let entry = entry.unwrap();
                fs::copy(entry.path(), folder.files.join(entry.file_name())).unwrap();
            }
            fs::copy(Path::new(FIXTURE).join("records.json"), &folder.record_file).unwrap();
            folder
        }

        fn open(&self) -> (RecordStore, OpenReport) {
            RecordStore::open(&self.files, &self.record_file).unwrap()
        }

        fn index_on_disk(&self) -> RecordIndex {
            RecordIndex::parse(&fs::read(&self.record_file).unwrap())
                .unwrap()
                .index
        }
    }

    fn id(text: &str) -> RecordId {
        RecordId::parse(text).unwrap()
    }

    #[tokio::test]
    async fn the_seed_servers_folder_opens_without_repair() {
        let folder = Folder::fixture();
        let before = fs::read(&folder.record_file).unwrap();
        let (store, report) = folder.open();
        assert_eq!(report, OpenReport::default());
        assert_eq!(store.len(), 10);
        assert_eq!(fs::read(&folder.record_file).unwrap(), before, "untouched");
        let content = store.read(&id("150999910")).await.unwrap().unwrap();
        let on_disk = fs::read_to_string(folder.files.join("150999910.txt")).unwrap();
        assert_eq!(content, on_disk);
    }

    #[tokio::test]
    async fn a_missing_empty_or_corrupt_record_file_is_rebuilt_from_first_lines() {
        for damage in [
            None,
            Some(&b""[..]),
            Some(b"  \n"),
            Some(b"{\"150999901\": \"20"),
        ] {
            let folder = Folder::fixture();
            let expected = folder.index_on_disk();
            match damage {
                None => fs::remove_file(&folder.record_file).unwrap(),
                Some(bytes) => fs::write(&folder.record_file, bytes).unwrap(),
            }
            let (store, report) = folder.open();
            assert!(report.rebuilt, "{damage:?}");
            assert_eq!(store.len(), 10);
            let rebuilt = folder.index_on_disk();
            for (id, at) in expected.iter() {
                assert_eq!(rebuilt.get(id), Some(at), "{damage:?}");
            }
        }
    }

    #[tokio::test]
    async fn vanished_files_are_dropped_and_unlisted_files_added() {
        let folder = Folder::fixture();
        fs::remove_file(folder.files.join("150999903.txt")).unwrap();
        fs::write(
            folder.files.join("new_1.txt"),
            "Last updated: 2025-01-02 03:04:05\nStudent ID: new_1",
        )
        .unwrap();
        fs::write(folder.files.join("not a record.txt"), "ignored").unwrap();
        fs::write(folder.files.join(".150999901.txt.tmp-1-1"), "torn").unwrap();
        let (store, report) = folder.open();
        assert_eq!(report.dropped, ["150999903"]);
        assert_eq!(report.added, ["new_1"]);
        assert_eq!(report.leftovers, 1);
        assert!(!report.rebuilt);
        assert_eq!(store.len(), 10);
        let index = folder.index_on_disk();
        assert_eq!(index.get(&id("150999903")), None);
        assert_eq!(
            index.get(&id("new_1")),
            Timestamp::parse("2025-01-02 03:04:05")
        );
    }

    #[tokio::test]
    async fn an_entry_whose_timestamp_is_not_its_files_takes_the_files() {
        // A crash after a record's file was replaced and before the record file was saved.
        let folder = Folder::fixture();
        let path = folder.files.join("150999904.txt");
        let content = fs::read_to_string(&path).unwrap();
        let restamped =
            timestamp::stamp(&content, Timestamp::parse("2030-05-06 07:08:09").unwrap());
        fs::write(&path, restamped).unwrap();
        let (store, report) = folder.open();
        assert_eq!(report.restamped, ["150999904"]);
        assert!(report.added.is_empty() && report.dropped.is_empty() && !report.rebuilt);
        let expected = Timestamp::parse("2030-05-06 07:08:09");
        assert_eq!(store.timestamp_of(&id("150999904")), expected);
        assert_eq!(folder.index_on_disk().get(&id("150999904")), expected);
        let (_, again) = folder.open();
        assert_eq!(again, OpenReport::default(), "repaired once and for all");
    }

    #[tokio::test]
    async fn a_write_stamps_the_file_and_the_record_file_alike() {
        let folder = Folder::empty();
        let (store, report) = folder.open();
        assert_eq!(report, OpenReport::default(), "a new store is not a repair");
        assert_eq!(fs::read(&folder.record_file).unwrap(), b"{}");
        let alice = id("alice");
        let at = store
            .write(
                &alice,
                "Last updated: 1999-01-01 00:00:00\nStudent ID: alice\nName: Alice",
            )
            .await
            .unwrap();
        let file = fs::read_to_string(folder.files.join("alice.txt")).unwrap();
        assert_eq!(
            file,
            format!("Last updated: {at}\nStudent ID: alice\nName: Alice")
        );
        assert_eq!(folder.index_on_disk().get(&alice), Some(at));
        assert_eq!(store.read(&alice).await.unwrap(), Some(file));
        assert_eq!(store.read(&id("bob")).await.unwrap(), None);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_writes_to_one_id_leave_one_whole_record() {
        let folder = Folder::empty();
        let (store, _) = folder.open();
        let bodies: Vec<String> = (0..16)
            .map(|n| format!("Student ID: x\nWriter: {n}\n{}", "y".repeat(20_000 + n)))
            .collect();
        let writers: Vec<_> = bodies
            .iter()
            .map(|body| {
                let (store, body) = (store.clone(), body.clone());
                tokio::spawn(async move { store.write(&id("x"), &body).await.unwrap() })
            })
            .collect();
        for writer in writers {
            writer.await.unwrap();
        }
        let file = fs::read_to_string(folder.files.join("x.txt")).unwrap();
        let (first, body) = file.split_once('\n').unwrap();
        assert!(
            bodies.iter().any(|b| b == body),
            "a whole body, not a mixture"
        );
        let at = Timestamp::of_record(&file).unwrap();
        assert_eq!(first, format!("Last updated: {at}"));
        assert_eq!(folder.index_on_disk().get(&id("x")), Some(at));
        let names: Vec<_> = fs::read_dir(&folder.files).unwrap().collect();
        assert_eq!(names.len(), 1, "no temporary file left");
    }

    #[tokio::test]
    async fn restamping_refreshes_stale_records_and_drops_vanished_ones() {
        let folder = Folder::fixture();
        let (store, _) = folder.open();
        let now = Timestamp::parse("2026-11-21 12:00:00").unwrap();
        let day = Duration::from_secs(86_400);
        let stale = store.stale(day, now);
        assert_eq!(stale.len(), 10);
        fs::remove_file(folder.files.join("150999902.txt")).unwrap();
        assert_eq!(
            store.restamp(&id("150999901"), day, now).await.unwrap(),
            Restamp::Updated
        );
        assert_eq!(
            store.restamp(&id("150999902"), day, now).await.unwrap(),
            Restamp::Vanished
        );
        assert_eq!(
            store.restamp(&id("150999901"), day, now).await.unwrap(),
            Restamp::Fresh
        );
        store.save().await.unwrap();
        let file = fs::read_to_string(folder.files.join("150999901.txt")).unwrap();
        assert!(file.starts_with("Last updated: 2026-11-21 12:00:00\nStudent ID: 150999901\n"));
        let index = folder.index_on_disk();
        assert_eq!(index.get(&id("150999901")), Some(now));
        assert_eq!(index.get(&id("150999902")), None);
        assert_eq!(index.len(), 9);
    }
}
