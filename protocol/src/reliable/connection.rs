//! One end of a reliable-datagram connection, as a state machine with no sockets and no clock
//! (the shape of quinn-proto): the caller feeds it datagrams ([`Connection::handle_datagram`])
//! and timer expiries ([`Connection::handle_timeout`]), and drains datagrams to send
//! ([`Connection::poll_transmit`]), the next deadline ([`Connection::poll_timeout`]), events
//! ([`Connection::poll_event`]) and delivered messages ([`Connection::recv`]).
//!
//! Sending: a message is cut into fragments that fit the datagram size, each a data packet with
//! the next packet number. At most `max_in_flight` packets are unacknowledged at once. A packet
//! is sent again when the retransmission timer (RFC 6298, see [`super::rtt`]) expires, or when
//! acks show that three packets sent after it arrived while it did not (a gap in the selective
//! acks); a duplicate ack alone never triggers a retransmission. A retransmitted packet keeps its
//! number and gives no RTT sample (Karn's rule). A packet sent `max_retransmissions` times
//! without an ack means the peer is dead.
//!
//! Receiving: see [`super::receive`]. Acks are sent for every second packet, at once for a
//! packet out of order or a duplicate, and otherwise after `ack_delay`.

use std::collections::{BTreeMap, VecDeque};
use std::time::Instant;

use bytes::Bytes;
use thiserror::Error;

use super::header::{HEADER_LEN, Header, PacketType};
use super::receive::{Arrival, Control, Receiver};
use super::rtt::RttEstimator;
use super::{Config, Event, Stats};

/// Packets acked after a packet, sent later than it, before it is taken for lost.
const REORDER_THRESHOLD: u64 = 3;

/// Why a message could not be queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum SendError {
    /// Larger than the configured maximum message size.
    #[error("a message of {size} bytes is over the limit of {limit}")]
    TooLarge {
        /// The message's size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The send queue is full; try again once the peer has acknowledged more.
    #[error("the send queue is full")]
    QueueFull,
    /// The connection is closing or closed.
    #[error("the connection is closed")]
    Closed,
}

/// Where the connection stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// A client whose hello is not acknowledged yet.
    Connecting,
    /// Both sides know of the connection.
    Established,
    /// We queued a close; waiting for everything up to it to be acknowledged.
    Closing,
    /// The peer closed; acks are still sent until the deadline, then the connection is closed.
    Draining(Instant),
    /// Nothing more happens.
    Closed,
}

/// A reliable packet queued or in flight.
#[derive(Debug, Clone)]
struct Outgoing {
    header: Header,
    payload: Bytes,
}

#[derive(Debug)]
struct InFlight {
    packet: Outgoing,
    first_sent: Instant,
    last_sent: Instant,
    /// The transmission counter at the last send, for gap detection.
    transmission: u64,
    sends: u32,
    queued_for_retransmission: bool,
}

/// One end of a connection.
#[derive(Debug)]
pub struct Connection {
    config: Config,
    connection_id: u32,
    state: State,
    next_packet_number: u32,
    next_message_id: u32,
    queue: VecDeque<Outgoing>,
    queued_bytes: usize,
    in_flight: BTreeMap<u32, InFlight>,
    retransmit: VecDeque<u32>,
    transmissions: u64,
    largest_acked_transmission: u64,
    rtt: RttEstimator,
    receiver: Receiver,
    ack_due: Option<Instant>,
    unacked_received: u32,
    last_received: Instant,
    last_reliable_sent: Instant,
    last_progress: Instant,
    events: VecDeque<Event>,
    stats: Stats,
}

impl Connection {
    /// The client end: queues the hello that opens connection `connection_id`.
    pub fn client(connection_id: u32, config: Config, now: Instant) -> Connection {
        let mut connection = Connection::new(connection_id, config, State::Connecting, now);
        connection.push_reliable(PacketType::Hello, 0, 0, 0, Bytes::new());
        connection
    }

    /// The server end, for a datagram that opened a connection (see [`Connection::is_hello`]);
    /// the datagram itself is handled too. `None` if it is not a hello.
    pub fn server(datagram: &[u8], config: Config, now: Instant) -> Option<Connection> {
        let (header, _) = Header::decode(datagram).ok()?;
        if header.packet_type != PacketType::Hello || header.packet_number != 0 {
            return None;
        }
        let mut connection = Connection::new(header.connection_id, config, State::Established, now);
        connection.events.push_back(Event::Connected);
        connection.handle_datagram(now, datagram);
        Some(connection)
    }

