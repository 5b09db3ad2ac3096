//! The peer program's core, without a terminal: one connection to the signaling server, one UDP
//! socket announced to it, and at most one [`Session`] at a time.
//!
//! [`PeerClient::next_event`] merges what the signaling server pushes (introductions, refusals,
//! sessions, their ends) with the current session's events. A `session` notice starts the
//! session on the UDP socket at once. Its end is told to the server, so that both peers show as
//! available again, by the peer that closed it, or by one whose partner vanished or broke the
//! protocol; when the server says the partner left, the session ends at once with its words. The requests (`login`, `connect`, `accept`, ...) are the
//! signaling client's, plus the session's own (`send_text`, `send_file`, `stream_file`).

use std::collections::VecDeque;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use protocol::p2p::secure::Role;
use protocol::p2p::signal::{PeerEntry, Presence, ServerMessage, Visibility};
use thiserror::Error;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tracing::{debug, warn};

use super::session::{
    FileTicket, Session, SessionConfig, SessionEnd, SessionError, SessionEvent, SessionParams,
    StreamTicket,
};
use crate::signal::client::{ClientError, PeerInfo, SignalClient};

/// How a peer runs.
#[derive(Debug, Clone)]
pub struct PeerConfig {
    /// The signaling server.
    pub signal: SocketAddr,
    /// Where the UDP socket binds (default `0.0.0.0:0`).
    pub udp_bind: SocketAddr,
    /// The address announced instead of the bound one: a router's public address forwarded to
    /// it (default none).
    pub public_addr: Option<SocketAddr>,
    /// How long connecting to the signaling server may take (default 10 s).
    pub patience: Duration,
    /// How sessions run.
    pub session: SessionConfig,
}

impl PeerConfig {
    /// The defaults, for the signaling server at `signal`.
    pub fn new(signal: SocketAddr) -> PeerConfig {
        PeerConfig {
            signal,
            udp_bind: SocketAddr::from(([0, 0, 0, 0], 0)),
            public_addr: None,
            patience: Duration::from_secs(10),
            session: SessionConfig::default(),
        }
    }
}

/// Something the peer's user should hear about.
#[derive(Debug)]
pub enum PeerEvent {
    /// `from` asks to talk: answer with [`PeerClient::accept`] or [`PeerClient::decline`].
    Introduction {
        /// Who asks.
        from: String,
    },
    /// Our request to talk to `peer` was declined.
    Declined {
        /// The peer asked for.
        peer: String,
        /// Why.
        reason: String,
    },
    /// A session with `peer` began; its events follow as [`PeerEvent::Session`].
    SessionStarted {
        /// The other peer.
        peer: String,
        /// The address its datagrams go to.
        address: SocketAddr,
        /// Which end we are.
        role: Role,
    },
    /// The signaling server says the session with `peer` is over (it closed, logged out or
    /// went offline); the session itself ends shortly after.
    PartnerLeft {
        /// The other peer.
        peer: String,
        /// The server's words.
        reason: String,
    },
    /// An event of the current session; [`SessionEvent::Ended`] is its last.
    Session {
        /// The other peer.
        peer: String,
        /// What happened.
        event: SessionEvent,
    },
    /// The connection to the signaling server is gone; nothing more will come.
    SignalLost,
}

