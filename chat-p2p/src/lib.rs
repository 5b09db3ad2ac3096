//! System 4 (seeds 003 and 004): the 10-byte-header broadcast chat room ([`room`]), the
//! TCP-versus-UDP file transfer comparison ([`transfer`]), and peer-to-peer chat: a TCP
//! signaling server that introduces peers ([`signal`]) and peers that talk directly over UDP
//! ([`peer`]).

mod connection_io;
pub mod peer;
pub mod room;
pub mod signal;
pub mod transfer;
