//! The packet header of the reliable-datagram layer: 32 bytes, big-endian, at the start of
//! every datagram.
//!
//! | offset | size | field | meaning |
//! |---|---|---|---|
//! | 0 | 2 | magic | `b"RD"`: anything else is not ours |
//! | 2 | 1 | version | [`VERSION`] (1) |
//! | 3 | 1 | type | [`PacketType`]: 1 hello, 2 data, 3 ack, 4 ping, 5 close |
//! | 4 | 4 | connection id | chosen by the client, echoed by the server |
//! | 8 | 4 | packet number | this packet's place in the sender's reliable sequence (0 for ack) |
//! | 12 | 4 | cumulative ack | every packet below this number has been received |
//! | 16 | 8 | selective acks | bit `i` set: packet `ack + 1 + i` has been received too |
//! | 24 | 4 | message id | the message a data packet carries part of (0 otherwise) |
//! | 28 | 2 | fragment index | which part, from 0 |
//! | 30 | 2 | fragment count | how many parts the message has (1 to 65535; 0 when no message) |
//! | 32 | .. | payload | a data packet's part of the message; empty for the other types |
//!
//! Hello, data, ping and close are *reliable*: each takes the next packet number, is kept until
//! acknowledged and is delivered in packet-number order. Every packet, of any type, carries the
//! sender's current acknowledgement of the other direction.

use thiserror::Error;

/// Bytes before the payload.
pub const HEADER_LEN: usize = 32;
/// The first two bytes of every datagram.
pub const MAGIC: [u8; 2] = *b"RD";
/// The header layout this code speaks.
pub const VERSION: u8 = 1;
/// Packets after the cumulative ack that the selective-ack bitmap can report.
pub const SACK_BITS: u32 = 64;

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
    /// Bit `i`: packet `ack + 1 + i` has been received.
    pub sack: u64,
    /// The message a data packet carries part of.
    pub message_id: u32,
    /// Which part.
    pub fragment_index: u16,
    /// How many parts.
    pub fragment_count: u16,
}

impl Header {
    /// Appends the header's 32 bytes to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&MAGIC);
        out.push(VERSION);
        out.push(self.packet_type.code());
        out.extend_from_slice(&self.connection_id.to_be_bytes());
        out.extend_from_slice(&self.packet_number.to_be_bytes());
        out.extend_from_slice(&self.ack.to_be_bytes());
        out.extend_from_slice(&self.sack.to_be_bytes());
        out.extend_from_slice(&self.message_id.to_be_bytes());
        out.extend_from_slice(&self.fragment_index.to_be_bytes());
        out.extend_from_slice(&self.fragment_count.to_be_bytes());
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
            sack: u64::from_be_bytes(head[16..24].try_into().expect("8 bytes")),
            message_id: u32_at(24),
            fragment_index: u16_at(28),
            fragment_count: u16_at(30),
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
            sack: 0b101,
            message_id: 2,
            fragment_index: 1,
            fragment_count: 4,
        }
    }

    #[test]
    fn a_data_header_has_the_documented_bytes() {
        let mut out = Vec::new();
        data_header().encode(&mut out);
        assert_eq!(
            out,
            [
                b'R', b'D', 1, 2, 0xDE, 0xAD, 0xBE, 0xEF, 0, 0, 0, 7, 0, 0, 0, 3, 0, 0, 0, 0, 0, 0,
                0, 0b101, 0, 0, 0, 2, 0, 1, 0, 4
            ]
        );
        out.extend_from_slice(b"part");
        assert_eq!(Header::decode(&out).unwrap(), (data_header(), &b"part"[..]));
    }

    #[test]
    fn foreign_truncated_and_inconsistent_datagrams_are_refused() {
        let mut good = Vec::new();
        data_header().encode(&mut good);
        assert_eq!(Header::decode(&good[..31]), Err(HeaderError::Truncated(31)));
        let mut bad = good.clone();
        bad[0] = b'X';
        assert_eq!(Header::decode(&bad), Err(HeaderError::BadMagic));
        let mut bad = good.clone();
        bad[2] = 2;
        assert_eq!(Header::decode(&bad), Err(HeaderError::BadVersion(2)));
        let mut bad = good.clone();
        bad[3] = 9;
        assert_eq!(Header::decode(&bad), Err(HeaderError::BadType(9)));
        let mut bad = good.clone();
        bad[29] = 4; // index 4 of 4
        assert!(matches!(
            Header::decode(&bad),
            Err(HeaderError::Inconsistent(_))
        ));
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
            code in 1u8..=5, connection_id: u32, packet_number: u32, ack: u32, sack: u64,
            message_id: u32, count in 1u16.., index_seed: u16, payload in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let packet_type = PacketType::from_code(code).unwrap();
            let data = packet_type == PacketType::Data;
            let header = Header {
                packet_type, connection_id, packet_number, ack, sack,
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
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..100)) {
            let _ = Header::decode(&bytes);
        }
    }
}
