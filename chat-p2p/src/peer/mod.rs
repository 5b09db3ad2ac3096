//! A peer of seed 004: a session with another peer straight over UDP, every datagram sealed
//! with the session key ([`protocol::p2p::secure`]); chat and files over the reliable-datagram
//! layer, a media stream beside it.
//!
//! - [`session`]: one session, driven by a task of its own on the peer's UDP socket.
//! - [`client`]: the whole peer ([`PeerClient`]): the signaling connection, the UDP socket and
//!   the current session, with one stream of events for the user.

pub mod client;
pub mod session;

pub use client::{PeerClient, PeerConfig, PeerError, PeerEvent};
pub use session::{
    Direction, FileTicket, Session, SessionConfig, SessionEnd, SessionError, SessionEvent,
    SessionParams, SessionStats, StreamTicket,
};
