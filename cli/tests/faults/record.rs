//! `cli record-server` under faults.
//!
//! **Killed with SIGKILL.** Eight connections make 1,000 acknowledged writes between them, each
//! connection to twelve ids of its own, so every id is created and then updated about ten times,
//! with bodies from a few bytes to two pages. The server is killed after 300 and after 650
//! acknowledged writes, while writes are in flight, and once more after the last; each time it
//! is restarted on the same folder. What must hold:
//!
//! - at once, before the restart: every `<id>.txt` is whole, a `Last updated:` line followed by
//!   exactly the body of the id's last acknowledged write or of its write in flight (never a
//!   mixture, never cut short); `records.json` parses and lists every id with an acknowledged
//!   write; temporary files of writes in flight may be there;
//! - after the restart: no temporary file is left; `records.json` is consistent with the data
//!   files: it lists exactly the ids that have a `<id>.txt`, each with the timestamp of that
//!   file's `Last updated:` line (the updater finds stale records from it alone); and the server
//!   reads every record back as it lies on disk, so every acknowledged write is served.
//!
//! **A full or read-only disk** (a tmpfs in a [`Sandbox`]): a write is refused with an error
//! response that says what is wrong, the record it would have replaced is intact, reads, status
//! and new connections keep working, and once the disk is writable again writes succeed.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use record_server::index::RecordIndex;
use record_server::record_id::RecordId;
use record_server::timestamp::Timestamp;
use record_server::{ClientError, RecordClient, StudentRecord};
use tokio::runtime::Runtime;
use tokio::time::timeout;

use crate::sandbox::{Disk, Sandbox};
use crate::{Killable, PATIENCE, read_text, record_server_port, temporary_files};

/// Acknowledged writes in all.
const WRITES: usize = 1000;
/// Connections writing at once.
const CONNECTIONS: usize = 8;
/// Ids each connection writes, in turn.
const IDS_PER_CONNECTION: usize = 12;
/// The acknowledged writes after which the server is killed; the last is all of them.
const KILL_AFTER: [usize; 3] = [300, 650, WRITES];

/// What the clients know of one id: its last acknowledged body and the one written when the
/// server died (the body is the record after its `Last updated:` line, which the server writes).
#[derive(Debug, Default)]
struct Versions {
    acked: Option<String>,
    in_flight: Option<String>,
}

impl Versions {
    fn allows(&self, body: &str) -> bool {
        self.acked.as_deref() == Some(body) || self.in_flight.as_deref() == Some(body)
    }
}

/// The clients' shared account of the writes.
#[derive(Debug, Default)]
struct Ledger {
    /// Writes begun and not known to have failed.
    claimed: usize,
    acked: usize,
    /// Numbers every write, for bodies that differ.
    serial: usize,
    ids: BTreeMap<String, Versions>,
}

type SharedLedger = Arc<Mutex<Ledger>>;

/// A record as it lies on disk.
#[derive(Debug)]
struct OnDisk {
    at: Timestamp,
    body: String,
}

#[test]
fn killed_in_the_middle_of_1000_writes_it_loses_no_acknowledged_write_and_tears_no_file() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = Runtime::new().unwrap();
    let ledger = SharedLedger::default();
    let mut server = start(dir.path());
    for kill_after in KILL_AFTER {
        runtime.block_on(write_until_killed(&mut server, &ledger, kill_after));
        let records = records_on_disk(&dir.path().join("data"));
        check_whole(&records, &ledger.lock().unwrap());
        check_index_lists_acknowledged(dir.path(), &records, &ledger.lock().unwrap());

        server = start(dir.path());
        let records = records_on_disk(&dir.path().join("data"));
        check_whole(&records, &ledger.lock().unwrap());
        check_consistent_after_restart(dir.path(), &records);
        runtime.block_on(check_served(&server, &records));
        adopt(&records, &mut ledger.lock().unwrap());
    }
    assert_eq!(ledger.lock().unwrap().acked, WRITES);
}

fn start(dir: &Path) -> Killable {
    Killable::start(&["record-server", "--port", "0"], dir, record_server_port)
}

