//! The state machine against the simulated channel of [`super::sim`], and against datagrams
//! made by hand.

use std::time::{Duration, Instant};

use bytes::Bytes;
use proptest::prelude::*;

use super::sim::{Faults, Flow, Rng, Sim};
use super::{Config, Connection, Event, HEADER_LEN, Header, PacketType, Sack, SendError};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

// ---------------------------------------------------------------------------------------------
// The lossy transfer: 30% loss, 10% duplication, 10% reordering, 1..20 ms delay.

/// Seeds of the lossy transfer.
const SEEDS: u64 = 200;
/// Messages each way per seed.
const MESSAGES: usize = 1000;
/// The largest message of the lossy transfer: 64 KiB.
const MAX_LEN: usize = 64 * 1024;

/// The lossy transfer's configuration: small queues, so that `QueueFull` and a full receive
/// buffer happen often; and more tries before the peer counts as dead. A try fails when the
/// packet or the ack that answers it is lost, 1 - 0.7 × 0.7 = 0.51 with 30% loss each way, so
/// the default 10 retransmissions (11 tries) would take a live peer for dead with probability
/// 0.51^11 ≈ 6e-4 wherever one packet is all that is left to acknowledge (the close at the end
/// of each seed); with 20, 0.51^21 ≈ 7e-7.
fn lossy_config() -> Config {
    Config {
        max_message_size: MAX_LEN,
        max_send_queue: 256 * 1024,
        max_receive_buffer: 512 * 1024,
        max_retransmissions: 20,
        ..Config::default()
    }
}

/// What one seed's transfer measured.
#[derive(Debug, Clone, Copy)]
struct Outcome {
    seed: u64,
    fragments: u64,
    retransmissions: u64,
    max_sends: u32,
    simulated: Duration,
}

impl Outcome {
    fn ratio(&self) -> f64 {
        self.retransmissions as f64 / self.fragments as f64
    }
}

/// Checks the buffer bounds of both ends.
fn check_bounds(sim: &Sim, config: &Config) {
    let send_limit = config.max_send_queue.max(config.max_message_size);
    let receive_limit = config.max_receive_buffer.max(config.max_message_size);
    for end in std::iter::once(&sim.client).chain(sim.server.as_ref()) {
        assert!(end.unacknowledged_bytes() <= send_limit, "send queue over");
        assert!(end.buffered_bytes() <= receive_limit, "receive buffer over");
    }
}

/// Checks that nothing but `Connected` has happened.
fn check_open(sim: &Sim, seed: u64) {
    let events = [&sim.client_events, &sim.server_events];
    assert!(
        events
            .iter()
            .all(|e| e.iter().all(|e| *e == Event::Connected)),
        "seed {seed}: {events:?}"
    );
}

/// `messages` random messages each way over the lossy channel with `config`, checking delivery
/// and the buffer bounds at every step; the simulation once both flows are done.
fn exchange(seed: u64, config: Config, messages: usize) -> (Sim, Flow, Flow) {
    let room = config.max_datagram_size - HEADER_LEN;
    let mut sim = Sim::new(seed, Faults::LOSSY, config.clone());
    let mut up = Flow::new(seed ^ 0x5555, messages, MAX_LEN, room);
    let mut down = Flow::new(seed ^ 0xAAAA, messages, MAX_LEN, room);
    let done = sim.run_until(secs(3600), |sim| {
        check_open(sim, seed);
        up.offer(&mut sim.client);
        if let Some(server) = &mut sim.server {
            down.offer(server);
            up.take(server);
        }
        down.take(&mut sim.client);
        check_bounds(sim, &config);
        up.is_done() && down.is_done()
    });
    assert!(done, "seed {seed}: stalled");
    (sim, up, down)
}

/// One seed: `MESSAGES` random messages each way over the lossy channel, then a close.
fn lossy_transfer(seed: u64) -> Outcome {
    let (mut sim, up, down) = exchange(seed, lossy_config(), MESSAGES);
    assert!(
        up.queue_full > 0 && down.queue_full > 0,
        "the senders were held back"
    );
    let simulated = sim.now - sim.client_start();
    close_from_client(&mut sim, seed);
    Outcome {
        seed,
        fragments: up.fragments + down.fragments,
        retransmissions: sim.client.stats().retransmissions + sim.server().stats().retransmissions,
        max_sends: sim.max_sends(),
        simulated,
    }
}

/// The client closes; both ends must finish with the right events.
fn close_from_client(sim: &mut Sim, seed: u64) {
    sim.client.close();
    let closed = sim.run_until(secs(120), |sim| {
        sim.client.is_closed() && sim.server().is_closed()
    });
    assert!(closed, "seed {seed}: the close did not finish");
    assert_eq!(
        sim.client_events,
        [Event::Connected, Event::Closed],
        "seed {seed}"
    );
    assert_eq!(
        sim.server_events,
        [Event::Connected, Event::ClosedByPeer],
        "seed {seed}"
    );
}

