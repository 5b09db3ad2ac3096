//! Peer-to-peer sessions over real UDP sockets on 127.0.0.1, two sessions sharing a random key:
//! chat both ways in order; 5 MB files both ways through a relay that drops 10% of datagrams;
//! a forged datagram dropped and counted; duplicated datagrams counted as replayed and nothing
//! delivered twice; the media stream directly, behind a file and through loss; a peer vanishing
//! in the middle of a transfer; a graceful close; a taken file name; an offer over the size
//! limit; a peer that never answers.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chat_p2p::peer::session::{
    Direction, Session, SessionConfig, SessionEnd, SessionError, SessionEvent, SessionParams,
};
use protocol::p2p::secure::{Role, SessionKey};
use rand::Rng;
use server_kit::lossy_relay::{Impairment, LossyRelay};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::time::timeout;

/// How long a test waits for any one event before it fails (a hang guard, not a speed check).
const PATIENCE: Duration = Duration::from_secs(60);
/// The size of the files sent through the lossy relay.
const BIG_FILE: usize = 5 * 1024 * 1024;

/// One end of a session under test.
struct Peer {
    session: Session,
    events: mpsc::Receiver<SessionEvent>,
    dir: tempfile::TempDir,
    addr: SocketAddr,
    /// The session number both ends were given.
    number: u32,
}

impl Peer {
    /// The next event.
    async fn next(&mut self) -> SessionEvent {
        timeout(PATIENCE, self.events.recv())
            .await
            .expect("an event in time")
            .expect("the event channel stays open until Ended")
    }

    /// Every event up to and including the first that `done` picks.
    async fn until(&mut self, done: impl Fn(&SessionEvent) -> bool) -> Vec<SessionEvent> {
        let mut seen = Vec::new();
        loop {
            let event = self.next().await;
            let finished = done(&event);
            seen.push(event);
            if finished {
                return seen;
            }
        }
    }

    /// Every event until `count` transfers are settled either way (saved, delivered or failed).
    async fn until_settled(&mut self, count: usize) -> Vec<SessionEvent> {
        let mut seen = Vec::new();
        let mut settled = 0;
        while settled < count {
            let event = self.next().await;
            if matches!(
                event,
                SessionEvent::FileSaved { .. }
                    | SessionEvent::FileDelivered { .. }
                    | SessionEvent::FileFailed { .. }
            ) {
                settled += 1;
            }
            seen.push(event);
        }
        seen
    }

    /// Every event up to and including `Ended`; how it ended.
    async fn until_ended(&mut self) -> (Vec<SessionEvent>, SessionEnd) {
        let seen = self
            .until(|event| matches!(event, SessionEvent::Ended { .. }))
            .await;
        let Some(SessionEvent::Ended { reason }) = seen.last() else {
            unreachable!("until stops at Ended");
        };
        let reason = reason.clone();
        (seen, reason)
    }

    /// The chat lines among `events`.
    fn lines(events: &[SessionEvent]) -> Vec<String> {
        events
            .iter()
            .filter_map(|event| match event {
                SessionEvent::Message { text } => Some(text.clone()),
                _ => None,
            })
            .collect()
    }
}

/// The test's settings: files saved in the peer's own folder, a fast stream.
fn config(dir: &Path) -> SessionConfig {
    SessionConfig {
        download_dir: dir.to_owned(),
        stream_rate: 512 * 1024,
        ..SessionConfig::default()
    }
}

/// A session between alice (initiator) and bob (acceptor), directly or, with an impairment,
/// through a relay in front of bob. `adjust` changes both ends' settings.
async fn connect(
    impairment: Option<Impairment>,
    adjust: impl Fn(&mut SessionConfig),
) -> (Peer, Peer, Option<LossyRelay>) {
    let alice_socket = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
    let bob_socket = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
    let alice_addr = alice_socket.local_addr().unwrap();
    let bob_addr = bob_socket.local_addr().unwrap();
    let relay = match impairment {
        Some(impairment) => Some(
            LossyRelay::start_with(bob_addr, impairment, 7)
                .await
                .unwrap(),
        ),
        None => None,
    };
    let bob_seen_at = relay.as_ref().map_or(bob_addr, LossyRelay::local_addr);
    let key = SessionKey::from_bytes(rand::random());
    let number = rand::random();
    let start = |socket, peer: &str, peer_addr, role| {
        let dir = tempfile::tempdir().unwrap();
        let mut settings = config(dir.path());
        adjust(&mut settings);
        let params = SessionParams {
            peer: peer.to_owned(),
            peer_addr,
            key: key.clone(),
            session: number,
            role,
        };
        let (session, events) = Session::start(socket, params, settings);
        (session, events, dir)
    };
    let (session, events, dir) = start(alice_socket, "bob", bob_seen_at, Role::Initiator);
    let alice = Peer {
        session,
        events,
        dir,
        addr: alice_addr,
        number,
    };
    let (session, events, dir) = start(bob_socket, "alice", alice_addr, Role::Acceptor);
    let bob = Peer {
        session,
        events,
        dir,
        addr: bob_addr,
        number,
    };
    (alice, bob, relay)
}

