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
//! touched machine's datagrams to the socket, its events and its delivered messages. Delivered
//! messages go to the handle through a bounded channel; while that channel is full the task stops
//! taking messages out of the machine, whose bounded receive buffer then holds the peer back. The
//! socket is read and written in batches (`recvmmsg`, GRO and GSO through `quinn-udp`, see `io`),
//! and its kernel buffers are raised to hold a connection's window. Dropping a handle closes its
//! connection gracefully; dropping the listener stops accepting, and its task ends once the last
//! of its connections has. A connection that has ended but still drains (acknowledging what a
//! peer sends again) no longer counts toward `max_peers`.

mod endpoint;
mod entry;
mod io;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use protocol::reliable::{Config, Connection, Stats};
use thiserror::Error;
use tokio::net::UdpSocket;
use tokio::sync::{Notify, mpsc, oneshot, watch};
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
#[derive(Debug, Default)]
struct Shared {
    /// The latest counters, published by the task after each round.
    stats: Mutex<Stats>,
    /// The task holds a message because the delivery channel was full; set by the task, taken by
    /// the handle, which then rings the task's attention bell.
    want_room: AtomicBool,
    /// The handle was dropped.
    dropped: AtomicBool,
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
        let machine = Connection::client(rand::random(), config.clone(), now);
        enlarge_buffers(&socket, window_bytes(&config));
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
    /// more). Cancelling the wait may or may not leave the message sent.
    pub async fn send(&mut self, message: Bytes) -> Result<(), DriverError> {
        if let Some(why) = self.ended() {
            return Err(why.into());
        }
        let (done, outcome) = oneshot::channel();
        let command = Command::Send {
            key: self.key,
            message,
            done,
        };
        if self.commands.send(command).await.is_err() {
            return Err(ConnectionEnded::DriverStopped.into());
        }
        match outcome.await {
            Ok(result) => result,
            Err(_) => Err(self
                .ended()
                .unwrap_or(ConnectionEnded::DriverStopped)
                .into()),
        }
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
        enlarge_buffers(&socket, window_bytes(&config));
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

/// New connections waiting for `accept`, at most.
const ACCEPT_QUEUE: usize = 128;

/// An upper bound on how long the state machine takes to declare a silent peer dead: every
/// retransmission waits at most `max_rto`.
fn give_up_after(config: &Config) -> Duration {
    config.max_rto * (config.max_retransmissions + 1) + Duration::from_millis(500)
}
