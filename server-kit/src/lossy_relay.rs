//! A UDP relay that drops a share of the datagrams it forwards, in both directions, chosen by a
//! seeded PRNG: a lossy network on loopback, for tests and benchmarks of [`crate::reliable_udp`]
//! over real sockets.
//!
//! The relay has one socket. A datagram from the server goes to the client (the last address,
//! other than the server, that sent something); any other datagram goes to the server. One
//! client at a time, then, which is all a test or benchmark needs.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tokio::net::UdpSocket;
use tokio::task::JoinHandle;
use tracing::debug;

use crate::reliable_udp::enlarge_buffers;

/// The kernel buffers the relay asks for, so that it drops only what it chooses to.
const SOCKET_BUFFER: usize = 16 * 1024 * 1024;
/// Datagrams the relay takes from its socket before yielding to other tasks.
const BATCH: usize = 128;

/// What the relay did so far.
#[derive(Debug, Default)]
struct Counters {
    forwarded: AtomicU64,
    dropped: AtomicU64,
}

/// A running relay; dropping it stops the relay.
#[derive(Debug)]
pub struct LossyRelay {
    local_addr: SocketAddr,
    counters: Arc<Counters>,
    task: JoinHandle<()>,
}

impl LossyRelay {
    /// Starts a relay to `server` on a free port of the same interface (loopback for an
    /// unspecified address) that drops each datagram with probability `loss` (0.0 to 1.0), the
    /// choices drawn from a PRNG seeded with `seed`.
    pub async fn start(server: SocketAddr, loss: f64, seed: u64) -> io::Result<LossyRelay> {
        let ip = match server.ip() {
            ip if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            ip => ip,
        };
        let socket = UdpSocket::bind(SocketAddr::new(ip, 0)).await?;
        enlarge_buffers(&socket, SOCKET_BUFFER);
        let local_addr = socket.local_addr()?;
        let counters = Arc::new(Counters::default());
        let relay = Relay {
            socket,
            server,
            client: None,
            loss: loss.clamp(0.0, 1.0),
            rng: SmallRng::seed_from_u64(seed),
            counters: Arc::clone(&counters),
        };
        let task = tokio::spawn(relay.run());
        Ok(LossyRelay {
            local_addr,
            counters,
            task,
        })
    }

    /// The address clients should send to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Datagrams passed on so far.
    pub fn forwarded(&self) -> u64 {
        self.counters.forwarded.load(Ordering::Relaxed)
    }

    /// Datagrams dropped on purpose so far.
    pub fn dropped(&self) -> u64 {
        self.counters.dropped.load(Ordering::Relaxed)
    }
}

impl Drop for LossyRelay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The relay's task state.
struct Relay {
    socket: UdpSocket,
    server: SocketAddr,
    client: Option<SocketAddr>,
    loss: f64,
    rng: SmallRng,
    counters: Arc<Counters>,
}

impl Relay {
    async fn run(mut self) {
        let mut buffer = vec![0; 65_535];
        loop {
            if let Err(error) = self.socket.readable().await {
                debug!(%error, "relay socket failed");
                return;
            }
            for _ in 0..BATCH {
                match self.socket.try_recv_from(&mut buffer) {
                    Ok((len, from)) => self.forward(&buffer[..len], from).await,
                    Err(error) if error.kind() == io::ErrorKind::WouldBlock => break,
                    Err(error) => {
                        debug!(%error, "relay receive failed");
                        break;
                    }
                }
            }
        }
    }

    async fn forward(&mut self, datagram: &[u8], from: SocketAddr) {
        let to = if from == self.server {
            self.client
        } else {
            self.client = Some(from);
            Some(self.server)
        };
        let Some(to) = to else {
            return; // the server spoke before any client did
        };
        if self.rng.random_bool(self.loss) {
            self.counters.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        match self.socket.send_to(datagram, to).await {
            Ok(_) => {
                self.counters.forwarded.fetch_add(1, Ordering::Relaxed);
            }
            Err(error) => debug!(%error, %to, "relay send failed"),
        }
    }
}