    /// Whether `datagram` opens a connection: a well-formed hello.
    pub fn is_hello(datagram: &[u8]) -> bool {
        matches!(Header::decode(datagram), Ok((h, _)) if h.packet_type == PacketType::Hello && h.packet_number == 0)
    }

    fn new(connection_id: u32, config: Config, state: State, now: Instant) -> Connection {
        let receiver = Receiver::new(
            config.max_in_flight as u32 * 2,
            config.max_message_size,
            config.max_receive_buffer,
        );
        Connection {
            rtt: RttEstimator::new(config.initial_rto, config.min_rto, config.max_rto),
            receiver,
            connection_id,
            state,
            next_packet_number: 0,
            next_message_id: 1,
            queue: VecDeque::new(),
            queued_bytes: 0,
            in_flight: BTreeMap::new(),
            retransmit: VecDeque::new(),
            transmissions: 0,
            largest_acked_transmission: 0,
            ack_due: None,
            unacked_received: 0,
            last_received: now,
            last_reliable_sent: now,
            last_progress: now,
            events: VecDeque::new(),
            stats: Stats::default(),
            config,
        }
    }

    /// The connection id.
    pub fn connection_id(&self) -> u32 {
        self.connection_id
    }

    /// Counters and the current RTT estimate.
    pub fn stats(&self) -> Stats {
        Stats {
            rtt: self.rtt.srtt(),
            rto: self.rtt.rto(),
            ..self.stats.clone()
        }
    }

    /// Whether nothing more will happen on this connection.
    pub fn is_closed(&self) -> bool {
        self.state == State::Closed
    }

    /// Whether every message queued so far has been acknowledged.
    pub fn is_idle(&self) -> bool {
        self.queue.is_empty() && self.in_flight.is_empty()
    }

    /// Bytes queued or in flight, not yet acknowledged.
    pub fn unacknowledged_bytes(&self) -> usize {
        self.queued_bytes
    }

    /// Bytes held on the receiving side.
    pub fn buffered_bytes(&self) -> usize {
        self.receiver.buffered_bytes()
    }

    /// Queues `message` for delivery.
    pub fn send(&mut self, message: Bytes) -> Result<(), SendError> {
        if !matches!(self.state, State::Connecting | State::Established) {
            return Err(SendError::Closed);
        }
        let limit = self.config.max_message_size;
        if message.len() > limit {
            return Err(SendError::TooLarge {
                size: message.len(),
                limit,
            });
        }
        if self.queued_bytes > 0 && self.queued_bytes + message.len() > self.config.max_send_queue {
            return Err(SendError::QueueFull);
        }
        let room = self.config.max_datagram_size - HEADER_LEN;
        let count = message.len().div_ceil(room).max(1);
        let Ok(fragment_count) = u16::try_from(count) else {
            return Err(SendError::TooLarge {
                size: message.len(),
                limit: room * usize::from(u16::MAX),
            });
        };
        let message_id = self.next_message_id;
        self.next_message_id = self.next_message_id.wrapping_add(1).max(1);
        for index in 0..fragment_count {
            let start = usize::from(index) * room;
            let part = message.slice(start..(start + room).min(message.len()));
            self.push_reliable(PacketType::Data, message_id, index, fragment_count, part);
        }
        self.stats.messages_sent += 1;
        Ok(())
    }

