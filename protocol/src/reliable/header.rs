//! The packet header of the reliable-datagram layer: 60 bytes, big-endian, at the start of
//! every datagram.
//!
//! | offset | size | field | meaning |
//! |---|---|---|---|
//! | 0 | 2 | magic | `b"RD"`: anything else is not ours |
//! | 2 | 1 | version | [`VERSION`] (3) |
//! | 3 | 1 | type | [`PacketType`]: 1 hello, 2 data, 3 ack, 4 ping, 5 close |
//! | 4 | 4 | connection id | chosen by the client, echoed by the server |
//! | 8 | 4 | packet number | this packet's place in the sender's reliable sequence (0 for ack) |
//! | 12 | 4 | cumulative ack | every packet below this number has been received |
//! | 16 | 4 | ack delay | microseconds between the arrival of the highest-numbered packet received and this datagram's send (saturating) |
//! | 20 | 32 | selective acks | a 256-bit number: bit `i` set, packet `ack + 1 + i` has been received too |
//! | 52 | 4 | message id | the message a data packet carries part of (0 otherwise) |
//! | 56 | 2 | fragment index | which part, from 0 |
//! | 58 | 2 | fragment count | how many parts the message has (1 to 65535; 0 when no message) |
//! | 60 | .. | payload | a data packet's part of the message; empty for the other types |
//!
//! The selective acks are big-endian like the rest: bit `i` is bit `i % 8` of byte
//! `51 - i / 8`, so byte 51 reports packets `ack + 1` to `ack + 8` and byte 20 packets
//! `ack + 249` to `ack + 256`. They reach as far as a sender may run ahead of the oldest packet
//! it has unacknowledged ([`SACK_BITS`], see [`super::connection`]), so the bitmap's width is the
//! widest window the layer allows.
//!
//! The ack delay lets the sender take it out of its round-trip sample (as QUIC's ACK Delay
//! does): an ack that waited for a datagram to ride on (the reply to a request, sent again
//! after the first copy was lost) would otherwise be taken for a slow path, and one such sample
//! inflates the retransmission timeout for dozens of round trips.
//!
//! Earlier versions are refused: version 1 had a 64-bit bitmap and a 32-byte header (so a window
//! of at most 64 packets); version 2 had no ack delay and a 56-byte header.
//!
//! Hello, data, ping and close are *reliable*: each takes the next packet number, is kept until
//! acknowledged and is delivered in packet-number order. Every packet, of any type, carries the
//! sender's current acknowledgement of the other direction.

use thiserror::Error;

/// Bytes before the payload.
pub const HEADER_LEN: usize = SACK_END + 8;
/// The first two bytes of every datagram.
pub const MAGIC: [u8; 2] = *b"RD";
/// The header layout this code speaks.
pub const VERSION: u8 = 3;
/// Packets after the cumulative ack that the selective-ack bitmap can report.
pub const SACK_BITS: u32 = Sack::BITS;
/// 64-bit words of a [`Sack`].
const SACK_WORDS: usize = 4;
/// Where the ack delay is.
const ACK_DELAY_AT: usize = 16;
/// Where the selective acks start.
const SACK_AT: usize = ACK_DELAY_AT + 4;
/// Where the selective acks end and the message fields start.
const SACK_END: usize = SACK_AT + 8 * SACK_WORDS;

/// The selective-ack bitmap: bit `i` reports packet `ack + 1 + i`, for `i` below
/// [`SACK_BITS`].
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Sack([u64; SACK_WORDS]);

impl Sack {
    /// Bits in the bitmap.
    pub const BITS: u32 = 64 * SACK_WORDS as u32;
    /// No bit set.
    pub const EMPTY: Sack = Sack([0; SACK_WORDS]);

    /// Whether no bit is set.
    pub fn is_empty(&self) -> bool {
        self.0.iter().all(|&word| word == 0)
    }

    /// Whether bit `i` is set (false for `i` past the bitmap).
    pub fn contains(&self, i: u32) -> bool {
        i < Sack::BITS && self.0[i as usize / 64] & (1 << (i % 64)) != 0
    }

    /// Sets bit `i`; one past the bitmap is ignored.
    pub fn insert(&mut self, i: u32) {
        if i < Sack::BITS {
            self.0[i as usize / 64] |= 1 << (i % 64);
        }
    }

