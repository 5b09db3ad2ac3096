//! The TCP-versus-UDP file transfer over real sockets on 127.0.0.1: files arriving intact over
//! TCP and over paced UDP, a relay that drops, duplicates and reorders chosen datagrams and the
//! report counting exactly that, names and sizes refused, garbage datagrams ignored, existing
//! files kept, a busy receiver, a cut-off body, and shutdown.

use std::collections::HashSet;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chat_p2p::transfer::receive::{self, ReceivedFile, ReceiverConfig};
use chat_p2p::transfer::send::{self, SendConfig, SendError};
use chat_p2p::transfer::{RefuseReason, Report, Transport};
use protocol::chat_transfer::{
    Announce, Control, ControlCodec, DatagramHeader, datagram_count, decode_datagram,
    encode_datagram,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::timeout;
use tokio_util::codec::{Decoder, Encoder};

const PATIENCE: Duration = Duration::from_secs(20);
/// A rate at which loopback UDP loses nothing, even in a debug build.
const GENTLE_RATE: u64 = 4_000_000;
/// A size that is not a multiple of the datagram payload, so the last datagram is short.
const SIZE: usize = 1_000_123;

/// Bytes that differ from datagram to datagram and are never a run of zeros.
fn patterned(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| ((i % 251) as u8).wrapping_add((i / 251) as u8) | 1)
        .collect()
}

/// A receiver on 127.0.0.1:0 saving to a fresh folder.
struct Receiver {
    addr: SocketAddr,
    dir: tempfile::TempDir,
    reports: mpsc::Receiver<ReceivedFile>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<io::Result<()>>,
}

impl Receiver {
    async fn start(adjust: impl FnOnce(&mut ReceiverConfig)) -> Receiver {
        let dir = tempfile::tempdir().unwrap();
        let mut config = ReceiverConfig::new(dir.path());
        config.udp_recv_buffer = Some(4 << 20);
        config.grace = Duration::from_millis(300);
        adjust(&mut config);
        let (tcp, udp) = receive::bind(([127, 0, 0, 1], 0).into()).await.unwrap();
        let addr = tcp.local_addr().unwrap();
        assert_eq!(udp.local_addr().unwrap(), addr, "the same port for both");
        let (reports_tx, reports) = mpsc::channel(16);
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(receive::run(tcp, udp, config, reports_tx, async {
            let _ = stopped.await;
        }));
        Receiver {
            addr,
            dir,
            reports,
            stop: Some(stop),
            task,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The names in the folder, sorted.
    fn names(&self) -> Vec<String> {
        names_in(self.dir.path())
    }

    async fn next_report(&mut self) -> ReceivedFile {
        timeout(PATIENCE, self.reports.recv())
            .await
            .expect("a report in time")
            .expect("the receiver is running")
    }

    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        timeout(PATIENCE, &mut self.task)
            .await
            .expect("the receiver stops in time")
            .unwrap()
            .unwrap();
    }
}

fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

/// Writes `contents` as `name` in a fresh folder.
fn source_file(name: &str, contents: &[u8]) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    std::fs::write(&path, contents).unwrap();
    (dir, path)
}

async fn send_with(path: &Path, to: SocketAddr, config: &SendConfig) -> Result<Report, SendError> {
    timeout(PATIENCE, send::send_file(path, to, config, |_, _| {}))
        .await
        .expect("the transfer ends in time")
}

fn udp_config() -> SendConfig {
    let mut config = SendConfig::new(Transport::Udp);
    config.rate = Some(GENTLE_RATE);
    config
}

