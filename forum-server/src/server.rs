//! The forum server: sessions over UDP (one socket, demultiplexed by the reliable-datagram
//! layer) or TCP (a connection per client), the TCP side channel for file bodies, idle timeouts
//! and shutdown.
//!
//! The server ends a session on its own in two cases, and tells the client at once with an
//! envelope of its own: `XIT` with the reason after `idle_timeout` without a command, and `SHT`
//! with the reason when the server shuts down (Ctrl+C, or an admin's SHT).

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use protocol::forum::{Cmd, Envelope, ForumError};
use protocol::reliable::Config as ReliableConfig;
use server_kit::reliable_udp::ReliableListener;
use server_kit::{ConnectionLimit, accept_waiting};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::watch;
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::channel::{EnvelopeChannel, TcpChannel, UdpChannel};
use crate::session::{Forum, Reply, Session};
use crate::transfer::{TransferConfig, TransferHub};

/// What carries the commands.
#[derive(Debug)]
pub enum Transport {
    /// One UDP socket for every client, through the reliable-datagram layer (the seed's choice).
    Udp(UdpSocket),
    /// A TCP connection per client.
    Tcp(TcpListener),
}

/// Everything the server needs besides its sockets.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The forum's data.
    pub forum: Arc<Forum>,
    /// A session with no command for this long ends (default 600 s).
    pub idle_timeout: Duration,
    /// Clients served at once (default 1024).
    pub max_clients: usize,
    /// The reliable-datagram layer's settings, for UDP.
    pub reliable: ReliableConfig,
    /// The side channel's limits.
    pub transfer: TransferConfig,
    /// How long shutdown waits for sessions and transfers to finish (default 5 s).
    pub shutdown_grace: Duration,
}

impl ServerConfig {
    /// Defaults around `forum`.
    pub fn new(forum: Arc<Forum>) -> ServerConfig {
        ServerConfig {
            forum,
            idle_timeout: Duration::from_secs(600),
            max_clients: 1024,
            reliable: ReliableConfig::default(),
            transfer: TransferConfig::default(),
            shutdown_grace: Duration::from_secs(5),
        }
    }
}

/// State every session shares.
struct Shared {
    config: ServerConfig,
    hub: Arc<TransferHub>,
    /// Set once, with the reason, when the server shuts down.
    stop: watch::Sender<Option<String>>,
}

/// Serves the forum until `shutdown` completes or an admin sends SHT; every client is told, the
/// sessions and transfers are drained, and the function returns. `transfers` is the side
/// channel's listener.
pub async fn run(
    transport: Transport,
    transfers: TcpListener,
    config: ServerConfig,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let hub = TransferHub::new(
        Arc::clone(&config.forum),
        &transfers,
        config.transfer.clone(),
    )?;
    let (stop, mut stopped) = watch::channel(None);
    let shared = Arc::new(Shared { config, hub, stop });
    let tracker = TaskTracker::new();
    let cancel = CancellationToken::new();
    tracker.spawn(Arc::clone(&shared.hub).run(transfers, tracker.clone(), cancel.clone()));
    tokio::select! {
        result = accept(transport, &shared, &tracker) => result?,
        () = shutdown => {}
        _ = stopped.wait_for(Option::is_some) => {}
    }
    info!("forum server shutting down");
    shared.stop.send_if_modified(|reason| {
        reason.get_or_insert_with(|| "The server is shutting down".into());
        true
    });
    cancel.cancel();
    server_kit::drain(&tracker, shared.config.shutdown_grace).await;
    info!("forum server stopped");
    Ok(())
}

async fn accept(
    transport: Transport,
    shared: &Arc<Shared>,
    tracker: &TaskTracker,
) -> io::Result<()> {
    match transport {
        Transport::Tcp(listener) => {
            info!(addr = %listener.local_addr()?, "forum server listening on TCP");
            let limit = ConnectionLimit::new(shared.config.max_clients);
            let serve = |stream, peer| {
                let shared = Arc::clone(shared);
                async move { serve(TcpChannel::new(stream), format!("{peer}"), shared).await }
            };
            accept_waiting(&listener, &limit, tracker, serve).await;
            Ok(())
        }
        Transport::Udp(socket) => {
            let config = shared.config.reliable.clone();
            let mut listener = ReliableListener::bind(socket, config, shared.config.max_clients)
                .map_err(|err| io::Error::other(err.to_string()))?;
            info!(addr = %listener.local_addr(), "forum server listening on UDP");
            while let Some(connection) = listener.accept().await {
                let peer = connection.peer_addr().to_string();
                tracker.spawn(serve(UdpChannel(connection), peer, Arc::clone(shared)));
            }
            Ok(())
        }
    }
}

