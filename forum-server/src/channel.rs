//! The two transports of the forum's envelopes behind one trait: a TCP connection with the
//! length-prefixed [`EnvelopeCodec`], or a reliable-datagram connection over UDP carrying one
//! envelope per message. Sessions are written once against [`EnvelopeChannel`].

use std::io;

use bytes::Bytes;
use protocol::forum::{Envelope, EnvelopeCodec, ForumError};
use protocol::framed::FramedConnection;
use server_kit::reliable_udp::ReliableConnection;
use tokio::net::TcpStream;

/// Envelopes in, envelopes out.
pub trait EnvelopeChannel: Send {
    /// The next envelope; `Ok(None)` when the peer ended the connection.
    fn recv(&mut self) -> impl Future<Output = Result<Option<Envelope>, ForumError>> + Send;
    /// Sends one envelope.
    fn send(&mut self, envelope: &Envelope) -> impl Future<Output = Result<(), ForumError>> + Send;
    /// Ends the connection gracefully (what was sent still arrives).
    fn close(&mut self) -> impl Future<Output = ()> + Send;
}

/// Envelopes over TCP, length-prefixed.
pub struct TcpChannel(FramedConnection<TcpStream, EnvelopeCodec>);

impl TcpChannel {
    /// Wraps an accepted or connected stream.
    pub fn new(stream: TcpStream) -> TcpChannel {
        TcpChannel(FramedConnection::new(stream, EnvelopeCodec::default()))
    }
}

impl EnvelopeChannel for TcpChannel {
    async fn recv(&mut self) -> Result<Option<Envelope>, ForumError> {
        self.0.read_frame().await
    }

    async fn send(&mut self, envelope: &Envelope) -> Result<(), ForumError> {
        self.0.send(envelope).await
    }

    async fn close(&mut self) {
        let _ = self.0.flush().await;
    }
}

/// Envelopes over UDP, one per reliable-datagram message.
pub struct UdpChannel(pub ReliableConnection);

impl EnvelopeChannel for UdpChannel {
    async fn recv(&mut self) -> Result<Option<Envelope>, ForumError> {
        match self.0.recv().await {
            Some(bytes) => Envelope::from_bytes(&bytes).map(Some),
            None => Ok(None),
        }
    }

    async fn send(&mut self, envelope: &Envelope) -> Result<(), ForumError> {
        let bytes = Bytes::from(envelope.to_bytes()?);
        self.0.send(bytes).await.map_err(|err| {
            ForumError::Io(io::Error::new(io::ErrorKind::BrokenPipe, err.to_string()))
        })
    }

    async fn close(&mut self) {
        let _ = self.0.close().await;
    }
}
