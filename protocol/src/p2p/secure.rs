//! The sealed datagram: every datagram between two peers in a session, authenticated and
//! encrypted with the session's key (ChaCha20-Poly1305, RFC 8439).
//!
//! SKELETON: the API below is fixed; the bodies are being written.
//!
//! Layout (16-byte header, then the ciphertext, then the 16-byte tag):
//!
//! | offset | size | field                                                             |
//! |--------|------|-------------------------------------------------------------------|
//! | 0      | 1    | magic `P`                                                         |
//! | 1      | 1    | version, 1                                                        |
//! | 2      | 1    | kind: 1 reliable-layer packet, 2 media-stream chunk               |
//! | 3      | 1    | direction: 0 initiator to acceptor, 1 acceptor to initiator       |
//! | 4      | 4    | session number (big-endian), from the signaling server            |
//! | 8      | 8    | counter (big-endian): this direction's datagram number, from 0    |
//! | 16     | n    | ciphertext                                                        |
//! | 16 + n | 16   | Poly1305 tag                                                      |
//!
//! The nonce is the direction as a big-endian u32 followed by the counter, so the two ends
//! never use the same nonce under the shared key; the whole header is associated data.

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Bytes in a session key.
pub const KEY_LEN: usize = 32;
/// Bytes in the sealed datagram's header.
pub const HEADER_LEN: usize = 16;
/// Bytes in the Poly1305 tag.
pub const TAG_LEN: usize = 16;
/// What sealing adds to a payload.
pub const OVERHEAD: usize = HEADER_LEN + TAG_LEN;
/// Counters this far behind the highest one opened are still accepted once each.
pub const REPLAY_WINDOW: u64 = 2048;

/// A session's secret key. `{:?}` prints `SessionKey(<redacted>)`; on the signaling wire it
/// is 64 lowercase hex digits.
#[derive(Clone, PartialEq, Eq)]
pub struct SessionKey([u8; KEY_LEN]);

impl SessionKey {
    /// The key made of `bytes` (which the caller draws from a cryptographic random source).
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> SessionKey {
        SessionKey(bytes)
    }

    /// The key's bytes.
    pub fn as_bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }

    /// The key as 64 lowercase hex digits, for the signaling wire only.
    pub fn to_hex(&self) -> String {
        self.0.iter().map(|byte| format!("{byte:02x}")).collect()
    }

    /// The key written as 64 hex digits.
    pub fn from_hex(text: &str) -> Result<SessionKey, KeyError> {
        if text.len() != 2 * KEY_LEN || !text.is_ascii() {
            return Err(KeyError);
        }
        let mut bytes = [0; KEY_LEN];
        for (byte, pair) in bytes.iter_mut().zip(text.as_bytes().chunks(2)) {
            let pair = std::str::from_utf8(pair).map_err(|_| KeyError)?;
            *byte = u8::from_str_radix(pair, 16).map_err(|_| KeyError)?;
        }
        Ok(SessionKey(bytes))
    }
}

impl std::fmt::Debug for SessionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionKey(<redacted>)")
    }
}

impl Serialize for SessionKey {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for SessionKey {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        SessionKey::from_hex(&text).map_err(serde::de::Error::custom)
    }
}

/// A session key that is not 64 hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[error("a session key is 64 hex digits")]
pub struct KeyError;

/// Which end of a session this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// The peer that asked to connect; it opens the reliable connection.
    Initiator,
    /// The peer that accepted.
    Acceptor,
}

/// What a sealed datagram carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DatagramKind {
    /// A packet of the reliable-datagram layer.
    Reliable,
    /// A media-stream chunk ([`super::stream`]).
    Stream,
}

/// Why a datagram was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum OpenError {
    /// Not a sealed datagram of this session in the peer's direction (too short, wrong magic,
    /// version, kind, session or direction).
    #[error("not a datagram of this session")]
    Foreign,
    /// The tag did not verify: forged or damaged.
    #[error("the datagram failed authentication")]
    Forged,
    /// Its counter was seen already or is too old for the replay window.
    #[error("the datagram was replayed")]
    Replayed,
}

/// Counters of a [`SecureChannel`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SecureStats {
    /// Datagrams sealed.
    pub sealed: u64,
    /// Datagrams opened.
    pub opened: u64,
    /// Dropped as [`OpenError::Foreign`].
    pub foreign: u64,
    /// Dropped as [`OpenError::Forged`].
    pub forged: u64,
    /// Dropped as [`OpenError::Replayed`].
    pub replayed: u64,
}

/// One end's sealing and opening state for a session.
pub struct SecureChannel {}
