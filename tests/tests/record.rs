//! The record server (seed 000) over real sockets: the seed client's exact traffic, framing
//! edge cases, limits, the updater, start-up repair and shutdown, compared as raw bytes.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use integration_tests::{PATIENCE, RunningServer, read_until_closed};
use protocol::record::{Request, RequestKind, Response, to_python_json};
use record_server::{RecordClient, ServerConfig, ServerStatus};
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{sleep, timeout};

const FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../shared/fixtures/record-v1"
);

/// What the seed's client sends for a write (`json.dumps` of its dict, `client_ID` key,
/// non-ASCII escaped), computed with Python 3.11.
const SEED_WRITE: &[u8] = br#"{"client_ID": "150210710", "type": 1, "data": "Last updated: 2024-03-18 13:14:33\nStudent ID: 150210710\nName: Fatih Bask\u0131n\nDate of Birth: 23/11/2000\nCity: Tekirda\u011f\nReason: I want to learn about how Internet and WEB works in general and its details"}"#;
const SEED_READ: &[u8] = br#"{"client_ID": "150210710", "type": 2, "data": ""}"#;
const WRITE_OK: &[u8] =
    br#"{"client_id": "150210710", "type": 1, "data": "File updated successfully."}"#;
const INVALID_FORMAT: &[u8] = br#"{"client_id": "None", "type": 2, "data": "Invalid request format, please send a valid JSON request."}"#;

/// A server on a data folder of its own.
struct Records {
    server: RunningServer,
    dir: TempDir,
}

impl Records {
    async fn start() -> Records {
        Records::start_with(tempfile::tempdir().unwrap(), |_| {}).await
    }

    async fn start_with(dir: TempDir, adjust: impl FnOnce(&mut ServerConfig)) -> Records {
        let (mut config, _) = ServerConfig::open_in(dir.path()).unwrap();
        adjust(&mut config);
        let server = RunningServer::start(|listener, shutdown| {
            record_server::run(listener, config, shutdown)
        })
        .await;
        Records { server, dir }
    }

    fn record_path(&self, id: &str) -> PathBuf {
        self.dir.path().join("data").join(format!("{id}.txt"))
    }

    fn records_json(&self) -> serde_json::Map<String, serde_json::Value> {
        serde_json::from_slice(&fs::read(self.dir.path().join("records.json")).unwrap()).unwrap()
    }

    /// The stored record of `id` as its timestamp and its body, once checked that records.json
    /// holds the same timestamp.
    fn stored(&self, id: &str) -> (String, String) {
        let file = fs::read_to_string(self.record_path(id)).unwrap();
        let (first, body) = file.split_once('\n').unwrap_or((&file, ""));
        let stamp = first
            .strip_prefix("Last updated: ")
            .expect("a Last updated line");
        assert_eq!(
            self.records_json()[id],
            stamp,
            "{id}: records.json and the file agree"
        );
        (stamp.to_owned(), body.to_owned())
    }

    async fn connect(&self) -> TcpStream {
        TcpStream::connect(self.server.addr).await.unwrap()
    }

    async fn client(&self) -> RecordClient {
        RecordClient::connect(self.server.addr, PATIENCE)
            .await
            .unwrap()
    }
}

/// Reads a response the way the seed's client does: 1024-byte reads until one comes back short.
async fn seed_receive(stream: &mut TcpStream) -> Vec<u8> {
    let mut response = Vec::new();
    loop {
        let mut chunk = [0u8; 1024];
        let n = timeout(PATIENCE, stream.read(&mut chunk))
            .await
            .expect("the seed client would hang here")
            .unwrap();
        response.extend_from_slice(&chunk[..n]);
        if n < chunk.len() {
            return response;
        }
    }
}

/// Sends raw bytes and reads one response the seed's way.
async fn exchange(stream: &mut TcpStream, request: &[u8]) -> Vec<u8> {
    stream.write_all(request).await.unwrap();
    seed_receive(stream).await
}

