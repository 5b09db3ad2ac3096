//! The reliable-datagram driver over real sockets on 127.0.0.1: both directions, many clients,
//! the peer limit, graceful close, a vanished peer, back-pressure, and a relay that drops 20% of
//! the datagrams both ways.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use protocol::reliable::Config;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use server_kit::lossy_relay::LossyRelay;
use server_kit::reliable_udp::{
    ConnectionEnded, DriverError, ReliableConnection, ReliableListener,
};
use tokio::net::UdpSocket;
use tokio::time::{Instant, timeout};

/// Every step of a test must finish within this.
const STEP: Duration = Duration::from_secs(10);

/// Timers short enough that a lost peer is noticed in well under a second.
fn short_config() -> Config {
    Config {
        initial_rto: Duration::from_millis(50),
        min_rto: Duration::from_millis(10),
        max_rto: Duration::from_millis(200),
        max_retransmissions: 5,
        ..Config::default()
    }
}

/// For the lossy relay: timers quick enough that the losses cost little time.
fn relay_config() -> Config {
    Config {
        min_rto: Duration::from_millis(10),
        max_rto: Duration::from_millis(200),
        ..Config::default()
    }
}

async fn socket() -> UdpSocket {
    UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("bind a UDP socket")
}

async fn listener(config: Config, max_peers: usize) -> ReliableListener {
    ReliableListener::bind(socket().await, config, max_peers).expect("bind the listener")
}

async fn connect(to: SocketAddr, config: Config) -> Result<ReliableConnection, DriverError> {
    timeout(
        STEP,
        ReliableConnection::connect(socket().await, to, config),
    )
    .await
    .expect("connect finishes in time")
}

async fn accept(listener: &mut ReliableListener) -> ReliableConnection {
    timeout(STEP, listener.accept())
        .await
        .expect("a connection arrives in time")
        .expect("the listener runs")
}

async fn recv(connection: &mut ReliableConnection) -> Option<Bytes> {
    timeout(STEP, connection.recv())
        .await
        .expect("a message or the end arrives in time")
}

/// A client connected to a fresh listener, and the listener's end of it.
async fn pair(config: Config) -> (ReliableListener, ReliableConnection, ReliableConnection) {
    let mut listener = listener(config.clone(), 8).await;
    let client = connect(listener.local_addr(), config).await.unwrap();
    let server = accept(&mut listener).await;
    (listener, client, server)
}

/// `len` bytes that differ from message to message.
fn message(seed: u64, len: usize) -> Bytes {
    let mut rng = SmallRng::seed_from_u64(seed);
    Bytes::from((0..len).map(|_| rng.random::<u8>()).collect::<Vec<u8>>())
}

#[tokio::test]
async fn messages_cross_both_ways_including_a_mebibyte() {
    let (_listener, mut client, mut server) = pair(Config::default()).await;
    assert_eq!(server.peer_addr(), client.local_addr());
    let big = message(1, 1024 * 1024);
    client.send(Bytes::from_static(b"hello")).await.unwrap();
    client.send(big.clone()).await.unwrap();
    client.send(Bytes::new()).await.unwrap();
    server.send(Bytes::from_static(b"welcome")).await.unwrap();
    server.send(big.clone()).await.unwrap();

    assert_eq!(recv(&mut server).await.as_deref(), Some(&b"hello"[..]));
    assert_eq!(recv(&mut server).await, Some(big.clone()));
    assert_eq!(recv(&mut server).await.as_deref(), Some(&b""[..]));
    assert_eq!(recv(&mut client).await.as_deref(), Some(&b"welcome"[..]));
    assert_eq!(recv(&mut client).await, Some(big));
    assert!(client.stats().datagrams_sent > 800, "{:?}", client.stats());
}

