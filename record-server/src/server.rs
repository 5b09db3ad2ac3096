//! The record server: requests in, responses out, one task per connection.
//!
//! Structure follows mini-redis: [`run`] accepts under a connection limit, each connection is a
//! task in a `TaskTracker`, shutdown cancels a token and drains within a time bound. Unlike the
//! address book, the limit is MAX_CONNECTION as the seed meant it: a connection over it is told
//! the server is full and closed, rather than left waiting in the accept queue.
//!
//! A connection carries any number of requests, back to back or split across reads; each gets
//! exactly one response, in order. A request that is not JSON is answered as the seed answers it
//! and the connection goes on; a request over MAX_MESSAGE_BYTES is answered and the connection
//! closed (the stream cannot be resynchronised without reading the whole of it). A write the
//! disk refuses is answered with the reason (`the server's disk is full`, `... read-only`);
//! reads go on, and writes work again once the disk does. Reads are answered from the store's
//! memory, never from the files ([`crate::store`] says why and what that costs). The seed's
//! console lines (`Handling write request of client: 150210710`, ...) are the log messages.

use std::collections::HashSet;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use protocol::framed::FramedConnection;
use protocol::record::{
    INVALID_TYPE, READ_MISS, RecordError, Request, RequestKind, Response, ResponseKind,
    ServerCodec, UNKNOWN_CLIENT_ID, WRITE_OK,
};
use server_kit::atomic_file::DiskTrouble;
use server_kit::password::failure_delay;
use server_kit::{ConnectionLimit, IdleTimer, accept_refusing};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{sleep, timeout};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info, warn};

use crate::config::Settings;
use crate::passwords::{AuthOutcome, MAX_PASSWORD_LEN, PASSWORD_FILE, PasswordBook};
use crate::record_id::RecordId;
use crate::status::ServerStatus;
use crate::store::{OpenReport, RecordStore, StoreError};
use crate::updater::run_updater;

/// Everything the server needs besides its listener.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The records.
    pub store: RecordStore,
    /// The password hashes; `Some` exactly when authentication is required.
    pub passwords: Option<Arc<PasswordBook>>,
    /// MAX_CONNECTION.
    pub max_connections: usize,
    /// CLIENT_TIMEOUT: a connection with no request for this long is closed.
    pub client_timeout: Duration,
    /// MAX_MESSAGE_BYTES: the longest request.
    pub max_message_bytes: usize,
    /// UPDATE_TIMER.
    pub update_timer: Duration,
    /// UPDATE_TRESH.
    pub update_threshold: Duration,
    /// The pause before answering a first wrong password; it doubles with each further one on
    /// the same connection.
    pub auth_failure_delay: Duration,
    /// How long closing a connection may wait on the peer (to take its answer, and after an
    /// oversized request to stop sending).
    pub close_linger: Duration,
    /// How long shutdown waits for open connections to finish.
    pub shutdown_grace: Duration,
}

impl ServerConfig {
    /// Opens the store (and the password book when REQUIRE_AUTH is set) the settings name,
    /// repairing the record file if needed. Blocking.
    pub fn open(settings: &Settings) -> Result<(ServerConfig, OpenReport), StoreError> {
        let (store, report) = RecordStore::open(&settings.file_path, &settings.record_file_path())?;
        let passwords = if settings.require_auth {
            let path = settings.record_path.join(PASSWORD_FILE);
            Some(Arc::new(PasswordBook::open(&path)?))
        } else {
            None
        };
        let config = ServerConfig {
            store,
            passwords,
            max_connections: settings.max_connections,
            client_timeout: settings.client_timeout,
            max_message_bytes: settings.max_message_bytes,
            update_timer: settings.update_timer,
            update_threshold: settings.update_threshold,
            auth_failure_delay: Duration::from_secs(1),
            close_linger: Duration::from_secs(2),
            shutdown_grace: Duration::from_secs(5),
        };
        Ok((config, report))
    }

    /// [`ServerConfig::open`] on the defaults, with data in `data_dir` (records in
    /// `data_dir/data`, the record file in `data_dir`).
    pub fn open_in(data_dir: &Path) -> Result<(ServerConfig, OpenReport), StoreError> {
        let mut settings = Settings::defaults(data_dir);
        settings.file_path = data_dir.join("data");
        settings.record_path = data_dir.to_owned();
        ServerConfig::open(&settings)
    }
}

/// State shared by the accept loop and every connection.
struct Shared {
    config: ServerConfig,
    limit: ConnectionLimit,
    started: Instant,
    cancel: CancellationToken,
}

