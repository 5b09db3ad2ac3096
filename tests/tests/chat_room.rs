//! The chat room (seed 003) over real sockets, spoken to in the seed's raw bytes: the relay's
//! exact bytes, UTF-8, split frames, a client that never reads, a bad header, a taken name, the
//! room's limits and notices, shutdown, the client library, and the seed's own Python client
//! (`tests/fixtures/seed_chat_client.py`, run with python3).

use std::net::SocketAddr;
use std::time::Duration;

use chat_p2p::room::{self, ChatMessage, RoomConfig};
use integration_tests::{PATIENCE, RunningServer, read_n, read_until_closed};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{sleep, timeout};

async fn start(config: RoomConfig) -> RunningServer {
    RunningServer::start(|listener, shutdown| room::run(listener, config, shutdown)).await
}

/// The seed's framing: `f"{len(payload):<10}"` then the payload.
fn frame(payload: &[u8]) -> Vec<u8> {
    let mut bytes = format!("{:<10}", payload.len()).into_bytes();
    bytes.extend_from_slice(payload);
    bytes
}

/// What the room relays: the sender's name frame, then its message frame.
fn relayed(user: &str, message: &str) -> Vec<u8> {
    [frame(user.as_bytes()), frame(message.as_bytes())].concat()
}

/// A raw client that has sent its username.
async fn raw_client(addr: SocketAddr, name: &str) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(&frame(name.as_bytes())).await.unwrap();
    stream
}

/// One relayed message as raw bytes: two frames, each read by its header.
async fn read_message(stream: &mut TcpStream) -> Vec<u8> {
    let mut message = Vec::new();
    for _ in 0..2 {
        let header = read_n(stream, 10).await;
        let len: usize = std::str::from_utf8(&header)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        message.extend_from_slice(&header);
        message.extend(read_n(stream, len).await);
    }
    message
}