/// What went wrong for a peer.
#[derive(Debug, Error)]
pub enum PeerError {
    /// The signaling server refused or could not be reached.
    #[error(transparent)]
    Signal(#[from] ClientError),
    /// The session refused (a file that cannot be read, text too long, no session, ...).
    #[error(transparent)]
    Session(#[from] SessionError),
    /// The UDP socket could not be bound.
    #[error("cannot bind the UDP socket on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: io::Error,
    },
    /// A request that needs a session, without one.
    #[error("you are not in a session (use /connect USER, or /accept an introduction)")]
    NoSession,
    /// `accept` or `decline` with no introduction waiting.
    #[error("no introduction is waiting")]
    NoIntroduction,
    /// Logging in twice.
    #[error("already logged in as {0}")]
    LoggedIn(String),
}

/// The current session and the signaling server's view of it.
struct Current {
    peer: String,
    /// The session's number, from the server.
    number: u32,
    session: Arc<Session>,
    events: mpsc::Receiver<SessionEvent>,
    /// The server already knows it is over (it told us, or we told it).
    server_knows_over: bool,
}

/// A peer: signaling connection, UDP socket, current session.
pub struct PeerClient {
    config: PeerConfig,
    signal: Arc<SignalClient>,
    notices: mpsc::Receiver<ServerMessage>,
    /// Whether the signaling connection still delivers notices.
    signal_open: bool,
    socket: Arc<UdpSocket>,
    username: Option<String>,
    announced: Option<SocketAddr>,
    introductions: VecDeque<String>,
    current: Option<Current>,
}

impl PeerClient {
    /// Binds the UDP socket and connects to the signaling server.
    pub async fn start(config: PeerConfig) -> Result<PeerClient, PeerError> {
        let socket = UdpSocket::bind(config.udp_bind)
            .await
            .map_err(|source| PeerError::Bind {
                addr: config.udp_bind,
                source,
            })?;
        PeerClient::with_socket(socket, config).await
    }

    /// Connects to the signaling server, with `socket` (bound already) for the sessions;
    /// `config.udp_bind` is not used.
    pub async fn with_socket(
        socket: UdpSocket,
        config: PeerConfig,
    ) -> Result<PeerClient, PeerError> {
        let (signal, notices) = SignalClient::connect(config.signal, config.patience).await?;
        Ok(PeerClient {
            config,
            signal: Arc::new(signal),
            notices,
            signal_open: true,
            socket: Arc::new(socket),
            username: None,
            announced: None,
            introductions: VecDeque::new(),
            current: None,
        })
    }

    /// The UDP socket's bound address.
    pub fn udp_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// The address announced to the server, once logged in.
    pub fn announced(&self) -> Option<SocketAddr> {
        self.announced
    }

    /// The account logged in, if any.
    pub fn username(&self) -> Option<&str> {
        self.username.as_deref()
    }

    /// The peer of the current session, if any.
    pub fn session_peer(&self) -> Option<&str> {
        self.current.as_ref().map(|current| current.peer.as_str())
    }

    /// The current session's number (in every one of its datagrams' headers).
    pub fn session_number(&self) -> Option<u32> {
        self.current.as_ref().map(|current| current.number)
    }

    /// The current session, for its statistics.
    pub fn session(&self) -> Option<&Session> {
        self.current.as_ref().map(|current| &*current.session)
    }

    /// Introductions waiting for an answer, oldest first.
    pub fn introductions(&self) -> impl Iterator<Item = &str> {
        self.introductions.iter().map(String::as_str)
    }

    /// Creates an account.
    pub async fn signup(&self, username: &str, password: &str) -> Result<(), PeerError> {
        Ok(self.signal.signup(username, password).await?)
    }

    /// Logs in, then announces the UDP address (the public one if configured, else the bound
    /// one, with the IP this host reaches the server from when bound to every interface).
    pub async fn login(&mut self, username: &str, password: &str) -> Result<SocketAddr, PeerError> {
        if let Some(name) = &self.username {
            return Err(PeerError::LoggedIn(name.clone()));
        }
        self.signal.login(username, password).await?;
        self.username = Some(username.to_owned());
        let address = self.announce_address()?;
        self.signal.announce(address).await?;
        self.announced = Some(address);
        Ok(address)
    }

    /// What to announce: the public address, or the bound one made reachable.
    fn announce_address(&self) -> Result<SocketAddr, PeerError> {
        if let Some(public) = self.config.public_addr {
            return Ok(public);
        }
        let mut bound = self.socket.local_addr().map_err(|source| PeerError::Bind {
            addr: self.config.udp_bind,
            source,
        })?;
        if bound.ip().is_unspecified() {
            let ip: IpAddr = self.signal.local_addr().ip();
            bound.set_ip(ip);
        }
        Ok(bound)
    }

    /// Logs out (ending any session).
    pub async fn logout(&mut self) -> Result<(), PeerError> {
        self.close_before_logout().await;
        self.signal.logout().await?;
        self.username = None;
        self.announced = None;
        self.introductions.clear();
        Ok(())
    }