#[tokio::test]
async fn a_message_over_the_limit_is_refused_locally() {
    let config = Config {
        max_message_size: 1000,
        ..Config::default()
    };
    let (_listener, mut client, _server) = pair(config).await;
    let error = client.send(message(2, 1001)).await.unwrap_err();
    assert!(
        matches!(
            error,
            DriverError::TooLarge {
                size: 1001,
                limit: 1000
            }
        ),
        "{error}"
    );
    client.send(message(3, 1000)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listener_serves_several_clients_at_once() {
    let mut listener = listener(Config::default(), 16).await;
    let addr = listener.local_addr();
    let echo = tokio::spawn(async move {
        for _ in 0..5 {
            let mut connection = accept(&mut listener).await;
            tokio::spawn(async move {
                while let Some(message) = connection.recv().await {
                    connection.send(message).await.unwrap();
                }
            });
        }
    });
    let clients = (0..5u64).map(|c| {
        tokio::spawn(async move {
            let mut client = connect(addr, Config::default()).await.unwrap();
            for m in 0..20 {
                let sent = message(c * 100 + m, (m as usize) * 500);
                client.send(sent.clone()).await.unwrap();
                assert_eq!(recv(&mut client).await, Some(sent));
            }
            client.close().await.unwrap();
        })
    });
    for client in clients.collect::<Vec<_>>() {
        client.await.unwrap();
    }
    echo.await.unwrap();
}

#[tokio::test]
async fn hellos_beyond_max_peers_are_refused_until_a_connection_ends() {
    let mut listener = listener(short_config(), 2).await;
    let addr = listener.local_addr();
    let mut first = connect(addr, short_config()).await.unwrap();
    let _second = connect(addr, short_config()).await.unwrap();
    let mut first_served = accept(&mut listener).await;
    let _second_served = accept(&mut listener).await;

    let third = connect(addr, short_config()).await;
    assert!(
        matches!(third, Err(DriverError::Ended(ConnectionEnded::PeerDead))),
        "{third:?}"
    );
    assert!(listener.refused() >= 1);

    first.close().await.unwrap();
    assert_eq!(recv(&mut first_served).await, None);
    drop(first_served);
    let _fourth = connect(addr, short_config()).await.unwrap();
    accept(&mut listener).await;
}

#[tokio::test]
async fn a_graceful_close_reaches_the_other_side_after_every_message() {
    let (_listener, mut client, mut server) = pair(Config::default()).await;
    for i in 0..10 {
        client.send(message(i, 3000)).await.unwrap();
    }
    client.close().await.unwrap();
    assert_eq!(client.ended(), Some(ConnectionEnded::Closed));
    let sent = client.send(Bytes::from_static(b"late")).await;
    assert!(matches!(sent, Err(DriverError::Ended(_))), "{sent:?}");

    for i in 0..10 {
        assert_eq!(recv(&mut server).await, Some(message(i, 3000)));
    }
    assert_eq!(recv(&mut server).await, None);
    assert_eq!(server.ended(), Some(ConnectionEnded::ClosedByPeer));
}

#[tokio::test]
async fn dropping_a_handle_closes_its_connection() {
    let (_listener, client, mut server) = pair(Config::default()).await;
    drop(client);
    assert_eq!(recv(&mut server).await, None);
    assert_eq!(server.ended(), Some(ConnectionEnded::ClosedByPeer));
}

#[tokio::test]
async fn a_peer_that_vanishes_is_reported_dead_within_seconds() {
    let mut listener = listener(short_config(), 8).await;
    let relay = LossyRelay::start(listener.local_addr(), 0.0, 1)
        .await
        .unwrap();
    let mut client = connect(relay.local_addr(), short_config()).await.unwrap();
    let mut server = accept(&mut listener).await;
    client
        .send(Bytes::from_static(b"still there"))
        .await
        .unwrap();
    assert_eq!(
        recv(&mut server).await.as_deref(),
        Some(&b"still there"[..])
    );

    drop(relay); // the path between them is gone
    let start = Instant::now();
    server.send(Bytes::from_static(b"anyone?")).await.unwrap();
    assert_eq!(recv(&mut server).await, None);
    assert_eq!(server.ended(), Some(ConnectionEnded::PeerDead));
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "{:?}",
        start.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_reader_holds_the_sender_back_without_losing_anything() {
    let (_listener, mut client, mut server) = pair(Config::default()).await;
    let count = 300u64; // 9 MiB: more than the delivery channel and receive buffer together
    let sender = tokio::spawn(async move {
        for i in 0..count {
            client.send(message(i, 32 * 1024)).await.unwrap();
        }
        client.close().await.unwrap();
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    for i in 0..count {
        assert_eq!(
            recv(&mut server).await,
            Some(message(i, 32 * 1024)),
            "message {i}"
        );
    }
    assert_eq!(recv(&mut server).await, None);
    sender.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_cancelled_while_the_queue_is_full_gives_its_room_back() {
    let config = Config {
        max_message_size: 16 * 1024,
        max_send_queue: 64 * 1024,
        max_receive_buffer: 64 * 1024,
        ..Config::default()
    };
    let (_listener, mut client, mut server) = pair(config).await;
    // Nobody reads: the delivery channel, the receive buffer and then the send queue fill up,
    // and a send waits until it is given up.
    let mut sent = 0u64;
    loop {
        let send = client.send(message(sent, 16 * 1024));
        match timeout(Duration::from_millis(300), send).await {
            Ok(result) => result.unwrap(),
            Err(_) => break, // cancelled: not sent
        }
        sent += 1;
        assert!(sent < 1000, "the sender was never held back");
    }
    for i in 0..sent {
        assert_eq!(
            recv(&mut server).await,
            Some(message(i, 16 * 1024)),
            "message {i}"
        );
    }
    // Had the cancelled send kept its room, a queue's worth of sends would now wait for ever.
    for i in sent..sent + 8 {
        timeout(STEP, client.send(message(i, 16 * 1024)))
            .await
            .expect("room again")
            .unwrap();
    }
    for i in sent..sent + 8 {
        assert_eq!(
            recv(&mut server).await,
            Some(message(i, 16 * 1024)),
            "message {i}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn datagrams_as_large_as_loopback_takes_carry_messages_of_every_shape() {
    // One datagram per system call, gathered from header and payload, received into shared
    // buffers: messages of one fragment, of exactly one datagram's room, and of many.
    let config = Config {
        max_datagram_size: 65_507,
        ..Config::default()
    };
    let room = 65_507 - protocol::reliable::HEADER_LEN;
    let (_listener, mut client, mut server) = pair(config).await;
    let lens = [0, 1, 100, room - 1, room, room + 1, 3 * room, 1024 * 1024];
    let sender = tokio::spawn(async move {
        for round in 0..4u64 {
            for (i, &len) in lens.iter().enumerate() {
                client
                    .send(message(round * 100 + i as u64, len))
                    .await
                    .unwrap();
            }
        }
        client.close().await.unwrap();
    });
    for round in 0..4u64 {
        for (i, &len) in lens.iter().enumerate() {
            let expected = message(round * 100 + i as u64, len);
            assert_eq!(
                recv(&mut server).await,
                Some(expected),
                "round {round}, {len} bytes"
            );
        }
    }
    assert_eq!(recv(&mut server).await, None);
    sender.await.unwrap();
    assert_eq!(server.ended(), Some(ConnectionEnded::ClosedByPeer));
}

#[tokio::test]
async fn garbage_and_strangers_are_counted_and_dropped() {
    let (listener, mut client, mut server) = pair(Config::default()).await;
    let stranger = socket().await;
    for datagram in [
        &b""[..],
        b"RD",
        &[0xff; 40],
        &[b'R', b'D', 1, 2, 0, 0, 0, 9],
    ] {
        stranger
            .send_to(datagram, listener.local_addr())
            .await
            .unwrap();
    }
    client.send(Bytes::from_static(b"after")).await.unwrap();
    assert_eq!(recv(&mut server).await.as_deref(), Some(&b"after"[..]));
    assert_eq!(listener.unrouted(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_messages_cross_a_relay_dropping_a_fifth_both_ways() {
    let config = relay_config();
    let mut listener = listener(config.clone(), 8).await;
    let relay = LossyRelay::start(listener.local_addr(), 0.2, 4)
        .await
        .unwrap();
    let echo = tokio::spawn(async move {
        let mut connection = accept(&mut listener).await;
        while let Some(message) = connection.recv().await {
            connection.send(message).await.unwrap();
        }
        connection.ended()
    });
    let mut client = connect(relay.local_addr(), config).await.unwrap();
    let mut rng = SmallRng::seed_from_u64(20);
    let sizes: Vec<usize> = (0..200).map(|_| rng.random_range(0..=64 * 1024)).collect();
    let mut expected = sizes
        .iter()
        .enumerate()
        .map(|(i, &len)| message(i as u64, len));
    let mut outstanding = 0;
    for (i, &len) in sizes.iter().enumerate() {
        client.send(message(i as u64, len)).await.unwrap();
        outstanding += 1;
        if outstanding == 16 {
            expect_echo(&mut client, expected.next(), i - 15).await;
            outstanding -= 1;
        }
    }
    for (i, echoed) in expected.enumerate() {
        expect_echo(&mut client, Some(echoed), 200 - 15 + i).await;
    }
    client.close().await.unwrap();
    assert_eq!(
        timeout(STEP, echo).await.unwrap().unwrap(),
        Some(ConnectionEnded::ClosedByPeer)
    );
    assert!(
        relay.dropped() > 1000,
        "the relay dropped {}",
        relay.dropped()
    );
    let stats = client.stats();
    assert!(stats.retransmissions > 0, "{stats:?}");
}

/// The next message is `expected` (compared without printing megabytes on failure).
async fn expect_echo(client: &mut ReliableConnection, expected: Option<Bytes>, index: usize) {
    let got = recv(client).await;
    assert!(
        got == expected,
        "echo of message {index}: got {:?} bytes, expected {:?}; ended {:?}; {:?}",
        got.map(|m| m.len()),
        expected.map(|m| m.len()),
        client.ended(),
        client.stats()
    );
}