/// Serves `listener` until `shutdown` completes: then stops the updater, closes every connection
/// one by one (responses already computed are sent first), saves the record file and returns.
pub async fn run(
    listener: TcpListener,
    config: ServerConfig,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let shared = Arc::new(Shared {
        limit: ConnectionLimit::new(config.max_connections),
        config,
        started: Instant::now(),
        cancel: CancellationToken::new(),
    });
    let tracker = TaskTracker::new();
    info!(
        addr = %listener.local_addr()?,
        records = shared.config.store.len(),
        "record server listening"
    );
    tracker.spawn(run_updater(
        shared.config.store.clone(),
        shared.config.update_timer,
        shared.config.update_threshold,
        shared.cancel.clone(),
    ));
    let serve = |stream, peer| serve_connection(stream, peer, Arc::clone(&shared));
    let refuse = |stream, peer| refuse_connection(stream, peer, Arc::clone(&shared));
    tokio::select! {
        () = accept_refusing(&listener, &shared.limit, &tracker, serve, refuse) => {}
        () = shutdown => info!("Shutting down server..."),
    }
    drop(listener);
    shared.cancel.cancel();
    server_kit::drain(&tracker, shared.config.shutdown_grace).await;
    match shared.config.store.save().await {
        Ok(()) => info!("Records saved."),
        Err(err) => error!("Could not save the record file: {err}"),
    }
    Ok(())
}

/// A peer address the way the seed's Python server printed it: `('127.0.0.1', 36330)`.
pub fn python_address(peer: SocketAddr) -> String {
    match peer {
        SocketAddr::V4(v4) => format!("('{}', {})", v4.ip(), v4.port()),
        SocketAddr::V6(v6) => format!("('{}', {}, 0, 0)", v6.ip(), v6.port()),
    }
}

/// Why a connection ended.
enum Ending {
    ClientClosed,
    Idle,
    Shutdown,
    TooLarge(usize),
    Failed(String),
}

/// What one connection knows about its client.
#[derive(Default)]
struct Session {
    /// Ids this connection gave the right password for.
    authenticated: HashSet<RecordId>,
    /// Consecutive wrong passwords.
    failures: u32,
}

type Connection = FramedConnection<TcpStream, ServerCodec>;

async fn serve_connection(stream: TcpStream, peer: SocketAddr, shared: Arc<Shared>) {
    info!("Connection established with {}", python_address(peer));
    let mut conn = Connection::new(stream, ServerCodec::new(shared.config.max_message_bytes));
    let mut session = Session::default();
    let cancelled = shared.cancel.cancelled();
    tokio::pin!(cancelled);
    let mut idle = IdleTimer::new(shared.config.client_timeout);
    let ending = loop {
        idle.restart();
        // Biased: shutdown first, then a request that arrived in time wins over the idle
        // timeout expiring at the same moment.
        let frame = tokio::select! {
            biased;
            () = &mut cancelled => break Ending::Shutdown,
            frame = conn.read_frame() => frame,
            () = idle.expired() => break Ending::Idle,
        };
        let response = match frame {
            Ok(None) => break Ending::ClientClosed,
            Ok(Some(Ok(request))) => handle(request, &mut session, &shared).await,
            Ok(Some(Err(bad))) => {
                info!(peer = %peer, reason = %bad.reason, "Invalid request format");
                Response::invalid_format()
            }
            Err(RecordError::TooLarge { limit }) => break Ending::TooLarge(limit),
            Err(err) => break Ending::Failed(err.to_string()),
        };
        if let Err(err) = conn.queue(response) {
            break Ending::Failed(err.to_string());
        }
    };
    finish(conn, ending, peer, &shared).await;
}

async fn finish(mut conn: Connection, ending: Ending, peer: SocketAddr, shared: &Shared) {
    let linger = shared.config.close_linger;
    let reason = match ending {
        Ending::TooLarge(limit) => {
            let answer = Response::error(
                UNKNOWN_CLIENT_ID,
                format!("Request too large: the limit is {limit} bytes."),
            );
            if conn.queue(answer).is_ok() {
                // The rest of the oversized request is still arriving: drain it so the client
                // gets the answer rather than a reset, within the linger bound.
                tokio::select! {
                    _ = timeout(linger, conn.close_after_draining()) => {}
                    () = shared.cancel.cancelled() => {}
                }
            }
            format!("request over {limit} bytes")
        }
        Ending::Shutdown => {
            let _ = timeout(linger, conn.flush()).await;
            "server shutting down".to_owned()
        }
        Ending::Idle => {
            let _ = timeout(linger, conn.flush()).await;
            format!("idle for {} s", shared.config.client_timeout.as_secs())
        }
        Ending::ClientClosed => "closed by the client".to_owned(),
        Ending::Failed(reason) => reason,
    };
    info!(%reason, "Connection lost with client: {}", python_address(peer));
}

