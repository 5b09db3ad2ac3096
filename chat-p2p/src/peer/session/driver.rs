//! The session's driver task: the one owner of the socket's reads, the secure channel and the
//! reliable connection while the session runs. It waits (`tokio::select!`) on the socket, the
//! next deadline, the handle's commands, stream chunks to send, file verdicts and room in the
//! event channel; after each step it takes delivered messages, the connection's events and
//! datagrams to send. Everything it holds is bounded: a command is held back (and the command
//! channel with it) while the reliable send queue is full, and delivered messages are left in
//! the connection while the application is behind on events.

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, PoisonError};

use bytes::Bytes;
use protocol::p2p::secure::{DatagramKind, Role, SecureChannel};
use protocol::p2p::session::SessionMessage;
use protocol::reliable::{Connection, Event, SendError};
use tokio::net::UdpSocket;
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::{Instant, sleep_until};
use tracing::{debug, info, trace, warn};

use super::files::{Files, Verdict};
use super::stream::Streams;
use super::{Session, SessionConfig, SessionEnd, SessionEvent, SessionParams, Shared};

/// The receive buffer: the largest UDP datagram.
const RECV_BUFFER: usize = 64 * 1024;
/// Datagrams taken from the socket without waiting before the driver answers them.
const RECV_BATCH: usize = 32;
/// Events held by the driver beyond the channel's own capacity before it stops taking
/// delivered messages from the connection.
const OUTBOX_ROOM: usize = 64;
/// Receive errors in a row after which the socket counts as broken.
const MAX_SOCKET_ERRORS: u32 = 100;
/// Commands the handle and its background tasks may have waiting for the driver.
const COMMAND_QUEUE: usize = 16;
/// Stream chunks waiting for the driver to seal and send them.
const STREAM_QUEUE: usize = 64;

/// A message for the peer from the handle or one of its tasks, with where to say that it
/// was queued (or why not).
#[derive(Debug)]
pub(super) struct Command {
    /// The message.
    pub(super) message: SessionMessage,
    /// Told once the message is queued for sending.
    pub(super) reply: oneshot::Sender<Result<(), Rejected>>,
}

/// Why the driver did not queue a command's message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Rejected {
    /// The session has ended or is closing.
    Ended,
    /// The transfer the message belongs to is over (the peer refused it).
    Cancelled,
    /// The message is larger than the reliable layer's `max_message_size`.
    TooLarge {
        /// The message's size.
        size: usize,
        /// The limit.
        limit: usize,
    },
}

/// The handle's ends of the driver's channels.
pub(super) struct Handles {
    /// Messages to send.
    pub(super) commands: mpsc::Sender<Command>,
    /// A graceful close (`None`), or an end at once for the reason given.
    pub(super) close: mpsc::Sender<Option<SessionEnd>>,
    /// Stream chunks (chunk header and payload) to seal and send.
    pub(super) stream_chunks: mpsc::Sender<Vec<u8>>,
    /// What happens.
    pub(super) events: mpsc::Receiver<SessionEvent>,
    /// Turns true when the session is over.
    pub(super) ended: watch::Receiver<bool>,
}

/// The driver's ends of its channels, outside [`Driver`] so that `select!` can borrow them
/// while the branches' handlers borrow the driver.
struct Channels {
    commands: mpsc::Receiver<Command>,
    /// Whether the handle and every task holding a command sender are still there.
    commands_open: bool,
    close: mpsc::Receiver<Option<SessionEnd>>,
    stream_chunks: mpsc::Receiver<Vec<u8>>,
    verdicts: mpsc::Receiver<Verdict>,
    ended: watch::Sender<bool>,
}

/// A command whose message the send queue had no room for yet.
#[derive(Debug)]
struct Pending {
    message: SessionMessage,
    bytes: Bytes,
    reply: oneshot::Sender<Result<(), Rejected>>,
}

