//! The forum client library: one session over UDP or TCP, requests and their replies, the file
//! transfers over the side channel, and the server's own notices (`XIT` after the idle timeout,
//! `SHT` at shutdown), which end the session with the server's reason.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use protocol::forum::{Cmd, Envelope, ForumError};
use protocol::reliable::{Config as ReliableConfig, Stats};
use server_kit::reliable_udp::{ConnectionEnded, ReliableConnection};
use thiserror::Error;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpStream, UdpSocket};
use tokio::time::timeout;

use crate::channel::{EnvelopeChannel, TcpChannel, UdpChannel};
use crate::transfer::{read_status, receive_body, send_file, token_from_hex};

/// Which transport carries the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportKind {
    /// The reliable-datagram layer over UDP (the seed's choice).
    Udp,
    /// A TCP connection.
    Tcp,
}

/// What can go wrong in a session.
#[derive(Debug, Error)]
pub enum ClientError {
    /// The server could not be reached.
    #[error("cannot reach the forum server at {addr}: {reason}")]
    Connect {
        /// The address tried.
        addr: SocketAddr,
        /// Why.
        reason: String,
    },
    /// The server ended the session and said why (idle timeout, shutdown).
    #[error("{0}")]
    Ended(String),
    /// The server went away without a word.
    #[error("the server closed the connection")]
    Closed,
    /// The server stopped answering (it vanished, or the path to it did): over UDP, where no
    /// connection reset says so, the reliable layer's retransmissions went unanswered.
    #[error("lost the server: {0}")]
    Lost(ConnectionEnded),
    /// The server did not answer in time.
    #[error("the server did not answer within {0:?}")]
    Timeout(Duration),
    /// The server sent something unexpected.
    #[error("the server broke the protocol: {0}")]
    Protocol(String),
    /// The server refused a request: its status (`file-error`, `no-thread`, ...) and reason.
    #[error("{reason}")]
    Refused {
        /// The status.
        status: String,
        /// The server's words.
        reason: String,
    },
    /// A file transfer failed.
    #[error("file transfer failed: {0}")]
    Transfer(String),
    /// The connection failed.
    #[error(transparent)]
    Forum(#[from] ForumError),
}

/// The session's channel, either transport.
enum Channel {
    Tcp(TcpChannel),
    Udp(UdpChannel),
}

impl Channel {
    async fn send(&mut self, envelope: &Envelope) -> Result<(), ForumError> {
        match self {
            Channel::Tcp(channel) => channel.send(envelope).await,
            Channel::Udp(channel) => channel.send(envelope).await,
        }
    }

    async fn recv(&mut self) -> Result<Option<Envelope>, ForumError> {
        match self {
            Channel::Tcp(channel) => channel.recv().await,
            Channel::Udp(channel) => channel.recv().await,
        }
    }

    /// Why the channel ended, once it gave its last envelope.
    fn end(&self) -> ClientError {
        match self {
            Channel::Udp(channel) => match channel.0.ended() {
                Some(why @ (ConnectionEnded::PeerDead | ConnectionEnded::IdleTimeout)) => {
                    ClientError::Lost(why)
                }
                _ => ClientError::Closed,
            },
            Channel::Tcp(_) => ClientError::Closed,
        }
    }

    async fn close(&mut self) {
        match self {
            Channel::Tcp(channel) => channel.close().await,
            Channel::Udp(channel) => channel.close().await,
        }
    }
}

/// A session with a forum server.
pub struct ForumClient {
    channel: Channel,
    server: SocketAddr,
    user: String,
    patience: Duration,
}

impl ForumClient {
    /// Connects to `server` over `transport`; every answer is awaited at most `patience`.
    pub async fn connect(
        server: SocketAddr,
        transport: TransportKind,
        patience: Duration,
    ) -> Result<ForumClient, ClientError> {
        let failed = |reason: String| ClientError::Connect {
            addr: server,
            reason,
        };
        let channel = match transport {
            TransportKind::Tcp => {
                let stream = server_kit::connect(server, patience)
                    .await
                    .map_err(|err| failed(err.to_string()))?;
                Channel::Tcp(TcpChannel::new(stream))
            }
            TransportKind::Udp => {
                let local: SocketAddr = if server.is_ipv4() {
                    ([0, 0, 0, 0], 0).into()
                } else {
                    ([0u16; 8], 0).into()
                };
                let socket = UdpSocket::bind(local)
                    .await
                    .map_err(|err| failed(err.to_string()))?;
                let connection =
                    ReliableConnection::connect(socket, server, ReliableConfig::default())
                        .await
                        .map_err(|err| failed(err.to_string()))?;
                Channel::Udp(UdpChannel(connection))
            }
        };
        Ok(ForumClient {
            channel,
            server,
            user: String::new(),
            patience,
        })
    }

    /// The logged-in username, once logged in.
    pub fn user(&self) -> &str {
        &self.user
    }

    /// What the reliable-datagram layer did so far, for a session over UDP.
    pub fn reliable_stats(&self) -> Option<Stats> {
        match &self.channel {
            Channel::Udp(channel) => Some(channel.0.stats()),
            Channel::Tcp(_) => None,
        }
    }

