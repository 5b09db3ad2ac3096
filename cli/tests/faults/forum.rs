//! `cli forum serve` under faults.
//!
//! **Killed with SIGKILL.** Six users, each on a connection of its own, make 1,000 acknowledged
//! changes between them to three threads each: they create the thread, then post, edit and
//! delete their messages. The server is killed after 300 and after 650 acknowledged changes,
//! while commands are in flight, and once more after the last; each time it restarts on the same
//! folder, over UDP, then TCP, then UDP again. What must hold:
//!
//! - at once, before the restart: every thread file parses, and holds exactly its state after
//!   the last acknowledged change or after the change in flight (never a mixture, never cut
//!   short); every thread with an acknowledged change is there; `credentials.txt` parses and
//!   holds every account whose creation was acknowledged;
//! - after the restart: no temporary file is left in the data folder, `threads/` or
//!   `uploads/`; the users log in again with their passwords; and the server lists and reads
//!   every thread as it lies on disk.
//!
//! **A full or read-only disk** (a tmpfs in a [`Sandbox`]): posts, thread creations and edits,
//! new accounts and uploads are refused with a message that says what is wrong; reading,
//! listing, logging in and downloading keep working; once the disk is writable again, so is
//! everything else.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use forum_server::accounts::Accounts;
use forum_server::client::{ClientError, ForumClient, TransportKind};
use forum_server::thread::{Entry, Thread};
use protocol::forum::Envelope;
use tokio::runtime::Runtime;
use tokio::task::JoinHandle;

use crate::sandbox::{Disk, Sandbox};
use crate::{Killable, PATIENCE, forum_server_port, read_text, temporary_files};

/// Acknowledged changes in all.
const CHANGES: usize = 1000;
/// Users, each on its own connection.
const USERS: usize = 6;
/// Threads each user creates and changes, in turn.
const THREADS_PER_USER: usize = 3;
/// The acknowledged changes after which the server is killed, and the transport of each run.
const KILLS: [(usize, TransportKind); 3] = [
    (300, TransportKind::Udp),
    (650, TransportKind::Tcp),
    (CHANGES, TransportKind::Udp),
];

/// A thread as the clients know it: its messages' texts (all its creator's) after the last
/// acknowledged change, and after the change in flight when the server died.
#[derive(Debug, Default)]
struct Versions {
    acked: Option<Vec<String>>,
    in_flight: Option<Vec<String>>,
}

/// The clients' shared account of the changes.
#[derive(Debug, Default)]
struct Ledger {
    claimed: usize,
    acked: usize,
    /// Numbers every change, for texts that differ.
    serial: usize,
    threads: BTreeMap<String, Versions>,
    /// Users whose account creation was acknowledged.
    accounts: BTreeSet<String>,
}

type SharedLedger = Arc<Mutex<Ledger>>;

/// One change: the command, its arguments, and the thread's messages once it is done.
struct Change {
    title: String,
    cmd: &'static str,
    args: Vec<String>,
    after: Vec<String>,
}

#[test]
fn killed_in_the_middle_of_1000_changes_it_loses_no_acknowledged_change_and_tears_no_file() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let runtime = Runtime::new().unwrap();
    let ledger = SharedLedger::default();
    for (kill_after, transport) in KILLS {
        let mut server = start(&data, transport);
        runtime.block_on(check_served(&server, transport, &data));
        runtime.block_on(change_until_killed(
            &mut server,
            transport,
            &ledger,
            kill_after,
        ));
        let threads = threads_on_disk(&data.join("threads"));
        check_whole(&threads, &ledger.lock().unwrap());
        check_accounts(&data, &ledger.lock().unwrap());
        adopt(&threads, &mut ledger.lock().unwrap());
    }
    assert_eq!(ledger.lock().unwrap().acked, CHANGES);
    let restarted = start(&data, TransportKind::Tcp);
    runtime.block_on(check_served(&restarted, TransportKind::Tcp, &data));
}

fn start(data: &Path, transport: TransportKind) -> Killable {
    let flag = match transport {
        TransportKind::Udp => "--udp",
        TransportKind::Tcp => "--tcp",
    };
    Killable::start(
        &["forum", "serve", "--port", "0", flag],
        data,
        forum_server_port,
    )
}