/// The driver task's state.
pub(super) struct Driver {
    pub(super) socket: Arc<UdpSocket>,
    /// The other peer's name, for events and logs.
    pub(super) peer: String,
    session: u32,
    role: Role,
    pub(super) config: SessionConfig,
    secure: SecureChannel,
    /// The reliable connection; `None` while the acceptor waits for the hello.
    conn: Option<Connection>,
    /// Where datagrams go: the source of the latest authenticated datagram.
    peer_addr: SocketAddr,
    connected: bool,
    connect_deadline: Instant,
    /// Whether a graceful close was asked for.
    closing: bool,
    /// When a graceful close gives up waiting for the peer's acknowledgements.
    close_deadline: Option<Instant>,
    /// How the session ends, once that is decided.
    ending: Option<SessionEnd>,
    /// When a graceful ending stops waiting for the application to take the last messages.
    ending_deadline: Option<Instant>,
    /// Whether the connection had no delivered message left the last time one was asked for.
    drained: bool,
    pending: Option<Pending>,
    /// The driver's own messages (verdicts, reports) waiting for room in the send queue.
    backlog: VecDeque<Bytes>,
    /// Events not yet in the event channel.
    pub(super) outbox: VecDeque<SessionEvent>,
    events: mpsc::Sender<SessionEvent>,
    pub(super) files: Files,
    pub(super) streams: Streams,
    shared: Arc<Shared>,
    /// Payload bytes handed to the reliable connection so far.
    queued_total: u64,
    stream_datagrams_sent: u64,
    socket_errors: u32,
    /// A datagram sealed for sending.
    sealed: Vec<u8>,
    /// A reliable packet before sealing.
    packet: Vec<u8>,
    /// The plaintext of the datagram being handled.
    pub(super) opened: Vec<u8>,
}

/// Starts the driver task of a session; the handle's ends of its channels.
pub(super) fn spawn(
    socket: Arc<UdpSocket>,
    params: SessionParams,
    config: SessionConfig,
    shared: Arc<Shared>,
) -> Handles {
    let (commands_tx, commands) = mpsc::channel(COMMAND_QUEUE);
    // Room for a graceful close and an end at once after it.
    let (close_tx, close) = mpsc::channel(2);
    let (stream_tx, stream_chunks) = mpsc::channel(STREAM_QUEUE);
    let (events_tx, events) = mpsc::channel(config.events.max(1));
    let (ended_tx, ended) = watch::channel(false);
    let (verdict_tx, verdicts) = mpsc::channel(super::files::MAX_INCOMING);
    let channels = Channels {
        commands,
        commands_open: true,
        close,
        stream_chunks,
        verdicts,
        ended: ended_tx,
    };
    let now = Instant::now();
    let conn = (params.role == Role::Initiator)
        .then(|| Connection::client(params.session, config.reliable.clone(), now.into_std()));
    let driver = Driver {
        socket,
        session: params.session,
        role: params.role,
        secure: SecureChannel::new(&params.key, params.session, params.role),
        conn,
        peer_addr: params.peer_addr,
        connected: false,
        connect_deadline: now + config.connect_timeout,
        closing: false,
        close_deadline: None,
        ending: None,
        ending_deadline: None,
        drained: false,
        pending: None,
        backlog: VecDeque::new(),
        outbox: VecDeque::new(),
        events: events_tx,
        files: Files::new(verdict_tx),
        streams: Streams::default(),
        shared,
        queued_total: 0,
        stream_datagrams_sent: 0,
        socket_errors: 0,
        sealed: Vec::new(),
        packet: Vec::new(),
        opened: Vec::new(),
        peer: params.peer,
        config,
    };
    tokio::spawn(driver.run(channels));
    Handles {
        commands: commands_tx,
        close: close_tx,
        stream_chunks: stream_tx,
        events,
        ended,
    }
}

impl Driver {
    async fn run(mut self, mut channels: Channels) {
        info!(peer = %self.peer, session = self.session, role = ?self.role, "session starts");
        let socket = Arc::clone(&self.socket);
        let mut buffer = vec![0; RECV_BUFFER];
        let end = loop {
            self.pump().await;
            if let Some(end) = self.end_now() {
                break end;
            }
            let deadline = self.next_deadline();
            let events = self.events.clone();
            let ch = &mut channels;
            tokio::select! {
                received = socket.recv_from(&mut buffer) => {
                    self.on_readable(received, &socket, &mut buffer).await;
                }
                () = sleep_until_some(deadline) => self.on_timer(),
                command = ch.commands.recv(), if ch.commands_open && self.accepts_commands() => {
                    match command {
                        Some(command) => self.on_command(command),
                        None => {
                            ch.commands_open = false;
                            self.request_close();
                        }
                    }
                }
                Some(request) = ch.close.recv() => match request {
                    None => self.request_close(),
                    Some(end) => self.end(end),
                },
                Some(chunk) = ch.stream_chunks.recv() => self.send_stream_chunk(&chunk).await,
                Some(verdict) = ch.verdicts.recv() => self.on_verdict(verdict),
                permit = events.reserve_owned(), if !self.outbox.is_empty() => match permit {
                    Ok(permit) => {
                        if let Some(event) = self.outbox.pop_front() {
                            permit.send(event);
                        }
                    }
                    Err(_) => self.outbox.clear(),
                },
            }
        };
        self.finish(end, channels).await;
    }

