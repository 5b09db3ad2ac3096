//! A framed connection in the shape of mini-redis's `Connection`: it owns its read and write
//! buffers, decodes frames with any [`Decoder`], queues replies with any [`Encoder`] and batches
//! writes, flushing only when no further complete frame is waiting to be answered.
//!
//! This is the one part of the crate that touches I/O, and only through the `AsyncRead` and
//! `AsyncWrite` traits: no sockets, no clock. Timeouts are the caller's (`tokio::time::timeout`
//! around [`FramedConnection::read_frame`]); every method keeps its progress in the struct, so
//! dropping a pending call loses nothing and the next call resumes where it stopped.

use std::io;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_util::codec::{Decoder, Encoder};

/// Replies queued past this many bytes are flushed before more frames are decoded, so a client
/// that pipelines without reading cannot make the write buffer grow without bound.
pub const WRITE_HIGH_WATER: usize = 64 * 1024;

const INITIAL_READ_CAPACITY: usize = 4 * 1024;

/// True when `err` means the connection ended under us (reset, aborted, broken pipe, closed in
/// the middle of a frame): a fresh connection may succeed, for instance after the server closed
/// an idle one.
pub fn is_connection_lost(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::UnexpectedEof
    )
}

/// A byte stream with a codec, its read buffer and its batched write buffer.
#[derive(Debug)]
pub struct FramedConnection<T, C> {
    io: T,
    codec: C,
    read_buf: BytesMut,
    write_buf: BytesMut,
}