    /// The peers visible to us.
    pub async fn list(&self) -> Result<Vec<PeerEntry>, PeerError> {
        Ok(self.signal.list().await?)
    }

    /// One peer's state and address.
    pub async fn query(&self, username: &str) -> Result<PeerInfo, PeerError> {
        Ok(self.signal.query(username).await?)
    }

    /// Asks the server to introduce us to `username`; the answer comes as an event.
    pub async fn connect(&self, username: &str) -> Result<(), PeerError> {
        Ok(self.signal.connect_to(username).await?)
    }

    /// Accepts the introduction from `from`, or the oldest one waiting.
    pub async fn accept(&mut self, from: Option<&str>) -> Result<String, PeerError> {
        let from = self.take_introduction(from)?;
        self.signal.accept(&from).await?;
        Ok(from)
    }

    /// Declines the introduction from `from`, or the oldest one waiting.
    pub async fn decline(
        &mut self,
        from: Option<&str>,
        reason: Option<&str>,
    ) -> Result<String, PeerError> {
        let from = self.take_introduction(from)?;
        self.signal.decline(&from, reason).await?;
        Ok(from)
    }

    /// Removes the introduction from `from` (or the oldest) from the waiting ones.
    fn take_introduction(&mut self, from: Option<&str>) -> Result<String, PeerError> {
        let index = match from {
            Some(from) => self.introductions.iter().position(|name| name == from),
            None => (!self.introductions.is_empty()).then_some(0),
        };
        index
            .and_then(|index| self.introductions.remove(index))
            .ok_or(PeerError::NoIntroduction)
    }

    /// Sets our presence.
    pub async fn set_presence(&self, presence: Presence) -> Result<(), PeerError> {
        Ok(self.signal.set_presence(presence).await?)
    }

    /// Sets who may see and reach us.
    pub async fn set_visibility(&self, visibility: Visibility) -> Result<(), PeerError> {
        Ok(self.signal.set_visibility(visibility).await?)
    }

    /// Sends a line of chat to the current peer.
    pub async fn send_text(&self, text: &str) -> Result<(), PeerError> {
        Ok(self.current_session()?.send_text(text).await?)
    }

    /// Sends a file to the current peer; progress and verdict come as events.
    pub async fn send_file(&self, path: &Path) -> Result<FileTicket, PeerError> {
        Ok(self.current_session()?.send_file(path).await?)
    }

    /// Streams a file to the current peer at its real-time rate; the report comes as an event.
    pub async fn stream_file(&self, path: &Path) -> Result<StreamTicket, PeerError> {
        Ok(self.current_session()?.stream_file(path).await?)
    }

    fn current_session(&self) -> Result<&Session, PeerError> {
        self.session().ok_or(PeerError::NoSession)
    }

    /// Closes the current session gracefully (what we sent is acknowledged first, within the
    /// session's close timeout) and tells the server. Its `Ended` event follows.
    pub async fn close(&mut self) -> Result<(), PeerError> {
        let current = self.current.as_mut().ok_or(PeerError::NoSession)?;
        current.session.close().await;
        if !current.server_knows_over {
            current.server_knows_over = true;
            match self.signal.close_session().await {
                // The other peer saw the close first and told the server itself.
                Ok(()) | Err(ClientError::Refused(_)) => {}
                Err(err) => return Err(err.into()),
            }
        }
        Ok(())
    }

    /// Closes the current session gracefully before a log-out, which tells the server (so no
    /// `close` request is sent).
    async fn close_before_logout(&mut self) {
        if let Some(current) = &mut self.current {
            current.session.close().await;
            current.server_knows_over = true;
        }
    }

    /// Closes what is open: the session (gracefully), then the log-in.
    pub async fn quit(mut self) {
        if self.current.is_some() {
            if let Err(err) = self.close().await {
                debug!(%err, "closing the session on quit");
            }
        }
        if self.username.is_some() {
            if let Err(err) = self.signal.logout().await {
                debug!(%err, "logging out on quit");
            }
        }
    }