    /// The highest bit set.
    pub fn highest(&self) -> Option<u32> {
        let (word, bits) = self.0.iter().enumerate().rev().find(|(_, w)| **w != 0)?;
        Some(64 * word as u32 + 63 - bits.leading_zeros())
    }

    /// The bits set, from the lowest.
    pub fn ones(&self) -> impl Iterator<Item = u32> + use<> {
        let words = self.0;
        (0..SACK_WORDS as u32).flat_map(move |w| {
            let mut word = words[w as usize];
            std::iter::from_fn(move || {
                let bit = (word != 0).then(|| word.trailing_zeros())?;
                word &= word - 1;
                Some(64 * w + bit)
            })
        })
    }

    /// Drops the lowest bit and moves every other one down by one: the bitmap after the
    /// cumulative ack moved up by one.
    pub fn shift_down_one(&mut self) {
        for w in 0..SACK_WORDS {
            let carry = self.0.get(w + 1).map_or(0, |next| next << 63);
            self.0[w] = self.0[w] >> 1 | carry;
        }
    }

    /// The 32 bytes on the wire.
    pub fn to_be_bytes(&self) -> [u8; 8 * SACK_WORDS] {
        let mut out = [0; 8 * SACK_WORDS];
        for (chunk, word) in out.chunks_exact_mut(8).zip(self.0.iter().rev()) {
            chunk.copy_from_slice(&word.to_be_bytes());
        }
        out
    }

    /// The bitmap of 32 bytes from the wire.
    pub fn from_be_bytes(bytes: [u8; 8 * SACK_WORDS]) -> Sack {
        let mut words = [0; SACK_WORDS];
        for (word, chunk) in words.iter_mut().rev().zip(bytes.chunks_exact(8)) {
            *word = u64::from_be_bytes(chunk.try_into().expect("8 bytes"));
        }
        Sack(words)
    }
}

impl From<u64> for Sack {
    /// A bitmap with the bits of `low` as its lowest 64.
    fn from(low: u64) -> Sack {
        let mut words = [0; SACK_WORDS];
        words[0] = low;
        Sack(words)
    }
}

impl std::fmt::Debug for Sack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Sack(0x")?;
        for word in self.0.iter().rev() {
            write!(f, "{word:016x}")?;
        }
        write!(f, ")")
    }
}

/// What a packet is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PacketType {
    /// Opens a connection (client to server, packet number 0).
    Hello,
    /// Carries one fragment of a message.
    Data,
    /// Only acknowledges; not itself acknowledged.
    Ack,
    /// Keeps an idle connection alive and proves the peer is there.
    Ping,
    /// Ends the connection after everything sent before it.
    Close,
}

impl PacketType {
    /// The byte on the wire.
    pub const fn code(self) -> u8 {
        match self {
            PacketType::Hello => 1,
            PacketType::Data => 2,
            PacketType::Ack => 3,
            PacketType::Ping => 4,
            PacketType::Close => 5,
        }
    }

    /// The type a byte stands for.
    pub const fn from_code(code: u8) -> Option<PacketType> {
        match code {
            1 => Some(PacketType::Hello),
            2 => Some(PacketType::Data),
            3 => Some(PacketType::Ack),
            4 => Some(PacketType::Ping),
            5 => Some(PacketType::Close),
            _ => None,
        }
    }

    /// Whether packets of this type take a packet number and are retransmitted until acked.
    pub const fn is_reliable(self) -> bool {
        !matches!(self, PacketType::Ack)
    }
}

/// Why a datagram is not a packet of ours.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum HeaderError {
    /// Shorter than a header.
    #[error("datagram of {0} bytes is shorter than the {HEADER_LEN}-byte header")]
    Truncated(usize),
    /// The magic bytes are wrong: someone else's traffic.
    #[error("not a reliable-datagram packet (bad magic)")]
    BadMagic,
    /// A version we do not speak.
    #[error("unsupported version {0}")]
    BadVersion(u8),
    /// An unknown packet type.
    #[error("unknown packet type {0}")]
    BadType(u8),
    /// Fields that contradict each other (a fragment index past the count, a payload on a
    /// packet that carries none, ...).
    #[error("inconsistent header: {0}")]
    Inconsistent(&'static str),
}

