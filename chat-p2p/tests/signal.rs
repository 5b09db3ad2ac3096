//! The signaling server and its client over real sockets on 127.0.0.1: accounts and their
//! file, log-ins, announced addresses, lists and queries under every visibility, introductions
//! (accepted, declined, automatic, unanswered), sessions and their end, dropped connections,
//! and garbage on the wire.
//!
//! Where a test needs the server to have seen a connection drop before it asks something on
//! another connection, it waits for a notice the drop causes (the partner's `session_ended`,
//! an asker's `declined`): the drop and the next request travel on two sockets served by two
//! tasks, so nothing else orders them, and the server produces that notice in the same step
//! that takes the peer offline.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use chat_p2p::signal::{ClientError, SignalClient, SignalConfig};
use integration_tests::RunningServer;
use protocol::p2p::secure::Role;
use protocol::p2p::signal::{PeerEntry, PeerState, Presence, ServerMessage, Visibility};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::timeout;

/// How long a test waits for anything that should happen promptly.
const PATIENCE: Duration = Duration::from_secs(10);
/// Every account's password in these tests.
const PASSWORD: &str = "correct horse battery";
/// The base of the failed log-in pause in these tests.
const FAILED_LOGIN_DELAY: Duration = Duration::from_millis(200);

/// A signaling server on a loopback port.
async fn start_server(config: SignalConfig) -> RunningServer {
    RunningServer::start(|listener, shutdown| chat_p2p::signal::run(listener, config, shutdown))
        .await
}

fn config(dir: &Path) -> SignalConfig {
    SignalConfig {
        data_dir: dir.to_owned(),
        failed_login_delay: FAILED_LOGIN_DELAY,
        ..SignalConfig::default()
    }
}

async fn connect(addr: SocketAddr) -> (SignalClient, mpsc::Receiver<ServerMessage>) {
    SignalClient::connect(addr, PATIENCE).await.unwrap()
}

/// A logged-in, announced peer.
struct Peer {
    client: SignalClient,
    notices: mpsc::Receiver<ServerMessage>,
    /// The UDP address it announced.
    address: SocketAddr,
}

impl Peer {
    /// Signs `name` up, logs it in and announces `127.0.0.1:udp_port`.
    async fn join(addr: SocketAddr, name: &str, udp_port: u16) -> Peer {
        let (client, notices) = connect(addr).await;
        client.signup(name, PASSWORD).await.unwrap();
        client.login(name, PASSWORD).await.unwrap();
        let address = SocketAddr::from(([127, 0, 0, 1], udp_port));
        client.announce(address).await.unwrap();
        Peer {
            client,
            notices,
            address,
        }
    }

    async fn notice(&mut self) -> ServerMessage {
        timeout(PATIENCE, self.notices.recv())
            .await
            .expect("a notice in time")
            .expect("the connection is open")
    }

    async fn listed(&self) -> Vec<(String, PeerState)> {
        let peers = self.client.list().await.unwrap();
        peers
            .into_iter()
            .map(|PeerEntry { username, state }| (username, state))
            .collect()
    }
}

