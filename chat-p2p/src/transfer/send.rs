//! The sender: announces a file on a control connection, sends it over TCP or as datagrams
//! with no retransmission (paced to a rate if asked), and returns the receiver's report.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use protocol::chat_transfer::{
    Announce, Control, ControlError, DATAGRAM_HEADER_LEN, DEFAULT_DATAGRAM_PAYLOAD, DatagramHeader,
    Digest, Done, MAX_DATAGRAM_PAYLOAD, Refusal, Report, Transport, check_file_name, datagram_span,
};
use sha2::{Digest as _, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpStream, UdpSocket};
use tokio::time::{Instant, sleep_until, timeout};

use super::control::ControlStream;

/// Bytes of file read and written at a time over TCP (less when paced slowly).
const TCP_CHUNK: usize = 256 * 1024;
/// Bytes of file read ahead for the datagrams.
const READ_AHEAD: usize = 1 << 20;
/// Datagrams between two progress updates.
const PROGRESS_EVERY: u32 = 64;
/// How far ahead of its rate the sender may get before it sleeps. Zero: it sleeps as soon as
/// it is ahead, and the timer's millisecond granularity then makes bursts of about a
/// millisecond's worth of bytes (larger bursts overflow a receiver's default socket buffer at
/// rates it could otherwise take), with no busy waiting in between.
const PACING_SLACK: Duration = Duration::ZERO;
/// How long to look for the receiver's reason after it cut a TCP body off.
const REASON_TIMEOUT: Duration = Duration::from_secs(1);

/// How to send.
#[derive(Debug, Clone)]
pub struct SendConfig {
    /// TCP or UDP.
    pub transport: Transport,
    /// Bytes of file per datagram (UDP; default [`DEFAULT_DATAGRAM_PAYLOAD`]).
    pub datagram_payload: usize,
    /// Bytes per second to send at most (default: as fast as the socket takes them).
    pub rate: Option<u64>,
    /// Where to send the datagrams (default: the receiver's address; a relay in tests).
    pub udp_target: Option<SocketAddr>,
    /// How long to wait for a connection, an answer or a write (default 30 s).
    pub io_timeout: Duration,
    /// How long to wait for the report once the data is sent: the receiver waits for
    /// stragglers, then hashes and flushes the file (default 300 s).
    pub report_timeout: Duration,
}

impl SendConfig {
    /// The defaults for `transport`.
    pub fn new(transport: Transport) -> SendConfig {
        SendConfig {
            transport,
            datagram_payload: DEFAULT_DATAGRAM_PAYLOAD,
            rate: None,
            udp_target: None,
            io_timeout: Duration::from_secs(30),
            report_timeout: Duration::from_secs(300),
        }
    }
}

/// Why a transfer failed, and whose fault it was.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// The file could not be read (local).
    #[error("cannot read {path}: {source}")]
    ReadFile {
        /// The file.
        path: PathBuf,
        /// The failure.
        source: io::Error,
    },
    /// The file cannot be sent as asked (local): its name, size or the datagram size.
    #[error("cannot send {path}: {reason}")]
    Unsendable {
        /// The file.
        path: PathBuf,
        /// Why not.
        reason: String,
    },
    /// The receiver could not be reached (network).
    #[error("cannot connect to the receiver at {addr}: {source}")]
    Connect {
        /// The receiver's address.
        addr: SocketAddr,
        /// The failure.
        source: io::Error,
    },
    /// The receiver refused the transfer or gave up on it (the receiver said why).
    #[error("the receiver refused the transfer: {0}")]
    Refused(Refusal),
    /// The receiver broke the protocol (peer).
    #[error("the receiver broke the protocol: {0}")]
    Protocol(String),
    /// The receiver closed the connection early (peer).
    #[error("the receiver closed the connection {0}")]
    Closed(&'static str),
    /// The receiver did not answer in time (peer or network).
    #[error("the receiver did not answer within {after:?} ({waiting_for})")]
    Timeout {
        /// What the sender waited for.
        waiting_for: &'static str,
        /// How long.
        after: Duration,
    },
    /// Sending failed (network).
    #[error("network I/O failed while {doing}: {source}")]
    Network {
        /// What the sender was doing.
        doing: &'static str,
        /// The failure.
        source: io::Error,
    },
}

