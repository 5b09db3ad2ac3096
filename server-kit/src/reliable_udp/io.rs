//! The endpoint's socket, read and written in batches through `quinn-udp`.
//!
//! On loopback and LAN the cost of a reliable transfer is the kernel's cost per datagram, so both
//! directions batch. Receiving takes up to [`RECV_SLOTS`] buffers in one `recvmmsg`, and with
//! GRO the kernel fills each buffer with a run of datagrams from one peer (split again here by
//! their stride). Sending collects consecutive datagrams to one peer of one size (the last may be
//! shorter) and hands them to the kernel in one `sendmsg` with GSO. Where the platform lacks
//! these, `quinn-udp` falls back to one datagram per call. Buffers are allocated once.
//!
//! `quinn-udp` also sets "don't fragment" on the socket: a datagram larger than the path MTU is
//! dropped rather than fragmented, which the default datagram size of 1200 bytes never meets.

use std::io::{self, IoSliceMut};
use std::net::SocketAddr;

use quinn_udp::{RecvMeta, Transmit, UdpSockRef, UdpSocketState};
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
/// The most bytes one GSO send carries (the kernel's limit is 64 KiB less the headers).
const MAX_BATCH_BYTES: usize = 65_000;

/// Datagrams collected for one GSO send.
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
    /// Adds `datagram` if it can ride in this batch.
    fn try_add(&mut self, to: SocketAddr, datagram: &[u8], max_segments: usize) -> bool {
        let fits = match self.to {
            None => true,
            Some(batch_to) => {
                batch_to == to
                    && !self.closed
                    && datagram.len() <= self.segment
                    && self.count < max_segments
                    && self.contents.len() + datagram.len() <= MAX_BATCH_BYTES
            }
        };
        if fits {
            if self.to.is_none() {
                self.to = Some(to);
                self.segment = datagram.len();
            }
            self.closed = datagram.len() < self.segment;
            self.contents.extend_from_slice(datagram);
            self.count += 1;
        }
        fits
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
    receive: Vec<u8>,
    meta: [RecvMeta; RECV_SLOTS],
    batch: SendBatch,
}

impl DatagramSocket {
    pub(super) fn new(socket: UdpSocket) -> io::Result<DatagramSocket> {
        let state = UdpSocketState::new(UdpSockRef::from(&socket))?;
        Ok(DatagramSocket {
            socket,
            state,
            receive: vec![0; RECV_SLOTS * SLOT],
            meta: [RecvMeta::default(); RECV_SLOTS],
            batch: SendBatch::default(),
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
        mut on_datagram: impl FnMut(SocketAddr, &[u8]),
    ) -> io::Result<usize> {
        let mut chunks = self.receive.chunks_mut(SLOT);
        let mut slices: [IoSliceMut<'_>; RECV_SLOTS] =
            std::array::from_fn(|_| IoSliceMut::new(chunks.next().expect("one chunk per slot")));
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
        for (meta, slot) in self.meta[..filled].iter().zip(self.receive.chunks(SLOT)) {
            let mut datagrams = slot[..meta.len].chunks(meta.stride.max(1));
            // An empty datagram is a datagram too (and yields no chunk).
            let first = datagrams.next().unwrap_or_default();
            for datagram in std::iter::once(first).chain(datagrams) {
                on_datagram(meta.addr, datagram);
                count += 1;
            }
        }
        Ok(count)
    }

    /// Queues `datagram` for `to`, sending what was queued before if it cannot join them. A
    /// datagram too large to share a batch goes at once, without a copy.
    pub(super) async fn send(&mut self, to: SocketAddr, datagram: &[u8]) {
        if 2 * datagram.len() > MAX_BATCH_BYTES {
            self.flush().await;
            return self.transmit(to, datagram, None, 1).await;
        }
        let max_segments = self.state.max_gso_segments();
        if !self.batch.try_add(to, datagram, max_segments) {
            self.flush().await;
            self.batch.try_add(to, datagram, max_segments);
        }
    }

    /// Sends whatever is queued.
    pub(super) async fn flush(&mut self) {
        let Some(to) = self.batch.to else {
            return;
        };
        let batch = std::mem::take(&mut self.batch.contents);
        let segment = (self.batch.count > 1).then_some(self.batch.segment);
        self.transmit(to, &batch, segment, self.batch.count).await;
        self.batch.contents = batch;
        self.batch.clear();
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
        let transmit = Transmit {
            destination: to,
            ecn: None,
            contents,
            segment_size: segment,
            src_ip: None,
        };
        loop {
            let sent = self.socket.try_io(Interest::WRITABLE, || {
                self.state
                    .try_send(UdpSockRef::from(&self.socket), &transmit)
            });
            match sent {
                Ok(()) => return,
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                    if let Err(error) = self.socket.writable().await {
                        debug!(%error, "UDP socket not writable");
                        return;
                    }
                }
                Err(error) => {
                    debug!(%error, %to, datagrams = count, "UDP send failed");
                    return;
                }
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

    #[test]
    fn a_batch_takes_equal_datagrams_to_one_peer_and_ends_with_a_shorter_one() {
        let mut batch = SendBatch::default();
        assert!(batch.try_add(addr(1), &[0; 100], 64));
        assert!(batch.try_add(addr(1), &[0; 100], 64));
        assert!(!batch.try_add(addr(2), &[0; 100], 64), "another peer");
        assert!(!batch.try_add(addr(1), &[0; 101], 64), "a longer datagram");
        assert!(batch.try_add(addr(1), &[0; 40], 64));
        assert!(
            !batch.try_add(addr(1), &[0; 40], 64),
            "after the shorter one"
        );
        assert_eq!(
            (batch.count, batch.segment, batch.contents.len()),
            (3, 100, 240)
        );
        batch.clear();
        assert!(batch.try_add(addr(2), &[0; 40], 64));
    }

    #[test]
    fn a_batch_respects_the_segment_and_byte_limits() {
        let mut batch = SendBatch::default();
        assert!(batch.try_add(addr(1), &[0; 10], 2));
        assert!(batch.try_add(addr(1), &[0; 10], 2));
        assert!(!batch.try_add(addr(1), &[0; 10], 2));

        let mut batch = SendBatch::default();
        assert!(batch.try_add(addr(1), &[0; 40_000], 64));
        assert!(!batch.try_add(addr(1), &[0; 40_000], 64));
    }
}