/// The server's words of a refusal; fails the test on anything else.
fn refusal<T: std::fmt::Debug>(result: Result<T, ClientError>) -> String {
    match result {
        Err(ClientError::Refused(message)) => message,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

fn declined(peer: &str, reason: &str) -> ServerMessage {
    ServerMessage::Declined {
        peer: peer.into(),
        reason: reason.into(),
    }
}

fn entries(list: &[(&str, PeerState)]) -> Vec<(String, PeerState)> {
    list.iter()
        .map(|(name, state)| ((*name).to_owned(), *state))
        .collect()
}

// Raw frames.

async fn send_raw(stream: &mut TcpStream, bytes: &[u8]) {
    stream.write_all(bytes).await.unwrap();
}

fn frame(payload: &str) -> Vec<u8> {
    format!("{:<10}{payload}", payload.len()).into_bytes()
}

/// The next frame's JSON.
async fn read_json(stream: &mut TcpStream) -> Value {
    let mut header = [0u8; 10];
    timeout(PATIENCE, stream.read_exact(&mut header))
        .await
        .expect("a frame in time")
        .expect("a frame header");
    let len: usize = std::str::from_utf8(&header)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let mut payload = vec![0u8; len];
    timeout(PATIENCE, stream.read_exact(&mut payload))
        .await
        .expect("a payload in time")
        .expect("a payload");
    serde_json::from_slice(&payload).expect("the server sends JSON")
}

async fn request_raw(stream: &mut TcpStream, request: Value) -> Value {
    send_raw(stream, &frame(&request.to_string())).await;
    read_json(stream).await
}

async fn assert_closed(stream: &mut TcpStream) {
    let mut rest = Vec::new();
    timeout(PATIENCE, stream.read_to_end(&mut rest))
        .await
        .expect("the server closes in time")
        .expect("a clean close");
    assert!(rest.is_empty(), "nothing after the error: {rest:?}");
}

fn error(re: Option<&str>, message: &str) -> Value {
    json!({"type": "error", "re": re, "message": message})
}

#[tokio::test]
async fn accounts_survive_a_restart_and_hold_no_password() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(config(dir.path())).await;
    let (alice, _notices) = connect(server.addr).await;
    alice.signup("alice", PASSWORD).await.unwrap();
    alice.login("alice", PASSWORD).await.unwrap();
    let allow = Visibility::Allow(vec!["bob".into()]);
    alice.set_visibility(allow).await.unwrap();
    drop(alice);
    server.stop().await;

    let file = std::fs::read_to_string(dir.path().join("accounts.json")).unwrap();
    assert!(file.contains("$argon2id$"), "{file}");
    assert!(!file.contains(PASSWORD), "{file}");
    let stored: Value = serde_json::from_str(&file).unwrap();
    assert_eq!(stored["alice"]["visibility"], json!({"allow": ["bob"]}));

    let server = start_server(config(dir.path())).await;
    let (alice, _alice_notices) = connect(server.addr).await;
    assert_eq!(
        refusal(alice.login("alice", "wrong").await),
        "wrong username or password"
    );
    alice.login("alice", PASSWORD).await.unwrap();
    alice
        .announce("127.0.0.1:4001".parse().unwrap())
        .await
        .unwrap();
    let bob = Peer::join(server.addr, "bob", 4002).await;
    let carol = Peer::join(server.addr, "carol", 4003).await;
    assert_eq!(
        bob.listed().await,
        entries(&[
            ("alice", PeerState::Available),
            ("carol", PeerState::Available)
        ])
    );
    assert_eq!(
        carol.listed().await,
        entries(&[("bob", PeerState::Available)])
    );
    let taken = refusal(carol.client.signup("alice", "another").await);
    assert_eq!(taken, "the username alice is taken");
    server.stop().await;
}

#[tokio::test]
async fn a_damaged_accounts_file_stops_the_server_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("accounts.json"), "{\"alice\": 3").unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let run = chat_p2p::signal::run(listener, config(dir.path()), std::future::pending());
    let err = timeout(PATIENCE, run).await.unwrap().unwrap_err();
    assert!(err.to_string().contains("accounts.json"), "{err}");
}

