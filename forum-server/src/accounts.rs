//! The forum's accounts, in `DATA_DIR/credentials.txt`: one `username secret` line per account,
//! as the assignment's file had them, except that the secret is an argon2id hash.
//!
//! The assignment shipped the file with plaintext passwords. Those lines are accepted at
//! start-up, hashed, and the file rewritten atomically before the server answers anyone, so no
//! password stays on disk in clear; passwords are never logged either.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use server_kit::atomic_file::DiskTrouble;
use server_kit::password::{
    hash_password, hash_password_blocking, is_password_hash, verify_password,
};
use thiserror::Error;
use tracing::info;

use crate::names::{InvalidName, check_password, check_username};

/// The accounts file's name in the data folder.
pub const CREDENTIALS_FILE: &str = "credentials.txt";

/// What can go wrong with the accounts.
#[derive(Debug, Error)]
pub enum AccountError {
    /// The credentials file has a line that is not `username secret`.
    #[error("{path}:{line}: {reason}")]
    BadLine {
        /// The file.
        path: PathBuf,
        /// The line number, from 1.
        line: usize,
        /// What is wrong.
        reason: String,
    },
    /// The account exists already.
    #[error("The username {0} is already taken")]
    Taken(String),
    /// A username or password that cannot be stored.
    #[error(transparent)]
    Invalid(#[from] InvalidName),
    /// Hashing failed.
    #[error(transparent)]
    Password(#[from] server_kit::password::PasswordError),
    /// The file could not be read or written.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// What the system said.
        source: io::Error,
    },
}

impl AccountError {
    /// What is wrong with the disk, when the accounts file could not be written because it is
    /// full or read-only.
    pub fn disk_trouble(&self) -> Option<DiskTrouble> {
        match self {
            AccountError::Io { source, .. } => DiskTrouble::of(source),
            _ => None,
        }
    }
}

/// The accounts: usernames with their password hashes, in file order.
#[derive(Debug)]
pub struct Accounts {
    path: PathBuf,
    entries: Mutex<Vec<(String, String)>>,
}

impl Accounts {
    /// Loads `path` (missing: no accounts yet), hashing and rewriting plaintext lines. Blocking.
    pub fn open(path: &Path) -> Result<Accounts, AccountError> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(err) if err.kind() == io::ErrorKind::NotFound => String::new(),
            Err(source) => return Err(io_error("cannot read", path, source)),
        };
        let (entries, upgraded) = parse(path, &text)?;
        let accounts = Accounts {
            path: path.to_owned(),
            entries: Mutex::new(entries),
        };
        if upgraded > 0 {
            accounts.save(&accounts.lock())?;
            info!(
                "{upgraded} plaintext passwords in {} replaced by argon2 hashes",
                path.display()
            );
        }
        Ok(accounts)
    }

    /// Whether `username` has an account.
    pub fn contains(&self, username: &str) -> bool {
        self.hash_of(username).is_some()
    }

    /// How many accounts there are.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether `password` is the password of `username` (false for an unknown username).
    pub async fn verify(&self, username: &str, password: &str) -> Result<bool, AccountError> {
        match self.hash_of(username) {
            Some(hash) => Ok(verify_password(password.to_owned(), hash).await?),
            None => Ok(false),
        }
    }

    /// Creates the account `username` with `password`, saved before this returns.
    pub async fn create(&self, username: &str, password: &str) -> Result<(), AccountError> {
        check_username(username)?;
        check_password(password)?;
        let hash = hash_password(password.to_owned()).await?;
        // The file is rewritten under the lock (no await inside): account creations are rare,
        // and two of them must not save over each other.
        let mut entries = self.lock();
        if entries.iter().any(|(name, _)| name == username) {
            return Err(AccountError::Taken(username.to_owned()));
        }
        entries.push((username.to_owned(), hash));
        if let Err(err) = self.save(&entries) {
            entries.pop();
            return Err(err);
        }
        Ok(())
    }

    fn hash_of(&self, username: &str) -> Option<String> {
        self.lock()
            .iter()
            .find(|(name, _)| name == username)
            .map(|(_, hash)| hash.clone())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(String, String)>> {
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn save(&self, entries: &[(String, String)]) -> Result<(), AccountError> {
        let text: String = entries
            .iter()
            .map(|(name, hash)| format!("{name} {hash}\n"))
            .collect();
        server_kit::write_atomically(&self.path, text.as_bytes())
            .map_err(|source| io_error("cannot write", &self.path, source))
    }
}

fn io_error(action: &'static str, path: &Path, source: io::Error) -> AccountError {
    AccountError::Io {
        action,
        path: path.to_owned(),
        source,
    }
}

/// The accounts in `text`, with plaintext passwords hashed, and how many were.
fn parse(path: &Path, text: &str) -> Result<(Vec<(String, String)>, usize), AccountError> {
    let mut entries: Vec<(String, String)> = Vec::new();
    let mut upgraded = 0;
    for (index, line) in text.lines().enumerate() {
        let bad = |reason: String| AccountError::BadLine {
            path: path.to_owned(),
            line: index + 1,
            reason,
        };
        let words: Vec<&str> = line.split_whitespace().collect();
        let (name, secret) = match words[..] {
            [] => continue,
            [name, secret] => (name, secret),
            _ => return Err(bad("expected `username password`".into())),
        };
        check_username(name).map_err(|err| bad(err.to_string()))?;
        if entries.iter().any(|(known, _)| known == name) {
            return Err(bad(format!("the username {name} is listed twice")));
        }
        let hash = if is_password_hash(secret) {
            secret.to_owned()
        } else {
            upgraded += 1;
            hash_password_blocking(secret)?
        };
        entries.push((name.to_owned(), hash));
    }
    Ok((entries, upgraded))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn plaintext_lines_are_hashed_and_the_file_rewritten() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(CREDENTIALS_FILE);
        std::fs::write(&path, "Yoda jedi*knight\nObi-wan r2d2\n\n").unwrap();
        let accounts = Accounts::open(&path).unwrap();
        let stored = std::fs::read_to_string(&path).unwrap();
        assert!(
            !stored.contains("jedi*knight") && !stored.contains("r2d2"),
            "{stored}"
        );
        assert_eq!(stored.lines().count(), 2);
        assert!(stored.starts_with("Yoda $argon2id$"));
        assert!(accounts.verify("Yoda", "jedi*knight").await.unwrap());
        assert!(!accounts.verify("Yoda", "r2d2").await.unwrap());
        assert!(!accounts.verify("Vader", "x").await.unwrap());

        let reopened = Accounts::open(&path).unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            stored,
            "hashes kept as they are"
        );
        assert!(reopened.verify("Obi-wan", "r2d2").await.unwrap());
    }

    #[tokio::test]
    async fn new_accounts_are_saved_and_names_are_unique() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(CREDENTIALS_FILE);
        let accounts = Accounts::open(&path).unwrap();
        assert!(accounts.is_empty());
        accounts.create("Hans", "falcon").await.unwrap();
        let err = accounts.create("Hans", "other").await.unwrap_err();
        assert_eq!(err.to_string(), "The username Hans is already taken");
        assert!(accounts.create("bad name", "x").await.is_err());
        assert!(accounts.create("Leia", "two words").await.is_err());
        let reopened = Accounts::open(&path).unwrap();
        assert_eq!(reopened.len(), 1);
        assert!(reopened.verify("Hans", "falcon").await.unwrap());
    }

    #[test]
    fn a_malformed_file_names_its_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(CREDENTIALS_FILE);
        for (text, line, why) in [
            ("Yoda a\nonlyname\n", 2, "expected `username password`"),
            ("Yoda a b\n", 1, "expected"),
            ("Yoda a\nYoda b\n", 2, "listed twice"),
            (".x a\n", 1, "may not start with '.'"),
        ] {
            std::fs::write(&path, text).unwrap();
            let err = Accounts::open(&path).unwrap_err().to_string();
            assert!(err.contains(&format!("credentials.txt:{line}:")), "{err}");
            assert!(err.contains(why), "{err}");
        }
    }
}
