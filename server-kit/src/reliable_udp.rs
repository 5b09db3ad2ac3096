//! A tokio driver for the reliable-datagram layer: [`protocol::reliable::Connection`] state
//! machines run over a real [`UdpSocket`].
//!
//! - Client side: [`ReliableConnection::connect`] opens one connection from a socket of its own.
//! - Server side: [`ReliableListener::bind`] demultiplexes many peers on one socket by (peer
//!   address, connection id), opens a connection only for a hello, refuses hellos beyond
//!   `max_peers`, and hands each new connection out through [`ReliableListener::accept`].
//!
//! Both sides give the application the same handle, [`ReliableConnection`]: `send` (which waits
//! while the connection's send queue is full), `recv` (in order, exactly once; `None` once the
//! connection has ended), `close` (graceful), `stats`, and [`ReliableConnection::ended`] to learn
//! why it ended.
//!
//! Structure: one task per socket owns the socket and every state machine on it (`endpoint`,
//! with one `entry` per connection). It waits on the socket, on the earliest state-machine
//! deadline and on bounded channels from the handles; after each round of input it drains each
//! touched machine's datagrams to the socket, its events and its delivered messages. A send does
//! not wait for the task: the handle takes permits for the message's bytes from a semaphore the
//! size of the send queue (waiting there while the queue is full), hands the message over through
//! the bounded command channel and returns; the task gives the permits back as the peer
//! acknowledges. Delivered messages go to the handle through a bounded channel; while that
//! channel is full the task stops taking messages out of the machine, whose bounded receive
//! buffer then holds the peer back, and it yields to the runtime after each such round so that
//! a reader queued behind it on the same worker gets to run before the buffer overflows. The
//! socket is read and written in batches (`recvmmsg`, GRO and GSO through `quinn-udp`, large
//! datagrams by vectored `sendmsg`, received payloads kept in their receive buffers: see `io`).
//! Its kernel buffers are raised to hold a connection's window, and the window narrowed to what
//! the kernel granted (there is no congestion control; see [`ReliableListener::bind`]).
//! Dropping a handle closes its connection gracefully; dropping the listener stops accepting,
//! and its task ends once the last of its connections has. A connection that has ended but still
//! drains (acknowledging what a peer sends again) no longer counts toward `max_peers`.

mod endpoint;
mod entry;
pub(crate) mod io;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use protocol::reliable::{Config, Connection, HEADER_LEN, Stats};
use thiserror::Error;
use tokio::net::UdpSocket;
use tokio::sync::{Notify, Semaphore, mpsc, watch};
use tokio::time::{Instant, timeout};

use endpoint::{Command, Endpoint};

/// Why a connection ended.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ConnectionEnded {
    /// We closed it, and the peer acknowledged everything up to the close.
    #[error("closed by us")]
    Closed,
    /// The peer closed it after everything it sent (all delivered).
    #[error("closed by the peer")]
    ClosedByPeer,
    /// A packet went unacknowledged through every retransmission: the peer is gone.
    #[error("the peer stopped answering")]
    PeerDead,
    /// Nothing arrived from the peer for the idle timeout.
    #[error("nothing received from the peer for the idle timeout")]
    IdleTimeout,
    /// The peer broke the protocol.
    #[error("the peer broke the protocol: {0}")]
    ProtocolViolation(&'static str),
    /// The task driving the socket stopped (it panicked, or the runtime is shutting down).
    #[error("the socket's driver task stopped")]
    DriverStopped,
}