    /// The next delivered message, in order.
    pub fn recv(&mut self) -> Option<Bytes> {
        let message = self.receiver.recv()?;
        self.stats.messages_delivered += 1;
        Some(message)
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Queues a close after everything sent so far; [`Event::Closed`] follows once the peer has
    /// acknowledged it all.
    pub fn close(&mut self) {
        if matches!(self.state, State::Connecting | State::Established) {
            self.push_reliable(PacketType::Close, 0, 0, 0, Bytes::new());
            self.state = State::Closing;
        }
    }

    /// Takes a datagram from the peer. Anything that is not a well-formed packet of this
    /// connection is counted and dropped.
    pub fn handle_datagram(&mut self, now: Instant, datagram: &[u8]) {
        self.stats.datagrams_received += 1;
        if self.state == State::Closed {
            self.stats.stale_dropped += 1;
            return;
        }
        let (header, payload) = match Header::decode(datagram) {
            Ok(decoded) => decoded,
            Err(_) => {
                self.stats.garbage_dropped += 1;
                return;
            }
        };
        if header.connection_id != self.connection_id {
            self.stats.foreign_dropped += 1;
            return;
        }
        self.last_received = now;
        self.on_ack(now, header.ack, header.sack);
        if header.packet_type.is_reliable() {
            let payload = Bytes::copy_from_slice(payload);
            self.on_reliable(now, header, payload);
        }
    }

    fn on_reliable(&mut self, now: Instant, header: Header, payload: Bytes) {
        let mut controls = Vec::new();
        match self.receiver.on_packet(header, payload, &mut controls) {
            Ok(Arrival::Progress) => {
                self.last_progress = now;
                self.unacked_received += 1;
                let urgent = self.unacked_received >= 2 || header.packet_type != PacketType::Data;
                self.schedule_ack(now, urgent);
            }
            Ok(Arrival::Held) => self.schedule_ack(now, true),
            Ok(Arrival::Duplicate) => {
                self.stats.duplicates_dropped += 1;
                self.schedule_ack(now, true);
            }
            Ok(Arrival::NoRoom) => self.stats.no_room_dropped += 1,
            Err(violation) => {
                self.fail(Event::ProtocolViolation(violation.0));
                return;
            }
        }
        for control in controls {
            match control {
                Control::Close => self.on_peer_close(now),
            }
        }
    }

    fn on_peer_close(&mut self, now: Instant) {
        if matches!(
            self.state,
            State::Connecting | State::Established | State::Closing
        ) {
            self.events.push_back(Event::ClosedByPeer);
            self.queue.clear();
            self.queued_bytes = 0;
            self.in_flight.clear();
            self.retransmit.clear();
            self.state = State::Draining(now + self.rtt.rto() * 3);
        }
    }

    fn schedule_ack(&mut self, now: Instant, urgent: bool) {
        let due = if urgent {
            now
        } else {
            now + self.config.ack_delay
        };
        self.ack_due = Some(self.ack_due.map_or(due, |d| d.min(due)));
    }

    /// Applies the peer's acknowledgement of our packets.
    fn on_ack(&mut self, now: Instant, ack: u32, sack: u64) {
        let acked: Vec<u32> = self
            .in_flight
            .keys()
            .copied()
            .filter(|&number| is_acked(number, ack, sack))
            .collect();
        let mut sample = None;
        for number in acked {
            let packet = self.in_flight.remove(&number).expect("listed above");
            self.queued_bytes -= packet.packet.payload.len();
            self.largest_acked_transmission =
                self.largest_acked_transmission.max(packet.transmission);
            if packet.sends == 1 {
                sample = Some(now - packet.first_sent);
            }
            if packet.packet.header.packet_type == PacketType::Hello
                && self.state == State::Connecting
            {
                self.state = State::Established;
                self.events.push_back(Event::Connected);
            }
        }
        if let Some(rtt) = sample {
            self.rtt.on_sample(rtt);
        }
        self.detect_gaps();
        if self.state == State::Closing && self.is_idle() {
            self.state = State::Closed;
            self.events.push_back(Event::Closed);
        }
    }

    /// Queues for retransmission every packet that three later-sent packets overtook.
    fn detect_gaps(&mut self) {
        for (&number, packet) in &mut self.in_flight {
            if !packet.queued_for_retransmission
                && packet.transmission + REORDER_THRESHOLD <= self.largest_acked_transmission
            {
                packet.queued_for_retransmission = true;
                self.retransmit.push_back(number);
            }
        }
    }

    /// Handles every deadline that has passed by `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        match self.state {
            State::Closed => return,
            State::Draining(until) if now >= until => {
                self.state = State::Closed;
                return;
            }
            _ => {}
        }
        if now >= self.last_received + self.config.idle_timeout {
            self.fail(Event::IdleTimeout);
            return;
        }
        if self.receiver.is_waiting() && now >= self.last_progress + self.config.reassembly_timeout
        {
            self.receiver.clear();
            self.fail(Event::ProtocolViolation("an incomplete message expired"));
            return;
        }
        self.on_retransmission_timer(now);
        if self.state == State::Established
            && self.is_idle()
            && now >= self.last_reliable_sent + self.config.keep_alive
        {
            self.push_reliable(PacketType::Ping, 0, 0, 0, Bytes::new());
        }
    }

    fn on_retransmission_timer(&mut self, now: Instant) {
        let rto = self.rtt.rto();
        let expired: Vec<u32> = self
            .in_flight
            .iter()
            .filter(|(_, p)| !p.queued_for_retransmission && now >= p.last_sent + rto)
            .map(|(&number, _)| number)
            .collect();
        if expired.is_empty() {
            return;
        }
        self.rtt.on_timeout();
        for number in expired {
            let packet = self.in_flight.get_mut(&number).expect("listed above");
            if packet.sends > self.config.max_retransmissions {
                self.fail(Event::PeerDead);
                return;
            }
            packet.queued_for_retransmission = true;
            self.retransmit.push_back(number);
        }
    }

    fn fail(&mut self, event: Event) {
        self.state = State::Closed;
        self.queue.clear();
        self.queued_bytes = 0;
        self.in_flight.clear();
        self.retransmit.clear();
        self.receiver.clear();
        self.events.push_back(event);
    }

    /// The earliest moment [`Connection::handle_timeout`] has something to do.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut deadlines = vec![self.last_received + self.config.idle_timeout];
        match self.state {
            State::Closed => return None,
            State::Draining(until) => deadlines.push(until),
            _ => {}
        }
        let rto = self.rtt.rto();
        if let Some(oldest) = self
            .in_flight
            .values()
            .filter(|p| !p.queued_for_retransmission)
            .map(|p| p.last_sent)
            .min()
        {
            deadlines.push(oldest + rto);
        }
        if self.receiver.is_waiting() {
            deadlines.push(self.last_progress + self.config.reassembly_timeout);
        }
        if self.state == State::Established && self.is_idle() {
            deadlines.push(self.last_reliable_sent + self.config.keep_alive);
        }
        if let Some(due) = self.ack_due {
            deadlines.push(due);
        }
        deadlines.into_iter().min()
    }

    /// The next datagram to send, if any: a retransmission first, then a new packet if the
    /// window allows, then an ack that is due.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<Vec<u8>> {
        if self.state == State::Closed {
            return None;
        }
        if let Some(datagram) = self.next_retransmission(now) {
            return Some(datagram);
        }
        if self.in_flight.len() < self.config.max_in_flight {
            if let Some(packet) = self.queue.pop_front() {
                return Some(self.transmit_new(now, packet));
            }
        }
        match self.ack_due {
            Some(due) if now >= due => Some(self.transmit_ack()),
            _ => None,
        }
    }

    fn next_retransmission(&mut self, now: Instant) -> Option<Vec<u8>> {
        while let Some(number) = self.retransmit.pop_front() {
            let Some(packet) = self.in_flight.get_mut(&number) else {
                continue; // acked meanwhile
            };
            packet.queued_for_retransmission = false;
            packet.sends += 1;
            packet.last_sent = now;
            self.transmissions += 1;
            packet.transmission = self.transmissions;
            let outgoing = packet.packet.clone();
            self.stats.retransmissions += 1;
            return Some(self.encode(outgoing.header, &outgoing.payload));
        }
        None
    }

    fn transmit_new(&mut self, now: Instant, packet: Outgoing) -> Vec<u8> {
        self.transmissions += 1;
        self.last_reliable_sent = now;
        let datagram = self.encode(packet.header, &packet.payload);
        self.in_flight.insert(
            packet.header.packet_number,
            InFlight {
                packet,
                first_sent: now,
                last_sent: now,
                transmission: self.transmissions,
                sends: 1,
                queued_for_retransmission: false,
            },
        );
        datagram
    }

    fn transmit_ack(&mut self) -> Vec<u8> {
        let header = Header {
            packet_type: PacketType::Ack,
            connection_id: self.connection_id,
            packet_number: 0,
            ack: 0,
            sack: 0,
            message_id: 0,
            fragment_index: 0,
            fragment_count: 0,
        };
        self.encode(header, &[])
    }

    /// The datagram for `header` and `payload`, with the current acknowledgement.
    fn encode(&mut self, mut header: Header, payload: &[u8]) -> Vec<u8> {
        (header.ack, header.sack) = self.receiver.ack_fields();
        self.ack_due = None;
        self.unacked_received = 0;
        let mut datagram = Vec::with_capacity(HEADER_LEN + payload.len());
        header.encode(&mut datagram);
        datagram.extend_from_slice(payload);
        self.stats.datagrams_sent += 1;
        datagram
    }

    fn push_reliable(
        &mut self,
        packet_type: PacketType,
        message_id: u32,
        fragment_index: u16,
        fragment_count: u16,
        payload: Bytes,
    ) {
        let header = Header {
            packet_type,
            connection_id: self.connection_id,
            packet_number: self.next_packet_number,
            ack: 0,
            sack: 0,
            message_id,
            fragment_index,
            fragment_count,
        };
        self.next_packet_number = self.next_packet_number.wrapping_add(1);
        self.queued_bytes += payload.len();
        self.queue.push_back(Outgoing { header, payload });
    }
}

