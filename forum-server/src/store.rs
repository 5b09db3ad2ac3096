//! The forum's threads and uploads on disk: `DATA_DIR/threads/<title>` holds a thread (see
//! [`crate::thread`]), `DATA_DIR/uploads/<title>-<file>` a file uploaded to it.
//!
//! Every change is a read-modify-write of one thread file, replaced atomically, under one lock,
//! so concurrent commands never lose each other's lines. An upload's body is written elsewhere
//! first (by the transfer) and only [`ForumStore::commit_upload`] moves it into place and adds
//! its line, so a thread never lists a file that is not whole. Blocking: call from
//! `spawn_blocking` in async code.
//!
//! Every refusal is a [`Refusal`] whose text a user reads, and which maps onto the seed's
//! statuses (`no-thread`, `no-msg`, `file-error`, or a plain error).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};

use protocol::forum::Cmd;
use server_kit::atomic_file::DiskTrouble;
use thiserror::Error;

use crate::names::{check_file_name, check_text, check_title};
use crate::thread::{Entry, Thread};

/// A command the forum refuses, with the reason.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum Refusal {
    /// The thread does not exist (`no-thread`).
    #[error("Thread {0} does not exist")]
    NoThread(String),
    /// The message number is not in the thread (`no-msg`).
    #[error("Message number {number} does not exist in thread {title}")]
    NoMessage {
        /// The thread.
        title: String,
        /// The number asked for.
        number: String,
    },
    /// The upload exists already, or the download does not (`file-error`).
    #[error("{0}")]
    File(String),
    /// Anything else: a bad name, a thread that exists, someone else's message (`error`).
    #[error("{0}")]
    Denied(String),
}

impl Refusal {
    /// The seed's status for this refusal.
    pub fn status(&self) -> Cmd {
        match self {
            Refusal::NoThread(_) => Cmd::NoThread,
            Refusal::NoMessage { .. } => Cmd::NoMsg,
            Refusal::File(_) => Cmd::FileError,
            Refusal::Denied(_) => Cmd::Error,
        }
    }
}

/// A command that failed: refused, or the disk failed.
#[derive(Debug, Error)]
pub enum StoreError {
    /// The forum refuses the command.
    #[error(transparent)]
    Refused(#[from] Refusal),
    /// A thread file is not in the thread format.
    #[error("{path} is damaged: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// The first bad line.
        reason: String,
    },
    /// A file could not be read or written.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file or folder.
        path: PathBuf,
        /// What the system said.
        source: io::Error,
    },
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
}

impl From<crate::names::InvalidName> for StoreError {
    fn from(invalid: crate::names::InvalidName) -> Self {
        StoreError::Refused(Refusal::Denied(invalid.0))
    }
}

