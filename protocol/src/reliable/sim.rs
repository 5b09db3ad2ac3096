//! A seeded simulated channel for the tests: a client and a server [`Connection`] joined by a
//! datagram channel that, per direction, drops, duplicates, reorders and delays, under simulated
//! time (an `Instant` base plus offsets, never the real clock).
//!
//! The driver loop ([`Sim::step`]): drain `poll_transmit` of both ends into the channel, move the
//! clock to the earliest of the next delivery and both ends' `poll_timeout`, deliver every
//! datagram due by then, and call `handle_timeout` on both ends. The server end is created the
//! way a real driver creates it: from the first hello that reaches it
//! ([`Connection::is_hello`], [`Connection::server`]); anything before that is dropped.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::{Config, Connection, Event, Header, SendError};

/// splitmix64: a small deterministic generator, plenty for simulated faults and test data.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator for `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        ((self.next_u64() >> 11) as f64) < p * (1u64 << 53) as f64
    }

    /// A duration in `low..=high`, to the microsecond.
    pub fn duration(&mut self, low: Duration, high: Duration) -> Duration {
        let span = (high - low).as_micros() as u64;
        low + Duration::from_micros(self.below(span + 1))
    }

    /// `len` random bytes.
    pub fn bytes(&mut self, len: usize) -> Bytes {
        let mut out = vec![0; len];
        for chunk in out.chunks_mut(8) {
            chunk.copy_from_slice(&self.next_u64().to_le_bytes()[..chunk.len()]);
        }
        Bytes::from(out)
    }
}

/// What one direction of the channel does to datagrams.
#[derive(Debug, Clone, Copy)]
pub struct Faults {
    /// Probability that a datagram is dropped.
    pub loss: f64,
    /// Probability that a datagram that is not dropped arrives twice (each copy with its own
    /// delay).
    pub duplicate: f64,
    /// Probability that a copy is held back by up to `reorder_delay` more, so that later
    /// datagrams overtake it.
    pub reorder: f64,
    /// The one-way delay of each copy, drawn uniformly from this range (which reorders too).
    pub delay: (Duration, Duration),
    /// The most a reordered copy is held back beyond its delay.
    pub reorder_delay: Duration,
}

impl Faults {
    /// A perfect channel with a fixed 1 ms delay.
    pub const NONE: Faults = Faults {
        loss: 0.0,
        duplicate: 0.0,
        reorder: 0.0,
        delay: (Duration::from_millis(1), Duration::from_millis(1)),
        reorder_delay: Duration::ZERO,
    };

    /// The channel: 30% loss, 10% duplication, 10% reordering, 1..20 ms delay.
    pub const LOSSY: Faults = Faults {
        loss: 0.3,
        duplicate: 0.1,
        reorder: 0.1,
        delay: (Duration::from_millis(1), Duration::from_millis(20)),
        reorder_delay: Duration::from_millis(40),
    };

    /// A channel that drops everything: a peer that stopped answering.
    pub const BLACKHOLE: Faults = Faults {
        loss: 1.0,
        ..Faults::NONE
    };
}

/// Which end a datagram travels to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Side {
    Client,
    Server,
}

/// A datagram on its way, ordered by arrival time, then by when it entered the channel.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct InTransit {
    at: Instant,
    seq: u64,
    to: Side,
    datagram: Vec<u8>,
}

/// Two connections, the channel between them and the simulated clock.
#[derive(Debug)]
pub struct Sim {
    /// The simulated time now.
    pub now: Instant,
    /// What happens to datagrams from the client to the server.
    pub to_server: Faults,
    /// What happens to datagrams from the server to the client.
    pub to_client: Faults,
    /// The client end.
    pub client: Connection,
    /// The server end, once a hello has reached it.
    pub server: Option<Connection>,
    /// Events of the client, in order.
    pub client_events: Vec<Event>,
    /// Events of the server, in order.
    pub server_events: Vec<Event>,
    /// How often each reliable packet was sent, by direction and packet number.
    sends: [Vec<u32>; 2],
    rng: Rng,
    config: Config,
    channel: BinaryHeap<Reverse<InTransit>>,
    seq: u64,
    steps_at_now: u32,
    start: Instant,
}

