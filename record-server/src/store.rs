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
//!
//! # Records are held in memory
//!
//! Every record's current content is kept in memory beside the index, so that
//! [`RecordStore::read`] answers without a system call and without tokio's blocking pool (a read
//! that went to the file spent most of its time handing the work to that pool and back). The
//! contents are loaded when the store opens (which opens every record's file anyway, to reconcile
//! the record file), replaced by a write or a restamp only once the new file has been durably
//! renamed into place, under the same id lock, so a read never answers what the disk does not
//! hold, and forgotten when a record's file is found gone. A write the disk refuses leaves the
//! old content.
//!
//! The server owns its data folder while it runs: a record file changed or deleted behind its
//! back is not seen by reads, which go on answering what the server last wrote (and a file added
//! behind its back is not served). The one exception is the updater's restamp, which rewrites a
//! record's file and so starts from what that file holds: an edit made behind the server's back
//! is picked up then, and a deleted file is dropped from memory and index. Restart the server to
//! pick up changes at once.
//!
//! The memory this costs is the size of the records' files (invalid UTF-8 replaced) plus about a
//! hundred bytes per id: 10,000 records of a few hundred bytes take a few megabytes. A record
//! written through the server is at most `MAX_MESSAGE_BYTES` plus its timestamp line, so memory
//! is bounded by the number of records times that; files found in the folder at start-up are
//! held whole, whatever their size (the total is logged when the store opens).

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io;
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
    state: Mutex<State>,
    /// The version of the index last saved; held while saving.
    saved: tokio::sync::Mutex<u64>,
    id_locks: Mutex<HashMap<RecordId, Weak<tokio::sync::Mutex<()>>>>,
}

