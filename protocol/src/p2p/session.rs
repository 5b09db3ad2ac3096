//! The messages two peers exchange inside a session, each one message of the reliable-datagram
//! layer (so they arrive exactly once and in order).
//!
//! SKELETON: the API below is fixed; the bodies are being written.

use bytes::Bytes;
use thiserror::Error;

use super::stream::StreamReport;

/// The longest chat text, in bytes.
pub const MAX_TEXT_BYTES: usize = 16 * 1024;
/// The largest file chunk, in bytes.
pub const MAX_CHUNK_BYTES: usize = 64 * 1024;
/// The longest reason or detail text, in bytes.
pub const MAX_REASON_BYTES: usize = 1024;

/// A SHA-256 digest.
pub type Digest = [u8; 32];

/// A message inside a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionMessage {
    /// A line of chat.
    Chat {
        /// The text (UTF-8).
        text: String,
    },
    /// A file follows, in [`SessionMessage::FileChunk`]s in order.
    FileOffer {
        /// The transfer's number, chosen by the sender.
        id: u32,
        /// The file's name (checked with [`crate::chat_transfer::check_file_name`]).
        name: String,
        /// Its size in bytes.
        size: u64,
        /// Its SHA-256.
        sha256: Digest,
    },
    /// A piece of a file.
    FileChunk {
        /// The transfer.
        id: u32,
        /// Where the piece goes.
        offset: u64,
        /// The bytes.
        data: Bytes,
    },
    /// The sender gave up on a transfer.
    FileAbort {
        /// The transfer.
        id: u32,
        /// Why.
        reason: String,
    },
    /// The receiver's verdict on a transfer.
    FileResult {
        /// The transfer.
        id: u32,
        /// Whether the file was saved intact.
        saved: bool,
        /// The name it was saved under, or what went wrong.
        detail: String,
    },
    /// A media stream begins; its chunks travel as [`super::secure::DatagramKind::Stream`]
    /// datagrams.
    StreamStart {
        /// The stream's number, chosen by the sender.
        id: u32,
        /// The streamed file's name.
        name: String,
        /// Its real-time rate, bytes per second.
        rate: u32,
        /// Payload bytes per chunk.
        chunk_size: u32,
    },
    /// The stream's last chunk has been sent.
    StreamEnd {
        /// The stream.
        id: u32,
        /// Chunks sent.
        sent: u32,
    },
    /// The receiver's account of a stream, sent back to the sender.
    StreamReport {
        /// The stream.
        id: u32,
        /// What arrived.
        report: StreamReport,
    },
}

/// Why bytes are not a session message.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SessionMessageError {
    /// The message is shorter than its fields.
    #[error("the message is truncated")]
    Truncated,
    /// The first byte names no message.
    #[error("unknown message type {0}")]
    UnknownType(u8),
    /// A field is out of bounds or not valid (the text says which).
    #[error("invalid field: {0}")]
    Invalid(String),
}