/// Runs the users until `kill_after` changes are acknowledged, kills the server (checking that
/// changes were in flight, unless all are done), and stops the users: a change they were
/// waiting on stays in flight.
async fn change_until_killed(
    server: &mut Killable,
    transport: TransportKind,
    ledger: &SharedLedger,
    kill_after: usize,
) {
    let users: Vec<JoinHandle<()>> = (0..USERS)
        .map(|user| {
            let (addr, ledger) = (server.addr(), Arc::clone(ledger));
            tokio::spawn(async move { change(addr, transport, user, ledger).await })
        })
        .collect();
    if kill_after == CHANGES {
        for user in users {
            tokio::time::timeout(PATIENCE * 3, user)
                .await
                .unwrap()
                .unwrap();
        }
        server.kill();
        return;
    }
    loop {
        {
            let mut ledger = ledger.lock().unwrap();
            if ledger.acked >= kill_after {
                server.kill();
                assert!(
                    ledger.claimed > ledger.acked,
                    "no change in flight at the kill"
                );
                ledger.claimed = ledger.acked;
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    for user in users {
        // Over UDP nothing tells a client the server died: its request would wait seconds.
        user.abort();
        let _ = user.await;
    }
    // The changes in flight are settled by the checks on disk; the next run claims anew.
    let mut ledger = ledger.lock().unwrap();
    ledger.claimed = ledger.acked;
}

/// One user's session: log-in, then changes until all are claimed.
async fn change(addr: SocketAddr, transport: TransportKind, user: usize, ledger: SharedLedger) {
    let mut client = ForumClient::connect(addr, transport, PATIENCE)
        .await
        .expect("the server answers");
    let name = format!("user{user}");
    log_in(&mut client, &name, &ledger).await;
    for turn in 0.. {
        let Some(change) = claim(&ledger, &name, turn) else {
            return;
        };
        let args: Vec<&str> = change.args.iter().map(String::as_str).collect();
        let reply = client.request(change.cmd, &args).await;
        if !settle(&ledger, &change, reply) {
            return;
        }
    }
}

async fn log_in(client: &mut ForumClient, name: &str, ledger: &SharedLedger) {
    let password = format!("{name}-password");
    let step = client.request("user", &[name]).await.unwrap();
    if ledger.lock().unwrap().accounts.contains(name) {
        assert_eq!(step.cmd, "pw", "the account of {name} survives: {step:?}");
    }
    let done = client.request(&step.cmd, &[&password]).await.unwrap();
    assert_eq!(done.cmd, "done", "{done:?}");
    client.set_user(name);
    ledger.lock().unwrap().accounts.insert(name.to_owned());
}

/// The next change of `user`, recorded as in flight; `None` when all are claimed.
fn claim(ledger: &SharedLedger, user: &str, turn: usize) -> Option<Change> {
    let mut ledger = ledger.lock().unwrap();
    if ledger.claimed >= CHANGES {
        return None;
    }
    ledger.claimed += 1;
    ledger.serial += 1;
    let serial = ledger.serial;
    let title = format!("{user}t{}", turn % THREADS_PER_USER);
    let versions = ledger.threads.entry(title.clone()).or_default();
    let change = next_change(title, versions.acked.as_deref(), serial);
    versions.in_flight = Some(change.after.clone());
    Some(change)
}

/// CRT for a thread not there yet; otherwise now and then DLT or EDT of one of its messages,
/// mostly MSG.
fn next_change(title: String, messages: Option<&[String]>, serial: usize) -> Change {
    let Some(messages) = messages else {
        let args = vec![title.clone()];
        return Change {
            title,
            cmd: "CRT",
            args,
            after: Vec::new(),
        };
    };
    let mut after = messages.to_vec();
    let text = format!("change {serial}{}", " and so on".repeat(serial % 40));
    let number = serial % messages.len().max(1);
    let (cmd, args) = if messages.len() >= 4 && serial % 4 == 0 {
        after.remove(number);
        ("DLT", vec![title.clone(), (number + 1).to_string()])
    } else if !messages.is_empty() && serial % 3 == 0 {
        after[number].clone_from(&text);
        ("EDT", vec![title.clone(), (number + 1).to_string(), text])
    } else {
        after.push(text.clone());
        ("MSG", vec![title.clone(), text])
    };
    Change {
        title,
        cmd,
        args,
        after,
    }
}

/// Records the reply to a change; whether it was acknowledged. A refusal fails the test; an
/// error means the server died, and the change stays in flight.
fn settle(ledger: &SharedLedger, change: &Change, reply: Result<Envelope, ClientError>) -> bool {
    let mut ledger = ledger.lock().unwrap();
    match reply {
        Ok(reply) if reply.cmd == "done" => {
            ledger.acked += 1;
            let versions = ledger.threads.get_mut(&change.title).unwrap();
            versions.acked = versions.in_flight.take();
            true
        }
        Ok(refused) => panic!("{} {:?} refused: {refused:?}", change.cmd, change.args),
        Err(_server_died) => false,
    }
}

/// Every thread file in `threads`, parsed, by title; panics at one that does not parse.
fn threads_on_disk(threads: &Path) -> BTreeMap<String, Thread> {
    let temporary = temporary_files(threads);
    let mut parsed = BTreeMap::new();
    for entry in std::fs::read_dir(threads).unwrap() {
        let title = entry.unwrap().file_name().to_string_lossy().into_owned();
        if temporary.contains(&title) {
            continue;
        }
        let text = read_text(&threads.join(&title));
        let thread = Thread::parse(&text)
            .unwrap_or_else(|err| panic!("thread {title} is torn: {err}: {text:?}"));
        parsed.insert(title, thread);
    }
    parsed
}

/// The texts of a thread whose every line is a message of its creator `owner`.
fn texts(title: &str, thread: &Thread) -> Vec<String> {
    let owner = title.split_once('t').unwrap().0;
    assert_eq!(thread.creator, owner, "creator of {title}");
    thread
        .entries
        .iter()
        .map(|entry| match entry {
            Entry::Message { author, text } if author == owner => text.clone(),
            other => panic!("{title} holds {other:?}"),
        })
        .collect()
}

/// Every thread is its acknowledged or in-flight state; every acknowledged thread is there.
fn check_whole(threads: &BTreeMap<String, Thread>, ledger: &Ledger) {
    for (title, thread) in threads {
        let versions = ledger
            .threads
            .get(title)
            .unwrap_or_else(|| panic!("thread {title} was never created"));
        let texts = Some(texts(title, thread));
        assert!(
            texts == versions.acked || texts == versions.in_flight,
            "thread {title} is neither its acknowledged state nor the one in flight:\n{:?}\n{:?}\n{:?}",
            texts,
            versions.acked,
            versions.in_flight
        );
    }
    for (title, versions) in &ledger.threads {
        if versions.acked.is_some() {
            assert!(
                threads.contains_key(title),
                "acknowledged {title} is missing"
            );
        }
    }
}

/// `credentials.txt` parses and holds every account acknowledged.
fn check_accounts(data: &Path, ledger: &Ledger) {
    let accounts = Accounts::open(&data.join("credentials.txt")).expect("credentials.txt parses");
    for name in &ledger.accounts {
        assert!(accounts.contains(name), "the account of {name} is lost");
    }
}

/// After a restart: no temporary file is left, and the server lists and reads every thread as
/// it lies on disk.
async fn check_served(server: &Killable, transport: TransportKind, data: &Path) {
    for folder in [data.to_owned(), data.join("threads"), data.join("uploads")] {
        if folder.exists() {
            let left = temporary_files(&folder);
            assert!(left.is_empty(), "left in {}: {left:?}", folder.display());
        }
    }
    let threads = if data.join("threads").exists() {
        threads_on_disk(&data.join("threads"))
    } else {
        BTreeMap::new()
    };
    let mut client = ForumClient::connect(server.addr(), transport, PATIENCE)
        .await
        .unwrap();
    log_in(&mut client, "reader", &SharedLedger::default()).await;
    let listed = client.request("LST", &[]).await.unwrap();
    if threads.is_empty() {
        assert_eq!(listed.args, ["No threads to list"]);
    } else {
        assert_eq!(listed.args, threads.keys().cloned().collect::<Vec<_>>());
    }
    for (title, thread) in &threads {
        let read = client.request("RDT", &[title]).await.unwrap();
        let lines = thread.lines();
        if lines.is_empty() {
            assert_eq!(read.args, [format!("Thread {title} is empty")]);
        } else {
            assert_eq!(read.args, lines, "{title} served otherwise");
        }
    }
    client.close().await;
}

/// What is on disk is what the users build on next.
fn adopt(threads: &BTreeMap<String, Thread>, ledger: &mut Ledger) {
    for (title, versions) in &mut ledger.threads {
        versions.acked = threads.get(title).map(|thread| texts(title, thread));
        versions.in_flight = None;
    }
}

/// The words of the refusals on a faulty disk, and what the sandbox's shell does to fault and
/// to repair it.
const FAULTS: [(Disk, Disk, &str); 2] = [
    (Disk::Fill, Disk::Free, "the server's disk is full"),
    (
        Disk::ReadOnly,
        Disk::Writable,
        "the server's data folder is read-only",
    ),
];

#[test]
fn on_a_full_or_read_only_disk_changes_are_refused_with_the_reason_and_the_server_stays_up() {
    let mut sandbox = Sandbox::start(
        "256k",
        &["forum", "serve", "--port", "0", "--tcp"],
        forum_server_port,
    );
    let runtime = Runtime::new().unwrap();
    let addr: SocketAddr = ([127, 0, 0, 1], sandbox.port).into();
    let files = tempfile::tempdir().unwrap();
    let connect = || async {
        ForumClient::connect(addr, TransportKind::Tcp, PATIENCE)
            .await
            .unwrap()
    };
    let ledger = SharedLedger::default();
    let mut yoda = runtime.block_on(connect());
    runtime.block_on(log_in(&mut yoda, "Yoda", &ledger));
    let mut lines = vec!["1 Yoda: before the fault".to_owned()];
    runtime.block_on(async {
        expect_done(&mut yoda, "CRT", &["3331"]).await;
        expect_done(&mut yoda, "MSG", &["3331", "before the fault"]).await;
    });
    for (n, (fault, repair, reason)) in FAULTS.into_iter().enumerate() {
        sandbox.disk(fault);
        runtime.block_on(async {
            let refused = format!("The change was not saved: {reason}");
            expect_error(&mut yoda, &["MSG", "3331", "during the fault"], &refused).await;
            expect_error(&mut yoda, &["EDT", "3331", "1", "edited"], &refused).await;
            expect_error(&mut yoda, &["CRT", &format!("fault{n}")], &refused).await;
            let read = yoda.request("RDT", &["3331"]).await.unwrap();
            assert_eq!(read.args, lines, "{fault:?}: reads go on");
            let listed = yoda.request("LST", &[]).await.unwrap();
            assert_eq!(listed.args, ["3331"]);

            let mut newcomer = connect().await;
            let step = newcomer.request("user", &[&format!("new{n}")]).await;
            assert_eq!(step.unwrap().cmd, "newPw");
            let refusal = newcomer.request("newPw", &["secret"]).await.unwrap();
            let expected = format!("The account was not created: {reason}");
            assert_eq!(
                (refusal.cmd.as_str(), &refusal.args[..]),
                ("user", &[expected][..])
            );

            let upload = files.path().join(format!("notes{n}.txt"));
            std::fs::write(&upload, vec![b'n'; 100_000]).unwrap();
            match yoda.upload("3331", &upload, |_, _| {}).await {
                Err(ClientError::Transfer(message)) => {
                    assert_eq!(message, format!("notes{n}.txt was not saved: {reason}"));
                }
                other => panic!("{fault:?}: an upload gave {other:?}"),
            }
        });
        sandbox.assert_alive();

        sandbox.disk(repair);
        runtime.block_on(async {
            let text = format!("after {repair:?}");
            expect_done(&mut yoda, "MSG", &["3331", &text]).await;
            // Message 1 came before the faults, one more after each repair.
            lines.push(format!("{} Yoda: {text}", n + 2));
            let upload = files.path().join(format!("notes{n}.txt"));
            yoda.upload("3331", &upload, |_, _| {}).await.unwrap();
            lines.push(format!("Yoda uploaded notes{n}.txt"));
            let mut newcomer = connect().await;
            log_in(&mut newcomer, &format!("new{n}"), &ledger).await;
            let read = newcomer.request("RDT", &["3331"]).await.unwrap();
            assert_eq!(read.args, lines);
            let back = tempfile::tempdir().unwrap();
            let path = newcomer
                .download("3331", &format!("notes{n}.txt"), back.path(), |_, _| {})
                .await
                .unwrap();
            assert_eq!(std::fs::read(path).unwrap(), vec![b'n'; 100_000]);
        });
    }
}

async fn expect_done(client: &mut ForumClient, cmd: &str, args: &[&str]) {
    let reply = client.request(cmd, args).await.unwrap();
    assert_eq!(reply.cmd, "done", "{cmd} {args:?}: {reply:?}");
}

async fn expect_error(client: &mut ForumClient, command: &[&str], reason: &str) {
    let reply = client.request(command[0], &command[1..]).await.unwrap();
    assert_eq!(
        (reply.cmd.as_str(), &reply.args[..]),
        ("error", &[reason.to_owned()][..]),
        "{command:?}"
    );
}