impl Sim {
    /// A client for `config` (its connection id from `seed`) facing a channel with `faults` both
    /// ways; the server appears when the hello gets through.
    pub fn new(seed: u64, faults: Faults, config: Config) -> Sim {
        let mut rng = Rng::new(seed);
        let now = Instant::now();
        let client = Connection::client(rng.next_u64() as u32, config.clone(), now);
        Sim {
            now,
            to_server: faults,
            to_client: faults,
            client,
            server: None,
            client_events: Vec::new(),
            server_events: Vec::new(),
            sends: [Vec::new(), Vec::new()],
            rng,
            config,
            channel: BinaryHeap::new(),
            seq: 0,
            steps_at_now: 0,
            start: now,
        }
    }

    /// When the simulation started.
    pub fn client_start(&self) -> Instant {
        self.start
    }

    /// The server end; panics if no hello has reached it yet.
    pub fn server(&mut self) -> &mut Connection {
        self.server.as_mut().expect("the server end exists")
    }

    /// Runs [`Sim::step`] until `done` holds (true) or the clock passes `limit` or nothing is
    /// left to happen (false). `done` is checked before every step.
    pub fn run_until(&mut self, limit: Duration, mut done: impl FnMut(&mut Sim) -> bool) -> bool {
        let until = self.now + limit;
        while !done(self) {
            if self.now > until || !self.step() {
                return false;
            }
        }
        true
    }

    /// One turn of the driver loop; false when neither end has anything left to do.
    pub fn step(&mut self) -> bool {
        self.transmit();
        let Some(next) = self.next_deadline() else {
            return false;
        };
        self.advance_to(next);
        self.deliver();
        self.client.handle_timeout(self.now);
        if let Some(server) = &mut self.server {
            server.handle_timeout(self.now);
        }
        self.collect_events();
        true
    }

    fn advance_to(&mut self, next: Instant) {
        if next > self.now {
            self.now = next;
            self.steps_at_now = 0;
        } else {
            self.steps_at_now += 1;
            assert!(
                self.steps_at_now < 10_000,
                "the clock is stuck: a deadline that handling does not move"
            );
        }
    }

    fn transmit(&mut self) {
        while let Some(datagram) = self.client.poll_transmit(self.now) {
            self.put(Side::Server, datagram);
        }
        while let Some(datagram) = self
            .server
            .as_mut()
            .and_then(|server| server.poll_transmit(self.now))
        {
            self.put(Side::Client, datagram);
        }
    }

    /// The most any one reliable packet was sent.
    pub fn max_sends(&self) -> u32 {
        self.sends.iter().flatten().copied().max().unwrap_or(0)
    }

    /// Counts a send of a reliable packet.
    fn count_send(&mut self, to: Side, datagram: &[u8]) {
        let Ok((header, _)) = Header::decode(datagram) else {
            return;
        };
        if header.packet_type.is_reliable() {
            let sends = &mut self.sends[to as usize];
            let number = header.packet_number as usize;
            if sends.len() <= number {
                sends.resize(number + 1, 0);
            }
            sends[number] += 1;
        }
    }

    /// Puts a datagram on the channel, through the faults of its direction.
    fn put(&mut self, to: Side, datagram: Vec<u8>) {
        self.count_send(to, &datagram);
        let faults = match to {
            Side::Client => self.to_client,
            Side::Server => self.to_server,
        };
        if self.rng.chance(faults.loss) {
            return;
        }
        if self.rng.chance(faults.duplicate) {
            self.enqueue(to, datagram.clone(), faults);
        }
        self.enqueue(to, datagram, faults);
    }

    fn enqueue(&mut self, to: Side, datagram: Vec<u8>, faults: Faults) {
        let mut delay = self.rng.duration(faults.delay.0, faults.delay.1);
        if self.rng.chance(faults.reorder) {
            delay += self.rng.duration(Duration::ZERO, faults.reorder_delay);
        }
        self.seq += 1;
        self.channel.push(Reverse(InTransit {
            at: self.now + delay,
            seq: self.seq,
            to,
            datagram,
        }));
    }

