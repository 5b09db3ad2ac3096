//! The signaling server: accounts, log-ins, announced addresses, presence and visibility, and
//! introductions that end with both peers holding each other's address and a fresh session key.
//!
//! Each connection is one task that reads requests and answers them one at a time, in order,
//! beside a writer that sends its outbox (a bounded queue of ready-made frames) in batches. A
//! request's effect, its reply and the notices it causes happen in one step under the
//! registry's lock (`registry`), so every peer sees events in the order they happened
//! and a requester always gets its reply before the notices the request caused. The reply
//! waits for room in its own outbox (a client that sends faster than it reads is slowed
//! down); a notice for another peer never waits: a peer whose outbox is full has stopped
//! reading and is dropped, which is logged.
//!
//! A frame that holds no known message gets an error reply and the connection goes on; a bad
//! header or an oversize frame gets an error frame and the connection is closed, since the
//! stream cannot be resynchronised.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use protocol::chat::{ChatCodec, ChatError};
use protocol::p2p::signal::{
    self, ClientMessage, MAX_SIGNAL_PAYLOAD, PeerEntry, Presence, ServerMessage, Visibility,
};
use server_kit::password;
use server_kit::{ConnectionLimit, accept_refusing};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc::{self, error::TrySendError};
use tokio::time::{Instant, sleep_until, timeout};
use tokio_util::codec::Encoder;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, error, info, warn};

use super::accounts::{self, Account};
use super::registry::{Leaving, Link, Notice, Refusal, Registry, Timer};
use crate::connection_io::{FrameReader, write_outbox};
use crate::room::names::check_username;

/// The longest password, in bytes.
pub const MAX_PASSWORD_BYTES: usize = 1024;
/// The longest reason a peer may give for declining, in bytes.
pub const MAX_REASON_BYTES: usize = 1024;
/// The longest text of a decoding error passed back to a peer, in bytes.
const MAX_ERROR_TEXT: usize = 512;
/// What the server tells a connection past `max_connections`.
pub const SERVER_FULL: &str = "the server is full";

/// How the signaling server runs.
#[derive(Debug, Clone)]
pub struct SignalConfig {
    /// The folder of `accounts.json` (default `.`), created if missing.
    pub data_dir: PathBuf,
    /// Connections served at once (default 1024); one more gets an error frame saying the
    /// server is full and is closed.
    pub max_connections: usize,
    /// The largest request payload (default [`MAX_SIGNAL_PAYLOAD`]); a larger one closes its
    /// connection.
    pub max_payload: usize,
    /// The pause before answering a failed log-in (default 1 s), doubled for each further
    /// consecutive failure for the same username ([`password::failure_delay`]).
    pub failed_login_delay: Duration,
    /// How long an introduction waits for its answer (default 60 s); then the asker is told
    /// the peer did not answer.
    pub introduction_timeout: Duration,
    /// How long a connection may stay without a logged-in user (default 300 s), counted from
    /// its opening and again from each log-out; then it is told so and closed, so that silent
    /// connections do not hold slots of `max_connections`.
    pub login_timeout: Duration,
    /// Frames queued for one connection at most (default 64); a connection whose queue is
    /// full when a notice comes has stopped reading and is dropped.
    pub outbox_frames: usize,
    /// How long shutdown waits for connections to finish (default 2 s).
    pub shutdown_grace: Duration,
}

impl Default for SignalConfig {
    fn default() -> Self {
        SignalConfig {
            data_dir: PathBuf::from("."),
            max_connections: 1024,
            max_payload: MAX_SIGNAL_PAYLOAD,
            failed_login_delay: Duration::from_secs(1),
            introduction_timeout: Duration::from_secs(60),
            login_timeout: Duration::from_secs(300),
            outbox_frames: 64,
            shutdown_grace: Duration::from_secs(2),
        }
    }
}