impl SendError {
    fn network(doing: &'static str) -> impl FnOnce(io::Error) -> SendError {
        move |source| SendError::Network { doing, source }
    }

    fn control(doing: &'static str) -> impl FnOnce(ControlError) -> SendError {
        move |err| match err {
            ControlError::Io(source) => SendError::Network { doing, source },
            err => SendError::Protocol(err.to_string()),
        }
    }
}

/// A file ready to send: its path, the name to announce, its size and SHA-256.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileOffer {
    /// Where the file is.
    pub path: PathBuf,
    /// The name the receiver is asked to save it under.
    pub name: String,
    /// Its size in bytes.
    pub size: u64,
    /// SHA-256 of its bytes.
    pub sha256: Digest,
}

/// Reads and hashes the file at `path`, to be announced as `name` (default: the file's own
/// name), after checking that a receiver would accept the name.
pub async fn inspect(path: &Path, name: Option<&str>) -> Result<FileOffer, SendError> {
    let name = match name {
        Some(name) => name.to_owned(),
        None => own_name(path)?,
    };
    check_file_name(&name).map_err(|err| SendError::Unsendable {
        path: path.to_owned(),
        reason: err.to_string(),
    })?;
    let owned = path.to_owned();
    let (size, sha256) = tokio::task::spawn_blocking(move || hash_file(&owned))
        .await
        .map_err(io::Error::other)
        .and_then(|hashed| hashed)
        .map_err(|source| SendError::ReadFile {
            path: path.to_owned(),
            source,
        })?;
    Ok(FileOffer {
        path: path.to_owned(),
        name,
        size,
        sha256,
    })
}

fn own_name(path: &Path) -> Result<String, SendError> {
    let unsendable = |reason: &str| SendError::Unsendable {
        path: path.to_owned(),
        reason: reason.into(),
    };
    path.file_name()
        .ok_or_else(|| unsendable("the path does not end in a file name"))?
        .to_str()
        .map(str::to_owned)
        .ok_or_else(|| unsendable("the file name is not UTF-8"))
}

/// The size and SHA-256 of a file. Blocking.
fn hash_file(path: &Path) -> io::Result<(u64, Digest)> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut size = 0;
    let mut buf = vec![0; 1 << 20];
    loop {
        let n = io::Read::read(&mut file, &mut buf)?;
        if n == 0 {
            return Ok((size, hasher.finalize().into()));
        }
        hasher.update(&buf[..n]);
        size += n as u64;
    }
}

/// Sends the file at `path` to the receiver at `to`: [`inspect`], then [`send`].
pub async fn send_file(
    path: &Path,
    to: SocketAddr,
    config: &SendConfig,
    progress: impl FnMut(u64, u64),
) -> Result<Report, SendError> {
    let offer = inspect(path, None).await?;
    send(&offer, to, config, progress).await
}

/// Sends `offer` to the receiver at `to` as `config` says, calling `progress(sent, total)` as
/// bytes go out; the receiver's report. A UDP transfer that lost datagrams still succeeds: the
/// report says what arrived.
pub async fn send(
    offer: &FileOffer,
    to: SocketAddr,
    config: &SendConfig,
    mut progress: impl FnMut(u64, u64),
) -> Result<Report, SendError> {
    let announce = announce_for(offer, config)?;
    let mut control = connect(to, config.io_timeout).await?;
    control
        .send(&Control::Announce(announce.clone()))
        .await
        .map_err(SendError::control("announcing the file"))?;
    expect_accept(&mut control, config.io_timeout).await?;
    let file = open(&offer.path).await?;
    let mut pacer = Pacer::new(config.rate);
    match config.transport {
        Transport::Tcp => {
            send_body(&mut control, file, offer, &mut pacer, &mut progress).await?;
        }
        Transport::Udp => {
            let target = config.udp_target.unwrap_or(to);
            let sent =
                send_datagrams(file, &announce, target, offer, &mut pacer, &mut progress).await?;
            control
                .send(&Control::Done(Done {
                    datagrams_sent: sent,
                }))
                .await
                .map_err(SendError::control("saying \"done\""))?;
        }
    }
    let report = expect_report(&mut control, config.report_timeout).await;
    control.finish().await;
    report
}

