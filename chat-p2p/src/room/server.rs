//! The room's server: accepts clients, takes each one's username, and relays every message to
//! everyone else exactly as the seed's server does.
//!
//! Each client is one task that reads and writes at once. What it reads goes to the others'
//! outboxes, bounded queues of ready-made relay frames; its own outbox is written to its socket
//! in batches. A relay waits for room in a full outbox for `stall_timeout` at most, so a client
//! that sends faster than another reads is slowed to that reader's pace, as TCP would slow it;
//! a client whose outbox stays full that long has stopped reading and is dropped, and no one
//! waits on it again. Ending a client removes it from the room (its outbox then drains to the
//! socket and the connection gets a FIN) or, for a dropped client, abandons what it has not
//! taken.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use protocol::chat::{ChatError, ChatFrame, ChatFrameCodec, DEFAULT_MAX_PAYLOAD};
use server_kit::{ConnectionLimit, accept_refusing};
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc::{self, error::TrySendError};
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use super::names::{SERVER_NAME, check_username};
use crate::connection_io::{FrameReader, write_outbox};

/// How the room runs.
#[derive(Debug, Clone)]
pub struct RoomConfig {
    /// Clients in the room at once (default 1024); one more is told the room is full.
    pub max_clients: usize,
    /// The largest payload of a frame (default 64 KiB); a larger one closes its sender.
    pub max_payload: usize,
    /// Relay joins and leaves as messages from the user `server` (default off).
    pub announce: bool,
    /// Relay frames waiting for one client at most (default 256).
    pub outbox_frames: usize,
    /// How long a relay waits for room in a full outbox (default 5 s); its client is then
    /// dropped for not reading.
    pub stall_timeout: Duration,
    /// How long a new client has to send its username (default 10 s).
    pub name_timeout: Duration,
    /// How long shutdown waits for the clients' last frames to go out (default 2 s).
    pub shutdown_grace: Duration,
}

impl Default for RoomConfig {
    fn default() -> Self {
        RoomConfig {
            max_clients: 1024,
            max_payload: DEFAULT_MAX_PAYLOAD,
            announce: false,
            outbox_frames: 256,
            stall_timeout: Duration::from_secs(5),
            name_timeout: Duration::from_secs(10),
            shutdown_grace: Duration::from_secs(2),
        }
    }
}

/// Serves the room on `listener` until `shutdown` completes, then closes every client (what was
/// queued for each goes out first, within the grace) and returns.
pub async fn run(
    listener: TcpListener,
    config: RoomConfig,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let limit = ConnectionLimit::new(config.max_clients);
    let room = Arc::new(Room::new(config));
    let tracker = TaskTracker::new();
    info!(addr = %listener.local_addr()?, "chat room listening");
    let serve = |stream, peer| serve_client(stream, peer, Arc::clone(&room));
    let refuse = |stream, peer| refuse_full(stream, peer, room.config.max_clients);
    tokio::select! {
        () = accept_refusing(&listener, &limit, &tracker, serve, refuse) => {}
        () = shutdown => {}
    }
    drop(listener);
    info!(clients = room.len(), "chat room closing");
    room.close_all();
    tracker.close();
    server_kit::drain(&tracker, room.config.shutdown_grace).await;
    info!("chat room closed");
    Ok(())
}

/// Everyone in the room.
#[derive(Debug)]
struct Room {
    config: RoomConfig,
    members: Mutex<Members>,
    next_id: AtomicU64,
    /// Cancelled when the room closes: every reader stops.
    closing: CancellationToken,
}

#[derive(Debug, Default)]
struct Members {
    by_id: HashMap<u64, Member>,
    names: HashSet<String>,
}

/// A client in the room.
#[derive(Debug)]
struct Member {
    name: String,
    /// The client's first frame, as it sent it: the first half of every relay of its messages.
    name_frame: ChatFrame,
    outbox: mpsc::Sender<Bytes>,
    /// Cancelled when the client is dropped for not reading.
    dropped: CancellationToken,
}

/// What a client got on joining.
struct Joined {
    id: u64,
    outbox: mpsc::Receiver<Bytes>,
    dropped: CancellationToken,
}

impl Room {
    fn new(config: RoomConfig) -> Room {
        Room {
            config,
            members: Mutex::default(),
            next_id: AtomicU64::new(0),
            closing: CancellationToken::new(),
        }
    }

    fn members(&self) -> std::sync::MutexGuard<'_, Members> {
        self.members.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn len(&self) -> usize {
        self.members().by_id.len()
    }

