//! Counting a UDP transfer's datagrams as they arrive: a bitmap of the sequence numbers seen,
//! and the counts of [`DatagramCounts`].

use protocol::chat_transfer::{DatagramCounts, datagram_count, datagram_span};

/// What one arriving datagram was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    /// Its sequence number had not arrived before: its payload belongs at `offset` in the file.
    Fresh {
        /// Where the payload goes in the file.
        offset: u64,
    },
    /// Its sequence number had already arrived.
    Duplicate,
    /// Its sequence number is out of range, or its payload is not the length that sequence
    /// number carries.
    Invalid,
}

/// The receiver's tally of one UDP transfer.
///
/// Definitions, per arrival of a datagram carrying this transfer's id:
/// - *invalid*: no datagram of the file has that sequence number and length;
/// - *duplicated*: the sequence number had already arrived;
/// - otherwise it is *fresh*: *received* counts fresh arrivals (so, distinct sequence numbers),
///   and *reordered* counts the fresh arrivals whose sequence number is lower than the highest
///   one seen before them.
///
/// *lost* is expected - received. Memory: one bit per expected datagram.
#[derive(Debug, Clone)]
pub struct Tally {
    size: u64,
    payload: usize,
    seen: Vec<u64>,
    highest: Option<u32>,
    bytes: u64,
    counts: DatagramCounts,
}

impl Tally {
    /// A tally for a file of `size` bytes in datagrams of `payload` bytes (a payload of 0 or
    /// over the maximum makes every datagram invalid).
    pub fn new(size: u64, payload: usize) -> Tally {
        let expected = datagram_count(size, payload).unwrap_or(0);
        Tally {
            size,
            payload,
            seen: vec![0; (expected as usize).div_ceil(64)],
            highest: None,
            bytes: 0,
            counts: DatagramCounts {
                expected,
                ..DatagramCounts::default()
            },
        }
    }

    /// Records the arrival of datagram `seq` carrying `len` bytes of payload.
    pub fn record(&mut self, seq: u32, len: usize) -> Arrival {
        let Some((offset, expected_len)) = datagram_span(seq, self.size, self.payload) else {
            self.counts.invalid += 1;
            return Arrival::Invalid;
        };
        if len != expected_len {
            self.counts.invalid += 1;
            return Arrival::Invalid;
        }
        let (word, bit) = (seq as usize / 64, 1u64 << (seq % 64));
        if self.seen[word] & bit != 0 {
            self.counts.duplicated += 1;
            return Arrival::Duplicate;
        }
        self.seen[word] |= bit;
        self.counts.received += 1;
        self.bytes += len as u64;
        if self.highest.is_some_and(|highest| seq < highest) {
            self.counts.reordered += 1;
        }
        self.highest = Some(self.highest.map_or(seq, |highest| highest.max(seq)));
        Arrival::Fresh { offset }
    }

    /// Whether every expected datagram has arrived.
    pub fn is_complete(&self) -> bool {
        self.counts.received == self.counts.expected
    }

    /// Bytes of the file that arrived.
    pub fn bytes_received(&self) -> u64 {
        self.bytes
    }

    /// The counts so far, with `sent` as the sender's own count.
    pub fn counts(&self, sent: u32) -> DatagramCounts {
        DatagramCounts {
            sent,
            ..self.counts
        }
    }

    /// The sequence numbers that have not arrived, as inclusive ranges.
    pub fn missing(&self) -> Vec<(u32, u32)> {
        let mut ranges: Vec<(u32, u32)> = Vec::new();
        for seq in 0..self.counts.expected {
            if self.seen[seq as usize / 64] & (1 << (seq % 64)) != 0 {
                continue;
            }
            match ranges.last_mut() {
                Some((_, end)) if *end + 1 == seq => *end = seq,
                _ => ranges.push((seq, seq)),
            }
        }
        ranges
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A file of 10 datagrams of 100 bytes, the last one 50.
    fn tally() -> Tally {
        Tally::new(950, 100)
    }

    #[test]
    fn in_order_arrivals_are_all_fresh() {
        let mut tally = tally();
        for seq in 0..9 {
            assert_eq!(
                tally.record(seq, 100),
                Arrival::Fresh {
                    offset: u64::from(seq) * 100
                }
            );
        }
        assert!(!tally.is_complete());
        assert_eq!(tally.record(9, 50), Arrival::Fresh { offset: 900 });
        assert!(tally.is_complete());
        assert_eq!(tally.bytes_received(), 950);
        let counts = tally.counts(10);
        assert_eq!(
            (counts.expected, counts.received, counts.lost()),
            (10, 10, 0)
        );
        assert_eq!(
            (counts.reordered, counts.duplicated, counts.invalid),
            (0, 0, 0)
        );
        assert!(tally.missing().is_empty());
    }

    #[test]
    fn late_duplicate_and_invalid_arrivals_are_told_apart() {
        let mut tally = tally();
        tally.record(0, 100);
        tally.record(3, 100);
        assert_eq!(tally.record(1, 100), Arrival::Fresh { offset: 100 }); // reordered
        assert_eq!(tally.record(3, 100), Arrival::Duplicate); // not also reordered
        assert_eq!(tally.record(0, 100), Arrival::Duplicate);
        assert_eq!(tally.record(10, 100), Arrival::Invalid); // out of range
        assert_eq!(tally.record(9, 100), Arrival::Invalid); // the last is 50 bytes
        assert_eq!(tally.record(2, 99), Arrival::Invalid);
        tally.record(5, 100);
        let counts = tally.counts(10);
        assert_eq!((counts.received, counts.lost()), (4, 6));
        assert_eq!(
            (counts.reordered, counts.duplicated, counts.invalid),
            (1, 2, 3)
        );
        assert_eq!(tally.missing(), [(2, 2), (4, 4), (6, 9)]);
    }

    #[test]
    fn an_empty_file_takes_no_datagrams() {
        let mut tally = Tally::new(0, 1200);
        assert!(tally.is_complete());
        assert_eq!(tally.record(0, 0), Arrival::Invalid);
    }

    proptest! {
        #[test]
        fn counts_add_up(arrivals in prop::collection::vec(0u32..12, 0..60)) {
            let mut tally = tally();
            let mut distinct = std::collections::BTreeSet::new();
            for &seq in &arrivals {
                let len = if seq == 9 { 50 } else { 100 };
                tally.record(seq, len);
                if seq < 10 {
                    distinct.insert(seq);
                }
            }
            let counts = tally.counts(0);
            let invalid = arrivals.iter().filter(|&&seq| seq >= 10).count() as u64;
            prop_assert_eq!(counts.received as usize, distinct.len());
            prop_assert_eq!(counts.invalid, invalid);
            prop_assert_eq!(
                u64::from(counts.received) + counts.duplicated + counts.invalid,
                arrivals.len() as u64
            );
            prop_assert!(counts.reordered <= u64::from(counts.received));
        }
    }
}
