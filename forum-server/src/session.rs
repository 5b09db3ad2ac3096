//! One client's conversation with the forum, whatever carries it (UDP or TCP): the log-in steps
//! of the seed, then the commands. [`Session::handle`] takes one envelope and returns the reply;
//! the transport sends it, and arranges the file transfers a reply asks for.
//!
//! Log-in, as in the seed: the client sends `user` with the username; the server asks `pw` for
//! an existing account or `newPw` for a new one; a right password (or a valid new one) gives
//! `done`, a wrong one sends the client back to `user` after a pause that doubles with each
//! failure on the session. An account logged in on another client is refused at `user` with a
//! message saying so. Each logged-in account is registered in [`Forum`] until its session ends
//! (XIT, idle timeout, lost connection, shutdown: the registration goes when the session is
//! dropped).
//!
//! Every reply is `{ username, cmd, args }` with `cmd` one of `done`, `no-thread`, `no-msg`,
//! `file-error`, `error` (args: the reason), `user`/`pw`/`newPw` during log-in, or, for UPD and
//! DWN, a [`Transfer`] the transport turns into `TCP-open`. A change or a new account the disk
//! refuses (full, read-only) is answered with the reason (`The change was not saved: the
//! server's disk is full`); the session goes on.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use protocol::forum::{Cmd, Envelope};
use server_kit::atomic_file::DiskTrouble;
use server_kit::password::failure_delay;
use tracing::{info, warn};

use crate::accounts::{AccountError, Accounts, CREDENTIALS_FILE};
use crate::names::check_username;
use crate::store::{ForumStore, Refusal, StoreError};

/// The forum: accounts, threads, and who is logged in.
#[derive(Debug)]
pub struct Forum {
    accounts: Accounts,
    store: ForumStore,
    online: Mutex<HashSet<String>>,
    /// Wrong passwords in a row, per account, across sessions: a guesser gains nothing by
    /// reconnecting. Only existing accounts get here, so the map is bounded by them.
    failed_logins: Mutex<HashMap<String, u32>>,
    failure_delay: Duration,
    admin_password: Option<String>,
}

impl Forum {
    /// Opens the forum in `data_dir` (accounts in `credentials.txt`). Blocking.
    pub fn open(
        data_dir: &Path,
        admin_password: Option<String>,
    ) -> Result<Forum, crate::ForumOpenError> {
        Ok(Forum {
            accounts: Accounts::open(&data_dir.join(CREDENTIALS_FILE))?,
            store: ForumStore::open(data_dir)?,
            online: Mutex::new(HashSet::new()),
            failed_logins: Mutex::new(HashMap::new()),
            failure_delay: Duration::from_secs(1),
            admin_password,
        })
    }

    /// Sets the pause before answering a first wrong password (it doubles per failure).
    pub fn with_failure_delay(mut self, delay: Duration) -> Forum {
        self.failure_delay = delay;
        self
    }

    /// The threads and uploads.
    pub fn store(&self) -> &ForumStore {
        &self.store
    }

    /// The accounts.
    pub fn accounts(&self) -> &Accounts {
        &self.accounts
    }

    /// Whether `user` is logged in on some client.
    pub fn is_online(&self, user: &str) -> bool {
        self.online().contains(user)
    }

    fn online(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.online.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Counts one more wrong password for `user`; returns how many in a row.
    fn count_failed_login(&self, user: &str) -> u32 {
        let mut failed = self
            .failed_logins
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let count = failed.entry(user.to_owned()).or_insert(0);
        *count = count.saturating_add(1);
        *count
    }

    /// Forgets `user`'s wrong passwords, after a right one.
    fn clear_failed_logins(&self, user: &str) {
        let mut failed = self
            .failed_logins
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        failed.remove(user);
    }
}

/// A file body the transport must move over its TCP side channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transfer {
    /// UPD accepted: receive the body, then [`ForumStore::commit_upload`] it.
    Upload {
        /// The thread.
        title: String,
        /// The file's name in the thread.
        file: String,
    },
    /// DWN accepted: send the body of this file.
    Download {
        /// The thread.
        title: String,
        /// The file's name in the thread.
        file: String,
        /// Where its body is.
        path: PathBuf,
    },
}

