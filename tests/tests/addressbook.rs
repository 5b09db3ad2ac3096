//! The address-book server against raw sockets: the seed client's exact traffic, hits, misses,
//! both kinds of protocol violation, persistent and pipelined connections, concurrency, garbage,
//! the idle timeout, the connection limit (one more is told the server is busy) and shutdown.

use std::time::Duration;

use addressbook::{AddressBook, Client, ClientError, Lookup, SERVER_BUSY, ServerConfig};
use integration_tests::{PATIENCE, RunningServer, read_n, read_until_closed};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{sleep, timeout};

const LUKE_HIT: &[u8] = b"R\x0eLuke Skywalker";
const MISS: &[u8] = b"R\x09Error 404";
const VIOLATION: &[u8] = b"R\x1fError: Unknown message protocol";
const BUSY: &[u8] = b"R\x12Error: server busy";

async fn start(config: ServerConfig) -> RunningServer {
    RunningServer::start(|listener, shutdown| addressbook::run(listener, config, shutdown)).await
}

async fn start_seed() -> RunningServer {
    start(ServerConfig::new(AddressBook::seed())).await
}

/// A response read the way the seed's client reads it: the 2-byte header, then the body one
/// byte at a time.
async fn read_like_seed_client(stream: &mut TcpStream) -> Vec<u8> {
    let mut message = read_n(stream, 2).await;
    let len = message[1] as i8;
    assert!(len >= 0, "negative length from the server");
    for _ in 0..len {
        message.extend(read_n(stream, 1).await);
    }
    message
}

/// A query sent the way the seed's client sends it: header and body in two writes.
async fn send_like_seed_client(stream: &mut TcpStream, email: &str) {
    stream.write_all(&[b'Q', email.len() as u8]).await.unwrap();
    stream.flush().await.unwrap();
    sleep(Duration::from_millis(5)).await;
    stream.write_all(email.as_bytes()).await.unwrap();
}

