//! A peer of seed 004: a session with another peer straight over UDP, every datagram sealed
//! with the session key ([`protocol::p2p::secure`]); chat and files over the reliable-datagram
//! layer, a media stream beside it.

pub mod session;