fn announce_for(offer: &FileOffer, config: &SendConfig) -> Result<Announce, SendError> {
    let id = rand::random();
    match config.transport {
        Transport::Tcp => Ok(Announce::tcp(id, &offer.name, offer.size, offer.sha256)),
        Transport::Udp => Announce::udp(
            id,
            &offer.name,
            offer.size,
            offer.sha256,
            config.datagram_payload,
        )
        .ok_or_else(|| SendError::Unsendable {
            path: offer.path.clone(),
            reason: format!(
                "datagrams of {} bytes: the size must be 1 to {MAX_DATAGRAM_PAYLOAD}, and the \
                 file at most 2^32 - 1 datagrams",
                config.datagram_payload
            ),
        }),
    }
}

async fn connect(to: SocketAddr, io_timeout: Duration) -> Result<ControlStream, SendError> {
    let stream = server_kit::connect(to, io_timeout)
        .await
        .map_err(|source| SendError::Connect { addr: to, source })?;
    Ok(ControlStream::new(stream))
}

async fn open(path: &Path) -> Result<tokio::fs::File, SendError> {
    tokio::fs::File::open(path)
        .await
        .map_err(|source| SendError::ReadFile {
            path: path.to_owned(),
            source,
        })
}

/// The next frame within `after`.
async fn recv(
    control: &mut ControlStream,
    after: Duration,
    waiting_for: &'static str,
) -> Result<Control, SendError> {
    timeout(after, control.recv())
        .await
        .map_err(|_| SendError::Timeout { waiting_for, after })?
        .map_err(SendError::control(waiting_for))?
        .ok_or(SendError::Closed("without answering"))
}

async fn expect_accept(control: &mut ControlStream, after: Duration) -> Result<(), SendError> {
    match recv(control, after, "waiting for the receiver to accept").await? {
        Control::Accept => Ok(()),
        Control::Refused(refusal) => Err(SendError::Refused(refusal)),
        other => Err(SendError::Protocol(format!(
            "expected accept or refused, got a {} frame",
            other.name()
        ))),
    }
}

async fn expect_report(control: &mut ControlStream, after: Duration) -> Result<Report, SendError> {
    match recv(control, after, "waiting for the report").await? {
        Control::Report(report) => Ok(report),
        Control::Refused(refusal) => Err(SendError::Refused(refusal)),
        other => Err(SendError::Protocol(format!(
            "expected a report, got a {} frame",
            other.name()
        ))),
    }
}

/// Sends the raw body over TCP; if the receiver cuts it off, its reason if it gave one.
async fn send_body(
    control: &mut ControlStream,
    file: tokio::fs::File,
    offer: &FileOffer,
    pacer: &mut Pacer,
    progress: &mut impl FnMut(u64, u64),
) -> Result<(), SendError> {
    let written = write_body(control.stream_mut(), file, offer, pacer, progress).await;
    if let Err(SendError::Network { .. }) = &written {
        if let Ok(Ok(Some(Control::Refused(refusal)))) =
            timeout(REASON_TIMEOUT, control.recv()).await
        {
            return Err(SendError::Refused(refusal));
        }
    }
    written
}

async fn write_body(
    stream: &mut TcpStream,
    file: tokio::fs::File,
    offer: &FileOffer,
    pacer: &mut Pacer,
    progress: &mut impl FnMut(u64, u64),
) -> Result<(), SendError> {
    let mut body = file.take(offer.size);
    let mut buf = vec![0; pacer.chunk(TCP_CHUNK)];
    let mut sent = 0;
    while sent < offer.size {
        let n = read_some(&mut body, &mut buf, offer).await?;
        stream
            .write_all(&buf[..n])
            .await
            .map_err(SendError::network("sending the file"))?;
        sent += n as u64;
        progress(sent, offer.size);
        pacer.pace(n).await;
    }
    Ok(())
}

/// Reads some bytes of the file; the file ending before its announced size is an error.
async fn read_some(
    file: &mut (impl AsyncRead + Unpin),
    buf: &mut [u8],
    offer: &FileOffer,
) -> Result<usize, SendError> {
    let read_error = |source| SendError::ReadFile {
        path: offer.path.clone(),
        source,
    };
    match file.read(buf).await.map_err(read_error)? {
        0 => Err(read_error(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the file shrank while it was being sent",
        ))),
        n => Ok(n),
    }
}