#[tokio::test]
async fn sign_up_refuses_taken_and_bad_names_and_passwords_and_does_not_log_in() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(config(dir.path())).await;
    let (client, _notices) = connect(server.addr).await;
    client.signup("alice", PASSWORD).await.unwrap();
    let cases = [
        ("alice", PASSWORD, "the username alice is taken".to_owned()),
        ("", PASSWORD, "the username is empty".to_owned()),
        (
            &"a".repeat(33),
            PASSWORD,
            "the username is 33 bytes long, more than 32".to_owned(),
        ),
        (
            "bad\nname",
            PASSWORD,
            "the username holds the control character '\\n'".to_owned(),
        ),
        ("bob", "", "the password is empty".to_owned()),
        (
            "bob",
            &"p".repeat(1025),
            "the password is 1025 bytes long, more than 1024".to_owned(),
        ),
    ];
    for (name, password, expected) in cases {
        let message = refusal(client.signup(name, password).await);
        assert_eq!(message, expected, "signing up {name:?}");
    }
    assert_eq!(refusal(client.list().await), "log in first");
    client.login("alice", PASSWORD).await.unwrap();
    assert_eq!(client.list().await.unwrap(), []);
    server.stop().await;
}

#[tokio::test]
async fn an_account_has_one_live_log_in_freed_when_its_connection_drops() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(config(dir.path())).await;
    let mut alice = Peer::join(server.addr, "alice", 4001).await;
    let mut bob = Peer::join(server.addr, "bob", 4002).await;
    let (second, _notices) = connect(server.addr).await;
    assert_eq!(
        refusal(second.login("alice", PASSWORD).await),
        "alice is already logged in elsewhere"
    );
    assert_eq!(
        refusal(alice.client.login("alice", PASSWORD).await),
        "already logged in as alice"
    );
    assert_eq!(
        refusal(alice.client.login("bob", PASSWORD).await),
        "already logged in as alice"
    );

    bob.client.connect_to("alice").await.unwrap();
    assert_eq!(
        alice.notice().await,
        ServerMessage::Introduction { from: "bob".into() }
    );
    drop(alice);
    assert_eq!(bob.notice().await, declined("alice", "alice went offline"));
    second.login("alice", PASSWORD).await.unwrap();
    bob.notices.close();
    server.stop().await;
}

#[tokio::test]
async fn failed_log_ins_slow_down_and_reconnecting_does_not_reset_the_count() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(config(dir.path())).await;
    let (first, _notices) = connect(server.addr).await;
    first.signup("alice", PASSWORD).await.unwrap();

    let mut pauses = Vec::new();
    for _ in 0..2 {
        let began = Instant::now();
        let message = refusal(first.login("alice", "wrong").await);
        assert_eq!(message, "wrong username or password");
        pauses.push(began.elapsed());
    }
    drop(first);
    let (second, _notices) = connect(server.addr).await;
    let began = Instant::now();
    let message = refusal(second.login("alice", "also wrong").await);
    assert_eq!(message, "wrong username or password");
    pauses.push(began.elapsed());
    assert!(pauses[0] >= FAILED_LOGIN_DELAY, "{pauses:?}");
    assert!(pauses[1] >= 2 * FAILED_LOGIN_DELAY, "{pauses:?}");
    assert!(pauses[2] >= 4 * FAILED_LOGIN_DELAY, "{pauses:?}");

    let began = Instant::now();
    let unknown = refusal(second.login("nobody", PASSWORD).await);
    assert_eq!(unknown, "wrong username or password");
    assert!(began.elapsed() >= FAILED_LOGIN_DELAY);
    second.login("alice", PASSWORD).await.unwrap();
    server.stop().await;
}

#[tokio::test]
async fn nothing_but_sign_up_and_log_in_before_logging_in() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(config(dir.path())).await;
    let (client, _notices) = connect(server.addr).await;
    let address: SocketAddr = "127.0.0.1:4000".parse().unwrap();
    let answers = [
        refusal(client.logout().await),
        refusal(client.announce(address).await),
        refusal(client.list().await),
        refusal(client.query("bob").await),
        refusal(client.set_presence(Presence::Away).await),
        refusal(client.set_visibility(Visibility::Nobody).await),
        refusal(client.connect_to("bob").await),
        refusal(client.accept("bob").await),
        refusal(client.decline("bob", None).await),
        refusal(client.close_session().await),
    ];
    for answer in answers {
        assert_eq!(answer, "log in first");
    }
    server.stop().await;
}