/// What the transport does after a reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// Send this envelope and read on.
    Send(Envelope),
    /// Arrange this transfer, send `TCP-open` with its port and token, read on.
    Transfer(Transfer),
    /// Send this envelope, then end the session (XIT).
    Goodbye(Envelope),
    /// Send this envelope to every client and shut the server down (SHT).
    Shutdown(Envelope),
}

/// Where the log-in stands.
#[derive(Debug)]
enum Stage {
    AskUser,
    AskPassword(String),
    AskNewPassword(String),
    LoggedIn(LoggedIn),
}

/// A registration in [`Forum`]'s online set, removed when dropped.
#[derive(Debug)]
struct LoggedIn {
    forum: Arc<Forum>,
    user: String,
}

impl Drop for LoggedIn {
    fn drop(&mut self) {
        self.forum.online().remove(&self.user);
        info!("{} logged out", self.user);
    }
}

/// One client's session.
#[derive(Debug)]
pub struct Session {
    forum: Arc<Forum>,
    stage: Stage,
}

impl Session {
    /// A session at the start of log-in.
    pub fn new(forum: Arc<Forum>) -> Session {
        Session {
            forum,
            stage: Stage::AskUser,
        }
    }

    /// The logged-in username, once there is one.
    pub fn user(&self) -> Option<&str> {
        match &self.stage {
            Stage::LoggedIn(logged_in) => Some(&logged_in.user),
            _ => None,
        }
    }

    /// The reply to one envelope from the client.
    pub async fn handle(&mut self, envelope: Envelope) -> Reply {
        match std::mem::replace(&mut self.stage, Stage::AskUser) {
            Stage::LoggedIn(logged_in) => {
                let user = logged_in.user.clone();
                self.stage = Stage::LoggedIn(logged_in);
                self.command(&user, envelope).await
            }
            Stage::AskUser => self.on_username(envelope),
            Stage::AskPassword(user) => self.on_password(user, envelope).await,
            Stage::AskNewPassword(user) => self.on_new_password(user, envelope).await,
        }
    }

    fn on_username(&mut self, envelope: Envelope) -> Reply {
        let Some(user) = single_arg(&envelope, Cmd::User) else {
            return ask(Cmd::User, "Enter your username first");
        };
        if let Err(invalid) = check_username(&user) {
            return ask(Cmd::User, &invalid.to_string());
        }
        if self.forum.is_online(&user) {
            return ask(Cmd::User, &format!("{user} is already logged in"));
        }
        if self.forum.accounts.contains(&user) {
            self.stage = Stage::AskPassword(user);
            ask(Cmd::Pw, "Enter password")
        } else {
            self.stage = Stage::AskNewPassword(user);
            ask(Cmd::NewPw, "Enter new password")
        }
    }

    async fn on_password(&mut self, user: String, envelope: Envelope) -> Reply {
        let Some(password) = single_arg(&envelope, Cmd::Pw) else {
            self.stage = Stage::AskPassword(user);
            return ask(Cmd::Pw, "Enter password");
        };
        match self.forum.accounts.verify(&user, &password).await {
            Ok(true) => self.log_in(user),
            Ok(false) => {
                let failures = self.forum.count_failed_login(&user);
                warn!("{user} failed to log in ({failures} in a row)");
                tokio::time::sleep(failure_delay(self.forum.failure_delay, failures)).await;
                ask(Cmd::User, "Invalid password")
            }
            Err(err) => internal_error(&err),
        }
    }

