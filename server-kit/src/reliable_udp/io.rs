//! The endpoint's socket, read and written in batches through `quinn-udp`.
//!
//! On loopback and LAN the cost of a reliable transfer is the kernel's cost per datagram, so both
//! directions batch. Receiving takes up to [`RECV_SLOTS`] buffers in one `recvmmsg`, and with
//! GRO the kernel fills each buffer with a run of datagrams from one peer (split again here by
//! their stride). Sending collects consecutive datagrams to one peer of one size (the last may be
//! shorter), encoded by the state machine straight into one buffer, and hands them to the kernel
//! in one `sendmsg` with GSO. Where the platform lacks these, `quinn-udp` falls back to one
//! datagram per call. Datagrams too large to batch (over half of what one GSO send carries) go
//! one per `sendmsg`, their header and payload gathered from where they are, uncopied.
//!
//! Memory: the send buffer is allocated once. A receive buffer holding one large datagram (at
//! least [`SHARE_AT_LEAST`] bytes) is handed to the state machine whole, as [`Bytes`], so that its
//! payload is not copied again; it is replaced by one from a [`BufferPool`] and goes back there
//! once the payload has been delivered or put back together (the pool holds at most
//! [`POOLED_SLOTS`] buffers). Smaller datagrams are lent out and copied by the state machine, so
//! that a few small packets held for a while never pin whole receive buffers.
//!
//! `quinn-udp` also sets "don't fragment" on the socket: a datagram larger than the path MTU is
//! dropped rather than fragmented, which the default datagram size of 1200 bytes never meets.

use std::io::{self, IoSlice, IoSliceMut};
use std::net::{SocketAddr, SocketAddrV6};
use std::time::Instant;

use bytes::Bytes;
use protocol::reliable::pool::BufferPool;
use protocol::reliable::{Connection, Datagram};
use quinn_udp::{RecvMeta, Transmit, UdpSockRef, UdpSocketState};
use socket2::{SockAddr, SockRef};
use tokio::io::Interest;
use tokio::net::UdpSocket;
use tracing::debug;

/// Receive buffers filled by one system call.
const RECV_SLOTS: usize = if quinn_udp::BATCH_SIZE < 8 {
    quinn_udp::BATCH_SIZE
} else {
    8
};
/// One receive buffer: the largest datagram, or the largest run GRO coalesces.
const SLOT: usize = 64 * 1024;
/// A datagram this large is handed over in its receive buffer rather than copied.
const SHARE_AT_LEAST: usize = SLOT / 4;
/// Receive buffers kept for reuse, at most.
const POOLED_SLOTS: usize = 64;
/// The most bytes one GSO send carries (the kernel's limit is 64 KiB less the headers).
const MAX_BATCH_BYTES: usize = 65_000;

/// A datagram just received: lent from its receive buffer, or with the buffer handed over.
#[derive(Debug)]
pub(super) enum Received<'a> {
    /// A small datagram, valid during the call.
    Lent(&'a [u8]),
    /// A large datagram that owns (a share of) its buffer.
    Shared(Bytes),
}

impl Received<'_> {
    /// The datagram's bytes.
    pub(super) fn bytes(&self) -> &[u8] {
        match self {
            Received::Lent(datagram) => datagram,
            Received::Shared(datagram) => datagram,
        }
    }
}

/// Datagrams to one peer collected for one GSO send: every one `segment` bytes long but the
/// last, which may be shorter.
#[derive(Debug, Default)]
struct SendBatch {
    contents: Vec<u8>,
    to: Option<SocketAddr>,
    segment: usize,
    count: usize,
    /// A shorter datagram was added: it must be the last.
    closed: bool,
}

impl SendBatch {
    /// Whether a datagram of up to `len` bytes to `to` may be appended.
    fn has_room(&self, to: SocketAddr, len: usize, max_segments: usize) -> bool {
        match self.to {
            None => true,
            Some(batch_to) => {
                batch_to == to
                    && !self.closed
                    && self.count < max_segments
                    && self.contents.len() + len <= MAX_BATCH_BYTES
            }
        }
    }

    /// Takes the datagram of `len` bytes just appended to `contents`, unless it is longer than
    /// the segment size (then the caller sends what was there before it first).
    fn take_appended(&mut self, to: SocketAddr, len: usize) -> bool {
        if self.to.is_none() {
            self.to = Some(to);
            self.segment = len;
        } else if len > self.segment {
            return false;
        }
        self.closed = len < self.segment;
        self.count += 1;
        true
    }

    /// Sends nothing but forgets all but the datagram of `len` bytes at `from`, the last,
    /// which starts the batch again.
    fn keep_last(&mut self, from: usize, to: SocketAddr, len: usize) {
        self.contents.drain(..from);
        self.to = None;
        self.count = 0;
        self.take_appended(to, len);
    }