#[tokio::test]
async fn announce_needs_a_specific_ip_and_port_and_may_be_repeated() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(config(dir.path())).await;
    let (alice, _notices) = connect(server.addr).await;
    alice.signup("alice", PASSWORD).await.unwrap();
    alice.login("alice", PASSWORD).await.unwrap();
    let bob = Peer::join(server.addr, "bob", 4002).await;

    for bad in ["0.0.0.0:4001", "[::]:4001", "127.0.0.1:0"] {
        let refused = refusal(alice.announce(bad.parse().unwrap()).await);
        assert!(refused.starts_with(bad), "{bad}: {refused}");
    }
    assert_eq!(bob.listed().await, []);
    assert_eq!(
        refusal(bob.client.query("alice").await),
        "no peer named alice is online"
    );
    assert_eq!(
        refusal(alice.connect_to("bob").await),
        "announce your UDP address first"
    );

    alice
        .announce("127.0.0.1:4001".parse().unwrap())
        .await
        .unwrap();
    let public: SocketAddr = "203.0.113.7:9000".parse().unwrap();
    alice.announce(public).await.unwrap();
    let info = bob.client.query("alice").await.unwrap();
    assert_eq!(info.address, public);
    assert_eq!(info.state, PeerState::Available);
    assert_eq!(info.username, "alice");
    server.stop().await;
}

#[tokio::test]
async fn lists_show_states_and_only_the_peers_that_allow_the_asker() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(config(dir.path())).await;
    let alice = Peer::join(server.addr, "alice", 4001).await;
    let bob = Peer::join(server.addr, "bob", 4002).await;
    let carol = Peer::join(server.addr, "carol", 4003).await;
    let dave = Peer::join(server.addr, "dave", 4004).await;
    let erin = Peer::join(server.addr, "erin", 4005).await;
    alice.client.set_presence(Presence::Away).await.unwrap();
    bob.client.set_visibility(Visibility::Nobody).await.unwrap();
    let only_dave = Visibility::Allow(vec!["dave".into()]);
    carol.client.set_visibility(only_dave).await.unwrap();

    assert_eq!(
        dave.listed().await,
        entries(&[
            ("alice", PeerState::Away),
            ("carol", PeerState::Available),
            ("erin", PeerState::Available),
        ])
    );
    assert_eq!(
        erin.listed().await,
        entries(&[("alice", PeerState::Away), ("dave", PeerState::Available)])
    );
    assert_eq!(
        bob.listed().await,
        entries(&[
            ("alice", PeerState::Away),
            ("dave", PeerState::Available),
            ("erin", PeerState::Available),
        ])
    );

    carol
        .client
        .set_visibility(Visibility::Everyone)
        .await
        .unwrap();
    alice
        .client
        .set_presence(Presence::Available)
        .await
        .unwrap();
    assert_eq!(
        erin.listed().await,
        entries(&[
            ("alice", PeerState::Available),
            ("carol", PeerState::Available),
            ("dave", PeerState::Available),
        ])
    );
    server.stop().await;
}

#[tokio::test]
async fn allow_lists_are_bounded_and_hold_only_valid_names() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(config(dir.path())).await;
    let alice = Peer::join(server.addr, "alice", 4001).await;
    let many = (0..257).map(|n| format!("user{n}")).collect();
    assert_eq!(
        refusal(alice.client.set_visibility(Visibility::Allow(many)).await),
        "the allow-list has 257 names, more than 256"
    );
    let bad = Visibility::Allow(vec!["bob".into(), String::new()]);
    assert_eq!(
        refusal(alice.client.set_visibility(bad).await),
        "the allow-list holds an invalid username: the username is empty"
    );
    server.stop().await;
}