fn response(bytes: &[u8]) -> Response {
    serde_json::from_slice(bytes).unwrap_or_else(|err| {
        panic!(
            "not a response ({err}): {:?}",
            String::from_utf8_lossy(bytes)
        )
    })
}

fn request_bytes(id: &str, kind: RequestKind, data: &str) -> Vec<u8> {
    Request::new(id, kind, data).to_bytes().unwrap()
}

#[tokio::test]
async fn the_seed_clients_session_writes_then_reads_on_one_connection() {
    let records = Records::start().await;
    let mut stream = records.connect().await;
    assert_eq!(exchange(&mut stream, SEED_WRITE).await, WRITE_OK);

    let (stamp, body) = records.stored("150210710");
    assert_ne!(stamp, "2024-03-18 13:14:33", "the server's own timestamp");
    assert_eq!(
        body,
        "Student ID: 150210710\nName: Fatih Baskın\nDate of Birth: 23/11/2000\nCity: Tekirdağ\n\
         Reason: I want to learn about how Internet and WEB works in general and its details"
    );
    let stored = fs::read_to_string(records.record_path("150210710")).unwrap();

    let read = exchange(&mut stream, SEED_READ).await;
    let expected = to_python_json(&Response::success("150210710", stored.as_str())).unwrap();
    assert_eq!(read, expected, "json.dumps bytes, non-ASCII escaped");
    records.server.stop().await;
}

#[tokio::test]
async fn a_response_of_exactly_2048_bytes_is_padded_so_the_seed_client_does_not_hang() {
    let records = Records::start().await;
    let mut stream = records.connect().await;
    // The read response is the stored text in JSON; the timestamp has a fixed width.
    let sample = |body_len: usize| {
        let content = format!(
            "Last updated: 2000-01-01 00:00:00\n{}",
            "b".repeat(body_len)
        );
        to_python_json(&Response::success("pad", content))
            .unwrap()
            .len()
    };
    let body_len = 2048 - sample(0);
    assert_eq!(sample(body_len), 2048);
    let body = "b".repeat(body_len);
    exchange(
        &mut stream,
        &request_bytes("pad", RequestKind::Write, &body),
    )
    .await;

    let read = exchange(&mut stream, &request_bytes("pad", RequestKind::Read, "")).await;
    assert_eq!(read.len(), 2049);
    assert_eq!(read.last(), Some(&b'\n'));
    assert!(response(&read).data.ends_with(&body));
    records.server.stop().await;
}

#[tokio::test]
async fn two_requests_in_one_write_get_two_responses_in_order() {
    let records = Records::start().await;
    let mut stream = records.connect().await;
    let mut both = SEED_WRITE.to_vec();
    both.extend_from_slice(b"\n ");
    both.extend_from_slice(SEED_READ);
    stream.write_all(&both).await.unwrap();
    let first = integration_tests::read_n(&mut stream, WRITE_OK.len()).await;
    assert_eq!(first, WRITE_OK);
    let second = response(&seed_receive(&mut stream).await);
    assert!(second.data.starts_with("Last updated: "));
    records.server.stop().await;
}

#[tokio::test]
async fn a_request_split_across_writes_is_put_back_together() {
    let records = Records::start().await;
    let mut stream = records.connect().await;
    for piece in SEED_WRITE.chunks(7) {
        stream.write_all(piece).await.unwrap();
        sleep(Duration::from_millis(1)).await;
    }
    assert_eq!(seed_receive(&mut stream).await, WRITE_OK);
    records.server.stop().await;
}

#[tokio::test]
async fn bad_json_gets_the_seeds_answer_and_the_connection_goes_on() {
    let records = Records::start().await;
    let mut stream = records.connect().await;
    for garbage in [
        &b"hello"[..],
        b"{\"client_ID\": 1, \"type\": }",
        b"[1, 2]",
        b"{\"type\": 1}",
    ] {
        assert_eq!(
            exchange(&mut stream, garbage).await,
            INVALID_FORMAT,
            "{garbage:?}"
        );
    }
    assert_eq!(exchange(&mut stream, SEED_WRITE).await, WRITE_OK);
    records.server.stop().await;
}

