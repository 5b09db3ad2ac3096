//! The sealed datagram: every datagram between two peers in a session, authenticated and
//! encrypted with the session's key (ChaCha20-Poly1305, RFC 8439).
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
//!
//! [`SecureChannel::open`] drops, and counts, every datagram that is not the peer's:
//!
//! - [`OpenError::Foreign`]: shorter than [`OVERHEAD`], a wrong magic, version or kind, another
//!   session, or our own direction (a reflection of what we sent);
//! - [`OpenError::Replayed`]: a counter opened before, or more than [`REPLAY_WINDOW`]` - 1`
//!   behind the highest counter opened so far (checked before decrypting, so replays are cheap
//!   to reject);
//! - [`OpenError::Forged`]: the tag does not verify under the session key.
//!
//! A counter is marked seen only once its datagram's tag has verified, so a forged datagram
//! cannot use up a counter the peer has yet to send.

use chacha20poly1305::aead::AeadInPlace;
use chacha20poly1305::{ChaCha20Poly1305, KeyInit, Nonce, Tag};
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
        if text.len() != 2 * KEY_LEN || !text.bytes().all(|byte| byte.is_ascii_hexdigit()) {
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

/// The first byte of every sealed datagram.
const MAGIC: u8 = b'P';
/// The layout's version.
const VERSION: u8 = 1;
/// The nonce's length in bytes.
const NONCE_LEN: usize = 12;

impl Role {
    /// The direction byte of the datagrams this end sends.
    fn direction(self) -> u8 {
        match self {
            Role::Initiator => 0,
            Role::Acceptor => 1,
        }
    }

    /// The direction byte of the datagrams this end receives.
    fn peer_direction(self) -> u8 {
        match self {
            Role::Initiator => 1,
            Role::Acceptor => 0,
        }
    }
}

impl DatagramKind {
    /// The kind's byte in the header.
    fn to_byte(self) -> u8 {
        match self {
            DatagramKind::Reliable => 1,
            DatagramKind::Stream => 2,
        }
    }

    /// The kind a header byte names, if any.
    fn from_byte(byte: u8) -> Option<DatagramKind> {
        match byte {
            1 => Some(DatagramKind::Reliable),
            2 => Some(DatagramKind::Stream),
            _ => None,
        }
    }
}

/// The fields of a sealed datagram's header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Header {
    kind: DatagramKind,
    direction: u8,
    session: u32,
    counter: u64,
}

impl Header {
    /// The header's 16 bytes.
    fn to_bytes(self) -> [u8; HEADER_LEN] {
        let mut bytes = [0; HEADER_LEN];
        bytes[0] = MAGIC;
        bytes[1] = VERSION;
        bytes[2] = self.kind.to_byte();
        bytes[3] = self.direction;
        bytes[4..8].copy_from_slice(&self.session.to_be_bytes());
        bytes[8..16].copy_from_slice(&self.counter.to_be_bytes());
        bytes
    }

    /// The header of `datagram`, if it is long enough and its magic, version, kind and
    /// direction bytes are ones this layout knows.
    fn parse(datagram: &[u8]) -> Option<Header> {
        let session = peek_session(datagram)?;
        let kind = DatagramKind::from_byte(datagram[2])?;
        let direction = datagram[3];
        if direction > 1 {
            return None;
        }
        let counter = u64::from_be_bytes(datagram[8..16].try_into().ok()?);
        Some(Header {
            kind,
            direction,
            session,
            counter,
        })
    }

    /// The nonce: the direction as a big-endian u32, then the counter.
    fn nonce(self) -> Nonce {
        let mut nonce = [0; NONCE_LEN];
        nonce[..4].copy_from_slice(&u32::from(self.direction).to_be_bytes());
        nonce[4..].copy_from_slice(&self.counter.to_be_bytes());
        Nonce::from(nonce)
    }
}

/// The session number of something that looks like a sealed datagram (long enough, with the
/// right magic and version), without checking more: for routing a datagram to its session.
pub fn peek_session(datagram: &[u8]) -> Option<u32> {
    if datagram.len() < OVERHEAD || datagram[0] != MAGIC || datagram[1] != VERSION {
        return None;
    }
    Some(u32::from_be_bytes(datagram[4..8].try_into().ok()?))
}