/// Runs `lossy_transfer` for every seed on a few threads.
fn lossy_transfers() -> Vec<Outcome> {
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get().min(4));
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads as u64)
            .map(|first| {
                let seeds = (first..SEEDS).step_by(threads);
                scope.spawn(move || seeds.map(lossy_transfer).collect::<Vec<_>>())
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|worker| worker.join().expect("a seed failed"))
            .collect()
    })
}

/// Every message arrives once and in order, buffers stay bounded (checked at every step), and
/// retransmissions stay bounded. The bound: if a try failed whenever the packet or the one ack
/// answering it were lost, a packet would need 1 / (0.7 × 0.7) ≈ 2.04 sends on average, 1.04
/// retransmissions; acks are cumulative and repeated, so fewer are needed (1 / 0.7 - 1 = 0.43
/// if only data losses counted). We allow 2 retransmissions per fragment, about twice the
/// pessimistic mean (each seed averages some 57,000 fragments, so its ratio hardly varies), and
/// no packet is sent more often than the 21 tries allowed a silent peer.
#[test]
fn a_lossy_channel_delivers_every_message_once_and_in_order() {
    let started = Instant::now();
    let outcomes = lossy_transfers();
    let worst = outcomes
        .iter()
        .max_by(|a, b| a.ratio().total_cmp(&b.ratio()))
        .expect("seeds ran");
    let fragments: u64 = outcomes.iter().map(|o| o.fragments).sum();
    let retransmissions: u64 = outcomes.iter().map(|o| o.retransmissions).sum();
    let max_sends = outcomes.iter().map(|o| o.max_sends).max().unwrap_or(0);
    println!(
        "{SEEDS} seeds in {:?}: {retransmissions} retransmissions for {fragments} fragments \
         ({:.3} each), worst seed {} at {:.3} ({:?} simulated); at most {max_sends} sends of one \
         packet",
        started.elapsed(),
        retransmissions as f64 / fragments as f64,
        worst.seed,
        worst.ratio(),
        worst.simulated,
    );
    assert_eq!(outcomes.len() as u64, SEEDS);
    for outcome in &outcomes {
        assert!(outcome.ratio() <= 2.0, "{outcome:?}");
        assert!(outcome.max_sends <= 21, "{outcome:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// Opening, exchanging, closing.

/// A client and server over `faults`, run until both know of the connection.
fn open(config: Config, faults: Faults) -> Sim {
    let mut sim = Sim::new(1, faults, config);
    let connected = sim.run_until(secs(30), |sim| {
        sim.server.is_some() && sim.client_events.contains(&Event::Connected)
    });
    assert!(connected, "the connection did not open");
    sim
}

/// Runs until both ends are closed; the time it took.
fn run_until_closed(sim: &mut Sim) -> Duration {
    let start = sim.now;
    let closed = sim.run_until(secs(300), |sim| {
        sim.client.is_closed() && sim.server().is_closed()
    });
    assert!(closed, "{:?} {:?}", sim.client_events, sim.server_events);
    sim.now - start
}

/// Takes every message delivered to `end`.
fn received(end: &mut Connection) -> Vec<Bytes> {
    std::iter::from_fn(|| end.recv()).collect()
}

#[test]
fn both_ends_connect_and_a_clean_exchange_delivers_in_order_without_retransmissions() {
    let mut sim = Sim::new(1, Faults::NONE, Config::default());
    let big = Rng::new(9).bytes(200_000);
    for message in [Bytes::from_static(b"hello"), big.clone(), Bytes::new()] {
        sim.client.send(message).unwrap();
    }
    assert!(sim.run_until(secs(1), |sim| sim.server.is_some()));
    sim.server().send(Bytes::from_static(b"welcome")).unwrap();
    let (mut at_server, mut at_client) = (Vec::new(), Vec::new());
    let done = sim.run_until(secs(5), |sim| {
        at_server.extend(received(sim.server()));
        at_client.extend(received(&mut sim.client));
        at_server.len() == 3 && at_client.len() == 1
    });
    assert!(done);
    assert_eq!(at_server, [Bytes::from_static(b"hello"), big, Bytes::new()]);
    assert_eq!(at_client, [Bytes::from_static(b"welcome")]);
    assert_eq!(sim.client_events, [Event::Connected]);
    assert_eq!(sim.server_events, [Event::Connected]);
    for stats in [sim.client.stats(), sim.server().stats()] {
        assert_eq!((stats.retransmissions, stats.duplicates_dropped), (0, 0));
        assert!(stats.rtt.is_some());
    }
    assert_eq!(sim.client.stats().messages_sent, 3);
    assert_eq!(sim.server().stats().messages_delivered, 3);
}

#[test]
fn a_close_by_the_client_delivers_everything_then_ends_both_ends() {
    let mut sim = open(Config::default(), Faults::NONE);
    sim.client.send(Bytes::from_static(b"last words")).unwrap();
    sim.client.close();
    assert_eq!(sim.client.send(Bytes::new()), Err(SendError::Closed));
    let took = run_until_closed(&mut sim);
    assert_eq!(sim.client_events, [Event::Connected, Event::Closed]);
    assert_eq!(sim.server_events, [Event::Connected, Event::ClosedByPeer]);
    assert_eq!(received(sim.server()), [Bytes::from_static(b"last words")]);
    let drain = Config::default().max_rto * (Config::default().max_retransmissions + 1);
    assert!(took >= drain && took < drain + secs(1), "{took:?}");
}

#[test]
fn a_close_by_the_server_ends_both_ends_and_drops_what_the_client_still_had() {
    let mut sim = open(Config::default(), Faults::NONE);
    sim.server().send(Bytes::from_static(b"bye")).unwrap();
    sim.server().close();
    sim.client.send(Bytes::from(vec![1; 100_000])).unwrap();
    run_until_closed(&mut sim);
    assert_eq!(sim.server_events, [Event::Connected, Event::Closed]);
    assert_eq!(sim.client_events, [Event::Connected, Event::ClosedByPeer]);
    assert_eq!(received(&mut sim.client), [Bytes::from_static(b"bye")]);
    assert_eq!(sim.client.unacknowledged_bytes(), 0);
    assert_eq!(sim.client.send(Bytes::new()), Err(SendError::Closed));
}

#[test]
fn closes_from_both_ends_at_once_give_both_events_even_over_a_lossy_channel() {
    for (seed, faults) in (0..20).zip([Faults::NONE].into_iter().chain([Faults::LOSSY; 19])) {
        let mut sim = Sim::new(seed, faults, lossy_config());
        assert!(sim.run_until(secs(30), |sim| sim.client_events == [Event::Connected]));
        sim.client
            .send(Bytes::from_static(b"from the client"))
            .unwrap();
        sim.server()
            .send(Bytes::from_static(b"from the server"))
            .unwrap();
        sim.client.close();
        sim.server().close();
        run_until_closed(&mut sim);
        for events in [&sim.client_events, &sim.server_events] {
            assert_eq!(events.len(), 3, "seed {seed}: {events:?}");
            assert!(events.contains(&Event::Closed) && events.contains(&Event::ClosedByPeer));
        }
        assert_eq!(
            received(sim.server()),
            [Bytes::from_static(b"from the client")]
        );
        assert_eq!(
            received(&mut sim.client),
            [Bytes::from_static(b"from the server")]
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Liveness: dead peers, idle timeout, keep-alive.

#[test]
fn a_peer_that_stops_answering_is_declared_dead_within_bounded_time() {
    let config = Config::default();
    let mut sim = open(config.clone(), Faults::NONE);
    sim.to_server = Faults::BLACKHOLE;
    sim.to_client = Faults::BLACKHOLE;
    sim.client.send(Bytes::from_static(b"anyone?")).unwrap();
    let start = sim.now;
    assert!(sim.run_until(secs(60), |sim| sim.client.is_closed()));
    let took = sim.now - start;
    assert_eq!(sim.client_events, [Event::Connected, Event::PeerDead]);
    let bound = config.max_rto * (config.max_retransmissions + 1);
    assert!(took > secs(2) && took <= bound, "{took:?}");
    // Each RTO expiry sends the packet again, and so may one probe between two expiries.
    let retransmissions = sim.client.stats().retransmissions;
    let expiries = u64::from(config.max_retransmissions);
    assert!(
        (expiries..=2 * expiries + 1).contains(&retransmissions),
        "{retransmissions}"
    );
    assert_eq!(sim.client.poll_timeout(), None);
    assert_eq!(sim.client.poll_transmit(sim.now), None);
}

#[test]
fn a_client_whose_hello_is_never_answered_is_told_the_peer_is_dead() {
    let config = Config::default();
    let mut sim = Sim::new(1, Faults::NONE, config.clone());
    sim.to_server = Faults::BLACKHOLE;
    assert!(sim.run_until(secs(60), |sim| sim.client.is_closed()));
    assert_eq!(sim.client_events, [Event::PeerDead]);
    // 200, 400, 800 ms, then the 1 s cap: 9.4 s.
    let took = sim.now.duration_since(sim.client_start());
    assert!(
        took <= config.max_rto * (config.max_retransmissions + 1),
        "{took:?}"
    );
    assert!(sim.server.is_none());
}

#[test]
fn a_connection_with_nothing_arriving_times_out_after_the_idle_timeout() {
    let config = Config {
        idle_timeout: secs(3),
        keep_alive: secs(10),
        ..Config::default()
    };
    let mut sim = open(config, Faults::NONE);
    let quiet_from = sim.now;
    sim.to_server = Faults::BLACKHOLE;
    sim.to_client = Faults::BLACKHOLE;
    assert!(sim.run_until(secs(10), |sim| sim.client.is_closed()
        && sim.server().is_closed()));
    assert_eq!(sim.client_events, [Event::Connected, Event::IdleTimeout]);
    assert_eq!(sim.server_events, [Event::Connected, Event::IdleTimeout]);
    let took = sim.now - quiet_from;
    assert!(
        took >= secs(3) - ms(5) && took <= secs(3) + ms(5),
        "{took:?}"
    );
}

#[test]
fn an_idle_live_pair_keeps_alive_with_pings_for_five_idle_timeouts() {
    let lossy = Faults {
        loss: 0.1,
        ..Faults::LOSSY
    };
    for faults in [Faults::NONE, lossy] {
        let config = Config::default();
        let mut sim = open(config.clone(), faults);
        let before = (sim.client.stats(), sim.server().stats());
        let ran = sim.run_until(config.idle_timeout * 5, |sim| {
            sim.client.is_closed() || sim.server().is_closed()
        });
        assert!(!ran, "nothing ends");
        assert_eq!(sim.client_events, [Event::Connected]);
        assert_eq!(sim.server_events, [Event::Connected]);
        let after = (sim.client.stats(), sim.server().stats());
        // A ping every 5 s from each end for 150 s (carrying the ack of the other's), plus
        // separate acks and retransmissions when the channel is lossy.
        for (before, after) in [(before.0, after.0), (before.1, after.1)] {
            let sent = after.datagrams_sent - before.datagrams_sent;
            assert!((29..=200).contains(&sent), "{sent}");
        }
    }
}

#[test]
fn a_receiver_that_stops_reading_holds_the_sender_back_without_ending_anything() {
    let config = Config {
        max_message_size: 16 * 1024,
        max_receive_buffer: 64 * 1024,
        ..Config::default()
    };
    let mut sim = open(config.clone(), Faults::LOSSY);
    let messages: Vec<Bytes> = (0..40).map(|i| Rng::new(i).bytes(16 * 1024)).collect();
    for message in &messages {
        sim.client.send(message.clone()).unwrap();
    }
    let ended = sim.run_until(secs(120), |sim| {
        check_bounds(sim, &config);
        sim.client.is_closed() || sim.server().is_closed()
    });
    assert!(!ended, "{:?} {:?}", sim.client_events, sim.server_events);
    assert!(sim.server().stats().no_room_dropped > 0);
    let mut delivered = Vec::new();
    let all = sim.run_until(secs(120), |sim| {
        check_bounds(sim, &config);
        delivered.extend(received(sim.server()));
        delivered.len() == messages.len()
    });
    assert!(all);
    assert_eq!(delivered, messages);
    assert_eq!(sim.client_events, [Event::Connected]);
}

// ---------------------------------------------------------------------------------------------
// Sending limits and reassembly.

#[test]
fn a_message_over_the_maximum_size_is_refused() {
    let config = Config {
        max_message_size: 10_000,
        ..Config::default()
    };
    let mut sim = open(config, Faults::NONE);
    let refused = sim.client.send(Bytes::from(vec![0; 10_001]));
    let too_large = SendError::TooLarge {
        size: 10_001,
        limit: 10_000,
    };
    assert_eq!(refused, Err(too_large));
    assert_eq!(sim.client.send(Bytes::from(vec![0; 10_000])), Ok(()));
}

#[test]
fn a_full_send_queue_refuses_until_the_peer_acknowledges() {
    let config = Config {
        max_message_size: 8_000,
        max_send_queue: 10_000,
        ..Config::default()
    };
    let mut sim = open(config, Faults::NONE);
    let bytes = |n| Bytes::from(vec![3; n]);
    assert_eq!(sim.client.send(bytes(8_000)), Ok(()));
    assert_eq!(sim.client.send(bytes(8_000)), Err(SendError::QueueFull));
    assert_eq!(sim.client.send(bytes(2_000)), Ok(()));
    assert_eq!(sim.client.send(bytes(1)), Err(SendError::QueueFull));
    assert_eq!(sim.client.unacknowledged_bytes(), 10_000);
    assert!(sim.run_until(secs(5), |sim| sim.client.is_idle()));
    assert_eq!(sim.client.unacknowledged_bytes(), 0);
    assert_eq!(sim.client.send(bytes(8_000)), Ok(()));
}

#[test]
fn a_message_of_the_maximum_size_reassembles_within_the_buffer_bounds() {
    let roomy = Config {
        max_retransmissions: 20,
        ..Config::default()
    };
    let tight = Config {
        max_receive_buffer: 0, // raised to the maximum message size
        ..Config::default()
    };
    for (config, faults) in [(roomy, Faults::LOSSY), (tight, Faults::NONE)] {
        let mut sim = open(config.clone(), faults);
        let message = Rng::new(5).bytes(config.max_message_size);
        sim.client.send(message.clone()).unwrap();
        let mut delivered = None;
        let done = sim.run_until(secs(300), |sim| {
            check_bounds(sim, &config);
            delivered = delivered.take().or_else(|| sim.server().recv());
            delivered.is_some()
        });
        assert!(done, "{:?}", sim.server_events);
        assert_eq!(delivered, Some(message));
    }
}

// ---------------------------------------------------------------------------------------------
// Datagrams made by hand.

/// The connection id of the hand-made datagrams.
const ID: u32 = 7;

/// A datagram of connection [`ID`]; `fragment` is (message id, index, count) for data.
fn datagram(
    packet_type: PacketType,
    number: u32,
    ack: (u32, u64),
    fragment: (u32, u16, u16),
    payload: &[u8],
) -> Vec<u8> {
    let header = Header {
        packet_type,
        connection_id: ID,
        packet_number: number,
        ack: ack.0,
        ack_delay_micros: 0,
        sack: Sack::from(ack.1),
        message_id: fragment.0,
        fragment_index: fragment.1,
        fragment_count: fragment.2,
    };
    let mut out = Vec::new();
    header.encode(&mut out);
    out.extend_from_slice(payload);
    out
}

/// A data packet of connection [`ID`] that acknowledges nothing.
fn data(number: u32, fragment: (u32, u16, u16), len: usize) -> Vec<u8> {
    datagram(PacketType::Data, number, (0, 0), fragment, &vec![1; len])
}

/// A server end opened by a hand-made hello.
fn server(config: Config, now: Instant) -> Connection {
    let hello = datagram(PacketType::Hello, 0, (0, 0), (0, 0, 0), &[]);
    Connection::server(&hello, config, now).expect("a hello")
}

/// The events of a server fed `datagrams`.
fn events_after(config: Config, datagrams: &[Vec<u8>]) -> (Vec<Event>, Connection) {
    let now = Instant::now();
    let mut server = server(config, now);
    for datagram in datagrams {
        server.handle_datagram(now, datagram);
    }
    (std::iter::from_fn(|| server.poll_event()).collect(), server)
}

#[test]
fn fragment_sequences_that_break_the_rules_are_protocol_violations() {
    let config = Config {
        max_message_size: 1_000,
        ..Config::default()
    };
    let cases = [
        vec![data(1, (1, 1, 2), 10)],
        vec![data(1, (1, 0, 3), 10), data(2, (2, 1, 3), 10)],
        vec![data(1, (1, 0, 3), 10), data(2, (1, 2, 3), 10)],
        vec![data(1, (1, 0, 2), 10), data(2, (1, 1, 3), 10)],
        vec![data(2, (1, 1, 2), 600), data(1, (1, 0, 2), 600)],
        vec![datagram(PacketType::Ack, 0, (5, 0), (0, 0, 0), &[])],
        vec![datagram(PacketType::Ping, 1, (0, 1), (0, 0, 0), &[])],
    ];
    for datagrams in cases {
        let (events, server) = events_after(config.clone(), &datagrams);
        assert!(
            matches!(events[..], [Event::Connected, Event::ProtocolViolation(_)]),
            "{events:?}"
        );
        assert!(server.is_closed());
        assert_eq!(server.buffered_bytes(), 0);
    }
}

#[test]
fn an_incomplete_message_expires() {
    let config = Config {
        reassembly_timeout: secs(2),
        ..Config::default()
    };
    let (_, mut server) = events_after(config, &[data(1, (1, 0, 2), 10)]);
    let now = Instant::now();
    let deadline = server.poll_timeout().expect("a timer");
    assert!(deadline <= now + secs(2));
    server.handle_timeout(now + secs(2));
    let expired = Event::ProtocolViolation("an incomplete message expired");
    assert_eq!(server.poll_event(), Some(expired));
    assert!(server.is_closed());
}

#[test]
fn foreign_stale_and_duplicate_datagrams_are_counted_and_dropped() {
    let now = Instant::now();
    let mut server = server(Config::default(), now);
    let mut foreign = data(1, (1, 0, 1), 3);
    foreign[4..8].copy_from_slice(&(ID + 1).to_be_bytes());
    server.handle_datagram(now, &foreign);
    assert_eq!(server.stats().foreign_dropped, 1);

    let first = data(1, (1, 0, 1), 3);
    server.handle_datagram(now, &first);
    while server.poll_transmit(now).is_some() {}
    server.handle_datagram(now, &first);
    assert_eq!(server.stats().duplicates_dropped, 1);
    assert!(
        server.poll_transmit(now).is_some(),
        "a duplicate is acknowledged"
    );
    assert_eq!(received(&mut server).len(), 1, "delivered once");

    let close = datagram(PacketType::Close, 2, (0, 0), (0, 0, 0), &[]);
    server.handle_datagram(now, &close);
    assert_eq!(server.poll_event(), Some(Event::Connected));
    assert_eq!(server.poll_event(), Some(Event::ClosedByPeer));
    let mut drained = now;
    while !server.is_closed() {
        while server.poll_transmit(drained).is_some() {}
        drained = server.poll_timeout().expect("draining");
        server.handle_timeout(drained);
    }
    let drain = Config::default().max_rto * (Config::default().max_retransmissions + 1);
    assert_eq!(drained, now + drain);
    server.handle_datagram(drained, &first);
    server.handle_datagram(drained, &close);
    let stats = server.stats();
    assert_eq!(stats.stale_dropped, 2);
    assert_eq!(stats.datagrams_received, 7);
}

#[test]
fn duplicate_acks_alone_never_cause_a_retransmission() {
    let start = Instant::now();
    let config = Config::default();
    let room = config.max_datagram_size - HEADER_LEN;
    let mut client = Connection::client(ID, config, start);
    client.send(Bytes::from(vec![0; 10 * room])).unwrap();
    let sent = std::iter::from_fn(|| client.poll_transmit(start)).count();
    assert_eq!(sent, 11, "the hello and 10 fragments");
    let ack = |ack, sack| datagram(PacketType::Ack, 0, (ack, sack), (0, 0, 0), &[]);
    let feed = |client: &mut Connection, at: Instant, ack: &[u8]| {
        client.handle_datagram(at, ack);
        client.handle_timeout(at);
        std::iter::from_fn(|| client.poll_transmit(at)).collect::<Vec<_>>()
    };

    // Packets 0..5 acknowledged after 1 ms (the RTO is now its 20 ms floor, the probe delay
    // 2 x 3 ms + 5 ms = 11 ms), then the same ack a hundred times before either timer: no gap,
    // nothing sent again.
    let in_order = ack(5, 0);
    for i in 0..100 {
        let at = start + ms(1) + Duration::from_micros(50 * i);
        assert!(feed(&mut client, at, &in_order).is_empty());
    }
    assert_eq!(client.stats().retransmissions, 0);

    // 6..=10 acknowledged too, 5 missing: a gap. Packet 5 goes again once, however often the
    // same ack arrives.
    let gap = ack(5, 0b11111);
    let mut again = Vec::new();
    for i in 0..100 {
        let at = start + ms(6) + Duration::from_micros(40 * i);
        again.extend(feed(&mut client, at, &gap));
    }
    assert_eq!(client.stats().retransmissions, 1);
    let (header, _) = Header::decode(&again[0]).unwrap();
    assert_eq!(
        (header.packet_type, header.packet_number),
        (PacketType::Data, 5)
    );
}

#[test]
fn a_packet_nothing_overtook_is_probed_once_before_its_rto() {
    let start = Instant::now();
    let mut client = Connection::client(ID, Config::default(), start);
    assert!(client.poll_transmit(start).is_some(), "the hello");
    // The hello acknowledged after 1 ms: RTO 20 ms (its floor), probe delay 2 x 3 ms + 5 ms.
    let hello_ack = datagram(PacketType::Ack, 0, (1, 0), (0, 0, 0), &[]);
    let sent_at = start + ms(1);
    client.handle_datagram(sent_at, &hello_ack);
    client
        .send(Bytes::from_static(b"lost, and nothing after it"))
        .unwrap();
    assert!(client.poll_transmit(sent_at).is_some());
    let mut resent = Vec::new();
    for step in 1..20 {
        let at = sent_at + ms(step);
        client.handle_timeout(at);
        resent.extend(std::iter::from_fn(|| client.poll_transmit(at)).map(|_| step));
    }
    assert_eq!(
        resent,
        [11],
        "one probe at 11 ms, none after it before the RTO"
    );
    assert_eq!(
        client.stats().rto,
        ms(20),
        "a probe does not back the RTO off"
    );
}

proptest! {
    #[test]
    fn random_datagrams_never_panic_and_are_counted(
        datagrams in proptest::collection::vec(
            prop_oneof![
                proptest::collection::vec(any::<u8>(), 0..120),
                proptest::collection::vec(any::<u8>(), 0..120)
                    .prop_map(|tail| [&b"RD\x02"[..], &tail].concat()),
            ],
            1..30,
        )
    ) {
        let now = Instant::now();
        let mut server = server(Config::default(), now);
        for datagram in &datagrams {
            server.handle_datagram(now, datagram);
            server.handle_timeout(now);
            while server.poll_transmit(now).is_some() {}
        }
        let decoded: Vec<_> = datagrams.iter().filter_map(|d| Header::decode(d).ok()).collect();
        let stats = server.stats();
        prop_assert_eq!(stats.garbage_dropped as usize, datagrams.len() - decoded.len());
        let foreign = decoded.iter().filter(|(h, _)| h.connection_id != ID).count();
        prop_assert_eq!(stats.foreign_dropped as usize, foreign);
    }

    #[test]
    fn random_packets_of_the_connection_never_panic_or_overflow(
        packets in proptest::collection::vec(
            (1u8..=5, 0u32..80, 0u32..3, prop_oneof![Just(0u64), any::<u64>()],
             0u32..3, any::<u16>(), 1u16..4, 0usize..1200),
            1..60,
        )
    ) {
        let config = Config { max_message_size: 2_000, max_receive_buffer: 4_000, ..Config::default() };
        let start = Instant::now();
        let mut server = server(config, start);
        for (i, (code, number, ack, sack, message, index, count, len)) in packets.into_iter().enumerate() {
            let packet_type = PacketType::from_code(code).unwrap();
            let fragment = match packet_type {
                PacketType::Data => (message, index % count, count),
                _ => (0, 0, 0),
            };
            let len = if packet_type == PacketType::Data { len } else { 0 };
            let at = start + ms(i as u64 * 100);
            server.handle_datagram(at, &datagram(packet_type, number, (ack, sack), fragment, &vec![0; len]));
            server.handle_timeout(at);
            while server.poll_transmit(at).is_some() {}
            prop_assert!(server.buffered_bytes() <= 4_000);
            if i % 7 == 0 {
                while server.recv().is_some() {}
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Wide windows, the in-flight budget, and the calls drivers use to avoid copies.

/// Every message arrives once and in order with a window four times the default, the selective
/// acks reaching across it, over the lossy channel (a few seeds: the 200-seed test covers the
/// default window).
#[test]
fn a_window_of_256_packets_delivers_every_message_once_and_in_order() {
    let config = Config {
        max_in_flight: 256,
        ..lossy_config()
    };
    for seed in 0..8 {
        let (mut sim, up, down) = exchange(seed, config.clone(), 150);
        let retransmissions =
            sim.client.stats().retransmissions + sim.server().stats().retransmissions;
        let fragments = up.fragments + down.fragments;
        assert!(
            retransmissions <= 2 * fragments,
            "seed {seed}: {retransmissions} for {fragments}"
        );
        assert_eq!(sim.server().stats().no_room_dropped, 0, "seed {seed}");
        close_from_client(&mut sim, seed);
    }
}

/// A client with `fragments` fragments of `room` bytes queued after its hello, everything sent
/// that the window allows at `start`; returns the packet numbers sent.
fn burst(config: Config, fragments: usize, start: Instant) -> (Connection, Vec<u32>) {
    let room = config.max_datagram_size - HEADER_LEN;
    let mut client = Connection::client(ID, config, start);
    client.send(Bytes::from(vec![0; fragments * room])).unwrap();
    let sent = std::iter::from_fn(|| client.poll_transmit(start))
        .map(|datagram| Header::decode(&datagram).unwrap().0.packet_number)
        .collect();
    (client, sent)
}

#[test]
fn the_window_reaches_as_far_as_the_selective_acks() {
    let start = Instant::now();
    let config = Config {
        max_in_flight: 10_000,
        ..Config::default()
    };
    let (mut client, sent) = burst(config, 400, start);
    assert_eq!(sent, (0..=256).collect::<Vec<_>>(), "SACK_BITS + 1 packets");
    // Everything but the hello acknowledged, selectively: bit 255 reaches packet 256. The
    // window still starts at the hello, so nothing new goes; the hello is sent again once its
    // gap shows, and its acknowledgement opens the window by 257 more.
    let mut all_but_the_hello = Sack::EMPTY;
    (0..256).for_each(|i| all_but_the_hello.insert(i));
    let ack = |ack, sack| {
        let header = Header {
            packet_type: PacketType::Ack,
            connection_id: ID,
            packet_number: 0,
            ack,
            ack_delay_micros: 0,
            sack,
            message_id: 0,
            fragment_index: 0,
            fragment_count: 0,
        };
        header.to_bytes()
    };
    let at = start + ms(1);
    client.handle_datagram(at, &ack(0, all_but_the_hello));
    let again: Vec<_> = std::iter::from_fn(|| client.poll_transmit(at)).collect();
    assert_eq!(again.len(), 1);
    assert_eq!(Header::decode(&again[0]).unwrap().0.packet_number, 0);
    client.handle_datagram(at, &ack(257, Sack::EMPTY));
    let more = std::iter::from_fn(|| client.poll_transmit(at)).count();
    assert_eq!(more, 144, "the rest of the 400 fragments");
}

#[test]
fn packets_the_peer_holds_ahead_of_a_gap_count_against_the_in_flight_budget() {
    // The peer holds 40 KB at most, messages up to 10 KB: 20 KB in flight at most, counted from
    // the oldest packet unacknowledged, whatever was acknowledged after it.
    let start = Instant::now();
    let config = Config {
        max_message_size: 10_000,
        max_receive_buffer: 40_000,
        max_send_queue: 100_000,
        ..Config::default()
    };
    let room = config.max_datagram_size - HEADER_LEN;
    let mut client = Connection::client(ID, config, start);
    for _ in 0..5 {
        client.send(Bytes::from(vec![0; 8 * room])).unwrap();
    }
    let sent = std::iter::from_fn(|| client.poll_transmit(start)).count();
    let fits = 20_000 / room;
    assert_eq!(sent, 1 + fits, "the hello and {fits} fragments");
    // All but the hello acknowledged: the peer still holds them behind the gap, nothing new.
    let mut sack = Sack::EMPTY;
    (0..fits as u32).for_each(|i| sack.insert(i));
    let gap = datagram(PacketType::Ack, 0, (0, 0), (0, 0, 0), &[]);
    let mut gap = Header::decode(&gap).unwrap().0;
    gap.sack = sack;
    let at = start + ms(1);
    client.handle_datagram(at, &gap.to_bytes());
    let resent: Vec<_> = std::iter::from_fn(|| client.poll_transmit(at)).collect();
    assert_eq!(resent.len(), 1, "only the hello again");
    gap.ack = (fits + 1) as u32;
    gap.sack = Sack::EMPTY;
    client.handle_datagram(at, &gap.to_bytes());
    let more = std::iter::from_fn(|| client.poll_transmit(at)).count();
    assert_eq!(more, fits, "a whole budget more");
}

#[test]
fn the_three_ways_of_polling_give_the_same_datagrams() {
    let start = Instant::now();
    let message = Rng::new(3).bytes(5_000);
    let mut ends: Vec<Connection> = (0..3)
        .map(|_| {
            let mut client = Connection::client(ID, Config::default(), start);
            client.send(message.clone()).unwrap();
            client.send(Bytes::from_static(b"short")).unwrap();
            client
        })
        .collect();
    let whole: Vec<Vec<u8>> = std::iter::from_fn(|| ends[0].poll_transmit(start)).collect();
    let mut into = Vec::new();
    let lens: Vec<usize> =
        std::iter::from_fn(|| ends[1].poll_transmit_into(start, &mut into)).collect();
    let parts: Vec<Vec<u8>> = std::iter::from_fn(|| ends[2].poll_datagram(start))
        .map(|datagram| datagram.to_vec())
        .collect();
    assert_eq!(
        whole.len(),
        7,
        "the hello, 5 fragments and the short message"
    );
    assert_eq!(whole, parts);
    assert_eq!(lens, whole.iter().map(Vec::len).collect::<Vec<_>>());
    assert_eq!(into, whole.concat());
    assert_eq!(ends[2].stats().datagrams_sent, 7);
}

#[test]
fn a_shared_datagram_is_delivered_without_a_copy() {
    let now = Instant::now();
    let mut server = server(Config::default(), now);
    let whole = Bytes::from(data(1, (1, 0, 1), 1000));
    server.handle_datagram_bytes(now, whole.clone());
    let message = server.recv().expect("delivered");
    assert_eq!(message, whole.slice(HEADER_LEN..));
    assert_eq!(
        message.as_ptr(),
        whole[HEADER_LEN..].as_ptr(),
        "the same bytes"
    );
    // A message of several fragments is put together in one buffer.
    server.handle_datagram_bytes(now, Bytes::from(data(2, (2, 0, 2), 1000)));
    server.handle_datagram(now, &data(3, (2, 1, 2), 10));
    assert_eq!(server.recv().map(|m| m.len()), Some(1010));
}

// ---------------------------------------------------------------------------------------------
// Request and reply: the round-trip estimate under loss.

/// Requests of 4 bytes, each answered by the server before the next, over a 0.2..0.3 ms path
/// that drops 20% both ways: the simulated time each exchange took, in order.
fn request_reply_exchanges(seed: u64, count: u32) -> (Vec<Duration>, Sim) {
    let faults = Faults {
        loss: 0.2,
        delay: (Duration::from_micros(200), Duration::from_micros(300)),
        ..Faults::NONE
    };
    let mut sim = Sim::new(seed, faults, Config::default());
    let connected = |s: &mut Sim| s.client_events.contains(&Event::Connected);
    assert!(sim.run_until(secs(30), connected), "connected");
    let mut took = Vec::new();
    for i in 0..count {
        let start = sim.now;
        sim.client
            .send(Bytes::from(i.to_be_bytes().to_vec()))
            .unwrap();
        let mut answered = false;
        let exchanged = sim.run_until(secs(30), |s| {
            if let Some(request) = s.server.as_mut().and_then(Connection::recv) {
                s.server().send(request).unwrap();
            }
            answered |= s.client.recv().is_some();
            answered
        });
        assert!(exchanged, "exchange {i} of seed {seed}");
        took.push(sim.now - start);
        let resume = sim.now + ms(2); // the client thinks between requests
        sim.run_until(secs(1), |s| s.now >= resume);
    }
    (took, sim)
}

#[test]
fn acks_that_waited_do_not_inflate_the_round_trip_estimate() {
    // The client's ack of a reply waits up to the ack delay (5 ms) for a request to ride on; a
    // lost reply is sent again after the server's RTO, and the ack of the request rides on the
    // copy. Counted as round-trip time, those waits would keep either end's estimate, and so
    // its RTO and probes, many times above the path's 0.5 ms.
    for seed in 0..5 {
        let (mut took, mut sim) = request_reply_exchanges(seed, 400);
        for (end, stats) in [
            ("client", sim.client.stats()),
            ("server", sim.server().stats()),
        ] {
            let srtt = stats.rtt.expect("sampled");
            assert!(srtt < ms(1), "seed {seed}: the {end}'s SRTT is {srtt:?}");
        }
        took.sort();
        let p99 = took[took.len() * 99 / 100];
        assert!(p99 < ms(100), "seed {seed}: 99th percentile {p99:?}");
    }
}
