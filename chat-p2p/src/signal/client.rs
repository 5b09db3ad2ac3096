//! The signaling client a peer uses: one TCP connection to the server, shared by every task
//! of the peer (the handle is cheap to clone), with the server's notices on a channel of their
//! own.
//!
//! Two tasks run the connection. The writer sends requests, several per system call, and
//! records for each one where its reply goes; the reader matches replies to requests first in,
//! first out (the server answers every request exactly once, in order) and passes the notices
//! (introductions, sessions, declines, ended sessions) to the notice channel. That channel is
//! bounded: while it is full the reader waits, so replies wait too, and a peer must keep
//! taking its notices. An error frame that answers no request (the server is full, or closing
//! the connection over a broken frame) is passed on as a notice.

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use protocol::chat::{ChatCodec, ChatError};
use protocol::p2p::signal::{
    self, ClientMessage, MAX_SIGNAL_PAYLOAD, Password, PeerEntry, PeerState, Presence,
    ServerMessage, Visibility,
};
use thiserror::Error;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{mpsc, oneshot};
use tokio_util::codec::{Decoder, Encoder};
use tracing::{debug, warn};

/// Notices held for the peer before the reader waits.
pub const NOTICE_QUEUE: usize = 64;
/// Requests waiting to be written before [`SignalClient::request`] waits.
const REQUEST_QUEUE: usize = 64;
/// Bytes of requests written in one system call at most.
const WRITE_BATCH: usize = 64 * 1024;

/// What can go wrong talking to the signaling server.
#[derive(Debug, Error)]
pub enum ClientError {
    /// The server refused the request (the peer's misuse: wrong password, unknown peer, ...);
    /// the text is the server's.
    #[error("{0}")]
    Refused(String),
    /// The connection is closed (the server closed it, or it ended after an error): nothing
    /// more can be asked on it.
    #[error("the connection to the signaling server is closed")]
    Closed,
    /// Reaching the server or talking to it failed (the network's or the machine's fault).
    #[error("signaling connection failed: {0}")]
    Io(#[from] io::Error),
    /// The server sent something that is not the protocol (its fault); the connection is
    /// closed.
    #[error("the signaling server sent garbage: {0}")]
    Garbage(String),
    /// The server did not accept the connection within the patience given.
    #[error("the signaling server did not answer in time")]
    TimedOut,
    /// A request too large for one frame (the caller's misuse), not sent.
    #[error("the request is {len} bytes long, more than {max}")]
    TooLarge {
        /// Its length as JSON.
        len: usize,
        /// The frame limit.
        max: usize,
    },
}

/// One peer as the server describes it in reply to a query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerInfo {
    /// The peer.
    pub username: String,
    /// Its state.
    pub state: PeerState,
    /// Where it takes datagrams.
    pub address: SocketAddr,
}

/// Where a reply goes.
type ReplySender = oneshot::Sender<Result<ServerMessage, ClientError>>;

/// A request on its way to the writer.
#[derive(Debug)]
struct Request {
    frame: Bytes,
    reply: ReplySender,
}

/// How the connection ended, which every later request is told.
#[derive(Debug, Clone)]
enum Ended {
    Closed,
    Garbage(String),
    Io(io::ErrorKind, String),
}

impl Ended {
    fn error(&self) -> ClientError {
        match self {
            Ended::Closed => ClientError::Closed,
            Ended::Garbage(text) => ClientError::Garbage(text.clone()),
            Ended::Io(kind, text) => ClientError::Io(io::Error::new(*kind, text.clone())),
        }
    }
}

/// The requests sent and not yet answered, oldest first.
#[derive(Debug, Default)]
struct Waiting {
    replies: VecDeque<ReplySender>,
    ended: Option<Ended>,
}

type SharedWaiting = Arc<Mutex<Waiting>>;

fn lock(waiting: &SharedWaiting) -> MutexGuard<'_, Waiting> {
    waiting.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Ends the connection for requests: every one waiting, and every later one, gets `ended`.
fn end(waiting: &SharedWaiting, ended: Ended) {
    let mut waiting = lock(waiting);
    let ended = waiting.ended.get_or_insert(ended).clone();
    for reply in waiting.replies.drain(..) {
        let _ = reply.send(Err(ended.error()));
    }
}

/// A connection to the signaling server. Clones share it; it closes once every clone is
/// dropped.
#[derive(Debug, Clone)]
pub struct SignalClient {
    requests: mpsc::Sender<Request>,
    local_addr: SocketAddr,
}