#[tokio::test]
async fn query_and_connect_use_the_same_words_for_hidden_and_offline_peers() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(config(dir.path())).await;
    let carol = Peer::join(server.addr, "carol", 4003).await;
    let dave = Peer::join(server.addr, "dave", 4004).await;
    let erin = Peer::join(server.addr, "erin", 4005).await;
    let only_dave = Visibility::Allow(vec!["dave".into()]);
    carol.client.set_visibility(only_dave).await.unwrap();

    let seen = dave.client.query("carol").await.unwrap();
    assert_eq!(seen.address, carol.address);
    assert_eq!(
        refusal(erin.client.query("carol").await),
        "no peer named carol is online"
    );
    assert_eq!(
        refusal(erin.client.query("zed").await),
        "no peer named zed is online"
    );
    assert_eq!(
        refusal(erin.client.connect_to("carol").await),
        "no peer named carol is online"
    );
    assert_eq!(
        refusal(erin.client.connect_to("zed").await),
        "no peer named zed is online"
    );
    assert_eq!(
        refusal(erin.client.connect_to("erin").await),
        "you cannot connect to yourself"
    );
    server.stop().await;
}

#[tokio::test]
async fn an_accepted_introduction_gives_both_peers_one_session() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(config(dir.path())).await;
    let mut alice = Peer::join(server.addr, "alice", 4001).await;
    let mut bob = Peer::join(server.addr, "bob", 4002).await;
    let mut carol = Peer::join(server.addr, "carol", 4003).await;

    alice.client.connect_to("bob").await.unwrap();
    let introduction = ServerMessage::Introduction {
        from: "alice".into(),
    };
    assert_eq!(bob.notice().await, introduction);
    assert_eq!(
        refusal(alice.client.connect_to("carol").await),
        "you are already waiting for an answer from bob"
    );
    carol.client.connect_to("alice").await.unwrap();
    assert_eq!(
        alice.notice().await,
        ServerMessage::Introduction {
            from: "carol".into()
        }
    );
    assert_eq!(
        refusal(bob.client.accept("carol").await),
        "no introduction from carol is waiting"
    );
    bob.client.accept("alice").await.unwrap();

    let ServerMessage::Session {
        peer,
        address,
        key,
        session,
        role,
    } = alice.notice().await
    else {
        panic!("alice expected a session");
    };
    assert_eq!(
        (peer.as_str(), address, role),
        ("bob", bob.address, Role::Initiator)
    );
    let ServerMessage::Session {
        peer: bob_peer,
        address: bob_sees,
        key: bob_key,
        session: bob_session,
        role: bob_role,
    } = bob.notice().await
    else {
        panic!("bob expected a session");
    };
    assert_eq!(
        (bob_peer.as_str(), bob_sees, bob_role),
        ("alice", alice.address, Role::Acceptor)
    );
    assert_eq!(key, bob_key);
    assert_eq!(session, bob_session);
    assert_ne!(key.as_bytes(), &[0; 32]);
    assert_eq!(
        carol.notice().await,
        declined("alice", "alice is in another session")
    );

    assert_eq!(
        carol.listed().await,
        entries(&[
            ("alice", PeerState::Connected),
            ("bob", PeerState::Connected)
        ])
    );
    assert_eq!(
        carol.client.query("bob").await.unwrap().state,
        PeerState::Connected
    );
    carol.client.connect_to("bob").await.unwrap();
    assert_eq!(
        carol.notice().await,
        declined("bob", "bob is in another session")
    );
    assert_eq!(
        refusal(alice.client.connect_to("carol").await),
        "close your session with bob first"
    );

    alice.client.close_session().await.unwrap();
    assert_eq!(
        bob.notice().await,
        ServerMessage::SessionEnded {
            peer: "alice".into(),
            reason: "alice closed the session".into()
        }
    );
    assert_eq!(
        refusal(bob.client.close_session().await),
        "you are not in a session"
    );
    assert_eq!(
        carol.listed().await,
        entries(&[
            ("alice", PeerState::Available),
            ("bob", PeerState::Available)
        ])
    );

    // A second session gets a key of its own.
    bob.client.connect_to("alice").await.unwrap();
    assert_eq!(
        alice.notice().await,
        ServerMessage::Introduction { from: "bob".into() }
    );
    alice.client.accept("bob").await.unwrap();
    let ServerMessage::Session { key: second, .. } = alice.notice().await else {
        panic!("alice expected a second session");
    };
    assert_ne!(second, key);
    server.stop().await;
}