/// Whether packet `number` is acknowledged by cumulative `ack` and bitmap `sack`.
fn is_acked(number: u32, ack: u32, sack: u64) -> bool {
    let behind = ack.wrapping_sub(number);
    if behind != 0 && behind < u32::MAX / 2 {
        return true;
    }
    let ahead = number.wrapping_sub(ack).wrapping_sub(1);
    ahead < 64 && sack & (1 << ahead) != 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// Delivers everything each side has to send to the other, with no loss, advancing the
    /// clock to each deadline, until both are quiet or `until`.
    fn pump(a: &mut Connection, b: &mut Connection, now: &mut Instant, until: Instant) {
        while *now < until {
            let mut moved = false;
            while let Some(datagram) = a.poll_transmit(*now) {
                b.handle_datagram(*now, &datagram);
                moved = true;
            }
            while let Some(datagram) = b.poll_transmit(*now) {
                a.handle_datagram(*now, &datagram);
                moved = true;
            }
            if moved {
                continue;
            }
            let next = [a.poll_timeout(), b.poll_timeout()]
                .into_iter()
                .flatten()
                .min();
            match next {
                Some(at) if at <= until => {
                    *now = at.max(*now);
                    a.handle_timeout(*now);
                    b.handle_timeout(*now);
                }
                _ => return,
            }
        }
    }

    fn open() -> (Connection, Connection, Instant) {
        let now = Instant::now();
        let mut client = Connection::client(42, Config::default(), now);
        let hello = client.poll_transmit(now).unwrap();
        let server = Connection::server(&hello, Config::default(), now).unwrap();
        (client, server, now)
    }

    #[test]
    fn a_lossless_exchange_delivers_in_order_and_closes() {
        let (mut client, mut server, mut now) = open();
        assert_eq!(server.poll_event(), Some(Event::Connected));
        let big = Bytes::from((0..200_000u32).map(|i| i as u8).collect::<Vec<u8>>());
        client.send(Bytes::from_static(b"hello")).unwrap();
        client.send(big.clone()).unwrap();
        client.send(Bytes::new()).unwrap();
        server.send(Bytes::from_static(b"welcome")).unwrap();
        let until = now + Duration::from_secs(1);
        pump(&mut client, &mut server, &mut now, until);
        assert_eq!(client.poll_event(), Some(Event::Connected));
        assert_eq!(server.recv().as_deref(), Some(&b"hello"[..]));
        assert_eq!(server.recv(), Some(big));
        assert_eq!(server.recv().as_deref(), Some(&b""[..]));
        assert_eq!(server.recv(), None);
        assert_eq!(client.recv().as_deref(), Some(&b"welcome"[..]));
        assert_eq!(client.stats().retransmissions, 0);

        client.close();
        let until = now + Duration::from_secs(1);
        pump(&mut client, &mut server, &mut now, until);
        assert_eq!(client.poll_event(), Some(Event::Closed));
        assert_eq!(server.poll_event(), Some(Event::ClosedByPeer));
        assert!(client.is_closed() && server.is_closed());
    }

    #[test]
    fn a_silent_peer_is_declared_dead_within_seconds() {
        let (mut client, _server, mut now) = open();
        client.send(Bytes::from_static(b"anyone?")).unwrap();
        let start = now;
        loop {
            while client.poll_transmit(now).is_some() {}
            if let Some(event) = client.poll_event() {
                assert_eq!(event, Event::PeerDead);
                break;
            }
            now = client.poll_timeout().expect("a timer runs");
            client.handle_timeout(now);
        }
        assert!(now - start < Duration::from_secs(10), "{:?}", now - start);
        assert!(client.is_closed());
    }
}
