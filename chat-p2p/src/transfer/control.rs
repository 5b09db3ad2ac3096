//! The control connection of one transfer: control frames in both directions, and over TCP
//! the raw file body after the announce, read through the same buffer.

use std::io;

use bytes::{Bytes, BytesMut};
use protocol::chat_transfer::{Control, ControlCodec, ControlError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::codec::{Decoder, Encoder};

/// Bytes read from the socket at a time.
const READ_CHUNK: usize = 64 * 1024;

/// A TCP stream carrying control frames (and, over TCP, the body).
#[derive(Debug)]
pub(crate) struct ControlStream {
    stream: TcpStream,
    buf: BytesMut,
    codec: ControlCodec,
}

impl ControlStream {
    /// Wraps a connected stream.
    pub(crate) fn new(stream: TcpStream) -> ControlStream {
        ControlStream {
            stream,
            buf: BytesMut::with_capacity(READ_CHUNK),
            codec: ControlCodec::default(),
        }
    }

    /// The next frame; `None` when the peer closed the connection between frames. Cancel-safe:
    /// bytes read before a cancellation stay buffered.
    pub(crate) async fn recv(&mut self) -> Result<Option<Control>, ControlError> {
        loop {
            if let Some(frame) = self.codec.decode(&mut self.buf)? {
                return Ok(Some(frame));
            }
            if self.stream.read_buf(&mut self.buf).await? == 0 {
                return self.codec.decode_eof(&mut self.buf);
            }
        }
    }

    /// Sends one frame.
    pub(crate) async fn send(&mut self, frame: &Control) -> Result<(), ControlError> {
        let mut wire = BytesMut::new();
        self.codec.encode(frame, &mut wire)?;
        self.stream.write_all(&wire).await?;
        Ok(())
    }

    /// Up to `max` bytes of raw body (buffered ones first); empty at the end of the stream.
    /// Cancel-safe.
    pub(crate) async fn read_body(&mut self, max: usize) -> io::Result<Bytes> {
        if self.buf.is_empty() {
            self.buf.reserve(READ_CHUNK);
            self.stream.read_buf(&mut self.buf).await?;
        }
        let len = self.buf.len().min(max);
        Ok(self.buf.split_to(len).freeze())
    }

    /// The stream, to write a raw body to.
    pub(crate) fn stream_mut(&mut self) -> &mut TcpStream {
        &mut self.stream
    }

    /// Closes the sending half, so the peer reads the end of the stream after the last frame.
    pub(crate) async fn finish(&mut self) {
        let _ = self.stream.shutdown().await;
    }
}
