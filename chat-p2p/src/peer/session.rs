//! One session with another peer straight over UDP: the public handle ([`Session`]), what
//! starts it ([`SessionParams`], [`SessionConfig`]), what it reports ([`SessionEvent`],
//! [`SessionEnd`], [`SessionStats`]) and what can go wrong locally ([`SessionError`]).
//!
//! A session is one task, the driver, that owns the socket's reads while the session runs: it
//! seals every datagram out and opens every datagram in with the session key
//! ([`protocol::p2p::secure::SecureChannel`]), runs one reliable-datagram connection
//! ([`protocol::reliable::Connection`]) for chat, files and stream control, and sends and
//! tallies the media stream's chunks beside it. The handle talks to the driver through
//! bounded channels; events come back on a bounded channel, [`SessionEvent::Ended`] always
//! last.

mod driver;
mod files;
mod stream;

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use protocol::p2p::secure::{Role, SecureStats, SessionKey};
use protocol::p2p::session::{MAX_TEXT_BYTES, SessionMessage};
use protocol::p2p::stream::StreamReport;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot, watch};

use driver::{Command, Rejected};

/// How much longer than `close_timeout` [`Session::close`] waits for the driver to finish.
const CLOSE_MARGIN: Duration = Duration::from_secs(1);

/// What the signaling server handed over for a session.
#[derive(Debug, Clone)]
pub struct SessionParams {
    /// The other peer's user name.
    pub peer: String,
    /// Where the other peer said it can be reached over UDP.
    pub peer_addr: SocketAddr,
    /// The session's secret key (its `Debug` is redacted).
    pub key: SessionKey,
    /// The session number, in every datagram's header.
    pub session: u32,
    /// Which end of the session this is.
    pub role: Role,
}

/// Limits and timers of a session.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// The reliable-datagram layer's settings (default: a keep-alive every second and a 5 s
    /// idle timeout, so a vanished peer is noticed within about 5 s).
    pub reliable: protocol::reliable::Config,
    /// How long the initiator's hello may go unanswered, or the acceptor hear nothing
    /// (default 10 s).
    pub connect_timeout: Duration,
    /// Where received files are saved, under their own name or a free variant of it, never
    /// over an existing file (default `.`).
    pub download_dir: PathBuf,
    /// A larger offer is refused (default 4 GiB).
    pub max_file_size: u64,
    /// File bytes per chunk message (default 16 KiB; at most
    /// [`protocol::p2p::session::MAX_CHUNK_BYTES`]).
    pub file_chunk: usize,
    /// The media stream's real-time rate in bytes per second (default 64 KiB/s).
    pub stream_rate: u32,
    /// Payload bytes per stream datagram (default 1024; at most [`MAX_STREAM_CHUNK`]).
    pub stream_chunk: usize,
    /// How long a stream's receiver waits after its end for late chunks before reporting
    /// (default 500 ms).
    pub stream_grace: Duration,
    /// How long a graceful close waits for the peer's acknowledgements (default 3 s).
    pub close_timeout: Duration,
    /// Events the event channel holds (default 256).
    pub events: usize,
}

/// The largest stream chunk payload: what fits a 1200-byte datagram with the chunk header
/// and the seal around it.
pub const MAX_STREAM_CHUNK: usize =
    1200 - protocol::p2p::stream::CHUNK_HEADER_LEN - protocol::p2p::secure::OVERHEAD;

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            reliable: protocol::reliable::Config {
                keep_alive: Duration::from_secs(1),
                idle_timeout: Duration::from_secs(5),
                ..Default::default()
            },
            connect_timeout: Duration::from_secs(10),
            download_dir: PathBuf::from("."),
            max_file_size: 4 * 1024 * 1024 * 1024,
            file_chunk: 16 * 1024,
            stream_rate: 64 * 1024,
            stream_chunk: 1024,
            stream_grace: Duration::from_millis(500),
            close_timeout: Duration::from_secs(3),
            events: 256,
        }
    }
}