#[tokio::test]
async fn an_away_peer_declines_automatically_and_a_peer_may_decline_with_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(config(dir.path())).await;
    let mut alice = Peer::join(server.addr, "alice", 4001).await;
    let mut bob = Peer::join(server.addr, "bob", 4002).await;

    bob.client.set_presence(Presence::Away).await.unwrap();
    alice.client.connect_to("bob").await.unwrap();
    assert_eq!(alice.notice().await, declined("bob", "bob is away"));

    bob.client.set_presence(Presence::Available).await.unwrap();
    alice.client.connect_to("bob").await.unwrap();
    let introduction = ServerMessage::Introduction {
        from: "alice".into(),
    };
    assert_eq!(bob.notice().await, introduction);
    bob.client
        .decline("alice", Some("busy writing"))
        .await
        .unwrap();
    assert_eq!(alice.notice().await, declined("bob", "busy writing"));
    assert_eq!(
        refusal(bob.client.decline("alice", None).await),
        "no introduction from alice is waiting"
    );

    alice.client.connect_to("bob").await.unwrap();
    assert_eq!(bob.notice().await, introduction);
    bob.client.decline("alice", None).await.unwrap();
    assert_eq!(alice.notice().await, declined("bob", "bob declined"));
    server.stop().await;
}

#[tokio::test]
async fn an_unanswered_introduction_is_declined_after_the_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let wait = Duration::from_millis(300);
    let server = start_server(SignalConfig {
        introduction_timeout: wait,
        ..config(dir.path())
    })
    .await;
    let mut alice = Peer::join(server.addr, "alice", 4001).await;
    let mut bob = Peer::join(server.addr, "bob", 4002).await;

    let asked = Instant::now();
    alice.client.connect_to("bob").await.unwrap();
    assert!(matches!(
        bob.notice().await,
        ServerMessage::Introduction { .. }
    ));
    assert_eq!(alice.notice().await, declined("bob", "bob did not answer"));
    assert!(asked.elapsed() >= wait);
    assert_eq!(
        refusal(bob.client.accept("alice").await),
        "no introduction from alice is waiting"
    );
    alice.client.connect_to("bob").await.unwrap();
    server.stop().await;
}

#[tokio::test]
async fn a_dropped_connection_leaves_every_list_and_ends_its_session() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(config(dir.path())).await;
    let mut alice = Peer::join(server.addr, "alice", 4001).await;
    let mut bob = Peer::join(server.addr, "bob", 4002).await;
    let carol = Peer::join(server.addr, "carol", 4003).await;

    alice.client.connect_to("bob").await.unwrap();
    assert!(matches!(
        bob.notice().await,
        ServerMessage::Introduction { .. }
    ));
    bob.client.accept("alice").await.unwrap();
    assert!(matches!(
        alice.notice().await,
        ServerMessage::Session { .. }
    ));
    assert!(matches!(bob.notice().await, ServerMessage::Session { .. }));

    drop(alice);
    assert_eq!(
        bob.notice().await,
        ServerMessage::SessionEnded {
            peer: "alice".into(),
            reason: "alice went offline".into()
        }
    );
    assert_eq!(
        carol.listed().await,
        entries(&[("bob", PeerState::Available)])
    );
    assert_eq!(
        refusal(carol.client.query("alice").await),
        "no peer named alice is online"
    );

    // Log-out does the same, and the connection may log in again.
    carol.client.connect_to("bob").await.unwrap();
    assert!(matches!(
        bob.notice().await,
        ServerMessage::Introduction { .. }
    ));
    bob.client.accept("carol").await.unwrap();
    assert!(matches!(bob.notice().await, ServerMessage::Session { .. }));
    carol.client.logout().await.unwrap();
    assert_eq!(
        bob.notice().await,
        ServerMessage::SessionEnded {
            peer: "carol".into(),
            reason: "carol logged out".into()
        }
    );
    assert_eq!(bob.listed().await, []);
    assert_eq!(refusal(carol.client.list().await), "log in first");
    carol.client.login("carol", PASSWORD).await.unwrap();
    server.stop().await;
}