    fn clear(&mut self) {
        self.contents.clear();
        self.to = None;
        self.count = 0;
        self.closed = false;
    }
}

/// A UDP socket with batched I/O.
#[derive(Debug)]
pub(super) struct DatagramSocket {
    socket: UdpSocket,
    state: UdpSocketState,
    slots: Vec<Vec<u8>>,
    pool: BufferPool,
    meta: [RecvMeta; RECV_SLOTS],
    batch: SendBatch,
    /// The socket is IPv6 (IPv4 destinations are mapped).
    ipv6: bool,
}

impl DatagramSocket {
    pub(super) fn new(socket: UdpSocket) -> io::Result<DatagramSocket> {
        let state = UdpSocketState::new(UdpSockRef::from(&socket))?;
        let ipv6 = socket.local_addr()?.is_ipv6();
        Ok(DatagramSocket {
            socket,
            state,
            slots: (0..RECV_SLOTS).map(|_| vec![0; SLOT]).collect(),
            pool: BufferPool::new(POOLED_SLOTS * SLOT),
            meta: [RecvMeta::default(); RECV_SLOTS],
            batch: SendBatch::default(),
            ipv6,
        })
    }

    pub(super) fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// Waits until the socket may have datagrams.
    pub(super) async fn readable(&self) -> io::Result<()> {
        self.socket.readable().await
    }