/// The index, every record's content, and a counter bumped by every change (for the group
/// commit). `contents` has an entry exactly for each id of `index`.
#[derive(Debug)]
struct State {
    index: RecordIndex,
    contents: HashMap<RecordId, Arc<str>>,
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
        let contents = load_contents(files, &list_records(files)?)?;
        let index = load_index(record_file, files, &contents, &mut report)?;
        let changed = report.rebuilt
            || !report.dropped.is_empty()
            || !report.added.is_empty()
            || !report.restamped.is_empty()
            || !record_file.exists();
        if changed {
            server_kit::write_atomically(record_file, &index.to_json())
                .map_err(StoreError::io("cannot write", record_file))?;
        }
        let held: usize = contents.values().map(|content| content.len()).sum();
        info!(
            "Holding {} records ({held} bytes) in memory.",
            contents.len()
        );
        let state = State {
            index,
            contents: contents.into_iter().collect(),
            version: 0,
        };
        let store = RecordStore {
            inner: Arc::new(Inner {
                files: files.to_owned(),
                record_file: record_file.to_owned(),
                state: Mutex::new(state),
                saved: tokio::sync::Mutex::new(0),
                id_locks: Mutex::new(HashMap::new()),
            }),
        };
        Ok((store, report))
    }

    /// How many records there are.
    pub fn len(&self) -> usize {
        self.state().index.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The timestamp the index holds for `id`.
    pub fn timestamp_of(&self, id: &RecordId) -> Option<Timestamp> {
        self.state().index.get(id)
    }

    /// The record file's path.
    pub fn record_file(&self) -> &Path {
        &self.inner.record_file
    }

    /// Stores `data` as the record of `id` under a fresh `Last updated:` line (replacing the
    /// client's), then records the same timestamp in the index; both durable before it returns.
    /// Reads answer the new content from the moment its file is in place; when the disk refuses
    /// the file, they go on answering the old.
    pub async fn write(&self, id: &RecordId, data: &str) -> Result<Timestamp, StoreError> {
        let lock = self.lock_id(id);
        let _guard = lock.lock().await;
        let now = Timestamp::now();
        let content: Arc<str> = timestamp::stamp(data, now).into();
        self.replace_file(id, Arc::clone(&content)).await?;
        let version = self.hold(id, now, content);
        self.save_index(version).await?;
        Ok(now)
    }

    /// The record of `id` as last written (or found at start-up), or `None` when there is none.
    /// From memory: no file is read (see the module's documentation).
    pub fn read(&self, id: &RecordId) -> Option<Arc<str>> {
        self.state().contents.get(id).cloned()
    }

    /// The ids whose index timestamp is more than `threshold` old at `now`, in index order.
    pub fn stale(&self, threshold: Duration, now: Timestamp) -> Vec<RecordId> {
        self.state()
            .index
            .iter()
            .filter(|(_, at)| at.age(now) > threshold)
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// Gives the record of `id` the timestamp `now` in its first line and in the index, unless
    /// it was rewritten since it was found older than `threshold`. It starts from the record's
    /// file, not from memory (so a file deleted behind the server's back is dropped, and an edit
    /// made behind its back kept), and reads answer the restamped record afterwards. The index is
    /// not saved: call [`RecordStore::save`] after a batch.
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
        let path = self.inner.files.join(id.file_name());
        let Some(content) = read_file(path).await? else {
            self.forget(id);
            return Ok(Restamp::Vanished);
        };
        let restamped: Arc<str> = timestamp::stamp(&content, now).into();
        self.replace_file(id, Arc::clone(&restamped)).await?;
        self.hold(id, now, restamped);
        Ok(Restamp::Updated)
    }

    /// Saves the index if it changed since it was last saved.
    pub async fn save(&self) -> Result<(), StoreError> {
        let version = self.state().version;
        self.save_index(version).await
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.inner
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Records that `id`'s file now holds `content`, stamped `at`; the new version.
    fn hold(&self, id: &RecordId, at: Timestamp, content: Arc<str>) -> u64 {
        let mut state = self.state();
        state.index.set(id, at);
        state.contents.insert(id.clone(), content);
        state.version += 1;
        state.version
    }

    /// Records that `id` has no file any more.
    fn forget(&self, id: &RecordId) {
        let mut state = self.state();
        state.index.remove(id);
        state.contents.remove(id);
        state.version += 1;
    }

    /// Makes sure the index as of `version` (or later) is on disk.
    async fn save_index(&self, version: u64) -> Result<(), StoreError> {
        let mut saved = self.inner.saved.lock().await;
        if *saved >= version {
            return Ok(()); // a concurrent writer saved our change along with its own
        }
        let (bytes, snapshot) = {
            let state = self.state();
            (state.index.to_json(), state.version)
        };
        let path = self.inner.record_file.clone();
        blocking_write(path, bytes).await?;
        *saved = snapshot;
        Ok(())
    }

    async fn replace_file(&self, id: &RecordId, content: Arc<str>) -> Result<(), StoreError> {
        let path = self.inner.files.join(id.file_name());
        blocking_write(path, Arc::<[u8]>::from(content)).await
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

/// [`server_kit::write_atomically`] on tokio's blocking pool.
pub(crate) async fn blocking_write(
    path: PathBuf,
    bytes: impl AsRef<[u8]> + Send + 'static,
) -> Result<(), StoreError> {
    let target = path.clone();
    tokio::task::spawn_blocking(move || server_kit::write_atomically(&target, bytes.as_ref()))
        .await
        .map_err(|err| StoreError::io("cannot write", &path)(io::Error::other(err)))?
        .map_err(StoreError::io("cannot write", &path))
}

/// The file at `path` as text (invalid UTF-8 replaced), or `None` when there is none. On tokio's
/// blocking pool.
async fn read_file(path: PathBuf) -> Result<Option<String>, StoreError> {
    match tokio::fs::read(&path).await {
        Ok(bytes) => Ok(Some(text_of(bytes))),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(err) => Err(StoreError::io("cannot read", &path)(err)),
    }
}

/// `bytes` as text, invalid UTF-8 replaced.
fn text_of(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes)
        .unwrap_or_else(|invalid| String::from_utf8_lossy(invalid.as_bytes()).into_owned())
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
    Ok(ids)
}

/// The content of each of `ids`' record files, by id.
fn load_contents(files: &Path, ids: &[RecordId]) -> Result<OnDisk, StoreError> {
    let mut contents = OnDisk::new();
    for id in ids {
        let path = files.join(id.file_name());
        let bytes = fs::read(&path).map_err(StoreError::io("cannot read", &path))?;
        contents.insert(id.clone(), text_of(bytes).into());
    }
    Ok(contents)
}

/// The records found in the folder at start-up, in id order.
type OnDisk = BTreeMap<RecordId, Arc<str>>;

/// The index, reconciled with the records in the folder.
fn load_index(
    record_file: &Path,
    files: &Path,
    on_disk: &OnDisk,
    report: &mut OpenReport,
) -> Result<RecordIndex, StoreError> {
    let problem = match fs::read(record_file) {
        Ok(bytes) if bytes.iter().all(u8::is_ascii_whitespace) => "is empty".to_owned(),
        Ok(bytes) => match RecordIndex::parse(&bytes) {
            Ok(parsed) => {
                for (key, value) in parsed.rejected {
                    warn!(file = %record_file.display(), key, value, "record file entry is not an id and a timestamp; dropped");
                }
                return Ok(reconcile(parsed.index, files, on_disk, report));
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
    for (id, content) in on_disk {
        index.set(id, first_line_timestamp(files, id, content));
    }
    Ok(index)
}

fn reconcile(
    mut index: RecordIndex,
    files: &Path,
    on_disk: &OnDisk,
    report: &mut OpenReport,
) -> RecordIndex {
    let vanished: Vec<RecordId> = index
        .iter()
        .map(|(id, _)| id.clone())
        .filter(|id| !on_disk.contains_key(id))
        .collect();
    for id in vanished {
        warn!("The file of client {id} has vanished; its record is dropped.");
        index.remove(&id);
        report.dropped.push(id.to_string());
    }
    for (id, content) in on_disk {
        match index.get(id) {
            None => {
                let at = first_line_timestamp(files, id, content);
                warn!(
                    "The file of client {id} was not in the record file; added with timestamp {at}."
                );
                index.set(id, at);
                report.added.push(id.to_string());
            }
            Some(listed) => match Timestamp::of_record(content) {
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
    index
}

/// The timestamp in the first line of `content`, `id`'s record, or its file's modification time
/// when the line is missing or unreadable.
fn first_line_timestamp(files: &Path, id: &RecordId, content: &str) -> Timestamp {
    if let Some(at) = Timestamp::of_record(content) {
        return at;
    }
    let modified = fs::metadata(files.join(id.file_name()))
        .and_then(|meta| meta.modified())
        .unwrap_or_else(|_| SystemTime::now());
    let at = Timestamp::parse(
        &DateTime::<Local>::from(modified)
            .format(timestamp::FORMAT)
            .to_string(),
    )
    .unwrap_or_else(Timestamp::now);
    warn!("The file of client {id} has no `Last updated:` line; using its modification time {at}.");
    at
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
        for n in 1..=10 {
            let id = id(&format!("1509999{n:02}"));
            let on_disk = fs::read_to_string(folder.files.join(id.file_name())).unwrap();
            assert_eq!(store.read(&id).as_deref(), Some(on_disk.as_str()), "{id}");
        }
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
        assert_eq!(store.read(&alice).as_deref(), Some(file.as_str()));
        assert_eq!(store.read(&id("bob")), None);
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
        assert_eq!(
            store.read(&id("x")).as_deref(),
            Some(file.as_str()),
            "memory agrees"
        );
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
        assert_eq!(store.read(&id("150999901")).as_deref(), Some(file.as_str()));
        assert_eq!(
            store.read(&id("150999902")),
            None,
            "a vanished record is forgotten"
        );
    }

    #[tokio::test]
    async fn reads_answer_the_last_write_from_memory_whatever_the_file_now_holds() {
        // Intended: the server owns its folder, and reads never touch the disk. This shows it by
        // changing files behind the store's back, which a read does not see.
        let folder = Folder::empty();
        let (store, _) = folder.open();
        let alice = id("alice");
        store
            .write(&alice, "Student ID: alice\nName: Ada")
            .await
            .unwrap();
        let written = fs::read_to_string(folder.files.join("alice.txt")).unwrap();
        fs::write(folder.files.join("alice.txt"), "edited behind its back").unwrap();
        assert_eq!(store.read(&alice).as_deref(), Some(written.as_str()));
        fs::remove_file(folder.files.join("alice.txt")).unwrap();
        assert_eq!(store.read(&alice).as_deref(), Some(written.as_str()));
        fs::write(folder.files.join("bob.txt"), "Student ID: bob").unwrap();
        assert_eq!(store.read(&id("bob")), None, "a file added behind its back");

        store
            .write(&alice, "Student ID: alice\nName: Grace")
            .await
            .unwrap();
        let rewritten = fs::read_to_string(folder.files.join("alice.txt")).unwrap();
        assert!(rewritten.ends_with("\nName: Grace"), "{rewritten}");
        assert_eq!(store.read(&alice).as_deref(), Some(rewritten.as_str()));
    }

    #[tokio::test]
    async fn a_restamp_changes_what_reads_answer_and_keeps_an_edit_made_behind_its_back() {
        let folder = Folder::fixture();
        let (store, _) = folder.open();
        let target = id("150999905");
        let before = store.read(&target).unwrap();
        assert!(
            before.starts_with("Last updated: 2024-03-16 04:11:01\n"),
            "{before}"
        );
        let path = folder.files.join(target.file_name());
        let edited = before.replace("Name: student5", "Name: renamed");
        fs::write(&path, &edited).unwrap();
        assert_eq!(
            store.read(&target),
            Some(before),
            "not seen before the restamp"
        );

        let now = Timestamp::parse("2026-11-21 12:00:00").unwrap();
        let day = Duration::from_secs(86_400);
        let outcome = store.restamp(&target, day, now).await.unwrap();
        assert_eq!(outcome, Restamp::Updated);
        let file = fs::read_to_string(&path).unwrap();
        assert_eq!(file, timestamp::stamp(&edited, now));
        assert_eq!(store.read(&target).as_deref(), Some(file.as_str()));
    }

    /// Replaces the folder at `path` by a plain file, so that nothing can be written in it
    /// (whoever runs the tests, root included); the folder is kept at `path` + `.away`.
    fn block(path: &Path) -> PathBuf {
        let away = path.with_extension("away");
        fs::rename(path, &away).unwrap();
        fs::write(path, "not a folder").unwrap();
        away
    }

    fn unblock(path: &Path, away: &Path) {
        fs::remove_file(path).unwrap();
        fs::rename(away, path).unwrap();
    }

    #[tokio::test]
    async fn a_write_the_disk_refuses_leaves_the_old_content_in_memory() {
        let folder = Folder::empty();
        let (store, _) = folder.open();
        let alice = id("alice");
        store
            .write(&alice, "Student ID: alice\nName: Ada")
            .await
            .unwrap();
        let kept = store.read(&alice).unwrap();
        let away = block(&folder.files);
        let refused = store.write(&alice, "Student ID: alice\nName: Grace").await;
        assert!(refused.is_err(), "{refused:?}");
        assert!(store.write(&id("bob"), "Student ID: bob").await.is_err());
        assert_eq!(store.read(&alice), Some(kept));
        assert_eq!(store.read(&id("bob")), None);
        unblock(&folder.files, &away);
        let file = fs::read_to_string(folder.files.join("alice.txt")).unwrap();
        assert!(file.ends_with("\nName: Ada"), "the old file stays: {file}");

        store
            .write(&alice, "Student ID: alice\nName: Grace")
            .await
            .unwrap();
        let file = fs::read_to_string(folder.files.join("alice.txt")).unwrap();
        assert!(file.ends_with("\nName: Grace"), "{file}");
        assert_eq!(store.read(&alice).as_deref(), Some(file.as_str()));
    }

    #[tokio::test]
    async fn a_write_whose_record_file_cannot_be_saved_is_read_as_its_file_holds() {
        // The record's file is replaced first: once it is, reads answer it, even though the
        // write fails on the record file afterwards.
        let dir = tempfile::tempdir().unwrap();
        let (files, index_folder) = (dir.path().join("data"), dir.path().join("index"));
        let (store, _) = RecordStore::open(&files, &index_folder.join("records.json")).unwrap();
        let alice = id("alice");
        let away = block(&index_folder);
        let refused = store.write(&alice, "Student ID: alice").await;
        assert!(refused.is_err(), "{refused:?}");
        let file = fs::read_to_string(files.join("alice.txt")).unwrap();
        assert_eq!(store.read(&alice).as_deref(), Some(file.as_str()));
        unblock(&index_folder, &away);
        store.save().await.unwrap();
        let saved = RecordIndex::parse(&fs::read(index_folder.join("records.json")).unwrap());
        assert_eq!(
            saved.unwrap().index.get(&alice),
            Timestamp::of_record(&file)
        );
    }
}
