//! The receiving half of a connection: which packets arrived (for the acks), packets that
//! arrived early (held until the gap before them fills), and messages put back together from
//! their fragments, delivered in order and exactly once.
//!
//! Every buffer is bounded. Only packets at most [`SACK_BITS`] past the gap are held (a sender
//! sends none further, see [`super::connection`]; those that are further are dropped), and the
//! bytes held —
//! early packets, the message being put back together and delivered messages the application has
//! not taken — never exceed the limit ([`super::Config::max_receive_buffer`], raised to the
//! maximum message size if lower). A packet that does not fit is dropped unacknowledged and the
//! sender sends it again. An early packet is only taken if a whole message would still fit after
//! it, so once the application has taken every delivered message the next packet in order always
//! fits: a full buffer waits for the application and never deadlocks.
//!
//! A message of several fragments is copied into one buffer; the buffers come from a
//! [`BufferPool`] that keeps at most the limit's worth of them, and go back to it when the
//! application drops the message, so that a transfer does not fault fresh memory in for every
//! message. A message of one fragment is delivered as it arrived, without a copy.
//!
//! Packet numbers are 32 bits on the wire and 64 bits here ([`expand`]), so nothing breaks when
//! the wire numbers wrap.

use std::collections::{BTreeMap, VecDeque};

use bytes::Bytes;

use super::header::{Header, PacketType, SACK_BITS, Sack};
use super::pool::BufferPool;

/// What a datagram's reliable packet did to the receiving half.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    /// New, and at least one packet was taken in order.
    Progress,
    /// New but early: held until the gap before it fills.
    Held,
    /// Seen before (already taken or already held).
    Duplicate,
    /// Too far ahead of the gap, or no room in the buffer: dropped unacknowledged, the sender
    /// will send it again.
    NoRoom,
}

/// A packet's payload as it arrived: lent by the caller, and copied only if it has to be kept
/// (held early, or delivered as a whole message), or already shared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Payload<'a> {
    /// Valid for the call; copied if kept.
    Lent(&'a [u8]),
    /// Kept as it is.
    Shared(Bytes),
}

impl Payload<'_> {
    /// Its length in bytes.
    pub fn len(&self) -> usize {
        self.as_slice().len()
    }

    /// Whether it is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Its bytes.
    pub fn as_slice(&self) -> &[u8] {
        match self {
            Payload::Lent(bytes) => bytes,
            Payload::Shared(bytes) => bytes,
        }
    }

    /// The payload to keep: shared, copied if it was lent.
    pub fn into_bytes(self) -> Bytes {
        match self {
            Payload::Lent(bytes) => Bytes::copy_from_slice(bytes),
            Payload::Shared(bytes) => bytes,
        }
    }
}

impl From<Bytes> for Payload<'_> {
    fn from(bytes: Bytes) -> Self {
        Payload::Shared(bytes)
    }
}

impl<'a> From<&'a [u8]> for Payload<'a> {
    fn from(bytes: &'a [u8]) -> Self {
        Payload::Lent(bytes)
    }
}

/// A packet taken in order that means something besides data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    /// The peer's close, after everything it sent before.
    Close,
}

/// The peer broke the fragment rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation(pub &'static str);

/// The 64-bit packet number nearest to `reference` whose low 32 bits are `wire`.
pub fn expand(reference: u64, wire: u32) -> u64 {
    const SPAN: u64 = 1 << 32;
    let candidate = (reference & !(SPAN - 1)) | u64::from(wire);
    if candidate + SPAN / 2 <= reference {
        candidate + SPAN
    } else if candidate > reference + SPAN / 2 && candidate >= SPAN {
        candidate - SPAN
    } else {
        candidate
    }
}

/// A message being put back together.
#[derive(Debug)]
struct Partial {
    message_id: u32,
    next_fragment: u16,
    fragment_count: u16,
    data: Vec<u8>,
}