#[tokio::test]
async fn an_unknown_type_gets_the_seeds_answer() {
    let records = Records::start().await;
    let mut stream = records.connect().await;
    let answer = exchange(
        &mut stream,
        br#"{"client_ID": "150210710", "type": 9, "data": ""}"#,
    )
    .await;
    assert_eq!(
        answer,
        br#"{"client_id": "150210710", "type": 2, "data": "Invalid request type, please send a valid request type."}"#
    );
    records.server.stop().await;
}

#[tokio::test]
async fn an_id_that_is_a_path_is_refused_and_nothing_is_written() {
    let records = Records::start().await;
    let mut stream = records.connect().await;
    for id in ["../escape", "a/b", "..", "", "x".repeat(33).as_str()] {
        for kind in [RequestKind::Write, RequestKind::Read] {
            let answer = response(&exchange(&mut stream, &request_bytes(id, kind, "data")).await);
            assert_eq!(answer.kind.code(), 2);
            assert_eq!(answer.client_id, id);
            assert!(
                answer.data.starts_with("Invalid client id"),
                "{}",
                answer.data
            );
        }
    }
    assert!(!records.dir.path().join("escape.txt").exists());
    assert_eq!(
        fs::read_dir(records.dir.path().join("data"))
            .unwrap()
            .count(),
        0
    );
    records.server.stop().await;
}

