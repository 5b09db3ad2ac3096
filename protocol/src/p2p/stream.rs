//! The media stream: each chunk's header (sequenced, timestamped, never retransmitted) and the
//! receiver's tally of what arrived, with jitter as in RFC 3550.
//!
//! The chunk's header (16 bytes, big-endian) comes first in the plaintext of a
//! [`super::secure::DatagramKind::Stream`] datagram; the payload follows:
//!
//! | offset | size | field                                               |
//! |--------|------|-----------------------------------------------------|
//! | 0      | 4    | stream id                                           |
//! | 4      | 4    | sequence number, from 0                             |
//! | 8      | 8    | sent at, µs since the stream began (sender's clock) |
//! | 16     | n    | payload                                             |
//!
//! [`StreamTally`] counts, for one stream:
//!
//! - *received*: distinct sequence numbers, and their payload bytes;
//! - *duplicates*: chunks whose sequence number arrived before;
//! - *reordered*: distinct chunks that arrived after a chunk with a higher sequence number;
//! - *jitter* (RFC 3550, section 6.4.1): for consecutive distinct chunks `i`, `j` in arrival
//!   order, `D = (Rj - Ri) - (Sj - Si)` with `R` the arrival time and `S` the sent-at time,
//!   and `J += (|D| - J) / 16`; kept in microseconds as `f64`, reported rounded;
//! - *lost*, once the sender says how many it sent: `sent - received` (never below zero).
//!
//! Memory is bounded: duplicates are told apart by a bitmap of the first
//! [`MAX_TRACKED_CHUNKS`] sequence numbers (512 KiB at most, grown as chunks arrive). A chunk
//! numbered past it is counted as a distinct arrival every time, so duplicates of such chunks
//! are not detected (at any sensible chunk size that is a stream of several GiB).

use bytes::Buf;
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

/// Sequence numbers below this are tracked for duplicates (see the module docs).
pub const MAX_TRACKED_CHUNKS: u32 = 1 << 22;

/// The jitter estimate's gain, 1/16 as in RFC 3550.
const JITTER_GAIN: f64 = 1.0 / 16.0;

impl ChunkHeader {
    /// Appends the header's [`CHUNK_HEADER_LEN`] bytes to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.stream_id.to_be_bytes());
        out.extend_from_slice(&self.seq.to_be_bytes());
        out.extend_from_slice(&self.sent_at_us.to_be_bytes());
    }

    /// The header at the front of `datagram` (a stream datagram's plaintext) and the payload
    /// after it.
    pub fn decode(datagram: &[u8]) -> Result<(ChunkHeader, &[u8]), ChunkError> {
        let Some((header, payload)) = datagram.split_first_chunk::<CHUNK_HEADER_LEN>() else {
            return Err(ChunkError::Truncated(datagram.len()));
        };
        // The array holds exactly the three fields, so these reads cannot run short.
        let mut fields = &header[..];
        let header = ChunkHeader {
            stream_id: fields.get_u32(),
            seq: fields.get_u32(),
            sent_at_us: fields.get_u64(),
        };
        Ok((header, payload))
    }
}

impl StreamReport {
    /// The share of sent chunks that never arrived, in percent (0 when nothing was sent).
    pub fn loss_percent(&self) -> f64 {
        if self.sent == 0 {
            return 0.0;
        }
        f64::from(self.lost) * 100.0 / f64::from(self.sent)
    }
}

/// The times of the last distinct chunk that arrived, for the next jitter step.
#[derive(Debug, Clone, Copy)]
struct Arrival {
    /// When the receiver got it, µs.
    arrived_at_us: u64,
    /// When the sender sent it, µs.
    sent_at_us: u64,
}

/// A growable bitmap of the sequence numbers seen, capped at [`MAX_TRACKED_CHUNKS`].
#[derive(Debug, Clone, Default)]
struct SeenChunks {
    /// Bit `seq % 64` of word `seq / 64` is set once `seq` arrived.
    words: Vec<u64>,
}