#[tokio::test]
async fn the_seed_clients_exact_traffic_is_answered() {
    let server = start_seed().await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    send_like_seed_client(&mut stream, "luke@gmail.com").await;
    assert_eq!(read_like_seed_client(&mut stream).await, LUKE_HIT);
    drop(stream);

    // The seed's client opened a new connection for every question.
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    send_like_seed_client(&mut stream, "jihoon.ryoo@sbu.edu").await;
    assert_eq!(
        read_like_seed_client(&mut stream).await,
        b"R\x0bJihoon Ryoo"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_miss_is_error_404_byte_for_byte() {
    let server = start_seed().await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    send_like_seed_client(&mut stream, "nobody@nowhere.org").await;
    assert_eq!(read_like_seed_client(&mut stream).await, MISS);
    server.stop().await;
}

#[tokio::test]
async fn lookups_ignore_the_case_of_the_email() {
    let server = start_seed().await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    stream.write_all(b"Q\x0eLUKE@Gmail.COM").await.unwrap();
    assert_eq!(read_n(&mut stream, LUKE_HIT.len()).await, LUKE_HIT);
    server.stop().await;
}

#[tokio::test]
async fn an_unknown_type_byte_is_answered_then_closed() {
    let server = start_seed().await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    stream.write_all(b"X\x05hello").await.unwrap();
    assert_eq!(read_until_closed(&mut stream).await, VIOLATION);
    server.stop().await;
}

#[tokio::test]
async fn a_negative_length_is_answered_then_closed() {
    let server = start_seed().await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    stream.write_all(b"Q\xff").await.unwrap();
    assert_eq!(read_until_closed(&mut stream).await, VIOLATION);
    server.stop().await;
}

#[tokio::test]
async fn a_response_sent_by_a_client_is_a_violation() {
    let server = start_seed().await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    stream.write_all(LUKE_HIT).await.unwrap();
    assert_eq!(read_until_closed(&mut stream).await, VIOLATION);
    server.stop().await;
}

#[tokio::test]
async fn answers_before_a_violation_still_arrive_in_order() {
    let server = start_seed().await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    stream
        .write_all(b"Q\x0eluke@gmail.comQ\x01xZ\x00")
        .await
        .unwrap();
    let expected = [LUKE_HIT, MISS, VIOLATION].concat();
    assert_eq!(read_until_closed(&mut stream).await, expected);
    server.stop().await;
}

/// Closing a socket with unread bytes makes the kernel send a reset, which can destroy the answer
/// in flight. The violator here sends a large tail after its bad header and reads only later: it
/// must still get the whole answer and a clean end of stream.
#[tokio::test]
async fn the_violation_answer_survives_unread_trailing_bytes() {
    let server = start_seed().await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    let mut burst = b"X\x05hello".to_vec();
    burst.extend(std::iter::repeat_n(0xAB, 64 * 1024));
    stream.write_all(&burst).await.unwrap();
    // Give a server that closes at once every chance to reset the connection before we read.
    sleep(Duration::from_millis(300)).await;
    assert_eq!(read_until_closed(&mut stream).await, VIOLATION);
    server.stop().await;
}

#[tokio::test]
async fn one_connection_answers_many_queries_in_turn() {
    let server = start_seed().await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    for round in 0..50 {
        if round % 2 == 0 {
            send_like_seed_client(&mut stream, "luke@gmail.com").await;
            assert_eq!(
                read_like_seed_client(&mut stream).await,
                LUKE_HIT,
                "round {round}"
            );
        } else {
            stream.write_all(b"Q\x07x@y.org").await.unwrap();
            assert_eq!(
                read_like_seed_client(&mut stream).await,
                MISS,
                "round {round}"
            );
        }
    }
    server.stop().await;
}

#[tokio::test]
async fn pipelined_queries_in_one_write_are_answered_in_order() {
    let server = start_seed().await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    let mut queries = Vec::new();
    let mut expected = Vec::new();
    for i in 0..300 {
        if i % 3 == 0 {
            queries.extend_from_slice(b"Q\x0dabc@gmail.com");
            expected.extend_from_slice(b"R\x03abc");
        } else {
            queries.extend_from_slice(b"Q\x09no@one.io");
            expected.extend_from_slice(MISS);
        }
    }
    stream.write_all(&queries).await.unwrap();
    assert_eq!(read_n(&mut stream, expected.len()).await, expected);
    stream.shutdown().await.unwrap();
    assert_eq!(read_until_closed(&mut stream).await, b"");
    server.stop().await;
}

#[tokio::test]
async fn a_query_split_across_many_writes_is_answered() {
    let server = start_seed().await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    for byte in b"Q\x0eluke@gmail.com" {
        stream.write_all(&[*byte]).await.unwrap();
        sleep(Duration::from_millis(2)).await;
    }
    assert_eq!(read_n(&mut stream, LUKE_HIT.len()).await, LUKE_HIT);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_concurrent_clients_are_all_answered() {
    let server = start_seed().await;
    let addr = server.addr;
    let clients: Vec<_> = (0..200)
        .map(|i| {
            tokio::spawn(async move {
                let mut stream = TcpStream::connect(addr).await.unwrap();
                for _ in 0..5 {
                    if i % 2 == 0 {
                        send_like_seed_client(&mut stream, "luke@gmail.com").await;
                        assert_eq!(read_like_seed_client(&mut stream).await, LUKE_HIT);
                    } else {
                        stream.write_all(b"Q\x0anope@no.no").await.unwrap();
                        assert_eq!(read_like_seed_client(&mut stream).await, MISS);
                    }
                }
            })
        })
        .collect();
    for client in clients {
        timeout(PATIENCE, client).await.unwrap().unwrap();
    }
    server.stop().await;
}

/// A small deterministic generator, so that the garbage is the same on every run.
fn garbage(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect()
}

#[tokio::test]
async fn garbage_from_some_clients_does_not_affect_the_others() {
    let server = start_seed().await;
    let addr = server.addr;
    let vandals: Vec<_> = (0..20)
        .map(|seed| {
            tokio::spawn(async move {
                let mut stream = TcpStream::connect(addr).await.unwrap();
                // The server may close on the first bad header; later writes may fail, fine.
                let _ = stream.write_all(&garbage(seed, 4096)).await;
                let mut sink = Vec::new();
                let _ = timeout(PATIENCE, stream.read_to_end(&mut sink)).await;
            })
        })
        .collect();
    let mut honest = Client::connect(addr, PATIENCE).await.unwrap();
    for _ in 0..100 {
        assert_eq!(
            honest.lookup("roshan.poudel@stonybrook.edu").await.unwrap(),
            Lookup::Found("Roshan Poudel".into())
        );
    }
    for vandal in vandals {
        vandal.await.unwrap();
    }
    let mut late = Client::connect(addr, PATIENCE).await.unwrap();
    assert_eq!(
        late.lookup("abc@gmail.com").await.unwrap(),
        Lookup::Found("abc".into())
    );
    server.stop().await;
}

#[tokio::test]
async fn an_idle_connection_is_closed_and_an_active_one_is_not() {
    let mut config = ServerConfig::new(AddressBook::seed());
    config.idle_timeout = Duration::from_millis(300);
    let server = start(config).await;

    let mut active = TcpStream::connect(server.addr).await.unwrap();
    for _ in 0..8 {
        sleep(Duration::from_millis(100)).await;
        active.write_all(b"Q\x0eluke@gmail.com").await.unwrap();
        assert_eq!(read_n(&mut active, LUKE_HIT.len()).await, LUKE_HIT);
    }

    let mut idle = TcpStream::connect(server.addr).await.unwrap();
    let started = tokio::time::Instant::now();
    assert_eq!(read_until_closed(&mut idle).await, b"");
    assert!(started.elapsed() >= Duration::from_millis(250));
    server.stop().await;
}

#[tokio::test]
async fn a_query_trickled_a_byte_at_a_time_is_cut_off_at_the_idle_timeout() {
    let mut config = ServerConfig::new(AddressBook::seed());
    config.idle_timeout = Duration::from_millis(300);
    let server = start(config).await;
    let mut slow = TcpStream::connect(server.addr).await.unwrap();
    let started = tokio::time::Instant::now();
    let query = b"Q\x0eluke@gmail.com";
    let mut sent = 0;
    for byte in query {
        if slow.write_all(&[*byte]).await.is_err() || started.elapsed() > PATIENCE {
            break;
        }
        sent += 1;
        sleep(Duration::from_millis(50)).await;
    }
    // The timeout covers the whole query, not each byte: the connection is gone mid-query.
    assert!(sent < query.len(), "cut off before the query was whole");
    assert_eq!(read_until_closed(&mut slow).await, b"");
    assert!(started.elapsed() >= Duration::from_millis(250));
    server.stop().await;
}

/// A server of one connection, with `first` holding it (its query answered).
async fn start_full() -> (RunningServer, TcpStream) {
    let mut config = ServerConfig::new(AddressBook::seed());
    config.max_connections = 1;
    let server = start(config).await;
    let mut first = TcpStream::connect(server.addr).await.unwrap();
    first.write_all(b"Q\x0eluke@gmail.com").await.unwrap();
    assert_eq!(read_n(&mut first, LUKE_HIT.len()).await, LUKE_HIT);
    (server, first)
}

#[tokio::test]
async fn a_connection_over_the_limit_is_told_the_server_is_busy_and_closed() {
    let (server, mut first) = start_full().await;

    assert_eq!(&BUSY[2..], SERVER_BUSY.as_bytes());
    // Told at once, before it sends anything, then closed cleanly.
    let mut silent = TcpStream::connect(server.addr).await.unwrap();
    assert_eq!(read_until_closed(&mut silent).await, BUSY);

    // A seed client sends its query first: the same answer, and no reset destroys it.
    let mut asking = TcpStream::connect(server.addr).await.unwrap();
    send_like_seed_client(&mut asking, "luke@gmail.com").await;
    assert_eq!(read_until_closed(&mut asking).await, BUSY);

    // The connection holding the slot is still served.
    first.write_all(b"Q\x0eluke@gmail.com").await.unwrap();
    assert_eq!(read_n(&mut first, LUKE_HIT.len()).await, LUKE_HIT);
    server.stop().await;
}

#[tokio::test]
async fn the_client_reports_a_busy_server_and_a_freed_slot_serves_again() {
    let (server, first) = start_full().await;
    let mut refused = Client::connect(server.addr, PATIENCE).await.unwrap();
    let err = refused.lookup("luke@gmail.com").await.unwrap_err();
    assert!(matches!(err, ClientError::Busy), "{err:?}");
    assert!(
        !err.is_connection_lost(),
        "a busy server is not a lost connection"
    );

    drop(first);
    // The slot frees once the server sees the close; until then newcomers are still refused.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let mut client = Client::connect(server.addr, PATIENCE).await.unwrap();
        match client.lookup("abc@gmail.com").await {
            Ok(answer) => {
                assert_eq!(answer, Lookup::Found("abc".into()));
                break;
            }
            Err(ClientError::Busy) if tokio::time::Instant::now() < deadline => {
                sleep(Duration::from_millis(10)).await;
            }
            Err(err) => panic!("the freed slot did not serve: {err}"),
        }
    }
    server.stop().await;
}

#[tokio::test]
async fn shutdown_closes_open_connections_promptly() {
    let server = start_seed().await;
    let mut open = TcpStream::connect(server.addr).await.unwrap();
    open.write_all(b"Q\x0eluke@gmail.com").await.unwrap();
    assert_eq!(read_n(&mut open, LUKE_HIT.len()).await, LUKE_HIT);
    server.stop().await;
    assert_eq!(read_until_closed(&mut open).await, b"");
}

#[tokio::test]
async fn a_book_file_replaces_the_seed_entries() {
    let book = AddressBook::parse(
        "email,name\nyoda@dagobah.org,Yoda\n",
        std::path::Path::new("test.csv"),
    )
    .unwrap();
    let server = start(ServerConfig::new(book)).await;
    let mut client = Client::connect(server.addr, PATIENCE).await.unwrap();
    let answers = client
        .lookup_all(&["Yoda@Dagobah.org".into(), "luke@gmail.com".into()])
        .await
        .unwrap();
    assert_eq!(answers, [Lookup::Found("Yoda".into()), Lookup::NotFound]);
    server.stop().await;
}

#[tokio::test]
async fn the_client_pipelines_more_queries_than_its_window() {
    let server = start_seed().await;
    let mut client = Client::connect(server.addr, PATIENCE).await.unwrap();
    let emails: Vec<String> = (0..1000)
        .map(|i| {
            if i % 2 == 0 {
                "abc@gmail.com".into()
            } else {
                format!("user{i}@example.com")
            }
        })
        .collect();
    let answers = client.lookup_all(&emails).await.unwrap();
    assert_eq!(answers.len(), 1000);
    for (i, answer) in answers.iter().enumerate() {
        let expected = if i % 2 == 0 {
            Lookup::Found("abc".into())
        } else {
            Lookup::NotFound
        };
        assert_eq!(*answer, expected, "answer {i}");
    }
    server.stop().await;
}
