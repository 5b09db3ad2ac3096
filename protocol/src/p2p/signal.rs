//! The signaling protocol: JSON objects, one per 10-byte-header frame
//! ([`crate::chat::ChatCodec`] with [`MAX_SIGNAL_PAYLOAD`]), each with a `"type"` field naming
//! the message.
//!
//! A peer sends [`ClientMessage`]s. The server answers every one of them, in order, with
//! exactly one reply ([`ServerMessage::Ok`], [`ServerMessage::Error`], [`ServerMessage::Peers`]
//! or [`ServerMessage::Peer`]); it also pushes notices at any time
//! ([`ServerMessage::Introduction`], [`ServerMessage::Session`], [`ServerMessage::Declined`],
//! [`ServerMessage::SessionEnded`]). [`ServerMessage::is_reply`] tells the two apart, so a
//! client can match replies to its requests first in, first out.
//!
//! Secrets never reach a log through these types: [`Password`] and the session key
//! ([`SessionKey`]) print as `<redacted>` under `{:?}`.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::secure::{Role, SessionKey};

/// The largest JSON payload of one signaling frame, either way (16 KiB).
pub const MAX_SIGNAL_PAYLOAD: usize = 16 * 1024;

/// The most usernames an allow-list holds.
pub const MAX_ALLOW_LIST: usize = 256;

/// A password on its way to the server: printed as `<redacted>`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Password(pub String);

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// What a peer sets for itself: whether it takes introductions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Presence {
    /// Introductions are passed on to the peer.
    Available,
    /// Introductions are declined at once on the peer's behalf.
    Away,
}

/// A peer's state as others see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PeerState {
    /// Takes introductions.
    Available,
    /// Set by the peer: introductions are declined automatically.
    Away,
    /// Set by the server while the peer is in a session: introductions are declined.
    Connected,
}

impl std::fmt::Display for PeerState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PeerState::Available => "available",
            PeerState::Away => "away",
            PeerState::Connected => "connected",
        })
    }
}

/// Who may see a peer in lists, query its parameters and ask to connect to it. On the wire:
/// `"everyone"`, `"nobody"` or `{"allow": ["bob", "carol"]}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Visibility {
    /// Every logged-in peer (the default of a new account).
    Everyone,
    /// No one.
    Nobody,
    /// Only the peers named.
    Allow(Vec<String>),
}

impl Visibility {
    /// Whether `asker` may see the peer that set this visibility.
    pub fn allows(&self, asker: &str) -> bool {
        match self {
            Visibility::Everyone => true,
            Visibility::Nobody => false,
            Visibility::Allow(names) => names.iter().any(|name| name == asker),
        }
    }
}

/// A message from a peer to the signaling server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ClientMessage {
    /// Creates an account (it does not log in).
    Signup {
        /// The new account's name.
        username: String,
        /// Its password.
        password: Password,
    },
    /// Logs this connection in; an account has one live log-in at a time.
    Login {
        /// The account.
        username: String,
        /// Its password.
        password: Password,
    },
    /// Logs out, ending any session; the connection stays open. (The field-less requests are
    /// empty struct variants so that unknown fields are refused for them too: serde ignores
    /// extra fields of a unit variant in an internally tagged enum.)
    Logout {},
    /// Tells the server where this peer takes datagrams. A peer is listed only once it has.
    Announce {
        /// The address other peers send to (`"ip:port"`): the bound one, or a public one
        /// forwarded to it.
        address: SocketAddr,
    },
    /// Asks for the peers visible to this one.
    List {},
    /// Asks for one peer's state and address.
    Query {
        /// The peer asked about.
        username: String,
    },
    /// Sets this peer's presence.
    State {
        /// Available or away.
        state: Presence,
    },
    /// Sets who may see and reach this peer (kept with the account).
    Visibility {
        /// Everyone, nobody or an allow-list.
        visibility: Visibility,
    },
    /// Asks to be introduced to a peer.
    Connect {
        /// The peer to talk to.
        username: String,
    },
    /// Accepts an introduction.
    Accept {
        /// Who asked.
        from: String,
    },
    /// Declines an introduction.
    Decline {
        /// Who asked.
        from: String,
        /// Why, passed on to the asker.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// Ends this peer's session.
    Close {},
}