    /// Adds a client under `name`, unless the name is taken.
    fn join(&self, name: &str, name_frame: ChatFrame) -> Option<Joined> {
        let (outbox, receiver) = mpsc::channel(self.config.outbox_frames.max(1));
        let dropped = CancellationToken::new();
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut members = self.members();
        if !members.names.insert(name.to_owned()) {
            return None;
        }
        let member = Member {
            name: name.to_owned(),
            name_frame,
            outbox,
            dropped: dropped.clone(),
        };
        members.by_id.insert(id, member);
        Some(Joined {
            id,
            outbox: receiver,
            dropped,
        })
    }

    /// Takes client `id` out of the room; its outbox closes once drained.
    fn leave(&self, id: u64) -> Option<Member> {
        let mut members = self.members();
        let member = members.by_id.remove(&id)?;
        members.names.remove(&member.name);
        Some(member)
    }

    /// Relays `message` from client `from` to every other client.
    async fn relay(&self, from: u64, message: &ChatFrame) {
        let frame = {
            let members = self.members();
            let Some(sender) = members.by_id.get(&from) else {
                return; // dropped meanwhile
            };
            relay_frame(&sender.name_frame, message)
        };
        self.broadcast(Some(from), frame).await;
    }

    /// Says `text` as [`SERVER_NAME`] to everyone but `except`, without waiting: a client with
    /// a full outbox misses it.
    fn announce(&self, except: Option<u64>, text: &str) {
        self.offer(except, &server_message(text));
    }

    /// Queues `frame` for everyone but `except`, waiting up to `stall_timeout` for room in full
    /// outboxes, and drops the clients whose outbox stayed full.
    async fn broadcast(&self, except: Option<u64>, frame: Bytes) {
        let full = self.offer(except, &frame);
        if full.is_empty() {
            return;
        }
        let deadline = tokio::time::Instant::now() + self.config.stall_timeout;
        for (id, outbox) in full {
            let sent = tokio::time::timeout_at(deadline, outbox.send(frame.clone())).await;
            if sent.is_err() {
                self.drop_stalled(id);
            }
        }
    }

    /// Queues `frame` for everyone but `except` where there is room; the clients whose outbox
    /// is full, with their outbox.
    fn offer(&self, except: Option<u64>, frame: &Bytes) -> Vec<(u64, mpsc::Sender<Bytes>)> {
        let members = self.members();
        let mut full = Vec::new();
        for (&id, member) in &members.by_id {
            if Some(id) == except {
                continue;
            }
            match member.outbox.try_send(frame.clone()) {
                Ok(()) => {}
                Err(TrySendError::Full(_)) => full.push((id, member.outbox.clone())),
                Err(TrySendError::Closed(_)) => {} // on its way out
            }
        }
        full
    }

    /// Drops a client that stopped reading.
    fn drop_stalled(&self, id: u64) {
        let Some(member) = self.leave(id) else {
            return;
        };
        member.dropped.cancel();
        warn!(
            user = %member.name,
            waited = ?self.config.stall_timeout,
            "client dropped: it stopped reading and its outbox stayed full"
        );
        if self.config.announce {
            self.announce(None, &format!("{} left the room", member.name));
        }
    }

    /// Closes the room: every client leaves, its outbox drains, and every reader stops.
    fn close_all(&self) {
        let leaving: Vec<Member> = {
            let mut members = self.members();
            members.names.clear();
            members.by_id.drain().map(|(_, member)| member).collect()
        };
        if self.config.announce {
            let notice = server_message("The room is closing");
            for member in &leaving {
                let _ = member.outbox.try_send(notice.clone());
            }
        }
        drop(leaving);
        self.closing.cancel();
    }
}

/// What the seed's server sends: `user_header + username + msg_header + msg`.
fn relay_frame(name: &ChatFrame, message: &ChatFrame) -> Bytes {
    let mut frame = BytesMut::with_capacity(name.as_bytes().len() + message.as_bytes().len());
    frame.extend_from_slice(name.as_bytes());
    frame.extend_from_slice(message.as_bytes());
    frame.freeze()
}

/// A message from [`SERVER_NAME`], ready to write. (A frame fails only for a length of more
/// than ten digits.)
fn server_message(text: &str) -> Bytes {
    let name = ChatFrame::new(SERVER_NAME.as_bytes()).expect("a short name");
    let message = ChatFrame::new(text.as_bytes()).expect("a text under 10 GB");
    relay_frame(&name, &message)
}