#[tokio::test]
async fn a_file_over_tcp_arrives_intact() {
    let mut receiver = Receiver::start(|_| {}).await;
    let contents = patterned(3 * 1024 * 1024 + 7);
    let (_src, path) = source_file("clip.bin", &contents);
    let mut progress = Vec::new();
    let report = timeout(
        PATIENCE,
        send::send_file(
            &path,
            receiver.addr,
            &SendConfig::new(Transport::Tcp),
            |done, total| progress.push((done, total)),
        ),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(report.transport, Transport::Tcp);
    assert!(report.intact && report.is_complete());
    assert_eq!(report.file_size, contents.len() as u64);
    assert_eq!(
        report.datagrams,
        Default::default(),
        "no datagrams over TCP"
    );
    assert!(report.elapsed_micros > 0);
    assert_eq!(report.saved_as, "clip.bin");
    assert_eq!(
        progress.last(),
        Some(&(contents.len() as u64, contents.len() as u64))
    );
    assert_eq!(std::fs::read(receiver.path("clip.bin")).unwrap(), contents);
    assert_eq!(receiver.names(), ["clip.bin"], "no temporary file left");

    let heard = receiver.next_report().await;
    assert_eq!((heard.name.as_str(), &heard.report), ("clip.bin", &report));
    receiver.stop().await;
}

#[tokio::test]
async fn a_file_over_gently_paced_udp_arrives_intact() {
    let mut receiver = Receiver::start(|_| {}).await;
    let contents = patterned(SIZE);
    let (_src, path) = source_file("clip.bin", &contents);
    let report = send_with(&path, receiver.addr, &udp_config())
        .await
        .unwrap();
    let expected = datagram_count(SIZE as u64, 1200).unwrap();
    assert_eq!(report.transport, Transport::Udp);
    let counts = report.datagrams;
    assert_eq!(
        (counts.sent, counts.expected, counts.received),
        (expected, expected, expected)
    );
    assert_eq!(
        (
            counts.lost(),
            counts.reordered,
            counts.duplicated,
            counts.invalid
        ),
        (0, 0, 0, 0)
    );
    assert!(report.intact && report.is_complete());
    assert_eq!(std::fs::read(receiver.path("clip.bin")).unwrap(), contents);
    assert_eq!(receiver.next_report().await.report, report);
    receiver.stop().await;
}

/// What the relay does to which sequence numbers.
#[derive(Debug, Clone, Default)]
struct Plan {
    drop: HashSet<u32>,
    duplicate: HashSet<u32>,
    /// Holds the first back until the second has been forwarded.
    hold: Option<(u32, u32)>,
    /// After forwarding datagram 0, also sends two datagrams of the transfer that cannot be
    /// part of the file: a sequence number out of range, and datagram 1 cut short.
    inject_invalid: bool,
}

/// A relay on 127.0.0.1:0 forwarding datagrams to `target` one at a time, as `plan` says.
async fn start_relay(target: SocketAddr, plan: Plan) -> (SocketAddr, JoinHandle<()>) {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    socket2::SockRef::from(&socket)
        .set_recv_buffer_size(4 << 20)
        .unwrap();
    let addr = socket.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let mut buf = vec![0; 65_536];
        let mut held: Option<Vec<u8>> = None;
        loop {
            let Ok((len, _)) = socket.recv_from(&mut buf).await else {
                return;
            };
            let datagram = &buf[..len];
            let (header, _) = decode_datagram(datagram).expect("the sender sends data datagrams");
            let seq = header.seq;
            if plan.drop.contains(&seq) {
                continue;
            }
            if plan.hold.is_some_and(|(first, _)| first == seq) {
                held = Some(datagram.to_vec());
                continue;
            }
            socket.send_to(datagram, target).await.unwrap();
            if plan.duplicate.contains(&seq) {
                socket.send_to(datagram, target).await.unwrap();
            }
            if plan.inject_invalid && seq == 0 {
                let mut out_of_range = datagram.to_vec();
                out_of_range[9..13].copy_from_slice(&u32::MAX.to_be_bytes());
                socket.send_to(&out_of_range, target).await.unwrap();
                let short = DatagramHeader {
                    id: header.id,
                    seq: 1,
                };
                socket
                    .send_to(&encode_datagram(short, b"too short"), target)
                    .await
                    .unwrap();
            }
            if plan.hold.is_some_and(|(_, after)| after == seq) {
                let held = held.take().expect("the held datagram came first");
                socket.send_to(&held, target).await.unwrap();
            }
        }
    });
    (addr, task)
}