/// Loads the accounts (a damaged `accounts.json` is an error naming the file), then serves on
/// `listener` until `shutdown` completes; every connection is then closed (its partner and
/// askers told, as for a dropped connection) within the grace period.
pub async fn run(
    listener: TcpListener,
    config: SignalConfig,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let path = accounts::accounts_path(&config.data_dir);
    let accounts = accounts::load(path.clone()).await?;
    let dummy_hash = password::hash_password("no account has this password".to_owned())
        .await
        .map_err(io::Error::other)?;
    info!(
        addr = %listener.local_addr()?,
        accounts = accounts.len(),
        file = %path.display(),
        "signaling server listening"
    );
    let limit = ConnectionLimit::new(config.max_connections);
    let tracker = TaskTracker::new();
    let server = Arc::new(Server {
        registry: Mutex::new(Registry::new(accounts)),
        persist: tokio::sync::Mutex::new(()),
        accounts_path: path,
        dummy_hash,
        closing: CancellationToken::new(),
        tracker: tracker.clone(),
        next_conn: AtomicU64::new(0),
        config,
    });
    let serve = |stream, peer| serve_connection(stream, peer, Arc::clone(&server));
    tokio::select! {
        () = accept_refusing(&listener, &limit, &tracker, serve, refuse_full) => {}
        () = shutdown => {}
    }
    drop(listener);
    info!(
        online = server.registry().online_count(),
        "signaling server closing"
    );
    server.closing.cancel();
    server_kit::drain(&tracker, server.config.shutdown_grace).await;
    info!("signaling server closed");
    Ok(())
}

/// The server's shared state.
struct Server {
    config: SignalConfig,
    registry: Mutex<Registry>,
    /// Held while the accounts file is written, so writes land in the order they were made.
    persist: tokio::sync::Mutex<()>,
    accounts_path: PathBuf,
    /// A hash to verify against for unknown usernames, so they take as long as known ones.
    dummy_hash: String,
    /// Cancelled at shutdown.
    closing: CancellationToken,
    tracker: TaskTracker,
    next_conn: AtomicU64,
}

impl Server {
    fn registry(&self) -> MutexGuard<'_, Registry> {
        self.registry.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Adds an account and saves the file; `Ok(false)` if the name is taken. An account that
    /// cannot be saved is forgotten again.
    async fn add_account(&self, name: &str, account: Account) -> io::Result<bool> {
        let _writing = self.persist.lock().await;
        let contents = {
            let mut registry = self.registry();
            if !registry.add_account(name, account) {
                return Ok(false);
            }
            accounts::to_json(registry.accounts())
        };
        let saved = match contents {
            Ok(contents) => accounts::save(self.accounts_path.clone(), contents).await,
            Err(err) => Err(err),
        };
        if let Err(err) = saved {
            self.registry().remove_account(name);
            return Err(err);
        }
        Ok(true)
    }

    /// Sets `name`'s visibility (at once) and saves the file; one that cannot be saved is
    /// undone.
    async fn save_visibility(&self, name: &str, visibility: Visibility) -> io::Result<()> {
        let _writing = self.persist.lock().await;
        let (old, contents) = {
            let mut registry = self.registry();
            let old = registry.set_visibility(name, visibility);
            (old, accounts::to_json(registry.accounts()))
        };
        let saved = match contents {
            Ok(contents) => accounts::save(self.accounts_path.clone(), contents).await,
            Err(err) => Err(err),
        };
        if let (Err(_), Some(old)) = (&saved, old) {
            self.registry().set_visibility(name, old);
        }
        saved
    }

    /// Starts the timer of an introduction: unanswered when it fires, the asker is told.
    fn start_timer(self: &Arc<Server>, timer: Timer) {
        let server = Arc::clone(self);
        self.tracker.spawn(async move {
            tokio::select! {
                () = tokio::time::sleep(server.config.introduction_timeout) => {}
                () = timer.cancel.cancelled() => return,
                () = server.closing.cancelled() => return,
            }
            let mut registry = server.registry();
            if let Some(notice) = registry.expire(&timer.asker, timer.id) {
                debug!(asker = %timer.asker, "introduction unanswered");
                deliver(&registry, notice);
            }
        });
    }
}