impl SignalClient {
    /// Connects to the server at `addr`, giving up after `patience`; the receiver yields the
    /// server's notices, `None` once the connection ended.
    pub async fn connect(
        addr: SocketAddr,
        patience: Duration,
    ) -> Result<(SignalClient, mpsc::Receiver<ServerMessage>), ClientError> {
        let stream = server_kit::connect(addr, patience)
            .await
            .map_err(|err| match err.kind() {
                io::ErrorKind::TimedOut => ClientError::TimedOut,
                _ => ClientError::Io(err),
            })?;
        let local_addr = stream.local_addr()?;
        debug!(server = %addr, local = %local_addr, "connected to the signaling server");
        let (read, write) = stream.into_split();
        let waiting = SharedWaiting::default();
        let (requests, request_queue) = mpsc::channel(REQUEST_QUEUE);
        let (notices, notice_queue) = mpsc::channel(NOTICE_QUEUE);
        tokio::spawn(write_requests(write, request_queue, Arc::clone(&waiting)));
        tokio::spawn(read_replies(read, notices, waiting));
        let client = SignalClient {
            requests,
            local_addr,
        };
        Ok((client, notice_queue))
    }

    /// The local address of the TCP connection (a peer announces this IP when its UDP
    /// socket is bound to `0.0.0.0`).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Sends `message` and waits for its reply; an error reply is `Ok(ServerMessage::Error)`.
    pub async fn request(&self, message: ClientMessage) -> Result<ServerMessage, ClientError> {
        let frame = request_frame(&message)?;
        let (reply, answer) = oneshot::channel();
        let request = Request { frame, reply };
        self.requests
            .send(request)
            .await
            .map_err(|_| ClientError::Closed)?;
        answer.await.map_err(|_| ClientError::Closed)?
    }

    /// Sends `message`, expecting `ok`.
    async fn expect_ok(&self, message: ClientMessage) -> Result<(), ClientError> {
        let re = message.kind();
        match self.request(message).await? {
            ServerMessage::Ok { re: answered } if answered == re => Ok(()),
            other => Err(unexpected(re, other)),
        }
    }

    /// Creates an account (it does not log in).
    pub async fn signup(&self, username: &str, password: &str) -> Result<(), ClientError> {
        self.expect_ok(ClientMessage::Signup {
            username: username.to_owned(),
            password: Password(password.to_owned()),
        })
        .await
    }

    /// Logs this connection in.
    pub async fn login(&self, username: &str, password: &str) -> Result<(), ClientError> {
        self.expect_ok(ClientMessage::Login {
            username: username.to_owned(),
            password: Password(password.to_owned()),
        })
        .await
    }

    /// Logs out (ending any session); the connection stays open.
    pub async fn logout(&self) -> Result<(), ClientError> {
        self.expect_ok(ClientMessage::Logout {}).await
    }

    /// Tells the server where this peer takes datagrams.
    pub async fn announce(&self, address: SocketAddr) -> Result<(), ClientError> {
        self.expect_ok(ClientMessage::Announce { address }).await
    }

    /// The peers visible to this one, by username.
    pub async fn list(&self) -> Result<Vec<PeerEntry>, ClientError> {
        match self.request(ClientMessage::List {}).await? {
            ServerMessage::Peers { peers } => Ok(peers),
            other => Err(unexpected("list", other)),
        }
    }

    /// One peer's state and address, if it is online and visible to this one.
    pub async fn query(&self, username: &str) -> Result<PeerInfo, ClientError> {
        let query = ClientMessage::Query {
            username: username.to_owned(),
        };
        match self.request(query).await? {
            ServerMessage::Peer {
                username,
                state,
                address,
            } => Ok(PeerInfo {
                username,
                state,
                address,
            }),
            other => Err(unexpected("query", other)),
        }
    }

    /// Sets this peer's presence (available or away).
    pub async fn set_presence(&self, presence: Presence) -> Result<(), ClientError> {
        self.expect_ok(ClientMessage::State { state: presence })
            .await
    }

    /// Sets who may see and reach this peer.
    pub async fn set_visibility(&self, visibility: Visibility) -> Result<(), ClientError> {
        self.expect_ok(ClientMessage::Visibility { visibility })
            .await
    }

    /// Asks to be introduced to `username`; the answer comes as a notice (`session` or
    /// `declined`).
    pub async fn connect_to(&self, username: &str) -> Result<(), ClientError> {
        self.expect_ok(ClientMessage::Connect {
            username: username.to_owned(),
        })
        .await
    }

    /// Accepts `from`'s introduction; the session comes as a notice.
    pub async fn accept(&self, from: &str) -> Result<(), ClientError> {
        self.expect_ok(ClientMessage::Accept {
            from: from.to_owned(),
        })
        .await
    }

    /// Declines `from`'s introduction, telling it `reason` (or that this peer declined).
    pub async fn decline(&self, from: &str, reason: Option<&str>) -> Result<(), ClientError> {
        self.expect_ok(ClientMessage::Decline {
            from: from.to_owned(),
            reason: reason.map(str::to_owned),
        })
        .await
    }