/// The receiving half.
#[derive(Debug)]
pub struct Receiver {
    /// Every packet below this has been taken.
    next_expected: u64,
    /// The highest packet number received (taken or held), once there is one.
    largest: Option<u64>,
    /// Packets above `next_expected`, by number.
    early: BTreeMap<u64, (Header, Bytes)>,
    /// Bit `i`: packet `next_expected + 1 + i` is in `early` (the selective acks to send).
    early_bits: Sack,
    early_bytes: usize,
    partial: Option<Partial>,
    delivered: VecDeque<Bytes>,
    delivered_bytes: usize,
    max_message: usize,
    limit: usize,
    /// Where the buffers of reassembled messages come from and go back to.
    pool: BufferPool,
}

impl Receiver {
    /// A receiver of messages up to `max_message` bytes holding at most `limit` bytes in all
    /// (raised to `max_message` if lower).
    pub fn new(max_message: usize, limit: usize) -> Receiver {
        Receiver {
            next_expected: 0,
            largest: None,
            early: BTreeMap::new(),
            early_bits: Sack::EMPTY,
            early_bytes: 0,
            partial: None,
            delivered: VecDeque::new(),
            delivered_bytes: 0,
            max_message,
            limit: limit.max(max_message),
            pool: BufferPool::new(limit.max(max_message)),
        }
    }

    /// The cumulative ack and the selective-ack bitmap to send.
    pub fn ack_fields(&self) -> (u32, Sack) {
        (self.next_expected as u32, self.early_bits)
    }

    /// The number of the highest packet received so far (the highest the acks report).
    pub fn largest_received(&self) -> Option<u64> {
        self.largest
    }

    /// Takes a reliable packet; any in-order control packets it released go to `controls`.
    pub fn on_packet(
        &mut self,
        header: Header,
        payload: Payload<'_>,
        controls: &mut Vec<Control>,
    ) -> Result<Arrival, Violation> {
        let number = expand(self.next_expected, header.packet_number);
        if number < self.next_expected || self.early.contains_key(&number) {
            return Ok(Arrival::Duplicate);
        }
        if !self.has_room(number - self.next_expected, payload.len()) {
            return Ok(Arrival::NoRoom);
        }
        self.largest = self.largest.max(Some(number));
        if number > self.next_expected {
            // At most SACK_BITS past the gap: see `has_room`.
            self.early_bits
                .insert((number - self.next_expected - 1) as u32);
            self.early_bytes += payload.len();
            self.early.insert(number, (header, payload.into_bytes()));
            return Ok(Arrival::Held);
        }
        self.take(header, payload, controls)?;
        while let Some(entry) = self.early.first_entry() {
            if *entry.key() != self.next_expected {
                break;
            }
            let (header, payload) = entry.remove();
            self.early_bytes -= payload.len();
            self.take(header, Payload::Shared(payload), controls)?;
        }
        Ok(Arrival::Progress)
    }

    /// Whether a packet `offset` places past the gap with `len` bytes may be taken. The packet
    /// in order always may once every delivered message has been taken: it fits (see the module
    /// docs) unless it breaks the size rule, which taking it reports.
    fn has_room(&self, offset: u64, len: usize) -> bool {
        if offset > u64::from(SACK_BITS) {
            return false;
        }
        if offset == 0 && self.delivered.is_empty() {
            return true;
        }
        let reserve = if offset == 0 { 0 } else { self.max_message };
        self.buffered_bytes() + len + reserve <= self.limit
    }

    /// The next delivered message.
    pub fn recv(&mut self) -> Option<Bytes> {
        let message = self.delivered.pop_front()?;
        self.delivered_bytes -= message.len();
        Some(message)
    }

    /// Whether a message is only partly here, or packets wait for a gap to fill.
    pub fn is_waiting(&self) -> bool {
        self.partial.is_some() || !self.early.is_empty()
    }

    /// Whether packets wait for a gap to fill.
    pub fn has_gap(&self) -> bool {
        !self.early.is_empty()
    }

    /// Bytes held: early packets, the partial message, delivered messages not yet taken.
    pub fn buffered_bytes(&self) -> usize {
        self.early_bytes + self.partial.as_ref().map_or(0, |p| p.data.len()) + self.delivered_bytes
    }

