//! A UDP relay that drops a share of the datagrams it forwards, in both directions, and sends a
//! share of the rest twice, chosen by a seeded PRNG: a lossy, duplicating network on loopback,
//! for tests and benchmarks of [`crate::reliable_udp`] over real sockets.
//!
//! The relay has one socket. A datagram from the server goes to the client (the last address,
//! other than the server, that sent something); any other datagram goes to the server. One
//! client per relay, then: a test with several clients starts a relay for each.
//!
//! So as not to be the bottleneck of a benchmark, the relay reads and writes in batches as the
//! reliable-datagram driver does (`recvmmsg` and GRO, then GSO through `quinn-udp`): each
//! datagram of a coalesced run is kept or dropped on its own, and the kept ones go on together.

use std::io::{self, IoSliceMut};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use quinn_udp::{RecvMeta, UdpSockRef, UdpSocketState};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tokio::io::Interest;
use tokio::net::UdpSocket;
use tokio::task::JoinHandle;
use tracing::debug;

use crate::reliable_udp::enlarge_buffers;
use crate::reliable_udp::io::send_segments;

/// The kernel buffers the relay asks for, so that it drops only what it chooses to.
const SOCKET_BUFFER: usize = 16 * 1024 * 1024;
/// System calls' worth of datagrams the relay takes from its socket before sending what it
/// kept and waiting again.
const BATCH: usize = 16;
/// Receive buffers filled by one system call.
const RECV_SLOTS: usize = if quinn_udp::BATCH_SIZE < 8 {
    quinn_udp::BATCH_SIZE
} else {
    8
};
/// One receive buffer: the largest datagram, or the largest run GRO coalesces.
const SLOT: usize = 64 * 1024;
/// The most bytes one GSO send carries.
const MAX_BATCH_BYTES: usize = 65_000;

/// What the relay does to the datagrams it forwards, each choice made per datagram.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Impairment {
    /// Probability (0.0 to 1.0) that a datagram is dropped.
    pub loss: f64,
    /// Probability (0.0 to 1.0) that a datagram not dropped is sent twice.
    pub duplication: f64,
}

impl Impairment {
    /// Drops with probability `loss`, duplicates nothing.
    pub fn loss(loss: f64) -> Impairment {
        Impairment {
            loss,
            duplication: 0.0,
        }
    }
}

