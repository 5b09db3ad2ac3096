//! The signaling server of seed 004 and its client: sign-up and log-in, UDP parameters,
//! presence and visibility, and introductions that hand both peers a fresh session key. It
//! carries no chat: peers talk directly ([`crate::peer`]).
//!
//! The messages are [`protocol::p2p::signal`]'s, one JSON object per 10-byte-header frame;
//! `docs/chat-p2p.md` has them all, with the state table and sequence diagrams.

pub mod client;
pub mod server;