#[tokio::test]
async fn a_raw_peer_gets_one_json_reply_per_request() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(config(dir.path())).await;
    let mut raw = TcpStream::connect(server.addr).await.unwrap();
    let signup = json!({"type": "signup", "username": "alice", "password": PASSWORD});
    assert_eq!(
        request_raw(&mut raw, signup).await,
        json!({"type": "ok", "re": "signup"})
    );
    let list = json!({"type": "list"});
    assert_eq!(
        request_raw(&mut raw, list.clone()).await,
        error(Some("list"), "log in first")
    );
    let login = json!({"type": "login", "username": "alice", "password": PASSWORD});
    assert_eq!(
        request_raw(&mut raw, login).await,
        json!({"type": "ok", "re": "login"})
    );
    let announce = json!({"type": "announce", "address": "127.0.0.1:4001"});
    assert_eq!(
        request_raw(&mut raw, announce).await,
        json!({"type": "ok", "re": "announce"})
    );
    let bob = Peer::join(server.addr, "bob", 4002).await;
    assert_eq!(
        request_raw(&mut raw, list).await,
        json!({"type": "peers", "peers": [{"username": "bob", "state": "available"}]})
    );
    let query = json!({"type": "query", "username": "bob"});
    assert_eq!(
        request_raw(&mut raw, query).await,
        json!({"type": "peer", "username": "bob", "state": "available", "address": "127.0.0.1:4002"})
    );
    let hide = json!({"type": "visibility", "visibility": {"allow": ["carol"]}});
    assert_eq!(
        request_raw(&mut raw, hide).await,
        json!({"type": "ok", "re": "visibility"})
    );
    assert_eq!(bob.listed().await, []);
    server.stop().await;
}

