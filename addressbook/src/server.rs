//! The address-book server: answers `Q` queries with `R` responses over TCP.
//!
//! Unlike the seed, which closed after one answer, a connection answers any number of queries,
//! pipelined or not, until the client closes it or stays idle for [`ServerConfig::idle_timeout`].
//! A client that breaks the protocol (a type byte other than `Q`, a negative length, a body that is
//! not UTF-8) is answered as the seed answers it, `R` + `Error: Unknown message protocol`, and then
//! disconnected with a lingering close so that it really receives that answer.
//!
//! At most [`ServerConfig::max_connections`] connections are served at once. One more is not
//! left waiting: it is answered `R` + [`SERVER_BUSY`] (`b"R\x12Error: server busy"`) at once,
//! whatever it sent, and closed the same lingering way.
//!
//! Structure follows mini-redis: [`run`] accepts connections under a semaphore, each connection is
//! a task in a `TaskTracker`, and shutdown cancels a token and drains the tasks within a time bound.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use protocol::addressbook::{AddressBookCodec, Kind, Message};
use protocol::framed::FramedConnection;
use server_kit::{ConnectionLimit, IdleTimer, accept_refusing};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::info;

use crate::book::AddressBook;

pub use protocol::addressbook::SERVER_BUSY;

/// Everything the server needs besides its listener.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The entries to answer from.
    pub book: Arc<AddressBook>,
    /// A connection that sends no query for this long is closed.
    pub idle_timeout: Duration,
    /// At most this many connections are served at once; one more is answered `R` +
    /// [`SERVER_BUSY`] and closed.
    pub max_connections: usize,
    /// How long closing a connection may wait on the peer: to take its last answers, and, after
    /// a protocol violation, to stop sending before the connection is dropped regardless.
    pub close_linger: Duration,
    /// How long shutdown waits for open connections to finish.
    pub shutdown_grace: Duration,
}

impl ServerConfig {
    /// Defaults around `book`: 60 s idle timeout, 1024 connections, 2 s linger, 5 s grace.
    pub fn new(book: AddressBook) -> ServerConfig {
        ServerConfig {
            book: Arc::new(book),
            idle_timeout: Duration::from_secs(60),
            max_connections: 1024,
            close_linger: Duration::from_secs(2),
            shutdown_grace: Duration::from_secs(5),
        }
    }
}

/// Serves `listener` until `shutdown` completes, then closes every connection (answers already
/// computed are sent first) and returns once they are gone or the grace period is over.
pub async fn run(
    listener: TcpListener,
    config: ServerConfig,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let config = Arc::new(config);
    let cancel = CancellationToken::new();
    let tracker = TaskTracker::new();
    let limit = ConnectionLimit::new(config.max_connections);
    info!(
        addr = %listener.local_addr()?,
        entries = config.book.len(),
        "address book server listening"
    );
    let serve = |stream, peer| serve_connection(stream, peer, Arc::clone(&config), cancel.clone());
    let refuse = |stream, peer| refuse_busy(stream, peer, Arc::clone(&config), cancel.clone());
    tokio::select! {
        () = accept_refusing(&listener, &limit, &tracker, serve, refuse) => {}
        () = shutdown => info!("address book server shutting down"),
    }
    drop(listener);
    cancel.cancel();
    server_kit::drain(&tracker, config.shutdown_grace).await;
    info!("address book server stopped");
    Ok(())
}

/// Why a connection ended.
enum Ending {
    ClientClosed,
    Idle,
    Shutdown,
    Violation(String),
    Failed(String),
}