/// What the relay did so far.
#[derive(Debug, Default)]
struct Counters {
    forwarded: AtomicU64,
    dropped: AtomicU64,
    duplicated: AtomicU64,
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
        LossyRelay::start_with(server, Impairment::loss(loss), seed).await
    }

    /// Starts a relay to `server`, as [`LossyRelay::start`] does, that impairs the datagrams it
    /// forwards as `impairment` says.
    pub async fn start_with(
        server: SocketAddr,
        impairment: Impairment,
        seed: u64,
    ) -> io::Result<LossyRelay> {
        let ip = match server.ip() {
            ip if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            ip => ip,
        };
        let socket = UdpSocket::bind(SocketAddr::new(ip, 0)).await?;
        enlarge_buffers(&socket, SOCKET_BUFFER);
        let local_addr = socket.local_addr()?;
        let counters = Arc::new(Counters::default());
        let state = UdpSocketState::new(UdpSockRef::from(&socket))?;
        let relay = Relay {
            socket,
            state,
            server,
            client: None,
            loss: impairment.loss.clamp(0.0, 1.0),
            duplication: impairment.duplication.clamp(0.0, 1.0),
            rng: SmallRng::seed_from_u64(seed),
            counters: Arc::clone(&counters),
            batch: Batch::default(),
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

    /// Datagrams sent twice on purpose so far (each counted once here, twice in
    /// [`LossyRelay::forwarded`]).
    pub fn duplicated(&self) -> u64 {
        self.counters.duplicated.load(Ordering::Relaxed)
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
    state: UdpSocketState,
    server: SocketAddr,
    client: Option<SocketAddr>,
    loss: f64,
    duplication: f64,
    rng: SmallRng,
    counters: Arc<Counters>,
    /// Datagrams kept, waiting to go out together.
    batch: Batch,
}

/// Datagrams to one address, all `segment` bytes long but the last, which may be shorter.
#[derive(Debug, Default)]
struct Batch {
    contents: Vec<u8>,
    to: Option<SocketAddr>,
    segment: usize,
    count: usize,
    closed: bool,
}

impl Relay {
    async fn run(mut self) {
        let mut buffers = vec![vec![0; SLOT]; RECV_SLOTS];
        let mut meta = [RecvMeta::default(); RECV_SLOTS];
        loop {
            if let Err(error) = self.socket.readable().await {
                debug!(%error, "relay socket failed");
                return;
            }
            for _ in 0..BATCH {
                let mut slots = buffers.iter_mut();
                let mut slices: [IoSliceMut<'_>; RECV_SLOTS] = std::array::from_fn(|_| {
                    IoSliceMut::new(slots.next().expect("one buffer per slot"))
                });
                let received = self.socket.try_io(Interest::READABLE, || {
                    self.state
                        .recv(UdpSockRef::from(&self.socket), &mut slices, &mut meta)
                });
                match received {
                    Ok(filled) => {
                        for (meta, buffer) in meta[..filled].iter().zip(&buffers) {
                            let datagrams = buffer[..meta.len].chunks(meta.stride.max(1));
                            for datagram in datagrams {
                                self.forward(datagram, meta.addr).await;
                            }
                        }
                    }
                    Err(error) if error.kind() == io::ErrorKind::WouldBlock => break,
                    Err(error) => {
                        debug!(%error, "relay receive failed");
                        break;
                    }
                }
            }
            self.flush().await;
        }
    }

    /// Drops `datagram` or queues it, once or twice, for the other side.
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
        self.queue(datagram, to).await;
        if self.rng.random_bool(self.duplication) {
            self.counters.duplicated.fetch_add(1, Ordering::Relaxed);
            self.queue(datagram, to).await;
        }
    }

    /// Adds `datagram` to the batch for `to`, sending the batch first if it cannot join.
    async fn queue(&mut self, datagram: &[u8], to: SocketAddr) {
        let batch = &self.batch;
        let joins = batch.to == Some(to)
            && !batch.closed
            && datagram.len() <= batch.segment
            && batch.count < self.state.max_gso_segments()
            && batch.contents.len() + datagram.len() <= MAX_BATCH_BYTES;
        if !joins {
            self.flush().await;
            self.batch.to = Some(to);
            self.batch.segment = datagram.len();
        }
        self.batch.closed = datagram.len() < self.batch.segment;
        self.batch.contents.extend_from_slice(datagram);
        self.batch.count += 1;
    }

    /// Sends the queued datagrams, with one system call where the platform allows.
    async fn flush(&mut self) {
        let Some(to) = self.batch.to.take() else {
            return;
        };
        let count = std::mem::take(&mut self.batch.count);
        let segment = (count > 1).then_some(self.batch.segment);
        if send_segments(&self.socket, &self.state, to, &self.batch.contents, segment).await {
            self.counters
                .forwarded
                .fetch_add(count as u64, Ordering::Relaxed);
        }
        self.batch.contents.clear();
        self.batch.closed = false;
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::time::timeout;

    use super::*;

    const PATIENCE: Duration = Duration::from_secs(5);

    async fn receive(socket: &UdpSocket) -> (Vec<u8>, SocketAddr) {
        let mut buffer = vec![0; SLOT];
        let (len, from) = timeout(PATIENCE, socket.recv_from(&mut buffer))
            .await
            .expect("a datagram in time")
            .unwrap();
        buffer.truncate(len);
        (buffer, from)
    }

    #[tokio::test]
    async fn duplication_sends_each_kept_datagram_twice_both_ways() {
        let server = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let impairment = Impairment {
            loss: 0.0,
            duplication: 1.0,
        };
        let relay = LossyRelay::start_with(server.local_addr().unwrap(), impairment, 1)
            .await
            .unwrap();
        for i in 0..3u8 {
            client.send_to(&[i; 10], relay.local_addr()).await.unwrap();
            for _ in 0..2 {
                let (datagram, from) = receive(&server).await;
                assert_eq!(datagram, [i; 10]);
                assert_eq!(from, relay.local_addr());
            }
        }
        server.send_to(b"back", relay.local_addr()).await.unwrap();
        assert_eq!(receive(&client).await.0, b"back");
        assert_eq!(receive(&client).await.0, b"back");
        // The relay counts a send once the system call returns, maybe after the receiver woke.
        let counted = async {
            while relay.forwarded() < 8 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        };
        timeout(PATIENCE, counted).await.unwrap();
        assert_eq!(
            (relay.forwarded(), relay.duplicated(), relay.dropped()),
            (8, 4, 0)
        );
    }

    #[tokio::test]
    async fn full_loss_forwards_nothing_and_counts_every_drop() {
        let server = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let relay = LossyRelay::start(server.local_addr().unwrap(), 1.0, 1)
            .await
            .unwrap();
        for _ in 0..5 {
            client.send_to(b"lost", relay.local_addr()).await.unwrap();
        }
        let mut buffer = [0; 16];
        let nothing = timeout(Duration::from_millis(200), server.recv_from(&mut buffer)).await;
        assert!(nothing.is_err(), "a datagram got through");
        assert_eq!((relay.forwarded(), relay.dropped()), (0, 5));
    }
}