#[tokio::test]
async fn a_10_mb_request_is_refused_and_the_server_carries_on() {
    let records = Records::start().await;
    let mut stream = records.connect().await;
    let huge = request_bytes("big", RequestKind::Write, &"x".repeat(10 * 1024 * 1024));
    let (mut reader, mut writer) = stream.split();
    let (sent, answer) = tokio::join!(writer.write_all(&huge), read_until_closed(&mut reader));
    // The server answers after the first 64 KiB and closes once the rest is drained (or its
    // linger runs out), so the send may or may not complete; the answer must arrive either way.
    let _ = sent;
    let answer = response(&answer);
    assert_eq!(answer.kind.code(), 2);
    assert_eq!(answer.data, "Request too large: the limit is 65536 bytes.");
    assert!(!records.record_path("big").exists());

    let mut other = records.client().await;
    assert_eq!(
        other.write("after", "still here").await.unwrap(),
        "File updated successfully."
    );
    records.server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_clients_write_and_read_distinct_ids_and_nothing_is_lost() {
    let records = Records::start_with(tempfile::tempdir().unwrap(), |config| {
        config.max_connections = 64;
    })
    .await;
    let addr = records.server.addr;
    let clients: Vec<_> = (0..50)
        .map(|n| {
            tokio::spawn(async move {
                let mut client = RecordClient::connect(addr, PATIENCE).await.unwrap();
                let id = format!("student{n:02}");
                for round in 0..3 {
                    let body = format!("Student ID: {id}\nRound: {round}\n{}", "z".repeat(n * 50));
                    client.write(&id, &body).await.unwrap();
                    let read = client.read(&id).await.unwrap().unwrap();
                    assert_eq!(read.split_once('\n').unwrap().1, body);
                }
                id
            })
        })
        .collect();
    let mut ids = Vec::new();
    for client in clients {
        ids.push(client.await.unwrap());
    }
    assert_eq!(records.records_json().len(), 50);
    for id in &ids {
        let (_, body) = records.stored(id);
        assert!(body.contains("Round: 2\n"), "{id}: the last write won");
    }
    records.server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writes_to_one_id_leave_one_whole_file() {
    let records = Records::start().await;
    let addr = records.server.addr;
    let bodies: Vec<String> = (0..20)
        .map(|n| {
            format!(
                "Student ID: same\nWriter: {n}\n{}",
                char::from(b'a' + n).to_string().repeat(30_000)
            )
        })
        .collect();
    let writers: Vec<_> = bodies
        .iter()
        .cloned()
        .map(|body| {
            tokio::spawn(async move {
                let mut client = RecordClient::connect(addr, PATIENCE).await.unwrap();
                client.write("same", &body).await.unwrap();
            })
        })
        .collect();
    for writer in writers {
        writer.await.unwrap();
    }
    let (_, body) = records.stored("same");
    assert!(bodies.contains(&body), "one writer's whole body");
    records.server.stop().await;
}

#[tokio::test]
async fn the_updater_restamps_records_older_than_the_threshold() {
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir(dir.path().join("data")).unwrap();
    fs::write(
        dir.path().join("data/old.txt"),
        "Last updated: 2024-03-16 04:11:01\nStudent ID: old",
    )
    .unwrap();
    fs::write(
        dir.path().join("records.json"),
        "{\n    \"old\": \"2024-03-16 04:11:01\"\n}",
    )
    .unwrap();
    let records = Records::start_with(dir, |config| {
        config.update_timer = Duration::from_secs(1);
        config.update_threshold = Duration::from_secs(1);
    })
    .await;
    // The updater replaces the file, then saves records.json once for the pass: wait for both.
    let restamped = timeout(PATIENCE, async {
        loop {
            let file = fs::read_to_string(records.record_path("old")).unwrap();
            let indexed = records.records_json()["old"].clone();
            if !file.starts_with("Last updated: 2024-03-16 04:11:01")
                && indexed != "2024-03-16 04:11:01"
            {
                return file;
            }
            sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the updater did not restamp the record within the time limit");
    assert!(restamped.ends_with("\nStudent ID: old"));
    assert_eq!(records.stored("old").1, "Student ID: old");
    records.server.stop().await;
}

#[tokio::test]
async fn a_connection_over_max_connection_is_told_the_server_is_full() {
    let records = Records::start_with(tempfile::tempdir().unwrap(), |config| {
        config.max_connections = 2;
    })
    .await;
    let mut first = records.client().await;
    let mut second = records.client().await;
    first.write("one", "1").await.unwrap(); // both are being served
    second.write("two", "2").await.unwrap();

    let mut third = records.connect().await;
    let refusal = response(&read_until_closed(&mut third).await);
    assert_eq!(refusal.kind.code(), 2);
    assert_eq!(
        refusal.data,
        "Server is full: all 2 connections are in use, please try again later."
    );

    assert_eq!(
        first.read("two").await.unwrap().unwrap().lines().nth(1),
        Some("2")
    );
    drop(second);
    let mut next = timeout(PATIENCE, async {
        loop {
            let mut client = records.client().await;
            if client.read("one").await.is_ok() {
                return client;
            }
            sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("a freed slot serves the next client");
    let status = next.info().await.unwrap();
    assert_eq!((status.connections, status.max_connections), (2, 2));
    records.server.stop().await;
}

#[tokio::test]
async fn an_idle_connection_is_closed_after_the_client_timeout() {
    let records = Records::start_with(tempfile::tempdir().unwrap(), |config| {
        config.client_timeout = Duration::from_millis(300);
    })
    .await;
    let mut idle = records.connect().await;
    let mut busy = records.client().await;
    let started = tokio::time::Instant::now();
    let closed = tokio::spawn(async move { read_until_closed(&mut idle).await });
    for _ in 0..6 {
        busy.write("busy", "still working").await.unwrap();
        sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(closed.await.unwrap(), b"", "closed without a word");
    assert!(started.elapsed() >= Duration::from_millis(300));
    busy.write("busy", "not idle, not closed").await.unwrap();
    records.server.stop().await;
}

#[tokio::test]
async fn a_corrupt_records_json_is_rebuilt_and_the_records_served() {
    let dir = tempfile::tempdir().unwrap();
    copy_fixture(dir.path());
    fs::write(
        dir.path().join("records.json"),
        b"{\"150999901\": \"2024-03-16 04:1",
    )
    .unwrap();
    let records = Records::start_with(dir, |_| {}).await;
    let index = records.records_json();
    assert_eq!(index.len(), 10);
    assert_eq!(index["150999905"], "2024-03-16 04:11:01");
    let mut client = records.client().await;
    assert!(
        client
            .read("150999905")
            .await
            .unwrap()
            .unwrap()
            .contains("Name: student5\n")
    );
    records.server.stop().await;
}

#[tokio::test]
async fn the_seed_servers_data_folder_is_served_as_it_is() {
    let dir = tempfile::tempdir().unwrap();
    copy_fixture(dir.path());
    let index_before = fs::read(dir.path().join("records.json")).unwrap();
    let records = Records::start_with(dir, |_| {}).await;
    let mut stream = records.connect().await;
    for n in 1..=10 {
        let id = format!("1509999{n:02}");
        let read = exchange(
            &mut stream,
            format!(r#"{{"client_ID": "{id}", "type": 2, "data": ""}}"#).as_bytes(),
        )
        .await;
        let on_disk =
            fs::read_to_string(Path::new(FIXTURE).join(format!("data/{id}.txt"))).unwrap();
        assert_eq!(
            read,
            to_python_json(&Response::success(id.as_str(), on_disk)).unwrap()
        );
    }
    assert_eq!(
        fs::read(records.dir.path().join("records.json")).unwrap(),
        index_before
    );
    records.server.stop().await;
}

#[tokio::test]
async fn info_reports_connections_records_and_uptime() {
    let dir = tempfile::tempdir().unwrap();
    copy_fixture(dir.path());
    let records = Records::start_with(dir, |_| {}).await;
    let _other = records.connect().await;
    let mut client = records.client().await;
    let ServerStatus {
        connections,
        max_connections,
        records: count,
        require_auth,
        ..
    } = client.info().await.unwrap();
    assert_eq!(
        (connections, max_connections, count, require_auth),
        (2, 64, 10, false)
    );
    let mut stream = records.connect().await;
    let raw = response(
        &exchange(
            &mut stream,
            br#"{"client_ID": "150210710", "type": 3, "data": ""}"#,
        )
        .await,
    );
    assert_eq!((raw.kind.code(), raw.client_id.as_str()), (3, "150210710"));
    assert!(raw.data.contains("\"uptime_seconds\":"), "{}", raw.data);
    records.server.stop().await;
}

#[tokio::test]
async fn with_auth_required_each_connection_must_authenticate_for_an_id() {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = record_server::Settings::defaults(dir.path());
    settings.file_path = dir.path().join("data");
    settings.record_path = dir.path().to_owned();
    settings.require_auth = true;
    let (mut config, _) = ServerConfig::open(&settings).unwrap();
    config.auth_failure_delay = Duration::from_millis(50);
    let server =
        RunningServer::start(|listener, shutdown| record_server::run(listener, config, shutdown))
            .await;
    let connect = || RecordClient::connect(server.addr, PATIENCE);

    let mut alice = connect().await.unwrap();
    let refused = alice.write("alice", "Name: Alice").await.unwrap_err();
    assert!(
        refused
            .to_string()
            .starts_with("Not authorised: authenticate as client alice first"),
        "{refused}"
    );
    assert_eq!(
        alice.authenticate("alice", "s3cret").await.unwrap(),
        "Password set for client alice."
    );
    alice.write("alice", "Name: Alice").await.unwrap();
    assert!(alice.read("alice").await.unwrap().is_some());
    assert!(
        read_refusal(&mut alice, "bob")
            .await
            .starts_with("Not authorised")
    );

    let mut mallory = connect().await.unwrap();
    assert!(
        read_refusal(&mut mallory, "alice")
            .await
            .starts_with("Not authorised")
    );
    let started = tokio::time::Instant::now();
    for _ in 0..3 {
        let wrong = mallory.authenticate("alice", "guess").await.unwrap_err();
        assert_eq!(wrong.to_string(), "Wrong password for client alice.");
    }
    assert!(
        started.elapsed() >= Duration::from_millis(50 + 100 + 200),
        "failures slowed down"
    );
    assert!(
        read_refusal(&mut mallory, "alice")
            .await
            .starts_with("Not authorised")
    );

    let mut again = connect().await.unwrap();
    assert_eq!(
        again.authenticate("alice", "s3cret").await.unwrap(),
        "Authenticated as client alice."
    );
    assert!(
        again
            .read("alice")
            .await
            .unwrap()
            .unwrap()
            .ends_with("Name: Alice")
    );
    let stored = fs::read_to_string(dir.path().join("passwords.json")).unwrap();
    assert!(stored.contains("$argon2id$") && !stored.contains("s3cret"));
    server.stop().await;
}

#[tokio::test]
async fn shutdown_closes_every_connection_and_keeps_every_acknowledged_write() {
    let records = Records::start().await;
    let mut writer = records.connect().await;
    let mut idle = records.connect().await;
    assert_eq!(exchange(&mut writer, SEED_WRITE).await, WRITE_OK);
    let Records { server, dir } = records;
    server.stop().await;
    assert_eq!(read_until_closed(&mut writer).await, b"");
    assert_eq!(read_until_closed(&mut idle).await, b"");
    let index: serde_json::Value =
        serde_json::from_slice(&fs::read(dir.path().join("records.json")).unwrap()).unwrap();
    assert!(index.get("150210710").is_some());
    assert!(dir.path().join("data/150210710.txt").exists());
}

/// The reason a read of `id` is refused.
async fn read_refusal(client: &mut RecordClient, id: &str) -> String {
    client
        .read(id)
        .await
        .expect_err("the read should be refused")
        .to_string()
}

#[tokio::test]
async fn after_a_timeout_the_client_refuses_to_reuse_the_connection() {
    // A server that accepts and never answers.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let silent = tokio::spawn(async move { listener.accept().await.unwrap() });
    let mut client = RecordClient::connect(addr, Duration::from_millis(100))
        .await
        .unwrap();
    let first = client.read("x").await.unwrap_err();
    assert!(
        matches!(first, record_server::ClientError::Timeout(_)),
        "{first}"
    );
    let second = client.read("x").await.unwrap_err();
    assert!(
        matches!(second, record_server::ClientError::OutOfStep),
        "{second}"
    );
    assert!(second.is_connection_lost(), "a caller reconnects");
    drop(silent.await.unwrap());
}

fn copy_fixture(to: &Path) {
    fs::create_dir_all(to.join("data")).unwrap();
    for entry in fs::read_dir(Path::new(FIXTURE).join("data")).unwrap() {
        let entry = entry.unwrap();
        fs::copy(entry.path(), to.join("data").join(entry.file_name())).unwrap();
    }
    fs::copy(
        Path::new(FIXTURE).join("records.json"),
        to.join("records.json"),
    )
    .unwrap();
}

#[tokio::test]
async fn a_request_trickled_a_byte_at_a_time_is_cut_off_at_the_client_timeout() {
    let records = Records::start_with(tempfile::tempdir().unwrap(), |config| {
        config.client_timeout = Duration::from_millis(300);
    })
    .await;
    let mut slow = records.connect().await;
    let started = tokio::time::Instant::now();
    let request = br#"{"type": 2, "id": "150210710", "data": "Name: Slow"}"#;
    let mut sent = 0;
    for byte in request {
        if slow.write_all(&[*byte]).await.is_err() {
            break;
        }
        sent += 1;
        sleep(Duration::from_millis(50)).await;
        if started.elapsed() > PATIENCE {
            break;
        }
    }
    assert!(sent < request.len(), "cut off before the request was whole");
    assert_eq!(read_until_closed(&mut slow).await, b"");
    assert!(started.elapsed() >= Duration::from_millis(300));
    let mut client = records.client().await;
    assert!(client.read("150210710").await.unwrap().is_none());
    records.server.stop().await;
}