/// A file being sent: its transfer number, the name offered and its size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileTicket {
    /// The transfer's number, in the events about it.
    pub id: u32,
    /// The name the receiver is offered.
    pub name: String,
    /// Bytes.
    pub size: u64,
}

/// A media stream being sent: its number, the file's name and the chunks it will take.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamTicket {
    /// The stream's number, in the events about it.
    pub id: u32,
    /// The streamed file's name.
    pub name: String,
    /// Chunks the file takes (what will be sent unless the file shrinks meanwhile).
    pub chunks: u32,
}

/// Counters of a session, a snapshot the driver keeps current.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionStats {
    /// The reliable-datagram connection's counters.
    pub reliable: protocol::reliable::Stats,
    /// Datagrams sealed, opened, and dropped as foreign, forged or replayed.
    pub secure: SecureStats,
    /// Media-stream datagrams sent.
    pub stream_datagrams_sent: u64,
}

/// Which way a file goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// We send it.
    Sending,
    /// We receive it.
    Receiving,
}

/// Something the application should know about a session.
#[derive(Debug, Clone, PartialEq)]
pub enum SessionEvent {
    /// The connection with the peer is open.
    Connected,
    /// The peer sent a chat line.
    Message {
        /// The line.
        text: String,
    },
    /// The peer is sending a file.
    FileIncoming {
        /// The transfer.
        id: u32,
        /// The file's name as offered.
        name: String,
        /// Its size in bytes.
        size: u64,
    },
    /// A transfer moved on (at most about 100 of these per file).
    FileProgress {
        /// The transfer.
        id: u32,
        /// The file's name as offered.
        name: String,
        /// Which way it goes.
        direction: Direction,
        /// Bytes received, or sent and acknowledged, so far.
        done: u64,
        /// The file's size.
        total: u64,
    },
    /// A received file was checked (SHA-256, read back from disk), flushed and saved.
    FileSaved {
        /// The transfer.
        id: u32,
        /// The file's name as offered.
        name: String,
        /// Where it was saved (a free variant of the name if that was taken).
        path: PathBuf,
        /// Its size in bytes.
        size: u64,
    },
    /// A transfer failed; nothing of it is left on the receiver's disk.
    FileFailed {
        /// The transfer.
        id: u32,
        /// The file's name as offered.
        name: String,
        /// Which way it went.
        direction: Direction,
        /// What went wrong, in plain words.
        reason: String,
    },
    /// The peer saved a file we sent.
    FileDelivered {
        /// The transfer.
        id: u32,
        /// The file's name as offered.
        name: String,
        /// The name the peer saved it under.
        saved_as: String,
    },
    /// The peer is streaming a file to us.
    StreamIncoming {
        /// The stream.
        id: u32,
        /// The streamed file's name.
        name: String,
        /// Its real-time rate, bytes per second.
        rate: u32,
    },
    /// A stream to us ended (after the grace for late chunks): what arrived.
    StreamReceived {
        /// The stream.
        id: u32,
        /// The streamed file's name.
        name: String,
        /// What arrived.
        report: StreamReport,
    },
    /// A stream we sent ended and the peer reported what arrived.
    StreamSent {
        /// The stream.
        id: u32,
        /// The streamed file's name.
        name: String,
        /// The peer's report.
        report: StreamReport,
    },
    /// The session is over; always the last event.
    Ended {
        /// Why.
        reason: SessionEnd,
    },
}

/// Why a session ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionEnd {
    /// We closed it.
    ClosedByUs,
    /// The peer closed it.
    ClosedByPeer,
    /// The peer (named) stopped answering.
    PeerVanished(String),
    /// The session broke: the peer broke the protocol, or never answered (the text says what).
    Failed(String),
    /// The signaling server said the peer left (its words: `bob went offline`); nothing was
    /// waited for.
    Left(String),
}