/// A decoded header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// What the packet is for.
    pub packet_type: PacketType,
    /// The connection it belongs to.
    pub connection_id: u32,
    /// Its packet number (reliable types only).
    pub packet_number: u32,
    /// Every packet of the other direction below this has been received.
    pub ack: u32,
    /// Microseconds the sender held this acknowledgement since the highest-numbered packet it
    /// reports arrived.
    pub ack_delay_micros: u32,
    /// Bit `i`: packet `ack + 1 + i` has been received.
    pub sack: Sack,
    /// The message a data packet carries part of.
    pub message_id: u32,
    /// Which part.
    pub fragment_index: u16,
    /// How many parts.
    pub fragment_count: u16,
}

impl Header {
    /// Appends the header's bytes to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_bytes());
    }

    /// The header's 56 bytes.
    pub fn to_bytes(&self) -> [u8; HEADER_LEN] {
        let mut out = [0; HEADER_LEN];
        out[0..2].copy_from_slice(&MAGIC);
        out[2] = VERSION;
        out[3] = self.packet_type.code();
        out[4..8].copy_from_slice(&self.connection_id.to_be_bytes());
        out[8..12].copy_from_slice(&self.packet_number.to_be_bytes());
        out[12..16].copy_from_slice(&self.ack.to_be_bytes());
        out[ACK_DELAY_AT..SACK_AT].copy_from_slice(&self.ack_delay_micros.to_be_bytes());
        out[SACK_AT..SACK_END].copy_from_slice(&self.sack.to_be_bytes());
        out[SACK_END..SACK_END + 4].copy_from_slice(&self.message_id.to_be_bytes());
        out[SACK_END + 4..SACK_END + 6].copy_from_slice(&self.fragment_index.to_be_bytes());
        out[SACK_END + 6..HEADER_LEN].copy_from_slice(&self.fragment_count.to_be_bytes());
        out
    }

    /// The connection id of `datagram` if it starts like a packet of ours (long enough, the
    /// magic and version right), without reading the rest: enough to route it.
    pub fn peek_connection_id(datagram: &[u8]) -> Option<u32> {
        let head = datagram.get(..HEADER_LEN)?;
        let ours = head[0..2] == MAGIC && head[2] == VERSION;
        ours.then(|| u32::from_be_bytes(head[4..8].try_into().expect("4 bytes")))
    }

    /// Reads the header of `datagram`, returning it and the payload after it.
    pub fn decode(datagram: &[u8]) -> Result<(Header, &[u8]), HeaderError> {
        if datagram.len() < HEADER_LEN {
            return Err(HeaderError::Truncated(datagram.len()));
        }
        let (head, payload) = datagram.split_at(HEADER_LEN);
        if head[0..2] != MAGIC {
            return Err(HeaderError::BadMagic);
        }
        if head[2] != VERSION {
            return Err(HeaderError::BadVersion(head[2]));
        }
        let packet_type = PacketType::from_code(head[3]).ok_or(HeaderError::BadType(head[3]))?;
        let u32_at = |at: usize| u32::from_be_bytes(head[at..at + 4].try_into().expect("4 bytes"));
        let u16_at = |at: usize| u16::from_be_bytes(head[at..at + 2].try_into().expect("2 bytes"));
        let header = Header {
            packet_type,
            connection_id: u32_at(4),
            packet_number: u32_at(8),
            ack: u32_at(12),
            ack_delay_micros: u32_at(ACK_DELAY_AT),
            sack: Sack::from_be_bytes(head[SACK_AT..SACK_END].try_into().expect("the bitmap")),
            message_id: u32_at(SACK_END),
            fragment_index: u16_at(SACK_END + 4),
            fragment_count: u16_at(SACK_END + 6),
        };
        header.check(payload.len())?;
        Ok((header, payload))
    }

    fn check(&self, payload_len: usize) -> Result<(), HeaderError> {
        match self.packet_type {
            PacketType::Data if self.fragment_count == 0 => {
                Err(HeaderError::Inconsistent("a data packet with no fragments"))
            }
            PacketType::Data if self.fragment_index >= self.fragment_count => {
                Err(HeaderError::Inconsistent("fragment index past the count"))
            }
            PacketType::Data => Ok(()),
            _ if payload_len != 0 => Err(HeaderError::Inconsistent("payload on a control packet")),
            _ if self.fragment_count != 0 || self.message_id != 0 => Err(
                HeaderError::Inconsistent("message fields on a control packet"),
            ),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn data_header() -> Header {
        Header {
            packet_type: PacketType::Data,
            connection_id: 0xDEAD_BEEF,
            packet_number: 7,
            ack: 3,
            ack_delay_micros: 0x0102_0304,
            sack: Sack::from(0b101),
            message_id: 2,
            fragment_index: 1,
            fragment_count: 4,
        }
    }

    #[test]
    fn a_data_header_has_the_documented_bytes() {
        let mut header = data_header();
        header.sack.insert(255);
        let mut out = Vec::new();
        header.encode(&mut out);
        let mut expected = vec![
            b'R', b'D', 3, 2, 0xDE, 0xAD, 0xBE, 0xEF, 0, 0, 0, 7, 0, 0, 0, 3, 1, 2, 3, 4,
        ];
        expected.push(0x80); // bit 255: packet ack + 256
        expected.extend([0; 30]);
        expected.push(0b101); // bits 0 and 2: packets ack + 1 and ack + 3
        expected.extend([0, 0, 0, 2, 0, 1, 0, 4]);
        assert_eq!(out, expected);
        assert_eq!(out.len(), HEADER_LEN);
        out.extend_from_slice(b"part");
        assert_eq!(Header::decode(&out).unwrap(), (header, &b"part"[..]));
    }

    #[test]
    fn the_selective_acks_set_find_and_shift_bits_across_words() {
        let mut sack = Sack::EMPTY;
        assert!(sack.is_empty());
        assert_eq!(sack.highest(), None);
        for i in [0, 63, 64, 200, 255, 256] {
            sack.insert(i);
        }
        assert_eq!(sack.ones().collect::<Vec<_>>(), [0, 63, 64, 200, 255]);
        assert!(sack.contains(64) && !sack.contains(65) && !sack.contains(256));
        assert_eq!(sack.highest(), Some(255));
        sack.shift_down_one();
        assert_eq!(sack.ones().collect::<Vec<_>>(), [62, 63, 199, 254]);
        assert_eq!(Sack::from_be_bytes(sack.to_be_bytes()), sack);
    }

    #[test]
    fn foreign_truncated_and_inconsistent_datagrams_are_refused() {
        let mut good = Vec::new();
        data_header().encode(&mut good);
        assert_eq!(Header::decode(&good[..59]), Err(HeaderError::Truncated(59)));
        let mut bad = good.clone();
        bad[0] = b'X';
        assert_eq!(Header::decode(&bad), Err(HeaderError::BadMagic));
        for old in [1, 2] {
            let mut bad = good.clone();
            bad[2] = old;
            assert_eq!(Header::decode(&bad), Err(HeaderError::BadVersion(old)));
            assert_eq!(Header::peek_connection_id(&bad), None);
        }
        let mut bad = good.clone();
        bad[3] = 9;
        assert_eq!(Header::decode(&bad), Err(HeaderError::BadType(9)));
        let mut bad = good.clone();
        bad[57] = 4; // index 4 of 4
        assert!(matches!(
            Header::decode(&bad),
            Err(HeaderError::Inconsistent(_))
        ));
        assert_eq!(Header::peek_connection_id(&good), Some(0xDEAD_BEEF));
        assert_eq!(Header::peek_connection_id(&good[..59]), None);
        let mut ack = good.clone();
        ack[3] = PacketType::Ack.code();
        assert!(matches!(
            Header::decode(&ack),
            Err(HeaderError::Inconsistent(_))
        ));
        ack.push(0);
        assert!(matches!(
            Header::decode(&ack),
            Err(HeaderError::Inconsistent(_))
        ));
    }

    proptest! {
        #[test]
        fn headers_round_trip(
            code in 1u8..=5, connection_id: u32, packet_number: u32, ack: u32, ack_delay_micros: u32,
            sack: [u64; 4],
            message_id: u32, count in 1u16.., index_seed: u16, payload in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let packet_type = PacketType::from_code(code).unwrap();
            let data = packet_type == PacketType::Data;
            let header = Header {
                packet_type, connection_id, packet_number, ack, ack_delay_micros, sack: Sack(sack),
                message_id: if data { message_id } else { 0 },
                fragment_index: if data { index_seed % count } else { 0 },
                fragment_count: if data { count } else { 0 },
            };
            let payload = if data { payload } else { Vec::new() };
            let mut out = Vec::new();
            header.encode(&mut out);
            prop_assert_eq!(out.len(), HEADER_LEN);
            out.extend_from_slice(&payload);
            prop_assert_eq!(Header::decode(&out).unwrap(), (header, &payload[..]));
        }

        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..120)) {
            let _ = Header::decode(&bytes);
        }
    }
}