/// Makes sure `newcomer` (whose username frame was `name_frame`) and every client of `earlier` are in the room. Joins are
/// not acknowledged, but only a member's message is relayed, and only to members: the newcomer
/// says `ready` until each earlier client has heard it, then `begin`, and each earlier client
/// reads up to that `begin`, so nothing of this is left in its stream. Other messages on the
/// way (announcements) are skipped.
async fn settle(newcomer: &mut TcpStream, name_frame: &[u8], earlier: &mut [TcpStream]) {
    let ready = [name_frame, &frame(b"ready")].concat();
    let hearing = async {
        for client in earlier.iter_mut() {
            while read_message(client).await != ready {}
        }
    };
    let saying = async {
        loop {
            newcomer.write_all(&frame(b"ready")).await.unwrap();
            sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::select! {
        () = hearing => {}
        () = saying => unreachable!(),
    }
    newcomer.write_all(&frame(b"begin")).await.unwrap();
    let begin = [name_frame, &frame(b"begin")].concat();
    for client in earlier.iter_mut() {
        while read_message(client).await != begin {}
    }
}

/// Raw clients under `names`, all in the room and with nothing pending.
async fn clients<const N: usize>(addr: SocketAddr, names: [&str; N]) -> [TcpStream; N] {
    let mut joined: Vec<TcpStream> = Vec::new();
    for name in names {
        let mut newcomer = raw_client(addr, name).await;
        if !joined.is_empty() {
            settle(&mut newcomer, &frame(name.as_bytes()), &mut joined).await;
        }
        joined.push(newcomer);
    }
    joined.try_into().expect("N clients")
}

async fn three_clients(addr: SocketAddr) -> [TcpStream; 3] {
    clients(addr, ["alice", "bob", "carol"]).await
}

/// Asserts that nothing arrives on `stream` for a short while.
async fn assert_silent(stream: &mut TcpStream) {
    let mut byte = [0; 1];
    let read = timeout(Duration::from_millis(150), stream.read(&mut byte)).await;
    assert!(read.is_err(), "unexpected bytes: {read:?} {byte:?}");
}

#[tokio::test]
async fn a_message_reaches_every_other_client_as_the_seeds_server_sends_it() {
    let server = start(RoomConfig::default()).await;
    let [mut alice, mut bob, mut carol] = three_clients(server.addr).await;
    alice.write_all(b"5         hello").await.unwrap();
    assert_eq!(
        read_n(&mut bob, 30).await,
        b"5         alice5         hello"
    );
    assert_eq!(
        read_n(&mut carol, 30).await,
        b"5         alice5         hello"
    );
    carol.write_all(b"2         hi").await.unwrap();
    // Alice's next bytes are Carol's message: her own never came back.
    assert_eq!(read_n(&mut alice, 27).await, b"5         carol2         hi");
    assert_eq!(read_n(&mut bob, 27).await, b"5         carol2         hi");
    assert_silent(&mut carol).await;
    server.stop().await;
}

#[tokio::test]
async fn the_senders_own_headers_are_relayed_byte_for_byte() {
    let server = start(RoomConfig::default()).await;
    let [alice, bob, _carol] = three_clients(server.addr).await;
    // Headers Python's int(header.strip()) accepts but f"{len:<10}" would not write.
    let mut dave = TcpStream::connect(server.addr).await.unwrap();
    dave.write_all(b"   4      dave").await.unwrap();
    let mut earlier = [alice, bob];
    settle(&mut dave, b"   4      dave", &mut earlier).await;
    let [mut alice, mut bob] = earlier;
    dave.write_all(b"0005      howdy").await.unwrap();
    let expected = b"   4      dave0005      howdy";
    assert_eq!(read_n(&mut alice, expected.len()).await, expected);
    assert_eq!(read_n(&mut bob, expected.len()).await, expected);
    server.stop().await;
}

#[tokio::test]
async fn utf8_names_and_messages_travel_as_their_bytes() {
    let server = start(RoomConfig::default()).await;
    let [mut zoe, mut li] = clients(server.addr, ["Zoë", "李雷"]).await;
    li.write_all(&frame("你好, Zoë! 👋".as_bytes()))
        .await
        .unwrap();
    let expected = relayed("李雷", "你好, Zoë! 👋");
    assert_eq!(&expected[..10], b"6         ", "the length counts bytes");
    assert_eq!(read_n(&mut zoe, expected.len()).await, expected);
    server.stop().await;
}

#[tokio::test]
async fn a_frame_split_across_writes_is_relayed_whole() {
    let server = start(RoomConfig::default()).await;
    let [mut alice, mut bob, mut carol] = three_clients(server.addr).await;
    let message = frame(b"split across many writes");
    for piece in message.chunks(3) {
        alice.write_all(piece).await.unwrap();
        sleep(Duration::from_millis(5)).await;
    }
    let expected = relayed("alice", "split across many writes");
    assert_eq!(read_n(&mut bob, expected.len()).await, expected);
    assert_eq!(read_n(&mut carol, expected.len()).await, expected);
    // Several frames in one write are as many messages.
    let two = [frame(b"one"), frame(b"two")].concat();
    bob.write_all(&two).await.unwrap();
    let expected = [relayed("bob", "one"), relayed("bob", "two")].concat();
    assert_eq!(read_n(&mut alice, expected.len()).await, expected);
    server.stop().await;
}

#[tokio::test]
async fn empty_frames_are_ignored() {
    let server = start(RoomConfig::default()).await;
    let [mut alice, mut bob, _carol] = three_clients(server.addr).await;
    alice.write_all(b"0         ").await.unwrap();
    alice.write_all(&frame(b"after")).await.unwrap();
    let expected = relayed("alice", "after");
    assert_eq!(read_n(&mut bob, expected.len()).await, expected);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_is_dropped_without_stalling_the_others() {
    let config = RoomConfig {
        outbox_frames: 8,
        // Dropping at the first full outbox would drop the listener too: it reads as fast as it
        // can, but the talker floods faster.
        stall_timeout: Duration::from_millis(300),
        ..RoomConfig::default()
    };
    let server = start(config).await;
    let [mut talker, mut listener, mut sleeper] = three_clients(server.addr).await;
    // 32 MiB of messages: more than the sleeper's socket buffers and its outbox together.
    let text = "x".repeat(32 * 1024);
    let count = 1024;
    let expected = relayed("alice", &text);
    let reading = tokio::spawn(async move {
        for _ in 0..count {
            let got = timeout(PATIENCE, read_n(&mut listener, expected.len())).await;
            assert!(got.expect("the listener keeps up") == expected);
        }
    });
    for _ in 0..count {
        talker.write_all(&frame(text.as_bytes())).await.unwrap();
    }
    reading.await.unwrap();
    // The sleeper finally reads: whatever the kernel held, then the end.
    let held = timeout(PATIENCE, read_until_closed(&mut sleeper))
        .await
        .expect("the sleeper's connection was closed");
    assert!(held.len() < count * relayed("alice", &text).len());
    server.stop().await;
}

#[tokio::test]
async fn a_bad_header_closes_its_sender_only() {
    let server = start(RoomConfig::default()).await;
    let [mut alice, mut bob, mut mallory] = three_clients(server.addr).await;
    mallory.write_all(b"hello worl").await.unwrap();
    let told = String::from_utf8(read_until_closed(&mut mallory).await).unwrap();
    assert!(
        told.starts_with("6         server") && told.contains("bad chat frame header"),
        "{told}"
    );
    alice.write_all(&frame(b"still here")).await.unwrap();
    let expected = relayed("alice", "still here");
    assert_eq!(read_n(&mut bob, expected.len()).await, expected);
    server.stop().await;
}

#[tokio::test]
async fn a_frame_over_the_limit_closes_its_sender_only() {
    let config = RoomConfig {
        max_payload: 100,
        ..RoomConfig::default()
    };
    let server = start(config).await;
    let [mut alice, mut bob, mut big] = three_clients(server.addr).await;
    big.write_all(b"101       ").await.unwrap();
    let told = String::from_utf8(read_until_closed(&mut big).await).unwrap();
    assert!(told.contains("over the limit of 100 bytes"), "{told}");
    bob.write_all(&frame(b"fine")).await.unwrap();
    let expected = relayed("bob", "fine");
    assert_eq!(read_n(&mut alice, expected.len()).await, expected);
    server.stop().await;
}

#[tokio::test]
async fn a_taken_or_invalid_username_is_refused_with_a_message_from_server() {
    let server = start(RoomConfig::default()).await;
    let [mut alice, mut bob, _carol] = three_clients(server.addr).await;
    for (name, reason) in [
        ("alice", "Username alice is taken"),
        ("", "Invalid username: the username is empty"),
        (
            "server",
            "Invalid username: the username \"server\" is the room's own",
        ),
        (
            "a\nb",
            "Invalid username: the username holds the control character '\\n'",
        ),
    ] {
        let mut again = raw_client(server.addr, name).await;
        let told = read_until_closed(&mut again).await;
        assert_eq!(told, relayed("server", reason), "{name:?}");
    }
    alice.write_all(&frame(b"mine")).await.unwrap();
    let expected = relayed("alice", "mine");
    assert_eq!(read_n(&mut bob, expected.len()).await, expected);
    server.stop().await;
}

#[tokio::test]
async fn past_max_clients_a_newcomer_is_told_the_room_is_full() {
    let config = RoomConfig {
        max_clients: 3,
        ..RoomConfig::default()
    };
    let server = start(config).await;
    let _three = three_clients(server.addr).await;
    let mut fourth = raw_client(server.addr, "dave").await;
    let told = read_until_closed(&mut fourth).await;
    assert_eq!(told, relayed("server", "The room is full (3 clients)"));
    server.stop().await;
}

#[tokio::test]
async fn with_announce_joins_and_leaves_come_from_server() {
    let config = RoomConfig {
        announce: true,
        ..RoomConfig::default()
    };
    let server = start(config).await;
    let [mut alice, _bob] = clients(server.addr, ["alice", "bob"]).await;
    let carol = raw_client(server.addr, "carol").await;
    assert_eq!(
        read_message(&mut alice).await,
        relayed("server", "carol joined the room")
    );
    drop(carol);
    assert_eq!(
        read_message(&mut alice).await,
        relayed("server", "carol left the room")
    );
    server.stop().await;
    let expected = relayed("server", "The room is closing");
    assert_eq!(read_until_closed(&mut alice).await, expected);
}

#[tokio::test]
async fn shutdown_closes_every_client_after_what_was_queued_for_it() {
    let server = start(RoomConfig::default()).await;
    let [mut alice, mut bob, mut carol] = three_clients(server.addr).await;
    alice.write_all(&frame(b"last words")).await.unwrap();
    let expected = relayed("alice", "last words");
    assert_eq!(read_n(&mut bob, expected.len()).await, expected);
    server.stop().await;
    for client in [&mut alice, &mut bob] {
        assert_eq!(read_until_closed(client).await, b"");
    }
    assert_eq!(read_until_closed(&mut carol).await, expected);
}

#[tokio::test]
async fn the_client_library_sends_and_receives_at_once() {
    let server = start(RoomConfig::default()).await;
    let (mut ann_out, mut ann_in) = room::join(server.addr, "ann", PATIENCE).await.unwrap();
    let (mut ben_out, mut ben_in) = room::join(server.addr, "ben", PATIENCE).await.unwrap();
    // Both are in once a message of ben's reaches ann (see `settle`).
    loop {
        ben_out.send("ready").await.unwrap();
        if let Ok(heard) = timeout(Duration::from_millis(20), ann_in.next()).await {
            assert_eq!(heard.unwrap().unwrap().text, "ready");
            break;
        }
    }
    ben_out.send("begin").await.unwrap();
    while timeout(PATIENCE, ann_in.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap()
        .text
        != "begin"
    {}
    ann_out.send("hi ben").await.unwrap();
    ann_out.send("").await.unwrap(); // not sent
    ben_out.send("hi ann").await.unwrap();
    let got = timeout(PATIENCE, ben_in.next()).await.unwrap().unwrap();
    assert_eq!(
        got,
        Some(ChatMessage {
            user: "ann".into(),
            text: "hi ben".into()
        })
    );
    let got = timeout(PATIENCE, ann_in.next()).await.unwrap().unwrap();
    assert_eq!(got.map(|m| m.text), Some("hi ann".into()));
    let (_, mut refused) = room::join(server.addr, "ann", PATIENCE).await.unwrap();
    let told = timeout(PATIENCE, refused.next()).await.unwrap().unwrap();
    assert_eq!(
        told.map(|m| (m.user, m.text)),
        Some(("server".into(), "Username ann is taken".into()))
    );
    assert!(
        timeout(PATIENCE, refused.next())
            .await
            .unwrap()
            .unwrap()
            .is_none()
    );
    assert!(
        room::join(server.addr, "bad\tname", PATIENCE)
            .await
            .is_err()
    );
    ann_out.close().await;
    ben_out.close().await;
    server.stop().await;
}

/// The seed's own Python client, its `PORT` pointed at `port`, started with piped stdin and its
/// stdout collected by a thread.
struct SeedClient {
    child: std::process::Child,
    stdin: std::process::ChildStdin,
    stdout: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
    _script: tempfile::TempDir,
}

impl SeedClient {
    fn start(port: u16) -> SeedClient {
        use std::process::{Command, Stdio};
        let seed = include_str!("../fixtures/seed_chat_client.py");
        assert!(seed.contains("\nPORT = 1234\n"));
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("client.py");
        std::fs::write(
            &script,
            seed.replace("\nPORT = 1234\n", &format!("\nPORT = {port}\n")),
        )
        .unwrap();
        let mut child = Command::new("python3")
            .arg(&script)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 runs the seed's client (CPython 3 is needed for this test)");
        let stdin = child.stdin.take().unwrap();
        let mut out = child.stdout.take().unwrap();
        let stdout = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let collected = std::sync::Arc::clone(&stdout);
        std::thread::spawn(move || {
            let mut chunk = [0; 4096];
            while let Ok(n @ 1..) = std::io::Read::read(&mut out, &mut chunk) {
                collected.lock().unwrap().extend_from_slice(&chunk[..n]);
            }
        });
        SeedClient {
            child,
            stdin,
            stdout,
            _script: dir,
        }
    }

    /// Types `line` and enter (lost if the client has exited).
    fn type_line(&mut self, line: &str) {
        let _ = std::io::Write::write_all(&mut self.stdin, format!("{line}\n").as_bytes());
    }

    fn printed(&self) -> String {
        String::from_utf8_lossy(&self.stdout.lock().unwrap()).into_owned()
    }
}

impl Drop for SeedClient {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Types `ready` into `client` until `witness` (in the room) hears it from `name`: then both are
/// in the room. Then the witness's stream holds nothing more from it.
async fn seed_client_joins(client: &mut SeedClient, name: &str, witness: &mut TcpStream) {
    client.type_line(name);
    let ready = relayed(name, "ready");
    let heard = async { while read_message(witness).await != ready {} };
    let typing = async {
        loop {
            client.type_line("ready");
            sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::select! {
        () = heard => {}
        () = typing => unreachable!(),
    }
    client.type_line("begin");
    let begin = relayed(name, "begin");
    while read_message(witness).await != begin {}
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seeds_python_client_works_against_the_room_unchanged() {
    let server = start(RoomConfig::default()).await;
    let port = server.addr.port();
    let [mut carol] = clients(server.addr, ["carol"]).await;
    let mut alice = SeedClient::start(port);
    seed_client_joins(&mut alice, "alice", &mut carol).await;
    let mut bob = SeedClient::start(port);
    seed_client_joins(&mut bob, "bob", &mut carol).await;

    // What the seed's client sends is what the seed's server expects, and what it relays...
    alice.type_line("héllo bob");
    let expected = relayed("alice", "héllo bob");
    assert_eq!(read_message(&mut carol).await, expected);
    // ... is what the seed's client prints, after its next enter (it only reads then).
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !bob.printed().contains("alice > héllo bob\n") {
        assert!(tokio::time::Instant::now() < deadline, "{}", bob.printed());
        bob.type_line("");
        sleep(Duration::from_millis(50)).await;
    }
    carol
        .write_all(&frame("hi from carol ✓".as_bytes()))
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !alice.printed().contains("carol > hi from carol ✓\n") {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{}",
            alice.printed()
        );
        alice.type_line("");
        sleep(Duration::from_millis(50)).await;
    }
    // The room closing is what the seed's client reports as the server closing.
    server.stop().await;
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !bob.printed().contains("Connection closed by the server") {
        assert!(tokio::time::Instant::now() < deadline, "{}", bob.printed());
        bob.type_line("");
        sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_client_that_does_not_name_itself_in_time_is_refused() {
    let name_timeout = Duration::from_millis(300);
    let server = start(RoomConfig {
        name_timeout,
        ..RoomConfig::default()
    })
    .await;
    let started = tokio::time::Instant::now();
    let mut silent = TcpStream::connect(server.addr).await.unwrap();
    // A slow sender: half a header, then nothing.
    let mut trickling = TcpStream::connect(server.addr).await.unwrap();
    trickling.write_all(b"5    ").await.unwrap();
    for client in [&mut silent, &mut trickling] {
        let told = read_until_closed(client).await;
        assert_eq!(told, relayed("server", "No username within 300ms"));
    }
    assert!(started.elapsed() >= name_timeout);
    let mut alice = raw_client(server.addr, "alice").await;
    let mut bob = raw_client(server.addr, "bob").await;
    settle(&mut bob, &frame(b"bob"), std::slice::from_mut(&mut alice)).await;
    server.stop().await;
}