/// Queues `notice` for its peer without waiting; a peer whose outbox is full is dropped.
fn deliver(registry: &Registry, notice: Notice) {
    let Some(link) = registry.link(&notice.to) else {
        return;
    };
    match link.outbox.try_send(frame(&notice.message)) {
        Ok(()) | Err(TrySendError::Closed(_)) => {}
        Err(TrySendError::Full(_)) => {
            link.dropped.cancel();
            warn!(
                user = %notice.to,
                "connection dropped: it stopped reading and its outbox is full"
            );
        }
    }
}

/// `message` as a frame ready to write. One over the frame limit (which the server never
/// makes: lists are cut to fit, texts are bounded) is replaced by an error saying so.
fn frame(message: &ServerMessage) -> Bytes {
    let json = signal::encode(message);
    let mut frame = BytesMut::with_capacity(protocol::chat::HEADER_LEN + json.len());
    match ChatCodec::new(MAX_SIGNAL_PAYLOAD).encode(json.as_slice(), &mut frame) {
        Ok(()) => frame.freeze(),
        Err(err) => {
            error!(kind = message.kind(), "cannot send a message: {err}");
            let text = r#"{"type":"error","re":null,"message":"the answer was too large to send"}"#;
            Bytes::from(format!("{:<10}{text}", text.len()))
        }
    }
}

/// The `list` reply's peers, cut to the first ones that fit in one frame.
fn fit_peers(mut peers: Vec<PeerEntry>) -> Vec<PeerEntry> {
    let empty = signal::encode(&ServerMessage::Peers { peers: Vec::new() }).len();
    let mut size = empty;
    let fitting = peers.iter().position(|entry| {
        size += signal::encode(entry).len() + 1;
        size > MAX_SIGNAL_PAYLOAD
    });
    if let Some(fitting) = fitting {
        warn!(
            peers = peers.len(),
            sent = fitting,
            "the peer list is too long for one frame; sending the first ones"
        );
        peers.truncate(fitting);
    }
    peers
}

/// `text` cut to at most `max` bytes, on a character boundary.
fn truncated(text: &str, max: usize) -> String {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.get(..end).unwrap_or_default().to_owned()
}

/// Tells a connection past the limit that the server is full, and closes it.
async fn refuse_full(mut stream: TcpStream, peer: SocketAddr) {
    info!(%peer, "refused: the server is full");
    let refusal = frame(&ServerMessage::Error {
        re: None,
        message: SERVER_FULL.to_owned(),
    });
    let _ = timeout(Duration::from_secs(1), stream.write_all(&refusal)).await;
    let _ = stream.shutdown().await;
}

/// Why a connection ended.
enum Ending {
    /// The peer closed its side.
    Quit,
    /// The peer broke the framing, or the connection failed.
    Broken(ChatError),
    /// Dropped for not reading.
    Dropped,
    /// The server is closing.
    Closing,
    /// Nobody logged in within `login_timeout`.
    NoLogIn,
}

async fn serve_connection(stream: TcpStream, peer: SocketAddr, server: Arc<Server>) {
    let id = server.next_conn.fetch_add(1, Ordering::Relaxed);
    debug!(%peer, conn = id, "connection opened");
    let (read, mut write) = stream.into_split();
    let (outbox, receiver) = mpsc::channel(server.config.outbox_frames.max(2));
    let dropped = CancellationToken::new();
    let mut reader = FrameReader::new(read, ChatCodec::new(server.config.max_payload));
    let connection = Connection {
        server,
        id,
        peer,
        outbox,
        dropped: dropped.clone(),
        user: None,
        anonymous_since: Instant::now(),
    };
    let reading = async move {
        let mut connection = connection;
        let ending = connection.read_requests(&mut reader).await;
        connection.finish(&ending);
        ending
    };
    let (ending, ()) = tokio::join!(reading, write_outbox(&mut write, receiver, &dropped));
    if !matches!(ending, Ending::Dropped) {
        let _ = write.shutdown().await;
    }
    debug!(%peer, conn = id, "connection closed");
}

/// A request could not be answered: the connection was dropped or the server is closing.
struct Stopped;

/// What one request does: its reply, the notices it causes, and an introduction's timer.
struct Step {
    reply: ServerMessage,
    notices: Vec<Notice>,
    timer: Option<Timer>,
}

