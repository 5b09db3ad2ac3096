//! The reliable-datagram layer: messages delivered exactly once and in order over a datagram
//! channel that drops, duplicates, reorders and delays, sans-IO in the shape of quinn-proto.
//!
//! - [`header`]: the 56-byte packet header (version 2, a 256-bit selective-ack bitmap), byte by
//!   byte.
//! - [`connection`]: [`Connection`], one end's state machine: `handle_datagram(now, bytes)`,
//!   `handle_timeout(now)`, `poll_transmit(now)`, `poll_timeout()`, `poll_event()`, `send`,
//!   `recv`; and for drivers that avoid copies and allocations, `handle_datagram_bytes`,
//!   `poll_transmit_into` and `poll_datagram`.
//! - [`receive`]: the receiving half, reassembly and in-order delivery in bounded buffers.
//! - [`pool`]: recycled buffers, for reassembled messages here and receive buffers in a driver.
//! - [`rtt`]: RFC 6298 round-trip estimation and retransmission timeout.
//!
//! There are no sockets and no clock here: time is an `Instant` passed in. The tokio driver that
//! runs connections over a `UdpSocket` lives in `server-kit`.

pub mod connection;
pub mod header;
pub mod pool;
pub mod receive;
pub mod rtt;
mod window;

use std::time::Duration;

pub use connection::{Connection, Datagram, SendError};
pub use header::{HEADER_LEN, Header, HeaderError, PacketType, SACK_BITS, Sack};

/// Limits and timers of a connection; both ends should use the same.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The largest datagram sent, header included (default 1200, safe on any path).
    pub max_datagram_size: usize,
    /// The largest message (default 1 MiB).
    pub max_message_size: usize,
    /// The window, in packets (default 64): a packet is only sent if its number is less than
    /// this past the oldest one unacknowledged, so at most this many are in flight; and never
    /// more than [`SACK_BITS`] (256) past it, so that one selective ack can report it: more than
    /// 257 are never in flight. The payload in flight is bounded too, by what the peer's
    /// receive buffer holds (see [`connection`]). There is no congestion control: the default
    /// suits a real network; loopback and a LAN carry a bulk transfer faster with 256.
    pub max_in_flight: usize,
    /// Bytes queued for sending at most, beyond one message (default 4 MiB).
    pub max_send_queue: usize,
    /// Bytes the receiving side holds at most: packets that arrived ahead of a gap, the message
    /// being put back together, and delivered messages the application has not taken yet
    /// (default 4 MiB; raised to `max_message_size` if lower). Past it packets are dropped
    /// unacknowledged, to be sent again, until the application takes some.
    pub max_receive_buffer: usize,
    /// The retransmission timeout before any RTT sample (default 200 ms).
    pub initial_rto: Duration,
    /// The floor of the retransmission timeout (default 20 ms, suited to loopback and LAN).
    pub min_rto: Duration,
    /// The cap of the retransmission timeout (default 1 s).
    pub max_rto: Duration,
    /// Retransmissions of one packet, each unacknowledged for an RTO with nothing at all heard
    /// from the peer, after which the peer is dead (default 10; with the other defaults, about
    /// 9 s of silence).
    pub max_retransmissions: u32,
    /// How long an ack may wait for a second packet to acknowledge (default 5 ms).
    pub ack_delay: Duration,
    /// A ping is sent after this long with nothing sent (default 5 s).
    pub keep_alive: Duration,
    /// The connection ends after this long with nothing received (default 30 s).
    pub idle_timeout: Duration,
    /// A message left incomplete (or packets left waiting for a gap) this long ends the
    /// connection (default 30 s).
    pub reassembly_timeout: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_datagram_size: 1200,
            max_message_size: 1024 * 1024,
            max_in_flight: 64,
            max_send_queue: 4 * 1024 * 1024,
            max_receive_buffer: 4 * 1024 * 1024,
            initial_rto: Duration::from_millis(200),
            min_rto: Duration::from_millis(20),
            max_rto: Duration::from_secs(1),
            max_retransmissions: 10,
            ack_delay: Duration::from_millis(5),
            keep_alive: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(30),
            reassembly_timeout: Duration::from_secs(30),
        }
    }
}

/// Something the application should know. After [`Event::Closed`] or [`Event::ClosedByPeer`]
/// the connection still acknowledges for a while (it drains, see [`connection`]) before
/// [`Connection::is_closed`]; after the other endings it is closed at once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The connection is open (client: its hello was acknowledged; server: a hello arrived).
    Connected,
    /// A packet went unacknowledged through every retransmission, with nothing at all heard
    /// from the peer meanwhile: the peer is gone.
    PeerDead,
    /// The peer closed the connection after everything it sent, all delivered. Unless we were
    /// closing too, what we had sent and not had acknowledged is dropped.
    ClosedByPeer,
    /// Our close and everything before it were acknowledged.
    Closed,
    /// Nothing arrived for the idle timeout.
    IdleTimeout,
    /// The peer broke the protocol; the connection is closed.
    ProtocolViolation(&'static str),
}

/// Counters of one connection.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Datagrams produced by `poll_transmit`.
    pub datagrams_sent: u64,
    /// Datagrams fed to `handle_datagram`.
    pub datagrams_received: u64,
    /// Packets sent again.
    pub retransmissions: u64,
    /// Packets received again, dropped.
    pub duplicates_dropped: u64,
    /// Datagrams that were not packets at all.
    pub garbage_dropped: u64,
    /// Packets of another connection.
    pub foreign_dropped: u64,
    /// Datagrams arriving after the connection closed.
    pub stale_dropped: u64,
    /// Packets dropped for lack of buffer room (they are sent again).
    pub no_room_dropped: u64,
    /// Messages queued by `send`.
    pub messages_sent: u64,
    /// Messages handed out by `recv`.
    pub messages_delivered: u64,
    /// The smoothed round-trip time, once measured.
    pub rtt: Option<Duration>,
    /// The current retransmission timeout.
    pub rto: Duration,
}

#[cfg(test)]
mod sim;
#[cfg(test)]
mod tests;
