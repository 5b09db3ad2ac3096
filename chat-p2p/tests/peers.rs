//! Whole peers ([`PeerClient`]) through a real signaling server on 127.0.0.1: an introduction,
//! chat both ways and a close between two peers; visibility and allow-lists as three peers see
//! them in lists, queries and introductions; an away peer and a peer in another session; a chat
//! line and a 5 MB file through a relay that drops 10% of datagrams; a peer killed in the middle
//! of a transfer; a forged datagram dropped.
//!
//! Every wait is bounded by [`PATIENCE`] and fails with what the peer heard meanwhile.

use std::fmt::Debug;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use chat_p2p::peer::{
    Direction, PeerClient, PeerConfig, PeerError, PeerEvent, SessionConfig, SessionEnd,
    SessionEvent,
};
use chat_p2p::signal::{ClientError, SignalConfig};
use integration_tests::RunningServer;
use protocol::p2p::secure::Role;
use protocol::p2p::signal::{PeerState, Presence, Visibility};
use server_kit::lossy_relay::LossyRelay;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};
use tokio::time::timeout;

/// How long a test waits for any one thing that should happen (a hang guard, not a speed check).
const PATIENCE: Duration = Duration::from_secs(20);
/// The size of the file sent through the lossy relay.
const RELAYED_FILE: usize = 5 * 1024 * 1024;
/// The size of the file whose receiver is killed: far more than arrives before the kill.
const DOOMED_FILE: usize = 30 * 1024 * 1024;

// The signaling server.

/// A signaling server on a loopback port, its accounts in a folder of its own.
struct Signal {
    addr: SocketAddr,
    server: RunningServer,
    _data: tempfile::TempDir,
}

impl Signal {
    async fn start() -> Signal {
        let data = tempfile::tempdir().unwrap();
        let config = SignalConfig {
            data_dir: data.path().to_owned(),
            failed_login_delay: Duration::from_millis(50),
            ..SignalConfig::default()
        };
        let server = RunningServer::start(|listener, shutdown| {
            chat_p2p::signal::run(listener, config, shutdown)
        })
        .await;
        Signal {
            addr: server.addr,
            server,
            _data: data,
        }
    }

    async fn stop(self) {
        self.server.stop().await;
    }
}

// Peers.

/// The password of `name` in these tests.
fn password(name: &str) -> String {
    format!("{name}'s long password")
}

/// A peer on `socket` that signs `name` up and logs in, announcing `public` if given (else
/// the socket's address), saving files in `downloads`.
async fn join_on(
    signal: SocketAddr,
    socket: UdpSocket,
    name: &str,
    public: Option<SocketAddr>,
    downloads: &Path,
) -> PeerClient {
    let config = PeerConfig {
        public_addr: public,
        session: SessionConfig {
            download_dir: downloads.to_owned(),
            ..SessionConfig::default()
        },
        ..PeerConfig::new(signal)
    };
    let bound = socket.local_addr().unwrap();
    let mut peer = PeerClient::with_socket(socket, config).await.unwrap();
    peer.signup(name, &password(name)).await.unwrap();
    let announced = peer.login(name, &password(name)).await.unwrap();
    assert_eq!(announced, public.unwrap_or(bound), "{name} announces");
    assert_eq!(peer.announced(), Some(announced));
    assert_eq!(peer.username(), Some(name));
    peer
}

/// A peer on a fresh loopback socket, signed up and logged in.
async fn join(signal: SocketAddr, name: &str, downloads: &Path) -> PeerClient {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    join_on(signal, socket, name, None, downloads).await
}

fn who(peer: &PeerClient) -> String {
    peer.username().unwrap_or("(logged out)").to_owned()
}

/// The next event `wanted` picks, passing over the others; fails after [`PATIENCE`] with
/// every event heard meanwhile.
async fn expect(
    peer: &mut PeerClient,
    what: &str,
    wanted: impl Fn(&PeerEvent) -> bool,
) -> PeerEvent {
    let name = who(peer);
    let mut seen = Vec::new();
    let waited = timeout(PATIENCE, async {
        loop {
            match peer.next_event().await {
                Some(event) if wanted(&event) => return Some(event),
                Some(event) => seen.push(event),
                None => return None,
            }
        }
    })
    .await;
    match waited {
        Ok(Some(event)) => event,
        Ok(None) => panic!("{name}: no more events while waiting for {what}; heard {seen:#?}"),
        Err(_) => panic!("{name} waited {PATIENCE:?} for {what}; heard {seen:#?}"),
    }
}