impl SeenChunks {
    /// Marks `seq` as seen; whether it had been seen before. Sequence numbers past the cap
    /// are never "seen before".
    fn insert(&mut self, seq: u32) -> bool {
        if seq >= MAX_TRACKED_CHUNKS {
            return false;
        }
        let word = (seq / 64) as usize;
        let mask = 1u64 << (seq % 64);
        if word >= self.words.len() {
            self.words.resize(word + 1, 0);
        }
        let seen = self.words[word] & mask != 0;
        self.words[word] |= mask;
        seen
    }
}

/// The receiver's running account of one stream.
#[derive(Debug, Clone)]
pub struct StreamTally {
    /// The stream counted; chunks of other streams are ignored.
    stream_id: u32,
    /// Which sequence numbers arrived.
    seen: SeenChunks,
    /// The highest sequence number that arrived, once one has.
    highest: Option<u32>,
    /// Distinct chunks that arrived.
    received: u32,
    /// Their payload bytes.
    bytes: u64,
    /// Chunks that arrived again.
    duplicates: u32,
    /// Distinct chunks that arrived after a higher-numbered one.
    reordered: u32,
    /// The last distinct arrival, once there is one.
    last: Option<Arrival>,
    /// The interarrival jitter estimate, µs.
    jitter_us: f64,
}

impl StreamTally {
    /// An empty account of stream `stream_id`.
    pub fn new(stream_id: u32) -> StreamTally {
        StreamTally {
            stream_id,
            seen: SeenChunks::default(),
            highest: None,
            received: 0,
            bytes: 0,
            duplicates: 0,
            reordered: 0,
            last: None,
            jitter_us: 0.0,
        }
    }

    /// A chunk of this stream arrived `arrived_at_us` microseconds after an origin of the
    /// receiver's choosing (fixed for the stream), with `payload_len` bytes after its header.
    /// A chunk of another stream is ignored.
    pub fn on_chunk(&mut self, header: &ChunkHeader, payload_len: usize, arrived_at_us: u64) {
        if header.stream_id != self.stream_id {
            return;
        }
        if self.seen.insert(header.seq) {
            self.duplicates = self.duplicates.saturating_add(1);
            return;
        }
        self.received = self.received.saturating_add(1);
        self.bytes = self.bytes.saturating_add(payload_len as u64);
        match self.highest {
            Some(highest) if header.seq < highest => {
                self.reordered = self.reordered.saturating_add(1);
            }
            _ => self.highest = Some(header.seq),
        }
        let arrival = Arrival {
            arrived_at_us,
            sent_at_us: header.sent_at_us,
        };
        self.update_jitter(arrival);
    }

    /// One RFC 3550 jitter step from the last distinct arrival to `arrival`.
    fn update_jitter(&mut self, arrival: Arrival) {
        if let Some(last) = self.last {
            let transit_change = (micros(arrival.arrived_at_us) - micros(last.arrived_at_us))
                - (micros(arrival.sent_at_us) - micros(last.sent_at_us));
            self.jitter_us += (transit_change.abs() - self.jitter_us) * JITTER_GAIN;
        }
        self.last = Some(arrival);
    }

    /// Distinct chunks that arrived so far.
    pub fn received(&self) -> u32 {
        self.received
    }

    /// The account once the sender says it sent `sent` chunks.
    pub fn report(&self, sent: u32) -> StreamReport {
        StreamReport {
            sent,
            received: self.received,
            lost: sent.saturating_sub(self.received),
            duplicates: self.duplicates,
            reordered: self.reordered,
            bytes: self.bytes,
            // `as` saturates: a jitter beyond u32::MAX µs (over an hour) reports as u32::MAX.
            jitter_us: self.jitter_us.round() as u32,
        }
    }
}