async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    config: Arc<ServerConfig>,
    cancel: CancellationToken,
) {
    info!(%peer, "connection opened");
    let mut conn = FramedConnection::new(stream, AddressBookCodec);
    let mut answered = 0u64;
    let cancelled = cancel.cancelled();
    tokio::pin!(cancelled);
    let mut idle = IdleTimer::new(config.idle_timeout);
    let not_found = Message::not_found();
    let ending = loop {
        // Pipelined queries already buffered are answered straight away; the idle timeout and
        // the shutdown are only watched while waiting for the socket.
        let frame = match conn.buffered_frame() {
            Ok(None) => {
                idle.restart();
                // Biased: shutdown first, then a query that arrived in time wins over the
                // idle timeout expiring at the same moment.
                tokio::select! {
                    biased;
                    () = &mut cancelled => break Ending::Shutdown,
                    frame = conn.read_frame() => frame,
                    () = idle.expired() => break Ending::Idle,
                }
            }
            buffered => buffered,
        };
        let query = match frame {
            Ok(None) => break Ending::ClientClosed,
            Ok(Some(message)) if message.kind() == Kind::Query => message,
            Ok(Some(_)) => break Ending::Violation("a client sent a response".into()),
            Err(err) if err.is_protocol_violation() => {
                break Ending::Violation(err.to_string());
            }
            Err(err) => break Ending::Failed(err.to_string()),
        };
        let answer = answer(&config.book, query.body(), &not_found, peer);
        conn.queue(answer).expect("encoding a message cannot fail");
        answered += 1;
    };
    finish(conn, ending, peer, answered, &config, &cancel).await;
}

/// Tells a connection over the limit that the server is busy, and closes it.
async fn refuse_busy(
    stream: TcpStream,
    peer: SocketAddr,
    config: Arc<ServerConfig>,
    cancel: CancellationToken,
) {
    info!(%peer, max = config.max_connections, "refused: server busy");
    let conn = FramedConnection::new(stream, AddressBookCodec);
    let busy = Message::response(SERVER_BUSY).expect("a short constant");
    answer_and_close(conn, busy, &config, &cancel).await;
}

/// The response to a query for `email` (the book's, or `not_found`), logged.
fn answer<'a>(
    book: &'a AddressBook,
    email: &str,
    not_found: &'a Message,
    peer: SocketAddr,
) -> &'a Message {
    match book.answer(email) {
        Some(answer) => {
            info!(%peer, email, name = answer.body(), "query answered");
            answer
        }
        None => {
            info!(%peer, email, "query for an unknown e-mail");
            not_found
        }
    }
}

async fn finish(
    mut conn: FramedConnection<TcpStream, AddressBookCodec>,
    ending: Ending,
    peer: SocketAddr,
    answered: u64,
    config: &ServerConfig,
    cancel: &CancellationToken,
) {
    match ending {
        Ending::Violation(reason) => {
            info!(%peer, %reason, "protocol violation; answering and closing");
            answer_and_close(conn, Message::unknown_protocol(), config, cancel).await;
        }
        Ending::Shutdown => {
            let _ = timeout(config.close_linger, conn.flush()).await;
            info!(%peer, answered, "connection closed for shutdown");
        }
        Ending::Idle => {
            info!(%peer, answered, idle = ?config.idle_timeout, "idle connection closed")
        }
        Ending::ClientClosed => info!(%peer, answered, "connection closed by the client"),
        Ending::Failed(reason) => info!(%peer, answered, %reason, "connection failed"),
    }
}

/// Sends `last` after whatever is queued, then closes with a lingering drain, so that the peer
/// really receives it even while it is still sending.
async fn answer_and_close(
    mut conn: FramedConnection<TcpStream, AddressBookCodec>,
    last: Message,
    config: &ServerConfig,
    cancel: &CancellationToken,
) {
    conn.queue(last).expect("encoding a message cannot fail");
    if timeout(config.close_linger, conn.flush()).await.is_err() {
        return;
    }
    // The answer is on its way; the peer may keep sending forever, so the linger bound or a
    // shutdown ends the drain either way.
    tokio::select! {
        _ = timeout(config.close_linger, conn.close_after_draining()) => {}
        () = cancel.cancelled() => {}
    }
}