impl Step {
    fn reply(reply: ServerMessage) -> Step {
        Step {
            reply,
            notices: Vec::new(),
            timer: None,
        }
    }

    fn ok(re: &str) -> Step {
        Step::reply(ServerMessage::Ok { re: re.to_owned() })
    }

    fn refused(re: Option<&str>, message: impl Into<String>) -> Step {
        Step::reply(ServerMessage::Error {
            re: re.map(str::to_owned),
            message: message.into(),
        })
    }

    /// `ok` with `notices`, or the refusal.
    fn notify(re: &str, outcome: Result<Vec<Notice>, Refusal>) -> Step {
        match outcome {
            Ok(notices) => Step {
                notices,
                ..Step::ok(re)
            },
            Err(refusal) => Step::refused(Some(re), refusal),
        }
    }
}

/// One connection's side of the conversation.
struct Connection {
    server: Arc<Server>,
    id: u64,
    peer: SocketAddr,
    outbox: mpsc::Sender<Bytes>,
    dropped: CancellationToken,
    /// Who this connection is logged in as.
    user: Option<String>,
    /// When the connection opened or last logged out: the start of its `login_timeout`.
    anonymous_since: Instant,
}

impl Connection {
    /// Answers requests until the peer leaves, breaks the framing, is dropped or the server
    /// closes.
    async fn read_requests(&mut self, reader: &mut FrameReader<ChatCodec>) -> Ending {
        loop {
            let login_deadline = self.anonymous_since + self.server.config.login_timeout;
            let next = tokio::select! {
                next = reader.next() => next,
                () = self.dropped.cancelled() => return Ending::Dropped,
                () = self.server.closing.cancelled() => return Ending::Closing,
                () = sleep_until(login_deadline), if self.user.is_none() => return Ending::NoLogIn,
            };
            let handled = match next {
                Ok(Some(payload)) => self.handle_frame(&payload).await,
                Ok(None) => return Ending::Quit,
                Err(err) => return Ending::Broken(err),
            };
            if handled.is_err() {
                if self.server.closing.is_cancelled() {
                    return Ending::Closing;
                }
                return Ending::Dropped;
            }
        }
    }

    /// Takes the connection's peer offline and, for a broken frame, says what was wrong.
    fn finish(&mut self, ending: &Ending) {
        if let Some(me) = self.user.take() {
            let mut registry = self.server.registry();
            for notice in registry.log_out(&me, self.id, Leaving::WentOffline) {
                deliver(&registry, notice);
            }
            info!(peer = %self.peer, user = %me, "went offline");
        }
        match ending {
            Ending::Broken(
                err @ (ChatError::BadHeader { .. } | ChatError::LengthOverLimit { .. }),
            ) => {
                info!(peer = %self.peer, "closing the connection: {err}");
                let refusal = Step::refused(None, err.to_string()).reply;
                let _ = self.outbox.try_send(frame(&refusal));
            }
            Ending::NoLogIn => {
                let waited = self.server.config.login_timeout.as_secs_f64();
                info!(peer = %self.peer, "closing a connection that did not log in");
                let message = format!("no log-in within {waited} s; closing the connection");
                let _ = self
                    .outbox
                    .try_send(frame(&Step::refused(None, message).reply));
            }
            Ending::Broken(err) => debug!(peer = %self.peer, "connection ended: {err}"),
            Ending::Dropped => info!(peer = %self.peer, "connection dropped"),
            Ending::Quit | Ending::Closing => {}
        }
    }

    async fn handle_frame(&mut self, payload: &[u8]) -> Result<(), Stopped> {
        match signal::decode::<ClientMessage>(payload) {
            Ok(message) => self.handle(message).await,
            Err(err) => {
                debug!(peer = %self.peer, "not a request: {err}");
                let text = truncated(&err.to_string(), MAX_ERROR_TEXT);
                self.respond(|_| Step::refused(None, text)).await.map(drop)
            }
        }
    }