    /// Does everything the last step made possible: takes delivered messages and the
    /// connection's events, queues what waits for room, sends what is due, hands events over.
    async fn pump(&mut self) {
        loop {
            let took = self.take_messages().await;
            self.take_connection_events();
            self.flush_backlog();
            self.retry_pending();
            self.note_acknowledged();
            self.transmit().await;
            self.deliver_events();
            if took == 0 {
                break;
            }
        }
        self.publish_stats();
    }

    /// Takes delivered messages while the application keeps up; how many.
    async fn take_messages(&mut self) -> usize {
        let mut took = 0;
        while self.may_take_message() {
            let Some(conn) = self.conn.as_mut() else {
                break;
            };
            let Some(bytes) = conn.recv() else {
                self.drained = true;
                break;
            };
            self.drained = false;
            took += 1;
            match SessionMessage::decode(bytes) {
                Ok(message) => self.on_message(message).await,
                Err(error) => self.violation(format!("a message that does not decode: {error}")),
            }
        }
        took
    }

    fn may_take_message(&self) -> bool {
        let broken = matches!(
            self.ending,
            Some(SessionEnd::Failed(_) | SessionEnd::PeerVanished(_))
        );
        !broken && self.outbox.len() < OUTBOX_ROOM && self.backlog.is_empty()
    }

    /// Handles one message from the peer.
    async fn on_message(&mut self, message: SessionMessage) {
        trace!(peer = %self.peer, kind = message.kind(), "message");
        match message {
            SessionMessage::Chat { text } => self.outbox.push_back(SessionEvent::Message { text }),
            SessionMessage::FileOffer {
                id,
                name,
                size,
                sha256,
            } => self.on_file_offer(id, name, size, sha256).await,
            SessionMessage::FileChunk { id, offset, data } => {
                self.on_file_chunk(id, offset, data).await;
            }
            SessionMessage::FileAbort { id, reason } => self.on_file_abort(id, &reason),
            SessionMessage::FileResult { id, saved, detail } => {
                self.on_file_result(id, saved, detail);
            }
            SessionMessage::StreamStart { id, name, rate, .. } => {
                self.on_stream_start(id, name, rate);
            }
            SessionMessage::StreamEnd { id, sent } => self.on_stream_end(id, sent),
            SessionMessage::StreamReport { id, report } => self.on_stream_report(id, report),
        }
    }

    /// Acts on what the reliable connection reports.
    fn take_connection_events(&mut self) {
        let Some(conn) = self.conn.as_mut() else {
            return;
        };
        let events: Vec<Event> = std::iter::from_fn(|| conn.poll_event()).collect();
        for event in events {
            self.on_connection_event(event);
        }
    }

    fn on_connection_event(&mut self, event: Event) {
        debug!(peer = %self.peer, ?event, "connection event");
        match event {
            Event::Connected => {
                if !self.connected {
                    self.connected = true;
                    info!(peer = %self.peer, addr = %self.peer_addr, "session connected");
                    self.outbox.push_back(SessionEvent::Connected);
                }
            }
            Event::PeerDead | Event::IdleTimeout => self.on_silence(),
            Event::ClosedByPeer if !self.closing => self.end(SessionEnd::ClosedByPeer),
            Event::ClosedByPeer | Event::Closed => self.end(SessionEnd::ClosedByUs),
            Event::ProtocolViolation(what) => self.violation(what.to_owned()),
        }
    }

    /// The peer has not answered for too long: before the connection is open the initiator
    /// says hello again until the connect timeout, otherwise the peer has vanished.
    fn on_silence(&mut self) {
        if self.connected {
            return self.end(SessionEnd::PeerVanished(self.peer.clone()));
        }
        let now = Instant::now();
        if self.role == Role::Initiator && !self.closing && now < self.connect_deadline {
            debug!(peer = %self.peer, "no answer to the hello yet: saying hello again");
            let conn =
                Connection::client(self.session, self.config.reliable.clone(), now.into_std());
            self.conn = Some(conn);
        } else {
            self.end(self.unanswered());
        }
    }