#[tokio::test]
async fn garbage_gets_an_error_and_the_connection_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(config(dir.path())).await;
    let mut raw = TcpStream::connect(server.addr).await.unwrap();

    send_raw(&mut raw, &frame("hello")).await;
    let reply = read_json(&mut raw).await;
    assert_eq!(reply["type"], "error");
    assert_eq!(reply["re"], Value::Null);
    assert!(
        reply["message"]
            .as_str()
            .unwrap()
            .starts_with("not a valid message")
    );

    send_raw(&mut raw, &frame(r#"{"type":"dance"}"#)).await;
    let reply = read_json(&mut raw).await;
    assert_eq!(reply["re"], Value::Null);
    let message = reply["message"].as_str().unwrap();
    assert!(message.contains("unknown variant `dance`"), "{message}");

    send_raw(&mut raw, &frame(r#"{"type":"login","username":"alice"}"#)).await;
    let reply = read_json(&mut raw).await;
    let message = reply["message"].as_str().unwrap();
    assert!(message.contains("missing field `password`"), "{message}");

    send_raw(
        &mut raw,
        &frame(r#"{"type":"announce","address":"nowhere"}"#),
    )
    .await;
    let reply = read_json(&mut raw).await;
    assert_eq!(reply["type"], "error");

    let long = format!(r#"{{"type":"{}"}}"#, "x".repeat(10_000));
    send_raw(&mut raw, &frame(&long)).await;
    let reply = read_json(&mut raw).await;
    assert!(reply["message"].as_str().unwrap().len() <= 512);

    let signup = json!({"type": "signup", "username": "alice", "password": PASSWORD});
    assert_eq!(
        request_raw(&mut raw, signup).await,
        json!({"type": "ok", "re": "signup"})
    );
    server.stop().await;
}

#[tokio::test]
async fn a_bad_header_or_an_oversize_frame_gets_an_error_frame_then_a_close() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(config(dir.path())).await;

    let mut bad_header = TcpStream::connect(server.addr).await.unwrap();
    send_raw(&mut bad_header, b"abcdefghij{}").await;
    let reply = read_json(&mut bad_header).await;
    assert_eq!(reply["type"], "error");
    assert_eq!(reply["re"], Value::Null);
    let message = reply["message"].as_str().unwrap();
    assert!(message.contains("bad chat frame header"), "{message}");
    assert_closed(&mut bad_header).await;

    let mut oversize = TcpStream::connect(server.addr).await.unwrap();
    send_raw(&mut oversize, b"99999     ").await;
    let reply = read_json(&mut oversize).await;
    let message = reply["message"].as_str().unwrap();
    assert!(
        message.contains("over the limit of 16384 bytes"),
        "{message}"
    );
    assert_closed(&mut oversize).await;

    let alice = Peer::join(server.addr, "alice", 4001).await;
    assert_eq!(alice.listed().await, []);
    server.stop().await;
}

#[tokio::test]
async fn a_full_server_refuses_one_more_connection_with_an_error_frame() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(SignalConfig {
        max_connections: 1,
        ..config(dir.path())
    })
    .await;
    let (first, _notices) = connect(server.addr).await;
    first.signup("alice", PASSWORD).await.unwrap();

    let mut second = TcpStream::connect(server.addr).await.unwrap();
    assert_eq!(
        read_json(&mut second).await,
        error(None, "the server is full")
    );
    assert_closed(&mut second).await;

    let (refused, mut notices) = connect(server.addr).await;
    let notice = timeout(PATIENCE, notices.recv()).await.unwrap();
    assert_eq!(
        notice,
        Some(ServerMessage::Error {
            re: None,
            message: "the server is full".into()
        })
    );
    assert!(timeout(PATIENCE, notices.recv()).await.unwrap().is_none());
    assert!(matches!(refused.list().await, Err(ClientError::Closed)));
    first.login("alice", PASSWORD).await.unwrap();
    server.stop().await;
}

#[tokio::test]
async fn a_connection_that_does_not_log_in_in_time_is_told_and_closed() {
    let dir = tempfile::tempdir().unwrap();
    let login_timeout = Duration::from_millis(400);
    let server = start_server(SignalConfig {
        login_timeout,
        ..config(dir.path())
    })
    .await;
    let mut silent = TcpStream::connect(server.addr).await.unwrap();
    let mut logged_in = TcpStream::connect(server.addr).await.unwrap();
    let signup = json!({"type": "signup", "username": "alice", "password": PASSWORD});
    let login = json!({"type": "login", "username": "alice", "password": PASSWORD});
    assert_eq!(request_raw(&mut logged_in, signup).await["type"], "ok");
    assert_eq!(request_raw(&mut logged_in, login).await["type"], "ok");

    assert_eq!(
        read_json(&mut silent).await,
        error(None, "no log-in within 0.4 s; closing the connection")
    );
    assert_closed(&mut silent).await;

    // Logged in, the connection outlives the timeout; logged out, its clock starts again.
    tokio::time::sleep(login_timeout * 2).await;
    let list = request_raw(&mut logged_in, json!({"type": "list"})).await;
    assert_eq!(list["type"], "peers", "{list}");
    let logout = request_raw(&mut logged_in, json!({"type": "logout"})).await;
    assert_eq!(logout["type"], "ok", "{logout}");
    let started = std::time::Instant::now();
    assert_eq!(
        read_json(&mut logged_in).await["message"],
        "no log-in within 0.4 s; closing the connection"
    );
    assert!(started.elapsed() >= login_timeout - Duration::from_millis(50));
    assert_closed(&mut logged_in).await;
    server.stop().await;
}
