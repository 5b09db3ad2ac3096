//! The receiving half of a connection: which packets arrived (for the acks), packets that
//! arrived early (held until the gap before them fills), and messages put back together from
//! their fragments, delivered in order and exactly once. Every buffer is bounded.

use std::collections::{BTreeMap, VecDeque};

use bytes::{Bytes, BytesMut};

use super::header::{Header, PacketType, SACK_BITS};

/// What a datagram's reliable packet did to the receiving half.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    /// New, and at least one packet was taken in order.
    Progress,
    /// New but early: held until the gap before it fills.
    Held,
    /// Seen before (already taken or already held).
    Duplicate,
    /// Too far ahead of the gap, or no room for more delivered messages: dropped unacknowledged,
    /// the sender will send it again.
    NoRoom,
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

/// A message being put back together.
#[derive(Debug)]
struct Partial {
    message_id: u32,
    next_fragment: u16,
    fragment_count: u16,
    data: BytesMut,
}

/// The receiving half.
#[derive(Debug)]
pub struct Receiver {
    /// Every packet below this has been taken.
    next_expected: u32,
    /// Packets above `next_expected`, by number.
    early: BTreeMap<u32, (Header, Bytes)>,
    partial: Option<Partial>,
    delivered: VecDeque<Bytes>,
    delivered_bytes: usize,
    window: u32,
    max_message: usize,
    max_delivered_bytes: usize,
}

impl Receiver {
    /// A receiver holding at most `window` early packets, messages up to `max_message` bytes and
    /// up to `max_delivered_bytes` of delivered messages the application has not taken yet.
    pub fn new(window: u32, max_message: usize, max_delivered_bytes: usize) -> Receiver {
        Receiver {
            next_expected: 0,
            early: BTreeMap::new(),
            partial: None,
            delivered: VecDeque::new(),
            delivered_bytes: 0,
            window,
            max_message,
            max_delivered_bytes,
        }
    }

    /// The cumulative ack and the selective-ack bitmap to send.
    pub fn ack_fields(&self) -> (u32, u64) {
        let mut sack = 0u64;
        for &number in self.early.keys() {
            let offset = number.wrapping_sub(self.next_expected).wrapping_sub(1);
            if offset < SACK_BITS {
                sack |= 1 << offset;
            } else {
                break;
            }
        }
        (self.next_expected, sack)
    }

    /// Takes a reliable packet; any in-order control packets it released go to `controls`.
    pub fn on_packet(
        &mut self,
        header: Header,
        payload: Bytes,
        controls: &mut Vec<Control>,
    ) -> Result<Arrival, Violation> {
        let offset = header.packet_number.wrapping_sub(self.next_expected);
        if offset >= u32::MAX / 2 || self.early.contains_key(&header.packet_number) {
            return Ok(Arrival::Duplicate);
        }
        if offset >= self.window || self.delivered_bytes >= self.max_delivered_bytes {
            return Ok(Arrival::NoRoom);
        }
        if offset > 0 {
            self.early.insert(header.packet_number, (header, payload));
            return Ok(Arrival::Held);
        }
        self.take(header, payload, controls)?;
        while let Some((header, payload)) = self.early.remove(&self.next_expected) {
            self.take(header, payload, controls)?;
        }
        Ok(Arrival::Progress)
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

    /// Bytes held: early packets, the partial message, delivered messages not yet taken.
    pub fn buffered_bytes(&self) -> usize {
        let early: usize = self.early.values().map(|(_, payload)| payload.len()).sum();
        early + self.partial.as_ref().map_or(0, |p| p.data.len()) + self.delivered_bytes
    }

    /// Forgets every buffered packet and partial message.
    pub fn clear(&mut self) {
        self.early.clear();
        self.partial = None;
    }

    fn take(
        &mut self,
        header: Header,
        payload: Bytes,
        controls: &mut Vec<Control>,
    ) -> Result<(), Violation> {
        self.next_expected = self.next_expected.wrapping_add(1);
        match header.packet_type {
            PacketType::Data => self.take_fragment(&header, &payload),
            PacketType::Close => {
                controls.push(Control::Close);
                Ok(())
            }
            PacketType::Hello | PacketType::Ping | PacketType::Ack => Ok(()),
        }
    }

    fn take_fragment(&mut self, header: &Header, payload: &[u8]) -> Result<(), Violation> {
        let partial = match self.partial.take() {
            None if header.fragment_index != 0 => {
                return Err(Violation("a message that does not start with fragment 0"));
            }
            None => Partial {
                message_id: header.message_id,
                next_fragment: 0,
                fragment_count: header.fragment_count,
                data: BytesMut::new(),
            },
            Some(partial)
                if partial.message_id != header.message_id
                    || partial.fragment_count != header.fragment_count
                    || partial.next_fragment != header.fragment_index =>
            {
                return Err(Violation("a fragment out of place in its message"));
            }
            Some(partial) => partial,
        };
        let mut partial = partial;
        if partial.data.len() + payload.len() > self.max_message {
            return Err(Violation("a message over the maximum size"));
        }
        partial.data.extend_from_slice(payload);
        partial.next_fragment += 1;
        if partial.next_fragment == partial.fragment_count {
            let message = partial.data.freeze();
            self.delivered_bytes += message.len();
            self.delivered.push_back(message);
        } else {
            self.partial = Some(partial);
        }
        Ok(())
    }
}