impl ClientMessage {
    /// The message's `"type"`, which the reply to it names in its `re` field.
    pub fn kind(&self) -> &'static str {
        match self {
            ClientMessage::Signup { .. } => "signup",
            ClientMessage::Login { .. } => "login",
            ClientMessage::Logout {} => "logout",
            ClientMessage::Announce { .. } => "announce",
            ClientMessage::List {} => "list",
            ClientMessage::Query { .. } => "query",
            ClientMessage::State { .. } => "state",
            ClientMessage::Visibility { .. } => "visibility",
            ClientMessage::Connect { .. } => "connect",
            ClientMessage::Accept { .. } => "accept",
            ClientMessage::Decline { .. } => "decline",
            ClientMessage::Close {} => "close",
        }
    }
}

/// One line of a [`ServerMessage::Peers`] list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerEntry {
    /// The peer.
    pub username: String,
    /// Its state.
    pub state: PeerState,
}

/// A message from the signaling server to a peer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ServerMessage {
    /// Reply: the request was carried out.
    Ok {
        /// The request's type.
        re: String,
    },
    /// Reply: the request was refused, or was not a request at all.
    Error {
        /// The request's type, when the frame held a request.
        #[serde(default)]
        re: Option<String>,
        /// What was wrong.
        message: String,
    },
    /// Reply to `list`: the peers visible to the asker, by username.
    Peers {
        /// Each peer and its state.
        peers: Vec<PeerEntry>,
    },
    /// Reply to `query`.
    Peer {
        /// The peer.
        username: String,
        /// Its state.
        state: PeerState,
        /// Where it takes datagrams.
        address: SocketAddr,
    },
    /// Notice: a peer asks to be introduced; answer with `accept` or `decline`.
    Introduction {
        /// Who asks.
        from: String,
    },
    /// Notice, to both peers: the introduction was accepted and a session begins.
    Session {
        /// The other peer.
        peer: String,
        /// Where the other peer takes datagrams.
        address: SocketAddr,
        /// The session's fresh secret key.
        key: SessionKey,
        /// The session's number, in every datagram's header.
        session: u32,
        /// Which end this peer is: the initiator asked and opens the reliable connection.
        role: Role,
    },
    /// Notice, to the asker: the introduction was declined (by the peer, automatically because
    /// it is away or busy, or because it went offline or did not answer).
    Declined {
        /// The peer asked for.
        peer: String,
        /// Why.
        reason: String,
    },
    /// Notice: the session with `peer` is over on the server's side.
    SessionEnded {
        /// The other peer.
        peer: String,
        /// Why (it closed, logged out or went offline).
        reason: String,
    },
}

impl ServerMessage {
    /// Whether this is the reply to a request (as opposed to a notice).
    pub fn is_reply(&self) -> bool {
        matches!(
            self,
            ServerMessage::Ok { .. }
                | ServerMessage::Error { .. }
                | ServerMessage::Peers { .. }
                | ServerMessage::Peer { .. }
        )
    }

    /// The message's `"type"`.
    pub fn kind(&self) -> &'static str {
        match self {
            ServerMessage::Ok { .. } => "ok",
            ServerMessage::Error { .. } => "error",
            ServerMessage::Peers { .. } => "peers",
            ServerMessage::Peer { .. } => "peer",
            ServerMessage::Introduction { .. } => "introduction",
            ServerMessage::Session { .. } => "session",
            ServerMessage::Declined { .. } => "declined",
            ServerMessage::SessionEnded { .. } => "session_ended",
        }
    }
}

/// Why a frame's payload is not a signaling message.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SignalError {
    /// Longer than [`MAX_SIGNAL_PAYLOAD`].
    #[error("the message is {0} bytes long, more than {MAX_SIGNAL_PAYLOAD}")]
    TooLarge(usize),
    /// Not UTF-8 JSON of a known message (the text says what was wrong).
    #[error("not a valid message: {0}")]
    Malformed(String),
}