/// Why a client's session ended.
enum Ending {
    /// The client closed its side.
    Quit,
    /// The client broke the framing (or its connection failed).
    Broken(ChatError),
    /// The client was dropped for not reading.
    Dropped,
    /// The room is closing.
    Closing,
}

async fn serve_client(stream: TcpStream, peer: SocketAddr, room: Arc<Room>) {
    let (read, mut write) = stream.into_split();
    let mut reader = FrameReader::new(read, ChatFrameCodec::new(room.config.max_payload));
    let Some((name, joined)) = take_username(&mut reader, &mut write, peer, &room).await else {
        return;
    };
    info!("Accepted new connection from {peer}, username: {name}");
    if room.config.announce {
        room.announce(Some(joined.id), &format!("{name} joined the room"));
    }
    let Joined {
        id,
        outbox,
        dropped,
    } = joined;
    let reading = read_messages(&mut reader, id, &name, &room, &dropped);
    let writing = write_outbox(&mut write, outbox, &dropped);
    let (ending, ()) = tokio::join!(
        async {
            let ending = reading.await;
            // Out of the room first: the outbox then closes, and the writer finishes.
            let member = room.leave(id);
            if let (Ending::Broken(err), Some(member)) = (&ending, &member) {
                info!(%peer, user = %name, "closing the connection: {err}");
                let notice = server_message(&format!("Closing your connection: {err}"));
                let _ = member.outbox.try_send(notice);
            }
            if member.is_some() && room.config.announce {
                room.announce(None, &format!("{name} left the room"));
            }
            drop(member);
            ending
        },
        writing
    );
    if !matches!(ending, Ending::Dropped) {
        let _ = write.shutdown().await;
    }
    info!(%peer, "Closed connection from: {name}");
}

/// Reads the client's first frame and joins it to the room; on any refusal the client is told
/// why (as a message from [`SERVER_NAME`]) and `None` returned.
async fn take_username(
    reader: &mut FrameReader<ChatFrameCodec>,
    write: &mut OwnedWriteHalf,
    peer: SocketAddr,
    room: &Room,
) -> Option<(String, Joined)> {
    let first = tokio::select! {
        first = timeout(room.config.name_timeout, reader.next()) => first,
        () = room.closing.cancelled() => return None,
    };
    let frame = match first {
        Ok(Ok(Some(frame))) => frame,
        Ok(Ok(None)) => {
            debug!(%peer, "left before sending a username");
            return None;
        }
        Ok(Err(err)) => return refuse(write, peer, &format!("Bad username frame: {err}")).await,
        Err(_) => {
            let waited = room.config.name_timeout;
            return refuse(write, peer, &format!("No username within {waited:?}")).await;
        }
    };
    let name = match check_username(frame.payload()) {
        Ok(name) => name.to_owned(),
        Err(err) => return refuse(write, peer, &format!("Invalid username: {err}")).await,
    };
    match room.join(&name, frame) {
        Some(joined) => Some((name, joined)),
        None => refuse(write, peer, &format!("Username {name} is taken")).await,
    }
}

/// Tells a client why it is not let in, and closes.
async fn refuse<T>(write: &mut OwnedWriteHalf, peer: SocketAddr, reason: &str) -> Option<T> {
    info!(%peer, "refused: {reason}");
    let _ = write.write_all(&server_message(reason)).await;
    let _ = write.shutdown().await;
    None
}

/// Tells a client past the limit that the room is full, and closes.
async fn refuse_full(mut stream: TcpStream, peer: SocketAddr, max: usize) {
    info!(%peer, "refused: the room is full");
    let notice = server_message(&format!("The room is full ({max} clients)"));
    let _ = timeout(Duration::from_secs(1), stream.write_all(&notice)).await;
    let _ = stream.shutdown().await;
}

/// Relays the client's messages until it quits, breaks the framing, is dropped or the room
/// closes. Empty frames are ignored.
async fn read_messages(
    reader: &mut FrameReader<ChatFrameCodec>,
    id: u64,
    name: &str,
    room: &Room,
    dropped: &CancellationToken,
) -> Ending {
    loop {
        let next = tokio::select! {
            next = reader.next() => next,
            () = dropped.cancelled() => return Ending::Dropped,
            () = room.closing.cancelled() => return Ending::Closing,
        };
        match next {
            Ok(Some(message)) if message.payload().is_empty() => {}
            Ok(Some(message)) => {
                debug!(
                    user = name,
                    "Received message from {name}: {}",
                    String::from_utf8_lossy(message.payload())
                );
                room.relay(id, &message).await;
            }
            Ok(None) => return Ending::Quit,
            Err(err) => return Ending::Broken(err),
        }
    }
}