    /// Forgets every early packet and partial message; delivered messages stay for `recv`.
    pub fn clear(&mut self) {
        self.early.clear();
        self.early_bits = Sack::EMPTY;
        self.early_bytes = 0;
        if let Some(partial) = self.partial.take() {
            self.pool.put(partial.data);
        }
    }

    fn take(
        &mut self,
        header: Header,
        payload: Payload<'_>,
        controls: &mut Vec<Control>,
    ) -> Result<(), Violation> {
        self.next_expected += 1;
        self.early_bits.shift_down_one();
        match header.packet_type {
            PacketType::Data => self.take_fragment(&header, payload),
            PacketType::Close => {
                controls.push(Control::Close);
                Ok(())
            }
            PacketType::Hello | PacketType::Ping | PacketType::Ack => Ok(()),
        }
    }

    fn take_fragment(&mut self, header: &Header, payload: Payload<'_>) -> Result<(), Violation> {
        let mut partial = match self.partial.take() {
            None => self.start_message(header, payload.len())?,
            Some(partial)
                if partial.message_id != header.message_id
                    || partial.fragment_count != header.fragment_count
                    || partial.next_fragment != header.fragment_index =>
            {
                return Err(Violation("a fragment out of place in its message"));
            }
            Some(partial) => partial,
        };
        if partial.data.len() + payload.len() > self.max_message {
            return Err(Violation("a message over the maximum size"));
        }
        partial.next_fragment += 1;
        if partial.next_fragment < partial.fragment_count {
            partial.data.extend_from_slice(payload.as_slice());
            self.partial = Some(partial);
        } else if partial.data.is_empty() {
            self.pool.put(partial.data);
            self.deliver(payload.into_bytes());
        } else {
            partial.data.extend_from_slice(payload.as_slice());
            let message = self.pool.share(partial.data);
            self.deliver(message);
        }
        Ok(())
    }

    /// The partial message a first fragment of `len` bytes starts.
    fn start_message(&self, header: &Header, len: usize) -> Result<Partial, Violation> {
        if header.fragment_index != 0 {
            return Err(Violation("a message that does not start with fragment 0"));
        }
        // A message of one fragment is delivered as it came, without a buffer.
        let data = match header.fragment_count {
            1 => Vec::new(),
            count => {
                let mut data = self.pool.take().unwrap_or_default();
                data.clear();
                data.reserve((usize::from(count) * len).min(self.max_message));
                data
            }
        };
        Ok(Partial {
            message_id: header.message_id,
            next_fragment: 0,
            fragment_count: header.fragment_count,
            data,
        })
    }