#[tokio::test]
async fn through_a_relay_that_drops_duplicates_and_reorders_the_report_counts_exactly_that() {
    let mut receiver = Receiver::start(|_| {}).await;
    let contents = patterned(SIZE);
    let (_src, path) = source_file("clip.bin", &contents);
    let dropped = [5u32, 6, 100, 700];
    let plan = Plan {
        drop: dropped.into(),
        duplicate: [10, 200].into(),
        hold: Some((50, 53)),
        inject_invalid: true,
    };
    let (relay, relay_task) = start_relay(receiver.addr, plan).await;
    let mut config = udp_config();
    config.udp_target = Some(relay);
    let report = send_with(&path, receiver.addr, &config).await.unwrap();

    let expected = datagram_count(SIZE as u64, 1200).unwrap();
    let counts = report.datagrams;
    assert_eq!(counts.sent, expected);
    assert_eq!(counts.expected, expected);
    assert_eq!(counts.received, expected - 4);
    assert_eq!(counts.lost(), 4);
    assert_eq!(counts.duplicated, 2);
    assert_eq!(counts.reordered, 1);
    assert_eq!(counts.invalid, 2);
    assert_eq!(report.bytes_received, SIZE as u64 - 4 * 1200);
    assert!(!report.intact && !report.is_complete());
    assert_eq!(report.saved_as, "clip.bin.incomplete");
    assert_eq!(
        receiver.names(),
        ["clip.bin.incomplete"],
        "never the real name"
    );

    let saved = std::fs::read(receiver.path("clip.bin.incomplete")).unwrap();
    assert_eq!(saved.len(), SIZE, "holes are zero-filled, not cut out");
    let lost: Vec<std::ops::Range<usize>> = dropped
        .iter()
        .map(|&seq| seq as usize * 1200..(seq as usize + 1) * 1200)
        .collect();
    for (i, (&got, &sent)) in saved.iter().zip(&contents).enumerate() {
        if lost.iter().any(|range| range.contains(&i)) {
            assert_eq!(got, 0, "byte {i} was lost");
        } else {
            assert_eq!(got, sent, "byte {i} arrived");
        }
    }
    assert_eq!(
        receiver.next_report().await.report,
        report,
        "the sender heard the same"
    );
    relay_task.abort();
    receiver.stop().await;
}

/// Connects and sends one announce; the receiver's first answer.
async fn announce_raw(to: SocketAddr, announce: Announce) -> (TcpStream, Control) {
    let mut stream = TcpStream::connect(to).await.unwrap();
    let mut wire = bytes::BytesMut::new();
    ControlCodec::default()
        .encode(&Control::Announce(announce), &mut wire)
        .unwrap();
    stream.write_all(&wire).await.unwrap();
    let answer = read_frame(&mut stream).await;
    (stream, answer)
}

async fn read_frame(stream: &mut TcpStream) -> Control {
    let mut buf = bytes::BytesMut::new();
    let mut codec = ControlCodec::default();
    loop {
        if let Some(frame) = codec.decode(&mut buf).unwrap() {
            return frame;
        }
        let n = timeout(PATIENCE, stream.read_buf(&mut buf))
            .await
            .expect("an answer in time")
            .unwrap();
        assert!(n > 0, "the receiver closed without answering");
    }
}

fn refusal_reason(answer: &Control) -> RefuseReason {
    match answer {
        Control::Refused(refusal) => refusal.reason,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn bad_file_names_are_refused_and_nothing_is_written() {
    let receiver = Receiver::start(|_| {}).await;
    for name in [
        "../evil",
        "a/b",
        "a\\b",
        ".hidden",
        "",
        "C:evil",
        "new\nline",
    ] {
        let (_, answer) = announce_raw(receiver.addr, Announce::tcp(1, name, 3, [0; 32])).await;
        assert_eq!(refusal_reason(&answer), RefuseReason::BadName, "{name:?}");
    }
    let long = "x".repeat(201);
    let (_, answer) = announce_raw(receiver.addr, Announce::tcp(1, long, 3, [0; 32])).await;
    assert_eq!(refusal_reason(&answer), RefuseReason::BadName);
    assert!(receiver.names().is_empty());
    receiver.stop().await;
}

#[tokio::test]
async fn an_oversize_announce_is_refused() {
    let receiver = Receiver::start(|config| {
        config.max_file_size = 1000;
        config.max_datagrams = 100;
    })
    .await;
    let (_, answer) = announce_raw(receiver.addr, Announce::tcp(1, "big", 1001, [0; 32])).await;
    assert_eq!(refusal_reason(&answer), RefuseReason::TooLarge);
    let many = Announce::udp(2, "many", 1000, [0; 32], 5).unwrap();
    let (_, answer) = announce_raw(receiver.addr, many).await;
    assert_eq!(refusal_reason(&answer), RefuseReason::BadDatagrams);

    let (_src, path) = source_file("big.bin", &patterned(1001));
    let err = send_with(&path, receiver.addr, &SendConfig::new(Transport::Tcp))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, SendError::Refused(refusal) if refusal.reason == RefuseReason::TooLarge),
        "{err}"
    );
    assert!(err.to_string().contains("limit of 1000 bytes"), "{err}");
    assert!(receiver.names().is_empty());
    receiver.stop().await;
}