/// Words in the replay bitmap: one bit per counter of the window.
const WINDOW_WORDS: usize = (REPLAY_WINDOW / 64) as usize;

/// The counters opened lately: the highest one, and a bitmap of the [`REPLAY_WINDOW`]
/// counters ending at it (counter `c` is bit `c % REPLAY_WINDOW`).
#[derive(Debug, Clone, Default)]
struct ReplayWindow {
    /// The highest counter opened, once one has been.
    highest: Option<u64>,
    /// Which counters of the window have been opened.
    seen: [u64; WINDOW_WORDS],
}

impl ReplayWindow {
    /// The word and bit mask of `counter` in the bitmap.
    fn slot(counter: u64) -> (usize, u64) {
        let bit = counter % REPLAY_WINDOW;
        ((bit / 64) as usize, 1 << (bit % 64))
    }

    /// Whether `counter` may still be opened: ahead of the highest, or inside the window and
    /// not seen yet.
    fn is_fresh(&self, counter: u64) -> bool {
        let Some(highest) = self.highest else {
            return true;
        };
        if counter > highest {
            return true;
        }
        if highest - counter >= REPLAY_WINDOW {
            return false;
        }
        let (word, mask) = Self::slot(counter);
        self.seen[word] & mask == 0
    }

    /// Records `counter` as opened (the caller checked [`ReplayWindow::is_fresh`]), sliding
    /// the window forward when it is the new highest.
    fn mark(&mut self, counter: u64) {
        match self.highest {
            Some(highest) if counter <= highest => {}
            Some(highest) => {
                self.clear_after(highest, counter);
                self.highest = Some(counter);
            }
            None => self.highest = Some(counter),
        }
        let (word, mask) = Self::slot(counter);
        self.seen[word] |= mask;
    }

    /// Clears the bits of the counters `old + 1 ..= new`, which now enter the window and
    /// reuse the bits of counters that leave it.
    fn clear_after(&mut self, old: u64, new: u64) {
        if new - old >= REPLAY_WINDOW {
            self.seen = [0; WINDOW_WORDS];
            return;
        }
        for counter in old + 1..=new {
            let (word, mask) = Self::slot(counter);
            self.seen[word] &= !mask;
        }
    }
}

/// One end's sealing and opening state for a session.
pub struct SecureChannel {
    /// ChaCha20-Poly1305 under the session key.
    cipher: ChaCha20Poly1305,
    /// The session number, in every header.
    session: u32,
    /// Which end this is, so which direction byte we send and which we accept.
    role: Role,
    /// The counter of the next datagram sealed.
    next_counter: u64,
    /// The peer's counters opened lately.
    replay: ReplayWindow,
    /// What happened so far.
    stats: SecureStats,
}

impl SecureChannel {
    /// One end of session `session` under `key`; `role` says which direction this end sends.
    pub fn new(key: &SessionKey, session: u32, role: Role) -> SecureChannel {
        SecureChannel {
            cipher: ChaCha20Poly1305::new(key.as_bytes().into()),
            session,
            role,
            next_counter: 0,
            replay: ReplayWindow::default(),
            stats: SecureStats::default(),
        }
    }

    /// Clears `out` and writes the sealed datagram of `payload` into it (header, ciphertext,
    /// tag). The counter increments per datagram.
    pub fn seal(&mut self, kind: DatagramKind, payload: &[u8], out: &mut Vec<u8>) {
        let header = Header {
            kind,
            direction: self.role.direction(),
            session: self.session,
            counter: self.next_counter,
        };
        self.next_counter += 1;
        let header_bytes = header.to_bytes();
        out.clear();
        out.reserve(payload.len() + OVERHEAD);
        out.extend_from_slice(&header_bytes);
        out.extend_from_slice(payload);
        let tag = self
            .cipher
            .encrypt_in_place_detached(&header.nonce(), &header_bytes, &mut out[HEADER_LEN..])
            .expect("a datagram's payload is far below ChaCha20-Poly1305's 256 GiB limit");
        out.extend_from_slice(&tag);
        self.stats.sealed += 1;
    }