    async fn on_new_password(&mut self, user: String, envelope: Envelope) -> Reply {
        let Some(password) = single_arg(&envelope, Cmd::NewPw) else {
            self.stage = Stage::AskNewPassword(user);
            return ask(Cmd::NewPw, "Enter new password");
        };
        match self.forum.accounts.create(&user, &password).await {
            Ok(()) => {
                info!("New account {user}");
                self.log_in(user)
            }
            Err(AccountError::Invalid(invalid)) => {
                self.stage = Stage::AskNewPassword(user);
                ask(Cmd::NewPw, &invalid.to_string())
            }
            Err(AccountError::Taken(_)) => {
                ask(Cmd::User, "That username was just taken; choose another")
            }
            Err(err) => match err.disk_trouble() {
                Some(trouble) => {
                    warn!("the account {user} was not created: {err}");
                    ask(
                        Cmd::User,
                        &format!("The account was not created: {}", trouble.describe()),
                    )
                }
                None => internal_error(&err),
            },
        }
    }

    fn log_in(&mut self, user: String) -> Reply {
        if !self.forum.online().insert(user.clone()) {
            return ask(Cmd::User, &format!("{user} is already logged in"));
        }
        info!("{user} successful login");
        self.forum.clear_failed_logins(&user);
        self.stage = Stage::LoggedIn(LoggedIn {
            forum: Arc::clone(&self.forum),
            user: user.clone(),
        });
        Reply::Send(Envelope::new(
            user.as_str(),
            Cmd::Done.as_str(),
            [format!("Welcome to the forum, {user}")],
        ))
    }

    async fn command(&mut self, user: &str, envelope: Envelope) -> Reply {
        info!("{user} issued {} command", envelope.cmd.escape_debug());
        let args = envelope.args;
        let cmd: Option<Cmd> = envelope.cmd.parse().ok();
        let forum = Arc::clone(&self.forum);
        let user_owned = user.to_owned();
        match cmd {
            Some(Cmd::Xit) => {
                // Logged out before the goodbye leaves: the client may log in again at once.
                self.stage = Stage::AskUser;
                Reply::Goodbye(done(user, [format!("Goodbye, {user}")]))
            }
            Some(Cmd::Sht) => self.shutdown(user, &args),
            Some(cmd @ (Cmd::Upd | Cmd::Dwn)) => transfer(&forum, user, cmd, &args).await,
            Some(cmd) => {
                let outcome = tokio::task::spawn_blocking(move || {
                    run_command(&forum.store, cmd, &user_owned, &args)
                })
                .await
                .unwrap_or_else(|err| Err(CommandError::Internal(err.to_string())));
                reply_of(user, outcome)
            }
            None => reply_of(
                user,
                Err(CommandError::Usage(format!(
                    "Unknown command {}; use one of CRT, MSG, DLT, EDT, LST, RDT, UPD, DWN, RMV, XIT",
                    envelope.cmd.escape_debug()
                ))),
            ),
        }
    }

    fn shutdown(&self, user: &str, args: &[String]) -> Reply {
        let given = args.first().map(String::as_str);
        match (&self.forum.admin_password, given) {
            (Some(expected), Some(given)) if args.len() == 1 && expected == given => {
                warn!("{user} shut the server down");
                Reply::Shutdown(done(
                    user,
                    [format!("The server is shutting down ({user} asked)")],
                ))
            }
            (None, _) => reply_of(
                user,
                Err(CommandError::Usage(
                    "SHT is not enabled on this server".into(),
                )),
            ),
            _ => reply_of(
                user,
                Err(CommandError::Usage("Wrong admin password".into())),
            ),
        }
    }
}

/// Why a command failed.
#[derive(Debug)]
enum CommandError {
    /// Refused by the forum.
    Refused(Refusal),
    /// Wrong arguments.
    Usage(String),
    /// The disk refused the change (full, read-only): the reason the client is told, and the
    /// whole error for the log.
    Disk(DiskTrouble, String),
    /// The server's fault.
    Internal(String),
}

