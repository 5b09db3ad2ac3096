//! The signaling server of seed 004 and its client: sign-up and log-in, UDP parameters,
//! presence and visibility, and introductions that hand both peers a fresh session key. It
//! carries no chat: peers talk directly ([`crate::peer`]).
//!
//! The messages are [`protocol::p2p::signal`]'s, one JSON object per 10-byte-header frame;
//! `docs/chat-p2p.md` has them all, with the state table and sequence diagrams.
//!
//! - [`server`]: the server ([`run`], [`SignalConfig`]);
//! - [`client`]: the client a peer uses ([`SignalClient`]);
//! - `accounts` and `registry`: the server's accounts file and its state in memory.

mod accounts;
pub mod client;
mod registry;
pub mod server;

pub use accounts::ACCOUNTS_FILE;
pub use client::{ClientError, PeerInfo, SignalClient};
pub use server::{SignalConfig, run};