impl fmt::Display for SessionEnd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SessionEnd::ClosedByUs => f.write_str("we closed the session"),
            SessionEnd::ClosedByPeer => f.write_str("the other peer closed the session"),
            SessionEnd::PeerVanished(peer) => write!(f, "{peer} stopped answering"),
            SessionEnd::Failed(reason) => write!(f, "the session failed: {reason}"),
            SessionEnd::Left(words) => f.write_str(words),
        }
    }
}

/// Why a request to a session failed. All of these are about the local side: the session
/// being over, or a file or text that cannot be sent; what the peer does is reported as
/// events.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// The session has ended or is closing: nothing more can be sent.
    #[error("the session has ended")]
    Ended,
    /// Local misuse: a chat line longer than one message holds.
    #[error("a chat line of {len} bytes is over the limit of {max}")]
    TooLong {
        /// The line's length in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Local misuse: the path is not a regular file.
    #[error("{} is not a regular file", path.display())]
    NotAFile {
        /// The path given.
        path: PathBuf,
    },
    /// Local misuse: the file's name cannot be offered to the peer.
    #[error("{} cannot be sent under its name: {reason}", path.display())]
    BadName {
        /// The path given.
        path: PathBuf,
        /// What is wrong with the name.
        reason: String,
    },
    /// Local misuse: the file has more chunks than a stream can number.
    #[error("{} is too large to stream ({size} bytes)", path.display())]
    TooLargeToStream {
        /// The path given.
        path: PathBuf,
        /// The file's size.
        size: u64,
    },
    /// Local I/O: the file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    File {
        /// The path given.
        path: PathBuf,
        /// What the system said.
        #[source]
        source: io::Error,
    },
}

/// What the handle shares with the driver.
#[derive(Debug, Default)]
struct Shared {
    /// The driver's latest counters.
    stats: Mutex<SessionStats>,
    /// The next transfer or stream number.
    next_id: AtomicU32,
}

/// The handle of a running session; every method takes `&self`.
#[derive(Debug)]
pub struct Session {
    peer: String,
    config: SessionConfig,
    commands: mpsc::Sender<Command>,
    close: mpsc::Sender<Option<SessionEnd>>,
    stream_chunks: mpsc::Sender<Vec<u8>>,
    ended: watch::Receiver<bool>,
    shared: Arc<Shared>,
}

impl Session {
    /// Starts the session's driver task on `socket` (bound already, shared with nobody else
    /// while the session runs). The initiator opens the reliable connection (its connection
    /// id is the session number); the acceptor waits for the hello. Must be called inside a
    /// tokio runtime.
    pub fn start(
        socket: Arc<UdpSocket>,
        params: SessionParams,
        config: SessionConfig,
    ) -> (Session, mpsc::Receiver<SessionEvent>) {
        let shared = Arc::new(Shared {
            next_id: AtomicU32::new(1),
            ..Shared::default()
        });
        let peer = params.peer.clone();
        let handles = driver::spawn(socket, params, config.clone(), Arc::clone(&shared));
        Session::from_handles(peer, config, handles, shared)
    }

    /// The other peer's user name.
    pub fn peer(&self) -> &str {
        &self.peer
    }

    /// Sends a chat line: reliable and in order. Waits while the send queue is full.
    pub async fn send_text(&self, text: &str) -> Result<(), SessionError> {
        if text.len() > MAX_TEXT_BYTES {
            return Err(SessionError::TooLong {
                len: text.len(),
                max: MAX_TEXT_BYTES,
            });
        }
        let message = SessionMessage::Chat {
            text: text.to_owned(),
        };
        request(&self.commands, message)
            .await
            .map_err(|_| SessionError::Ended)
    }