    async fn handle(&mut self, message: ClientMessage) -> Result<(), Stopped> {
        let re = message.kind();
        match message {
            ClientMessage::Signup { username, password } => {
                self.sign_up(username, password.0).await
            }
            ClientMessage::Login { username, password } => self.log_in(username, password.0).await,
            ClientMessage::Logout {} => self.log_out().await,
            ClientMessage::Announce { address } => {
                self.as_user(re, |me, registry| match check_announced(address) {
                    Ok(()) => {
                        registry.announce(me, address);
                        Step::ok(re)
                    }
                    Err(refusal) => Step::refused(Some(re), refusal),
                })
                .await
            }
            ClientMessage::List {} => {
                self.as_user(re, |me, registry| {
                    let peers = fit_peers(registry.list(me));
                    Step::reply(ServerMessage::Peers { peers })
                })
                .await
            }
            ClientMessage::Query { username } => {
                self.as_user(re, |me, registry| match registry.query(me, &username) {
                    Ok((state, address)) => Step::reply(ServerMessage::Peer {
                        username: username.clone(),
                        state,
                        address,
                    }),
                    Err(refusal) => Step::refused(Some(re), refusal),
                })
                .await
            }
            ClientMessage::State { state } => self.set_presence(state).await,
            ClientMessage::Visibility { visibility } => self.set_visibility(visibility).await,
            ClientMessage::Connect { username } => self.connect(&username).await,
            ClientMessage::Accept { from } => self.accept(&from).await,
            ClientMessage::Decline { from, reason } => self.decline(&from, reason).await,
            ClientMessage::Close {} => self.close().await,
        }
    }

    /// Carries out `step` for the logged-in peer, or refuses: "log in first".
    async fn as_user(
        &mut self,
        re: &str,
        step: impl FnOnce(&str, &mut Registry) -> Step,
    ) -> Result<(), Stopped> {
        let Some(me) = self.user.clone() else {
            return self.refuse(re, "log in first").await;
        };
        self.respond(|registry| step(&me, registry)).await.map(drop)
    }

    async fn refuse(&self, re: &str, message: impl Into<String>) -> Result<(), Stopped> {
        let message = message.into();
        self.respond(|_| Step::refused(Some(re), message))
            .await
            .map(drop)
    }

    /// Runs `step` under the registry's lock, queues its reply, then its notices; `true` if
    /// the reply is not an error. Waits for room for the reply (and one notice to this peer)
    /// in the outbox first.
    async fn respond(&self, step: impl FnOnce(&mut Registry) -> Step) -> Result<bool, Stopped> {
        let reserved = tokio::select! {
            reserved = self.outbox.reserve_many(2) => reserved,
            () = self.dropped.cancelled() => return Err(Stopped),
            () = self.server.closing.cancelled() => return Err(Stopped),
        };
        let mut permits = reserved.map_err(|_| Stopped)?;
        let mut registry = self.server.registry();
        let Step {
            reply,
            notices,
            timer,
        } = step(&mut registry);
        let accepted = !matches!(reply, ServerMessage::Error { .. });
        if let Some(permit) = permits.next() {
            permit.send(frame(&reply));
        }
        drop(permits); // the second slot is for a notice to this peer
        for notice in notices {
            deliver(&registry, notice);
        }
        drop(registry);
        if let Some(timer) = timer {
            self.server.start_timer(timer);
        }
        Ok(accepted)
    }

    fn link(&self) -> Link {
        Link {
            conn: self.id,
            outbox: self.outbox.clone(),
            dropped: self.dropped.clone(),
        }
    }

    async fn sign_up(&mut self, username: String, password: String) -> Result<(), Stopped> {
        const RE: &str = "signup";
        if let Err(problem) = check_signup(&username, &password) {
            return self.refuse(RE, problem).await;
        }
        let taken = || format!("the username {username} is taken");
        if self.server.registry().has_account(&username) {
            return self.refuse(RE, taken()).await;
        }
        let hash = match password::hash_password(password).await {
            Ok(hash) => hash,
            Err(err) => {
                error!(user = %username, "cannot sign up: {err}");
                return self
                    .refuse(RE, "the server could not create the account")
                    .await;
            }
        };
        let account = Account {
            password: hash,
            visibility: Visibility::Everyone,
        };
        match self.server.add_account(&username, account).await {
            Ok(true) => {
                info!(peer = %self.peer, user = %username, "signed up");
                self.respond(|_| Step::ok(RE)).await.map(drop)
            }
            Ok(false) => self.refuse(RE, taken()).await,
            Err(err) => {
                error!(user = %username, "cannot save the new account: {err}");
                self.refuse(RE, "the server could not save the account")
                    .await
            }
        }
    }