/// Runs the writers until `kill_after` writes are acknowledged, kills the server (checking that
/// writes were in flight, unless all are done) and waits for the writers to notice.
async fn write_until_killed(server: &mut Killable, ledger: &SharedLedger, kill_after: usize) {
    let writers: Vec<_> = (0..CONNECTIONS)
        .map(|connection| tokio::spawn(writer(server.addr(), connection, Arc::clone(ledger))))
        .collect();
    if kill_after == WRITES {
        for writer in writers {
            timeout(PATIENCE * 3, writer).await.unwrap().unwrap();
        }
        server.kill();
        return;
    }
    loop {
        {
            let ledger = ledger.lock().unwrap();
            if ledger.acked >= kill_after {
                server.kill();
                let in_flight = ledger.claimed - ledger.acked;
                assert!(in_flight > 0, "no write in flight at the kill");
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    for writer in writers {
        timeout(PATIENCE, writer)
            .await
            .expect("a writer noticed the server's death")
            .unwrap();
    }
}

/// One connection's writes, until all are claimed or the server dies.
async fn writer(addr: std::net::SocketAddr, connection: usize, ledger: SharedLedger) {
    let mut client = RecordClient::connect(addr, PATIENCE)
        .await
        .expect("the server accepts");
    for turn in 0.. {
        let Some(record) = claim(&ledger, connection, turn) else {
            return;
        };
        let outcome = client.write_record(&record).await;
        let acked = settle(&ledger, &record.id, &outcome);
        if !acked {
            return;
        }
    }
}

/// The next write of `connection`, recorded as in flight; `None` when all are claimed.
fn claim(ledger: &SharedLedger, connection: usize, turn: usize) -> Option<StudentRecord> {
    let mut ledger = ledger.lock().unwrap();
    if ledger.claimed >= WRITES {
        return None;
    }
    ledger.claimed += 1;
    ledger.serial += 1;
    let serial = ledger.serial;
    let record = StudentRecord {
        id: format!("c{connection}-{}", turn % IDS_PER_CONNECTION),
        name: format!("Connection {connection}"),
        date_of_birth: "2000-01-01".into(),
        city: format!("Write {serial}"),
        reason: "x".repeat(serial * 37 % 8000),
    };
    let versions = ledger.ids.entry(record.id.clone()).or_default();
    versions.in_flight = Some(body_of(&record));
    Some(record)
}

/// Records the outcome of a write; whether it was acknowledged. A write that failed because
/// the server died stays in flight: it may or may not have reached the disk.
fn settle(ledger: &SharedLedger, id: &str, outcome: &Result<String, ClientError>) -> bool {
    let mut ledger = ledger.lock().unwrap();
    match outcome {
        Ok(_) => {
            ledger.acked += 1;
            let versions = ledger.ids.get_mut(id).unwrap();
            versions.acked = versions.in_flight.take();
            true
        }
        Err(err) if err.is_connection_lost() => {
            ledger.claimed -= 1;
            false
        }
        Err(err) => panic!("write of {id} refused: {err}"),
    }
}

/// The record's body as the server stores it, after its `Last updated:` line.
fn body_of(record: &StudentRecord) -> String {
    let data = record.to_data(Timestamp::now());
    data.split_once('\n').unwrap().1.to_owned()
}

/// The records in `data`, by id; panics at a file that is not a whole record. Temporary files
/// are left to the callers.
fn records_on_disk(data: &Path) -> BTreeMap<String, OnDisk> {
    let temporary = temporary_files(data);
    let mut records = BTreeMap::new();
    for entry in std::fs::read_dir(data).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        if temporary.contains(&name) {
            continue;
        }
        let id = name
            .strip_suffix(".txt")
            .unwrap_or_else(|| panic!("{name} is neither a record nor a temporary file"));
        let text = read_text(&data.join(&name));
        let (first, body) = text
            .split_once('\n')
            .unwrap_or_else(|| panic!("{name} has one line: {text:?}"));
        let at = Timestamp::of_record(first)
            .unwrap_or_else(|| panic!("{name} starts with {first:?}, not `Last updated:`"));
        let body = body.to_owned();
        records.insert(id.to_owned(), OnDisk { at, body });
    }
    records
}

/// Every record is whole and is an acknowledged or in-flight write; every acknowledged write is
/// there.
fn check_whole(records: &BTreeMap<String, OnDisk>, ledger: &Ledger) {
    for (id, record) in records {
        let versions = ledger
            .ids
            .get(id)
            .unwrap_or_else(|| panic!("{id}.txt was never written"));
        assert!(
            versions.allows(&record.body),
            "{id}.txt ({} bytes, {:?}...) is neither its acknowledged write ({:?} bytes) nor the \
             one in flight ({:?} bytes)",
            record.body.len(),
            &record.body[..record.body.len().min(80)],
            versions.acked.as_ref().map(String::len),
            versions.in_flight.as_ref().map(String::len),
        );
    }
    for (id, versions) in &ledger.ids {
        if versions.acked.is_some() {
            assert!(records.contains_key(id), "acknowledged {id} is missing");
        }
    }
}

fn load_index(dir: &Path) -> RecordIndex {
    let bytes = std::fs::read(dir.join("records.json")).unwrap();
    let parsed = RecordIndex::parse(&bytes).unwrap_or_else(|err| {
        panic!(
            "records.json is torn: {err}: {}",
            String::from_utf8_lossy(&bytes)
        )
    });
    assert!(parsed.rejected.is_empty(), "{:?}", parsed.rejected);
    parsed.index
}

/// Right after the kill: `records.json` parses, lists every id with an acknowledged write, and
/// only ids that have a file.
fn check_index_lists_acknowledged(dir: &Path, records: &BTreeMap<String, OnDisk>, ledger: &Ledger) {
    let index = load_index(dir);
    for (id, _) in index.iter() {
        assert!(records.contains_key(id.as_str()), "{id} listed, no file");
    }
    for (id, versions) in &ledger.ids {
        if versions.acked.is_some() {
            let id = RecordId::parse(id).unwrap();
            assert!(index.get(&id).is_some(), "acknowledged {id} not listed");
        }
    }
}

/// After the restart: no temporary file, and the index lists exactly the records, each with
/// its file's timestamp.
fn check_consistent_after_restart(dir: &Path, records: &BTreeMap<String, OnDisk>) {
    for folder in [dir.to_owned(), dir.join("data")] {
        let left = temporary_files(&folder);
        assert!(left.is_empty(), "left in {}: {left:?}", folder.display());
    }
    let index = load_index(dir);
    let listed: BTreeMap<String, Timestamp> =
        index.iter().map(|(id, at)| (id.to_string(), at)).collect();
    let on_disk: BTreeMap<String, Timestamp> = records
        .iter()
        .map(|(id, record)| (id.clone(), record.at))
        .collect();
    assert_eq!(
        listed, on_disk,
        "records.json against the files' first lines"
    );
}

/// The server reads every record back as it lies on disk.
async fn check_served(server: &Killable, records: &BTreeMap<String, OnDisk>) {
    let mut client = RecordClient::connect(server.addr(), PATIENCE)
        .await
        .unwrap();
    for (id, record) in records {
        let served = client.read(id).await.unwrap();
        let expected = format!("Last updated: {}\n{}", record.at, record.body);
        assert!(served.as_ref() == Some(&expected), "{id} served otherwise");
    }
}

/// What is on disk is what the clients build on next: a write in flight that landed counts as
/// acknowledged, one that did not is forgotten.
fn adopt(records: &BTreeMap<String, OnDisk>, ledger: &mut Ledger) {
    for (id, versions) in &mut ledger.ids {
        versions.acked = records.get(id).map(|record| record.body.clone());
        versions.in_flight = None;
    }
}

#[test]
fn on_a_full_or_read_only_disk_writes_are_refused_with_the_reason_and_the_server_stays_up() {
    let mut sandbox = Sandbox::start(
        "256k",
        &["record-server", "--port", "0"],
        record_server_port,
    );
    let runtime = Runtime::new().unwrap();
    let addr = format!("127.0.0.1:{}", sandbox.port);
    let mut client = runtime
        .block_on(RecordClient::connect(addr.as_str(), PATIENCE))
        .unwrap();
    let kept = record("kept", "before the fault");
    runtime.block_on(client.write_record(&kept)).unwrap();
    let kept_content = runtime.block_on(client.read("kept")).unwrap().unwrap();
    let faults = [
        (Disk::Fill, Disk::Free, "the server's disk is full"),
        (
            Disk::ReadOnly,
            Disk::Writable,
            "the server's data folder is read-only",
        ),
    ];
    for (n, (fault, repair, reason)) in faults.into_iter().enumerate() {
        let fresh = format!("fresh{n}");
        sandbox.disk(fault);
        for id in ["kept", fresh.as_str()] {
            let refused = runtime.block_on(client.write_record(&record(id, "during the fault")));
            let expected = format!("Could not store the file of client {id}: {reason}.");
            match refused {
                Err(ClientError::Refused(message)) => assert_eq!(message, expected),
                other => panic!("{fault:?}: a write of {id} gave {other:?}"),
            }
        }
        let read = runtime.block_on(client.read("kept")).unwrap();
        assert_eq!(read.as_ref(), Some(&kept_content), "{fault:?}: reads go on");
        assert_eq!(runtime.block_on(client.read(&fresh)).unwrap(), None);
        let mut other = runtime
            .block_on(RecordClient::connect(addr.as_str(), PATIENCE))
            .expect("new connections are accepted");
        assert_eq!(runtime.block_on(other.info()).unwrap().records, 1 + n);
        sandbox.assert_alive();

        sandbox.disk(repair);
        let written = record(&fresh, &format!("after {repair:?}"));
        runtime.block_on(client.write_record(&written)).unwrap();
        let read = runtime.block_on(other.read(&fresh)).unwrap().unwrap();
        assert!(read.ends_with(&body_of(&written)), "{read}");
    }
}

fn record(id: &str, reason: &str) -> StudentRecord {
    StudentRecord {
        id: id.into(),
        name: "Ada".into(),
        date_of_birth: "1815-12-10".into(),
        city: "London".into(),
        reason: reason.into(),
    }
}
