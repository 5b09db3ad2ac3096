//! The chat room of seed 003: a TCP server that relays every client's messages to everyone
//! else, on the 10-byte header codec of [`protocol::chat`].
//!
//! The exchange, as the seed's Python programs do it:
//!
//! 1. A client connects and sends its username as one frame: `b"5         alice"`.
//! 2. Every later frame is a message: `b"11        hello there"`. An empty frame is ignored.
//! 3. The server sends each message to every other client (never back to its sender) as the
//!    sender's two frames back to back, headers as the sender wrote them:
//!    `b"5         alice11        hello there"`.
//!
//! Ours adds, without changing those bytes: a username must be 1 to 32 bytes of UTF-8 without
//! control characters and not taken (a refusal comes as a message from the user `server`, then
//! the connection closes); a frame over the limit or with a bad header closes its sender only; a
//! client that stops reading slows the others for `stall_timeout` at most (its bounded outbox is
//! full), then is dropped; with `announce`, joins and leaves are told as messages from `server`.

pub mod client;
pub mod names;
pub mod server;

pub use client::{ChatMessage, RoomError, RoomReader, RoomWriter, join};
pub use names::{MAX_USERNAME_BYTES, NameError, SERVER_NAME, check_username};
pub use server::{RoomConfig, run};