/// Sends every datagram of the file once, in order; how many were sent.
async fn send_datagrams(
    file: tokio::fs::File,
    announce: &Announce,
    target: SocketAddr,
    offer: &FileOffer,
    pacer: &mut Pacer,
    progress: &mut impl FnMut(u64, u64),
) -> Result<u32, SendError> {
    let socket = udp_socket(target).await?;
    let payload = usize::from(announce.datagram_payload);
    let mut file = BufReader::with_capacity(READ_AHEAD, file);
    let mut datagram = vec![0; DATAGRAM_HEADER_LEN + payload];
    let mut sent_bytes = 0;
    for seq in 0..announce.datagram_count {
        let (_, len) = datagram_span(seq, announce.size, payload).unwrap_or((0, 0));
        let header = DatagramHeader {
            id: announce.id,
            seq,
        };
        datagram[..DATAGRAM_HEADER_LEN].copy_from_slice(&header.to_bytes());
        let body = &mut datagram[DATAGRAM_HEADER_LEN..DATAGRAM_HEADER_LEN + len];
        file.read_exact(body)
            .await
            .map_err(|source| SendError::ReadFile {
                path: offer.path.clone(),
                source,
            })?;
        socket
            .send_to(&datagram[..DATAGRAM_HEADER_LEN + len], target)
            .await
            .map_err(SendError::network("sending a datagram"))?;
        sent_bytes += len as u64;
        if seq % PROGRESS_EVERY == 0 {
            progress(sent_bytes, offer.size);
        }
        pacer.pace(len).await;
    }
    progress(sent_bytes, offer.size);
    Ok(announce.datagram_count)
}

async fn udp_socket(target: SocketAddr) -> Result<UdpSocket, SendError> {
    let local: SocketAddr = if target.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    };
    UdpSocket::bind(local)
        .await
        .map_err(SendError::network("opening a UDP socket"))
}

/// Keeps the sending at or under a rate, sleeping (never spinning) whenever it gets ahead of it
/// (by more than [`PACING_SLACK`]).
#[derive(Debug)]
struct Pacer {
    rate: Option<u64>,
    start: Instant,
    bytes: u64,
}

impl Pacer {
    fn new(rate: Option<u64>) -> Pacer {
        Pacer {
            rate: rate.filter(|&rate| rate > 0),
            start: Instant::now(),
            bytes: 0,
        }
    }

    /// A write size that keeps bursts short at this rate: at most `max`, about 10 ms' worth.
    fn chunk(&self, max: usize) -> usize {
        self.rate.map_or(max, |rate| {
            usize::try_from(rate / 100).unwrap_or(max).clamp(1024, max)
        })
    }

    /// Accounts for `bytes` sent and sleeps until the rate allows more.
    async fn pace(&mut self, bytes: usize) {
        let Some(rate) = self.rate else { return };
        self.bytes += bytes as u64;
        let due = self.start + Duration::from_secs_f64(self.bytes as f64 / rate as f64);
        if due > Instant::now() + PACING_SLACK {
            sleep_until(due).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_pacer_holds_the_rate_by_sleeping() {
        let mut pacer = Pacer::new(Some(1_000_000));
        let start = Instant::now();
        for _ in 0..100 {
            pacer.pace(10_000).await;
        }
        let elapsed = start.elapsed();
        assert!(elapsed >= Duration::from_millis(990), "{elapsed:?}");
        assert!(elapsed <= Duration::from_millis(1010), "{elapsed:?}");
        assert_eq!(pacer.chunk(TCP_CHUNK), 10_000);
        assert_eq!(Pacer::new(None).chunk(TCP_CHUNK), TCP_CHUNK);
        assert_eq!(Pacer::new(Some(10)).chunk(TCP_CHUNK), 1024);
    }

    #[tokio::test]
    async fn a_hidden_or_missing_file_is_refused_locally() {
        let dir = tempfile::tempdir().unwrap();
        let hidden = dir.path().join(".secret");
        std::fs::write(&hidden, b"x").unwrap();
        let err = inspect(&hidden, None).await.unwrap_err();
        assert!(matches!(err, SendError::Unsendable { .. }), "{err}");
        let err = inspect(&dir.path().join("missing"), None)
            .await
            .unwrap_err();
        assert!(matches!(err, SendError::ReadFile { .. }), "{err}");
        let offer = inspect(&hidden, Some("visible")).await.unwrap();
        assert_eq!((offer.name.as_str(), offer.size), ("visible", 1));
    }
}