    /// How the session ends when the peer never answered.
    fn unanswered(&self) -> SessionEnd {
        let waited = self.config.connect_timeout.as_secs_f64();
        SessionEnd::Failed(format!("{} did not answer within {waited:.1} s", self.peer))
    }

    /// Decides how the session ends (the first reason given wins).
    fn end(&mut self, reason: SessionEnd) {
        if self.ending.is_none() {
            debug!(peer = %self.peer, %reason, "session ending");
            self.ending = Some(reason);
            self.ending_deadline = Some(Instant::now() + self.config.close_timeout);
        }
    }

    /// Ends the session because the peer broke the protocol.
    pub(super) fn violation(&mut self, what: String) {
        warn!(peer = %self.peer, %what, "the peer broke the protocol");
        self.end(SessionEnd::Failed(format!(
            "{} broke the protocol: {what}",
            self.peer
        )));
    }

    /// How the session ends, if it is time: at once when it broke, and after the last
    /// delivered message is taken when it was closed.
    fn end_now(&self) -> Option<SessionEnd> {
        let ending = self.ending.as_ref()?;
        let graceful = matches!(ending, SessionEnd::ClosedByUs | SessionEnd::ClosedByPeer);
        let waited_enough = self
            .ending_deadline
            .is_none_or(|deadline| Instant::now() >= deadline);
        if graceful && !self.drained && self.conn.is_some() && !waited_enough {
            return None;
        }
        Some(ending.clone())
    }