    fn next_deadline(&self) -> Option<Instant> {
        let arrival = self.channel.peek().map(|Reverse(next)| next.at);
        let server = self.server.as_ref().and_then(Connection::poll_timeout);
        [arrival, self.client.poll_timeout(), server]
            .into_iter()
            .flatten()
            .min()
    }

    fn deliver(&mut self) {
        while self
            .channel
            .peek()
            .is_some_and(|Reverse(next)| next.at <= self.now)
        {
            let Reverse(next) = self.channel.pop().expect("peeked");
            match next.to {
                Side::Client => self.client.handle_datagram(self.now, &next.datagram),
                Side::Server => self.deliver_to_server(&next.datagram),
            }
        }
    }

    fn deliver_to_server(&mut self, datagram: &[u8]) {
        match &mut self.server {
            Some(server) => server.handle_datagram(self.now, datagram),
            None if Connection::is_hello(datagram) => {
                self.server = Connection::server(datagram, self.config.clone(), self.now);
            }
            None => {}
        }
    }

    fn collect_events(&mut self) {
        while let Some(event) = self.client.poll_event() {
            self.client_events.push(event);
        }
        while let Some(event) = self.server.as_mut().and_then(Connection::poll_event) {
            self.server_events.push(event);
        }
    }
}

/// The random bytes messages are cut from.
const POOL_LEN: usize = 1 << 20;

/// One direction of application traffic: random messages offered to the sending end (retried
/// after [`SendError::QueueFull`]) and checked, exactly once and in order, at the receiving end.
/// A message is a random length at a random place of a pool of random bytes (cheaper than fresh
/// bytes and as good: two messages alike are as unlikely).
#[derive(Debug)]
pub struct Flow {
    rng: Rng,
    pool: Bytes,
    remaining: usize,
    max_len: usize,
    room: usize,
    pending: Option<Bytes>,
    in_transit: VecDeque<Bytes>,
    /// Fragments of the messages queued so far: the data packets the messages need.
    pub fragments: u64,
    /// Messages delivered so far.
    pub delivered: usize,
    /// How often `send` answered `QueueFull`.
    pub queue_full: u64,
}

impl Flow {
    /// `count` messages of `0..=max_len` random bytes from `seed`, cut in fragments of `room`.
    pub fn new(seed: u64, count: usize, max_len: usize, room: usize) -> Flow {
        let mut rng = Rng::new(seed);
        Flow {
            pool: rng.bytes(POOL_LEN + max_len),
            rng,
            remaining: count,
            max_len,
            room,
            pending: None,
            in_transit: VecDeque::new(),
            fragments: 0,
            delivered: 0,
            queue_full: 0,
        }
    }

    /// Queues messages at `sender` until it is full or none are left.
    pub fn offer(&mut self, sender: &mut Connection) {
        loop {
            if self.pending.is_none() && self.remaining > 0 {
                self.remaining -= 1;
                let len = self.rng.below(self.max_len as u64 + 1) as usize;
                let start = self.rng.below(POOL_LEN as u64) as usize;
                self.pending = Some(self.pool.slice(start..start + len));
            }
            let Some(message) = self.pending.take() else {
                return;
            };
            match sender.send(message.clone()) {
                Ok(()) => {
                    self.fragments += message.len().div_ceil(self.room).max(1) as u64;
                    self.in_transit.push_back(message);
                }
                Err(SendError::QueueFull) => {
                    self.queue_full += 1;
                    self.pending = Some(message);
                    return;
                }
                Err(error) => panic!("send failed: {error}"),
            }
        }
    }

    /// Takes every message `receiver` has delivered, checking each against the next one sent.
    pub fn take(&mut self, receiver: &mut Connection) {
        while let Some(message) = receiver.recv() {
            let expected = self
                .in_transit
                .pop_front()
                .unwrap_or_else(|| panic!("message {} was never sent", self.delivered));
            assert!(
                message == expected,
                "message {} differs: {} bytes, {} expected",
                self.delivered,
                message.len(),
                expected.len()
            );
            self.delivered += 1;
        }
    }

    /// Whether every message has been queued and delivered.
    pub fn is_done(&self) -> bool {
        self.remaining == 0 && self.pending.is_none() && self.in_transit.is_empty()
    }
}