/// The next session event `wanted` picks (of the session with anyone), passing over the rest.
async fn expect_session(
    peer: &mut PeerClient,
    what: &str,
    wanted: impl Fn(&SessionEvent) -> bool,
) -> SessionEvent {
    let event = expect(
        peer,
        what,
        |event| matches!(event, PeerEvent::Session { event, .. } if wanted(event)),
    )
    .await;
    match event {
        PeerEvent::Session { event, .. } => event,
        other => unreachable!("{other:?}"),
    }
}

/// The next chat line the peer gets.
async fn next_line(peer: &mut PeerClient) -> String {
    let event = expect_session(peer, "a chat line", |event| {
        matches!(event, SessionEvent::Message { .. })
    })
    .await;
    match event {
        SessionEvent::Message { text } => text,
        other => unreachable!("{other:?}"),
    }
}

/// How the peer's session ended.
async fn ended(peer: &mut PeerClient) -> SessionEnd {
    let event = expect_session(peer, "the session's end", |event| {
        matches!(event, SessionEvent::Ended { .. })
    })
    .await;
    match event {
        SessionEvent::Ended { reason } => reason,
        other => unreachable!("{other:?}"),
    }
}

/// Why `peer` was declined by `by`.
async fn declined(peer: &mut PeerClient, by: &str) -> String {
    let event = expect(peer, &format!("a refusal from {by}"), |event| {
        matches!(event, PeerEvent::Declined { .. })
    })
    .await;
    match event {
        PeerEvent::Declined { peer, reason } => {
            assert_eq!(peer, by, "declined by whom: {reason}");
            reason
        }
        other => unreachable!("{other:?}"),
    }
}

/// What the peer's list shows.
async fn listed(peer: &PeerClient) -> Vec<(String, PeerState)> {
    let list = peer.list().await.unwrap();
    list.into_iter()
        .map(|entry| (entry.username, entry.state))
        .collect()
}

fn entries(list: &[(&str, PeerState)]) -> Vec<(String, PeerState)> {
    list.iter()
        .map(|(name, state)| ((*name).to_owned(), *state))
        .collect()
}

/// The server's words of a refusal; fails the test on anything else.
fn refusal<T: Debug>(result: Result<T, PeerError>) -> String {
    match result {
        Err(PeerError::Signal(ClientError::Refused(message))) => message,
        other => panic!("expected a refusal from the server, got {other:?}"),
    }
}

/// `alice` asks for `bob`, who accepts: both get the session, `alice` as the initiator, each
/// with the address the other announced.
async fn introduce(alice: &mut PeerClient, bob: &mut PeerClient) {
    let (alice_name, bob_name) = (who(alice), who(bob));
    alice.connect(&bob_name).await.unwrap();
    let introduction = expect(bob, "an introduction", |event| {
        matches!(event, PeerEvent::Introduction { .. })
    })
    .await;
    assert!(
        matches!(&introduction, PeerEvent::Introduction { from } if *from == alice_name),
        "{introduction:?}"
    );
    assert_eq!(
        bob.introductions().collect::<Vec<_>>(),
        [alice_name.as_str()]
    );
    assert_eq!(bob.accept(None).await.unwrap(), alice_name);
    let (alice_at, bob_at) = (alice.announced(), bob.announced());
    for (me, other, other_at, role) in [
        (&mut *alice, &bob_name, bob_at, Role::Initiator),
        (&mut *bob, &alice_name, alice_at, Role::Acceptor),
    ] {
        let started = expect(me, "the session", |event| {
            matches!(event, PeerEvent::SessionStarted { .. })
        })
        .await;
        let PeerEvent::SessionStarted {
            peer,
            address,
            role: got,
        } = started
        else {
            unreachable!()
        };
        assert_eq!((&peer, got), (other, role), "{}'s session", who(me));
        assert_eq!(Some(address), other_at, "{}'s session", who(me));
        assert_eq!(me.session_peer(), Some(other.as_str()));
        assert!(me.session_number().is_some());
    }
    assert_eq!(alice.session_number(), bob.session_number());
}

