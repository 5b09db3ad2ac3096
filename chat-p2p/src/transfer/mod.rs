//! The TCP-versus-UDP file transfer (seed 003, task 3): the same file sent over TCP and over
//! plain UDP, and an account of what each transport did with it.
//!
//! - [`receive`]: the receiver, listening on TCP and UDP on the same port number, saving what
//!   arrives in a folder and answering each sender with a [`Report`];
//! - [`send`]: the sender, over TCP or as sequence-numbered datagrams with no retransmission,
//!   optionally paced to a rate;
//! - [`tally`]: how the receiver counts datagrams (received, lost, reordered, duplicated).
//!
//! The wire formats are in [`protocol::chat_transfer`]. Each transfer has a TCP control
//! connection: the sender announces the file (name, size, SHA-256, datagram size and count, a
//! random transfer id); over TCP the body follows on that connection, over UDP the datagrams go
//! to the receiver's UDP port and the sender then says "done". The receiver waits a short grace
//! for straggling datagrams, writes the file and answers the report, so the sender prints the
//! same counts the receiver logs.
//!
//! # What a report says
//!
//! - *time*: from the announce's arrival to the end of the data (TCP: the last byte of the body;
//!   UDP: the later of "done" and the last datagram); the grace wait and the final disk flush are
//!   not counted, so the two transports are timed alike;
//! - *throughput*: the file's size over that time;
//! - *datagrams* (UDP): expected = the announced count; received = distinct sequence numbers
//!   that arrived; lost = expected - received; duplicated = arrivals of a sequence number that
//!   had already arrived; reordered = arrivals (not duplicates) of a sequence number lower than
//!   the highest seen before them; see [`tally::Tally`];
//! - *intact*: the SHA-256 of the file as written equals the announced one.
//!
//! # Where files go
//!
//! A file is written to a temporary file in the receiver's folder, flushed to disk and renamed.
//! It gets its own name only when every byte arrived and the checksum matches. A UDP file with
//! holes is kept, holes zero-filled, as `NAME.incomplete`; a file without holes whose checksum
//! does not match as `NAME.damaged`. An existing file is never replaced: the first free name of
//! `NAME`, `STEM (1).EXT`, `STEM (2).EXT`, ... is taken (the stem ends at the first dot), and the
//! report says which. A TCP transfer cut off before its last byte leaves nothing behind.

pub mod receive;
pub mod send;
pub mod tally;

mod control;
pub(crate) mod files;

pub use protocol::chat_transfer::{
    DEFAULT_DATAGRAM_PAYLOAD, DatagramCounts, MAX_DATAGRAM_PAYLOAD, Refusal, RefuseReason, Report,
    Transport,
};
