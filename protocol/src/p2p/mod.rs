//! Peer-to-peer chat (seed 004), sans-IO: everything the signaling server and the peers put on
//! the wire, with no sockets and no clock.
//!
//! - [`signal`]: the JSON messages between a peer and the signaling server, carried in the
//!   chat's 10-byte-header frames ([`crate::chat::ChatCodec`]).
//! - [`secure`]: the sealed datagram every peer-to-peer datagram travels in: a 16-byte header
//!   and ChaCha20-Poly1305 with the session's key, with a replay window.
//! - [`session`]: the messages two peers exchange over the reliable-datagram layer inside a
//!   session (chat text, file offers and chunks, stream control).
//! - [`stream`]: the media stream's chunk header (sequenced, never retransmitted) and the
//!   receiver's tally of loss, reordering, duplicates and jitter.
//!
//! `docs/chat-p2p.md` describes all of it for people.

pub mod secure;
pub mod session;
pub mod signal;
pub mod stream;
