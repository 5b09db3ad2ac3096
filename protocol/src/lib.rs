//! The wire formats of the four socket systems, sans-IO.
//!
//! Nothing in this crate opens a socket or reads a clock: every format is pure encode/decode on
//! bytes, with thin [`tokio_util::codec`] `Decoder`/`Encoder` impls so that services can wrap a
//! `TcpStream` in a `Framed`. Every decoder is bounded (a maximum frame size and a clear error past
//! it) and answers `Ok(None)` when it needs more bytes, never an error.
//!
//! - [`record`]: the record server's JSON requests and responses (seed 000).
//! - [`forum`]: the forum's bincode envelope and its length-prefixed TCP codec (seed 001).
//! - [`addressbook`]: the address book's `!cb` Q/R header (seed 002).
//! - [`chat`]: the chat room's 10-byte ASCII length header (seed 003).
//! - [`chat_transfer`]: the chat's TCP-versus-UDP file transfer: control frames and datagrams.
//! - [`p2p`]: peer-to-peer chat (seed 004): signaling messages, sealed datagrams, session
//!   messages and the media stream.
//! - [`framed`]: driving a framed transport with batched writes.

pub mod addressbook;
pub mod chat;
pub mod chat_transfer;
mod fields;
pub mod forum;
pub mod framed;
#[doc(hidden)]
pub mod fuzz_checks;
pub mod p2p;
pub mod record;
pub mod reliable;

#[cfg(test)]
mod testing;