impl From<StoreError> for CommandError {
    fn from(err: StoreError) -> Self {
        match (err.disk_trouble(), err) {
            (_, StoreError::Refused(refusal)) => CommandError::Refused(refusal),
            (Some(trouble), other) => CommandError::Disk(trouble, other.to_string()),
            (None, other) => CommandError::Internal(other.to_string()),
        }
    }
}

/// Runs a thread command against the store: the `done` arguments.
fn run_command(
    store: &ForumStore,
    cmd: Cmd,
    user: &str,
    args: &[String],
) -> Result<Vec<String>, CommandError> {
    let arg = |i: usize| args[i].as_str();
    match (cmd, args.len()) {
        (Cmd::Crt, 1) => {
            store.create_thread(arg(0), user)?;
            Ok(vec![format!("Thread {} created", arg(0))])
        }
        (Cmd::Msg, 2) => {
            let number = store.post(arg(0), user, arg(1))?;
            Ok(vec![format!(
                "Message {number} posted to {} thread",
                arg(0)
            )])
        }
        (Cmd::Dlt, 2) => {
            store.delete(arg(0), user, arg(1))?;
            Ok(vec!["The message has been deleted".into()])
        }
        (Cmd::Edt, 3) => {
            store.edit(arg(0), user, arg(1), arg(2))?;
            Ok(vec!["The message has been edited".into()])
        }
        (Cmd::Lst, 0) => {
            let titles = store.list()?;
            Ok(if titles.is_empty() {
                vec!["No threads to list".into()]
            } else {
                titles
            })
        }
        (Cmd::Rdt, 1) => {
            let lines = store.read(arg(0))?;
            Ok(if lines.is_empty() {
                vec![format!("Thread {} is empty", arg(0))]
            } else {
                lines
            })
        }
        (Cmd::Rmv, 1) => {
            store.remove(arg(0), user)?;
            Ok(vec![format!("Thread {} removed", arg(0))])
        }
        (Cmd::Crt | Cmd::Msg | Cmd::Dlt | Cmd::Edt | Cmd::Lst | Cmd::Rdt | Cmd::Rmv, _) => {
            Err(CommandError::Usage(format!("Usage: {}", usage(cmd))))
        }
        _ => Err(CommandError::Usage(format!(
            "{} is not a client command",
            cmd.as_str()
        ))),
    }
}

/// The usage line of a client command.
pub fn usage(cmd: Cmd) -> &'static str {
    match cmd {
        Cmd::Crt => "CRT threadtitle",
        Cmd::Msg => "MSG threadtitle message",
        Cmd::Dlt => "DLT threadtitle messagenumber",
        Cmd::Edt => "EDT threadtitle messagenumber message",
        Cmd::Lst => "LST",
        Cmd::Rdt => "RDT threadtitle",
        Cmd::Upd => "UPD threadtitle filename",
        Cmd::Dwn => "DWN threadtitle filename",
        Cmd::Rmv => "RMV threadtitle",
        Cmd::Xit => "XIT",
        Cmd::Sht => "SHT adminpassword",
        _ => "",
    }
}

/// UPD or DWN: checks the request against the store (off the async runtime) and turns it into
/// the [`Transfer`] the transport arranges, or the store's refusal.
async fn transfer(forum: &Arc<Forum>, user: &str, cmd: Cmd, args: &[String]) -> Reply {
    let [title, file] = args else {
        return reply_of(
            user,
            Err(CommandError::Usage(format!("Usage: {}", usage(cmd)))),
        );
    };
    let (forum, title, file) = (Arc::clone(forum), title.clone(), file.clone());
    let checked = tokio::task::spawn_blocking(move || match cmd {
        Cmd::Upd => forum
            .store
            .check_upload(&title, &file)
            .map(|()| Transfer::Upload { title, file }),
        _ => forum
            .store
            .download_path(&title, &file)
            .map(|path| Transfer::Download { title, file, path }),
    })
    .await;
    match checked {
        Ok(Ok(transfer)) => Reply::Transfer(transfer),
        Ok(Err(err)) => reply_of(user, Err(err.into())),
        Err(err) => reply_of(user, Err(CommandError::Internal(err.to_string()))),
    }
}