    /// The next thing to tell the user; `None` once the signaling connection is gone and no
    /// session is left. Cancel-safe: nothing is lost if the future is dropped before it
    /// completes.
    pub async fn next_event(&mut self) -> Option<PeerEvent> {
        loop {
            if !self.signal_open && self.current.is_none() {
                return None;
            }
            let input = tokio::select! {
                notice = self.notices.recv(), if self.signal_open => Input::Notice(notice),
                event = next_session_event(&mut self.current) => Input::Session(event),
            };
            let event = match input {
                Input::Notice(Some(notice)) => self.on_notice(notice),
                Input::Notice(None) => {
                    self.signal_open = false;
                    Some(PeerEvent::SignalLost)
                }
                Input::Session(Some(event)) => self.on_session_event(event),
                Input::Session(None) => {
                    // The driver ended without its last event: treat the session as over.
                    self.current = None;
                    None
                }
            };
            if let Some(event) = event {
                return Some(event);
            }
        }
    }

    fn on_notice(&mut self, notice: ServerMessage) -> Option<PeerEvent> {
        match notice {
            ServerMessage::Introduction { from } => {
                self.introductions.retain(|name| *name != from);
                self.introductions.push_back(from.clone());
                Some(PeerEvent::Introduction { from })
            }
            ServerMessage::Declined { peer, reason } => Some(PeerEvent::Declined { peer, reason }),
            ServerMessage::Session {
                peer,
                address,
                key,
                session,
                role,
            } => {
                if let Some(current) = &self.current {
                    warn!(old = %current.peer, new = %peer, "a new session while one is open");
                }
                self.introductions.retain(|name| *name != peer);
                let params = SessionParams {
                    peer: peer.clone(),
                    peer_addr: address,
                    key,
                    session,
                    role,
                };
                let (handle, events) = Session::start(
                    Arc::clone(&self.socket),
                    params,
                    self.config.session.clone(),
                );
                self.current = Some(Current {
                    peer: peer.clone(),
                    number: session,
                    session: Arc::new(handle),
                    events,
                    server_knows_over: false,
                });
                Some(PeerEvent::SessionStarted {
                    peer,
                    address,
                    role,
                })
            }
            ServerMessage::SessionEnded { peer, reason } => self.on_partner_left(peer, reason),
            reply => {
                warn!(kind = reply.kind(), "a reply with no request waiting");
                None
            }
        }
    }

    /// The server says the session is over. If the other peer closed it, its close reached us
    /// first (it waits for our acknowledgement before telling the server), so ours is over or
    /// about to be; if it logged out or vanished, nothing more will come: end ours at once,
    /// with the server's words.
    fn on_partner_left(&mut self, peer: String, reason: String) -> Option<PeerEvent> {
        let current = self
            .current
            .as_mut()
            .filter(|current| current.peer == peer)?;
        current.server_knows_over = true;
        current.session.abandon(reason.clone());
        Some(PeerEvent::PartnerLeft { peer, reason })
    }

    fn on_session_event(&mut self, event: SessionEvent) -> Option<PeerEvent> {
        let current = self.current.as_ref()?;
        let peer = current.peer.clone();
        if let SessionEvent::Ended { reason } = &event {
            let ended = self.current.take()?;
            // A peer that closes tells the server itself once we acknowledged its close; our
            // telling it too could arrive late and end a session begun since. Otherwise (the
            // peer vanished, the session broke) the server must hear it from us.
            let peer_tells = *reason == SessionEnd::ClosedByPeer;
            if !ended.server_knows_over && !peer_tells {
                let signal = Arc::clone(&self.signal);
                tokio::spawn(async move {
                    if let Err(err) = signal.close_session().await {
                        debug!(%err, "telling the server the session ended");
                    }
                });
            }
        }
        Some(PeerEvent::Session { peer, event })
    }
}

/// What [`PeerClient::next_event`] heard.
enum Input {
    Notice(Option<ServerMessage>),
    Session(Option<SessionEvent>),
}

/// The current session's next event; pending forever without a session.
async fn next_session_event(current: &mut Option<Current>) -> Option<SessionEvent> {
    match current {
        Some(current) => current.events.recv().await,
        None => std::future::pending().await,
    }
}