#[tokio::test]
async fn garbage_to_either_port_does_no_harm() {
    let receiver = Receiver::start(|_| {}).await;
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let stranger = encode_datagram(DatagramHeader { id: 42, seq: 0 }, b"who?");
    let garbage: [&[u8]; 5] = [b"", b"D", &[0xff; 13], &[b'D'; 200], &stranger];
    for datagram in garbage {
        socket.send_to(datagram, receiver.addr).await.unwrap();
    }
    let mut chat = TcpStream::connect(receiver.addr).await.unwrap();
    chat.write_all(b"5         alice").await.unwrap();
    assert_eq!(
        refusal_reason(&read_frame(&mut chat).await),
        RefuseReason::Protocol
    );

    let contents = patterned(50_000);
    let (_src, path) = source_file("after.bin", &contents);
    let report = send_with(&path, receiver.addr, &udp_config())
        .await
        .unwrap();
    assert!(report.intact, "{report:?}");
    assert_eq!(std::fs::read(receiver.path("after.bin")).unwrap(), contents);
    receiver.stop().await;
}

#[tokio::test]
async fn an_existing_file_is_never_replaced() {
    let receiver = Receiver::start(|_| {}).await;
    std::fs::write(receiver.path("notes.txt"), b"mine").unwrap();
    let (_src, path) = source_file("notes.txt", b"theirs");
    for (transport, expected) in [
        (Transport::Tcp, "notes (1).txt"),
        (Transport::Udp, "notes (2).txt"),
    ] {
        let report = send_with(&path, receiver.addr, &SendConfig::new(transport))
            .await
            .unwrap();
        assert_eq!(report.saved_as, expected);
        assert_eq!(std::fs::read(receiver.path(expected)).unwrap(), b"theirs");
    }
    assert_eq!(std::fs::read(receiver.path("notes.txt")).unwrap(), b"mine");
    receiver.stop().await;
}

#[tokio::test]
async fn an_empty_file_travels_both_ways() {
    let receiver = Receiver::start(|_| {}).await;
    let (_src, path) = source_file("empty", b"");
    for transport in [Transport::Tcp, Transport::Udp] {
        let report = send_with(&path, receiver.addr, &SendConfig::new(transport))
            .await
            .unwrap();
        assert!(report.intact && report.is_complete(), "{transport}");
        assert_eq!(report.datagrams.expected, 0);
    }
    assert_eq!(receiver.names(), ["empty", "empty (1)"]);
    receiver.stop().await;
}

#[tokio::test]
async fn transfers_run_at_the_same_time() {
    let receiver = Receiver::start(|_| {}).await;
    let contents = patterned(SIZE);
    let (_a, tcp_path) = source_file("a.bin", &contents);
    let (_b, udp_path) = source_file("b.bin", &contents);
    let tcp_config = SendConfig::new(Transport::Tcp);
    let udp_config = udp_config();
    let (tcp, udp) = tokio::join!(
        send_with(&tcp_path, receiver.addr, &tcp_config),
        send_with(&udp_path, receiver.addr, &udp_config),
    );
    assert!(tcp.unwrap().intact);
    assert!(udp.unwrap().intact);
    assert_eq!(receiver.names(), ["a.bin", "b.bin"]);
    receiver.stop().await;
}