    async fn log_in(&mut self, username: String, password: String) -> Result<(), Stopped> {
        const RE: &str = "login";
        if let Some(me) = &self.user {
            let refusal = format!("already logged in as {me}");
            return self.refuse(RE, refusal).await;
        }
        let hash = self.server.registry().password_hash(&username);
        let known = hash.is_some();
        let hash = hash.unwrap_or_else(|| self.server.dummy_hash.clone());
        match password::verify_password(password, hash).await {
            Ok(true) if known => {}
            Ok(_) => return self.fail_log_in(&username).await,
            Err(err) => {
                error!(user = %username, "cannot check a password: {err}");
                return self
                    .refuse(RE, "the server could not check the password")
                    .await;
            }
        }
        let link = self.link();
        let logged_in = self
            .respond(|registry| match registry.log_in(&username, link) {
                Ok(()) => Step::ok(RE),
                Err(refusal) => Step::refused(Some(RE), refusal),
            })
            .await?;
        if logged_in {
            info!(peer = %self.peer, user = %username, "logged in");
            self.user = Some(username);
        } else {
            info!(peer = %self.peer, user = %username, "log-in refused: already logged in elsewhere");
        }
        Ok(())
    }

    /// Answers a failed log-in after the pause its count of consecutive failures earns.
    async fn fail_log_in(&mut self, username: &str) -> Result<(), Stopped> {
        let failures = match check_username(username.as_bytes()) {
            Ok(name) => self.server.registry().record_failure(name),
            Err(_) => 1,
        };
        let delay = password::failure_delay(self.server.config.failed_login_delay, failures);
        let shown = check_username(username.as_bytes()).unwrap_or("<invalid username>");
        info!(peer = %self.peer, user = %shown, failures, ?delay, "failed log-in");
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = self.dropped.cancelled() => return Err(Stopped),
            () = self.server.closing.cancelled() => return Err(Stopped),
        }
        self.refuse("login", "wrong username or password").await
    }

    async fn log_out(&mut self) -> Result<(), Stopped> {
        const RE: &str = "logout";
        let Some(me) = self.user.clone() else {
            return self.refuse(RE, "log in first").await;
        };
        let id = self.id;
        self.respond(|registry| {
            Step::notify(RE, Ok(registry.log_out(&me, id, Leaving::LoggedOut)))
        })
        .await?;
        info!(peer = %self.peer, user = %me, "logged out");
        self.user = None;
        self.anonymous_since = Instant::now();
        Ok(())
    }

    async fn set_presence(&mut self, presence: Presence) -> Result<(), Stopped> {
        self.as_user("state", |me, registry| {
            registry.set_presence(me, presence);
            Step::ok("state")
        })
        .await
    }

    async fn set_visibility(&mut self, visibility: Visibility) -> Result<(), Stopped> {
        const RE: &str = "visibility";
        let Some(me) = self.user.clone() else {
            return self.refuse(RE, "log in first").await;
        };
        if let Err(problem) = accounts::check_visibility(&visibility) {
            return self.refuse(RE, problem).await;
        }
        match self.server.save_visibility(&me, visibility).await {
            Ok(()) => self.respond(|_| Step::ok(RE)).await.map(drop),
            Err(err) => {
                error!(user = %me, "cannot save a visibility: {err}");
                self.refuse(RE, "the server could not save your visibility")
                    .await
            }
        }
    }

    async fn connect(&mut self, target: &str) -> Result<(), Stopped> {
        const RE: &str = "connect";
        self.as_user(RE, |me, registry| match registry.connect(me, target) {
            Ok((notice, timer)) => {
                debug!(asker = %me, %target, "introduction asked");
                Step {
                    notices: vec![notice],
                    timer,
                    ..Step::ok(RE)
                }
            }
            Err(refusal) => Step::refused(Some(RE), refusal),
        })
        .await
    }

    async fn accept(&mut self, asker: &str) -> Result<(), Stopped> {
        const RE: &str = "accept";
        self.as_user(RE, |me, registry| {
            let outcome = registry.accept(me, asker);
            if outcome.is_ok() {
                info!(initiator = %asker, acceptor = %me, "session begun");
            }
            Step::notify(RE, outcome)
        })
        .await
    }

    async fn decline(&mut self, asker: &str, reason: Option<String>) -> Result<(), Stopped> {
        const RE: &str = "decline";
        self.as_user(RE, |me, registry| match check_reason(reason.as_deref()) {
            Ok(()) => Step::notify(RE, registry.decline(me, asker, reason).map(|n| vec![n])),
            Err(refusal) => Step::refused(Some(RE), refusal),
        })
        .await
    }

    async fn close(&mut self) -> Result<(), Stopped> {
        const RE: &str = "close";
        self.as_user(RE, |me, registry| {
            let partner = registry.partner(me).map(str::to_owned);
            let outcome = registry.close(me);
            if let (Ok(_), Some(partner)) = (&outcome, partner) {
                info!(closer = %me, %partner, "session ended");
            }
            Step::notify(RE, outcome.map(|n| vec![n]))
        })
        .await
    }
}