    /// Checks and decrypts a datagram from the peer into `out` (cleared first, and left empty
    /// on error) and gives its kind. Every outcome is counted in [`SecureChannel::stats`].
    pub fn open(&mut self, datagram: &[u8], out: &mut Vec<u8>) -> Result<DatagramKind, OpenError> {
        out.clear();
        let outcome = self.try_open(datagram, out);
        match outcome {
            Ok(_) => self.stats.opened += 1,
            Err(OpenError::Foreign) => self.stats.foreign += 1,
            Err(OpenError::Forged) => self.stats.forged += 1,
            Err(OpenError::Replayed) => self.stats.replayed += 1,
        }
        outcome
    }

    /// [`SecureChannel::open`] without the counting.
    fn try_open(&mut self, datagram: &[u8], out: &mut Vec<u8>) -> Result<DatagramKind, OpenError> {
        let header = Header::parse(datagram).ok_or(OpenError::Foreign)?;
        if header.session != self.session || header.direction != self.role.peer_direction() {
            return Err(OpenError::Foreign);
        }
        if !self.replay.is_fresh(header.counter) {
            return Err(OpenError::Replayed);
        }
        let (sealed, tag) = datagram.split_at(datagram.len() - TAG_LEN);
        out.extend_from_slice(&sealed[HEADER_LEN..]);
        let verified = self.cipher.decrypt_in_place_detached(
            &header.nonce(),
            &sealed[..HEADER_LEN],
            out,
            Tag::from_slice(tag),
        );
        if verified.is_err() {
            out.clear();
            return Err(OpenError::Forged);
        }
        self.replay.mark(header.counter);
        Ok(header.kind)
    }

    /// What this channel has sealed, opened and dropped so far.
    pub fn stats(&self) -> SecureStats {
        self.stats
    }

    /// The session number.
    pub fn session(&self) -> u32 {
        self.session
    }
}