    /// Offers the file at `path` to the peer: checks it (a regular file with a name the peer
    /// can take), hashes it (SHA-256, on the blocking pool), sends the offer and then the
    /// file's chunks in the background. Progress and the peer's verdict arrive as events.
    pub async fn send_file(&self, path: &Path) -> Result<FileTicket, SessionError> {
        self.check_open()?;
        let prepared = files::prepare(path).await?;
        let id = self.next_id();
        let ticket = FileTicket {
            id,
            name: prepared.name.clone(),
            size: prepared.size,
        };
        let offer = SessionMessage::FileOffer {
            id,
            name: prepared.name.clone(),
            size: prepared.size,
            sha256: prepared.sha256,
        };
        request(&self.commands, offer)
            .await
            .map_err(|_| SessionError::Ended)?;
        let chunk = files::chunk_size(&self.config);
        tokio::spawn(files::send_chunks(
            prepared,
            id,
            chunk,
            self.commands.clone(),
        ));
        Ok(ticket)
    }

    /// Streams the file at `path` to the peer in real time: a start message over the reliable
    /// channel, then the chunks as stream datagrams paced at `stream_rate` (never sent
    /// again), then an end message with the count sent. The peer's report arrives as
    /// [`SessionEvent::StreamSent`].
    pub async fn stream_file(&self, path: &Path) -> Result<StreamTicket, SessionError> {
        self.check_open()?;
        let chunk = self.config.stream_chunk.clamp(1, MAX_STREAM_CHUNK);
        let rate = self.config.stream_rate.max(1);
        let (file, name, size) = files::open_regular(path).await?;
        let chunks = u32::try_from(size.div_ceil(chunk as u64)).map_err(|_| {
            SessionError::TooLargeToStream {
                path: path.to_owned(),
                size,
            }
        })?;
        let id = self.next_id();
        let start = SessionMessage::StreamStart {
            id,
            name: name.clone(),
            rate,
            chunk_size: chunk as u32,
        };
        request(&self.commands, start)
            .await
            .map_err(|_| SessionError::Ended)?;
        let pacing = stream::Pacing {
            id,
            chunk,
            rate,
            chunks,
        };
        tokio::spawn(stream::send_chunks(
            tokio::fs::File::from_std(file),
            pacing,
            self.stream_chunks.clone(),
            self.commands.clone(),
        ));
        Ok(StreamTicket { id, name, chunks })
    }

    /// Closes the session gracefully: everything sent so far is delivered first. Returns once
    /// [`SessionEvent::Ended`] was given, or after `close_timeout`.
    pub async fn close(&self) {
        // A full channel means a close is already asked for.
        let _ = self.close.try_send(None);
        let mut ended = self.ended.clone();
        let wait = ended.wait_for(|ended| *ended);
        let _ = tokio::time::timeout(self.config.close_timeout + CLOSE_MARGIN, wait).await;
    }

    /// Ends the session at once, as [`SessionEnd::Left`] with `words`: for when the signaling
    /// server says the peer is gone, so no acknowledgement will come. Transfers in progress
    /// fail with those words.
    pub fn abandon(&self, words: String) {
        let _ = self.close.try_send(Some(SessionEnd::Left(words)));
    }

    /// The session's counters as of the driver's latest step.
    pub fn stats(&self) -> SessionStats {
        self.shared
            .stats
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Whether the session is over.
    pub fn is_ended(&self) -> bool {
        *self.ended.borrow()
    }

    fn check_open(&self) -> Result<(), SessionError> {
        if self.is_ended() {
            return Err(SessionError::Ended);
        }
        Ok(())
    }

    fn next_id(&self) -> u32 {
        self.shared.next_id.fetch_add(1, Ordering::Relaxed)
    }
}

/// Hands `message` to the driver and waits until it is queued for sending.
async fn request(
    commands: &mpsc::Sender<Command>,
    message: SessionMessage,
) -> Result<(), Rejected> {
    let (reply, replied) = oneshot::channel();
    let command = Command { message, reply };
    commands.send(command).await.map_err(|_| Rejected::Ended)?;
    replied.await.unwrap_or(Err(Rejected::Ended))
}