/// Why a session ended.
enum Ending {
    /// XIT, or the client went away.
    Client,
    /// The server ended it and told the client with this envelope.
    Server(Envelope),
}

/// One client's session from the first envelope to the end.
async fn serve(mut channel: impl EnvelopeChannel, peer: String, shared: Arc<Shared>) {
    info!(%peer, "client connected");
    let mut session = Session::new(Arc::clone(&shared.config.forum));
    let mut stop = shared.stop.subscribe();
    // Who the session was, for the last log line (XIT logs the session out).
    let mut user = None;
    let ending = loop {
        let next = tokio::select! {
            reason = stop.wait_for(Option::is_some) => {
                let reason = reason.map(|r| r.clone().unwrap_or_default()).unwrap_or_default();
                break Ending::Server(Envelope::new(session.user().unwrap_or(""), Cmd::Sht.as_str(), [reason]));
            }
            next = timeout(shared.config.idle_timeout, channel.recv()) => next,
        };
        let envelope = match next {
            Err(_) => {
                let reason = format!(
                    "Session ended after {} without a command",
                    human(shared.config.idle_timeout)
                );
                break Ending::Server(Envelope::new(
                    session.user().unwrap_or(""),
                    Cmd::Xit.as_str(),
                    [reason],
                ));
            }
            Ok(Ok(Some(envelope))) => envelope,
            Ok(Ok(None)) => break Ending::Client,
            Ok(Err(err)) if recoverable(&err) => {
                let refusal = Envelope::new(
                    "",
                    Cmd::Error.as_str(),
                    [format!("Unreadable request: {err}")],
                );
                if channel.send(&refusal).await.is_err() {
                    break Ending::Client;
                }
                continue;
            }
            Ok(Err(err)) => {
                warn!(%peer, "session ended: {err}");
                break Ending::Client;
            }
        };
        let going_on = respond(&mut channel, &mut session, envelope, &shared).await;
        if user.is_none() {
            user = session.user().map(str::to_owned);
        }
        match going_on {
            Ok(true) => {}
            Ok(false) | Err(_) => break Ending::Client,
        }
    };
    if let Ending::Server(notice) = ending {
        let _ = timeout(Duration::from_secs(2), channel.send(&notice)).await;
    }
    let _ = timeout(Duration::from_secs(2), channel.close()).await;
    info!(%peer, user = user.as_deref().unwrap_or("-"), "client disconnected");
}

/// Answers one envelope; whether the session goes on.
async fn respond(
    channel: &mut impl EnvelopeChannel,
    session: &mut Session,
    envelope: Envelope,
    shared: &Shared,
) -> Result<bool, ForumError> {
    match session.handle(envelope).await {
        Reply::Send(reply) => channel.send(&reply).await.map(|()| true),
        Reply::Transfer(transfer) => {
            let user = session.user().unwrap_or_default().to_owned();
            let args = shared.hub.issue(&user, transfer);
            let open = Envelope::new(user.as_str(), Cmd::TcpOpen.as_str(), args);
            channel.send(&open).await.map(|()| true)
        }
        Reply::Goodbye(reply) => channel.send(&reply).await.map(|()| false),
        Reply::Shutdown(reply) => {
            channel.send(&reply).await?;
            let reason = reply.args.first().cloned().unwrap_or_default();
            shared.stop.send_replace(Some(reason));
            Ok(false)
        }
    }
}

/// Whether the connection can go on after `err`: a frame that arrived whole but is not an
/// envelope can be answered; a broken stream or an oversize frame cannot.
fn recoverable(err: &ForumError) -> bool {
    matches!(
        err,
        ForumError::Malformed(_)
            | ForumError::TrailingBytes { .. }
            | ForumError::UnknownCommand { .. }
    )
}

/// A duration as a user reads it: `600 s`, or `300 ms` below a second.
fn human(duration: Duration) -> String {
    if duration < Duration::from_secs(1) {
        format!("{} ms", duration.as_millis())
    } else {
        format!("{} s", duration.as_secs())
    }
}
