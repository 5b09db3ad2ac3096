//! The media stream: each chunk's header (sequenced, timestamped, never retransmitted) and the
//! receiver's tally of what arrived, with jitter as in RFC 3550.
//!
//! SKELETON: the API below is fixed; the bodies are being written.

use thiserror::Error;

/// Bytes in a chunk's header.
pub const CHUNK_HEADER_LEN: usize = 16;

/// The header of one stream chunk: `stream id u32, sequence u32, sent-at µs u64`, big-endian.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkHeader {
    /// The stream.
    pub stream_id: u32,
    /// The chunk's number, from 0.
    pub seq: u32,
    /// When it was sent, in microseconds since the stream began (the sender's clock).
    pub sent_at_us: u64,
}

/// Why a datagram is not a stream chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum ChunkError {
    /// Shorter than [`CHUNK_HEADER_LEN`].
    #[error("a stream chunk of {0} bytes is shorter than its header")]
    Truncated(usize),
}

/// What the receiver of a stream saw.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StreamReport {
    /// Chunks the sender sent.
    pub sent: u32,
    /// Distinct chunks that arrived.
    pub received: u32,
    /// Chunks that never arrived (`sent - received`).
    pub lost: u32,
    /// Chunks that arrived again.
    pub duplicates: u32,
    /// Chunks that arrived after a later one.
    pub reordered: u32,
    /// Payload bytes of the distinct chunks.
    pub bytes: u64,
    /// The interarrival jitter (RFC 3550, section 6.4.1) at the end, in microseconds.
    pub jitter_us: u32,
}

/// The receiver's running account of one stream.
#[derive(Debug, Clone)]
pub struct StreamTally {}