    /// Hands every datagram one system call returns to `on_datagram`, and returns how many
    /// there were: 0 once the socket has nothing more.
    pub(super) fn try_recv(
        &mut self,
        mut on_datagram: impl FnMut(SocketAddr, Received<'_>),
    ) -> io::Result<usize> {
        let mut slots = self.slots.iter_mut();
        let mut slices: [IoSliceMut<'_>; RECV_SLOTS] =
            std::array::from_fn(|_| IoSliceMut::new(slots.next().expect("one buffer per slot")));
        let filled = self.socket.try_io(Interest::READABLE, || {
            self.state
                .recv(UdpSockRef::from(&self.socket), &mut slices, &mut self.meta)
        });
        let filled = match filled {
            Ok(filled) => filled,
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => return Ok(0),
            Err(error) => return Err(error),
        };
        let mut count = 0;
        for (meta, slot) in self.meta[..filled].iter().zip(&mut self.slots) {
            let stride = meta.stride.max(1);
            if meta.len >= SHARE_AT_LEAST && meta.len <= stride {
                let fresh = self.pool.take().unwrap_or_else(|| vec![0; SLOT]);
                let full = std::mem::replace(slot, fresh);
                on_datagram(
                    meta.addr,
                    Received::Shared(self.pool.share(full).slice(..meta.len)),
                );
                count += 1;
                continue;
            }
            let mut datagrams = slot[..meta.len].chunks(stride);
            // An empty datagram is a datagram too (and yields no chunk).
            let first = datagrams.next().unwrap_or_default();
            for datagram in std::iter::once(first).chain(datagrams) {
                on_datagram(meta.addr, Received::Lent(datagram));
                count += 1;
            }
        }
        Ok(count)
    }

    /// Sends every datagram `machine` has for `to`. Small ones (when twice the largest the
    /// machine may produce fits a GSO batch) are encoded straight into the send batch, which
    /// goes whenever the next one might not join it; larger ones go one at a time, header and
    /// payload gathered by one vectored system call, without a copy.
    pub(super) async fn send_all(
        &mut self,
        to: SocketAddr,
        machine: &mut Connection,
        max_len: usize,
        now: Instant,
    ) {
        if 2 * max_len > MAX_BATCH_BYTES {
            while let Some(datagram) = machine.poll_datagram(now) {
                self.flush().await;
                self.send_vectored(to, &datagram).await;
            }
            return;
        }
        let max_segments = self.state.max_gso_segments();
        loop {
            if !self.batch.has_room(to, max_len, max_segments) {
                self.flush().await;
            }
            let before = self.batch.contents.len();
            let Some(len) = machine.poll_transmit_into(now, &mut self.batch.contents) else {
                return;
            };
            if !self.batch.take_appended(to, len) {
                // Longer than the batch's segment: send the batch without it, then start anew.
                self.transmit_batch(before).await;
                self.batch.keep_last(before, to, len);
            }
        }
    }

    /// Sends one datagram from its two parts.
    async fn send_vectored(&self, to: SocketAddr, datagram: &Datagram) {
        let parts = [
            IoSlice::new(&datagram.header),
            IoSlice::new(&datagram.payload),
        ];
        let to = SockAddr::from(self.mapped(to));
        loop {
            let sent = self.socket.try_io(Interest::WRITABLE, || {
                SockRef::from(&self.socket).send_to_vectored(&parts, &to)
            });
            match sent {
                Ok(_) => return,
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                    if let Err(error) = self.socket.writable().await {
                        debug!(%error, "UDP socket not writable");
                        return;
                    }
                }
                Err(error) => {
                    debug!(%error, to = ?to.as_socket(), "UDP send failed");
                    return;
                }
            }
        }
    }

    /// `to` as the socket takes it: an IPv4 address mapped into IPv6 on an IPv6 socket.
    fn mapped(&self, to: SocketAddr) -> SocketAddr {
        match (self.ipv6, to) {
            (true, SocketAddr::V4(v4)) => {
                SocketAddr::V6(SocketAddrV6::new(v4.ip().to_ipv6_mapped(), v4.port(), 0, 0))
            }
            _ => to,
        }
    }

    /// Sends whatever is queued.
    pub(super) async fn flush(&mut self) {
        self.transmit_batch(self.batch.contents.len()).await;
        self.batch.clear();
    }

    /// Sends the batch's first `len` bytes, as `count` datagrams.
    async fn transmit_batch(&self, len: usize) {
        let Some(to) = self.batch.to else {
            return;
        };
        let count = self.batch.count;
        let segment = (count > 1).then_some(self.batch.segment);
        self.transmit(to, &self.batch.contents[..len], segment, count)
            .await;
    }

    /// Sends `contents` to `to`, as `count` datagrams of `segment` bytes if a segment size is
    /// given. A send that fails is logged and forgotten: the datagrams are lost like any others,
    /// and the state machines send them again.
    async fn transmit(
        &self,
        to: SocketAddr,
        contents: &[u8],
        segment: Option<usize>,
        count: usize,
    ) {
        if !send_segments(&self.socket, &self.state, to, contents, segment).await {
            debug!(%to, datagrams = count, "UDP send failed; the datagrams are lost");
        }
    }
}

/// Sends `contents` to `to` in one system call (as GSO segments of `segment` bytes when given),
/// waiting while the socket's buffer is full; whether the kernel took it. Failures are logged.
pub(crate) async fn send_segments(
    socket: &UdpSocket,
    state: &UdpSocketState,
    to: SocketAddr,
    contents: &[u8],
    segment: Option<usize>,
) -> bool {
    let transmit = Transmit {
        destination: to,
        ecn: None,
        contents,
        segment_size: segment,
        src_ip: None,
    };
    loop {
        let sent = socket.try_io(Interest::WRITABLE, || {
            state.try_send(UdpSockRef::from(socket), &transmit)
        });
        match sent {
            Ok(()) => return true,
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                if let Err(error) = socket.writable().await {
                    debug!(%error, "UDP socket not writable");
                    return false;
                }
            }
            Err(error) => {
                debug!(%error, %to, "UDP send failed");
                return false;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    /// Appends `len` bytes to the batch as the encoder would, if there is room for `max`.
    fn add(batch: &mut SendBatch, to: SocketAddr, len: usize, max: usize, segments: usize) -> bool {
        if !batch.has_room(to, max, segments) {
            return false;
        }
        batch.contents.extend(std::iter::repeat_n(0, len));
        batch.take_appended(to, len)
    }

    #[test]
    fn a_batch_takes_equal_datagrams_to_one_peer_and_ends_with_a_shorter_one() {
        let mut batch = SendBatch::default();
        assert!(add(&mut batch, addr(1), 100, 100, 64));
        assert!(add(&mut batch, addr(1), 100, 100, 64));
        assert!(!batch.has_room(addr(2), 100, 64), "another peer");
        assert!(add(&mut batch, addr(1), 40, 100, 64));
        assert!(!batch.has_room(addr(1), 100, 64), "after the shorter one");
        assert_eq!(
            (batch.count, batch.segment, batch.contents.len()),
            (3, 100, 240)
        );
        batch.clear();
        assert!(add(&mut batch, addr(2), 40, 100, 64));
        assert!(!add(&mut batch, addr(2), 100, 100, 64), "a longer datagram");
        batch.keep_last(40, addr(2), 100);
        assert_eq!(
            (batch.count, batch.segment, batch.contents.len()),
            (1, 100, 100)
        );
    }

    #[test]
    fn a_batch_respects_the_segment_and_byte_limits() {
        let mut batch = SendBatch::default();
        assert!(add(&mut batch, addr(1), 10, 10, 2));
        assert!(add(&mut batch, addr(1), 10, 10, 2));
        assert!(!batch.has_room(addr(1), 10, 2));

        let mut batch = SendBatch::default();
        assert!(add(&mut batch, addr(1), 40_000, 40_000, 64));
        assert!(!batch.has_room(addr(1), 40_000, 64));
        assert!(batch.has_room(addr(1), 20_000, 64));
    }
}