fn io_error(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> StoreError {
    let path = path.to_owned();
    move |source| StoreError::Io {
        action,
        path,
        source,
    }
}

/// The threads and uploads.
#[derive(Debug)]
pub struct ForumStore {
    threads: PathBuf,
    uploads: PathBuf,
    lock: Mutex<()>,
}

impl ForumStore {
    /// Opens the store in `data_dir`, creating its folders and deleting temporary files a crash
    /// left behind (in them, and beside `credentials.txt` in `data_dir`).
    pub fn open(data_dir: &Path) -> Result<ForumStore, StoreError> {
        let store = ForumStore {
            threads: data_dir.join("threads"),
            uploads: data_dir.join("uploads"),
            lock: Mutex::new(()),
        };
        for folder in [&store.threads, &store.uploads] {
            fs::create_dir_all(folder).map_err(io_error("cannot create", folder))?;
        }
        for folder in [data_dir, &store.threads, &store.uploads] {
            server_kit::atomic_file::remove_leftovers(folder)
                .map_err(io_error("cannot clean", folder))?;
        }
        Ok(store)
    }

    /// CRT: creates thread `title` for `user`.
    pub fn create_thread(&self, title: &str, user: &str) -> Result<(), StoreError> {
        check_title(title)?;
        let _guard = self.guard();
        if self.thread_path(title).exists() {
            return Err(Refusal::Denied(format!("Thread {title} exists")).into());
        }
        self.save(title, &Thread::new(user))
    }

    /// MSG: posts `text` to `title`; the message's number.
    pub fn post(&self, title: &str, user: &str, text: &str) -> Result<usize, StoreError> {
        check_text(text)?;
        self.change(title, |thread| {
            thread.entries.push(Entry::Message {
                author: user.to_owned(),
                text: text.to_owned(),
            });
            Ok(thread.message_count())
        })
    }

    /// DLT: deletes message `number` of `title`, which `user` must have posted; later messages
    /// move up one number.
    pub fn delete(&self, title: &str, user: &str, number: &str) -> Result<(), StoreError> {
        self.change(title, |thread| {
            let index = own_message(thread, title, user, number, "deleted")?;
            thread.entries.remove(index);
            Ok(())
        })
    }

    /// EDT: replaces the text of message `number` of `title`, which `user` must have posted.
    pub fn edit(
        &self,
        title: &str,
        user: &str,
        number: &str,
        text: &str,
    ) -> Result<(), StoreError> {
        check_text(text)?;
        self.change(title, |thread| {
            let index = own_message(thread, title, user, number, "edited")?;
            thread.entries[index] = Entry::Message {
                author: user.to_owned(),
                text: text.to_owned(),
            };
            Ok(())
        })
    }

    /// LST: the titles, sorted.
    pub fn list(&self) -> Result<Vec<String>, StoreError> {
        let _guard = self.guard();
        let mut titles = Vec::new();
        for entry in fs::read_dir(&self.threads).map_err(io_error("cannot list", &self.threads))? {
            let entry = entry.map_err(io_error("cannot list", &self.threads))?;
            if let Some(name) = entry.file_name().to_str() {
                if check_title(name).is_ok() {
                    titles.push(name.to_owned());
                }
            }
        }
        titles.sort();
        Ok(titles)
    }

    /// RDT: the lines of `title` after its creator's.
    pub fn read(&self, title: &str) -> Result<Vec<String>, StoreError> {
        let _guard = self.guard();
        Ok(self.load(title)?.lines())
    }

    /// RMV: removes `title` and its uploads; only its creator may.
    pub fn remove(&self, title: &str, user: &str) -> Result<(), StoreError> {
        let _guard = self.guard();
        let thread = self.load(title)?;
        if thread.creator != user {
            return Err(Refusal::Denied(
                "The thread was created by another user and cannot be removed".into(),
            )
            .into());
        }
        for entry in &thread.entries {
            if let Entry::Upload { file, .. } = entry {
                let path = self.upload_path(title, file);
                match fs::remove_file(&path) {
                    Err(err) if err.kind() != io::ErrorKind::NotFound => {
                        return Err(io_error("cannot remove", &path)(err));
                    }
                    _ => {}
                }
            }
        }
        let path = self.thread_path(title);
        fs::remove_file(&path).map_err(io_error("cannot remove", &path))
    }

    /// UPD, before the body moves: `title` exists and has no file `file` yet.
    pub fn check_upload(&self, title: &str, file: &str) -> Result<(), StoreError> {
        check_file_name(file)?;
        let _guard = self.guard();
        let thread = self.load(title)?;
        if thread.has_upload(file) {
            return Err(
                Refusal::File(format!("File {file} already exists in thread {title}")).into(),
            );
        }
        Ok(())
    }

    /// Where a transfer writes an upload's body before it is committed: a temporary name in the
    /// uploads folder (so the commit is a rename), which a crash leaves to be cleaned up.
    pub fn upload_staging_path(&self, title: &str, file: &str) -> PathBuf {
        server_kit::atomic_file::temp_path(&self.upload_path(title, file))
            .expect("an upload path names a file")
    }

    /// UPD, once the whole body is in `staged` (synced): moves it into place durably, then adds
    /// the upload line, unless the thread vanished or got a file of that name meanwhile. On any
    /// failure nothing of the upload is left: neither `staged` nor, when the thread could not be
    /// saved, the file moved into place.
    pub fn commit_upload(
        &self,
        title: &str,
        user: &str,
        file: &str,
        staged: &Path,
    ) -> Result<(), StoreError> {
        let _guard = self.guard();
        let outcome = self.move_upload_in(title, user, file, staged);
        if outcome.is_err() {
            let _ = fs::remove_file(staged);
        }
        outcome
    }

    /// [`ForumStore::commit_upload`] under the lock. A file of that name the thread does not
    /// list (left by a crash between the move and the thread's save) is replaced, and removed
    /// again if the thread cannot be saved.
    fn move_upload_in(
        &self,
        title: &str,
        user: &str,
        file: &str,
        staged: &Path,
    ) -> Result<(), StoreError> {
        let mut thread = self.load(title)?;
        if thread.has_upload(file) {
            return Err(
                Refusal::File(format!("File {file} already exists in thread {title}")).into(),
            );
        }
        let target = self.upload_path(title, file);
        let moved = server_kit::atomic_file::rename_into_place(staged, &target)
            .map_err(io_error("cannot store", &target))
            .and_then(|()| {
                thread.entries.push(Entry::Upload {
                    user: user.to_owned(),
                    file: file.to_owned(),
                });
                self.save(title, &thread)
            });
        if moved.is_err() {
            let _ = fs::remove_file(&target);
        }
        moved
    }

    /// DWN: the path of file `file` of `title`.
    pub fn download_path(&self, title: &str, file: &str) -> Result<PathBuf, StoreError> {
        check_file_name(file)?;
        let _guard = self.guard();
        let thread = self.load(title)?;
        let path = self.upload_path(title, file);
        if !thread.has_upload(file) || !path.is_file() {
            return Err(
                Refusal::File(format!("File {file} does not exist in thread {title}")).into(),
            );
        }
        Ok(path)
    }

    /// Loads `title`, applies `edit`, saves it: all under the lock.
    fn change<T>(
        &self,
        title: &str,
        edit: impl FnOnce(&mut Thread) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let _guard = self.guard();
        let mut thread = self.load(title)?;
        let outcome = edit(&mut thread)?;
        self.save(title, &thread)?;
        Ok(outcome)
    }

    fn load(&self, title: &str) -> Result<Thread, StoreError> {
        check_title(title)?;
        let path = self.thread_path(title);
        let text = match fs::read_to_string(&path) {
            Ok(text) => text,
            Err(err) if err.kind() == io::ErrorKind::NotFound => {
                return Err(Refusal::NoThread(title.to_owned()).into());
            }
            Err(err) => return Err(io_error("cannot read", &path)(err)),
        };
        Thread::parse(&text).map_err(|reason| StoreError::Corrupt { path, reason })
    }

    fn save(&self, title: &str, thread: &Thread) -> Result<(), StoreError> {
        let path = self.thread_path(title);
        server_kit::write_atomically(&path, thread.render().as_bytes())
            .map_err(io_error("cannot write", &path))
    }

    fn thread_path(&self, title: &str) -> PathBuf {
        self.threads.join(title)
    }

    fn upload_path(&self, title: &str, file: &str) -> PathBuf {
        self.uploads.join(format!("{title}-{file}"))
    }

    fn guard(&self) -> MutexGuard<'_, ()> {
        self.lock.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The index of message `number` in `thread` if `user` posted it.
fn own_message(
    thread: &Thread,
    title: &str,
    user: &str,
    number: &str,
    verb: &str,
) -> Result<usize, StoreError> {
    let no_message = || Refusal::NoMessage {
        title: title.to_owned(),
        number: number.to_owned(),
    };
    let parsed: usize = number.parse().map_err(|_| no_message())?;
    let (index, author) = thread.message(parsed).ok_or_else(no_message)?;
    if author != user {
        return Err(Refusal::Denied(format!(
            "The message belongs to another user and cannot be {verb}"
        ))
        .into());
    }
    Ok(index)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open() -> (tempfile::TempDir, ForumStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = ForumStore::open(dir.path()).unwrap();
        (dir, store)
    }

    fn refusal(err: StoreError) -> Refusal {
        match err {
            StoreError::Refused(refusal) => refusal,
            other => panic!("not a refusal: {other}"),
        }
    }

    #[test]
    fn a_session_of_two_users_writes_the_assignments_format() {
        let (dir, store) = open();
        store.create_thread("3331", "Yoda").unwrap();
        assert_eq!(store.post("3331", "Yoda", "Hello there").unwrap(), 1);
        assert_eq!(store.post("3331", "Obi-wan", "General Kenobi").unwrap(), 2);
        assert_eq!(store.post("3331", "Yoda", "Do or do not").unwrap(), 3);
        store
            .edit("3331", "Obi-wan", "2", "General Kenobi!")
            .unwrap();
        store.delete("3331", "Yoda", "1").unwrap();
        let file = fs::read_to_string(dir.path().join("threads/3331")).unwrap();
        assert_eq!(
            file,
            "Yoda\n1 Obi-wan: General Kenobi!\n2 Yoda: Do or do not\n"
        );
        assert_eq!(
            store.read("3331").unwrap(),
            ["1 Obi-wan: General Kenobi!", "2 Yoda: Do or do not"]
        );
        store.create_thread("9331", "Obi-wan").unwrap();
        assert_eq!(store.list().unwrap(), ["3331", "9331"]);
    }

    #[test]
    fn every_refusal_says_why() {
        let (_dir, store) = open();
        store.create_thread("3331", "Yoda").unwrap();
        store.post("3331", "Yoda", "mine").unwrap();
        let cases = [
            (
                store.create_thread("3331", "Obi-wan"),
                "Thread 3331 exists",
                Cmd::Error,
            ),
            (
                store.post("9999", "Yoda", "x").map(|_| ()),
                "Thread 9999 does not exist",
                Cmd::NoThread,
            ),
            (
                store.delete("3331", "Yoda", "2"),
                "Message number 2 does not exist in thread 3331",
                Cmd::NoMsg,
            ),
            (
                store.edit("3331", "Yoda", "two", "x"),
                "Message number two does not exist in thread 3331",
                Cmd::NoMsg,
            ),
            (
                store.edit("3331", "Obi-wan", "1", "x"),
                "The message belongs to another user and cannot be edited",
                Cmd::Error,
            ),
            (
                store.delete("3331", "Obi-wan", "1"),
                "The message belongs to another user and cannot be deleted",
                Cmd::Error,
            ),
            (
                store.remove("3331", "Obi-wan"),
                "The thread was created by another user and cannot be removed",
                Cmd::Error,
            ),
            (
                store.create_thread("../x", "Yoda"),
                "Thread title \"../x\" may not start with '.'",
                Cmd::Error,
            ),
            (
                store.download_path("3331", "none.txt").map(|_| ()),
                "File none.txt does not exist in thread 3331",
                Cmd::FileError,
            ),
        ];
        for (outcome, text, status) in cases {
            let refusal = refusal(outcome.unwrap_err());
            assert_eq!(refusal.to_string(), text);
            assert_eq!(refusal.status(), status, "{text}");
        }
    }

    #[test]
    fn an_upload_appears_only_when_committed_and_goes_with_its_thread() {
        let (dir, store) = open();
        store.create_thread("3331", "Yoda").unwrap();
        store.check_upload("3331", "test.exe").unwrap();
        let staged = store.upload_staging_path("3331", "test.exe");
        fs::write(&staged, b"binary body").unwrap();
        assert!(
            store.download_path("3331", "test.exe").is_err(),
            "not before the commit"
        );
        store
            .commit_upload("3331", "Obi-wan", "test.exe", &staged)
            .unwrap();
        let path = store.download_path("3331", "test.exe").unwrap();
        assert_eq!(path, dir.path().join("uploads/3331-test.exe"));
        assert_eq!(fs::read(&path).unwrap(), b"binary body");
        assert_eq!(store.read("3331").unwrap(), ["Obi-wan uploaded test.exe"]);

        let again = refusal(store.check_upload("3331", "test.exe").unwrap_err());
        assert_eq!(
            again.to_string(),
            "File test.exe already exists in thread 3331"
        );
        let staged = store.upload_staging_path("3331", "test.exe");
        fs::write(&staged, b"second").unwrap();
        assert!(
            store
                .commit_upload("3331", "Yoda", "test.exe", &staged)
                .is_err()
        );
        assert!(!staged.exists(), "a refused commit leaves nothing behind");

        store.remove("3331", "Yoda").unwrap();
        assert!(!path.exists());
        assert!(store.list().unwrap().is_empty());
        assert_eq!(fs::read_dir(dir.path().join("uploads")).unwrap().count(), 0);
    }

    #[test]
    fn a_restart_keeps_everything_and_cleans_staged_leftovers() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = ForumStore::open(dir.path()).unwrap();
            store.create_thread("3331", "Yoda").unwrap();
            store.post("3331", "Yoda", "kept").unwrap();
            fs::write(store.upload_staging_path("3331", "half.bin"), b"torn").unwrap();
            fs::write(dir.path().join("threads/.3331.tmp-1-1"), b"torn").unwrap();
            fs::write(dir.path().join(".credentials.txt.tmp-1-2"), b"torn").unwrap();
        }
        let store = ForumStore::open(dir.path()).unwrap();
        assert_eq!(store.read("3331").unwrap(), ["1 Yoda: kept"]);
        assert_eq!(fs::read_dir(dir.path().join("uploads")).unwrap().count(), 0);
        assert_eq!(fs::read_dir(dir.path().join("threads")).unwrap().count(), 1);
        assert!(!dir.path().join(".credentials.txt.tmp-1-2").exists());
    }
}