/// Prints the session, the role and the counters; never the key.
impl std::fmt::Debug for SecureChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecureChannel")
            .field("session", &self.session)
            .field("role", &self.role)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SESSION: u32 = 0x0A0B_0C0D;

    fn key() -> SessionKey {
        let mut bytes = [0; KEY_LEN];
        for (i, byte) in bytes.iter_mut().enumerate() {
            *byte = 0xA0 ^ i as u8;
        }
        SessionKey::from_bytes(bytes)
    }

    fn pair() -> (SecureChannel, SecureChannel) {
        (
            SecureChannel::new(&key(), SESSION, Role::Initiator),
            SecureChannel::new(&key(), SESSION, Role::Acceptor),
        )
    }

    fn sealed(channel: &mut SecureChannel, kind: DatagramKind, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        channel.seal(kind, payload, &mut out);
        out
    }

    /// The sender's next `count` datagrams, sealed in counter order.
    fn sealed_run(channel: &mut SecureChannel, count: usize) -> Vec<Vec<u8>> {
        (0..count)
            .map(|i| sealed(channel, DatagramKind::Reliable, &i.to_be_bytes()))
            .collect()
    }

    fn open(channel: &mut SecureChannel, datagram: &[u8]) -> Result<Vec<u8>, OpenError> {
        let mut out = vec![0xEE; 3];
        let result = channel.open(datagram, &mut out);
        if result.is_err() {
            assert!(out.is_empty(), "a failed open leaves `out` empty");
        }
        result.map(|_| out)
    }

    #[test]
    fn round_trip_both_directions_and_kinds() {
        let (mut initiator, mut acceptor) = pair();
        for kind in [DatagramKind::Reliable, DatagramKind::Stream] {
            for payload in [&b""[..], b"hello", &[0x5A; 1400]] {
                let datagram = sealed(&mut initiator, kind, payload);
                assert_eq!(datagram.len(), payload.len() + OVERHEAD);
                let mut out = Vec::new();
                assert_eq!(acceptor.open(&datagram, &mut out), Ok(kind));
                assert_eq!(out, payload);

                let datagram = sealed(&mut acceptor, kind, payload);
                assert_eq!(initiator.open(&datagram, &mut out), Ok(kind));
                assert_eq!(out, payload);
            }
        }
        assert_eq!(initiator.stats().sealed, 6);
        assert_eq!(initiator.stats().opened, 6);
    }

    #[test]
    fn header_is_laid_out_as_documented() {
        let (mut initiator, mut acceptor) = pair();
        initiator.seal(DatagramKind::Reliable, b"a", &mut Vec::new());
        let datagram = sealed(&mut initiator, DatagramKind::Stream, b"xyz");
        assert_eq!(
            datagram[..HEADER_LEN],
            [
                b'P', 1, 2, 0, 0x0A, 0x0B, 0x0C, 0x0D, 0, 0, 0, 0, 0, 0, 0, 1
            ]
        );
        assert_ne!(&datagram[HEADER_LEN..HEADER_LEN + 3], b"xyz", "encrypted");
        let reply = sealed(&mut acceptor, DatagramKind::Reliable, b"");
        assert_eq!(reply[..4], [b'P', 1, 1, 1]);
        assert_eq!(peek_session(&reply), Some(SESSION));
    }

    #[test]
    fn every_single_bit_flip_is_rejected() {
        let (mut initiator, mut acceptor) = pair();
        let datagram = sealed(&mut initiator, DatagramKind::Reliable, b"attack at dawn");
        for position in 0..datagram.len() {
            for bit in 0..8 {
                let mut damaged = datagram.clone();
                damaged[position] ^= 1 << bit;
                let result = open(&mut acceptor, &damaged);
                assert!(
                    matches!(result, Err(OpenError::Forged | OpenError::Foreign)),
                    "byte {position} bit {bit}: {result:?}"
                );
            }
        }
        assert_eq!(
            open(&mut acceptor, &datagram).as_deref(),
            Ok(&b"attack at dawn"[..])
        );
    }

    #[test]
    fn a_replay_is_rejected() {
        let (mut initiator, mut acceptor) = pair();
        let datagram = sealed(&mut initiator, DatagramKind::Reliable, b"once");
        assert!(open(&mut acceptor, &datagram).is_ok());
        assert_eq!(open(&mut acceptor, &datagram), Err(OpenError::Replayed));
    }

    #[test]
    fn out_of_order_inside_the_window_is_accepted_once() {
        let (mut initiator, mut acceptor) = pair();
        let run = sealed_run(&mut initiator, 10);
        for index in [9, 3, 0, 5] {
            assert!(open(&mut acceptor, &run[index]).is_ok(), "first {index}");
        }
        for index in [9, 3, 0, 5] {
            assert_eq!(open(&mut acceptor, &run[index]), Err(OpenError::Replayed));
        }
        for index in [1, 2, 4, 6, 7, 8] {
            assert!(open(&mut acceptor, &run[index]).is_ok(), "late {index}");
        }
    }

    #[test]
    fn the_window_holds_2048_counters_ending_at_the_highest() {
        let (mut initiator, mut acceptor) = pair();
        let run = sealed_run(&mut initiator, 2 * REPLAY_WINDOW as usize + 1);
        let highest = 2 * REPLAY_WINDOW as usize;
        assert!(open(&mut acceptor, &run[highest]).is_ok());
        let oldest_inside = highest - (REPLAY_WINDOW as usize - 1);
        assert!(open(&mut acceptor, &run[oldest_inside]).is_ok());
        assert_eq!(
            open(&mut acceptor, &run[oldest_inside - 1]),
            Err(OpenError::Replayed)
        );
        assert_eq!(open(&mut acceptor, &run[0]), Err(OpenError::Replayed));
    }

    #[test]
    fn a_big_jump_forward_clears_the_window() {
        let (mut initiator, mut acceptor) = pair();
        let run = sealed_run(&mut initiator, 5000);
        for datagram in &run[..100] {
            assert!(open(&mut acceptor, datagram).is_ok());
        }
        // Counter 4100 reuses the bits of 4 and 2052: 2052 (never opened) must be accepted,
        // 4 is now outside the window.
        assert!(open(&mut acceptor, &run[4100]).is_ok());
        assert!(open(&mut acceptor, &run[2053]).is_ok());
        assert_eq!(open(&mut acceptor, &run[2052]), Err(OpenError::Replayed));
        assert!(open(&mut acceptor, &run[2054]).is_ok());
        assert_eq!(open(&mut acceptor, &run[50]), Err(OpenError::Replayed));
        assert_eq!(open(&mut acceptor, &run[4100]), Err(OpenError::Replayed));
        assert_eq!(open(&mut acceptor, &run[2053]), Err(OpenError::Replayed));
    }

    #[test]
    fn a_small_slide_forgets_only_the_counters_that_left() {
        let (mut initiator, mut acceptor) = pair();
        let run = sealed_run(&mut initiator, 3000);
        for index in [0, 10, 1000, 2047] {
            assert!(open(&mut acceptor, &run[index]).is_ok());
        }
        // Slide by 20: counters 0..=19 leave, 10 with them; 1000 and 2047 stay seen.
        assert!(open(&mut acceptor, &run[2067]).is_ok());
        assert_eq!(open(&mut acceptor, &run[10]), Err(OpenError::Replayed));
        assert_eq!(open(&mut acceptor, &run[1000]), Err(OpenError::Replayed));
        assert_eq!(open(&mut acceptor, &run[2047]), Err(OpenError::Replayed));
        for index in [20, 1001, 2050, 2066] {
            assert!(open(&mut acceptor, &run[index]).is_ok(), "{index}");
        }
    }

    #[test]
    fn a_forged_datagram_does_not_use_up_its_counter() {
        let (mut initiator, mut acceptor) = pair();
        let datagram = sealed(&mut initiator, DatagramKind::Reliable, b"real");
        let mut forged = datagram.clone();
        let last = forged.len() - 1;
        forged[last] ^= 0x01;
        assert_eq!(open(&mut acceptor, &forged), Err(OpenError::Forged));
        assert_eq!(open(&mut acceptor, &datagram).as_deref(), Ok(&b"real"[..]));
    }

    #[test]
    fn a_wrong_key_is_forged() {
        let mut other_key = *key().as_bytes();
        other_key[0] ^= 1;
        let mut stranger =
            SecureChannel::new(&SessionKey::from_bytes(other_key), SESSION, Role::Initiator);
        let (_, mut acceptor) = pair();
        let datagram = sealed(&mut stranger, DatagramKind::Reliable, b"hi");
        assert_eq!(open(&mut acceptor, &datagram), Err(OpenError::Forged));
    }

    #[test]
    fn a_wrong_session_is_foreign() {
        let mut other = SecureChannel::new(&key(), SESSION + 1, Role::Initiator);
        let (_, mut acceptor) = pair();
        let datagram = sealed(&mut other, DatagramKind::Reliable, b"hi");
        assert_eq!(open(&mut acceptor, &datagram), Err(OpenError::Foreign));
    }

    #[test]
    fn our_own_reflected_datagram_is_foreign() {
        let (mut initiator, mut acceptor) = pair();
        let mine = sealed(&mut initiator, DatagramKind::Reliable, b"echo");
        assert_eq!(open(&mut initiator, &mine), Err(OpenError::Foreign));
        let theirs = sealed(&mut acceptor, DatagramKind::Stream, b"echo");
        assert_eq!(open(&mut acceptor, &theirs), Err(OpenError::Foreign));
    }

    #[test]
    fn unknown_magic_version_kind_or_direction_is_foreign() {
        let (mut initiator, mut acceptor) = pair();
        let datagram = sealed(&mut initiator, DatagramKind::Reliable, b"x");
        for (position, value) in [(0, b'Q'), (1, 2), (2, 0), (2, 3), (3, 2)] {
            let mut changed = datagram.clone();
            changed[position] = value;
            assert_eq!(
                open(&mut acceptor, &changed),
                Err(OpenError::Foreign),
                "byte {position} = {value}"
            );
        }
    }

    #[test]
    fn every_truncation_is_an_error() {
        let (mut initiator, mut acceptor) = pair();
        let datagram = sealed(&mut initiator, DatagramKind::Reliable, b"some payload");
        for len in 0..datagram.len() {
            let result = open(&mut acceptor, &datagram[..len]);
            assert!(result.is_err(), "{len} bytes: {result:?}");
            if len < OVERHEAD {
                assert_eq!(result, Err(OpenError::Foreign), "{len} bytes");
                assert_eq!(peek_session(&datagram[..len]), None);
            }
        }
        assert!(open(&mut acceptor, &datagram).is_ok());
    }

    #[test]
    fn stats_count_each_outcome() {
        let (mut initiator, mut acceptor) = pair();
        let good = sealed(&mut initiator, DatagramKind::Reliable, b"ok");
        let mut forged = sealed(&mut initiator, DatagramKind::Reliable, b"bad");
        forged[HEADER_LEN] ^= 0x80;
        assert!(open(&mut acceptor, &good).is_ok());
        assert_eq!(open(&mut acceptor, &good), Err(OpenError::Replayed));
        assert_eq!(open(&mut acceptor, &good), Err(OpenError::Replayed));
        assert_eq!(open(&mut acceptor, &forged), Err(OpenError::Forged));
        assert_eq!(open(&mut acceptor, b"junk"), Err(OpenError::Foreign));
        assert_eq!(
            acceptor.stats(),
            SecureStats {
                sealed: 0,
                opened: 1,
                foreign: 1,
                forged: 1,
                replayed: 2,
            }
        );
        assert_eq!(initiator.stats().sealed, 2);
    }

    #[test]
    fn debug_never_shows_the_key() {
        let key = key();
        let hex = key.to_hex();
        let (mut initiator, _) = pair();
        initiator.seal(DatagramKind::Reliable, b"x", &mut Vec::new());
        let channel = format!("{initiator:?}");
        assert!(!channel.contains(&hex), "{channel}");
        assert!(!channel.contains(&hex[..16]), "{channel}");
        assert!(channel.contains("Initiator"), "{channel}");
        assert!(channel.contains(&SESSION.to_string()), "{channel}");
        assert!(channel.contains("sealed: 1"), "{channel}");
        let key_text = format!("{key:?}");
        assert_eq!(key_text, "SessionKey(<redacted>)");
    }

    #[test]
    fn session_key_hex_round_trips() {
        let key = key();
        let hex = key.to_hex();
        assert_eq!(hex.len(), 64);
        assert!(hex.starts_with("a0a1a2a3"), "{hex}");
        assert_eq!(SessionKey::from_hex(&hex), Ok(key.clone()));
        assert_eq!(SessionKey::from_hex(&hex.to_uppercase()), Ok(key.clone()));
        let json = serde_json::to_string(&key).expect("serialises");
        assert_eq!(json, format!("\"{hex}\""));
        let back: SessionKey = serde_json::from_str(&json).expect("deserialises");
        assert_eq!(back, key);
    }

    #[test]
    fn bad_key_hex_is_rejected() {
        let hex = key().to_hex();
        let bad = [
            String::new(),
            hex[..62].to_owned(),
            format!("{hex}00"),
            format!("{}zz", &hex[..62]),
            format!("+1{}", &hex[2..]),
            format!("é{}", &hex[2..]),
        ];
        for text in bad {
            assert_eq!(SessionKey::from_hex(&text), Err(KeyError), "{text:?}");
        }
        assert!(serde_json::from_str::<SessionKey>("\"abc\"").is_err());
    }

    proptest! {
        #[test]
        fn random_bytes_never_open(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let (_, mut acceptor) = pair();
            let mut out = Vec::new();
            prop_assert!(acceptor.open(&bytes, &mut out).is_err());
            prop_assert!(out.is_empty());
        }

        #[test]
        fn random_bytes_behind_a_valid_header_are_forged(
            body in proptest::collection::vec(any::<u8>(), TAG_LEN..200),
            counter in any::<u64>(),
        ) {
            let (_, mut acceptor) = pair();
            let header = Header {
                kind: DatagramKind::Stream,
                direction: 0,
                session: SESSION,
                counter,
            };
            let mut datagram = header.to_bytes().to_vec();
            datagram.extend_from_slice(&body);
            prop_assert_eq!(acceptor.open(&datagram, &mut Vec::new()), Err(OpenError::Forged));
        }

        #[test]
        fn any_payload_round_trips(payload in proptest::collection::vec(any::<u8>(), 0..2000)) {
            let (mut initiator, mut acceptor) = pair();
            let datagram = sealed(&mut initiator, DatagramKind::Reliable, &payload);
            prop_assert_eq!(open(&mut acceptor, &datagram), Ok(payload));
        }
    }
}