fn reply_of(user: &str, outcome: Result<Vec<String>, CommandError>) -> Reply {
    match outcome {
        Ok(args) => Reply::Send(done(user, args)),
        Err(CommandError::Refused(refusal)) => Reply::Send(Envelope::new(
            user,
            refusal.status().as_str(),
            [refusal.to_string()],
        )),
        Err(CommandError::Usage(reason)) => {
            Reply::Send(Envelope::new(user, Cmd::Error.as_str(), [reason]))
        }
        Err(CommandError::Disk(trouble, error)) => {
            warn!("command of {user} failed: {error}");
            Reply::Send(Envelope::new(
                user,
                Cmd::Error.as_str(),
                [format!("The change was not saved: {}", trouble.describe())],
            ))
        }
        Err(CommandError::Internal(reason)) => {
            warn!("command of {user} failed: {reason}");
            Reply::Send(Envelope::new(
                user,
                Cmd::Error.as_str(),
                ["The server failed to carry out the command; try again later"],
            ))
        }
    }
}

fn done(user: &str, args: impl IntoIterator<Item = impl Into<String>>) -> Envelope {
    Envelope::new(user, Cmd::Done.as_str(), args)
}

/// A log-in prompt: `cmd` with one line of explanation.
fn ask(cmd: Cmd, message: &str) -> Reply {
    Reply::Send(Envelope::new("", cmd.as_str(), [message]))
}

fn internal_error(err: &AccountError) -> Reply {
    warn!("log-in failed: {err}");
    ask(
        Cmd::User,
        "The server could not check the account; try again later",
    )
}