/// Waits until `check` holds, polling; fails after [`PATIENCE`] with `what`.
async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let polled = timeout(PATIENCE, async {
        while !check() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(polled.is_ok(), "waited {PATIENCE:?} for {what}");
}

/// Bytes that do not repeat in any short pattern (xorshift64*), the same for the same seed.
fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed | 1;
    let mut bytes = Vec::with_capacity(len + 8);
    while bytes.len() < len {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        bytes.extend_from_slice(&state.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
    }
    bytes.truncate(len);
    bytes
}

// The tests.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_peers_meet_chat_both_ways_and_close() {
    let signal = Signal::start().await;
    let downloads = tempfile::tempdir().unwrap();
    let mut alice = join(signal.addr, "alice", downloads.path()).await;
    let mut bob = join(signal.addr, "bob", downloads.path()).await;

    assert_eq!(
        listed(&alice).await,
        entries(&[("bob", PeerState::Available)])
    );
    let info = alice.query("bob").await.unwrap();
    assert_eq!(info.address, bob.udp_addr().unwrap());
    assert_eq!(info.state, PeerState::Available);

    introduce(&mut alice, &mut bob).await;
    assert_eq!(
        listed(&alice).await,
        entries(&[("bob", PeerState::Connected)])
    );
    assert_eq!(
        listed(&bob).await,
        entries(&[("alice", PeerState::Connected)])
    );

    let to_bob = ["hi bob", "how are you?", "ünïcödé and a → arrow"];
    let to_alice = ["hi alice", "fine, over UDP"];
    for line in to_bob {
        alice.send_text(line).await.unwrap();
    }
    for line in to_alice {
        bob.send_text(line).await.unwrap();
    }
    for line in to_bob {
        assert_eq!(next_line(&mut bob).await, line);
    }
    for line in to_alice {
        assert_eq!(next_line(&mut alice).await, line);
    }

    alice.close().await.unwrap();
    assert_eq!(ended(&mut alice).await, SessionEnd::ClosedByUs);
    assert_eq!(ended(&mut bob).await, SessionEnd::ClosedByPeer);
    assert_eq!(alice.session_peer(), None);
    assert_eq!(bob.session_peer(), None);
    assert!(matches!(
        alice.send_text("anyone?").await,
        Err(PeerError::NoSession)
    ));
    assert_eq!(
        listed(&bob).await,
        entries(&[("alice", PeerState::Available)])
    );
    assert_eq!(
        listed(&alice).await,
        entries(&[("bob", PeerState::Available)])
    );

    alice.quit().await;
    bob.quit().await;
    signal.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn visibility_hides_a_peer_from_lists_queries_and_introductions() {
    let signal = Signal::start().await;
    let downloads = tempfile::tempdir().unwrap();
    let alice = join(signal.addr, "alice", downloads.path()).await;
    let bob = join(signal.addr, "bob", downloads.path()).await;
    let carol = join(signal.addr, "carol", downloads.path()).await;
    let missing = refusal(carol.query("zed").await);
    assert_eq!(refusal(carol.connect("zed").await), missing);
    let hidden = missing.replace("zed", "alice");
    assert_ne!(hidden, missing, "the refusal names the peer: {missing}");

    alice
        .set_visibility(Visibility::Allow(vec!["bob".to_owned()]))
        .await
        .unwrap();
    assert_eq!(
        listed(&bob).await,
        entries(&[
            ("alice", PeerState::Available),
            ("carol", PeerState::Available)
        ])
    );
    assert_eq!(
        listed(&carol).await,
        entries(&[("bob", PeerState::Available)])
    );
    let info = bob.query("alice").await.unwrap();
    assert_eq!(info.address, alice.udp_addr().unwrap());
    assert_eq!(refusal(carol.query("alice").await), hidden);
    assert_eq!(refusal(carol.connect("alice").await), hidden);

    alice.set_visibility(Visibility::Nobody).await.unwrap();
    assert_eq!(
        listed(&bob).await,
        entries(&[("carol", PeerState::Available)])
    );
    assert_eq!(refusal(bob.query("alice").await), hidden);
    assert_eq!(refusal(bob.connect("alice").await), hidden);
    // alice herself still sees everyone.
    assert_eq!(
        listed(&alice).await,
        entries(&[
            ("bob", PeerState::Available),
            ("carol", PeerState::Available)
        ])
    );

    alice.set_visibility(Visibility::Everyone).await.unwrap();
    assert_eq!(
        listed(&carol).await,
        entries(&[
            ("alice", PeerState::Available),
            ("bob", PeerState::Available)
        ])
    );
    assert_eq!(
        carol.query("alice").await.unwrap().address,
        alice.udp_addr().unwrap()
    );

    for peer in [alice, bob, carol] {
        peer.quit().await;
    }
    signal.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn away_and_busy_peers_decline_and_a_peer_may_decline() {
    let signal = Signal::start().await;
    let downloads = tempfile::tempdir().unwrap();
    let mut alice = join(signal.addr, "alice", downloads.path()).await;
    let mut bob = join(signal.addr, "bob", downloads.path()).await;
    let mut carol = join(signal.addr, "carol", downloads.path()).await;

    carol.set_presence(Presence::Away).await.unwrap();
    assert_eq!(
        listed(&alice).await,
        entries(&[("bob", PeerState::Available), ("carol", PeerState::Away)])
    );
    assert_eq!(
        listed(&bob).await,
        entries(&[("alice", PeerState::Available), ("carol", PeerState::Away)])
    );
    alice.connect("carol").await.unwrap();
    assert_eq!(declined(&mut alice, "carol").await, "carol is away");
    assert_eq!(carol.introductions().count(), 0);

    introduce(&mut alice, &mut bob).await;
    assert_eq!(
        listed(&carol).await,
        entries(&[
            ("alice", PeerState::Connected),
            ("bob", PeerState::Connected)
        ])
    );
    // An away peer may still ask; a peer in a session is declined on its behalf.
    carol.connect("bob").await.unwrap();
    assert_eq!(
        declined(&mut carol, "bob").await,
        "bob is in another session"
    );
    assert_eq!(bob.introductions().count(), 0);
    alice.send_text("still here").await.unwrap();
    assert_eq!(next_line(&mut bob).await, "still here");

    alice.close().await.unwrap();
    assert_eq!(ended(&mut alice).await, SessionEnd::ClosedByUs);
    assert_eq!(ended(&mut bob).await, SessionEnd::ClosedByPeer);
    carol.set_presence(Presence::Available).await.unwrap();
    assert_eq!(
        listed(&alice).await,
        entries(&[
            ("bob", PeerState::Available),
            ("carol", PeerState::Available)
        ])
    );

    carol.connect("bob").await.unwrap();
    let introduction = expect(&mut bob, "carol's introduction", |event| {
        matches!(event, PeerEvent::Introduction { .. })
    })
    .await;
    assert!(
        matches!(&introduction, PeerEvent::Introduction { from } if from == "carol"),
        "{introduction:?}"
    );
    assert_eq!(bob.decline(Some("carol"), None).await.unwrap(), "carol");
    assert_eq!(declined(&mut carol, "bob").await, "bob declined");
    assert!(matches!(
        bob.decline(None, None).await,
        Err(PeerError::NoIntroduction)
    ));
    assert_eq!(
        listed(&carol).await,
        entries(&[
            ("alice", PeerState::Available),
            ("bob", PeerState::Available)
        ])
    );

    for peer in [alice, bob, carol] {
        peer.quit().await;
    }
    signal.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_line_and_a_5_mb_file_cross_a_relay_that_drops_10_percent() {
    let signal = Signal::start().await;
    let alice_dir = tempfile::tempdir().unwrap();
    let bob_dir = tempfile::tempdir().unwrap();
    let mut alice = join(signal.addr, "alice", alice_dir.path()).await;
    let bob_socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let relay = LossyRelay::start(bob_socket.local_addr().unwrap(), 0.10, 4)
        .await
        .unwrap();
    let mut bob = join_on(
        signal.addr,
        bob_socket,
        "bob",
        Some(relay.local_addr()),
        bob_dir.path(),
    )
    .await;
    assert_eq!(
        alice.query("bob").await.unwrap().address,
        relay.local_addr()
    );

    introduce(&mut alice, &mut bob).await;
    alice.send_text("a file is coming").await.unwrap();
    assert_eq!(next_line(&mut bob).await, "a file is coming");

    let original = pseudo_random(RELAYED_FILE, 0x5eed);
    let path = alice_dir.path().join("holiday.bin");
    std::fs::write(&path, &original).unwrap();
    let began = std::time::Instant::now();
    let ticket = alice.send_file(&path).await.unwrap();
    assert_eq!(
        (ticket.name.as_str(), ticket.size),
        ("holiday.bin", RELAYED_FILE as u64)
    );

    let incoming = expect_session(&mut bob, "the offer", |event| {
        matches!(event, SessionEvent::FileIncoming { .. })
    })
    .await;
    assert!(
        matches!(&incoming, SessionEvent::FileIncoming { name, size, .. }
            if name == "holiday.bin" && *size == RELAYED_FILE as u64),
        "{incoming:?}"
    );
    let saved = expect_session(&mut bob, "the file saved", |event| {
        matches!(
            event,
            SessionEvent::FileSaved { .. } | SessionEvent::FileFailed { .. }
        )
    })
    .await;
    let SessionEvent::FileSaved {
        name, path, size, ..
    } = saved
    else {
        panic!("the file failed: {saved:?}");
    };
    assert_eq!((name.as_str(), size), ("holiday.bin", RELAYED_FILE as u64));
    assert_eq!(path.parent(), Some(bob_dir.path()));
    assert!(
        std::fs::read(&path).unwrap() == original,
        "the saved file differs"
    );
    let delivered = expect_session(&mut alice, "the file delivered", |event| {
        matches!(
            event,
            SessionEvent::FileDelivered { .. } | SessionEvent::FileFailed { .. }
        )
    })
    .await;
    eprintln!("5 MB through the lossy relay in {:?}", began.elapsed());
    assert!(
        matches!(&delivered, SessionEvent::FileDelivered { id, saved_as, .. }
            if *id == ticket.id && saved_as == "holiday.bin"),
        "{delivered:?}"
    );

    bob.send_text("got it, thanks").await.unwrap();
    assert_eq!(next_line(&mut alice).await, "got it, thanks");
    let stats = alice.session().unwrap().stats();
    assert!(stats.reliable.retransmissions > 0, "{stats:?}");
    assert!(relay.dropped() > 0, "the relay dropped nothing");
    eprintln!(
        "the relay forwarded {} datagrams and dropped {}",
        relay.forwarded(),
        relay.dropped()
    );

    alice.close().await.unwrap();
    assert_eq!(ended(&mut alice).await, SessionEnd::ClosedByUs);
    assert_eq!(ended(&mut bob).await, SessionEnd::ClosedByPeer);
    alice.quit().await;
    bob.quit().await;
    signal.stop().await;
}

/// A peer in a runtime of its own on a thread of its own, so that it can be killed at once.
struct Doomed {
    /// Its events, as it heard them (the channel closes when it dies).
    events: mpsc::Receiver<PeerEvent>,
    kill: oneshot::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

impl Doomed {
    /// `name` joins on a runtime of its own, accepts every introduction and passes every
    /// event on, until [`Doomed::kill`].
    fn start(signal: SocketAddr, name: &'static str, downloads: &Path) -> Doomed {
        let (events_tx, events) = mpsc::channel(1024);
        let (kill, killed) = oneshot::channel::<()>();
        let downloads = downloads.to_owned();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let (failed, failure) = oneshot::channel::<()>();
            runtime.spawn(async move {
                let mut peer = join(signal, name, &downloads).await;
                while let Some(event) = peer.next_event().await {
                    if let PeerEvent::Introduction { from } = &event {
                        peer.accept(Some(from)).await.unwrap();
                    }
                    let _ = events_tx.send(event).await;
                }
                // The signaling connection is gone: nothing more to do.
                drop(failed);
            });
            // Runs the peer until killed (or until it fails, a panic dropping `failed`).
            runtime.block_on(async {
                tokio::select! {
                    _ = killed => {}
                    _ = failure => {}
                }
            });
            runtime.shutdown_background();
        });
        Doomed {
            events,
            kill,
            thread,
        }
    }

    /// Kills the peer: its runtime is shut down in the background, which drops every task and
    /// socket at once, with no goodbye to anyone (as `kill -9` would).
    async fn kill(self) {
        let _ = self.kill.send(());
        let joined = tokio::task::spawn_blocking(move || self.thread.join());
        timeout(PATIENCE, joined)
            .await
            .expect("the killed peer's thread ends in time")
            .unwrap()
            .expect("the killed peer's thread does not panic");
    }

    /// The next event `wanted` picks, passing over the others.
    async fn expect(&mut self, what: &str, wanted: impl Fn(&PeerEvent) -> bool) -> PeerEvent {
        let mut seen = Vec::new();
        let waited = timeout(PATIENCE, async {
            loop {
                match self.events.recv().await {
                    Some(event) if wanted(&event) => return Some(event),
                    Some(event) => seen.push(event),
                    None => return None,
                }
            }
        })
        .await;
        match waited {
            Ok(Some(event)) => event,
            Ok(None) => panic!("the doomed peer died before {what}; heard {seen:#?}"),
            Err(_) => panic!("waited {PATIENCE:?} for the doomed peer's {what}; heard {seen:#?}"),
        }
    }
}

/// What alice heard when bob was killed in the middle of her transfer.
struct Killed {
    /// The server's words in [`PeerEvent::PartnerLeft`].
    left: String,
    /// The [`SessionEvent::FileFailed`] reason of her transfer.
    failed: String,
    /// How her session ended.
    end: SessionEnd,
}

/// alice sends bob a 30 MB file; bob, on a runtime of his own, is killed once part of it is
/// acknowledged. Checks everything alice must hear, in order: the server says bob left, her
/// transfer fails, her session ends, and bob is in no list.
async fn receiver_killed_mid_transfer() -> Killed {
    let signal = Signal::start().await;
    let alice_dir = tempfile::tempdir().unwrap();
    let bob_dir = tempfile::tempdir().unwrap();
    let mut alice = join(signal.addr, "alice", alice_dir.path()).await;
    let mut bob = Doomed::start(signal.addr, "bob", bob_dir.path());
    // bob is listed once he has logged in and announced.
    let listed_bob = timeout(PATIENCE, async {
        while !listed(&alice).await.iter().any(|(name, _)| name == "bob") {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(listed_bob.is_ok(), "bob never showed up in alice's list");

    alice.connect("bob").await.unwrap();
    let started = expect(&mut alice, "the session", |event| {
        matches!(event, PeerEvent::SessionStarted { .. })
    })
    .await;
    assert!(
        matches!(&started, PeerEvent::SessionStarted { peer, role: Role::Initiator, .. } if peer == "bob"),
        "{started:?}"
    );
    bob.expect("session", |event| {
        matches!(event, PeerEvent::SessionStarted { .. })
    })
    .await;

    let path = alice_dir.path().join("big.bin");
    std::fs::write(&path, pseudo_random(DOOMED_FILE, 30)).unwrap();
    let ticket = alice.send_file(&path).await.unwrap();
    bob.expect("offer", |event| {
        matches!(
            event,
            PeerEvent::Session {
                event: SessionEvent::FileIncoming { .. },
                ..
            }
        )
    })
    .await;
    // bob has received and acknowledged some of the file when he dies.
    let progress = expect_session(&mut alice, "progress", |event| {
        matches!(event, SessionEvent::FileProgress { .. })
    })
    .await;
    bob.kill().await;
    let SessionEvent::FileProgress {
        id, done, total, ..
    } = progress
    else {
        unreachable!()
    };
    assert_eq!((id, total), (ticket.id, DOOMED_FILE as u64));
    assert!(0 < done && done < total, "{done} of {total} bytes");

    let left = expect(&mut alice, "bob leaving", |event| {
        matches!(
            event,
            PeerEvent::PartnerLeft { .. }
                | PeerEvent::Session {
                    event: SessionEvent::FileDelivered { .. }
                        | SessionEvent::FileFailed { .. }
                        | SessionEvent::Ended { .. },
                    ..
                }
        )
    })
    .await;
    let PeerEvent::PartnerLeft {
        peer,
        reason: left_reason,
    } = left
    else {
        panic!("before the server said bob left: {left:?}");
    };
    assert_eq!(peer, "bob");
    assert!(left_reason.contains("bob"), "{left_reason}");
    let failed = expect_session(&mut alice, "the transfer's failure", |event| {
        matches!(
            event,
            SessionEvent::FileDelivered { .. }
                | SessionEvent::FileFailed { .. }
                | SessionEvent::Ended { .. }
        )
    })
    .await;
    let SessionEvent::FileFailed {
        id,
        direction,
        reason,
        ..
    } = failed
    else {
        panic!("the transfer did not fail: {failed:?}");
    };
    assert_eq!((id, direction), (ticket.id, Direction::Sending), "{reason}");
    let end = ended(&mut alice).await;
    eprintln!("bob left: {left_reason}; the transfer failed: {reason}; the session ended: {end}");
    assert_eq!(alice.session_peer(), None);
    assert_eq!(listed(&alice).await, []);
    let missing = refusal(alice.query("zed").await);
    assert_eq!(
        refusal(alice.query("bob").await),
        missing.replace("zed", "bob")
    );

    alice.quit().await;
    signal.stop().await;
    Killed {
        left: left_reason,
        failed: reason,
        end,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_killed_mid_transfer_is_reported_to_the_sender() {
    let killed = receiver_killed_mid_transfer().await;
    assert_eq!(killed.left, "bob went offline");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_peer_is_named_in_the_failed_transfer_and_the_end() {
    let killed = receiver_killed_mid_transfer().await;
    assert_eq!(killed.failed, "bob went offline");
    assert_eq!(killed.end, SessionEnd::Left("bob went offline".to_owned()));
    assert!(killed.end.to_string().contains("bob"), "{}", killed.end);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_datagram_is_dropped_and_counted_and_the_chat_goes_on() {
    let signal = Signal::start().await;
    let downloads = tempfile::tempdir().unwrap();
    let mut alice = join(signal.addr, "alice", downloads.path()).await;
    let mut bob = join(signal.addr, "bob", downloads.path()).await;
    introduce(&mut alice, &mut bob).await;
    alice.send_text("before").await.unwrap();
    assert_eq!(next_line(&mut bob).await, "before");
    let before = bob.session().unwrap().stats().secure;
    assert_eq!(before.forged, 0, "{before:?}");

    // The header of a datagram from alice (the initiator) to bob: magic, version 1, kind 1 (a
    // reliable-layer packet), direction 0, the session's number, a counter ahead of hers.
    let mut forged = vec![b'P', 1, 1, 0];
    forged.extend_from_slice(&bob.session_number().unwrap().to_be_bytes());
    forged.extend_from_slice(&1_000_000u64.to_be_bytes());
    forged.extend_from_slice(&pseudo_random(64, 6));
    let attacker = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    attacker
        .send_to(&forged, bob.udp_addr().unwrap())
        .await
        .unwrap();
    let session = bob.session().unwrap();
    eventually("bob to count the forged datagram", || {
        session.stats().secure.forged == 1
    })
    .await;

    alice.send_text("after").await.unwrap();
    assert_eq!(next_line(&mut bob).await, "after");
    bob.send_text("still talking").await.unwrap();
    assert_eq!(next_line(&mut alice).await, "still talking");
    let after = bob.session().unwrap().stats().secure;
    assert_eq!(after.forged, 1, "{after:?}");
    assert!(after.opened > before.opened, "{after:?}");

    alice.close().await.unwrap();
    assert_eq!(ended(&mut alice).await, SessionEnd::ClosedByUs);
    assert_eq!(ended(&mut bob).await, SessionEnd::ClosedByPeer);
    alice.quit().await;
    bob.quit().await;
    signal.stop().await;
}