/// Connects both ends and waits for both to say so.
async fn connected(
    impairment: Option<Impairment>,
    adjust: impl Fn(&mut SessionConfig),
) -> (Peer, Peer, Option<LossyRelay>) {
    let (mut alice, mut bob, relay) = connect(impairment, adjust).await;
    assert_eq!(alice.next().await, SessionEvent::Connected);
    assert_eq!(bob.next().await, SessionEvent::Connected);
    (alice, bob, relay)
}

/// A file of `len` random bytes named `name` in a fresh folder; the folder and the bytes.
fn random_file(name: &str, len: usize) -> (tempfile::TempDir, Vec<u8>) {
    let dir = tempfile::tempdir().unwrap();
    let mut bytes = vec![0; len];
    rand::rng().fill(&mut bytes[..]);
    std::fs::write(dir.path().join(name), &bytes).unwrap();
    (dir, bytes)
}

/// The names in `dir`.
fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Waits until `check` holds for the session's counters (they are a snapshot the driver
/// refreshes as it works).
async fn stats_until(
    session: &Session,
    check: impl Fn(&chat_p2p::peer::session::SessionStats) -> bool,
) {
    let wait = async {
        while !check(&session.stats()) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    timeout(PATIENCE, wait).await.expect("the counters in time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_lines_cross_both_ways_in_order() {
    let (mut alice, mut bob, _) = connected(None, |_| {}).await;
    let from_alice: Vec<String> = (0..50).map(|i| format!("alice line {i}")).collect();
    let from_bob: Vec<String> = (0..50).map(|i| format!("bob line {i} ✓")).collect();
    for (a, b) in from_alice.iter().zip(&from_bob) {
        alice.session.send_text(a).await.unwrap();
        bob.session.send_text(b).await.unwrap();
    }
    let last_from_alice = from_alice.last().unwrap().clone();
    let seen = bob
        .until(|event| matches!(event, SessionEvent::Message { text } if *text == last_from_alice))
        .await;
    assert_eq!(Peer::lines(&seen), from_alice);
    let last_from_bob = from_bob.last().unwrap().clone();
    let seen = alice
        .until(|event| matches!(event, SessionEvent::Message { text } if *text == last_from_bob))
        .await;
    assert_eq!(Peer::lines(&seen), from_bob);
    assert_eq!(alice.session.peer(), "bob");
    assert_eq!(bob.session.peer(), "alice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chat_line_too_long_is_refused_locally() {
    let (alice, _bob, _) = connected(None, |_| {}).await;
    let long = "x".repeat(protocol::p2p::session::MAX_TEXT_BYTES + 1);
    let error = alice.session.send_text(&long).await.unwrap_err();
    assert!(matches!(error, SessionError::TooLong { .. }), "{error:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_megabyte_files_cross_a_lossy_relay_both_ways_intact() {
    let (alice_src, alice_bytes) = random_file("from-alice.bin", BIG_FILE);
    let (bob_src, bob_bytes) = random_file("from-bob.bin", BIG_FILE + 123);
    let (mut alice, mut bob, relay) = connected(Some(Impairment::loss(0.10)), |_| {}).await;
    let to_bob = alice
        .session
        .send_file(&alice_src.path().join("from-alice.bin"))
        .await
        .unwrap();
    let to_alice = bob
        .session
        .send_file(&bob_src.path().join("from-bob.bin"))
        .await
        .unwrap();
    assert_eq!(
        (to_bob.name.as_str(), to_bob.size),
        ("from-alice.bin", BIG_FILE as u64)
    );

    for (peer, received, sent, bytes) in [
        (&mut bob, &to_bob, &to_alice, &alice_bytes),
        (&mut alice, &to_alice, &to_bob, &bob_bytes),
    ] {
        let seen = peer.until_settled(2).await;
        let expected_path = peer.dir.path().join(&received.name);
        let saved = SessionEvent::FileSaved {
            id: received.id,
            name: received.name.clone(),
            path: expected_path.clone(),
            size: received.size,
        };
        let delivered = SessionEvent::FileDelivered {
            id: sent.id,
            name: sent.name.clone(),
            saved_as: sent.name.clone(),
        };
        assert!(seen.contains(&saved), "{seen:?}");
        assert!(seen.contains(&delivered), "{seen:?}");
        assert_eq!(&std::fs::read(&expected_path).unwrap(), bytes);
        assert_eq!(names_in(peer.dir.path()), [received.name.as_str()]);
        for direction in [Direction::Sending, Direction::Receiving] {
            let progress = seen
                .iter()
                .filter(|event| {
                    matches!(event, SessionEvent::FileProgress { direction: d, .. } if *d == direction)
                })
                .count();
            assert!((1..=101).contains(&progress), "{progress} progress events");
        }
    }
    alice.session.send_text("did it arrive?").await.unwrap();
    let seen = bob
        .until(|event| matches!(event, SessionEvent::Message { .. }))
        .await;
    assert_eq!(Peer::lines(&seen), ["did it arrive?"]);
    bob.session.send_text("yes").await.unwrap();
    let seen = alice
        .until(|event| matches!(event, SessionEvent::Message { .. }))
        .await;
    assert_eq!(Peer::lines(&seen), ["yes"]);
    let relay = relay.unwrap();
    assert!(relay.dropped() > 0, "the relay dropped nothing");
    assert!(alice.session.stats().reliable.retransmissions > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_datagram_is_dropped_and_counted_while_the_session_goes_on() {
    let (mut alice, mut bob, _) = connected(None, |_| {}).await;
    // A well-formed header from the initiator's direction with this session's number, a fresh
    // counter, and garbage where the ciphertext and tag go.
    let forger = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut datagram = vec![b'P', 1, 1, 0];
    datagram.extend_from_slice(&bob.number.to_be_bytes());
    datagram.extend_from_slice(&1_000_000u64.to_be_bytes());
    datagram.extend_from_slice(&[0x5a; 64]);
    forger.send_to(&datagram, bob.addr).await.unwrap();
    stats_until(&bob.session, |stats| stats.secure.forged == 1).await;

    alice.session.send_text("still here").await.unwrap();
    let seen = bob.until(is_message_or_end).await;
    assert_eq!(Peer::lines(&seen), ["still here"]);
    bob.session.send_text("me too").await.unwrap();
    let seen = alice.until(is_message_or_end).await;
    assert_eq!(Peer::lines(&seen), ["me too"]);
    assert_eq!(bob.session.stats().secure.forged, 1);
    assert!(!bob.session.is_ended());
}

fn is_message_or_end(event: &SessionEvent) -> bool {
    matches!(
        event,
        SessionEvent::Message { .. } | SessionEvent::Ended { .. }
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicated_datagrams_count_as_replayed_and_nothing_is_delivered_twice() {
    let duplication = Impairment {
        loss: 0.0,
        duplication: 0.3,
    };
    let (mut alice, mut bob, relay) = connected(Some(duplication), |_| {}).await;
    let from_alice: Vec<String> = (0..100).map(|i| format!("a{i}")).collect();
    let from_bob: Vec<String> = (0..100).map(|i| format!("b{i}")).collect();
    for (a, b) in from_alice.iter().zip(&from_bob) {
        alice.session.send_text(a).await.unwrap();
        bob.session.send_text(b).await.unwrap();
    }
    alice.session.close().await;
    let (alice_seen, alice_end) = alice.until_ended().await;
    let (bob_seen, bob_end) = bob.until_ended().await;
    assert_eq!(Peer::lines(&bob_seen), from_alice);
    assert_eq!(Peer::lines(&alice_seen), from_bob);
    assert_eq!(alice_end, SessionEnd::ClosedByUs);
    assert_eq!(bob_end, SessionEnd::ClosedByPeer);
    assert!(relay.unwrap().duplicated() > 0);
    let replayed = alice.session.stats().secure.replayed + bob.session.stats().secure.replayed;
    assert!(replayed > 0, "no duplicate was counted as replayed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_sent_directly_arrives_whole_and_both_ends_report_the_same() {
    let (mut alice, mut bob, _) = connected(None, |_| {}).await;
    let (src, _) = random_file("song.ogg", 200 * 1024 + 17);
    let ticket = alice
        .session
        .stream_file(&src.path().join("song.ogg"))
        .await
        .unwrap();
    assert_eq!(ticket.chunks, 201);
    let seen = bob
        .until(|event| matches!(event, SessionEvent::StreamReceived { .. }))
        .await;
    assert!(seen.contains(&SessionEvent::StreamIncoming {
        id: ticket.id,
        name: "song.ogg".to_owned(),
        rate: 512 * 1024,
    }));
    let Some(SessionEvent::StreamReceived { id, name, report }) = seen.last().cloned() else {
        unreachable!("until stops at StreamReceived");
    };
    assert_eq!((id, name.as_str()), (ticket.id, "song.ogg"));
    assert_eq!((report.sent, report.received, report.lost), (201, 201, 0));
    assert_eq!(report.duplicates, 0);
    assert_eq!(report.bytes, 200 * 1024 + 17);
    let seen = alice
        .until(|event| matches!(event, SessionEvent::StreamSent { .. }))
        .await;
    assert_eq!(
        seen.last().unwrap(),
        &SessionEvent::StreamSent {
            id: ticket.id,
            name: "song.ogg".to_owned(),
            report,
        }
    );
    assert_eq!(alice.session.stats().stream_datagrams_sent, 201);
    assert!(names_in(bob.dir.path()).is_empty(), "a stream is not saved");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_started_behind_a_file_loses_no_chunk() {
    // The stream's start waits on the reliable channel behind the file's chunks; its first
    // datagrams do not wait, and reach bob before he knows of the stream.
    let (mut alice, mut bob, _) = connected(None, |_| {}).await;
    let (src, _) = random_file("big.bin", BIG_FILE);
    let (clip, _) = random_file("clip.raw", 64 * 1024);
    alice
        .session
        .send_file(&src.path().join("big.bin"))
        .await
        .unwrap();
    // Once the file is moving, its chunks fill the send queue ahead of the stream's start.
    alice
        .until(|event| matches!(event, SessionEvent::FileProgress { .. }))
        .await;
    let ticket = alice
        .session
        .stream_file(&clip.path().join("clip.raw"))
        .await
        .unwrap();
    let seen = bob
        .until(|event| matches!(event, SessionEvent::StreamReceived { .. }))
        .await;
    let Some(SessionEvent::StreamReceived { report, .. }) = seen.last().cloned() else {
        unreachable!("until stops at StreamReceived");
    };
    assert_eq!(
        (report.sent, report.received, report.lost),
        (ticket.chunks, ticket.chunks, 0),
        "{report:?}"
    );
    assert_eq!(report.bytes, 64 * 1024);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_through_loss_reports_what_was_lost() {
    let (mut alice, mut bob, _relay) = connected(Some(Impairment::loss(0.2)), |_| {}).await;
    let (src, _) = random_file("talk.wav", 300 * 1024);
    let ticket = alice
        .session
        .stream_file(&src.path().join("talk.wav"))
        .await
        .unwrap();
    let seen = bob
        .until(|event| matches!(event, SessionEvent::StreamReceived { .. }))
        .await;
    let Some(SessionEvent::StreamReceived { report, .. }) = seen.last().cloned() else {
        unreachable!("until stops at StreamReceived");
    };
    assert_eq!(report.sent, ticket.chunks);
    assert!(report.lost > 0, "{report:?}");
    assert_eq!(report.received + report.lost, report.sent);
    let seen = alice
        .until(|event| matches!(event, SessionEvent::StreamSent { .. }))
        .await;
    assert!(matches!(
        seen.last(),
        Some(SessionEvent::StreamSent { report: sent, .. }) if *sent == report
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_vanishing_mid_transfer_is_reported_and_leaves_no_partial_file() {
    let short_idle = |config: &mut SessionConfig| {
        config.reliable.idle_timeout = Duration::from_secs(2);
        config.reliable.keep_alive = Duration::from_millis(500);
    };
    let (src, _) = random_file("big.bin", 3 * BIG_FILE);
    let (mut alice, mut bob, relay) = connected(Some(Impairment::default()), short_idle).await;
    let ticket = alice
        .session
        .send_file(&src.path().join("big.bin"))
        .await
        .unwrap();
    bob.until(|event| matches!(event, SessionEvent::FileProgress { .. }))
        .await;
    // The path between the two goes dead: nothing answers either side any more.
    drop(relay);

    let (seen, end) = bob.until_ended().await;
    assert_eq!(end, SessionEnd::PeerVanished("alice".to_owned()));
    assert_eq!(end.to_string(), "alice stopped answering");
    let failed = seen.iter().find_map(|event| match event {
        SessionEvent::FileFailed {
            id,
            direction: Direction::Receiving,
            ..
        } => Some(*id),
        _ => None,
    });
    assert_eq!(failed, Some(ticket.id));
    assert!(
        !seen
            .iter()
            .any(|event| matches!(event, SessionEvent::FileSaved { .. }))
    );
    assert!(
        names_in(bob.dir.path()).is_empty(),
        "{:?}",
        names_in(bob.dir.path())
    );

    let (seen, end) = alice.until_ended().await;
    assert_eq!(end, SessionEnd::PeerVanished("bob".to_owned()));
    assert!(seen.iter().any(|event| matches!(
        event,
        SessionEvent::FileFailed { id, direction: Direction::Sending, .. } if *id == ticket.id
    )));
    assert!(bob.session.is_ended() && alice.session.is_ended());
    assert!(matches!(
        bob.session.send_text("anyone?").await,
        Err(SessionError::Ended)
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_close_is_seen_by_the_peer_after_everything_sent_before_it() {
    let (mut alice, mut bob, _) = connected(None, |_| {}).await;
    bob.session.send_text("bye").await.unwrap();
    bob.session.close().await;
    assert!(bob.session.is_ended());
    let (seen, end) = alice.until_ended().await;
    assert_eq!(Peer::lines(&seen), ["bye"]);
    assert_eq!(end, SessionEnd::ClosedByPeer);
    let (_, end) = bob.until_ended().await;
    assert_eq!(end, SessionEnd::ClosedByUs);
    assert!(matches!(
        alice.session.send_text("too late").await,
        Err(SessionError::Ended)
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_whose_name_is_taken_is_saved_under_a_free_variant() {
    let (mut alice, mut bob, _) = connected(None, |_| {}).await;
    std::fs::write(bob.dir.path().join("notes.txt"), b"bob's own notes").unwrap();
    let (src, bytes) = random_file("notes.txt", 40_000);
    let ticket = alice
        .session
        .send_file(&src.path().join("notes.txt"))
        .await
        .unwrap();
    let seen = bob
        .until(|event| {
            matches!(
                event,
                SessionEvent::FileSaved { .. } | SessionEvent::FileFailed { .. }
            )
        })
        .await;
    let variant = bob.dir.path().join("notes (1).txt");
    assert_eq!(
        seen.last().unwrap(),
        &SessionEvent::FileSaved {
            id: ticket.id,
            name: "notes.txt".to_owned(),
            path: variant.clone(),
            size: 40_000,
        }
    );
    assert_eq!(std::fs::read(&variant).unwrap(), bytes);
    assert_eq!(
        std::fs::read(bob.dir.path().join("notes.txt")).unwrap(),
        b"bob's own notes"
    );
    let seen = alice
        .until(|event| {
            matches!(
                event,
                SessionEvent::FileDelivered { .. } | SessionEvent::FileFailed { .. }
            )
        })
        .await;
    assert_eq!(
        seen.last().unwrap(),
        &SessionEvent::FileDelivered {
            id: ticket.id,
            name: "notes.txt".to_owned(),
            saved_as: "notes (1).txt".to_owned(),
        }
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offer_over_the_size_limit_is_refused_and_the_session_goes_on() {
    let (mut alice, mut bob, _) = connected(None, |config| config.max_file_size = 1000).await;
    let (src, _) = random_file("large.bin", 5000);
    let ticket = alice
        .session
        .send_file(&src.path().join("large.bin"))
        .await
        .unwrap();
    let seen = alice
        .until(|event| {
            matches!(
                event,
                SessionEvent::FileDelivered { .. } | SessionEvent::FileFailed { .. }
            )
        })
        .await;
    assert!(matches!(
        seen.last(),
        Some(SessionEvent::FileFailed { id, direction: Direction::Sending, reason, .. })
            if *id == ticket.id && reason.contains("over the limit of 1000")
    ));
    let seen = bob
        .until(|event| matches!(event, SessionEvent::FileFailed { .. }))
        .await;
    assert!(
        !seen
            .iter()
            .any(|event| matches!(event, SessionEvent::FileIncoming { .. }))
    );
    assert!(names_in(bob.dir.path()).is_empty());
    alice.session.send_text("never mind").await.unwrap();
    let seen = bob.until(is_message_or_end).await;
    assert_eq!(Peer::lines(&seen), ["never mind"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_that_is_not_there_or_not_regular_is_refused_locally() {
    let (alice, _bob, _) = connected(None, |_| {}).await;
    let dir = tempfile::tempdir().unwrap();
    let missing = alice
        .session
        .send_file(&dir.path().join("nothing.bin"))
        .await;
    assert!(
        matches!(missing, Err(SessionError::File { .. })),
        "{missing:?}"
    );
    std::fs::create_dir(dir.path().join("folder")).unwrap();
    let folder = alice.session.send_file(&dir.path().join("folder")).await;
    assert!(
        matches!(folder, Err(SessionError::NotAFile { .. })),
        "{folder:?}"
    );
    std::fs::write(dir.path().join(".hidden"), b"x").unwrap();
    let hidden = alice.session.send_file(&dir.path().join(".hidden")).await;
    assert!(
        matches!(hidden, Err(SessionError::BadName { .. })),
        "{hidden:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_initiator_nobody_answers_gives_up_after_the_connect_timeout() {
    let silent = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let socket = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
    let dir = tempfile::tempdir().unwrap();
    let mut settings = config(dir.path());
    settings.connect_timeout = Duration::from_millis(500);
    let params = SessionParams {
        peer: "carol".to_owned(),
        peer_addr: silent.local_addr().unwrap(),
        key: SessionKey::from_bytes(rand::random()),
        session: 9,
        role: Role::Initiator,
    };
    let (session, events) = Session::start(socket, params, settings);
    let mut peer = Peer {
        session,
        events,
        dir,
        addr: silent.local_addr().unwrap(),
        number: 9,
    };
    let (seen, end) = peer.until_ended().await;
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert!(
        matches!(&end, SessionEnd::Failed(reason) if reason.contains("carol")),
        "{end:?}"
    );
    assert!(peer.session.is_ended());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_whose_message_does_not_decode_is_cut_off() {
    use protocol::p2p::secure::{DatagramKind, SecureChannel};
    use protocol::reliable::Connection;

    let fake = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
    let bob_socket = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
    let bob_addr = bob_socket.local_addr().unwrap();
    let key = SessionKey::from_bytes(rand::random());
    let dir = tempfile::tempdir().unwrap();
    let params = SessionParams {
        peer: "mallory".to_owned(),
        peer_addr: fake.local_addr().unwrap(),
        key: key.clone(),
        session: 77,
        role: Role::Acceptor,
    };
    let (session, events) = Session::start(bob_socket, params, config(dir.path()));
    let mut bob = Peer {
        session,
        events,
        dir,
        addr: bob_addr,
        number: 77,
    };
    // An initiator with the right key whose one message is no session message at all.
    let mut secure = SecureChannel::new(&key, 77, Role::Initiator);
    let mut conn = Connection::client(77, protocol::reliable::Config::default(), Instant::now());
    conn.send(bytes::Bytes::from_static(&[0xff, 1, 2])).unwrap();
    let mallory = tokio::spawn(async move {
        let mut sealed = Vec::new();
        let mut opened = Vec::new();
        let mut buffer = vec![0; 2048];
        loop {
            while let Some(packet) = conn.poll_transmit(Instant::now()) {
                secure.seal(DatagramKind::Reliable, &packet, &mut sealed);
                fake.send_to(&sealed, bob_addr).await.unwrap();
            }
            let wait = Duration::from_millis(10);
            match timeout(wait, fake.recv_from(&mut buffer)).await {
                Ok(Ok((len, _))) => {
                    if secure.open(&buffer[..len], &mut opened).is_ok() {
                        conn.handle_datagram(Instant::now(), &opened);
                    }
                }
                _ => conn.handle_timeout(Instant::now()),
            }
        }
    });
    let (seen, end) = bob.until_ended().await;
    mallory.abort();
    assert_eq!(seen.first(), Some(&SessionEvent::Connected));
    assert!(
        matches!(&end, SessionEnd::Failed(reason) if reason.contains("mallory broke the protocol")),
        "{end:?}"
    );
    assert!(bob.session.is_ended());
}