/// The one argument of a log-in step, if `envelope` is that step.
fn single_arg(envelope: &Envelope, step: Cmd) -> Option<String> {
    match &envelope.args[..] {
        [value] if envelope.cmd == step.as_str() => Some(value.clone()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn forum(dir: &Path) -> Arc<Forum> {
        let forum = Forum::open(dir, Some("sekrit".into())).unwrap();
        Arc::new(forum.with_failure_delay(Duration::from_millis(10)))
    }

    fn env(cmd: &str, args: &[&str]) -> Envelope {
        Envelope::new("", cmd, args.iter().copied())
    }

    /// The envelope of a `Send` reply, as (cmd, args).
    fn sent(reply: Reply) -> (String, Vec<String>) {
        match reply {
            Reply::Send(envelope) | Reply::Goodbye(envelope) | Reply::Shutdown(envelope) => {
                (envelope.cmd, envelope.args)
            }
            other => panic!("not an envelope: {other:?}"),
        }
    }

    async fn logged_in(forum: &Arc<Forum>, user: &str, password: &str) -> Session {
        let mut session = Session::new(Arc::clone(forum));
        let (cmd, _) = sent(session.handle(env("user", &[user])).await);
        let step = if cmd == "newPw" { "newPw" } else { "pw" };
        let (cmd, args) = sent(session.handle(env(step, &[password])).await);
        assert_eq!(cmd, "done", "{args:?}");
        session
    }

    #[tokio::test]
    async fn log_in_creates_accounts_checks_passwords_and_refuses_a_second_login() {
        let dir = tempfile::tempdir().unwrap();
        let forum = forum(dir.path());
        let mut yoda = Session::new(Arc::clone(&forum));
        assert_eq!(sent(yoda.handle(env("user", &["Yoda"])).await).0, "newPw");
        let (cmd, args) = sent(yoda.handle(env("newPw", &["jedi"])).await);
        assert_eq!(
            (cmd.as_str(), args[0].as_str()),
            ("done", "Welcome to the forum, Yoda")
        );
        assert_eq!(yoda.user(), Some("Yoda"));

        let mut other = Session::new(Arc::clone(&forum));
        let (cmd, args) = sent(other.handle(env("user", &["Yoda"])).await);
        assert_eq!(
            (cmd.as_str(), args[0].as_str()),
            ("user", "Yoda is already logged in")
        );

        assert!(matches!(
            yoda.handle(env("XIT", &[])).await,
            Reply::Goodbye(_)
        ));
        assert!(!forum.is_online("Yoda"), "logged out by XIT itself");
        assert_eq!(yoda.user(), None);
        assert_eq!(sent(other.handle(env("user", &["Yoda"])).await).0, "pw");
        let (cmd, args) = sent(other.handle(env("pw", &["sith"])).await);
        assert_eq!(
            (cmd.as_str(), args[0].as_str()),
            ("user", "Invalid password")
        );
        assert_eq!(sent(other.handle(env("user", &["Yoda"])).await).0, "pw");
        assert_eq!(sent(other.handle(env("pw", &["jedi"])).await).0, "done");
        let stored = std::fs::read_to_string(dir.path().join(CREDENTIALS_FILE)).unwrap();
        assert!(!stored.contains("jedi"));
    }

    #[tokio::test]
    async fn commands_reply_with_the_seeds_statuses_and_reasons() {
        let dir = tempfile::tempdir().unwrap();
        let forum = forum(dir.path());
        let mut yoda = logged_in(&forum, "Yoda", "jedi").await;
        let mut obi = logged_in(&forum, "Obi-wan", "kenobi").await;
        let check =
            async |session: &mut Session, cmd: &str, args: &[&str], status: &str, first: &str| {
                let (got, reply) = sent(session.handle(env(cmd, args)).await);
                assert_eq!(
                    (got.as_str(), reply.first().map(String::as_str)),
                    (status, Some(first)),
                    "{cmd} {args:?}"
                );
            };
        check(&mut yoda, "LST", &[], "done", "No threads to list").await;
        check(&mut yoda, "CRT", &["3331"], "done", "Thread 3331 created").await;
        check(&mut obi, "CRT", &["3331"], "error", "Thread 3331 exists").await;
        check(
            &mut obi,
            "MSG",
            &["3331", "Hello there"],
            "done",
            "Message 1 posted to 3331 thread",
        )
        .await;
        check(
            &mut yoda,
            "EDT",
            &["3331", "1", "mine now"],
            "error",
            "The message belongs to another user and cannot be edited",
        )
        .await;
        check(
            &mut yoda,
            "DLT",
            &["3331", "7"],
            "no-msg",
            "Message number 7 does not exist in thread 3331",
        )
        .await;
        check(
            &mut yoda,
            "RDT",
            &["9999"],
            "no-thread",
            "Thread 9999 does not exist",
        )
        .await;
        check(
            &mut yoda,
            "RDT",
            &["3331"],
            "done",
            "1 Obi-wan: Hello there",
        )
        .await;
        check(
            &mut yoda,
            "DWN",
            &["3331", "x.bin"],
            "file-error",
            "File x.bin does not exist in thread 3331",
        )
        .await;
        check(&mut yoda, "CRT", &[], "error", "Usage: CRT threadtitle").await;
        check(
            &mut yoda,
            "FOO",
            &[],
            "error",
            "Unknown command FOO; use one of CRT, MSG, DLT, EDT, LST, RDT, UPD, DWN, RMV, XIT",
        )
        .await;
        check(
            &mut yoda,
            "SHT",
            &["guess"],
            "error",
            "Wrong admin password",
        )
        .await;
        check(
            &mut obi,
            "RMV",
            &["3331"],
            "error",
            "The thread was created by another user and cannot be removed",
        )
        .await;
        assert_eq!(
            yoda.handle(env("UPD", &["3331", "x.bin"])).await,
            Reply::Transfer(Transfer::Upload {
                title: "3331".into(),
                file: "x.bin".into()
            })
        );
        assert!(matches!(
            yoda.handle(env("SHT", &["sekrit"])).await,
            Reply::Shutdown(_)
        ));
    }
}
