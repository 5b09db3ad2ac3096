//! One end of a reliable-datagram connection, as a state machine with no sockets and no clock
//! (the shape of quinn-proto): the caller feeds it datagrams ([`Connection::handle_datagram`])
//! and timer expiries ([`Connection::handle_timeout`]), and drains datagrams to send
//! ([`Connection::poll_transmit`]), the next deadline ([`Connection::poll_timeout`]), events
//! ([`Connection::poll_event`]) and delivered messages ([`Connection::recv`]). A driver that
//! cares for copies and allocations takes datagrams with [`Connection::poll_transmit_into`] (into
//! a buffer of its own, several to one system call) or [`Connection::poll_datagram`] (header
//! and payload apart, for a vectored system call, the payload shared with the message rather
//! than copied), and hands received datagrams over as [`Bytes`] with
//! [`Connection::handle_datagram_bytes`], so that payloads are kept without a copy.
//!
//! Sending: a message is cut into fragments that fit the datagram size, each a data packet with
//! the next packet number. The window: a new packet goes only if its number is less than
//! `max_in_flight` past the oldest unacknowledged one, and never more than [`SACK_BITS`] past it,
//! so that the receiver can acknowledge every packet the moment it arrives and no packet waits
//! unacknowledged behind a gap until its timer expires; and only if the payload from the oldest
//! unacknowledged packet to it, those acknowledged selectively included (the receiver holds them
//! until the gap before them fills), fits what the receiver can hold ahead of a gap (its
//! `max_receive_buffer` less two largest messages, at least a quarter of it; both ends are
//! configured alike), so that a loss does not make the receiver drop for want of room the
//! packets after it. A packet is sent again
//! - when its retransmission timer expires: the RTO (RFC 6298, see [`super::rtt`]) after its last
//!   send; each expiry doubles the RTO until the next RTT sample; or
//! - on a gap in the acks: at once when a packet sent three sends after it
//!   has been acknowledged (RFC 9002's packet threshold), or when any packet sent after it has
//!   been acknowledged and it has gone unacknowledged since its last send for SRTT + 4 RTTVAR
//!   (the RTO before its floor, cap and back-off: a time threshold wide enough that reordering
//!   within the usual variation of the round-trip time is not taken for loss); or
//! - once per RTO expiry, as a probe: a packet no later send has overtaken (a lost
//!   retransmission, the lost tail of a burst) that has gone unacknowledged for twice SRTT +
//!   4 RTTVAR plus the peer's ack delay (left out while the peer has a gap, as it then
//!   acknowledges every arrival at once), when that is shorter than the RTO. A probe neither
//!   backs the RTO off nor counts towards a dead peer; it spares a stalled window the RTO's
//!   floor.
//!
//! A duplicate ack alone never triggers a retransmission: it acknowledges nothing new, so it
//! shows no new gap. An RTT sample comes from the highest packet an ack reports, when this ack
//! is the first to report it, less the ack delay the header carries (how long the peer held the
//! ack since that packet arrived). A retransmitted packet keeps its number and gives no RTT
//! sample (Karn's rule); as it is unknown which of its sends arrived, gap detection counts it as sent at its
//! first send. The peer is dead when one packet's timer has expired `max_retransmissions` + 1
//! times in a row with nothing at all received from the peer since the send before each expiry:
//! a silent peer, not merely a lossy or a busy one (an expiry while the peer is heard from still
//! retransmits, but starts the count again). An ack of a packet never sent is a protocol
//! violation.
//!
//! Receiving: see [`super::receive`]. Acks are sent for every second packet, at once for a
//! packet out of order, one that fills a gap, a duplicate or a packet dropped for want of room
//! (the application is not reading: the ack shows no progress but tells the peer we are alive),
//! and otherwise after `ack_delay`; every packet sent carries the current ack and its delay.
//!
//! Closing: [`Connection::close`] queues a close packet after everything sent so far; once it and
//! everything before it are acknowledged, [`Event::Closed`]. The peer's close, taken in order
//! after everything it sent, gives [`Event::ClosedByPeer`]; if we had not closed too, whatever we
//! had not had acknowledged is dropped. When both close at once, each end gets both events. After
//! that the connection drains: it sends nothing new but still acknowledges, so that a peer whose
//! ack was lost can finish, until nothing has arrived for `max_retransmissions` + 1 maximum RTOs
//! (as long as such a peer keeps trying: it sends again at least once per maximum RTO). Then it
//! is closed, and datagrams that still arrive are counted as stale.
//!
//! Liveness: a ping is sent after `keep_alive` with nothing sent while nothing is
//! unacknowledged. The connection ends with [`Event::IdleTimeout`] after `idle_timeout` with
//! nothing received, and with a protocol violation when a message stays incomplete (or packets
//! wait for a gap) for `reassembly_timeout` with no progress.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use bytes::Bytes;
use thiserror::Error;