impl<T, C> FramedConnection<T, C>
where
    T: AsyncRead + AsyncWrite + Unpin,
    C: Decoder,
{
    /// Wraps `io`, decoding and encoding with `codec`.
    pub fn new(io: T, codec: C) -> Self {
        FramedConnection {
            io,
            codec,
            read_buf: BytesMut::with_capacity(INITIAL_READ_CAPACITY),
            write_buf: BytesMut::new(),
        }
    }

    /// The next frame, `Ok(None)` when the peer closed the connection between frames.
    ///
    /// Frames already buffered are returned without touching the socket; only when none is left
    /// are the queued replies flushed and the socket read again. A peer that closes in the middle
    /// of a frame is an `UnexpectedEof` error. Cancel-safe.
    pub async fn read_frame(&mut self) -> Result<Option<C::Item>, C::Error> {
        loop {
            if self.write_buf.len() >= WRITE_HIGH_WATER {
                self.flush().await?;
            }
            if let Some(frame) = self.codec.decode(&mut self.read_buf)? {
                return Ok(Some(frame));
            }
            self.flush().await?;
            if self.io.read_buf(&mut self.read_buf).await? == 0 {
                return self.end_of_stream();
            }
        }
    }

    /// A frame already in the read buffer, decoded without touching the socket (no await, no
    /// timer): `Ok(None)` when no whole frame is buffered, or when the queued replies have reached
    /// [`WRITE_HIGH_WATER`] and must be flushed first; [`FramedConnection::read_frame`] then does
    /// both. A server answering pipelined requests takes them from here and only arms its idle
    /// timeout when it has to wait for the socket.
    pub fn buffered_frame(&mut self) -> Result<Option<C::Item>, C::Error> {
        if self.write_buf.len() >= WRITE_HIGH_WATER {
            return Ok(None);
        }
        self.codec.decode(&mut self.read_buf)
    }

    fn end_of_stream(&mut self) -> Result<Option<C::Item>, C::Error> {
        if self.read_buf.is_empty() {
            return Ok(None);
        }
        Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!(
                "the peer closed the connection in the middle of a frame ({} bytes unread)",
                self.read_buf.len()
            ),
        )
        .into())
    }

    /// Encodes `item` into the write buffer; it goes out at the next flush.
    pub fn queue<I>(&mut self, item: I) -> Result<(), <C as Encoder<I>>::Error>
    where
        C: Encoder<I>,
    {
        self.codec.encode(item, &mut self.write_buf)
    }

    /// Writes everything queued. Cancel-safe: bytes already written are not written again.
    ///
    /// The queue is one contiguous buffer, so it goes out by plain writes (`send` on a socket):
    /// the vectored write that `write_all_buf` would make costs the kernel more per call, and
    /// this is the call a server makes for every batch of answers.
    pub async fn flush(&mut self) -> io::Result<()> {
        while !self.write_buf.is_empty() {
            let written = self.io.write(&self.write_buf).await?;
            if written == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            self.write_buf.advance(written);
        }
        self.io.flush().await
    }

    /// Queues `item` and flushes at once.
    pub async fn send<I>(&mut self, item: I) -> Result<(), <C as Encoder<I>>::Error>
    where
        C: Encoder<I>,
    {
        self.queue(item)?;
        self.flush().await?;
        Ok(())
    }

    /// Sends what is queued, ends our side of the stream (a TCP FIN), then reads and discards
    /// whatever the peer still sends until it closes.
    ///
    /// Closing a socket whose receive queue holds unread bytes makes the kernel send a reset,
    /// which can destroy the reply still in flight to the peer. Draining first means a peer that
    /// is told why it is being disconnected really receives that answer. The peer may never
    /// close: bound this call with a timeout.
    pub async fn close_after_draining(mut self) -> io::Result<()> {
        self.flush().await?;
        self.io.shutdown().await?;
        self.read_buf.clear();
        loop {
            if self.io.read_buf(&mut self.read_buf).await? == 0 {
                return Ok(());
            }
            self.read_buf.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::addressbook::{AddressBookCodec, AddressBookError, Message};
    use tokio::io::duplex;

    #[tokio::test]
    async fn answers_are_batched_until_no_frame_is_left() {
        let (client, server) = duplex(1024);
        let mut server = FramedConnection::new(server, AddressBookCodec);
        let mut client = FramedConnection::new(client, AddressBookCodec);
        client.queue(Message::query("a@x").unwrap()).unwrap();
        client.queue(Message::query("b@x").unwrap()).unwrap();
        client.flush().await.unwrap();

        let first = server.read_frame().await.unwrap().unwrap();
        server
            .queue(Message::response(first.body()).unwrap())
            .unwrap();
        let second = server.read_frame().await.unwrap().unwrap();
        assert_eq!(second.body(), "b@x");
        // The first answer was not flushed: the second query was already buffered.
        assert_eq!(server.write_buf.len(), 5);
        server
            .queue(Message::response(second.body()).unwrap())
            .unwrap();
        server.flush().await.unwrap();

        assert_eq!(client.read_frame().await.unwrap().unwrap().body(), "a@x");
        assert_eq!(client.read_frame().await.unwrap().unwrap().body(), "b@x");
    }

    #[tokio::test]
    async fn buffered_frames_come_without_reading_and_stop_at_the_high_water_mark() {
        let (mut client, server) = duplex(1024);
        let mut server = FramedConnection::new(server, AddressBookCodec);
        assert!(
            server.buffered_frame().unwrap().is_none(),
            "nothing read yet"
        );
        client.write_all(b"Q\x03a@xQ\x03b@xQ\x02c").await.unwrap();
        assert_eq!(server.read_frame().await.unwrap().unwrap().body(), "a@x");
        assert_eq!(server.buffered_frame().unwrap().unwrap().body(), "b@x");
        // Half a frame is buffered: it waits for the socket.
        assert!(server.buffered_frame().unwrap().is_none());
        client.write_all(b"@").await.unwrap();
        assert_eq!(server.read_frame().await.unwrap().unwrap().body(), "c@");

        client.write_all(b"Q\x03d@xQ\x03e@x").await.unwrap();
        assert_eq!(server.read_frame().await.unwrap().unwrap().body(), "d@x");
        let filler = Message::response("x".repeat(127)).unwrap();
        while server.write_buf.len() < WRITE_HIGH_WATER {
            server.queue(filler.clone()).unwrap();
        }
        assert!(server.buffered_frame().unwrap().is_none(), "flush first");
        server.write_buf.clear();
        assert_eq!(server.buffered_frame().unwrap().unwrap().body(), "e@x");
    }

    #[tokio::test]
    async fn clean_close_between_frames_is_none() {
        let (client, server) = duplex(64);
        drop(client);
        let mut server = FramedConnection::new(server, AddressBookCodec);
        assert!(server.read_frame().await.unwrap().is_none());
    }

    #[tokio::test]
    async fn close_in_the_middle_of_a_frame_is_unexpected_eof() {
        let (mut client, server) = duplex(64);
        client.write_all(b"Q\x05ab").await.unwrap();
        drop(client);
        let mut server = FramedConnection::new(server, AddressBookCodec);
        match server.read_frame().await {
            Err(AddressBookError::Io(err)) => {
                assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof)
            }
            other => panic!("expected UnexpectedEof, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn close_after_draining_delivers_the_reply_and_ends_the_stream() {
        let (mut client, server) = duplex(64);
        let mut server = FramedConnection::new(server, AddressBookCodec);
        server.queue(Message::unknown_protocol()).unwrap();
        let closing = tokio::spawn(server.close_after_draining());
        // More than the pipe holds: the server must drain it for the write to finish.
        client.write_all(&[0u8; 300]).await.unwrap();
        let mut reply = Vec::new();
        client.read_to_end(&mut reply).await.unwrap();
        assert_eq!(reply, Message::unknown_protocol().to_bytes());
        drop(client);
        closing.await.unwrap().unwrap();
    }
}