#[tokio::test]
async fn a_busy_receiver_says_so() {
    let receiver = Receiver::start(|config| config.max_transfers = 1).await;
    let (holder, answer) = announce_raw(receiver.addr, Announce::tcp(1, "slow", 10, [0; 32])).await;
    assert_eq!(answer, Control::Accept);
    let (_src, path) = source_file("x", b"x");
    let err = send_with(&path, receiver.addr, &SendConfig::new(Transport::Tcp))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, SendError::Refused(refusal) if refusal.reason == RefuseReason::Busy),
        "{err}"
    );
    drop(holder);
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        match send_with(&path, receiver.addr, &SendConfig::new(Transport::Tcp)).await {
            Ok(report) => break assert!(report.intact),
            Err(err) => assert!(tokio::time::Instant::now() < deadline, "{err}"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    receiver.stop().await;
}

#[tokio::test]
async fn a_transfer_id_in_use_is_refused() {
    let receiver =
        Receiver::start(|config| config.shutdown_grace = Duration::from_millis(50)).await;
    let announce = Announce::udp(99, "first", 10, [0; 32], 1200).unwrap();
    let (_first, answer) = announce_raw(receiver.addr, announce.clone()).await;
    assert_eq!(answer, Control::Accept);
    let again = Announce {
        name: "second".into(),
        ..announce
    };
    let (_, answer) = announce_raw(receiver.addr, again).await;
    assert_eq!(refusal_reason(&answer), RefuseReason::DuplicateId);
    receiver.stop().await;
}

#[tokio::test]
async fn a_missing_output_folder_stops_the_receiver_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let (tcp, udp) = receive::bind(([127, 0, 0, 1], 0).into()).await.unwrap();
    let config = ReceiverConfig::new(dir.path().join("missing"));
    let (reports, _) = mpsc::channel(1);
    let err = timeout(
        PATIENCE,
        receive::run(tcp, udp, config, reports, std::future::pending()),
    )
    .await
    .unwrap()
    .unwrap_err();
    assert!(err.to_string().contains("output folder"), "{err}");
}

#[tokio::test]
async fn a_tcp_body_cut_off_leaves_nothing_behind() {
    let receiver = Receiver::start(|_| {}).await;
    let (mut stream, answer) =
        announce_raw(receiver.addr, Announce::tcp(1, "cut", 1000, [0; 32])).await;
    assert_eq!(answer, Control::Accept);
    assert_eq!(receiver.names().len(), 1, "the temporary file");
    stream.write_all(&[1; 500]).await.unwrap();
    drop(stream);
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !receiver.names().is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{:?}",
            receiver.names()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    receiver.stop().await;
}

#[tokio::test]
async fn a_sender_that_never_says_done_is_given_up_on() {
    let receiver = Receiver::start(|config| config.io_timeout = Duration::from_millis(300)).await;
    let announce = Announce::udp(7, "quiet", 10, [0; 32], 1200).unwrap();
    let (mut stream, answer) = announce_raw(receiver.addr, announce).await;
    assert_eq!(answer, Control::Accept);
    assert_eq!(
        refusal_reason(&read_frame(&mut stream).await),
        RefuseReason::Timeout
    );
    assert!(receiver.names().is_empty());
    receiver.stop().await;
}

#[tokio::test]
async fn an_absent_receiver_is_a_connect_error() {
    let (_src, path) = source_file("x", b"x");
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let err = send_with(&path, closed, &SendConfig::new(Transport::Tcp))
        .await
        .unwrap_err();
    assert!(matches!(err, SendError::Connect { .. }), "{err}");
}

#[tokio::test]
async fn shutdown_cuts_off_a_transfer_that_does_not_finish() {
    let receiver =
        Receiver::start(|config| config.shutdown_grace = Duration::from_millis(100)).await;
    let (mut stream, answer) =
        announce_raw(receiver.addr, Announce::tcp(1, "stuck", 1000, [0; 32])).await;
    assert_eq!(answer, Control::Accept);
    let dir = receiver.dir.path().to_owned();
    let Receiver {
        stop,
        task,
        dir: _keep,
        ..
    } = receiver;
    let _ = stop.unwrap().send(());
    assert_eq!(
        refusal_reason(&read_frame(&mut stream).await),
        RefuseReason::ShuttingDown
    );
    timeout(PATIENCE, task).await.unwrap().unwrap().unwrap();
    assert!(names_in(&dir).is_empty(), "the temporary file is removed");
}