    /// The earliest moment something is due.
    fn next_deadline(&self) -> Option<Instant> {
        let conn = self
            .conn
            .as_ref()
            .and_then(Connection::poll_timeout)
            .map(Instant::from_std);
        let connect = (!self.connected).then_some(self.connect_deadline);
        let ending = self.ending.as_ref().and(self.ending_deadline);
        [
            conn,
            connect,
            self.close_deadline,
            ending,
            self.next_stream_report(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    fn on_timer(&mut self) {
        let now = Instant::now();
        if let Some(conn) = self.conn.as_mut() {
            conn.handle_timeout(now.into_std());
        }
        if !self.connected && now >= self.connect_deadline {
            self.end(self.unanswered());
        }
        if self.close_deadline.is_some_and(|deadline| now >= deadline) {
            debug!(peer = %self.peer, "the close went unacknowledged");
            self.end(SessionEnd::ClosedByUs);
        }
        self.report_due_streams(now);
    }

    /// Takes the datagram `received` and whatever else the socket holds already.
    async fn on_readable(
        &mut self,
        received: io::Result<(usize, SocketAddr)>,
        socket: &UdpSocket,
        buffer: &mut [u8],
    ) {
        let mut received = received;
        for taken in 1..=RECV_BATCH {
            match received {
                Ok((len, from)) => {
                    self.socket_errors = 0;
                    self.on_datagram(&buffer[..len], from).await;
                }
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => return,
                Err(error) => return self.on_socket_error(&error),
            }
            if taken == RECV_BATCH {
                return;
            }
            received = socket.try_recv_from(buffer);
        }
    }

    fn on_socket_error(&mut self, error: &io::Error) {
        debug!(%error, "receive failed");
        self.socket_errors += 1;
        if self.socket_errors >= MAX_SOCKET_ERRORS {
            self.end(SessionEnd::Failed(format!("the socket failed: {error}")));
        }
    }

    /// Opens one datagram and hands its contents on; anything that does not open is counted
    /// by the secure channel and dropped.
    async fn on_datagram(&mut self, datagram: &[u8], from: SocketAddr) {
        let kind = match self.secure.open(datagram, &mut self.opened) {
            Ok(kind) => kind,
            Err(error) => {
                trace!(%from, %error, "dropped a datagram");
                return;
            }
        };
        if from != self.peer_addr {
            debug!(peer = %self.peer, %from, "the peer's address changed");
            self.peer_addr = from;
        }
        match kind {
            DatagramKind::Reliable => self.on_packet(),
            DatagramKind::Stream => self.on_stream_datagram(),
        }
    }

    /// A reliable-layer packet: to the connection, or, for the acceptor still waiting, the
    /// hello that opens it.
    fn on_packet(&mut self) {
        let now = std::time::Instant::now();
        if let Some(conn) = self.conn.as_mut() {
            return conn.handle_datagram(now, &self.opened);
        }
        if self.closing || !Connection::is_hello(&self.opened) {
            return;
        }
        let config = self.config.reliable.clone();
        match Connection::server(&self.opened, config, now) {
            Some(conn) if conn.connection_id() == self.session => self.conn = Some(conn),
            _ => debug!(peer = %self.peer, "a hello for another connection"),
        }
    }

    /// Whether a command may be taken now: the connection is open (so nothing is queued in a
    /// hello that may be said again) and the send queue took the last one.
    fn accepts_commands(&self) -> bool {
        self.connected && self.pending.is_none() && self.backlog.is_empty()
    }

    fn on_command(&mut self, command: Command) {
        if self.closing || self.ending.is_some() {
            let _ = command.reply.send(Err(Rejected::Ended));
            return;
        }
        if let Err(rejected) = self.admit(&command.message) {
            let _ = command.reply.send(Err(rejected));
            return;
        }
        let bytes = command.message.encode();
        self.try_queue(Pending {
            message: command.message,
            bytes,
            reply: command.reply,
        });
    }

    /// Whether a message of ours still belongs to something going on.
    fn admit(&self, message: &SessionMessage) -> Result<(), Rejected> {
        match message {
            SessionMessage::FileChunk { id, .. } | SessionMessage::FileAbort { id, .. } => {
                self.admit_file_message(*id)
            }
            _ => Ok(()),
        }
    }

    /// Queues a command's message, or holds it until the send queue has room.
    fn try_queue(&mut self, pending: Pending) {
        let Some(conn) = self.conn.as_mut() else {
            self.pending = Some(pending);
            return;
        };
        match conn.send(pending.bytes.clone()) {
            Ok(()) => {
                self.queued_total += pending.bytes.len() as u64;
                self.on_queued(&pending.message);
                let _ = pending.reply.send(Ok(()));
            }
            Err(SendError::QueueFull) => self.pending = Some(pending),
            Err(SendError::Closed) => {
                let _ = pending.reply.send(Err(Rejected::Ended));
            }
            Err(SendError::TooLarge { size, limit }) => {
                let _ = pending.reply.send(Err(Rejected::TooLarge { size, limit }));
            }
        }
    }

    /// Keeps account of a message of ours that was queued.
    fn on_queued(&mut self, message: &SessionMessage) {
        match message {
            SessionMessage::FileOffer { id, name, size, .. } => {
                self.on_offer_queued(*id, name, *size);
            }
            SessionMessage::FileChunk { id, offset, data } => {
                let done = offset + data.len() as u64;
                self.on_chunk_queued(*id, done, self.queued_total);
            }
            SessionMessage::FileAbort { id, reason } => self.on_abort_queued(*id, reason),
            SessionMessage::StreamStart { id, name, .. } => {
                self.streams.on_start_queued(*id, name.clone());
            }
            _ => {}
        }
    }

    fn retry_pending(&mut self) {
        if let Some(pending) = self.pending.take() {
            self.try_queue(pending);
        }
    }

    /// Queues a message of the driver's own (a verdict, a report), before any command.
    pub(super) fn send_control(&mut self, message: &SessionMessage) {
        self.backlog.push_back(message.encode());
        self.flush_backlog();
    }

    fn flush_backlog(&mut self) {
        let Some(conn) = self.conn.as_mut() else {
            return;
        };
        while let Some(bytes) = self.backlog.front() {
            match conn.send(bytes.clone()) {
                Ok(()) => self.queued_total += bytes.len() as u64,
                Err(SendError::QueueFull) => break,
                Err(error) => debug!(peer = %self.peer, %error, "a reply could not be sent"),
            }
            self.backlog.pop_front();
        }
    }

    /// Reports the progress the peer's acknowledgements show.
    fn note_acknowledged(&mut self) {
        let Some(conn) = self.conn.as_ref() else {
            return;
        };
        if self.ending.is_some() {
            return;
        }
        let acknowledged = self.queued_total - conn.unacknowledged_bytes() as u64;
        self.on_acknowledged(acknowledged);
    }

    /// Sends every datagram the connection has due.
    async fn transmit(&mut self) {
        let Some(conn) = self.conn.as_mut() else {
            return;
        };
        let now = std::time::Instant::now();
        loop {
            self.packet.clear();
            if conn.poll_transmit_into(now, &mut self.packet).is_none() {
                break;
            }
            self.secure
                .seal(DatagramKind::Reliable, &self.packet, &mut self.sealed);
            if let Err(error) = self.socket.send_to(&self.sealed, self.peer_addr).await {
                debug!(peer = %self.peer, %error, "send failed");
            }
        }
    }

    /// Seals and sends one stream chunk (header and payload).
    async fn send_stream_chunk(&mut self, chunk: &[u8]) {
        if self.conn.is_none() || self.closing || self.ending.is_some() {
            return;
        }
        self.secure
            .seal(DatagramKind::Stream, chunk, &mut self.sealed);
        self.stream_datagrams_sent += 1;
        if let Err(error) = self.socket.send_to(&self.sealed, self.peer_addr).await {
            debug!(peer = %self.peer, %error, "stream send failed");
        }
    }

    /// Starts a graceful close: the close goes after everything queued so far.
    fn request_close(&mut self) {
        if self.closing || self.ending.is_some() {
            return;
        }
        debug!(peer = %self.peer, "closing");
        self.closing = true;
        if let Some(pending) = self.pending.take() {
            let _ = pending.reply.send(Err(Rejected::Ended));
        }
        match self.conn.as_mut() {
            Some(conn) => {
                conn.close();
                self.close_deadline = Some(Instant::now() + self.config.close_timeout);
            }
            None => self.end(SessionEnd::ClosedByUs),
        }
    }

    /// Moves events into the channel while it has room.
    fn deliver_events(&mut self) {
        while let Some(event) = self.outbox.pop_front() {
            match self.events.try_send(event) {
                Ok(()) => {}
                Err(TrySendError::Full(event)) => {
                    self.outbox.push_front(event);
                    break;
                }
                Err(TrySendError::Closed(_)) => self.outbox.clear(),
            }
        }
    }

    fn publish_stats(&self) {
        let stats = super::SessionStats {
            reliable: self
                .conn
                .as_ref()
                .map(Connection::stats)
                .unwrap_or_default(),
            secure: self.secure.stats(),
            stream_datagrams_sent: self.stream_datagrams_sent,
        };
        *self
            .shared
            .stats
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = stats;
    }

    /// Ends the session: tells a peer that broke the protocol, refuses what is left of the
    /// commands, settles every transfer, and gives [`SessionEvent::Ended`] last. The socket is
    /// not read any more.
    async fn finish(mut self, end: SessionEnd, mut channels: Channels) {
        info!(peer = %self.peer, session = self.session, %end, "session ended");
        if matches!(end, SessionEnd::Failed(_)) {
            if let Some(conn) = self.conn.as_mut() {
                conn.close();
            }
            self.transmit().await;
        }
        if let Some(pending) = self.pending.take() {
            let _ = pending.reply.send(Err(Rejected::Ended));
        }
        channels.commands.close();
        while let Ok(command) = channels.commands.try_recv() {
            let _ = command.reply.send(Err(Rejected::Ended));
        }
        self.publish_stats();
        self.fail_files(&end.to_string());
        while self.files.verifying() > 0 {
            match channels.verdicts.recv().await {
                Some(verdict) => self.on_verdict(verdict),
                None => break,
            }
        }
        self.outbox.push_back(SessionEvent::Ended { reason: end });
        channels.ended.send_replace(true);
        for event in std::mem::take(&mut self.outbox) {
            if self.events.send(event).await.is_err() {
                break;
            }
        }
    }
}

/// Sleeps until `deadline`, or forever without one.
async fn sleep_until_some(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

impl Session {
    /// Wraps the driver's handles.
    pub(super) fn from_handles(
        peer: String,
        config: SessionConfig,
        handles: Handles,
        shared: Arc<Shared>,
    ) -> (Session, mpsc::Receiver<SessionEvent>) {
        let session = Session {
            peer,
            config,
            commands: handles.commands,
            close: handles.close,
            stream_chunks: handles.stream_chunks,
            ended: handles.ended,
            shared,
        };
        (session, handles.events)
    }
}
