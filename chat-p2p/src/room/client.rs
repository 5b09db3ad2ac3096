//! A room client as a library: join under a username, then send and receive at once through two
//! halves, as `cli chat join` does.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::BytesMut;
use protocol::chat::{ChatError, ChatFrame, ChatFrameCodec, DEFAULT_MAX_PAYLOAD};
use thiserror::Error;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio_util::codec::Decoder;

use super::names::{NameError, check_username};

/// What can go wrong in a room session.
#[derive(Debug, Error)]
pub enum RoomError {
    /// The username would be refused (checked before connecting).
    #[error("invalid username: {0}")]
    Username(#[from] NameError),
    /// The server could not be reached.
    #[error("cannot reach the chat room at {addr}: {reason}")]
    Connect {
        /// The address tried.
        addr: SocketAddr,
        /// Why.
        reason: String,
    },
    /// A message to send is over the frame limit.
    #[error("the message is {len} bytes, over the limit of {max}")]
    TooLong {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The server broke the framing, or the connection failed.
    #[error(transparent)]
    Frame(#[from] ChatError),
}

/// One relayed message: who said what (decoded as UTF-8, invalid bytes replaced).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatMessage {
    /// The sender's username (`server` for the room's own notices).
    pub user: String,
    /// The text.
    pub text: String,
}

/// Connects to the room at `addr` and sends `username` as the first frame; gives up connecting
/// after `patience`. The room may still refuse the name (taken, or the room is full): it then
/// says why as a message from `server` and closes, which the reader reports.
pub async fn join(
    addr: SocketAddr,
    username: &str,
    patience: Duration,
) -> Result<(RoomWriter, RoomReader), RoomError> {
    check_username(username.as_bytes())?;
    let stream = server_kit::connect(addr, patience)
        .await
        .map_err(|err| RoomError::Connect {
            addr,
            reason: err.to_string(),
        })?;
    let (read, write) = stream.into_split();
    let mut writer = RoomWriter { write };
    writer.send_frame(username.as_bytes()).await?;
    let reader = RoomReader {
        read,
        buffer: BytesMut::new(),
        codec: ChatFrameCodec::new(DEFAULT_MAX_PAYLOAD),
        user: None,
    };
    Ok((writer, reader))
}

/// The sending half of a session.
#[derive(Debug)]
pub struct RoomWriter {
    write: OwnedWriteHalf,
}

impl RoomWriter {
    /// Sends `text` to the room; an empty text is not sent (the room would ignore it).
    pub async fn send(&mut self, text: &str) -> Result<(), RoomError> {
        if text.is_empty() {
            return Ok(());
        }
        self.send_frame(text.as_bytes()).await
    }

    async fn send_frame(&mut self, payload: &[u8]) -> Result<(), RoomError> {
        if payload.len() > DEFAULT_MAX_PAYLOAD {
            return Err(RoomError::TooLong {
                len: payload.len(),
                max: DEFAULT_MAX_PAYLOAD,
            });
        }
        let frame = ChatFrame::new(payload)?;
        self.write
            .write_all(frame.as_bytes())
            .await
            .map_err(ChatError::from)?;
        Ok(())
    }

    /// Closes the sending side: the room sees the client leave.
    pub async fn close(mut self) {
        let _ = self.write.shutdown().await;
    }
}

/// Bytes the reader makes room for before each read of the socket.
const READ_CHUNK: usize = 8 * 1024;

/// The receiving half of a session.
#[derive(Debug)]
pub struct RoomReader {
    read: OwnedReadHalf,
    buffer: BytesMut,
    codec: ChatFrameCodec,
    /// A relay's username frame, kept while its message frame is awaited (so that a cancelled
    /// [`RoomReader::next`] loses nothing).
    user: Option<ChatFrame>,
}

impl RoomReader {
    /// The next message; `None` once the server closed the connection between messages.
    /// Cancel-safe.
    pub async fn next(&mut self) -> Result<Option<ChatMessage>, RoomError> {
        loop {
            if let Some(frame) = self.codec.decode(&mut self.buffer)? {
                match self.user.take() {
                    None => self.user = Some(frame),
                    Some(user) => return Ok(Some(message(&user, &frame))),
                }
                continue;
            }
            // Room for whatever the socket holds, not just the rest of this frame: one read takes
            // many relayed messages at once.
            self.buffer.reserve(READ_CHUNK);
            if self
                .read
                .read_buf(&mut self.buffer)
                .await
                .map_err(ChatError::from)?
                == 0
            {
                return self.at_end();
            }
        }
    }

    /// The end of the stream: clean between messages, truncated otherwise.
    fn at_end(&mut self) -> Result<Option<ChatMessage>, RoomError> {
        self.codec.decode_eof(&mut self.buffer)?;
        match self.user.take() {
            None => Ok(None),
            Some(user) => Err(ChatError::Truncated {
                buffered: user.as_bytes().len(),
                needed: user.as_bytes().len() + protocol::chat::HEADER_LEN,
            }
            .into()),
        }
    }
}

fn message(user: &ChatFrame, text: &ChatFrame) -> ChatMessage {
    ChatMessage {
        user: String::from_utf8_lossy(user.payload()).into_owned(),
        text: String::from_utf8_lossy(text.payload()).into_owned(),
    }
}