    fn deliver(&mut self, message: Bytes) {
        self.delivered_bytes += message.len();
        self.delivered.push_back(message);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(number: u32, message_id: u32, index: u16, count: u16) -> Header {
        Header {
            packet_type: PacketType::Data,
            connection_id: 1,
            packet_number: number,
            ack: 0,
            ack_delay_micros: 0,
            sack: Sack::EMPTY,
            message_id,
            fragment_index: index,
            fragment_count: count,
        }
    }

    fn offer(receiver: &mut Receiver, header: Header, len: usize) -> Result<Arrival, Violation> {
        receiver.on_packet(header, Payload::Lent(&vec![7; len]), &mut Vec::new())
    }

    #[test]
    fn expand_finds_the_nearest_number_across_the_wrap() {
        assert_eq!(expand(0, 5), 5);
        assert_eq!(expand(10, 3), 3);
        assert_eq!(expand(u64::from(u32::MAX) - 2, 1), (1 << 32) + 1);
        assert_eq!(expand((1 << 32) + 2, u32::MAX), u64::from(u32::MAX));
        assert_eq!(expand(5, u32::MAX), u64::from(u32::MAX), "nothing below 0");
    }

    #[test]
    fn acks_report_early_packets_even_across_the_wrap() {
        let mut receiver = Receiver::new(1000, 100_000);
        receiver.next_expected = u64::from(u32::MAX) - 1;
        let wire = |n: u64| n as u32;
        for n in [receiver.next_expected + 1, receiver.next_expected + 3] {
            assert_eq!(
                offer(&mut receiver, data(wire(n), 1, 0, 1), 1),
                Ok(Arrival::Held)
            );
        }
        assert_eq!(receiver.ack_fields(), (u32::MAX - 1, Sack::from(0b101)));
        let first = data(u32::MAX - 1, 1, 0, 1);
        assert_eq!(offer(&mut receiver, first, 1), Ok(Arrival::Progress));
        assert_eq!(receiver.ack_fields(), (0, Sack::from(0b1)));
    }

    #[test]
    fn the_buffer_limit_holds_and_the_packet_in_order_still_fits() {
        // Room for 1000 bytes, messages up to 300: early packets may use at most 700.
        let mut receiver = Receiver::new(300, 1000);
        for n in 1..=7 {
            assert_eq!(
                offer(&mut receiver, data(n, n, 0, 1), 100),
                Ok(Arrival::Held)
            );
        }
        assert_eq!(
            offer(&mut receiver, data(8, 8, 0, 1), 1),
            Ok(Arrival::NoRoom)
        );
        assert_eq!(receiver.buffered_bytes(), 700);
        assert_eq!(
            offer(&mut receiver, data(0, 9, 0, 1), 300),
            Ok(Arrival::Progress)
        );
        assert_eq!(receiver.buffered_bytes(), 1000);
        assert_eq!(receiver.recv().map(|m| m.len()), Some(300));
        assert_eq!(receiver.buffered_bytes(), 700);
    }

    #[test]
    fn delivered_messages_not_taken_hold_back_new_packets() {
        let mut receiver = Receiver::new(400, 1000);
        for n in 0..2 {
            assert_eq!(
                offer(&mut receiver, data(n, n + 1, 0, 1), 400),
                Ok(Arrival::Progress)
            );
        }
        assert_eq!(
            offer(&mut receiver, data(2, 3, 0, 1), 300),
            Ok(Arrival::NoRoom)
        );
        assert_eq!(receiver.buffered_bytes(), 800);
        receiver.recv();
        assert_eq!(
            offer(&mut receiver, data(2, 3, 0, 1), 300),
            Ok(Arrival::Progress)
        );
        assert_eq!(receiver.buffered_bytes(), 700);
    }

    #[test]
    fn the_buffer_of_a_message_taken_and_dropped_is_used_again() {
        let mut receiver = Receiver::new(10_000, 100_000);
        offer(&mut receiver, data(0, 1, 0, 2), 1000).unwrap();
        offer(&mut receiver, data(1, 1, 1, 2), 500).unwrap();
        let first = receiver.recv().expect("put together");
        let at = first.as_ptr();
        assert_eq!(receiver.pool.pooled_bytes(), 0, "the message holds it");
        drop(first);
        assert!(receiver.pool.pooled_bytes() >= 1500);
        offer(&mut receiver, data(2, 2, 0, 2), 1000).unwrap();
        offer(&mut receiver, data(3, 2, 1, 2), 1000).unwrap();
        assert_eq!(receiver.recv().map(|m| m.as_ptr()), Some(at));
    }

    #[test]
    fn fragments_out_of_place_or_over_size_are_violations() {
        let mut receiver = Receiver::new(250, 10_000);
        assert!(offer(&mut receiver, data(0, 1, 1, 2), 10).is_err());
        let mut receiver = Receiver::new(250, 10_000);
        assert_eq!(
            offer(&mut receiver, data(0, 1, 0, 3), 100),
            Ok(Arrival::Progress)
        );
        assert!(
            offer(&mut receiver, data(1, 2, 1, 3), 100).is_err(),
            "another message"
        );
        let mut receiver = Receiver::new(250, 10_000);
        offer(&mut receiver, data(0, 1, 0, 3), 100).unwrap();
        offer(&mut receiver, data(1, 1, 1, 3), 100).unwrap();
        assert!(
            offer(&mut receiver, data(2, 1, 2, 3), 100).is_err(),
            "300 > 250"
        );
    }
}
