//! The two halves of a client's TCP connection as the room's server and the signaling server
//! run them: [`FrameReader`] keeps its own buffer, so that a read cancelled by a `select!` (a
//! deadline, a shutdown) loses nothing; [`write_outbox`] writes the frames queued for the client
//! in batches.

use std::io;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::mpsc;
use tokio_util::codec::Decoder;
use tokio_util::sync::CancellationToken;

/// Bytes of frames written to a socket in one system call at most.
const WRITE_BATCH: usize = 64 * 1024;

/// Bytes a connection's read buffer starts with: an idle client costs little.
const INITIAL_READ_BUFFER: usize = 256;

/// Frames of `C` read from one connection.
pub(crate) struct FrameReader<C> {
    read: OwnedReadHalf,
    buffer: BytesMut,
    codec: C,
}

impl<C> FrameReader<C>
where
    C: Decoder,
    C::Error: From<io::Error>,
{
    /// A reader of `read` through `codec`.
    pub(crate) fn new(read: OwnedReadHalf, codec: C) -> FrameReader<C> {
        FrameReader {
            read,
            buffer: BytesMut::with_capacity(INITIAL_READ_BUFFER),
            codec,
        }
    }

    /// The next frame; `None` when the other side closed between frames. Cancel-safe.
    pub(crate) async fn next(&mut self) -> Result<Option<C::Item>, C::Error> {
        loop {
            if let Some(frame) = self.codec.decode(&mut self.buffer)? {
                return Ok(Some(frame));
            }
            if self.read.read_buf(&mut self.buffer).await? == 0 {
                return self.codec.decode_eof(&mut self.buffer);
            }
        }
    }
}

/// Writes the outbox's frames to the client, several per system call, until the outbox closes
/// and is drained; when `dropped` is cancelled, what is left is abandoned at once.
pub(crate) async fn write_outbox(
    write: &mut OwnedWriteHalf,
    mut outbox: mpsc::Receiver<Bytes>,
    dropped: &CancellationToken,
) {
    let mut batch = BytesMut::new();
    loop {
        let first = tokio::select! {
            first = outbox.recv() => first,
            () = dropped.cancelled() => return,
        };
        let Some(first) = first else {
            return;
        };
        batch.extend_from_slice(&first);
        while batch.len() < WRITE_BATCH {
            match outbox.try_recv() {
                Ok(frame) => batch.extend_from_slice(&frame),
                Err(_) => break,
            }
        }
        let written = tokio::select! {
            written = write.write_all(&batch) => written,
            () = dropped.cancelled() => return,
        };
        if written.is_err() {
            return; // the client is gone; its reader sees it too
        }
        batch.clear();
    }
}