/// Tells a connection over MAX_CONNECTION that the server is full, and closes it.
async fn refuse_connection(stream: TcpStream, peer: SocketAddr, shared: Arc<Shared>) {
    let max = shared.limit.max();
    warn!(
        "Connection refused, server full ({max} connections): {}",
        python_address(peer)
    );
    let mut conn = Connection::new(stream, ServerCodec::new(shared.config.max_message_bytes));
    let answer = Response::error(
        UNKNOWN_CLIENT_ID,
        format!("Server is full: all {max} connections are in use, please try again later."),
    );
    if conn.queue(answer).is_ok() {
        tokio::select! {
            _ = timeout(shared.config.close_linger, conn.close_after_draining()) => {}
            () = shared.cancel.cancelled() => {}
        }
    }
}

/// The response to one request.
async fn handle(request: Request, session: &mut Session, shared: &Shared) -> Response {
    let client_id = request.client_id.clone();
    let Some(kind) = request.kind() else {
        info!(
            "Invalid request type from client: {}",
            client_id.escape_debug()
        );
        return Response::error(client_id, INVALID_TYPE);
    };
    // Escaped: an id is the client's text, and must not forge log lines with its own newlines.
    info!(
        "Handling {} request of client: {}",
        kind.name(),
        client_id.escape_debug()
    );
    if kind == RequestKind::Info {
        return Response::new(client_id, ResponseKind::Info, status(shared));
    }
    let id = match RecordId::parse(&client_id) {
        Ok(id) => id,
        Err(invalid) => return Response::error(client_id, invalid.to_string()),
    };
    let outcome = match kind {
        RequestKind::Auth => authenticate(&id, &request.data, session, shared).await,
        _ if !may_access(&id, session, shared) => Err(format!(
            "Not authorised: authenticate as client {id} first (request type 4 with the password as data)."
        )),
        RequestKind::Write => write(&id, &request.data, shared).await,
        RequestKind::Read => read(&id, shared),
        RequestKind::Info => unreachable!("answered above"),
    };
    match outcome {
        Ok(data) => Response::success(client_id, data),
        Err(reason) => Response::error(client_id, reason),
    }
}

fn may_access(id: &RecordId, session: &Session, shared: &Shared) -> bool {
    shared.config.passwords.is_none() || session.authenticated.contains(id)
}

async fn write(id: &RecordId, data: &str, shared: &Shared) -> Result<String, String> {
    match shared.config.store.write(id, data).await {
        Ok(_) => Ok(WRITE_OK.to_owned()),
        Err(err) => {
            error!("Could not store the file of client {id}: {err}");
            let reason = err.disk_trouble().map_or(
                "the server could not write to its disk",
                DiskTrouble::describe,
            );
            Err(format!(
                "Could not store the file of client {id}: {reason}."
            ))
        }
    }
}

/// The record of `id`, answered from the store's memory.
fn read(id: &RecordId, shared: &Shared) -> Result<String, String> {
    shared
        .config
        .store
        .read(id)
        .map(|content| String::from(&*content))
        .ok_or_else(|| READ_MISS.to_owned())
}

async fn authenticate(
    id: &RecordId,
    password: &str,
    session: &mut Session,
    shared: &Shared,
) -> Result<String, String> {
    let Some(passwords) = &shared.config.passwords else {
        return Err("Authentication is not enabled on this server (REQUIRE_AUTH=false).".into());
    };
    if password.is_empty() || password.len() > MAX_PASSWORD_LEN {
        return Err(format!(
            "Invalid password: send 1 to {MAX_PASSWORD_LEN} bytes as data."
        ));
    }
    match passwords.check_or_set(id, password).await {
        Ok(AuthOutcome::PasswordSet) => {
            session.failures = 0;
            session.authenticated.insert(id.clone());
            Ok(format!("Password set for client {id}."))
        }
        Ok(AuthOutcome::Accepted) => {
            session.failures = 0;
            session.authenticated.insert(id.clone());
            Ok(format!("Authenticated as client {id}."))
        }
        Ok(AuthOutcome::Rejected) => {
            session.failures += 1;
            warn!(
                "Wrong password for client {id} ({} in a row on this connection)",
                session.failures
            );
            sleep(failure_delay(
                shared.config.auth_failure_delay,
                session.failures,
            ))
            .await;
            Err(format!("Wrong password for client {id}."))
        }
        Err(err) => {
            error!("Could not check the password of client {id}: {err}");
            Err("The server could not check the password; please try again later.".into())
        }
    }
}

fn status(shared: &Shared) -> String {
    let status = ServerStatus {
        connections: shared.limit.in_use(),
        max_connections: shared.limit.max(),
        records: shared.config.store.len(),
        uptime_seconds: shared.started.elapsed().as_secs(),
        require_auth: shared.config.passwords.is_some(),
    };
    serde_json::to_string(&status).expect("the status serializes")
}