    /// Ends this peer's session; the other peer is told.
    pub async fn close_session(&self) -> Result<(), ClientError> {
        self.expect_ok(ClientMessage::Close {}).await
    }
}

/// The error for a reply that is not what `re` expects: the server's refusal, or garbage.
fn unexpected(re: &str, reply: ServerMessage) -> ClientError {
    match reply {
        ServerMessage::Error { message, .. } => ClientError::Refused(message),
        other => ClientError::Garbage(format!("the server answered {} to {re}", other.kind())),
    }
}

/// `message` as a frame, if it fits in one.
fn request_frame(message: &ClientMessage) -> Result<Bytes, ClientError> {
    let json = signal::encode(message);
    let too_large = || ClientError::TooLarge {
        len: json.len(),
        max: MAX_SIGNAL_PAYLOAD,
    };
    let mut frame = BytesMut::new();
    ChatCodec::new(MAX_SIGNAL_PAYLOAD)
        .encode(json.as_slice(), &mut frame)
        .map_err(|_| too_large())?;
    Ok(frame.freeze())
}

/// Writes requests, several per system call, recording where each reply goes, until every
/// handle is dropped or a write fails; then closes the sending side.
async fn write_requests(
    mut write: OwnedWriteHalf,
    mut requests: mpsc::Receiver<Request>,
    waiting: SharedWaiting,
) {
    let mut batch = BytesMut::new();
    while let Some(first) = requests.recv().await {
        take_request(first, &mut batch, &waiting);
        while batch.len() < WRITE_BATCH {
            match requests.try_recv() {
                Ok(next) => take_request(next, &mut batch, &waiting),
                Err(_) => break,
            }
        }
        if batch.is_empty() {
            continue;
        }
        if let Err(err) = write.write_all(&batch).await {
            debug!("cannot write to the signaling server: {err}");
            end(&waiting, Ended::Io(err.kind(), err.to_string()));
            return;
        }
        batch.clear();
    }
    let _ = write.shutdown().await;
}

/// Adds `request` to `batch` and its reply to the queue, unless the connection has ended.
fn take_request(request: Request, batch: &mut BytesMut, waiting: &SharedWaiting) {
    let mut waiting = lock(waiting);
    if let Some(ended) = &waiting.ended {
        let _ = request.reply.send(Err(ended.error()));
        return;
    }
    waiting.replies.push_back(request.reply);
    batch.extend_from_slice(&request.frame);
}

/// Reads the server's frames, routing replies and notices, until the connection ends.
async fn read_replies(
    mut read: OwnedReadHalf,
    notices: mpsc::Sender<ServerMessage>,
    waiting: SharedWaiting,
) {
    let mut buffer = BytesMut::with_capacity(1024);
    let mut codec = ChatCodec::new(MAX_SIGNAL_PAYLOAD);
    let ended = loop {
        let payload = match next_payload(&mut read, &mut buffer, &mut codec).await {
            Ok(Some(payload)) => payload,
            Ok(None) => break Ended::Closed,
            Err(ChatError::Io(err)) => break Ended::Io(err.kind(), err.to_string()),
            Err(err) => break Ended::Garbage(err.to_string()),
        };
        match signal::decode::<ServerMessage>(&payload) {
            Ok(message) => route(message, &notices, &waiting).await,
            Err(err) => break Ended::Garbage(err.to_string()),
        }
    };
    match &ended {
        Ended::Closed => debug!("the signaling server closed the connection"),
        Ended::Garbage(text) => warn!("the signaling server sent garbage: {text}"),
        Ended::Io(_, text) => warn!("the signaling connection failed: {text}"),
    }
    end(&waiting, ended);
}

/// The next frame's payload; `None` at the end of the stream between frames.
async fn next_payload(
    read: &mut OwnedReadHalf,
    buffer: &mut BytesMut,
    codec: &mut ChatCodec,
) -> Result<Option<Bytes>, ChatError> {
    loop {
        if let Some(payload) = codec.decode(buffer)? {
            return Ok(Some(payload));
        }
        if read.read_buf(buffer).await? == 0 {
            return codec.decode_eof(buffer);
        }
    }
}

/// Hands a reply to the oldest waiting request, and anything else to the notice channel
/// (waiting while it is full).
async fn route(
    message: ServerMessage,
    notices: &mpsc::Sender<ServerMessage>,
    waiting: &SharedWaiting,
) {
    if message.is_reply() {
        let reply = lock(waiting).replies.pop_front();
        if let Some(reply) = reply {
            let _ = reply.send(Ok(message));
            return;
        }
        if !matches!(message, ServerMessage::Error { .. }) {
            warn!(kind = message.kind(), "a reply to no request; ignored");
            return;
        }
    }
    let _ = notices.send(message).await;
}