/// What went wrong for a caller of this module.
#[derive(Debug, Error)]
pub enum DriverError {
    /// The local socket failed.
    #[error("UDP socket error: {0}")]
    Io(#[from] std::io::Error),
    /// The peer did not acknowledge the hello in time.
    #[error("no answer from {peer} within {waited:?}")]
    ConnectTimeout {
        /// Who we tried.
        peer: SocketAddr,
        /// How long we waited.
        waited: Duration,
    },
    /// A message over the configured maximum (local misuse).
    #[error("a message of {size} bytes is over the limit of {limit}")]
    TooLarge {
        /// The message's size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The connection has ended (or is closing, for a send after `close`).
    #[error("the connection has ended: {0}")]
    Ended(#[from] ConnectionEnded),
    /// The peer did not acknowledge our close in time.
    #[error("the close was not acknowledged within {0:?}")]
    CloseTimeout(Duration),
}

/// Where a connection stands, as its handle sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Status {
    Connecting,
    Open,
    Ended(ConnectionEnded),
}

/// The peer address and connection id that name a connection on a socket.
type Key = (SocketAddr, u32);

/// State shared between a handle and the socket's task.
#[derive(Debug)]
struct Shared {
    /// The latest counters, published by the task after each round.
    stats: Mutex<Stats>,
    /// Room for bytes queued and not yet acknowledged, one permit per byte: a send takes its
    /// message's length (at most the queue's limit) before handing the message over, and the
    /// task gives the permits back as the peer acknowledges; closed once the connection ends.
    credit: Semaphore,
    /// The task holds a message because the delivery channel was full; set by the task, taken by
    /// the handle, which then rings the task's attention bell.
    want_room: AtomicBool,
    /// The handle was dropped.
    dropped: AtomicBool,
}

impl Shared {
    fn new(credit: usize) -> Shared {
        Shared {
            stats: Mutex::default(),
            credit: Semaphore::new(credit.clamp(1, Semaphore::MAX_PERMITS)),
            want_room: AtomicBool::new(false),
            dropped: AtomicBool::new(false),
        }
    }
}

/// What a handle checks before handing a message over.
#[derive(Debug, Clone, Copy)]
struct SendLimits {
    /// The largest message.
    max_message: usize,
    /// Payload bytes per datagram.
    room: usize,
    /// Bytes queued and unacknowledged at most (beyond one message).
    queue: u32,
}

impl SendLimits {
    fn new(config: &Config) -> SendLimits {
        SendLimits {
            max_message: config.max_message_size,
            room: config.max_datagram_size.saturating_sub(HEADER_LEN).max(1),
            queue: u32::try_from(config.max_send_queue.clamp(1, Semaphore::MAX_PERMITS))
                .unwrap_or(u32::MAX),
        }
    }

    /// The permits a message of `len` bytes takes (its length, at least 1 and at most the
    /// queue's limit), or why it may not be sent at all (the state machine's own rules, checked
    /// here so that the caller hears of them).
    fn credit(&self, len: usize) -> Result<u32, DriverError> {
        if len > self.max_message {
            return Err(DriverError::TooLarge {
                size: len,
                limit: self.max_message,
            });
        }
        if len.div_ceil(self.room) > usize::from(u16::MAX) {
            return Err(DriverError::TooLarge {
                size: len,
                limit: self.room * usize::from(u16::MAX),
            });
        }
        // At least one permit, so that empty messages are bounded in number too.
        let len = u32::try_from(len.max(1)).unwrap_or(u32::MAX);
        Ok(len.min(self.queue))
    }
}

/// The application's end of one reliable connection, on either side.
#[derive(Debug)]
pub struct ReliableConnection {
    key: Key,
    local_addr: SocketAddr,
    commands: mpsc::Sender<Command>,
    delivered: mpsc::Receiver<Bytes>,
    status: watch::Receiver<Status>,
    shared: Arc<Shared>,
    attention: Arc<Notify>,
    give_up: Duration,
    limits: SendLimits,
    /// `close` was called.
    closing: bool,
}

impl ReliableConnection {
    /// Opens a connection to `peer` from `socket` (which it owns from now on) and waits until the
    /// peer acknowledges the hello, or the hello's retransmissions run out.
    pub async fn connect(
        socket: UdpSocket,
        peer: SocketAddr,
        config: Config,
    ) -> Result<ReliableConnection, DriverError> {
        let give_up = give_up_after(&config);
        let now = Instant::now().into_std();
        let config = prepare_socket(&socket, config);
        let machine = Connection::client(rand::random(), config.clone(), now);
        let mut endpoint = Endpoint::new(socket, config, None)?;
        let mut connection = endpoint.open((peer, machine.connection_id()), machine);
        tokio::spawn(endpoint.run());
        match connection
            .wait_until(give_up, |s| *s != Status::Connecting)
            .await
        {
            None => Err(DriverError::ConnectTimeout {
                peer,
                waited: give_up,
            }),
            Some(Status::Ended(why)) => Err(why.into()),
            Some(_) => Ok(connection),
        }
    }

    /// Queues `message`, waiting while the send queue is full (until the peer acknowledges
    /// more). Cancelling the wait leaves the message unsent. A message queued just as the
    /// connection ends is dropped with it, like one queued earlier and not yet acknowledged;
    /// [`ReliableConnection::ended`] tells.
    ///
    /// The message is handed to the socket's task without waiting for an answer: the send queue
    /// is accounted for here, with permits for its bytes that the task gives back as the peer
    /// acknowledges, so that a sender with room never waits for the task.
    pub async fn send(&mut self, message: Bytes) -> Result<(), DriverError> {
        if let Some(why) = self.ended() {
            return Err(why.into());
        }
        if self.closing {
            return Err(ConnectionEnded::Closed.into());
        }
        let credit = self.limits.credit(message.len())?;
        let Ok(permit) = self.shared.credit.acquire_many(credit).await else {
            // Closed: the connection has ended.
            return Err(self
                .ended()
                .unwrap_or(ConnectionEnded::DriverStopped)
                .into());
        };
        let command = Command::Send {
            key: self.key,
            message,
            credit,
        };
        if self.commands.send(command).await.is_err() {
            return Err(ConnectionEnded::DriverStopped.into());
        }
        permit.forget(); // the task gives them back
        Ok(())
    }

    /// The next message, in order; `None` once the connection has ended and every message
    /// delivered before the end has been taken ([`ReliableConnection::ended`] says why).
    pub async fn recv(&mut self) -> Option<Bytes> {
        let message = self.delivered.recv().await;
        if self.shared.want_room.swap(false, Ordering::AcqRel) {
            self.attention.notify_one();
        }
        message
    }

    /// Closes the connection after everything sent so far, and waits until the peer has
    /// acknowledged it all (at most the time the state machine takes to give up on a silent
    /// peer, plus five seconds). Messages that arrived before remain readable with `recv`.
    pub async fn close(&mut self) -> Result<(), DriverError> {
        self.closing = true;
        if self.ended().is_none() {
            let command = Command::Close { key: self.key };
            if self.commands.send(command).await.is_err() {
                return Err(ConnectionEnded::DriverStopped.into());
            }
        }
        let bound = self.give_up + Duration::from_secs(5);
        let ended = |s: &Status| matches!(s, Status::Ended(_));
        match self.wait_until(bound, ended).await {
            None => Err(DriverError::CloseTimeout(bound)),
            Some(Status::Ended(ConnectionEnded::Closed | ConnectionEnded::ClosedByPeer)) => Ok(()),
            Some(Status::Ended(why)) => Err(why.into()),
            Some(_) => Ok(()), // not reached: waited for an end
        }
    }

    /// Waits up to `bound` for a status that satisfies `done`; `None` on timeout.
    async fn wait_until(
        &mut self,
        bound: Duration,
        done: impl FnMut(&Status) -> bool,
    ) -> Option<Status> {
        match timeout(bound, self.status.wait_for(done)).await {
            Err(_) => None,
            Ok(Err(_)) => Some(Status::Ended(ConnectionEnded::DriverStopped)),
            Ok(Ok(status)) => Some(status.clone()),
        }
    }

    /// Why the connection ended, once it has.
    pub fn ended(&self) -> Option<ConnectionEnded> {
        let stopped = self.status.has_changed().is_err();
        match &*self.status.borrow() {
            Status::Ended(why) => Some(why.clone()),
            _ if stopped => Some(ConnectionEnded::DriverStopped),
            _ => None,
        }
    }

    /// The connection's counters as of the task's last round.
    pub fn stats(&self) -> Stats {
        self.shared
            .stats
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// The peer's address.
    pub fn peer_addr(&self) -> SocketAddr {
        self.key.0
    }

    /// The local socket's address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The connection id.
    pub fn connection_id(&self) -> u32 {
        self.key.1
    }
}

impl Drop for ReliableConnection {
    fn drop(&mut self) {
        self.shared.dropped.store(true, Ordering::Release);
        self.attention.notify_one();
    }
}

/// Counters of a listener's socket.
#[derive(Debug, Default)]
struct ListenerCounters {
    refused: AtomicU64,
    unrouted: AtomicU64,
}

/// The server side: many peers on one socket.
#[derive(Debug)]
pub struct ReliableListener {
    accepted: mpsc::Receiver<ReliableConnection>,
    local_addr: SocketAddr,
    counters: Arc<ListenerCounters>,
}

impl ReliableListener {
    /// Serves reliable connections on `socket`, at most `max_peers` at once (accepted or waiting
    /// to be). Must be called within a tokio runtime.
    ///
    /// Here as in [`ReliableConnection::connect`], the socket's kernel buffers are raised to
    /// hold `config.max_in_flight` datagrams each way (as far as `net.core.rmem_max` and
    /// `wmem_max` allow), and if the receive buffer granted holds fewer, the window is narrowed
    /// to that: a window the peer's buffer cannot take is lost on arrival, every time.
    pub fn bind(
        socket: UdpSocket,
        config: Config,
        max_peers: usize,
    ) -> Result<ReliableListener, DriverError> {
        let (accept_tx, accepted) = mpsc::channel(max_peers.clamp(1, ACCEPT_QUEUE));
        let counters = Arc::new(ListenerCounters::default());
        let accepting = endpoint::Accepting {
            queue: accept_tx,
            max_peers,
            counters: Arc::clone(&counters),
        };
        let config = prepare_socket(&socket, config);
        let endpoint = Endpoint::new(socket, config, Some(accepting))?;
        let local_addr = endpoint.local_addr();
        tokio::spawn(endpoint.run());
        Ok(ReliableListener {
            accepted,
            local_addr,
            counters,
        })
    }

    /// The next new connection; `None` if the socket's task has stopped.
    pub async fn accept(&mut self) -> Option<ReliableConnection> {
        self.accepted.recv().await
    }

    /// The socket's address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Hellos refused so far because `max_peers` connections were open (or the accept queue was
    /// full).
    pub fn refused(&self) -> u64 {
        self.counters.refused.load(Ordering::Relaxed)
    }

    /// Datagrams that belonged to no connection and did not open one.
    pub fn unrouted(&self) -> u64 {
        self.counters.unrouted.load(Ordering::Relaxed)
    }
}

/// Socket buffers asked for at most, per direction.
const MAX_SOCKET_BUFFER: usize = 32 * 1024 * 1024;

/// Raises the socket's kernel buffers to hold `bytes` each way, if they are smaller (best
/// effort: the kernel caps the request, at `net.core.rmem_max` and `wmem_max` on Linux). A
/// window of datagrams that overflows the receive buffer is lost on arrival, on loopback too.
pub(crate) fn enlarge_buffers(socket: &UdpSocket, bytes: usize) {
    let socket = socket2::SockRef::from(socket);
    let bytes = bytes.min(MAX_SOCKET_BUFFER);
    let receive = match socket.recv_buffer_size() {
        Ok(now) if now < bytes => socket.set_recv_buffer_size(bytes),
        other => other.map(drop),
    };
    let send = match socket.send_buffer_size() {
        Ok(now) if now < bytes => socket.set_send_buffer_size(bytes),
        other => other.map(drop),
    };
    if let Err(error) = receive.and(send) {
        tracing::debug!(%error, bytes, "could not enlarge the UDP socket's buffers");
    }
}

/// Socket buffer room for one connection's window: kernels charge about twice a small
/// datagram's size for it.
fn window_bytes(config: &Config) -> usize {
    config
        .max_in_flight
        .saturating_mul(config.max_datagram_size)
        .saturating_mul(2)
}

/// Raises the socket's buffers to hold a window each way and returns `config` with the window
/// narrowed, if need be, to what the receive buffer the kernel granted holds (at
/// [`window_bytes`]' reckoning): there is no congestion control, and a window that overflows the
/// peer's receive buffer is lost on arrival, every time. The peer's buffer is unknown; ours,
/// granted by the same kind of kernel under the same configuration, stands for it.
fn prepare_socket(socket: &UdpSocket, mut config: Config) -> Config {
    enlarge_buffers(socket, window_bytes(&config));
    if let Ok(granted) = socket2::SockRef::from(socket).recv_buffer_size() {
        let fits = window_fits(granted, config.max_datagram_size);
        if fits < config.max_in_flight {
            tracing::debug!(
                granted,
                window = fits,
                "the UDP receive buffer holds a smaller window than configured"
            );
            config.max_in_flight = fits;
        }
    }
    config
}

/// Datagrams of `datagram_size` bytes a receive buffer of `granted` bytes holds (at least one).
fn window_fits(granted: usize, datagram_size: usize) -> usize {
    (granted / datagram_size.saturating_mul(2).max(1)).max(1)
}

/// New connections waiting for `accept`, at most.
const ACCEPT_QUEUE: usize = 128;

/// An upper bound on how long the state machine takes to declare a silent peer dead: every
/// retransmission waits at most `max_rto`.
fn give_up_after(config: &Config) -> Duration {
    config.max_rto * (config.max_retransmissions + 1) + Duration::from_millis(500)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_fits_the_receive_buffer() {
        assert_eq!(window_fits(8 * 1024 * 1024, 65_507), 64);
        assert_eq!(
            window_fits(425_984, 65_507),
            3,
            "Linux's default rmem_max, doubled"
        );
        assert_eq!(window_fits(425_984, 1200), 177);
        assert_eq!(window_fits(1000, 65_507), 1, "always one");
    }
}