/// Why a sign-up's username or password is refused, if it is.
fn check_signup(username: &str, password: &str) -> Result<(), Refusal> {
    check_username(username.as_bytes()).map_err(|err| err.to_string())?;
    if password.is_empty() {
        return Err("the password is empty".to_owned());
    }
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(format!(
            "the password is {} bytes long, more than {MAX_PASSWORD_BYTES}",
            password.len()
        ));
    }
    Ok(())
}

/// Why a decline's reason is refused, if it is: longer than [`MAX_REASON_BYTES`].
fn check_reason(reason: Option<&str>) -> Result<(), Refusal> {
    match reason {
        Some(reason) if reason.len() > MAX_REASON_BYTES => Err(format!(
            "the reason is {} bytes long, more than {MAX_REASON_BYTES}",
            reason.len()
        )),
        _ => Ok(()),
    }
}

/// Why `address` cannot be announced, if it cannot: peers need a specific IP and port.
fn check_announced(address: SocketAddr) -> Result<(), Refusal> {
    if address.ip().is_unspecified() {
        return Err(format!(
            "{address} has no specific IP: announce an address other peers can reach"
        ));
    }
    if address.port() == 0 {
        return Err(format!(
            "{address} has port 0: announce the port your UDP socket is bound to"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::p2p::signal::PeerState;

    #[test]
    fn a_long_peer_list_is_cut_to_its_first_entries_that_fit_one_frame() {
        let peers: Vec<PeerEntry> = (0..1000)
            .map(|n| PeerEntry {
                username: format!("{n:0>32}"),
                state: PeerState::Available,
            })
            .collect();
        let fitted = fit_peers(peers.clone());
        let kept = fitted.len();
        assert!(kept > 100 && kept < 1000, "{kept}");
        assert_eq!(fitted[..], peers[..kept]);
        let reply = ServerMessage::Peers { peers: fitted };
        assert!(signal::encode(&reply).len() <= MAX_SIGNAL_PAYLOAD);
        let one_more = ServerMessage::Peers {
            peers: peers[..=kept].to_vec(),
        };
        assert!(signal::encode(&one_more).len() > MAX_SIGNAL_PAYLOAD);
        let short = peers[..3].to_vec();
        assert_eq!(fit_peers(short.clone()), short);
    }

    #[test]
    fn texts_are_cut_on_character_boundaries() {
        assert_eq!(truncated("héllo", 2), "h");
        assert_eq!(truncated("héllo", 3), "hé");
        assert_eq!(truncated("short", 512), "short");
    }
}