use super::header::{HEADER_LEN, Header, PacketType, SACK_BITS, Sack};
use super::receive::{Arrival, Control, Payload, Receiver, expand};
use super::rtt::RttEstimator;
use super::window::Window;
use super::{Config, Event, Stats};

/// A packet sent this many transmissions before one that was acknowledged counts as lost at
/// once (RFC 9002's packet threshold); one overtaken by fewer waits for the loss delay.
const PACKET_THRESHOLD: u64 = 3;

/// Transmissions with the moment each counts as lost, in order.
type EarlyLosses<'a> = Box<dyn Iterator<Item = (u64, Instant)> + 'a>;

/// A datagram to send, in two parts (see [`Connection::poll_datagram`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Datagram {
    /// The encoded header.
    pub header: [u8; HEADER_LEN],
    /// The payload after it: a data packet's part of its message, empty for the other types.
    pub payload: Bytes,
}

impl Datagram {
    /// The datagram's length in bytes.
    pub fn len(&self) -> usize {
        HEADER_LEN + self.payload.len()
    }

    /// Whether the datagram is empty: never (the header is always there).
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The datagram in one buffer.
    pub fn to_vec(&self) -> Vec<u8> {
        [&self.header[..], &self.payload].concat()
    }
}

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
    /// Finished (closed by us, by the peer or both): nothing new is sent, acks still are, until
    /// nothing has arrived for a while.
    Draining,
    /// Nothing more happens.
    Closed,
}

/// A reliable packet queued or in flight.
#[derive(Debug)]
struct Outgoing {
    /// Its packet number; the header carries the low 32 bits.
    number: u64,
    /// Where its payload starts in the stream of every payload byte queued.
    offset: u64,
    header: Header,
    payload: Bytes,
}

/// A packet sent and not yet acknowledged.
#[derive(Debug)]
struct InFlight {
    packet: Outgoing,
    first_sent: Instant,
    last_sent: Instant,
    /// The transmission counter at the first send.
    first_transmission: u64,
    /// The transmission counter at the last send: its key in `Connection::by_transmission`.
    transmission: u64,
    sends: u32,
    /// Timer expiries in a row with nothing received from the peer since the send before.
    silent_expiries: u32,
    /// Declared lost and waiting in `Connection::lost` to be sent again.
    lost: bool,
    /// Sent again by the probe timer since the last RTO expiry (at most once per expiry).
    probed: bool,
}

