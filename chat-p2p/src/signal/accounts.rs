//! The signaling server's accounts on disk: `DATA_DIR/accounts.json`, one object mapping each
//! username to its argon2id password hash (a PHC string) and its visibility:
//!
//! ```json
//! {"alice": {"password": "$argon2id$v=19$...", "visibility": "everyone"},
//!  "bob": {"password": "$argon2id$v=19$...", "visibility": {"allow": ["alice"]}}}
//! ```
//!
//! A missing file is an empty set of accounts; a damaged one (not this JSON, a name the server
//! would refuse, a password that is not a hash) is an error naming the file, so the server does
//! not start on top of it. The file is replaced atomically on every change.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

use protocol::p2p::signal::{MAX_ALLOW_LIST, Visibility};
use serde::{Deserialize, Serialize};

use crate::room::names::check_username;

/// The accounts file's name inside the data folder.
pub const ACCOUNTS_FILE: &str = "accounts.json";

/// One account as stored. No `Debug`: the hash stays out of logs.
#[derive(Clone, Serialize, Deserialize)]
pub(super) struct Account {
    /// The argon2id PHC string of the password.
    pub password: String,
    /// Who may see and reach the account's peer.
    #[serde(default = "everyone")]
    pub visibility: Visibility,
}

fn everyone() -> Visibility {
    Visibility::Everyone
}

/// Every account, by username.
pub(super) type Accounts = BTreeMap<String, Account>;

/// Where the accounts of `data_dir` live.
pub(super) fn accounts_path(data_dir: &Path) -> PathBuf {
    data_dir.join(ACCOUNTS_FILE)
}

/// Reads the accounts at `path` (creating its folder if need be); a missing file is none.
pub(super) async fn load(path: PathBuf) -> io::Result<Accounts> {
    tokio::task::spawn_blocking(move || load_blocking(&path))
        .await
        .map_err(io::Error::other)?
}

fn load_blocking(path: &Path) -> io::Result<Accounts> {
    if let Some(folder) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(folder)?;
    }
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(Accounts::new()),
        Err(err) => return Err(io::Error::new(err.kind(), named(path, &err))),
    };
    let accounts: Accounts = serde_json::from_slice(&bytes)
        .map_err(|err| damaged(path, &format!("not an accounts file: {err}")))?;
    for (name, account) in &accounts {
        check_account(name, account).map_err(|problem| damaged(path, &problem))?;
    }
    Ok(accounts)
}

/// What is wrong with a stored account, if anything.
fn check_account(name: &str, account: &Account) -> Result<(), String> {
    check_username(name.as_bytes()).map_err(|err| format!("account {name:?}: {err}"))?;
    if !server_kit::password::is_password_hash(&account.password) {
        return Err(format!(
            "account {name}: the password is not an argon2 hash"
        ));
    }
    check_visibility(&account.visibility).map_err(|err| format!("account {name}: {err}"))
}

/// Why a visibility cannot be kept, if it cannot: an allow-list of more than
/// [`MAX_ALLOW_LIST`] names or with a name no account could have.
pub(super) fn check_visibility(visibility: &Visibility) -> Result<(), String> {
    let Visibility::Allow(names) = visibility else {
        return Ok(());
    };
    if names.len() > MAX_ALLOW_LIST {
        return Err(format!(
            "the allow-list has {} names, more than {MAX_ALLOW_LIST}",
            names.len()
        ));
    }
    for name in names {
        check_username(name.as_bytes())
            .map_err(|err| format!("the allow-list holds an invalid username: {err}"))?;
    }
    Ok(())
}

fn named(path: &Path, err: &io::Error) -> String {
    format!("cannot read the accounts file {}: {err}", path.display())
}

fn damaged(path: &Path, problem: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("the accounts file {} is damaged: {problem}", path.display()),
    )
}

/// The file's content for `accounts`.
pub(super) fn to_json(accounts: &Accounts) -> io::Result<Vec<u8>> {
    let mut json = serde_json::to_vec_pretty(accounts).map_err(io::Error::other)?;
    json.push(b'\n');
    Ok(json)
}

/// Replaces the file at `path` with `contents`, atomically, on the blocking pool.
pub(super) async fn save(path: PathBuf, contents: Vec<u8>) -> io::Result<()> {
    tokio::task::spawn_blocking(move || server_kit::write_atomically(&path, &contents))
        .await
        .map_err(io::Error::other)?
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hash() -> String {
        server_kit::password::hash_password_blocking("secret").unwrap()
    }

    #[tokio::test]
    async fn a_saved_file_loads_back_and_a_missing_one_is_empty() {
        let dir = tempfile::tempdir().unwrap();
        let path = accounts_path(dir.path());
        assert!(load(path.clone()).await.unwrap().is_empty());
        let mut accounts = Accounts::new();
        let visibility = Visibility::Allow(vec!["bob".into()]);
        let account = Account {
            password: hash(),
            visibility: visibility.clone(),
        };
        accounts.insert("alice".into(), account);
        save(path.clone(), to_json(&accounts).unwrap())
            .await
            .unwrap();
        let loaded = load(path).await.unwrap();
        assert_eq!(loaded.len(), 1);
        assert_eq!(loaded["alice"].visibility, visibility);
    }

    #[tokio::test]
    async fn a_damaged_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = accounts_path(dir.path());
        let cases = [
            "{not json".to_owned(),
            r#"{"alice": {"password": "plaintext"}}"#.to_owned(),
            format!(r#"{{"": {{"password": "{}"}}}}"#, hash()),
        ];
        for content in cases {
            std::fs::write(&path, &content).unwrap();
            let err = load(path.clone()).await.err().expect(&content);
            assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{content}");
            let text = err.to_string();
            assert!(text.contains(&path.display().to_string()), "{text}");
        }
    }
}
