//! System 4 (seeds 003 and 004): the 10-byte-header broadcast chat room ([`room`]), the
//! TCP-versus-UDP file transfer comparison ([`transfer`]), and, to come, peer-to-peer chat with a
//! TCP signaling server.

pub mod room;
pub mod transfer;