    /// Remembers the username the session logged in as (envelopes carry it).
    pub fn set_user(&mut self, user: &str) {
        self.user = user.to_owned();
    }

    /// Sends `cmd args` and returns the server's reply. A server notice instead of a reply
    /// (idle timeout, shutdown) is [`ClientError::Ended`].
    pub async fn request(&mut self, cmd: &str, args: &[&str]) -> Result<Envelope, ClientError> {
        let envelope = Envelope::new(self.user.as_str(), cmd, args.iter().copied());
        self.channel.send(&envelope).await?;
        let reply = timeout(self.patience, self.channel.recv())
            .await
            .map_err(|_| ClientError::Timeout(self.patience))??;
        match reply {
            None => Err(self.channel.end()),
            Some(reply) => as_reply(reply),
        }
    }

    /// Waits for a notice from the server while the user types: resolves only when the server
    /// ends the session (or the connection drops). Cancel-safe.
    pub async fn ended(&mut self) -> ClientError {
        match self.channel.recv().await {
            Ok(Some(envelope)) => match as_reply(envelope) {
                Err(ended) => ended,
                Ok(unexpected) => {
                    ClientError::Protocol(format!("an unrequested {:?}", unexpected.cmd))
                }
            },
            Ok(None) => self.channel.end(),
            Err(err) => err.into(),
        }
    }

    /// UPD: uploads the file at `path` to `title` under its own name; the server's verdict.
    /// `progress` hears (bytes sent, file size) as the body goes.
    pub async fn upload(
        &mut self,
        title: &str,
        path: &Path,
        progress: impl FnMut(u64, u64),
    ) -> Result<String, ClientError> {
        let name = path
            .file_name()
            .and_then(|name| name.to_str())
            .ok_or_else(|| {
                ClientError::Transfer(format!("{} has no usable file name", path.display()))
            })?;
        let mut side = self.open_side_channel(Cmd::Upd, title, name).await?;
        send_file(&mut side, path, self.patience, progress)
            .await
            .map_err(|err| ClientError::Transfer(err.to_string()))?;
        match read_status(&mut side, self.patience).await {
            Ok(Ok(message)) => Ok(message),
            Ok(Err(refusal)) => Err(ClientError::Transfer(refusal)),
            Err(err) => Err(ClientError::Transfer(err.to_string())),
        }
    }

    /// DWN: downloads `file` of `title` into `folder` (atomically: a temporary name, renamed
    /// once whole and checked); the saved path. `progress` hears (bytes received, file size).
    pub async fn download(
        &mut self,
        title: &str,
        file: &str,
        folder: &Path,
        progress: impl FnMut(u64, u64),
    ) -> Result<PathBuf, ClientError> {
        crate::names::check_file_name(file)
            .map_err(|err| ClientError::Transfer(err.to_string()))?;
        let mut side = self.open_side_channel(Cmd::Dwn, title, file).await?;
        let target = folder.join(file);
        let staged = server_kit::atomic_file::temp_path(&target)
            .map_err(|err| ClientError::Transfer(err.to_string()))?;
        let received = receive_body(&mut side, &staged, u64::MAX, self.patience, progress).await;
        let moved = received.and_then(|_| std::fs::rename(&staged, &target));
        if let Err(err) = moved {
            let _ = std::fs::remove_file(&staged);
            return Err(ClientError::Transfer(err.to_string()));
        }
        Ok(target)
    }

    /// Sends UPD or DWN; on `TCP-open`, the connected side channel with the token presented,
    /// otherwise [`ClientError::Refused`] with the server's reason.
    async fn open_side_channel(
        &mut self,
        cmd: Cmd,
        title: &str,
        file: &str,
    ) -> Result<TcpStream, ClientError> {
        let reply = self.request(cmd.as_str(), &[title, file]).await?;
        if reply.cmd != Cmd::TcpOpen.as_str() {
            return Err(ClientError::Refused {
                status: reply.cmd,
                reason: reply.args.join(" "),
            });
        }
        let (port, token) = match &reply.args[..] {
            [port, token] => (port.parse::<u16>().ok(), token_from_hex(token)),
            _ => (None, None),
        };
        let (Some(port), Some(token)) = (port, token) else {
            return Err(ClientError::Protocol(format!(
                "a TCP-open without port and token: {:?}",
                reply.args
            )));
        };
        let mut side = TcpStream::connect((self.server.ip(), port))
            .await
            .map_err(|err| ClientError::Transfer(err.to_string()))?;
        side.write_all(&token)
            .await
            .map_err(|err: io::Error| ClientError::Transfer(err.to_string()))?;
        Ok(side)
    }

    /// Ends the session's connection gracefully.
    pub async fn close(mut self) {
        let _ = timeout(self.patience, self.channel.close()).await;
    }
}

/// A reply, or the server's notice that the session is over.
fn as_reply(envelope: Envelope) -> Result<Envelope, ClientError> {
    if envelope.cmd == Cmd::Xit.as_str() || envelope.cmd == Cmd::Sht.as_str() {
        return Err(ClientError::Ended(envelope.args.join(" ")));
    }
    Ok(envelope)
}
