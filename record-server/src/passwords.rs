//! Per-id passwords for `REQUIRE_AUTH=true`: the file `passwords.json` beside the record file maps
//! each id to the argon2id hash of its password (never the password). The first authentication
//! of an id sets its password; later ones check it.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use server_kit::password::{hash_password, is_password_hash, verify_password};

use crate::record_id::RecordId;
use crate::store::{StoreError, blocking_write};

/// The password file's name, in the record file's folder.
pub const PASSWORD_FILE: &str = "passwords.json";
/// The longest password accepted, in bytes.
pub const MAX_PASSWORD_LEN: usize = 1024;

/// What an authentication attempt came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthOutcome {
    /// The id had no password; it has this one now.
    PasswordSet,
    /// The password matches.
    Accepted,
    /// The password does not match.
    Rejected,
}

/// The password hashes, loaded at start-up and saved atomically on every change.
#[derive(Debug)]
pub struct PasswordBook {
    path: PathBuf,
    hashes: Mutex<BTreeMap<String, String>>,
    /// Serializes first-time sets, so two racing first attempts cannot both "set" a password.
    setting: tokio::sync::Mutex<()>,
}

impl PasswordBook {
    /// Loads `path`; a missing file is an empty book. A damaged one is an error: starting
    /// without it would let anyone set a new password for every id. Blocking.
    pub fn open(path: &Path) -> Result<PasswordBook, StoreError> {
        let hashes = match std::fs::read(path) {
            Ok(bytes) => parse(&bytes).map_err(|reason| StoreError::Corrupt {
                path: path.to_owned(),
                reason,
            })?,
            Err(err) if err.kind() == io::ErrorKind::NotFound => BTreeMap::new(),
            Err(err) => return Err(StoreError::io("cannot read", path)(err)),
        };
        Ok(PasswordBook {
            path: path.to_owned(),
            hashes: Mutex::new(hashes),
            setting: tokio::sync::Mutex::new(()),
        })
    }

    /// Checks `password` for `id`, or sets it if `id` has none yet.
    pub async fn check_or_set(
        &self,
        id: &RecordId,
        password: &str,
    ) -> Result<AuthOutcome, StoreError> {
        if let Some(hash) = self.hash_of(id) {
            return check(password, hash).await;
        }
        let _setting = self.setting.lock().await;
        if let Some(hash) = self.hash_of(id) {
            return check(password, hash).await; // set by a racing attempt
        }
        let hash = hash_password(password.to_owned()).await?;
        let bytes = {
            let mut hashes = self.lock();
            hashes.insert(id.to_string(), hash);
            serde_json::to_vec_pretty(&*hashes).expect("a map of strings serializes")
        };
        if let Err(err) = blocking_write(self.path.clone(), bytes).await {
            self.lock().remove(id.as_str());
            return Err(err);
        }
        Ok(AuthOutcome::PasswordSet)
    }

    fn hash_of(&self, id: &RecordId) -> Option<String> {
        self.lock().get(id.as_str()).cloned()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, String>> {
        self.hashes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

async fn check(password: &str, hash: String) -> Result<AuthOutcome, StoreError> {
    Ok(if verify_password(password.to_owned(), hash).await? {
        AuthOutcome::Accepted
    } else {
        AuthOutcome::Rejected
    })
}

fn parse(bytes: &[u8]) -> Result<BTreeMap<String, String>, String> {
    let hashes: BTreeMap<String, String> =
        serde_json::from_slice(bytes).map_err(|err| err.to_string())?;
    match hashes.iter().find(|(_, hash)| !is_password_hash(hash)) {
        Some((id, _)) => Err(format!("the entry for {id:?} is not a password hash")),
        None => Ok(hashes),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(text: &str) -> RecordId {
        RecordId::parse(text).unwrap()
    }

    #[tokio::test]
    async fn the_first_password_sets_later_ones_are_checked_and_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(PASSWORD_FILE);
        let book = PasswordBook::open(&path).unwrap();
        let alice = id("alice");
        assert_eq!(
            book.check_or_set(&alice, "s3cret").await.unwrap(),
            AuthOutcome::PasswordSet
        );
        assert_eq!(
            book.check_or_set(&alice, "s3cret").await.unwrap(),
            AuthOutcome::Accepted
        );
        assert_eq!(
            book.check_or_set(&alice, "guess").await.unwrap(),
            AuthOutcome::Rejected
        );

        let stored = std::fs::read_to_string(&path).unwrap();
        assert!(
            stored.contains("$argon2id$") && !stored.contains("s3cret"),
            "{stored}"
        );
        let reopened = PasswordBook::open(&path).unwrap();
        assert_eq!(
            reopened.check_or_set(&alice, "guess").await.unwrap(),
            AuthOutcome::Rejected
        );
        assert_eq!(
            reopened.check_or_set(&alice, "s3cret").await.unwrap(),
            AuthOutcome::Accepted
        );
    }

    #[tokio::test]
    async fn racing_first_attempts_set_one_password() {
        let dir = tempfile::tempdir().unwrap();
        let book =
            std::sync::Arc::new(PasswordBook::open(&dir.path().join(PASSWORD_FILE)).unwrap());
        let attempts = ["one", "two"].map(|password| {
            let book = std::sync::Arc::clone(&book);
            tokio::spawn(async move { book.check_or_set(&id("bob"), password).await.unwrap() })
        });
        let mut outcomes = Vec::new();
        for attempt in attempts {
            outcomes.push(attempt.await.unwrap());
        }
        outcomes.sort_by_key(|o| *o as u8);
        assert_eq!(outcomes, [AuthOutcome::PasswordSet, AuthOutcome::Rejected]);
    }

    #[test]
    fn a_damaged_password_file_stops_start_up() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(PASSWORD_FILE);
        for damaged in [&b"{not json"[..], br#"{"alice": "plaintext"}"#] {
            std::fs::write(&path, damaged).unwrap();
            let err = PasswordBook::open(&path).unwrap_err();
            assert!(
                err.to_string().contains("passwords.json is damaged"),
                "{err}"
            );
        }
    }
}