/// The JSON of `message`.
pub fn encode<M: Serialize>(message: &M) -> Vec<u8> {
    serde_json::to_vec(message).expect("signaling messages always serialise")
}

/// The message in `payload`, checked against [`MAX_SIGNAL_PAYLOAD`].
pub fn decode<'a, M: Deserialize<'a>>(payload: &'a [u8]) -> Result<M, SignalError> {
    if payload.len() > MAX_SIGNAL_PAYLOAD {
        return Err(SignalError::TooLarge(payload.len()));
    }
    serde_json::from_slice(payload).map_err(|err| SignalError::Malformed(err.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY_HEX: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

    fn key() -> SessionKey {
        SessionKey::from_hex(KEY_HEX).expect("64 hex digits")
    }

    fn address() -> SocketAddr {
        "127.0.0.1:5000".parse().expect("an address")
    }

    fn session_notice() -> ServerMessage {
        ServerMessage::Session {
            peer: "bob".into(),
            address: address(),
            key: key(),
            session: 7,
            role: Role::Initiator,
        }
    }

    fn client_messages() -> Vec<ClientMessage> {
        vec![
            ClientMessage::Signup {
                username: "alice".into(),
                password: Password("s3cret".into()),
            },
            ClientMessage::Login {
                username: "alice".into(),
                password: Password("s3cret".into()),
            },
            ClientMessage::Logout {},
            ClientMessage::Announce {
                address: "[::1]:6000".parse().expect("an address"),
            },
            ClientMessage::List {},
            ClientMessage::Query {
                username: "bob".into(),
            },
            ClientMessage::State {
                state: Presence::Away,
            },
            ClientMessage::Visibility {
                visibility: Visibility::Everyone,
            },
            ClientMessage::Visibility {
                visibility: Visibility::Nobody,
            },
            ClientMessage::Visibility {
                visibility: Visibility::Allow(vec!["bob".into(), "carol".into()]),
            },
            ClientMessage::Connect {
                username: "bob".into(),
            },
            ClientMessage::Accept {
                from: "alice".into(),
            },
            ClientMessage::Decline {
                from: "alice".into(),
                reason: None,
            },
            ClientMessage::Decline {
                from: "alice".into(),
                reason: Some("busy".into()),
            },
            ClientMessage::Close {},
        ]
    }

    fn server_messages() -> Vec<ServerMessage> {
        vec![
            ServerMessage::Ok { re: "login".into() },
            ServerMessage::Error {
                re: Some("connect".into()),
                message: "no such peer".into(),
            },
            ServerMessage::Error {
                re: None,
                message: "not JSON".into(),
            },
            ServerMessage::Peers {
                peers: vec![
                    PeerEntry {
                        username: "bob".into(),
                        state: PeerState::Available,
                    },
                    PeerEntry {
                        username: "carol".into(),
                        state: PeerState::Connected,
                    },
                ],
            },
            ServerMessage::Peers { peers: Vec::new() },
            ServerMessage::Peer {
                username: "bob".into(),
                state: PeerState::Away,
                address: address(),
            },
            ServerMessage::Introduction {
                from: "alice".into(),
            },
            session_notice(),
            ServerMessage::Session {
                peer: "alice".into(),
                address: address(),
                key: key(),
                session: u32::MAX,
                role: Role::Acceptor,
            },
            ServerMessage::Declined {
                peer: "bob".into(),
                reason: "away".into(),
            },
            ServerMessage::SessionEnded {
                peer: "bob".into(),
                reason: "went offline".into(),
            },
        ]
    }

    fn json(bytes: &[u8]) -> &str {
        std::str::from_utf8(bytes).expect("JSON is UTF-8")
    }

    fn malformed_client(text: &str) -> String {
        match decode::<ClientMessage>(text.as_bytes()) {
            Err(SignalError::Malformed(message)) => message,
            other => panic!("{text} should be malformed, got {other:?}"),
        }
    }

    #[test]
    fn every_client_message_round_trips() {
        for message in client_messages() {
            let wire = encode(&message);
            let back: ClientMessage = decode(&wire).expect("decodes");
            assert_eq!(back, message, "{}", json(&wire));
            let value: serde_json::Value = serde_json::from_slice(&wire).expect("JSON");
            assert_eq!(value["type"], message.kind());
        }
    }

    #[test]
    fn every_server_message_round_trips() {
        for message in server_messages() {
            let wire = encode(&message);
            let back: ServerMessage = decode(&wire).expect("decodes");
            assert_eq!(back, message, "{}", json(&wire));
            let value: serde_json::Value = serde_json::from_slice(&wire).expect("JSON");
            assert_eq!(value["type"], message.kind());
        }
    }

    #[test]
    fn client_json_is_exact() {
        let login = ClientMessage::Login {
            username: "alice".into(),
            password: Password("pw".into()),
        };
        assert_eq!(
            json(&encode(&login)),
            r#"{"type":"login","username":"alice","password":"pw"}"#
        );
        let allow = ClientMessage::Visibility {
            visibility: Visibility::Allow(vec!["bob".into()]),
        };
        assert_eq!(
            json(&encode(&allow)),
            r#"{"type":"visibility","visibility":{"allow":["bob"]}}"#
        );
        let nobody = ClientMessage::Visibility {
            visibility: Visibility::Nobody,
        };
        assert_eq!(
            json(&encode(&nobody)),
            r#"{"type":"visibility","visibility":"nobody"}"#
        );
        assert_eq!(json(&encode(&ClientMessage::List {})), r#"{"type":"list"}"#);
        let decline = ClientMessage::Decline {
            from: "alice".into(),
            reason: None,
        };
        assert_eq!(
            json(&encode(&decline)),
            r#"{"type":"decline","from":"alice"}"#
        );
        let announce = ClientMessage::Announce { address: address() };
        assert_eq!(
            json(&encode(&announce)),
            r#"{"type":"announce","address":"127.0.0.1:5000"}"#
        );
    }

    #[test]
    fn server_json_is_exact() {
        let expected = format!(
            r#"{{"type":"session","peer":"bob","address":"127.0.0.1:5000","key":"{KEY_HEX}","session":7,"role":"initiator"}}"#
        );
        assert_eq!(json(&encode(&session_notice())), expected);
        let peers = ServerMessage::Peers {
            peers: vec![PeerEntry {
                username: "bob".into(),
                state: PeerState::Away,
            }],
        };
        assert_eq!(
            json(&encode(&peers)),
            r#"{"type":"peers","peers":[{"username":"bob","state":"away"}]}"#
        );
        let error = ServerMessage::Error {
            re: None,
            message: "bad".into(),
        };
        assert_eq!(
            json(&encode(&error)),
            r#"{"type":"error","re":null,"message":"bad"}"#
        );
    }

    #[test]
    fn an_error_without_re_decodes() {
        let error: ServerMessage =
            decode(br#"{"type":"error","message":"bad"}"#).expect("re is optional");
        assert_eq!(
            error,
            ServerMessage::Error {
                re: None,
                message: "bad".into()
            }
        );
    }

    #[test]
    fn an_unknown_type_is_named() {
        let message = malformed_client(r#"{"type":"fly","username":"alice"}"#);
        assert!(message.contains("fly"), "{message}");
    }

    #[test]
    fn a_missing_field_is_named() {
        let message = malformed_client(r#"{"type":"login","username":"alice"}"#);
        assert!(message.contains("missing field `password`"), "{message}");
        let message = malformed_client(r#"{"username":"alice","password":"pw"}"#);
        assert!(message.contains("type"), "{message}");
    }

    #[test]
    fn an_unknown_field_is_named() {
        let message = malformed_client(r#"{"type":"query","username":"bob","admin":true}"#);
        assert!(message.contains("unknown field `admin`"), "{message}");
        let message = malformed_client(r#"{"type":"connect","username":"bob","x":1}"#);
        assert!(message.contains("unknown field `x`"), "{message}");
        for kind in ["logout", "list", "close"] {
            let message = malformed_client(&format!(r#"{{"type":"{kind}","x":1}}"#));
            assert!(message.contains("unknown field `x`"), "{kind}: {message}");
        }
    }

    #[test]
    fn wrong_values_are_named() {
        let message = malformed_client(r#"{"type":"announce","address":"nowhere"}"#);
        assert!(message.contains("address"), "{message}");
        let message = malformed_client(r#"{"type":"state","state":"connected"}"#);
        assert!(message.contains("connected"), "{message}");
        let message = match decode::<ServerMessage>(
            br#"{"type":"session","peer":"b","address":"127.0.0.1:1","key":"abc","session":1,"role":"initiator"}"#,
        ) {
            Err(SignalError::Malformed(message)) => message,
            other => panic!("a short key should be malformed, got {other:?}"),
        };
        assert!(message.contains("64 hex digits"), "{message}");
    }

    #[test]
    fn non_json_is_malformed() {
        for garbage in [&b"hello"[..], b"", b"{", b"\xff\xfe", b"[1,2]", b"null"] {
            let result = decode::<ClientMessage>(garbage);
            match result {
                Err(SignalError::Malformed(message)) => assert!(!message.is_empty()),
                other => panic!("{garbage:?} should be malformed, got {other:?}"),
            }
        }
    }

    #[test]
    fn oversize_is_too_large() {
        let padding = " ".repeat(MAX_SIGNAL_PAYLOAD);
        let oversize = format!(r#"{{"type":"list"}}{padding}"#);
        let error = decode::<ClientMessage>(oversize.as_bytes()).expect_err("too large");
        assert_eq!(error, SignalError::TooLarge(oversize.len()));
        assert!(error.to_string().contains("16384"), "{error}");
        let at_limit = format!(
            r#"{{"type":"list"}}{}"#,
            " ".repeat(MAX_SIGNAL_PAYLOAD - 15)
        );
        assert_eq!(at_limit.len(), MAX_SIGNAL_PAYLOAD);
        assert_eq!(
            decode::<ClientMessage>(at_limit.as_bytes()),
            Ok(ClientMessage::List {})
        );
    }

    #[test]
    fn debug_hides_passwords_and_keys() {
        let login = ClientMessage::Login {
            username: "alice".into(),
            password: Password("hunter2-secret".into()),
        };
        let text = format!("{login:?}");
        assert!(!text.contains("hunter2-secret"), "{text}");
        assert!(text.contains("alice"), "{text}");
        let text = format!("{:?}", session_notice());
        assert!(!text.contains(KEY_HEX), "{text}");
        assert!(!text.contains("000102030405"), "{text}");
        assert!(text.contains("bob"), "{text}");
    }

    #[test]
    fn visibility_allows() {
        assert!(Visibility::Everyone.allows("anyone"));
        assert!(!Visibility::Nobody.allows("bob"));
        let list = Visibility::Allow(vec!["bob".into(), "carol".into()]);
        assert!(list.allows("bob"));
        assert!(list.allows("carol"));
        assert!(!list.allows("dave"));
        assert!(!list.allows("Bob"), "names are compared exactly");
        assert!(!Visibility::Allow(Vec::new()).allows("bob"));
    }

    #[test]
    fn replies_and_notices_are_told_apart() {
        let replies: Vec<_> = server_messages()
            .iter()
            .filter(|message| message.is_reply())
            .map(ServerMessage::kind)
            .collect();
        assert_eq!(replies, ["ok", "error", "error", "peers", "peers", "peer"]);
    }

    #[test]
    fn peer_state_displays_as_on_the_wire() {
        for state in [PeerState::Available, PeerState::Away, PeerState::Connected] {
            assert_eq!(json(&encode(&state)), format!("\"{state}\""));
        }
    }
}