/// A time in µs as `f64` for the jitter arithmetic (exact below 2^53 µs, some 285 years).
fn micros(time_us: u64) -> f64 {
    time_us as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const STREAM: u32 = 5;

    fn header(seq: u32, sent_at_us: u64) -> ChunkHeader {
        ChunkHeader {
            stream_id: STREAM,
            seq,
            sent_at_us,
        }
    }

    /// Feeds chunks `(seq, sent at, arrived at)` of 100 payload bytes each.
    fn tally_of(arrivals: &[(u32, u64, u64)]) -> StreamTally {
        let mut tally = StreamTally::new(STREAM);
        for &(seq, sent_at_us, arrived_at_us) in arrivals {
            tally.on_chunk(&header(seq, sent_at_us), 100, arrived_at_us);
        }
        tally
    }

    #[test]
    fn header_round_trips_with_its_payload() {
        let header = ChunkHeader {
            stream_id: 0x0102_0304,
            seq: 0x0506_0708,
            sent_at_us: 0x090A_0B0C_0D0E_0F10,
        };
        let mut datagram = Vec::new();
        header.encode(&mut datagram);
        assert_eq!(datagram.len(), CHUNK_HEADER_LEN);
        assert_eq!(datagram, (1..=16).collect::<Vec<u8>>());
        datagram.extend_from_slice(b"payload");
        assert_eq!(
            ChunkHeader::decode(&datagram),
            Ok((header, &b"payload"[..]))
        );
        let empty = &datagram[..CHUNK_HEADER_LEN];
        assert_eq!(ChunkHeader::decode(empty), Ok((header, &b""[..])));
    }

    #[test]
    fn encode_appends() {
        let mut out = b"abc".to_vec();
        header(1, 2).encode(&mut out);
        assert_eq!(&out[..3], b"abc");
        assert_eq!(out.len(), 3 + CHUNK_HEADER_LEN);
    }

    #[test]
    fn every_truncation_is_an_error() {
        let mut datagram = Vec::new();
        header(1, 2).encode(&mut datagram);
        for len in 0..CHUNK_HEADER_LEN {
            assert_eq!(
                ChunkHeader::decode(&datagram[..len]),
                Err(ChunkError::Truncated(len))
            );
        }
    }

    #[test]
    fn in_order_at_constant_spacing_has_no_jitter_and_no_loss() {
        let arrivals: Vec<_> = (0..50)
            .map(|seq| {
                (
                    seq,
                    u64::from(seq) * 20_000,
                    3_000 + u64::from(seq) * 20_000,
                )
            })
            .collect();
        let report = tally_of(&arrivals).report(50);
        assert_eq!(
            report,
            StreamReport {
                sent: 50,
                received: 50,
                lost: 0,
                duplicates: 0,
                reordered: 0,
                bytes: 5_000,
                jitter_us: 0,
            }
        );
        assert_eq!(report.loss_percent(), 0.0);
    }

    #[test]
    fn every_tenth_chunk_lost() {
        let arrivals: Vec<_> = (0..100)
            .filter(|seq| seq % 10 != 3)
            .map(|seq| (seq, u64::from(seq) * 1_000, u64::from(seq) * 1_000))
            .collect();
        let tally = tally_of(&arrivals);
        assert_eq!(tally.received(), 90);
        let report = tally.report(100);
        assert_eq!(
            (report.received, report.lost, report.bytes),
            (90, 10, 9_000)
        );
        assert_eq!(report.loss_percent(), 10.0);
        assert_eq!(report.reordered, 0);
        assert_eq!(report.jitter_us, 0);
    }

    #[test]
    fn duplicates_and_reordering_are_counted() {
        // 3 before 2, then 2, and 2 and 0 again; 6 never arrives.
        let order = [0, 1, 3, 2, 2, 4, 0, 5];
        let arrivals: Vec<_> = order
            .iter()
            .enumerate()
            .map(|(i, &seq)| (seq, u64::from(seq) * 1_000, i as u64 * 1_000))
            .collect();
        let report = tally_of(&arrivals).report(7);
        assert_eq!(report.received, 6);
        assert_eq!(report.duplicates, 2);
        assert_eq!(report.reordered, 1);
        assert_eq!(report.lost, 1);
        assert_eq!(report.bytes, 600);
    }

    #[test]
    fn jitter_follows_rfc_3550_by_hand() {
        // Transit times 1000, 1000, 2000, 1000, 1000 µs, sent every 20 ms:
        // D = 0, 1000, -1000, 0 gives J = 0, 62.5, 121.09375, 113.525390625.
        let mut tally = tally_of(&[
            (0, 0, 1_000),
            (1, 20_000, 21_000),
            (2, 40_000, 42_000),
            (3, 60_000, 61_000),
        ]);
        assert_eq!(tally.report(4).jitter_us, 121);
        tally.on_chunk(&header(4, 80_000), 100, 81_000);
        assert_eq!(tally.report(5).jitter_us, 114);
    }

    #[test]
    fn jitter_uses_arrival_order_and_skips_duplicates() {
        // Chunk 1 arrives after chunk 2: D(0→2) = 2000 - 2000 = 0, D(2→1) = 500 - (-1000)
        // = 1500, so J = 1500 / 16 = 93.75. The duplicate of 0, very late, changes nothing.
        let tally = tally_of(&[
            (0, 0, 10_000),
            (2, 2_000, 12_000),
            (1, 1_000, 12_500),
            (0, 0, 900_000),
        ]);
        let report = tally.report(3);
        assert_eq!(report.jitter_us, 94);
        assert_eq!((report.reordered, report.duplicates), (1, 1));
    }

    #[test]
    fn chunks_of_another_stream_are_ignored() {
        let mut tally = StreamTally::new(STREAM);
        let other = ChunkHeader {
            stream_id: STREAM + 1,
            seq: 0,
            sent_at_us: 0,
        };
        tally.on_chunk(&other, 100, 0);
        assert_eq!(tally.received(), 0);
        assert_eq!(tally.report(1).lost, 1);
    }

    #[test]
    fn loss_is_never_negative() {
        let tally = tally_of(&[(0, 0, 0), (1, 0, 0), (2, 0, 0)]);
        let report = tally.report(2);
        assert_eq!((report.received, report.lost), (3, 0));
        assert_eq!(StreamReport::default().loss_percent(), 0.0);
    }

    #[test]
    fn duplicates_are_tracked_up_to_the_cap_only() {
        let last_tracked = MAX_TRACKED_CHUNKS - 1;
        let untracked = MAX_TRACKED_CHUNKS;
        let tally = tally_of(&[
            (last_tracked, 0, 0),
            (last_tracked, 0, 0),
            (untracked, 0, 0),
            (untracked, 0, 0),
        ]);
        let report = tally.report(0);
        assert_eq!(
            report.duplicates, 1,
            "the last tracked number is deduplicated"
        );
        assert_eq!(report.received, 3, "past the cap every arrival counts");
    }

    proptest! {
        #[test]
        fn any_header_round_trips(
            stream_id in any::<u32>(),
            seq in any::<u32>(),
            sent_at_us in any::<u64>(),
            payload in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let header = ChunkHeader { stream_id, seq, sent_at_us };
            let mut datagram = Vec::new();
            header.encode(&mut datagram);
            datagram.extend_from_slice(&payload);
            prop_assert_eq!(ChunkHeader::decode(&datagram), Ok((header, &payload[..])));
        }

        #[test]
        fn counts_add_up_for_any_arrivals(
            arrivals in proptest::collection::vec((0u32..200, any::<u32>(), any::<u32>()), 0..300),
        ) {
            let mut tally = StreamTally::new(STREAM);
            for &(seq, sent, arrived) in &arrivals {
                tally.on_chunk(&header(seq, u64::from(sent)), 10, u64::from(arrived));
            }
            let distinct = arrivals
                .iter()
                .map(|arrival| arrival.0)
                .collect::<std::collections::HashSet<_>>()
                .len() as u32;
            let report = tally.report(200);
            prop_assert_eq!(report.received, distinct);
            prop_assert_eq!(report.duplicates as usize, arrivals.len() - distinct as usize);
            prop_assert_eq!(report.lost, 200 - distinct);
            prop_assert!(report.reordered <= distinct);
        }
    }
}