/// One end of a connection.
#[derive(Debug)]
pub struct Connection {
    config: Config,
    connection_id: u32,
    state: State,
    /// Whether [`Event::Connected`] has been given.
    connected: bool,
    next_packet_number: u64,
    next_message_id: u32,
    queue: VecDeque<Outgoing>,
    queued_bytes: usize,
    /// Packets sent and not acknowledged, by number.
    in_flight: Window<InFlight>,
    /// Payload bytes queued so far: the stream offset of the next packet's payload.
    next_offset: u64,
    /// The packets of `in_flight` not declared lost, by the transmission counter at their last
    /// send, which orders them by the time of their last send too.
    by_transmission: BTreeMap<u64, u64>,
    /// Packets declared lost, to send again first.
    lost: VecDeque<u64>,
    /// Reliable packets sent, retransmissions included.
    transmissions: u64,
    /// The largest first transmission counter of a packet acknowledged.
    largest_acked_transmission: u64,
    /// The largest packet number acknowledged.
    largest_acked_number: Option<u64>,
    rtt: RttEstimator,
    receiver: Receiver,
    /// When the highest-numbered packet received so far arrived: acks report how long since
    /// (their ack delay).
    largest_received_at: Option<Instant>,
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
        if !Connection::is_hello(datagram) {
            return None;
        }
        let (header, _) = Header::decode(datagram).ok()?;
        let mut connection = Connection::new(header.connection_id, config, State::Established, now);
        connection.connected = true;
        connection.events.push_back(Event::Connected);
        connection.handle_datagram(now, datagram);
        Some(connection)
    }

    /// Whether `datagram` opens a connection: a well-formed hello.
    pub fn is_hello(datagram: &[u8]) -> bool {
        matches!(Header::decode(datagram), Ok((h, _)) if h.packet_type == PacketType::Hello && h.packet_number == 0)
    }

    fn new(connection_id: u32, config: Config, state: State, now: Instant) -> Connection {
        let receiver = Receiver::new(config.max_message_size, config.max_receive_buffer);
        Connection {
            rtt: RttEstimator::new(config.initial_rto, config.min_rto, config.max_rto),
            receiver,
            connection_id,
            state,
            connected: false,
            next_packet_number: 0,
            next_message_id: 1,
            queue: VecDeque::new(),
            queued_bytes: 0,
            in_flight: Window::new(),
            next_offset: 0,
            by_transmission: BTreeMap::new(),
            lost: VecDeque::new(),
            transmissions: 0,
            largest_acked_transmission: 0,
            largest_acked_number: None,
            largest_received_at: None,
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

    /// Bytes queued or in flight, not yet acknowledged: at most the larger of
    /// `max_send_queue` and `max_message_size`.
    pub fn unacknowledged_bytes(&self) -> usize {
        self.queued_bytes
    }

    /// Bytes held on the receiving side: at most the larger of `max_receive_buffer` and
    /// `max_message_size`.
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
    /// connection is counted and dropped. A data packet's payload is copied where it has to be
    /// kept (a packet held until a gap before it fills, a message of one fragment); see
    /// [`Connection::handle_datagram_bytes`] to avoid even that.
    pub fn handle_datagram(&mut self, now: Instant, datagram: &[u8]) {
        self.handle(now, datagram, None);
    }

    /// As [`Connection::handle_datagram`], but a data packet's payload is kept as a slice of
    /// `datagram` rather than copied (and with it the whole of `datagram`'s buffer, until the
    /// payload is delivered or, for a fragment, put back together with the rest of its message).
    pub fn handle_datagram_bytes(&mut self, now: Instant, datagram: Bytes) {
        self.handle(now, &datagram, Some(&datagram));
    }

    fn handle(&mut self, now: Instant, datagram: &[u8], shared: Option<&Bytes>) {
        self.stats.datagrams_received += 1;
        if self.state == State::Closed {
            self.stats.stale_dropped += 1;
            return;
        }
        let Ok((header, payload)) = Header::decode(datagram) else {
            self.stats.garbage_dropped += 1;
            return;
        };
        if header.connection_id != self.connection_id {
            self.stats.foreign_dropped += 1;
            return;
        }
        self.last_received = now;
        if let Err(violation) = self.on_ack(now, &header) {
            self.fail(Event::ProtocolViolation(violation));
            return;
        }
        if header.packet_type.is_reliable() {
            let payload = match shared {
                Some(datagram) => Payload::Shared(datagram.slice(HEADER_LEN..)),
                None => Payload::Lent(payload),
            };
            self.on_reliable(now, header, payload);
        }
        self.finish_close();
    }

    fn on_reliable(&mut self, now: Instant, header: Header, payload: Payload<'_>) {
        let was_waiting = self.receiver.is_waiting();
        let had_gap = self.receiver.has_gap();
        let largest_before = self.receiver.largest_received();
        let mut controls = Vec::new();
        let arrival = self.receiver.on_packet(header, payload, &mut controls);
        if self.receiver.largest_received() != largest_before {
            self.largest_received_at = Some(now);
        }
        match arrival {
            Ok(Arrival::Progress) => {
                self.last_progress = now;
                self.unacked_received += 1;
                // A packet that fills a gap is acknowledged at once: the sender's window waits
                // on it.
                let urgent =
                    self.unacked_received >= 2 || had_gap || header.packet_type != PacketType::Data;
                self.schedule_ack(now, urgent);
            }
            Ok(Arrival::Held) => {
                if !was_waiting {
                    self.last_progress = now;
                }
                self.schedule_ack(now, true);
            }
            Ok(Arrival::Duplicate) => {
                self.stats.duplicates_dropped += 1;
                self.schedule_ack(now, true);
            }
            Ok(Arrival::NoRoom) => {
                // Waiting for our application: not the peer's lack of progress. The ack shows
                // no progress, so it asks for nothing, but tells the peer we are here.
                self.last_progress = now;
                self.stats.no_room_dropped += 1;
                self.schedule_ack(now, true);
            }
            Err(violation) => return self.fail(Event::ProtocolViolation(violation.0)),
        }
        for control in controls {
            match control {
                Control::Close => self.on_peer_close(),
            }
        }
    }

    fn on_peer_close(&mut self) {
        self.events.push_back(Event::ClosedByPeer);
        if matches!(self.state, State::Connecting | State::Established) {
            self.abandon_sending();
            self.state = State::Draining;
        }
    }

    /// Closing, once everything up to our close is acknowledged, becomes draining.
    fn finish_close(&mut self) {
        if self.state == State::Closing && self.is_idle() {
            self.state = State::Draining;
            self.events.push_back(Event::Closed);
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

    /// The number of the first packet not sent yet.
    fn sent_end(&self) -> u64 {
        self.queue
            .front()
            .map_or(self.next_packet_number, |packet| packet.number)
    }

    /// Applies the peer's acknowledgement of our packets (the cumulative ack, the selective
    /// acks and the ack delay of `header`).
    fn on_ack(&mut self, now: Instant, header: &Header) -> Result<(), &'static str> {
        let sent_end = self.sent_end();
        let ack = expand(sent_end, header.ack);
        let highest_selective = header.sack.highest().map(|i| ack + 1 + u64::from(i));
        if ack > sent_end || highest_selective.is_some_and(|n| n >= sent_end) {
            return Err("an ack of a packet never sent");
        }
        // The round-trip sample comes from the highest packet acknowledged, the one the ack
        // delay is about, if this ack is the first to report it and it was sent only once
        // (Karn's rule).
        let largest = highest_selective.or(ack.checked_sub(1));
        let sample = largest
            .and_then(|number| self.in_flight.get(number))
            .filter(|packet| packet.sends == 1)
            .map(|packet| now.saturating_duration_since(packet.first_sent));
        while self.in_flight.first_key().is_some_and(|n| n < ack) {
            let (_, packet) = self.in_flight.pop_first().expect("checked");
            self.on_acked(packet);
        }
        // The bitmap mostly repeats what earlier acks said: only the packets still in flight
        // count.
        if !self.in_flight.is_empty() {
            for i in header.sack.ones() {
                if let Some(packet) = self.in_flight.remove(ack + 1 + u64::from(i)) {
                    self.on_acked(packet);
                }
            }
        }
        if let Some(rtt) = sample {
            let held = Duration::from_micros(u64::from(header.ack_delay_micros));
            self.rtt.on_sample(rtt, held);
        }
        self.detect_lost(now);
        Ok(())
    }

    /// Forgets an acknowledged packet.
    fn on_acked(&mut self, packet: InFlight) {
        self.queued_bytes -= packet.packet.payload.len();
        if !packet.lost {
            self.by_transmission.remove(&packet.transmission);
        }
        let number = packet.packet.number;
        self.largest_acked_number =
            Some(self.largest_acked_number.map_or(number, |n| n.max(number)));
        self.largest_acked_transmission = self
            .largest_acked_transmission
            .max(packet.first_transmission);
        if packet.packet.header.packet_type == PacketType::Hello && !self.connected {
            self.connected = true;
            self.events.push_back(Event::Connected);
            if self.state == State::Connecting {
                self.state = State::Established;
            }
        }
    }

    /// How long a packet goes unacknowledged, after a later one was, before it counts as lost.
    fn loss_delay(&self) -> Duration {
        self.rtt.expected_ack_within().unwrap_or(self.rtt.rto())
    }

    /// How long a packet that no later-sent packet overtook may go unacknowledged before it is
    /// probed: sent again once, without backing the RTO off. Twice the usual ack time plus the
    /// peer's ack delay, at most the RTO; there is no probe before the first RTT sample, or when
    /// the RTO is shorter anyway. This recovers a lost retransmission or a lost tail in a
    /// few round trips, where waiting for the RTO (with its floor) would stall the window.
    ///
    /// The peer's ack delay is left out while the peer has a gap (a packet below one it
    /// acknowledged is missing): it then acknowledges every arrival at once (see
    /// [`super::receive`]), and a lost retransmission of the oldest packet, which holds the
    /// whole window up, is probed after two usual ack times rather than the ack delay too.
    fn probe_delay(&self) -> Duration {
        let rto = self.rtt.rto();
        let peer_has_gap = self
            .in_flight
            .first_key()
            .is_some_and(|oldest| self.largest_acked_number.is_some_and(|n| n > oldest));
        let ack_delay = if peer_has_gap {
            Duration::ZERO
        } else {
            self.config.ack_delay
        };
        self.rtt
            .expected_ack_within()
            .map_or(rto, |expected| (expected * 2 + ack_delay).min(rto))
    }

    /// The transmissions that may count as lost short of their RTO, each with the moment it
    /// does, in order of that moment within each of two runs: packets sent before one that was
    /// acknowledged (the loss delay after their last send), then the others not probed since
    /// their last RTO expiry (the probe delay after it). Sends are in transmission order, so each
    /// run's moments only grow: a caller stops at the first one still to come.
    fn early_losses(&self) -> (EarlyLosses<'_>, EarlyLosses<'_>) {
        let overtaken = self.largest_acked_transmission;
        let probe = self.probe_delay();
        let probing = probe < self.rtt.rto();
        let at = move |delay: Duration| {
            move |(&transmission, number): (&u64, &u64)| {
                (transmission, self.in_flight[*number].last_sent + delay)
            }
        };
        let loss_delay = self.loss_delay();
        let evidence = self
            .by_transmission
            .range(..overtaken)
            .map(move |(&t, number)| {
                let last_sent = self.in_flight[*number].last_sent;
                // Overtaken by `PACKET_THRESHOLD` later sends, one of them acknowledged: lost now.
                let wait = if t + PACKET_THRESHOLD <= overtaken {
                    Duration::ZERO
                } else {
                    loss_delay
                };
                (t, last_sent + wait)
            });
        let probes = self
            .by_transmission
            .range(overtaken..)
            .filter(move |(_, number)| probing && !self.in_flight[**number].probed)
            .map(at(probe));
        (Box::new(evidence), Box::new(probes))
    }

    /// Declares lost every packet whose early-loss moment has come.
    fn detect_lost(&mut self, now: Instant) {
        if self.by_transmission.is_empty() {
            return;
        }
        let (evidence, probes) = self.early_losses();
        let due = |run: EarlyLosses<'_>| -> Vec<u64> {
            run.take_while(|&(_, at)| now >= at)
                .map(|(t, _)| t)
                .collect()
        };
        let (overtaken, probed) = (due(evidence), due(probes));
        for transmission in overtaken {
            self.declare_lost(transmission, false);
        }
        for transmission in probed {
            self.declare_lost(transmission, true);
        }
    }

    /// Declares lost every packet unacknowledged for an RTO since its last send, backing off;
    /// or the peer dead if one of them expired too often without a word from the peer.
    fn on_retransmission_timer(&mut self, now: Instant) {
        let rto = self.rtt.rto();
        let mut expired = false;
        while let Some((_, &number)) = self.by_transmission.first_key_value() {
            let heard_from = self.last_received;
            let packet = self.in_flight.get_mut(number).expect("in flight");
            if now < packet.last_sent + rto {
                break;
            }
            if heard_from <= packet.last_sent {
                packet.silent_expiries += 1;
            } else {
                packet.silent_expiries = 0;
            }
            if packet.silent_expiries > self.config.max_retransmissions {
                return self.fail(Event::PeerDead);
            }
            self.declare_first_lost();
            expired = true;
        }
        if expired {
            self.rtt.on_timeout();
        }
    }

    /// Moves the packet sent longest ago, not declared lost yet, to the retransmission queue.
    fn declare_first_lost(&mut self) {
        if let Some((&transmission, _)) = self.by_transmission.first_key_value() {
            self.declare_lost(transmission, false);
        }
    }

    /// Moves the packet of `transmission` to the retransmission queue; `probe` marks it probed,
    /// otherwise (an RTO expiry or evidence of loss) it may be probed again later.
    fn declare_lost(&mut self, transmission: u64, probe: bool) {
        let Some(number) = self.by_transmission.remove(&transmission) else {
            return;
        };
        if let Some(packet) = self.in_flight.get_mut(number) {
            packet.lost = true;
            packet.probed = probe;
            self.lost.push_back(number);
        }
    }

    /// Handles every deadline that has passed by `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        match self.state {
            State::Closed => {}
            State::Draining => {
                if now >= self.last_received + self.drain_period() {
                    self.state = State::Closed;
                    self.receiver.clear();
                }
            }
            _ => self.handle_open_timers(now),
        }
    }

    fn handle_open_timers(&mut self, now: Instant) {
        if now >= self.last_received + self.config.idle_timeout {
            return self.fail(Event::IdleTimeout);
        }
        if self.reassembly_deadline().is_some_and(|at| now >= at) {
            return self.fail(Event::ProtocolViolation("an incomplete message expired"));
        }
        // An RTO expiry (which backs off and counts towards a dead peer) takes precedence over
        // a probe due at the same moment.
        self.on_retransmission_timer(now);
        self.detect_lost(now);
        if self.keep_alive_deadline().is_some_and(|at| now >= at) {
            self.push_reliable(PacketType::Ping, 0, 0, 0, Bytes::new());
        }
    }

    fn fail(&mut self, event: Event) {
        self.state = State::Closed;
        self.abandon_sending();
        self.receiver.clear();
        self.events.push_back(event);
    }

    /// Drops everything queued or in flight.
    fn abandon_sending(&mut self) {
        self.queue.clear();
        self.queued_bytes = 0;
        self.in_flight.clear();
        self.by_transmission.clear();
        self.lost.clear();
    }

    /// The earliest moment [`Connection::handle_timeout`] has something to do.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let timers = match self.state {
            State::Closed => return None,
            State::Draining => [Some(self.last_received + self.drain_period()), None, None],
            _ => [
                Some(self.last_received + self.config.idle_timeout),
                self.reassembly_deadline(),
                self.keep_alive_deadline(),
            ],
        };
        timers
            .into_iter()
            .chain([self.loss_deadline(), self.ack_due])
            .flatten()
            .min()
    }

    /// The next moment a packet in flight may count as lost: the first early-loss moment of
    /// either run (see [`Connection::early_losses`]), or the RTO after the oldest send.
    fn loss_deadline(&self) -> Option<Instant> {
        let (_, oldest) = self.by_transmission.first_key_value()?;
        let rto_at = self.in_flight[*oldest].last_sent + self.rtt.rto();
        let (mut evidence, mut probes) = self.early_losses();
        [evidence.next(), probes.next()]
            .into_iter()
            .flatten()
            .map(|(_, at)| at)
            .chain([rto_at])
            .min()
    }

    fn reassembly_deadline(&self) -> Option<Instant> {
        let waiting = self.receiver.is_waiting();
        waiting.then(|| self.last_progress + self.config.reassembly_timeout)
    }

    fn keep_alive_deadline(&self) -> Option<Instant> {
        let idle = self.state == State::Established && self.is_idle();
        idle.then(|| self.last_reliable_sent + self.config.keep_alive)
    }

    /// As long as a peer whose close is unacknowledged may keep sending it again.
    fn drain_period(&self) -> Duration {
        self.config.max_rto * (self.config.max_retransmissions + 1)
    }

    /// The next datagram to send, if any: a retransmission first, then a new packet if the
    /// window allows, then an ack that is due. See [`Connection::poll_transmit_into`] to encode
    /// into a buffer of the caller's.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<Vec<u8>> {
        let mut datagram = Vec::new();
        self.poll_transmit_into(now, &mut datagram)?;
        Some(datagram)
    }

    /// As [`Connection::poll_transmit`], but the datagram is appended to `out` (a driver can
    /// collect several in one buffer for one system call); returns its length, or `None` (and
    /// leaves `out` alone) if there is nothing to send.
    pub fn poll_transmit_into(&mut self, now: Instant, out: &mut Vec<u8>) -> Option<usize> {
        let (header, number) = self.next_transmit(now)?;
        let payload = match number {
            Some(number) => &self.in_flight[number].packet.payload[..],
            None => &[],
        };
        out.reserve(HEADER_LEN + payload.len());
        out.extend_from_slice(&header);
        out.extend_from_slice(payload);
        Some(HEADER_LEN + payload.len())
    }

    /// As [`Connection::poll_transmit`], but the datagram comes in two parts, the header and
    /// the payload (shared with the message it is part of, not copied), for a driver that sends
    /// them with one vectored system call.
    pub fn poll_datagram(&mut self, now: Instant) -> Option<Datagram> {
        let (header, number) = self.next_transmit(now)?;
        let payload = number.map_or_else(Bytes::new, |number| {
            self.in_flight[number].packet.payload.clone()
        });
        Some(Datagram { header, payload })
    }

    /// The header of the next datagram to send and, for a reliable packet, its number (its
    /// payload is the packet's in `in_flight`).
    fn next_transmit(&mut self, now: Instant) -> Option<([u8; HEADER_LEN], Option<u64>)> {
        if self.state == State::Closed {
            return None;
        }
        if let Some(sent) = self.next_retransmission(now) {
            return Some(sent);
        }
        if self.may_send_new() {
            let packet = self.queue.pop_front().expect("checked");
            return Some(self.transmit_new(now, packet));
        }
        match self.ack_due {
            Some(due) if now >= due => Some((self.transmit_ack(now), None)),
            _ => None,
        }
    }

    /// Whether the next queued packet may go: the window has room, and the peer can
    /// acknowledge it selectively as soon as it arrives (it is at most [`SACK_BITS`] past the
    /// oldest packet unacknowledged, which is at or below the peer's cumulative ack).
    fn may_send_new(&self) -> bool {
        let Some(next) = self.queue.front() else {
            return false;
        };
        let Some(oldest) = self.in_flight.first_key() else {
            return true;
        };
        let span = next.offset + next.payload.len() as u64 - self.in_flight[oldest].packet.offset;
        next.number < oldest + self.window() && span <= self.span_budget()
    }

    /// Payload bytes from the oldest packet unacknowledged to the newest sent at most: what the
    /// peer's receive buffer (configured like ours) can hold ahead of a gap beside a message
    /// being put back together, its limit less two largest messages (see [`super::receive`]),
    /// but at least a quarter of its limit. The packets selectively acknowledged count too, as
    /// the peer holds them until the gap fills. Past that, packets after a loss would be dropped
    /// for want of room and sent again and again until the gap filled.
    fn span_budget(&self) -> u64 {
        let max_message = self.config.max_message_size;
        let limit = self.config.max_receive_buffer.max(max_message);
        let budget = limit.saturating_sub(2 * max_message).max(limit / 4);
        u64::try_from(budget).unwrap_or(u64::MAX)
    }

    /// How far past the oldest packet unacknowledged a new one may go: `max_in_flight`, at most
    /// one more than the selective acks reach.
    fn window(&self) -> u64 {
        let max = u64::try_from(self.config.max_in_flight).unwrap_or(u64::MAX);
        max.clamp(1, u64::from(SACK_BITS) + 1)
    }

    fn next_retransmission(&mut self, now: Instant) -> Option<([u8; HEADER_LEN], Option<u64>)> {
        while let Some(number) = self.lost.pop_front() {
            let Some(packet) = self.in_flight.get_mut(number).filter(|p| p.lost) else {
                continue; // acked meanwhile
            };
            self.transmissions += 1;
            packet.lost = false;
            packet.sends += 1;
            packet.last_sent = now;
            packet.transmission = self.transmissions;
            let header = packet.packet.header;
            self.by_transmission.insert(self.transmissions, number);
            self.stats.retransmissions += 1;
            return Some((self.encode(header, now), Some(number)));
        }
        None
    }

    fn transmit_new(&mut self, now: Instant, packet: Outgoing) -> ([u8; HEADER_LEN], Option<u64>) {
        self.transmissions += 1;
        self.last_reliable_sent = now;
        let header = self.encode(packet.header, now);
        let number = packet.number;
        self.by_transmission.insert(self.transmissions, number);
        self.in_flight.push(
            number,
            InFlight {
                packet,
                first_sent: now,
                last_sent: now,
                first_transmission: self.transmissions,
                transmission: self.transmissions,
                sends: 1,
                silent_expiries: 0,
                lost: false,
                probed: false,
            },
        );
        (header, Some(number))
    }

    fn transmit_ack(&mut self, now: Instant) -> [u8; HEADER_LEN] {
        let header = Header {
            packet_type: PacketType::Ack,
            connection_id: self.connection_id,
            packet_number: 0,
            ack: 0,
            ack_delay_micros: 0,
            sack: Sack::EMPTY,
            message_id: 0,
            fragment_index: 0,
            fragment_count: 0,
        };
        self.encode(header, now)
    }

    /// `header` encoded with the current acknowledgement, for a datagram about to go at `now`.
    fn encode(&mut self, mut header: Header, now: Instant) -> [u8; HEADER_LEN] {
        (header.ack, header.sack) = self.receiver.ack_fields();
        header.ack_delay_micros = self.largest_received_at.map_or(0, |at| {
            let held = now.saturating_duration_since(at).as_micros();
            u32::try_from(held).unwrap_or(u32::MAX)
        });
        self.ack_due = None;
        self.unacked_received = 0;
        self.stats.datagrams_sent += 1;
        header.to_bytes()
    }

    fn push_reliable(
        &mut self,
        packet_type: PacketType,
        message_id: u32,
        fragment_index: u16,
        fragment_count: u16,
        payload: Bytes,
    ) {
        let number = self.next_packet_number;
        let header = Header {
            packet_type,
            connection_id: self.connection_id,
            packet_number: number as u32,
            ack: 0,
            ack_delay_micros: 0,
            sack: Sack::EMPTY,
            message_id,
            fragment_index,
            fragment_count,
        };
        self.next_packet_number += 1;
        self.queued_bytes += payload.len();
        let offset = self.next_offset;
        self.next_offset += payload.len() as u64;
        self.queue.push_back(Outgoing {
            number,
            offset,
            header,
            payload,
        });
    }
}
